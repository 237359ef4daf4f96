"""The cache hierarchy and its runner in plain Python: the slow reference.

Written apart from `hierarchy` / `runner` (no JAX, no shared helpers; objects,
lists and loops) from the specification in `hierarchy`'s and `protocol`'s
module docstrings. The tests hold the `lax.scan` runner to this access for
access: the same step code at every access, every counter, and the same final
tables. Where the JAX code computes something in one step, this code does it
the long way:

* LRU uses a counter bumped at every replacement update (the JAX tables use
  per-request tick slots; both give the same order within each level, so the
  same victims; the tests compare ranks, not raw stamps);
* SRRIP ages a set by looping "add 1 to every way until one reaches 3";
* the L1D MSHRs and the prefetch queue are lists of the reserved entries
  (``(start, ready)`` and leave cycles), pruned as time passes; a prefetch is
  offered while `can_issue` holds, one by one (the JAX runner computes the
  budget once).

>>> from jaxsys.sims.cache import hierarchy
>>> ref = Hierarchy(hierarchy.CacheConfig.make(l1d=dict(sets=2, ways=2)))
>>> ref.demand(5, False, now=0).level, ref.demand(5, False, now=300).level
(3, 0)
"""

from __future__ import annotations

import fractions
from typing import Any, NamedTuple

NAMES = ("l1d", "l2", "llc")
LEVEL_COUNTERS = ("access", "hit", "miss", "load_access", "load_miss", "late", "merged",
                  "pf_fill", "pf_useful", "pf_useless", "pf_redundant", "writeback")
TOTALS = ("loads", "stores", "dram_read_demand", "dram_read_prefetch", "dram_write",
          "mshr_full", "pf_candidates", "pf_issued", "pf_refused", "first_instr",
          "last_instr")
WIDE = ("demand_latency", "late_cycles")
INT32_MAX = 2**31 - 1


class Line:
  """One cache line: an invalid way has tag -1."""

  __slots__ = ("tag", "repl", "ready", "pf", "dirty", "origin")

  def __init__(self):
    self.tag = -1
    self.repl = -1
    self.ready = 0
    self.pf = False
    self.dirty = False
    self.origin = 0

  def meta(self) -> int:
    return int(self.pf) | (int(self.dirty) << 1) | (self.origin << 2)


class Result:
  """What a demand access did."""

  def __init__(self, level: int, late: bool, pf_hit: bool, latency: int, wait: int = 0):
    self.level = level
    self.late = late
    self.pf_hit = pf_hit
    self.latency = latency  # from the issue cycle, any MSHR wait included
    self.wait = wait  # cycles waited for a free L1D MSHR (mshr_stall)


class Hierarchy:
  """L1D / L2 / LLC / DRAM, one access at a time."""

  def __init__(self, config: Any, dram_latency: int = 160):
    self.config = config
    self.levels = [config.l1d, config.l2, config.llc]
    self.sets = [[[Line() for _ in range(lc.ways)] for _ in range(lc.sets)]
                 for lc in self.levels]
    self.latency = [lc.latency for lc in self.levels] + [dram_latency]
    self.mshr = []  # (start, ready) of the reserved L1D MSHRs
    self.pq = []  # leave cycles of the busy prefetch-queue entries
    self.clock = 0  # LRU stamp source
    self.count = {name: {c: 0 for c in LEVEL_COUNTERS} for name in NAMES}
    self.totals = {t: 0 for t in TOTALS}
    self.totals["first_instr"] = -1
    self.totals["last_instr"] = -1
    self.wide = {w: 0 for w in WIDE}
    # IPC proxy (filled by `run_reference` when given a ROB size): window id ->
    # the excess latencies (latency - L1D latency) of its counted accesses.
    self.proxy_windows: dict[int, list[int]] | None = None
    # MSHR stall (`run_reference(..., mshr_stall=True)`): the demands' waits so
    # far, and the cycle the last access's step ran at (its issue cycle plus its wait).
    self.mshr_wait = 0
    self.last_cycle = 0
    # A warm-up's stall that stays on the clock (`run_reference(..., warmup=...)`).
    self.clock_offset = 0

  def proxy_stall(self) -> int:
    """The IPC proxy's stall: the sum over windows of their largest excess latency."""
    if self.proxy_windows is None:
      raise ValueError("proxy_stall: this run had no IPC proxy (run_reference(..., rob=None))")
    return sum(max(excesses) for excesses in self.proxy_windows.values())

  # --------------------------------------------------------------- lines

  def _set(self, level: int, block: int) -> list:
    return self.sets[level][block % self.levels[level].sets]

  def find(self, level: int, block: int):
    for line in self._set(level, block):
      if line.tag == block:
        return line
    return None

  def _stamp(self, level: int, line: Line, on_fill: bool) -> None:
    if self.levels[level].replacement == "lru":
      self.clock += 1
      line.repl = self.clock
    else:
      line.repl = 2 if on_fill else 0

  def _victim(self, level: int, ways: list) -> Line:
    for line in ways:
      if line.tag < 0:
        return line
    if self.levels[level].replacement == "lru":
      oldest = ways[0]
      for line in ways:
        if line.repl < oldest.repl:
          oldest = line
      return oldest
    while True:
      for line in ways:
        if line.repl == 3:
          return line
      for line in ways:
        line.repl += 1

  def _install(self, level: int, block: int, ready: int, pf: bool, dirty: bool, origin: int,
               now: int) -> None:
    """Puts `block` into `level`, evicting (and writing back) a victim."""
    ways = self._set(level, block)
    line = self._victim(level, ways)
    if line.tag >= 0:
      old = Line()
      old.tag, old.pf, old.dirty = line.tag, line.pf, line.dirty
      if old.pf:
        self.count[NAMES[level]]["pf_useless"] += 1
      if old.dirty:
        self.count[NAMES[level]]["writeback"] += 1
        if self.config.writebacks == "cascade":
          victim = old
        else:  # "direct": a dirty victim (only ever an L1D line) is a DRAM write
          self.totals["dram_write"] += 1
          victim = None
      else:
        victim = None
    else:
      victim = None
    line.tag = block
    line.ready = ready
    line.pf = pf
    line.dirty = dirty
    line.origin = origin
    self._stamp(level, line, on_fill=True)
    if victim is not None:
      self._write_back(level + 1, victim.tag, now)

  def _write_back(self, level: int, block: int, now: int) -> None:
    """A dirty line evicted from `level - 1` goes into `level` (or DRAM)."""
    if level == 3:
      self.totals["dram_write"] += 1
      return
    line = self.find(level, block)
    if line is not None:
      line.dirty = True
      return
    self._install(level, block, ready=now, pf=False, dirty=True, origin=level - 1, now=now)

  # --------------------------------------------------------------- queues

  def busy(self, now: int) -> tuple[int, int]:
    """(PQ entries, MSHRs) busy at `now`; forgets the ones already free."""
    self.mshr = [(a, b) for a, b in self.mshr if b > now]
    self.pq = [t for t in self.pq if t > now]
    return len(self.pq), sum(1 for a, b in self.mshr if a <= now)

  def can_issue(self, now: int) -> bool:
    pq, mshr = self.busy(now)
    return pq + mshr < self.config.l1d.mshr - 1 and pq < self.config.pq_size

  # --------------------------------------------------------------- requests

  def _path(self, start: int, found: int) -> int:
    return sum(self.latency[start:found + 1])

  def demand(self, block: int, is_store: bool, now: int, instr: int | None = None,
             mshr_stall: bool = False) -> Result:
    """One demand load or store at cycle `now`.

    An L1D miss needs an MSHR; if all are reserved, the one that frees first
    is taken over at once, or with `mshr_stall` the demand waits for it and
    then runs as if issued at that cycle (its latency still counts from `now`).
    """
    kind = "stores" if is_store else "loads"
    self.totals[kind] += 1
    if instr is not None:
      if self.totals["first_instr"] < 0:
        self.totals["first_instr"] = instr
      self.totals["last_instr"] = instr
    found = 3
    for level in range(3):
      name = NAMES[level]
      self.count[name]["access"] += 1
      if not is_store:
        self.count[name]["load_access"] += 1
      if self.find(level, block) is not None:
        found = level
        self.count[name]["hit"] += 1
        break
      self.count[name]["miss"] += 1
      if not is_store:
        self.count[name]["load_miss"] += 1

    wait = 0
    if found > 0:  # an L1D miss takes an MSHR; all busy: the first to free is reused
      self.busy(now)
      if len(self.mshr) >= self.config.l1d.mshr:
        first = min(self.mshr, key=lambda pair: (pair[1], pair[0]))
        self.mshr.remove(first)
        self.totals["mshr_full"] += 1
        if mshr_stall:  # wait until it frees
          wait = first[1] - now
    at = now + wait  # when the request really goes on
    path = self._path(0, found)
    late = pf_hit = False
    if found < 3:
      line = self.find(found, block)
      done = max(at + path, line.ready)
      if line.pf:
        pf_hit = True
        line.pf = False
        self.count[NAMES[found]]["pf_useful"] += 1
        if line.ready > at:
          late = True
          self.count[NAMES[found]]["late"] += 1
          self.wide["late_cycles"] += max(line.ready - at - path, 0)
      elif line.ready > at:
        self.count[NAMES[found]]["merged"] += 1
      self._stamp(found, line, on_fill=False)
      if found == 0 and is_store:
        line.dirty = True
    else:
      done = at + path
      self.totals["dram_read_demand"] += 1
    if found > 0:
      self.mshr.append((at, done))
    for level in range(found - 1, -1, -1):
      self._install(level, block, ready=done, pf=False, dirty=is_store and level == 0,
                    origin=found, now=now)
    self.wide["demand_latency"] += done - now
    return Result(found, late, pf_hit, done - now, wait)

  def prefetch(self, block: int, target: int, now: int) -> bool:
    """A prefetch into level `target` (the caller checked `can_issue`)."""
    # Every prefetch waits in the PQ for the L1D lookup.
    self.pq.append(now + self.latency[0])
    if self.find(target, block) is not None:
      self.count[NAMES[target]]["pf_redundant"] += 1
      return False
    found = 3
    for level in range(target + 1, 3):
      if self.find(level, block) is not None:
        found = level
        break
    path = self._path(target, found)
    if found < 3:
      line = self.find(found, block)
      done = max(now + path, line.ready)
      if line.pf:
        line.pf = False
        self.count[NAMES[found]]["pf_useful"] += 1
      self._stamp(found, line, on_fill=False)
    else:
      done = now + path
      self.totals["dram_read_prefetch"] += 1
    if target == 0:  # then holds an MSHR until the data arrives
      self.mshr.append((now + self.latency[0], done))
    for level in range(found - 1, target - 1, -1):
      self._install(level, block, ready=done, pf=level == target, dirty=False, origin=found,
                    now=now)
    self.count[NAMES[target]]["pf_fill"] += 1
    return True

  # --------------------------------------------------------------- results

  def counters(self) -> dict[str, int]:
    """Every counter under the names `hierarchy.counters` uses."""
    out = {}
    for level, name in enumerate(NAMES):
      for c in LEVEL_COUNTERS:
        out[f"{name}_{c}"] = self.count[name][c]
      out[f"{name}_pf_resident"] = sum(
          1 for ways in self.sets[level] for line in ways if line.tag >= 0 and line.pf)
    out.update(self.totals)
    out.update(self.wide)
    return out


# ----------------------------------------------------------------------------- prefetchers


class RefAccess(NamedTuple):
  """One L1D demand load as a reference prefetcher sees it (plain Python values)."""

  block: int
  pc_hash: int
  instr: int
  now: int  # cycle of the access
  level: int  # where the demand found the block: 0 L1D .. 3 DRAM
  pf_hit: bool  # first demand use of a prefetched line
  late: bool  # that line's data was still in flight


class NoPrefetcher:
  """Never prefetches.

  The reference protocol: ``train(access)`` on every L1D demand load, then
  ``issue(access, budget) -> [(block, fill_level), ...]``; the runner accepts
  the first `budget` valid candidates (what `jaxsys.sims.cache.protocol`
  guarantees), so a prefetcher knows what was issued when it answers.
  """

  def train(self, access: RefAccess) -> None:
    pass

  def issue(self, access: RefAccess, budget: int) -> list[tuple[int, int]]:
    return []


class NextLine:
  """Blocks b+1..b+degree into `fill_level` on every L1D demand load (or on misses only)."""

  def __init__(self, degree: int = 1, fill_level: int = 0, on_miss_only: bool = False):
    self.degree = degree
    self.fill_level = fill_level
    self.on_miss_only = on_miss_only
    self.loads = 0
    self.issued = 0

  def train(self, access: RefAccess) -> None:
    self.loads += 1

  def issue(self, access: RefAccess, budget: int) -> list[tuple[int, int]]:
    if self.on_miss_only and access.level == 0:
      return []
    out = [(access.block + k, self.fill_level) for k in range(1, self.degree + 1)
           if access.block + k <= INT32_MAX]
    self.issued += min(budget, len(out))
    return out


class AtL2:
  """A reference prefetcher moved to the L2 (`jaxsys.sims.prefetch.placement`):
  it hears only the loads that missed the L1D, with an L2 hit as level 0, and
  its L1D fills go to the L2."""

  def __init__(self, inner: Any):
    self.inner = inner

  @staticmethod
  def _seen(access: RefAccess) -> RefAccess | None:
    if access.level == 0:
      return None
    return access._replace(level=0) if access.level == 1 else access

  def train(self, access: RefAccess) -> None:
    seen = self._seen(access)
    if seen is not None:
      self.inner.train(seen)

  def issue(self, access: RefAccess, budget: int) -> list[tuple[int, int]]:
    seen = self._seen(access)
    if seen is None:
      return []
    return [(block, max(level, 1)) for block, level in self.inner.issue(seen, budget)]


# ----------------------------------------------------------------------------- runner


def cycle(instr: int, cpi0: Any) -> int:
  """floor(instr * cpi0), cpi0 as the fraction `hierarchy.make_params` keeps."""
  frac = fractions.Fraction(cpi0).limit_denominator(1000)
  return (instr * frac.numerator) // frac.denominator


def run_reference(trace: Any, config: Any, *, cpi0: Any = 1, dram_latency: int = 160,
                  prefetcher: Any = None, rob: int | None = None,
                  proxy_stores: bool = False, feedback: bool = False,
                  mshr_stall: bool = False, warmup: int = 0) -> tuple[Hierarchy, list[int]]:
  """Replays a trace access by access.

  Args:
    trace: anything with ``block``, ``pc_hash``, ``is_store``, ``instr`` and
      (optionally) ``valid`` sequences of one length.
    config: a `hierarchy.CacheConfig` (only its numbers are read).
    cpi0, dram_latency: as `hierarchy.make_params`.
    prefetcher: `NoPrefetcher()` (default), `NextLine(...)`, or any object with the
      reference protocol of `NoPrefetcher`.
    rob: if given, also the IPC proxy's windows of `rob` instructions
      (``hierarchy.proxy_windows``, ``hierarchy.proxy_stall()``): every load's
      (and with `proxy_stores` every store's) latency minus the L1D latency,
      grouped by ``instr // rob``; the stall is the sum of each window's maximum.
    feedback: (needs `rob`) stall feedback: an access in window w happens at
      ``cycle(instr, cpi0)`` plus the sum of the maxima of the windows before
      w that hold counted accesses (those closed before w; w's own, still
      open, adds nothing): a core that stops for a window's longest miss when
      the window retires, a proxy one window late.
    mshr_stall: (needs `rob`) a demand (load or store) that misses L1D when
      every MSHR is reserved waits until the first frees (``Hierarchy.demand``);
      every later access's cycle gets the waits so far added (with
      `feedback`, on top of the closed windows' stall); the waiting access's
      prefetcher step runs at its cycle plus its wait. The waits are summed in
      ``hierarchy.mshr_wait``; a waited load's proxy excess is its latency
      minus its wait minus the L1D latency (the wait is counted once, there).

  Returns:
    ``(hierarchy, codes)``: the final `Hierarchy` and one code per access,
    ``level + 4 * late + 8 * min(accepted, 15)``, -1 for padding.
  """
  if feedback and rob is None:
    raise ValueError("feedback: stall feedback needs the IPC proxy's windows; given rob=None"
                     " (pass rob=352 or feedback=False)")
  if mshr_stall and rob is None:
    raise ValueError("mshr_stall: MSHR stalls enter the IPC proxy; given rob=None"
                     " (pass rob=352 or mshr_stall=False)")
  prefetcher = NoPrefetcher() if prefetcher is None else prefetcher
  ref = Hierarchy(config, dram_latency=dram_latency)
  blocks = [int(b) for b in trace.block]
  stores = [bool(s) for s in trace.is_store]
  instrs = [int(i) for i in trace.instr]
  valid = getattr(trace, "valid", None)
  valid = [True] * len(blocks) if valid is None else [bool(v) for v in valid]
  codes = []
  pcs = [int(p) for p in trace.pc_hash]
  if rob is not None:
    ref.proxy_windows = {}
  for i, (block, pc, is_store, instr, ok) in enumerate(zip(blocks, pcs, stores, instrs, valid)):
    if warmup and i == warmup:  # the warm-up is over: statistics from here on
      if rob is not None:
        if feedback:
          ref.clock_offset += sum(max(excesses) for excesses in ref.proxy_windows.values())
        ref.clock_offset += ref.mshr_wait
        ref.proxy_windows = {}
      ref.mshr_wait = 0
      ref.count = {name: {c: 0 for c in LEVEL_COUNTERS} for name in NAMES}
      ref.totals = {t: 0 for t in TOTALS}
      ref.totals["first_instr"] = -1
      ref.totals["last_instr"] = -1
      ref.wide = {w: 0 for w in WIDE}
    if not ok:
      codes.append(-1)
      continue
    now = cycle(instr, cpi0) + ref.clock_offset
    if feedback:  # the windows before this one are over: their stall has been paid
      now += sum(max(excesses) for window, excesses in ref.proxy_windows.items()
                 if window < instr // rob)
    now += ref.mshr_wait  # the earlier demands' MSHR waits (0 without mshr_stall)
    res = ref.demand(block, is_store, now, instr, mshr_stall=mshr_stall)
    ref.mshr_wait += res.wait
    now += res.wait  # the core goes on when the demand got its MSHR
    ref.last_cycle = now
    if rob is not None and (proxy_stores or not is_store):
      ref.proxy_windows.setdefault(instr // rob, []).append(
          res.latency - res.wait - ref.latency[0])
    accepted = 0
    if not is_store:
      acc = RefAccess(block, pc, instr, now, res.level, bool(res.pf_hit), bool(res.late))
      prefetcher.train(acc)
      pq, mshr = ref.busy(now)
      budget = max(0, min(ref.config.l1d.mshr - 1 - pq - mshr, ref.config.pq_size - pq))
      stopped = False
      for pblock, target in prefetcher.issue(acc, budget):
        if pblock < 0 or target not in (0, 1, 2):
          continue
        ref.totals["pf_candidates"] += 1
        if not stopped and ref.can_issue(now):
          ref.prefetch(pblock, target, now)
          accepted += 1
        else:
          stopped = True
          ref.totals["pf_refused"] += 1
      ref.totals["pf_issued"] += accepted
    codes.append(res.level + 4 * int(res.late) + 8 * min(accepted, 15))
  return ref, codes
