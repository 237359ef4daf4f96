"""Run every benchmark and write results/REPORT.md.

    python benchmarks/reproduce.py                 # smoke configs (make reproduce)
    python benchmarks/reproduce.py --full          # paper configs (make reproduce FULL=1)
    python benchmarks/reproduce.py --only kv_cache # one benchmark (repeat or comma-separate)

Each benchmark runs in its own process (`benchmarks/<name>.py --config
configs/<name>/{smoke,paper}.yaml --out results`), its output going to
``results/<name>.log``. A benchmark that fails is recorded as
``results/<name>.json`` with its error, the others still run, and the exit status
is non-zero.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import subprocess
import sys
import time

import tqdm

from jaxsys._src import report

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def discover(bench_dir: str) -> list[str]:
  """Names of the benchmark scripts in `bench_dir` (not this one, not _private)."""
  names = []
  for path in sorted(glob.glob(os.path.join(bench_dir, "*.py"))):
    name = os.path.splitext(os.path.basename(path))[0]
    if name == "reproduce" or name.startswith("_"):
      continue
    names.append(name)
  return names


def _record_failure(out_dir: str, name: str, command: list[str], error: str) -> None:
  path = os.path.join(out_dir, f"{name}.json")
  with open(path, "w", encoding="utf-8") as f:
    json.dump({"name": name, "command": " ".join(command), "error": error}, f, indent=1)


def _tail(path: str, n: int = 30) -> str:
  try:
    with open(path, encoding="utf-8", errors="replace") as f:
      return "".join(f.readlines()[-n:])
  except OSError:
    return ""


def run_one(
    name: str, *, repo: str, full: bool, out_dir: str, bar: tqdm.tqdm,
    timeout_s: float | None,
) -> str | None:
  """Runs one benchmark; returns None on success or the error text."""
  config = os.path.join(repo, "configs", name, "paper.yaml" if full else "smoke.yaml")
  command = [
      sys.executable, os.path.join(repo, "benchmarks", f"{name}.py"),
      "--config", config, "--out", out_dir,
  ]
  if not os.path.exists(config):
    error = f"config file {config} does not exist"
    _record_failure(out_dir, name, command, error)
    return error
  log_path = os.path.join(out_dir, f"{name}.log")
  result_path = os.path.join(out_dir, f"{name}.json")
  if os.path.exists(result_path):
    os.remove(result_path)  # a stale result must not pass for this run's
  start = time.monotonic()
  with open(log_path, "w", encoding="utf-8") as log:
    proc = subprocess.Popen(
        command, cwd=repo, stdout=log, stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    while True:
      try:
        proc.wait(timeout=1.0)
        break
      except subprocess.TimeoutExpired:
        elapsed = time.monotonic() - start
        bar.set_postfix_str(f"{name}: {elapsed:.0f}s")
        if timeout_s is not None and elapsed > timeout_s:
          proc.kill()
          proc.wait()
          error = f"timed out after {timeout_s:.0f}s\n" + _tail(log_path)
          _record_failure(out_dir, name, command, error)
          return error
  if proc.returncode != 0:
    error = f"exit status {proc.returncode}; last lines of {log_path}:\n" + _tail(log_path)
    _record_failure(out_dir, name, command, error)
    return error
  if not os.path.exists(result_path):
    error = f"finished but wrote no {result_path}\n" + _tail(log_path)
    _record_failure(out_dir, name, command, error)
    return error
  return None


def main(argv: list[str] | None = None, repo: str = REPO) -> int:
  """Runs the benchmarks of `repo` (its benchmarks/ and configs/ folders)."""
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--full", action="store_true", help="use configs/<name>/paper.yaml")
  parser.add_argument(
      "--only", action="append", default=[],
      help="run only these benchmarks (repeat, or separate names with commas)",
  )
  parser.add_argument("--out", default=os.path.join(repo, "results"), help="output folder")
  parser.add_argument(
      "--timeout", type=float, default=None, help="seconds allowed per benchmark"
  )
  ns = parser.parse_args(argv)

  available = discover(os.path.join(repo, "benchmarks"))
  selected = available
  if ns.only:
    wanted = [n.strip() for item in ns.only for n in item.split(",") if n.strip()]
    unknown = [n for n in wanted if n not in available]
    if unknown:
      parser.error(f"--only: unknown benchmark(s) {unknown}; available: {available}")
    selected = wanted
  ns.out = os.path.abspath(ns.out)
  os.makedirs(ns.out, exist_ok=True)
  mode = "full" if ns.full else "smoke"

  if not available:
    print("No benchmark scripts in benchmarks/ yet: nothing to run.")
  failures = {}
  start = time.monotonic()
  tty = sys.stderr.isatty()  # on a log file, plain lines instead of bar redraws
  with tqdm.tqdm(total=len(selected), unit="benchmark", disable=not selected or not tty) as bar:
    for name in selected:
      bar.set_description(name)
      if not tty:
        print(f"running {name} ({mode} config) ...", flush=True)
      t0 = time.monotonic()
      error = run_one(
          name, repo=repo, full=ns.full, out_dir=ns.out, bar=bar, timeout_s=ns.timeout
      )
      if error is not None:
        failures[name] = error
        tqdm.tqdm.write(f"FAILED {name}: {error.strip().splitlines()[0]}")
      elif not tty:
        print(f"done {name} in {time.monotonic() - t0:.0f}s", flush=True)
      bar.update(1)
  path = report.write_report(ns.out, discovered=available, mode=mode)
  print(
      f"{len(selected) - len(failures)}/{len(selected)} benchmark(s) succeeded in"
      f" {time.monotonic() - start:.0f}s; report: {path}"
  )
  return 1 if failures else 0


if __name__ == "__main__":
  sys.exit(main())
