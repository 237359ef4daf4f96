"""DSPatch in plain Python: the slow reference of `jaxsys.sims.prefetch.dspatch`.

Written from the specification in that module's docstring (no JAX, no code
shared with it): an `collections.OrderedDict` page buffer (oldest first), a
list of dicts for the SPT, Python ints for patterns (bit i for offset i,
0 <= value < 2**R) and loops over bits. It follows the reference prefetcher
protocol of `jaxsys.sims.cache.reference` (``train(access)`` then
``issue(access, budget) -> [(block, fill_level), ...]`` on every L1D demand
load; the runner accepts the first ``budget`` candidates) and counts the same
statistics as the JAX state, so the tests compare them event for event.

>>> from jaxsys.sims.cache.reference import RefAccess
>>> pf = DSPatch(pb_entries=1, granularity=1)
>>> for block in (2, 5, 9, 34):          # region 0 {2, 5, 9}, then region 1
...   access = RefAccess(block, 7, 0, 0, 1, False, False)
...   pf.train(access)
...   out = pf.issue(access, 8)
>>> out                                   # 34 = region 1, offset 2: 2 + 3, 2 + 7
[(37, 0), (41, 0)]
"""

from __future__ import annotations

from collections import OrderedDict


class DSPatch:
  """DSPatch (see `dspatch`): PB, SPT and the bandwidth-quartile estimate.

  Args mirror the JAX params: ``pb_entries``, ``spt_entries``, ``granularity``,
  ``fill_level`` (an int 0..2), ``acc_thr``, ``cov_thr``, ``bw_window``,
  ``bw_peak``, ``pb_replacement`` (``"fifo"`` or ``"lru"``), and the static
  ``region_blocks``.
  """

  def __init__(self, *, region_blocks: int = 32, pb_entries: int = 64, spt_entries: int = 256,
               granularity: int = 2, fill_level: int = 0, acc_thr: int = 50, cov_thr: int = 50,
               bw_window: int = 1024, bw_peak: int = 102, pb_replacement: str = "fifo"):
    assert pb_replacement in ("fifo", "lru")
    self.R = region_blocks
    self.pb_entries = pb_entries
    self.spt_entries = spt_entries
    self.g = granularity
    self.fill_level = fill_level
    self.acc_thr = acc_thr
    self.cov_thr = cov_thr
    self.bw_window = bw_window
    self.bw_peak = bw_peak
    self.lru = pb_replacement == "lru"
    # region -> {"pc", "offset", "footprint", "pending"}; first = next victim.
    self.pb: OrderedDict[int, dict] = OrderedDict()
    self.spt = [{"covp": 0, "accp": 0, "mcov": 0, "macc": 0, "orc": 0}
                for _ in range(spt_entries)]
    self.window = 0
    self.window_blocks = 0
    self.quartile = 0
    self.loads = self.triggers = self.covp = self.accp = self.off = 0
    self.trainings = self.covp_resets = self.issued = 0
    self._region = None
    self._order: list[int] = []

  # --------------------------------------------------------------- patterns

  def _index(self, pc: int) -> int:
    return (pc ^ (pc >> 8) ^ (pc >> 16)) % self.spt_entries

  def _bits(self, pattern: int) -> list[int]:
    return [i for i in range(self.R) if pattern >> i & 1]

  def _anchor(self, footprint: int, trigger: int) -> int:
    """Bit i of the result is offset (trigger + i) mod R of the footprint."""
    out = 0
    for i in range(self.R):
      if footprint >> ((trigger + i) % self.R) & 1:
        out |= 1 << i
    return out

  def _unanchor(self, pattern: int, trigger: int) -> int:
    """Offset x of the result is bit (x - trigger) mod R of the anchored pattern."""
    out = 0
    for x in range(self.R):
      if pattern >> ((x - trigger) % self.R) & 1:
        out |= 1 << x
    return out

  def _coarse(self, pattern: int) -> int:
    """Each aligned group of g offsets: all of it if any of it."""
    out = 0
    for start in range(0, self.R, self.g):
      group = sum(1 << i for i in range(start, start + self.g))
      if pattern & group:
        out |= group
    return out

  # --------------------------------------------------------------- bandwidth

  def _roll_window(self, now: int) -> None:
    window = now // self.bw_window
    if window == self.window:
      return
    if window == self.window + 1:
      self.quartile = min(3, 4 * self.window_blocks // self.bw_peak)
    else:  # whole windows went by without a load
      self.quartile = 0
    self.window = window
    self.window_blocks = 0

  # --------------------------------------------------------------- SPT

  def _train_spt(self, entry: dict) -> None:
    self.trainings += 1
    row = self.spt[self._index(entry["pc"])]
    anchored = self._anchor(entry["footprint"], entry["offset"])
    coarse = self._coarse(anchored)
    old_covp, old_accp = row["covp"], row["accp"]
    real = set(self._bits(anchored)) - {0}
    by_covp = set(self._bits(old_covp)) - {0}
    by_accp = set(self._bits(old_accp)) - {0}
    hit_covp = len(real & by_covp)
    hit_accp = len(real & by_accp)

    def below(num: int, den: int, pct: int) -> bool:
      return den > 0 and 100 * num < pct * den

    covp_bad = below(hit_covp, len(by_covp), self.acc_thr) or below(hit_covp, len(real),
                                                                      self.cov_thr)
    if covp_bad:
      row["mcov"] = min(row["mcov"] + 1, 3)
    if coarse & ~old_covp:
      row["orc"] = min(row["orc"] + 1, 3)
    if row["mcov"] == 3 and (self.quartile == 3 or below(hit_covp, len(real), 50)):
      row["covp"] = coarse
      row["mcov"] = 0
      row["orc"] = 0
      self.covp_resets += 1
    else:
      row["covp"] = old_covp | coarse
    if by_accp:
      if below(hit_accp, len(by_accp), 50):
        row["macc"] = min(row["macc"] + 1, 3)
      else:
        row["macc"] = max(row["macc"] - 1, 0)
    row["accp"] = coarse & old_covp

  def _predict(self, pc: int, offset: int) -> int:
    """The pending offsets of a new region (the trigger's own offset excluded)."""
    row = self.spt[self._index(pc)]
    q = self.quartile
    if q == 3 and row["macc"] == 3:
      self.off += 1
      return 0
    if q == 3 or (q == 2 and row["mcov"] == 3):
      self.accp += 1
      pattern = row["accp"]
    else:
      self.covp += 1
      pattern = row["covp"]
    return self._unanchor(pattern, offset) & ~(1 << offset)

  # --------------------------------------------------------------- protocol

  def train(self, access) -> None:
    self.loads += 1
    self._roll_window(access.now)
    if access.level == 3:
      self.window_blocks += 1
    r, o = access.block // self.R, access.block % self.R
    if r in self.pb:
      entry = self.pb[r]
      entry["footprint"] |= 1 << o
      entry["pending"] &= ~(1 << o)
      if self.lru:
        self.pb.move_to_end(r)
    else:
      self.triggers += 1
      if len(self.pb) >= self.pb_entries:
        _, victim = self.pb.popitem(last=False)
        self._train_spt(victim)
      pending = self._predict(access.pc_hash, o)
      self.pb[r] = {"pc": access.pc_hash, "offset": o, "footprint": 1 << o, "pending": pending}
    self._region = r
    pending = self.pb[r]["pending"]
    order = sorted((x for x in range(self.R) if x != o), key=lambda x: (abs(x - o), x < o))
    self._order = [x for x in order if pending >> x & 1]

  def issue(self, access, budget: int) -> list[tuple[int, int]]:
    entry = self.pb[self._region]
    taken = self._order[:budget]
    for x in taken:
      entry["pending"] &= ~(1 << x)
    self.issued += len(taken)
    self.window_blocks += len(taken)
    base = self._region * self.R
    return [(base + x, self.fill_level) for x in self._order]

  # --------------------------------------------------------------- results

  def stats(self) -> list[int]:
    """The JAX ``stats`` vector (`dspatch.STATS`)."""
    return [self.loads, self.window, min(self.window_blocks, 1 << 28), self.quartile,
            self.triggers, self.covp, self.accp, self.off, self.trainings, self.covp_resets,
            self.issued]

  def tables(self) -> tuple[set, list]:
    """(PB as a set of (region, pc, offset, footprint, pending), SPT rows as tuples)."""
    pb = {(r, e["pc"], e["offset"], e["footprint"], e["pending"]) for r, e in self.pb.items()}
    spt = [(row["covp"], row["accp"], row["mcov"], row["macc"], row["orc"]) for row in self.spt]
    return pb, spt
