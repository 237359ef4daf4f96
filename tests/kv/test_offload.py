"""The offload simulator against a pure-Python slot buffer, step for step."""

import hypothesis
import hypothesis.strategies as st
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsys.kv import offload


def python_offload(trace, num_slots):
  """Sets and lists: hits, misses and the slot contents after each step."""
  slots = [-1] * num_slots
  out = []
  for sel in trace:
    sel = [int(t) for t in sel if t >= 0]
    resident = set(slots) - {-1}
    hits = [t for t in sel if t in resident]
    misses = [t for t in sel if t not in resident]
    # free slots: empty ones first, then resident-but-not-selected, in slot order
    free = [i for i, t in enumerate(slots) if t == -1]
    free += [i for i, t in enumerate(slots) if t != -1 and t not in set(sel)]
    for t, i in zip(misses, free):
      slots[i] = t
    out.append((len(hits), len(misses), list(slots)))
  return out


def test_golden_sequence():
  # 3 slots. step 1: {5, 7} -> 2 misses, slots [5, 7, -1]
  # step 2: {7, 9, 2} -> 7 hits; 9 into the empty slot, 2 replaces 5 (not selected)
  #         slots [2, 7, 9]
  # step 3: {2, 9} -> 2 hits, nothing moves
  trace = jnp.asarray([[[[5, 7, -1]]], [[[7, 9, 2]]], [[[2, 9, -1]]]], jnp.int32)
  state = offload.init(1, 1, 3)
  expected = [(0, 2, [5, 7, -1]), (1, 2, [2, 7, 9]), (2, 0, [2, 7, 9])]
  for n in range(3):
    state, stats = offload.step(state, trace[n])
    assert (int(stats.hits_BK[0, 0]), int(stats.misses_BK[0, 0])) == expected[n][:2]
    assert state.resident_BKN[0, 0].tolist() == expected[n][2]
  res = offload.simulate(trace, num_slots=3, bytes_per_token=256)
  np.testing.assert_allclose(res["hit_rate_N"], [0, 1 / 3, 1.0])
  np.testing.assert_array_equal(res["bytes_N"], [512, 512, 0])


@hypothesis.settings(deadline=None, max_examples=30)
@hypothesis.given(seed=st.integers(0, 10**6), S=st.sampled_from([1, 4]),
                  extra=st.sampled_from([0, 3]), T=st.integers(6, 20))
def test_matches_python_reference(seed, S, extra, T):
  rng = np.random.default_rng(seed)
  N = S + extra
  steps = 6
  trace = np.stack([
      np.where(rng.random(S) < 0.2, -1, rng.permutation(T)[:S]) for _ in range(steps)
  ]).astype(np.int32)
  want = python_offload(trace, N)
  state = offload.init(1, 1, N)
  for n in range(steps):
    state, stats = offload.step(state, jnp.asarray(trace[n])[None, None])
    hits, misses, slots = want[n]
    assert int(stats.hits_BK[0, 0]) == hits and int(stats.misses_BK[0, 0]) == misses
    assert sorted(state.resident_BKN[0, 0].tolist()) == sorted(slots)


def test_errors():
  state = offload.init(1, 2, 2)
  with pytest.raises(ValueError, match="3 selected tokens do not fit in 2 device slots"):
    offload.step(state, jnp.zeros((1, 2, 3), jnp.int32))
  with pytest.raises(ValueError, match=r"expected leading shape \(1, 2\)"):
    offload.step(state, jnp.zeros((2, 2, 2), jnp.int32))
  with pytest.raises(ValueError, match="num_slots: expected >= 1"):
    offload.init(1, 1, 0)
