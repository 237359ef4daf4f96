"""Drives a KV policy over decode steps for the policy tests (shared by test_*.py)."""

import functools

import jax
import jax.numpy as jnp
import numpy as np


@functools.partial(jax.jit, static_argnames=("policy", "steps"))
def _run(policy, steps, q, k, L0):
  T = k.shape[2]
  q_prompt = jnp.where((jnp.arange(T)[None, :] < L0[:, None])[:, None, :, None], q, 0.0)
  state = policy.init(k, k, L0, q_prompt)

  def step(state, i):
    L = L0 + 1 + i
    q_BHD = jnp.take_along_axis(q, (L - 1)[:, None, None, None], axis=2)[:, :, 0, :]
    idx = policy.select(state, q_BHD, k, L)
    return policy.update(state, q_BHD, k, L), idx

  return jax.lax.scan(step, state, jnp.arange(steps, dtype=jnp.int32))


def drive(policy, q_BHTD, k_BKTD, lengths0_B, steps):
  """init on the ragged prompts, then `steps` decode steps (select, update) in one jitted
  scan (compiled once per policy object and shapes)."""
  state, idx = _run(policy, steps, jnp.asarray(q_BHTD), jnp.asarray(k_BKTD),
                    jnp.asarray(lengths0_B))
  return state, np.asarray(idx)


def as_set(idx_S):
  s = sorted(int(t) for t in idx_S if t >= 0)
  assert len(s) == len(set(s)), f"duplicate positions in {idx_S}"
  return set(s)
