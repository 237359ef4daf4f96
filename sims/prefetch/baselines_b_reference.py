"""PMP, Berti (simplified) and SPP in plain Python: the slow references.

Written from the specifications in the docstrings of `pmp`, `berti` and `spp`
(and ``papers/prefetch.md`` 1.2), with no JAX and no shared helpers: lists,
dicts and loops, one access at a time. Each class follows the reference
prefetcher protocol of `jaxsys.sims.cache.reference` (``train(access)`` on
every L1D demand load, then ``issue(access, budget) -> [(block, fill_level)]``,
of which the runner accepts the first ``budget``), so ``run_reference(...,
prefetcher=ReferencePMP(...))`` replays a trace event for event against
``runner.run(..., pmp(...))``.

Tables are lists of dict entries; an empty way is ``None``. Replacement
everywhere: the first empty way, else the smallest stamp (a counter bumped on
every L1D demand load the prefetcher sees).
"""

from __future__ import annotations

INT32_MAX = 2**31 - 1
L1D, L2 = 0, 1


def _victim(ways: list) -> int:
  """The first empty way, else the way with the smallest stamp (first on ties)."""
  for i, entry in enumerate(ways):
    if entry is None:
      return i
  best = 0
  for i, entry in enumerate(ways):
    if entry["stamp"] < ways[best]["stamp"]:
      best = i
  return best


def _find(ways: list, key: str, value: int) -> int:
  for i, entry in enumerate(ways):
    if entry is not None and entry[key] == value:
      return i
  return -1


# ----------------------------------------------------------------------------- PMP


def pmp_pc_hash(pc: int) -> int:
  """PMP's 5-bit PC hash (`pmp` docstring)."""
  return (pc ^ (pc >> 5) ^ (pc >> 10) ^ (pc >> 15)) & 31


def pmp_order(offset: int, region: int) -> list[int]:
  """Offsets of a region nearest-first from `offset`: +1, -1, +2, -2, ... (in range)."""
  out = []
  for d in range(1, region):
    for x in (offset + d, offset - d):
      if 0 <= x < region:
        out.append(x)
  return out


class ReferencePMP:
  """PMP (`pmp` docstring), one access at a time."""

  def __init__(self, *, region_blocks=64, l1_pct=50, l2_pct=15, counter_max=32, ft_sets=8,
               ft_ways=8, at_sets=2, at_ways=16, pb_sets=4, pb_ways=8, num_candidates=16):
    self.R = region_blocks
    self.l1_pct, self.l2_pct, self.counter_max = l1_pct, l2_pct, counter_max
    self.ft = [[None] * ft_ways for _ in range(ft_sets)]
    self.at = [[None] * at_ways for _ in range(at_sets)]
    self.pb = [[None] * pb_ways for _ in range(pb_sets)]
    self.opt = [[0] * 64 for _ in range(64)]
    self.ppt = [[0] * 32 for _ in range(32)]
    self.K = num_candidates
    self.clock = 0
    self.issued = 0

  def _split(self, block):
    shift = self.R.bit_length() - 1
    return block >> shift, block & (self.R - 1)

  def _learn(self, victim):
    """Merges an AT victim's footprint, anchored at its trigger, into OPT and PPT."""
    t, R = victim["trigger"], self.R
    anchored = [victim["fp"][(t + i) % R] if i < R else 0 for i in range(64)]
    row = self.opt[t]
    for i in range(64):
      row[i] += anchored[i]
    if row[0] >= self.counter_max:
      self.opt[t] = [c >> 1 for c in row]
    coarse = [anchored[2 * j] | anchored[2 * j + 1] for j in range(32)]
    row = self.ppt[victim["pc5"]]
    for j in range(32):
      row[j] += coarse[j]
    if row[0] >= self.counter_max:
      self.ppt[victim["pc5"]] = [c >> 1 for c in row]

  def _vote(self, count, anchor):
    """0 (L1 strength), 1 (L2 strength) or -1 (no prefetch)."""
    if anchor <= 0:
      return -1
    if 100 * count >= self.l1_pct * anchor:
      return 0
    if 100 * count >= self.l2_pct * anchor:
      return 1
    return -1

  def predict(self, trigger, pc5):
    """[R] fill levels (-1 none) for a new region first touched at `trigger`."""
    R = self.R
    out = [-1] * R
    opt, ppt = self.opt[trigger], self.ppt[pc5]
    for x in range(R):
      if x == trigger:
        continue
      i = (x - trigger) % R
      v_opt = self._vote(opt[i], opt[0])
      v_ppt = self._vote(ppt[i >> 1], ppt[0])
      if v_opt < 0:
        continue
      out[x] = L1D if (v_opt == 0 and v_ppt == 0) else L2
    return out

  def train(self, access):
    self.clock += 1
    r, o = self._split(access.block)
    pc5 = pmp_pc_hash(access.pc_hash)
    at_set = self.at[r % len(self.at)]
    ft_set = self.ft[r % len(self.ft)]
    way = _find(at_set, "tag", r)
    if way >= 0:
      at_set[way]["fp"][o] = 1
      at_set[way]["stamp"] = self.clock
      return
    way = _find(ft_set, "tag", r)
    if way >= 0:
      entry = ft_set[way]
      if o == entry["trigger"]:
        entry["stamp"] = self.clock
        return
      ft_set[way] = None
      fp = [0] * self.R
      fp[entry["trigger"]] = 1
      fp[o] = 1
      v = _victim(at_set)
      if at_set[v] is not None:
        self._learn(at_set[v])
      at_set[v] = {"tag": r, "trigger": entry["trigger"], "pc5": entry["pc5"],
                   "stamp": self.clock, "fp": fp}
      return
    v = _victim(ft_set)
    ft_set[v] = {"tag": r, "trigger": o, "pc5": pc5, "stamp": self.clock}
    levels = self.predict(o, pc5)
    if any(level >= 0 for level in levels):
      pb_set = self.pb[r % len(self.pb)]
      way = _find(pb_set, "tag", r)
      if way < 0:
        way = _victim(pb_set)
      pb_set[way] = {"tag": r, "stamp": self.clock, "levels": levels}

  def issue(self, access, budget):
    r, o = self._split(access.block)
    pb_set = self.pb[r % len(self.pb)]
    way = _find(pb_set, "tag", r)
    if way < 0:
      return []
    entry = pb_set[way]
    entry["stamp"] = self.clock
    entry["levels"][o] = -1
    out = []
    for x in pmp_order(o, self.R):
      if entry["levels"][x] >= 0 and len(out) < self.K:
        out.append((r * self.R + x, entry["levels"][x]))
    for block, _ in out[:budget]:
      entry["levels"][block - r * self.R] = -1
    self.issued += min(budget, len(out))
    if all(level < 0 for level in entry["levels"]):
      pb_set[way] = None
    return out


# ----------------------------------------------------------------------------- Berti


def berti_set_hash(pc: int) -> int:
  """The history table's set hash of an IP (before masking with sets - 1)."""
  return pc ^ (pc >> 6) ^ (pc >> 12)


class ReferenceBerti:
  """Berti, simplified (`berti` docstring), one access at a time."""

  def __init__(self, *, l1_conf=10, l2_conf=8, window=16, latency=(195, 15, 35, 195),
               max_delta=4095, hist_sets=8, hist_ways=16, dt_entries=16, dt_deltas=16):
    self.l1_conf, self.l2_conf, self.window = l1_conf, l2_conf, window
    self.latency = list(latency)
    self.max_delta = max_delta
    self.hist = [[None] * hist_ways for _ in range(hist_sets)]
    self.dt = [None] * dt_entries
    self.D = dt_deltas
    self.clock = 0
    self.issued = 0

  def train(self, access):
    self.clock += 1
    if not (access.level > 0 or access.pf_hit):
      return
    pc, block, now = access.pc_hash, access.block, access.now
    lat = self.latency[access.level]
    hist_set = self.hist[berti_set_hash(pc) & (len(self.hist) - 1)]
    # Timely history entries of this IP: a prefetch issued then would have arrived.
    found = []  # (time, way, delta)
    for w, e in enumerate(hist_set):
      if e is None or e["pc"] != pc or e["time"] > now - lat:
        continue
      delta = block - e["block"]
      if delta != 0 and abs(delta) <= self.max_delta:
        found.append((e["time"], w, delta))
    way = _find(self.dt, "pc", pc)
    if way < 0:
      way = _victim(self.dt)
      self.dt[way] = {"pc": pc, "stamp": 0, "count": 0, "delta": [0] * self.D,
                      "cov": [0] * self.D, "status": [-1] * self.D}
    e = self.dt[way]
    deltas = {d for _, _, d in found}
    for j in range(self.D):
      if e["delta"][j] != 0 and e["delta"][j] in deltas:
        e["cov"][j] += 1
    if found:
      youngest = max(found, key=lambda f: (f[0], -f[1]))[2]
      if youngest not in e["delta"]:
        slot = -1
        for j in range(self.D):
          if e["delta"][j] == 0:
            slot = j
            break
        if slot < 0:
          for j in range(self.D):
            if e["status"][j] < 0 and (slot < 0 or e["cov"][j] < e["cov"][slot]):
              slot = j
        if slot >= 0:
          e["delta"][slot], e["cov"][slot], e["status"][slot] = youngest, 1, -1
    e["count"] += 1
    if e["count"] >= self.window:
      for j in range(self.D):
        if e["delta"][j] != 0:
          c = e["cov"][j]
          e["status"][j] = L1D if c >= self.l1_conf else (L2 if c >= self.l2_conf else -1)
        e["cov"][j] = 0
      e["count"] = 0
    e["stamp"] = self.clock
    v = _victim(hist_set)
    hist_set[v] = {"pc": pc, "block": block, "time": now, "stamp": self.clock}

  def issue(self, access, budget):
    way = _find(self.dt, "pc", access.pc_hash)
    if way < 0:
      return []
    e = self.dt[way]
    out = []
    for level in (L1D, L2):
      for j in range(self.D):
        if e["delta"][j] != 0 and e["status"][j] == level:
          target = access.block + e["delta"][j]
          if 0 <= target <= INT32_MAX:
            out.append((target, level))
    self.issued += min(budget, len(out))
    return out


# ----------------------------------------------------------------------------- SPP


SIG_MASK = (1 << 12) - 1


def spp_next_sig(sig: int, delta: int) -> int:
  """SPP's signature update: ``((sig << 3) ^ sd) & 0xFFF``, sd = delta or |delta| + 64."""
  sd = delta if delta >= 0 else (-delta) + 64
  return ((sig << 3) ^ sd) & SIG_MASK


class ReferenceSPP:
  """SPP (`spp` docstring), one access at a time."""

  def __init__(self, *, pf_threshold=25, fill_threshold=90, degree=8, low_fill_level=1,
               c_max=15, use_ghr=True, acc_max=1024, st_entries=256, pt_sets=512, pt_ways=4,
               ghr_entries=8):
    self.pf_threshold, self.fill_threshold = pf_threshold, fill_threshold
    self.degree, self.low, self.c_max = degree, low_fill_level, c_max
    self.use_ghr, self.acc_max = use_ghr, acc_max
    self.st = [None] * st_entries
    self.pt_delta = [[0] * pt_ways for _ in range(pt_sets)]
    self.pt_count = [[0] * pt_ways for _ in range(pt_sets)]
    self.pt_sig = [0] * pt_sets
    self.ghr = [None] * ghr_entries
    self.useful = 0
    self.issued = 0
    self.clock = 0
    self.trigger = None  # (page, offset, signature) of this access, or None

  def _pt_update(self, sig, delta):
    s = sig & (len(self.pt_sig) - 1)
    ds, cs = self.pt_delta[s], self.pt_count[s]
    for w in range(len(ds)):
      if cs[w] > 0 and ds[w] == delta:
        cs[w] += 1
        break
    else:
      w = min(range(len(ds)), key=lambda k: (cs[k], k))
      ds[w], cs[w] = delta, 1
    self.pt_sig[s] += 1
    if self.pt_sig[s] > self.c_max:
      self.pt_sig[s] >>= 1
      self.pt_count[s] = [c >> 1 for c in cs]

  def train(self, access):
    self.clock += 1
    self.useful += int(access.pf_hit)
    self.trigger = None
    page, o = access.block >> 6, access.block & 63
    way = _find(self.st, "page", page)
    if way >= 0:
      e = self.st[way]
      delta = o - e["offset"]
      if delta == 0:
        return
      if e["sig"] != 0:
        self._pt_update(e["sig"], delta)
      e["sig"] = spp_next_sig(e["sig"], delta)
      e["offset"], e["stamp"] = o, self.clock
      self.trigger = (page, o, e["sig"])
      return
    sig = 0
    if self.use_ghr:
      best = None
      for g in self.ghr:
        if g is not None and g["offset"] == o and (best is None or g["conf"] > best["conf"]):
          best = g
      if best is not None:
        sig = spp_next_sig(best["sig"], best["delta"])
    self.st[_victim(self.st)] = {"page": page, "offset": o, "sig": sig, "stamp": self.clock}
    if sig != 0:
      self.trigger = (page, o, sig)

  def _ghr_record(self, sig, conf, offset, delta):
    for g in self.ghr:
      if g is not None and (g["sig"], g["offset"], g["delta"]) == (sig, offset, delta):
        g["conf"] = conf
        return
    v = 0
    for i, g in enumerate(self.ghr):
      if g is None:
        v = i
        break
      if g["conf"] < self.ghr[v]["conf"]:
        v = i
    self.ghr[v] = {"sig": sig, "conf": conf, "offset": offset, "delta": delta}

  def issue(self, access, budget):
    out = []
    if self.trigger is not None:
      page, base, sig = self.trigger
      alpha = (100 * self.useful) // self.issued if self.issued > 0 else 0
      path, depth = 100, 0
      while len(out) < self.degree:
        s = sig & (len(self.pt_sig) - 1)
        c_sig = self.pt_sig[s]
        best_w, best_conf = -1, -1
        for w in range(len(self.pt_delta[s])):
          cd, d = self.pt_count[s][w], self.pt_delta[s][w]
          if cd == 0 or c_sig == 0:
            continue
          conf = (100 * cd) // c_sig if depth == 0 else (((alpha * cd) // c_sig) * path) // 100
          if conf < self.pf_threshold:
            continue
          x = base + d
          if 0 <= x < 64:
            if len(out) < self.degree:
              out.append((page * 64 + x, L1D if conf >= self.fill_threshold else self.low))
          elif self.use_ghr:
            self._ghr_record(sig, conf, x & 63, d)
          if conf > best_conf:
            best_w, best_conf = w, conf
        if best_w < 0:
          break
        d = self.pt_delta[s][best_w]
        if not 0 <= base + d < 64:
          break
        path, sig, base, depth = best_conf, spp_next_sig(sig, d), base + d, depth + 1
    self.issued += min(budget, len(out))
    if self.issued >= self.acc_max:
      self.issued >>= 1
      self.useful >>= 1
    return out
