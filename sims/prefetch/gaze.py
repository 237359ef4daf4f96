"""Gaze (Chen et al., arXiv 2412.05211, HPCA 2025): a spatial prefetcher keyed by the
first two accesses of a region, as a `jaxsys.sims.cache.protocol.Prefetcher`.

The mechanism follows the authors' artifact (``papers/prefetch.md`` 1.1); every
table is a fixed-size int32 array, allocated at its maximum (``max_pt_entries``,
``max_region_blocks``) and masked by the traced params, so one compiled program
serves a whole sweep of PT sizes, region sizes, stride degrees and the artifact's
ablation variants (`VARIANTS`: SS on/off, PT on/off, SS fill levels).

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
  stamps are never read, so they are not kept.) A footprint slot holds 0, or
  for a set bit the footprint's size: "every block accessed" is then one
  element, not a reduction (see *Speed*).
* PT, pattern table: ``pt_entries`` (default 256) as ``pt_entries / 4`` sets x 4
  ways, LRU (in ``mode="artifact"`` only its writes stamp it: step 3). Key ``k =
  second * R + trigger``; set ``k & (sets - 1)``, tag ``k >> log2(sets)``: with
  R = 64 and 64 sets, set = trigger offset and tag = second offset, as in the
  artifact. Payload: the trained footprint (1 bit per offset: training stores
  footprints, so the PT's levels are always "L1D"), stored like the AT's (a set
  slot holds the size). A footprint always holds its key's t and s, so "a bit
  besides t and s" is a size above 2 at slot t.
* PB, prefetch buffer: 32 entries, 4 sets (``r & 3``) x 8 ways, LRU. Per offset
  a 2-bit fill level (0 nothing pending, 1 L1D, 2 L2) and a 2-bit source tag (0
  stride, 1 PT, 2 SS bulk, 3 promote; the artifact's per-offset prefetch
  metadata, used here only for the ``issued_*`` statistics). Every offset of a
  valid entry has a source, pending or not: an entry starts with one source at
  all R offsets, and issuing an offset clears its level, not its source.
* SS, the spatial-streaming module: ``con_counter`` in 0..8 and a deque of at
  most 8 distinct 6-bit PC hashes (PC bits [13:8]) of fully accessed streaming
  regions, newest first.

**One L1D demand load**, block b (region r, offset o, PC p); nothing else is
seen (stores and padding leave the state unchanged):

1. *r in AT*: LRU touch; if o is new to the footprint: set it, ``stride = o -
   last_offset``; the stride engine is armed when ``degree > 0``, the region is
   flagged ``missed_in_pt`` or ``con`` and ``stride == last_stride``; then
   ``last_offset, last_stride = o, stride``. Armed (a *trigger*): ``last_offset,
   last_stride = 0, 0``: the stride must be confirmed again as if from offset 0
   (the next new offset o' has stride o' and confirms only for o' = 0: stride 0,
   a trigger without targets), so on a constant stride s the triggers come at o,
   o + 3s, o + 6s, ... The targets ``o + (lookahead + i) * stride``,
   i = 1..degree (default lookahead 2, degree 4: +3s..+6s), inside the region
   and not in the footprint, are merged into r's PB entry as L1D fills (an offset
   pending as L2, or already issued, becomes an L1D fill again: SS stage 2). An
   absent entry is allocated (the PB LRU victim) with source "promote" at every
   offset for a ``con`` region, else "stride". A target keeps its slot's source,
   except that "SS bulk" becomes "promote" unless the target was already pending
   for L1D. A trigger without targets allocates the entry all the same in
   ``mode="artifact"`` (this access's drain then erases it: what remains is the
   eviction of the victim way's entry); in ``"fixed"`` it touches nothing in the
   PB. ``stride_triggers`` counts the triggers with a target.
2. *else r not in FT*: insert (r, trigger = o, p). Nothing is prefetched.
   (*r in FT with o = trigger*: SRRIP hit, nothing else.)
3. *else, the second distinct offset s = o* (trigger t):
   * ``ss_enabled`` and (t, s) = (0, 1): the SS module, no PT lookup. With h
     the PC hash of this (the second) access in ``mode="artifact"`` (the
     artifact's find is called with the current PC, while training pushes the
     trigger's, which the AT keeps), of the trigger in ``"fixed"`` (lookup and
     training then agree when a region's first two accesses come from
     different instructions): if ``con_counter == 8`` or h is in the deque (the
     *aggressive* bulk), offsets 0..R/4-1 into L1D and R/4..R-1 into L2; elif
     ``con_counter > 2`` (the *conservative* bulk), offsets 0..R/4-1 into L2
     (R/4 is the artifact's ``NUM_BLOCKS / 4``: 0..15 at 4 KiB regions, also in
     its region-size variants). With ``ss_all_l1`` every offset of either bulk
     goes into L1D instead (aggressive: the whole region; conservative:
     0..R/4-1). A bulk with an offset besides 0 and 1 gives the region ``con``;
     one without (the conservative bulk at R = 8) is a miss, as a PT pattern
     would be, and so is no bulk: the region gets ``missed_in_pt`` (the stride
     engine is its fallback) [I].
   * otherwise a PT lookup of (t, s) (counted in ``pt_lookups``): a hit needs
     the tag and a pattern with a bit besides t and s (else a miss, as in the
     artifact), and, with ``pt_enabled`` off, the key (0, 1) (every other key
     then misses; only reachable with ``ss_enabled`` off); a hit's pattern goes
     to the PB (L1D fills), and in ``mode="fixed"`` the hit touches the PT LRU
     (the artifact's PT find does not); a miss flags ``missed_in_pt``.
     ``pt_enabled`` changes lookups only: the PT trains as below either way.
   * A non-empty pattern (t and s removed) replaces r's PB entry (or takes the
     PB LRU victim), source "PT" or "SS bulk" at every offset. The region
     moves from FT to AT (footprint {t, s}, last offset s, last stride s - t).
     If that evicts a valid AT entry (LRU), it *trains*: a victim keyed (0, 1)
     (with SS on) trains the SS module: a full footprint (all R blocks) does
     ``con_counter = min(8, +1)`` and pushes its PC hash unless the deque holds
     it already (a full deque drops its oldest); otherwise ``con_counter <= 2``
     decrements it (not below 0) and a larger counter is left alone in
     ``mode="artifact"`` (the artifact's no-op ``con_counter >> 1``) or halved
     in ``mode="fixed"``. Any other victim writes its footprint into the PT
     entry of its key, overwriting it (no confidence, no merging; a new key
     takes the set's LRU victim).
4. *Drain*: if r has a PB entry (LRU touch), o's level is cleared without
   issuing it (the block is being demanded: a prefetch of it would be redundant;
   the artifact's design, both modes); its other pending offsets in the order
   o+1, o+2, ..., o+R-1 (mod R) are the candidates, the first K; the cache takes
   the first ``budget`` (`protocol`'s rule: the artifact's ``PQ + MSHR < MSHR -
   1`` and PQ-not-full gate), their levels are cleared (their sources stay), and
   an entry with nothing left pending is erased. Level 1 fills L1D, level 2
   fills L2.

**Modes.** ``"artifact"`` keeps the quirks: training only on AT capacity
eviction (the artifact never calls its L1D-eviction hook), the ``con_counter
>> 1`` no-op, PT overwrite, a PT hit that leaves the PT's LRU order alone (the
artifact's PT find is its only table lookup without a promote, so its "LRU" is
the order of the writes), a PB entry allocated for a stride trigger without
targets (it can evict another region's pending prefetches), and the SS lookup
by the second access's PC. ``"fixed"`` halves the counter, touches the PT LRU
on a hit, allocates nothing for a trigger without targets and looks the SS
deque up by the trigger's PC; it does not add eviction training (the `protocol` has no
fill / eviction hook) nor PT merging. Both modes share the rest of the
artifact's design: the trigger's reset of ``last_offset`` and ``last_stride``
(a deliberate statement that throttles the engine: a trigger covers the next
strides, and re-arming on every access would re-request the targets already
pending or issued), the deque of distinct hashes, SS spans of a quarter region,
the per-offset sources of the PB, and the drain's clearing of the accessed
offset without issuing it.

**Params** (`GazeParams`, traced): ``pt_entries`` (power of two, 128 ..
``max_pt_entries``), ``region_blocks`` (power of two, 8 .. ``max_region_blocks``),
``degree`` (0..8, 0 turns the stride engine off), ``lookahead`` (0..8),
``ss_enabled`` (off: (0, 1) is an ordinary PT key, no ``con``, the ablation of
``papers/prefetch.md`` 3.4), ``pt_enabled`` (off: a PT lookup of any key but
(0, 1) misses; the PT still trains), ``ss_all_l1`` (the SS bulks fill L1D
only). Every combination is one traced point of the same program.

**Variants** (`VARIANTS`, ``make_params`` keywords; every dict names the same
four keys, so ``list(VARIANTS.values())`` is a `jaxsys.sims.cache.sweep.sweep`
grid). The artifact's directories under ``ChampSim/prefetcher/`` were read in
the authors' commits (Dec 2024) as kept in hariom575/Gaze-Spatial-Prefetcher:
each is ``gaze/`` with lines commented out or constants changed, so each is
one setting of the switches below [V] unless marked:

* ``"gaze"``: ``gaze/``, the defaults.
* ``"no_ss"``: ``ss_enabled=False`` (papers/prefetch.md 3.4). Also exactly
  ``"pht"``.
* ``"pht"``: ``gaze_analysis_pht/``: the SS branches of the PT's insert and
  find are commented out, so (0, 1) is an ordinary PT key; the stride engine
  is *not* commented out there (it still serves ``missed_in_pt`` regions; no
  region gets ``con``) [V]. The same params as ``"no_ss"``.
* ``"pt_only"``: ``"pht"`` with the stride engine off too (``degree=0``): the
  mechanism of ``gaze_sensitivity_pht{128,256,512,1024}/`` [V] (those vary PT
  ways at 64 sets, 2..16 ways, where ``pt_entries`` varies sets at 4 ways).
* ``"pht4ss"``: ``gaze_analysis_pht4ss/``: the PT trains on every AT victim,
  (0, 1) included (SS training commented out), but its find returns a pattern
  only for key (0, 1) (every other key misses): the PT serves streaming
  regions only; stride engine off: ``ss_enabled=False, pt_enabled=False,
  degree=0`` [V].
* ``"sm4ss"``: ``gaze_analysis_sm4ss/``: SS module on, PT find returns nothing
  for every other key (the PT insert, i.e. training, is untouched), stride
  engine off, and both SS bulks fill L1D: the aggressive one the whole region
  (``NUM_BLOCKS`` offsets), the conservative one its usual offsets
  (``NUM_BLOCKS / 4``, 0..15 at 4 KiB regions): ``pt_enabled=False,
  ss_all_l1=True, degree=0`` [V].
* ``"ss_only"``: ``gaze_ssonly/`` (an older layout of the same code with more
  statistics): the same switches as ``"sm4ss"`` [V]; the two directories
  differ in instrumentation only.

With the PT off its lookups still count in ``pt_lookups`` (the artifact calls
its find) and still flag ``missed_in_pt``; that flag matters only with the
stride engine on, a combination no artifact variant uses [I].

**State size** per config (int32): FT 64 x 4, AT 64 x (8 + Rmax), PT
``max_pt_entries`` x (2 + Rmax), PB 32 x (2 + Rmax), 26 registers; with the
defaults (Rmax = 64, max PT 1024) about 0.3 MB, with Rmax = 1024 about 4.4 MB
(a vmapped sweep holds one per config). `storage_bits` gives the hardware
budget (4.42 KiB by default vs the reported 4.46 KB; a variant that never
reads the PT or has no SS module is charged nothing for it).

**Speed** (XLA:CPU; see `hierarchy`'s "Speed on XLA:CPU"): each kernel in the
runner's scan body costs ~0.1-0.2 us and each element a fused loop touches a
few ns, so a step reads only what it needs in two materialised reads (headers
first, then the selected rows), finds ways with variadic reductions (one per
read), loads its scalar decisions from a small vector computed once (a scalar
used by several kernels would otherwise be recomputed per element), ranks the
drain order with one sum over [Rmax + 3, Rmax + 2] (a sort or a cumsum costs more on
XLA:CPU) and writes single rows or elements in place: Gaze adds ~20 kernels to
the runner's step.

**Statistics** (``state.stats``, names `STATS`): loads, FT inserts, PT lookups
and hits, SS lookups and bulk predictions, stride triggers, AT evictions, PT
writes, full streaming regions, PB evictions, issued prefetches by source.

>>> from jaxsys.sims.cache import hierarchy, runner
>>> pf = gaze()
>>> params = hierarchy.make_params(prefetcher=pf.make_params())
>>> trace = runner.make_trace(np.arange(64, 72, dtype=np.int32), instr=np.arange(8) * 1000)
>>> state, codes = runner.run(trace, hierarchy.CacheConfig(), params, pf)
>>> runner.decode(codes)["accepted"].tolist()  # (0, 1), counter 0: stride at 2, then 5
[0, 0, 4, 0, 0, 4, 0, 0]
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

# Row fields. FT [8, 8, 4]; AT [8, 8, 8 + Rmax] (then the footprint: per offset 0,
# or the footprint's size if set); PT [S, 4, 2 + Rmax] (then the pattern, the
# same way); PB [4, 8, 2 + Rmax] (then per offset level | source << 2).
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
  pt_enabled: Any  # [] bool PT lookups of keys other than (0, 1) (off: they miss; it still trains)
  ss_all_l1: Any  # [] bool the SS bulks fill L1D only (sm4ss / ssonly)


# The artifact's ablation variants as `make_params` keywords (module docstring,
# "Variants"). Every dict names the same keys, so the values form a sweep grid.
VARIANTS: dict[str, dict[str, Any]] = {
    "gaze": dict(ss_enabled=True, pt_enabled=True, ss_all_l1=False, degree=4),
    "no_ss": dict(ss_enabled=False, pt_enabled=True, ss_all_l1=False, degree=4),
    "pht": dict(ss_enabled=False, pt_enabled=True, ss_all_l1=False, degree=4),
    "pt_only": dict(ss_enabled=False, pt_enabled=True, ss_all_l1=False, degree=0),
    "pht4ss": dict(ss_enabled=False, pt_enabled=False, ss_all_l1=False, degree=0),
    "sm4ss": dict(ss_enabled=True, pt_enabled=False, ss_all_l1=True, degree=0),
    "ss_only": dict(ss_enabled=True, pt_enabled=False, ss_all_l1=True, degree=0),
}


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


def _check_bool(name: str, value: Any) -> bool:
  if not isinstance(value, (bool, np.bool_)):
    raise TypeError(f"{name}: expected a bool, given {value!r}")
  return bool(value)


def _make_params(max_pt_entries: int, max_region_blocks: int, *, pt_entries: int = 256,
                 region_blocks: int = 64, degree: int = 4, lookahead: int = 2,
                 ss_enabled: bool = True, pt_enabled: bool = True,
                 ss_all_l1: bool = False) -> GazeParams:
  pt = _pow2("pt_entries", pt_entries, MIN_PT_ENTRIES, max_pt_entries,
             "the prefetcher's max_pt_entries")
  rb = _pow2("region_blocks", region_blocks, MIN_REGION_BLOCKS, max_region_blocks,
             "the prefetcher's max_region_blocks")
  degree = _check_range("degree", degree, 0, MAX_DEGREE)
  lookahead = _check_range("lookahead", lookahead, 0, MAX_LOOKAHEAD)
  flags = [np.bool_(_check_bool(name, value)) for name, value in (
      ("ss_enabled", ss_enabled), ("pt_enabled", pt_enabled), ("ss_all_l1", ss_all_l1))]
  return GazeParams(np.int32(pt), np.int32(rb), np.int32(degree), np.int32(lookahead), *flags)


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

  A variant that never reads a table is not charged for it: the PT with
  ``pt_enabled`` off and ``ss_enabled`` on (``sm4ss``, ``ss_only``: it is
  trained but never looked up), the SS module with ``ss_enabled`` off. The PT
  of ``pht4ss`` (looked up for key (0, 1) only, but trained on every key, which
  competes for its ways) is charged in full.

  Args:
    pparams: `GazeParams` (or a dict of `make_params` keywords); or keywords.

  Returns:
    ``{"ft", "at", "pt", "pb", "ss", "total"}`` in bits and ``"total_kib"``.

  >>> round(storage_bits()["total_kib"], 2)
  4.42
  >>> storage_bits(**VARIANTS["sm4ss"])["pt"]
  0
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
  ss_on = bool(np.asarray(pparams.ss_enabled))
  pt_read = bool(np.asarray(pparams.pt_enabled)) or not ss_on
  pt = pt_entries * (1 + max(2 * ob - (pt_sets.bit_length() - 1), 0) + R + 2) if pt_read else 0
  pb = PB_SETS * PB_WAYS * (1 + region_bits - 2 + 2 * ob + 2 * R + LRU_BITS_8WAY)
  ss = 4 + DEQUE_LEN * 6 if ss_on else 0
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


def _row(rows_WF: jax.Array, way: jax.Array) -> jax.Array:
  return jax.lax.dynamic_index_in_dim(rows_WF, way.astype(jnp.uint32), axis=0, keepdims=False)


def _at(row_F: jax.Array, i: jax.Array) -> jax.Array:
  """[] element `i` (0 <= i < F) of a row."""
  return jax.lax.dynamic_index_in_dim(row_F, _i32(i).astype(jnp.uint32), keepdims=False)


def _el(rows_WF: jax.Array, way: jax.Array, field: Any) -> jax.Array:
  """[] element (way, field) of a [W, F] array (one read, no row copy)."""
  idx = (_i32(way).astype(jnp.uint32), _i32(field).astype(jnp.uint32))
  return jax.lax.dynamic_slice(rows_WF, idx, (1, 1))[0, 0]


def _select(lane: np.ndarray, values: list[Any], default: jax.Array) -> jax.Array:
  """[F] ``values[i]`` at lane i < len(values), `default` elsewhere (selects, not a
  concatenation: XLA:CPU fuses a concatenation of at most 8 pieces)."""
  out = default
  for i, value in enumerate(values):
    out = jnp.where(lane == i, _i32(value), out)
  return out


def _put(rows_WF: jax.Array, way: jax.Array, row_F: jax.Array, do: jax.Array) -> jax.Array:
  sel = (jnp.arange(rows_WF.shape[0], dtype=jnp.int32) == way) & do
  return jnp.where(sel[:, None], row_F[None, :], rows_WF)


def _read(table: jax.Array, index: jax.Array) -> jax.Array:
  return jax.lax.dynamic_index_in_dim(table, index.astype(jnp.uint32), axis=0, keepdims=False)


def _write(table: jax.Array, index: jax.Array, row: jax.Array) -> jax.Array:
  return jax.lax.dynamic_update_index_in_dim(table, row, index.astype(jnp.uint32), axis=0)


def _write_row(table: jax.Array, index: jax.Array, way: jax.Array, row: jax.Array,
               field: int = 0) -> jax.Array:
  """`row` (or one element) into ``table[index, way, field:]`` in place."""
  u = jnp.uint32
  return jax.lax.dynamic_update_slice(table, jnp.reshape(row, (1, 1, -1)),
                                      (index.astype(u), way.astype(u), u(field)))


INT32_MIN = -(2**31)
_BIG = 2**31 - 1  # above every key


def _argmin_rows(key_NW: jax.Array) -> tuple[jax.Array, jax.Array]:
  """([N] smallest key, [N] its first way) of each row: one variadic reduction."""
  way_NW = jnp.broadcast_to(jnp.arange(key_NW.shape[1], dtype=jnp.int32), key_NW.shape)

  def reducer(x, y):
    take_x = (x[0] < y[0]) | ((x[0] == y[0]) & (x[1] < y[1]))
    return jnp.where(take_x, x[0], y[0]), jnp.where(take_x, x[1], y[1])

  big = jnp.int32(_BIG)
  return jax.lax.reduce((key_NW, way_NW), (big, big), reducer, (1,))


def _sum_rows(x_NM: jax.Array) -> jax.Array:
  """[N] row sums in one kernel. XLA:CPU splits a plain sum over more than 32
  elements into two kernels, but not a variadic reduction: the two halves of each
  row are summed as two operands."""
  first = np.arange(x_NM.shape[1]) < x_NM.shape[1] // 2

  def reducer(x, y):
    return x[0] + y[0], x[1] + y[1]

  zero = jnp.int32(0)
  lo, hi = jax.lax.reduce((jnp.where(first, x_NM, 0), jnp.where(first, 0, x_NM)), (zero, zero),
                          reducer, (1,))
  return lo + hi


def _materialise(opaque_one: jax.Array, **scalars: jax.Array) -> dict[str, jax.Array]:
  """The scalars computed once, in one small kernel (an int32 vector divided by
  an opaque 1): consumers load them instead of re-deriving them per element."""
  names = list(scalars)
  vec = jax.lax.div(_select(np.arange(len(names)), [scalars[k] for k in names],
                            jnp.zeros((len(names),), jnp.int32)), opaque_one)
  return {k: vec[i] for i, k in enumerate(names)}


def _issue(mode: str, Rm: int, K: int, pstate: GazeState, cache_state: Any, access: Access,
           now: jax.Array, budget: jax.Array, pp: GazeParams) -> tuple[GazeState, Candidates]:
  """Steps 1-4 of the module docstring for one access (masked by ``access.load``).

  Written for few kernels (see "Speed" in the module docstring), in stages: the
  FT row and the AT / PB headers (one read), their ways (one reduction), the
  scalar decisions (one small vector); the AT hit / victim rows, the PB row and
  both PT rows (one read), the PT ways (one reduction), the decisions (one
  vector); the drain ranks and the candidates (two sums); then one row (or
  element) written per table update.
  """
  del cache_state, now
  regs = pstate.regs
  opaque_one = 1 + (regs[R_TICK] < 0).astype(jnp.int32)
  R = _i32(pp.region_blocks)
  pt_sets = _i32(pp.pt_entries) // PT_WAYS
  degree = _i32(pp.degree)
  lookahead = _i32(pp.lookahead)
  ss_on = jnp.asarray(pp.ss_enabled, jnp.bool_)
  pt_on = jnp.asarray(pp.pt_enabled, jnp.bool_)
  block = _i32(access.block)
  r0 = block >> jax.lax.population_count(R - 1)
  c = _materialise(opaque_one, load=access.load, r=r0, o=block & (R - 1), fa_set=fold_set(r0),
                   pb_set=r0 & (PB_SETS - 1), pt_shift=jax.lax.population_count(pt_sets - 1))
  load = c["load"] != 0
  r, o, fa_set, pb_set, pt_shift = c["r"], c["o"], c["fa_set"], c["pb_set"], c["pt_shift"]
  pc = _i32(access.pc_hash)
  tick = regs[R_TICK]
  stamp0, stamp1 = 2 * tick, 2 * tick + 1
  AF, PF = AT_FIELDS + Rm, X_FIELDS + Rm
  lane_A, lane_P = np.arange(AF), np.arange(PF)
  off_A, off_P = lane_A - AT_FIELDS, lane_P - X_FIELDS  # the offset of a footprint slot
  n_stat = len(STATS)
  inc = [jnp.int32(0)] * n_stat

  # ---- Read 1: the FT row and the AT / PB row headers (same FT / AT set),
  # stacked, materialised by a division by an opaque 1; one scan of the ways:
  # FT hit, FT victim, AT hit, AT victim, PB hit, PB victim (the first way at the
  # smallest key).
  def pad(x, width):
    return jnp.concatenate([x, np.zeros(x.shape[:-1] + (width - x.shape[-1],), np.int32)],
                           axis=-1)

  hdr_3W8 = jax.lax.div(jnp.stack([
      pad(_read(pstate.ft, fa_set), AT_FIELDS), _read(pstate.at, fa_set)[:, :AT_FIELDS],
      pad(_read(pstate.pb, pb_set)[:, :X_FIELDS], AT_FIELDS)]), opaque_one)
  ft_W4, at_W8, pb_W2 = hdr_3W8[0, :, :4], hdr_3W8[1], hdr_3W8[2, :, :X_FIELDS]
  ft_tag, at_tag, pb_tag = ft_W4[:, FT_TAG], at_W8[:, AT_TAG], pb_W2[:, X_TAG]
  vkey, vway = _argmin_rows(jnp.stack([
      jnp.where(ft_tag == r, 0, 1),
      jnp.where(ft_tag >= 0, 3 - ft_W4[:, FT_RRPV], -1),  # SRRIP: the largest RRPV
      jnp.where(at_tag == r, 0, 1),
      jnp.where(at_tag >= 0, at_W8[:, AT_LRU], INT32_MIN),
      jnp.where(pb_tag == r, 0, 1),
      jnp.where(pb_tag >= 0, pb_W2[:, X_LRU], INT32_MIN)]))

  # The decisions the headers give (the FT, the SS module, the PT keys), as scalars.
  at_hit = load & (vkey[2] == 0)
  ft_hit = load & ~at_hit & (vkey[0] == 0)
  pb_hit = load & (vkey[4] == 0)
  ft_way, at_hway, at_vway = vway[0], vway[2], vway[3]
  t = _el(ft_W4, ft_way, FT_TRIG)
  trig_pc = _el(ft_W4, ft_way, FT_PC)
  case_second = ft_hit & (o != t)
  cnt = regs[R_CON]
  is_ss = case_second & ss_on & (t == 0) & (o == 1)
  # The SS lookup's PC: the second access's in the artifact (its find is called
  # with the current PC), the trigger's (the one training pushes) in "fixed".
  h = ((pc if mode == "artifact" else trig_pc) >> 8) & 63
  in_deque = functools.reduce(jnp.logical_or, [regs[R_DEQUE + i] == h for i in range(DEQUE_LEN)])
  ss_aggr = is_ss & ((cnt == CON_MAX) | in_deque)
  key = o * R + t
  v_trig, v_second = _el(at_W8, at_vway, AT_TRIG), _el(at_W8, at_vway, AT_SECOND)
  v_key = v_second * R + v_trig
  v_ss = ss_on & (v_trig == 0) & (v_second == 1)
  v_pc = _el(at_W8, at_vway, AT_PC)
  v_hash = (v_pc >> 8) & 63
  v_hash_new = ~functools.reduce(jnp.logical_or,
                                 [regs[R_DEQUE + i] == v_hash for i in range(DEQUE_LEN)])
  evict = case_second & (vkey[3] != INT32_MIN)
  e_flags = _el(at_W8, at_hway, AT_FLAGS)
  c = _materialise(
      opaque_one, at_hit=at_hit, ft_hit=ft_hit, ft_way=ft_way, at_hway=at_hway, at_vway=at_vway,
      at_way=jnp.where(at_hit, at_hway, at_vway),
      e_last_off=_el(at_W8, at_hway, AT_LAST_OFF), e_last_stride=_el(at_W8, at_hway,
                                                                     AT_LAST_STRIDE),
      e_armable=((e_flags & (MISSED | CON)) != 0) & (degree > 0), e_con=(e_flags & CON) != 0,
      t=t, trig_pc=trig_pc, case_second=case_second,
      case_insert=load & ~at_hit & ~ft_hit, case_again=ft_hit & (o == t), is_ss=is_ss,
      # At R = 8 the conservative bulk (0..R/4-1) is only the key (0, 1): a miss.
      ss_aggr=ss_aggr, ss_cons=is_ss & ~ss_aggr & (cnt > 2) & (R >= 16),
      p_set=key & (pt_sets - 1),
      p_tag=key >> pt_shift, t_set=v_key & (pt_sets - 1), t_tag=v_key >> pt_shift,
      evict=evict, train_ss=evict & v_ss, train_pt=evict & ~v_ss, v_trig=v_trig,
      v_hash=v_hash, v_hash_new=v_hash_new, ft_vkey=vkey[1], ft_vway=vway[1],
      pb_hit=pb_hit, pb_way=jnp.where(pb_hit, vway[4], vway[5]),
      pb_evictable=vkey[5] != INT32_MIN)
  b = {k: c[k] != 0 for k in ("at_hit", "ft_hit", "e_armable", "e_con", "case_second",
                              "case_insert", "case_again", "is_ss", "ss_aggr", "ss_cons",
                              "evict", "train_ss", "train_pt", "pb_hit", "pb_evictable",
                              "v_hash_new")}
  at_hit, case_second, is_ss, t = b["at_hit"], b["case_second"], b["is_ss"], c["t"]
  p_set, t_set, at_way, pb_way = c["p_set"], c["t_set"], c["at_way"], c["pb_way"]
  stride = o - c["e_last_off"]

  # ---- Read 2: the AT hit's and victim's rows, the PB row, both PT rows (the
  # lookup's and the training key's: the old PT, row B is row A when the sets
  # agree); one scan of the PT ways: the lookup's way, the training key's way, and
  # the training victim with and without the lookup's LRU touch.
  u = jnp.uint32
  rows = jax.lax.div(jnp.concatenate([
      jax.lax.dynamic_slice(pstate.at, (fa_set.astype(u), c["at_hway"].astype(u), u(0)),
                            (1, 1, AF))[0],
      jax.lax.dynamic_slice(pstate.at, (fa_set.astype(u), c["at_vway"].astype(u), u(0)),
                            (1, 1, AF))[0],
      pad(jax.lax.dynamic_slice(pstate.pb, (pb_set.astype(u), pb_way.astype(u), u(0)),
                                (1, 1, PF))[0], AF),
      pad(_read(pstate.pt, p_set), AF), pad(_read(pstate.pt, t_set), AF)]), opaque_one)
  e_A, v_A, pb_old = rows[0], rows[1], rows[2, :PF]
  same = t_set == p_set
  pt_A = rows[3:3 + PT_WAYS, :PF]
  pt_B0 = jnp.where(same, pt_A, rows[3 + PT_WAYS:, :PF])
  match_A = pt_A[:, X_TAG] == c["p_tag"]  # at most one way: tags are unique in a set
  b_lru = jnp.where(pt_B0[:, X_TAG] >= 0, pt_B0[:, X_LRU], INT32_MIN)
  pkey, pway = _argmin_rows(jnp.stack([
      jnp.where(match_A, 0, 1),
      jnp.where(pt_B0[:, X_TAG] == c["t_tag"], 0, 1),
      b_lru] + ([jnp.where(same & match_A, stamp0, b_lru)] if mode == "fixed" else [])))

  # Step 1 (AT hit: footprint, stride engine) and the PT lookup, as scalars. A
  # footprint slot holds 0 or the footprint's size (so "full" is one element,
  # not a reduction); so does a stored pattern, which also holds its key's
  # offsets t and s (a footprint starts as {t, s}): "a bit besides t and s" is a
  # size above 2. (e_armable holds degree > 0.)
  fp_A = e_A[AT_FIELDS:]
  is_new = at_hit & (_at(fp_A, o) == 0)
  armed = is_new & b["e_armable"] & (stride == c["e_last_stride"])
  any_stride = jnp.asarray(False)
  for i in range(1, MAX_DEGREE + 1):
    tgt = o + (lookahead + i) * stride
    ok = armed & (i <= degree) & (tgt >= 0) & (tgt < R)
    any_stride = any_stride | (ok & (_at(fp_A, jnp.clip(tgt, 0, Rm - 1)) == 0) & (tgt != o))
  p_way = pway[0]
  pt_lookup = case_second & ~is_ss
  pt_usable = pt_on | ((t == 0) & (o == 1))  # PT off: only the key (0, 1) may hit
  pt_hit = pt_lookup & pt_usable & (pkey[0] == 0) & (_el(pt_A, p_way, X_FIELDS + t) > 2)
  con = b["ss_aggr"] | b["ss_cons"]
  any_fill = case_second & (con | pt_hit)  # a bulk always leaves an offset past 0, 1
  # A trigger without targets: the artifact still allocates a PB entry (erased
  # by this access's drain: only the eviction of its way's entry remains).
  write = any_fill | (at_hit & (armed if mode == "artifact" else any_stride))
  if mode == "fixed":  # the PT hit's LRU touch can make the training key's victim another way
    t_victim = jnp.where(same & pt_hit, pway[3], pway[2])
  else:
    t_victim = pway[2]
  c2 = _materialise(
      opaque_one, p_way=p_way, pt_hit=pt_hit, any_fill=any_fill, write=write,
      present=b["pb_hit"] | write, is_new=is_new, armed=armed, any_stride=any_stride,
      fp_size=_at(fp_A, e_A[AT_TRIG]),  # the trigger is always in the footprint
      full=_at(v_A[AT_FIELDS:], c["v_trig"]) == R,  # (the victim's too)
      t_way=jnp.where(pkey[1] == 0, pway[1], t_victim))
  p_way, t_way = c2["p_way"], c2["t_way"]
  pt_hit, any_fill, write, present, is_new = (
      c2[k] != 0 for k in ("pt_hit", "any_fill", "write", "present", "is_new"))
  pb_hit = b["pb_hit"]
  missed = ~con & ~pt_hit
  inc[S_STRIDE_TRIGGERS] = c2["any_stride"]
  inc[S_PT_LOOKUPS] = pt_lookup.astype(jnp.int32)
  inc[S_PT_HITS] = c2["pt_hit"]
  inc[S_SS_LOOKUPS] = c["is_ss"]
  inc[S_SS_BULK] = con.astype(jnp.int32)

  # The PT: the lookup's LRU touch (one element; mode "fixed" only), the training
  # write (one row).
  if mode == "fixed":
    pt = _write_row(pstate.pt, p_set, p_way,
                    jnp.where(pt_hit, stamp0, _el(pt_A, p_way, X_LRU)), X_LRU)
    b_row = jnp.where(same & pt_hit & (t_way == p_way) & (lane_P == X_LRU), stamp0,
                      _row(pt_B0, t_way))
  else:  # the artifact's PT find leaves the LRU alone
    pt = pstate.pt
    b_row = _row(pt_B0, t_way)
  v_fp_P = v_A[AT_FIELDS - X_FIELDS:]  # the footprint at PT lanes
  pt_row = _select(lane_P, [c["t_tag"], stamp1], jnp.where(off_P < R, v_fp_P, 0))
  pt = _write_row(pt, t_set, t_way, jnp.where(b["train_pt"], pt_row, b_row))
  inc[S_PT_WRITES] = c["train_pt"]

  # AT: the hit's update or the insertion (one row).
  old_A = jnp.where(at_hit, e_A, v_A)
  armed = c2["armed"] != 0
  e_new = jnp.where(
      lane_A >= AT_FIELDS,
      jnp.where((e_A != 0) | (off_A == o), c2["fp_size"] + c2["is_new"], 0),
      _select(lane_A, [e_A[i] for i in range(AT_LAST_OFF)]
              + [jnp.where(armed, 0, jnp.where(is_new, o, e_A[AT_LAST_OFF])),  # a trigger
                 jnp.where(armed, 0, jnp.where(is_new, stride, e_A[AT_LAST_STRIDE])),  # resets
                 e_A[AT_FLAGS], stamp0], e_A))
  flags = jnp.where(missed, MISSED, 0) | jnp.where(con, CON, 0)
  e_ins = _select(lane_A, [r, t, o, c["trig_pc"], o, o - t, flags, stamp0],
                  jnp.where((off_A == t) | (off_A == o), 2, 0))
  at = _write_row(pstate.at, fa_set, at_way,
                  jnp.where(at_hit, e_new, jnp.where(case_second, e_ins, old_A)))
  inc[S_AT_EVICTIONS] = c["evict"]

  # SS training.
  if mode == "fixed":
    cnt_else = jnp.where(cnt <= 2, jnp.maximum(cnt - 1, 0), cnt >> 1)
  else:  # the artifact's `con_counter >> 1` assigns nothing
    cnt_else = jnp.where(cnt <= 2, jnp.maximum(cnt - 1, 0), cnt)
  full = c2["full"] != 0
  cnt_new = jnp.where(b["train_ss"], jnp.where(full, jnp.minimum(cnt + 1, CON_MAX), cnt_else),
                      cnt)
  ss_full = b["train_ss"] & full
  inc[S_SS_FULL] = ss_full.astype(jnp.int32)

  # FT update: the victim is the first invalid way, else the first way at the
  # largest RRPV (after ageing the set by 3 - that RRPV).
  case_insert = b["case_insert"]
  ft_vkey = c["ft_vkey"]
  f = _row(ft_W4, c["ft_way"])
  rrpv_W = ft_W4[:, FT_RRPV]
  aged_W = jnp.where(ft_vkey >= 0, rrpv_W + ft_vkey, rrpv_W)
  ft_aged = ft_W4.at[:, FT_RRPV].set(jnp.where(case_insert, aged_W, rrpv_W))
  ft_put_way = jnp.where(case_insert, c["ft_vway"], c["ft_way"])
  ft_put_row = jnp.where(case_insert, jnp.stack([r, o, pc, jnp.int32(2)]),
                         jnp.where(case_second, jnp.stack([jnp.int32(-1), f[1], f[2], f[3]]),
                                   f.at[FT_RRPV].set(0)))
  ft_new = _put(ft_aged, ft_put_way, ft_put_row, case_insert | case_second | b["case_again"])
  inc[S_FT_INSERTS] = c["case_insert"]

  # ---- PB: fill (3) or stride merge (1), then drain (4), over the PB row's
  # lanes (offset = lane - 2). A slot is level | source << 2; every offset of a
  # valid entry keeps a source (the artifact's per-offset metadata), pending or not.
  in_P = (off_P >= 0) & (off_P < R)
  key_P = (off_P == t) | (off_P == o)
  stride_P = jnp.zeros((PF,), jnp.bool_)
  for i in range(1, MAX_DEGREE + 1):
    stride_P = stride_P | ((i <= degree) & (off_P == o + (lookahead + i) * stride))
  fp_P = e_A[AT_FIELDS - X_FIELDS:]  # the AT hit's footprint
  stride_P = stride_P & armed & in_P & (fp_P == 0) & (off_P != o)
  pat_P = _row(pt_A, p_way)
  span = R >> 2  # the SS bulks' first quarter of the region
  ss_far = jnp.where(jnp.asarray(pp.ss_all_l1, jnp.bool_), 1, 2)  # L2, or L1D (ss_all_l1)
  ss_lvl_P = jnp.where(b["ss_aggr"], jnp.where(off_P < span, 1, ss_far),
                       jnp.where(off_P < span, ss_far, 0))
  fill_P = jnp.where(is_ss, ss_lvl_P | (SRC_SS << 2), jnp.where(pat_P != 0, 1, 0) | (SRC_PT << 2))
  fill_P = jnp.where(in_P, jnp.where(key_P, fill_P & 12, fill_P), 0)
  # Stride merge: a new entry's source is "promote" (con) or "stride" (missed);
  # a target takes level L1D and keeps its source, but SS becomes "promote"
  # unless the target was already pending for L1D.
  old_P = jnp.where(pb_hit, pb_old,
                    jnp.where(in_P, jnp.where(b["e_con"], SRC_PROMOTE, SRC_STRIDE) << 2, 0))
  old_src_P = old_P >> 2
  promote_P = ((old_P & 3) != 1) & (old_src_P == SRC_SS)
  vals_P = jnp.where(any_fill, fill_P,
                     jnp.where(stride_P, 1 | (jnp.where(promote_P, SRC_PROMOTE, old_src_P) << 2),
                               old_P))
  # The accessed offset o is no candidate: its level is cleared, not issued.
  pending_P = ((vals_P & 3) != 0) & in_P & present & (off_P != o)
  # Drain order o+1, o+2, ... (mod R). Without a sort (a slow kernel on
  # XLA:CPU) or a cumsum (several): a pending slot's rank is the number of
  # pending slots before it, one sum over [P + 1, P] (the last row counts them
  # all); the K candidates and the issued count by source, one more sum.
  pos_P = (off_P - o - 1) & (R - 1)
  pos_x = jnp.concatenate([pos_P, jnp.full((1,), _BIG, jnp.int32)])
  rank_x = _sum_rows((pending_P[None, :] & (pos_P[None, :] < pos_x[:, None])).astype(jnp.int32))
  rank_P, n_pending = rank_x[:PF], rank_x[PF]
  take = jnp.minimum(jnp.maximum(_i32(budget), 0), K)
  issued_P = pending_P & (rank_P < take)
  src_P = vals_P >> 2
  key_P = (pos_P << 4) | vals_P  # > 0 where pending (level >= 1)
  row = np.arange(K + 4)[:, None]  # K candidates, then the 4 sources
  pick = _sum_rows(jnp.where(
      row < K, jnp.where(pending_P[None, :] & (rank_P[None, :] == row), key_P[None, :], 0),
      (issued_P[None, :] & (src_P[None, :] == row - K)).astype(jnp.int32)))
  top_K = pick[:K]
  for k_src in range(4):
    inc[S_ISSUED + k_src] = pick[K + k_src]
  left = n_pending > take
  vals_P = jnp.where(issued_P | (off_P == o), vals_P & 12, vals_P)  # the source stays
  pb_row = _select(lane_P, [jnp.where(left, r, -1), stamp0], vals_P)
  pb = _write_row(pstate.pb, pb_set, pb_way, jnp.where(present, pb_row, pb_old))
  inc[S_PB_EVICTIONS] = (write & ~pb_hit & b["pb_evictable"]).astype(jnp.int32)
  inc[S_LOADS] = load.astype(jnp.int32)
  valid_K = top_K != 0
  off_K = jnp.where(valid_K, ((top_K >> 4) + o + 1) & (R - 1), 0)
  lvl_K = jnp.where(valid_K, top_K & 3, 0)

  # ---- Registers (a non-load step writes its rows back unchanged).
  lane = np.arange(NUM_REGS)
  shifted = jnp.where(lane == R_DEQUE, c["v_hash"],
                      jnp.concatenate([regs[:1], regs[:-1]]))  # push the victim's PC hash
  push = ss_full & b["v_hash_new"]  # only if not in the deque already
  new_regs = jnp.where(push & (lane >= R_DEQUE) & (lane < R_STATS), shifted, regs)
  new_regs = jnp.where(lane == R_TICK, tick + load.astype(jnp.int32), new_regs)
  new_regs = jnp.where(lane == R_CON, cnt_new, new_regs)
  for i, value in enumerate(inc):
    new_regs = new_regs + jnp.where(lane == R_STATS + i, value, 0)
  state = GazeState(ft=_write(pstate.ft, fa_set, ft_new), at=at, pt=pt, pb=pb, regs=new_regs)
  cand = Candidates(block_K=block - o + off_K, fill_level_K=lvl_K - 1, valid_K=valid_K & load)
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
      (``con_counter`` halves, a PT hit touches the PT's LRU, a stride trigger
      without targets allocates no PB entry, the SS lookup hashes the trigger's
      PC; see the module docstring).
    max_pt_entries: the largest ``pt_entries`` a params sweep may use (power of
      two >= 128); the PT is allocated at this size.
    max_region_blocks: the largest ``region_blocks`` (power of two >= 8; 1024
      for 64 KiB regions); every per-offset table row has this many slots.
    max_candidates: K, the most prefetches one access may issue (the cache's
      budget is at most ``min(MSHR - 1, PQ)`` = 15 by default).

  Returns:
    A `protocol.Prefetcher`; ``make_params(pt_entries=256, region_blocks=64,
    degree=4, lookahead=2, ss_enabled=True, pt_enabled=True, ss_all_l1=False)``
    builds its `GazeParams` (``make_params(**VARIANTS[name])`` an artifact
    variant).

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
