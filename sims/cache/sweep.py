"""Sweeps as data: many prefetcher configurations x many traces in ONE compiled program.

`sweep` takes a list of traces and a list of parameter dicts (one per
configuration) and runs every (configuration, trace) pair, and the no-prefetch
baseline of each trace, as one flattened batch inside one jitted `jax.vmap` of
`runner.replay` (the gymnax recipe of ``DESIGN.md``: geometry and the
prefetcher's table sizes static, everything a sweep varies traced, so new
values never recompile). Traces of different lengths are padded with a
``valid`` mask (`jaxsys.sims.traces.format.pad_traces`; padding changes
nothing). With several devices the flattened batch axis is split over a 1-D
`jax.sharding.Mesh` (``shard_map`` with `NamedSharding` inputs, the batch
padded to a multiple of the device count); results are identical to the
unsharded run.

A parameter dict holds the prefetcher's ``make_params`` keywords plus,
optionally, the hierarchy's (``cpi0``, ``dram_latency``) and the IPC proxy's
(``rob``, ``proxy_stores``, ``feedback``: stall feedback into the clock,
``mshr_stall``: demands wait for a free L1D MSHR, see `runner`); every dict must name the same keys. Keys a dict leaves out take
`sweep`'s keyword defaults. All of them are traced: configurations with and
without feedback or MSHR stalls share the one program.

**The baseline in the same program.** The prefetcher is wrapped
(`switchable`) with a traced on/off flag: "off" rows run the prefetcher's
train / issue but drop every candidate, which leaves the cache exactly as the
``none`` prefetcher would (a tested identity), so each distinct (cpi0,
dram_latency, rob, proxy_stores, feedback, mshr_stall) gets one baseline row per trace in
the same batch and the whole sweep is one compile.

**Speed on XLA:CPU** (jax 0.10.2, 2 shared cores, 4 emulated devices; 8
next-line configurations x 4 synthetic traces, default 48 KB / 512 KB / 2 MB
hierarchy, compile apart): ``batch_size=1`` (runs one after the other inside
the program) 0.053 M accesses/s aggregate unsharded, 0.155 M/s sharded over
the 4 devices; the full vmap (``batch_size=None``) 0.0068 M/s unsharded,
0.0117 M/s sharded (5k-access traces): a vmapped step gathers and scatters
table rows across the batch. Prefer ``batch_size=1`` on CPU; the full vmap is
for accelerators.

>>> import numpy as np
>>> from jaxsys.sims.cache import hierarchy, protocol, runner, sweep
>>> traces = [runner.make_trace(np.arange(64)), runner.make_trace(np.arange(0, 256, 4))]
>>> result = sweep.sweep(traces, hierarchy.CacheConfig(), protocol.next_line(2),
...                      [dict(degree=1), dict(degree=2)], devices=1)
>>> result.metrics["llc_coverage"].shape      # [configs, traces]
(2, 2)
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from ..traces import format as trace_format
from . import hierarchy
from . import metrics as metrics_lib
from . import protocol
from . import runner
from .hierarchy import CacheConfig, Params
from .protocol import Prefetcher
from .runner import SimState

HIERARCHY_KEYS = ("cpi0", "dram_latency")
PROXY_KEYS = ("rob", "proxy_stores", "feedback", "mshr_stall")
_AXIS = "batch"
_LOWERING_EVENT = "/jax/core/compile/jaxpr_to_mlir_module_duration"


class SweepResult(NamedTuple):
  """What `sweep` returns (numpy throughout)."""

  metrics: dict[str, np.ndarray]  # name -> [C, T] `metrics.metrics` of every (config, trace)
  rows: list[dict[str, Any]]  # C * T `metrics.metrics_table` rows, labelled config / trace
  state: SimState  # final states of the prefetching runs, leaves [C, T, ...]
  baseline: SimState | None  # each config's no-prefetch run of each trace, [C, T, ...] (prefetcher None)
  params: Params  # the configurations' hierarchy.Params, leaves [C]
  proxy: runner.ProxyParams  # their IPC-proxy params, leaves [C]
  compilations: int  # programs lowered (traced and compiled) by this call: 1 the first time, then 0
  devices: int  # devices the batch axis was split over (1: unsharded)
  batch: int  # runs in the one program: (C + baselines) * T, padded to a multiple of `devices`


# ----------------------------------------------------------------------------- baseline switch


class SwitchParams(NamedTuple):
  on: Any  # [] bool False: drop every candidate (a no-prefetch baseline row)
  inner: Any  # the wrapped prefetcher's params


@functools.lru_cache(maxsize=None)
def switchable(prefetcher: Prefetcher) -> Prefetcher:
  """`prefetcher` with a traced on/off switch (params `SwitchParams`).

  Off, every candidate is invalid, so the cache runs exactly as with the
  ``none`` prefetcher (the prefetcher's own state still trains and is
  meaningless). Cached: one wrapper (one static jit key) per prefetcher.
  """
  runner.check_prefetcher(prefetcher)

  def make_params(on: bool = True, **kwargs: Any) -> SwitchParams:
    return SwitchParams(np.bool_(on), prefetcher.make_params(**kwargs))

  def init(pparams: SwitchParams):
    return prefetcher.init(pparams.inner)

  def train(pstate, access, hit_l1, now, pparams: SwitchParams):
    return prefetcher.train(pstate, access, hit_l1, now, pparams.inner)

  def issue(pstate, cache_state, access, now, budget, pparams: SwitchParams):
    pstate, cand = prefetcher.issue(pstate, cache_state, access, now, budget, pparams.inner)
    if isinstance(cand, protocol.Candidates):  # anything else: the runner reports it
      on = jnp.asarray(pparams.on, jnp.bool_)
      cand = cand._replace(valid_K=jnp.asarray(cand.valid_K, jnp.bool_) & on)
    return pstate, cand

  return Prefetcher(name=f"{prefetcher.name}+switch", num_candidates=prefetcher.num_candidates,
                    make_params=make_params, init=init, train=train, issue=issue,
                    self_masking=prefetcher.self_masking)


# ----------------------------------------------------------------------------- the program


_TRACE_COUNT = [0]


def trace_count() -> int:
  """How many times any sweep program has been traced in this process."""
  return _TRACE_COUNT[0]


@functools.lru_cache(maxsize=None)
def _program(config: CacheConfig, prefetcher: Prefetcher, mesh: Mesh | None,
             batch_size: int | None, warm: bool = False):
  """The jitted vmap of `runner.replay` over a flat batch (sharded over `mesh`);
  with `batch_size`, a `lax.map` over vmaps of that width instead; with
  `warm`, a fourth input: each run's warm-up length."""
  fn = functools.partial(runner.replay, config=config, prefetcher=prefetcher, codes=False)

  def batch_fn(*args):
    if batch_size is None:
      return jax.vmap(fn)(*args)[0]
    return jax.lax.map(lambda a: fn(*a)[0], args, batch_size=batch_size)

  if mesh is not None:
    # Each device runs its slice of the batch; no collectives. The cache's
    # loops start from constants, which the varying-axis check would reject.
    spec = PartitionSpec(_AXIS)
    batch_fn = jax.shard_map(batch_fn, mesh=mesh, in_specs=spec, out_specs=spec,
                             check_vma=False)

  def program(trace_B, params_B, proxy_B, *warmup_B):
    _TRACE_COUNT[0] += 1
    return batch_fn(trace_B, params_B, proxy_B, *warmup_B)

  return jax.jit(program)


def _auto_batch(batch_size: int | str | None, devs: Sequence[Any]) -> int | str | None:
  """``"auto"``: 1 on CPU (a vmapped step is several times slower there), None elsewhere."""
  if isinstance(batch_size, str) and batch_size == "auto":
    return 1 if devs[0].platform == "cpu" else None
  return batch_size


def program_cache_size(config: CacheConfig, prefetcher: Prefetcher, devices: Any = None,
                       batch_size: int | str | None = "auto", warmup: bool = False) -> int:
  """Compiled executables held by the sweep program of this (config, prefetcher,
  devices, with or without warm-up) (the jit's cache size): a sweep over any
  number of parameter values, warm-up lengths and traces of one padded shape
  holds 1."""
  devs = _devices(devices)
  mesh = Mesh(np.asarray(devs), (_AXIS,)) if len(devs) > 1 else None
  return _program(config, switchable(prefetcher), mesh, _auto_batch(batch_size, devs),
                  bool(warmup))._cache_size()


# ----------------------------------------------------------------------------- inputs


def _devices(devices: Any) -> list[Any]:
  available = jax.devices()
  if devices is None:
    return list(available)
  if isinstance(devices, (int, np.integer)) and not isinstance(devices, bool):
    if not 1 <= devices <= len(available):
      raise ValueError(f"devices: expected 1..{len(available)} (the devices present),"
                       f" given {devices}")
    return list(available[:int(devices)])
  if isinstance(devices, Sequence) and devices and all(isinstance(d, jax.Device)
                                                       for d in devices):
    return list(devices)
  raise TypeError(f"devices: expected None, a device count or a non-empty list of jax devices,"
                  f" given {devices!r}")


def _as_sim_arrays(trace: Any, i: int) -> trace_format.Trace | trace_format.SimArrays:
  if isinstance(trace, (trace_format.Trace, trace_format.SimArrays)):
    return trace
  try:
    t = runner.as_trace(trace)
  except TypeError as e:
    raise TypeError(f"traces[{i}]: {e}") from e
  if np.ndim(t.block) != 1:
    raise ValueError(f"traces[{i}]: expected one trace (block [N]), given shape"
                     f" {np.shape(t.block)}")
  keep = np.asarray(t.valid, bool)
  if not keep.any():
    raise ValueError(f"traces[{i}]: expected at least one valid access, given none")
  instr = np.asarray(t.instr)[keep]
  for name in ("block", "pc_hash", "is_store", "instr"):
    if np.asarray(getattr(t, name)).dtype.kind not in "iub":
      raise TypeError(f"traces[{i}].{name}: expected an integer dtype, given"
                      f" {np.asarray(getattr(t, name)).dtype}")
  return trace_format.SimArrays(
      block=np.asarray(t.block)[keep].astype(np.int32),
      pc_hash=np.asarray(t.pc_hash)[keep].astype(np.int32),
      is_store=np.asarray(t.is_store)[keep].astype(np.int8),
      instr=instr.astype(np.int32), valid=np.ones(int(keep.sum()), bool),
      n_instructions=np.int32(int(instr[-1]) + 1))


def _trace_name(trace: Any, i: int) -> str:
  name = getattr(trace, "name", None)
  return name if isinstance(name, str) and name else f"trace{i}"


def _config_params(param_dicts: Sequence[Mapping[str, Any]], prefetcher: Prefetcher,
                   defaults: dict[str, Any]) -> tuple[list[Params], list[runner.ProxyParams]]:
  if isinstance(param_dicts, Mapping) or not isinstance(param_dicts, Sequence):
    raise TypeError(f"param_dicts: expected a list of dicts (one per configuration), given"
                    f" {type(param_dicts).__name__}")
  if not param_dicts:
    raise ValueError("param_dicts: expected at least one configuration, given an empty list")
  keys0 = None
  params, proxies = [], []
  for i, d in enumerate(param_dicts):
    if not isinstance(d, Mapping):
      raise TypeError(f"param_dicts[{i}]: expected a dict of parameters, given"
                      f" {type(d).__name__}")
    if keys0 is None:
      keys0 = set(d)
    elif set(d) != keys0:
      missing, extra = sorted(keys0 - set(d)), sorted(set(d) - keys0)
      raise ValueError(
          f"param_dicts[{i}]: expected the keys of param_dicts[0] {sorted(keys0)} (every"
          f" configuration names the same parameters), given {sorted(d)}"
          f" (missing {missing}, extra {extra})")
    own = {k: d.get(k, defaults[k]) for k in HIERARCHY_KEYS + PROXY_KEYS}
    pf_kwargs = {k: v for k, v in d.items() if k not in own}
    try:
      pparams = prefetcher.make_params(**pf_kwargs)
      p = hierarchy.make_params(cpi0=own["cpi0"], dram_latency=own["dram_latency"],
                                prefetcher=pparams)
      x = runner.make_proxy_params(rob=own["rob"], stores=own["proxy_stores"],
                                   feedback=own["feedback"], mshr_stall=own["mshr_stall"])
    except (TypeError, ValueError) as e:
      raise type(e)(f"param_dicts[{i}]: {e}") from e
    if params:
      want = jax.tree.structure(params[0].prefetcher)
      got = jax.tree.structure(p.prefetcher)
      shapes0 = [np.shape(x) for x in jax.tree.leaves(params[0].prefetcher)]
      shapes = [np.shape(x) for x in jax.tree.leaves(p.prefetcher)]
      if got != want or shapes != shapes0:
        raise ValueError(
            f"param_dicts[{i}]: {prefetcher.name}.make_params gave params of structure {got}"
            f" shapes {shapes}, but param_dicts[0] gave {want} shapes {shapes0}; a sweep"
            " stacks them, so they must match")
    params.append(p)
    proxies.append(x)
  return params, proxies


def _stack(trees: list[Any]) -> Any:
  return jax.tree.map(lambda *xs: np.stack([np.asarray(x) for x in xs]), *trees)


def _take(tree: Any, index: np.ndarray) -> Any:
  return jax.tree.map(lambda x: np.asarray(x)[index], tree)


# ----------------------------------------------------------------------------- sweep


def sweep(traces: Sequence[Any], config: CacheConfig, prefetcher: Prefetcher,
          param_dicts: Sequence[Mapping[str, Any]], *, baseline: bool = True,
          devices: Any = None, cpi0: Any = 1, dram_latency: int = hierarchy.DEFAULT_DRAM_LATENCY,
          rob: int = runner.DEFAULT_ROB, proxy_stores: bool = False, feedback: bool = False,
          mshr_stall: bool = False, length: int | None = None,
          names: Sequence[str] | None = None, batch_size: int | str | None = "auto",
          warmup: int | Sequence[int] | None = None) -> SweepResult:
  """Runs every (configuration, trace) pair, and the baselines, as one compiled program.

  Args:
    traces: T traces: `jaxsys.sims.traces.Trace`, `SimArrays`, `runner.TraceArrays`
      (or any object `runner.as_trace` reads); padded to the longest (or
      `length`) with a ``valid`` mask.
    config: the static `CacheConfig`.
    prefetcher: a `protocol.Prefetcher` (its static table sizes serve every
      configuration).
    param_dicts: C dicts, each ``prefetcher.make_params`` keywords plus
      optional ``cpi0``, ``dram_latency``, ``rob``, ``proxy_stores``,
      ``feedback``, ``mshr_stall``; all with the same keys.
    baseline: also run each trace without prefetching (per distinct cpi0 /
      DRAM latency / proxy settings), for coverage, traffic and speedup.
    devices: None (every device), a count, or a list of devices; with more
      than one the batch axis is sharded over them.
    cpi0, dram_latency, rob, proxy_stores, feedback, mshr_stall: defaults for
      keys a dict omits (feedback, mshr_stall: `runner.make_proxy_params`'s
      stall feedback and MSHR stalls, default off).
    length: pad traces to this length (default the longest): sweeps over other
      traces of at most this length then reuse the compiled program.
    names: T trace labels for the rows (default each trace's ``name`` or
      ``trace<i>``).
    batch_size: ``"auto"`` (default): 1 on CPU devices, None elsewhere.
      None: one `jax.vmap` over the whole (per-device) batch. An int k: a `jax.lax.map` over vmaps of k runs (still one
      program; k = 1 runs them one after the other). On XLA:CPU a vmapped
      step turns the cache's row reads / writes into gathers / scatters over
      the batch and runs several times slower per run than a lone run, more
      so with large tables; ``batch_size=1`` keeps the lone-run speed (see
      the speed notes in the module docstring).
    warmup: accesses of each trace that only warm the caches and the
      prefetcher (`runner.run`'s ``warmup``: every statistic and metric covers
      the rest): one int for every trace or T ints, each below its trace's
      length. Traced: new values reuse the program. None (default): none.

  Returns:
    `SweepResult`: ``metrics[name]`` [C, T] (`metrics.metrics`, IPC proxy
    included), ``rows`` (C * T plain dicts, config-major), the final states,
    and ``compilations`` (programs lowered by this call).

  Raises:
    ValueError / TypeError: no traces, no or mismatched parameter dicts, bad
    parameter values (e.g. ``rob`` < 1), bad devices; the message names the
    index.
  """
  if not isinstance(config, CacheConfig):
    raise TypeError(f"config: expected a CacheConfig, given {type(config).__name__}")
  runner.check_prefetcher(prefetcher)
  if isinstance(traces, (Mapping, str)) or not isinstance(traces, Sequence):
    raise TypeError(f"traces: expected a list of traces, given {type(traces).__name__}")
  if not traces:
    raise ValueError("traces: expected at least one trace, given an empty list")
  if names is not None and len(names) != len(traces):
    raise ValueError(f"names: expected {len(traces)} labels (one per trace), given {len(names)}")
  defaults = dict(cpi0=cpi0, dram_latency=dram_latency, rob=rob, proxy_stores=proxy_stores,
                  feedback=feedback, mshr_stall=mshr_stall)
  params, proxies = _config_params(param_dicts, prefetcher, defaults)
  devs = _devices(devices)

  # Traces [T, N].
  arrays = [_as_sim_arrays(t, i) for i, t in enumerate(traces)]
  warmup_T = None
  if warmup is not None:
    per_trace = ([warmup] * len(arrays) if isinstance(warmup, (int, np.integer))
                 and not isinstance(warmup, bool) else warmup)
    if isinstance(per_trace, (str, Mapping)) or not isinstance(per_trace, Sequence):
      raise TypeError(f"warmup: expected an int or a list of {len(arrays)} ints, given"
                      f" {warmup!r}")
    if len(per_trace) != len(arrays):
      raise ValueError(f"warmup: expected {len(arrays)} ints (one per trace), given"
                       f" {len(per_trace)}")
    lengths = [a.num_accesses if isinstance(a, trace_format.Trace) else int(np.shape(a.block)[0])
               for a in arrays]
    warmup_T = np.array([runner.check_warmup(w, n, name=f"warmup[{i}]")
                         for i, (w, n) in enumerate(zip(per_trace, lengths))], np.int32)
  padded = trace_format.pad_traces(arrays, length)
  trace_TN = runner.TraceArrays(padded.block, padded.pc_hash, padded.is_store, padded.instr,
                                padded.valid)
  C, T = len(params), len(arrays)
  sw = switchable(prefetcher)

  # Rows: the C configurations, then one baseline per distinct hierarchy / proxy setting.
  rows = [p._replace(prefetcher=SwitchParams(np.bool_(True), p.prefetcher)) for p in params]
  row_proxy = list(proxies)
  base_of = np.zeros((C,), np.int64)
  if baseline:
    seen: dict[tuple, int] = {}
    for c, (p, x) in enumerate(zip(params, proxies)):
      key = tuple(int(v) for v in (p.cpi0_num, p.cpi0_den, p.dram_latency, x.rob, x.stores,
                                   x.feedback, x.mshr_stall))
      if key not in seen:
        seen[key] = len(rows)
        rows.append(p._replace(prefetcher=SwitchParams(np.bool_(False), p.prefetcher)))
        row_proxy.append(x)
      base_of[c] = seen[key]
  R = len(rows)
  runner.check_trace(trace_TN, _stack(rows), num_candidates=prefetcher.num_candidates,
                     proxy=_stack(row_proxy), config=config)

  # The flat batch: (row, trace) pairs, padded to a multiple of the device count.
  D = len(devs)
  n = R * T
  batch = -(-n // D) * D
  row_B = np.concatenate([np.repeat(np.arange(R), T), np.zeros(batch - n, np.int64)])
  trace_B = np.concatenate([np.tile(np.arange(T), R), np.zeros(batch - n, np.int64)])
  inputs = (_take(trace_TN, trace_B), _take(_stack(rows), row_B),
            _take(_stack(row_proxy), row_B))
  if warmup_T is not None:
    inputs += (warmup_T[trace_B],)
  if D > 1:
    mesh = Mesh(np.asarray(devs), (_AXIS,))
    inputs = jax.device_put(inputs, NamedSharding(mesh, PartitionSpec(_AXIS)))
  else:
    mesh = None
    inputs = jax.device_put(inputs, devs[0])
  batch_size = _auto_batch(batch_size, devs)
  if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(
      batch_size, (int, np.integer)) or batch_size < 1):
    raise ValueError(f"batch_size: expected None or an int >= 1, given {batch_size!r}")
  program = _program(config, sw, mesh, None if batch_size is None else int(batch_size),
                     warmup_T is not None)

  lowered: list[str] = []

  def listener(event: str, duration: float, **_: Any) -> None:
    del duration
    if event == _LOWERING_EVENT:
      lowered.append(event)

  jax.monitoring.register_event_duration_secs_listener(listener)
  try:
    state_B = jax.block_until_ready(program(*inputs))
  finally:
    jax.monitoring.unregister_event_duration_listener(listener)
  state_B = jax.device_get(state_B)

  # Back to [C, T] (and the matching baselines), then the metrics.
  pf_index = np.arange(C * T)
  state_flat = _take(state_B, pf_index)
  params_flat = _take(_stack(params), np.repeat(np.arange(C), T))
  base_flat = None
  if baseline:
    base_index = np.repeat(base_of, T) * T + np.tile(np.arange(T), C)
    base_flat = _take(state_B, base_index)._replace(prefetcher=None)
  m = metrics_lib.metrics(state_flat, base_flat, params_flat)
  trace_names = list(names) if names is not None else [_trace_name(t, i)
                                                       for i, t in enumerate(traces)]
  labels = [{"config": c, **dict(param_dicts[c]), "trace": trace_names[t]}
            for c in range(C) for t in range(T)]
  table = metrics_lib.metrics_table(state_flat, base_flat, params_flat, labels=labels)

  def grid(tree):
    return jax.tree.map(lambda x: np.asarray(x).reshape((C, T) + np.shape(x)[1:]), tree)

  state_CT = grid(state_flat)
  return SweepResult(
      metrics={k: np.asarray(v).reshape((C, T) + np.shape(v)[1:]) for k, v in m.items()},
      rows=table, state=state_CT, baseline=None if base_flat is None else grid(base_flat),
      params=_stack(params), proxy=_stack(proxies), compilations=len(lowered), devices=D,
      batch=batch)
