"""The README's promises: two commands, CI calls the test one, its example runs."""

import os
import pathlib
import re

from tests.conftest import REPO

README = pathlib.Path(REPO, "README.md").read_text(encoding="utf-8")


def test_quickstart_has_exactly_the_two_commands():
  quick = README.split("## Quickstart", 1)[1].split("\n## ", 1)[0]
  block = re.search(r"```sh\n(.*?)```", quick, re.S).group(1)
  commands = [l.split("#")[0].strip() for l in block.splitlines() if l.strip()]
  assert commands == ["make reproduce", "make test"]


def test_ci_runs_the_readme_test_command():
  with open(os.path.join(REPO, ".ci", "run"), encoding="utf-8") as f:
    ci = f.read()
  assert re.search(r"^make test$", ci, re.M)
  assert os.access(os.path.join(REPO, ".ci", "run"), os.X_OK)


def test_papers_table_is_true():
  table = README.split("## The ten papers", 1)[1].split("\n## ", 1)[0]
  rows = [l for l in table.splitlines() if l.startswith("| ") and "arXiv" not in l
          and not l.startswith("| paper")]
  assert len(rows) == 10
  for row in rows:
    cells = [c.strip() for c in row.strip("|").split("|")]
    status = cells[-1]
    assert status in ("planned", "partial", "done"), row
    if status != "planned":  # what the table says has landed must exist
      assert any(os.path.isdir(os.path.join(REPO, m))
                 for m in re.findall(r"`([^`]+/)`", cells[2])), row
    if status == "done":  # every module and the benchmark
      for module in re.findall(r"`([^`]+/)`", cells[2]):
        assert os.path.isdir(os.path.join(REPO, module)), row
      bench = cells[3].strip("`")
      assert os.path.exists(os.path.join(REPO, "benchmarks", f"{bench}.py")), row


def test_library_examples_run(capsys):
  section = README.split("## Using the library", 1)[1].split("\n## ", 1)[0]
  blocks = re.findall(r"```python\n(.*?)```", section, re.S)
  assert len(blocks) == 5
  for block in blocks:
    exec(compile(block, "README.md", "exec"), {})  # pylint: disable=exec-used
  out = capsys.readouterr().out
  assert "(3, 128)" in out
  assert "Timing(compile_s=" in out
  assert "The capital of France is Paris." in out  # SmolLM2 through ClusterKV
  assert "(256, 64)" in out and "load_balance_loss" in out  # the MoE example
