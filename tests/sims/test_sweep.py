"""Sweeps: one compiled program for (configurations x traces), equal value for
value to a loop of single runs, sharded over the 4 emulated CPU devices equal to
unsharded, the in-program baseline equal to the ``none`` prefetcher, errors."""

import jax
import numpy as np
import pytest

from jaxsys._src import testing
from jaxsys.sims.cache import hierarchy as h
from jaxsys.sims.cache import metrics
from jaxsys.sims.cache import protocol
from jaxsys.sims.cache import runner
from jaxsys.sims.cache import sweep
from jaxsys.sims.traces import format as trace_format

NL3 = protocol.next_line(3)
SMALL = h.CacheConfig.make(
    l1d=dict(sets=4, ways=2, mshr=6), l2=dict(sets=8, ways=2), llc=dict(sets=16, ways=4),
    pq_size=3)
LENGTH = 160  # one padded length for most tests (one compile per program)


def random_trace(seed, n, span=64):
  rng = np.random.default_rng(seed)
  block = rng.integers(0, span, n)
  stream = rng.random(n) < 0.5
  block[stream] = span + np.cumsum(stream)[stream] // 2
  gap = np.where(rng.random(n) < 0.7, rng.integers(0, 4, n), rng.integers(20, 400, n))
  return runner.make_trace(block.astype(np.int32), pc_hash=rng.integers(0, 8, n).astype(np.int32),
                           is_store=(rng.random(n) < 0.25).astype(np.int8),
                           instr=np.cumsum(gap).astype(np.int32))


TRACES = [random_trace(0, LENGTH), random_trace(1, 120), random_trace(2, 97)]
CONFIGS = [
    dict(degree=1, fill_level="l1d", dram_latency=160, rob=352),
    dict(degree=3, fill_level="l2", dram_latency=160, rob=352),
    dict(degree=2, fill_level="l1d", dram_latency=60, rob=32),
]


def single(trace, d, prefetcher=NL3):
  """One `runner.run` of a configuration dict (and its params)."""
  params = h.make_params(dram_latency=d["dram_latency"],
                         prefetcher=prefetcher.make_params(degree=d["degree"],
                                                           fill_level=d["fill_level"])
                         if prefetcher.num_candidates else ())
  state, _ = runner.run(trace, SMALL, params, prefetcher, codes=False, proxy=d["rob"])
  return state, params


def at(tree, *index):
  return jax.tree.map(lambda x: np.asarray(x)[index], tree)


def assert_trees_equal(a, b):
  assert jax.tree.structure(a) == jax.tree.structure(b)
  jax.tree.map(np.testing.assert_array_equal, a, b)


def test_sweep_equals_a_loop_of_single_runs():
  result = sweep.sweep(TRACES, SMALL, NL3, CONFIGS, devices=1)
  C, T = len(CONFIGS), len(TRACES)
  # Configs 0, 1 share a baseline (DRAM 160, rob 352); config 2 has its own.
  assert result.batch == (C + 2) * T and result.devices == 1
  assert result.metrics["speedup"].shape == (C, T)
  for c, d in enumerate(CONFIGS):
    base_d = dict(d)
    for t, trace in enumerate(TRACES):
      state, params = single(trace, d)
      base, base_params = single(trace, base_d, protocol.NONE)
      assert_trees_equal(at(result.state, c, t), state)
      # The in-program baseline (prefetcher switched off) is the none prefetcher's run.
      assert_trees_equal(at(result.baseline.cache, c, t), base.cache)
      assert_trees_equal(at(result.baseline.proxy, c, t), base.proxy)
      want = metrics.metrics(state, base, params, base_params)
      assert sorted(want) == sorted(result.metrics)
      for name, value in want.items():
        np.testing.assert_array_equal(result.metrics[name][c, t], value, err_msg=name)
      row = result.rows[c * T + t]
      assert (row["config"], row["degree"], row["trace"]) == (c, d["degree"], f"trace{t}")
      assert row["speedup"] == pytest.approx(float(want["speedup"]))
  # The traces exercise the prefetcher: useful and useless prefetches, misses.
  assert (result.metrics["pf_useful"] > 0).all() and (result.metrics["llc_miss"] > 0).all()


def test_sweep_compiles_once_for_many_param_values():
  traces = [random_trace(s, 133) for s in (5, 6)]
  configs = [dict(degree=d, fill_level=f, cpi0=cpi) for d, f, cpi in
             ((1, "l1d", 1), (2, "l2", 0.5), (3, "llc", 2), (3, "l1d", 1))]
  with testing.count_lowerings() as lowerings:
    first = sweep.sweep(traces, SMALL, NL3, configs, devices=1)
  assert first.compilations == 1 and len(lowerings) == 1
  assert sweep.program_cache_size(SMALL, NL3, devices=1) >= 1
  size = sweep.program_cache_size(SMALL, NL3, devices=1)
  # New values, new traces of the same padded length: no new program.
  others = [random_trace(s, 133) for s in (7, 8)]
  configs2 = [dict(degree=d, fill_level=f, cpi0=cpi) for d, f, cpi in
              ((2, "l1d", 3), (1, "llc", 1), (3, "l2", 0.25), (1, "l1d", 3))]
  with testing.count_lowerings() as lowerings:
    second = sweep.sweep(others, SMALL, NL3, configs2, devices=1)
  assert second.compilations == 0 and not lowerings
  assert sweep.program_cache_size(SMALL, NL3, devices=1) == size
  assert not np.array_equal(first.metrics["amat"], second.metrics["amat"])


def test_sharded_sweep_equals_unsharded():
  assert len(jax.devices()) == 4  # tests/conftest.py
  configs = CONFIGS[:2]  # (2 configs + 1 baseline) x 3 traces = 9 runs -> padded to 12
  plain = sweep.sweep(TRACES, SMALL, NL3, configs, devices=1)
  sharded = sweep.sweep(TRACES, SMALL, NL3, configs)
  assert (plain.batch, sharded.batch, sharded.devices) == (9, 12, 4)
  assert_trees_equal(sharded.state, plain.state)
  assert_trees_equal(sharded.baseline, plain.baseline)
  for name, value in plain.metrics.items():
    np.testing.assert_array_equal(sharded.metrics[name], value, err_msg=name)
  assert sharded.rows == plain.rows
  # A lax.map over the runs (batch_size=1, the fast path on CPU): the same values.
  mapped = sweep.sweep(TRACES, SMALL, NL3, configs, batch_size=1)
  assert_trees_equal(mapped.state, plain.state)
  assert_trees_equal(mapped.baseline, plain.baseline)


def test_padding_and_trace_kinds():
  # A format.Trace (named), runner.TraceArrays with padding inside: same runs
  # as the unpadded arrays.
  t = TRACES[1]
  named = trace_format.make_trace(np.asarray(t.block, np.uint64) << np.uint64(6),
                                  np.asarray(t.pc_hash, np.uint64), np.asarray(t.is_store, bool),
                                  np.asarray(t.instr, np.int64), name="named")
  valid = np.ones(LENGTH, bool)
  valid[::3] = False
  block = np.full(LENGTH, 5, np.int32)
  block[valid] = np.resize(np.asarray(TRACES[2].block), valid.sum())
  holey = runner.TraceArrays(block, np.zeros(LENGTH, np.int32), np.zeros(LENGTH, np.int8),
                             np.arange(LENGTH, dtype=np.int32) * 7, valid)
  result = sweep.sweep([named, holey], SMALL, NL3, CONFIGS[:1], devices=1, baseline=False,
                       length=LENGTH)
  assert result.baseline is None and "speedup" not in result.metrics
  assert [r["trace"] for r in result.rows] == ["named", "trace1"]
  state, _ = single(t, CONFIGS[0])
  # Blocks below 2**14 lie in the first 1 MiB chunk: remapping keeps them.
  assert_trees_equal(at(result.state, 0, 0), state)
  state, _ = single(holey, CONFIGS[0])
  assert_trees_equal(at(result.state, 0, 1), state)


def test_sweep_errors():
  with pytest.raises(ValueError, match=r"traces: expected at least one trace, given an empty"):
    sweep.sweep([], SMALL, NL3, CONFIGS)
  with pytest.raises(ValueError, match=r"param_dicts: expected at least one configuration"):
    sweep.sweep(TRACES, SMALL, NL3, [])
  with pytest.raises(ValueError, match=r"param_dicts\[1\]: expected the keys of param_dicts\[0\]"
                     r" \['degree'\].*extra \['fill_level'\]"):
    sweep.sweep(TRACES, SMALL, NL3, [dict(degree=1), dict(degree=2, fill_level="l2")])
  with pytest.raises(ValueError, match=r"param_dicts\[1\]: rob: expected an int >= 1.*given 0"):
    sweep.sweep(TRACES, SMALL, NL3, [dict(rob=352), dict(rob=0)])
  with pytest.raises(ValueError, match=r"param_dicts\[0\]: rob: expected an int >= 1"):
    sweep.sweep(TRACES, SMALL, NL3, [dict(degree=1)], rob=-1)
  with pytest.raises(ValueError, match=r"param_dicts\[0\]: degree: expected 1..3.*given 4"):
    sweep.sweep(TRACES, SMALL, NL3, [dict(degree=4)])
  with pytest.raises(TypeError, match=r"param_dicts\[0\]: .*unexpected keyword.*'depth'"):
    sweep.sweep(TRACES, SMALL, NL3, [dict(depth=4)])
  with pytest.raises(TypeError, match=r"param_dicts: expected a list of dicts"):
    sweep.sweep(TRACES, SMALL, NL3, dict(degree=1))
  with pytest.raises(ValueError, match=r"devices: expected 1..4.*given 9"):
    sweep.sweep(TRACES, SMALL, NL3, CONFIGS, devices=9)
  with pytest.raises(ValueError, match=r"names: expected 3 labels"):
    sweep.sweep(TRACES, SMALL, NL3, CONFIGS, names=["a"])
  with pytest.raises(ValueError, match=r"traces\[0\]: expected at least one valid access"):
    sweep.sweep([TRACES[0]._replace(valid=np.zeros(LENGTH, bool))], SMALL, NL3, CONFIGS)
  with pytest.raises(ValueError, match=r"length: expected >= every trace's length"):
    sweep.sweep(TRACES, SMALL, NL3, CONFIGS, length=10)
  with pytest.raises(ValueError, match=r"batch_size: expected None or an int >= 1, given 0"):
    sweep.sweep(TRACES, SMALL, NL3, CONFIGS, batch_size=0)
  with pytest.raises(TypeError, match=r"prefetcher: expected a protocol.Prefetcher"):
    sweep.sweep(TRACES, SMALL, "next_line", CONFIGS)
  # Params whose shapes depend on a value cannot be stacked into one program.
  sized = protocol.Prefetcher(
      name="sized", num_candidates=0,
      make_params=lambda n=1: np.zeros((n,), np.int32), init=lambda p: (),
      train=lambda s, a, hit, now, p: s,
      issue=lambda s, cache, a, now, budget, p: (s, protocol.no_candidates(0)))
  with pytest.raises(ValueError, match=r"param_dicts\[1\]: sized.make_params gave params"):
    sweep.sweep(TRACES, SMALL, sized, [dict(n=1), dict(n=2)])
