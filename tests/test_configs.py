"""Every config file under configs/ loads into its benchmark's Config (none rots)."""

import glob
import os
import pathlib

import pytest
import yaml

from jaxsys._src.config import load_config
from tests.conftest import REPO, load_benchmark

CONFIG_DIR = os.path.join(REPO, "configs")
BENCH_DIR = os.path.join(REPO, "benchmarks")


def _benchmarks():
  return sorted(
      os.path.splitext(os.path.basename(p))[0]
      for p in glob.glob(os.path.join(BENCH_DIR, "*.py"))
      if not os.path.basename(p).startswith(("_", "reproduce"))
  )


def _config_files():
  return sorted(glob.glob(os.path.join(CONFIG_DIR, "**", "*.yaml"), recursive=True))


def test_every_benchmark_has_smoke_and_paper_configs():
  for name in _benchmarks():
    for which in ("smoke", "paper"):
      path = os.path.join(CONFIG_DIR, name, f"{which}.yaml")
      assert os.path.exists(path), f"benchmarks/{name}.py has no {path}"


@pytest.mark.parametrize("path", _config_files() or [None])
def test_config_loads_into_its_benchmark_config(path):
  if path is None:  # no config yet: the check above still guards new benchmarks
    assert _benchmarks() == []
    return
  rel = os.path.relpath(path, CONFIG_DIR)
  name = rel.split(os.sep)[0]
  assert name in _benchmarks(), f"{rel}: no benchmarks/{name}.py uses it"
  with open(path, encoding="utf-8") as f:
    first = f.readline()
  # big_vision habit: a config opens with the command that runs it and its time.
  assert first.startswith("#") and f"benchmarks/{name}.py" in first, (
      f"{rel}: first line must be a comment with the command, e.g."
      f" '# python benchmarks/{name}.py --config configs/{rel} --out results (~N min)'")
  module = load_benchmark(name)
  cfg = load_config(path, module.Config)
  assert cfg is not None
  assert isinstance(yaml.safe_load(pathlib.Path(path).read_text(encoding="utf-8")), dict)
