"""Cache configurations and random traces shared by the cache simulator's tests."""

import jax
import numpy as np

from jaxsys.sims.cache import hierarchy as h
from jaxsys.sims.cache import metrics
from jaxsys.sims.cache import runner

# L1D 8 sets x 2 ways: nothing in the golden traces is evicted anywhere.
ROOMY = h.CacheConfig.make(l1d=dict(sets=8, ways=2))
# Every level small, for the randomized parity tests (evictions at every level).
SMALL_CASCADE = h.CacheConfig.make(
    writebacks="cascade", l1d=dict(sets=2, ways=2, mshr=4), l2=dict(sets=4, ways=2),
    llc=dict(sets=4, ways=4), pq_size=2)
SMALL_SRRIP = h.CacheConfig.make(
    l1d=dict(sets=4, ways=3, mshr=6, replacement="srrip"), l2=dict(sets=4, ways=4),
    llc=dict(sets=8, ways=4, replacement="srrip"), pq_size=3)
N_RANDOM = 240  # one trace length for the randomized tests (one compile per config)


def random_trace(seed, n=N_RANDOM, span=48, stores=0.3):
  """Random blocks in a small span mixed with short streams; bursts and pauses."""
  rng = np.random.default_rng(seed)
  block = rng.integers(0, span, n)
  stream = rng.random(n) < 0.4
  block[stream] = span + np.cumsum(stream)[stream] // 2
  gap = np.where(rng.random(n) < 0.7, rng.integers(0, 4, n), rng.integers(20, 500, n))
  return runner.make_trace(block.astype(np.int32),
                           pc_hash=rng.integers(0, 8, n).astype(np.int32),
                           is_store=(rng.random(n) < stores).astype(np.int8),
                           instr=np.cumsum(gap).astype(np.int32))


def assert_sweep_cell_is_a_single_run(result, c, t, trace, config, prefetcher, params, proxy,
                                      warmup=None):
  """Sweep cell (config c, trace t) equals a lone `runner.run` of the same settings:
  the whole final state, the baseline's counters and the speedup. Returns the lone
  run's ``(state, baseline)``."""
  state, _ = runner.run(trace, config, params, prefetcher, codes=False, proxy=proxy,
                        warmup=warmup)
  base, _ = runner.run(trace, config, h.make_params(), codes=False, proxy=proxy, warmup=warmup)
  jax.tree.map(np.testing.assert_array_equal,
               jax.tree.map(lambda v: np.asarray(v)[c, t], result.state), state)
  np.testing.assert_array_equal(np.asarray(result.baseline.cache.stats)[c, t],
                                np.asarray(base.cache.stats))
  assert result.metrics["speedup"][c, t] == metrics.speedup(state, base, params)
  return state, base
