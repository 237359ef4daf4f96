"""Pallas (Triton) GPU dequantising matmul: ``x @ dequantize(packed, scales[, mins])``.

Each program computes one ``block_m x block_n`` output tile and walks the
contraction in steps of ``block_k`` unpacked rows. Per step it

1. loads the ``[block_m, block_k]`` tile of x;
2. loads the packed weight bytes as a ``[block_k, block_n]`` gather whose row
   index is ``row // pack``, so each byte is read `pack` times (from cache) and
   lands on the row of every code it holds; no reshape or interleave is needed,
   which Triton tensors do not do well;
3. shifts each row by ``(row % pack) * bits``, masks to `bits` bits and
   sign-extends (symmetric) in int32 registers;
4. multiplies by the group's scale (and adds its min), one ``[1, block_n]`` row
   when a step lies inside one group (``group % block_k == 0``), else a
   ``[block_k, block_n]`` gather of scale row ``row // group``;
5. casts the dequantised tile to x's dtype and accumulates with the Triton
   `dot` in float32 (no TF32 for float32 inputs).

Only the packed bytes and the scales come from memory: at 4 bits with fp16
scales per 32 rows that is 4.5 bits a weight instead of 16.

On CPU the kernel runs with ``interpret=True`` (the tests); it matches
`reference.quant_matmul_reference` to float32 rounding. It has no VJP (an
inference kernel; `jax.grad` through it raises).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as plgpu

from jaxsys._src.pallas_util import round_up as _round_up
from jaxsys._src.pallas_util import triton_dot
from jaxsys.kernels.quant_matmul.config import BlockConfig


def _kernel(x_ref, q_ref, s_ref, *refs, bits: int, group: int, block_m: int, block_n: int,
            block_k: int, num_k: int, signed: bool, has_mins: bool, allow_tf32):
  if has_mins:
    m_ref, o_ref = refs
  else:
    (o_ref,) = refs
    m_ref = None
  i = pl.program_id(0)
  j = pl.program_id(1)
  pack = 8 // bits
  log2_pack = pack.bit_length() - 1
  cols = pl.ds(j * block_n, block_n)
  one_group = group % block_k == 0  # a step never straddles two groups

  def body(kk, acc):
    k0 = kk * block_k
    x = x_ref[pl.ds(i * block_m, block_m), pl.ds(k0, block_k)]
    if pack == 1:
      c = q_ref[pl.ds(k0, block_k), cols].astype(jnp.int32)
    else:
      rows_K = k0 + jax.lax.iota(jnp.int32, block_k)
      byte_K = jax.lax.shift_right_logical(rows_K, jnp.full_like(rows_K, log2_pack))
      u = q_ref[byte_K, cols].astype(jnp.int32)  # uint8 zero-extends
      shift_K1 = ((rows_K & jnp.int32(pack - 1)) * jnp.int32(bits))[:, None]
      c = jax.lax.shift_right_logical(u, jnp.broadcast_to(shift_K1, u.shape))
      c = c & jnp.int32((1 << bits) - 1)
    if signed:  # two's complement field -> int
      c = jnp.where(c >= jnp.int32(1 << (bits - 1)), c - jnp.int32(1 << bits), c)
    if one_group:
      g = jax.lax.div(kk, jnp.int32(group // block_k))
      idx = pl.ds(g, 1)  # [1, block_n], broadcast over the step's rows
    else:
      rows_K = k0 + jax.lax.iota(jnp.int32, block_k)
      idx = jax.lax.div(rows_K, jnp.full_like(rows_K, group))
    w = c.astype(jnp.float32) * s_ref[idx, cols].astype(jnp.float32)
    if has_mins:
      w = w + m_ref[idx, cols].astype(jnp.float32)
    return acc + triton_dot(x, w.astype(x.dtype), allow_tf32=allow_tf32).astype(jnp.float32)

  acc = jax.lax.fori_loop(0, num_k, body, jnp.zeros((block_m, block_n), jnp.float32))
  o_ref[pl.ds(i * block_m, block_m), cols] = acc.astype(o_ref.dtype)


def _pad_to(a, shape):
  if tuple(a.shape) == tuple(shape):
    return a
  return jnp.pad(a, [(0, t - s) for s, t in zip(a.shape, shape)])


@functools.partial(jax.jit,
                   static_argnames=("bits", "group", "block_config", "interpret"))
def quant_matmul_pallas(
    x_ND: jax.Array,
    packed_PF: jax.Array,
    scales_GF: jax.Array,
    mins_GF: jax.Array | None = None,
    *,
    bits: int,
    group: int,
    block_config: BlockConfig | None = None,
    interpret: bool = False,
) -> jax.Array:
  """The Pallas kernel; arguments as `reference.quant_matmul_reference` (validated by api)."""
  N, D = x_ND.shape
  F = packed_PF.shape[1]
  pack = 8 // bits
  cfg = block_config or BlockConfig.get_default(N)
  bm, bn, bk = cfg.block_m, cfg.block_n, cfg.block_k
  Np, Dp, Fp = _round_up(max(N, 1), bm), _round_up(D, bk), _round_up(F, bn)
  Gp = -(-Dp // group)
  x = _pad_to(x_ND, (Np, Dp))
  q = _pad_to(packed_PF, (Dp // pack, Fp))  # zero bytes: code 0
  s = _pad_to(scales_GF, (Gp, Fp))  # zero scales: padded weights are 0
  args = [x, q, s]
  if mins_GF is not None:
    args.append(_pad_to(mins_GF, (Gp, Fp)))
  allow_tf32 = False if x.dtype == jnp.float32 else None
  kernel = functools.partial(
      _kernel, bits=bits, group=group, block_m=bm, block_n=bn, block_k=bk, num_k=Dp // bk,
      signed=mins_GF is None, has_mins=mins_GF is not None, allow_tf32=allow_tf32)
  full = lambda shape: pl.BlockSpec(shape, lambda i, j: (0,) * len(shape))  # noqa: E731
  out = pl.pallas_call(
      kernel,
      grid=(Np // bm, Fp // bn),
      in_specs=[full(a.shape) for a in args],
      out_specs=full((Np, Fp)),
      out_shape=jax.ShapeDtypeStruct((Np, Fp), x_ND.dtype),
      interpret=interpret,
      compiler_params=plgpu.CompilerParams(num_warps=cfg.num_warps, num_stages=cfg.num_stages),
      name=f"quant_matmul_int{bits}",
  )(*args)
  return out[:N, :F]
