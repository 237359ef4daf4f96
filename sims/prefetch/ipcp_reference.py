"""IPCP-lite in plain Python: the slow reference of `ipcp`.

Written from the specification in `ipcp`'s module docstring (no JAX, no code
shared with it): a list of dicts for the IP table, a list of [stride, conf]
pairs for the CSPT, an `collections.OrderedDict` region -> entry for the RST
(least recently used first), Python ints. It follows the reference prefetcher
protocol of `jaxsys.sims.cache.reference` (``train(access)`` then
``issue(access, budget) -> [(block, fill_level), ...]`` on every L1D demand
load; the runner accepts the first ``budget`` candidates) and counts the same
statistics as the JAX state's ``scalars``, so the tests compare them event for
event.

>>> from jaxsys.sims.cache.reference import RefAccess
>>> pf = IPCP(degree_cs=2)
>>> out = []
>>> for blk in (100, 103, 106, 109):   # one IP striding by 3 blocks
...   acc = RefAccess(blk, 7, 0, 0, 3, False, False)
...   pf.train(acc)
...   out.append(pf.issue(acc, 8))
>>> out
[[], [], [], [(112, 0), (115, 0)]]
"""

from __future__ import annotations

from collections import OrderedDict

PAGE = 64
REGION = 32


def _enc(delta: int) -> int:
  """7-bit sign-magnitude of a delta, magnitudes above 63 saturated."""
  if delta < 0:
    return min(-delta, 63) + 64
  return min(delta, 63)


def _hysteresis(match: bool, conf: int) -> int:
  return min(conf + 1, 3) if match else max(conf - 1, 0)


class IPCP:
  """IPCP-lite (see `ipcp`): IP table, CSPT, RST, miss-rate gate for next line."""

  def __init__(self, degree_gs: int = 6, degree_cs: int = 3, degree_cplx: int = 3,
               cs_conf: int = 2, cplx_conf: int = 1, dense_lines: int = 25,
               next_line: bool = True, nl_mpki: int = 50, nl_window: int = 256,
               ip_entries: int = 64, cspt_entries: int = 128, rst_entries: int = 8,
               fill_level: int = 0):
    self.degree_gs, self.degree_cs, self.degree_cplx = degree_gs, degree_cs, degree_cplx
    self.cs_conf, self.cplx_conf = cs_conf, cplx_conf
    self.dense_lines = dense_lines
    self.next_line, self.nl_mpki, self.nl_window = next_line, nl_mpki, nl_window
    self.ip_entries, self.cspt_entries, self.rst_entries = ip_entries, cspt_entries, rst_entries
    self.fill_level = fill_level
    self.ipt: list[dict | None] = [None] * ip_entries
    self.cspt = [[0, 0] for _ in range(cspt_entries)]
    self.rst: OrderedDict[int, dict] = OrderedDict()  # region -> entry, LRU first
    self.loads = 0
    self.window_loads = 0
    self.window_misses = 0
    self.spec_nl = 0
    self.trains = 0
    self.by_class = {"gs": 0, "cs": 0, "cplx": 0, "nl": 0}
    self.issued = 0
    self.pending: list[tuple[int, int]] = []

  def stats(self) -> list[int]:
    """The JAX state's ``scalars`` vector (clock = loads)."""
    c = self.by_class
    return [self.loads, self.window_loads, self.window_misses, self.spec_nl, self.trains,
            c["gs"], c["cs"], c["cplx"], c["nl"], self.issued]

  def _next_sig(self, sig: int, delta: int) -> int:
    return ((sig << 1) ^ _enc(delta)) % self.cspt_entries

  def _miss_rate(self, miss: bool) -> None:
    self.loads += 1
    self.window_loads = min(self.window_loads + 1, 1 << 20)
    if miss:
      self.window_misses += 1
    if self.window_misses >= self.nl_window:
      self.spec_nl = 1 if 1000 * self.window_misses <= self.nl_mpki * self.window_loads else 0
      self.window_loads = 0
      self.window_misses = 0

  def _region_table(self, entry: dict, b: int, d: int) -> None:
    """Step 3: the RST entry of b's region; sets the IP's stream bit and direction."""
    prev = self.rst.get(entry["last"] // REGION)
    flag = prev is not None and prev["trained"]
    r = b // REGION
    line = b % REGION
    if r in self.rst:
      reg = self.rst[r]
      self.rst.move_to_end(r)
      reg["bits"] |= 1 << line
      if reg["posneg"] <= 0 or reg["posneg"] >= 64:
        reg["posneg"] = 32
      reg["posneg"] += 1 if d > 0 else -1
      count = bin(reg["bits"]).count("1")
      if count >= self.dense_lines:
        reg["trained"] = True
      if flag:
        reg["tentative"] = True
      if reg["trained"] or reg["tentative"]:
        entry["stream"] = 1
        entry["dir"] = 1 if reg["posneg"] > 32 else 0
      else:
        entry["stream"] = 0
      return
    if len(self.rst) >= self.rst_entries:
      self.rst.popitem(last=False)
    self.rst[r] = {"bits": 1 << line, "posneg": 32, "trained": False, "tentative": flag}

  def _candidates(self, entry: dict, b: int) -> list[int]:
    """Step 6: the class's candidates (and the class count), or the next line."""
    o = b % PAGE
    base = b - o
    out = []
    if entry["stream"] == 1:
      cls = "gs"
      step = 1 if entry["dir"] == 1 else -1
      for k in range(1, self.degree_gs + 1):
        if 0 <= o + step * k < PAGE:
          out.append(base + o + step * k)
    elif entry["conf"] >= self.cs_conf and entry["stride"] != 0:
      cls = "cs"
      s = entry["stride"]
      if abs(s) <= 63:
        for k in range(1, self.degree_cs + 1):
          if 0 <= o + s * k < PAGE:
            out.append(base + o + s * k)
    elif self.cspt[entry["sig"]][0] != 0:
      cls = "cplx"
      sig = entry["sig"]
      off = 0
      for _ in range(self.degree_cplx):
        t, c = self.cspt[sig]
        if t == 0 or abs(t) > 63:
          break
        off += t
        if not 0 <= o + off < PAGE:
          break
        if c >= self.cplx_conf:
          out.append(base + o + off)
        sig = self._next_sig(sig, t)
    else:
      cls = None
    if out:
      self.by_class[cls] += 1
      return out
    if self.spec_nl == 1 and self.next_line and o < PAGE - 1:
      self.by_class["nl"] += 1
      return [b + 1]
    return []

  def train(self, access) -> None:
    b, pc = access.block, access.pc_hash
    self.pending = []
    self._miss_rate(access.level > 0)
    i = (pc ^ (pc >> 6) ^ (pc >> 12)) % self.ip_entries
    entry = self.ipt[i]
    if entry is None or entry["tag"] != pc:
      if entry is not None and entry["valid"] == 1:
        entry["valid"] = 0
      else:
        self.ipt[i] = {"tag": pc, "valid": 1, "last": b, "stride": 0, "conf": 0, "sig": 0,
                       "stream": 0, "dir": 0}
      return
    entry["valid"] = 1
    d = b - entry["last"]
    if d == 0:
      return
    self.trains += 1
    self._region_table(entry, b, d)
    # CS: hysteresis on the IP's stride.
    entry["conf"] = _hysteresis(d == entry["stride"], entry["conf"])
    if entry["conf"] == 0:
      entry["stride"] = d
    # CPLX: the CSPT row of the old signature learns d; the signature moves on.
    row = self.cspt[entry["sig"]]
    row[1] = _hysteresis(d == row[0], row[1])
    if row[1] == 0:
      row[0] = d
    entry["sig"] = self._next_sig(entry["sig"], d)
    self.pending = [(blk, self.fill_level) for blk in self._candidates(entry, b)]
    entry["last"] = b

  def issue(self, access, budget: int) -> list[tuple[int, int]]:
    self.issued += min(budget, len(self.pending))
    return self.pending
