"""DSPatch, the Dual Spatial Pattern Prefetcher (Bera, Nori, Mutlu, Subramoney, MICRO'19).

An L1D prefetcher trained on L1D demand loads (``access.load``). Sizes as in
the Gaze artifact's copy (``papers/prefetch.md`` 1.2: "2 KB region, SPT 256,
PB 64"). The mechanism below is this module's exact specification;
`dspatch_reference.DSPatch` implements it again in plain Python and the tests
hold this code to it, event for event, inside the cache runner.

**Regions and patterns.** ``R = region_blocks`` blocks (static; 32 = 2 KiB,
the default). Block b is in region ``r = b >> log2 R`` at offset
``o = b & (R - 1)``. A *pattern* is an R-bit mask, bit i for offset i. A
pattern **anchored** to a trigger offset t is the region's footprint F rotated
right by t: ``P[i] = F[(t + i) mod R]``, so ``P[0]`` is the trigger itself and
every footprint with the same shape relative to its trigger gives the same P.
Patterns in the SPT are kept at a **granularity** of ``g`` blocks
(``granularity``, a traced power of two 1..R; 2 = 128 B, the paper's
compression (16 bits per 2 KiB), the default): ``expand_g(P)`` sets every block of each aligned
group of g anchored offsets ``[k g, (k + 1) g)`` whose group holds any bit of
P. (Stored expanded; a hardware table holds R / g bits, `storage_bits`.)

**Tables.**

* **PB** (page buffer): ``pb_entries`` entries (64), fully associative, one
  per active region: (region, trigger PC, trigger offset t, footprint F,
  pending offsets). Replacement (``pb_replacement``): ``"fifo"`` (default,
  the authors' code: the oldest inserted) or ``"lru"`` (the least recently
  accessed); an empty entry is taken first.
* **SPT** (signature prediction table): ``spt_entries`` rows (256),
  direct-mapped and tagless, indexed by the trigger PC:
  ``spt_index(p) = (p ^ (p >> 8) ^ (p >> 16)) & (spt_entries - 1)``. A row
  holds CovP C and AccP A (anchored, expanded at g) and three 2-bit
  saturating counters (0..3): MeasureCovP ``mc``, MeasureAccP ``ma``, OrCount
  ``oc``. All zero at start.
* **Bandwidth quartile** q (0..3), this prefetcher's own estimate (the cache
  state has no DRAM-bandwidth signal). Cycles are cut into windows of
  ``bw_window`` cycles (``w = now // bw_window``); the prefetcher counts the
  DRAM block transfers it sees in its window: each L1D demand load served by
  DRAM (``access.level == 3``) and each prefetch the cache accepted from it
  (whatever level it then found the block at; an upper estimate of its DRAM
  reads; stores and other traffic are not seen). On the first load of a new
  window, ``q = min(3, 4 n // bw_peak)`` with n the count of the window just
  ended (``q = 0`` if one or more windows passed without a load), then n
  restarts at 0. ``bw_peak`` is the DRAM's peak in blocks per window (default
  102: 25.6 GB/s, the Gaze artifact's one 3200 MT/s channel, at 4 GHz is 0.1
  block per cycle, times 1024 cycles). So q = 0, 1, 2, 3 means the last
  window used < 25 %, < 50 %, < 75 %, >= 75 % of the peak. q starts at 0.

**Per L1D demand load** (block b, PC p, region r, offset o, cycle ``now``):

1. roll the bandwidth window (above), then count the load if it went to DRAM;
2. r in PB (**hit**): set bit o of its footprint and clear o from its pending
   offsets (the demand covers it); with ``"lru"`` it becomes most recent;
3. r not in PB (**trigger**, the first access to a region): if the PB is full
   its victim is evicted and **trains** the SPT (below, with the current q);
   then **predict** from row ``spt_index(p)`` (after that training, if it is
   the same row): choose the pattern S by q and the goodness counters:

   * q <= 1: ``S = C`` (coverage-biased);
   * q == 2: ``S = A`` if ``mc == 3`` (CovP judged bad), else ``S = C``;
   * q == 3: nothing if ``ma == 3`` (AccP judged bad too), else ``S = A``;

   rotate S back to the trigger, ``pred[x] = S[(x - o) mod R]``, and insert
   (r, p, o, footprint {o}, pending ``pred`` without o) into the PB;
4. **drain** the region's pending offsets nearest-first from o (``o+1, o-1,
   o+2, o-2, ...``, the higher one first on equal distance, inside the
   region): the K = R - 1 candidates, fill level ``fill_level`` (L1D by
   default). The cache accepts the first ``budget``; those are cleared and
   counted in the window; the rest wait in the PB entry for the region's next
   load (or are dropped with the entry).

**Training** (a PB victim with trigger PC p, offset t, footprint F; row
``spt_index(p)`` holding C, A, mc, ma, oc): with ``P`` the anchored footprint
and ``Pg = expand_g(P)``, and ``|x|`` the number of set bits, measured on the
old patterns without the trigger's own bit 0 (never prefetched):
``real = P & ~1``, ``Cp = C & ~1``, ``Ap = A & ~1``,
``hc = |real & Cp|``, ``ha = |real & Ap|``. A ratio with a zero denominator
is never "below" a threshold.

* **MeasureCovP**: ``mc += 1`` (saturating at 3) if CovP's accuracy
  ``hc / |Cp|`` is below ``acc_thr`` % or its coverage ``hc / |real|`` is below
  ``cov_thr`` %.
* **OrCount**: ``oc += 1`` (saturating) if Pg adds bits to C (``Pg & ~C``).
* **CovP**: if ``mc == 3`` (after the update) and (q == 3 or the coverage is
  below 50 %), CovP is **reset**: ``C = Pg``, ``mc = oc = 0``; otherwise
  ``C = C | Pg`` (the OR of the footprints: coverage-biased).
* **MeasureAccP**: if ``|Ap| > 0``: ``ma += 1`` (saturating at 3) if AccP's
  accuracy ``ha / |Ap|`` is below 50 %, else ``ma -= 1`` (down to 0).
* **AccP**: ``A = Pg & C_old`` (C before this update: the blocks this
  footprint shares with the union of the earlier ones, an AND over
  generations: accuracy-biased).

**Simplified or left out versus the paper, and why.**

* *2 KiB regions with one trigger each.* The paper's PB tracks 4 KiB pages,
  and its SPT rows hold one (CovP, AccP, counters) set per 2 KiB half (as we
  read its 2.375 KB SPT: 256 rows x 2 x (16 + 16 + 3 x 2) bits); here a region
  is one 2 KiB half with its own trigger and an SPT row holds one set (half
  the paper's SPT bits), as in the Gaze copy's 2 KB region.
* *Generations end on PB eviction only*: the prefetcher protocol has no
  cache-eviction hook, so a region trains the SPT when the PB evicts it (the
  authors' code does the same); regions still in the PB at the end of a trace
  never train.
* *Bandwidth*: the paper reads the DRAM controller's utilisation; this
  simulator models no DRAM bandwidth, so the prefetcher estimates it from the
  DRAM transfers it sees (above) against a configurable peak.
* *Refused prefetches* wait in their PB entry (drained on the region's later
  loads), not in a separate prefetch queue (the authors' code buffers
  addresses in a 256-entry queue, 8 per access); the pending mask is counted
  in `storage_bits`.
* *Counters*: the descriptions checked (the paper's counter rules as quoted
  by readers of it, the authors' public code) give MeasureCovP no way down
  (the code never lowers it); here it restarts at 0 with a CovP reset.
  OrCount is kept (and counted in storage) but no decision reads it (nor does
  the authors' code). The thresholds ``acc_thr`` / ``cov_thr`` default to
  50 % each (traced params; the authors' public code uses 75 / 25).
* *Measures* count blocks of the expanded patterns against the footprint,
  leaving out the trigger block (never prefetched); the authors' code also
  counts positions where both are 0 as matches, which we take for a slip.
* *AccP* ANDs the footprint with CovP as it was **before** this update; the
  authors' public code ANDs with the updated CovP, which always contains the
  footprint, so its AccP is just the last footprint. That code also drops
  every AccP prediction at quartile >= 2 (a throttle the paper's selection
  does not have); not modelled.
* *No cross-region or cross-page prefetches*: candidates stay in the trigger's
  region, like the rotation itself.

All tables are allocated at the factory's maxima; ``pb_entries`` /
``spt_entries`` params (traced, like every other param: a sweep needs no
recompile) use part of them.

>>> pf = dspatch(pb_entries=8, spt_entries=16)
>>> pf.name, pf.num_candidates, pf.self_masking
('dspatch', 31, True)
>>> p = pf.make_params(granularity=1, bw_window=256, bw_peak=16)
>>> int(p.spt_entries), int(p.granularity), int(p.fill_level)
(16, 1, 0)
>>> storage_bits()["total"]       # 2.13 KiB (the paper: 3.6 KB for 4 KiB pages)
17427
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxsys.sims.cache import hierarchy
from jaxsys.sims.cache import protocol
from jaxsys.sims.cache.protocol import Access, Candidates, Prefetcher

from ._checks import check_int as _check_int
from ._checks import check_pow2 as _check_pow2

INT32_MAX = protocol.INT32_MAX
COUNTER_MAX = 3  # 2-bit goodness counters
REPLACEMENTS = ("fifo", "lru")

# PB fields (stamp -1: an empty entry).
STAMP, REGION, TPC, TOFF, FOOT, PEND = range(6)
PB_FIELDS = 6
# SPT fields.
COVP, ACCP, MCOV, MACC, ORC = range(5)
SPT_FIELDS = 5
# Scalars, one vector.
STATS = ("tick", "window", "window_blocks", "quartile", "triggers", "covp", "accp", "off",
         "trainings", "covp_resets", "issued")
(S_TICK, S_WINDOW, S_WINDOW_BLOCKS, S_QUARTILE, S_TRIGGERS, S_COVP, S_ACCP, S_OFF,
 S_TRAININGS, S_COVP_RESETS, S_ISSUED) = range(len(STATS))
_COUNT_CAP = 1 << 28  # the window count saturates here (4 * count stays in int32)


class Dims(NamedTuple):
  """Static sizes (the allocated tables)."""

  region_blocks: int
  pb_entries: int
  spt_entries: int


class DSPatchParams(NamedTuple):
  pb_entries: Any  # [] int32 1..Dims.pb_entries
  spt_entries: Any  # [] int32 power of two <= Dims.spt_entries
  granularity: Any  # [] int32 blocks per SPT pattern bit, power of two 1..R
  fill_level: Any  # [] int32 0 L1D, 1 L2, 2 LLC
  acc_thr: Any  # [] int32 CovP accuracy threshold, percent
  cov_thr: Any  # [] int32 CovP coverage threshold, percent
  bw_window: Any  # [] int32 cycles per bandwidth window
  bw_peak: Any  # [] int32 DRAM peak, blocks per window
  pb_lru: Any  # [] bool PB replacement: True LRU, False FIFO


class DSPatchState(NamedTuple):
  pb: jax.Array  # [P, 6] int32 (stamp, region, trigger pc, trigger offset, footprint, pending)
  spt: jax.Array  # [S, 5] int32 (CovP, AccP, MeasureCovP, MeasureAccP, OrCount)
  stats: jax.Array  # [11] int32 `STATS`: loads seen (the stamp clock), bandwidth window id,
  #                   its DRAM blocks, quartile, triggers, CovP / AccP / no-prefetch choices,
  #                   SPT trainings, CovP resets, accepted candidates


# ----------------------------------------------------------------------------- checks


def make_dims(*, region_blocks: int, pb_entries: int, spt_entries: int) -> Dims:
  return Dims(
      _check_pow2("region_blocks", region_blocks, 2, 32, " (an int32 footprint)"),
      _check_int("pb_entries", pb_entries, 1, 4096),
      _check_pow2("spt_entries", spt_entries, 1, 1 << 20, " (the SPT index is the low bits)"))


def _make_params(dims: Dims, *, pb_entries: int | None = None, spt_entries: int | None = None,
                 granularity: int = 2, fill_level: str | int = "l1d", acc_thr: int = 50,
                 cov_thr: int = 50, bw_window: int = 1024, bw_peak: int = 102,
                 pb_replacement: str = "fifo") -> DSPatchParams:
  pb = dims.pb_entries if pb_entries is None else pb_entries
  pb = _check_int("pb_entries", pb, 1, dims.pb_entries, " (the allocated page buffer)")
  spt = dims.spt_entries if spt_entries is None else spt_entries
  spt = _check_pow2("spt_entries", spt, 1, dims.spt_entries, " (the allocated SPT)")
  g = _check_pow2("granularity", granularity, 1, dims.region_blocks,
                  " (blocks per pattern bit, at most region_blocks)")
  level = hierarchy.level_index(fill_level, name="fill_level")
  acc = _check_int("acc_thr", acc_thr, 0, 100, " (percent)")
  cov = _check_int("cov_thr", cov_thr, 0, 100, " (percent)")
  window = _check_int("bw_window", bw_window, 1, hierarchy.MAX_CYCLE, " (cycles)")
  peak = _check_int("bw_peak", bw_peak, 1, 1 << 24, " (blocks per window)")
  if pb_replacement not in REPLACEMENTS:
    raise ValueError(f"pb_replacement: expected one of {', '.join(map(repr, REPLACEMENTS))},"
                     f" given {pb_replacement!r}")
  return DSPatchParams(np.int32(pb), np.int32(spt), np.int32(g), np.int32(level), np.int32(acc),
                       np.int32(cov), np.int32(window), np.int32(peak),
                       np.bool_(pb_replacement == "lru"))


def _init(dims: Dims, pparams: Any) -> DSPatchState:
  del pparams
  pb = np.zeros((dims.pb_entries, PB_FIELDS), np.int32)
  pb[:, STAMP] = -1
  return DSPatchState(jnp.asarray(pb), jnp.zeros((dims.spt_entries, SPT_FIELDS), jnp.int32),
                      jnp.zeros((len(STATS),), jnp.int32))


# ----------------------------------------------------------------------------- bits


def spt_index(pc: Any, entries: Any) -> Any:
  """SPT row of a (hashed) PC; the same formula on JAX int32 and Python ints >= 0."""
  return (pc ^ (pc >> 8) ^ (pc >> 16)) & (entries - 1)


def _srl(x: jax.Array, s: Any) -> jax.Array:
  return jax.lax.shift_right_logical(x, jnp.asarray(s, jnp.int32))


def _mask(R: int) -> int:
  return -1 if R == 32 else (1 << R) - 1


def _rotr(x: jax.Array, t: jax.Array, R: int) -> jax.Array:
  """Rotates the R-bit pattern x right by t (0 <= t < R): bit (t + i) mod R -> bit i."""
  rot = (_srl(x, t) | jnp.left_shift(x, (R - t) & (R - 1))) & _mask(R)
  return jnp.where(t == 0, x, rot)


def _expand(x: jax.Array, g: jax.Array, R: int) -> jax.Array:
  """Every aligned group of g bits all set if any is (g a power of two <= R)."""
  for s, m in ((1, 0x55555555), (2, 0x33333333), (4, 0x0F0F0F0F), (8, 0x00FF00FF),
               (16, 0x0000FFFF)):
    if s >= R:
      break
    merged = x | jnp.left_shift(x & m, s) | (_srl(x, s) & m)
    x = jnp.where(s < g, merged, x)
  return x


def _popcount(x: jax.Array) -> jax.Array:
  return jax.lax.population_count(x)


def _nearest_first(c: jax.Array, R: int) -> jax.Array:
  """[R - 1] int32 the region offsets other than c, nearest first (c+1, c-1, c+2, ...)."""
  i_K = jnp.arange(R - 1, dtype=jnp.int32)
  m = jnp.minimum(c, R - 1 - c)  # offsets on both sides up to distance m
  both = i_K < 2 * m
  d_K = jnp.where(both, (i_K >> 1) + 1, i_K - m + 1)
  up_K = jnp.where(both, (i_K & 1) == 0, R - 1 - c > c)
  return jnp.where(up_K, c + d_K, c - d_K)


def _or_reduce(x: jax.Array) -> jax.Array:
  return jax.lax.reduce(x, np.int32(0), jax.lax.bitwise_or, (0,))


# ----------------------------------------------------------------------------- the step


def _train(pstate, access, hit_l1, now, pparams):
  """All the work is in `issue` (which knows the budget)."""
  del access, hit_l1, now, pparams
  return pstate


def _issue(dims: Dims, pstate: DSPatchState, cache_state, access: Access, now, budget,
           p: DSPatchParams):
  del cache_state
  R = dims.region_blocks
  rbits = R.bit_length() - 1
  i32 = functools.partial(jnp.asarray, dtype=jnp.int32)
  load = jnp.asarray(access.load, jnp.bool_)
  b = i32(access.block)
  pc = i32(access.pc_hash)
  now = i32(now)
  r = b >> rbits
  o = b & (R - 1)
  bit_o = jnp.left_shift(jnp.int32(1), o)
  g = i32(p.granularity)
  stats = pstate.stats
  tick = stats[S_TICK]
  one = 1 + (tick < 0).astype(jnp.int32)

  # ---- Bandwidth window: roll, then count this demand if DRAM served it.
  window = jax.lax.div(now, i32(p.bw_window))  # now >= 0: truncation = floor
  old_window = stats[S_WINDOW]
  count = stats[S_WINDOW_BLOCKS]
  rolled = window != old_window
  ended_q = jnp.minimum(3, jax.lax.div(4 * count, i32(p.bw_peak)))
  q = jnp.where(rolled, jnp.where(window == old_window + 1, ended_q, 0), stats[S_QUARTILE])
  count = jnp.where(rolled, 0, count) + (i32(access.level) == hierarchy.DRAM).astype(jnp.int32)

  # ---- PB lookup: the region's entry, or a victim for the trigger.
  pb = pstate.pb
  P = dims.pb_entries
  use_P = jnp.arange(P, dtype=jnp.int32) < i32(p.pb_entries)
  hit_P = use_P & (pb[:, STAMP] >= 0) & (pb[:, REGION] == r)
  hit = jnp.any(hit_P)
  trigger = ~hit
  victim = jnp.argmin(jnp.where(use_P, pb[:, STAMP], INT32_MAX))
  way = jnp.where(hit, jnp.argmax(hit_P), victim).astype(jnp.int32)
  old_F = jax.lax.div(jax.lax.dynamic_index_in_dim(pb, way, axis=0, keepdims=False), one)
  evict = trigger & (old_F[STAMP] >= 0)

  # ---- Training with the evicted generation.
  # Both SPT rows (the victim's, the trigger's) in one read, so that every read of the
  # table precedes its one in-place write (XLA would otherwise copy the table).
  spt_n = i32(p.spt_entries)
  t_idx = spt_index(old_F[TPC], spt_n)
  p_idx = spt_index(pc, spt_n)
  rows_2F = jax.lax.div(jnp.take(pstate.spt, jnp.stack([t_idx, p_idx]), axis=0,
                                 mode="clip"), one)
  row_t = rows_2F[0]
  C, A, mc, ma, oc = (row_t[COVP], row_t[ACCP], row_t[MCOV], row_t[MACC], row_t[ORC])
  anchored = _rotr(old_F[FOOT], old_F[TOFF], R)
  Pg = _expand(anchored, g, R)
  real = anchored & ~1
  pred_c = C & ~1
  pred_a = A & ~1
  hc = _popcount(real & pred_c)
  ha = _popcount(real & pred_a)
  n_real = _popcount(real)
  n_c = _popcount(pred_c)
  n_a = _popcount(pred_a)
  cov_low = 100 * hc < i32(p.cov_thr) * n_real
  covp_bad = (100 * hc < i32(p.acc_thr) * n_c) | cov_low
  mc1 = jnp.where(covp_bad, jnp.minimum(mc + 1, COUNTER_MAX), mc)
  oc1 = jnp.where((Pg & ~C) != 0, jnp.minimum(oc + 1, COUNTER_MAX), oc)
  reset = (mc1 == COUNTER_MAX) & ((q == 3) | (2 * hc < n_real))
  accp_bad = 2 * ha < n_a
  ma1 = jnp.where(n_a > 0,
                  jnp.where(accp_bad, jnp.minimum(ma + 1, COUNTER_MAX), jnp.maximum(ma - 1, 0)),
                  ma)
  trained = jnp.stack([jnp.where(reset, Pg, C | Pg), Pg & C, jnp.where(reset, 0, mc1), ma1,
                       jnp.where(reset, 0, oc1)])
  train = load & evict
  new_t = jnp.where(train, trained, row_t)

  # ---- Prediction on a trigger (from the row as trained this step).
  row_p = jnp.where(train & (p_idx == t_idx), trained, rows_2F[1])
  pmc = row_p[MCOV]
  pma = row_p[MACC]
  off = (q == 3) & (pma == COUNTER_MAX)
  use_acc = ((q == 3) & ~off) | ((q == 2) & (pmc == COUNTER_MAX))
  use_cov = ~use_acc & ~off
  pattern = jnp.where(use_cov, row_p[COVP], jnp.where(use_acc, row_p[ACCP], 0))
  pred = _rotr(pattern, (R - o) & (R - 1), R)  # rotate left by o

  # ---- Pending offsets, drained nearest-first.
  pending = jnp.where(hit, old_F[PEND], pred) & ~bit_o
  off_K = _nearest_first(o, R)
  bit_K = jnp.left_shift(jnp.int32(1), off_K)
  valid_K = load & ((pending & bit_K) != 0)
  taken_K = protocol.accepted_mask(valid_K, budget)
  pending = pending & ~_or_reduce(jnp.where(taken_K, bit_K, 0))
  issued = jnp.sum(taken_K.astype(jnp.int32))

  lru = jnp.asarray(p.pb_lru, jnp.bool_)
  new_F = jnp.where(
      hit,
      jnp.stack([jnp.where(lru, tick, old_F[STAMP]), r, old_F[TPC], old_F[TOFF],
                 old_F[FOOT] | bit_o, pending]),
      jnp.stack([tick, r, pc, o, bit_o, pending]))
  new_F = jnp.where(load, new_F, old_F)

  # The stats vector in one elementwise expression (one kernel, not one per scalar).
  look = load & trigger
  pos = jnp.arange(len(STATS), dtype=jnp.int32)
  new_stats = stats + (pos >= S_TRIGGERS).astype(jnp.int32) * jnp.where(
      pos == S_TRIGGERS, look.astype(jnp.int32),
      jnp.where(pos == S_COVP, (look & use_cov).astype(jnp.int32),
      jnp.where(pos == S_ACCP, (look & use_acc).astype(jnp.int32),
      jnp.where(pos == S_OFF, (look & off).astype(jnp.int32),
      jnp.where(pos == S_TRAININGS, train.astype(jnp.int32),
      jnp.where(pos == S_COVP_RESETS, (train & reset).astype(jnp.int32), issued))))))
  new_stats = jnp.where(pos == S_TICK, tick + 1, new_stats)
  new_stats = jnp.where(pos == S_WINDOW, window, new_stats)
  new_stats = jnp.where(pos == S_WINDOW_BLOCKS, jnp.minimum(count + issued, _COUNT_CAP),
                        new_stats)
  new_stats = jnp.where(pos == S_QUARTILE, q, new_stats)
  new = DSPatchState(
      jax.lax.dynamic_update_index_in_dim(pb, new_F, way, axis=0),
      jax.lax.dynamic_update_index_in_dim(pstate.spt, new_t, t_idx, axis=0),
      jnp.where(load, new_stats, stats))
  cand = Candidates((r << rbits) + off_K, jnp.broadcast_to(i32(p.fill_level), (R - 1,)), valid_K)
  return new, cand


# ----------------------------------------------------------------------------- factory


@functools.lru_cache(maxsize=None)
def dspatch(*, pb_entries: int = 64, spt_entries: int = 256, region_blocks: int = 32) -> Prefetcher:
  """The DSPatch prefetcher (module docstring); arguments are the allocated (maximum) sizes.

  Args:
    pb_entries: page buffer entries (default 64, fully associative).
    spt_entries: SPT rows (default 256, a power of two; direct-mapped, tagless).
    region_blocks: blocks per region, a power of two 2..32 (default 32: 2 KiB);
      K = region_blocks - 1 candidates per access.

  Params (`Prefetcher.make_params`, traced): ``pb_entries``, ``spt_entries``
  (at most the allocated sizes; default all of them), ``granularity`` (blocks
  per SPT pattern bit, a power of two 1..region_blocks, default 2 = 128 B),
  ``fill_level`` (default ``"l1d"``), ``acc_thr`` / ``cov_thr`` (CovP's
  accuracy / coverage thresholds in percent, default 50 / 50), ``bw_window``
  (cycles per bandwidth window, default 1024), ``bw_peak`` (the DRAM peak in
  blocks per window, default 102), ``pb_replacement`` (``"fifo"`` default, or
  ``"lru"``).

  Raises:
    TypeError, ValueError: a size that is not an int, out of range, or not a
      power of two where one is needed (the message names the argument).

  >>> pf = dspatch(pb_entries=16)
  >>> int(pf.make_params(pb_entries=4, pb_replacement="lru").pb_entries)
  4
  """
  dims = make_dims(region_blocks=region_blocks, pb_entries=pb_entries, spt_entries=spt_entries)
  return Prefetcher(
      name="dspatch",
      num_candidates=dims.region_blocks - 1,
      make_params=functools.partial(_make_params, dims),
      init=functools.partial(_init, dims),
      train=_train,
      issue=functools.partial(_issue, dims),
      self_masking=True,
  )


def storage_bits(*, pb_entries: int = 64, spt_entries: int = 256, region_blocks: int = 32,
                 granularity: int = 2, address_bits: int = 48, bw_window: int = 1024,
                 bw_peak: int = 102) -> dict[str, int]:
  """Bits of hardware state of DSPatch with these sizes, per structure and ``total``.

  With ``o = log2(region_blocks)`` offset bits:

  * PB entry: region tag ``address_bits - 6 - o`` (fully associative) + the
    trigger's SPT index ``log2(spt_entries)`` (all the PB needs of the PC) +
    trigger offset ``o`` + footprint ``region_blocks`` + pending offsets
    ``region_blocks`` + replacement order ``log2(pb_entries)``;
  * SPT row: CovP and AccP at ``region_blocks / granularity`` bits each +
    three 2-bit counters (MeasureCovP, MeasureAccP, OrCount); no tag;
  * bandwidth: a cycle counter ``log2(bw_window)``, a block counter
    ``bit_length(bw_peak)`` and the 2-bit quartile.

  Defaults: PB 64 x (37 + 8 + 5 + 32 + 32 + 6) = 7680, SPT 256 x
  (16 + 16 + 6) = 9728, bandwidth 10 + 7 + 2 = 19: 17427 bits = 2.13 KiB. The
  paper reports 3.6 KB (SPT 2.375 KB = 256 rows x 2 halves x 38 bits, the PB
  1.23 KB, for 4 KiB pages); this SPT holds one 2 KiB half per row, and the
  pending mask replaces the authors' prefetch queue.

  >>> storage_bits()
  {'pb': 7680, 'spt': 9728, 'bandwidth': 19, 'total': 17427}
  """
  region_blocks = _check_pow2("region_blocks", region_blocks, 2, 32)
  pb_entries = _check_int("pb_entries", pb_entries, 1, 1 << 20)
  spt_entries = _check_pow2("spt_entries", spt_entries, 1, 1 << 20)
  granularity = _check_pow2("granularity", granularity, 1, region_blocks,
                            " (blocks per pattern bit, at most region_blocks)")
  obits = region_blocks.bit_length() - 1
  address_bits = _check_int("address_bits", address_bits, 6 + obits + 1, 64)
  bw_window = _check_int("bw_window", bw_window, 1, hierarchy.MAX_CYCLE)
  bw_peak = _check_int("bw_peak", bw_peak, 1, 1 << 24)

  def lg(n: int) -> int:
    return (n - 1).bit_length()

  pb_entry = ((address_bits - 6 - obits) + lg(spt_entries) + obits + 2 * region_blocks
              + lg(pb_entries))
  spt_row = 2 * (region_blocks // granularity) + 3 * 2
  out = {"pb": pb_entries * pb_entry, "spt": spt_entries * spt_row,
         "bandwidth": lg(bw_window) + bw_peak.bit_length() + 2}
  out["total"] = sum(out.values())
  return out
