"""The prefetching paper's metrics from finished runs, each with its exact formula.

Gaze (arXiv 2412.05211; ``papers/prefetch.md`` 3 "Metrics" and 4): users of
prefetching simulators keep asking which denominator a metric has, so every
function here states its formula. Inputs are final states of `runner.run`
(a `runner.SimState`, or its ``.cache``), optionally a **baseline**: the same
trace run without prefetching (`protocol.NONE`) under the same `Params`. A
state may carry leading batch axes (a sweep); the results then keep them.

Cache metrics come from `hierarchy.summarize` (which computes them from the
counters; nothing is re-derived here). With ``i = last_instr - first_instr + 1``
instructions:

* coverage at a level: ``max(0, 1 - load_miss_pf / load_miss_base)`` (demand
  load misses; the paper's LLC coverage, clamped at 0 like the paper's script,
  so a polluting prefetcher scores 0, never negative): `coverage`;
* overall accuracy: ``useful / (useful + useless)`` with useful and useless
  summed over L1D, L2 and LLC (Gaze's "L1 useful + L2 useful-from-L1": the only
  prefetcher is the L1D one, so every PF line at L2 / LLC was put there by it);
  a prefetched line still unused at the end is **neither**: it is counted
  separately as ``pf_resident`` (per level ``pf_fill = pf_useful + pf_useless +
  pf_resident``): `accuracy`, `pf_resident`;
* late ratio: ``l1d_late / l1d_pf_useful`` (L1D late prefetch hits over L1D
  useful prefetches): `late_ratio`;
* DRAM traffic: ``dram_read_demand + dram_read_prefetch + dram_write`` blocks,
  normalised ``traffic_pf / traffic_base``: `dram_traffic_ratio`;
* MPKI: ``1000 * <level>_miss / i`` (demand misses, loads and stores): `mpki`;
* AMAT: ``demand_latency / (loads + stores)`` cycles, late waits included: `amat`.

The **IPC proxy** (an interval-model proxy: this simulator has no out-of-order
core, so it is never an IPC measurement; see `runner`'s module docstring):

* ``cycles_proxy = i * cpi0 + stall`` with ``stall`` the sum over ROB-sized
  windows (``instr // rob``) of the largest ``latency - L1D latency`` of a
  load in the window (late prefetch hits pay their remaining wait): `cycles_proxy`;
* ``ipc_proxy = i / cycles_proxy``: `ipc_proxy`;
* ``speedup = cycles_proxy_base / cycles_proxy_pf`` (IPC-proxy speedup; the
  paper's per-trace speedup, averaged with `geomean`): `speedup`.

With **stall feedback** (``runner.make_proxy_params(feedback=True)``: the
closed windows' stall delays the simulated clock) the formulas are the same
and ``stall`` is the same quantity: the sum over all windows of their largest
excess, the last (open) window included, with the latencies measured on the
delayed clock. It is exactly the stall the clock was fed, plus the last
window's maximum (which no later access waits for): the last access happens at
``floor(last_instr * cpi0) + stall - <last window's maximum>``. Compare a
feedback run with a feedback baseline (`sweep` pairs them by setting).

With **MSHR stalls** (``runner.make_proxy_params(mshr_stall=True)``: a demand
miss that finds every L1D MSHR reserved waits for the first to free, and the
clock of every later access is pushed back by the wait) the cycles are::

    cycles_proxy = i * cpi0 + stall + mshr_wait

with ``mshr_wait`` the sum of every demand's wait (loads and stores;
`mshr_wait`) and ``stall`` the windows' sum as above, where a waited load's
excess is measured from the cycle it got its MSHR (``latency - wait - L1D
latency``), so no wait is counted twice. Without the option ``mshr_wait`` is
0 and the formula is the one above. The last access is issued at
``floor(last_instr * cpi0) + mshr_wait - <its own wait>`` (with feedback on
too, plus ``stall - <last window's maximum>``).

Ratios with a zero denominator are NaN.

>>> import numpy as np
>>> from jaxsys.sims.cache import hierarchy, metrics, protocol, runner
>>> pf = protocol.next_line()
>>> trace = runner.make_trace(np.arange(8), instr=np.arange(8) * 1000)
>>> params = hierarchy.make_params(prefetcher=pf.make_params())
>>> state, _ = runner.run(trace, hierarchy.CacheConfig(), params, pf, proxy=352)
>>> base, _ = runner.run(trace, hierarchy.CacheConfig(), hierarchy.make_params(), proxy=352)
>>> float(metrics.coverage(state, base, "llc"))      # 7 of 8 misses removed
0.875
>>> round(float(metrics.speedup(state, base, params)), 3)   # (7001 + 8 * 190) / (7001 + 190)
1.185
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from . import hierarchy
from . import runner
from .hierarchy import CacheState, Params
from .runner import SimState

# The columns of `metrics_table`, in order (those a run lacks are left out).
TABLE_KEYS = ("speedup", "ipc_proxy", "cycles_proxy", "l1d_coverage", "llc_coverage",
              "accuracy", "pf_useful", "pf_useless", "pf_resident", "late_ratio",
              "dram_traffic_ratio", "l1d_mpki", "l2_mpki", "llc_mpki", "amat", "instructions")


def _cache(state: Any, name: str = "state") -> CacheState:
  if isinstance(state, SimState):
    return state.cache
  if isinstance(state, CacheState):
    return state
  raise TypeError(f"{name}: expected a runner.SimState or hierarchy.CacheState,"
                  f" given {type(state).__name__}")


def _summary(state: Any, baseline: Any = None) -> dict[str, np.ndarray]:
  return hierarchy.summarize(_cache(state),
                             None if baseline is None else _cache(baseline, "baseline"))


def _ratio(num: Any, den: Any) -> np.ndarray:
  num = np.asarray(num, np.float64)
  den = np.asarray(den, np.float64)
  return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)


def _level(level: str) -> str:
  if level not in hierarchy.LEVELS:
    raise ValueError(f"level: expected one of {', '.join(map(repr, hierarchy.LEVELS))},"
                     f" given {level!r}")
  return level


# ----------------------------------------------------------------------------- cache metrics


def coverage(state: Any, baseline: Any, level: str = "llc") -> np.ndarray:
  """``max(0, 1 - load_miss_pf / load_miss_base)`` at `level` (clamped at 0 as
  the paper does; NaN when the baseline has no load miss there)."""
  return _summary(state, baseline)[f"{_level(level)}_coverage"]


def accuracy(state: Any) -> np.ndarray:
  """Overall accuracy ``useful / (useful + useless)``, summed over the levels;
  lines still prefetched-and-unused at the end are in neither (`pf_resident`)."""
  return _summary(state)["accuracy"]


def pf_resident(state: Any) -> np.ndarray:
  """Prefetched lines never used and still resident at the end (all levels):
  ``pf_fill - pf_useful - pf_useless``, counted apart from accuracy."""
  return _summary(state)["pf_resident"]


def late_ratio(state: Any) -> np.ndarray:
  """``l1d_late / l1d_pf_useful``: late L1D prefetch hits over useful L1D prefetches."""
  return _summary(state)["late_ratio"]


def dram_traffic_ratio(state: Any, baseline: Any) -> np.ndarray:
  """``(dram_read_demand + dram_read_prefetch + dram_write)`` of the run over the
  baseline's (blocks; 1.0 = no extra traffic)."""
  return _summary(state, baseline)["dram_traffic_ratio"]


def mpki(state: Any, level: str = "llc") -> np.ndarray:
  """``1000 * <level>_miss / instructions`` (demand misses, loads and stores)."""
  return _summary(state)[f"{_level(level)}_mpki"]


def amat(state: Any) -> np.ndarray:
  """``demand_latency / (loads + stores)``: mean demand latency in cycles
  (``done - now`` per access: late waits and merged misses included)."""
  return _summary(state)["amat"]


def instructions(state: Any) -> np.ndarray:
  """``last_instr - first_instr + 1``: the instructions the run covered (int64)."""
  return _summary(state)["instructions"]


# ----------------------------------------------------------------------------- IPC proxy


def _proxy(state: Any, name: str = "state") -> runner.Proxy:
  if not isinstance(state, SimState):
    raise TypeError(f"{name}: expected a runner.SimState (the IPC proxy lives in"
                    f" state.proxy), given {type(state).__name__}")
  if state.proxy is None:
    raise ValueError(f"{name}: expected a run with the IPC proxy (runner.run(..., proxy=352)),"
                     f" given a state whose proxy is None")
  return state.proxy


def _cpi0(params: Any, name: str = "params") -> np.ndarray:
  if not isinstance(params, Params):
    raise TypeError(f"{name}: expected hierarchy.Params (the run's cpi0), given"
                    f" {type(params).__name__}")
  return (np.asarray(params.cpi0_num, np.float64) / np.asarray(params.cpi0_den, np.float64))


def proxy_stall(state: SimState) -> np.ndarray:
  """IPC proxy: the sum over ROB windows of the largest (latency - L1D latency)
  of a counted access in the window (int64 cycles)."""
  return runner.proxy_stall(_proxy(state))


def mshr_wait(state: SimState) -> np.ndarray:
  """IPC proxy: the demands' total wait for a free L1D MSHR (int64 cycles; 0
  unless run with ``mshr_stall=True``)."""
  return runner.proxy_mshr_wait(_proxy(state))


def cycles_proxy(state: SimState, params: Params) -> np.ndarray:
  """IPC-proxy cycles ``instructions * cpi0 + proxy_stall + mshr_wait``
  (float64), with or without stall feedback and MSHR stalls (module docstring;
  ``mshr_wait`` is 0 without them).

  Args:
    state: a final `runner.SimState` of a run with ``proxy=...``.
    params: the run's `hierarchy.Params` (its ``cpi0``).
  """
  return instructions(state) * _cpi0(params) + proxy_stall(state) + mshr_wait(state)


def ipc_proxy(state: SimState, params: Params) -> np.ndarray:
  """IPC proxy ``instructions / cycles_proxy`` (not a simulated IPC)."""
  return _ratio(instructions(state), cycles_proxy(state, params))


def speedup(state: SimState, baseline: SimState, params: Params,
            baseline_params: Params | None = None) -> np.ndarray:
  """IPC-proxy speedup ``cycles_proxy(baseline) / cycles_proxy(state)``.

  Args:
    state, baseline: final states of the same trace with and without
      prefetching, both run with the IPC proxy.
    params: the prefetching run's `Params`; baseline_params: the baseline's
      (default: the same cpi0).
  """
  base_params = params if baseline_params is None else baseline_params
  return _ratio(cycles_proxy(baseline, base_params), cycles_proxy(state, params))


def geomean(values: Any) -> float:
  """``exp(mean(log(values)))`` of positive values (the paper averages speedups
  so); NaN if any value is NaN.

  Raises:
    ValueError: no values, or one <= 0.

  >>> geomean([1.0, 4.0])
  2.0
  """
  x = np.asarray(values, np.float64).reshape(-1)
  if x.size == 0:
    raise ValueError("values: expected at least one value for a geometric mean, given none")
  if np.isnan(x).any():
    return math.nan
  if (x <= 0).any():
    raise ValueError(f"values: expected positive values for a geometric mean, given"
                     f" {x[x <= 0][0]!r} at index {int(np.flatnonzero(x <= 0)[0])}")
  return float(np.exp(np.mean(np.log(x))))


# ----------------------------------------------------------------------------- all at once


def metrics(state: Any, baseline: Any = None, params: Params | None = None,
            baseline_params: Params | None = None) -> dict[str, np.ndarray]:
  """Every metric of a run (numpy; batch axes kept): `hierarchy.summarize`'s
  counters and metrics (with the baseline: ``<level>_coverage`` and
  ``dram_traffic_ratio``), plus, when `state` has the IPC proxy and `params`
  is given, ``proxy_stall``, ``mshr_wait``, ``cycles_proxy`` and ``ipc_proxy``, and
  ``speedup`` when the baseline has the IPC proxy too. Formulas: the module
  docstring.
  """
  out = _summary(state, baseline)
  has_proxy = isinstance(state, SimState) and state.proxy is not None
  if has_proxy and params is not None:
    out["proxy_stall"] = proxy_stall(state)
    out["mshr_wait"] = mshr_wait(state)
    out["cycles_proxy"] = (out["instructions"] * _cpi0(params) + out["proxy_stall"]
                           + out["mshr_wait"])
    out["ipc_proxy"] = _ratio(out["instructions"], out["cycles_proxy"])
    if isinstance(baseline, SimState) and baseline.proxy is not None:
      out["speedup"] = speedup(state, baseline, params, baseline_params)
  return out


def _plain(value: Any) -> Any:
  value = np.asarray(value)
  if value.dtype.kind in "iub":
    return value.item()
  value = float(value)
  return None if math.isnan(value) else value


def metrics_table(state: Any, baseline: Any = None, params: Params | None = None, *,
                  baseline_params: Params | None = None,
                  labels: Sequence[Mapping[str, Any]] | None = None,
                  keys: Sequence[str] = TABLE_KEYS) -> list[dict[str, Any]]:
  """One plain dict per run (e.g. the rows of a benchmark's JSON).

  Args:
    state, baseline, params, baseline_params: as `metrics`; a batch axis
      [R] (leading, one only) gives R rows, an unbatched state one row.
    labels: R dicts put first in each row (``{"trace": ..., "degree": ...}``).
    keys: the metric columns (default `TABLE_KEYS`; those the run lacks, e.g.
      coverage without a baseline, are left out).

  Returns:
    ``[{**labels[r], key: value, ...}, ...]`` with Python ints / floats; NaN
    (a zero denominator) becomes None.
  """
  m = metrics(state, baseline, params, baseline_params)
  shape = np.shape(m["instructions"])
  if len(shape) > 1:
    raise ValueError(f"state: expected at most one batch axis, given batch shape {shape}")
  n = shape[0] if shape else 1
  if labels is not None and len(labels) != n:
    raise ValueError(f"labels: expected {n} label dicts (one per run), given {len(labels)}")
  unknown = [k for k in keys if k not in m and k not in TABLE_KEYS]
  if unknown:
    raise ValueError(f"keys: unknown metric(s) {unknown}; expected names among"
                     f" {sorted(m)}")
  rows = []
  for r in range(n):
    row = dict(labels[r]) if labels is not None else {}
    for k in keys:
      if k in m:
        v = np.asarray(m[k])
        row[k] = _plain(v[r] if shape else v)
    rows.append(row)
  return rows
