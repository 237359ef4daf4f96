"""Berti, simplified ("berti_simplified"): per-IP local deltas chosen for timeliness.

After Navarro-Torres et al., "Berti: an Accurate Local-Delta Data Prefetcher",
MICRO'22 (``papers/prefetch.md`` 1.2: history 8 sets x 16 ways, delta table
16 IPs x 16 deltas, confidence out of 16: >= 10 fill L1D, >= 8 fill L2; it
trains on L1D misses and prefetch hits only, the maintainer's statement in
agusnt/Berti-Artifact#13). **This is a simplified Berti, not a faithful port**;
what follows is this module's exact specification, implemented again in plain
Python by `baselines_b_reference.ReferenceBerti` (the tests match them event
for event).

**Tables** (static sizes; replacement: an empty way first, else the least
recently stamped, the stamp being a clock bumped on every L1D demand load):

* history: ``hist_sets`` (8, set = ``(pc ^ pc>>6 ^ pc>>12) & (sets - 1)``) x
  ``hist_ways`` (16) of (IP, block, cycle); a new record replaces the oldest
  (the stamp is the insertion time, so this is FIFO, as in Berti);
* delta table: ``dt_entries`` (16) IPs, fully associative, each with a search
  counter and ``dt_deltas`` (16) slots of (delta, coverage counter, status:
  none / L1 / L2).

**Training event** (an L1D demand load that missed L1D, ``level > 0``, or hit
a prefetched line, ``pf_hit``), IP p, block b, cycle ``now``:

1. *Timeliness.* The event's fill latency ``lat`` is ``latency[level]``, a
   param defaulting to the default hierarchy's demand latencies (L2 15, LLC 35,
   DRAM 195 cycles), and for an L1D prefetch hit ``latency[0]`` (default 195:
   we assume the prefetched line came from DRAM, since the Access does not say
   where its data came from). A history record (p, b', t') is *timely* if
   ``t' <= now - lat`` (a prefetch triggered by it would have arrived in time)
   and its delta ``b - b'`` is non-zero with ``|delta| <= max_delta`` (4095).
2. *Coverage.* The IP's delta-table entry is found or allocated (all slots
   empty, counter 0). Every slot whose delta is among the timely deltas gets
   +1 coverage (once per event, however many records give it).
3. *New delta.* The delta of the **youngest** timely record (largest t';
   ties: the lowest way) is inserted if no slot holds it: into the first
   empty slot, else the slot of status none with the smallest coverage (first
   on ties), else it is dropped. It starts with coverage 1, status none.
4. *Confidence window.* The search counter counts events; when it reaches
   ``window`` (16), each used slot's status becomes **L1** if coverage >=
   ``l1_conf`` (10), **L2** if >= ``l2_conf`` (8), else none; coverage and the
   counter restart at 0 (the status stands until the next window ends).
5. The event is recorded in history.

**Issue** (every L1D demand load of an IP with a delta-table entry): ``b +
delta`` for the L1-status slots, then the L2-status slots, each in slot order,
filled into L1D resp. L2 (up to K = ``dt_deltas`` candidates; the cache
accepts the first ``budget``).

**Simplifications** against the paper [I]: latency from the level the demand
found (a param table), not measured per fill; no prefetch filter (the cache
drops redundant prefetches, which still count as issued); one new delta per
event (the youngest timely one); no "L2 replace" status (>= 6) and no MSHR
occupancy (70 %) rule: the cache's issue budget gates instead; full IPs as
tags; physical block numbers (vBerti uses virtual addresses).

Params (`make_params`, traced): ``l1_conf`` 10, ``l2_conf`` 8, ``window`` 16,
``latency`` (195, 15, 35, 195), ``max_delta`` 4095.
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxsys.sims.cache.protocol import Access, Candidates, Prefetcher
from ._checks import check_int as _check_int

INT32_MAX = int(np.iinfo(np.int32).max)
H_PC, H_BLOCK, H_TIME, H_STAMP = range(4)  # history record
DT_PC, DT_STAMP, DT_COUNT, DT_SLOTS = range(4)  # delta-table entry: then delta, cov, status
L1D, L2 = 0, 1
DEFAULT_LATENCY = (195, 15, 35, 195)


class BertiParams(NamedTuple):
  l1_conf: Any  # [] int32 coverage >= l1_conf at the window's end: status L1 (10)
  l2_conf: Any  # [] int32 coverage >= l2_conf: status L2 (8)
  window: Any  # [] int32 events per confidence window (16)
  latency: Any  # [4] int32 fill latency by the demand's level (index 0: an L1D prefetch hit)
  max_delta: Any  # [] int32 largest |delta| learned, in blocks (4095)


class BertiState(NamedTuple):
  hist: jax.Array  # [HS, HW, 4] int32 (ip, block, cycle, stamp); stamp -1 empty
  dt: jax.Array  # [E, 3 + 3D] int32 (ip, stamp, counter, delta[D], coverage[D], status[D])
  clock_issued: jax.Array  # [2] int32 (loads seen, candidates accepted)


class BertiConfig(NamedTuple):
  hist_sets: int
  hist_ways: int
  dt_entries: int
  dt_deltas: int




def make_params(l1_conf: int = 10, l2_conf: int = 8, window: int = 16,
                latency: tuple[int, int, int, int] = DEFAULT_LATENCY,
                max_delta: int = 4095) -> BertiParams:
  """Checked Berti params (numpy; see the module docstring)."""
  window = _check_int("window", window, 1, 1 << 20)
  l1_conf = _check_int("l1_conf", l1_conf, 1, window)
  l2_conf = _check_int("l2_conf", l2_conf, 1, window)
  if l2_conf > l1_conf:
    raise ValueError(f"l2_conf: expected <= l1_conf ({l1_conf}), given {l2_conf}")
  latency = tuple(latency) if isinstance(latency, (tuple, list, np.ndarray)) else latency
  if not isinstance(latency, tuple) or len(latency) != 4:
    raise ValueError(f"latency: expected 4 ints (L1D prefetch hit, L2, LLC, DRAM), given"
                     f" {latency!r}")
  lat = [_check_int(f"latency[{i}]", v, 0, 1 << 20) for i, v in enumerate(latency)]
  max_delta = _check_int("max_delta", max_delta, 1, 1 << 24)
  return BertiParams(np.int32(l1_conf), np.int32(l2_conf), np.int32(window),
                     np.array(lat, np.int32), np.int32(max_delta))


def set_hash(pc: jax.Array) -> jax.Array:
  pc = jnp.asarray(pc, jnp.int32)
  return pc ^ (pc >> 6) ^ (pc >> 12)


def _init(cfg: BertiConfig, pparams: BertiParams) -> BertiState:
  del pparams
  hist = np.zeros((cfg.hist_sets, cfg.hist_ways, 4), np.int32)
  hist[..., H_STAMP] = -1
  D = cfg.dt_deltas
  dt = np.zeros((cfg.dt_entries, DT_SLOTS + 3 * D), np.int32)
  dt[:, DT_STAMP] = -1
  dt[:, DT_SLOTS + 2 * D:] = -1
  return BertiState(jnp.asarray(hist), jnp.asarray(dt), jnp.zeros((2,), jnp.int32))


def _train(pstate, access, hit_l1, now, pparams):
  # Training and issue share one delta-table read: everything is in `issue`.
  del access, hit_l1, now, pparams
  return pstate


def _issue(cfg: BertiConfig, pstate: BertiState, cache_state, access: Access, now, budget,
           pp: BertiParams):
  del cache_state
  D = cfg.dt_deltas
  do = jnp.asarray(access.load, jnp.bool_)
  level = jnp.asarray(access.level, jnp.int32)
  ev = do & ((level > 0) | jnp.asarray(access.pf_hit, jnp.bool_))
  pc = jnp.asarray(access.pc_hash, jnp.int32)
  b = jnp.asarray(access.block, jnp.int32)
  now = jnp.asarray(now, jnp.int32)
  clock = pstate.clock_issued[0] + do.astype(jnp.int32)
  lat = jnp.take(jnp.asarray(pp.latency, jnp.int32), jnp.clip(level, 0, 3))

  # --- Timely history records of this IP.
  hs = set_hash(pc) & (cfg.hist_sets - 1)
  hrow = jax.lax.dynamic_index_in_dim(pstate.hist, hs, axis=0, keepdims=False)  # [HW, 4]
  d_W = b - hrow[:, H_BLOCK]
  ok_W = ((hrow[:, H_STAMP] >= 0) & (hrow[:, H_PC] == pc) & (hrow[:, H_TIME] <= now - lat)
          & (d_W != 0) & (jnp.abs(d_W) <= pp.max_delta))

  # --- The IP's delta-table entry (found, or a fresh one in the victim's place).
  dt = pstate.dt
  E = cfg.dt_entries
  hit_E = (dt[:, DT_STAMP] >= 0) & (dt[:, DT_PC] == pc)
  hit = jnp.any(hit_E)
  way = jnp.where(hit, jnp.argmax(hit_E), jnp.argmin(dt[:, DT_STAMP])).astype(jnp.int32)
  e = jax.lax.dynamic_index_in_dim(dt, way, axis=0, keepdims=False)
  delta = jnp.where(hit, e[DT_SLOTS:DT_SLOTS + D], 0)
  cov = jnp.where(hit, e[DT_SLOTS + D:DT_SLOTS + 2 * D], 0)
  status = jnp.where(hit, e[DT_SLOTS + 2 * D:], -1)
  count = jnp.where(hit, e[DT_COUNT], 0)
  old_delta = e[DT_SLOTS:DT_SLOTS + D]
  old_status = e[DT_SLOTS + 2 * D:]

  # Coverage of the deltas already held.
  present_D = (delta != 0) & jnp.any(ok_W[None, :] & (d_W[None, :] == delta[:, None]), axis=1)
  cov = cov + present_D.astype(jnp.int32)
  # The youngest timely record's delta, if new.
  any_ok = jnp.any(ok_W)
  t_max = jnp.max(jnp.where(ok_W, hrow[:, H_TIME], jnp.iinfo(jnp.int32).min))
  y_way = jnp.argmax(ok_W & (hrow[:, H_TIME] == t_max))
  y_delta = jnp.take(d_W, y_way)
  empty_D = delta == 0
  free_D = status < 0
  slot = jnp.where(jnp.any(empty_D), jnp.argmax(empty_D),
                   jnp.argmin(jnp.where(free_D, cov, INT32_MAX))).astype(jnp.int32)
  insert = any_ok & ~jnp.any(delta == y_delta) & (jnp.any(empty_D) | jnp.any(free_D))
  sel_D = insert & (jnp.arange(D, dtype=jnp.int32) == slot)
  delta = jnp.where(sel_D, y_delta, delta)
  cov = jnp.where(sel_D, 1, cov)
  status = jnp.where(sel_D, -1, status)
  # The confidence window.
  count = count + 1
  end = count >= pp.window
  rated = jnp.where(cov >= pp.l1_conf, L1D, jnp.where(cov >= pp.l2_conf, L2, -1))
  status = jnp.where(end & (delta != 0), rated, status)
  cov = jnp.where(end, 0, cov)
  count = jnp.where(end, 0, count)
  e_new = jnp.concatenate([jnp.stack([pc, clock, count]), delta, cov, status])
  dt_sel = (ev & (jnp.arange(E, dtype=jnp.int32) == way))[:, None]
  dt = jnp.where(dt_sel, e_new[None, :], dt)

  # --- Record the event in history (FIFO victim).
  vic = jnp.argmin(hrow[:, H_STAMP]).astype(jnp.int32)
  h_sel = (ev & (jnp.arange(cfg.hist_ways, dtype=jnp.int32) == vic))[:, None]
  hrow2 = jnp.where(h_sel, jnp.stack([pc, b, now, clock])[None, :], hrow)
  hist = jax.lax.dynamic_update_index_in_dim(pstate.hist, hrow2, hs, axis=0)

  # --- Issue: L1-status deltas, then L2-status ones, in slot order.
  use_delta = jnp.where(ev, delta, old_delta)
  use_status = jnp.where(ev, status, old_status)
  exists = do & (hit | ev)
  j = jnp.arange(D, dtype=jnp.int32)
  live = (use_delta != 0) & (use_status >= 0)
  order = jnp.argsort(jnp.where(live, use_status * D + j, 2 * D + j))
  d_K = jnp.take(use_delta, order)
  lvl_K = jnp.take(use_status, order)
  fits = jnp.where(d_K > 0, b <= INT32_MAX - d_K, b + d_K >= 0)
  valid_K = exists & jnp.take(live, order) & fits
  take = jnp.minimum(jnp.sum(valid_K.astype(jnp.int32)), jnp.asarray(budget, jnp.int32))
  clock_issued = jnp.stack([clock, pstate.clock_issued[1] + take])
  cand = Candidates(b + d_K, jnp.maximum(lvl_K, 0), valid_K)
  return BertiState(hist, dt, clock_issued), cand


@functools.lru_cache(maxsize=None)
def berti(*, hist_sets: int = 8, hist_ways: int = 16, dt_entries: int = 16,
          dt_deltas: int = 16) -> Prefetcher:
  """The simplified Berti (module docstring), named ``"berti_simplified"``.

  Args:
    hist_sets (a power of two), hist_ways: the history table (8 x 16).
    dt_entries, dt_deltas: the delta table (16 IPs x 16 deltas); K = dt_deltas.

  Raises:
    TypeError, ValueError: a non-int, non-positive or non-power-of-two size.
  """
  hist_sets = _check_int("hist_sets", hist_sets, 1)
  if hist_sets & (hist_sets - 1):
    raise ValueError(f"hist_sets: expected a power of two (a set index is the low bits of"
                     f" the IP hash), given {hist_sets}")
  cfg = BertiConfig(hist_sets, _check_int("hist_ways", hist_ways, 1),
                    _check_int("dt_entries", dt_entries, 1),
                    _check_int("dt_deltas", dt_deltas, 1, 64))
  return Prefetcher(name="berti_simplified", num_candidates=cfg.dt_deltas,
                    make_params=make_params, init=functools.partial(_init, cfg), train=_train,
                    issue=functools.partial(_issue, cfg), self_masking=True)


def storage_bits(*, hist_sets: int = 8, hist_ways: int = 16, dt_entries: int = 16,
                 dt_deltas: int = 16) -> dict[str, int]:
  """Bits of state per table and ``total``, with Berti-like field widths [I]:

  history record: 7-bit IP tag, 24-bit block (low bits), 16-bit timestamp,
  plus a FIFO pointer per set; delta-table entry: 10-bit IP tag, 4-bit search
  counter, LRU bits, and per slot a 13-bit delta, 4-bit coverage, 2-bit status.
  """
  for name, v in (("hist_sets", hist_sets), ("hist_ways", hist_ways),
                  ("dt_entries", dt_entries), ("dt_deltas", dt_deltas)):
    _check_int(name, v, 1)

  def lg(n):
    return max((int(n) - 1).bit_length(), 0)

  hist = hist_sets * (hist_ways * (7 + 24 + 16) + lg(hist_ways))
  dt = dt_entries * (10 + 4 + lg(dt_entries) + dt_deltas * (13 + 4 + 2))
  return {"history": hist, "delta_table": dt, "total": hist + dt}
