"""Quest: query-aware page selection by key min/max bounds (arXiv 2406.10774).

The cache of each (sequence, KV head) is cut into pages of ``page_size`` (16)
consecutive positions. Each page keeps the per-channel minimum and maximum of
its valid keys (positions < length). For a query q the page score

    ``U(q, page) = sum_d max(q_d * max_d, q_d * min_d)``

is an upper bound of ``q . k`` for every key k of the page (each term bounds
``q_d * k_d``). Nothing is evicted: at every step the ``floor(S / page_size)``
pages with the highest score are attended in full (their positions fill the S
slots of the list, -1 for leftovers and for positions that are sinks, in the
window or not yet written).

GQA: keys are stored once per KV head, so the bounds of the query heads of a
group are summed (``sum_g U(q_g, page)``) and the group shares one page list;
Quest itself (MHA models) selects per query head.

Pages update as tokens are appended: `select` and `update` recompute the page
holding the newest token (position ``length - 1``) from the cache, so its
min/max always include that token; earlier pages are full and never change.
The policy assumes one new token per step (as in decoding).

Parity: page scores equal Quest's criticality estimate to float32 rounding,
and whole pages are chosen by top-k as in Quest. ``min_pages`` plays the role of
Quest's "at least 3 pages", as a check at construction (S is static here)
rather than a clamp. Quest keeps the first two layers dense; that is up to the
caller (use `jaxsys.kv.base.full` there).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxsys.kv import base


class QuestState(NamedTuple):
  page_min_BKND: jax.Array  # [B, K, N, D] f32: per-channel min of a page's valid keys (0 if none)
  page_max_BKND: jax.Array  # [B, K, N, D] f32: per-channel max of a page's valid keys (0 if none)


def num_pages(T: int, page_size: int) -> int:
  """N: pages covering T cache slots (the last one may be partial)."""
  return -(-T // page_size)


def page_bounds(k_BKTD: jax.Array, lengths_B: jax.Array, page_size: int) -> QuestState:
  """Per-page channel min/max over the valid keys of every page (from scratch)."""
  B, K, T, D = k_BKTD.shape
  N = num_pages(T, page_size)
  k_f = jnp.pad(k_BKTD.astype(jnp.float32), ((0, 0), (0, 0), (0, N * page_size - T), (0, 0)))
  k_BKNPD = k_f.reshape(B, K, N, page_size, D)
  pos_NP = jnp.arange(N * page_size, dtype=jnp.int32).reshape(N, page_size)
  valid_BNP = pos_NP[None, :, :] < lengths_B.astype(jnp.int32)[:, None, None]
  valid_B1NP1 = valid_BNP[:, None, :, :, None]
  lo = jnp.min(jnp.where(valid_B1NP1, k_BKNPD, jnp.inf), axis=3)
  hi = jnp.max(jnp.where(valid_B1NP1, k_BKNPD, -jnp.inf), axis=3)
  any_B1N1 = jnp.any(valid_BNP, axis=-1)[:, None, :, None]
  return QuestState(jnp.where(any_B1N1, lo, 0.0), jnp.where(any_B1N1, hi, 0.0))


def refresh_last_page(
    state: QuestState, k_BKTD: jax.Array, lengths_B: jax.Array, page_size: int
) -> QuestState:
  """Recomputes the page holding position ``length - 1`` of each sequence."""
  B, K, T, D = k_BKTD.shape
  L_B = lengths_B.astype(jnp.int32)
  page_B = jnp.maximum(L_B - 1, 0) // page_size
  pos_BP = page_B[:, None] * page_size + jnp.arange(page_size, dtype=jnp.int32)[None, :]
  valid_BP = (pos_BP < L_B[:, None]) & (pos_BP < T)
  k_BKPD = jnp.take_along_axis(
      k_BKTD.astype(jnp.float32), jnp.clip(pos_BP, 0, T - 1)[:, None, :, None], axis=2
  )
  valid_B1P1 = valid_BP[:, None, :, None]
  any_B11 = jnp.any(valid_BP, axis=-1)[:, None, None]
  lo_BKD = jnp.where(any_B11, jnp.min(jnp.where(valid_B1P1, k_BKPD, jnp.inf), axis=2), 0.0)
  hi_BKD = jnp.where(any_B11, jnp.max(jnp.where(valid_B1P1, k_BKPD, -jnp.inf), axis=2), 0.0)
  b_BK = jnp.broadcast_to(jnp.arange(B)[:, None], (B, K))
  k_BK = jnp.broadcast_to(jnp.arange(K)[None, :], (B, K))
  n_BK = jnp.broadcast_to(page_B[:, None], (B, K))
  return QuestState(
      state.page_min_BKND.at[b_BK, k_BK, n_BK].set(lo_BKD),
      state.page_max_BKND.at[b_BK, k_BK, n_BK].set(hi_BKD),
  )


def page_scores(state: QuestState, q_BHD: jax.Array) -> jax.Array:
  """``[B, K, G, N]`` float32: ``sum_d max(q_d max_d, q_d min_d)`` per query head and page.

  Computed as ``relu(q) . max + min(q, 0) . min`` (the same sum, term by term).
  Unscaled: an upper bound of ``q . k`` (not ``q . k / sqrt(D)``) over the page.
  """
  K = state.page_min_BKND.shape[1]
  q_BKGD = base.group_queries(q_BHD, K).astype(jnp.float32)
  hi = jax.lax.Precision.HIGHEST
  pos = jnp.einsum("bkgd,bknd->bkgn", jnp.maximum(q_BKGD, 0.0), state.page_max_BKND, precision=hi)
  neg = jnp.einsum("bkgd,bknd->bkgn", jnp.minimum(q_BKGD, 0.0), state.page_min_BKND, precision=hi)
  return pos + neg


def quest(
    budget: int,
    *,
    page_size: int = 16,
    min_pages: int = 3,
    num_sinks: int = 0,
    window: int = 0,
) -> base.KVPolicy:
  """Quest as a `KVPolicy`: the top pages by min/max upper bound, per KV head.

  Args:
    budget: tokens attended per (sequence, KV head), sinks and window included.
    page_size: tokens per page (paper: 16).
    min_pages: least number of pages ``floor(S / page_size)`` the budget must
      allow (Quest: 3).
    num_sinks: leading tokens always attended (Quest: 0).
    window: recent tokens always attended (Quest: 0; the newest token is then
      attended only when its page is chosen, as in Quest).

  Returns:
    A `KVPolicy` selecting ``floor(S / page_size)`` whole pages per step.

  Raises:
    ValueError: a setting out of range or a budget allowing fewer than
      ``min_pages`` pages.

  >>> policy = quest(64, page_size=16)
  >>> policy.num_selected // 16
  4
  """
  for arg, value in (("page_size", page_size), ("min_pages", min_pages)):
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
      raise ValueError(f"quest: {arg} must be an int >= 1, given {value!r}")
  base.check_budget("quest", budget, num_sinks, window)
  S = budget - num_sinks - window
  n_sel = S // page_size
  if n_sel < min_pages:
    raise ValueError(
        f"quest: budget ({budget}) leaves S = budget - num_sinks - window = {S} slots,"
        f" {n_sel} page(s) of {page_size}; at least min_pages = {min_pages} needed"
        f" (budget >= {num_sinks + window + min_pages * page_size})"
    )

  def init(k_BKTD, v_BKTD, lengths_B, q_BHTD) -> QuestState:
    del v_BKTD, q_BHTD
    return page_bounds(k_BKTD, lengths_B, page_size)

  def select(state: QuestState, q_BHD, k_BKTD, lengths_B) -> jax.Array:
    B, K, T, _ = k_BKTD.shape
    N = num_pages(T, page_size)
    state = refresh_last_page(state, k_BKTD, lengths_B, page_size)
    score_BKN = jnp.sum(page_scores(state, q_BHD), axis=2)
    # A page is a candidate if it holds a position in [num_sinks, length - window).
    start_N = jnp.arange(N, dtype=jnp.int32) * page_size
    hi_B1 = lengths_B.astype(jnp.int32)[:, None] - window
    cand_B1N = ((start_N[None, :] < hi_B1) & (start_N[None, :] + page_size > num_sinks))[:, None, :]
    pages_BKn = base.top_positions(score_BKN, jnp.broadcast_to(cand_B1N, score_BKN.shape), n_sel)
    offset_111P = jnp.arange(page_size, dtype=jnp.int32)[None, None, None, :]
    pos_BKnP = pages_BKn[..., None] * page_size + offset_111P
    ok = (pages_BKn[..., None] >= 0) & (pos_BKnP >= num_sinks)
    ok &= pos_BKnP < hi_B1[:, :, None, None]
    pos_BKnP = jnp.where(ok, pos_BKnP, -1)
    idx_BKS = pos_BKnP.reshape(B, K, n_sel * page_size)
    return jnp.pad(idx_BKS, ((0, 0), (0, 0), (0, S - n_sel * page_size)), constant_values=-1)

  def update(state: QuestState, q_BHD, k_BKTD, lengths_B) -> QuestState:
    del q_BHD
    return refresh_last_page(state, k_BKTD, lengths_B, page_size)

  return base.KVPolicy("quest", budget, num_sinks, window, init, select, update)
