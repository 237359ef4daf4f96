"""Argument checks shared by the prefetchers' factories and ``make_params``."""

from __future__ import annotations

from typing import Any

import numpy as np


def check_int(name: str, value: Any, lo: int, hi: int | None = None, what: str = "") -> int:
  """`value` as an int in ``lo..hi`` (no upper bound when `hi` is None), or a clear
  error (`what` is appended to the expectation, e.g. " (the factory's max)")."""
  if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
    raise TypeError(f"{name}: expected an int, given {value!r}")
  if value < lo or (hi is not None and value > hi):
    rng = f">= {lo}" if hi is None else f"in {lo}..{hi}"
    raise ValueError(f"{name}: expected an int {rng}{what}, given {value}")
  return int(value)


def check_pow2(name: str, value: Any, lo: int, hi: int, what: str = "") -> int:
  """`value` as a power-of-two int in ``lo..hi``, or a clear error."""
  value = check_int(name, value, lo, hi, what)
  if value & (value - 1):
    raise ValueError(f"{name}: expected a power of two{what}, given {value}")
  return value


def check_bool(name: str, value: Any) -> bool:
  """`value` as a bool (Python or numpy), or a clear error."""
  if not isinstance(value, (bool, np.bool_)):
    raise TypeError(f"{name}: expected a bool, given {value!r}")
  return bool(value)
