"""IP-stride, SMS and Bingo in plain Python: the slow references of `ip_stride`, `sms`, `bingo`.

Written from the mechanism descriptions in those modules' docstrings (no JAX,
no shared code with them): dicts and lists, Python ints, LRU as an
`collections.OrderedDict` per set (oldest first). They follow the reference
prefetcher protocol of `jaxsys.sims.cache.reference` (``train(access)`` then
``issue(access, budget) -> [(block, fill_level), ...]`` on every L1D demand
load; the runner accepts the first ``budget`` candidates) and count the same
statistics as the JAX states, so the tests compare them event for event.

Footprints are Python ints with bit ``i`` for offset ``i`` (0 <= value < 2**32);
the JAX tables hold the same bits in int32.
"""

from __future__ import annotations

from collections import OrderedDict

INT32_MAX = 2**31 - 1
PAGE_BLOCKS = 64


class _SetAssoc:
  """A set-associative table with LRU: per set an OrderedDict key -> payload."""

  def __init__(self, sets: int, ways: int):
    self.nsets = sets
    self.ways = ways
    self.sets = [OrderedDict() for _ in range(sets)]

  def set_of(self, index: int) -> OrderedDict:
    return self.sets[index % self.nsets]

  def touch(self, index: int, key) -> None:
    self.set_of(index).move_to_end(key)

  def put(self, index: int, key, payload):
    """Inserts or replaces `key` (most recent); returns the evicted (key, payload) or None."""
    s = self.set_of(index)
    evicted = None
    if key in s:
      del s[key]
    elif len(s) >= self.ways:
      evicted = s.popitem(last=False)
    s[key] = payload
    return evicted


class IPStride:
  """Per-PC stride detection (see `ip_stride`): tracker ``sets x ways``, 2-bit confidence."""

  def __init__(self, degree: int = 3, sets: int = 64, ways: int = 4, threshold: int = 1,
               fill_level: int = 0, cross_page: bool = False):
    self.degree = degree
    self.threshold = threshold
    self.fill_level = fill_level
    self.cross_page = cross_page
    self.table = _SetAssoc(sets, ways)
    self.loads = 0
    self.triggers = 0
    self.issued = 0
    self.pending = []

  def train(self, access) -> None:
    self.loads += 1
    b, pc = access.block, access.pc_hash
    s = self.table.set_of(pc)
    self.pending = []
    if pc not in s:
      self.table.put(pc, pc, {"last": b, "stride": 0, "conf": 0})
      return
    entry = s[pc]
    self.table.touch(pc, pc)
    stride = b - entry["last"]
    if stride == 0:
      return
    if stride == entry["stride"]:
      entry["conf"] = min(entry["conf"] + 1, 3)
    else:
      entry["conf"] = 0
    entry["stride"] = stride
    entry["last"] = b
    if entry["conf"] >= self.threshold:
      self.triggers += 1
      for k in range(1, self.degree + 1):
        target = b + k * stride
        if not 0 <= target <= INT32_MAX:
          continue
        if not self.cross_page and target // PAGE_BLOCKS != b // PAGE_BLOCKS:
          continue
        self.pending.append((target, self.fill_level))

  def issue(self, access, budget: int) -> list[tuple[int, int]]:
    self.issued += min(budget, len(self.pending))
    return self.pending


class RegionPrefetcher:
  """SMS (``kind="sms"``) or Bingo (``kind="bingo"``); see `sms` and `bingo`.

  Sizes are (sets, ways) pairs; the PB is fully associative with `pb_entries`.
  """

  def __init__(self, kind: str = "sms", *, region_blocks: int = 32, ft=(8, 8), at=(8, 8),
               pht=(1024, 16), pb_entries: int = 32, fill_level: int = 0,
               threshold_pct: int = 20):
    assert kind in ("sms", "bingo")
    self.kind = kind
    self.R = region_blocks
    self.rbits = region_blocks.bit_length() - 1
    self.ft = _SetAssoc(*ft)  # region -> {"pc", "block"}
    self.at = _SetAssoc(*at)  # region -> {"pc", "block", "pattern"}
    self.pht = _SetAssoc(*pht)  # (pc, offset) [sms] or (pc, block) [bingo] -> {"block", "pattern"}
    self.pb = _SetAssoc(1, pb_entries)  # region -> pending offsets (int)
    self.fill_level = fill_level
    self.threshold_pct = threshold_pct
    self.loads = self.triggers = self.predictions = self.trainings = self.issued = 0
    self.out = []

  def _pht_index(self, pc: int, offset: int) -> int:
    fold = pc ^ (pc >> 7) ^ (pc >> 14)
    return (fold << self.rbits) | offset

  def _train_pht(self, pc: int, block: int, pattern: int) -> None:
    self.trainings += 1
    offset = block % self.R
    key = (pc, offset) if self.kind == "sms" else (pc, block)
    self.pht.put(self._pht_index(pc, offset), key, {"block": block, "pattern": pattern})

  def _predict(self, pc: int, block: int) -> int | None:
    offset = block % self.R
    index = self._pht_index(pc, offset)
    s = self.pht.set_of(index)
    exact = (pc, offset) if self.kind == "sms" else (pc, block)
    if exact in s:
      self.pht.touch(index, exact)
      return s[exact]["pattern"]
    if self.kind == "sms":
      return None
    matches = [e["pattern"] for (epc, eblock), e in s.items()
               if epc == pc and eblock % self.R == offset]
    if not matches:
      return None
    pattern = 0
    for i in range(self.R):
      votes = sum(1 for m in matches if m >> i & 1)
      if 100 * votes >= self.threshold_pct * len(matches):
        pattern |= 1 << i
    return pattern

  def train(self, access) -> None:
    self.loads += 1
    b, pc = access.block, access.pc_hash
    r, o = b >> self.rbits, b % self.R
    at_set = self.at.set_of(r)
    ft_set = self.ft.set_of(r)
    predicted = None
    if r in at_set:
      at_set[r]["pattern"] |= 1 << o
      self.at.touch(r, r)
    elif r in ft_set:
      entry = ft_set[r]
      if entry["block"] == b:
        self.ft.touch(r, r)
      else:
        del ft_set[r]
        pattern = (1 << (entry["block"] % self.R)) | (1 << o)
        evicted = self.at.put(r, r, {"pc": entry["pc"], "block": entry["block"],
                                     "pattern": pattern})
        if evicted is not None:
          old = evicted[1]
          self._train_pht(old["pc"], old["block"], old["pattern"])
    else:
      self.triggers += 1
      self.ft.put(r, r, {"pc": pc, "block": b})
      predicted = self._predict(pc, b)
      if predicted is not None:
        self.predictions += 1

    # The prefetch buffer: insert a prediction, clear o, build the drain order.
    pb = self.pb.set_of(0)
    pending = None
    if predicted is not None and predicted & ~(1 << o):
      pending = predicted & ~(1 << o)
    elif r in pb:
      pending = pb[r] & ~(1 << o)
    self.out = []
    self._region, self._pending = r, pending
    if pending is None:
      return
    for k in range(1, self.R + 1):
      off = (o + k) % self.R
      if pending >> off & 1:
        self.out.append(((r << self.rbits) + off, off))

  def issue(self, access, budget: int) -> list[tuple[int, int]]:
    r, pending = self._region, self._pending
    if pending is None:
      return []
    taken = self.out[:budget]
    for _, off in taken:
      pending &= ~(1 << off)
    self.issued += len(taken)
    if pending:
      self.pb.put(0, r, pending)
    else:
      self.pb.set_of(0).pop(r, None)
    return [(block, self.fill_level) for block, _ in self.out]

  def stats(self) -> list[int]:
    """(loads, triggers, predictions, trainings, issued): the JAX ``stats`` vector."""
    return [self.loads, self.triggers, self.predictions, self.trainings, self.issued]


def SMS(**kw) -> RegionPrefetcher:  # pylint: disable=invalid-name
  """The SMS reference (`RegionPrefetcher` with ``kind="sms"``)."""
  return RegionPrefetcher("sms", **kw)


def Bingo(**kw) -> RegionPrefetcher:  # pylint: disable=invalid-name
  """The Bingo reference (`RegionPrefetcher` with ``kind="bingo"``)."""
  return RegionPrefetcher("bingo", **kw)
