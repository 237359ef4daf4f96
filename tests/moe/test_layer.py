"""The NNX `MoE` layer against a plain-numpy loop over tokens, its aux outputs and errors.

The reference walks token by token: softmax of the router logits, the k largest
(ties to the lower id), weights renormalised to sum 1, and the weighted sum of
the chosen experts' SwiGLU MLPs, all in float64.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxsys._src import testing
from jaxsys.moe import layer
from jaxsys.moe.layer import MoE

D, F, E, K = 8, 16, 4, 2


def np_silu(h):
  return h / (1.0 + np.exp(-h))


def ref_moe(x_TD, w_router_DE, w_in_EDF, w_gate_EDF, w_out_EFD, k):
  """Token loop: softmax router, top-k, renormalise, sum of the experts' SwiGLU MLPs."""
  x = np.asarray(x_TD, np.float64)
  wr, wi, wg, wo = (np.asarray(a, np.float64) for a in (w_router_DE, w_in_EDF, w_gate_EDF,
                                                        w_out_EFD))
  y = np.zeros_like(x)
  experts, weights = [], []
  for t in range(x.shape[0]):
    logits = x[t] @ wr
    p = np.exp(logits - logits.max())
    p /= p.sum()
    top = np.argsort(-p, kind="stable")[:k]
    w = p[top] / p[top].sum()
    for e, g in zip(top, w):
      y[t] += g * ((np_silu(x[t] @ wg[e]) * (x[t] @ wi[e])) @ wo[e])
    experts.append(top)
    weights.append(w)
  return y, np.array(experts), np.array(weights)


def weights_of(moe):
  return (moe.router.kernel[...], moe.w_in_EDF[...], moe.w_gate_EDF[...], moe.w_out_EFD[...])


def random_x(seed, shape):
  return jnp.asarray(np.random.default_rng(seed).standard_normal(shape), jnp.float32)


@pytest.mark.parametrize("backend,cf", [("ragged_dot", 1.25), ("capacity_einsum", None)])
def test_matches_numpy_token_loop(backend, cf):
  moe = MoE(D, F, num_experts=E, top_k=K, backend=backend, capacity_factor=cf,
            rngs=nnx.Rngs(1))
  x = random_x(0, (12, D))
  y, aux = moe(x)
  y_ref, experts_ref, weights_ref = ref_moe(x, *weights_of(moe), K)
  testing.assert_allclose(y, y_ref, dtype=jnp.float32, n=F)
  np.testing.assert_array_equal(aux["routing"].experts_TK, experts_ref)
  testing.assert_allclose(aux["routing"].weights_TK, weights_ref, dtype=jnp.float32, n=D)
  assert float(aux["drop_rate"]) == 0.0
  assert y.dtype == jnp.float32


def test_pallas_backend_matches_numpy():
  pytest.importorskip("jaxsys.kernels.grouped_matmul.api")
  moe = MoE(D, F, num_experts=E, top_k=K, backend="pallas", interpret=True, rngs=nnx.Rngs(2))
  x = random_x(1, (8, D))
  y, _ = moe(x)
  y_ref, *_ = ref_moe(x, *weights_of(moe), K)
  testing.assert_allclose(y, y_ref, dtype=jnp.float32, n=F)


def test_leading_dims_are_tokens_and_jit():
  moe = MoE(D, F, num_experts=E, top_k=K, rngs=nnx.Rngs(3))
  x_BSD = random_x(2, (2, 5, D))
  y_BSD, aux = nnx.jit(lambda m, x: m(x))(moe, x_BSD)
  y_TD, _ = moe(x_BSD.reshape(10, D))
  assert y_BSD.shape == (2, 5, D)
  assert aux["routing"].experts_TK.shape == (10, K)
  assert aux["gate_input_TD"].shape == (10, D)
  testing.assert_allclose(y_BSD.reshape(10, D), y_TD, n=F)


def test_aux_losses_match_closed_forms():
  moe = MoE(D, F, num_experts=E, top_k=K, load_balance_weight=0.5, z_loss_weight=0.25,
            rngs=nnx.Rngs(4))
  x = random_x(3, (16, D))
  _, aux = moe(x)
  logits = np.asarray(x, np.float64) @ np.asarray(moe.router.kernel[...], np.float64)
  p = np.exp(logits - logits.max(-1, keepdims=True))
  p /= p.sum(-1, keepdims=True)
  top = np.argsort(-p, axis=-1, kind="stable")[:, :K]
  f = np.bincount(top.ravel(), minlength=E) / 16.0      # sum_e f_e = K
  lb = 0.5 * E * np.sum(f * p.mean(0))                  # w * E * sum f_e P_e
  lse = np.log(np.exp(logits).sum(-1))
  z = 0.25 * np.mean(lse ** 2)
  testing.assert_allclose(aux["load_balance_loss"], lb, dtype=jnp.float32, n=16 * D)
  testing.assert_allclose(aux["z_loss"], z, dtype=jnp.float32, n=16 * D)
  np.testing.assert_array_equal(aux["gate_input_TD"], x)


def test_drop_rate_golden():
  # Router kernel 0: every probability is 1/4, top-2 picks experts 0 and 1 for all
  # 8 tokens (ties to the lower id). cf = 1: C = ceil(8*2/4) * 1 = 4 rows per
  # expert, so experts 0 and 1 each keep 4 of 8 slots: 8 of 16 slots dropped.
  moe = MoE(D, F, num_experts=E, top_k=K, backend="capacity_einsum", capacity_factor=1.0,
            rngs=nnx.Rngs(5))
  moe.router.kernel[...] = jnp.zeros((D, E), jnp.float32)
  x = random_x(4, (8, D))
  y, aux = moe(x)
  assert float(aux["drop_rate"]) == 0.5
  np.testing.assert_array_equal(aux["routing"].experts_TK, np.tile([0, 1], (8, 1)))
  # Tokens 4..7 lost both experts (positions 5..8 > C = 4): their output is 0.
  np.testing.assert_array_equal(np.asarray(y)[4:], 0.0)
  y_ref, *_ = ref_moe(x, *weights_of(moe), K)
  testing.assert_allclose(y[:4], y_ref[:4], n=F)
  # dropless=True ignores the capacity: nothing dropped, every token exact.
  y_all, aux_all = moe(x, dropless=True)
  assert float(aux_all["drop_rate"]) == 0.0
  testing.assert_allclose(y_all, y_ref, n=F)


def test_jitter_only_with_a_key():
  moe = MoE(D, F, num_experts=E, top_k=K, jitter_eps=0.1, rngs=nnx.Rngs(6))
  x = random_x(5, (6, D))
  _, plain = moe(x)
  _, j1 = moe(x, jitter_key=jax.random.key(0))
  _, j2 = moe(x, jitter_key=jax.random.key(0))
  np.testing.assert_array_equal(plain["gate_input_TD"], x)
  np.testing.assert_array_equal(j1["gate_input_TD"], j2["gate_input_TD"])
  ratio = np.asarray(j1["gate_input_TD"]) / np.asarray(x)
  assert np.all((ratio >= 0.9 - 1e-6) & (ratio <= 1.1 + 1e-6)) and not np.allclose(ratio, 1.0)


def test_gradients_finite_and_nonzero():
  moe = MoE(D, F, num_experts=E, top_k=K, rngs=nnx.Rngs(7))
  x = random_x(6, (10, D))

  def loss(m):
    y, aux = m(x)
    return jnp.mean(y * y) + aux["load_balance_loss"] + aux["z_loss"]

  grads = nnx.grad(loss)(moe)
  for leaf in jax.tree.leaves(grads):
    assert np.all(np.isfinite(leaf)) and np.any(np.asarray(leaf) != 0)


@pytest.mark.parametrize("kwargs,match", [
    (dict(top_k=5), r"top_k: expected at most num_experts \(4\), given 5"),
    (dict(top_k=0), r"top_k: expected an int >= 1, given 0"),
    (dict(backend="dense"), r"backend: expected one of .*given 'dense'"),
    (dict(capacity_factor=0.0), r"capacity_factor: expected > 0"),
    (dict(jitter_eps=1.0), r"jitter_eps: expected a number in \[0, 1.0\), given 1.0"),
    (dict(load_balance_weight=-1.0), r"load_balance_weight: expected a number >= 0"),
])
def test_constructor_errors(kwargs, match):
  args = dict(num_experts=E, top_k=K) | kwargs
  with pytest.raises(ValueError, match=match):
    MoE(D, F, **args, rngs=nnx.Rngs(0))


def test_call_errors():
  moe = MoE(D, F, num_experts=E, top_k=K, rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match=r"x: expected shape \[..., D=8\]"):
    moe(jnp.ones((4, D + 1), jnp.float32))
  with pytest.raises(TypeError, match=r"x: expected a floating dtype, given int32"):
    moe(jnp.ones((4, D), jnp.int32))


def test_docstring_examples():
  import doctest  # pylint: disable=g-import-not-at-top

  result = doctest.testmod(layer)
  assert result.failed == 0 and result.attempted > 0


def test_reference_is_not_trivial():
  # Guards the reference itself: two tokens that route differently give outputs
  # that are not scalar multiples of each other.
  moe = MoE(D, F, num_experts=E, top_k=K, rngs=nnx.Rngs(8))
  y, experts, _ = ref_moe(random_x(7, (6, D)), *weights_of(moe), K)
  assert len({tuple(e) for e in experts}) > 1
  assert math.isfinite(float(np.abs(y).sum())) and np.abs(y).sum() > 0
