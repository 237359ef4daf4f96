"""Render ``results/REPORT.md`` from the benchmark JSONs in a results folder.

One summary line per paper (claims held, or why there are none), failed benchmarks
with their error, then per paper its claims table and plots. A failed benchmark is
recorded by `benchmarks/reproduce.py` as ``<name>.json`` holding ``{"name",
"error"}`` instead of results.
"""

from __future__ import annotations

import datetime
import glob
import json
import os
from collections.abc import Sequence
from typing import Any

from jaxsys._src import bench
from jaxsys._src import papers as papers_lib


class ReportError(ValueError):
  """A results file cannot be read."""


def load_results(results_dir: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
  """Reads every ``*.json`` in `results_dir`.

  Returns:
    (results, failures): successful benchmark records and failure records, each
    sorted by name.

  Raises:
    ReportError: a file is not JSON or not a benchmark record (names the file).
  """
  results, failures = [], []
  for path in sorted(glob.glob(os.path.join(results_dir, "*.json"))):
    try:
      with open(path, encoding="utf-8") as f:
        record = json.load(f)
    except json.JSONDecodeError as e:
      raise ReportError(f"{path}:{e.lineno}: not valid JSON: {e.msg}") from e
    if not isinstance(record, dict) or "name" not in record:
      raise ReportError(f"{path}: not a benchmark record (no 'name' field)")
    if "error" in record:
      failures.append(record)
      continue
    if record.get("schema") != bench.SCHEMA_VERSION:
      raise ReportError(
          f"{path}: field 'schema': expected {bench.SCHEMA_VERSION}, given"
          f" {record.get('schema')!r}"
      )
    for field in ("papers", "rows", "claims", "env"):
      if field not in record:
        raise ReportError(f"{path}: missing field {field!r}")
    for i, claim in enumerate(record["claims"]):
      for field in ("id", "statement", "paper", "measured", "holds"):
        if field not in claim:
          raise ReportError(f"{path}: claims[{i}] is missing field {field!r}")
    results.append(record)
  return results, failures


def _cell(x: Any) -> str:
  if isinstance(x, bool):
    text = "yes" if x else "no"
  elif isinstance(x, float):
    text = f"{x:.4g}"
  elif x is None:
    text = "-"
  else:
    text = str(x)
  return text.replace("|", "\\|").replace("\n", " ")


def _claims_of(record: dict[str, Any], paper: str) -> list[dict[str, Any]]:
  first = record["papers"][0] if record["papers"] else None
  return [
      c for c in record["claims"]
      if (c.get("source") or first) == paper
  ]


def _env_line(env: dict[str, Any]) -> str:
  return (
      f"{env.get('device_kind', '?')} ({env.get('backend', '?')},"
      f" {env.get('device_count', '?')} device(s)), jax {env.get('jax', '?')},"
      f" commit {str(env.get('git_commit', '?'))[:12]}"
  )


def render_report(
    results_dir: str,
    *,
    discovered: Sequence[str] | None = None,
    mode: str | None = None,
) -> str:
  """The report's Markdown text.

  Args:
    results_dir: folder with the benchmark JSONs (and their plots).
    discovered: names of the benchmark scripts that exist, if known; used to tell
      "not run" from "no benchmark yet".
    mode: "smoke" or "full", shown in the heading.
  """
  results, failures = load_results(results_dir)
  by_bench = {r["name"]: r for r in results}
  failed = {f["name"]: f for f in failures}
  now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")

  out = ["# jaxsys reproduction report", ""]
  what = f" ({mode} configs)" if mode else ""
  out.append(
      f"Generated {now}{what} from {len(results)} benchmark result(s) and"
      f" {len(failures)} failure(s) in `{results_dir}`."
  )
  out.append("")
  if not results and not failures:
    if discovered is not None and not discovered:
      out.append(
          "No benchmark has landed yet: `benchmarks/` holds no benchmark script,"
          " so there is nothing to reproduce."
      )
    else:
      out.append("No benchmark results were found.")
    out.append("")

  out += ["## Summary", ""]
  out += ["| paper | arXiv | benchmark | claims that hold | status |",
          "|---|---|---|---|---|"]
  for paper in papers_lib.PAPERS.values():
    record = by_bench.get(paper.benchmark)
    if record is not None and paper.key in record["papers"]:
      claims = _claims_of(record, paper.key)
      held = sum(bool(c["holds"]) for c in claims)
      status = "ran" if claims else "ran, no claims"
      held_text = f"{held}/{len(claims)}"
    elif paper.benchmark in failed:
      error = str(failed[paper.benchmark]["error"]).strip().splitlines()
      status = "FAILED: " + (error[-1] if error else "unknown error")
      held_text = "-"
    elif discovered is not None and paper.benchmark not in discovered:
      status, held_text = "no benchmark yet", "-"
    else:
      status, held_text = "not run", "-"
    out.append(
        f"| {paper.key} | {paper.arxiv} | `{paper.benchmark}` | {held_text} |"
        f" {_cell(status)} |"
    )
  out.append("")

  if failures:
    out += ["## Failed benchmarks", ""]
    for f in failures:
      out.append(f"### `{f['name']}`")
      out.append("")
      if f.get("command"):
        out.append(f"Command: `{f['command']}`")
        out.append("")
      out += ["```", str(f["error"]).rstrip(), "```", ""]

  for paper in papers_lib.PAPERS.values():
    record = by_bench.get(paper.benchmark)
    if record is None or paper.key not in record["papers"]:
      continue
    title = paper.title if paper.title.startswith(paper.key) else f"{paper.key}: {paper.title}"
    out.append(f"## {title} (arXiv {paper.arxiv})")
    out.append("")
    out.append(
        f"Benchmark `benchmarks/{record['name']}.py`; measured on"
        f" {_env_line(record['env'])}."
    )
    out.append("")
    claims = _claims_of(record, paper.key)
    if claims:
      out += ["| claim | paper | measured | holds |", "|---|---|---|---|"]
      for c in claims:
        out.append(
            f"| **{_cell(c['id'])}**: {_cell(c['statement'])} |"
            f" {_cell(c['paper'])} | {_cell(c['measured'])} |"
            f" {_cell(bool(c['holds']))} |"
        )
      out.append("")
    else:
      out += ["This benchmark states no claims for this paper.", ""]
    if paper.key == record["papers"][0]:  # a benchmark's notes and plots, shown once
      if record.get("notes"):
        out += [str(record["notes"]).strip(), ""]
      for plot in record.get("plots", []):
        out += [f"![{plot}]({plot})", ""]
  return "\n".join(out).rstrip() + "\n"


def write_report(
    results_dir: str,
    *,
    discovered: Sequence[str] | None = None,
    mode: str | None = None,
) -> str:
  """Writes ``<results_dir>/REPORT.md`` and returns its path."""
  os.makedirs(results_dir, exist_ok=True)
  text = render_report(results_dir, discovered=discovered, mode=mode)
  path = os.path.join(results_dir, "REPORT.md")
  tmp = path + ".tmp"
  with open(tmp, "w", encoding="utf-8") as f:
    f.write(text)
  os.replace(tmp, path)
  return path
