"""SMS: Spatial Memory Streaming (Somogyi et al., ISCA'06), a baseline of Gaze (papers/prefetch.md 1.2).

Parameters as in the Gaze artifact's SMS baseline (``papers/prefetch.md`` 1.2:
"2 KB region, PHT 16K, FT/AT 64x8, PB 32"): 2 KiB regions (32 blocks), a
filter table (FT) and an accumulation table (AT) of 64 entries, 8-way (8 sets,
``set = region & 7``, LRU), a pattern history table (PHT) of 16K entries,
16-way (1024 sets, LRU; the ISCA'06 configuration), a 32-entry fully
associative prefetch buffer (PB, LRU), L1D fill.

**Mechanism** (on every L1D demand load, hit or miss; block ``b``, PC ``p``,
region ``r = b >> 5``, offset ``o = b & 31``):

1. ``r`` in AT: set bit ``o`` of its footprint (LRU touch).
2. else ``r`` in FT: if ``o`` is its trigger offset, touch it; otherwise
   (**the second distinct block**) move the region to AT with footprint
   {trigger, o}. If that evicts an AT entry, **its generation ends**: the PHT
   entry keyed by (its trigger PC, its trigger offset) gets its footprint
   (overwritten if present, else an LRU way).
3. else (**a trigger access**, the first access of a generation): insert
   ``(r, p, o)`` into FT (an FT victim is dropped: single-block generations
   are never recorded), and look the PHT up with ``(p, o)``. On a hit the
   pattern without bit ``o`` goes into the PB entry of ``r`` (replacing what
   was there, or taking the LRU PB entry).
4. Every load of a region that has a PB entry clears bit ``o`` there (the
   demand covers it) and **drains** the entry: the pending offsets, walked
   circularly upward from ``o + 1``, are the K = 32 candidates (to
   ``fill_level``); the cache accepts the first ``budget`` of them and those
   bits are cleared; the rest wait for the region's next load (the PB is the
   re-issue policy for refused candidates). An emptied entry is freed.

PHT index: ``set = ((fold(p) << 5) | o) & (pht_sets - 1)`` with
``fold(p) = p ^ (p >> 7) ^ (p >> 14)``; the tag is the full (PC hash, offset)
pair (no aliasing modelled; `storage_bits` counts a partial tag).

**Simplifications.** The paper ends a generation when any block of the region
leaves L1D (eviction or invalidation); the protocol has no eviction hook, so a
generation ends only when its AT entry is evicted (as the Gaze artifact trains
its own tables). The paper streams predictions from prediction registers
independently of demand; here the PB drains only on loads of its region (the
Gaze artifact's PB rule). Stores neither train nor trigger.

All tables are allocated at the factory's maxima; ``*_sets`` / ``*_ways`` /
``pb_entries`` params (traced: a sweep needs no recompile) use part of them.
`bingo` reuses this core with the long/short events of its PHT.

>>> pf = sms(pht_entries=1024)
>>> pf.name, pf.num_candidates
('sms', 32)
>>> storage_bits() // 8          # 95.4 KiB, the 16K-entry PHT dominates
97664
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

INT32_MAX = protocol.INT32_MAX

# FT fields.
STAMP = 0  # every table: LRU stamp, -1 for an empty way
REGION, TPC, TBLOCK = 1, 2, 3  # FT / AT: region, trigger PC, trigger block
PATTERN = 4  # AT footprint (int32 bitmask)
FT_FIELDS, AT_FIELDS = 4, 5
# PHT fields: stamp, PC, trigger block (SMS keys on its offset, Bingo on all of it), pattern.
P_PC, P_TBLOCK, P_PATTERN = 1, 2, 3
PHT_FIELDS = 4
# PB fields: stamp, region, pending offsets (bitmask).
B_REGION, B_PENDING = 1, 2
PB_FIELDS = 3
# Stats vector.
STATS = ("tick", "triggers", "predictions", "trainings", "issued")
S_TICK, S_TRIGGERS, S_PREDICTIONS, S_TRAININGS, S_ISSUED = range(len(STATS))


class Dims(NamedTuple):
  """Static sizes (the allocated tables)."""

  region_blocks: int
  ft_sets: int
  ft_ways: int
  at_sets: int
  at_ways: int
  pht_sets: int
  pht_ways: int
  pb_entries: int


class RegionParams(NamedTuple):
  ft_sets: Any  # [] int32 power of two <= Dims.ft_sets
  ft_ways: Any  # [] int32 1..Dims.ft_ways
  at_sets: Any  # [] int32
  at_ways: Any  # [] int32
  pht_sets: Any  # [] int32
  pht_ways: Any  # [] int32
  pb_entries: Any  # [] int32 1..Dims.pb_entries
  fill_level: Any  # [] int32 0 L1D, 1 L2, 2 LLC
  threshold_pct: Any  # [] int32 Bingo's vote threshold in percent (unused by SMS)


class RegionState(NamedTuple):
  ft: jax.Array  # [FS, FW, 4] int32 (stamp, region, trigger pc, trigger block)
  at: jax.Array  # [AS, AW, 5] int32 (stamp, region, trigger pc, trigger block, footprint)
  pht: jax.Array  # [PS, PW, 4] int32 (stamp, pc, trigger block, footprint)
  pb: jax.Array  # [P, 3] int32 (stamp, region, pending offsets)
  stats: jax.Array  # [5] int32 `STATS`: LRU clock = loads seen, triggers, PHT predictions,
  #                   PHT trainings, accepted candidates


# ----------------------------------------------------------------------------- checks


def check_int(name: str, value: Any, lo: int, hi: int, what: str = "") -> int:
  if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
    raise TypeError(f"{name}: expected an int, given {value!r}")
  if not lo <= value <= hi:
    raise ValueError(f"{name}: expected {lo}..{hi}{what}, given {value}")
  return int(value)


def check_pow2(name: str, value: Any, hi: int, what: str = "") -> int:
  value = check_int(name, value, 1, hi, what)
  if value & (value - 1):
    raise ValueError(f"{name}: expected a power of two (set index = low bits), given {value}")
  return value


def table_geometry(name: str, entries: Any, ways: Any) -> tuple[int, int]:
  """(sets, ways) of a set-associative table of `entries` entries; sets a power of two."""
  entries = check_int(f"{name}_entries", entries, 1, 1 << 24)
  ways = check_int(f"{name}_ways", ways, 1, 256)
  if entries % ways:
    raise ValueError(f"{name}_entries: expected a multiple of {name}_ways ({ways}),"
                     f" given {entries}")
  check_pow2(f"{name}_entries // {name}_ways", entries // ways, 1 << 24)
  return entries // ways, ways


def make_dims(*, region_blocks: int, ft_entries: int, ft_ways: int, at_entries: int,
              at_ways: int, pht_entries: int, pht_ways: int, pb_entries: int) -> Dims:
  region_blocks = check_pow2("region_blocks", region_blocks, 32, " (an int32 footprint)")
  if region_blocks < 2:
    raise ValueError(f"region_blocks: expected 2..32, given {region_blocks}")
  fs, fw = table_geometry("ft", ft_entries, ft_ways)
  as_, aw = table_geometry("at", at_entries, at_ways)
  ps, pw = table_geometry("pht", pht_entries, pht_ways)
  pb = check_int("pb_entries", pb_entries, 1, 1024)
  return Dims(region_blocks, fs, fw, as_, aw, ps, pw, pb)


def make_region_params(dims: Dims, *, ft_entries: int | None = None, ft_ways: int | None = None,
                       at_entries: int | None = None, at_ways: int | None = None,
                       pht_entries: int | None = None, pht_ways: int | None = None,
                       pb_entries: int | None = None, fill_level: str | int = "l1d",
                       threshold_pct: int = 20) -> RegionParams:
  """Checked params; a table's entries / ways default to its allocated size."""
  out = []
  for name, entries, ways, max_sets, max_ways in (
      ("ft", ft_entries, ft_ways, dims.ft_sets, dims.ft_ways),
      ("at", at_entries, at_ways, dims.at_sets, dims.at_ways),
      ("pht", pht_entries, pht_ways, dims.pht_sets, dims.pht_ways)):
    ways = max_ways if ways is None else ways
    check_int(f"{name}_ways", ways, 1, max_ways, " (the allocated ways)")
    entries = max_sets * ways if entries is None else entries
    sets, ways = table_geometry(name, entries, ways)
    if sets > max_sets:
      raise ValueError(f"{name}_entries: expected at most {max_sets} sets of {ways} ways"
                       f" (the allocated table), given {entries} entries")
    out += [np.int32(sets), np.int32(ways)]
  pb = dims.pb_entries if pb_entries is None else pb_entries
  pb = check_int("pb_entries", pb, 1, dims.pb_entries, " (the allocated prefetch buffer)")
  level = hierarchy.level_index(fill_level, name="fill_level")
  pct = check_int("threshold_pct", threshold_pct, 1, 100)
  return RegionParams(*out, np.int32(pb), np.int32(level), np.int32(pct))


def init_region_state(dims: Dims, pparams: Any) -> RegionState:
  del pparams

  def empty(*shape):
    t = np.zeros(shape, np.int32)
    t[..., STAMP] = -1
    return jnp.asarray(t)

  return RegionState(empty(dims.ft_sets, dims.ft_ways, FT_FIELDS),
                     empty(dims.at_sets, dims.at_ways, AT_FIELDS),
                     empty(dims.pht_sets, dims.pht_ways, PHT_FIELDS),
                     empty(dims.pb_entries, PB_FIELDS),
                     jnp.zeros((len(STATS),), jnp.int32))


def pht_set(pc: Any, offset: Any, region_bits: int, sets: Any) -> Any:
  """PHT set of (PC hash, trigger offset); the same formula in JAX and Python ints."""
  fold = pc ^ (pc >> 7) ^ (pc >> 14)
  return ((fold << region_bits) | offset) & (sets - 1)


# ----------------------------------------------------------------------------- the core


def _row(table, index, one):
  """Row `index` of `table`, materialised once (divided by an opaque 1)."""
  row = jax.lax.dynamic_index_in_dim(table, index.astype(jnp.uint32), axis=0, keepdims=False)
  return jax.lax.div(row, one)


def _victim(stamp_W, usable_W):
  """An empty usable way (lowest index), else the least recently used one."""
  return jnp.argmin(jnp.where(usable_W, stamp_W, INT32_MAX)).astype(jnp.int32)


def _put(row_WF, way, new_F, write):
  W = row_WF.shape[0]
  sel_W = (jnp.arange(W, dtype=jnp.int32) == way) & write
  return jnp.where(sel_W[:, None], new_F[None, :], row_WF)


def _or_reduce(x):
  return jax.lax.reduce(x, np.int32(0), jax.lax.bitwise_or, (0,))


def region_issue(kind: str, dims: Dims, pstate: RegionState, cache_state, access: Access, now,
                 budget, pparams: RegionParams):
  """One L1D demand load through FT / AT / PHT / PB (`kind` "sms" or "bingo")."""
  del cache_state, now
  p = pparams
  R = dims.region_blocks
  rbits = R.bit_length() - 1
  i32 = functools.partial(jnp.asarray, dtype=jnp.int32)
  load = access.load
  b = i32(access.block)
  pc = i32(access.pc_hash)
  r = b >> rbits
  o = b & (R - 1)
  bit_o = jnp.left_shift(jnp.int32(1), o)
  stats = pstate.stats
  tick = stats[S_TICK]
  one = 1 + (tick < 0).astype(jnp.int32)

  # ---- FT and AT rows.
  fs = r & (i32(p.ft_sets) - 1)
  as_ = r & (i32(p.at_sets) - 1)
  ft_WF = _row(pstate.ft, fs, one)
  at_WF = _row(pstate.at, as_, one)
  ft_use_W = jnp.arange(dims.ft_ways, dtype=jnp.int32) < i32(p.ft_ways)
  at_use_W = jnp.arange(dims.at_ways, dtype=jnp.int32) < i32(p.at_ways)
  ft_hit_W = ft_use_W & (ft_WF[:, STAMP] >= 0) & (ft_WF[:, REGION] == r)
  at_hit_W = at_use_W & (at_WF[:, STAMP] >= 0) & (at_WF[:, REGION] == r)
  in_at = jnp.any(at_hit_W)
  in_ft = jnp.any(ft_hit_W) & ~in_at
  ft_way = jnp.where(in_ft, jnp.argmax(ft_hit_W), _victim(ft_WF[:, STAMP], ft_use_W))
  ft_way = ft_way.astype(jnp.int32)
  ft_F = jax.lax.dynamic_index_in_dim(ft_WF, ft_way, axis=0, keepdims=False)
  promote = in_ft & (ft_F[TBLOCK] != b)
  trigger = ~in_at & ~in_ft

  at_way = jnp.where(in_at, jnp.argmax(at_hit_W), _victim(at_WF[:, STAMP], at_use_W))
  at_way = at_way.astype(jnp.int32)
  at_F = jax.lax.dynamic_index_in_dim(at_WF, at_way, axis=0, keepdims=False)
  evicted = promote & (at_F[STAMP] >= 0)  # a generation ends: train the PHT with it
  first_bit = jnp.left_shift(jnp.int32(1), ft_F[TBLOCK] & (R - 1))
  at_new_F = jnp.where(
      in_at, jnp.stack([tick, r, at_F[TPC], at_F[TBLOCK], at_F[PATTERN] | bit_o]),
      jnp.stack([tick, r, ft_F[TPC], ft_F[TBLOCK], first_bit | bit_o]))
  at_WF = _put(at_WF, at_way, at_new_F, load & (in_at | promote))
  ft_new_F = jnp.where(
      trigger, jnp.stack([tick, r, pc, b]),
      jnp.where(promote, jnp.full((FT_FIELDS,), -1, jnp.int32), ft_F.at[STAMP].set(tick)))
  ft_WF = _put(ft_WF, ft_way, ft_new_F, load & (trigger | in_ft))

  # ---- PHT: train with the evicted AT entry, or look up on a trigger.
  key_pc = jnp.where(promote, at_F[TPC], pc)
  key_blk = jnp.where(promote, at_F[TBLOCK], b)
  key_off = key_blk & (R - 1)
  ps = pht_set(key_pc, key_off, rbits, i32(p.pht_sets))
  pht_WF = _row(pstate.pht, ps, one)
  pht_use_W = jnp.arange(dims.pht_ways, dtype=jnp.int32) < i32(p.pht_ways)
  short_W = (pht_use_W & (pht_WF[:, STAMP] >= 0) & (pht_WF[:, P_PC] == key_pc)
             & ((pht_WF[:, P_TBLOCK] & (R - 1)) == key_off))
  long_W = short_W & (pht_WF[:, P_TBLOCK] == key_blk)
  exact_W = long_W if kind == "bingo" else short_W
  has_exact = jnp.any(exact_W)
  exact_way = jnp.argmax(exact_W).astype(jnp.int32)
  exact_pattern = jax.lax.dynamic_index_in_dim(pht_WF[:, P_PATTERN], exact_way, keepdims=False)
  # Training: overwrite the entry with the same key, else an LRU (or empty) way.
  train = load & evicted
  train_way = jnp.where(has_exact, exact_way, _victim(pht_WF[:, STAMP], pht_use_W))
  # Lookup on a trigger: the exact key's pattern (and an LRU touch), else (Bingo)
  # the short-event vote.
  look = load & trigger
  if kind == "bingo":
    shift_R = jnp.arange(R, dtype=jnp.int32)
    bits_WR = (pht_WF[:, P_PATTERN][:, None] >> shift_R[None, :]) & 1
    votes_R = jnp.sum(jnp.where(short_W[:, None], bits_WR, 0), axis=0)
    n = jnp.sum(short_W.astype(jnp.int32))
    pick_R = (100 * votes_R >= i32(p.threshold_pct) * n) & (n > 0)
    vote_pattern = _or_reduce(jnp.where(pick_R, jnp.left_shift(jnp.int32(1), shift_R), 0))
    predicted = jnp.where(has_exact, exact_pattern, vote_pattern)
    found = jnp.any(short_W)
  else:
    predicted = exact_pattern
    found = has_exact
  predicted = jnp.where(look & found, predicted, 0)
  pht_way = jnp.where(train, train_way, exact_way)
  pht_new_F = jnp.where(
      train, jnp.stack([tick, key_pc, key_blk, at_F[PATTERN]]),
      jax.lax.dynamic_index_in_dim(pht_WF, exact_way, axis=0, keepdims=False).at[STAMP].set(tick))
  pht_WF = _put(pht_WF, pht_way, pht_new_F, train | (look & has_exact))

  # ---- PB: insert the prediction, clear o, drain.
  pb = pstate.pb
  P = dims.pb_entries
  pb_use_P = jnp.arange(P, dtype=jnp.int32) < i32(p.pb_entries)
  pb_hit_P = pb_use_P & (pb[:, STAMP] >= 0) & (pb[:, B_REGION] == r)
  in_pb = jnp.any(pb_hit_P)
  pb_way = jnp.where(in_pb, jnp.argmax(pb_hit_P), _victim(pb[:, STAMP], pb_use_P))
  pb_way = pb_way.astype(jnp.int32)
  old_pending = jax.lax.dynamic_index_in_dim(pb[:, B_PENDING], pb_way, keepdims=False)
  insert = (predicted & ~bit_o) != 0
  pending = jnp.where(insert, predicted, jnp.where(in_pb, old_pending, 0)) & ~bit_o
  off_K = (o + 1 + jnp.arange(R, dtype=jnp.int32)) & (R - 1)
  bit_K = jnp.left_shift(jnp.int32(1), off_K)
  valid_K = load & ((pending & bit_K) != 0)
  taken_K = protocol.accepted_mask(valid_K, budget)
  pending = pending & ~_or_reduce(jnp.where(taken_K, bit_K, 0))
  pb_new_F = jnp.where(pending != 0, jnp.stack([tick, r, pending]),
                       jnp.full((PB_FIELDS,), -1, jnp.int32))
  # A prediction issued in full takes no entry (and evicts none).
  pb = _put(pb, pb_way, pb_new_F, load & (in_pb | (insert & (pending != 0))))

  cand = Candidates((r << rbits) + off_K, jnp.broadcast_to(i32(p.fill_level), (R,)), valid_K)
  issued = jnp.sum(taken_K.astype(jnp.int32))
  stats = stats + jnp.concatenate(
      [jnp.stack([load, look, look & found, train]).astype(jnp.int32), issued[None]])
  new = RegionState(
      jax.lax.dynamic_update_index_in_dim(pstate.ft, ft_WF, fs.astype(jnp.uint32), axis=0),
      jax.lax.dynamic_update_index_in_dim(pstate.at, at_WF, as_.astype(jnp.uint32), axis=0),
      jax.lax.dynamic_update_index_in_dim(pstate.pht, pht_WF, ps.astype(jnp.uint32), axis=0),
      pb, stats)
  return new, cand


def region_train(pstate, access, hit_l1, now, pparams):
  """All the work is in `issue` (which knows the budget)."""
  del access, hit_l1, now, pparams
  return pstate


def make_prefetcher(kind: str, dims: Dims, name: str, make_params) -> Prefetcher:
  return Prefetcher(
      name=name,
      num_candidates=dims.region_blocks,
      make_params=make_params,
      init=functools.partial(init_region_state, dims),
      train=region_train,
      issue=functools.partial(region_issue, kind, dims),
      self_masking=True,
  )


# ----------------------------------------------------------------------------- SMS


def _sms_make_params(dims: Dims, *, ft_entries: int | None = None, ft_ways: int | None = None,
                     at_entries: int | None = None, at_ways: int | None = None,
                     pht_entries: int | None = None, pht_ways: int | None = None,
                     pb_entries: int | None = None,
                     fill_level: str | int = "l1d") -> RegionParams:
  return make_region_params(dims, ft_entries=ft_entries, ft_ways=ft_ways, at_entries=at_entries,
                            at_ways=at_ways, pht_entries=pht_entries, pht_ways=pht_ways,
                            pb_entries=pb_entries, fill_level=fill_level)


@functools.lru_cache(maxsize=None)
def sms(*, pht_entries: int = 16384, pht_ways: int = 16, ft_entries: int = 64, ft_ways: int = 8,
        at_entries: int = 64, at_ways: int = 8, pb_entries: int = 32,
        region_blocks: int = 32) -> Prefetcher:
  """The SMS prefetcher (module docstring); arguments are the allocated (maximum) sizes.

  Args:
    pht_entries, pht_ways: PHT (default 16K entries, 16-way: 1024 sets; its state
      is 16K x 4 int32 = 256 KiB, updated a row at a time).
    ft_entries, ft_ways, at_entries, at_ways: FT / AT (default 64 x 8 each).
    pb_entries: prefetch buffer entries (default 32, fully associative).
    region_blocks: blocks per region, a power of two <= 32 (default 32: 2 KiB);
      also K, the candidates per access.

  Params (`Prefetcher.make_params`, traced): ``ft_entries``, ``ft_ways``,
  ``at_entries``, ``at_ways``, ``pht_entries``, ``pht_ways`` (each at most the
  allocated sets and ways; default the allocated size), ``pb_entries``,
  ``fill_level`` (default ``"l1d"``).

  >>> pf = sms(pht_entries=256, pht_ways=4)
  >>> int(pf.make_params(pht_entries=128).pht_sets)
  32
  """
  dims = make_dims(region_blocks=region_blocks, ft_entries=ft_entries, ft_ways=ft_ways,
                   at_entries=at_entries, at_ways=at_ways, pht_entries=pht_entries,
                   pht_ways=pht_ways, pb_entries=pb_entries)
  return make_prefetcher("sms", dims, "sms", functools.partial(_sms_make_params, dims))


def _lru_bits(ways: int) -> int:
  return max(0, (ways - 1).bit_length())


def storage_bits(*, pht_entries: int = 16384, pht_ways: int = 16, ft_entries: int = 64,
                 ft_ways: int = 8, at_entries: int = 64, at_ways: int = 8, pb_entries: int = 32,
                 region_blocks: int = 32, pc_bits: int = 16, region_tag_bits: int = 31,
                 pht_tag_bits: int = 11) -> int:
  """Bits of hardware state of SMS with these sizes.

  Per entry (``o = log2(region_blocks)`` offset bits, LRU = log2(ways) bits):
  FT ``region tag + PC + o + LRU``; AT the same plus a ``region_blocks``-bit
  footprint; PHT ``tag + footprint + LRU`` (the tag: the (PC, offset) key bits
  not used by the set index: 16 PC + 5 offset - 10 set bits = 11 by default);
  PB ``region tag + pending footprint + LRU``. The defaults: FT 64 x 55,
  AT 64 x 87, PHT 16384 x 47, PB 32 x 68 bits: 781312 bits = 95.4 KiB,
  dominated by the PHT (770048 bits).
  """
  region_blocks = check_pow2("region_blocks", region_blocks, 32)
  obits = region_blocks.bit_length() - 1
  table_geometry("ft", ft_entries, ft_ways)
  table_geometry("at", at_entries, at_ways)
  table_geometry("pht", pht_entries, pht_ways)
  pb_entries = check_int("pb_entries", pb_entries, 1, 1 << 20)
  ft = ft_entries * (region_tag_bits + pc_bits + obits + _lru_bits(ft_ways))
  at = at_entries * (region_tag_bits + pc_bits + obits + region_blocks + _lru_bits(at_ways))
  pht = pht_entries * (pht_tag_bits + region_blocks + _lru_bits(pht_ways))
  pb = pb_entries * (region_tag_bits + region_blocks + _lru_bits(pb_entries))
  return ft + at + pht + pb
