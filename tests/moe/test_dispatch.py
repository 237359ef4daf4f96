"""Dispatch: permute/unpermute, capacity and dropping, and the expert-MLP backends.

The references are plain numpy/Python: a per-(token, slot) loop for the MLP and a
per-expert counter for buffer positions. ``ragged_dot`` is the exact backend the
capacity path is held to when nothing drops.
"""

import importlib
import math
import sys

import hypothesis
import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsys._src import testing
from jaxsys._src.backend import ImplementationError
from jaxsys.moe import dispatch, routing


# ------------------------------------------------------------------ numpy references


def np_act(name, h):
  if name == "relu":
    return np.maximum(h, 0.0)
  if name == "silu":
    return h / (1.0 + np.exp(-h))
  if name == "gelu":
    return 0.5 * h * (1.0 + np.vectorize(math.erf)(h / math.sqrt(2.0)))
  raise ValueError(name)


def ref_keep(experts, mask, num_experts, C, priority=None):
  """Pure Python: walk tokens (by decreasing priority if given), count per expert."""
  T, K = experts.shape
  tokens = range(T) if priority is None else sorted(range(T), key=lambda t: -priority[t])
  count = [0] * num_experts
  pos = np.zeros((T, K), np.int64)
  keep = np.zeros((T, K), bool)
  for t in tokens:
    for j in range(K):
      if mask[t, j]:
        count[experts[t, j]] += 1
        pos[t, j] = count[experts[t, j]]
        keep[t, j] = C is None or count[experts[t, j]] <= C
  return keep, pos


def ref_expert_mlp(x, experts, weights, keep, w_in, w_out, w_gate=None, act="relu"):
  x, w_in, w_out = (np.asarray(a, np.float64) for a in (x, w_in, w_out))
  T, K = experts.shape
  y = np.zeros_like(x)
  for t in range(T):
    for j in range(K):
      if keep[t, j]:
        e = experts[t, j]
        h = x[t] @ w_in[e]
        h = np_act(act, x[t] @ np.asarray(w_gate[e], np.float64)) * h if w_gate is not None \
            else np_act(act, h)
        y[t] += float(weights[t, j]) * (h @ w_out[e])
  return y


def make_case(seed, T=16, E=4, K=2, D=8, F=16, gated=False, skew=0.0):
  rng = np.random.default_rng(seed)
  logits = rng.standard_normal((T, E)) + skew * np.arange(E)[::-1]
  r = routing.route_topk(jnp.asarray(logits, jnp.float32), k=K)
  x = jnp.asarray(rng.standard_normal((T, D)), jnp.float32)
  w_in = jnp.asarray(rng.standard_normal((E, D, F)) / math.sqrt(D), jnp.float32)
  w_out = jnp.asarray(rng.standard_normal((E, F, D)) / math.sqrt(F), jnp.float32)
  w_gate = jnp.asarray(rng.standard_normal((E, D, F)) / math.sqrt(D), jnp.float32) \
      if gated else None
  return x, r, w_in, w_out, w_gate


def np_(a):
  return np.asarray(a)


# ---------------------------------------------------------------------------- capacity


def test_capacity_rule_golden():
  # C = int(max(ceil(T*K/E) * cf, cf)), at least 1; -1 / None = dropless
  assert dispatch.capacity(8, 4, 2, 1.25) == 5   # ceil(16/4) = 4; 4 * 1.25 = 5
  assert dispatch.capacity(8, 4, 2, 1.0) == 4    # 4 * 1.0
  assert dispatch.capacity(10, 4, 2, 1.1) == 5   # ceil(20/4) = 5; 5.5 -> 5 (truncated)
  assert dispatch.capacity(3, 4, 1, 2.0) == 2    # ceil(3/4) = 1; max(2, 2) = 2
  assert dispatch.capacity(1, 8, 2, 1.5) == 1    # ceil(2/8) = 1; max(1.5, 1.5) -> 1
  assert dispatch.capacity(2, 8, 1, 0.5) == 1    # max(0.5, 0.5) -> 0, clamped to 1
  assert dispatch.capacity(8, 4, 2, -1) is None
  assert dispatch.capacity(8, 4, 2, -1.0) is None
  assert dispatch.capacity(8, 4, 2, None) is None


@pytest.mark.parametrize("cf", [0, 0.0, -0.5, -2, float("nan"), True, "1.25"])
def test_capacity_factor_errors(cf):
  with pytest.raises(ValueError, match=r"capacity_factor: expected (a number )?> 0, or -1 / None"
                     r" for dropless, given"):
    dispatch.capacity(8, 4, 2, cf)


# ------------------------------------------------------------------- permute/unpermute


def test_permute_matches_numpy_and_round_trips():
  x, r, *_ = make_case(0, T=12, E=5, K=3)
  x_sorted, sizes, order = dispatch.permute(x, r.experts_TK, num_experts=5)
  flat = np_(r.experts_TK).reshape(-1)
  want_order = np.argsort(flat, kind="stable")
  np.testing.assert_array_equal(order, want_order)
  np.testing.assert_array_equal(sizes, np.bincount(flat, minlength=5))
  np.testing.assert_array_equal(x_sorted, np_(x)[want_order // 3])
  assert sizes.dtype == jnp.int32 and order.dtype == jnp.int32
  # unpermute(permute(x)) with weights 1 sums K copies of each row: x * K
  back = dispatch.unpermute(x_sorted, order, jnp.ones((12, 3), jnp.float32))
  testing.assert_allclose(back, np_(x) * 3, n=3)
  # and with weights w it is sum_k w[t, k] x[t]
  back = dispatch.unpermute(x_sorted, order, r.weights_TK)
  testing.assert_allclose(back, np_(x) * np_(r.weights_TK).sum(-1, keepdims=True), n=3)


def test_permute_puts_unused_slots_last_and_does_not_count_them():
  # 3 tokens x 2 slots, experts [[1, 0], [1, 2], [0, 1]], slot (1, 1) unused:
  #   flattened keys [1, 0, 1, E, 0, 1] -> stable order [1, 4, 0, 2, 5, 3], sizes [2, 3, 0]
  experts = jnp.array([[1, 0], [1, 2], [0, 1]], jnp.int32)
  mask = jnp.array([[True, True], [True, False], [True, True]])
  x = jnp.arange(6, dtype=jnp.float32).reshape(3, 2)
  x_sorted, sizes, order = dispatch.permute(x, experts, mask, num_experts=3)
  assert order.tolist() == [1, 4, 0, 2, 5, 3]
  assert sizes.tolist() == [2, 3, 0]
  np.testing.assert_array_equal(x_sorted, np_(x)[[0, 2, 0, 1, 2, 1]])


# -------------------------------------------------------------------- token dropping


def test_token_positions_golden_and_bpr_hand_case():
  # 4 tokens, K = 1, all to expert 0; top-1 probabilities 0.9, 0.6, 0.8, 0.7.
  # In token order the positions are 1, 2, 3, 4: with C = 2 tokens 0, 1 are kept.
  # Batch-prioritised: order by probability 0.9 (t0), 0.8 (t2), 0.7 (t3), 0.6 (t1)
  #   -> positions t0 = 1, t1 = 4, t2 = 2, t3 = 3: tokens 0, 2 kept, the least
  #   confident (t1 = 0.6, t3 = 0.7) dropped first.
  experts = jnp.zeros((4, 1), jnp.int32)
  prio = jnp.array([0.9, 0.6, 0.8, 0.7], jnp.float32)
  assert dispatch.token_positions(experts, num_experts=2).tolist() == [[1], [2], [3], [4]]
  assert dispatch.token_positions(experts, priority_T=prio, num_experts=2).tolist() == \
      [[1], [4], [2], [3]]
  assert dispatch.keep_within_capacity(experts, num_experts=2, capacity=2).tolist() == \
      [[True], [True], [False], [False]]
  assert dispatch.keep_within_capacity(experts, priority_T=prio, num_experts=2,
                                       capacity=2).tolist() == [[True], [False], [True], [False]]
  # token-major flattening: token 0's two slots come before token 1's
  #   experts [[0, 1], [1, 0]] -> (t0,k0)=e0 #1, (t0,k1)=e1 #1, (t1,k0)=e1 #2, (t1,k1)=e0 #2
  got = dispatch.token_positions(jnp.array([[0, 1], [1, 0]], jnp.int32), num_experts=2)
  assert got.tolist() == [[1, 1], [2, 2]]


@pytest.mark.parametrize("bpr", [False, True])
def test_token_positions_match_python_count(bpr):
  rng = np.random.default_rng(1)
  x, r, *_ = make_case(1, T=30, E=5, K=2, skew=1.0)
  mask = rng.random((30, 2)) < 0.85
  prio = np_(r.probs_TE).max(-1) if bpr else None
  kw = dict(priority_T=jnp.asarray(prio) if bpr else None, num_experts=5)
  pos = dispatch.token_positions(r.experts_TK, jnp.asarray(mask), **kw)
  keep = dispatch.keep_within_capacity(r.experts_TK, jnp.asarray(mask), capacity=7, **kw)
  want_keep, want_pos = ref_keep(np_(r.experts_TK), mask, 5, 7, prio)
  np.testing.assert_array_equal(pos, want_pos)
  np.testing.assert_array_equal(keep, want_keep)
  assert 0 < (~want_keep & mask).sum()  # some slots do drop


# ------------------------------------------------------------------------ expert MLP


@pytest.mark.parametrize("gated,act", [(False, "gelu"), (True, "silu"), (False, "relu")])
def test_capacity_equals_ragged_dot_when_nothing_drops(gated, act):
  x, r, w_in, w_out, w_gate = make_case(2, gated=gated)
  y_ref, d_ref = dispatch.expert_mlp(x, r, w_in, w_out, w_gate, backend="ragged_dot",
                                     activation=act)
  want = ref_expert_mlp(np_(x), np_(r.experts_TK), np_(r.weights_TK), np_(r.mask_TK),
                        w_in, w_out, None if w_gate is None else np_(w_gate), act)
  testing.assert_allclose(y_ref, want, n=16)
  assert float(d_ref) == 0.0
  # dropless, and a capacity factor large enough that nothing drops (C = T)
  for cf in (None, -1, 8.0):
    y, d = dispatch.expert_mlp(x, r, w_in, w_out, w_gate, backend="capacity_einsum",
                               capacity_factor=cf, activation=act)
    assert float(d) == 0.0
    testing.assert_allclose(y, y_ref, n=16, err_msg=f"cf={cf}")  # f32: 4e-6 < 1e-5
    assert float(jnp.max(jnp.abs(y - y_ref))) < 1e-5


@pytest.mark.parametrize("bpr", [False, True])
def test_capacity_drop_rate_and_output_when_tokens_drop(bpr):
  x, r, w_in, w_out, _ = make_case(3, T=24, E=4, K=2, skew=1.5)
  y, d = dispatch.expert_mlp(x, r, w_in, w_out, backend="capacity_einsum",
                             capacity_factor=1.0, batch_prioritized=bpr, activation="relu")
  C = dispatch.capacity(24, 4, 2, 1.0)
  prio = np_(r.probs_TE).max(-1) if bpr else None
  keep, _ = ref_keep(np_(r.experts_TK), np_(r.mask_TK), 4, C, prio)
  dropped = int((~keep).sum())
  assert dropped > 0
  assert float(d) == pytest.approx(dropped / 48, abs=1e-7)
  want = ref_expert_mlp(np_(x), np_(r.experts_TK), np_(r.weights_TK), keep, w_in, w_out,
                        act="relu")
  testing.assert_allclose(y, want, n=16)


def test_bpr_drops_lowest_confidence_tokens_hand_case():
  # 4 tokens to expert 0 of 2 with top-1 probabilities 0.9, 0.6, 0.8, 0.7;
  # capacity(T=4, E=2, K=1, cf=1) = ceil(4/2) * 1 = 2.
  # Without BPR tokens 0, 1 are served; with BPR tokens 0, 2 (0.9, 0.8) and the
  # two least confident (0.6, 0.7) get zero output. Drop rate 2/4 either way.
  p = np.array([[0.9, 0.1], [0.6, 0.4], [0.8, 0.2], [0.7, 0.3]], np.float32)
  r = routing.route_topk(jnp.log(jnp.asarray(p)), k=1)
  assert r.experts_TK.tolist() == [[0], [0], [0], [0]]
  x = jnp.ones((4, 2), jnp.float32)
  w_in = jnp.ones((2, 2, 2), jnp.float32)
  w_out = jnp.ones((2, 2, 2), jnp.float32)  # relu(x W_in) W_out = 4 per element, weight 1
  for bpr, served in ((False, [0, 1]), (True, [0, 2])):
    y, d = dispatch.expert_mlp(x, r, w_in, w_out, backend="capacity_einsum",
                               capacity_factor=1.0, batch_prioritized=bpr, activation="relu")
    want = np.zeros((4, 2))
    want[served] = 4.0
    np.testing.assert_allclose(y, want, rtol=1e-6)
    assert float(d) == 0.5


def test_masked_slots_are_skipped_by_both_backends():
  # top-p leaves slots unused: both backends must ignore them (and count no drops)
  rng = np.random.default_rng(4)
  r = routing.route_top_p(jnp.asarray(rng.standard_normal((16, 4)), jnp.float32), p=0.5,
                          max_k=3)
  assert not bool(jnp.all(r.mask_TK))
  _, _, w_in, w_out, _ = make_case(4)
  x = jnp.asarray(rng.standard_normal((16, 8)), jnp.float32)
  want = ref_expert_mlp(np_(x), np_(r.experts_TK), np_(r.weights_TK), np_(r.mask_TK),
                        w_in, w_out, act="gelu")
  for backend in ("ragged_dot", "capacity_einsum"):
    y, d = dispatch.expert_mlp(x, r, w_in, w_out, backend=backend, capacity_factor=None)
    testing.assert_allclose(y, want, n=16, err_msg=backend)
    assert float(d) == 0.0


def test_gradients_of_capacity_and_ragged_dot_agree():
  x, r, w_in, w_out, w_gate = make_case(5, gated=True)
  cot = jnp.asarray(np.random.default_rng(5).standard_normal(x.shape), jnp.float32)

  def loss(backend):
    def f(x, w_in, w_out, w_gate, weights):
      y, _ = dispatch.expert_mlp(x, r._replace(weights_TK=weights), w_in, w_out, w_gate,
                                 backend=backend, capacity_factor=None, activation="silu")
      return jnp.sum(y * cot)
    return jax.grad(f, argnums=(0, 1, 2, 3, 4))(x, w_in, w_out, w_gate, r.weights_TK)

  g_cap, g_rag = loss("capacity_einsum"), loss("ragged_dot")
  for name, a, b in zip(("x", "w_in", "w_out", "w_gate", "weights"), g_cap, g_rag):
    assert bool(jnp.any(b != 0)), name
    testing.assert_allclose(a, b, n=16 * 2 * 16, err_msg=f"d loss / d {name}")


@hypothesis.settings(deadline=None, max_examples=15, database=None)
@hypothesis.given(
    seed=st.integers(0, 2**31 - 1),
    T=st.sampled_from([1, 5, 12]),
    E=st.sampled_from([4, 6]),
    K=st.sampled_from([1, 2]),
    live=st.integers(0, 2**6 - 1),
)
def test_property_empty_expert_groups(seed, T, E, K, live):
  """Experts no token picks (empty groups) change nothing: both backends match numpy."""
  rng = np.random.default_rng(seed)
  alive = [e for e in range(E) if live >> e & 1]
  if len(alive) < K:  # need K distinct live experts; make the first K alive
    alive = sorted(set(alive) | set(range(K)))
  experts = np.stack([rng.choice(alive, size=K, replace=False) for _ in range(T)])
  weights = rng.random((T, K)).astype(np.float32)
  r = routing.Routing(jnp.asarray(weights), jnp.asarray(experts, jnp.int32),
                      jnp.ones((T, K), bool), jnp.full((T, E), 1.0 / E, jnp.float32),
                      jnp.zeros((T, E), jnp.float32))
  D, F = 4, 8
  x = jnp.asarray(rng.standard_normal((T, D)), jnp.float32)
  w_in = jnp.asarray(rng.standard_normal((E, D, F)) / 2, jnp.float32)
  w_out = jnp.asarray(rng.standard_normal((E, F, D)) / 3, jnp.float32)
  _, sizes, _ = dispatch.permute(x, r.experts_TK, num_experts=E)
  dead = [e for e in range(E) if e not in set(experts.ravel())]
  assert all(int(sizes[e]) == 0 for e in dead)
  want = ref_expert_mlp(np_(x), experts, weights, np.ones((T, K), bool), w_in, w_out,
                        act="gelu")
  y_rag, _ = dispatch.expert_mlp(x, r, w_in, w_out, backend="ragged_dot")
  y_cap, d = dispatch.expert_mlp(x, r, w_in, w_out, backend="capacity_einsum",
                                 capacity_factor=None)
  testing.assert_allclose(y_rag, want, n=F)
  testing.assert_allclose(y_cap, y_rag, n=F)
  assert float(d) == 0.0


@pytest.mark.parametrize("backend,cf", [("ragged_dot", None), ("capacity_einsum", 1.25),
                                        ("capacity_einsum", None)])
def test_expert_mlp_compiles_once(backend, cf):
  x, r, w_in, w_out, _ = make_case(6)
  testing.assert_compiles_once(dispatch.expert_mlp, x, r, w_in, w_out, backend=backend,
                               capacity_factor=cf)


def test_permute_and_positions_compile_once():
  x, r, *_ = make_case(7)
  testing.assert_compiles_once(dispatch.permute, x, r.experts_TK, num_experts=4)
  testing.assert_compiles_once(dispatch.token_positions, r.experts_TK, r.mask_TK,
                               num_experts=4)


def test_bf16_runs_and_tracks_float32():
  x, r, w_in, w_out, _ = make_case(8)
  bf = lambda a: a.astype(jnp.bfloat16)
  y32, _ = dispatch.expert_mlp(x, r, w_in, w_out, backend="ragged_dot")
  for backend in ("ragged_dot", "capacity_einsum"):
    y, _ = dispatch.expert_mlp(bf(x), r, bf(w_in), bf(w_out), backend=backend,
                               capacity_factor=None)
    assert y.dtype == jnp.bfloat16
    testing.assert_allclose(y, y32, dtype=jnp.bfloat16, n=16, scale=4)


# ------------------------------------------------------------------------- pallas hook


def test_pallas_backend_without_the_kernel_raises(monkeypatch):
  # A module set to None in sys.modules makes its import fail, as if it were absent.
  monkeypatch.setitem(sys.modules, "jaxsys.kernels.grouped_matmul.api", None)
  x, r, w_in, w_out, _ = make_case(9, T=7, E=3, K=1, D=5, F=3)  # shapes no other test traces
  with pytest.raises(ImplementationError,
                     match=r"backend='pallas' needs the grouped-matmul Pallas kernel"
                     r" \(jaxsys.kernels.grouped_matmul.api.*could not be imported"):
    dispatch.expert_mlp(x, r, w_in, w_out, backend="pallas", interpret=True)


def test_pallas_backend_matches_ragged_dot_in_interpret_mode():
  try:
    importlib.import_module("jaxsys.kernels.grouped_matmul.api")
  except ImportError as e:
    pytest.skip(f"grouped-matmul kernel not available: {e}")
  x, r, w_in, w_out, _ = make_case(10, T=8, E=2, K=2, D=16, F=16)
  y_ref, _ = dispatch.expert_mlp(x, r, w_in, w_out, backend="ragged_dot")
  y, d = dispatch.expert_mlp(x, r, w_in, w_out, backend="pallas", interpret=True)
  testing.assert_allclose(y, y_ref, n=16)
  assert float(d) == 0.0


# ---------------------------------------------------------------------------- errors


def _bad_case():
  return make_case(11, T=6, E=3, K=2, D=4, F=5)


@pytest.mark.parametrize("call,match", [
    (lambda x, r, wi, wo: dispatch.expert_mlp(x, r, wi, wo, backend="dense"),
     r"backend: expected one of \('capacity_einsum', 'ragged_dot', 'pallas', 'auto'\), given 'dense'"),
    (lambda x, r, wi, wo: dispatch.expert_mlp(x, r, wi, wo, activation="tanh"),
     r"activation: expected one of \('gelu', 'gelu_tanh', 'silu', 'relu'\), given 'tanh'"),
    (lambda x, r, wi, wo: dispatch.expert_mlp(x[:5], r, wi, wo),
     r"routing.experts_TK: expected shape \[tokens=5, k\] \(tokens of x_TD\), given \(6, 2\)"),
    (lambda x, r, wi, wo: dispatch.expert_mlp(x, r, wi[:2], wo[:2]),
     r"routing.probs_TE: expected shape \(6, 2\) \(tokens of x_TD, experts of w_in_EDF\); the"
     r" gate and the expert weights disagree, given \(6, 3\)"),
    (lambda x, r, wi, wo: dispatch.expert_mlp(x, r._replace(weights_TK=r.weights_TK[:, :1]),
                                              wi, wo),
     r"routing.weights_TK: expected the shape of routing.experts_TK \(6, 2\), given \(6, 1\)"),
    (lambda x, r, wi, wo: dispatch.expert_mlp(x, r, wi, wo[:, :4]),
     r"w_out_EFD: expected shape \(3, 5, 4\) \(\[E, F\] of w_in_EDF, D of x_TD\), given"
     r" \(3, 4, 4\)"),
    (lambda x, r, wi, wo: dispatch.expert_mlp(x, r, wi[:, :3], wo),
     r"w_in_EDF: expected shape \[experts, D=4, F\] \(D of x_TD\), given \(3, 3, 5\)"),
    (lambda x, r, wi, wo: dispatch.expert_mlp(x, r, wi, wo, wi[:, :, :2]),
     r"w_gate_EDF: expected the shape of w_in_EDF \(3, 4, 5\), given \(3, 4, 2\)"),
    (lambda x, r, wi, wo: dispatch.expert_mlp(x, r, wi.astype(jnp.bfloat16), wo),
     r"w_in_EDF: expected the dtype of x_TD \(float32\), given bfloat16"),
    (lambda x, r, wi, wo: dispatch.expert_mlp(x, r, wi, wo, backend="capacity_einsum",
                                              capacity_factor=0.0),
     r"capacity_factor: expected > 0, or -1 / None for dropless, given 0.0"),
    (lambda x, r, wi, wo: dispatch.permute(x[:5], r.experts_TK, num_experts=3),
     r"x_TD: expected shape \[tokens=6, D\] \(tokens of experts_TK\), given \(5, 4\)"),
    (lambda x, r, wi, wo: dispatch.permute(x, r.experts_TK, r.mask_TK[:, :1], num_experts=3),
     r"mask_TK: expected the shape of experts_TK \(6, 2\), given \(6, 1\)"),
    (lambda x, r, wi, wo: dispatch.permute(x, r.experts_TK, num_experts=0),
     r"num_experts: expected an int >= 1, given 0"),
    (lambda x, r, wi, wo: dispatch.unpermute(jnp.zeros((11, 4)), jnp.zeros(12, jnp.int32),
                                             r.weights_TK),
     r"y_ND: expected shape \[T\*K=12, D\] \(T, K from weights_TK \(6, 2\)\), given \(11, 4\)"),
    (lambda x, r, wi, wo: dispatch.unpermute(jnp.zeros((12, 4)), jnp.zeros(11, jnp.int32),
                                             r.weights_TK),
     r"order_N: expected shape \(12,\) \(from permute\), given \(11,\)"),
    (lambda x, r, wi, wo: dispatch.token_positions(r.experts_TK, priority_T=jnp.ones(5),
                                                   num_experts=3),
     r"priority_T: expected shape \(6,\) \(tokens of experts_TK\), given \(5,\)"),
    (lambda x, r, wi, wo: dispatch.keep_within_capacity(r.experts_TK, num_experts=3,
                                                        capacity=0),
     r"capacity: expected an int >= 1 or None, given 0"),
])
def test_errors_name_argument_expected_and_given(call, match):
  x, r, w_in, w_out, _ = _bad_case()
  with pytest.raises((ValueError, TypeError), match=match):
    call(x, r, w_in, w_out)


def test_docstring_examples_run():
  import doctest  # pylint: disable=g-import-not-at-top
  from jaxsys.moe import dispatch as module  # pylint: disable=g-import-not-at-top
  result = doctest.testmod(module)
  assert result.attempted > 0 and result.failed == 0


def test_auto_backend_picks_per_device():
  from jaxsys._src import backend as backend_lib
  from jaxsys.moe import dispatch, routing

  rng = np.random.default_rng(11)
  x = jnp.asarray(rng.standard_normal((16, 8)), jnp.float32)
  r = routing.route_topk(jnp.asarray(rng.standard_normal((16, 4)), jnp.float32), k=2)
  w_in = jnp.asarray(rng.standard_normal((4, 8, 6)), jnp.float32)
  w_out = jnp.asarray(rng.standard_normal((4, 6, 8)), jnp.float32)
  want = "pallas" if backend_lib.has_gpu() else "capacity_einsum"
  auto = dispatch.expert_mlp(x, r, w_in, w_out, backend="auto", capacity_factor=None)
  named = dispatch.expert_mlp(x, r, w_in, w_out, backend=want, capacity_factor=None)
  np.testing.assert_array_equal(auto[0], named[0])
