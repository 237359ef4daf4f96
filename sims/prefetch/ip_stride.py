"""IP-stride: a per-PC constant-stride prefetcher (baseline of Gaze, papers/prefetch.md 1.2).

The Gaze artifact's ``ip_stride`` baseline: a tracker of **256 entries, 4-way
set-associative** (64 sets, LRU), indexed by the load's PC, **degree 3**, L1D
fill (``papers/prefetch.md`` 1.2 "IP-stride: 256x4 tracker, degree 3").

**Mechanism** (on every L1D demand load, hit or miss, block ``b``, PC ``p``):

* set ``p & (sets - 1)``, tag the full PC hash (no aliasing is modelled);
  an entry holds ``(pc, last block, last stride, confidence)``, LRU by last use;
* a miss allocates ``(p, b, stride 0, confidence 0)`` in the LRU (or an empty)
  way; nothing is prefetched;
* a hit computes ``s = b - last``. ``s == 0`` (the same block again) only
  refreshes the LRU stamp. Otherwise the confidence becomes
  ``min(conf + 1, 3)`` (a 2-bit counter) if ``s`` equals the stored stride and
  0 if not, the stride and last block are replaced by ``s`` and ``b``, and if
  the new confidence is ``>= threshold`` the candidates
  ``b + s, b + 2s, .., b + degree*s`` are offered, in that order, to
  ``fill_level``. With ``threshold = 1`` (default) a stride seen twice in a row
  prefetches, ChampSim's ``ip_stride`` rule.
* by default candidates stay in the 4 KiB page of ``b`` (64 blocks, as a
  prefetcher on physical addresses must; ``cross_page=False``); blocks outside
  ``0..2**31 - 1`` are never offered.

Refused candidates (beyond the cache's issue budget) are dropped, not queued:
the next access of the same PC offers them again (ChampSim's lookahead
re-issue is not modelled).

Static (the factory): ``max_degree`` (K, default 3), ``max_sets`` (64) and
``max_ways`` (4): the allocated table. Traced params (`make_params`, a sweep
needs no recompile): ``degree``, ``sets`` (power of two <= max_sets),
``ways`` (<= max_ways), ``threshold`` (1..3), ``fill_level``, ``cross_page``.

>>> pf = ip_stride()
>>> pf.name, pf.num_candidates
('ip_stride3', 3)
>>> storage_bits() // 8          # 256 x (16 + 32 + 7 + 2 + 2) bits
1888
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
CONF_MAX = 3  # 2-bit saturating confidence
PAGE_BLOCKS = 64  # 4 KiB pages of 64-byte blocks

# Tracker fields (last axis).
STAMP, PC, LAST, STRIDE, CONF = range(5)
NUM_FIELDS = 5
# Stats vector fields.
S_TICK, S_TRIGGERS, S_ISSUED = range(3)


class IPStrideParams(NamedTuple):
  degree: Any  # [] int32 candidates per trigger, 1..max_degree
  sets: Any  # [] int32 tracker sets in use, a power of two <= max_sets
  ways: Any  # [] int32 tracker ways in use, 1..max_ways
  threshold: Any  # [] int32 confidence needed to prefetch, 1..3
  fill_level: Any  # [] int32 0 L1D, 1 L2, 2 LLC
  cross_page: Any  # [] bool allow candidates outside b's 4 KiB page


class IPStrideState(NamedTuple):
  table_SWF: jax.Array  # [S, W, 5] int32 (stamp (-1 empty), pc, last block, stride, confidence)
  stats: jax.Array  # [3] int32 (LRU clock = loads seen, triggering loads, accepted candidates)


def _check_int(name: str, value: Any, lo: int, hi: int, what: str = "") -> int:
  if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
    raise TypeError(f"{name}: expected an int, given {value!r}")
  if not lo <= value <= hi:
    raise ValueError(f"{name}: expected {lo}..{hi}{what}, given {value}")
  return int(value)


def _check_pow2(name: str, value: Any, hi: int, what: str = "") -> int:
  value = _check_int(name, value, 1, hi, what)
  if value & (value - 1):
    raise ValueError(f"{name}: expected a power of two (set index = low bits), given {value}")
  return value


def _make_params(max_degree: int, max_sets: int, max_ways: int, degree: int = 3,
                 sets: int | None = None, ways: int | None = None, threshold: int = 1,
                 fill_level: str | int = "l1d", cross_page: bool = False) -> IPStrideParams:
  degree = _check_int("degree", degree, 1, max_degree, " (the prefetcher's max_degree)")
  sets = _check_pow2("sets", max_sets if sets is None else sets, max_sets,
                     " (the prefetcher's max_sets)")
  ways = _check_int("ways", max_ways if ways is None else ways, 1, max_ways,
                    " (the prefetcher's max_ways)")
  threshold = _check_int("threshold", threshold, 1, CONF_MAX, " (a 2-bit confidence)")
  level = hierarchy.level_index(fill_level, name="fill_level")
  if not isinstance(cross_page, (bool, np.bool_)):
    raise TypeError(f"cross_page: expected a bool, given {cross_page!r}")
  return IPStrideParams(np.int32(degree), np.int32(sets), np.int32(ways), np.int32(threshold),
                        np.int32(level), np.bool_(cross_page))


def _init(max_sets: int, max_ways: int, pparams: IPStrideParams) -> IPStrideState:
  del pparams
  table = np.zeros((max_sets, max_ways, NUM_FIELDS), np.int32)
  table[..., STAMP] = -1
  return IPStrideState(jnp.asarray(table), jnp.zeros((3,), jnp.int32))


def _train(pstate, access, hit_l1, now, pparams):
  """All the work is in `issue`, which also knows the budget."""
  del access, hit_l1, now, pparams
  return pstate


def _issue(max_degree: int, pstate: IPStrideState, cache_state, access: Access, now, budget,
           pparams: IPStrideParams):
  del cache_state, now
  p = pparams
  table, stats = pstate.table_SWF, pstate.stats
  W = table.shape[1]
  load = access.load
  b = jnp.asarray(access.block, jnp.int32)
  pc = jnp.asarray(access.pc_hash, jnp.int32)
  tick = stats[S_TICK]
  one = 1 + (tick < 0).astype(jnp.int32)  # an opaque 1: materialises the row once

  s_idx = (pc & (jnp.asarray(p.sets, jnp.int32) - 1)).astype(jnp.uint32)
  row_WF = jax.lax.div(jax.lax.dynamic_index_in_dim(table, s_idx, axis=0, keepdims=False), one)
  way_W = jnp.arange(W, dtype=jnp.int32)
  usable_W = way_W < jnp.asarray(p.ways, jnp.int32)
  valid_W = usable_W & (row_WF[:, STAMP] >= 0)
  hit_W = valid_W & (row_WF[:, PC] == pc)
  hit = jnp.any(hit_W)
  # Victim: an empty usable way (lowest index), else the least recently used.
  key_W = jnp.where(usable_W, row_WF[:, STAMP], INT32_MAX)
  way = jnp.where(hit, jnp.argmax(hit_W), jnp.argmin(key_W)).astype(jnp.int32)
  old_F = jax.lax.dynamic_index_in_dim(row_WF, way, axis=0, keepdims=False)

  stride = b - old_F[LAST]
  moved = hit & (stride != 0)
  same = old_F[STRIDE] == stride
  conf = jnp.where(same, jnp.minimum(old_F[CONF] + 1, CONF_MAX), 0).astype(jnp.int32)
  trigger = load & moved & (conf >= jnp.asarray(p.threshold, jnp.int32))
  new_F = jnp.where(
      hit,
      jnp.where(moved, jnp.stack([tick, pc, b, stride, conf]), old_F.at[STAMP].set(tick)),
      jnp.stack([tick, pc, b, jnp.int32(0), jnp.int32(0)]))
  new_F = jnp.where(load, new_F, old_F)
  row_WF = jnp.where((way_W == way)[:, None], new_F[None, :], row_WF)
  table = jax.lax.dynamic_update_index_in_dim(table, row_WF, s_idx, axis=0)

  # Candidates b + k s, k = 1..K, checked for int32 range without overflow.
  k_K = jnp.arange(1, max_degree + 1, dtype=jnp.int32)
  room_K = jnp.where(stride > 0, (INT32_MAX - b) // k_K, b // k_K)
  in_range_K = jnp.abs(stride) <= room_K
  block_K = jnp.where(in_range_K, b + k_K * stride, 0)
  same_page_K = (block_K // PAGE_BLOCKS) == (b // PAGE_BLOCKS)
  valid_K = (trigger & (k_K <= jnp.asarray(p.degree, jnp.int32)) & in_range_K
             & (same_page_K | jnp.asarray(p.cross_page, jnp.bool_)))
  cand = Candidates(block_K, jnp.broadcast_to(jnp.asarray(p.fill_level, jnp.int32),
                                              (max_degree,)), valid_K)
  issued = jnp.sum(protocol.accepted_mask(valid_K, budget).astype(jnp.int32))
  stats = stats + jnp.stack([load.astype(jnp.int32), trigger.astype(jnp.int32), issued])
  return IPStrideState(table, stats), cand


@functools.lru_cache(maxsize=None)
def ip_stride(max_degree: int = 3, max_sets: int = 64, max_ways: int = 4) -> Prefetcher:
  """The IP-stride prefetcher (module docstring), K = `max_degree` candidates.

  Args:
    max_degree: static candidate count K (>= 1); ``degree`` <= it is a param.
    max_sets, max_ways: the allocated tracker (default 64 x 4 = 256 entries, the
      Gaze artifact's); ``sets`` / ``ways`` params use part of it.

  Params (`Prefetcher.make_params`): ``degree`` (default 3), ``sets`` (default
  max_sets), ``ways`` (default max_ways), ``threshold`` (1), ``fill_level``
  (``"l1d"``), ``cross_page`` (False).

  >>> pf = ip_stride(4)
  >>> int(pf.make_params(degree=2).degree)
  2
  """
  max_degree = _check_int("max_degree", max_degree, 1, 64)
  max_sets = _check_pow2("max_sets", max_sets, 1 << 20)
  max_ways = _check_int("max_ways", max_ways, 1, 64)
  return Prefetcher(
      name=f"ip_stride{max_degree}",
      num_candidates=max_degree,
      make_params=functools.partial(_make_params, max_degree, max_sets, max_ways),
      init=functools.partial(_init, max_sets, max_ways),
      train=_train,
      issue=functools.partial(_issue, max_degree),
      self_masking=True,
  )


def storage_bits(entries: int = 256, ways: int = 4, *, pc_tag_bits: int = 16,
                 block_bits: int = 32, stride_bits: int = 7, conf_bits: int = 2) -> int:
  """Bits of hardware state for a tracker of `entries` (`ways`-way, LRU).

  Per entry: a PC tag, the last block number, the stride (7 bits: +-63 blocks,
  enough for in-page strides), the confidence and log2(ways) LRU bits. The
  defaults (256 x 4, 16-bit tag, 32-bit block) give 256 x 59 = 15104 bits
  (1.84 KiB). The JAX model keeps full-width fields; this is the accounting.
  """
  entries = _check_int("entries", entries, 1, 1 << 30)
  ways = _check_int("ways", ways, 1, entries)
  if entries % ways:
    raise ValueError(f"entries: expected a multiple of ways ({ways}), given {entries}")
  _check_pow2("entries // ways", entries // ways, 1 << 30)
  lru = max(0, (ways - 1).bit_length())
  return entries * (pc_tag_bits + block_bits + stride_bits + conf_bits + lru)
