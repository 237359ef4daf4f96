"""The prefetching metrics and the IPC proxy: hand-derived goldens (the arithmetic
in comments), the IPC proxy of the lax.scan runner against the pure-Python
reference on random traces, the accounting identity behind "resident lines are
counted apart", and errors."""

import doctest

import jax.numpy as jnp
import numpy as np
import pytest

from jaxsys.sims.cache import hierarchy as h
from jaxsys.sims.cache import metrics
from jaxsys.sims.cache import protocol
from jaxsys.sims.cache import reference as ref
from jaxsys.sims.cache import runner
from jaxsys.sims.cache import sweep
from tests.sims.cache_fixtures import ROOMY, SMALL_CASCADE, SMALL_SRRIP, random_trace

NL1 = protocol.next_line(1)
NL3 = protocol.next_line(3)
BIG_BELOW = dict(l2=dict(sets=64, ways=8), llc=dict(sets=64, ways=8))


def trace_of(blocks, instr, stores=None):
  return runner.make_trace(np.asarray(blocks, np.int32), instr=np.asarray(instr, np.int32),
                           is_store=None if stores is None else np.asarray(stores, np.int8))


def run_pair(trace, config, pf_kwargs=None, *, rob=352, stores=False, cpi0=1):
  """(prefetching state, baseline state, their params), both with the IPC proxy."""
  proxy = runner.make_proxy_params(rob=rob, stores=stores)
  params = h.make_params(cpi0=cpi0, prefetcher=NL1.make_params(**(pf_kwargs or {})))
  state, _ = runner.run(trace, config, params, NL1, proxy=proxy)
  base_params = h.make_params(cpi0=cpi0)
  base, _ = runner.run(trace, config, base_params, protocol.NONE, proxy=proxy)
  return state, base, params, base_params


# ----------------------------------------------------------------------------- goldens


# Next-line (degree 1, into L1D), cpi0 1, DRAM 5 + 10 + 20 + 160 = 195 cycles:
#   instr 0     10 misses everywhere (latency 195, excess over L1D 190); prefetches
#               11 from DRAM, ready at 195.
#   instr 100   11 hits its prefetched line still in flight: late, latency
#               195 - 100 = 95 (excess 90); prefetches 12 (ready 100 + 195 = 295).
#   instr 1000  12 hits on time (5, excess 0); prefetches 13, never used.
# Without prefetching all three miss (195 each, excess 190).
GOLDEN = trace_of([10, 11, 12], [0, 100, 1000])
GOLDEN_INSTR = 1000 - 0 + 1


def test_golden_cache_metrics():
  state, base, params, _ = run_pair(GOLDEN, ROOMY)
  # L1D load misses: 1 (10) vs 3 -> 1 - 1/3; the LLC sees the same single miss.
  assert metrics.coverage(state, base, "l1d") == pytest.approx(2 / 3)
  assert metrics.coverage(state, base, "llc") == pytest.approx(2 / 3)
  # Useful 2 (11, 12), useless 0; 13 still flagged at the end: resident, apart.
  assert metrics.accuracy(state) == pytest.approx(1.0)
  assert int(metrics.pf_resident(state)) == 1
  # Late 1 (11) of useful 2.
  assert metrics.late_ratio(state) == pytest.approx(0.5)
  # DRAM reads: demand 1 + prefetch 3 (11, 12, 13) = 4 vs 3 demand reads.
  assert metrics.dram_traffic_ratio(state, base) == pytest.approx(4 / 3)
  # One demand miss per level in 1001 instructions; the baseline misses 3.
  for level in ("l1d", "l2", "llc"):
    assert metrics.mpki(state, level) == pytest.approx(1000 / GOLDEN_INSTR)
    assert metrics.mpki(base, level) == pytest.approx(3000 / GOLDEN_INSTR)
  # AMAT (195 + 95 + 5) / 3 vs 195.
  assert metrics.amat(state) == pytest.approx(295 / 3)
  assert metrics.amat(base) == pytest.approx(195.0)
  assert int(metrics.instructions(state)) == GOLDEN_INSTR
  # The same numbers as hierarchy.summarize (reused, not re-derived).
  s = h.summarize(state.cache, base.cache)
  assert metrics.coverage(state.cache, base.cache, "llc") == s["llc_coverage"]


def test_golden_ipc_proxy_windows():
  # rob 352: windows instr // 352 = 0, 0, 2.
  #   prefetching: window 0 max(190, 90) = 190, window 2: 0  -> stall 190
  #   baseline:    window 0 max(190, 190) = 190, window 2: 190 -> stall 380
  #   cycles = 1001 * 1 + stall: 1191 vs 1381.
  state, base, params, base_params = run_pair(GOLDEN, ROOMY, rob=352)
  assert int(metrics.proxy_stall(state)) == 190 and int(metrics.proxy_stall(base)) == 380
  assert metrics.cycles_proxy(state, params) == pytest.approx(1191.0)
  assert metrics.cycles_proxy(base, base_params) == pytest.approx(1381.0)
  assert metrics.ipc_proxy(state, params) == pytest.approx(1001 / 1191)
  assert metrics.speedup(state, base, params) == pytest.approx(1381 / 1191)
  # rob 64: windows 0, 1, 15: the late hit is alone in its window and pays its
  # remaining wait: 190 + 90 + 0 = 280; baseline 3 * 190 = 570.
  state, base, params, _ = run_pair(GOLDEN, ROOMY, rob=64)
  assert int(metrics.proxy_stall(state)) == 280 and int(metrics.proxy_stall(base)) == 570
  assert metrics.speedup(state, base, params) == pytest.approx((1001 + 570) / (1001 + 280))
  # rob 2000: one window: max(190, 90, 0) = 190 vs 190: no speedup.
  state, base, params, _ = run_pair(GOLDEN, ROOMY, rob=2000)
  assert metrics.speedup(state, base, params) == pytest.approx(1.0)
  # cpi0 2: cycles 0, 200, 2000. 11 is ready at 195 < 200: on time (excess 0).
  #   stall 190 (window 0) vs 190 + 190 (windows 0 and 2); cycles 2002 + stall.
  state, base, params, base_params = run_pair(GOLDEN, ROOMY, rob=352, cpi0=2)
  assert not runner.decode(runner.run(GOLDEN, ROOMY, params, NL1)[1])["late"].any()
  assert metrics.cycles_proxy(state, params) == pytest.approx(2 * 1001 + 190)
  assert metrics.cycles_proxy(base, base_params) == pytest.approx(2 * 1001 + 380)


def test_coverage_is_clamped_at_zero_and_pollution_shows():
  # L1D 1 set x 1 way, block 0 at instr 0 and 1000, next-line into L1D:
  #   0 misses (DRAM, excess 190); the prefetch of 1 evicts it (1 way).
  #   0 misses L1D again, hits L2 (15 cycles, excess 10); evicts the unused 1
  #   (useless); the prefetch of 1 (from L2 now) evicts 0: 1 resident at the end.
  # Baseline: 0 misses, then hits. L1D load misses 2 vs 1: 1 - 2 = -1 -> 0.
  # LLC: one miss either way: 0, not clamped. DRAM reads 2 (0 and 1) vs 1.
  config = h.CacheConfig.make(l1d=dict(sets=1, ways=1), **BIG_BELOW)
  trace = trace_of([0, 0], [0, 1000])
  state, base, params, _ = run_pair(trace, config)
  raw = 1 - int(h.counters(state.cache)["l1d_load_miss"]) / int(
      h.counters(base.cache)["l1d_load_miss"])
  assert raw == -1.0
  assert metrics.coverage(state, base, "l1d") == 0.0
  assert metrics.coverage(state, base, "llc") == 0.0
  assert metrics.accuracy(state) == 0.0 and int(metrics.pf_resident(state)) == 1
  assert np.isnan(metrics.late_ratio(state))  # no useful L1D prefetch: 0 / 0
  assert metrics.dram_traffic_ratio(state, base) == pytest.approx(2.0)
  assert metrics.amat(state) == pytest.approx((195 + 15) / 2)
  # Windows 0 and 2: stall 190 + 10 vs 190 + 0: a slowdown.
  assert metrics.speedup(state, base, params) == pytest.approx((1001 + 190) / (1001 + 200))


def test_accuracy_counts_useless_and_resident_apart():
  # L1D 1 set x 2 ways (LRU), next-line into L1D, accesses far apart:
  #   0 (DRAM)   set {0, 1pf}
  #   1 hits 1pf: useful. Prefetch 2 evicts 0 (least recent): {2pf, 1}
  #   5 (DRAM) evicts 1 (2 was filled after 1's hit): {2pf, 5};
  #     prefetch 6 evicts 2pf unused: useless.      {6pf, 5}: 6 resident.
  # accuracy = 1 / (1 + 1); the resident 6 is in neither term.
  config = h.CacheConfig.make(l1d=dict(sets=1, ways=2), **BIG_BELOW)
  state, _, _, _ = run_pair(trace_of([0, 1, 5], [0, 1000, 2000]), config)
  c = h.counters(state.cache)
  assert (int(c["l1d_pf_useful"]), int(c["l1d_pf_useless"]), int(c["l1d_pf_resident"])) == (
      1, 1, 1)
  assert metrics.accuracy(state) == pytest.approx(0.5)
  assert metrics.late_ratio(state) == 0.0
  # Into L2 instead: the demand for 11 hits the L2-prefetched line (useful at
  # L2, "L2 useful-from-L1"), 12 stays resident at L2: accuracy 1 / (1 + 0).
  state, _, _, _ = run_pair(trace_of([10, 11], [0, 1000]), ROOMY, dict(fill_level="l2"))
  c = h.counters(state.cache)
  assert (int(c["l2_pf_useful"]), int(c["l2_pf_resident"]), int(c["l1d_pf_useful"])) == (1, 1, 0)
  assert metrics.accuracy(state) == 1.0


def test_stores_stall_the_proxy_only_when_asked():
  # A store miss at instr 0 (window 0) and a load miss at 400 (window 1), no
  # prefetching: excess 190 each. Loads only: 190; with stores: 380.
  trace = trace_of([10, 20], [0, 400], stores=[1, 0])
  for stores, want in ((False, 190), (True, 380)):
    state, _ = runner.run(trace, ROOMY, h.make_params(),
                          proxy=runner.make_proxy_params(rob=352, stores=stores))
    assert int(metrics.proxy_stall(state)) == want
    model, _ = ref.run_reference(trace, ROOMY, rob=352, proxy_stores=stores)
    assert model.proxy_stall() == want


def test_proxy_stall_sum_carries_past_24_bits():
  # Ten windows whose maxima are 2**23 each: 10 * 2**23 > 2**24 (the low word).
  proxy = runner.init_proxy()
  for w in range(10):
    proxy = runner.proxy_update(proxy, jnp.int32(w), jnp.int32(2**23), jnp.bool_(True))
    proxy = runner.proxy_update(proxy, jnp.int32(w), jnp.int32(5), jnp.bool_(True))
    proxy = runner.proxy_update(proxy, jnp.int32(w + 1), jnp.int32(7), jnp.bool_(False))
  assert int(runner.proxy_stall(proxy)) == 10 * 2**23
  assert int(proxy.stall_hi) > 0


def test_geomean():
  assert metrics.geomean([1.0, 4.0]) == pytest.approx(2.0)
  assert metrics.geomean(np.array([[2.0, 8.0], [4.0, 4.0]])) == pytest.approx(4.0)
  assert np.isnan(metrics.geomean([1.0, np.nan]))
  with pytest.raises(ValueError, match=r"values: expected at least one value"):
    metrics.geomean([])
  with pytest.raises(ValueError, match=r"values: expected positive values.*at index 1"):
    metrics.geomean([1.0, 0.0])


def test_metrics_table_rows():
  state, base, params, _ = run_pair(GOLDEN, ROOMY)
  (row,) = metrics.metrics_table(state, base, params, labels=[{"trace": "golden"}])
  assert list(row)[:3] == ["trace", "speedup", "ipc_proxy"]
  assert row["speedup"] == pytest.approx(1381 / 1191)
  assert row["pf_resident"] == 1 and isinstance(row["pf_resident"], int)
  assert isinstance(row["llc_coverage"], float)
  # Without a baseline or params: no coverage / proxy columns; NaN -> None.
  (row,) = metrics.metrics_table(base)
  assert "llc_coverage" not in row and "ipc_proxy" not in row
  assert row["accuracy"] is None and row["late_ratio"] is None
  with pytest.raises(ValueError, match=r"labels: expected 1 label dicts"):
    metrics.metrics_table(state, labels=[{}, {}])
  with pytest.raises(ValueError, match=r"keys: unknown metric"):
    metrics.metrics_table(state, keys=("nonsense",))


# ----------------------------------------------------------------------------- parity


PROXY_CASES = [
    # (config, prefetcher, params kwargs, [(rob, stores, cpi0, dram latency), ...])
    (SMALL_CASCADE, NL3, dict(degree=3, fill_level="l2"),
     [(352, False, 1, 160), (17, True, 0.5, 60), (1, False, 3, 160)]),
    (SMALL_SRRIP, NL1, dict(),
     [(352, True, 1, 100), (40, False, 1.25, 160), (100000, False, 1, 30)]),
]


@pytest.mark.parametrize("case", range(len(PROXY_CASES)))
@pytest.mark.parametrize("seed", [0, 1])
def test_ipc_proxy_matches_reference_on_random_traces(case, seed):
  config, pf, kw, settings = PROXY_CASES[case]
  trace = random_trace(seed)
  for rob, stores, cpi0, dram in settings:
    params = h.make_params(cpi0=cpi0, dram_latency=dram, prefetcher=pf.make_params(**kw))
    state, codes = runner.run(trace, config, params, pf,
                              proxy=runner.make_proxy_params(rob=rob, stores=stores))
    model, rcodes = ref.run_reference(
        trace, config, cpi0=cpi0, dram_latency=dram, rob=rob, proxy_stores=stores,
        prefetcher=ref.NextLine(int(kw.get("degree", 1)),
                                h.level_index(kw.get("fill_level", "l1d")), False))
    assert np.asarray(codes).tolist() == rcodes
    assert int(metrics.proxy_stall(state)) == model.proxy_stall(), (rob, stores)
    assert int(state.proxy.window) == max(model.proxy_windows)
    assert int(state.proxy.window_max) == max(model.proxy_windows[max(model.proxy_windows)])
    # The proxy rides along: the cache is the same as without it.
    plain, _ = runner.run(trace, config, params, pf)
    np.testing.assert_array_equal(np.asarray(plain.cache.stats), np.asarray(state.cache.stats))
    if rob == 1:  # every instruction its own window: the stall is close to the sum
      assert model.proxy_stall() >= max(map(max, model.proxy_windows.values()))


@pytest.mark.parametrize("seed", [2, 3])
def test_prefetch_fills_are_useful_useless_or_resident(seed):
  # Per level: every PF fill ends used, evicted unused, or still resident.
  trace = random_trace(seed)
  for fill in ("l1d", "l2", "llc"):
    params = h.make_params(prefetcher=NL3.make_params(degree=3, fill_level=fill))
    state, _ = runner.run(trace, SMALL_CASCADE, params, NL3)
    c = h.counters(state.cache)
    for level in h.LEVELS:
      assert int(c[f"{level}_pf_fill"]) == (int(c[f"{level}_pf_useful"])
                                             + int(c[f"{level}_pf_useless"])
                                             + int(c[f"{level}_pf_resident"])), (fill, level)
    assert int(c[f"{fill}_pf_useless"]) > 0 and int(c[f"{fill}_pf_useful"]) > 0


# ----------------------------------------------------------------------------- errors


def test_proxy_errors():
  with pytest.raises(ValueError, match=r"rob: expected an int >= 1.*given 0"):
    runner.make_proxy_params(rob=0)
  with pytest.raises(TypeError, match=r"rob: expected an int.*given 1.5"):
    runner.make_proxy_params(rob=1.5)
  with pytest.raises(ValueError, match=r"rob: expected an int >= 1.*given -3"):
    runner.run(GOLDEN, ROOMY, h.make_params(), proxy=-3)
  with pytest.raises(ValueError, match=r"proxy.rob: expected >= 1.*given 0"):
    runner.run(GOLDEN, ROOMY, h.make_params(),
               proxy=runner.ProxyParams(np.int32(0), np.bool_(False)))
  with pytest.raises(TypeError, match=r"proxy: expected None, an int ROB size"):
    runner.run(GOLDEN, ROOMY, h.make_params(), proxy="352")
  plain, _ = runner.run(GOLDEN, ROOMY, h.make_params())
  assert plain.proxy is None
  with pytest.raises(ValueError, match=r"state: expected a run with the IPC proxy"):
    metrics.cycles_proxy(plain, h.make_params())
  with pytest.raises(TypeError, match=r"state: expected a runner.SimState \(the IPC proxy"):
    metrics.proxy_stall(plain.cache)
  with pytest.raises(TypeError, match=r"params: expected hierarchy.Params"):
    metrics.cycles_proxy(run_pair(GOLDEN, ROOMY)[0], None)
  with pytest.raises(TypeError, match=r"state: expected a runner.SimState or"):
    metrics.accuracy({"l1d": 1})
  with pytest.raises(ValueError, match=r"level: expected one of 'l1d', 'l2', 'llc'"):
    metrics.mpki(plain, "l3")
  with pytest.raises(ValueError, match=r"no IPC proxy"):
    ref.run_reference(GOLDEN, ROOMY)[0].proxy_stall()


@pytest.mark.parametrize("module", [metrics, runner, sweep], ids=lambda m: m.__name__)
def test_docstring_examples(module):
  result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
  assert result.failed == 0 and result.attempted > 0
