"""Inf-MLLM policy against a pure-Python chunked-eviction cache simulated step by step."""

import functools
import math

import hypothesis
import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsys._src import testing
from jaxsys.kv import inf_mllm, metrics
from tests.kv.policy_driver import as_set, drive


def softmax(s):
  e = np.exp(s - np.max(s))
  return e / e.sum()


def reference_inf_mllm(q, k, lengths0, steps, *, budget, num_sinks, recent, retrieval_window,
                       pool_kernel, bias, chunk):
  """Pure-Python Inf-MLLM over a set-based cache, per (sequence, KV head).

  Returns, per step, [b][kh] -> the set of listed (non-sink, non-window) cached positions.
  """
  B, H, T, D = q.shape
  K = k.shape[1]
  G = H // K
  R = budget - num_sinks - recent
  q = q.astype(np.float64)
  k = k.astype(np.float64)

  def evict(b, kh, cache, t):
    a = np.zeros(T)
    for p in range(max(t - retrieval_window, 0), t):  # the last W queries
      toks = sorted(j for j in cache if j <= p)
      for g in range(G):
        h = kh * G + g
        a[toks] += softmax(np.array([q[b, h, p] @ k[b, kh, j] for j in toks]) / math.sqrt(D))
    r = pool_kernel // 2
    score = [sum(a[j + o] for o in range(-r, r + 1) if 0 <= j + o < T) + bias * j / t
             for j in range(T)]
    cand = [j for j in sorted(cache) if num_sinks <= j < t - recent]
    keep = sorted(cand, key=lambda j: (-score[j], j))[:R]
    return {j for j in cache if j < num_sinks or j >= t - recent} | set(keep)

  out = [[[None] * K for _ in range(B)] for _ in range(steps)]
  for b in range(B):
    L0 = int(lengths0[b])
    for kh in range(K):
      cache = evict(b, kh, set(range(L0)), L0)
      last = L0
      for n in range(steps):
        L = L0 + 1 + n
        cache.add(L - 1)
        out[n][b][kh] = {j for j in cache if num_sinks <= j < L - recent}
        if L - last >= chunk:
          cache = evict(b, kh, cache, L)
          last = L
  return out


@pytest.mark.parametrize("settings", [
    # retrieval window longer than a chunk: queries from before the last eviction count
    dict(budget=9, num_sinks=1, recent=3, retrieval_window=4, pool_kernel=3, bias=0.7, chunk=3),
    dict(budget=7, num_sinks=0, recent=2, retrieval_window=2, pool_kernel=1, bias=0.0, chunk=4),
])
def test_matches_reference_over_decode_steps(settings):
  rng = np.random.default_rng(0)
  B, K, G, T, D = 2, 2, 3, 32, 8
  q = rng.standard_normal((B, K * G, T, D)).astype(np.float32)
  k = rng.standard_normal((B, K, T, D)).astype(np.float32)
  lengths0 = np.array([7, 20], np.int32)  # ragged; the first prompt fits the budget
  steps = 10
  policy = inf_mllm.inf_mllm(**settings)
  _, idx = drive(policy, q, k, lengths0, steps)
  assert idx.shape == (steps, B, K, policy.num_selected)
  ref = reference_inf_mllm(q, k, lengths0, steps, **settings)
  for n in range(steps):
    for b in range(B):
      for kh in range(K):
        assert as_set(idx[n, b, kh]) == ref[n][b][kh], (n, b, kh)


_PROPERTY_POLICY = inf_mllm.inf_mllm(6, num_sinks=1, recent=2, retrieval_window=3,
                                     pool_kernel=3, bias=0.5, chunk=2)


@hypothesis.settings(max_examples=10, deadline=None)
@hypothesis.given(seed=st.integers(0, 2**16), L0=st.tuples(st.integers(1, 18), st.integers(1, 18)))
def test_matches_reference_for_any_ragged_lengths(seed, L0):
  # One compile serves every example: fixed shapes, same policy object.
  rng = np.random.default_rng(seed)
  B, K, G, T, D, steps = 2, 1, 3, 24, 4, 6
  q = rng.standard_normal((B, K * G, T, D)).astype(np.float32)
  k = rng.standard_normal((B, K, T, D)).astype(np.float32)
  _, idx = drive(_PROPERTY_POLICY, q, k, np.array(L0, np.int32), steps)
  ref = reference_inf_mllm(q, k, L0, steps, budget=6, num_sinks=1, recent=2,
                           retrieval_window=3, pool_kernel=3, bias=0.5, chunk=2)
  for n in range(steps):
    for b in range(B):
      assert as_set(idx[n, b, 0]) == ref[n][b][0], (n, b)


def test_golden_tiny_case():
  # One sequence, one head, D = 1 (scale 1), every query q = 1, keys k_j = ln w_j so that
  # softmax weights are proportional to w: w = [1, 4, 1, 1, 2, 1, 1, 1].
  # budget 2 = recent 1 + R = 1 relevant; retrieval window 2; local sum over 3; bias 0.5;
  # chunk 2. Prompt of 5 tokens.
  # Eviction at t = 5 (init), cache {0..4}, retrieval queries 3 and 4:
  #   q3: [1, 4, 1, 1] / 7      q4: [1, 4, 1, 1, 2] / 9
  #   a = [16, 64, 16, 16, 14] / 63
  #   local sums: P0 = 80/63, P1 = 96/63, P2 = 96/63, P3 = 46/63
  #   + 0.5 j / 5: P0 = 1.2698, P1 = 1.6238, P2 = 1.7238, P3 = 1.0302
  #   candidates {0, 1, 2, 3} (4 is recent): keep 2 -- the bias breaks the P1 = P2 tie
  #   toward the newer token. Cache {2, 4}.
  # Step 0 (t = 6, token 5): list = {2} + aged {4} (left the window of 1) -> {2, 4}.
  # Step 1 (t = 7, token 6): list {2, 4, 5}; 2 tokens since the eviction -> evict at t = 7:
  #   cache {2, 4, 5, 6}; queries 5: [1, 2, 1]/4 on {2, 4, 5}; 6: [1, 2, 1, 1]/5 on {2, 4, 5, 6}
  #   a2 = 9/20, a4 = 18/20, a5 = 9/20, a6 = 4/20
  #   local sums + 0.5 j / 7: 2: 9/20 + 1/7 = 0.5929; 4: 27/20 + 2/7 = 1.6357;
  #   5: 31/20 + 2.5/7 = 1.9071 -> keep 5; cache {5, 6}.
  # Step 2 (t = 8, token 7): list = {5} + aged {6}.
  w = np.array([1, 4, 1, 1, 2, 1, 1, 1], np.float64)
  k = np.log(w).astype(np.float32).reshape(1, 1, 8, 1)
  q = np.ones((1, 1, 8, 1), np.float32)
  policy = inf_mllm.inf_mllm(2, recent=1, retrieval_window=2, pool_kernel=3, bias=0.5, chunk=2)
  assert (policy.budget, policy.window, policy.num_selected) == (4, 1, 3)
  state, idx = drive(policy, q, k, np.array([5], np.int32), 3)
  np.testing.assert_array_equal(idx[:, 0, 0, :], [[2, 4, -1], [2, 4, 5], [5, 6, -1]])
  np.testing.assert_array_equal(state.relevant_BKR, [[[5]]])
  np.testing.assert_array_equal(state.last_evict_B, [7])
  # the scores of the t = 7 eviction
  cached = jnp.asarray(np.isin(np.arange(8), [2, 4, 5, 6]).reshape(1, 1, 8))
  ring = jnp.ones((1, 1, 2, 1), jnp.float32)  # queries 5 and 6 (slots 1 and 0), both 1
  score = inf_mllm.relevance_scores(ring, jnp.asarray(k), jnp.array([7], jnp.int32), cached,
                                    pool_kernel=3, bias=0.5)
  want_a = np.array([0, 0, 9, 0, 18, 9, 4, 0], np.float64) / 20
  want = np.convolve(want_a, np.ones(3), mode="same") + 0.5 * np.arange(8) / 7
  testing.assert_allclose(score[0, 0], want.astype(np.float32), n=12)
  testing.assert_allclose(score[0, 0, [2, 4, 5]], np.array([0.5929, 1.6357, 1.9071]),
                          dtype=np.float32, scale=100.0)


def test_cache_size_between_evictions():
  # Attended tokens cycle budget + 1 .. budget + chunk; never more than policy.budget.
  rng = np.random.default_rng(1)
  B, K, G, T, D = 1, 1, 3, 24, 4
  q = jnp.asarray(rng.standard_normal((B, K * G, T, D)), jnp.float32)
  k = jnp.asarray(rng.standard_normal((B, K, T, D)), jnp.float32)
  v = jnp.asarray(rng.standard_normal((B, K, T, D)), jnp.float32)
  replay = jax.jit(metrics.replay, static_argnames=("policy", "prompt_len", "steps"))
  policy = inf_mllm.inf_mllm(6, num_sinks=1, recent=2, retrieval_window=3, chunk=3)
  fid = replay(policy, q, k, v, prompt_len=10, steps=12)
  np.testing.assert_array_equal(np.asarray(fid.attended_B)[:, 0], [7, 8, 9] * 4)
  # a budget covering the context evicts nothing: full recall
  full = replay(inf_mllm.inf_mllm(22, recent=4, chunk=2), q, k, v, prompt_len=10, steps=12)
  testing.assert_allclose(full.recall_BH, np.ones((12, B, K * G), np.float32), n=T)


def test_never_lists_an_evicted_token():
  rng = np.random.default_rng(2)
  B, K, G, T, D = 2, 1, 3, 40, 4
  q = rng.standard_normal((B, K * G, T, D)).astype(np.float32)
  k = rng.standard_normal((B, K, T, D)).astype(np.float32)
  policy = inf_mllm.inf_mllm(8, recent=2, retrieval_window=5, chunk=4, bias=2.0)
  _, idx = drive(policy, q, k, np.array([12, 19], np.int32), 20)
  for b in range(B):
    dropped, prev = set(), None
    for n in range(idx.shape[0]):
      cur = as_set(idx[n, b, 0])
      assert not cur & dropped, (n, b, cur & dropped)
      if prev is not None:
        dropped |= prev - cur
      prev = cur


def test_compiles_once():
  policy = inf_mllm.inf_mllm(8, num_sinks=1, recent=3, retrieval_window=4, chunk=2)
  rng = np.random.default_rng(3)
  k = jnp.asarray(rng.standard_normal((2, 2, 16, 4)), jnp.float32)
  q = jnp.asarray(rng.standard_normal((2, 6, 4)), jnp.float32)
  L = jnp.array([5, 12], jnp.int32)
  state = jax.jit(policy.init)(k, k, L, jnp.asarray(rng.standard_normal((2, 6, 16, 4)),
                                                    jnp.float32))
  testing.assert_compiles_once(jax.jit(policy.select), state, q, k, L)
  testing.assert_compiles_once(jax.jit(policy.update), state, q, k, L)


@pytest.mark.parametrize("args, kwargs, match", [
    ((8,), dict(recent=0), "recent must be >= 1"),
    ((8,), dict(recent=6, num_sinks=3), r"budget \(8\) must be >= num_sinks \+ window"),
    ((8,), dict(retrieval_window=0), "retrieval_window must be an int >= 1"),
    ((8,), dict(chunk=0), "chunk must be an int >= 1"),
    ((8,), dict(pool_kernel=2), "pool_kernel must be an odd int >= 1"),
    ((8,), dict(pool_kernel=0), "pool_kernel must be an odd int >= 1"),
    ((8,), dict(bias=float("nan")), "bias must be a finite number"),
    ((-2,), dict(), "budget must be an int >= 0"),
])
def test_errors(args, kwargs, match):
  with pytest.raises(ValueError, match=match):
    inf_mllm.inf_mllm(*args, **kwargs)
