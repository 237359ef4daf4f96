"""Pallas (Triton) GPU grouped matmul: rows sorted by expert times that expert's matrix.

Rows are cut into tiles of `block_m`; a tile that straddles a group boundary is
processed once per group it touches (a "work item"), each time storing only its
own rows with a masked store, so no two programs write the same element. There
are at most ``ceil(N / block_m) + E`` work items, a static bound, so the grid is
static; surplus items are idle. Each program computes a `block_m x block_n`
output tile, looping over the contraction in `block_k` steps with `dot` (float32
accumulation).

`grouped_matmul_pallas` has a `custom_vjp`: the input gradient is the same
kernel against the transposed matrices; the weight gradient uses XLA's transpose
of `lax.ragged_dot` (correct everywhere, not tuned).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as plgpu

from jaxsys._src.pallas_util import round_up as _round_up
from jaxsys._src.pallas_util import triton_dot
from jaxsys.kernels.grouped_matmul.config import BlockConfig


def work_items(group_sizes_E: jax.Array, num_rows: int, block_m: int):
  """The (group, row tile) pairs to compute, padded to a static count.

  Returns:
    ``(group_W, tile_W, valid_W)`` int32/int32/bool arrays of length
    ``W = ceil(num_rows / block_m) + E``.
  """
  E = group_sizes_E.shape[0]
  W = -(-num_rows // block_m) + E
  sizes = group_sizes_E.astype(jnp.int32)
  ends = jnp.cumsum(sizes)
  starts = ends - sizes
  first = starts // block_m
  last = (ends - 1) // block_m
  count = jnp.where(sizes > 0, last - first + 1, 0)
  item_end = jnp.cumsum(count)
  item_start = item_end - count
  w = jnp.arange(W, dtype=jnp.int32)
  group = jnp.clip(jnp.searchsorted(item_end, w, side="right"), 0, E - 1).astype(jnp.int32)
  tile = first[group] + (w - item_start[group])
  valid = w < item_end[-1]
  return group, jnp.where(valid, tile, 0).astype(jnp.int32), valid


def _kernel(group_ref, tile_ref, valid_ref, starts_ref, ends_ref, lhs_ref, rhs_ref, out_ref,
            *, block_m: int, block_n: int, block_k: int, num_k: int, allow_tf32):
  w = pl.program_id(0)
  j = pl.program_id(1)
  g = group_ref[w]
  row0 = tile_ref[w] * block_m
  rows = row0 + jax.lax.iota(jnp.int32, block_m)
  mask_M = (rows >= starts_ref[g]) & (rows < ends_ref[g]) & (valid_ref[w] != 0)

  def body(kk, acc):
    a = lhs_ref[pl.ds(row0, block_m), pl.ds(kk * block_k, block_k)]
    b = rhs_ref[g, pl.ds(kk * block_k, block_k), pl.ds(j * block_n, block_n)]
    return acc + triton_dot(a, b, allow_tf32=allow_tf32).astype(jnp.float32)

  acc = jax.lax.fori_loop(0, num_k, body, jnp.zeros((block_m, block_n), jnp.float32))
  plgpu.store(
      out_ref.at[pl.ds(row0, block_m), pl.ds(j * block_n, block_n)],
      acc.astype(out_ref.dtype), mask=mask_M[:, None],
  )


def _forward(lhs_ND, rhs_EDF, group_sizes_E, cfg: BlockConfig, interpret: bool):
  N, D = lhs_ND.shape
  E, _, F = rhs_EDF.shape
  bm, bn, bk = cfg.block_m, cfg.block_n, cfg.block_k
  Np, Dp, Fp = _round_up(max(N, 1), bm), _round_up(D, bk), _round_up(F, bn)
  lhs = jnp.pad(lhs_ND, ((0, Np - N), (0, Dp - D)))
  rhs = jnp.pad(rhs_EDF, ((0, 0), (0, Dp - D), (0, Fp - F)))
  sizes = group_sizes_E.astype(jnp.int32)
  ends = jnp.cumsum(sizes)
  starts = ends - sizes
  group, tile, valid = work_items(sizes, Np, bm)
  W = group.shape[0]
  allow_tf32 = False if lhs.dtype == jnp.float32 else None
  kernel = functools.partial(
      _kernel, block_m=bm, block_n=bn, block_k=bk, num_k=Dp // bk, allow_tf32=allow_tf32)
  full = lambda shape: pl.BlockSpec(shape, lambda w, j: (0,) * len(shape))  # noqa: E731
  out = pl.pallas_call(
      kernel,
      grid=(W, Fp // bn),
      in_specs=[full((W,)), full((W,)), full((W,)), full((E,)), full((E,)),
                full((Np, Dp)), full((E, Dp, Fp))],
      out_specs=full((Np, Fp)),
      out_shape=jax.ShapeDtypeStruct((Np, Fp), lhs_ND.dtype),
      interpret=interpret,
      compiler_params=plgpu.CompilerParams(num_warps=cfg.num_warps, num_stages=cfg.num_stages),
      name="grouped_matmul",
  )(group, tile, valid.astype(jnp.int32), starts, ends, lhs, rhs)
  # Rows past the last group were never written: zero them (as ragged_dot does).
  covered = jnp.arange(N, dtype=jnp.int32) < ends[-1]
  return jnp.where(covered[:, None], out[:N, :F], jnp.zeros((), lhs_ND.dtype))


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4))
def _gmm(lhs_ND, rhs_EDF, group_sizes_E, cfg, interpret):
  return _forward(lhs_ND, rhs_EDF, group_sizes_E, cfg, interpret)


def _gmm_fwd(lhs_ND, rhs_EDF, group_sizes_E, cfg, interpret):
  out = _forward(lhs_ND, rhs_EDF, group_sizes_E, cfg, interpret)
  return out, (lhs_ND, rhs_EDF, group_sizes_E)


def _gmm_bwd(cfg, interpret, res, d_out_NF):
  lhs_ND, rhs_EDF, group_sizes_E = res
  d_lhs = _forward(d_out_NF, jnp.swapaxes(rhs_EDF, 1, 2), group_sizes_E, cfg, interpret)
  precision = jax.lax.Precision.HIGHEST if lhs_ND.dtype == jnp.float32 else None
  _, vjp = jax.vjp(
      lambda r: jax.lax.ragged_dot(lhs_ND, r, group_sizes_E.astype(jnp.int32),
                                   precision=precision,  # no TF32 for float32
                                   preferred_element_type=jnp.float32).astype(lhs_ND.dtype),
      rhs_EDF)
  (d_rhs,) = vjp(d_out_NF)
  return d_lhs, d_rhs, None


_gmm.defvjp(_gmm_fwd, _gmm_bwd)


@functools.partial(jax.jit, static_argnames=("block_config", "interpret"))
def grouped_matmul_pallas(
    lhs_ND: jax.Array,
    rhs_EDF: jax.Array,
    group_sizes_E: jax.Array,
    *,
    block_config: BlockConfig | None = None,
    interpret: bool = False,
) -> jax.Array:
  """The Pallas kernel; arguments as `reference.grouped_matmul_reference`."""
  cfg = block_config or BlockConfig.get_default()
  return _gmm(lhs_ND, rhs_EDF, group_sizes_E, cfg, interpret)
