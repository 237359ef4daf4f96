"""SnapKV: one-shot prompt compression from an observation window (arXiv 2404.14469).

After prefill, the last ``obs_window`` prompt queries (the "observation window")
vote for the prompt tokens before them (the prefix):

1. causal softmax attention ``softmax_{t <= i}(q_i . k_t / sqrt(D))`` of each
   observation query i, read at the prefix positions;
2. summed over the observation queries and over the query heads of the GQA
   group (keys are stored once per KV head, so a group shares one list;
   SnapKV/kvpress average instead, which ranks identically);
3. 1-D average pooling over positions, kernel ``pool_kernel`` (5), stride 1,
   "same" zero padding that counts in the divisor (``avg_pool1d`` with
   ``padding = kernel // 2``), over the prefix only;
4. ``S = budget - window`` prompt tokens are kept, fixed for the rest of the
   decode; every other prompt token is evicted as it leaves the window.

The S slots are filled, in this order, with: the observation tokens older than
the window of the first decode step (newest first; SnapKV always keeps its
observation window), the prefix tokens by pooled votes, and -- only when the
prompt is too short to fill S -- the prompt tokens still in that window, oldest
first (a listed token inside the window is not attended twice: the kernel counts
list entries only outside the sinks and the window).

Decode: there is no decode-time compression. Generated tokens are attended
through the rolling recent ``window`` (default ``obs_window``) only; a generated
token older than the window is dropped and never attended again, and so is an
observation token that did not get a slot. The budget is fixed, whereas
SnapKV's cache grows by one token per generated token.

Parity: the prefix scores are SnapKV's (sum instead of mean, a constant factor)
and, with ``window = obs_window``, the attended set at the first decode step is
SnapKV's compressed cache -- the observation window plus the top
``S - 1`` prefix tokens -- and the new token (the budget counts it). Later steps
differ as described (fixed size instead of growth).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxsys.kv import base


class SnapKVState(NamedTuple):
  # [B, K, S] int32: prompt positions kept after prefill (-1 unused); fixed during decode
  indices_BKS: jax.Array


def _check_kernel(name: str, arg: str, kernel: int) -> None:
  if not isinstance(kernel, int) or isinstance(kernel, bool) or kernel < 1 or kernel % 2 == 0:
    raise ValueError(
        f"{name}: {arg} must be an odd int >= 1 (\"same\" pooling), given {kernel!r}"
    )


def prefix_scores(
    k_BKTD: jax.Array,
    lengths_B: jax.Array,
    q_BHTD: jax.Array,
    *,
    obs_window: int = 32,
    pool_kernel: int = 5,
) -> jax.Array:
  """``[B, K, T]`` float32: SnapKV's pooled votes of the observation window.

  Only positions ``t < length - obs_window`` (the prefix) score; the others are 0.

  Args:
    k_BKTD: post-RoPE keys of the prompt.
    lengths_B: prompt length of each sequence (ragged).
    q_BHTD: post-RoPE prompt queries, query t at position t.
    obs_window: observation queries, the last ones of each prompt.
    pool_kernel: odd average-pooling kernel.
  """
  B, H, T, D = q_BHTD.shape
  K = k_BKTD.shape[1]
  if H % K:
    raise ValueError(f"q_BHTD: query heads ({H}) must be a multiple of the KV heads ({K})")
  if k_BKTD.shape[2] != T:
    raise ValueError(
        f"q_BHTD: prompt queries must have one row per cache slot ({k_BKTD.shape[2]}), given {T}"
    )
  G = H // K
  W = obs_window
  L_B = lengths_B.astype(jnp.int32)
  pos_BW = L_B[:, None] - W + jnp.arange(W, dtype=jnp.int32)[None, :]
  q_BHWD = jnp.take_along_axis(
      q_BHTD, jnp.clip(pos_BW, 0, T - 1)[:, None, :, None], axis=2
  )
  q_BKGWD = q_BHWD.reshape(B, K, G, W, D).astype(jnp.float32)  # head h = k * G + g
  s = jnp.einsum(
      "bkgwd,bktd->bkgwt", q_BKGWD, k_BKTD.astype(jnp.float32),
      precision=jax.lax.Precision.HIGHEST,
  ) * jnp.float32(D**-0.5)
  t_T = jnp.arange(T, dtype=jnp.int32)
  valid_BWT = (t_T[None, None, :] <= pos_BW[:, :, None]) & (pos_BW[:, :, None] >= 0)
  p = base.masked_softmax(s, valid_BWT[:, None, None, :, :])
  prefix_B1T = (t_T[None, :] < L_B[:, None] - W)[:, None, :]
  votes_BKT = jnp.where(prefix_B1T, jnp.sum(p, axis=(2, 3)), 0.0)
  r = pool_kernel // 2
  padded = jnp.pad(votes_BKT, ((0, 0), (0, 0), (r, r)))
  pooled = sum(padded[..., o:o + T] for o in range(pool_kernel)) / jnp.float32(pool_kernel)
  return jnp.where(prefix_B1T, pooled, 0.0)


def snapkv(
    budget: int, *, window: int | None = None, obs_window: int = 32, pool_kernel: int = 5
) -> base.KVPolicy:
  """SnapKV as a `KVPolicy`: top prefix tokens by observation-window votes + a recent window.

  Args:
    budget: tokens attended per (sequence, KV head), window included.
    window: recent tokens always attended (default ``obs_window``); >= 1.
    obs_window: last prompt queries that vote (paper 32; kvpress 64); >= 1.
    pool_kernel: odd average-pooling kernel over positions (kvpress: 5).

  Returns:
    A `KVPolicy` with ``num_sinks = 0`` and ``S = budget - window`` prompt tokens
    chosen once, in `init`.

  Raises:
    ValueError: a setting out of range, naming it.

  >>> policy = snapkv(96, obs_window=32)
  >>> policy.window, policy.num_selected
  (32, 64)
  """
  for arg, value in (("obs_window", obs_window),):
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
      raise ValueError(f"snapkv: {arg} must be an int >= 1, given {value!r}")
  _check_kernel("snapkv", "pool_kernel", pool_kernel)
  if window is None:
    window = obs_window
    if isinstance(budget, int) and budget < window:
      raise ValueError(
          f"snapkv: budget ({budget}) must be >= window, which defaults to"
          f" obs_window ({obs_window}); pass a smaller window"
      )
  base.check_budget("snapkv", budget, 0, window)
  if window < 1:
    raise ValueError(
        f"snapkv: window must be >= 1 so generated tokens are attended, given {window}"
    )
  S = budget - window

  def init(k_BKTD, v_BKTD, lengths_B, q_BHTD) -> SnapKVState:
    del v_BKTD
    T = k_BKTD.shape[2]
    G = q_BHTD.shape[1] // k_BKTD.shape[1]
    score_BKT = prefix_scores(
        k_BKTD, lengths_B, q_BHTD, obs_window=obs_window, pool_kernel=pool_kernel
    )
    # Rank of every prompt token, in three tiers (votes sum to at most
    # obs_window * G, so the tiers cannot mix):
    #   1. observation tokens older than the first decode step's window, newest first;
    #   2. prefix tokens older than that window, by pooled votes;
    #   3. prompt tokens still in that window, oldest first (they fill slots left
    #      over by a short prompt and are attended once they leave the window).
    t_1T = jnp.arange(T, dtype=jnp.int32)[None, :]
    L_B1 = lengths_B.astype(jnp.int32)[:, None]
    pos_11T = t_1T[:, None, :].astype(jnp.float32)
    obs_B1T = (t_1T >= L_B1 - obs_window)[:, None, :]
    in_window_B1T = (t_1T >= L_B1 + 1 - window)[:, None, :]
    rank_BKT = jnp.where(
        in_window_B1T, -1.0 - pos_11T,
        jnp.where(obs_B1T, jnp.float32(obs_window * G + 1) + pos_11T, score_BKT),
    )
    prompt_BKT = jnp.broadcast_to((t_1T < L_B1)[:, None, :], score_BKT.shape)
    return SnapKVState(base.top_positions(rank_BKT, prompt_BKT, S))

  def select(state: SnapKVState, q_BHD, k_BKTD, lengths_B) -> jax.Array:
    del q_BHD, k_BKTD, lengths_B
    return state.indices_BKS

  def update(state: SnapKVState, q_BHD, k_BKTD, lengths_B) -> SnapKVState:
    del q_BHD, k_BKTD, lengths_B
    return state

  return base.KVPolicy("snapkv", budget, 0, window, init, select, update)
