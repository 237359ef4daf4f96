"""The expert cache in plain Python (sets, dicts, lists): the slow reference.

Written apart from `cache.py` (no JAX, no shared helpers) from the same
specification (see `cache`'s module docstring): the tests hold the `lax.scan`
simulator to this access for access (same outcome and same evicted key at every
access) for every policy. Belady's next-use time is found here by scanning the
future accesses one by one, not by the sort `cache.make_trace` uses.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

POLICIES = ("lru", "lfu", "lhu", "fld", "hobbit", "belady")
HIGH, LOW, SKIP = 0, 1, 2
HIT_HIGH, HIT_LOW, MISS_HIGH, MISS_LOW, SKIPPED = range(5)
NO_EVICTION, NOT_CACHED = -1, -2
_NEVER = float("inf")


def simulate_reference(
    ids: Any,
    precision: Any = None,
    seq_start: Any = None,
    *,
    num_experts: int,
    policy: str,
    capacity_high: int,
    capacity_low: int = 0,
    weights: Sequence[int] = (2, 3, 3, 1),
    bytes_high: float = 1.0,
    bytes_low: float = 0.25,
    per_layer: bool = False,
) -> dict[str, list]:
  """Replays a trace access by access.

  Args:
    ids: nested [N][L][K] expert ids (lists or an array).
    precision: [N][L][K] classes 0 high / 1 low / 2 skip (default all high).
    seq_start: [N] bools, a new sequence starts (token 0 always does).
    num_experts, policy, capacity_high, capacity_low, weights, bytes_high,
    bytes_low, per_layer: as in `cache.make_params`.

  Returns:
    ``{"outcome": [N][L][K], "evicted": [N][L][K], "hits": [N],
    "misses_high": [N], "misses_low": [N], "skips": [N], "bytes": [N]}``.
  """
  ids = [[[int(e) for e in row] for row in layer] for layer in _tolist(ids)]
  N = len(ids)
  L = len(ids[0]) if N else 0
  K = len(ids[0][0]) if N else 0
  E = num_experts
  prec = ([[[HIGH] * K for _ in range(L)] for _ in range(N)] if precision is None
          else [[[int(c) for c in row] for row in layer] for layer in _tolist(precision)])
  starts = [False] * N if seq_start is None else [bool(s) for s in _tolist(seq_start)]
  w_lru, w_lfu, w_lhu, w_fld = (int(w) for w in weights)

  # Every access in order, to look ahead for Belady.
  flat_keys = [l * E + ids[n][l][k] for n in range(N) for l in range(L) for k in range(K)]

  def next_access(index: int) -> float:
    for j in range(index + 1, len(flat_keys)):
      if flat_keys[j] == flat_keys[index]:
        return j
    return _NEVER

  high_cache: set[int] = set()
  low_cache: set[int] = set()
  last_access: dict[int, int] = {}  # never reset
  next_use: dict[int, float] = {}
  last_token: dict[int, int] = {}  # per sequence
  count: dict[int, int] = {}
  high_count: dict[int, int] = {}
  token = 0

  def primary(key: int, layer: int, for_high: bool) -> float:
    d = (key // E - layer) % L  # layers ahead, 0..L-1
    h = high_count.get(key, 0) if for_high else 0
    if policy == "lru":
      return 0
    if policy == "lfu":
      return count.get(key, 0)
    if policy == "lhu":
      return h
    if policy == "fld":
      return L - d
    if policy == "hobbit":
      return (L * (w_lru * last_token.get(key, 0) + w_lfu * count.get(key, 0) + w_lhu * h)
              + w_fld * token * (L - d))
    if policy == "belady":
      return -next_use[key]
    raise ValueError(f"policy: unknown name {policy!r}")

  out = {name: [] for name in ("outcome", "evicted", "hits", "misses_high", "misses_low",
                               "skips", "bytes")}
  clock = 0
  for n in range(N):
    if n == 0 or starts[n]:
      token = 1
      last_token.clear()
      count.clear()
      high_count.clear()
    else:
      token += 1
    outcome_n, evicted_n = [], []
    for l in range(L):
      pinned = {l * E + e for e in ids[n][l]}
      outcome_l, evicted_l = [], []
      for k in range(K):
        key = l * E + ids[n][l][k]
        cls = prec[n][l][k]
        if key in high_cache:
          outcome = HIT_HIGH
        elif cls == HIGH:
          outcome = MISS_HIGH
        elif key in low_cache:
          outcome = HIT_LOW
        elif cls == LOW:
          outcome = MISS_LOW
        else:
          outcome = SKIPPED
        evicted = NO_EVICTION
        if outcome in (MISS_HIGH, MISS_LOW):
          for_high = outcome == MISS_HIGH
          target = high_cache if for_high else low_cache
          capacity = capacity_high if for_high else capacity_low
          group = set(target)
          if per_layer:  # layer l owns capacity // L entries, one more if l < capacity % L
            capacity = capacity // L + (1 if l < capacity % L else 0)
            group = {x for x in target if x // E == l}
          if len(group) < capacity:
            target.add(key)
          else:
            candidates = [x for x in group if x not in pinned]
            if candidates:
              victim = min(candidates,
                           key=lambda x: (primary(x, l, for_high), last_access[x]))
              target.remove(victim)
              target.add(key)
              evicted = victim
            else:
              evicted = NOT_CACHED
        if outcome != SKIPPED:
          last_access[key] = clock
          last_token[key] = token
          count[key] = count.get(key, 0) + 1
          if outcome in (HIT_HIGH, MISS_HIGH):
            high_count[key] = high_count.get(key, 0) + 1
        next_use[key] = next_access(clock)
        clock += 1
        outcome_l.append(outcome)
        evicted_l.append(evicted)
      outcome_n.append(outcome_l)
      evicted_n.append(evicted_l)
    flat = [o for row in outcome_n for o in row]
    out["outcome"].append(outcome_n)
    out["evicted"].append(evicted_n)
    out["hits"].append(sum(o in (HIT_HIGH, HIT_LOW) for o in flat))
    out["misses_high"].append(flat.count(MISS_HIGH))
    out["misses_low"].append(flat.count(MISS_LOW))
    out["skips"].append(flat.count(SKIPPED))
    out["bytes"].append(flat.count(MISS_HIGH) * bytes_high + flat.count(MISS_LOW) * bytes_low)
  return out


def _tolist(x: Any) -> list:
  return x.tolist() if hasattr(x, "tolist") else list(x)
