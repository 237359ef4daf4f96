"""Tuning HOBBIT's four cache weights on a calibration trace (vmapped grid search).

HOBBIT tunes (w_lru, w_lfu, w_lhu, w_fld), which sum to 1, to minimise the miss
*penalty* on a calibration set: a high-precision miss costs C, a low-precision
miss ``(B_l / B_h) C`` (papers/moe.md 1.1 (3) [V]; the procedure itself is not
published [I]). Here the weights run over every point of the simplex grid with
step ``1 / resolution`` (integers summing to `resolution`, e.g. 220 points for
resolution 9), all replayed in one vmapped `cache.sweep` (one compile).
"""

from __future__ import annotations

import itertools
from typing import NamedTuple

import numpy as np

from . import cache as cache_lib


class TuneResult(NamedTuple):
  best_weights: np.ndarray  # [4] int32 (lru, lfu, lhu, fld), summing to `resolution`
  best_penalty: float  # miss penalty of the best weights on the calibration trace
  weights_G4: np.ndarray  # [G, 4] int32 every grid point
  penalty_G: np.ndarray  # [G] float32 the miss penalty of each


def weight_grid(resolution: int) -> np.ndarray:
  """Every 4-tuple of non-negative integers summing to `resolution`, [G, 4] int32.

  ``G = C(resolution + 3, 3)``: 20 for 3, 220 for 9.
  """
  if (isinstance(resolution, bool) or not isinstance(resolution, (int, np.integer))
      or resolution < 1):
    raise ValueError(f"resolution: expected an int >= 1, given {resolution!r}")
  rows = [w for w in itertools.product(range(resolution + 1), repeat=3) if sum(w) <= resolution]
  return np.array([(*w, resolution - sum(w)) for w in rows], np.int32)


def evaluate_weights(config: cache_lib.CacheConfig, trace: cache_lib.Trace, weights_G4,
                     *, capacity_high: int, capacity_low: int, bytes_high: float = 1.0,
                     bytes_low: float = 0.25) -> np.ndarray:
  """HOBBIT's miss penalty of each weight row on `trace` (one vmapped run), [G] float32."""
  weights_G4 = np.asarray(weights_G4)
  if weights_G4.ndim != 2 or weights_G4.shape[1] != 4:
    raise ValueError(f"weights_G4: expected shape [G, 4], given {weights_G4.shape}")
  params = cache_lib.stack_params([
      cache_lib.make_params(config, "hobbit", capacity_high, capacity_low, w, bytes_high, bytes_low)
      for w in weights_G4
  ])
  result = cache_lib.sweep(config, params, trace)
  return np.asarray(cache_lib.miss_penalty(result, params))


def tune_weights(config: cache_lib.CacheConfig, trace: cache_lib.Trace, *, capacity_high: int,
                 capacity_low: int, bytes_high: float = 1.0, bytes_low: float = 0.25,
                 resolution: int = 9) -> TuneResult:
  """Grid search of HOBBIT's weights for the least miss penalty on `trace`.

  Args:
    config: static sizes.
    trace: the calibration trace (`cache.make_trace`, with precision classes).
    capacity_high, capacity_low: the cache sizes to tune for.
    bytes_high, bytes_low: expert copy sizes (only their ratio matters here).
    resolution: grid step ``1 / resolution``.

  Returns:
    `TuneResult`; ties go to the first grid point in `weight_grid` order.

  >>> import numpy as np
  >>> from jaxsys.sims.expert_offload import cache, tuning
  >>> config = cache.CacheConfig(num_layers=2, num_experts=4)
  >>> ids = np.random.default_rng(0).integers(0, 4, (8, 2, 1))
  >>> res = tuning.tune_weights(config, cache.make_trace(config, ids),
  ...                           capacity_high=3, capacity_low=0, resolution=2)
  >>> int(res.best_weights.sum()), res.penalty_G.shape
  (2, (10,))
  """
  grid = weight_grid(resolution)
  penalty = evaluate_weights(config, trace, grid, capacity_high=capacity_high,
                             capacity_low=capacity_low, bytes_high=bytes_high, bytes_low=bytes_low)
  best = int(np.argmin(penalty))
  return TuneResult(grid[best], float(penalty[best]), grid, penalty)
