"""Strict JAX settings for every test (STYLE.md 12).

* dtype promotion is strict and rank promotion raises, so implicit up-casts and
  broadcasts in library code fail the tests instead of hiding there;
* four virtual CPU devices, so sharded code paths run on one machine;
* a persistent compilation cache in the repository's ignored ``.cache/`` folder,
  so a second run of the suite skips most XLA compilation; one folder per
  pytest-xdist worker (``make test`` runs two), since JAX writes cache entries
  in place and a worker could read another's half-written entry.
"""

import os

# Must be set before JAX initialises its CPU backend.
_flags = os.environ.get("XLA_FLAGS", "")
if "xla_force_host_platform_device_count" not in _flags:
  os.environ["XLA_FLAGS"] = (_flags + " --xla_force_host_platform_device_count=4").strip()

import jax  # pylint: disable=g-import-not-at-top,wrong-import-position

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
N_CPU_DEVICES = 4

jax.config.update("jax_numpy_dtype_promotion", "strict")
jax.config.update("jax_numpy_rank_promotion", "raise")
jax.config.update("jax_compilation_cache_dir",
                  os.path.join(REPO, ".cache", "jax", os.environ.get("PYTEST_XDIST_WORKER", "main")))
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.2)
jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


def load_benchmark(name):
  """Imports benchmarks/<name>.py (not a package) as module ``benchmarks_<name>``."""
  import importlib.util  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top

  module_name = f"benchmarks_{name}"
  if module_name in sys.modules:
    return sys.modules[module_name]
  spec = importlib.util.spec_from_file_location(
      module_name, os.path.join(REPO, "benchmarks", f"{name}.py"))
  module = importlib.util.module_from_spec(spec)
  sys.modules[module_name] = module  # dataclasses look their module up here
  spec.loader.exec_module(module)
  return module
