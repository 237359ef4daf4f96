"""Pallas (Triton) GPU kernel for sparse decode attention.

Each program handles one (sequence, KV head, split). It walks a virtual token
list, ``[sinks | window | selected]``, in blocks of `block_s` tokens: the sinks
and the window are contiguous ranges of the cache, the selected part comes from
the per-(sequence, KV head) index list; every block is a gather of `block_s` key
and value rows. Scores for all query heads of the GQA group are computed against
the same rows (keys are read once per KV head, never once per query head) and
folded into an online softmax. Each split writes its unnormalised output with its
running max and sum; `merge_partials` combines the splits by log-sum-exp, exactly
as flash-decoding does.

On CPU the kernel runs only with ``interpret=True`` (the tests use that); its
output matches `reference.sparse_decode_attention_reference` to float32 rounding.
It has no VJP: decode attention is inference-only, and `jax.grad` through it
raises.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as plgpu

from jaxsys._src.pallas_util import next_pow2 as _next_pow2
from jaxsys._src.pallas_util import round_up as _round_up
from jaxsys._src.pallas_util import triton_dot
from jaxsys.kernels.sparse_decode_attention.config import BlockConfig

# Finite stand-in for -inf in the running max, so exp(m_old - m_new) of an empty
# block is exp(0) = 1 rather than NaN; masked probabilities are zeroed explicitly.
_NEG = -1e30


def _exact(dtype) -> dict[str, bool]:
  """float32 inputs stay float32 in `triton_dot` (no TF32 rounding)."""
  return {"allow_tf32": False} if jnp.dtype(dtype) == jnp.float32 else {}


def _kernel(
    lengths_ref, q_ref, k_ref, v_ref, idx_ref,  # inputs
    o_ref, m_ref, l_ref,  # outputs
    *, num_sinks: int, window: int, sink_pad: int, win_pad: int, sel_len: int,
    sel_pad: int, block_s: int, blocks_per_split: int, num_blocks: int,
    seq_cap: int, scale: float, use_dot: bool,
):
  b = pl.program_id(0)
  h = pl.program_id(1)
  split = pl.program_id(2)
  length = lengths_ref[b]
  win_start = length - window
  q_GD = q_ref[...]
  G, D = q_GD.shape
  if not use_dot:
    q_GD = q_GD.astype(jnp.float32)

  first = split * blocks_per_split
  last = jnp.minimum(first + blocks_per_split, num_blocks)

  def body(j, carry):
    m_G, l_G, acc_GD = carry
    p_S = j * block_s + jax.lax.iota(jnp.int32, block_s)
    in_sink = p_S < sink_pad
    p2_S = p_S - sink_pad
    in_win = (p2_S >= 0) & (p2_S < win_pad)
    p3_S = p_S - (sink_pad + win_pad)
    in_sel = p3_S >= 0
    sel_S = idx_ref[b, h, jnp.clip(p3_S, 0, sel_pad - 1)]
    tok_S = jnp.where(in_sink, p_S, jnp.where(in_win, win_start + p2_S, sel_S))
    valid_S = (
        (in_sink & (p_S < num_sinks) & (p_S < length))
        | (in_win & (p2_S < window) & (tok_S >= num_sinks) & (tok_S >= 0))
        | (in_sel & (p3_S < sel_len) & (tok_S >= num_sinks) & (tok_S >= 0)
           & (tok_S < win_start))
    )
    tok_S = jnp.clip(tok_S, 0, seq_cap - 1)
    k_SD = k_ref[b, h, tok_S, :]
    v_SD = v_ref[b, h, tok_S, :]
    if use_dot:  # [G, D] x [S, D]^T on tensor cores, f32 accumulation
      s_GS = triton_dot(q_GD.astype(k_SD.dtype), k_SD, trans_b=True, **_exact(k_SD.dtype))
      s_GS = s_GS.astype(jnp.float32) * scale
    else:
      k_SD = k_SD.astype(jnp.float32)
      s_GS = jnp.sum(q_GD[:, None, :] * k_SD[None, :, :], axis=-1) * scale
    s_GS = jnp.where(valid_S[None, :], s_GS, _NEG)
    m_new_G = jnp.maximum(m_G, jnp.max(s_GS, axis=1))
    p_GS = jnp.where(valid_S[None, :], jnp.exp(s_GS - m_new_G[:, None]), 0.0)
    alpha_G = jnp.exp(m_G - m_new_G)
    l_G = l_G * alpha_G + jnp.sum(p_GS, axis=1)
    if use_dot:
      pv_GD = triton_dot(p_GS.astype(v_SD.dtype), v_SD, **_exact(v_SD.dtype))
      pv_GD = pv_GD.astype(jnp.float32)
    else:
      pv_GD = jnp.sum(p_GS[:, :, None] * v_SD.astype(jnp.float32)[None, :, :], axis=1)
    acc_GD = acc_GD * alpha_G[:, None] + pv_GD
    return m_new_G, l_G, acc_GD

  init = (
      jnp.full((G,), _NEG, jnp.float32),
      jnp.zeros((G,), jnp.float32),
      jnp.zeros((G, D), jnp.float32),
  )
  m_G, l_G, acc_GD = jax.lax.fori_loop(first, last, body, init)
  o_ref[...] = acc_GD
  m_ref[...] = m_G
  l_ref[...] = l_G


def merge_partials(
    o_NGD: jax.Array, m_NG: jax.Array, l_NG: jax.Array, axis: int = 0
) -> jax.Array:
  """Combines split-wise online-softmax partials by log-sum-exp.

  Each split i holds ``acc_i = sum_j exp(s_j - m_i) v_j`` and
  ``l_i = sum_j exp(s_j - m_i)``; the result is
  ``sum_i exp(m_i - M) acc_i / sum_i exp(m_i - M) l_i`` with ``M = max_i m_i``,
  or zero where no split saw a valid token.
  """
  m_max = jnp.max(m_NG, axis=axis, keepdims=True)
  w = jnp.exp(m_NG - m_max)
  num = jnp.sum(jnp.expand_dims(w, -1) * o_NGD, axis=axis)
  den = jnp.sum(w * l_NG, axis=axis)
  safe = jnp.where(den > 0, den, 1.0)
  return jnp.where(den[..., None] > 0, num / safe[..., None], 0.0)


@functools.partial(
    jax.jit,
    static_argnames=("num_sinks", "window", "scale", "block_config", "interpret"),
)
def sparse_decode_attention_pallas(
    q_BHD: jax.Array,
    k_BKTD: jax.Array,
    v_BKTD: jax.Array,
    indices_BKS: jax.Array,
    lengths_B: jax.Array,
    *,
    num_sinks: int,
    window: int,
    scale: float | None = None,
    block_config: BlockConfig | None = None,
    interpret: bool = False,
) -> jax.Array:
  """The Pallas kernel; arguments as `reference.sparse_decode_attention_reference`."""
  cfg = block_config or BlockConfig.get_default()
  B, H, D = q_BHD.shape
  K, T = k_BKTD.shape[1], k_BKTD.shape[2]
  S = indices_BKS.shape[2]
  G = H // K
  Gp = max(16, _next_pow2(G)) if cfg.use_dot else _next_pow2(G)
  Dp = _next_pow2(D)
  if Dp != D:
    raise ValueError(f"head dim must be a power of two for the Pallas kernel, given {D}")
  bs = cfg.block_s
  scale = D**-0.5 if scale is None else float(scale)

  sink_pad = _round_up(num_sinks, bs)
  win_pad = _round_up(window, bs)
  sel_pad = max(_round_up(S, bs), bs)
  num_blocks = (sink_pad + win_pad + _round_up(S, bs)) // bs
  splits = cfg.splits_for(B * K, max(num_blocks, 1))
  blocks_per_split = max(1, math.ceil(num_blocks / splits))

  q_BKGD = q_BHD.reshape(B, K, G, D)
  if Gp != G:
    q_BKGD = jnp.pad(q_BKGD, ((0, 0), (0, 0), (0, Gp - G), (0, 0)))
  idx_BKS = indices_BKS.astype(jnp.int32)
  if sel_pad != S:
    idx_BKS = jnp.pad(idx_BKS, ((0, 0), (0, 0), (0, sel_pad - S)), constant_values=-1)

  kernel = functools.partial(
      _kernel, num_sinks=num_sinks, window=window, sink_pad=sink_pad,
      win_pad=win_pad, sel_len=S, sel_pad=sel_pad, block_s=bs,
      blocks_per_split=blocks_per_split, num_blocks=num_blocks, seq_cap=T,
      scale=scale, use_dot=cfg.use_dot,
  )
  full = lambda shape: pl.BlockSpec(shape, lambda b, h, s: (0,) * len(shape))  # noqa: E731
  o, m, l = pl.pallas_call(
      kernel,
      grid=(B, K, splits),
      in_specs=[
          full((B,)),
          pl.BlockSpec((None, None, Gp, D), lambda b, h, s: (b, h, 0, 0)),
          full((B, K, T, D)),
          full((B, K, T, D)),
          full((B, K, sel_pad)),
      ],
      out_specs=[
          pl.BlockSpec((None, None, None, Gp, D), lambda b, h, s: (b, h, s, 0, 0)),
          pl.BlockSpec((None, None, None, Gp), lambda b, h, s: (b, h, s, 0)),
          pl.BlockSpec((None, None, None, Gp), lambda b, h, s: (b, h, s, 0)),
      ],
      out_shape=[
          jax.ShapeDtypeStruct((B, K, splits, Gp, D), jnp.float32),
          jax.ShapeDtypeStruct((B, K, splits, Gp), jnp.float32),
          jax.ShapeDtypeStruct((B, K, splits, Gp), jnp.float32),
      ],
      interpret=interpret,
      compiler_params=plgpu.CompilerParams(
          num_warps=cfg.num_warps, num_stages=cfg.num_stages
      ),
      name="sparse_decode_attention",
  )(lengths_B.astype(jnp.int32), q_BKGD, k_BKTD, v_BKTD, idx_BKS)
  o_BKGD = merge_partials(o, m, l, axis=2)[:, :, :G]
  return o_BKGD.reshape(B, H, D).astype(q_BHD.dtype)
