"""HOBBIT's cross-layer predictor: per-layer numpy matmuls, one stacked matmul, hand-built traces."""

import jax
import jax.extend as jex
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsys._src import testing
from jaxsys.moe import predictor


def np_softmax(x):
  e = np.exp(x - x.max(axis=-1, keepdims=True))
  return e / e.sum(axis=-1, keepdims=True)


def count_dots(jaxpr) -> int:
  """dot_general equations in a jaxpr, sub-jaxprs (pjit, custom_jvp, ...) included."""
  n = 0
  for eqn in jaxpr.eqns:
    n += eqn.primitive.name == "dot_general"
    for p in eqn.params.values():
      for sub in (p if isinstance(p, (list, tuple)) else [p]):
        if isinstance(sub, jex.core.ClosedJaxpr):
          n += count_dots(sub.jaxpr)
        elif isinstance(sub, jex.core.Jaxpr):
          n += count_dots(sub)
  return n


def test_logits_and_experts_match_per_layer_numpy():
  rng = np.random.default_rng(0)
  T, D, E, P, K = 20, 16, 8, 3, 2
  h = rng.standard_normal((T, D)).astype(np.float32)
  w = rng.standard_normal((P, D, E)).astype(np.float32)
  pred = predictor.predict_experts(jnp.asarray(h), jnp.asarray(w), k=K)
  assert pred.logits_PTE.shape == (P, T, E) and pred.experts_PTK.shape == (P, T, K)
  assert pred.experts_PTK.dtype == jnp.int32 and pred.logits_PTE.dtype == jnp.float32
  for j in range(P):
    logits = h.astype(np.float64) @ w[j].astype(np.float64)   # one layer at a time
    testing.assert_allclose(pred.logits_PTE[j], logits, dtype=jnp.float32, n=D)
    p = np_softmax(logits)
    top = np.argsort(-p, axis=-1, kind="stable")[:, :K]
    np.testing.assert_array_equal(pred.experts_PTK[j], top)
    g = np.take_along_axis(p, top, axis=-1)
    testing.assert_allclose(pred.weights_PTK[j], g / g.sum(-1, keepdims=True), n=E)


@pytest.mark.parametrize("depth", [1, 3])
def test_one_stacked_matmul_for_any_depth(depth):
  h = jnp.ones((4, 16), jnp.float32)
  w = jnp.ones((depth, 16, 8), jnp.float32)
  jaxpr = jax.make_jaxpr(lambda a, b: predictor.predict_experts(a, b, k=2))(h, w)
  assert count_dots(jaxpr.jaxpr) == 1


def test_depth_zero_distance_is_the_layer_itself():
  # With the current layer's own router the prediction is its actual routing.
  rng = np.random.default_rng(1)
  h = jnp.asarray(rng.standard_normal((30, 6)), jnp.float32)
  w = jnp.asarray(rng.standard_normal((1, 6, 5)), jnp.float32)
  pred = predictor.predict_experts(h, w, k=2)
  acc = predictor.prediction_accuracy(pred.experts_PTK, pred.experts_PTK)
  np.testing.assert_array_equal(acc.top1_P, [1.0])
  np.testing.assert_array_equal(acc.overlap_P, [1.0])


def test_prediction_accuracy_golden():
  # layer +1 (P index 0), 4 tokens, K = 2
  #   predicted  actual   top-1 hit  overlap
  #   [0, 1]     [0, 2]   yes        1/2
  #   [3, 2]     [2, 3]   no         2/2
  #   [1, 0]     [4, 5]   no         0/2
  #   [5, 4]     [5, 1]   yes        1/2      -> top1 2/4 = 0.5, overlap 2/4 = 0.5
  # layer +2 (P index 1): identical sets everywhere -> 1.0, 1.0
  pred = jnp.array([[[0, 1], [3, 2], [1, 0], [5, 4]],
                    [[0, 1], [2, 3], [4, 5], [1, 5]]], jnp.int32)
  actual = jnp.array([[[0, 2], [2, 3], [4, 5], [5, 1]],
                      [[0, 1], [2, 3], [4, 5], [1, 5]]], jnp.int32)
  acc = predictor.prediction_accuracy(pred, actual)
  np.testing.assert_array_equal(acc.top1_P, [0.5, 1.0])
  np.testing.assert_array_equal(acc.overlap_P, [0.5, 1.0])


def test_trace_accuracy_hand_built_trace():
  # L = 3 layers, D = E = 3, K = 2, N = 2 tokens. Routers of layers 0 and 1 are the
  # identity (logits = h); layer 2's reverses (logits_e = h[2 - e]).
  #   token 0: h_0 = [3, 2, 1], h_1 = [1, 2, 3];  actual l0 [0, 1], l1 [0, 2], l2 [2, 0]
  #   token 1: h_0 = [1, 3, 2], h_1 = [3, 1, 2];  actual l0 [1, 2], l1 [1, 2], l2 [0, 1]
  # source 0 -> layer 1 (identity): preds [0, 1] vs [0, 2] (hit, 1/2);
  #                                  [1, 2] vs [1, 2] (hit, 2/2)  -> 1.0, 0.75
  # source 0 -> layer 2 (reversed): logits [1, 2, 3] -> [2, 1] vs [2, 0] (hit, 1/2);
  #                                  [2, 3, 1] -> [1, 0] vs [0, 1] (miss, 2/2) -> 0.5, 0.75
  # source 1 -> layer 2 (reversed): [3, 2, 1] -> [0, 1] vs [2, 0] (miss, 1/2);
  #                                  [2, 1, 3] -> [2, 0] vs [0, 1] (miss, 1/2) -> 0.0, 0.5
  # per distance: d=1 over sources 0, 1: top1 (1 + 0)/2 = 0.5, overlap (0.75 + 0.5)/2
  #               d=2 over source 0 only: 0.5, 0.75
  h = np.zeros((2, 3, 3), np.float32)
  h[0, 0], h[0, 1] = [3, 2, 1], [1, 2, 3]
  h[1, 0], h[1, 1] = [1, 3, 2], [3, 1, 2]
  experts = np.array([[[0, 1], [0, 2], [2, 0]],
                      [[1, 2], [1, 2], [0, 1]]], np.int32)
  routers = np.stack([np.eye(3), np.eye(3), np.eye(3)[:, ::-1]]).astype(np.float32)
  acc = predictor.trace_accuracy(jnp.asarray(h), jnp.asarray(experts), jnp.asarray(routers),
                                 depth=2)
  np.testing.assert_array_equal(acc.valid_LP, [[True, True], [True, False], [False, False]])
  np.testing.assert_array_equal(acc.top1_LP, [[1.0, 0.5], [0.0, 0.0], [0.0, 0.0]])
  np.testing.assert_array_equal(acc.overlap_LP, [[0.75, 0.75], [0.5, 0.0], [0.0, 0.0]])
  np.testing.assert_array_equal(acc.top1_P, [0.5, 0.5])
  np.testing.assert_array_equal(acc.overlap_P, [0.625, 0.75])


def test_errors():
  h = jnp.ones((4, 8), jnp.float32)
  w = jnp.ones((2, 8, 4), jnp.float32)
  with pytest.raises(ValueError, match=r"k: expected an int in \[1, 4\] .*given 5"):
    predictor.predict_experts(h, w, k=5)
  with pytest.raises(ValueError, match=r"routers_PDE: expected shape \[depth, D=8, experts\]"):
    predictor.predict_experts(h, jnp.ones((2, 7, 4), jnp.float32), k=1)
  with pytest.raises(ValueError, match=r"routers_PDE: expected 3 dims"):
    predictor.predict_experts(h, jnp.ones((8, 4), jnp.float32), k=1)
  with pytest.raises(TypeError, match=r"gate_input_TD: expected a floating dtype"):
    predictor.predict_experts(jnp.ones((4, 8), jnp.int32), w, k=1)
  with pytest.raises(ValueError, match=r"predicted_PTK: expected leading dims"):
    predictor.prediction_accuracy(jnp.zeros((2, 3, 2), jnp.int32), jnp.zeros((2, 4, 2), jnp.int32))
  g = jnp.ones((5, 3, 8), jnp.float32)
  e = jnp.zeros((5, 3, 2), jnp.int32)
  r = jnp.ones((3, 8, 4), jnp.float32)
  with pytest.raises(ValueError, match=r"depth: expected an int in \[1, 2\] .*given 3"):
    predictor.trace_accuracy(g, e, r, depth=3)
  with pytest.raises(ValueError, match=r"routers_LDE: expected shape \[layers=3, D=8"):
    predictor.trace_accuracy(g, e, jnp.ones((2, 8, 4), jnp.float32), depth=1)
  with pytest.raises(ValueError, match=r"experts_NLK: expected shape \[tokens=5, layers=3"):
    predictor.trace_accuracy(g, jnp.zeros((5, 2, 2), jnp.int32), r, depth=1)


def test_docstring_examples():
  import doctest  # pylint: disable=g-import-not-at-top

  result = doctest.testmod(predictor)
  assert result.failed == 0 and result.attempted > 0
