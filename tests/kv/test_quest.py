"""Quest policy against a pure-Python page-bound reference, and its upper-bound property."""

import functools
import hypothesis
import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsys._src import testing
from jaxsys.kv import metrics, quest
from tests.kv.policy_driver import as_set, drive


def reference_select(q_HD, k_KTD, L, page_size, n_pages, num_sinks, window):
  """Per KV head: page bounds from scratch over positions < L, group-summed scores,
  the n_pages best candidate pages, their positions in [num_sinks, L - window)."""
  H, D = q_HD.shape
  K, T, _ = k_KTD.shape
  G = H // K
  out = []
  for kh in range(K):
    scores = {}
    for p in range(-(-T // page_size)):
      toks = [t for t in range(p * page_size, (p + 1) * page_size) if t < L]
      if not any(num_sinks <= t < L - window for t in toks):
        continue  # not a candidate
      lo = np.min(k_KTD[kh, toks], axis=0)
      hi = np.max(k_KTD[kh, toks], axis=0)
      scores[p] = sum(
          sum(max(q_HD[kh * G + g, d] * hi[d], q_HD[kh * G + g, d] * lo[d]) for d in range(D))
          for g in range(G))
    best = sorted(scores, key=lambda p: (-scores[p], p))[:n_pages]
    out.append({t for p in best for t in range(p * page_size, (p + 1) * page_size)
                if num_sinks <= t < L - window})
  return out


@pytest.mark.parametrize("budget, page_size, num_sinks, window", [
    (8, 4, 0, 0),  # Quest as published: pages only
    (12, 4, 1, 2),  # S = 9: 2 pages + 1 unused slot; pages straddling sinks/window
])
def test_matches_reference_over_decode_steps(budget, page_size, num_sinks, window):
  rng = np.random.default_rng(0)
  B, K, G, T, D = 2, 2, 3, 32, 8
  q = rng.standard_normal((B, K * G, T, D)).astype(np.float32)
  k = rng.standard_normal((B, K, T, D)).astype(np.float32)
  lengths0 = np.array([6, 21], np.int32)  # ragged, partial last pages
  steps = 9  # crosses page boundaries
  policy = quest.quest(budget, page_size=page_size, min_pages=1, num_sinks=num_sinks,
                       window=window)
  n_pages = policy.num_selected // page_size
  state, idx = drive(policy, q, k, lengths0, steps)
  assert idx.shape == (steps, B, K, policy.num_selected)
  for n in range(steps):
    L = lengths0 + 1 + n
    for b in range(B):
      want = reference_select(q[b, :, L[b] - 1].astype(np.float64), k[b].astype(np.float64),
                              int(L[b]), page_size, n_pages, num_sinks, window)
      for kh in range(K):
        assert as_set(idx[n, b, kh]) == want[kh], (n, b, kh)
  # the incrementally updated bounds equal bounds computed from scratch
  final = quest.page_bounds(jnp.asarray(k), jnp.asarray(lengths0 + steps), page_size)
  np.testing.assert_array_equal(state.page_min_BKND, final.page_min_BKND)
  np.testing.assert_array_equal(state.page_max_BKND, final.page_max_BKND)


_PROPERTY_POLICY = quest.quest(7, page_size=3, min_pages=1, num_sinks=1, window=1)


@hypothesis.settings(max_examples=10, deadline=None)
@hypothesis.given(seed=st.integers(0, 2**16), L0=st.tuples(st.integers(1, 18), st.integers(1, 18)))
def test_matches_reference_for_any_ragged_lengths(seed, L0):
  # One compile serves every example: fixed shapes, same policy object.
  rng = np.random.default_rng(seed)
  B, K, G, T, D, steps = 2, 1, 3, 24, 4, 6
  q = rng.standard_normal((B, K * G, T, D)).astype(np.float32)
  k = rng.standard_normal((B, K, T, D)).astype(np.float32)
  _, idx = drive(_PROPERTY_POLICY, q, k, np.array(L0, np.int32), steps)
  for n in range(steps):
    for b in range(B):
      L = L0[b] + 1 + n
      want = reference_select(q[b, :, L - 1].astype(np.float64), k[b].astype(np.float64), L,
                              3, 1, 1, 1)
      assert as_set(idx[n, b, 0]) == want[0], (n, b)


def test_golden_tiny_case():
  # One sequence, one KV head, one query head, D = 2, pages of 2 tokens, budget 2 = one page.
  # keys: page 0 = (1, 0), (-1, 2)   -> min (-1, 0), max (1, 2)
  #       page 1 = (3, -1), (0, 0)   -> min ( 0,-1), max (3, 0)
  #       page 2 = (0, 1), (2, 1)    -> min ( 0, 1), max (2, 1)
  #       page 3 = (5, -4), (9, 9)   (position 7 is never written below)
  # query q = (1, -0.5):  U = sum_d max(q_d max_d, q_d min_d)
  #   page 0: max(1, -1) + max(-1, 0)       = 1 + 0    = 1
  #   page 1: max(3, 0) + max(0, 0.5)       = 3 + 0.5  = 3.5
  #   page 2: max(2, 0) + max(-0.5, -0.5)   = 2 - 0.5  = 1.5
  # Prompt of 5 tokens; step 0 (length 6, token 5 completes page 2): page 1 -> [2, 3].
  # Step 1 (length 7, token 6 = (5, -4) opens page 3): U = 5 + 2 = 7 > 3.5 -> page 3,
  #   positions [6, -1] (7 is not written yet). Only seen because the new token's page
  #   is refreshed before selecting.
  keys = [(1, 0), (-1, 2), (3, -1), (0, 0), (0, 1), (2, 1), (5, -4), (9, 9)]
  k = np.array(keys, np.float32).reshape(1, 1, 8, 2)
  q = np.tile(np.array([1, -0.5], np.float32), (1, 1, 8, 1))
  policy = quest.quest(2, page_size=2, min_pages=1)
  state, idx = drive(policy, q, k, np.array([5], np.int32), 2)
  np.testing.assert_array_equal(idx[:, 0, 0, :], [[2, 3], [6, -1]])
  scores = quest.page_scores(state, jnp.asarray(q[:, :, 0, :]))
  testing.assert_allclose(scores[0, 0, 0], np.array([1, 3.5, 1.5, 7], np.float32), n=2)
  np.testing.assert_array_equal(state.page_min_BKND[0, 0, 3], [5, -4])


@hypothesis.settings(max_examples=30, deadline=None)
@hypothesis.given(
    data=st.data(),
    page_size=st.sampled_from([1, 3, 4]),
    lengths=st.tuples(st.integers(0, 12), st.integers(0, 12)),
)
def test_page_score_is_an_upper_bound(data, page_size, lengths):
  # For every query head and every written key of a page: q . k <= U(q, page),
  # empty batches (length 0) included.
  B, K, G, T, D = 2, 2, 3, 12, 3
  floats = st.floats(-8, 8, width=32, allow_subnormal=False)
  k = np.array(data.draw(st.lists(floats, min_size=B * K * T * D, max_size=B * K * T * D)),
               np.float32).reshape(B, K, T, D)
  q = np.array(data.draw(st.lists(floats, min_size=B * K * G * D, max_size=B * K * G * D)),
               np.float32).reshape(B, K * G, D)
  L = np.array(lengths, np.int32)
  bounds = quest.page_bounds(jnp.asarray(k), jnp.asarray(L), page_size)
  U = np.asarray(quest.page_scores(bounds, jnp.asarray(q)))  # [B, K, G, N]
  qk = np.einsum("bkgd,bktd->bkgt", q.reshape(B, K, G, D).astype(np.float64),
                 k.astype(np.float64))
  tol = testing.tolerance(np.float32, D)
  for b in range(B):
    for t in range(int(L[b])):
      bound = U[b, :, :, t // page_size]
      assert np.all(qk[b, :, :, t] <= bound + tol.atol * (1 + np.abs(bound))), (b, t)


def test_replay_full_recall_when_budget_covers_context():
  rng = np.random.default_rng(1)
  B, K, G, T, D = 1, 1, 3, 16, 4
  q = jnp.asarray(rng.standard_normal((B, K * G, T, D)), jnp.float32)
  k = jnp.asarray(rng.standard_normal((B, K, T, D)), jnp.float32)
  v = jnp.asarray(rng.standard_normal((B, K, T, D)), jnp.float32)
  replay = jax.jit(metrics.replay, static_argnames=("policy", "prompt_len", "steps"))
  fid = replay(quest.quest(16, page_size=4), q, k, v, prompt_len=8, steps=8)
  testing.assert_allclose(fid.recall_BH, np.ones((8, B, K * G), np.float32), n=T)
  small = replay(quest.quest(9, page_size=4, min_pages=2, window=1), q, k, v,
                 prompt_len=8, steps=8)
  assert np.all(np.asarray(small.attended_B) <= 9)


def test_compiles_once():
  policy = quest.quest(12, page_size=4, window=0)
  rng = np.random.default_rng(3)
  k = jnp.asarray(rng.standard_normal((2, 2, 16, 4)), jnp.float32)
  q = jnp.asarray(rng.standard_normal((2, 6, 4)), jnp.float32)
  L = jnp.array([5, 12], jnp.int32)
  state = policy.init(k, k, L, jnp.zeros((2, 6, 16, 4), jnp.float32))
  testing.assert_compiles_once(jax.jit(policy.select), state, q, k, L)
  testing.assert_compiles_once(jax.jit(policy.update), state, q, k, L)


@pytest.mark.parametrize("args, kwargs, match", [
    ((40,), dict(), r"S = budget - num_sinks - window = 40 slots, 2 page\(s\) of 16; at"
                    r" least min_pages = 3 needed \(budget >= 48\)"),
    ((48,), dict(page_size=0), "page_size must be an int >= 1"),
    ((48,), dict(min_pages=0), "min_pages must be an int >= 1"),
    ((48,), dict(window=-1), "window must be an int >= 0"),
    ((8,), dict(num_sinks=4, window=8), r"budget \(8\) must be >= num_sinks \+ window"),
])
def test_errors(args, kwargs, match):
  with pytest.raises(ValueError, match=match):
    quest.quest(*args, **kwargs)
