"""The KV-policy protocol every cache-compression method in `jaxsys.kv` follows.

A policy decides, at each decode step and for each (sequence, KV head), which
cached tokens the new query attends to. Every policy is expressed the same way:

* ``num_sinks`` leading tokens and the ``window`` most recent tokens are always
  attended (either may be 0);
* ``select`` returns ``indices_BKS``: up to ``S = budget - num_sinks - window``
  further positions per (sequence, KV head), -1 for an unused slot.

`jaxsys.kernels.sparse_decode_attention` consumes exactly this (sinks + window
dense, the list gathered, merged by log-sum-exp), so attention reads
``budget`` tokens per KV head whatever the context. Keys are stored once per KV
head; a GQA group shares its KV head's selection.

Eviction policies (StreamingLLM, H2O, SnapKV, Inf-MLLM) fit the same form: their
state remembers which tokens were evicted and `select` never returns those again;
recall policies (Quest, ClusterKV, oracle top-k) may pick any cached token.

A policy is a `KVPolicy`: a NamedTuple of static settings and three pure
functions, all jittable, usable under `lax.scan` and `vmap`:

``init(k_BKTD, v_BKTD, lengths_B, q_BHTD) -> state``
    after prefill: the cache (post-RoPE keys), valid lengths, and the prompt's
    post-RoPE queries (query t sits at position t; rows t >= length are padding).
``select(state, q_BHD, k_BKTD, lengths_B) -> indices_BKS``
    for the new query, with the cache already holding the new token
    (``lengths_B`` counts it).
``update(state, q_BHD, k_BKTD, lengths_B) -> state``
    after the step (same arguments as `select`): accumulate scores, evict,
    cluster new tokens, ...

Shape letters: B batch, H query heads, K KV heads, G = H // K, T cache slots, D
head dim, S selected slots.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

State = Any


class KVPolicy(NamedTuple):
  """A KV-cache policy: static settings plus pure init/select/update functions."""

  name: str
  budget: int  # tokens attended per (sequence, KV head), sinks and window included
  num_sinks: int
  window: int
  init: Callable[..., State]
  select: Callable[..., jax.Array]
  update: Callable[..., State]

  @property
  def num_selected(self) -> int:
    """S: the length of the list `select` returns."""
    return self.budget - self.num_sinks - self.window


def check_budget(name: str, budget: int, num_sinks: int, window: int) -> None:
  """Raises a clear error for an impossible budget."""
  for arg, value in (("budget", budget), ("num_sinks", num_sinks), ("window", window)):
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
      raise ValueError(f"{name}: {arg} must be an int >= 0, given {value!r}")
  if budget < num_sinks + window:
    raise ValueError(
        f"{name}: budget ({budget}) must be >= num_sinks + window"
        f" ({num_sinks} + {window} = {num_sinks + window})"
    )


def check_fits(policy: "KVPolicy", cache_slots: int) -> None:
  """Raises if `policy` attends more tokens than the cache can hold."""
  if policy.budget > cache_slots:
    raise ValueError(
        f"{policy.name}: budget ({policy.budget}) must be <= the context, i.e. the"
        f" cache slots ({cache_slots})"
    )


def masked_softmax(s: jax.Array, valid: jax.Array) -> jax.Array:
  """Softmax over the last axis restricted to `valid`; all-invalid rows give zeros."""
  s = jnp.where(valid, s, -jnp.inf)
  m = jnp.max(s, axis=-1, keepdims=True)
  m = jnp.where(jnp.isfinite(m), m, 0.0)
  e = jnp.where(valid, jnp.exp(s - m), 0.0)
  z = jnp.sum(e, axis=-1, keepdims=True)
  return e / jnp.where(z > 0, z, 1.0)


def group_queries(q_BHD: jax.Array, num_kv_heads: int) -> jax.Array:
  """``q_BHD`` -> ``q_BKGD``: query heads grouped by the KV head they read."""
  B, H, D = q_BHD.shape
  if H % num_kv_heads:
    raise ValueError(
        f"q_BHD: query heads ({H}) must be a multiple of the KV heads ({num_kv_heads})"
    )
  return q_BHD.reshape(B, num_kv_heads, H // num_kv_heads, D)


def middle_mask(lengths_B: jax.Array, T: int, num_sinks: int, window: int) -> jax.Array:
  """``[B, T]`` bool: positions a selection may return (not sink, not window, valid)."""
  t_1T = jnp.arange(T, dtype=jnp.int32)[None, :]
  L_B1 = lengths_B.astype(jnp.int32)[:, None]
  return (t_1T >= num_sinks) & (t_1T < L_B1 - window)


def decode_scores(q_BHD: jax.Array, k_BKTD: jax.Array) -> jax.Array:
  """``[B, K, G, T]`` float32 scaled scores ``q . k / sqrt(D)`` per query head."""
  K, D = k_BKTD.shape[1], k_BKTD.shape[3]
  q_BKGD = group_queries(q_BHD, K)
  return jnp.einsum(
      "bkgd,bktd->bkgt", q_BKGD.astype(jnp.float32), k_BKTD.astype(jnp.float32),
      precision=jax.lax.Precision.HIGHEST,
  ) * jnp.float32(D**-0.5)


def top_positions(
    score_BKT: jax.Array, allowed_BKT: jax.Array, S: int
) -> jax.Array:
  """The `S` highest-scoring allowed positions per (b, k); -1 where too few are allowed."""
  if S == 0:
    return jnp.zeros(score_BKT.shape[:2] + (0,), jnp.int32)
  masked = jnp.where(allowed_BKT, score_BKT, -jnp.inf)
  vals, idx = jax.lax.top_k(masked, S)
  return jnp.where(jnp.isfinite(vals), idx.astype(jnp.int32), -1)


def _no_state(k_BKTD, v_BKTD, lengths_B, q_BHTD):
  del k_BKTD, v_BKTD, lengths_B, q_BHTD
  return ()


def _same_state(state, q_BHD, k_BKTD, lengths_B):
  del q_BHD, k_BKTD, lengths_B
  return state


def full(context: int) -> KVPolicy:
  """Full attention as a policy: every cached token (budget = `context` slots)."""

  def select(state, q_BHD, k_BKTD, lengths_B):
    del state, q_BHD
    B, K, T, _ = k_BKTD.shape
    allowed = jnp.arange(T, dtype=jnp.int32)[None, :] < lengths_B[:, None]
    idx_BT = jnp.where(allowed, jnp.arange(T, dtype=jnp.int32)[None, :], -1)
    idx = jnp.broadcast_to(idx_BT[:, None, :], (B, K, T))
    return idx[:, :, :context]

  return KVPolicy("full", context, 0, 0, _no_state, select, _same_state)


def oracle_topk(budget: int, *, num_sinks: int = 0, window: int = 0) -> KVPolicy:
  """Oracle: the tokens with the highest true attention, summed over the GQA group.

  An upper bound for any selection of the same size sharing one list per KV head.
  """
  check_budget("oracle_topk", budget, num_sinks, window)
  S = budget - num_sinks - window

  def select(state, q_BHD, k_BKTD, lengths_B):
    del state
    T = k_BKTD.shape[2]
    s_BKGT = decode_scores(q_BHD, k_BKTD)
    valid_B11T = (jnp.arange(T)[None, :] < lengths_B[:, None])[:, None, None, :]
    p_BKGT = jax.nn.softmax(jnp.where(valid_B11T, s_BKGT, -jnp.inf), axis=-1)
    mass_BKT = jnp.sum(jnp.where(valid_B11T, p_BKGT, 0.0), axis=2)
    allowed_BKT = middle_mask(lengths_B, T, num_sinks, window)[:, None, :]
    allowed_BKT = jnp.broadcast_to(allowed_BKT, mass_BKT.shape)
    return top_positions(mass_BKT, allowed_BKT, S)

  return KVPolicy("oracle_topk", budget, num_sinks, window, _no_state, select, _same_state)
