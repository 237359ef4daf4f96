"""The cache hierarchy for the prefetcher simulators: hand-derived goldens, the
lax.scan runner against the pure-Python reference event for event, late
prefetches, the MSHR / PQ issue budget, padding, vmap, errors."""

import hypothesis
import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsys._src import testing
from jaxsys.sims import cache as cache_pkg
from jaxsys.sims.cache import hierarchy as h
from jaxsys.sims.cache import protocol
from jaxsys.sims.cache import reference as ref
from jaxsys.sims.cache import runner
from tests.sims.cache_fixtures import N_RANDOM, SMALL_CASCADE, SMALL_SRRIP

NL1 = protocol.next_line(1)  # K = 1: the straight-line prefetch path
NL3 = protocol.next_line(3)  # K = 3: the while-loop prefetch path

# Tiny L1D (2 sets x 2 ways) over an L2 and LLC large enough that nothing seen
# is ever evicted there: an L1D miss is an L2 hit (level 1) for a block seen
# before, DRAM (level 3) for a new one.
BIG_BELOW = dict(l2=dict(sets=64, ways=8), llc=dict(sets=64, ways=8))
TINY_LRU = h.CacheConfig.make(l1d=dict(sets=2, ways=2), **BIG_BELOW)
TINY_SRRIP = h.CacheConfig.make(l1d=dict(sets=2, ways=2, replacement="srrip"), **BIG_BELOW)
DEFAULT = h.CacheConfig()
FAR = 1000  # instructions between accesses that never overlap in time


def spaced(blocks, gap=FAR, stores=None):
  blocks = np.asarray(blocks, np.int32)
  return runner.make_trace(
      blocks, instr=(np.arange(len(blocks)) * gap).astype(np.int32),
      is_store=None if stores is None else np.asarray(stores, np.int8))


def levels(codes):
  return runner.decode(codes)["level"].tolist()


def random_trace(seed, n=N_RANDOM, span=48, stores=0.3):
  """Random blocks in a small span mixed with a few streams; bursts and pauses."""
  rng = np.random.default_rng(seed)
  block = rng.integers(0, span, n)
  stream = rng.random(n) < 0.4
  sid = rng.integers(0, 3, n)
  for s in range(3):
    m = stream & (sid == s)
    block[m] = s * span + np.cumsum(m)[m] // 2
  gap = np.where(rng.random(n) < 0.75, rng.integers(0, 4, n), rng.integers(20, 400, n))
  return runner.make_trace(block.astype(np.int32),
                           pc_hash=rng.integers(0, 8, n).astype(np.int32),
                           is_store=(rng.random(n) < stores).astype(np.int8),
                           instr=np.cumsum(gap).astype(np.int32))


def reference_prefetcher(prefetcher, pparams):
  if prefetcher.num_candidates == 0:
    return ref.NoPrefetcher()
  return ref.NextLine(int(pparams.degree), int(pparams.fill_level), bool(pparams.on_miss_only))


def run_both(trace, config, prefetcher=protocol.NONE, pparams=(), cpi0=1, dram_latency=160):
  params = h.make_params(cpi0=cpi0, dram_latency=dram_latency, prefetcher=pparams)
  state, codes = runner.run(trace, config, params, prefetcher)
  rpf = reference_prefetcher(prefetcher, pparams)
  model, rcodes = ref.run_reference(trace, config, cpi0=cpi0, dram_latency=dram_latency,
                                    prefetcher=rpf)
  return state, codes, model, rcodes, rpf


def assert_same(state, codes, model, rcodes, config, trace, cpi0=1):
  """Event for event: step codes, every counter, the final tables and queues."""
  codes = np.asarray(codes).tolist()
  if codes != rcodes:
    i = next(i for i, (a, b) in enumerate(zip(codes, rcodes)) if a != b)
    raise AssertionError(f"step {i}: JAX code {codes[i]}, reference {rcodes[i]}")
  got = {k: int(v) for k, v in h.counters(state.cache).items()}
  want = model.counters()
  assert got.keys() == want.keys()
  diff = {k: (got[k], want[k]) for k in want if got[k] != want[k]}
  assert not diff, diff
  for level, lc in enumerate(config.levels):
    table = np.asarray(state.cache.tables[level])
    for s in range(lc.sets):
      ways = model.sets[level][s]
      tags = [line.tag for line in ways]
      assert table[s, :, h.TAG].tolist() == tags, (level, s)
      ok = table[s, :, h.TAG] >= 0
      assert table[s, ok, h.READY].tolist() == [l.ready for l in ways if l.tag >= 0]
      assert table[s, ok, h.META].tolist() == [l.meta() for l in ways if l.tag >= 0]
      repl = table[s, ok, h.REPL]
      want_repl = np.array([l.repl for l in ways if l.tag >= 0])
      if lc.replacement == "srrip":
        assert repl.tolist() == want_repl.tolist(), (level, s)
      else:  # LRU stamps differ in value, not in order
        assert np.argsort(repl).tolist() == np.argsort(want_repl).tolist(), (level, s)
  valid = np.asarray(trace.valid)
  final_now = ref.cycle(int(np.asarray(trace.instr)[valid][-1]), cpi0) if valid.any() else 0
  busy = model.busy(final_now)  # (pq, mshr) counts; prunes the reference's lists
  assert h.busy_slots(state.cache, final_now) == (sorted(model.mshr), sorted(model.pq))
  assert busy == tuple(int(x) for x in h.occupancy(state.cache, final_now))


# ----------------------------------------------------------------------------- goldens


def test_import_path():
  import jaxsys.sims.cache  # pylint: disable=import-outside-toplevel
  assert jaxsys.sims.cache.run is runner.run
  assert cache_pkg.hierarchy is h


def test_lru_golden_sequence():
  # L1D 2 sets x 2 ways (set = block & 1), accesses far apart in time:
  #   0  set0 miss, new -> DRAM (3)      set0 {0}
  #   2  set0 miss, new -> 3             set0 {0, 2}   (0 least recent)
  #   0  hit (0)                          2 now least recent
  #   4  miss, new -> 3, evicts 2         set0 {0, 4}
  #   2  miss, seen -> L2 (1), evicts 0  set0 {4, 2}
  #   0  miss -> 1, evicts 4              set0 {2, 0}
  #   1  set1 miss -> 3 | 3 miss -> 3 | 1 hit (0) | 5 miss -> 3, evicts 3 | 3 miss -> 1, evicts 1
  blocks = [0, 2, 0, 4, 2, 0, 1, 3, 1, 5, 3]
  state, codes, model, rcodes, _ = run_both(spaced(blocks), TINY_LRU)
  assert levels(codes) == [3, 3, 0, 3, 1, 1, 3, 3, 0, 3, 1]
  tags = np.asarray(state.cache.l1d)[:, :, h.TAG]
  assert sorted(tags[0].tolist()) == [0, 2] and sorted(tags[1].tolist()) == [3, 5]
  assert_same(state, codes, model, rcodes, TINY_LRU, spaced(blocks))
  c = h.counters(state.cache)
  assert (int(c["l1d_hit"]), int(c["l1d_miss"]), int(c["l2_hit"]), int(c["dram_read_demand"])) == (
      2, 9, 3, 6)


def test_srrip_golden_sequence_keeps_the_reused_block():
  # Set 0 only, blocks 0 2 0 4 2 0 4 0. SRRIP (2-bit): fill RRPV 2, hit RRPV 0,
  # victim = first way with RRPV 3 after aging every way by 3 - max.
  #   0 miss (3)  w0=0:2            | 2 miss (3)  w1=2:2
  #   0 hit (0)   w0=0:0            | 4 miss (3): age +1 -> 0:1, 2:3, evict 2; w1=4:2
  #   2 miss (1): age +1 -> 0:2, 4:3, evict 4; w1=2:2
  #   0 hit (0)   w0=0:0            | 4 miss (1): age +1 -> 0:1, 2:3, evict 2; w1=4:2
  #   0 hit (0)
  # LRU instead evicts 0 at the second 2 (0 was older than 4) and misses on 0 next.
  blocks = [0, 2, 0, 4, 2, 0, 4, 0]
  state, codes, model, rcodes, _ = run_both(spaced(blocks), TINY_SRRIP)
  assert levels(codes) == [3, 3, 0, 3, 1, 0, 1, 0]
  row = np.asarray(state.cache.l1d)[0]
  assert row[:, h.TAG].tolist() == [0, 4] and row[:, h.REPL].tolist() == [0, 2]
  assert_same(state, codes, model, rcodes, TINY_SRRIP, spaced(blocks))
  lru_state, lru_codes, *_ = run_both(spaced(blocks), TINY_LRU)
  assert levels(lru_codes) == [3, 3, 0, 3, 1, 1, 1, 0]


def test_latencies_and_merged_miss():
  # DRAM 5+10+20+160 = 195; L2 hit 15; LLC hit 35; L1D hit 5. Block 20 again
  # 50 cycles after its miss: its data arrives at 195, a merged miss waits 145.
  config = h.CacheConfig.make(l1d=dict(sets=2, ways=1), l2=dict(sets=2, ways=1),
                              llc=dict(sets=64, ways=8))
  # 0 (DRAM) | 0 (L1D) | 2 evicts 0 from L1D and L2 (1 way each) | 0 (LLC) | 20 (DRAM), 20 (merged)
  trace = runner.make_trace(np.array([0, 0, 2, 0, 20, 20], np.int32),
                            instr=np.array([0, 1000, 2000, 3000, 4000, 4050], np.int32))
  state, codes, model, rcodes, _ = run_both(trace, config)
  assert levels(codes) == [3, 0, 3, 2, 3, 0]
  c = h.counters(state.cache)
  assert int(c["demand_latency"]) == 195 + 5 + 195 + 35 + 195 + 145
  assert int(c["l1d_merged"]) == 1 and int(c["l1d_late"]) == 0
  assert_same(state, codes, model, rcodes, config, trace)
  out = h.summarize(state.cache)
  assert out["amat"] == pytest.approx((195 * 3 + 5 + 35 + 145) / 6)
  assert out["instructions"] == 4051


def test_late_prefetch_accounting():
  # next-line into L1D. t=0: 10 misses (DRAM, 195) and prefetches 11 from DRAM:
  # ready = 0 + 195. t=100: 11 hits a prefetched line still in flight: late,
  # latency 195 - 100 = 95 (90 beyond the 5-cycle hit); it prefetches 12
  # (ready 100 + 195 = 295). t=1000: 12 hits, on time (5).
  config = h.CacheConfig.make(l1d=dict(sets=8, ways=2))
  trace = runner.make_trace(np.array([10, 11, 12], np.int32),
                            instr=np.array([0, 100, 1000], np.int32))
  state, codes, model, rcodes, _ = run_both(trace, config, NL1, NL1.make_params())
  d = runner.decode(codes)
  assert d["level"].tolist() == [3, 0, 0]
  assert d["late"].tolist() == [False, True, False]
  assert d["accepted"].tolist() == [1, 1, 1]
  assert np.asarray(codes).tolist() == [3 + 8, 0 + 4 + 8, 0 + 8]
  c = h.counters(state.cache)
  assert int(c["demand_latency"]) == 195 + 95 + 5
  assert int(c["late_cycles"]) == 90
  assert (int(c["l1d_late"]), int(c["l1d_pf_useful"]), int(c["l1d_pf_fill"])) == (1, 2, 3)
  assert int(c["l1d_pf_resident"]) == 1  # 13 was prefetched and never used
  table = np.asarray(state.cache.l1d)
  line13 = table[13 & 7][table[13 & 7, :, h.TAG] == 13][0]
  assert line13[h.READY] == 1000 + 195 and line13[h.META] == h.PF | (h.DRAM << h.ORIGIN_SHIFT)
  assert_same(state, codes, model, rcodes, config, trace)
  out = h.summarize(state.cache)
  assert out["late_ratio"] == pytest.approx(0.5) and out["accuracy"] == pytest.approx(1.0)


def test_prefetch_into_l2_is_useful_at_l2():
  # Next-line into L2: the demand for 11 misses L1D and hits L2 (15 cycles),
  # the prefetch there counts useful at L2, and L1D gets a plain copy.
  config = h.CacheConfig.make(l1d=dict(sets=8, ways=2))
  trace = spaced([10, 11])
  state, codes, model, rcodes, _ = run_both(trace, config, NL1, NL1.make_params(fill_level="l2"))
  assert levels(codes) == [3, 1]
  c = h.counters(state.cache)
  assert (int(c["l2_pf_fill"]), int(c["l2_pf_useful"]), int(c["l1d_pf_fill"])) == (2, 1, 0)
  assert int(c["demand_latency"]) == 195 + 15
  assert_same(state, codes, model, rcodes, config, trace)


def test_mshr_budget_refusal():
  # L1D MSHRs M = 4: issue while pq + mshr < M - 1 = 3, next-line degree 4.
  #   t=0   0 misses: MSHR (0, 195). Budget 3 - 0 - 1 = 2: 1 and 2 accepted,
  #         each a PQ entry until 5, then an MSHR (5, 195); 3, 4 refused.
  #                                                       code 3 + 8 * 2
  #   t=1   100 misses: the 4th MSHR (1, 196). pq 2 + mshr 2 busy: budget 0.
  #                                                       code 3
  #   t=2   200 misses, all 4 MSHRs reserved: mshr_full, takes over (0, 195)
  #         (frees first, earliest start) as (2, 197). Budget 0.   code 3
  #   t=300 all free. 1 hits its prefetched line (ready 195). Budget 3:
  #         2 is already in L1D (redundant: only its PQ entry), 3 and 4 miss
  #         (PQ until 305, then MSHRs (305, 495)); 5 refused.  code 0 + 8 * 3
  config = h.CacheConfig.make(l1d=dict(sets=8, ways=4, mshr=4))
  pf = protocol.next_line(4)
  trace = runner.make_trace(np.array([0, 100, 200, 1], np.int32),
                            instr=np.array([0, 1, 2, 300], np.int32))
  state, codes, model, rcodes, _ = run_both(trace, config, pf, pf.make_params(degree=4))
  assert np.asarray(codes).tolist() == [3 + 16, 3, 3, 24]
  c = h.counters(state.cache)
  assert (int(c["pf_candidates"]), int(c["pf_issued"]), int(c["pf_refused"])) == (16, 5, 11)
  assert (int(c["l1d_pf_redundant"]), int(c["l1d_pf_fill"]), int(c["mshr_full"])) == (1, 4, 1)
  assert_same(state, codes, model, rcodes, config, trace)
  # The rule itself after the last step: at t=300 the three PQ entries (leave
  # 305), at 305 the two MSHRs of 3 and 4 (until 495).
  cache = state.cache
  assert h.busy_slots(cache, 300) == ([(305, 495), (305, 495)], [305, 305, 305])
  assert [int(x) for x in h.occupancy(cache, 300)] == [3, 0]
  assert [int(x) for x in h.occupancy(cache, 305)] == [0, 2]
  assert int(h.issue_budget(cache, 300, config)) == 0 and not bool(h.can_issue(cache, 300, config))
  assert int(h.issue_budget(cache, 305, config)) == 1 and bool(h.can_issue(cache, 305, config))
  assert int(h.issue_budget(cache, 495, config)) == 3


def test_redundant_prefetch_changes_nothing_but_the_queue():
  config = h.CacheConfig.make(l1d=dict(sets=8, ways=2))
  params = h.make_params()
  state = h.init(config)
  state, _ = h.access(state, jnp.int32(5), jnp.bool_(False), jnp.int32(0), params, config)
  before = state
  state, filled = h.prefetch(state, jnp.int32(5), jnp.int32(0), jnp.int32(10), params, config)
  assert not bool(filled)
  for level in range(3):
    np.testing.assert_array_equal(np.asarray(state.tables[level]),
                                  np.asarray(before.tables[level]))
  assert int(h.counters(state)["l1d_pf_redundant"]) == 1
  assert h.busy_slots(state, 10)[1] == [15]  # a PQ entry for the L1D lookup
  state, filled = h.prefetch(state, jnp.int32(6), jnp.int32(1), jnp.int32(10), params, config)
  assert bool(filled) and bool(h.contains(state, 1, 6)) and not bool(h.contains(state, 0, 6))


def test_stores_write_back_direct_and_cascade():
  # L1D 1 set x 1 way, L2 2 sets x 1 way. A store to 0 (DRAM) fills LLC, L2
  # and a dirty L1D line; loading 1 evicts 0 from L1D:
  #   direct: one DRAM write at once, nothing below is ever dirty.
  #   cascade: 0 is written into L2 (set 0), where it is present: marked dirty.
  #   Loading 2 (L2 set 0) evicts the dirty 0 from L2: written into the LLC,
  #   present there: marked dirty. No DRAM write at all.
  blocks, stores = [0, 1, 2], [1, 0, 0]
  base = dict(l1d=dict(sets=1, ways=1), l2=dict(sets=2, ways=1), llc=dict(sets=4, ways=4))
  for mode, dram_writes in (("direct", 1), ("cascade", 0)):
    config = h.CacheConfig.make(writebacks=mode, **base)
    trace = spaced(blocks, stores=stores)
    state, codes, model, rcodes, _ = run_both(trace, config)
    c = h.counters(state.cache)
    assert int(c["dram_write"]) == dram_writes, mode
    assert int(c["l1d_writeback"]) == 1
    assert_same(state, codes, model, rcodes, config, trace)
  llc = np.asarray(state.cache.llc)
  line0 = llc[0][llc[0, :, h.TAG] == 0][0]
  assert line0[h.META] & h.DIRTY  # the cascade left 0 dirty in the LLC


# ----------------------------------------------------------------------------- parity


PARITY_CASES = [
    # (config, prefetcher, params kwargs, cpi0, dram latency)
    (SMALL_CASCADE, protocol.NONE, None, 1, 160),
    (SMALL_CASCADE, NL1, dict(), 1, 160),
    (SMALL_CASCADE, NL3, dict(degree=3, fill_level="l2", on_miss_only=True), 0.5, 60),
    (SMALL_SRRIP, protocol.NONE, None, 2, 100),
    (SMALL_SRRIP, NL1, dict(fill_level="llc"), 0.25, 160),
    (SMALL_SRRIP, NL3, dict(degree=2), 1, 30),
]


@pytest.mark.parametrize("case", range(len(PARITY_CASES)))
@pytest.mark.parametrize("seed", [0, 1])
def test_runner_matches_reference_on_random_traces(case, seed):
  config, pf, kw, cpi0, dram = PARITY_CASES[case]
  pparams = () if kw is None else pf.make_params(**kw)
  trace = random_trace(seed)
  state, codes, model, rcodes, rpf = run_both(trace, config, pf, pparams, cpi0, dram)
  assert_same(state, codes, model, rcodes, config, trace, cpi0)
  if pf.num_candidates:
    assert int(state.prefetcher.loads) == rpf.loads
    assert int(state.prefetcher.issued) == rpf.issued
    c = h.counters(state.cache)
    assert int(c["pf_issued"]) > 0 and int(c["pf_refused"]) > 0  # the budget binds
  c = h.counters(state.cache)
  for name in ("l1d_hit", "l2_hit", "llc_hit", "l1d_writeback", "mshr_full", "l1d_merged"):
    assert int(c[name]) > 0, name  # the trace exercises it


@hypothesis.settings(deadline=None, max_examples=12)
@hypothesis.given(seed=st.integers(0, 2**31 - 1), degree=st.integers(1, 3),
                  fill=st.integers(0, 2), miss_only=st.booleans(),
                  dram=st.integers(1, 300), cpi=st.sampled_from([1, 3, 0.5, 1.25]))
def test_runner_matches_reference_hypothesis(seed, degree, fill, miss_only, dram, cpi):
  pparams = NL3.make_params(degree=degree, fill_level=fill, on_miss_only=miss_only)
  trace = random_trace(seed)
  state, codes, model, rcodes, _ = run_both(trace, SMALL_CASCADE, NL3, pparams, cpi, dram)
  assert_same(state, codes, model, rcodes, SMALL_CASCADE, trace, cpi)


@pytest.mark.parametrize("prefetcher", [protocol.NONE, NL1], ids=["none", "next_line"])
def test_default_hierarchy_matches_reference(prefetcher):
  trace = random_trace(5, n=1500, span=3000)
  pparams = prefetcher.make_params()
  state, codes, model, rcodes, _ = run_both(trace, DEFAULT, prefetcher, pparams)
  assert_same(state, codes, model, rcodes, DEFAULT, trace)


# ----------------------------------------------------------------------------- runner


def test_padded_trace_equals_unpadded():
  trace = random_trace(3, n=N_RANDOM - 40)
  rng = np.random.default_rng(0)
  n = N_RANDOM
  keep = np.sort(rng.choice(n, size=n - 40, replace=False))
  def scatter(values, fill):
    out = np.full((n,), fill, values.dtype)
    out[keep] = values
    return out
  padded = runner.TraceArrays(
      block=scatter(trace.block, -7),  # garbage in padding, even invalid values
      pc_hash=scatter(trace.pc_hash, 3),
      is_store=scatter(trace.is_store, 1),
      instr=scatter(trace.instr, 0),
      valid=np.isin(np.arange(n), keep))
  params = h.make_params(prefetcher=NL1.make_params())
  want, want_codes = runner.run(trace, SMALL_CASCADE, params, NL1)
  got, got_codes = runner.run(padded, SMALL_CASCADE, params, NL1)
  got_codes = np.asarray(got_codes)
  assert (got_codes[~padded.valid] == -1).all()
  assert got_codes[keep].tolist() == np.asarray(want_codes).tolist()
  jax.tree.map(np.testing.assert_array_equal, got, want)


def test_vmap_over_traces_and_params_equals_single_runs():
  traces = [random_trace(10), random_trace(11)]
  batch = runner.TraceArrays(*[np.stack([getattr(t, f) for t in traces])
                               for f in runner.TraceArrays._fields])
  params = [h.make_params(dram_latency=d, prefetcher=NL1.make_params(fill_level=f))
            for d, f in ((160, "l1d"), (40, "l2"))]
  singles = [runner.run(t, SMALL_SRRIP, p, NL1) for t, p in zip(traces, params)]
  both = runner.run_batch(batch, SMALL_SRRIP, h.stack_params(params), NL1, trace_axis=0,
                          params_axis=0)
  for i, single in enumerate(singles):
    jax.tree.map(lambda b, s: np.testing.assert_array_equal(np.asarray(b)[i], s), both, single)
  # One trace, a sweep of params: also the plain jax.vmap of `run`.
  swept = jax.vmap(lambda p: runner.run(traces[0], SMALL_SRRIP, p, NL1))(h.stack_params(params))
  for i, p in enumerate(params):
    single = runner.run(traces[0], SMALL_SRRIP, p, NL1)
    jax.tree.map(lambda b, s: np.testing.assert_array_equal(np.asarray(b)[i], s), swept, single)


def test_new_params_values_do_not_recompile():
  trace = random_trace(4)
  runner.run(trace, SMALL_SRRIP, h.make_params(prefetcher=NL1.make_params()), NL1)
  with testing.count_lowerings() as lowerings:
    runner.run(random_trace(6), SMALL_SRRIP,
               h.make_params(cpi0=0.5, dram_latency=77,
                             prefetcher=NL1.make_params(fill_level="l2", on_miss_only=True)),
               NL1)
  assert not lowerings


def test_runner_masks_the_state_of_a_prefetcher_that_does_not():
  # A prefetcher that counts every train call and leaves masking to the runner
  # (self_masking False): only L1D demand loads of valid steps may count.
  counting = protocol.Prefetcher(
      name="counting", num_candidates=0, make_params=lambda: (),
      init=lambda p: jnp.zeros((), jnp.int32),
      train=lambda s, access, hit_l1, now, p: s + 1,
      issue=lambda s, cache, access, now, budget, p: (s, protocol.no_candidates(0)))
  trace = random_trace(2)
  state, _ = runner.run(trace, TINY_LRU, h.make_params(), counting)
  assert int(state.prefetcher) == int((np.asarray(trace.is_store) == 0).sum())


def test_accepted_mask_is_the_first_budget_valid_candidates():
  valid = jnp.array([True, False, True, True, False, True])
  assert protocol.accepted_mask(valid, 2).tolist() == [True, False, True, False, False, False]
  assert protocol.accepted_mask(valid, 0).tolist() == [False] * 6
  assert protocol.accepted_mask(valid, 9).tolist() == valid.tolist()


def test_summarize_coverage_against_a_baseline():
  # A stream of 64 blocks, far apart: no prefetch misses all 64 at every level;
  # next-line misses only the first (each later block was prefetched): L1D
  # coverage 63/64; DRAM reads 64 either way, plus 1 useless prefetch (block 64).
  trace = spaced(np.arange(64))
  config = h.CacheConfig()
  base, _ = runner.run(trace, config, h.make_params())
  pf, _ = runner.run(trace, config, h.make_params(prefetcher=NL1.make_params()), NL1)
  out = h.summarize(pf.cache, base.cache)
  assert out["l1d_coverage"] == pytest.approx(63 / 64)
  assert out["llc_coverage"] == pytest.approx(63 / 64)
  assert out["accuracy"] == pytest.approx(1.0)  # 63 useful, the 64th still resident
  assert int(out["pf_resident"]) == 1
  assert out["dram_traffic_ratio"] == pytest.approx(65 / 64)
  assert out["l1d_mpki"] == pytest.approx(1000 * 1 / (63 * FAR + 1))


# ----------------------------------------------------------------------------- errors


def test_config_errors():
  with pytest.raises(ValueError, match=r"LevelConfig.sets: expected a power of two.*given 48"):
    h.LevelConfig(sets=48, ways=4, latency=5, mshr=8)
  with pytest.raises(ValueError, match=r"power of two"):
    h.CacheConfig.make(l2=dict(sets=1000))
  with pytest.raises(ValueError, match=r"levels: expected names among 'l1d', 'l2', 'llc'.*l3"):
    h.CacheConfig.make(l3=dict(sets=2))
  with pytest.raises(ValueError, match=r"l1d: unknown LevelConfig field"):
    h.CacheConfig.make(l1d=dict(size=2))
  with pytest.raises(ValueError, match=r"replacement: expected one of 'lru', 'srrip'.*plru"):
    h.CacheConfig.make(replacement="plru")
  with pytest.raises(ValueError, match=r"writebacks: expected one of"):
    h.CacheConfig(writebacks="sometimes")
  with pytest.raises(ValueError, match=r"fill_level: expected one of 'l1d', 'l2', 'llc'.*'l3'"):
    NL1.make_params(fill_level="l3")
  with pytest.raises(ValueError, match=r"degree: expected 1..1.*given 2"):
    NL1.make_params(degree=2)
  with pytest.raises(ValueError, match=r"cpi0: expected a positive"):
    h.make_params(cpi0=0)
  with pytest.raises(ValueError, match=r"dram_latency: expected 1"):
    h.make_params(dram_latency=0)


def test_trace_errors():
  params = h.make_params()
  with pytest.raises(ValueError, match=r"at least one access, given an empty trace"):
    runner.run(runner.make_trace(np.zeros((0,), np.int32)), TINY_LRU, params)
  with pytest.raises(ValueError, match=r"trace.block: expected 0..2147483647 where valid, given -1"
                     r" at index 1"):
    runner.run(runner.make_trace(np.array([3, -1], np.int32)), TINY_LRU, params)
  with pytest.raises(ValueError, match=r"trace.instr: .*non-decreasing.* 5 then 4 at index 2"):
    runner.run(runner.make_trace(np.array([1, 2, 3], np.int32), instr=np.array([0, 5, 4])),
               TINY_LRU, params)
  with pytest.raises(ValueError, match=r"trace.is_store: expected shape \(2,\)"):
    runner.run(runner.make_trace(np.array([1, 2], np.int32), is_store=np.zeros(3, np.int8)),
               TINY_LRU, params)
  with pytest.raises(TypeError, match=r"trace.block: expected an integer dtype, given float32"):
    runner.run(runner.make_trace(np.array([1.0, 2.0], np.float32)), TINY_LRU, params)
  with pytest.raises(TypeError, match=r"trace: expected a field 'instr'"):
    runner.run({"block": np.array([1], np.int32), "pc_hash": np.zeros(1, np.int32),
                "is_store": np.zeros(1, np.int8)}, TINY_LRU, params)
  with pytest.raises(TypeError, match=r"prefetcher: expected a protocol.Prefetcher"):
    runner.run(spaced([1]), TINY_LRU, params, prefetcher="next_line")
  with pytest.raises(ValueError, match=r"exceeds 1073741824 cycles"):
    runner.run(runner.make_trace(np.array([1], np.int32), instr=np.array([2**29])), TINY_LRU,
               h.make_params(cpi0=4))
  # A mapping with the trace fields works (valid defaults to all True).
  state, codes = runner.run({"block": np.array([1, 1], np.int32),
                             "pc_hash": np.zeros(2, np.int32),
                             "is_store": np.zeros(2, np.int8),
                             "instr": np.array([0, FAR], np.int32)}, TINY_LRU, params)
  assert levels(codes) == [3, 0]


def test_bad_candidates_shape_is_reported():
  bad = protocol.Prefetcher(
      name="bad", num_candidates=2, make_params=lambda: (), init=lambda p: (),
      train=lambda s, a, hit, now, p: s,
      issue=lambda s, cache, a, now, budget, p: (s, protocol.no_candidates(3)))
  with pytest.raises(ValueError,
                     match=r"prefetcher 'bad': candidates.block_K: expected shape \(2,\)"):
    runner.run(spaced([1]), TINY_LRU, h.make_params(), bad)
