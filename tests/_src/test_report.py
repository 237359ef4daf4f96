"""REPORT.md rendering from made-up benchmark JSONs."""

import json
import pathlib

import pytest

from jaxsys._src import bench, papers, report


def _result(tmp_path, name, paper_keys, claims, plots=(), notes=""):
  bench.write_result(
      tmp_path, name=name, config={"context": 2048}, rows=[{"m": 1}],
      claims=claims, papers=paper_keys, plots=plots, notes=notes,
      env={"backend": "cpu", "device_kind": "cpu", "device_count": 4,
           "jax": "0.0", "git_commit": "abc123"},
  )


def test_report_tables_summary_plots_and_failures(tmp_path):
  _result(
      tmp_path, "kv_cache", ["ClusterKV", "Inf-MLLM"],
      [
          bench.Claim("recall", "ClusterKV recalls > 0.9 | of mass", "0.95", 0.9312, True),
          bench.Claim("ppl", "perplexity within 5%", "1.02x", 1.10, False),
          bench.Claim("stream", "stable past context", "4M tokens", "8k tokens", True,
                      source="Inf-MLLM"),
      ],
      plots=["kv_recall.png"], notes="Budgets 64-512 at 2k context.",
  )
  (tmp_path / "prefetch.json").write_text(json.dumps(
      {"name": "prefetch", "command": "python benchmarks/prefetch.py",
       "error": "Traceback ...\nValueError: trace file missing"}))
  text = report.render_report(
      str(tmp_path), discovered=["kv_cache", "prefetch", "moe"], mode="smoke")

  lines = text.splitlines()
  summary = {l.split("|")[1].strip(): l for l in lines if l.startswith("| ") and "arXiv" not in l
             and l.count("|") == 6}
  assert len([k for k in summary if k in papers.PAPERS]) == 10  # a line per paper
  assert "| 1/2 |" in summary["ClusterKV"] and "| ran |" in summary["ClusterKV"]
  assert "| 1/1 |" in summary["Inf-MLLM"]
  assert "FAILED: ValueError: trace file missing" in summary["Gaze"]
  assert "not run" in summary["HOBBIT"]  # moe exists but produced nothing
  assert "no benchmark yet" in summary["Nimbus"]

  # per-paper claims tables: the claim lands under its own paper only
  cluster = text.index("## ClusterKV:")
  inf = text.index("## Inf-MLLM:")
  assert cluster < text.index("**recall**") < inf
  assert text.index("**stream**") > inf
  assert "ClusterKV recalls > 0.9 \\| of mass" in text  # pipes escaped
  assert "| 0.9312 | yes |" in text and "| 1.1 | no |" in text
  assert text.count("![kv_recall.png](kv_recall.png)") == 1
  assert "Budgets 64-512 at 2k context." in text
  assert "## Failed benchmarks" in text and "trace file missing" in text
  assert "(smoke configs)" in text


def test_report_with_nothing(tmp_path):
  text = report.render_report(str(tmp_path), discovered=[])
  assert "No benchmark has landed yet" in text
  path = report.write_report(str(tmp_path / "out"), discovered=[])
  assert path.endswith("REPORT.md") and "No benchmark has landed yet" in pathlib.Path(path).read_text()


@pytest.mark.parametrize(
    "content, match",
    [
        ("{not json", "bad.json:1: not valid JSON"),
        ('{"x": 1}', "bad.json: not a benchmark record"),
        ('{"name": "x", "schema": 99}', "field 'schema': expected 1, given 99"),
        ('{"name": "x", "schema": 1, "papers": [], "rows": [], "env": {},'
         ' "claims": [{"id": "a"}]}', "claims\\[0\\] is missing field 'statement'"),
    ],
)
def test_unreadable_results_name_the_file(tmp_path, content, match):
  (tmp_path / "bad.json").write_text(content)
  with pytest.raises(report.ReportError, match=match):
    report.render_report(str(tmp_path))
