"""Kernel implementation choice: never lies, falls back only when asked to."""

import warnings

import pytest

from jaxsys._src import backend

CANDIDATES = {
    "pallas": lambda: "needs a GPU (or interpret=True on CPU)",
    "reference": lambda: None,
}


def test_none_takes_first_runnable_silently():
  with warnings.catch_warnings():
    warnings.simplefilter("error")
    assert backend.select_implementation("k", None, CANDIDATES) == "reference"


def test_named_unrunnable_raises_with_reason():
  with pytest.raises(backend.ImplementationError, match="'pallas': needs a GPU"):
    backend.select_implementation("k", "pallas", CANDIDATES)


def test_list_falls_back_with_warning():
  with pytest.warns(UserWarning, match="k: using 'reference'; skipped 'pallas': needs a GPU"):
    assert backend.select_implementation("k", ["pallas", "reference"], CANDIDATES) == "reference"


def test_unknown_and_empty():
  with pytest.raises(backend.ImplementationError, match="unknown implementation 'triton'"):
    backend.select_implementation("k", "triton", CANDIDATES)
  with pytest.raises(backend.ImplementationError, match="list is empty"):
    backend.select_implementation("k", [], CANDIDATES)


def test_platform_matches_jax():
  import jax

  assert backend.platform() == jax.default_backend()
  assert backend.has_gpu() == (jax.default_backend() == "gpu")
