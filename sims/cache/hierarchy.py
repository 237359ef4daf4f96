"""A three-level data-cache hierarchy (L1D, L2, LLC, DRAM) as arrays, for `lax.scan`.

The system model of the Gaze prefetcher study (``papers/prefetch.md`` 1.1 and
3.2, the Gaze artifact's ChampSim configuration): L1D 48 KB (64 sets x 12 ways,
5 cycles, 16 MSHRs, 16-entry prefetch queue), L2 512 KB (1024 x 8, 10 cycles,
32 MSHRs), LLC 2 MB (2048 x 16, 20 cycles, 64 MSHRs), DRAM ~160 cycles, 64-byte
blocks. Geometry, latencies and replacement policies are static (`CacheConfig`);
what a sweep varies (CPI, DRAM latency, the prefetcher's knobs) is traced
(`Params`), so one compile serves a whole `jax.vmap` sweep.

Shape letters: S sets, W ways, F = 4 line fields, M L1D MSHRs, Q prefetch-queue
entries, L = max(M, Q), C per-level counters, T totals, G wide (cycle) counters,
N the packed statistics vector.

**Lines.** Each level is one int32 table ``[S, W, 4]``; a line holds
``(tag, repl, ready, meta)``:

* ``tag``: the full block number (``byte address >> 6``), -1 for an invalid way;
  ``set = block & (S - 1)`` (S must be a power of two).
* ``repl``: LRU: a timestamp (larger = more recent; -1 invalid); SRRIP: the
  2-bit re-reference prediction value (RRPV) 0..3.
* ``ready``: the cycle at which the line's data arrives (fills are installed at
  once, with their arrival time; see *timing*).
* ``meta`` bits: ``PF`` (1) prefetched and not yet used by a request from above;
  ``DIRTY`` (2); ``ORIGIN`` (bits 2-3): where the line's data came from
  (0 L1D, 1 L2, 2 LLC, 3 DRAM).

**Replacement.** An invalid way is always filled first (lowest index). LRU:
evict the smallest timestamp; every hit and fill stamps the line with the
clock ``state.tick``, which advances with every table update (``_serve``).
SRRIP (Jaleel et al. 2010, 2-bit, hit priority): a hit sets RRPV 0; a fill
inserts at RRPV 2; the victim is the first way with RRPV 3, after adding
``3 - max(RRPV)`` to every way of the set (the usual "age until some way
reaches 3" loop, in one step). Prefetch fills insert like demand fills; a
dropped (redundant) prefetch and a writeback hit change no replacement state.

**Inclusivity: non-inclusive, write-back, write-allocate.** A request looks
levels up from its start level down and fills every level it missed on the way
back up (ChampSim's non-inclusive fill path); evictions never invalidate other
levels. A demand store marks its L1D line dirty (allocating it on a miss).
Writebacks (``CacheConfig.writebacks``):

* ``"direct"`` (default): a dirty L1D victim is one DRAM write, straight away
  (no allocation in L2 / LLC, which never hold dirty lines). Costs nothing
  extra; an upper bound on the cascade's DRAM writes (a line dirtied again
  after coming back from L2 is written twice).
* ``"cascade"`` (ChampSim): a dirty victim of level i is written into level
  i+1: a hit there sets DIRTY (no replacement update), a miss allocates it
  dirty (its victim, if dirty, cascades down); a dirty LLC victim is one DRAM
  write. About 2-3x slower (a loop of writeback micro-ops per request).

**Timing.** An access at instruction count ``instr`` happens at cycle
``now = floor(instr * cpi0)`` (exact: cpi0 is a fraction ``num / den``). A
request that starts at level s and finds its block at level f (f = 3: DRAM)
has the path latency ``P = lat_s + ... + lat_f`` (``lat_3 = dram_latency``).
Its data is back at ``done = max(now + P, ready_f)`` with ``ready_f`` the
found line's ready cycle (0 for DRAM).
Every level filled by the request gets ``ready = done``. A demand access's
latency is ``done - now``: an L1D hit costs 5, an L2 hit 5 + 10, an LLC hit
5 + 10 + 20, DRAM 5 + 10 + 20 + 160. A demand hit on a line whose data is still
in flight (``ready > now``) waits for it: a **late** prefetch hit when the line
carries PF, a **merged** miss (MSHR hit) otherwise.

**L1D MSHRs and the prefetch queue (PQ)** (``state.queues_3L``). Each of the M
L1D MSHRs holds ``(start, ready)``: it is reserved from its allocation until
``ready`` (free when ``ready <= now``) and counts as busy while
``start <= now < ready``. Each of the Q PQ entries holds the cycle it leaves
(busy while ``leave > now``); padding slots hold 2**31 - 1 and never count.

* An L1D demand miss takes an MSHR at once (``start = now``) until its data
  arrives. There is no core model: by default a demand miss that finds all M
  reserved is not delayed (time is ``instr * cpi0`` whatever the memory does;
  an IPC proxy belongs to the metrics, and `runner`'s optional stall feedback
  adds its closed windows' stall to ``now``); it takes over the MSHR that
  frees first (ties: the earliest start) and counts ``mshr_full``.
* **MSHR stall** (``access(..., mshr_stall=True)``, traced; `runner`'s
  ``make_proxy_params(mshr_stall=True)``): such a demand (load or store)
  instead *waits* for that MSHR: ``wait = first_ready - now`` (> 0), and it
  goes on at ``at = now + wait`` as if issued then: ``done = max(at + P,
  ready_f)``, the MSHR holds ``(start = at, ready = done)``, late / merged
  mean ``ready_f > at`` and a late hit's waiting is ``ready_f - at - P``. Its
  latency still counts from ``now`` (``latency = done - now``, the wait
  included; ``demand_latency`` sums it) and ``Outcome.wait`` reports the
  wait; it still counts ``mshr_full``. The clock of later accesses is the
  runner's business (it adds the waits). ``wait <= lat_L1D + lat_L2 +
  lat_LLC + dram_latency``: every ready cycle is at most one full path after
  the cycle that set it. Prefetches never wait (the budget refuses them).
* Every accepted prefetch (any target, redundant ones included) waits in the
  PQ for the L1D lookup: ``leave = now + lat_L1D``. An L1D-target prefetch that
  misses L1D then holds an MSHR: ``start = now + lat_L1D`` (it moves from the
  PQ to the MSHR, counted in one of them at a time) until its data arrives.
* A prefetch may be issued only while ``pq + mshr < M - 1`` and ``pq < Q`` (the
  Gaze artifact's drain rule, `can_issue`). Every prefetch accepted at cycle
  ``now`` is in the PQ at ``now``, so one access accepts exactly
  ``issue_budget = max(0, min(M - 1 - pq - mshr, Q - pq))`` in a row.

**Prefetch fills** (`prefetch`). A prefetch to level t (0 L1D, 1 L2, 2 LLC)
already present at t is dropped (``pf_redundant[t]``; no state change but its PQ
entry). Otherwise it is a request starting at t: levels t..f-1 are filled
(``ready = done``), the line at t gets PF (``pf_fill[t]``); lower levels filled
on the way get no PF. A request from above (a demand, or a prefetch to a higher
level) that hits a PF line clears PF and counts it useful at that level
(ChampSim's rule: an L1D prefetch hitting an L2-prefetched line makes that
prefetch useful); a PF line evicted with PF still set counts useless.

**Counters** (`counters`): per level (``LEVEL_COUNTERS``) ``access`` (demand
lookups reaching the level), ``hit``, ``miss``, ``load_access``, ``load_miss``,
``late``, ``merged``, ``pf_fill``, ``pf_useful``, ``pf_useless``,
``pf_redundant``, ``writeback`` (dirty victims sent down); totals (``TOTALS``)
loads, stores, DRAM reads by demands and by prefetches, DRAM writes, demand
misses that found every MSHR busy, prefetch candidates / issued / refused (the
runner's), the first and last instruction count; wide cycle sums (``WIDE``) of
demand latency and of late-hit waiting (cycles beyond the path latency). They
live packed in ``state.stats`` (``state.counters_LC`` etc. unpack them);
`summarize` turns them into the paper's metrics.

**Speed on XLA:CPU** (measured on jax 0.10.2; see `_serve`): each kernel in a
`lax.scan` body costs ~0.1-0.2 us once the body has more than about ten (XLA's
thunk executor), whatever the kernel does; a cheap row read consumed in several
places is re-done by each consumer, some after the table's in-place update,
which makes XLA copy the whole table every step (~0.5 ms for the LLC). So a
request is one micro-op that reads one row per table (materialised once by a
division by an opaque 1), scans the three rows with one variadic reduction,
picks MSHR / PQ slots with another and writes each table once; counters,
MSHRs and PQ travel packed in one int32 vector. A step is ~20 kernels.

>>> import jax.numpy as jnp
>>> from jaxsys.sims.cache import hierarchy as h
>>> config = h.CacheConfig.make(l1d=dict(sets=2, ways=2), l2=dict(sets=2, ways=2),
...                             llc=dict(sets=2, ways=2))
>>> params = h.make_params()
>>> state = h.init(config)
>>> state, out = h.access(state, jnp.int32(7), jnp.bool_(False), jnp.int32(0), params, config)
>>> int(out.level), int(out.latency)          # DRAM: 5 + 10 + 20 + 160
(3, 195)
>>> state, out = h.access(state, jnp.int32(7), jnp.bool_(False), jnp.int32(300), params, config)
>>> int(out.level), int(out.latency)          # L1D hit
(0, 5)
"""

from __future__ import annotations

import dataclasses
import fractions
from collections.abc import Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

LEVELS = ("l1d", "l2", "llc")
L1D, L2, LLC, DRAM = 0, 1, 2, 3
REPLACEMENTS = ("lru", "srrip")
WRITEBACKS = ("direct", "cascade")

# Line fields (last axis of a level table).
TAG, REPL, READY, META = range(4)
NUM_FIELDS = 4
# Meta bits.
PF = 1
DIRTY = 2
ORIGIN_SHIFT = 2
ORIGIN_MASK = 3 << ORIGIN_SHIFT

SRRIP_MAX = 3  # 2-bit RRPV
SRRIP_INSERT = 2  # "long" re-reference interval on fill

# The LRU clock advances by one per micro-op (`_serve`): a request is one
# micro-op plus at most two writeback micro-ops.
TICKS_PER_REQUEST = 3

LEVEL_COUNTERS = ("access", "hit", "miss", "load_access", "load_miss", "late", "merged",
                  "pf_fill", "pf_useful", "pf_useless", "pf_redundant", "writeback")
(C_ACCESS, C_HIT, C_MISS, C_LOAD_ACCESS, C_LOAD_MISS, C_LATE, C_MERGED, C_PF_FILL,
 C_PF_USEFUL, C_PF_USELESS, C_PF_REDUNDANT, C_WRITEBACK) = range(len(LEVEL_COUNTERS))
TOTALS = ("loads", "stores", "dram_read_demand", "dram_read_prefetch", "dram_write",
          "mshr_full", "pf_candidates", "pf_issued", "pf_refused", "first_instr",
          "last_instr")
(T_LOADS, T_STORES, T_DRAM_READ_DEMAND, T_DRAM_READ_PREFETCH, T_DRAM_WRITE, T_MSHR_FULL,
 T_PF_CANDIDATES, T_PF_ISSUED, T_PF_REFUSED, T_FIRST_INSTR, T_LAST_INSTR) = range(len(TOTALS))
WIDE = ("demand_latency", "late_cycles")
W_DEMAND_LATENCY, W_LATE_CYCLES = range(len(WIDE))
_WIDE_BITS = 24  # a wide counter is hi * 2**24 + lo, 0 <= lo < 2**24

DEFAULT_DRAM_LATENCY = 160
# Cycles must stay below this (int32 with room for the latencies added to them).
MAX_CYCLE = 2**30
_BIG = 2**31 - 1  # an MSHR / PQ padding slot (never busy, never chosen); a never-victim key
_PAD_TAG = -2  # tag of the padding ways that stack levels of different associativity

# Layout of the packed statistics vector ``CacheState.stats``.
_NC, _NT, _NG = len(LEVEL_COUNTERS), len(TOTALS), len(WIDE)
O_TOTALS = 3 * _NC
O_WIDE = O_TOTALS + _NT
O_TICK = O_WIDE + 2 * _NG
O_QUEUES = O_TICK + 1  # then the queues [3, L] (MSHR ready, PQ leave, MSHR start)


# ----------------------------------------------------------------------------- config


def _check_int(owner: str, name: str, value: Any, lo: int) -> None:
  if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
    raise TypeError(f"{owner}.{name}: expected an int, given {value!r}")
  if value < lo:
    raise ValueError(f"{owner}.{name}: expected an int >= {lo}, given {value}")


@dataclasses.dataclass(frozen=True)
class LevelConfig:
  """One cache level (static).

  Attributes:
    sets: number of sets, a power of two (``set = block & (sets - 1)``).
    ways: associativity.
    latency: lookup latency in cycles (>= 1).
    mshr: miss status holding registers (only the L1D's are modelled; see the
      module docstring).
    replacement: ``"lru"`` or ``"srrip"``.
  """

  sets: int
  ways: int
  latency: int
  mshr: int
  replacement: str = "lru"

  def __post_init__(self):
    _check_int("LevelConfig", "sets", self.sets, 1)
    if self.sets & (self.sets - 1):
      raise ValueError(
          f"LevelConfig.sets: expected a power of two (the set index is the low bits"
          f" of the block number), given {self.sets}")
    _check_int("LevelConfig", "ways", self.ways, 1)
    _check_int("LevelConfig", "latency", self.latency, 1)
    _check_int("LevelConfig", "mshr", self.mshr, 1)
    if self.replacement not in REPLACEMENTS:
      raise ValueError(
          f"LevelConfig.replacement: expected one of {', '.join(map(repr, REPLACEMENTS))},"
          f" given {self.replacement!r}")

  @property
  def bytes(self) -> int:
    """Capacity in bytes (64-byte blocks)."""
    return self.sets * self.ways * 64


_DEFAULT_LEVELS = {
    "l1d": LevelConfig(sets=64, ways=12, latency=5, mshr=16),  # 48 KB
    "l2": LevelConfig(sets=1024, ways=8, latency=10, mshr=32),  # 512 KB
    "llc": LevelConfig(sets=2048, ways=16, latency=20, mshr=64),  # 2 MB
}


@dataclasses.dataclass(frozen=True)
class CacheConfig:
  """Static geometry of the hierarchy (hashable: a `jax.jit` static argument).

  Attributes:
    l1d, l2, llc: the levels (default: the Gaze artifact's 48 KB / 512 KB / 2 MB).
    pq_size: entries of the L1D prefetch queue (default 16).
    writebacks: ``"direct"`` (default) or ``"cascade"`` (see the module
      docstring).

  Use `CacheConfig.make` to override fields by level name.
  """

  l1d: LevelConfig = _DEFAULT_LEVELS["l1d"]
  l2: LevelConfig = _DEFAULT_LEVELS["l2"]
  llc: LevelConfig = _DEFAULT_LEVELS["llc"]
  pq_size: int = 16
  writebacks: str = "direct"

  def __post_init__(self):
    for name in LEVELS:
      value = getattr(self, name)
      if not isinstance(value, LevelConfig):
        raise TypeError(f"CacheConfig.{name}: expected a LevelConfig, given {value!r}")
    _check_int("CacheConfig", "pq_size", self.pq_size, 1)
    if self.writebacks not in WRITEBACKS:
      raise ValueError(
          f"CacheConfig.writebacks: expected one of {', '.join(map(repr, WRITEBACKS))},"
          f" given {self.writebacks!r}")

  @property
  def levels(self) -> tuple[LevelConfig, LevelConfig, LevelConfig]:
    return (self.l1d, self.l2, self.llc)

  @classmethod
  def make(cls, *, replacement: str | None = None, pq_size: int = 16, writebacks: str = "direct",
           **levels: LevelConfig | Mapping[str, Any]) -> "CacheConfig":
    """The default hierarchy with some fields replaced.

    Args:
      replacement: if given, the replacement policy of every level (a level's
        own ``replacement`` entry wins).
      pq_size, writebacks: as the attributes.
      **levels: ``l1d=``, ``l2=``, ``llc=``: a `LevelConfig`, or a dict of the
        fields to change in the default level (``l1d=dict(sets=2, ways=2)``).

    Raises:
      ValueError: an unknown level name or field.

    >>> CacheConfig.make(replacement="srrip", l1d=dict(sets=2, ways=2)).l1d
    LevelConfig(sets=2, ways=2, latency=5, mshr=16, replacement='srrip')
    """
    fields = {f.name for f in dataclasses.fields(LevelConfig)}
    built = {}
    for name in LEVELS:
      base = _DEFAULT_LEVELS[name]
      if replacement is not None:
        base = dataclasses.replace(base, replacement=replacement)
      given = levels.get(name)
      if isinstance(given, LevelConfig):
        built[name] = given
      elif given is None:
        built[name] = base
      elif isinstance(given, Mapping):
        bad = sorted(set(given) - fields)
        if bad:
          raise ValueError(
              f"{name}: unknown LevelConfig field(s) {bad}; expected some of {sorted(fields)}")
        built[name] = dataclasses.replace(base, **given)
      else:
        raise TypeError(f"{name}: expected a LevelConfig or a dict of fields, given {given!r}")
    bad = sorted(set(levels) - set(LEVELS))
    if bad:
      raise ValueError(
          f"levels: expected names among {', '.join(map(repr, LEVELS))}, given {bad}")
    return cls(**built, pq_size=pq_size, writebacks=writebacks)


def level_index(level: str | int, *, name: str = "level", allow_dram: bool = False) -> int:
  """The index of a level name (``"l1d"`` 0, ``"l2"`` 1, ``"llc"`` 2), checked.

  Raises:
    ValueError: an unknown name or an index out of range.
  """
  top = DRAM if allow_dram else LLC
  names = LEVELS + (("dram",) if allow_dram else ())
  if isinstance(level, str):
    if level not in names:
      raise ValueError(f"{name}: expected one of {', '.join(map(repr, names))}, given {level!r}")
    return names.index(level)
  if isinstance(level, (int, np.integer)) and not isinstance(level, bool):
    if not 0 <= level <= top:
      raise ValueError(f"{name}: expected 0..{top} ({', '.join(names)}), given {level}")
    return int(level)
  raise TypeError(f"{name}: expected a level name ({', '.join(names)}) or an int, given {level!r}")


# ----------------------------------------------------------------------------- params


class Params(NamedTuple):
  """What a sweep varies (any leaf may carry a leading sweep axis)."""

  cpi0_num: Any  # [] int32 cycles per instruction = cpi0_num / cpi0_den (both >= 1)
  cpi0_den: Any  # [] int32
  dram_latency: Any  # [] int32 cycles of a DRAM access (>= 1)
  prefetcher: Any  # the prefetcher's own params pytree (protocol.Prefetcher.make_params)


def make_params(cpi0: float | int | fractions.Fraction = 1,
                dram_latency: int = DEFAULT_DRAM_LATENCY,
                prefetcher: Any = ()) -> Params:
  """Checked `Params` of one run (numpy scalars: building them compiles nothing).

  Args:
    cpi0: cycles per instruction of the core between memory accesses; stored
      as an exact fraction with denominator <= 1000 (0.25 -> 1/4).
    dram_latency: DRAM latency in cycles (default 160).
    prefetcher: the prefetcher's params (``prefetcher.make_params(...)``;
      ``()`` for the ``none`` prefetcher).
  """
  if isinstance(cpi0, bool) or not isinstance(cpi0, (int, float, fractions.Fraction, np.integer,
                                                     np.floating)):
    raise TypeError(f"cpi0: expected a positive number, given {cpi0!r}")
  if not cpi0 > 0 or not np.isfinite(float(cpi0)):
    raise ValueError(f"cpi0: expected a positive finite number, given {cpi0!r}")
  frac = fractions.Fraction(cpi0).limit_denominator(1000)
  if frac.numerator < 1 or frac.numerator > 2**16:
    raise ValueError(f"cpi0: expected a value in [1/1000, 65536], given {cpi0!r}")
  if isinstance(dram_latency, bool) or not isinstance(dram_latency, (int, np.integer)):
    raise TypeError(f"dram_latency: expected an int, given {dram_latency!r}")
  if not 1 <= dram_latency <= 2**20:
    raise ValueError(f"dram_latency: expected 1..{2**20} cycles, given {dram_latency}")
  return Params(np.int32(frac.numerator), np.int32(frac.denominator), np.int32(dram_latency),
                prefetcher)


def stack_params(params: list[Params]) -> Params:
  """Stacks single-run `Params` along a new leading sweep axis (numpy leaves)."""
  if not params:
    raise ValueError("params: expected at least one Params to stack, given none")
  return jax.tree.map(lambda *xs: np.stack([np.asarray(x) for x in xs]), *params)


def cycle_of(instr: jax.Array, params: Params) -> jax.Array:
  """``floor(instr * cpi0_num / cpi0_den)`` in int32 without overflowing the product."""
  instr = jnp.asarray(instr, jnp.int32)
  num = jnp.asarray(params.cpi0_num, jnp.int32)
  den = jnp.asarray(params.cpi0_den, jnp.int32)
  return (instr // den) * num + ((instr % den) * num) // den


# ----------------------------------------------------------------------------- state


class CacheState(NamedTuple):
  """The whole hierarchy: line tables, L1D MSHRs and PQ, packed statistics."""

  l1d: jax.Array  # [S1, W1, 4] int32 (tag, repl, ready, meta) per line
  l2: jax.Array  # [S2, W2, 4] int32
  llc: jax.Array  # [S3, W3, 4] int32
  stats: jax.Array  # [N] int32 counters [3, C] | totals [T] | wide [G, 2] | tick | queues [3, L]

  @property
  def tables(self) -> tuple[jax.Array, jax.Array, jax.Array]:
    return (self.l1d, self.l2, self.llc)

  @property
  def counters_LC(self) -> jax.Array:
    """[..., 3, C] int32 per-level counters (LEVEL_COUNTERS)."""
    return self.stats[..., :O_TOTALS].reshape(self.stats.shape[:-1] + (3, _NC))

  @property
  def totals_T(self) -> jax.Array:
    """[..., T] int32 totals (TOTALS)."""
    return self.stats[..., O_TOTALS:O_WIDE]

  @property
  def wide_G2(self) -> jax.Array:
    """[..., G, 2] int32 (lo, hi) cycle sums (WIDE), value = hi * 2**24 + lo."""
    return self.stats[..., O_WIDE:O_TICK].reshape(self.stats.shape[:-1] + (_NG, 2))

  @property
  def queues_3L(self) -> jax.Array:
    """[..., 3, L] int32: row 0 the L1D MSHRs' ready cycles (M slots), row 1 the
    PQ entries' leave cycles (Q slots), row 2 the MSHRs' start cycles; padding
    slots hold 2**31 - 1 (L = max(M, Q))."""
    return self.stats[..., O_QUEUES:].reshape(self.stats.shape[:-1] + (3, -1))

  @property
  def tick(self) -> jax.Array:
    """[...] int32 the LRU clock, +1 per micro-op (<= TICKS_PER_REQUEST per request)."""
    return self.stats[..., O_TICK]


class Outcome(NamedTuple):
  """What one demand access did."""

  level: jax.Array  # [] int32 where it was found: 0 L1D, 1 L2, 2 LLC, 3 DRAM
  late: jax.Array  # [] bool hit a prefetched line whose data was still in flight
  pf_hit: jax.Array  # [] bool first demand use of a prefetched line (at `level`)
  latency: jax.Array  # [] int32 cycles until the data is back (done - now), a wait included
  wait: jax.Array  # [] int32 cycles waited for a free L1D MSHR (0 unless mshr_stall)


def init(config: CacheConfig) -> CacheState:
  """Empty caches (every tag -1), free MSHRs and PQ, zero counters."""

  def table(lc: LevelConfig) -> jax.Array:
    return jnp.asarray(np.broadcast_to(np.array([-1, -1, 0, 0], np.int32),
                                       (lc.sets, lc.ways, NUM_FIELDS)))

  M, Q = config.l1d.mshr, config.pq_size
  queues = np.full((3, max(M, Q)), _BIG, np.int32)
  queues[0, :M] = 0
  queues[1, :Q] = 0
  queues[2, :M] = 0
  stats = np.zeros((O_QUEUES,), np.int32)
  stats[O_TOTALS + T_FIRST_INSTR] = -1
  stats[O_TOTALS + T_LAST_INSTR] = -1
  stats = np.concatenate([stats, queues.reshape(-1)])
  return CacheState(l1d=table(config.l1d), l2=table(config.l2), llc=table(config.llc),
                    stats=jnp.asarray(stats))


def busy_slots(state: CacheState, now: int) -> tuple[list[tuple[int, int]], list[int]]:
  """The queues at `now` (numpy, for tests): the sorted ``(start, ready)`` of the
  MSHRs still reserved (``ready > now``) and the sorted leave cycles of the PQ
  entries still busy."""
  q = np.asarray(state.queues_3L)
  held = (q[0] > now) & (q[0] < _BIG)
  return (sorted((int(a), int(b)) for a, b in zip(q[2][held], q[0][held])),
          [int(x) for x in sorted(q[1][(q[1] > now) & (q[1] < _BIG)])])


def restart_stats(state: CacheState, when: jax.Array | bool = True) -> CacheState:
  """The statistics restarted (where `when`): every counter, total and wide sum
  back to its initial value (``first_instr`` / ``last_instr`` -1), as at the
  end of a warm-up. The tables, the LRU clock and the queues are kept."""
  n = state.stats.shape[-1]
  fresh = np.zeros((n,), np.int32)
  fresh[O_TOTALS + T_FIRST_INSTR] = -1
  fresh[O_TOTALS + T_LAST_INSTR] = -1
  counters = np.arange(n) < O_TICK
  return state._replace(stats=jnp.where(jnp.asarray(when, jnp.bool_) & counters, fresh,
                                        state.stats))


def bump(state: CacheState, **totals: jax.Array) -> CacheState:
  """Adds to totals by name (``bump(state, pf_issued=n)``), as one fused update."""
  pos = np.arange(state.stats.shape[-1], dtype=np.int32)
  inc = jnp.zeros(state.stats.shape[-1:], jnp.int32)
  for name, value in totals.items():
    inc = jnp.where(pos == O_TOTALS + TOTALS.index(name), _i32(value), inc)
  return state._replace(stats=state.stats + inc)


# ----------------------------------------------------------------------------- rows


def _i32(x: Any) -> jax.Array:
  return jnp.asarray(x, jnp.int32)


def _one_hot_level(level: jax.Array, value: jax.Array) -> jax.Array:
  """[3] int32: `value` at index `level` (nothing if level is 3)."""
  return jnp.where(np.arange(3, dtype=np.int32) == level, _i32(value), 0)


def _scan_ways(rows_3W4: jax.Array, block_3: jax.Array, srrip_3: np.ndarray):
  """One variadic reduction over the ways of the three stacked rows.

  Returns per level ``(hit, hit_ready, hit_meta, victim_key, victim_way,
  victim_tag, victim_meta)`` ([3] int32 each): the line holding the block (hit
  count 0 or 1, its ready cycle and meta) and the replacement victim, the way
  with the smallest key (ties: first way): -1 for an invalid way, LRU's stamp,
  SRRIP's ``3 - RRPV``; padding ways never.
  """
  tag = rows_3W4[..., TAG]
  repl = rows_3W4[..., REPL]
  hit = tag == block_3[:, None]
  srrip = jnp.asarray(srrip_3)[:, None]
  key = jnp.where(tag == _PAD_TAG, _BIG,
                  jnp.where(tag == -1, -1, jnp.where(srrip, SRRIP_MAX - repl, repl)))
  way = jnp.broadcast_to(jnp.arange(tag.shape[1], dtype=jnp.int32), tag.shape)
  operands = (hit.astype(jnp.int32), jnp.where(hit, rows_3W4[..., READY], 0),
              jnp.where(hit, rows_3W4[..., META], 0), key, way, tag, rows_3W4[..., META])

  def reducer(x, y):
    take_x = (x[3] < y[3]) | ((x[3] == y[3]) & (x[4] < y[4]))
    picked = tuple(jnp.where(take_x, a, b) for a, b in zip(x[3:], y[3:]))
    return (x[0] + y[0], x[1] + y[1], x[2] + y[2]) + picked

  zero = jnp.int32(0)
  big = jnp.int32(_BIG)
  return jax.lax.reduce(operands, (zero, zero, zero, big, big, zero, zero), reducer, (1,))


def _argmin_pairs(key_2L: jax.Array, tie_2L: jax.Array) -> jax.Array:
  """[2] int32: per row, the index of the smallest (key, tie) pair (then the first)."""
  lane = jnp.broadcast_to(jnp.arange(key_2L.shape[1], dtype=jnp.int32), key_2L.shape)

  def reducer(x, y):
    take_x = (x[0] < y[0]) | ((x[0] == y[0]) & ((x[1] < y[1]) | ((x[1] == y[1]) & (x[2] < y[2]))))
    return tuple(jnp.where(take_x, a, b) for a, b in zip(x, y))

  big = jnp.int32(_BIG)
  return jax.lax.reduce((key_2L, tie_2L, lane), (big, big, big), reducer, (1,))[2]


def _add_wide(wide_G2: jax.Array, inc_G: jax.Array) -> jax.Array:
  lo = wide_G2[:, 0] + inc_G
  hi = wide_G2[:, 1] + (lo >> _WIDE_BITS)
  return jnp.stack([lo & ((1 << _WIDE_BITS) - 1), hi], axis=1)


# ----------------------------------------------------------------------------- requests


class _Served(NamedTuple):
  """Registers of the last request a `_serve` loop ran."""

  level: jax.Array  # [] int32 found level
  late: jax.Array  # [] bool
  pf_hit: jax.Array  # [] bool
  latency: jax.Array  # [] int32
  filled: jax.Array  # [] bool (prefetch) not dropped as redundant
  wait: jax.Array  # [] int32 (demand, MSHR stall) cycles waited for a free L1D MSHR


# Loop registers of `_serve` (one int32 vector, so that the loop carries few buffers).
(_R_CURSOR, _R_WB_BLOCK1, _R_WB_BLOCK2, _R_WB_ON1, _R_WB_ON2, _R_LEVEL, _R_LATE, _R_PF_HIT,
 _R_LATENCY, _R_FILLED, _R_WAIT) = range(11)
_NUM_REGS = 11
# Up to this many requests per `_serve` call run as straight-line micro-ops
# (measured ~2.5 us each on the 2-core CPU here) rather than as iterations of
# one loop (~5 us each, but only as many as there are requests).
_UNROLL_REQUESTS = 2


def _serve(config: CacheConfig, state: CacheState, params: Params, now: jax.Array,
           block_R: jax.Array, start_R: jax.Array, order_R: jax.Array, count: jax.Array, *,
           demand: bool, is_store: jax.Array,
           instr: jax.Array | None = None,
           mshr_stall: jax.Array | bool = False) -> tuple[CacheState, _Served]:
  """Runs requests ``block_R[order_R[j]]`` for ``j < count`` (demands if `demand`,
  else prefetches to level ``start_R``) as a sequence of micro-ops.

  A micro-op reads one row of each table, updates it and writes it back once:
  either the next request (lookups at every level, fills, MSHR / PQ, counters)
  or, in ``"cascade"`` mode while writebacks are pending, one writeback per
  level (L1D victim -> L2 and L2 victim -> LLC together, then that L2 write's
  own victim -> LLC). A demand micro-op also counts the load / store and
  records `instr`. With R <= `_UNROLL_REQUESTS` the request micro-ops are
  straight-line code, masked beyond `count` (a cascade's writebacks, rare, are
  a `lax.while_loop`); otherwise one `lax.while_loop` runs exactly the needed
  micro-ops. With `mshr_stall` (traced; demands only) a demand L1D miss that
  finds every MSHR reserved waits until the first frees (module docstring).
  """
  R = block_R.shape[0]
  lcs = config.levels
  W = max(lc.ways for lc in lcs)
  lat = [lc.latency for lc in lcs]
  cum = [0, lat[0], lat[0] + lat[1], lat[0] + lat[1] + lat[2]]
  srrip_3 = np.array([lc.replacement == "srrip" for lc in lcs])
  cascade = config.writebacks == "cascade"
  dram_latency = _i32(params.dram_latency)
  now = _i32(now)
  is_store = jnp.asarray(is_store, jnp.bool_)
  instr = jnp.int32(-1) if instr is None else _i32(instr)
  count = _i32(count)
  mshr_stall = jnp.asarray(mshr_stall, jnp.bool_)
  level_3 = np.arange(3, dtype=np.int32)  # numpy constants: no kernel per step
  zero_3 = jnp.zeros((3,), jnp.int32)
  false = jnp.asarray(False)
  pads = [np.broadcast_to(np.array([_PAD_TAG, 0, 0, 0], np.int32), (W - lc.ways, NUM_FIELDS))
          for lc in lcs]
  num_stats = state.stats.shape[-1]
  L = (num_stats - O_QUEUES) // 3
  stat_pos = np.arange(num_stats, dtype=np.int32)

  def cond(carry):
    regs = carry[-1]
    return (regs[_R_CURSOR] < count) | (regs[_R_WB_ON1] != 0) | (regs[_R_WB_ON2] != 0)

  def body(carry):
    t1, t2, t3, stats, regs = carry
    queues = stats[O_QUEUES:].reshape(3, L)
    tables = [t1, t2, t3]
    tick = stats[O_TICK]
    active = cond(carry)
    pending = (regs[_R_WB_ON1] != 0) | (regs[_R_WB_ON2] != 0)
    main = active & ~pending
    r = order_R[jnp.minimum(regs[_R_CURSOR], R - 1)]
    req_block = block_R[r]
    start = jnp.where(main, start_R[r], 0).astype(jnp.int32)
    block_3 = jnp.stack([req_block, jnp.where(main, req_block, regs[_R_WB_BLOCK1]),
                         jnp.where(main, req_block, regs[_R_WB_BLOCK2])])
    # Unsigned set indices: lax skips its negative-index fix-up (one kernel each).
    sets = [(block_3[i] & (lcs[i].sets - 1)).astype(jnp.uint32) for i in range(3)]
    rows = [jax.lax.dynamic_index_in_dim(tables[i], sets[i], axis=0, keepdims=False)
            for i in range(3)]
    rows = [jnp.concatenate([rows[i], pads[i]]) if lcs[i].ways < W else rows[i]
            for i in range(3)]
    # Dividing by a 1 that XLA cannot see materialises the rows once (a slice
    # would otherwise be re-done by each consumer, some after the write).
    rows_3W4 = jax.lax.div(jnp.stack(rows), 1 + (tick < 0).astype(jnp.int32))
    hit_3, hit_ready_3, hit_meta_3, vkey_3, vway_3, vtag_3, vmeta_3 = _scan_ways(
        rows_3W4, block_3, srrip_3)
    present_3 = hit_3 > 0

    # The request: where the block is, when its data is back.
    on_path = [present_3[i] & (i >= start) for i in range(3)]
    found = jnp.where(on_path[0], 0, jnp.where(on_path[1], 1, jnp.where(on_path[2], 2, DRAM)))
    found = found.astype(jnp.int32)
    found_ready = jnp.where(found == 0, hit_ready_3[0],
                            jnp.where(found == 1, hit_ready_3[1],
                                      jnp.where(found == 2, hit_ready_3[2], 0)))
    found_meta = jnp.where(found == 0, hit_meta_3[0],
                           jnp.where(found == 1, hit_meta_3[1],
                                     jnp.where(found == 2, hit_meta_3[2], 0)))
    found_pf = (found_meta & PF) != 0
    redundant = false if demand else found == start
    do = main & ~redundant
    cum_found = jnp.where(found == 0, cum[1], jnp.where(found == 1, cum[2], cum[3]))
    cum_found = cum_found + jnp.where(found == DRAM, dram_latency, 0)
    cum_start = jnp.where(start == 0, 0, jnp.where(start == 1, cum[1], cum[2]))
    path = (cum_found - cum_start).astype(jnp.int32)

    # An L1D MSHR (demand L1D misses at once; L1D-target prefetch misses after
    # the PQ) and a PQ entry (every prefetch): the slot that frees first (a
    # free one if any; MSHR ties to the earliest start), one reduction. With
    # `mshr_stall`, a demand finding every MSHR reserved goes on at `at`, the
    # cycle that slot frees (its latency still counts from `now`).
    slot_2 = _argmin_pairs(queues[:2], jnp.stack([queues[2], jnp.zeros_like(queues[2])]))
    uses_mshr = do & (start == L1D) & (found > L1D)
    first_free = queues[0, slot_2[0]]
    mshr_full = uses_mshr & (first_free > now)
    if demand:
      wait = jnp.where(mshr_full & mshr_stall, first_free - now, 0).astype(jnp.int32)
      at = now + wait
    else:
      wait, at = jnp.int32(0), now
    done = jnp.maximum(at + path, found_ready).astype(jnp.int32)
    latency = done - now
    uses_pq = false if demand else main
    after_pq = now + lat[0]
    lane = np.arange(L, dtype=np.int32)[None, :]
    queues = jnp.where(
        (lane == jnp.stack([slot_2[0], slot_2[1], slot_2[0]])[:, None])
        & jnp.stack([uses_mshr, uses_pq, uses_mshr])[:, None],
        jnp.stack([done, after_pq, at if demand else after_pq])[:, None], queues)
    late = do & found_pf & (found_ready > at) if demand else false
    merged = do & ~found_pf & (found < DRAM) & (found_ready > at) if demand else false
    pf_useful = do & found_pf

    # Per level: the request's hit / fill, or a writeback (hit: set DIRTY;
    # miss: allocate dirty).
    wb_3 = active & jnp.stack([false, regs[_R_WB_ON1] != 0, regs[_R_WB_ON2] != 0])
    m_hit_3 = do & (found == level_3)
    m_fill_3 = do & (level_3 >= start) & (level_3 < found)
    if demand:
      m_set_3 = jnp.where(is_store & (level_3 == 0), DIRTY, 0)
      m_meta_3 = m_set_3 | (found << ORIGIN_SHIFT)
    else:
      m_set_3 = zero_3
      m_meta_3 = jnp.where(level_3 == start, PF, 0) | (found << ORIGIN_SHIFT)
    do_hit_3 = m_hit_3 | (wb_3 & present_3)
    do_fill_3 = m_fill_3 | (wb_3 & ~present_3)
    fill_meta_3 = jnp.where(main, m_meta_3, DIRTY | ((level_3 - 1) << ORIGIN_SHIFT))
    hit_clear = jnp.where(main, PF, 0)
    hit_set_3 = jnp.where(main, m_set_3, DIRTY)
    fill_ready = jnp.where(main, done, now)

    tag_3W = rows_3W4[..., TAG]
    repl_3W = rows_3W4[..., REPL]
    vic_3W = np.arange(W, dtype=np.int32)[None, :] == vway_3[:, None]
    touch_3W = do_hit_3[:, None] & (tag_3W == block_3[:, None])
    fill_3W = do_fill_3[:, None] & vic_3W
    srrip = jnp.asarray(srrip_3)[:, None]
    age_3 = jnp.where(jnp.asarray(srrip_3), jnp.maximum(vkey_3, 0), 0)
    aged_3W = jnp.where(tag_3W >= 0, repl_3W + age_3[:, None], repl_3W)
    repl_new = jnp.where(touch_3W & main, jnp.where(srrip, 0, tick), repl_3W)
    repl_new = jnp.where(do_fill_3[:, None],
                         jnp.where(vic_3W, jnp.where(srrip, SRRIP_INSERT, tick), aged_3W),
                         repl_new)
    meta_3W = rows_3W4[..., META]
    meta_3W = jnp.where(touch_3W, (meta_3W & ~hit_clear) | hit_set_3[:, None], meta_3W)
    new_3W4 = jnp.stack([
        jnp.where(fill_3W, block_3[:, None], tag_3W),
        repl_new,
        jnp.where(fill_3W, fill_ready, rows_3W4[..., READY]),
        jnp.where(fill_3W, fill_meta_3[:, None], meta_3W),
    ], axis=-1)
    tables = [jax.lax.dynamic_update_index_in_dim(tables[i], new_3W4[i, :lcs[i].ways], sets[i],
                                                  axis=0) for i in range(3)]

    evicted_3 = do_fill_3 & (vtag_3 >= 0)
    useless_3 = (evicted_3 & ((vmeta_3 & PF) != 0)).astype(jnp.int32)
    wb_out_3 = (evicted_3 & ((vmeta_3 & DIRTY) != 0)).astype(jnp.int32)
    dram_write = wb_out_3[2] if cascade else wb_out_3[0]

    # Counters: the whole stats vector in one elementwise expression.
    if demand:
      looked = (do & (level_3 <= found)).astype(jnp.int32)
      load = (~is_store).astype(jnp.int32)
      miss_3 = (do & (level_3 < found)).astype(jnp.int32)
      cols = [looked, _one_hot_level(found, do), miss_3, looked * load, miss_3 * load,
              _one_hot_level(found, late), _one_hot_level(found, merged), zero_3,
              _one_hot_level(found, pf_useful), useless_3, zero_3, wb_out_3]
      wide_inc = jnp.stack([jnp.where(do, latency, 0),
                            jnp.where(late, jnp.maximum(found_ready - at - path, 0), 0)])
      wide = _add_wide(stats[O_WIDE:O_TICK].reshape(_NG, 2), wide_inc.astype(jnp.int32))
    else:
      cols = [zero_3] * 7 + [_one_hot_level(start, do), _one_hot_level(found, pf_useful),
                             useless_3, _one_hot_level(start, main & redundant), wb_out_3]
      wide = stats[O_WIDE:O_TICK].reshape(_NG, 2)
    inc = jnp.zeros((num_stats,), jnp.int32)
    for c, values in enumerate(cols):
      for i in range(3):
        inc = jnp.where(stat_pos == i * _NC + c, values[i], inc)
    dram_read = (do & (found == DRAM)).astype(jnp.int32)
    totals = [(T_DRAM_WRITE, dram_write)]
    if demand:
      first = stats[O_TOTALS + T_FIRST_INSTR]
      totals += [(T_DRAM_READ_DEMAND, dram_read), (T_MSHR_FULL, mshr_full.astype(jnp.int32)),
                 (T_LOADS, (main & ~is_store).astype(jnp.int32)),
                 (T_STORES, (main & is_store).astype(jnp.int32)),
                 (T_FIRST_INSTR, jnp.where(main & (first < 0), instr - first, 0)),
                 (T_LAST_INSTR, jnp.where(main, instr - stats[O_TOTALS + T_LAST_INSTR], 0))]
    else:
      totals += [(T_DRAM_READ_PREFETCH, dram_read)]
    for t, value in totals:
      inc = jnp.where(stat_pos == O_TOTALS + t, value, inc)
    stats = stats + inc
    stats = jnp.where((stat_pos >= O_WIDE) & (stat_pos < O_TICK),
                      jnp.pad(wide.reshape(-1), (O_WIDE, num_stats - O_TICK)), stats)
    stats = jnp.where(stat_pos == O_TICK, tick + active.astype(jnp.int32), stats)
    stats = jnp.where(stat_pos >= O_QUEUES, jnp.pad(queues.reshape(-1), (O_QUEUES, 0)), stats)

    m = main.astype(jnp.int32)
    regs = jnp.stack([
        regs[_R_CURSOR] + m,
        jnp.where(active, vtag_3[0], regs[_R_WB_BLOCK1]),
        jnp.where(active, vtag_3[1], regs[_R_WB_BLOCK2]),
        jnp.where(active & cascade, wb_out_3[0], regs[_R_WB_ON1]),
        jnp.where(active & cascade, wb_out_3[1], regs[_R_WB_ON2]),
        jnp.where(main, found, regs[_R_LEVEL]),
        jnp.where(main, late.astype(jnp.int32), regs[_R_LATE]),
        jnp.where(main, pf_useful.astype(jnp.int32), regs[_R_PF_HIT]),
        jnp.where(main, latency, regs[_R_LATENCY]),
        jnp.where(main, do.astype(jnp.int32), regs[_R_FILLED]),
        jnp.where(main, wait, regs[_R_WAIT]),
    ]).astype(jnp.int32)
    return tables[0], tables[1], tables[2], stats, regs

  carry = (state.l1d, state.l2, state.llc, state.stats,
           jnp.asarray(np.zeros((_NUM_REGS,), np.int32)))
  def pending(carry):
    regs = carry[-1]
    return (regs[_R_WB_ON1] != 0) | (regs[_R_WB_ON2] != 0)

  if R <= _UNROLL_REQUESTS:
    # Few requests: each one's micro-op in straight-line code (masked when
    # beyond `count`), its writebacks (rare) in a loop.
    for _ in range(R):
      carry = body(carry)
      if cascade:
        carry = jax.lax.while_loop(pending, body, carry)
  else:
    carry = jax.lax.while_loop(cond, body, carry)
  t1, t2, t3, stats, regs = carry
  state = CacheState(l1d=t1, l2=t2, llc=t3, stats=stats)
  served = _Served(level=regs[_R_LEVEL], late=regs[_R_LATE] != 0, pf_hit=regs[_R_PF_HIT] != 0,
                   latency=regs[_R_LATENCY], filled=regs[_R_FILLED] != 0,
                   wait=regs[_R_WAIT])
  return state, served


def access(state: CacheState, block: jax.Array, is_store: jax.Array, now: jax.Array,
           params: Params, config: CacheConfig, *, instr: jax.Array | None = None,
           active: jax.Array = True,
           mshr_stall: jax.Array | bool = False) -> tuple[CacheState, Outcome]:
  """One demand access (load or store) at cycle `now`; masked by `active`.

  Looks the block up L1D -> L2 -> LLC -> DRAM, fills the levels it missed
  (non-inclusive), takes an L1D MSHR on an L1D miss, counts everything.

  Args:
    state: the hierarchy.
    block: [] int32 block number (byte address >> 6), >= 0.
    is_store: [] bool a store (write-allocate; the L1D line becomes dirty).
    now: [] int32 the access's cycle (`cycle_of` its instruction count).
    params: `Params` (DRAM latency).
    config: static geometry.
    instr: [] int32 the instruction count, recorded as first/last instruction
      (for MPKI); optional.
    active: [] bool; False leaves the state unchanged (padded trace steps).
    mshr_stall: [] bool (traced; default False): an L1D miss that finds every
      MSHR reserved waits until the first frees (``Outcome.wait``; module
      docstring) instead of taking it over at once.

  Returns:
    ``(state, Outcome)``; Outcome.latency is ``done - now`` (see the module
    docstring; a wait included); all zero / False when inactive.
  """
  state, served = _serve(config, state, params, now, _i32(block)[None],
                         jnp.zeros((1,), jnp.int32), jnp.zeros((1,), jnp.int32),
                         _i32(jnp.asarray(active, jnp.bool_)), demand=True, is_store=is_store,
                         instr=instr, mshr_stall=mshr_stall)
  return state, Outcome(level=served.level, late=served.late, pf_hit=served.pf_hit,
                        latency=served.latency, wait=served.wait)


def prefetch(state: CacheState, block: jax.Array, fill_level: jax.Array, now: jax.Array,
             params: Params, config: CacheConfig, *,
             active: jax.Array = True) -> tuple[CacheState, jax.Array]:
  """Brings `block` into level `fill_level` (0 L1D, 1 L2, 2 LLC) at cycle `now`.

  The caller checks the budget first (`can_issue` / `issue_budget`): this
  function takes a PQ entry (and, for an L1D-target miss, an MSHR after the
  lookup) unconditionally. A block already present at `fill_level` is dropped and
  counted ``pf_redundant``; otherwise levels fill_level..found-1 are filled,
  the target line with PF set and ``ready = done`` (`now` + the path latency
  from `fill_level` to where the block was found, or the in-flight line's
  ready cycle if later).

  Returns:
    ``(state, filled)``: filled is False for a dropped (redundant) or inactive
    prefetch.
  """
  active = jnp.asarray(active, jnp.bool_)
  state, served = _serve(config, state, params, now, _i32(block)[None],
                         _i32(fill_level)[None], jnp.zeros((1,), jnp.int32), _i32(active),
                         demand=False, is_store=jnp.asarray(False))
  return state, active & served.filled


def prefetch_many(state: CacheState, block_K: jax.Array, fill_level_K: jax.Array,
                  take_K: jax.Array, now: jax.Array, params: Params,
                  config: CacheConfig) -> CacheState:
  """The prefetches ``take_K`` of K candidates, in order, at cycle `now` (one loop).

  Equivalent to `prefetch` on each taken candidate in turn (the runner's path).
  """
  take_K = jnp.asarray(take_K, jnp.bool_)
  K = take_K.shape[0]
  if K == 1:
    order_K = jnp.zeros((1,), jnp.int32)
  else:
    k_K = jnp.arange(K, dtype=jnp.int32)
    order_K = jnp.argsort(jnp.where(take_K, k_K, K + k_K)).astype(jnp.int32)
  state, _ = _serve(config, state, params, now, _i32(block_K), _i32(fill_level_K), order_K,
                    jnp.sum(_i32(take_K)), demand=False, is_store=jnp.asarray(False))
  return state


def contains(state: CacheState, level: int, block: jax.Array) -> jax.Array:
  """Whether `block` is in the tables of `level` (0 L1D, 1 L2, 2 LLC; static).

  A read-only probe for prefetchers (no replacement update, no counters); the
  line may still be in flight.
  """
  table = state.tables[level]
  block = _i32(block)
  row = jax.lax.dynamic_index_in_dim(table, block & (table.shape[0] - 1), axis=0,
                                     keepdims=False)
  return jnp.any(row[:, TAG] == block)


def occupancy(state: CacheState, now: jax.Array) -> tuple[jax.Array, jax.Array]:
  """``(pq, mshr)``: busy L1D prefetch-queue entries and MSHRs at cycle `now`."""
  q = state.queues_3L
  now = _i32(now)
  pq = (q[..., 1, :] > now) & (q[..., 1, :] < _BIG)
  mshr = (q[..., 0, :] > now) & (q[..., 0, :] < _BIG) & (q[..., 2, :] <= now)
  busy_2 = jnp.sum(jnp.stack([pq, mshr], axis=-2).astype(jnp.int32), axis=-1)
  return busy_2[..., 0], busy_2[..., 1]


def can_issue(state: CacheState, now: jax.Array, config: CacheConfig) -> jax.Array:
  """The Gaze drain rule: ``pq + mshr < MSHR size - 1`` and ``pq < PQ size``."""
  pq, mshr = occupancy(state, now)
  return (pq + mshr < config.l1d.mshr - 1) & (pq < config.pq_size)


def issue_budget(state: CacheState, now: jax.Array, config: CacheConfig) -> jax.Array:
  """How many prefetches `can_issue` admits one after the other at cycle `now`.

  Each prefetch accepted at `now` sits in the PQ at `now` (an MSHR it may need
  starts after the L1D lookup), so the count is
  ``max(0, min(M - 1 - pq - mshr, Q - pq))``.
  """
  pq, mshr = occupancy(state, now)
  budget = jnp.minimum(config.l1d.mshr - 1 - pq - mshr, config.pq_size - pq)
  return jnp.maximum(budget, 0).astype(jnp.int32)


# ----------------------------------------------------------------------------- stats


def _wide_value(wide_G2: np.ndarray) -> np.ndarray:
  wide = np.asarray(wide_G2).astype(np.int64)
  return wide[..., 0] + (wide[..., 1] << _WIDE_BITS)


def counters(state: CacheState) -> dict[str, np.ndarray]:
  """Every counter by name (numpy int64; a batched state keeps its leading axes).

  Per-level counters are named ``<level>_<counter>`` (``l1d_hit``), totals and
  wide counters by their own names; ``<level>_pf_resident`` counts lines still
  flagged PF (prefetched, unused) in the final tables.
  """
  out = {}
  c = np.asarray(state.counters_LC).astype(np.int64)
  for li, level in enumerate(LEVELS):
    for ci, name in enumerate(LEVEL_COUNTERS):
      out[f"{level}_{name}"] = c[..., li, ci]
    table = np.asarray(state.tables[li])
    resident = (table[..., TAG] >= 0) & ((table[..., META] & PF) != 0)
    out[f"{level}_pf_resident"] = resident.sum(axis=(-1, -2)).astype(np.int64)
  t = np.asarray(state.totals_T).astype(np.int64)
  for ti, name in enumerate(TOTALS):
    out[name] = t[..., ti]
  w = _wide_value(state.wide_G2)
  for wi, name in enumerate(WIDE):
    out[name] = w[..., wi]
  return out


def _ratio(num: Any, den: Any) -> np.ndarray:
  num = np.asarray(num, np.float64)
  den = np.asarray(den, np.float64)
  return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)


def summarize(state: CacheState, baseline: CacheState | None = None) -> dict[str, np.ndarray]:
  """The paper's metrics (``papers/prefetch.md`` 3) from a final state (numpy).

  With ``i = last_instr - first_instr + 1`` instructions, per level ``lvl``:

  * ``<lvl>_mpki = 1000 * <lvl>_miss / i`` (demand misses, loads and stores);
  * ``<lvl>_hit_rate = <lvl>_hit / <lvl>_access``;
  * ``amat = demand_latency / (loads + stores)`` (cycles, late waits included);
  * ``accuracy = useful / (useful + useless)`` summed over levels (Gaze's
    "overall accuracy": L1D useful + L2 useful from L1D prefetches); lines still
    flagged at the end are ``pf_resident`` and in neither term;
  * ``late_ratio = l1d_late / l1d_pf_useful`` (Gaze);
  * ``dram_traffic = dram_read_demand + dram_read_prefetch + dram_write`` (blocks);

  and with a ``baseline`` (the same trace without prefetching):

  * ``<lvl>_coverage = max(0, 1 - <lvl>_load_miss / baseline <lvl>_load_miss)``
    (Gaze's LLC coverage, clamped at 0);
  * ``dram_traffic_ratio = dram_traffic / baseline dram_traffic``.

  Ratios with a zero denominator are NaN.
  """
  c = counters(state)
  instr = c["last_instr"] - c["first_instr"] + 1
  demands = c["loads"] + c["stores"]
  out = dict(c)
  out["instructions"] = instr
  for level in LEVELS:
    out[f"{level}_mpki"] = 1000.0 * _ratio(c[f"{level}_miss"], instr)
    out[f"{level}_hit_rate"] = _ratio(c[f"{level}_hit"], c[f"{level}_access"])
  out["amat"] = _ratio(c["demand_latency"], demands)
  useful = sum(c[f"{level}_pf_useful"] for level in LEVELS)
  useless = sum(c[f"{level}_pf_useless"] for level in LEVELS)
  out["pf_useful"] = useful
  out["pf_useless"] = useless
  out["pf_resident"] = sum(c[f"{level}_pf_resident"] for level in LEVELS)
  out["accuracy"] = _ratio(useful, useful + useless)
  out["late_ratio"] = _ratio(c["l1d_late"], c["l1d_pf_useful"])
  out["dram_traffic"] = c["dram_read_demand"] + c["dram_read_prefetch"] + c["dram_write"]
  if baseline is not None:
    b = counters(baseline)
    for level in LEVELS:
      cov = 1.0 - _ratio(c[f"{level}_load_miss"], b[f"{level}_load_miss"])
      out[f"{level}_coverage"] = np.where(np.isnan(cov), np.nan, np.maximum(cov, 0.0))
    base_traffic = b["dram_read_demand"] + b["dram_read_prefetch"] + b["dram_write"]
    out["dram_traffic_ratio"] = _ratio(out["dram_traffic"], base_traffic)
  return out
