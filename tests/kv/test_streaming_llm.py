"""StreamingLLM policy against a pure-Python reference of its attended sets."""

import functools

import hypothesis
import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsys._src import testing
from jaxsys.kv import metrics
from jaxsys.kv import streaming_llm as sl
from tests.kv.policy_driver import drive


def drive_idx(*args):
  return drive(*args)[1]


def reference_attended(length, budget, num_sinks):
  """Sinks + the budget - num_sinks most recent tokens, written out."""
  window = budget - num_sinks
  sinks = {t for t in range(num_sinks) if t < length}
  recent = {t for t in range(max(length - window, 0), length)}
  return sinks | recent


def attended_sets(policy, idx_BKS, lengths_B):
  """The sparse-attention kernel's rule in Python: sinks, window, listed middle positions."""
  ns, w = policy.num_sinks, policy.window
  out = []
  for b, L in enumerate(np.asarray(lengths_B).tolist()):
    row = []
    for k in range(idx_BKS.shape[1]):
      att = {t for t in range(ns) if t < L} | {t for t in range(L - w, L) if t >= ns and t >= 0}
      att |= {int(t) for t in np.asarray(idx_BKS)[b, k] if ns <= t < L - w}
      row.append(att)
    out.append(row)
  return out


def test_matches_reference_over_decode_steps():
  rng = np.random.default_rng(0)
  B, K, G, T, D = 2, 2, 3, 32, 8
  q = rng.standard_normal((B, K * G, T, D)).astype(np.float32)
  k = rng.standard_normal((B, K, T, D)).astype(np.float32)
  lengths0 = np.array([5, 22], np.int32)  # the first is shorter than the budget
  policy = sl.streaming_llm(10, num_sinks=3)
  steps = 8
  idx = drive_idx(policy, q, k, lengths0, steps)
  assert idx.shape == (steps, B, K, 0)
  for i in range(steps):
    L = lengths0 + 1 + i
    got = attended_sets(policy, idx[i], L)
    for b in range(B):
      for kh in range(K):
        assert got[b][kh] == reference_attended(int(L[b]), 10, 3), (i, b, kh)


def test_golden_tiny_case():
  # budget 6, 2 sinks -> window 4. Cache of length 10 (positions 0..9):
  #   sinks {0, 1}, window {6, 7, 8, 9}; positions 2..5 evicted.
  # Length 5: sinks {0, 1}, window {1, 2, 3, 4} -> {0, 1, 2, 3, 4} (5 tokens, no overlap lost).
  policy = sl.streaming_llm(6, num_sinks=2)
  assert (policy.budget, policy.num_sinks, policy.window, policy.num_selected) == (6, 2, 4, 0)
  k = jnp.zeros((2, 1, 12, 1), jnp.float32)
  q = jnp.zeros((2, 1, 1), jnp.float32)
  L = jnp.array([10, 5], jnp.int32)
  state = policy.init(k, k, L, jnp.zeros((2, 1, 12, 1), jnp.float32))
  idx = policy.select(state, q, k, L)
  assert attended_sets(policy, idx, L) == [[{0, 1, 6, 7, 8, 9}], [{0, 1, 2, 3, 4}]]
  # the same sets as the metrics' (kernel-consistent) mask
  mask = metrics.attended_mask(idx, L, 12, num_sinks=2, window=4)
  assert [set(np.flatnonzero(mask[b, 0]).tolist()) for b in range(2)] == [
      {0, 1, 6, 7, 8, 9}, {0, 1, 2, 3, 4}]


@hypothesis.settings(max_examples=20, deadline=None)
@hypothesis.given(
    budget=st.integers(1, 20), num_sinks=st.integers(0, 6), length=st.integers(1, 24)
)
def test_attends_exactly_sinks_and_window(budget, num_sinks, length):
  hypothesis.assume(budget > num_sinks)
  policy = sl.streaming_llm(budget, num_sinks=num_sinks)
  k = jnp.zeros((1, 1, 24, 2), jnp.float32)
  L = jnp.array([length], jnp.int32)
  idx = policy.select(policy.init(k, k, L, jnp.zeros((1, 1, 24, 2), jnp.float32)),
                      jnp.zeros((1, 1, 2), jnp.float32), k, L)
  got = attended_sets(policy, idx, L)[0][0]
  assert got == reference_attended(length, budget, num_sinks)
  assert len(got) == min(budget, length)


def test_replay_full_recall_when_budget_covers_context():
  rng = np.random.default_rng(1)
  B, K, G, T, D = 1, 1, 3, 16, 4
  q = jnp.asarray(rng.standard_normal((B, K * G, T, D)), jnp.float32)
  k = jnp.asarray(rng.standard_normal((B, K, T, D)), jnp.float32)
  v = jnp.asarray(rng.standard_normal((B, K, T, D)), jnp.float32)
  replay = jax.jit(metrics.replay, static_argnames=("policy", "prompt_len", "steps"))
  fid = replay(sl.streaming_llm(16, num_sinks=2), q, k, v, prompt_len=8, steps=8)
  testing.assert_allclose(fid.recall_BH, np.ones((8, B, K * G), np.float32), n=T)
  small = replay(sl.streaming_llm(6, num_sinks=2), q, k, v, prompt_len=8, steps=8)
  np.testing.assert_array_equal(np.asarray(small.attended_B), np.full((8, B), 6.0))


def test_compiles_once():
  policy = sl.streaming_llm(8, num_sinks=4)
  k = jnp.ones((2, 2, 16, 4), jnp.float32)
  q = jnp.ones((2, 6, 4), jnp.float32)
  L = jnp.array([3, 12], jnp.int32)
  state = policy.init(k, k, L, jnp.ones((2, 6, 16, 4), jnp.float32))
  testing.assert_compiles_once(jax.jit(policy.select), state, q, k, L)
  testing.assert_compiles_once(jax.jit(policy.update), state, q, k, L)


@pytest.mark.parametrize("kwargs, match", [
    (dict(budget=4, num_sinks=4), "budget .4. must exceed num_sinks .4."),
    (dict(budget=2, num_sinks=4), "budget .2. must be >= num_sinks"),
    (dict(budget=8, num_sinks=-1), "num_sinks must be an int >= 0"),
    (dict(budget=8.0, num_sinks=1), "budget must be an int >= 0"),
])
def test_errors(kwargs, match):
  budget = kwargs.pop("budget")
  with pytest.raises(ValueError, match=match):
    sl.streaming_llm(budget, **kwargs)
