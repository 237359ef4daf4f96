"""Stall feedback (the IPC proxy's closed-window stall delays the simulated clock)
and MSHR stalls (a demand waits for a free L1D MSHR; the waits delay the clock).

Hand-derived goldens (the arithmetic in comments), the lax.scan runner against
the pure-Python reference event for event with feedback on (next-line on random
traces; Gaze on aos_walk at cpi0 = 1), the metrics' formulas under feedback,
sweeps that vary feedback in one program, and the int32 time checks."""

import jax
import numpy as np
import pytest

from jaxsys._src import testing
from jaxsys.sims import prefetch
from jaxsys.sims.cache import hierarchy as h
from jaxsys.sims.cache import metrics
from jaxsys.sims.cache import protocol
from jaxsys.sims.cache import reference as ref
from jaxsys.sims.cache import runner
from jaxsys.sims.cache import sweep
from jaxsys.sims.prefetch.gaze_reference import GazeReference
from jaxsys.sims.traces import format as trace_format
from jaxsys.sims.traces import synthetic
from tests.sims.cache_fixtures import (ROOMY, SMALL_CASCADE, SMALL_SRRIP, random_trace,
                                      assert_sweep_cell_is_a_single_run)

NL1 = protocol.next_line(1)
NL3 = protocol.next_line(3)
BIG_BELOW = dict(l2=dict(sets=64, ways=8), llc=dict(sets=64, ways=8))
# 4 L1D MSHRs, a 4-entry PQ; nothing below the L1D is ever evicted.
FOUR_MSHR = h.CacheConfig.make(l1d=dict(sets=2, ways=2, mshr=4), pq_size=4, **BIG_BELOW)
SWEEP_SMALL = h.CacheConfig.make(
    l1d=dict(sets=4, ways=2, mshr=6), l2=dict(sets=8, ways=2), llc=dict(sets=16, ways=4),
    pq_size=3)


def proxy(rob=352, stores=False, feedback=True):
  return runner.make_proxy_params(rob=rob, stores=stores, feedback=feedback)


def final_now(model, trace, cpi0, rob, feedback):
  """The reference's clock at the last valid access (with the closed windows' stall)."""
  valid = np.asarray(trace.valid)
  instr = int(np.asarray(trace.instr)[valid][-1])
  now = ref.cycle(instr, cpi0)
  if feedback:
    now += sum(max(v) for w, v in model.proxy_windows.items() if w < instr // rob)
  return now


def assert_same(state, codes, model, rcodes, config, now):
  """Event for event: step codes, every counter, the IPC proxy, the final tables
  and the queues at the last access's cycle `now`."""
  codes = np.asarray(codes).tolist()
  if codes != rcodes:
    i = next(i for i, (a, b) in enumerate(zip(codes, rcodes)) if a != b)
    raise AssertionError(f"step {i}: JAX code {codes[i]}, reference {rcodes[i]}")
  got = {k: int(v) for k, v in h.counters(state.cache).items()}
  want = model.counters()
  assert {k: (got[k], want[k]) for k in want if got[k] != want[k]} == {}
  assert int(metrics.proxy_stall(state)) == model.proxy_stall()
  assert int(metrics.mshr_wait(state)) == model.mshr_wait
  last = max(model.proxy_windows)
  assert int(state.proxy.window) == last
  assert int(state.proxy.window_max) == max(model.proxy_windows[last])
  for level, lc in enumerate(config.levels):
    table = np.asarray(state.cache.tables[level])
    for s in range(lc.sets):
      ways = model.sets[level][s]
      assert table[s, :, h.TAG].tolist() == [line.tag for line in ways], (level, s)
      ok = table[s, :, h.TAG] >= 0
      assert table[s, ok, h.READY].tolist() == [l.ready for l in ways if l.tag >= 0]
      assert table[s, ok, h.META].tolist() == [l.meta() for l in ways if l.tag >= 0]
  busy = model.busy(now)
  assert h.busy_slots(state.cache, now) == (sorted(model.mshr), sorted(model.pq))
  assert busy == tuple(int(x) for x in h.occupancy(state.cache, now))


# ----------------------------------------------------------------------------- golden


# FOUR_MSHR (M = 4 MSHRs, Q = 4 PQ entries), cpi0 1, rob 20, next-line degree 3
# into L2 (a prefetch sits in the PQ for the 5-cycle L1D lookup and takes no
# MSHR). Eight loads of new blocks 0, 8, ..., 56 (so no prefetch of b+1..b+3 is
# ever used), 10 instructions apart: every demand goes to DRAM, latency
# 5 + 10 + 20 + 160 = 195, excess over the L1D 190, and holds an MSHR for 195
# cycles. Windows instr // 20: {0, 10} {20, 30} {40, 50} {60, 70}; each
# window's maximum is 190, so the proxy's stall is 4 * 190 = 760 either way.
# The budget after access k is max(0, min(M - 1 - pq - mshr, Q - pq)) with pq 0
# (PQ entries leave 5 cycles after an access, accesses are >= 10 apart), so
# budget = 3 - mshr, and degree 3 >= every budget: accepted == budget.
#
# Without feedback, now = 0, 10, ..., 70: access k finds min(k + 1, 4) MSHRs
# busy (its own included; from access 4 on all 4 are reserved: mshr_full, it
# takes the earliest to free). Budgets 2, 1, 0, 0, 0, 0, 0, 0: 3 prefetches
# issued, 6 + 3 * 5 = 21 refused, mshr_full 4.
#
# With feedback, access k (window k // 2) runs at 10 k + 190 * (k // 2) =
# 0, 10, 210, 220, 420, 430, 630, 640: window w's demands are done by
# 210 w + 205 < 210 (w + 1), so each window starts with every MSHR free.
# Budgets 2, 1, 2, 1, ...: 12 prefetches issued, refused 8 * 3 - 12 = 12,
# mshr_full 0. The last access runs at 70 + 3 * 190 = 640 = floor(70 * 1) +
# stall - 190 (the open window's maximum).
SATURATE = runner.make_trace(np.arange(8, dtype=np.int32) * 8,
                             instr=np.arange(8, dtype=np.int32) * 10)
SATURATE_PF = dict(degree=3, fill_level="l2")


def test_feedback_drains_saturated_mshrs_golden():
  params = h.make_params(cpi0=1, prefetcher=NL3.make_params(**SATURATE_PF))
  want = {
      False: dict(accepted=[2, 1, 0, 0, 0, 0, 0, 0], issued=3, refused=21, mshr_full=4,
                  now=70, mshrs=[(40, 235), (50, 245), (60, 255), (70, 265)], pq=[]),
      True: dict(accepted=[2, 1] * 4, issued=12, refused=12, mshr_full=0,
                 now=640, mshrs=[(630, 825), (640, 835)], pq=[645]),
  }
  for feedback, w in want.items():
    state, codes = runner.run(SATURATE, FOUR_MSHR, params, NL3, proxy=proxy(20, feedback=feedback))
    d = runner.decode(codes)
    assert d["level"].tolist() == [3] * 8
    assert d["accepted"].tolist() == w["accepted"], feedback
    c = h.counters(state.cache)
    assert (int(c["pf_issued"]), int(c["pf_refused"]), int(c["mshr_full"])) == (
        w["issued"], w["refused"], w["mshr_full"]), feedback
    assert int(c["demand_latency"]) == 8 * 195
    assert int(metrics.proxy_stall(state)) == 760
    # The MSHRs still reserved at the last access start at its cycle (and its
    # window-mate's): the clock moved by the closed windows' 3 * 190.
    assert h.busy_slots(state.cache, w["now"]) == (w["mshrs"], w["pq"])
    # The reference, access for access.
    model, rcodes = ref.run_reference(SATURATE, FOUR_MSHR, cpi0=1, rob=20, feedback=feedback,
                                      prefetcher=ref.NextLine(3, 1))
    assert_same(state, codes, model, rcodes, FOUR_MSHR, w["now"])
  # Feedback off is the plain run: the same cache as without any proxy.
  plain, _ = runner.run(SATURATE, FOUR_MSHR, params, NL3)
  off, _ = runner.run(SATURATE, FOUR_MSHR, params, NL3, proxy=proxy(20, feedback=False))
  np.testing.assert_array_equal(np.asarray(plain.cache.stats), np.asarray(off.cache.stats))


def test_feedback_needs_the_proxy():
  # The switch lives in ProxyParams: no proxy, no feedback (the clock is instr * cpi0).
  plain, _ = runner.run(SATURATE, FOUR_MSHR, h.make_params(), protocol.NONE)
  assert plain.proxy is None
  with pytest.raises(ValueError, match=r"feedback: stall feedback needs the IPC proxy"):
    ref.run_reference(SATURATE, FOUR_MSHR, feedback=True)
  with pytest.raises(TypeError, match=r"feedback: expected a bool"):
    runner.make_proxy_params(feedback=1)
  with pytest.raises(TypeError, match=r"proxy.feedback: expected a bool, given dtype int32"):
    runner.run(SATURATE, FOUR_MSHR, h.make_params(),
               proxy=runner.ProxyParams(np.int32(20), np.bool_(False), np.int32(1)))
  # Old two-field ProxyParams still mean "no feedback".
  assert not runner.ProxyParams(np.int32(20), np.bool_(False)).feedback


# ----------------------------------------------------------------------------- parity


FEEDBACK_CASES = [
    # (config, prefetcher, params kwargs, [(rob, stores, cpi0, dram latency), ...])
    (SMALL_CASCADE, NL3, dict(degree=3, fill_level="l1d"),
     [(352, False, 1, 160), (17, True, 0.5, 60), (1, False, 3, 160)]),
    (SMALL_SRRIP, NL1, dict(),
     [(40, True, 1, 100), (64, False, 1.25, 160), (100000, False, 1, 30)]),
]


@pytest.mark.parametrize("case", range(len(FEEDBACK_CASES)))
@pytest.mark.parametrize("seed", [0, 1])
def test_feedback_matches_reference_on_random_traces(case, seed):
  config, pf, kw, settings = FEEDBACK_CASES[case]
  trace = random_trace(seed)
  degree, fill = int(kw.get("degree", 1)), h.level_index(kw.get("fill_level", "l1d"))
  for rob, stores, cpi0, dram in settings:
    params = h.make_params(cpi0=cpi0, dram_latency=dram, prefetcher=pf.make_params(**kw))
    state, codes = runner.run(trace, config, params, pf, proxy=proxy(rob, stores))
    model, rcodes = ref.run_reference(trace, config, cpi0=cpi0, dram_latency=dram, rob=rob,
                                      proxy_stores=stores, feedback=True,
                                      prefetcher=ref.NextLine(degree, fill, False))
    assert_same(state, codes, model, rcodes, config,
                final_now(model, trace, cpi0, rob, feedback=True))
    plain, _ = runner.run(trace, config, params, pf, proxy=proxy(rob, stores, feedback=False))
    if rob == 100000:  # one window: nothing ever closes, feedback changes nothing
      np.testing.assert_array_equal(np.asarray(plain.cache.stats),
                                    np.asarray(state.cache.stats))
    else:  # the clock moved: the runs differ
      assert not np.array_equal(np.asarray(plain.cache.stats), np.asarray(state.cache.stats))


AOS_WALK = trace_format.to_sim_arrays(synthetic.generate("aos_walk", 3000, 0))


def test_gaze_issues_with_feedback_at_cpi0_1():
  # aos_walk: a load every 1-3 instructions, nearly all L1D misses; at cpi0 = 1
  # the 16 MSHRs never drain (budget 0) unless the clock stalls.
  pf = prefetch.get("gaze")
  pparams = pf.make_params()
  params = h.make_params(cpi0=1, prefetcher=pparams)
  config = h.CacheConfig()
  issued = {}
  for feedback in (False, True):
    state, codes = runner.run(AOS_WALK, config, params, pf, proxy=proxy(feedback=feedback))
    g = GazeReference("artifact", pt_entries=int(pparams.pt_entries),
                      region_blocks=int(pparams.region_blocks), degree=int(pparams.degree),
                      lookahead=int(pparams.lookahead), ss_enabled=bool(pparams.ss_enabled),
                      max_candidates=pf.num_candidates)
    model, rcodes = ref.run_reference(AOS_WALK, config, cpi0=1, prefetcher=g, rob=352,
                                      feedback=feedback)
    assert_same(state, codes, model, rcodes, config,
                final_now(model, AOS_WALK, 1, 352, feedback))
    assert {k: int(v) for k, v in prefetch.gaze.stats(state.prefetcher).items()} == g.stats
    c = h.counters(state.cache)
    issued[feedback] = int(c["pf_issued"])
    assert int(c["pf_candidates"]) > 1000  # Gaze always has something to offer
  assert issued[False] == 0  # budget 0 at every access
  assert issued[True] > 0  # each new window starts with drained MSHRs


# ----------------------------------------------------------------------------- metrics


def test_metrics_formulas_hold_with_feedback():
  # GOLDEN of test_metrics: next-line into L1D, loads of 10, 11, 12 at instr
  # 0, 100, 1000, rob 64 (windows 0, 1, 15).
  #   without feedback: 10 misses (excess 190); 11 is a late hit (ready 195,
  #     now 100: excess 90); 12 on time: stall 190 + 90 = 280.
  #   with feedback: 11 runs at 100 + 190 = 290 > 195: on time (excess 0); 12
  #     at 1000 + 190 + 0 = 1190 (its prefetch, issued at 290, is ready at 485):
  #     0. Stall 190. Baseline (3 misses, 195 each whatever the clock): 570.
  #   cycles_proxy = 1001 * 1 + stall: 1191 vs 1001 + 570 = 1571.
  trace = runner.make_trace(np.array([10, 11, 12], np.int32),
                            instr=np.array([0, 100, 1000], np.int32))
  params = h.make_params(prefetcher=NL1.make_params())
  base_params = h.make_params()
  state, codes = runner.run(trace, ROOMY, params, NL1, proxy=proxy(64))
  base, _ = runner.run(trace, ROOMY, base_params, proxy=proxy(64))
  assert not runner.decode(codes)["late"].any()
  assert int(metrics.proxy_stall(state)) == 190 and int(metrics.proxy_stall(base)) == 570
  assert metrics.cycles_proxy(state, params) == pytest.approx(1191.0)
  assert metrics.speedup(state, base, params) == pytest.approx(1571 / 1191)
  off, _ = runner.run(trace, ROOMY, params, NL1, proxy=proxy(64, feedback=False))
  assert int(metrics.proxy_stall(off)) == 280
  # On random traces: cycles_proxy is still instructions * cpi0 + stall, and
  # the stall is the reference's sum over all windows (the open one included).
  for seed, cpi0 in ((4, 1), (5, 0.5)):
    trace = random_trace(seed)
    params = h.make_params(cpi0=cpi0, prefetcher=NL3.make_params(degree=2))
    state, _ = runner.run(trace, SMALL_CASCADE, params, NL3, proxy=proxy(40))
    model, _ = ref.run_reference(trace, SMALL_CASCADE, cpi0=cpi0, rob=40, feedback=True,
                                 prefetcher=ref.NextLine(2, 0))
    m = metrics.metrics(state, None, params)
    i = int(m["instructions"])
    assert int(m["proxy_stall"]) == model.proxy_stall()
    assert m["cycles_proxy"] == pytest.approx(i * cpi0 + model.proxy_stall())
    assert metrics.cycles_proxy(state, params) == m["cycles_proxy"]
    # The clock of the last access = floor(instr * cpi0) + stall - the open window's max.
    last = int(np.asarray(trace.instr)[-1])
    assert final_now(model, trace, cpi0, 40, True) == (
        ref.cycle(last, cpi0) + model.proxy_stall() - int(state.proxy.window_max))


# ----------------------------------------------------------------------------- sweeps


def test_sweep_varies_feedback_in_one_program():
  length = 151  # a padded length no other test uses: the first sweep lowers once
  traces = [random_trace(s, length) for s in (6, 7)] + [random_trace(8, 111)]
  configs = [dict(degree=2, feedback=False, rob=32), dict(degree=2, feedback=True, rob=32),
             dict(degree=3, feedback=True, rob=352)]
  with testing.count_lowerings() as lowerings:
    result = sweep.sweep(traces, SWEEP_SMALL, NL3, configs, devices=1)
  assert result.compilations == 1 and len(lowerings) == 1
  # A baseline per distinct (cpi0, dram, rob, stores, feedback): 3 here.
  assert result.batch == (3 + 3) * 3
  assert result.proxy.feedback.tolist() == [False, True, True]
  for c, d in enumerate(configs):
    x = proxy(d["rob"], feedback=d["feedback"])
    params = h.make_params(prefetcher=NL3.make_params(degree=d["degree"]))
    for t, trace in enumerate(traces):
      assert_sweep_cell_is_a_single_run(result, c, t, trace, SWEEP_SMALL, NL3, params, x)
  assert not np.array_equal(np.asarray(result.state.cache.stats)[0],
                            np.asarray(result.state.cache.stats)[1])
  # Other values (feedback flipped, other rob / cpi0), same shapes: no new program.
  configs2 = [dict(degree=1, feedback=True, rob=7), dict(degree=3, feedback=False, rob=100),
              dict(degree=2, feedback=True, rob=1)]
  with testing.count_lowerings() as lowerings:
    again = sweep.sweep(traces, SWEEP_SMALL, NL3, configs2, devices=1, cpi0=2)
  assert again.compilations == 0 and not lowerings
  # The keyword default applies to dicts that leave feedback out.
  on = sweep.sweep(traces[:1], SWEEP_SMALL, NL3, [dict(degree=2, rob=32)], devices=1,
                   feedback=True, baseline=False, length=length)
  np.testing.assert_array_equal(np.asarray(on.state.cache.stats)[0, 0],
                                np.asarray(result.state.cache.stats)[1, 0])
  with pytest.raises(TypeError, match=r"param_dicts\[0\]: feedback: expected a bool"):
    sweep.sweep(traces, SWEEP_SMALL, NL3, [dict(feedback="yes")], devices=1)


def test_run_batch_over_feedback_equals_single_runs():
  trace = random_trace(9)
  params = h.make_params(prefetcher=NL3.make_params(degree=3))
  xs = [proxy(24, feedback=False), proxy(24, feedback=True)]
  stacked = jax.tree.map(lambda *v: np.stack(v), *xs)
  states, codes = runner.run_batch(trace, SMALL_SRRIP, h.stack_params([params, params]), NL3,
                                   trace_axis=None, params_axis=0, proxy=stacked, proxy_axis=0)
  for b, x in enumerate(xs):
    state, code = runner.run(trace, SMALL_SRRIP, params, NL3, proxy=x)
    np.testing.assert_array_equal(np.asarray(codes)[b], np.asarray(code))
    np.testing.assert_array_equal(np.asarray(states.cache.stats)[b],
                                  np.asarray(state.cache.stats))
    assert int(np.asarray(states.proxy.stall_lo)[b]) == int(state.proxy.stall_lo)


# ----------------------------------------------------------------------------- int32 time


def test_feedback_time_must_fit_int32():
  # Ten windows of 352 instructions, then one access 1000 cycles below
  # MAX_CYCLE: fine without feedback, but the 10 closed windows could stall
  # 10 * (10 + 20 + 160) = 1900 > 1000 cycles with it.
  instr = np.concatenate([np.arange(10) * 352, [h.MAX_CYCLE - 1000]]).astype(np.int32)
  trace = runner.make_trace(np.arange(11, dtype=np.int32), instr=instr)
  params = h.make_params()
  runner.run(trace, ROOMY, params, proxy=proxy(feedback=False))
  bound = runner.feedback_time_bound(trace, params, proxy(), ROOMY)
  assert bound == h.MAX_CYCLE - 1000 + 10 * 190
  match = r"trace.instr: with stall feedback the clock could reach \d+ cycles"
  with pytest.raises(ValueError, match=match):
    runner.run(trace, ROOMY, params, proxy=proxy())
  with pytest.raises(ValueError, match=match):
    runner.run_batch(trace, ROOMY, h.stack_params([params, params]), trace_axis=None,
                     params_axis=0, proxy=proxy())
  with pytest.raises(ValueError, match=match):
    sweep.sweep([trace], ROOMY, NL1, [dict(feedback=False), dict(feedback=True)], devices=1)
  # Fewer windows (a bigger ROB): 1 closed window, 190 < 1000 cycles: fine.
  assert runner.feedback_time_bound(trace, params, proxy(rob=4096), ROOMY) == (
      h.MAX_CYCLE - 1000 + 190)
  runner.run(trace, ROOMY, params, proxy=proxy(rob=4096))
  # The check without feedback is unchanged: instr * cpi0 itself.
  with pytest.raises(ValueError, match=r"times cpi0 2.0 exceeds"):
    runner.run(trace, ROOMY, h.make_params(cpi0=2), proxy=proxy(feedback=False))


# ----------------------------------------------------------------------------- MSHR stall


def stall_proxy(rob=352, stores=False, feedback=False):
  return runner.make_proxy_params(rob=rob, stores=stores, feedback=feedback, mshr_stall=True)


# TWO_MSHR (M = 2 L1D MSHRs), cpi0 1, rob 40, the SATURATE trace: eight loads
# of new blocks 0, 8, ..., 56 at instr 0, 10, ..., 70, every one a DRAM miss
# (path 5 + 10 + 20 + 160 = 195). Windows instr // 40: {0..30} {40..70}.
# Next-line degree 3 into L2 is offered 3 candidates per load but never gets
# budget: at the cycle its step runs a load holds its own MSHR, so
# M - 1 - pq - mshr <= 0 (24 refused; prefetches never wait).
#
# mshr_stall, feedback off: issue cycle = 10 k + waits so far.
#   k0 at 0: MSHR (0, 195).            k1 at 10: (10, 205).
#   k2 at 20: both reserved; the first frees at 195: wait 175, goes on at 195,
#     done 195 + 195 = 390, latency 390 - 20 = 370; MSHR (195, 390). waits 175.
#   k3 at 30 + 175 = 205: (10, 205) is free at 205: (205, 400), latency 195.
#   k4 at 40 + 175 = 215: (195, 390), (205, 400) reserved: wait 390 - 215 =
#     175, done 585, latency 370; (390, 585). waits 350.
#   k5 at 50 + 350 = 400: (205, 400) free: (400, 595).
#   k6 at 60 + 350 = 410: wait 585 - 410 = 175, done 780, latency 370. waits 525.
#   k7 at 70 + 525 = 595: (400, 595) free: (595, 790); MSHRs at 595:
#     (585, 780), (595, 790).
#   Latencies 195 195 370 195 370 195 370 195 (demand_latency 2085), mshr_full
#   3, mshr_wait 525. Every excess measured after the wait is 195 - 5 = 190,
#   so the window stall is 2 * 190 = 380 (had the waits been in the windows'
#   excess, 2 * 365 on top of the 525 would count them twice).
#   cycles_proxy = 71 * 1 + 380 + 525 = 976.
#   Without mshr_stall: all latencies 195, mshr_full 6 (k2..k7 take over the
#   first MSHR to free), cycles_proxy = 71 + 380 = 451.
#
# mshr_stall and feedback (both add; window 0's maximum 190 is paid from k4 on):
#   k0..k3 as above (k2 waits 175).
#   k4 at 40 + 190 + 175 = 405: (195, 390), (205, 400) free: (405, 600).
#   k5 at 50 + 365 = 415: (415, 610).
#   k6 at 60 + 365 = 425: wait 600 - 425 = 175, done 795, latency 370. waits 350.
#   k7 at 70 + 190 + 350 = 610: (415, 610) free: (610, 805).
#   demand_latency 6 * 195 + 2 * 370 = 1910, mshr_full 2, mshr_wait 350,
#   window stall 380, cycles_proxy = 71 + 380 + 350 = 801.
TWO_MSHR = h.CacheConfig.make(l1d=dict(sets=2, ways=2, mshr=2), pq_size=4, **BIG_BELOW)


def test_mshr_stall_golden():
  params = h.make_params(cpi0=1, prefetcher=NL3.make_params(**SATURATE_PF))
  want = {
      False: dict(latency=[195, 195, 370, 195, 370, 195, 370, 195], mshr_full=3, wait=525,
                  now=595, mshrs=[(585, 780), (595, 790)], cycles=976),
      True: dict(latency=[195, 195, 370, 195, 195, 195, 370, 195], mshr_full=2, wait=350,
                 now=610, mshrs=[(600, 795), (610, 805)], cycles=801),
  }
  for feedback, w in want.items():
    x = stall_proxy(40, feedback=feedback)
    state, codes = runner.run(SATURATE, TWO_MSHR, params, NL3, proxy=x)
    d = runner.decode(codes)
    assert d["level"].tolist() == [3] * 8 and d["accepted"].tolist() == [0] * 8
    c = h.counters(state.cache)
    assert (int(c["pf_issued"]), int(c["pf_refused"])) == (0, 24)
    assert int(c["mshr_full"]) == w["mshr_full"], feedback
    assert int(c["demand_latency"]) == sum(w["latency"]), feedback
    assert int(metrics.mshr_wait(state)) == w["wait"], feedback
    assert int(metrics.proxy_stall(state)) == 380
    assert metrics.cycles_proxy(state, params) == pytest.approx(w["cycles"])
    assert h.busy_slots(state.cache, w["now"]) == (w["mshrs"], [])
    model, rcodes = ref.run_reference(SATURATE, TWO_MSHR, cpi0=1, rob=40, feedback=feedback,
                                      mshr_stall=True, prefetcher=ref.NextLine(3, 1))
    assert model.last_cycle == w["now"]
    assert model.proxy_windows == {0: [190] * 4, 1: [190] * 4}
    assert_same(state, codes, model, rcodes, TWO_MSHR, w["now"])
    # Latency by latency: the reference's demand path, one access at a time.
    lats, r = [], ref.Hierarchy(TWO_MSHR)
    now_off = 0
    for k, block in enumerate(np.asarray(SATURATE.block).tolist()):
      closed = 190 if feedback and k >= 4 else 0
      res = r.demand(block, False, 10 * k + closed + now_off, mshr_stall=True)
      now_off += res.wait
      lats.append(res.latency)
    assert lats == w["latency"] and now_off == w["wait"]
  # Off: the demand takes the first MSHR over at once, nothing waits.
  state, _ = runner.run(SATURATE, TWO_MSHR, params, NL3, proxy=proxy(40, feedback=False))
  c = h.counters(state.cache)
  assert (int(c["mshr_full"]), int(c["demand_latency"])) == (6, 8 * 195)
  assert int(metrics.mshr_wait(state)) == 0
  assert metrics.cycles_proxy(state, params) == pytest.approx(451)


def test_mshr_stall_needs_the_proxy_and_a_bool():
  with pytest.raises(ValueError, match=r"mshr_stall: MSHR stalls enter the IPC proxy"):
    ref.run_reference(SATURATE, TWO_MSHR, mshr_stall=True)
  with pytest.raises(TypeError, match=r"mshr_stall: expected a bool"):
    runner.make_proxy_params(mshr_stall=1)
  with pytest.raises(TypeError, match=r"proxy.mshr_stall: expected a bool, given dtype int32"):
    runner.run(SATURATE, TWO_MSHR, h.make_params(),
               proxy=runner.ProxyParams(np.int32(20), np.bool_(False), np.bool_(False),
                                        np.int32(1)))
  assert not runner.ProxyParams(np.int32(20), np.bool_(False)).mshr_stall


@pytest.mark.parametrize("case", range(len(FEEDBACK_CASES)))
@pytest.mark.parametrize("seed", [0, 1])
def test_mshr_stall_matches_reference_on_random_traces(case, seed):
  config, pf, kw, settings = FEEDBACK_CASES[case]
  trace = random_trace(seed)
  degree, fill = int(kw.get("degree", 1)), h.level_index(kw.get("fill_level", "l1d"))
  waits = 0
  for (rob, stores, cpi0, dram), feedback in zip(settings, (False, True, True)):
    params = h.make_params(cpi0=cpi0, dram_latency=dram, prefetcher=pf.make_params(**kw))
    state, codes = runner.run(trace, config, params, pf,
                              proxy=stall_proxy(rob, stores, feedback=feedback))
    model, rcodes = ref.run_reference(trace, config, cpi0=cpi0, dram_latency=dram, rob=rob,
                                      proxy_stores=stores, feedback=feedback, mshr_stall=True,
                                      prefetcher=ref.NextLine(degree, fill, False))
    assert_same(state, codes, model, rcodes, config, model.last_cycle)
    waits += model.mshr_wait
    plain, _ = runner.run(trace, config, params, pf,
                          proxy=proxy(rob, stores, feedback=feedback))
    if model.mshr_wait:
      assert not np.array_equal(np.asarray(plain.cache.stats), np.asarray(state.cache.stats))
    else:
      np.testing.assert_array_equal(np.asarray(plain.cache.stats),
                                    np.asarray(state.cache.stats))
  assert waits > 0


def test_gaze_with_mshr_stall_matches_reference_on_aos_walk():
  pf = prefetch.get("gaze")
  pparams = pf.make_params()
  params = h.make_params(cpi0=1, prefetcher=pparams)
  config = h.CacheConfig()
  for feedback in (False, True):
    state, codes = runner.run(AOS_WALK, config, params, pf,
                              proxy=stall_proxy(feedback=feedback))
    g = GazeReference("artifact", pt_entries=int(pparams.pt_entries),
                      region_blocks=int(pparams.region_blocks), degree=int(pparams.degree),
                      lookahead=int(pparams.lookahead), ss_enabled=bool(pparams.ss_enabled),
                      max_candidates=pf.num_candidates)
    model, rcodes = ref.run_reference(AOS_WALK, config, cpi0=1, prefetcher=g, rob=352,
                                      feedback=feedback, mshr_stall=True)
    assert_same(state, codes, model, rcodes, config, model.last_cycle)
    assert {k: int(v) for k, v in prefetch.gaze.stats(state.prefetcher).items()} == g.stats
    c = h.counters(state.cache)
    assert int(c["mshr_full"]) > 0 and model.mshr_wait > 0
    assert int(c["pf_issued"]) > 0


def test_metrics_formulas_hold_with_mshr_stall():
  # The golden above as a speedup: next-line (never issuing) vs no prefetching,
  # both 976 cycles; and the proxy's parts on random traces against the reference.
  params = h.make_params(prefetcher=NL3.make_params(**SATURATE_PF))
  state, _ = runner.run(SATURATE, TWO_MSHR, params, NL3, proxy=stall_proxy(40))
  base, _ = runner.run(SATURATE, TWO_MSHR, h.make_params(), proxy=stall_proxy(40))
  m = metrics.metrics(state, base, params)
  assert (int(m["proxy_stall"]), int(m["mshr_wait"])) == (380, 525)
  assert m["cycles_proxy"] == pytest.approx(71 + 380 + 525)
  assert m["ipc_proxy"] == pytest.approx(71 / 976)
  assert m["speedup"] == pytest.approx(1.0)
  for seed, cpi0, feedback in ((4, 1, False), (5, 0.5, True)):
    trace = random_trace(seed)
    params = h.make_params(cpi0=cpi0, prefetcher=NL3.make_params(degree=2))
    state, _ = runner.run(trace, SMALL_CASCADE, params, NL3,
                          proxy=stall_proxy(40, feedback=feedback))
    model, _ = ref.run_reference(trace, SMALL_CASCADE, cpi0=cpi0, rob=40, feedback=feedback,
                                 mshr_stall=True, prefetcher=ref.NextLine(2, 0))
    m = metrics.metrics(state, None, params)
    i = int(m["instructions"])
    assert model.mshr_wait > 0
    assert int(m["mshr_wait"]) == model.mshr_wait
    assert int(m["proxy_stall"]) == model.proxy_stall()
    assert m["cycles_proxy"] == pytest.approx(i * cpi0 + model.proxy_stall() + model.mshr_wait)
    assert metrics.cycles_proxy(state, params) == m["cycles_proxy"]
    # The window excesses are measured after the wait: none exceeds the path
    # below the L1D (the waits are only in mshr_wait).
    assert max(max(v) for v in model.proxy_windows.values()) <= 10 + 20 + 160


def test_sweep_varies_mshr_stall_in_one_program():
  length = 173  # a padded length no other test uses
  traces = [random_trace(s, length) for s in (10, 11)]
  configs = [dict(degree=2, mshr_stall=False, feedback=True),
             dict(degree=2, mshr_stall=True, feedback=True),
             dict(degree=3, mshr_stall=True, feedback=False)]
  with testing.count_lowerings() as lowerings:
    result = sweep.sweep(traces, SWEEP_SMALL, NL3, configs, devices=1, rob=32)
  assert result.compilations == 1 and len(lowerings) == 1
  assert result.batch == (3 + 3) * 2  # one baseline per distinct proxy setting
  assert result.proxy.mshr_stall.tolist() == [False, True, True]
  for c, d in enumerate(configs):
    x = runner.make_proxy_params(rob=32, feedback=d["feedback"], mshr_stall=d["mshr_stall"])
    params = h.make_params(prefetcher=NL3.make_params(degree=d["degree"]))
    for t, trace in enumerate(traces):
      state, _ = assert_sweep_cell_is_a_single_run(result, c, t, trace, SWEEP_SMALL, NL3,
                                                   params, x)
      assert result.metrics["mshr_wait"][c, t] == metrics.mshr_wait(state)
  assert (result.metrics["mshr_wait"][0] == 0).all() and (result.metrics["mshr_wait"][1:] > 0).all()
  # Flipped values, same shapes: no new program; the keyword default fills in.
  configs2 = [dict(degree=1, mshr_stall=True, feedback=False),
              dict(degree=3, mshr_stall=False, feedback=False),
              dict(degree=2, mshr_stall=True, feedback=True)]
  with testing.count_lowerings() as lowerings:
    again = sweep.sweep(traces, SWEEP_SMALL, NL3, configs2, devices=1, rob=32)
  assert again.compilations == 0 and not lowerings
  on = sweep.sweep(traces[:1], SWEEP_SMALL, NL3, [dict(degree=2, feedback=True)], devices=1,
                   rob=32, mshr_stall=True, baseline=False, length=length)
  np.testing.assert_array_equal(np.asarray(on.state.cache.stats)[0, 0],
                                np.asarray(result.state.cache.stats)[1, 0])
  with pytest.raises(TypeError, match=r"param_dicts\[0\]: mshr_stall: expected a bool"):
    sweep.sweep(traces, SWEEP_SMALL, NL3, [dict(mshr_stall="yes")], devices=1)


def test_mshr_stall_time_must_fit_int32():
  # The trace of test_feedback_time_must_fit_int32: 11 accesses, the last 1000
  # cycles below MAX_CYCLE. Each could wait one full path 5 + 10 + 20 + 160 =
  # 195: 11 * 195 = 2145 > 1000.
  instr = np.concatenate([np.arange(10) * 352, [h.MAX_CYCLE - 1000]]).astype(np.int32)
  trace = runner.make_trace(np.arange(11, dtype=np.int32), instr=instr)
  params = h.make_params()
  assert runner.feedback_time_bound(trace, params, stall_proxy(), ROOMY) == (
      h.MAX_CYCLE - 1000 + 11 * 195)
  assert runner.feedback_time_bound(trace, params, stall_proxy(feedback=True), ROOMY) == (
      h.MAX_CYCLE - 1000 + 10 * 190 + 11 * 195)
  with pytest.raises(ValueError, match=r"trace.instr: with MSHR stalls the clock could reach"
                                       r" \d+ cycles \(instr \* cpi0 plus accesses x"):
    runner.run(trace, ROOMY, params, proxy=stall_proxy())
  with pytest.raises(ValueError, match=r"with stall feedback and MSHR stalls the clock"):
    runner.run(trace, ROOMY, params, proxy=stall_proxy(feedback=True))
  with pytest.raises(ValueError, match=r"with MSHR stalls the clock"):
    sweep.sweep([trace], ROOMY, NL1, [dict(mshr_stall=False), dict(mshr_stall=True)],
                devices=1)
  # Five accesses (padding does not wait): 5 * 195 = 975 < 1000 cycles: fine.
  short = trace._replace(valid=np.arange(11) >= 6)
  assert runner.feedback_time_bound(short, params, stall_proxy(), ROOMY) == (
      h.MAX_CYCLE - 1000 + 5 * 195)
  runner.run(short, ROOMY, params, proxy=stall_proxy())
  runner.run(trace, ROOMY, params, proxy=proxy(feedback=False))  # off: no MSHR term
