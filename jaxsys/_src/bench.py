"""Benchmark plumbing: timing with compile apart, environment record, claims, JSON.

Every benchmark script in ``benchmarks/`` uses these, so that all of them time the
same way and write the same JSON (DESIGN.md, "Benchmarks and the reproduction
report")::

    timing = time_jitted(jax.jit(f), x)      # compile_s, median_s, p10_s, p90_s
    claim = Claim(id="speedup", statement="kernel beats XLA", paper="2.0x",
                  measured=ratio, holds=ratio > 1.0)
    write_result(out_dir, name="demo", config=cfg, rows=rows, claims=[claim])
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import math
import os
import platform
import subprocess
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import jax
import numpy as np

from jaxsys._src import config as config_lib

C = TypeVar("C")

# Bump when the JSON layout changes; report.py refuses files it cannot read.
SCHEMA_VERSION = 1


@dataclasses.dataclass(frozen=True)
class Timing:
  """Wall-clock timing of one function on one set of inputs.

  Attributes:
    compile_s: seconds to trace, lower and compile (None when the function is not a
      `jax.jit` object, so compilation could not be separated from the first run).
    first_call_s: seconds of the first call (includes compilation for plain
      callables that jit internally).
    median_s, p10_s, p90_s: statistics of the timed runs after warm-up.
    times_s: every timed run, in order.
  """

  compile_s: float | None
  first_call_s: float
  median_s: float
  p10_s: float
  p90_s: float
  times_s: tuple[float, ...]

  def as_row(self, prefix: str = "") -> dict[str, float | None]:
    """The statistics as flat row fields (``<prefix>median_s`` ...)."""
    return {
        f"{prefix}compile_s": self.compile_s,
        f"{prefix}median_s": self.median_s,
        f"{prefix}p10_s": self.p10_s,
        f"{prefix}p90_s": self.p90_s,
    }


def _block(out: Any) -> Any:
  return jax.block_until_ready(out)


def time_jitted(
    fn: Callable[..., Any],
    *args: Any,
    warmup: int = 2,
    iters: int = 10,
    min_time_s: float = 0.0,
    max_iters: int = 1000,
    **kwargs: Any,
) -> Timing:
  """Times `fn(*args, **kwargs)` with compilation measured apart.

  If `fn` is a `jax.jit` object it is lowered and compiled explicitly (timed as
  `compile_s`) and the compiled executable is what is timed, so no run includes
  tracing or compilation. Any other callable is timed as is: its first call is
  reported as `first_call_s` and discarded with the warm-up.

  Args:
    fn: the function to time.
    *args: positional arguments.
    warmup: untimed calls before timing (after compilation).
    iters: timed calls (at least this many).
    min_time_s: keep timing past `iters` until this much time was spent in timed
      calls (bounded by `max_iters`), for functions that take microseconds.
    max_iters: upper bound on timed calls.
    **kwargs: keyword arguments (static ones included, for a jit object).

  Returns:
    A `Timing`; every run waits on its outputs with `jax.block_until_ready`.
  """
  if iters < 1:
    raise ValueError(f"iters must be >= 1, given {iters}")
  if warmup < 0:
    raise ValueError(f"warmup must be >= 0, given {warmup}")

  compile_s = None
  call = lambda: fn(*args, **kwargs)  # noqa: E731
  if hasattr(fn, "lower"):
    start = time.perf_counter()
    compiled = fn.lower(*args, **kwargs).compile()
    compile_s = time.perf_counter() - start
    # The executable takes only the dynamic arguments, in the original pytree.
    dynamic = _dynamic_args(fn, args, kwargs)
    if dynamic is not None:
      dyn_args, dyn_kwargs = dynamic
      call = lambda: compiled(*dyn_args, **dyn_kwargs)  # noqa: E731

  start = time.perf_counter()
  _block(call())
  first_call_s = time.perf_counter() - start
  for _ in range(warmup):
    _block(call())

  times = []
  spent = 0.0
  while len(times) < iters or (spent < min_time_s and len(times) < max_iters):
    start = time.perf_counter()
    _block(call())
    dt = time.perf_counter() - start
    times.append(dt)
    spent += dt
  arr = np.asarray(times)
  return Timing(
      compile_s=compile_s,
      first_call_s=first_call_s,
      median_s=float(np.median(arr)),
      p10_s=float(np.percentile(arr, 10)),
      p90_s=float(np.percentile(arr, 90)),
      times_s=tuple(times),
  )


def _dynamic_args(
    fn: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> tuple[tuple[Any, ...], dict[str, Any]] | None:
  """Drops the static arguments of a jit object, as its compiled form expects.

  Returns None when the static arguments cannot be told (then the caller times
  the jit object itself, whose cache already holds the compiled executable).
  """
  info = getattr(fn, "_jit_info", None)  # not public; absent in some versions
  nums = getattr(info, "static_argnums", None)
  names = getattr(info, "static_argnames", None)
  if nums is None or names is None:
    return None
  nums = {n % len(args) for n in nums} if args else set()
  dyn_args = tuple(a for i, a in enumerate(args) if i not in nums)
  dyn_kwargs = {k: v for k, v in kwargs.items() if k not in set(names)}
  return dyn_args, dyn_kwargs


def git_commit(repo_dir: str | None = None) -> str:
  """The current commit of the checkout (with ``-dirty`` if it has changes)."""
  cwd = repo_dir or os.path.dirname(os.path.abspath(__file__))
  try:
    commit = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True,
        check=True, timeout=10,
    ).stdout.strip()
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=no"], cwd=cwd,
        capture_output=True, text=True, check=True, timeout=10,
    ).stdout.strip()
  except (OSError, subprocess.SubprocessError):
    return "unknown"
  return commit + ("-dirty" if dirty else "")


def environment() -> dict[str, Any]:
  """What the numbers were measured on: versions, backend, device, commit."""
  devices = jax.devices()
  return {
      "jax": jax.__version__,
      "jaxlib": getattr(jax.lib, "__version__", None)
      or _module_version("jaxlib"),
      "backend": jax.default_backend(),
      "device_kind": devices[0].device_kind,
      "device_count": len(devices),
      "cpu_count": os.cpu_count(),
      "python": platform.python_version(),
      "platform": platform.platform(),
      "git_commit": git_commit(),
      "time_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(
          timespec="seconds"
      ),
  }


def _module_version(name: str) -> str | None:
  from importlib import metadata  # pylint: disable=g-import-not-at-top

  try:
    return metadata.version(name)
  except metadata.PackageNotFoundError:
    return None


@dataclasses.dataclass(frozen=True)
class Claim:
  """One headline statement of a paper, tested at our scale.

  `measured` and `holds` must be computed from the benchmark's rows in the same
  run; `paper` is the paper's own figure, as text (e.g. ``"2.0x (Fig. 9)"``).

  Attributes:
    id: short identifier, unique within the benchmark.
    statement: the claim in words, with the threshold used for `holds`.
    paper: the paper's figure.
    measured: our figure (a number, or a short text).
    holds: whether our measurement supports the statement.
    source: which paper the claim is from (a key of `jaxsys._src.papers.PAPERS`);
      None means the benchmark's first paper.
  """

  id: str
  statement: str
  paper: str
  measured: Any
  holds: bool
  source: str | None = None

  def __post_init__(self):
    if not isinstance(self.holds, (bool, np.bool_)):
      raise TypeError(
          f"Claim {self.id!r}: holds must be a bool computed from the rows,"
          f" given {self.holds!r} ({type(self.holds).__name__})"
      )
    object.__setattr__(self, "holds", bool(self.holds))


def to_jsonable(x: Any) -> Any:
  """Converts numpy/jax scalars and arrays, tuples and dataclasses for `json`."""
  if dataclasses.is_dataclass(x) and not isinstance(x, type):
    return to_jsonable(dataclasses.asdict(x))
  if isinstance(x, dict):
    return {str(k): to_jsonable(v) for k, v in x.items()}
  if isinstance(x, (list, tuple)):
    return [to_jsonable(v) for v in x]
  if isinstance(x, (np.bool_, bool)):
    return bool(x)
  if isinstance(x, (np.integer,)):
    return int(x)
  if isinstance(x, (np.floating, float)):
    v = float(x)
    return v if math.isfinite(v) else str(v)
  if isinstance(x, (np.ndarray, jax.Array)):
    return to_jsonable(np.asarray(x).tolist())
  return x


def write_result(
    out_dir: str | os.PathLike[str],
    *,
    name: str,
    config: Any,
    rows: Sequence[dict[str, Any]],
    claims: Sequence[Claim],
    papers: Sequence[str],
    plots: Sequence[str] = (),
    notes: str = "",
    env: dict[str, Any] | None = None,
) -> str:
  """Writes ``<out_dir>/<name>.json`` in the layout DESIGN.md describes.

  Args:
    out_dir: folder for the JSON (created if missing).
    name: the benchmark's name (its script's stem).
    config: the config dataclass (or a dict) the run used.
    rows: one dict per method x setting, with the measured figures.
    claims: the claims, computed from `rows`.
    papers: keys of the papers this benchmark reproduces (see `papers.PAPERS`).
    plots: PNG file names, relative to `out_dir`.
    notes: free text shown under the claims table in the report.
    env: the environment record; measured now if None.

  Returns:
    The path written.
  """
  from jaxsys._src import papers as papers_lib  # pylint: disable=g-import-not-at-top

  for key in papers:
    if key not in papers_lib.PAPERS:
      raise ValueError(
          f"papers: unknown paper {key!r}; known: {sorted(papers_lib.PAPERS)}"
      )
  ids = [c.id for c in claims]
  if len(set(ids)) != len(ids):
    raise ValueError(f"claims: ids must be unique, given {ids}")
  for c in claims:
    if c.source is not None and c.source not in papers:
      raise ValueError(
          f"claim {c.id!r}: source {c.source!r} is not among papers {list(papers)}"
      )
  if dataclasses.is_dataclass(config):
    config = config_lib.config_to_dict(config)
  os.makedirs(out_dir, exist_ok=True)
  record = {
      "schema": SCHEMA_VERSION,
      "name": name,
      "papers": list(papers),
      "config": config,
      "env": env if env is not None else environment(),
      "rows": list(rows),
      "claims": [dataclasses.asdict(c) for c in claims],
      "plots": list(plots),
      "notes": notes,
  }
  path = os.path.join(out_dir, f"{name}.json")
  tmp = path + ".tmp"
  with open(tmp, "w", encoding="utf-8") as f:
    json.dump(to_jsonable(record), f, indent=1)
    f.write("\n")
  os.replace(tmp, path)  # never leave a half-written result behind
  return path


def cli(
    name: str,
    config_cls: type[C],
    run: Callable[[C, str], dict[str, Any]],
    argv: Sequence[str] | None = None,
) -> str:
  """The command line every benchmark script shares.

  ``benchmarks/<name>.py --config configs/<name>/smoke.yaml --out results``.
  `run(config, out_dir)` returns the keyword arguments of `write_result` other
  than `out_dir`, `name` and `config` (rows, claims, papers, plots, notes).

  Returns:
    The path of the JSON written.
  """
  parser = argparse.ArgumentParser(prog=f"benchmarks/{name}.py")
  parser.add_argument(
      "--config", required=True, help=f"YAML file, e.g. configs/{name}/smoke.yaml"
  )
  parser.add_argument("--out", default="results", help="output folder")
  ns = parser.parse_args(argv)
  cfg = config_lib.load_config(ns.config, config_cls)
  result = run(cfg, ns.out)
  path = write_result(ns.out, name=name, config=cfg, **result)
  print(f"{name}: wrote {path}")
  return path
