"""PMP, the Pattern Merging Prefetcher (Jiang et al., MICRO'22), as a JAX prefetcher.

Parameters as in the Gaze artifact's copy (``papers/prefetch.md`` 1.2, read in
zeal4u/PMP ``pmp.l1d_pref``); the mechanism below is this module's exact
specification, which `baselines_b_reference.ReferencePMP` implements again in
plain Python and the tests hold this code to, event for event.

**Regions.** ``R = region_blocks`` blocks (a param: 64 = 4 KB, PMP's
``IN_REGION_BITS`` 12, the default; 32 = the 2 KB of the Gaze artifact's copy;
any power of two 2..64). Block b is in region ``r = b >> log2 R`` at offset
``o = b & (R - 1)``. The PC hash is 5 bits:
``(pc ^ pc>>5 ^ pc>>10 ^ pc>>15) & 31`` [I].

**Tables** (sizes static, factory arguments; sets powers of two, set index =
low bits of r; replacement: an empty way first, else the least recently
stamped; the stamp is a clock bumped on every L1D demand load):

* FT (filter table) 64 = 8 sets x 8 ways: (region, trigger offset, PC hash);
* AT (accumulation table) 32 = 2 sets x 16 ways: (region, trigger, PC hash,
  64-bit footprint);
* OPT (offset pattern table): 64 rows, direct-mapped by the trigger offset, of
  64 counters (5 bits);
* PPT (PC pattern table): 32 rows by the PC hash, of 32 counters at half
  resolution (counter j covers anchored offsets 2j and 2j+1);
* PB (prefetch buffer) 32 = 4 sets x 8 ways (the Gaze copy; PMP's own is
  16 x 16): (region, a 2-bit fill level per offset, "none" included).

**Per L1D demand load** (hits and misses; stores are ignored), block b at
region r, offset o, PC hash h:

1. r in AT: set footprint bit o.
2. else r in FT with trigger t: if o != t, move the region to AT with
   footprint {t, o} (removing it from FT). If that evicts an AT entry, the
   victim **trains** (below). If o == t, only its stamp changes.
3. else (**the first access to the region: PMP's trigger**): insert (r, o, h)
   in FT (an FT victim is dropped untrained) and **predict**: for each other
   offset x of the region, with the anchored index ``i = (x - o) mod R`` (the
   pattern rotated to the trigger), OPT row o votes ``p_o = OPT[o][i] /
   OPT[o][0]`` and PPT row h votes ``p_p = PPT[h][i >> 1] / PPT[h][0]``; a
   vote is *L1* if ``p >= l1_pct %`` (50), *L2* if ``p >= l2_pct %`` (15),
   else none (none also when the anchor counter is 0). **Level rule: OPT
   decides whether, the agreement decides where**: no prefetch if OPT's vote
   is none; fill L1D if OPT and PPT both vote L1; fill L2 otherwise (OPT L2,
   or PPT weaker than L1, or PPT untrained). A non-empty prediction is written
   into PB (over a stale entry of r, else a victim).
4. **Drain** PB if it holds r: clear offset o (the demanded block), then
   offer the pending offsets nearest-first from o (``o+1, o-1, o+2, o-2, ...``
   inside the region), the first K of them (K = ``num_candidates``); the cache
   accepts the first ``budget`` (`jaxsys.sims.cache.protocol`), which are
   cleared; the rest wait for a later access to the region. An entry with
   nothing pending is freed.

**Training** (an AT victim, trigger t, PC hash h, footprint F): the anchored
pattern ``A[i] = F[(t + i) mod R]`` (i < R; ``A[0] = 1``, the trigger) is
added to OPT row t; the coarse pattern ``C[j] = A[2j] | A[2j+1]`` to PPT row h.
When a row's anchor counter (index 0, the number of merged footprints)
reaches ``counter_max`` (32) the whole row is halved, so counters fit 5 bits.

**Simplifications** (documented, [I]): training happens only on AT capacity
evictions (PMP also trains when a region's block leaves the L1D; this
simulator has no eviction hook to the prefetcher, as in the Gaze artifact
where that hook is never called); full region numbers as tags; PB keeps
refused candidates but no per-offset metadata; the issue gate is the cache's
budget (`hierarchy.issue_budget`), not PMP's own queue check.

Params (`make_params`, traced, so a sweep does not recompile):
``region_blocks`` (64), ``l1_pct`` (50), ``l2_pct`` (15), ``counter_max`` (32).

>>> import numpy as np
>>> from jaxsys.sims.cache import hierarchy, runner
>>> pf = pmp()
>>> params = hierarchy.make_params(prefetcher=pf.make_params(region_blocks=32))
>>> trace = runner.make_trace(np.array([64, 66, 128], np.int32))
>>> state, codes = runner.run(trace, hierarchy.CacheConfig(), params, pf)
>>> runner.decode(codes)["level"].tolist()
[3, 3, 3]
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxsys.sims.cache import protocol
from jaxsys.sims.cache.protocol import Access, Candidates, Prefetcher
from ._checks import check_int as _check_int

MAX_OFFSETS = 64  # largest region (4 KB of 64-byte blocks); OPT rows and footprints
PPT_ROWS = 32  # 5-bit PC hash
PPT_COLS = MAX_OFFSETS // 2
# Table columns.
TAG, TRIGGER, PC5, STAMP = range(4)  # FT row; AT row (+ footprint from column 4)
AT_FP = 4
PB_TAG, PB_STAMP, PB_LEVELS = 0, 1, 2

# Nearest-first order of offset distances: +1, -1, +2, -2, ..., +63, -63.
_ORDER_D = np.array([s * d for d in range(1, MAX_OFFSETS) for s in (1, -1)], np.int32)


class PMPParams(NamedTuple):
  region_blocks: Any  # [] int32 blocks per region, a power of two 2..64
  region_shift: Any  # [] int32 log2(region_blocks)
  l1_pct: Any  # [] int32 vote >= l1_pct % is L1 strength (50)
  l2_pct: Any  # [] int32 vote >= l2_pct % is L2 strength (15)
  counter_max: Any  # [] int32 a row is halved when its anchor counter reaches this (32)


class PMPState(NamedTuple):
  ft: jax.Array  # [FS, FW, 4] int32 (region, trigger, pc5, stamp); stamp -1 empty
  at: jax.Array  # [AS, AW, 4 + 64] int32 (region, trigger, pc5, stamp, footprint bits)
  opt: jax.Array  # [64, 64] int32 counters, row = trigger offset, column = anchored offset
  ppt: jax.Array  # [32, 32] int32 counters, row = PC hash, column = anchored offset // 2
  pb: jax.Array  # [PS, PW, 2 + 64] int32 (region, stamp, fill level per offset, -1 none)
  clock_issued: jax.Array  # [2] int32 (loads seen = the stamp clock, candidates accepted)


class PMPConfig(NamedTuple):
  """Static geometry (the factory's arguments)."""

  ft_sets: int
  ft_ways: int
  at_sets: int
  at_ways: int
  pb_sets: int
  pb_ways: int
  num_candidates: int




def _check_pow2(name: str, value: Any, lo: int = 1, hi: int | None = None) -> int:
  value = _check_int(name, value, lo, hi)
  if value & (value - 1):
    raise ValueError(f"{name}: expected a power of two (a set index is the low bits), given"
                     f" {value}")
  return value


def make_params(region_blocks: int = 64, l1_pct: int = 50, l2_pct: int = 15,
                counter_max: int = 32) -> PMPParams:
  """Checked PMP params (numpy scalars; see the module docstring)."""
  region_blocks = _check_pow2("region_blocks", region_blocks, 2, MAX_OFFSETS)
  l1_pct = _check_int("l1_pct", l1_pct, 1, 100)
  l2_pct = _check_int("l2_pct", l2_pct, 1, 100)
  if l2_pct > l1_pct:
    raise ValueError(f"l2_pct: expected <= l1_pct ({l1_pct}), given {l2_pct}")
  counter_max = _check_int("counter_max", counter_max, 2, 32)
  return PMPParams(np.int32(region_blocks), np.int32(region_blocks.bit_length() - 1),
                   np.int32(l1_pct), np.int32(l2_pct), np.int32(counter_max))


def pc_hash5(pc: jax.Array) -> jax.Array:
  """PMP's 5-bit PC hash (module docstring)."""
  pc = jnp.asarray(pc, jnp.int32)
  return (pc ^ (pc >> 5) ^ (pc >> 10) ^ (pc >> 15)) & 31


def _init(cfg: PMPConfig, pparams: PMPParams) -> PMPState:
  del pparams
  ft = np.zeros((cfg.ft_sets, cfg.ft_ways, 4), np.int32)
  ft[..., TAG] = -1
  ft[..., STAMP] = -1
  at = np.zeros((cfg.at_sets, cfg.at_ways, AT_FP + MAX_OFFSETS), np.int32)
  at[..., TAG] = -1
  at[..., STAMP] = -1
  pb = np.full((cfg.pb_sets, cfg.pb_ways, PB_LEVELS + MAX_OFFSETS), -1, np.int32)
  return PMPState(jnp.asarray(ft), jnp.asarray(at),
                  jnp.zeros((MAX_OFFSETS, MAX_OFFSETS), jnp.int32),
                  jnp.zeros((PPT_ROWS, PPT_COLS), jnp.int32), jnp.asarray(pb),
                  jnp.zeros((2,), jnp.int32))


def _train(pstate, access, hit_l1, now, pparams):
  # Everything happens in `issue` (one read and one write per table per step).
  del access, hit_l1, now, pparams
  return pstate


def _row(table: jax.Array, i: jax.Array) -> jax.Array:
  return jax.lax.dynamic_index_in_dim(table, i, axis=0, keepdims=False)


def _put(table: jax.Array, row: jax.Array, i: jax.Array) -> jax.Array:
  return jax.lax.dynamic_update_index_in_dim(table, row, i, axis=0)


def _vote(count: jax.Array, anchor: jax.Array, pp: PMPParams) -> jax.Array:
  """0 L1 strength, 1 L2 strength, -1 none (elementwise)."""
  l1 = jnp.asarray(pp.l1_pct, jnp.int32)
  l2 = jnp.asarray(pp.l2_pct, jnp.int32)
  return jnp.where(anchor <= 0, -1,
                   jnp.where(100 * count >= l1 * anchor, 0,
                             jnp.where(100 * count >= l2 * anchor, 1, -1)))


def _issue(cfg: PMPConfig, pstate: PMPState, cache_state, access: Access, now, budget,
           pp: PMPParams):
  del cache_state, now
  K = cfg.num_candidates
  do = jnp.asarray(access.load, jnp.bool_)
  b = jnp.asarray(access.block, jnp.int32)
  R = jnp.asarray(pp.region_blocks, jnp.int32)
  r = b >> jnp.asarray(pp.region_shift, jnp.int32)
  o = b & (R - 1)
  h = pc_hash5(access.pc_hash)
  clock = pstate.clock_issued[0] + do.astype(jnp.int32)
  x64 = jnp.arange(MAX_OFFSETS, dtype=jnp.int32)
  in_region = x64 < R

  # --- AT and FT lookups.
  ai = r & (cfg.at_sets - 1)
  at_row = _row(pstate.at, ai)  # [AW, 68]
  at_hit_W = (at_row[:, STAMP] >= 0) & (at_row[:, TAG] == r)
  at_hit = jnp.any(at_hit_W)
  fi = r & (cfg.ft_sets - 1)
  ft_row = _row(pstate.ft, fi)  # [FW, 4]
  ft_hit_W = (ft_row[:, STAMP] >= 0) & (ft_row[:, TAG] == r) & ~at_hit
  ft_hit = jnp.any(ft_hit_W)
  f_trig = jnp.sum(jnp.where(ft_hit_W, ft_row[:, TRIGGER], 0))
  f_pc5 = jnp.sum(jnp.where(ft_hit_W, ft_row[:, PC5], 0))
  move = do & ft_hit & (o != f_trig)
  touch = do & ft_hit & (o == f_trig)
  new = do & ~at_hit & ~ft_hit

  # --- AT: set a footprint bit, or take the moved region (the victim trains).
  col_A = jnp.arange(AT_FP + MAX_OFFSETS, dtype=jnp.int32)
  vic_a = jnp.argmin(at_row[:, STAMP]).astype(jnp.int32)
  victim = _row(at_row, vic_a)
  learn = move & (victim[STAMP] >= 0)
  fp_new = ((x64 == f_trig) | (x64 == o)).astype(jnp.int32)
  entry_a = jnp.concatenate([jnp.stack([r, f_trig, f_pc5, clock]), fp_new])
  at_sel = (do & at_hit_W)[:, None]
  at_row2 = jnp.where(at_sel & (col_A == STAMP)[None, :], clock, at_row)
  at_row2 = jnp.where(at_sel & (col_A == AT_FP + o)[None, :], 1, at_row2)
  at_vic = (move & (jnp.arange(cfg.at_ways, dtype=jnp.int32) == vic_a))[:, None]
  at_row2 = jnp.where(at_vic, entry_a[None, :], at_row2)
  at = _put(pstate.at, at_row2, ai)

  # --- FT: touch, remove (moved) or insert (first access).
  col_F = jnp.arange(4, dtype=jnp.int32)
  ft_row2 = jnp.where((touch & ft_hit_W)[:, None] & (col_F == STAMP)[None, :], clock, ft_row)
  ft_row2 = jnp.where((move & ft_hit_W)[:, None],
                      jnp.array([-1, 0, 0, -1], jnp.int32)[None, :], ft_row2)
  vic_f = jnp.argmin(ft_row[:, STAMP]).astype(jnp.int32)
  ft_ins = (new & (jnp.arange(cfg.ft_ways, dtype=jnp.int32) == vic_f))[:, None]
  ft_row2 = jnp.where(ft_ins, jnp.stack([r, o, h, clock])[None, :], ft_row2)
  ft = _put(pstate.ft, ft_row2, fi)

  # --- Predict (first access) from the old OPT / PPT rows.
  orow = _row(pstate.opt, o)
  prow = _row(pstate.ppt, h)
  i64 = (x64 - o) & (R - 1)
  v_opt = _vote(jnp.take(orow, i64), orow[0], pp)
  v_ppt = _vote(jnp.take(prow, i64 >> 1), prow[0], pp)
  pred_64 = jnp.where(in_region & (x64 != o) & (v_opt >= 0),
                      jnp.where((v_opt == 0) & (v_ppt == 0), 0, 1), -1)
  pred = new & jnp.any(pred_64 >= 0)

  # --- Train OPT and PPT with the AT victim.
  t_v = victim[TRIGGER]
  p_v = victim[PC5] & (PPT_ROWS - 1)
  anchored = jnp.where(in_region, jnp.take(victim[AT_FP:], (t_v + x64) & (R - 1)), 0)
  orow_v = _row(pstate.opt, t_v) + anchored
  orow_v = jnp.where(orow_v[0] >= pp.counter_max, orow_v >> 1, orow_v)
  opt = _put(pstate.opt, jnp.where(learn, orow_v, _row(pstate.opt, t_v)), t_v)
  coarse = jnp.max(anchored.reshape(PPT_COLS, 2), axis=1)
  prow_v = _row(pstate.ppt, p_v) + coarse
  prow_v = jnp.where(prow_v[0] >= pp.counter_max, prow_v >> 1, prow_v)
  ppt = _put(pstate.ppt, jnp.where(learn, prow_v, _row(pstate.ppt, p_v)), p_v)

  # --- PB: insert the prediction, then drain the region's entry.
  pi = r & (cfg.pb_sets - 1)
  pb_row = _row(pstate.pb, pi)  # [PW, 66]
  pb_hit_W = (pb_row[:, PB_STAMP] >= 0) & (pb_row[:, PB_TAG] == r)
  pb_hit = jnp.any(pb_hit_W)
  way = jnp.where(pb_hit, jnp.argmax(pb_hit_W), jnp.argmin(pb_row[:, PB_STAMP])).astype(jnp.int32)
  levels = jnp.where(pred, pred_64, _row(pb_row, way)[PB_LEVELS:])
  active = do & (pred | pb_hit)
  levels = jnp.where(x64 == o, -1, levels)
  xk = o + jnp.asarray(_ORDER_D)  # [2*63] offsets nearest-first
  lk = jnp.take(levels, jnp.clip(xk, 0, MAX_OFFSETS - 1))
  ok = active & (xk >= 0) & (xk < R) & (lk >= 0)
  rank = jnp.cumsum(ok.astype(jnp.int32))
  pick_KN = ok[None, :] & (rank[None, :] == jnp.arange(1, K + 1, dtype=jnp.int32)[:, None])
  valid_K = jnp.any(pick_KN, axis=1)
  x_K = jnp.sum(jnp.where(pick_KN, xk[None, :], 0), axis=1)
  level_K = jnp.sum(jnp.where(pick_KN, lk[None, :], 0), axis=1)
  take_K = protocol.accepted_mask(valid_K, budget)
  cleared = jnp.any(take_K[:, None] & (x_K[:, None] == x64[None, :]), axis=0)
  levels = jnp.where(cleared, -1, levels)
  empty = ~jnp.any(levels >= 0)
  entry_p = jnp.concatenate([jnp.stack([jnp.where(empty, -1, r), jnp.where(empty, -1, clock)]),
                             levels])
  pb_sel = (active & (jnp.arange(cfg.pb_ways, dtype=jnp.int32) == way))[:, None]
  pb = _put(pstate.pb, jnp.where(pb_sel, entry_p[None, :], pb_row), pi)

  issued = jnp.sum(take_K.astype(jnp.int32))
  clock_issued = jnp.stack([clock, pstate.clock_issued[1] + issued])
  cand = Candidates(b - o + x_K, level_K, valid_K)
  return PMPState(ft, at, opt, ppt, pb, clock_issued), cand


@functools.lru_cache(maxsize=None)
def pmp(num_candidates: int = 16, *, ft_sets: int = 8, ft_ways: int = 8, at_sets: int = 2,
        at_ways: int = 16, pb_sets: int = 4, pb_ways: int = 8) -> Prefetcher:
  """The PMP prefetcher (module docstring) with static table geometry.

  Args:
    num_candidates: K, prefetches offered per access (the PB keeps the rest).
    ft_sets, ft_ways: filter table (64 = 8 x 8); sets a power of two.
    at_sets, at_ways: accumulation table (32 = 2 x 16).
    pb_sets, pb_ways: prefetch buffer (32 = 4 x 8, the Gaze copy).

  Returns:
    A `protocol.Prefetcher` named ``"pmp"`` (``self_masking``); params from
    ``make_params(region_blocks=64, l1_pct=50, l2_pct=15, counter_max=32)``.

  Raises:
    TypeError, ValueError: a non-int, non-positive or non-power-of-two size.
  """
  cfg = PMPConfig(
      ft_sets=_check_pow2("ft_sets", ft_sets), ft_ways=_check_int("ft_ways", ft_ways, 1),
      at_sets=_check_pow2("at_sets", at_sets), at_ways=_check_int("at_ways", at_ways, 1),
      pb_sets=_check_pow2("pb_sets", pb_sets), pb_ways=_check_int("pb_ways", pb_ways, 1),
      num_candidates=_check_int("num_candidates", num_candidates, 1, 2 * (MAX_OFFSETS - 1)))
  return Prefetcher(name="pmp", num_candidates=cfg.num_candidates, make_params=make_params,
                    init=functools.partial(_init, cfg), train=_train,
                    issue=functools.partial(_issue, cfg), self_masking=True)


def storage_bits(*, ft_sets: int = 8, ft_ways: int = 8, at_sets: int = 2, at_ways: int = 16,
                 pb_sets: int = 4, pb_ways: int = 8, region_blocks: int = 64,
                 address_bits: int = 48) -> dict[str, int]:
  """Bits of state per table, and ``total``, for a physical address of `address_bits`.

  Per entry: a region tag of ``address_bits - 6 - log2(region_blocks) - log2(sets)``
  bits, LRU bits ``log2(ways)``; FT: tag, 6-bit trigger, 5-bit PC hash, LRU;
  AT: the same plus a footprint of region_blocks bits; OPT 64 x 64 x 5; PPT
  32 x 32 x 5; PB: tag, 2 bits per offset, LRU.
  """
  region_blocks = _check_pow2("region_blocks", region_blocks, 2, MAX_OFFSETS)
  rbits = region_blocks.bit_length() - 1
  region_tag = _check_int("address_bits", address_bits, 20, 64) - 6 - rbits

  def lg(n):
    return max(int(n).bit_length() - 1, 0)

  ft = ft_sets * ft_ways * (region_tag - lg(ft_sets) + 6 + 5 + lg(ft_ways))
  at = at_sets * at_ways * (region_tag - lg(at_sets) + 6 + 5 + region_blocks + lg(at_ways))
  opt = MAX_OFFSETS * MAX_OFFSETS * 5
  ppt = PPT_ROWS * PPT_COLS * 5
  pb = pb_sets * pb_ways * (region_tag - lg(pb_sets) + 2 * region_blocks + lg(pb_ways))
  out = {"ft": ft, "at": at, "opt": opt, "ppt": ppt, "pb": pb}
  out["total"] = sum(out.values())
  return out
