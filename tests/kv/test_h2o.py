"""H2O policy against a pure-Python heavy-hitter cache simulated step by step."""

import functools
import math

import hypothesis
import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsys._src import testing
from jaxsys.kv import h2o, metrics
from tests.kv.policy_driver import as_set, drive


def softmax(s):
  e = np.exp(s - np.max(s))
  return e / e.sum()


def reference_h2o(q, k, lengths0, steps, budget, window):
  """Pure-Python H2O over a set-based cache, per (sequence, KV head).

  Returns a list over steps of [b][kh] -> set of selected (heavy-hitter) positions,
  and the final accumulated scores [B, K, T].
  """
  B, H, T, D = q.shape
  K = k.shape[1]
  G = H // K
  S = budget - window
  q = q.astype(np.float64)
  k = k.astype(np.float64)
  out = [[[None] * K for _ in range(B)] for _ in range(steps)]
  scores = np.zeros((B, K, T))
  for b in range(B):
    L0 = int(lengths0[b])
    for kh in range(K):
      score = np.zeros(T)
      # prefill: causal attention of every prompt query, summed over the group
      for g in range(G):
        h = kh * G + g
        for i in range(L0):
          score[: i + 1] += softmax(np.array([q[b, h, i] @ k[b, kh, j] for j in range(i + 1)])
                                    / math.sqrt(D))
      cand = [t for t in range(L0) if t < L0 - window]
      keep = sorted(cand, key=lambda t: (-score[t], t))[:S]
      cache = set(range(L0)) - (set(cand) - set(keep))
      for n in range(steps):
        L = L0 + 1 + n
        cache.add(L - 1)
        cand = [t for t in sorted(cache) if t < L - window]
        sel = sorted(cand, key=lambda t: (-score[t], t))[:S]
        cache -= set(cand) - set(sel)
        out[n][b][kh] = set(sel)
        attended = sorted(set(sel) | set(range(max(L - window, 0), L)))
        for g in range(G):
          h = kh * G + g
          p = softmax(np.array([q[b, h, L - 1] @ k[b, kh, j] for j in attended]) / math.sqrt(D))
          score[attended] += p
      scores[b, kh] = score
  return out, scores


def test_matches_reference_over_decode_steps():
  rng = np.random.default_rng(0)
  B, K, G, T, D = 2, 2, 3, 32, 8
  q = rng.standard_normal((B, K * G, T, D)).astype(np.float32)
  k = rng.standard_normal((B, K, T, D)).astype(np.float32)
  lengths0 = np.array([9, 22], np.int32)  # ragged; the first starts with fewer than S candidates
  budget, window, steps = 10, 3, 8
  policy = h2o.h2o(budget, window=window)
  state, idx = drive(policy, q, k, lengths0, steps)
  ref, ref_scores = reference_h2o(q, k, lengths0, steps, budget, window)
  for n in range(steps):
    for b in range(B):
      for kh in range(K):
        assert as_set(idx[n, b, kh]) == ref[n][b][kh], (n, b, kh)
  # accumulated scores of every position written so far match too
  written = np.arange(T)[None, None, :] < (lengths0 + steps)[:, None, None]
  testing.assert_allclose(np.where(written, state.score_BKT, 0.0),
                          np.where(written, ref_scores, 0.0), dtype=np.float32, n=T * G)


_PROPERTY_POLICY = h2o.h2o(7, window=2)


@hypothesis.settings(max_examples=10, deadline=None)
@hypothesis.given(seed=st.integers(0, 2**16), L0=st.tuples(st.integers(1, 18), st.integers(1, 18)))
def test_matches_reference_for_any_ragged_lengths(seed, L0):
  # One compile serves every example: fixed shapes, same policy object.
  rng = np.random.default_rng(seed)
  B, K, G, T, D, steps = 2, 1, 3, 24, 4, 6
  q = rng.standard_normal((B, K * G, T, D)).astype(np.float32)
  k = rng.standard_normal((B, K, T, D)).astype(np.float32)
  lengths0 = np.array(L0, np.int32)
  _, idx = drive(_PROPERTY_POLICY, q, k, lengths0, steps)
  ref, _ = reference_h2o(q, k, lengths0, steps, 7, 2)
  for n in range(steps):
    for b in range(B):
      assert as_set(idx[n, b, 0]) == ref[n][b][0], (n, b)


def test_golden_tiny_case():
  # One sequence, one head, D = 1 (scale 1), every query q = 1, keys k_j = ln w_j so
  # that softmax weights are proportional to w: w = [1, 2, 1, 30, 1, 1].
  # budget 3, window 2 -> S = 1 heavy hitter. Prompt length 3.
  # Prefill (causal): q0 -> [1];  q1 -> [1/3, 2/3];  q2 -> [1, 2, 1]/4
  #   scores s = [1 + 1/3 + 1/4, 2/3 + 1/2, 1/4] = [19/12, 7/6, 1/4].
  #   Window {1, 2}; candidates {0}: keep 0.
  # Step 0 (length 4, window {2, 3}): candidates {0, 1} -> select 0 (19/12 > 7/6), evict 1.
  #   attended {0, 2, 3}, w [1, 1, 30]/32: s0 = 19/12 + 1/32, s2 = 1/4 + 1/32 = 9/32, s3 = 15/16
  # Step 1 (length 5, window {3, 4}): candidates {0, 2} -> select 0, evict 2.
  #   attended {0, 3, 4}, w [1, 30, 1]/32: s0 = 19/12 + 1/16 = 1.6458, s3 = 15/16 + 15/16 = 15/8,
  #   s4 = 1/32
  # Step 2 (length 6, window {4, 5}): candidates {0, 3} -> select 3 (15/8 > 1.6458), evict 0.
  #   attended {3, 4, 5}, w [30, 1, 1]/32: s3 = 15/8 + 15/16 = 45/16, s4 = 1/16, s5 = 1/32
  w = np.array([1, 2, 1, 30, 1, 1], np.float64)
  k = np.log(w).astype(np.float32).reshape(1, 1, 6, 1)
  q = np.ones((1, 1, 6, 1), np.float32)
  state, idx = drive(h2o.h2o(3, window=2), q, k, np.array([3], np.int32), 3)
  np.testing.assert_array_equal(idx[:, 0, 0, :], [[0], [0], [3]])
  want = [19 / 12 + 1 / 16, 7 / 6, 9 / 32, 45 / 16, 1 / 16, 1 / 32]
  testing.assert_allclose(state.score_BKT[0, 0], np.array(want, np.float32), n=6)
  np.testing.assert_array_equal(state.cached_BKT[0, 0], [False, False, False, True, True, True])


def test_never_selects_an_evicted_token_and_keeps_budget():
  rng = np.random.default_rng(2)
  B, K, G, T, D = 2, 1, 3, 40, 4
  q = rng.standard_normal((B, K * G, T, D)).astype(np.float32)
  k = rng.standard_normal((B, K, T, D)).astype(np.float32)
  budget, window = 8, 2
  _, idx = drive(h2o.h2o(budget, window=window), q, k, np.array([12, 20], np.int32), 18)
  for b in range(B):
    dropped = set()
    prev = None
    for n in range(idx.shape[0]):
      cur = as_set(idx[n, b, 0])
      assert len(cur) == budget - window
      assert not cur & dropped, (n, b, cur & dropped)
      if prev is not None:
        dropped |= prev - cur  # left the heavy set: evicted for good
      prev = cur


def test_replay_attends_budget_and_full_recall_with_large_budget():
  rng = np.random.default_rng(1)
  B, K, G, T, D = 1, 1, 3, 16, 4
  q = jnp.asarray(rng.standard_normal((B, K * G, T, D)), jnp.float32)
  k = jnp.asarray(rng.standard_normal((B, K, T, D)), jnp.float32)
  v = jnp.asarray(rng.standard_normal((B, K, T, D)), jnp.float32)
  replay = jax.jit(metrics.replay, static_argnames=("policy", "prompt_len", "steps"))
  fid = replay(h2o.h2o(16, window=4), q, k, v, prompt_len=8, steps=8)
  testing.assert_allclose(fid.recall_BH, np.ones((8, B, K * G), np.float32), n=T)
  small = replay(h2o.h2o(6, window=2), q, k, v, prompt_len=8, steps=8)
  np.testing.assert_array_equal(np.asarray(small.attended_B), np.full((8, B), 6.0))


def test_compiles_once():
  policy = h2o.h2o(8, window=3)
  rng = np.random.default_rng(3)
  k = jnp.asarray(rng.standard_normal((2, 2, 16, 4)), jnp.float32)
  q = jnp.asarray(rng.standard_normal((2, 6, 4)), jnp.float32)
  L = jnp.array([5, 12], jnp.int32)
  state = jax.jit(policy.init)(
      k, k, L, jnp.asarray(rng.standard_normal((2, 6, 16, 4)), jnp.float32))
  testing.assert_compiles_once(jax.jit(policy.select), state, q, k, L)
  testing.assert_compiles_once(jax.jit(policy.update), state, q, k, L)


def test_prompt_attention_sum_blocks():
  # More prompt queries than one block of 128: the scan over blocks must add up.
  rng = np.random.default_rng(4)
  T = 130
  q = jnp.asarray(rng.standard_normal((1, 1, T, 2)), jnp.float32)
  k = jnp.asarray(rng.standard_normal((1, 1, T, 2)), jnp.float32)
  got = h2o.prompt_attention_sum(q, k, jnp.array([129], jnp.int32))
  # each of the 129 valid queries distributes mass 1
  testing.assert_allclose(jnp.sum(got), np.float32(129.0), n=T * T)
  s = np.asarray(q[0, 0], np.float64) @ np.asarray(k[0, 0], np.float64).T / math.sqrt(2)
  want = np.zeros(T)
  for i in range(129):
    want[: i + 1] += softmax(s[i, : i + 1])
  testing.assert_allclose(got[0, 0], want.astype(np.float32), n=T)


@pytest.mark.parametrize("args, kwargs, match", [
    ((8,), dict(window=0), "window must be >= 1"),
    ((8,), dict(window=9), r"budget \(8\) must be >= num_sinks \+ window"),
    ((-1,), dict(), "budget must be an int >= 0"),
    ((8,), dict(window=-2), "window must be an int >= 0"),
])
def test_errors(args, kwargs, match):
  with pytest.raises(ValueError, match=match):
    h2o.h2o(*args, **kwargs)


def test_error_bad_prompt_queries():
  policy = h2o.h2o(8, window=2)
  k = jnp.zeros((1, 2, 16, 4), jnp.float32)
  with pytest.raises(ValueError, match="q_BHTD"):
    policy.init(k, k, jnp.array([4], jnp.int32), jnp.zeros((1, 5, 16, 4), jnp.float32))
  with pytest.raises(ValueError, match="q_BHTD"):
    policy.init(k, k, jnp.array([4], jnp.int32), jnp.zeros((1, 6, 12, 4), jnp.float32))
