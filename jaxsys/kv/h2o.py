"""H2O: heavy-hitter eviction by accumulated attention (arXiv 2306.14048).

The cache of each (sequence, KV head) holds ``budget`` tokens: the ``window``
most recent ones plus ``S = budget - window`` "heavy hitters", the older tokens
with the largest attention *accumulated over every query so far*:

* `init` (after prefill): the accumulated score of token j is the causal
  attention of every prompt query i >= j onto it, summed over the prompt
  (``sum_i softmax_j(q_i . k_j / sqrt(D))``); the S highest-scoring tokens older
  than the window are kept, the rest evicted.
* each decode step: the token leaving the window joins the S kept heavy
  hitters; `select` returns the S of these ``S + 1`` candidates with the highest
  accumulated score. `update` then adds the step's attention (softmax over the
  tokens actually attended: window + selected) to the scores and evicts the one
  candidate not selected, for good.

GQA: keys are stored once per KV head, so the scores of the query heads of a
group are summed (one heavy-hitter set per KV head; H2O, on MHA models, keeps
one set per head).

Parity with the paper: the same greedy one-in-one-out eviction with the same
scores (accumulated attention, recent window), with prefill scores defined the
same way (column sums of the prompt's causal attention matrix). One deviation:
H2O computes the current step's attention over ``budget + 1`` tokens (the cache plus
the new one) and evicts afterwards, using that step's scores; here the budget
includes the new token, so the eviction of the step is decided before its
attention, from the scores of all *previous* queries.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxsys.kv import base

_QUERY_BLOCK = 128  # prompt queries scored at once in `init` (bounds memory to [B, H, 128, T])


class H2OState(NamedTuple):
  # [B, K, T] float32: attention accumulated over all past queries, summed over the GQA group
  score_BKT: jax.Array
  cached_BKT: jax.Array  # [B, K, T] bool: False where evicted (positions not yet written stay True)


def prompt_attention_sum(
    q_BHTD: jax.Array, k_BKTD: jax.Array, lengths_B: jax.Array
) -> jax.Array:
  """``[B, K, T]`` float32: causal prompt attention onto each key, summed over queries and group.

  ``out[b, k, j] = sum_g sum_{j <= i < length_b} softmax_{t <= i}(q_i . k_t / sqrt(D))_j``
  with q_i the query of head ``k * G + g`` at position i.
  Queries are processed in blocks of 128 under `lax.scan`, so memory stays
  ``O(B H 128 T)`` for any prompt length.
  """
  B, H, Tq, D = q_BHTD.shape
  K, T = k_BKTD.shape[1], k_BKTD.shape[2]
  if Tq != T:
    raise ValueError(
        f"q_BHTD: prompt queries must have one row per cache slot ({T}), given {Tq}"
    )
  G = H // K
  Q = min(_QUERY_BLOCK, T)
  n_blocks = -(-T // Q)
  pad = n_blocks * Q - T
  if H % K:
    raise ValueError(f"q_BHTD: query heads ({H}) must be a multiple of the KV heads ({K})")
  q_BKGTD = q_BHTD.reshape(B, K, G, T, D).astype(jnp.float32)  # head h = k * G + g
  q_BKGTD = jnp.pad(q_BKGTD, ((0, 0),) * 3 + ((0, pad), (0, 0)))
  q_NBKGQD = q_BKGTD.reshape(B, K, G, n_blocks, Q, D).transpose(3, 0, 1, 2, 4, 5)
  k_f = k_BKTD.astype(jnp.float32)
  t_T = jnp.arange(T, dtype=jnp.int32)
  L_B = lengths_B.astype(jnp.int32)

  def block(acc_BKT, xs):
    q_BKGQD, i0 = xs
    s = jnp.einsum(
        "bkgqd,bktd->bkgqt", q_BKGQD, k_f, precision=jax.lax.Precision.HIGHEST
    ) * jnp.float32(D**-0.5)
    i_Q = i0 + jnp.arange(Q, dtype=jnp.int32)
    valid_BQT = (t_T[None, None, :] <= i_Q[None, :, None]) & (
        i_Q[None, :, None] < L_B[:, None, None]
    )
    p = base.masked_softmax(s, valid_BQT[:, None, None, :, :])
    return acc_BKT + jnp.sum(p, axis=(2, 3)), None

  starts = jnp.arange(n_blocks, dtype=jnp.int32) * Q
  acc, _ = jax.lax.scan(block, jnp.zeros((B, K, T), jnp.float32), (q_NBKGQD, starts))
  return acc


def _mask_from_indices(indices_BKS: jax.Array, T: int) -> jax.Array:
  """``[B, K, T]`` bool: True at the listed positions (entries < 0 ignored)."""
  B, K, S = indices_BKS.shape
  safe = jnp.where(indices_BKS >= 0, indices_BKS, T)
  b = jnp.broadcast_to(jnp.arange(B)[:, None, None], (B, K, S))
  k = jnp.broadcast_to(jnp.arange(K)[None, :, None], (B, K, S))
  m = jnp.zeros((B, K, T + 1), jnp.bool_).at[b, k, safe].set(True)
  return m[..., :T]


def h2o(budget: int, *, window: int | None = None) -> base.KVPolicy:
  """H2O as a `KVPolicy`: heavy hitters by accumulated attention + a recent window.

  Args:
    budget: tokens attended per (sequence, KV head), window included.
    window: recent tokens always kept (default ``budget // 2``: the paper's
      equal heavy and recent budgets, e.g. ``heavy_ratio = recent_ratio``);
      at least 1, so the current token is attended.

  Returns:
    A `KVPolicy` with ``num_sinks = 0`` and ``S = budget - window`` heavy hitters.

  Raises:
    ValueError: a negative setting, ``window < 1`` or ``budget < window``.

  >>> policy = h2o(64, window=16)
  >>> policy.num_selected
  48
  """
  if window is None:
    base.check_budget("h2o", budget, 0, 0)
    window = budget // 2
  base.check_budget("h2o", budget, 0, window)
  if window < 1:
    raise ValueError(f"h2o: window must be >= 1 so the current token is attended, given {window}")
  S = budget - window

  def init(k_BKTD, v_BKTD, lengths_B, q_BHTD) -> H2OState:
    del v_BKTD
    T = k_BKTD.shape[2]
    score_BKT = prompt_attention_sum(q_BHTD, k_BKTD, lengths_B)
    middle_BKT = jnp.broadcast_to(
        base.middle_mask(lengths_B, T, 0, window)[:, None, :], score_BKT.shape
    )
    keep_BKT = _mask_from_indices(base.top_positions(score_BKT, middle_BKT, S), T)
    return H2OState(score_BKT, ~middle_BKT | keep_BKT)

  def select(state: H2OState, q_BHD, k_BKTD, lengths_B) -> jax.Array:
    del q_BHD
    T = k_BKTD.shape[2]
    middle_B1T = base.middle_mask(lengths_B, T, 0, window)[:, None, :]
    allowed_BKT = state.cached_BKT & middle_B1T
    return base.top_positions(state.score_BKT, allowed_BKT, S)

  def update(state: H2OState, q_BHD, k_BKTD, lengths_B) -> H2OState:
    T = k_BKTD.shape[2]
    sel_BKT = _mask_from_indices(select(state, q_BHD, k_BKTD, lengths_B), T)
    t_1T = jnp.arange(T, dtype=jnp.int32)[None, :]
    L_B1 = lengths_B.astype(jnp.int32)[:, None]
    in_window_B1T = ((t_1T >= L_B1 - window) & (t_1T < L_B1))[:, None, :]
    attended_BKT = sel_BKT | in_window_B1T
    p_BKGT = base.masked_softmax(base.decode_scores(q_BHD, k_BKTD), attended_BKT[:, :, None, :])
    score_BKT = state.score_BKT + jnp.sum(p_BKGT, axis=2)
    middle_B1T = base.middle_mask(lengths_B, T, 0, window)[:, None, :]
    cached_BKT = state.cached_BKT & (~middle_B1T | sel_BKT)
    return H2OState(score_BKT, cached_BKT)

  return base.KVPolicy("h2o", budget, 0, window, init, select, update)
