"""Warm-up (ChampSim's): the first accesses only warm the caches and the prefetcher;
every statistic, the IPC proxy and the metrics cover the rest. A hand-derived golden,
the runner against the Python reference event for event (feedback, MSHR stalls, a
prefetcher), sweeps with per-trace warm-ups equal to single runs, one compile, errors."""

import numpy as np
import pytest

from jaxsys.sims.cache import hierarchy as h
from jaxsys.sims.cache import metrics
from jaxsys.sims.cache import protocol
from jaxsys.sims.cache import reference as ref
from jaxsys.sims.cache import runner
from jaxsys.sims.cache import sweep

from .cache_fixtures import ROOMY, SMALL_CASCADE, assert_sweep_cell_is_a_single_run, random_trace

FAR = 1000
NL1 = protocol.next_line(1)


def spaced(blocks):
  blocks = np.asarray(blocks, np.int32)
  return runner.make_trace(blocks, instr=(np.arange(len(blocks)) * FAR).astype(np.int32))


def counters(state):
  return {k: int(v) for k, v in h.counters(state.cache).items()}


def test_golden_counters_cover_the_measured_part_only():
  # Blocks 0 1 0 1 2, far apart, warm-up 2: the warm-up misses 0 and 1 (DRAM);
  # measured: 0 hit, 1 hit, 2 miss -> 3 L1D accesses, 2 hits, 1 miss, 1 DRAM read;
  # instructions 2000..4000 -> 2001.
  trace = spaced([0, 1, 0, 1, 2])
  state, codes = runner.run(trace, ROOMY, h.make_params(), warmup=2)
  full, full_codes = runner.run(trace, ROOMY, h.make_params())
  assert np.asarray(codes).tolist() == np.asarray(full_codes).tolist() == [3, 3, 0, 0, 3]
  c = counters(state)
  assert (c["l1d_access"], c["l1d_hit"], c["l1d_miss"], c["dram_read_demand"]) == (3, 2, 1, 1)
  assert (c["first_instr"], c["last_instr"], c["loads"]) == (2 * FAR, 4 * FAR, 3)
  assert int(metrics.instructions(state)) == 2 * FAR + 1
  assert counters(full)["l1d_miss"] == 3
  # The tables went on: the final L1D holds the same lines either way.
  np.testing.assert_array_equal(np.asarray(state.cache.l1d), np.asarray(full.cache.l1d))


def test_counters_are_the_full_run_minus_the_warm_up_run():
  # Without a proxy the clock does not depend on the statistics, so every additive
  # counter of a warmed run is (whole trace) - (the warm-up alone). (pf_resident is
  # read from the final tables, not counted: the same with or without warm-up.)
  trace = random_trace(3)
  params = h.make_params(prefetcher=NL1.make_params())
  w = 100
  warm, _ = runner.run(trace, SMALL_CASCADE, params, NL1, warmup=w)
  full, _ = runner.run(trace, SMALL_CASCADE, params, NL1)
  head = runner.TraceArrays(*(np.asarray(x)[:w] for x in runner.as_trace(trace)))
  part, _ = runner.run(head, SMALL_CASCADE, params, NL1)
  got, whole, first = counters(warm), counters(full), counters(part)
  for k in got:
    if k in ("first_instr", "last_instr") or k.endswith("pf_resident"):
      continue
    assert got[k] == whole[k] - first[k], k
  assert got["l1d_pf_resident"] == whole["l1d_pf_resident"]
  assert got["last_instr"] == whole["last_instr"]
  assert got["first_instr"] == int(np.asarray(trace.instr)[w])


CASES = [  # (config, cpi0, rob, feedback, mshr_stall, warmup)
    (SMALL_CASCADE, 1, 40, True, False, 60),
    (SMALL_CASCADE, 0.5, 17, True, True, 120),
    (ROOMY, 1, 64, False, True, 1),
]


@pytest.mark.parametrize("case", range(len(CASES)))
def test_matches_reference_with_the_proxy(case):
  config, cpi0, rob, feedback, mshr_stall, w = CASES[case]
  trace = random_trace(case)
  params = h.make_params(cpi0=cpi0, prefetcher=NL1.make_params())
  proxy = runner.make_proxy_params(rob=rob, feedback=feedback, mshr_stall=mshr_stall)
  state, codes = runner.run(trace, config, params, NL1, proxy=proxy, warmup=w)
  model, rcodes = ref.run_reference(trace, config, cpi0=cpi0, rob=rob, feedback=feedback,
                                    mshr_stall=mshr_stall, warmup=w,
                                    prefetcher=ref.NextLine(1, 0, False))
  assert np.asarray(codes).tolist() == rcodes
  assert counters(state) == model.counters()
  assert int(metrics.proxy_stall(state)) == model.proxy_stall()
  assert int(metrics.mshr_wait(state)) == model.mshr_wait
  assert int(state.proxy.offset) == model.clock_offset
  # The warm-up's stall stayed on the clock (a 1-access warm-up has none to carry).
  assert (model.clock_offset > 0) == (w > 1)
  # and the warm-up changed the measurement: a run without it counts more.
  plain, _ = runner.run(trace, config, params, NL1, proxy=proxy)
  assert counters(plain)["loads"] > counters(state)["loads"]


def test_sweep_with_per_trace_warmups_equals_single_runs_and_compiles_once():
  traces = [random_trace(5, n=200), random_trace(6, n=150)]
  dicts = [dict(degree=1, feedback=True), dict(degree=1, feedback=False)]
  config = SMALL_CASCADE
  res = sweep.sweep(traces, config, NL1, dicts, devices=1, warmup=[50, 30], length=200)
  for c, d in enumerate(dicts):
    for t, (trace, w) in enumerate(zip(traces, (50, 30))):
      proxy = runner.make_proxy_params(feedback=d["feedback"])
      params = h.make_params(prefetcher=NL1.make_params(degree=1))
      assert_sweep_cell_is_a_single_run(res, c, t, trace, config, NL1, params, proxy, warmup=w)
  again = sweep.sweep(traces, config, NL1, dicts, devices=1, warmup=[10, 100], length=200)
  assert again.compilations == 0  # new warm-up lengths: the same program
  assert sweep.program_cache_size(config, NL1, devices=1, warmup=True) == 1
  assert not np.array_equal(again.state.cache.stats, res.state.cache.stats)


def test_errors():
  trace = spaced([0, 1, 2])
  for bad in (-1, 3, 10):
    with pytest.raises(ValueError, match=r"warmup: expected 0 <= warmup < 3"):
      runner.run(trace, ROOMY, h.make_params(), warmup=bad)
  for bad in (1.5, True, "2"):
    with pytest.raises(TypeError, match="warmup: expected an int"):
      runner.run(trace, ROOMY, h.make_params(), warmup=bad)
  with pytest.raises(ValueError, match=r"warmup\[1\]: expected 0 <= warmup < 2"):
    sweep.sweep([spaced([0, 1, 2]), spaced([0, 1])], ROOMY, NL1, [dict()], devices=1,
                warmup=[1, 2])
  with pytest.raises(ValueError, match="warmup: expected 2 ints"):
    sweep.sweep([spaced([0, 1, 2]), spaced([0, 1])], ROOMY, NL1, [dict()], devices=1,
                warmup=[1])
