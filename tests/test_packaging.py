"""The wheel holds only `jaxsys`; kernels/ and sims/ install under it; import stays light."""

import os
import shutil
import subprocess
import sys
import zipfile
from importlib import metadata

import pytest

from tests.conftest import REPO

SOURCES = ("pyproject.toml", "setup.py", "README.md", "jaxsys", "kernels", "sims")


def _run(cmd, cwd, env=None):
  return subprocess.run(
      cmd, cwd=cwd, capture_output=True, text=True, timeout=300,
      env={**os.environ, **(env or {})},
  )


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
  """Builds the wheel from a copy of the sources (keeps build/ out of the repo)."""
  src = tmp_path_factory.mktemp("src")
  for name in SOURCES:
    path = os.path.join(REPO, name)
    if os.path.isdir(path):
      shutil.copytree(path, src / name, ignore=shutil.ignore_patterns("__pycache__"))
    else:
      shutil.copy(path, src / name)
  dist = tmp_path_factory.mktemp("dist")
  proc = _run(
      [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
       "--quiet", "-w", str(dist), str(src)],
      cwd=str(src),
  )
  assert proc.returncode == 0, proc.stderr[-3000:]
  (path,) = dist.glob("jaxsys-*.whl")
  return path


def test_wheel_top_level_is_only_jaxsys(wheel):
  with zipfile.ZipFile(wheel) as zf:
    names = zf.namelist()
  tops = {n.split("/")[0] for n in names if ".dist-info/" not in n}
  assert tops == {"jaxsys"}, tops
  assert "jaxsys/kernels/__init__.py" in names
  assert "jaxsys/sims/__init__.py" in names
  assert "jaxsys/_src/config.py" in names
  assert "jaxsys/sims/traces/programs/matmul.c" in names  # the traced C kernels ship
  assert not any("tests/" in n or "benchmarks/" in n for n in names)


def test_installed_package_imports_kernels_and_sims(wheel, tmp_path):
  site = tmp_path / "site"
  proc = _run([sys.executable, "-m", "pip", "install", "--no-deps", "--quiet",
               "--target", str(site), str(wheel)], cwd=str(tmp_path))
  assert proc.returncode == 0, proc.stderr[-3000:]
  proc = _run(
      [sys.executable, "-c",
       "import jaxsys.kernels, jaxsys.sims; print(jaxsys.kernels.__file__);"
       " print(jaxsys.sims.__file__)"],
      cwd=str(tmp_path), env={"PYTHONPATH": str(site)},
  )
  assert proc.returncode == 0, proc.stderr
  kernels_file, sims_file = proc.stdout.split()
  assert kernels_file == str(site / "jaxsys" / "kernels" / "__init__.py")
  assert sims_file == str(site / "jaxsys" / "sims" / "__init__.py")


@pytest.mark.parametrize("name", ["kernels", "sims"])
def test_bare_import_from_repo_root_says_what_to_import(name):
  proc = _run([sys.executable, "-c", f"import {name}"], cwd=REPO)
  assert proc.returncode != 0
  assert f"Use `import jaxsys.{name}`" in proc.stderr


def test_import_jaxsys_is_light():
  code = (
      "import sys, jaxsys\n"
      "heavy = [m for m in ('networkx', 'matplotlib', 'jax', 'flax', 'gguf', 'tokenizers')"
      " if m in sys.modules]\n"
      "print(','.join(heavy))\n"
      "print(jaxsys.__version__)\n"
  )
  proc = _run([sys.executable, "-c", code], cwd=REPO)
  assert proc.returncode == 0, proc.stderr
  heavy, version = proc.stdout.splitlines()
  assert heavy == ""
  assert version == metadata.version("jaxsys")


def test_missing_subpackage_is_a_clear_attribute_error():
  import jaxsys

  with pytest.raises(AttributeError, match="no attribute 'nope'"):
    jaxsys.nope  # noqa: B018
  assert jaxsys.kernels.__name__ == "jaxsys.kernels"  # lazy import works
