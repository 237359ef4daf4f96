"""SnapKV policy against a pure-Python observation-window vote and pooling."""

import functools
import math

import hypothesis
import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsys._src import testing
from jaxsys.kv import metrics, snapkv
from tests.kv.policy_driver import as_set, drive


def softmax(s):
  e = np.exp(s - np.max(s))
  return e / e.sum()


def reference_scores(q, k, L, kh, obs_window, pool_kernel):
  """Votes of the last obs_window queries on the prefix, average-pooled; [T] float64."""
  H, T, D = q.shape
  K = k.shape[0]
  G = H // K
  prefix = max(L - obs_window, 0)
  votes = np.zeros(prefix)
  for g in range(G):
    h = kh * G + g
    for i in range(max(L - obs_window, 0), L):
      p = softmax(np.array([q[h, i] @ k[kh, j] for j in range(i + 1)]) / math.sqrt(D))
      votes += p[:prefix]
  r = pool_kernel // 2
  pooled = np.zeros(T)
  for j in range(prefix):
    pooled[j] = sum(votes[j + o] for o in range(-r, r + 1) if 0 <= j + o < prefix) / pool_kernel
  return pooled


def reference_kept(q, k, L, kh, budget, window, obs_window, pool_kernel):
  """The kept prompt tokens: among those older than the window of the first decode
  step (length L + 1), observation tokens newest first, then prefix tokens by pooled
  votes; then, if slots remain, the prompt tokens in that window, oldest first."""
  S = budget - window
  pooled = reference_scores(q, k, L, kh, obs_window, pool_kernel)
  old = list(range(max(L + 1 - window, 0)))
  obs = sorted([t for t in old if t >= L - obs_window], reverse=True)
  prefix = sorted([t for t in old if t < L - obs_window], key=lambda t: (-pooled[t], t))
  rest = [t for t in range(L) if t not in old]
  return set((obs + prefix + rest)[:S])


@pytest.mark.parametrize("budget, window, obs_window, pool_kernel", [
    (10, 3, 5, 3),  # window < obs_window: old observation tokens kept in the list
    (11, 4, 4, 5),  # window = obs_window (the default relation)
])
def test_matches_reference_over_decode_steps(budget, window, obs_window, pool_kernel):
  rng = np.random.default_rng(0)
  B, K, G, T, D = 2, 2, 3, 32, 8
  q = rng.standard_normal((B, K * G, T, D)).astype(np.float32)
  k = rng.standard_normal((B, K, T, D)).astype(np.float32)
  lengths0 = np.array([9, 22], np.int32)
  steps = 8
  policy = snapkv.snapkv(budget, window=window, obs_window=obs_window, pool_kernel=pool_kernel)
  _, idx = drive(policy, q, k, lengths0, steps)
  scores = snapkv.prefix_scores(jnp.asarray(k), jnp.asarray(lengths0), jnp.asarray(q),
                                obs_window=obs_window, pool_kernel=pool_kernel)
  for b in range(B):
    L0 = int(lengths0[b])
    for kh in range(K):
      want = reference_scores(q[b].astype(np.float64), k[b].astype(np.float64), L0, kh,
                              obs_window, pool_kernel)
      testing.assert_allclose(scores[b, kh], want.astype(np.float32), n=obs_window * G * T)
      kept = reference_kept(q[b].astype(np.float64), k[b].astype(np.float64), L0, kh,
                            budget, window, obs_window, pool_kernel)
      for n in range(steps):  # no decode-time compression: the same list every step
        assert as_set(idx[n, b, kh]) == kept, (n, b, kh)


_PROPERTY_POLICY = snapkv.snapkv(9, window=3, obs_window=5, pool_kernel=3)


@hypothesis.settings(max_examples=10, deadline=None)
@hypothesis.given(seed=st.integers(0, 2**16), L0=st.tuples(st.integers(1, 20), st.integers(1, 20)))
def test_matches_reference_for_any_ragged_lengths(seed, L0):
  # Short prompts (no prefix, fewer tokens than slots) included; one compile serves all.
  rng = np.random.default_rng(seed)
  B, K, G, T, D, steps = 2, 1, 3, 24, 4, 3
  q = rng.standard_normal((B, K * G, T, D)).astype(np.float32)
  k = rng.standard_normal((B, K, T, D)).astype(np.float32)
  _, idx = drive(_PROPERTY_POLICY, q, k, np.array(L0, np.int32), steps)
  for b in range(B):
    kept = reference_kept(q[b].astype(np.float64), k[b].astype(np.float64), L0[b], 0,
                          9, 3, 5, 3)
    for n in range(steps):
      assert as_set(idx[n, b, 0]) == kept, (n, b)


def test_golden_tiny_case():
  # One sequence, one head, D = 1 (scale 1), every query q = 1, keys k_j = ln w_j so
  # that softmax weights are proportional to w: w = [3, 3, 1, 4, 1, 1, 1, 1].
  # Prompt length 6, obs_window 2 (queries 4 and 5), prefix = positions 0..3.
  #   q4 attends 0..4: w / 12;  q5 attends 0..5: w / 13;
  #   votes v_j = w_j (1/12 + 1/13) = w_j * 25/156 -> [75, 75, 25, 100] / 156
  # Average pooling, kernel 3, zero "same" padding, divisor 3:
  #   p0 = (0 + 75 + 75)/468 = 150/468, p1 = (75 + 75 + 25)/468 = 175/468,
  #   p2 = (75 + 25 + 100)/468 = 200/468, p3 = (25 + 100 + 0)/468 = 125/468.
  # budget 4, window 2 -> S = 2. The first decode step (length 7) has window {5, 6}, so
  # observation token 4 takes the first slot (SnapKV keeps its observation window);
  # the second goes to position 2 (pooled best), although the raw votes favour 3.
  # No decode-time compression: the list stays [4, 2].
  w = np.array([3, 3, 1, 4, 1, 1, 1, 1], np.float64)
  k = np.log(w).astype(np.float32).reshape(1, 1, 8, 1)
  q = np.ones((1, 1, 8, 1), np.float32)
  scores = snapkv.prefix_scores(jnp.asarray(k), jnp.array([6], jnp.int32), jnp.asarray(q),
                                obs_window=2, pool_kernel=3)
  want = np.array([150, 175, 200, 125, 0, 0, 0, 0], np.float64) / 468
  testing.assert_allclose(scores[0, 0], want.astype(np.float32), n=8)
  policy = snapkv.snapkv(4, window=2, obs_window=2, pool_kernel=3)
  _, idx = drive(policy, q, k, np.array([6], np.int32), 2)
  np.testing.assert_array_equal(idx[:, 0, 0, :], [[4, 2], [4, 2]])
  # kernel 1 (no pooling) would keep the raw-vote best, position 3
  _, idx1 = drive(snapkv.snapkv(4, window=2, obs_window=2, pool_kernel=1), q, k,
                  np.array([6], np.int32), 1)
  np.testing.assert_array_equal(idx1[0, 0, 0, :], [4, 3])


def test_short_prompt_keeps_everything_it_can():
  # Prompt (6) shorter than the observation window (8): no prefix, every prompt token
  # is an observation token. The first decode step has window {5, 6}: tokens 0..4 are
  # older and kept newest first, [4, 3, 2].
  rng = np.random.default_rng(5)
  k = rng.standard_normal((1, 1, 16, 4)).astype(np.float32)
  q = rng.standard_normal((1, 3, 16, 4)).astype(np.float32)
  policy = snapkv.snapkv(5, window=2, obs_window=8, pool_kernel=5)
  _, idx = drive(policy, q, k, np.array([6], np.int32), 1)
  np.testing.assert_array_equal(idx[0, 0, 0], [4, 3, 2])
  # Window 6 covers the whole prompt at the first decode step: the slots take the
  # prompt tokens oldest first, [0, 1, 2] -- attended once they leave the window.
  _, idx = drive(snapkv.snapkv(9, window=6, obs_window=8), q, k, np.array([6], np.int32), 1)
  np.testing.assert_array_equal(idx[0, 0, 0], [0, 1, 2])


def test_replay_attends_budget_and_full_recall_with_large_budget():
  rng = np.random.default_rng(1)
  B, K, G, T, D = 1, 1, 3, 16, 4
  q = jnp.asarray(rng.standard_normal((B, K * G, T, D)), jnp.float32)
  k = jnp.asarray(rng.standard_normal((B, K, T, D)), jnp.float32)
  v = jnp.asarray(rng.standard_normal((B, K, T, D)), jnp.float32)
  replay = jax.jit(metrics.replay, static_argnames=("policy", "prompt_len", "steps"))
  # window 9 >= every generated token: all prompt tokens fit the list, nothing dropped
  fid = replay(snapkv.snapkv(16, window=9, obs_window=4), q, k, v, prompt_len=8, steps=8)
  testing.assert_allclose(fid.recall_BH, np.ones((8, B, K * G), np.float32), n=T)
  small = replay(snapkv.snapkv(6, window=2, obs_window=4, pool_kernel=3), q, k, v,
                 prompt_len=8, steps=8)
  np.testing.assert_array_equal(np.asarray(small.attended_B), np.full((8, B), 6.0))


def test_compiles_once():
  policy = snapkv.snapkv(8, window=3, obs_window=4)
  rng = np.random.default_rng(3)
  k = jnp.asarray(rng.standard_normal((2, 2, 16, 4)), jnp.float32)
  q_prompt = jnp.asarray(rng.standard_normal((2, 6, 16, 4)), jnp.float32)
  q = jnp.asarray(rng.standard_normal((2, 6, 4)), jnp.float32)
  L = jnp.array([5, 12], jnp.int32)
  state = testing.assert_compiles_once(jax.jit(policy.init), k, k, L, q_prompt)
  testing.assert_compiles_once(jax.jit(policy.select), state, q, k, L)
  testing.assert_compiles_once(jax.jit(policy.update), state, q, k, L)


@pytest.mark.parametrize("args, kwargs, match", [
    ((16,), dict(), r"budget \(16\) must be >= window, which defaults to obs_window \(32\)"),
    ((16,), dict(window=0), "window must be >= 1"),
    ((16,), dict(window=4, obs_window=0), "obs_window must be an int >= 1"),
    ((16,), dict(window=4, pool_kernel=0), "pool_kernel must be an odd int >= 1"),
    ((16,), dict(window=4, pool_kernel=4), "pool_kernel must be an odd int >= 1"),
    ((3,), dict(window=4), r"budget \(3\) must be >= num_sinks \+ window"),
])
def test_errors(args, kwargs, match):
  with pytest.raises(ValueError, match=match):
    snapkv.snapkv(*args, **kwargs)
