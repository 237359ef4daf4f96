"""Argument checks shared by the prefetchers' factories and ``make_params``."""

from __future__ import annotations

from typing import Any

import numpy as np


def check_int(name: str, value: Any, lo: int, hi: int | None = None) -> int:
  """`value` as an int in ``lo..hi`` (no upper bound when `hi` is None), or a clear error."""
  if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
    raise TypeError(f"{name}: expected an int, given {value!r}")
  if value < lo or (hi is not None and value > hi):
    rng = f">= {lo}" if hi is None else f"in {lo}..{hi}"
    raise ValueError(f"{name}: expected an int {rng}, given {value}")
  return int(value)
