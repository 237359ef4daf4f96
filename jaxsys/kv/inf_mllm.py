"""Inf-MLLM: streaming KV cache of recent tokens + "attention saddles" (arXiv 2409.09086).

Implementable version: the paper has no public code, so this follows the
mechanism notes (``papers/kv_cache.md`` 1.2, "Implementable version"); the exact
relevance aggregation, pooling and bias form are inferred, not verified.

The cache of each (sequence, KV head) is size-constrained: right after an
eviction it holds ``budget`` tokens,

* the ``num_sinks`` leading tokens (0 by default: Inf-MLLM keeps none apart
  from what relevance keeps),
* the ``recent`` most recent tokens,
* ``R = budget - num_sinks - recent`` *relevant* tokens ("attention saddles"),
  those older than the recent ones with the highest score

  ``score_j = pool(sum_{i in last W queries} sum_g softmax_i(q_{i,g} . K / sqrt(D))_j)
  + bias * j / t``

  where W = ``retrieval_window`` (a ring buffer of the last W queries lives in
  the state), the softmax of query i runs over the tokens still cached at
  positions <= i at eviction time (for ``W <= chunk`` exactly the attention
  query i computed; older queries are renormalised over the current cache),
  ``g`` runs over the query heads of the GQA group (keys are
  stored once per KV head, so the group shares one cache and its scores are
  summed), ``pool`` is a local *sum* over the ``pool_kernel`` neighbouring
  positions (stride 1, zero "same" padding), and ``bias * j / t`` (t = tokens
  seen) is the recency bias that lets the kept set shift forward as a
  conversation goes on.

Eviction runs once per ``chunk`` incoming tokens, not per token: in `init`
(after the prompt) and then in `update` whenever ``chunk`` tokens have arrived
since the last eviction. In between, new tokens are only appended, so the cache
holds ``budget + 1`` to ``budget + chunk`` tokens at a decode step.

Budget accounting: the returned `KVPolicy` has ``budget = budget + chunk`` (the
most tokens attended at a step, reached just before each eviction) and
``window = recent``; `select` lists, in ``S = budget - num_sinks - recent + chunk``
static slots, the R relevant tokens followed by the up to ``chunk`` cached
tokens that have left the rolling window since the last eviction (-1 where
unused). On average ``budget + (chunk + 1) / 2`` tokens are attended per step.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxsys.kv import base


class InfMLLMState(NamedTuple):
  relevant_BKR: jax.Array  # [B, K, R] int32: relevant positions kept at last eviction, -1 unused
  last_evict_B: jax.Array  # [B] int32: cache length at the last eviction
  queries_BHWD: jax.Array  # [B, H, W, D]: ring of the last W queries (slot p % W: position p)


def _ring_positions(lengths_B: jax.Array, W: int) -> jax.Array:
  """``[B, W]`` int32: the position held by each ring slot (negative = empty)."""
  last_B1 = lengths_B.astype(jnp.int32)[:, None] - 1
  s_1W = jnp.arange(W, dtype=jnp.int32)[None, :]
  return last_B1 - jnp.mod(last_B1 - s_1W, W)


def relevance_scores(
    queries_BHWD: jax.Array,
    k_BKTD: jax.Array,
    lengths_B: jax.Array,
    cached_BKT: jax.Array,
    *,
    pool_kernel: int,
    bias: float,
) -> jax.Array:
  """``[B, K, T]`` float32 Inf-MLLM score of every position (see module doc).

  Args:
    queries_BHWD: ring buffer of the last W queries (slot p % W = position p).
    k_BKTD: the cache.
    lengths_B: tokens seen per sequence (t), the newest at ``t - 1``.
    cached_BKT: tokens still cached (the softmax runs over these only).
    pool_kernel: odd local-sum kernel.
    bias: weight of the recency term ``j / t``.
  """
  B, H, W, D = queries_BHWD.shape
  K, T = k_BKTD.shape[1], k_BKTD.shape[2]
  G = H // K
  L_B = lengths_B.astype(jnp.int32)
  pos_BW = _ring_positions(L_B, W)
  q_BKGWD = queries_BHWD.reshape(B, K, G, W, D).astype(jnp.float32)  # head h = k * G + g
  s = jnp.einsum(
      "bkgwd,bktd->bkgwt", q_BKGWD, k_BKTD.astype(jnp.float32),
      precision=jax.lax.Precision.HIGHEST,
  ) * jnp.float32(D**-0.5)
  t_T = jnp.arange(T, dtype=jnp.int32)
  causal_BWT = (t_T[None, None, :] <= pos_BW[:, :, None]) & (pos_BW[:, :, None] >= 0)
  valid = causal_BWT[:, None, None, :, :] & cached_BKT[:, :, None, None, :]
  a_BKT = jnp.sum(base.masked_softmax(s, valid), axis=(2, 3))
  r = pool_kernel // 2
  padded = jnp.pad(a_BKT, ((0, 0), (0, 0), (r, r)))
  pooled = sum(padded[..., o:o + T] for o in range(pool_kernel))
  recency_B1T = (
      t_T[None, :].astype(jnp.float32) / jnp.maximum(L_B, 1)[:, None].astype(jnp.float32)
  )[:, None, :]
  return pooled + jnp.float32(bias) * recency_B1T


def inf_mllm(
    budget: int,
    *,
    num_sinks: int = 0,
    recent: int | None = None,
    retrieval_window: int = 32,
    pool_kernel: int = 5,
    bias: float = 1.0,
    chunk: int = 16,
) -> base.KVPolicy:
  """Inf-MLLM (implementable version) as a `KVPolicy`.

  Args:
    budget: tokens kept right after each eviction (the paper's cache size L),
      sinks and recent tokens included.
    num_sinks: leading tokens always kept.
    recent: most recent tokens always kept (default ``budget // 2``); >= 1.
    retrieval_window: last queries whose attention scores relevance; >= 1.
    pool_kernel: odd local-sum kernel over neighbouring positions.
    bias: weight of the recency bias ``bias * pos / t``, in units of one
      query's attention mass (a guess: the paper gives no value).
    chunk: tokens appended between evictions; >= 1.

  Returns:
    A `KVPolicy` with ``budget + chunk`` attended slots at most and
    ``window = recent`` (see the module doc for the accounting).

  Raises:
    ValueError: a setting out of range, naming it.

  >>> policy = inf_mllm(64, recent=16, chunk=8)
  >>> policy.budget, policy.window, policy.num_selected
  (72, 16, 56)
  """
  for arg, value in (("retrieval_window", retrieval_window), ("chunk", chunk)):
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
      raise ValueError(f"inf_mllm: {arg} must be an int >= 1, given {value!r}")
  if (not isinstance(pool_kernel, int) or isinstance(pool_kernel, bool) or pool_kernel < 1
      or pool_kernel % 2 == 0):
    raise ValueError(
        f"inf_mllm: pool_kernel must be an odd int >= 1 (\"same\" pooling), given {pool_kernel!r}"
    )
  if isinstance(bias, bool) or not isinstance(bias, (int, float)) or not math.isfinite(bias):
    raise ValueError(f"inf_mllm: bias must be a finite number, given {bias!r}")
  if recent is None:
    base.check_budget("inf_mllm", budget, num_sinks, 0)
    recent = budget // 2
  base.check_budget("inf_mllm", budget, num_sinks, recent)
  if recent < 1:
    raise ValueError(
        f"inf_mllm: recent must be >= 1 so the current token is attended, given {recent}"
    )
  R = budget - num_sinks - recent
  S = R + chunk
  W = retrieval_window

  def cached_mask(state: InfMLLMState, T: int) -> jax.Array:
    """``[B, K, T]`` bool: sinks, relevant tokens, and everything from L_e - recent on."""
    t_1T = jnp.arange(T, dtype=jnp.int32)[None, :]
    L_e_B1 = state.last_evict_B[:, None]
    base_B1T = ((t_1T < num_sinks) | (t_1T >= L_e_B1 - recent))[:, None, :]
    B, K, _ = state.relevant_BKR.shape
    safe = jnp.where(state.relevant_BKR >= 0, state.relevant_BKR, T)
    b = jnp.broadcast_to(jnp.arange(B)[:, None, None], safe.shape)
    k = jnp.broadcast_to(jnp.arange(K)[None, :, None], safe.shape)
    rel_BKT = jnp.zeros((B, K, T + 1), jnp.bool_).at[b, k, safe].set(True)[..., :T]
    return base_B1T | rel_BKT

  def evict(queries_BHWD, k_BKTD, lengths_B, cached_BKT) -> jax.Array:
    T = k_BKTD.shape[2]
    score_BKT = relevance_scores(
        queries_BHWD, k_BKTD, lengths_B, cached_BKT, pool_kernel=pool_kernel, bias=bias
    )
    allowed_BKT = cached_BKT & base.middle_mask(lengths_B, T, num_sinks, recent)[:, None, :]
    return base.top_positions(score_BKT, allowed_BKT, R)

  def init(k_BKTD, v_BKTD, lengths_B, q_BHTD) -> InfMLLMState:
    del v_BKTD
    B, K, T, _ = k_BKTD.shape
    if q_BHTD.shape[2] != T:
      raise ValueError(
          f"q_BHTD: prompt queries must have one row per cache slot ({T}), given {q_BHTD.shape[2]}"
      )
    L_B = lengths_B.astype(jnp.int32)
    pos_BW = _ring_positions(L_B, W)
    ring_BHWD = jnp.take_along_axis(
        q_BHTD, jnp.clip(pos_BW, 0, T - 1)[:, None, :, None], axis=2
    )
    ring_BHWD = jnp.where((pos_BW >= 0)[:, None, :, None], ring_BHWD, jnp.zeros_like(ring_BHWD))
    all_BKT = jnp.broadcast_to(
        (jnp.arange(T, dtype=jnp.int32)[None, :] < L_B[:, None])[:, None, :], (B, K, T)
    )
    relevant_BKR = evict(ring_BHWD, k_BKTD, L_B, all_BKT)
    return InfMLLMState(relevant_BKR, L_B, ring_BHWD)

  def select(state: InfMLLMState, q_BHD, k_BKTD, lengths_B) -> jax.Array:
    del q_BHD
    B, K = k_BKTD.shape[:2]
    L_B1 = lengths_B.astype(jnp.int32)[:, None]
    # cached tokens that left the rolling window since the last eviction
    aged_BC = state.last_evict_B[:, None] - recent + jnp.arange(chunk, dtype=jnp.int32)[None, :]
    ok = (aged_BC >= num_sinks) & (aged_BC >= 0) & (aged_BC < L_B1 - recent)
    aged_BKC = jnp.broadcast_to(jnp.where(ok, aged_BC, -1)[:, None, :], (B, K, chunk))
    return jnp.concatenate([state.relevant_BKR, aged_BKC], axis=-1)

  def update(state: InfMLLMState, q_BHD, k_BKTD, lengths_B) -> InfMLLMState:
    T = k_BKTD.shape[2]
    L_B = lengths_B.astype(jnp.int32)
    slot_B = jnp.mod(L_B - 1, W)
    onehot_B1W1 = (jnp.arange(W, dtype=jnp.int32)[None, :] == slot_B[:, None])[:, None, :, None]
    ring_BHWD = jnp.where(
        onehot_B1W1, q_BHD[:, :, None, :].astype(state.queries_BHWD.dtype), state.queries_BHWD
    )
    due_B = L_B - state.last_evict_B >= chunk

    def do_evict(_):
      rel = evict(ring_BHWD, k_BKTD, L_B, cached_mask(state, T))
      return (jnp.where(due_B[:, None, None], rel, state.relevant_BKR),
              jnp.where(due_B, L_B, state.last_evict_B))

    def keep(_):
      return state.relevant_BKR, state.last_evict_B

    relevant_BKR, last_evict_B = jax.lax.cond(jnp.any(due_B), do_evict, keep, None)
    return InfMLLMState(relevant_BKR, last_evict_B, ring_BHWD)

  return base.KVPolicy(
      "inf_mllm", budget + chunk, num_sinks, recent, init, select, update
  )
