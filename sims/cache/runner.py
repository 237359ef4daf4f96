"""Replays a memory trace through the hierarchy and a prefetcher: one `lax.scan`.

A trace is any object with the fields (attributes or mapping keys) of
`TraceArrays`: per access an int32 ``block`` (byte address >> 6), int32
``pc_hash``, int8 ``is_store``, int32 ``instr`` (instructions executed before
the access, non-decreasing) and an optional bool ``valid`` mask (padded steps
change nothing, so a padded trace gives the same final state as the unpadded
one). `make_trace` builds one from arrays with defaults.

`run` is jitted once per (shape, config, prefetcher) and works under
`jax.vmap` over traces and over `hierarchy.Params` (`run_batch`): geometry is
static, CPI, DRAM latency and the prefetcher's params are traced.

Per step the runner emits one int8 code (`decode` reads it):
``level | late << 2 | min(accepted, 15) << 3`` where level is where the demand
access found its block (0 L1D, 1 L2, 2 LLC, 3 DRAM), late marks a late
prefetch hit and accepted counts the prefetches the cache took; -1 on a padded
step.

**IPC proxy** (``papers/prefetch.md`` 3, "Metrics"; there is no out-of-order
core here, so this is an interval-model *proxy* of cycles, not a simulated IPC).
With ``proxy=make_proxy_params(rob=352, stores=False)`` the scan also carries a
`Proxy` accumulator, returned as ``final.proxy``: the trace's instructions are
cut into ROB-sized windows (``window = instr // rob``, absolute instruction
indices); each counted demand access (loads; stores too with ``stores=True``)
has the excess latency ``latency - L1D latency`` with ``latency = done - now``
as `hierarchy.access` reports it, so an L1D hit adds 0, a miss its path beyond
the L1D, and a late prefetch hit (or merged miss) its remaining wait
``ready - now`` beyond the L1D latency; a window stalls for the largest excess
in it (misses in one window overlap). The proxy's cycles are
``instructions * cpi0 + sum over windows of that maximum`` (`metrics`).

**Stall feedback** (``make_proxy_params(feedback=True)``; traced, default
False, which leaves every result as it was). Without it the simulated clock is
``now = floor(instr * cpi0)`` whatever the memory does, so on a miss-heavy
trace at a small cpi0 every L1D MSHR stays reserved, the issue budget is 0 and
no prefetch is ever accepted. With it, an access in window ``w`` happens at::

    now = floor(instr * cpi0) + sum over windows w' < w of their maximum excess

the stall of the windows that have *closed* before this access's window (its
own, still open window adds nothing). This is a proxy with a one-window lag: a
core that runs at cpi0 and, when a ROB window retires, stops for that window's
longest miss beyond the L1D. Time still never goes backwards and the stall is
the proxy's own sum, so the feedback needs the proxy (it is a field of
`ProxyParams`; there is no feedback without ``proxy=...``). The excess
latencies are measured against this clock, so ``metrics.proxy_stall`` of a
feedback run is the stall that drove its time. `reference.run_reference`
(``feedback=True``) does the same, access for access. Time is int32: `run`
raises if ``floor(instr * cpi0)`` plus the most stall the trace's closed
windows could add (``(windows - 1) * (lat_L2 + lat_LLC + dram_latency)``, an
upper bound of any excess) could reach `hierarchy.MAX_CYCLE`.

**MSHR stall** (``make_proxy_params(mshr_stall=True)``; traced, default
False, which leaves every result as it was). A core that *waits* when a
demand miss (load or store) finds every L1D MSHR reserved: the hierarchy
delays that demand until the first MSHR frees (``wait = first_ready - now``;
`hierarchy`'s module docstring, ``Outcome.wait``) and every later access's
clock is pushed back by the waits so far::

    now = floor(instr * cpi0) [+ closed windows' stall, with feedback] + sum of earlier waits

(with feedback on, both add). The rest of a waiting access's step (the
prefetcher's train / issue, the issue budget and the accepted prefetches)
happens at the delayed cycle ``now + wait``; prefetches themselves never wait.
The waits are serial core stalls, so they enter the proxy apart from the
windows: ``Proxy.mshr_wait`` sums them (`proxy_mshr_wait`), and the proxy's
cycles are ``instructions * cpi0 + window stall + mshr_wait`` (`metrics`). To
count no cycle twice, a waited demand's excess in its window is measured from
the cycle it went on: ``latency - wait - L1D latency`` (its service time
beyond the L1D; the wait itself is in ``mshr_wait`` only). Stores' waits count
whatever ``stores`` says (they hold MSHRs too); ``stores`` only chooses whose
excess enters the windows. Time stays int32: `run` also raises if the clock
could reach `hierarchy.MAX_CYCLE` with every valid access waiting one full
path ``lat_L1D + lat_L2 + lat_LLC + dram_latency`` (`feedback_time_bound`).

**Warm-up** (``run(..., warmup=W)``, traced; ChampSim's warm-up): the first W
accesses only warm the caches and the prefetcher; before access W the
statistics and the IPC proxy restart (`restart`), so every counter and metric
covers accesses W.. only, while the stall the clock carried so far stays on it
(``Proxy.offset``). `sweep.sweep` takes one W per trace.

>>> import numpy as np
>>> from jaxsys.sims.cache import hierarchy, protocol, runner
>>> config = hierarchy.CacheConfig.make(l1d=dict(sets=2, ways=2))
>>> pf = protocol.next_line()
>>> params = hierarchy.make_params(prefetcher=pf.make_params())
>>> trace = runner.make_trace(np.array([0, 1, 2, 3]), instr=np.array([0, 300, 600, 900]))
>>> state, codes = runner.run(trace, config, params, pf)
>>> runner.decode(codes)["level"].tolist()     # 0 misses, then next-line hits
[3, 0, 0, 0]
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from . import hierarchy
from . import protocol
from .hierarchy import CacheConfig, CacheState, Params
from .protocol import Access, Prefetcher

_INT32_MAX = int(np.iinfo(np.int32).max)


class TraceArrays(NamedTuple):
  """A memory trace, N accesses (a batch adds leading axes)."""

  block: Any  # [N] int32 block number (byte address >> 6), >= 0 where valid
  pc_hash: Any  # [N] int32 hashed PC
  is_store: Any  # [N] int8 1 store, 0 load
  instr: Any  # [N] int32 instructions executed before the access, non-decreasing
  valid: Any  # [N] bool real access (False: padding)


class ProxyParams(NamedTuple):
  """Params of the IPC proxy's interval model (any leaf may carry a sweep axis)."""

  rob: Any  # [] int32 instructions per window (the ROB size, Gaze's core: 352), >= 1
  stores: Any  # [] bool count stores' latency too (default False: they retire via the store buffer)
  feedback: Any = np.False_  # [] bool closed windows' stall delays the clock (module docstring)
  mshr_stall: Any = np.False_  # [] bool demands wait for a free L1D MSHR (module docstring)


DEFAULT_ROB = 352
_WIDE_BITS = 24  # the proxy's stall sum is hi * 2**24 + lo, 0 <= lo < 2**24


class Proxy(NamedTuple):
  """The IPC proxy's running interval-model sums (see the module docstring).

  The total stall is ``(stall_hi << 24) + stall_lo + window_max`` (the last,
  still open window included): `stall`.
  """

  window: jax.Array  # [] int32 id (instr // rob) of the current window; -1 before any counted access
  window_max: jax.Array  # [] int32 largest excess (latency - wait - L1D latency) in that window
  stall_lo: jax.Array  # [] int32 low 24 bits of the sum of the closed windows' maxima
  stall_hi: jax.Array  # [] int32 the sum's higher bits (>> 24)
  mshr_wait: jax.Array  # [] int32 sum of the demands' MSHR waits (0 unless mshr_stall)
  # [] int32 the warm-up's stall (its windows, feedback on, and MSHR waits), still on the clock
  offset: jax.Array = np.int32(0)


class SimState(NamedTuple):
  cache: CacheState  # the hierarchy (tables, MSHRs, PQ, counters)
  prefetcher: Any  # the prefetcher's state pytree
  proxy: Any = None  # `Proxy` when run with an IPC proxy (``run(..., proxy=...)``), else None


def make_proxy_params(rob: int = DEFAULT_ROB, stores: bool = False,
                      feedback: bool = False, mshr_stall: bool = False) -> ProxyParams:
  """Checked `ProxyParams` for the IPC proxy (numpy scalars).

  Args:
    rob: instructions per interval window (the ROB size; default 352, the Gaze
      artifact's core), an int >= 1.
    stores: also let stores stall the proxy (default False: loads only).
    feedback: the stall of closed windows delays the simulated clock
      (``now = floor(instr * cpi0) + closed stall``; module docstring). Default
      False: time is ``floor(instr * cpi0)``.
    mshr_stall: a demand miss that finds every L1D MSHR reserved waits for the
      first to free, and the waits delay the clock and add to the proxy's
      cycles (module docstring). Default False: it takes that MSHR over at
      once.

  >>> make_proxy_params(rob=128)
  ProxyParams(rob=np.int32(128), stores=np.False_, feedback=np.False_, mshr_stall=np.False_)
  """
  if isinstance(rob, bool) or not isinstance(rob, (int, np.integer)):
    raise TypeError(f"rob: expected an int (instructions per IPC-proxy window), given {rob!r}")
  if not 1 <= rob <= _INT32_MAX:
    raise ValueError(f"rob: expected an int >= 1 (instructions per IPC-proxy window),"
                     f" given {rob}")
  if not isinstance(stores, (bool, np.bool_)):
    raise TypeError(f"stores: expected a bool, given {stores!r}")
  if not isinstance(feedback, (bool, np.bool_)):
    raise TypeError(f"feedback: expected a bool (stall feedback into the clock), given"
                    f" {feedback!r}")
  if not isinstance(mshr_stall, (bool, np.bool_)):
    raise TypeError(f"mshr_stall: expected a bool (demands wait for a free L1D MSHR), given"
                    f" {mshr_stall!r}")
  return ProxyParams(np.int32(rob), np.bool_(stores), np.bool_(feedback), np.bool_(mshr_stall))


def proxy_stall(proxy: Proxy) -> np.ndarray:
  """The IPC proxy's total stall cycles (numpy int64; a batch keeps its axes):
  the sum over windows of the largest excess latency, the open window included."""
  lo = np.asarray(proxy.stall_lo).astype(np.int64)
  hi = np.asarray(proxy.stall_hi).astype(np.int64)
  return (hi << _WIDE_BITS) + lo + np.asarray(proxy.window_max).astype(np.int64)


def proxy_mshr_wait(proxy: Proxy) -> np.ndarray:
  """The demands' total MSHR wait (numpy int64; 0 without ``mshr_stall``)."""
  return np.asarray(proxy.mshr_wait).astype(np.int64)


def init_proxy() -> Proxy:
  """An empty IPC-proxy accumulator."""
  return Proxy(jnp.int32(-1), jnp.int32(0), jnp.int32(0), jnp.int32(0), jnp.int32(0),
               jnp.int32(0))


def closed_stall(proxy: Proxy, window: jax.Array) -> jax.Array:
  """The stall (int32) of the windows closed before `window`: every window's
  maximum so far, the current one's too when `window` is a later one.

  What stall feedback adds to an access's clock (windows never go back, so
  ``window >= proxy.window`` for a real access). `run` checks that it fits.
  """
  window = jnp.asarray(window, jnp.int32)
  closed = (proxy.stall_hi << _WIDE_BITS) + proxy.stall_lo
  return closed + jnp.where(window != proxy.window, proxy.window_max, 0)


def proxy_update(proxy: Proxy, window: jax.Array, excess: jax.Array,
                 counted: jax.Array) -> Proxy:
  """Adds one demand access (its window id and excess latency) to the IPC proxy.

  A new window closes the current one (its maximum joins the stall sum);
  uncounted accesses (padding, stores unless counted) change nothing.
  """
  counted = jnp.asarray(counted, jnp.bool_)
  window = jnp.asarray(window, jnp.int32)
  excess = jnp.asarray(excess, jnp.int32)
  new = counted & (window != proxy.window)
  lo = proxy.stall_lo + jnp.where(new, proxy.window_max, 0)
  hi = proxy.stall_hi + (lo >> _WIDE_BITS)
  lo = lo & ((1 << _WIDE_BITS) - 1)
  window_max = jnp.where(counted, jnp.where(new, excess, jnp.maximum(proxy.window_max, excess)),
                         proxy.window_max)
  return Proxy(jnp.where(counted, window, proxy.window), window_max, lo, hi, proxy.mshr_wait,
               proxy.offset)


def restart(state: SimState, when: jax.Array | bool = True,
            proxy: ProxyParams | None = None) -> SimState:
  """The end of a warm-up (where `when`): the statistics start again, the state stays.

  The hierarchy's counters restart (`hierarchy.restart_stats`; tables, LRU
  clock and queues kept) and so does the IPC proxy: its windows and MSHR
  waits start from nothing, the window open at the boundary closing there.
  Time goes on: the stall that drove the clock (the windows' maxima with
  feedback on, the open one's included, plus the MSHR waits) moves into
  ``Proxy.offset``, which stays on every later access's clock. The
  prefetcher's state, its own counters included, is kept.
  """
  when = jnp.asarray(when, jnp.bool_)
  state = state._replace(cache=hierarchy.restart_stats(state.cache, when))
  if state.proxy is None or proxy is None:
    return state
  p = state.proxy
  stall = jnp.where(jnp.asarray(proxy.feedback, jnp.bool_), closed_stall(p, p.window + 1), 0)
  fresh = init_proxy()._replace(offset=p.offset + stall + p.mshr_wait)
  return state._replace(proxy=jax.tree.map(lambda new, old: jnp.where(when, new, old), fresh, p))


# ----------------------------------------------------------------------------- traces


def make_trace(block: Any, *, pc_hash: Any = None, is_store: Any = None, instr: Any = None,
               valid: Any = None) -> TraceArrays:
  """A `TraceArrays` of numpy arrays with defaults: pc 0, loads, ``instr = 0..N-1``,
  all valid. Values are checked by `run`."""
  block = np.asarray(block)
  if block.ndim != 1:
    raise ValueError(f"block: expected a rank-1 array [N], given shape {block.shape}")
  n = block.shape[0]
  return TraceArrays(
      block=block,
      pc_hash=np.zeros((n,), np.int32) if pc_hash is None else np.asarray(pc_hash),
      is_store=np.zeros((n,), np.int8) if is_store is None else np.asarray(is_store),
      instr=np.arange(n, dtype=np.int32) if instr is None else np.asarray(instr),
      valid=np.ones((n,), bool) if valid is None else np.asarray(valid),
  )


def as_trace(trace: Any) -> TraceArrays:
  """Reads the `TraceArrays` fields from any trace object (attributes or keys);
  sequences become numpy arrays, JAX arrays stay."""
  if isinstance(trace, TraceArrays):
    return TraceArrays(*(x if isinstance(x, jax.Array) else np.asarray(x) for x in trace))

  def get(name, required):
    if isinstance(trace, Mapping):
      value = trace.get(name)
    else:
      value = getattr(trace, name, None)
    if value is None and required:
      raise TypeError(
          f"trace: expected a field {name!r} (fields {TraceArrays._fields}),"
          f" given a {type(trace).__name__} without it")
    return value if value is None or isinstance(value, jax.Array) else np.asarray(value)

  block = get("block", True)
  fields = {name: get(name, name != "valid") for name in TraceArrays._fields[1:]}
  if fields["valid"] is None:
    fields["valid"] = (jnp.ones(jnp.shape(block), jnp.bool_)
                       if isinstance(block, jax.core.Tracer) else np.ones(np.shape(block), bool))
  return TraceArrays(block=block, **fields)


def _is_concrete(tree: Any) -> bool:
  return not any(isinstance(x, jax.core.Tracer) for x in jax.tree_util.tree_leaves(tree))


def check_trace(trace: TraceArrays, params: Params | None = None, *,
                num_candidates: int = 0, proxy: ProxyParams | None = None,
                config: CacheConfig | None = None) -> None:
  """Raises for a malformed trace: shapes, dtypes and (for concrete arrays) values.

  Checks: every field rank 1 (or with the same leading batch axes) of one length
  N >= 1; integer block / pc / instr / is_store, bool valid; where valid,
  ``block >= 0``, ``instr >= 0`` and non-decreasing; the cycles
  ``instr * cpi0`` and the LRU clock stay inside int32; with `proxy` (and
  `config`) whose ``feedback`` or ``mshr_stall`` may be on, the cycles plus
  the largest stall the closed windows and the MSHR waits could add
  (`feedback_time_bound`) stay below `hierarchy.MAX_CYCLE`. Batched params /
  proxies are checked at their worst value over the batch.
  """
  shapes = {name: np.shape(getattr(trace, name)) for name in TraceArrays._fields}
  shape = shapes["block"]
  if len(shape) < 1:
    raise ValueError(f"trace.block: expected an array [N], given shape {shape}")
  for name, s in shapes.items():
    if s != shape:
      raise ValueError(f"trace.{name}: expected shape {shape} (as trace.block), given {s}")
  n = shape[-1]
  if n == 0:
    raise ValueError("trace: expected at least one access, given an empty trace (N = 0)")
  for name in ("block", "pc_hash", "is_store", "instr"):
    dtype = np.dtype(getattr(trace, name).dtype)
    if dtype.kind not in "iub":
      raise TypeError(f"trace.{name}: expected an integer dtype, given {dtype}")
  if np.dtype(trace.valid.dtype) != np.bool_:
    raise TypeError(f"trace.valid: expected bool, given {np.dtype(trace.valid.dtype)}")
  ticks = n * hierarchy.TICKS_PER_REQUEST * (1 + num_candidates)
  if ticks >= _INT32_MAX:
    raise ValueError(
        f"trace: {n} accesses with {num_candidates} prefetch candidates each overflow the"
        f" int32 LRU clock ({ticks} ticks); split the trace")
  if not _is_concrete(trace):
    return
  valid = np.asarray(trace.valid)
  for name in ("block", "instr"):
    values = np.asarray(getattr(trace, name)).astype(np.int64)
    bad = np.argwhere(valid & ((values < 0) | (values > _INT32_MAX)))
    if bad.size:
      index = tuple(int(i) for i in bad[0])
      raise ValueError(
          f"trace.{name}: expected 0..{_INT32_MAX} where valid, given {values[index]} at"
          f" index {index if len(index) > 1 else index[0]}")
  instr = np.asarray(trace.instr).astype(np.int64).reshape(-1, n)
  for row, (ins, ok) in enumerate(zip(instr, valid.reshape(-1, n))):
    seen = ins[ok]
    drops = np.flatnonzero(np.diff(seen) < 0)
    if drops.size:
      at = np.flatnonzero(ok)[drops[0] + 1]
      where = f"index {at}" if len(shape) == 1 else f"trace {row}, index {at}"
      raise ValueError(
          f"trace.instr: expected non-decreasing instruction counts over valid accesses,"
          f" given {seen[drops[0]]} then {seen[drops[0] + 1]} at {where}")
  if params is not None and _is_concrete((params.cpi0_num, params.cpi0_den)):
    top = int(np.max(np.where(valid, np.asarray(trace.instr, np.int64), 0)))
    cpi = np.asarray(params.cpi0_num, np.float64) / np.asarray(params.cpi0_den, np.float64)
    if top * float(np.max(cpi)) >= hierarchy.MAX_CYCLE:
      raise ValueError(
          f"trace.instr: the last instruction count {top} times cpi0 {float(np.max(cpi))}"
          f" exceeds {hierarchy.MAX_CYCLE} cycles (int32 time); rebase or split the trace")
  if params is not None and proxy is not None and config is not None:
    feedback, waits = _maybe_on(proxy.feedback), _maybe_on(proxy.mshr_stall)
    if not (feedback or waits):
      return
    bound = feedback_time_bound(trace, params, proxy, config)
    if bound >= hierarchy.MAX_CYCLE:
      what = " and ".join(w for w, on in (("stall feedback", feedback), ("MSHR stalls", waits))
                          if on)
      terms = " plus ".join(t for t, on in (
          ("(windows - 1) x the largest excess latency", feedback),
          ("accesses x the longest MSHR wait", waits)) if on)
      fixes = " or ".join(f for f, on in (("use a larger rob or feedback=False", feedback),
                                            ("mshr_stall=False", waits)) if on)
      raise ValueError(
          f"trace.instr: with {what} the clock could reach {bound} cycles"
          f" (instr * cpi0 plus {terms}), at least {hierarchy.MAX_CYCLE} (int32 time);"
          f" split the trace, {fixes}")


def _maybe_on(flag: Any) -> bool:
  """Whether a traced-or-concrete bool switch may be on somewhere in its batch."""
  return not _is_concrete(flag) or bool(np.any(np.asarray(flag)))


def feedback_time_bound(trace: TraceArrays, params: Params, proxy: ProxyParams,
                        config: CacheConfig) -> int:
  """An upper bound (Python int) of the clock of a run with `proxy`'s stall
  feedback and / or MSHR stalls.

  ``floor(last instr * cpi0)``, plus with feedback (may be on)
  ``(windows - 1) * (lat_L2 + lat_LLC + dram_latency)``, plus with
  ``mshr_stall`` (may be on) ``accesses * (lat_L1D + lat_L2 + lat_LLC +
  dram_latency)``, maxima over any batch: every data-ready cycle set at cycle
  t is at most ``t + lat_L1D + lat_L2 + lat_LLC + dram_latency`` (the longest
  path; a late or merged wait ends on such a cycle), so no access's excess
  latency (measured after any MSHR wait) exceeds ``lat_L2 + lat_LLC +
  dram_latency`` and no MSHR wait (until the first reserved MSHR's ready
  cycle) exceeds the full path; only windows holding a valid access
  (``instr // rob``; the last one still open) add stall, and only valid
  accesses wait. Values not concrete (traced) take their worst case.
  """
  valid = np.asarray(trace.valid, bool)
  n = valid.shape[-1]
  valid = valid.reshape(-1, n)
  instr = np.asarray(trace.instr).astype(np.int64).reshape(-1, n)
  top_instr = int(np.max(np.where(valid, instr, 0)))
  if _is_concrete((params.cpi0_num, params.cpi0_den)):
    num = np.asarray(params.cpi0_num, np.int64).reshape(-1)
    den = np.asarray(params.cpi0_den, np.int64).reshape(-1)
    top = max(int(top_instr * a // b) for a, b in zip(*np.broadcast_arrays(num, den)))
  else:
    top = top_instr * 2**16
  dram = (int(np.max(np.asarray(params.dram_latency))) if _is_concrete(params.dram_latency)
          else 2**20)
  excess = config.l2.latency + config.llc.latency + dram
  bound = top
  if _maybe_on(proxy.feedback):
    robs = (np.unique(np.asarray(proxy.rob, np.int64)) if _is_concrete(proxy.rob)
            else np.array([1], np.int64))
    windows = 1
    for rob in robs.tolist():
      for ins, ok in zip(instr, valid):
        windows = max(windows, int(np.unique(ins[ok] // rob).size))
    bound += (windows - 1) * excess
  if _maybe_on(proxy.mshr_stall):
    bound += int(valid.sum(axis=-1).max()) * (config.l1d.latency + excess)
  return bound


def as_proxy_params(proxy: Any) -> ProxyParams | None:
  """None, an int ROB size or `ProxyParams` (rob checked where concrete)."""
  if proxy is None:
    return None
  if isinstance(proxy, ProxyParams):
    if _is_concrete(proxy.rob):
      rob = np.asarray(proxy.rob)
      if rob.dtype.kind not in "iu":
        raise TypeError(f"proxy.rob: expected an integer ROB size, given dtype {rob.dtype}")
      if np.any(rob < 1):
        raise ValueError(
            f"proxy.rob: expected >= 1 instructions per IPC-proxy window, given {rob.tolist()}")
    for name in ("feedback", "mshr_stall"):
      flag = getattr(proxy, name)
      if _is_concrete(flag) and np.asarray(flag).dtype != np.bool_:
        raise TypeError(f"proxy.{name}: expected a bool, given dtype {np.asarray(flag).dtype}")
    return proxy
  if isinstance(proxy, (int, np.integer)) and not isinstance(proxy, bool):
    return make_proxy_params(rob=int(proxy))
  raise TypeError(f"proxy: expected None, an int ROB size or runner.ProxyParams"
                  f" (make_proxy_params), given {type(proxy).__name__}")


def check_prefetcher(prefetcher: Any) -> None:
  if not isinstance(prefetcher, Prefetcher):
    raise TypeError(
        f"prefetcher: expected a protocol.Prefetcher (protocol.NONE, protocol.next_line()),"
        f" given {type(prefetcher).__name__}")


def check_params(params: Any) -> None:
  if not isinstance(params, Params):
    raise TypeError(
        f"params: expected hierarchy.Params (make_params), given {type(params).__name__}")
  if not _is_concrete(params[:3]):
    return
  for name in ("cpi0_num", "cpi0_den", "dram_latency"):
    value = np.asarray(getattr(params, name))
    if np.any(value < 1):
      raise ValueError(f"params.{name}: expected >= 1, given {value.tolist()}")


# ----------------------------------------------------------------------------- step


def _candidates(prefetcher: Prefetcher, cand: Any) -> protocol.Candidates:
  K = prefetcher.num_candidates
  if not isinstance(cand, protocol.Candidates):
    raise TypeError(
        f"prefetcher {prefetcher.name!r}: issue must return (pstate, protocol.Candidates),"
        f" given {type(cand).__name__}")
  for name in protocol.Candidates._fields:
    shape = jnp.shape(getattr(cand, name))
    if shape != (K,):
      raise ValueError(
          f"prefetcher {prefetcher.name!r}: candidates.{name}: expected shape ({K},)"
          f" (num_candidates), given {shape}")
  return protocol.Candidates(jnp.asarray(cand.block_K, jnp.int32),
                             jnp.asarray(cand.fill_level_K, jnp.int32),
                             jnp.asarray(cand.valid_K, jnp.bool_))


def step(state: SimState, access: TraceArrays, params: Params, *, config: CacheConfig,
         prefetcher: Prefetcher, now: jax.Array | None = None,
         mshr_stall: jax.Array | bool = False) -> tuple[SimState, jax.Array]:
  """One trace access (`_step` without the demand outcome); see `_step`."""
  state, code, _ = _step(state, access, params, config=config, prefetcher=prefetcher, now=now,
                         mshr_stall=mshr_stall)
  return state, code


def _step(state: SimState, access: TraceArrays, params: Params, *, config: CacheConfig,
          prefetcher: Prefetcher, now: jax.Array | None = None,
          mshr_stall: jax.Array | bool = False
          ) -> tuple[SimState, jax.Array, hierarchy.Outcome]:
  """One trace access: the demand access, the prefetcher's train and issue, the
  accepted prefetches (see `protocol`).

  Args:
    state: `SimState`.
    access: one access, scalar fields of `TraceArrays`.
    params: `hierarchy.Params`.
    config, prefetcher: static.
    now: the access's cycle if already known (default `hierarchy.cycle_of`).
    mshr_stall: [] bool (traced): the demand waits for a free L1D MSHR
      (``outcome.wait``); the prefetcher then runs at ``now + wait``.

  Returns:
    ``(state, code, outcome)``: the int8 step code (module docstring) and the
    demand access's `hierarchy.Outcome`. ``state.proxy`` is passed through.
  """
  block = jnp.asarray(access.block, jnp.int32)
  is_store = jnp.asarray(access.is_store) != 0
  instr = jnp.asarray(access.instr, jnp.int32)
  valid = jnp.asarray(access.valid, jnp.bool_)
  now = hierarchy.cycle_of(instr, params) if now is None else jnp.asarray(now, jnp.int32)
  cache, out = hierarchy.access(state.cache, block, is_store, now, params, config, instr=instr,
                                active=valid, mshr_stall=mshr_stall)
  now = now + out.wait  # a demand that waited for an MSHR: the core goes on from then
  load = valid & ~is_store
  seen = Access(block=block, pc_hash=jnp.asarray(access.pc_hash, jnp.int32), is_store=is_store,
                instr=instr, valid=valid, load=load, level=out.level, pf_hit=out.pf_hit,
                late=out.late)
  pparams = params.prefetcher
  K = prefetcher.num_candidates
  pstate = prefetcher.train(state.prefetcher, seen, out.level == 0, now, pparams)
  budget = (jnp.where(load, hierarchy.issue_budget(cache, now, config), 0).astype(jnp.int32)
            if K else jnp.int32(0))
  pstate, cand = prefetcher.issue(pstate, cache, seen, now, budget, pparams)
  if not prefetcher.self_masking:
    pstate = jax.tree.map(lambda new, old: jnp.where(load, new, old), pstate, state.prefetcher)

  accepted = jnp.int32(0)
  if K:
    cand = _candidates(prefetcher, cand)
    ok_K = (cand.valid_K & load & (cand.block_K >= 0) & (cand.fill_level_K >= 0)
            & (cand.fill_level_K <= hierarchy.LLC))
    take_K = protocol.accepted_mask(ok_K, budget)
    cache = hierarchy.prefetch_many(cache, cand.block_K, cand.fill_level_K, take_K, now, params,
                                    config)
    n_ok = jnp.sum(ok_K.astype(jnp.int32))
    accepted = jnp.sum(take_K.astype(jnp.int32))
    cache = hierarchy.bump(cache, pf_candidates=n_ok, pf_issued=accepted,
                           pf_refused=n_ok - accepted)

  code = out.level + (out.late.astype(jnp.int32) << 2) + (jnp.minimum(accepted, 15) << 3)
  code = jnp.where(valid, code, -1).astype(jnp.int8)
  return state._replace(cache=cache, prefetcher=pstate), code, out


# ----------------------------------------------------------------------------- runners


def init(config: CacheConfig, params: Params, prefetcher: Prefetcher) -> SimState:
  """Empty hierarchy and the prefetcher's initial state."""
  return SimState(hierarchy.init(config), prefetcher.init(params.prefetcher))


def replay(trace: TraceArrays, params: Params, proxy: ProxyParams | None = None,
           warmup: jax.Array | int | None = None, *, config: CacheConfig,
           prefetcher: Prefetcher, codes: bool = True) -> tuple[SimState, jax.Array | None]:
  """The pure, unjitted body of `run` (no checks): one `lax.scan` over `trace`.

  For composing inside your own `jax.jit` / `jax.vmap` / sharded programs (the
  sweep does); `run` checks its inputs and jits this.
  """
  # One [N, 6 or 7] int32 array (one slice per step), cycles (and IPC-proxy
  # windows) computed up front.
  instr = jnp.asarray(trace.instr, jnp.int32)
  columns = [jnp.asarray(trace.block, jnp.int32), jnp.asarray(trace.pc_hash, jnp.int32),
             jnp.asarray(trace.is_store, jnp.int32), instr,
             jnp.asarray(trace.valid, jnp.bool_).astype(jnp.int32),
             hierarchy.cycle_of(instr, params)]
  if proxy is not None:
    columns.append(instr // jnp.asarray(proxy.rob, jnp.int32))
  if warmup is not None:  # the step index: statistics restart at step `warmup`
    columns.append(jnp.arange(instr.shape[0], dtype=jnp.int32))
  xs = jnp.stack(columns, axis=1)
  l1d_latency = config.l1d.latency

  def body(state, x):
    access = TraceArrays(block=x[0], pc_hash=x[1], is_store=x[2], instr=x[3], valid=x[4] != 0)
    if warmup is not None:
      state = restart(state, (x[-1] == jnp.asarray(warmup, jnp.int32)) & (x[-1] > 0), proxy)
    now = x[5]
    mshr_stall = False
    if proxy is not None:  # stall feedback: the closed windows' stall delays the clock
      now = now + jnp.where(jnp.asarray(proxy.feedback, jnp.bool_),
                            closed_stall(state.proxy, x[6]), 0)
      # MSHR stall: the earlier demands' waits (0 when off); a warm-up's stall.
      now = now + state.proxy.mshr_wait + state.proxy.offset
      mshr_stall = jnp.asarray(proxy.mshr_stall, jnp.bool_)
    state, code, out = _step(state, access, params, config=config, prefetcher=prefetcher,
                             now=now, mshr_stall=mshr_stall)
    if proxy is not None:
      counted = access.valid & ((access.is_store == 0) | jnp.asarray(proxy.stores, jnp.bool_))
      # The window's excess is measured after the wait (the wait is in mshr_wait).
      p = proxy_update(state.proxy, x[6], out.latency - out.wait - l1d_latency, counted)
      state = state._replace(proxy=p._replace(mshr_wait=p.mshr_wait + out.wait))
    return state, (code if codes else None)

  state = init(config, params, prefetcher)
  if proxy is not None:
    state = state._replace(proxy=init_proxy())
  return jax.lax.scan(body, state, xs)


_run_jit = jax.jit(replay, static_argnames=("config", "prefetcher", "codes"))


def run(trace: Any, config: CacheConfig, params: Params,
        prefetcher: Prefetcher = protocol.NONE, *, codes: bool = True,
        proxy: ProxyParams | int | None = None,
        warmup: int | None = None) -> tuple[SimState, jax.Array | None]:
  """Replays `trace` (one lax.scan, jitted; one compile per shape/config/prefetcher).

  Args:
    trace: `TraceArrays` or any object with its fields (see the module docstring).
    config: static `CacheConfig`.
    params: `hierarchy.Params` with ``prefetcher=prefetcher.make_params(...)``.
    prefetcher: a `protocol.Prefetcher` (default none).
    codes: also return the [N] int8 step codes (False: None, a little faster).
    proxy: `ProxyParams` (`make_proxy_params`) or an int ROB size: also
      accumulate the IPC proxy's interval-model stall (``final.proxy``, a
      `Proxy`), and with ``feedback=True`` let the closed windows' stall
      delay the clock, with ``mshr_stall=True`` let demands wait for a free
      L1D MSHR (module docstring); None (default): ``final.proxy`` is None
      and time is ``floor(instr * cpi0)``.
    warmup: the first `warmup` accesses (trace positions, 0 <= warmup < N)
      only warm the caches and the prefetcher: the statistics and the IPC
      proxy restart before access `warmup` (`restart`), so every counter and
      metric covers the rest of the trace (ChampSim's warm-up). Traced: new
      values do not recompile. None (default) or 0: no warm-up.

  Returns:
    ``(final SimState, codes_N)``. `hierarchy.counters` / `hierarchy.summarize`
    of ``final.cache`` give the statistics, `metrics` the paper's metrics and
    the IPC proxy.

  Works under `jax.vmap` (values are then checked only for shape).
  """
  if not isinstance(config, CacheConfig):
    raise TypeError(f"config: expected a CacheConfig, given {type(config).__name__}")
  check_prefetcher(prefetcher)
  check_params(params)
  trace = as_trace(trace)
  proxy = as_proxy_params(proxy)
  check_trace(trace, params, num_candidates=prefetcher.num_candidates, proxy=proxy,
              config=config)
  if warmup is not None:
    warmup = jnp.int32(check_warmup(warmup, np.shape(trace.block)[-1]))
  return _run_jit(trace, params, proxy, warmup, config=config, prefetcher=prefetcher,
                  codes=codes)


def check_warmup(warmup: Any, n: int, name: str = "warmup") -> int:
  """`warmup` as an int, checked against a trace of `n` accesses (0 <= warmup < n)."""
  if isinstance(warmup, bool) or not isinstance(warmup, (int, np.integer)):
    raise TypeError(f"{name}: expected an int (accesses that only warm up), given {warmup!r}")
  if not 0 <= warmup < n:
    raise ValueError(f"{name}: expected 0 <= warmup < {n} (the trace's length: something must"
                     f" be left to measure), given {warmup}")
  return int(warmup)


def run_batch(trace: Any, config: CacheConfig, params: Params,
              prefetcher: Prefetcher = protocol.NONE, *, trace_axis: int | None = 0,
              params_axis: int | None = None, codes: bool = True,
              proxy: ProxyParams | int | None = None,
              proxy_axis: int | None = None) -> tuple[SimState, jax.Array | None]:
  """`run` vmapped over a leading axis of the traces and/or the params.

  Args:
    trace_axis: 0 if every trace field has a leading batch axis B, None to share
      one trace.
    params_axis: 0 if every params leaf has the leading axis B
      (`hierarchy.stack_params`), None to share one.
    proxy: as `run`; proxy_axis: 0 if its leaves have the leading axis B.

  Returns:
    `run`'s outputs with a leading B axis.
  """
  if not isinstance(config, CacheConfig):
    raise TypeError(f"config: expected a CacheConfig, given {type(config).__name__}")
  if trace_axis is None and params_axis is None:
    raise ValueError(
        "trace_axis, params_axis: expected at least one batch axis (0), given None twice")
  check_prefetcher(prefetcher)
  check_params(params)
  trace = as_trace(trace)
  proxy = as_proxy_params(proxy)
  # Params and proxy at their worst over the batch (the checks need no pairing).
  check_trace(trace, params, num_candidates=prefetcher.num_candidates, proxy=proxy,
              config=config)
  if trace_axis is not None and len(np.shape(trace.block)) != 2:
    raise ValueError(
        f"trace.block: expected [B, N] with trace_axis=0, given shape {np.shape(trace.block)}")
  if proxy is None:
    proxy_axis = None
  return _run_batch_jit(trace, params, proxy, config=config, prefetcher=prefetcher, codes=codes,
                        trace_axis=trace_axis, params_axis=params_axis, proxy_axis=proxy_axis)


@functools.partial(jax.jit, static_argnames=("config", "prefetcher", "codes", "trace_axis",
                                             "params_axis", "proxy_axis"))
def _run_batch_jit(trace, params, proxy, config, prefetcher, codes, trace_axis, params_axis,
                   proxy_axis):
  fn = functools.partial(replay, config=config, prefetcher=prefetcher, codes=codes)
  return jax.vmap(fn, in_axes=(trace_axis, params_axis, proxy_axis))(trace, params, proxy)


# ----------------------------------------------------------------------------- codes


def decode(codes: Any) -> dict[str, np.ndarray]:
  """Splits step codes into ``valid``, ``level`` (0..3), ``late`` and ``accepted``."""
  c = np.asarray(codes).astype(np.int32)
  valid = c >= 0
  c = np.where(valid, c, 0)
  return {"valid": valid, "level": c & 3, "late": (c >> 2) & 1 == 1, "accepted": c >> 3}
