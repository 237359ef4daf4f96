"""Gaze (arXiv 2412.05211) in plain Python: the slow reference for `gaze`.

Written apart from `jaxsys.sims.prefetch.gaze` (no JAX, no shared helpers:
dicts, lists and loops) from the specification in that module's docstring
(``papers/prefetch.md`` 1.1). `GazeReference` follows the reference prefetcher
protocol of `jaxsys.sims.cache.reference.NoPrefetcher` (``train(access)`` then
``issue(access, budget)``), so `jaxsys.sims.cache.reference.run_reference`
drives it; the tests hold the JAX prefetcher to it event for event (issued
stream, cache counters, prefetcher statistics, final tables).

Where the JAX code computes in one vectorised step, this code walks:

* LRU is a global counter bumped at every touch (the JAX tables stamp with
  ``2 * loads + phase``; both orders are the same, so the same victims);
* the FT's SRRIP ages by looping "add 1 to every way until one reaches 3";
* the drain clears offset o, then walks o+1, o+2, ... around the region one by one.

>>> from jaxsys.sims.cache.reference import RefAccess
>>> g = GazeReference()
>>> a = lambda block: RefAccess(block, 0, 0, 0, 3, False, False)
>>> g.train(a(64 * 5 + 3)); g.issue(a(64 * 5 + 3), 8)   # first access: FT only
[]
"""

from __future__ import annotations

from typing import Any

# Fixed geometry (the artifact's; `gaze` uses the same numbers).
FT_SETS, FT_WAYS = 8, 8
AT_SETS, AT_WAYS = 8, 8
PT_WAYS = 4
PB_SETS, PB_WAYS = 4, 8
DEQUE_LEN = 8
CON_MAX = 8

# Per-offset PB source tags (the artifact's prefetch metadata).
SRC_STRIDE, SRC_PT, SRC_SS, SRC_PROMOTE = range(4)
STATS = ("loads", "ft_inserts", "pt_lookups", "pt_hits", "ss_lookups", "ss_bulk",
         "stride_triggers", "at_evictions", "pt_writes", "ss_full", "pb_evictions",
         "issued_stride", "issued_pt", "issued_ss", "issued_promote")


def fold_set(region: int, sets: int = 8) -> int:
  """XOR of the region number's 3-bit chunks (8 sets), the FT / AT set index."""
  out = 0
  x = region
  while x:
    out ^= x & (sets - 1)
    x >>= 3
  return out


def pc_hash6(pc: int) -> int:
  """Gaze's 6-bit PC hash: bits [13:8]."""
  return (pc >> 8) & 63


class GazeReference:
  """Gaze as dicts and lists; see `jaxsys.sims.prefetch.gaze` for the mechanism.

  Args:
    mode: ``"artifact"`` (the quirks kept: the no-op ``con_counter >> 1``, no
      PT LRU touch on a hit, a PB entry for a stride trigger without targets,
      the SS lookup by the second access's PC) or ``"fixed"`` (the counter
      halves, a PT hit touches its LRU, a trigger without targets allocates
      nothing, the SS lookup by the trigger's PC).
    pt_entries, region_blocks, degree, lookahead, ss_enabled, pt_enabled,
      ss_all_l1: as `gaze`'s params (already checked there;
      ``GazeReference(**gaze.VARIANTS[name])`` is an artifact variant).
    max_candidates: K, the most candidates one access offers (the JAX K).
  """

  def __init__(self, mode: str = "artifact", *, pt_entries: int = 256, region_blocks: int = 64,
               degree: int = 4, lookahead: int = 2, ss_enabled: bool = True,
               pt_enabled: bool = True, ss_all_l1: bool = False, max_candidates: int = 16):
    if mode not in ("artifact", "fixed"):
      raise ValueError(f"mode: expected 'artifact' or 'fixed', given {mode!r}")
    self.mode = mode
    self.R = region_blocks
    self.pt_sets = pt_entries // PT_WAYS
    self.degree = degree
    self.lookahead = lookahead
    self.ss_enabled = ss_enabled
    self.pt_enabled = pt_enabled  # off: PT lookups of keys other than (0, 1) miss
    self.ss_all_l1 = ss_all_l1  # the SS bulks fill L1D only
    self.K = max_candidates
    self.clock = 0
    # Each way a dict (or None when invalid).
    self.ft = [[None] * FT_WAYS for _ in range(FT_SETS)]
    self.at = [[None] * AT_WAYS for _ in range(AT_SETS)]
    self.pt = [[None] * PT_WAYS for _ in range(self.pt_sets)]
    # PB way: "pat" {offset: level} (pending only), "src" [R] source per offset.
    self.pb = [[None] * PB_WAYS for _ in range(PB_SETS)]
    self.con_counter = 0
    self.deque: list[int] = []  # newest first
    self.stats = {name: 0 for name in STATS}
    self.issued: list[tuple[int, int]] = []  # (block, fill level) the cache accepted, in order
    self.log: list[list[tuple[int, int]]] = []  # per `issue` call (L1D load): what it accepted

  # --------------------------------------------------------------- helpers

  def _stamp(self) -> int:
    self.clock += 1
    return self.clock

  @staticmethod
  def _lru_victim(ways: list) -> int:
    for i, e in enumerate(ways):
      if e is None:
        return i
    best = 0
    for i, e in enumerate(ways):
      if e["lru"] < ways[best]["lru"]:
        best = i
    return best

  @staticmethod
  def _find(ways: list, tag: int):
    for i, e in enumerate(ways):
      if e is not None and e["tag"] == tag:
        return i
    return None

  def _ft_victim(self, ways: list) -> int:
    for i, e in enumerate(ways):
      if e is None:
        return i
    while True:
      for i, e in enumerate(ways):
        if e["rrpv"] == 3:
          return i
      for e in ways:
        e["rrpv"] += 1

  def _pb_get(self, region: int, create: bool):
    ways = self.pb[region % PB_SETS]
    i = self._find(ways, region)
    if i is None and create:
      i = self._lru_victim(ways)
      old = ways[i]
      if old is not None and old["pat"]:
        self.stats["pb_evictions"] += 1
      ways[i] = {"tag": region, "pat": {}, "src": [0] * self.R, "lru": 0}
    return None if i is None else ways[i]

  # --------------------------------------------------------------- training

  def _train_victim(self, v: dict) -> None:
    """An AT capacity eviction: train the SS module or the PT."""
    self.stats["at_evictions"] += 1
    if self.ss_enabled and (v["trig"], v["second"]) == (0, 1):
      if len(v["fp"]) == self.R:  # every block of the region was accessed
        self.stats["ss_full"] += 1
        self.con_counter = min(CON_MAX, self.con_counter + 1)
        h = pc_hash6(v["pc"])
        if h not in self.deque:  # pushed only if absent (the oldest drops out)
          self.deque.insert(0, h)
          del self.deque[DEQUE_LEN:]
      elif self.con_counter <= 2:
        self.con_counter = max(0, self.con_counter - 1)
      elif self.mode == "fixed":
        self.con_counter //= 2
      # artifact: `con_counter >> 1` computes and drops the value
      return
    self.stats["pt_writes"] += 1
    key = v["second"] * self.R + v["trig"]
    ways = self.pt[key % self.pt_sets]
    tag = key // self.pt_sets
    i = self._find(ways, tag)
    if i is None:
      i = self._lru_victim(ways)
    ways[i] = {"tag": tag, "pat": set(v["fp"]), "lru": self._stamp()}  # overwrite, no merging

  def train(self, access: Any) -> None:
    """Steps 1-3 of the mechanism on one L1D demand load."""
    self.stats["loads"] += 1
    b = access.block
    r, o = b // self.R, b % self.R
    at_ways = self.at[fold_set(r)]
    i = self._find(at_ways, r)
    if i is not None:  # 1. the region is being accumulated
      e = at_ways[i]
      e["lru"] = self._stamp()
      if o in e["fp"]:
        return
      e["fp"].add(o)
      stride = o - e["last_off"]
      armed = (self.degree > 0 and (e["missed"] or e["con"])
               and stride == e["last_stride"])
      e["last_off"], e["last_stride"] = o, stride
      if not armed:
        return
      e["last_off"], e["last_stride"] = 0, 0  # a trigger resets both (both modes)
      targets = []
      for k in range(1, self.degree + 1):
        t = o + (self.lookahead + k) * stride
        if 0 <= t < self.R and t not in e["fp"]:
          targets.append(t)
      if targets:
        self.stats["stride_triggers"] += 1
      if targets or self.mode == "artifact":  # artifact: an entry even for no targets
        pb = self._pb_get(r, create=False)
        if pb is None:
          pb = self._pb_get(r, create=True)
          pb["src"] = [SRC_PROMOTE if e["con"] else SRC_STRIDE] * self.R
        pb["lru"] = self._stamp()
        for t in targets:  # into L1D; an SS source becomes "promote" unless pending in L1D
          if pb["pat"].get(t) != 1 and pb["src"][t] == SRC_SS:
            pb["src"][t] = SRC_PROMOTE
          pb["pat"][t] = 1
      return

    ft_ways = self.ft[fold_set(r)]
    j = self._find(ft_ways, r)
    if j is None:  # 2. first access: remember the trigger, prefetch nothing
      self.stats["ft_inserts"] += 1
      j = self._ft_victim(ft_ways)
      ft_ways[j] = {"tag": r, "trig": o, "pc": access.pc_hash, "rrpv": 2}
      return
    f = ft_ways[j]
    if o == f["trig"]:
      f["rrpv"] = 0
      return

    # 3. the second distinct offset: predict, then move the region FT -> AT.
    t, s = f["trig"], o
    pattern: dict[int, int] = {}  # offset -> level
    src = SRC_PT
    con = missed = False
    if self.ss_enabled and (t, s) == (0, 1):
      self.stats["ss_lookups"] += 1
      far = 1 if self.ss_all_l1 else 2  # the level of offsets past the L1D span (or all)
      span = self.R // 4  # the artifact's NUM_BLOCKS / 4: 0..15 at R = 64
      src = SRC_SS
      # The lookup hashes the second access's PC in the artifact, the trigger's
      # (the one training pushes) in "fixed".
      h = pc_hash6(access.pc_hash if self.mode == "artifact" else f["pc"])
      if self.con_counter == CON_MAX or h in self.deque:  # aggressive
        pattern = {k: (1 if k < span else far) for k in range(self.R)}
      elif self.con_counter > 2:  # conservative
        pattern = {k: far for k in range(span)}
      if set(pattern) - {t, s}:  # a bulk of only 0 and 1 (conservative, R = 8) is a miss
        con = True
        self.stats["ss_bulk"] += 1
      else:
        pattern = {}
        missed = True
    else:
      self.stats["pt_lookups"] += 1
      key = s * self.R + t
      ways = self.pt[key % self.pt_sets]
      i = self._find(ways, key // self.pt_sets)
      if not self.pt_enabled and (t, s) != (0, 1):
        i = None  # the PT is off for every key but (0, 1): a miss (it still trains)
      if i is not None and ways[i]["pat"] - {t, s}:
        self.stats["pt_hits"] += 1
        if self.mode == "fixed":  # the artifact's PT find does not touch the LRU
          ways[i]["lru"] = self._stamp()
        pattern = {k: 1 for k in ways[i]["pat"]}
      else:
        missed = True
    pattern.pop(t, None)
    pattern.pop(s, None)
    if pattern:
      pb = self._pb_get(r, create=True)
      pb["pat"] = pattern
      pb["src"] = [src] * self.R
      pb["lru"] = self._stamp()
    ft_ways[j] = None
    k = self._lru_victim(at_ways)
    victim = at_ways[k]
    at_ways[k] = {"tag": r, "trig": t, "second": s, "pc": f["pc"], "fp": {t, s},
                  "last_off": s, "last_stride": s - t, "missed": missed, "con": con,
                  "lru": self._stamp()}
    if victim is not None:
      self._train_victim(victim)

  # --------------------------------------------------------------- drain

  def issue(self, access: Any, budget: int) -> list[tuple[int, int]]:
    """4. Drain the PB entry of the accessed region, circularly upward from o+1
    (o itself is cleared, not issued)."""
    b = access.block
    r, o = b // self.R, b % self.R
    pb = self._pb_get(r, create=False)
    if pb is None:
      self.log.append([])
      return []
    pb["lru"] = self._stamp()
    pb["pat"].pop(o, None)  # the accessed offset: its level cleared, never issued
    offsets = []
    for k in range(1, self.R):
      off = (o + k) % self.R
      if off in pb["pat"] and len(offsets) < self.K:
        offsets.append(off)
    cands = [(r * self.R + off, pb["pat"][off] - 1) for off in offsets]
    for off in offsets[:max(budget, 0)]:  # the cache takes exactly the first `budget`
      del pb["pat"][off]  # the source tag stays
      src = pb["src"][off]
      self.stats[("issued_stride", "issued_pt", "issued_ss", "issued_promote")[src]] += 1
    self.issued.extend(cands[:max(budget, 0)])
    self.log.append(cands[:max(budget, 0)])
    if not pb["pat"]:  # the whole pattern was issued: erase the entry
      ways = self.pb[r % PB_SETS]
      ways[ways.index(pb)] = None
    return cands
