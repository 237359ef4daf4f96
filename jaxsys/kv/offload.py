"""ClusterKV's offloaded KV cache as a simulator: device slots, set-difference swaps.

With offloading (ClusterKV, arXiv 2412.03213, Sec. 4.4), the whole KV cache of
layers >= 2 lives in host memory and the device holds, per (sequence, KV head), a
buffer of `num_slots` selected tokens (next to the always-resident sinks and
recent window). At every decode step the policy's new selection is compared
with what is resident: selected tokens already in a slot are hits; the others
are copied from the host into the slots of resident tokens that were not
selected (set difference), so only the misses cross the bus. Slots not needed
for a miss keep their old token, which may hit later.

`simulate` replays a selection trace (e.g. from `jaxsys.kv.metrics.replay`-style
loops) and reports, per step, the hit rate and the bytes moved.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp


class OffloadState(NamedTuple):
  resident_BKN: jax.Array  # [B, K, N] int32 token in each device slot, -1 = empty


class OffloadStats(NamedTuple):
  hits_BK: jax.Array  # [B, K] selected tokens found resident
  misses_BK: jax.Array  # [B, K] selected tokens copied from the host
  selected_BK: jax.Array  # [B, K] valid (>= 0) selected tokens


def init(batch: int, kv_heads: int, num_slots: int) -> OffloadState:
  """An empty device buffer of `num_slots` slots per (sequence, KV head)."""
  if num_slots < 1:
    raise ValueError(f"num_slots: expected >= 1, given {num_slots}")
  return OffloadState(jnp.full((batch, kv_heads, num_slots), -1, jnp.int32))


def _member(values_X: jax.Array, pool_Y: jax.Array) -> jax.Array:
  """``[X]`` bool: whether each value (>= 0) occurs in `pool_Y`."""
  sorted_Y = jnp.sort(pool_Y)
  pos = jnp.clip(jnp.searchsorted(sorted_Y, values_X), 0, pool_Y.shape[0] - 1)
  return (sorted_Y[pos] == values_X) & (values_X >= 0)


def _step_one(resident_N: jax.Array, selected_S: jax.Array):
  N, S = resident_N.shape[0], selected_S.shape[0]
  valid_S = selected_S >= 0
  hit_S = _member(selected_S, resident_N)
  keep_N = _member(resident_N, selected_S)  # resident and selected again
  miss_S = valid_S & ~hit_S
  # i-th miss goes to the i-th free slot (free = not kept; empty slots first).
  rank_N = keep_N.astype(jnp.int32) * 2 + (resident_N >= 0).astype(jnp.int32)
  free_order_N = jnp.argsort(rank_N, stable=True)
  miss_rank_S = jnp.cumsum(miss_S) - 1
  slot_S = jnp.where(miss_S, free_order_N[jnp.clip(miss_rank_S, 0, N - 1)], N)
  resident_N = resident_N.at[slot_S].set(selected_S, mode="drop")
  del S
  return resident_N, jnp.sum(hit_S & valid_S), jnp.sum(miss_S), jnp.sum(valid_S)


def step(state: OffloadState, indices_BKS: jax.Array) -> tuple[OffloadState, OffloadStats]:
  """Brings the tokens of `indices_BKS` (-1 = unused) into the device slots.

  Raises:
    ValueError: more selected tokens than slots.
  """
  N = state.resident_BKN.shape[-1]
  if indices_BKS.shape[-1] > N:
    raise ValueError(
        f"indices_BKS: {indices_BKS.shape[-1]} selected tokens do not fit in"
        f" {N} device slots"
    )
  if indices_BKS.shape[:2] != state.resident_BKN.shape[:2]:
    raise ValueError(
        f"indices_BKS: expected leading shape {state.resident_BKN.shape[:2]},"
        f" given {indices_BKS.shape[:2]}"
    )
  return _step(state, indices_BKS.astype(jnp.int32))


@jax.jit
def _step(state: OffloadState, indices_BKS: jax.Array) -> tuple[OffloadState, OffloadStats]:
  f = jax.vmap(jax.vmap(_step_one))
  resident, hits, misses, selected = f(state.resident_BKN, indices_BKS)
  return OffloadState(resident), OffloadStats(hits, misses, selected)


def simulate(
    indices_NBKS: jax.Array, *, num_slots: int, bytes_per_token: int
) -> dict[str, jax.Array]:
  """Replays a trace of selections; per-step hit rate and bytes moved.

  Args:
    indices_NBKS: the selection of each of N decode steps.
    num_slots: device slots per (sequence, KV head) (>= S).
    bytes_per_token: bytes of one token's key and value for one KV head.

  Returns:
    ``hit_rate_N`` (hits / selected over all sequences and heads; the first step
    starts from an empty buffer) and ``bytes_N`` (host-to-device bytes per step).
  """
  _, B, K, _ = indices_NBKS.shape

  if indices_NBKS.shape[-1] > num_slots:
    raise ValueError(
        f"indices_NBKS: {indices_NBKS.shape[-1]} selected tokens do not fit in"
        f" {num_slots} device slots"
    )
  _, stats = jax.lax.scan(_step, init(B, K, num_slots), indices_NBKS.astype(jnp.int32))
  hits = jnp.sum(stats.hits_BK, axis=(1, 2))
  sel = jnp.maximum(jnp.sum(stats.selected_BK, axis=(1, 2)), 1)
  return {
      "hit_rate_N": hits / sel,
      "bytes_N": jnp.sum(stats.misses_BK, axis=(1, 2)) * bytes_per_token,
  }
