"""Gaze (Chen et al., arXiv 2412.05211, HPCA 2025): a spatial prefetcher keyed by the
first two accesses of a region, as a `jaxsys.sims.cache.protocol.Prefetcher`.

The mechanism follows the authors' artifact (``papers/prefetch.md`` 1.1); every
table is a fixed-size int32 array, allocated at its maximum (``max_pt_entries``,
``max_region_blocks``) and masked by the traced params, so one compiled program
serves a whole sweep of PT sizes, region sizes, stride degrees and SS on/off.

**Geometry.** ``R = region_blocks`` (a power of two, default 64: 4 KiB regions of
64-byte blocks); block b is region ``r = b >> log2 R``, offset ``o = b & (R-1)``.

**Tables** (sizes of the artifact; only the PT and the region size vary):

* FT, filter table: 64 entries, 8 sets x 8 ways, SRRIP (2-bit: insert 2, hit 0,
  victim = first invalid way, else the first way at 3 after ageing the set).
  Set = XOR of the region number's 3-bit chunks (`fold_set`). Entry: region,
  trigger offset, PC.
* AT, accumulation table: 64 entries, 8 x 8, LRU, same set index. Entry:
  region, trigger, second offset, PC, footprint (R bits), last offset, last
  stride, flags ``missed_in_pt`` and ``con``. (The artifact's per-offset order
  stamps are never read, so they are not kept.)
* PT, pattern table: ``pt_entries`` (default 256) as ``pt_entries / 4`` sets x 4
  ways, LRU. Key ``k = second * R + trigger``; set ``k & (sets - 1)``, tag
  ``k >> log2(sets)``: with R = 64 and 64 sets, set = trigger offset and tag =
  second offset, as in the artifact. Payload: the trained footprint (1 bit per
  offset: training stores footprints, so the PT's levels are always "L1D").
* PB, prefetch buffer: 32 entries, 4 sets (``r & 3``) x 8 ways, LRU. Per offset
  a 2-bit fill level (0 nothing, 1 L1D, 2 L2) and a 2-bit source tag (0 stride,
  1 PT, 2 SS bulk, 3 promote; the artifact's prefetch metadata, used here only
  for the ``issued_*`` statistics).
* SS, the spatial-streaming module: ``con_counter`` in 0..8 and a deque of the
  8 newest 6-bit PC hashes (PC bits [13:8]) of fully accessed streaming regions.

**One L1D demand load**, block b (region r, offset o, PC p); nothing else is
seen (stores and padding leave the state unchanged):

1. *r in AT*: LRU touch; if o is new to the footprint: set it, ``stride = o -
   last_offset``; the stride engine is armed when the region is flagged
   ``missed_in_pt`` or ``con`` and ``stride == last_stride``; then ``last_offset,
   last_stride = o, stride``. Armed: the targets ``o + (lookahead + i) * stride``,
   i = 1..degree (default lookahead 2, degree 4: +3s..+6s), inside the region and
   not in the footprint, are merged into r's PB entry (allocated if absent) as
   L1D fills, source "promote" for a ``con`` region else "stride" (an offset
   pending as L2, or already issued, becomes an L1D fill again: SS stage 2).
2. *else r not in FT*: insert (r, trigger = o, p). Nothing is prefetched.
   (*r in FT with o = trigger*: SRRIP hit, nothing else.)
3. *else, the second distinct offset s = o* (trigger t):
   * ``ss_enabled`` and (t, s) = (0, 1): the SS module, no PT lookup. With the
     trigger's PC hash h: if ``con_counter == 8`` or h is in the deque, offsets
     0..15 into L1D and 16..R-1 into L2; elif ``con_counter > 2``, offsets 0..15
     into L2; either way the region gets ``con``. Otherwise nothing, and the
     region gets ``missed_in_pt`` (the stride engine is its fallback) [I].
   * otherwise a PT lookup of (t, s): a hit needs the tag and a pattern with a
     bit besides t and s (else a miss, as in the artifact); a hit touches the
     PT LRU and its pattern goes to the PB (L1D fills); a miss flags
     ``missed_in_pt``.
   * A non-empty pattern (t and s removed) replaces r's PB entry (or takes the
     PB LRU victim). The region moves from FT to AT (footprint {t, s}, last
     offset s, last stride s - t). If that evicts a valid AT entry (LRU), it
     *trains*: a victim keyed (0, 1) (with SS on) trains the SS module: a full
     footprint (all R blocks) does ``con_counter = min(8, +1)`` and pushes its PC
     hash; otherwise ``con_counter <= 2`` decrements it (not below 0) and a larger
     counter is left alone in ``mode="artifact"`` (the artifact's no-op
     ``con_counter >> 1``) or halved in ``mode="fixed"``. Any other victim writes
     its footprint into the PT entry of its key, overwriting it (no confidence,
     no merging; a new key takes the set's LRU victim).
4. *Drain*: if r has a PB entry (LRU touch), its pending offsets in the order
   o+1, o+2, ... (mod R; o itself last) are the candidates, the first K; the
   cache takes the first ``budget`` (`protocol`'s rule: the artifact's ``PQ +
   MSHR < MSHR - 1`` and PQ-not-full gate), those are cleared, and an entry with
   nothing left pending is erased. Level 1 fills L1D, level 2 fills L2.

**Modes.** ``"artifact"`` keeps the quirks: training only on AT capacity
eviction (the artifact never calls its L1D-eviction hook), the ``con_counter
>> 1`` no-op, PT overwrite. ``"fixed"`` halves the counter; it does not add
eviction training (the `protocol` has no fill / eviction hook) nor PT merging.

**Params** (`GazeParams`, traced): ``pt_entries`` (power of two, 128 ..
``max_pt_entries``), ``region_blocks`` (power of two, 8 .. ``max_region_blocks``),
``degree`` (0..8, 0 turns the stride engine off), ``lookahead`` (0..8),
``ss_enabled`` (off: (0, 1) is an ordinary PT key, no ``con``, the ablation of
``papers/prefetch.md`` 3.4).

**State size** per config (int32): FT 64 x 4, AT 64 x (8 + Rmax), PT
``max_pt_entries`` x (2 + Rmax), PB 32 x (2 + Rmax), 26 registers; with the
defaults (Rmax = 64, max PT 1024) about 0.3 MB, with Rmax = 1024 about 4.4 MB
(a vmapped sweep holds one per config). `storage_bits` gives the hardware
budget (4.42 KiB by default vs the reported 4.46 KB).

**Statistics** (``state.stats``, names `STATS`): loads, FT inserts, PT lookups
and hits, SS lookups and bulk predictions, stride triggers, AT evictions, PT
writes, full streaming regions, PB evictions, issued prefetches by source.

>>> from jaxsys.sims.cache import hierarchy, runner
>>> pf = gaze()
>>> params = hierarchy.make_params(prefetcher=pf.make_params())
>>> trace = runner.make_trace(np.arange(64, 72, dtype=np.int32), instr=np.arange(8) * 1000)
>>> state, codes = runner.run(trace, hierarchy.CacheConfig(), params, pf)
>>> runner.decode(codes)["accepted"].tolist()  # (0, 1), counter 0: stride from the 3rd
[0, 0, 4, 4, 4, 4, 4, 4]
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxsys.sims.cache import protocol
from jaxsys.sims.cache.protocol import Access, Candidates, Prefetcher

MODES = ("artifact", "fixed")
FT_SETS, FT_WAYS = 8, 8
AT_SETS, AT_WAYS = 8, 8
PT_WAYS = 4
PB_SETS, PB_WAYS = 4, 8
DEQUE_LEN = 8
CON_MAX = 8
SS_L1_SPAN = 16
MAX_DEGREE = 8
MAX_LOOKAHEAD = 8
MIN_PT_ENTRIES = 128
MIN_REGION_BLOCKS = 8
SRC_STRIDE, SRC_PT, SRC_SS, SRC_PROMOTE = range(4)
STATS = ("loads", "ft_inserts", "pt_lookups", "pt_hits", "ss_lookups", "ss_bulk",
         "stride_triggers", "at_evictions", "pt_writes", "ss_full", "pb_evictions",
         "issued_stride", "issued_pt", "issued_ss", "issued_promote")
(S_LOADS, S_FT_INSERTS, S_PT_LOOKUPS, S_PT_HITS, S_SS_LOOKUPS, S_SS_BULK, S_STRIDE_TRIGGERS,
 S_AT_EVICTIONS, S_PT_WRITES, S_SS_FULL, S_PB_EVICTIONS, S_ISSUED) = range(12)

# Row fields. FT [8, 8, 4]; AT [8, 8, 8 + Rmax] (then the footprint, 0/1);
# PT [S, 4, 2 + Rmax] (then the pattern, 0/1); PB [4, 8, 2 + Rmax] (then per
# offset level | source << 2).
FT_TAG, FT_TRIG, FT_PC, FT_RRPV = range(4)
AT_TAG, AT_TRIG, AT_SECOND, AT_PC, AT_LAST_OFF, AT_LAST_STRIDE, AT_FLAGS, AT_LRU = range(8)
AT_FIELDS = 8
X_TAG, X_LRU = range(2)  # PT and PB
X_FIELDS = 2
MISSED, CON = 1, 2  # AT flags
# Registers: tick (L1D loads seen), con_counter, deque [8] (newest first, -1 empty), stats.
R_TICK, R_CON, R_DEQUE = 0, 1, 2
R_STATS = R_DEQUE + DEQUE_LEN
NUM_REGS = R_STATS + len(STATS)


class GazeParams(NamedTuple):
  """What a sweep varies (numpy scalars from `make_params`; traced under jit)."""

  pt_entries: Any  # [] int32 PT entries (4 ways), power of two, 128..max_pt_entries
  region_blocks: Any  # [] int32 blocks per region, power of two, 8..max_region_blocks
  degree: Any  # [] int32 stride-engine degree, 0..8 (0: off)
  lookahead: Any  # [] int32 stride-engine lookahead, 0..8
  ss_enabled: Any  # [] bool the streaming module


class GazeState(NamedTuple):
  """Gaze's tables (see the module docstring for the fields)."""

  ft: jax.Array  # [8, 8, 4] int32 (region | -1, trigger, pc, rrpv)
  at: jax.Array  # [8, 8, 8 + Rmax] int32 (region | -1, trigger, second, pc, last off, last stride, flags, lru, footprint...)
  pt: jax.Array  # [max_pt_entries / 4, 4, 2 + Rmax] int32 (tag | -1, lru, pattern bits...)
  pb: jax.Array  # [4, 8, 2 + Rmax] int32 (region | -1, lru, level | source << 2 per offset...)
  regs: jax.Array  # [NUM_REGS] int32 tick, con_counter, deque [8], stats

  @property
  def con_counter(self) -> jax.Array:
    return self.regs[..., R_CON]

  @property
  def deque(self) -> jax.Array:
    return self.regs[..., R_DEQUE:R_STATS]

  @property
  def stats(self) -> jax.Array:
    return self.regs[..., R_STATS:]


def stats(state: GazeState) -> dict[str, np.ndarray]:
  """The statistics by name (numpy; a batched state keeps its leading axes)."""
  s = np.asarray(state.stats).astype(np.int64)
  return {name: s[..., i] for i, name in enumerate(STATS)}


# ----------------------------------------------------------------------------- params


def _pow2(name: str, value: Any, lo: int, hi: int, hi_name: str) -> int:
  if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
    raise TypeError(f"{name}: expected an int, given {value!r}")
  value = int(value)
  if value < 1 or value & (value - 1):
    raise ValueError(f"{name}: expected a power of two, given {value}")
  if not lo <= value <= hi:
    raise ValueError(f"{name}: expected {lo}..{hi} ({hi_name}), given {value}")
  return value


def _check_range(name: str, value: Any, lo: int, hi: int) -> int:
  if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
    raise TypeError(f"{name}: expected an int, given {value!r}")
  if not lo <= value <= hi:
    raise ValueError(f"{name}: expected {lo}..{hi}, given {value}")
  return int(value)


def _make_params(max_pt_entries: int, max_region_blocks: int, *, pt_entries: int = 256,
                 region_blocks: int = 64, degree: int = 4, lookahead: int = 2,
                 ss_enabled: bool = True) -> GazeParams:
  pt = _pow2("pt_entries", pt_entries, MIN_PT_ENTRIES, max_pt_entries,
             "the prefetcher's max_pt_entries")
  rb = _pow2("region_blocks", region_blocks, MIN_REGION_BLOCKS, max_region_blocks,
             "the prefetcher's max_region_blocks")
  degree = _check_range("degree", degree, 0, MAX_DEGREE)
  lookahead = _check_range("lookahead", lookahead, 0, MAX_LOOKAHEAD)
  if not isinstance(ss_enabled, (bool, np.bool_)):
    raise TypeError(f"ss_enabled: expected a bool, given {ss_enabled!r}")
  return GazeParams(np.int32(pt), np.int32(rb), np.int32(degree), np.int32(lookahead),
                    np.bool_(ss_enabled))


# Widths of the hardware fields (bits) for `storage_bits`.
PHYS_ADDR_BITS = 49  # the artifact keeps the low 37 bits of a 4 KiB region number
LRU_BITS_8WAY = 3


def storage_bits(pparams: GazeParams | Mapping[str, Any] | None = None,
                 **kwargs: Any) -> dict[str, int | float]:
  """The hardware budget of one configuration, per table and in total.

  Field widths (bits) with ``R = region_blocks``, ``ob = log2 R`` and the region
  number ``49 - 6 - ob`` bits wide (37 for 4 KiB regions, as in the artifact):

  * FT entry: valid 1, tag = region bits - 3 (the XOR-folded set index gives the
    3 bits back), trigger ob, PC hash 6 (only bits [13:8] are ever used),
    RRPV 2;
  * AT entry: valid 1, tag as FT, trigger ob, second ob, PC hash 6, footprint R,
    last offset ob, last stride ob + 1 (signed), flags 2, LRU 3;
  * PT entry: valid 1, tag = 2 ob - log2(sets), pattern R (1 bit per offset),
    LRU 2;
  * PB entry: valid 1, tag = region bits - 2, trigger ob, second ob, levels
    2 R, LRU 3 (the 2-bit per-offset source tags are statistics, not counted,
    as in the reported figure);
  * SS: con_counter 4, deque 8 x 6.

  Args:
    pparams: `GazeParams` (or a dict of `make_params` keywords); or keywords.

  Returns:
    ``{"ft", "at", "pt", "pb", "ss", "total"}`` in bits and ``"total_kib"``.

  >>> round(storage_bits()["total_kib"], 2)
  4.42
  """
  if pparams is None:
    pparams = dict(kwargs)
  elif kwargs:
    raise TypeError("storage_bits: give params or keywords, not both")
  if isinstance(pparams, Mapping):
    pparams = _make_params(1 << 20, 1 << 20, **pparams)
  pt_entries = int(np.asarray(pparams.pt_entries))
  R = int(np.asarray(pparams.region_blocks))
  ob = R.bit_length() - 1
  region_bits = PHYS_ADDR_BITS - 6 - ob
  pt_sets = pt_entries // PT_WAYS
  ft = FT_SETS * FT_WAYS * (1 + region_bits - 3 + ob + 6 + 2)
  at = AT_SETS * AT_WAYS * (1 + region_bits - 3 + 2 * ob + 6 + R + ob + ob + 1 + 2 + LRU_BITS_8WAY)
  pt = pt_entries * (1 + max(2 * ob - (pt_sets.bit_length() - 1), 0) + R + 2)
  pb = PB_SETS * PB_WAYS * (1 + region_bits - 2 + 2 * ob + 2 * R + LRU_BITS_8WAY)
  ss = 4 + DEQUE_LEN * 6
  total = ft + at + pt + pb + ss
  return {"ft": ft, "at": at, "pt": pt, "pb": pb, "ss": ss, "total": total,
          "total_kib": total / 8 / 1024}


# ----------------------------------------------------------------------------- state


def _init(max_pt_entries: int, max_region_blocks: int, pparams: GazeParams) -> GazeState:
  del pparams
  Rm = max_region_blocks

  def table(sets, ways, fields, tag_value=-1):
    t = np.zeros((sets, ways, fields), np.int32)
    t[..., 0] = tag_value
    return jnp.asarray(t)

  regs = np.zeros((NUM_REGS,), np.int32)
  regs[R_DEQUE:R_STATS] = -1
  return GazeState(ft=table(FT_SETS, FT_WAYS, 4), at=table(AT_SETS, AT_WAYS, AT_FIELDS + Rm),
                   pt=table(max_pt_entries // PT_WAYS, PT_WAYS, X_FIELDS + Rm),
                   pb=table(PB_SETS, PB_WAYS, X_FIELDS + Rm), regs=jnp.asarray(regs))


# ----------------------------------------------------------------------------- step


def _i32(x: Any) -> jax.Array:
  return jnp.asarray(x, jnp.int32)


def fold_set(region: jax.Array) -> jax.Array:
  """[] int32: XOR of the region number's 3-bit chunks (the FT / AT set, 8 sets)."""
  region = _i32(region)
  out = jnp.int32(0)
  for k in range(11):  # 33 bits >= the 31 of a non-negative int32
    out = out ^ ((region >> (3 * k)) & 7)
  return out


def _lru_victim(valid_W: jax.Array, lru_W: jax.Array) -> jax.Array:
  """[] int32 the first invalid way, else the smallest stamp."""
  key = jnp.where(valid_W, lru_W, jnp.int32(-(2**31)))
  return jnp.argmin(key).astype(jnp.int32)


def _first(mask_W: jax.Array) -> jax.Array:
  return jnp.argmax(mask_W).astype(jnp.int32)


def _pick(rows_WF: jax.Array, way: jax.Array) -> jax.Array:
  """[F] the row of `way` (a masked sum: one fused kernel)."""
  sel = jnp.arange(rows_WF.shape[0], dtype=jnp.int32) == way
  return jnp.sum(jnp.where(sel[:, None], rows_WF, 0), axis=0)


def _put(rows_WF: jax.Array, way: jax.Array, row_F: jax.Array, do: jax.Array) -> jax.Array:
  sel = (jnp.arange(rows_WF.shape[0], dtype=jnp.int32) == way) & do
  return jnp.where(sel[:, None], row_F[None, :], rows_WF)


def _read(table: jax.Array, index: jax.Array, opaque_one: jax.Array) -> jax.Array:
  row = jax.lax.dynamic_index_in_dim(table, index, axis=0, keepdims=False)
  return jax.lax.div(row, opaque_one)  # materialised once (hierarchy's speed note)


def _write(table: jax.Array, index: jax.Array, row: jax.Array) -> jax.Array:
  return jax.lax.dynamic_update_index_in_dim(table, row, index, axis=0)


def _issue(mode: str, Rm: int, K: int, pstate: GazeState, cache_state: Any, access: Access,
           now: jax.Array, budget: jax.Array, pp: GazeParams) -> tuple[GazeState, Candidates]:
  """Steps 1-4 of the module docstring for one access (masked by ``access.load``)."""
  del cache_state, now
  load = jnp.asarray(access.load, jnp.bool_)
  regs = pstate.regs
  opaque_one = 1 + (regs[R_TICK] < 0).astype(jnp.int32)
  R = _i32(pp.region_blocks)
  shift = jax.lax.population_count(R - 1)
  pt_sets = _i32(pp.pt_entries) // PT_WAYS
  pt_shift = jax.lax.population_count(pt_sets - 1)
  degree = _i32(pp.degree)
  lookahead = _i32(pp.lookahead)
  ss_on = jnp.asarray(pp.ss_enabled, jnp.bool_)
  block = _i32(access.block)
  pc = _i32(access.pc_hash)
  r = block >> shift
  o = block & (R - 1)
  base = block - o
  tick = regs[R_TICK]
  stamp0, stamp1 = 2 * tick, 2 * tick + 1
  off_R = jnp.arange(Rm, dtype=jnp.int32)
  in_R = off_R < R
  oh_o = off_R == o
  n_stat = len(STATS)
  inc = [jnp.int32(0)] * n_stat

  # ---- FT and AT rows (same set index).
  fa_set = fold_set(r)
  ft_W4 = _read(pstate.ft, fa_set, opaque_one)
  at_WF = _read(pstate.at, fa_set, opaque_one)
  at_hit_W = at_WF[:, AT_TAG] == r
  at_hit = load & jnp.any(at_hit_W)
  ft_hit_W = ft_W4[:, FT_TAG] == r
  ft_hit = load & ~at_hit & jnp.any(ft_hit_W)
  ft_way = _first(ft_hit_W)
  f = _pick(ft_W4, ft_way)
  case_insert = load & ~at_hit & ~ft_hit
  case_second = ft_hit & (o != f[FT_TRIG])
  case_again = ft_hit & (o == f[FT_TRIG])

  # ---- 1. AT hit: footprint, stride engine.
  at_way_hit = _first(at_hit_W)
  e = _pick(at_WF, at_way_hit)
  fp_R = e[AT_FIELDS:]
  is_new = at_hit & ~jnp.any(oh_o & (fp_R != 0))
  stride = o - e[AT_LAST_OFF]
  e_con = (e[AT_FLAGS] & CON) != 0
  armed = is_new & ((e[AT_FLAGS] & (MISSED | CON)) != 0) & (stride == e[AT_LAST_STRIDE])
  i_D = jnp.arange(1, MAX_DEGREE + 1, dtype=jnp.int32)
  tgt_D = o + (lookahead + i_D) * stride
  ok_D = armed & (i_D <= degree) & (tgt_D >= 0) & (tgt_D < R)
  hit_DR = ok_D[:, None] & (tgt_D[:, None] == off_R[None, :])
  stride_R = jnp.any(hit_DR, axis=0) & (fp_R == 0) & ~oh_o
  any_stride = jnp.any(stride_R)
  e_new = jnp.concatenate([
      e[:AT_LAST_OFF],
      jnp.where(is_new, jnp.stack([o, stride]), e[AT_LAST_OFF:AT_LAST_STRIDE + 1]),
      e[AT_FLAGS:AT_LRU], stamp0[None],
      jnp.where(oh_o, 1, fp_R)])
  inc[S_STRIDE_TRIGGERS] = any_stride.astype(jnp.int32)

  # ---- 3. second access: SS module or PT lookup.
  t = f[FT_TRIG]
  s = o
  trig_pc = f[FT_PC]
  deque = regs[R_DEQUE:R_STATS]
  cnt = regs[R_CON]
  is_ss = case_second & ss_on & (t == 0) & (s == 1)
  in_deque = jnp.any(deque == ((trig_pc >> 8) & 63))
  ss_l1 = is_ss & ((cnt == CON_MAX) | in_deque)
  ss_l2 = is_ss & ~ss_l1 & (cnt > 2)
  ss_lvl_R = jnp.where(ss_l1, jnp.where(off_R < SS_L1_SPAN, 1, 2),
                       jnp.where(ss_l2 & (off_R < SS_L1_SPAN), 2, 0))
  key = s * R + t
  p_set = key & (pt_sets - 1)
  p_tag = key >> pt_shift
  pt_A = _read(pstate.pt, p_set, opaque_one)
  match_W = pt_A[:, X_TAG] == p_tag
  p_way = _first(match_W)
  pat_R = _pick(pt_A, p_way)[X_FIELDS:]
  key_R = (off_R == t) | (off_R == s)
  pt_lookup = case_second & ~is_ss
  pt_hit = pt_lookup & jnp.any(match_W) & jnp.any((pat_R != 0) & ~key_R)
  con = ss_l1 | ss_l2
  missed = ~con & ~pt_hit
  fill_R = jnp.where(is_ss, ss_lvl_R | (SRC_SS << 2),
                     jnp.where(pt_hit & (pat_R != 0), 1 | (SRC_PT << 2), 0))
  fill_R = jnp.where(key_R | ~in_R, 0, fill_R)
  any_fill = case_second & jnp.any(fill_R != 0)
  pt_A_new = jnp.where((jnp.arange(PT_WAYS, dtype=jnp.int32) == p_way)[:, None]
                       & (np.arange(X_FIELDS + Rm) == X_LRU)[None, :] & pt_hit,
                       stamp0, pt_A)
  inc[S_PT_LOOKUPS] = pt_lookup.astype(jnp.int32)
  inc[S_PT_HITS] = pt_hit.astype(jnp.int32)
  inc[S_SS_LOOKUPS] = is_ss.astype(jnp.int32)
  inc[S_SS_BULK] = con.astype(jnp.int32)

  # AT insertion and its victim.
  at_valid_W = at_WF[:, AT_TAG] >= 0
  at_vway = _lru_victim(at_valid_W, at_WF[:, AT_LRU])
  v = _pick(at_WF, at_vway)
  evict = case_second & jnp.any(at_valid_W & (jnp.arange(AT_WAYS) == at_vway))
  flags = jnp.where(missed, MISSED, 0) | jnp.where(con, CON, 0)
  e_ins = jnp.concatenate([
      jnp.stack([r, t, s, trig_pc, s, s - t, flags, stamp0]),
      key_R.astype(jnp.int32)])
  at_way = jnp.where(at_hit, at_way_hit, at_vway)
  at_row = jnp.where(at_hit, e_new, e_ins)
  at_new = _put(at_WF, at_way, at_row, at_hit | case_second)
  inc[S_AT_EVICTIONS] = evict.astype(jnp.int32)

  # Training with the victim: SS or PT.
  v_fp_R = v[AT_FIELDS:]
  v_ss = ss_on & (v[AT_TRIG] == 0) & (v[AT_SECOND] == 1)
  full = jnp.all((v_fp_R != 0) | ~in_R)
  train_ss = evict & v_ss
  ss_full = train_ss & full
  if mode == "fixed":
    cnt_else = jnp.where(cnt <= 2, jnp.maximum(cnt - 1, 0), cnt >> 1)
  else:  # the artifact's `con_counter >> 1` assigns nothing
    cnt_else = jnp.where(cnt <= 2, jnp.maximum(cnt - 1, 0), cnt)
  cnt_new = jnp.where(train_ss, jnp.where(full, jnp.minimum(cnt + 1, CON_MAX), cnt_else), cnt)
  deque_new = jnp.where(ss_full, jnp.concatenate([((v[AT_PC] >> 8) & 63)[None], deque[:-1]]),
                        deque)
  train_pt = evict & ~v_ss
  v_key = v[AT_SECOND] * R + v[AT_TRIG]
  t_set = v_key & (pt_sets - 1)
  t_tag = v_key >> pt_shift
  # Row B is read after row A's write (one in-place chain: reading the old table
  # after its update would make XLA copy the whole PT every step).
  pt_after_A = _write(pstate.pt, p_set, pt_A_new)
  pt_B = _read(pt_after_A, t_set, opaque_one)
  t_match_W = pt_B[:, X_TAG] == t_tag
  t_way = jnp.where(jnp.any(t_match_W), _first(t_match_W),
                    _lru_victim(pt_B[:, X_TAG] >= 0, pt_B[:, X_LRU]))
  pt_row = jnp.concatenate([jnp.stack([t_tag, stamp1]), jnp.where(in_R, v_fp_R, 0)])
  pt_B_new = _put(pt_B, t_way, pt_row, train_pt)
  inc[S_PT_WRITES] = train_pt.astype(jnp.int32)
  inc[S_SS_FULL] = ss_full.astype(jnp.int32)

  # FT update.
  rrpv_W = ft_W4[:, FT_RRPV]
  ft_valid_W = ft_W4[:, FT_TAG] >= 0
  no_free = jnp.all(ft_valid_W)
  aged_W = jnp.where(no_free, rrpv_W + (3 - jnp.max(rrpv_W)), rrpv_W)
  ft_vway = jnp.where(no_free, _first(aged_W == 3), _first(~ft_valid_W))
  ft_aged = ft_W4.at[:, FT_RRPV].set(jnp.where(case_insert, aged_W, rrpv_W))
  ft_put_way = jnp.where(case_insert, ft_vway, ft_way)
  ft_put_row = jnp.where(case_insert, jnp.stack([r, o, pc, jnp.int32(2)]),
                         jnp.where(case_second, jnp.stack([jnp.int32(-1), f[1], f[2], f[3]]),
                                   f.at[FT_RRPV].set(0)))
  ft_new = _put(ft_aged, ft_put_way, ft_put_row, case_insert | case_second | case_again)
  inc[S_FT_INSERTS] = case_insert.astype(jnp.int32)

  # ---- PB: fill (3) or stride merge (1), then drain (4).
  pb_set = r & (PB_SETS - 1)
  pb_WF = _read(pstate.pb, pb_set, opaque_one)
  pb_hit_W = pb_WF[:, X_TAG] == r
  pb_hit = load & jnp.any(pb_hit_W)
  pb_valid_W = pb_WF[:, X_TAG] >= 0
  pb_vway = _lru_victim(pb_valid_W, pb_WF[:, X_LRU])
  pb_way = jnp.where(pb_hit, _first(pb_hit_W), pb_vway)
  write = any_fill | (at_hit & any_stride)
  pb_evict = write & ~pb_hit & jnp.any(pb_valid_W & (jnp.arange(PB_WAYS) == pb_vway))
  old_R = jnp.where(pb_hit, _pick(pb_WF, pb_way)[X_FIELDS:], 0)
  src = jnp.where(e_con, SRC_PROMOTE, SRC_STRIDE)
  vals_R = jnp.where(any_fill, fill_R,
                     jnp.where(at_hit & stride_R, 1 | (src << 2), old_R))
  present = pb_hit | write
  pending_R = ((vals_R & 3) != 0) & in_R & present
  # Drain rank: position in the order o+1, o+2, ... (mod R), from one cumsum.
  csum_R = jnp.cumsum(pending_R.astype(jnp.int32))
  total = csum_R[Rm - 1]
  c_o = jnp.sum(jnp.where(oh_o, csum_R, 0))
  rank_R = csum_R - pending_R.astype(jnp.int32) - c_o + jnp.where(off_R <= o, total, 0)
  k_K = jnp.arange(K, dtype=jnp.int32)
  sel_KR = pending_R[None, :] & (rank_R[None, :] == k_K[:, None])
  valid_K = jnp.any(sel_KR, axis=1)
  off_K = jnp.sum(jnp.where(sel_KR, off_R[None, :], 0), axis=1)
  lvl_K = jnp.sum(jnp.where(sel_KR, (vals_R & 3)[None, :], 0), axis=1)
  take = jnp.minimum(jnp.maximum(_i32(budget), 0), K)
  issued_R = pending_R & (rank_R < take)
  src_R = vals_R >> 2
  for k in range(4):
    inc[S_ISSUED + k] = jnp.sum((issued_R & (src_R == k)).astype(jnp.int32))
  vals_R = jnp.where(issued_R, 0, vals_R)
  left = jnp.any(pending_R & ~issued_R)
  pb_row = jnp.concatenate([jnp.stack([jnp.where(left, r, -1), stamp0]), vals_R])
  pb_new = _put(pb_WF, pb_way, pb_row, present)
  inc[S_PB_EVICTIONS] = pb_evict.astype(jnp.int32)
  inc[S_LOADS] = load.astype(jnp.int32)

  # ---- Write back (a non-load step writes its rows back unchanged).
  new_regs = jnp.concatenate([
      jnp.stack([tick + load.astype(jnp.int32), cnt_new]), deque_new,
      regs[R_STATS:] + jnp.stack(inc)])
  state = GazeState(
      ft=_write(pstate.ft, fa_set, ft_new),
      at=_write(pstate.at, fa_set, at_new),
      pt=_write(pt_after_A, t_set, pt_B_new),
      pb=_write(pstate.pb, pb_set, pb_new),
      regs=new_regs)
  cand = Candidates(block_K=base + off_K, fill_level_K=lvl_K - 1, valid_K=valid_K & load)
  return state, cand


def _train(pstate, access, hit_l1, now, pparams):
  """Nothing: `issue` runs steps 1-4 together (one read and write of each row)."""
  del access, hit_l1, now, pparams
  return pstate


def gaze(mode: str = "artifact", max_pt_entries: int = 1024, max_region_blocks: int = 64,
         max_candidates: int = 16) -> Prefetcher:
  """The Gaze prefetcher (static shapes; cached, so equal arguments share compiled code).

  Args:
    mode: ``"artifact"`` (the authors' code, quirks kept) or ``"fixed"``
      (``con_counter`` halves; see the module docstring).
    max_pt_entries: the largest ``pt_entries`` a params sweep may use (power of
      two >= 128); the PT is allocated at this size.
    max_region_blocks: the largest ``region_blocks`` (power of two >= 8; 1024
      for 64 KiB regions); every per-offset table row has this many slots.
    max_candidates: K, the most prefetches one access may issue (the cache's
      budget is at most ``min(MSHR - 1, PQ)`` = 15 by default).

  Returns:
    A `protocol.Prefetcher`; ``make_params(pt_entries=256, region_blocks=64,
    degree=4, lookahead=2, ss_enabled=True)`` builds its `GazeParams`.

  >>> pf = gaze("fixed", max_region_blocks=1024)
  >>> int(pf.make_params(region_blocks=1024).region_blocks)
  1024
  """
  if mode not in MODES:
    raise ValueError(f"mode: expected one of {', '.join(map(repr, MODES))}, given {mode!r}")
  _pow2("max_pt_entries", max_pt_entries, MIN_PT_ENTRIES, 1 << 16, "PT sizes")
  _pow2("max_region_blocks", max_region_blocks, MIN_REGION_BLOCKS, 1 << 14, "region sizes")
  if isinstance(max_candidates, bool) or not isinstance(max_candidates, (int, np.integer)):
    raise TypeError(f"max_candidates: expected an int, given {max_candidates!r}")
  if max_candidates < 1:
    raise ValueError(f"max_candidates: expected an int >= 1, given {max_candidates}")
  return _gaze(mode, int(max_pt_entries), int(max_region_blocks), int(max_candidates))


@functools.lru_cache(maxsize=None)
def _gaze(mode: str, max_pt_entries: int, max_region_blocks: int,
          max_candidates: int) -> Prefetcher:
  return Prefetcher(
      name=f"gaze_{mode}_pt{max_pt_entries}_r{max_region_blocks}_k{max_candidates}",
      num_candidates=max_candidates,
      make_params=functools.partial(_make_params, max_pt_entries, max_region_blocks),
      init=functools.partial(_init, max_pt_entries, max_region_blocks),
      train=_train,
      issue=functools.partial(_issue, mode, max_region_blocks, max_candidates),
      self_masking=True,
  )
