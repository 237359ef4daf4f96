"""benchmarks/reproduce.py on a made-up repository: one benchmark passes, one fails."""

import importlib.util
import json
import os
import pathlib
import textwrap

import pytest

from tests.conftest import REPO

GOOD = '''
import dataclasses, os
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
from jaxsys._src import bench

@dataclasses.dataclass(frozen=True)
class Config:
  sizes: tuple[int, ...]

def run(cfg, out_dir):
  rows = [{"size": s, "hits": s // 2} for s in cfg.sizes]
  fig, ax = plt.subplots()
  ax.plot([r["size"] for r in rows], [r["hits"] for r in rows])
  fig.savefig(os.path.join(out_dir, "good.png"))
  hits = sum(r["hits"] for r in rows)
  return dict(rows=rows, papers=["Gaze"], plots=["good.png"],
              claims=[bench.Claim("hits", "hits > 3", "4", hits, hits > 3)])

if __name__ == "__main__":
  bench.cli("good", Config, run)
'''

BAD = '''
raise RuntimeError("the trace file is corrupt at line 7")
'''


def _load_reproduce():
  spec = importlib.util.spec_from_file_location(
      "reproduce", os.path.join(REPO, "benchmarks", "reproduce.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


@pytest.fixture
def fake_repo(tmp_path):
  (tmp_path / "benchmarks").mkdir()
  (tmp_path / "benchmarks" / "prefetch.py").write_text(textwrap.dedent(GOOD).replace('"good"', '"prefetch"'))
  (tmp_path / "benchmarks" / "kvalloc.py").write_text(BAD)
  (tmp_path / "benchmarks" / "_helpers.py").write_text("")
  for name in ("prefetch", "kvalloc"):
    (tmp_path / "configs" / name).mkdir(parents=True)
    (tmp_path / "configs" / name / "smoke.yaml").write_text("sizes: [2, 4]\n")
    (tmp_path / "configs" / name / "paper.yaml").write_text("sizes: [2, 4, 8]\n")
  return tmp_path


def test_runs_all_keeps_going_and_reports(fake_repo, capsys):
  reproduce = _load_reproduce()
  out = fake_repo / "results"
  # a stale success from an earlier run must not survive a failure now
  out.mkdir()
  (out / "kvalloc.json").write_text('{"stale": true}')
  status = reproduce.main(["--out", str(out)], repo=str(fake_repo))
  assert status == 1  # one benchmark failed

  good = json.loads((out / "prefetch.json").read_text())
  assert good["config"] == {"sizes": [2, 4]}  # smoke config
  assert good["claims"][0]["measured"] == 3 and good["claims"][0]["holds"] is False
  assert (out / "good.png").stat().st_size > 0

  bad = json.loads((out / "kvalloc.json").read_text())
  assert "the trace file is corrupt at line 7" in bad["error"]

  report = (out / "REPORT.md").read_text()
  assert "| Gaze | 2412.05211 | `prefetch` | 0/1 | ran |" in report
  assert "![good.png](good.png)" in report
  assert "FAILED: RuntimeError: the trace file is corrupt at line 7" in report
  assert "| Nimbus | 2411.15707 | `secure` | - | no benchmark yet |" in report
  assert "FAILED kvalloc" in capsys.readouterr().out


def test_full_and_only(fake_repo):
  reproduce = _load_reproduce()
  out = fake_repo / "results"
  status = reproduce.main(["--full", "--only", "prefetch", "--out", str(out)], repo=str(fake_repo))
  assert status == 0
  good = json.loads((out / "prefetch.json").read_text())
  assert good["config"] == {"sizes": [2, 4, 8]}  # paper config
  assert good["claims"][0]["holds"] is True  # 1 + 2 + 4 = 7 hits
  assert not (out / "kvalloc.json").exists()
  assert "(full configs)" in (out / "REPORT.md").read_text()
  with pytest.raises(SystemExit):
    reproduce.main(["--only", "nope", "--out", str(out)], repo=str(fake_repo))


def test_no_benchmarks_yet(tmp_path, capsys):
  reproduce = _load_reproduce()
  (tmp_path / "benchmarks").mkdir()
  status = reproduce.main(["--out", str(tmp_path / "results")], repo=str(tmp_path))
  assert status == 0
  assert "No benchmark scripts in benchmarks/ yet" in capsys.readouterr().out
  assert "No benchmark has landed yet" in pathlib.Path(tmp_path / "results" / "REPORT.md").read_text()
