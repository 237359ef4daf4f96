"""DSPatch (sims/prefetch/dspatch.py): hand-worked prefetch streams, the JAX prefetcher against
its plain-Python reference event for event inside the cache runner (random and synthetic
traces), no recompiles for new params, storage, errors.

Compiles dominate the runtime: one prefetcher instance (the default sizes; params use part
of the tables), one jitted step for the hand-worked streams, one runner shape."""

import doctest

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsys._src import testing
from jaxsys.sims.cache import hierarchy as h
from jaxsys.sims.cache import protocol
from jaxsys.sims.cache import reference as ref
from jaxsys.sims.cache import runner
from jaxsys.sims.prefetch import dspatch
from jaxsys.sims.prefetch import dspatch_reference
from jaxsys.sims.traces import format as trace_format
from jaxsys.sims.traces import synthetic

DS = dspatch.dspatch()  # 64-entry PB, 256-row SPT, 2 KiB regions: K = 31
CONFIG = h.CacheConfig.make(l1d=dict(sets=8, ways=2, mshr=8), l2=dict(sets=16, ways=4),
                            llc=dict(sets=32, ways=4), pq_size=4)
N = 1000  # every runner trace has this length (one compile)
L1D, L2, DRAM = 0, 1, 3


# ----------------------------------------------------------------------------- helpers


@jax.jit
def _step(pstate, block, pc, now, level, load, budget, pparams):
  access = protocol.Access(block=block, pc_hash=pc, is_store=~load, instr=now,
                           valid=jnp.bool_(True), load=load, level=level,
                           pf_hit=jnp.bool_(False), late=jnp.bool_(False))
  pstate = DS.train(pstate, access, level == 0, now, pparams)
  return DS.issue(pstate, (), access, now, budget, pparams)


def jax_stream(pparams, accesses, budget=32):
  """Valid candidates [(block, level)] per access (block, pc, now, level); budget an int
  or one per access."""
  budgets = [budget] * len(accesses) if isinstance(budget, int) else budget
  pstate = DS.init(pparams)
  out = []
  for (b, pc, now, level), bud in zip(accesses, budgets):
    pstate, cand = _step(pstate, jnp.int32(b), jnp.int32(pc), jnp.int32(now), jnp.int32(level),
                         jnp.bool_(True), jnp.int32(bud), pparams)
    valid = np.asarray(cand.valid_K)
    out.append(list(zip(np.asarray(cand.block_K)[valid].tolist(),
                        np.asarray(cand.fill_level_K)[valid].tolist())))
  return out, pstate


def reference_for(pparams):
  p = pparams
  return dspatch_reference.DSPatch(
      region_blocks=32, pb_entries=int(p.pb_entries), spt_entries=int(p.spt_entries),
      granularity=int(p.granularity), fill_level=int(p.fill_level), acc_thr=int(p.acc_thr),
      cov_thr=int(p.cov_thr), bw_window=int(p.bw_window), bw_peak=int(p.bw_peak),
      pb_replacement="lru" if bool(p.pb_lru) else "fifo")


def ref_stream(pparams, accesses, budget=32):
  budgets = [budget] * len(accesses) if isinstance(budget, int) else budget
  rpf = reference_for(pparams)
  out = []
  for (b, pc, now, level), bud in zip(accesses, budgets):
    access = ref.RefAccess(b, pc, now, now, level, False, False)
    rpf.train(access)
    out.append(list(rpf.issue(access, bud)))
  return out, rpf


def blocks(stream):
  return [[b for b, _ in cands] for cands in stream]


def both_streams(pparams, accesses, budget=32):
  """The JAX stream (and state) after checking that the reference gives the same."""
  got, pstate = jax_stream(pparams, accesses, budget)
  want, rpf = ref_stream(pparams, accesses, budget)
  assert got == want
  assert np.asarray(pstate.stats).tolist() == rpf.stats()
  return got, pstate


def spt_row(pstate, pc, entries):
  """(CovP, AccP, MeasureCovP, MeasureAccP, OrCount) of the SPT row of `pc`."""
  row = np.asarray(pstate.spt)[dspatch.spt_index(pc, entries)]
  return tuple(int(v) for v in row)


def bits(*offsets):
  return sum(1 << o for o in offsets)


def jax_tables(pstate):
  pb = np.asarray(pstate.pb)
  live = pb[pb[:, dspatch.STAMP] >= 0]
  pb_set = {(int(r), int(pc), int(t), int(f) & 0xffffffff, int(p) & 0xffffffff)
            for _, r, pc, t, f, p in live}
  spt = [tuple(int(v) & 0xffffffff if i < 2 else int(v) for i, v in enumerate(row))
         for row in np.asarray(pstate.spt)]
  return pb_set, spt


def run_both(trace, pparams, config=CONFIG, cpi0=1):
  state, codes = runner.run(trace, config, h.make_params(cpi0=cpi0, prefetcher=pparams), DS)
  rpf = reference_for(pparams)
  model, rcodes = ref.run_reference(trace, config, cpi0=cpi0, prefetcher=rpf)
  codes = np.asarray(codes).tolist()
  if codes != rcodes:
    i = next(i for i, (a, b) in enumerate(zip(codes, rcodes)) if a != b)
    raise AssertionError(f"step {i}: JAX code {codes[i]}, reference {rcodes[i]}")
  assert {k: int(v) for k, v in h.counters(state.cache).items()} == model.counters()
  assert np.asarray(state.prefetcher.stats).tolist() == rpf.stats()
  pb, spt = jax_tables(state.prefetcher)
  want_pb, want_spt = rpf.tables()
  assert pb == want_pb
  assert spt[:int(pparams.spt_entries)] == want_spt
  return state, rpf


def random_trace(seed, n=N):
  """Four PCs each replaying one of a few footprints (anchored at varying triggers) in
  fresh regions, a strided PC, random jumps, stores, bursts and pauses."""
  rng = np.random.default_rng(seed)
  shapes = [np.array(s) for s in ([0, 3, 7], [0, 1, 2, 3], [0, 5, 10, 20], [0, 2, 4, 6, 8, 9])]
  block, pcs = [], []
  region = 1000
  while len(block) < n:
    pc = int(rng.integers(0, 5))
    if pc == 4:  # strided
      start = int(rng.integers(0, 5000))
      block += list(start + 3 * np.arange(6))
      pcs += [4] * 6
      continue
    shape = shapes[(pc + int(rng.random() < 0.3)) % 4]
    keep = shape[rng.random(len(shape)) < 0.85]
    offs = (int(rng.integers(0, 32)) + np.concatenate([shape[:1], keep[1:]])) % 32
    region += int(rng.integers(1, 3))
    block += list(region * 32 + offs)
    pcs += [pc * 0x140] * len(offs)
  block = np.asarray(block[:n], np.int32)
  jump = rng.random(n) < 0.05
  block[jump] = rng.integers(0, 4000, int(jump.sum()))
  gap = np.where(rng.random(n) < 0.7, rng.integers(0, 4, n), rng.integers(20, 300, n))
  return runner.make_trace(block, pc_hash=np.asarray(pcs[:n], np.int32),
                           is_store=(rng.random(n) < 0.1).astype(np.int8),
                           instr=np.cumsum(gap).astype(np.int32))


# ----------------------------------------------------------------------------- hand-worked

# PC 7, one PB entry (each new region evicts the previous one, which trains the SPT),
# patterns at block granularity; anchored patterns are offsets relative to the trigger.
#   G1 region 0 (blocks 0..31):  2, 5, 9     trigger 2, footprint {2, 5, 9}  -> P1 {0, 3, 7}
#   G2 region 1 (32..63):      34, 37, 44    trigger 2, footprint {2, 5, 12} -> P2 {0, 3, 10}
#   G3 region 2 (64..95):      66 ...        its trigger trains G2
ONE = dict(pb_entries=1, spt_entries=16, granularity=1, bw_window=100, bw_peak=4)
GENS = [2, 5, 9, 34, 37, 44]


def test_first_sight_then_covp_at_low_bandwidth():
  p = DS.make_params(**ONE)
  # All in window 0 (now 0): the quartile is its initial 0, so CovP is used.
  #   2: SPT row of PC 7 empty (CovP = 0): no prefetch (first sight).
  #   34: evicts G1 -> C = P1 {0, 3, 7}; rotated to offset 2: {2, 5, 9} minus the
  #       trigger: 5 (distance 3), 9 (distance 7) -> 37, 41.
  #   37: prefetched (pending empty); 44: a new block of G2.
  #   66: evicts G2 -> C = {0, 3, 7} | {0, 3, 10}; rotated to 2: 5, 9, 12 -> 69, 73, 76.
  accesses = [(b, 7, 0, L2) for b in GENS + [66]]
  got, pstate = both_streams(p, accesses)
  assert blocks(got) == [[], [], [], [37, 41], [], [], [69, 73, 76]]
  assert all(level == L1D for cands in got for _, level in cands)  # L1D fill
  # G2's training: CovP's old {3, 7} vs real {3, 10}: 1 of 2 right (50 %, not below
  # 50 %): MeasureCovP stays 1 (G1's training found CovP empty: coverage 0 %);
  # AccP = P2 & old CovP = {0, 3}; OrCount 2 (both added bits).
  assert spt_row(pstate, 7, 16) == (bits(0, 3, 7, 10), bits(0, 3), 1, 0, 2)
  # loads, window, its DRAM blocks (accepted: 2 + 3), quartile, triggers (2, 34, 66),
  # CovP x3, AccP, none, trainings (G1, G2), CovP resets, accepted
  assert np.asarray(pstate.stats).tolist() == [7, 0, 5, 0, 3, 3, 0, 0, 2, 0, 5]


def test_rotation_wraps_around_the_region():
  p = DS.make_params(**ONE)
  # G3 = 66, 69, 73, 76 (footprint {2, 5, 9, 12} = P {0, 3, 7, 10}); then block 126
  # (region 3, offset 30) triggers: C = {0, 3, 7, 10} rotated to 30 gives offsets
  # 30, 33 - 32 = 1, 37 - 32 = 5, 40 - 32 = 8; nearest first from 30 (only 31 above):
  # 8, 5, 1 -> 104, 101, 97.
  accesses = [(b, 7, 0, L2) for b in GENS + [66, 69, 73, 76, 126]]
  got, pstate = both_streams(p, accesses)
  assert blocks(got)[-1] == [104, 101, 97]
  # G3 matched CovP exactly, and AccP {3} of it (100 %): MeasureAccP stays 0.
  assert spt_row(pstate, 7, 16) == (bits(0, 3, 7, 10), bits(0, 3, 7, 10), 1, 0, 2)


@pytest.mark.parametrize("peak, now, quartile, want", [
    (4, 100, 3, [69]),            # 4 * 5 // 4 = 5 -> 3: AccP {0, 3} rotated to 2 -> 5
    (8, 100, 2, [69, 73, 76]),    # 20 // 8 = 2: MeasureCovP 1 (not saturated): CovP
    (16, 100, 1, [69, 73, 76]),   # 20 // 16 = 1: CovP
    (4, 250, 0, [69, 73, 76]),    # window 2: window 1 saw no load -> 0: CovP
])
def test_accp_at_high_bandwidth(peak, now, quartile, want):
  # Window 0 (cycles 0..99): G1's three loads came from DRAM and 34 had 37, 41
  # accepted: 5 DRAM blocks. The trigger 66 at `now` sees the quartile of the window
  # before it.
  p = DS.make_params(**{**ONE, "bw_peak": peak})
  accesses = ([(2, 7, 0, DRAM), (5, 7, 1, DRAM), (9, 7, 2, DRAM), (34, 7, 3, L2),
               (37, 7, 4, L2), (44, 7, 5, L2), (66, 7, now, L2)])
  got, pstate = both_streams(p, accesses)
  assert blocks(got)[-1] == want
  stats = np.asarray(pstate.stats)
  assert stats[dspatch.S_QUARTILE] == quartile
  assert (stats[dspatch.S_ACCP], stats[dspatch.S_COVP]) == ((1, 2) if quartile == 3 else (0, 3))


# PC 9, trigger offset 0 in regions 10, 11, ...: footprints {0, 1, 2} twice, then {0, 5} and
# {0, 1, 2} in turn
# (budget 0: nothing accepted, so window 0 counts DRAM loads only). Per training
# (CovP C, AccP A, MeasureCovP mc, MeasureAccP ma, OrCount oc; thresholds 50 %):
#   F1 {0,1,2}: C {}: coverage 0/2 -> mc 1; C {0,1,2}, A {}, oc 1
#   F2 {0,1,2}: C right 2/2: mc 1; A = {0,1,2} & {0,1,2}; ma stays 0 (A was empty)
#   F3 {0,5}:  C {1,2} wrong (0/2) -> mc 2; A {1,2} wrong -> ma 1; C {0,1,2,5}, A {0}, oc 2
#   F4 {0,1,2}: C 2/3 right: mc 2; A empty: ma 1; A = {0,1,2}
#   F5 {0,5}:  C 1/3 right (33 % < 50 %) -> mc 3 (saturated; coverage 1/1, quartile 0:
#              no reset); A {1,2} wrong -> ma 2; A = {0,5}
#   F6 {0,1,2}, trained by the final trigger: C 2/3: mc 3; A {5} wrong -> ma 3 (saturated);
#              A = {0,1,2}; at quartile 3 CovP is reset to {0,1,2} (mc = oc = 0).
FOOTPRINTS = [(0, 1, 2), (0, 1, 2), (0, 5), (0, 1, 2), (0, 5), (0, 1, 2)]


@pytest.mark.parametrize("dram_loads, want, row", [
    # 6 DRAM loads in window 0 -> quartile 4 * 6 // 8 = 3: MeasureAccP saturated:
    # nothing (the goodness counter turned AccP off); CovP reset.
    (6, [], (bits(0, 1, 2), bits(0, 1, 2), 0, 3, 0)),
    # 4 -> quartile 2: MeasureCovP saturated: AccP {0,1,2} instead of CovP -> 641, 642.
    (4, [641, 642], (bits(0, 1, 2, 5), bits(0, 1, 2), 3, 3, 2)),
    # 0 -> quartile 0: CovP {0,1,2,5} whatever its counter -> 641, 642, 645.
    (0, [641, 642, 645], (bits(0, 1, 2, 5), bits(0, 1, 2), 3, 3, 2)),
])
def test_goodness_counters_turn_patterns_off(dram_loads, want, row):
  p = DS.make_params(pb_entries=1, spt_entries=16, granularity=1, bw_window=1000, bw_peak=8)
  accesses = []
  for g, footprint in enumerate(FOOTPRINTS):
    accesses += [((10 + g) * 32 + o, 9, len(accesses), L2) for o in footprint]
  accesses = [(b, pc, now, DRAM if i < dram_loads else level)
              for i, (b, pc, now, level) in enumerate(accesses)]
  accesses.append((20 * 32, 9, 1000, L2))  # the final trigger, in window 1
  budget = [0] * (len(accesses) - 1) + [32]
  got, pstate = both_streams(p, accesses, budget)
  assert blocks(got)[-1] == want
  assert spt_row(pstate, 9, 16) == row
  stats = np.asarray(pstate.stats)
  assert stats[dspatch.S_OFF] == (1 if dram_loads == 6 else 0)
  assert stats[dspatch.S_COVP_RESETS] == (1 if dram_loads == 6 else 0)


def test_refused_candidates_wait_in_the_page_buffer():
  # Budget 1 at 66: 69 accepted, 73 and 76 wait. A load of 70 (offset 6) drains them
  # nearest-first from 6: 73 (distance 3), 76 (distance 6); with budget 1 again only 73.
  # Then 76 itself is demanded: nothing left. Fill level L2 here.
  p = DS.make_params(**ONE, fill_level="l2")
  accesses = [(b, 7, 0, L2) for b in GENS + [66, 70, 76]]
  got, pstate = both_streams(p, accesses, budget=[32] * 6 + [1, 1, 1])
  assert got[-3:] == [[(69, 1), (73, 1), (76, 1)], [(73, 1), (76, 1)], []]
  assert int(np.asarray(pstate.pb)[0, dspatch.PEND]) == 0


def test_coarse_granularity_and_fifo_vs_lru():
  # Granularity 2 (128 B): P1 {0, 3, 7} is kept as {0, 1, 2, 3, 6, 7}; at 34 (offset 2):
  # offsets 3, 4, 5, 8, 9 -> 35, 36, 37, 40, 41 (nearest first: 3, 4, 5, 8, 9).
  p = DS.make_params(**{**ONE, "granularity": 2})
  got, _ = both_streams(p, [(b, 7, 0, L2) for b in (2, 5, 9, 34)])
  assert blocks(got)[-1] == [35, 36, 37, 40, 41]
  # Two PB entries: region 0 (PC 1), region 1 (PC 2), region 0 again, then region 2:
  # FIFO evicts region 0 (trains PC 1's row), LRU evicts region 1 (PC 2's row).
  stream = [(b, pc, 0, L2) for b, pc in ((0, 1), (32, 2), (1, 1), (64, 3))]
  for repl, trained_pc in (("fifo", 1), ("lru", 2)):
    p = DS.make_params(pb_entries=2, spt_entries=16, granularity=1, pb_replacement=repl)
    _, pstate = both_streams(p, stream)
    covp = {pc: spt_row(pstate, pc, 16)[0] for pc in (1, 2)}
    assert covp == {1: bits(0, 1) if trained_pc == 1 else 0, 2: bits(0) if trained_pc == 2 else 0}


def test_stores_leave_the_state_unchanged():
  p = DS.make_params(**ONE)
  _, pstate = jax_stream(p, [(b, 7, 0, L2) for b in GENS])
  new, cand = _step(pstate, jnp.int32(66), jnp.int32(7), jnp.int32(500), jnp.int32(3),
                    jnp.bool_(False), jnp.int32(32), p)
  jax.tree.map(np.testing.assert_array_equal, new, pstate)
  assert not np.asarray(cand.valid_K).any()


# ----------------------------------------------------------------------------- parity


PARITY = [
    dict(),  # the defaults: 64-entry FIFO PB, 256-row SPT, 128 B, 1024-cycle windows
    dict(pb_entries=3, spt_entries=8, granularity=1, bw_window=128, bw_peak=6, acc_thr=75,
         cov_thr=25, pb_replacement="lru"),
    dict(pb_entries=8, spt_entries=4, granularity=4, bw_window=64, bw_peak=3, fill_level="l2"),
]


@pytest.mark.parametrize("case", range(len(PARITY)))
def test_runner_matches_reference_on_a_random_trace(case):
  state, rpf = run_both(random_trace(case), DS.make_params(**PARITY[case]))
  c = h.counters(state.cache)
  assert int(c["pf_issued"]) > 0 and int(c["pf_refused"]) > 0  # the budget binds
  assert rpf.trainings > 0 and rpf.covp > 0
  if case:
    assert rpf.accp > 0 and rpf.off > 0  # the small windows reach every quartile


@pytest.mark.parametrize("generator", ["aos_walk", "strided"])
def test_runner_matches_reference_on_synthetic_traces(generator):
  trace = trace_format.to_sim_arrays(synthetic.generate(generator, N, seed=3))
  # 1000 accesses touch about 60-100 regions: smaller PBs so that generations end; CPI 20
  # so that this miss-heavy stream leaves the 8 MSHRs some room (a budget > 0).
  for kw in (dict(pb_entries=16), dict(PARITY[1], bw_window=256)):
    state, rpf = run_both(trace, DS.make_params(**kw), cpi0=20)
    c = h.counters(state.cache)
    assert int(c["pf_issued"]) > 0 and int(c["l1d_pf_useful"]) > 0 and rpf.trainings > 0


def test_new_param_values_do_not_recompile():
  runner.run(random_trace(5), CONFIG, h.make_params(prefetcher=DS.make_params()), DS)
  with testing.count_lowerings() as lowerings:
    state, _ = runner.run(random_trace(6), CONFIG,
                          h.make_params(dram_latency=90,
                                        prefetcher=DS.make_params(**PARITY[2])), DS)
    jax.block_until_ready(state)
  assert not lowerings


def test_factory_is_cached():
  assert dspatch.dspatch() is DS
  assert DS.num_candidates == 31 and DS.self_masking and DS.name == "dspatch"
  assert dspatch.dspatch(region_blocks=8).num_candidates == 7


# ----------------------------------------------------------------------------- storage


def test_storage_bits():
  # PB 64 x (37 tag + 8 SPT index + 5 offset + 32 footprint + 32 pending + 6 FIFO);
  # SPT 256 x (16 CovP + 16 AccP + 3 x 2 counters); bandwidth 10 + 7 + 2.
  s = dspatch.storage_bits()
  assert s == {"pb": 64 * 120, "spt": 256 * 38, "bandwidth": 19, "total": 17427}
  assert s["total"] / 8 / 1024 == pytest.approx(2.127, abs=1e-3)  # vs the paper's 3.6 KB
  # Block-granularity patterns double CovP / AccP: 256 x (32 + 32 + 6).
  assert dspatch.storage_bits(granularity=1)["spt"] == 256 * 70
  assert dspatch.storage_bits(pb_entries=32, spt_entries=128)["pb"] == 32 * (37 + 7 + 5 + 64 + 5)


# ----------------------------------------------------------------------------- errors


def test_errors():
  with pytest.raises(ValueError, match=r"pb_entries: expected an int in 1\.\.64 \(the alloc"
                                       r"ated page buffer\), given 65"):
    DS.make_params(pb_entries=65)
  with pytest.raises(ValueError, match=r"spt_entries: expected a power of two .*given 12"):
    DS.make_params(spt_entries=12)
  with pytest.raises(ValueError, match=r"spt_entries: expected an int in 1\.\.256"):
    DS.make_params(spt_entries=512)
  with pytest.raises(ValueError, match=r"granularity: expected a power of two .*given 3"):
    DS.make_params(granularity=3)
  with pytest.raises(ValueError, match=r"granularity: expected an int in 1\.\.32"):
    DS.make_params(granularity=64)
  with pytest.raises(TypeError, match=r"acc_thr: expected an int, given 0\.5"):
    DS.make_params(acc_thr=0.5)
  with pytest.raises(ValueError, match=r"cov_thr: expected an int in 0\.\.100 \(percent\),"
                                       r" given 101"):
    DS.make_params(cov_thr=101)
  with pytest.raises(ValueError, match=r"bw_window: expected an int in 1\.\."):
    DS.make_params(bw_window=0)
  with pytest.raises(ValueError, match=r"bw_peak: expected an int in 1\.\..*given -3"):
    DS.make_params(bw_peak=-3)
  with pytest.raises(ValueError, match=r"pb_replacement: expected one of 'fifo', 'lru',"
                                       r" given 'random'"):
    DS.make_params(pb_replacement="random")
  with pytest.raises(ValueError, match=r"fill_level"):
    DS.make_params(fill_level="l3")
  with pytest.raises(TypeError, match=r"unexpected keyword argument 'degree'"):
    DS.make_params(degree=2)
  with pytest.raises(ValueError, match=r"region_blocks: expected an int in 2\.\.32"):
    dspatch.dspatch(region_blocks=64)
  with pytest.raises(ValueError, match=r"region_blocks: expected a power of two"):
    dspatch.dspatch(region_blocks=24)
  with pytest.raises(TypeError, match=r"pb_entries: expected an int, given '64'"):
    dspatch.dspatch(pb_entries="64")
  with pytest.raises(ValueError, match=r"spt_entries: expected a power of two"):
    dspatch.storage_bits(spt_entries=100)


@pytest.mark.parametrize("module", [dspatch, dspatch_reference], ids=lambda m: m.__name__)
def test_docstring_examples(module):
  result = doctest.testmod(module)
  assert result.attempted > 0 and result.failed == 0
