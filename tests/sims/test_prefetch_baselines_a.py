"""IP-stride, SMS and Bingo (papers/prefetch.md 1.2): hand-worked prefetch streams, the
JAX prefetchers against their plain-Python references event for event inside the cache
runner (random and synthetic traces), no recompiles for new params, storage, errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsys._src import testing
from jaxsys.sims.cache import hierarchy as h
from jaxsys.sims.cache import protocol
from jaxsys.sims.cache import reference as ref
from jaxsys.sims.cache import runner
from jaxsys.sims.prefetch import baselines_a_reference as R
from jaxsys.sims.prefetch import bingo
from jaxsys.sims.prefetch import ip_stride
from jaxsys.sims.prefetch import sms
from jaxsys.sims.traces import format as trace_format
from jaxsys.sims.traces import synthetic

# Small prefetchers (one compile each) and one small hierarchy for every runner test.
IPS = ip_stride.ip_stride(4, max_sets=4, max_ways=2)
SMALL_REGION = dict(pht_entries=64, pht_ways=4, ft_entries=8, ft_ways=2, at_entries=4,
                    at_ways=2, pb_entries=4)
SMS = sms.sms(**SMALL_REGION)
BINGO = bingo.bingo(**SMALL_REGION)
CONFIG = h.CacheConfig.make(l1d=dict(sets=8, ways=2, mshr=8), l2=dict(sets=16, ways=4),
                            llc=dict(sets=32, ways=4), pq_size=4)
N_RANDOM = 1200
FAR = 1000  # instructions between accesses that never overlap in time


# ----------------------------------------------------------------------------- helpers


@jax.jit
def _no_op(x):
  return x


_issue_jit = {}


def jax_stream(pf, pparams, blocks, pcs, budget=32):
  """The valid candidates [(block, level)] of each load, calling issue directly."""
  if pf not in _issue_jit:
    def one(pstate, block, pc, budget, pparams):
      access = protocol.Access(block=block, pc_hash=pc, is_store=jnp.bool_(False),
                               instr=jnp.int32(0), valid=jnp.bool_(True),
                               load=jnp.bool_(True), level=jnp.int32(3),
                               pf_hit=jnp.bool_(False), late=jnp.bool_(False))
      pstate = pf.train(pstate, access, jnp.bool_(False), jnp.int32(0), pparams)
      return pf.issue(pstate, (), access, jnp.int32(0), budget, pparams)
    _issue_jit[pf] = jax.jit(one)
  step = _issue_jit[pf]
  pstate = pf.init(pparams)
  out = []
  for b, pc in zip(blocks, pcs):
    pstate, cand = step(pstate, jnp.int32(b), jnp.int32(pc), jnp.int32(budget), pparams)
    valid = np.asarray(cand.valid_K)
    out.append(list(zip(np.asarray(cand.block_K)[valid].tolist(),
                        np.asarray(cand.fill_level_K)[valid].tolist())))
  return out, pstate


def ref_stream(rpf, blocks, pcs, budget=32):
  out = []
  for b, pc in zip(blocks, pcs):
    access = ref.RefAccess(b, pc, 0, 0, 3, False, False)
    rpf.train(access)
    out.append(list(rpf.issue(access, budget)))
  return out


def blocks_only(stream):
  return [[b for b, _ in cands] for cands in stream]


def ref_ip(pparams, sets=4, ways=2):
  return R.IPStride(int(pparams.degree), int(pparams.sets), int(pparams.ways),
                    int(pparams.threshold), int(pparams.fill_level), bool(pparams.cross_page))


def ref_region(kind, pparams):
  p = pparams
  return R.RegionPrefetcher(kind, ft=(int(p.ft_sets), int(p.ft_ways)),
                            at=(int(p.at_sets), int(p.at_ways)),
                            pht=(int(p.pht_sets), int(p.pht_ways)),
                            pb_entries=int(p.pb_entries), fill_level=int(p.fill_level),
                            threshold_pct=int(p.threshold_pct))


def reference_for(pf, pparams):
  if pf.name.startswith("ip_stride"):
    return ref_ip(pparams)
  return ref_region(pf.name, pparams)


def ref_stats(pf, rpf):
  if pf.name.startswith("ip_stride"):
    return [rpf.loads, rpf.triggers, rpf.issued]
  return rpf.stats()


def region_tables(pstate):
  """The JAX FT / AT / PHT / PB contents as comparable sets."""
  def live(t):
    t = np.asarray(t).reshape(-1, np.shape(t)[-1])
    return t[t[:, 0] >= 0]
  ft = {(int(r), int(pc), int(b)) for _, r, pc, b in live(pstate.ft)}
  at = {(int(r), int(pc), int(b), int(f) & 0xffffffff) for _, r, pc, b, f in live(pstate.at)}
  pht = {(int(pc), int(b), int(f) & 0xffffffff) for _, pc, b, f in live(pstate.pht)}
  pb = {(int(r), int(f) & 0xffffffff) for _, r, f in live(pstate.pb)}
  return ft, at, pht, pb


def ref_region_tables(rpf, kind):
  ft = {(r, e["pc"], e["block"]) for s in rpf.ft.sets for r, e in s.items()}
  at = {(r, e["pc"], e["block"], e["pattern"]) for s in rpf.at.sets for r, e in s.items()}
  pht = {(key[0], e["block"], e["pattern"]) for s in rpf.pht.sets for key, e in s.items()}
  pb = set(rpf.pb.sets[0].items())
  return ft, at, pht, pb


def run_both(trace, pf, pparams, config=CONFIG):
  state, codes = runner.run(trace, config, h.make_params(prefetcher=pparams), pf)
  rpf = reference_for(pf, pparams)
  model, rcodes = ref.run_reference(trace, config, prefetcher=rpf)
  return state, np.asarray(codes).tolist(), model, rcodes, rpf


def assert_same(pf, state, codes, model, rcodes, rpf):
  if codes != rcodes:
    i = next(i for i, (a, b) in enumerate(zip(codes, rcodes)) if a != b)
    raise AssertionError(f"{pf.name} step {i}: JAX code {codes[i]}, reference {rcodes[i]}")
  got = {k: int(v) for k, v in h.counters(state.cache).items()}
  want = model.counters()
  assert got == want
  assert np.asarray(state.prefetcher.stats).tolist() == ref_stats(pf, rpf)
  if pf.name.startswith("ip_stride"):
    table = np.asarray(state.prefetcher.table_SWF)
    got_t = {(s, int(e[ip_stride.PC]), int(e[ip_stride.LAST]), int(e[ip_stride.STRIDE]),
              int(e[ip_stride.CONF])) for s in range(table.shape[0]) for e in table[s]
             if e[ip_stride.STAMP] >= 0}
    want_t = {(s, pc, e["last"], e["stride"], e["conf"])
              for s, ways in enumerate(rpf.table.sets) for pc, e in ways.items()}
    assert got_t == want_t
  else:
    assert region_tables(state.prefetcher) == ref_region_tables(rpf, pf.name)


def spaced(blocks, pcs):
  blocks = np.asarray(blocks, np.int32)
  return runner.make_trace(blocks, pc_hash=np.asarray(pcs, np.int32),
                           instr=(np.arange(len(blocks)) * FAR).astype(np.int32))


def random_trace(seed, n=N_RANDOM):
  """Even PCs stride by 1-3 blocks; odd PCs touch recurring footprints in many
  regions; random jumps, stores, bursts and pauses."""
  rng = np.random.default_rng(seed)
  pcs = rng.integers(0, 6, n).astype(np.int32)
  count = np.zeros(n, np.int64)
  for pc in range(6):
    m = pcs == pc
    count[m] = np.arange(int(m.sum()))
  stride = 1 + pcs // 2
  strided = pcs * 4096 + (stride * count) % 4096
  offsets = np.array([0, 3, 5, 9, 12, 20])
  region = (pcs * 1000 + 30000 + rng.integers(0, 24, n)) * 32
  footprint = region + offsets[rng.integers(0, 6, n) % np.where(pcs == 3, 3, 6)]
  block = np.where(pcs % 2 == 0, strided, footprint)
  jump = rng.random(n) < 0.05
  block[jump] = rng.integers(0, 4000, int(jump.sum()))
  gap = np.where(rng.random(n) < 0.7, rng.integers(0, 4, n), rng.integers(50, 400, n))
  return runner.make_trace(block.astype(np.int32), pc_hash=pcs,
                           is_store=(rng.random(n) < 0.15).astype(np.int8),
                           instr=np.cumsum(gap).astype(np.int32))


# ----------------------------------------------------------------------------- IP-stride


def test_ip_stride_hand_worked_stream():
  # One PC strides by 3 blocks from block 0 (page 0 = blocks 0..63):
  #   0  miss: allocate (last 0, stride 0, conf 0)        -> nothing
  #   3  stride 3 != 0: conf 0, stride 3                  -> nothing
  #   6  stride 3 == 3: conf 1 >= threshold 1             -> 9, 12, 15
  #   9  conf 2                                           -> 12, 15, 18
  #   9  stride 0: only an LRU touch                      -> nothing
  #  13  stride 4 != 3: conf 0                            -> nothing
  #  17  stride 4 == 4: conf 1                            -> 21, 25, 29
  #  56  stride 39: conf 0; 95  stride 39: conf 1 -> 134.. leave page 1 (64..127): none
  blocks = [0, 3, 6, 9, 9, 13, 17, 56, 95]
  want = [[], [], [9, 12, 15], [12, 15, 18], [], [], [21, 25, 29], [], []]
  pparams = IPS.make_params(degree=3)
  got, pstate = jax_stream(IPS, pparams, blocks, [5] * len(blocks))
  assert blocks_only(got) == want
  assert all(level == 0 for cands in got for _, level in cands)  # L1D fill
  assert blocks_only(ref_stream(ref_ip(pparams), blocks, [5] * len(blocks))) == want
  assert np.asarray(pstate.stats).tolist() == [9, 4, 9]  # loads, triggers (6, 9, 17, 95), accepted


def test_ip_stride_params_threshold_degree_page_sign():
  pcs = [1] * 4
  # Degree 4, threshold 2: needs three equal strides; negative stride 2 down from 40.
  p = IPS.make_params(degree=4, threshold=2)
  got, _ = jax_stream(IPS, p, [40, 38, 36, 34], pcs)
  assert blocks_only(got) == [[], [], [], [32, 30, 28, 26]]
  # Page limit: 59 + 3 = 62 stays in page 0, 65 does not (unless cross_page).
  p = IPS.make_params(degree=3)
  got, _ = jax_stream(IPS, p, [53, 56, 59], pcs)
  assert blocks_only(got) == [[], [], [62]]
  p = IPS.make_params(degree=3, cross_page=True, fill_level="l2")
  got, _ = jax_stream(IPS, p, [53, 56, 59], pcs)
  assert got == [[], [], [(62, 1), (65, 1), (68, 1)]]
  # Never below block 0 or above int32.
  got, _ = jax_stream(IPS, IPS.make_params(degree=4, cross_page=True), [8, 5, 2], pcs)
  assert blocks_only(got) == [[], [], []]  # -1 < 0
  top = 2**31 - 1
  got, _ = jax_stream(IPS, IPS.make_params(degree=4, cross_page=True),
                      [top - 20, top - 10, top], pcs)
  assert blocks_only(got) == [[], [], []]


def test_ip_stride_in_the_runner_hand_worked():
  # Far apart in time (every prefetch done), L1D 8 sets: blocks 0..18 never conflict.
  #   0, 3: DRAM (3), nothing issued; 6: DRAM, issues 9, 12, 15 (code 3 + 8*3);
  #   9, 12: L1D hits on prefetched lines (0), each issues 3 (two redundant, one new).
  trace = spaced([0, 3, 6, 9, 12], [5] * 5)
  state, codes, model, rcodes, rpf = run_both(trace, IPS, IPS.make_params(degree=3))
  assert codes == [3, 3, 3 + 24, 0 + 24, 0 + 24]
  assert_same(IPS, state, codes, model, rcodes, rpf)
  c = h.counters(state.cache)
  assert int(c["l1d_pf_useful"]) == 2 and int(c["l1d_pf_redundant"]) == 4


# ----------------------------------------------------------------------------- SMS / Bingo

# Three generations of PC 7 triggered at offset 2 (AT holds one region, so each
# promotion ends the previous generation and trains the PHT with it):
#   A: region 0, blocks 2, 5, 9    footprint {2, 5, 9}
#   B: region 1, blocks 34, 38, 41 footprint {2, 6, 9}
#   C: region 2, blocks 66, 71, 73 footprint {2, 7, 9}
#   flush: PC 1, region 40 (1280, 1281): its promotion trains C.
# B's trigger (34) finds nothing; C's trigger (66) finds A's footprint (the only
# one with that key yet): 69, 73.
GENERATIONS = [2, 5, 9, 34, 38, 41, 66, 71, 73, 1280, 1281]
GEN_PCS = [7] * 9 + [1, 1]
GEN_WANT = [[]] * 6 + [[69, 73]] + [[]] * 4
ONE_AT = dict(at_entries=1, at_ways=1)


def test_sms_hand_worked_stream():
  p = SMS.make_params(**ONE_AT)
  # Then: block 98 (region 3, offset 2, PC 7): SMS's key (7, 2) holds the last
  # footprint trained, C's {2, 7, 9}: 103, 105 (circularly upward from offset 3).
  # Block 34 again (region 1, no longer in FT / AT: a trigger): the same key -> 39, 41.
  # Block 131 (PC 7, offset 3) and block 162 (PC 8, offset 2): no PHT entry.
  # Block 200 (region 6, offset 8, PC 7): nothing.
  blocks = GENERATIONS + [98, 34, 131, 162]
  pcs = GEN_PCS + [7, 7, 7, 8]
  want = GEN_WANT + [[103, 105], [39, 41], [], []]
  got, pstate = jax_stream(SMS, p, blocks, pcs)
  assert blocks_only(got) == want
  assert blocks_only(ref_stream(ref_region("sms", p), blocks, pcs)) == want
  # loads, triggers (2, 34, 66, 1280, 98, 34, 131, 162), predictions (66, 98, 34),
  # trainings (A, B, C), accepted (2 + 2 + 2)
  assert np.asarray(pstate.stats).tolist() == [15, 8, 3, 3, 6]


def test_sms_prefetch_buffer_keeps_refused_candidates():
  # Budget 1: the trigger at 98 issues 103; 105 waits in the PB. A load of block
  # 110 (region 3, offset 14) drains it circularly from offset 15: 105 (offset 9).
  p = SMS.make_params(**ONE_AT)
  blocks = GENERATIONS + [98, 110, 111]
  pcs = GEN_PCS + [7, 7, 7]
  got, pstate = jax_stream(SMS, p, blocks, pcs, budget=1)
  # Candidates are offered in order; the cache takes the first `budget` (1).
  assert blocks_only(got)[-3:] == [[103, 105], [105], []]
  assert blocks_only(ref_stream(ref_region("sms", p), blocks, pcs, budget=1))[-3:] == (
      [[103, 105], [105], []])
  assert int(np.sum(np.asarray(pstate.pb)[:, 0] >= 0)) == 0  # drained: entry freed
  # A demand of a pending block clears it: trigger at 98, then load 105 itself.
  got, _ = jax_stream(SMS, p, GENERATIONS + [98, 105], GEN_PCS + [7, 7], budget=0)
  assert blocks_only(got)[-2:] == [[103, 105], [103]]


def test_bingo_long_then_short_event_with_votes():
  p = BINGO.make_params(**ONE_AT)
  # Block 98 (PC 7, region 3): no long event (7, 98) in the PHT; the short event
  # (7, 2) matches A, B and C: offset 9 has 3/3 votes, offsets 5, 6, 7 have 1/3
  # = 33% >= 20% -> 101, 102, 103, 105.
  # Block 34 (region 1 again): the long event (7, 34) is B's -> {2, 6, 9}: 38, 41.
  blocks = GENERATIONS + [98, 34]
  pcs = GEN_PCS + [7, 7]
  want = GEN_WANT + [[101, 102, 103, 105], [38, 41]]
  got, _ = jax_stream(BINGO, p, blocks, pcs)
  assert blocks_only(got) == want
  assert blocks_only(ref_stream(ref_region("bingo", p), blocks, pcs)) == want
  # Threshold 50%: only offset 9 (3/3) survives the vote; the long match is unchanged.
  p50 = BINGO.make_params(threshold_pct=50, **ONE_AT)
  want50 = GEN_WANT + [[105], [38, 41]]  # (66: one voter, 1/1 >= 50%)
  got, _ = jax_stream(BINGO, p50, blocks, pcs)
  assert blocks_only(got) == want50
  assert blocks_only(ref_stream(ref_region("bingo", p50), blocks, pcs)) == want50


def test_bingo_retraining_a_long_event_overwrites_it():
  # Region 0 again with PC 7 at offset 2, footprint {2, 3}: the long event (7, 2)
  # is overwritten (not a second entry); a new trigger at block 2 predicts 3 only.
  p = BINGO.make_params(**ONE_AT)
  blocks = GENERATIONS + [2, 3, 1312, 1313, 2]
  pcs = GEN_PCS + [7, 7, 1, 1, 7]
  got, pstate = jax_stream(BINGO, p, blocks, pcs)
  assert blocks_only(got)[-1] == [3]
  pht = region_tables(pstate)[2]
  assert sorted(f for pc, b, f in pht if (pc, b) == (7, 2)) == [0b1100]
  assert blocks_only(ref_stream(ref_region("bingo", p), blocks, pcs))[-1] == [3]


# ----------------------------------------------------------------------------- parity


PARITY = [
    (IPS, dict(degree=3)),
    (IPS, dict(degree=4, threshold=2, ways=1, sets=2, cross_page=True, fill_level="l2")),
    (SMS, dict()),
    (SMS, dict(pht_entries=16, pht_ways=2, at_entries=2, at_ways=1, pb_entries=2)),
    (BINGO, dict()),
    (BINGO, dict(threshold_pct=50, ft_entries=2, ft_ways=1, fill_level="llc")),
]


@pytest.mark.parametrize("case", range(len(PARITY)))
@pytest.mark.parametrize("seed", [0, 1])
def test_runner_matches_reference_on_random_traces(case, seed):
  pf, kw = PARITY[case]
  trace = random_trace(seed)
  state, codes, model, rcodes, rpf = run_both(trace, pf, pf.make_params(**kw))
  assert_same(pf, state, codes, model, rcodes, rpf)
  c = h.counters(state.cache)
  assert int(c["pf_issued"]) > 0 and int(c["pf_refused"]) > 0  # the budget binds
  if pf is not IPS:
    stats = np.asarray(state.prefetcher.stats)
    assert stats[sms.S_PREDICTIONS] > 0 and stats[sms.S_TRAININGS] > 0


@pytest.mark.parametrize("generator", ["aos_walk", "strided", "stencil2d_row", "phase_mix"])
def test_runner_matches_reference_on_synthetic_traces(generator):
  trace = trace_format.to_sim_arrays(synthetic.generate(generator, N_RANDOM, seed=3))
  for pf in (IPS, SMS, BINGO):
    state, codes, model, rcodes, rpf = run_both(trace, pf, pf.make_params())
    assert_same(pf, state, codes, model, rcodes, rpf)


def test_default_sizes_match_reference_on_aos_walk():
  # The paper-size tables (16K-entry PHTs, FT / AT 64 x 8, PB 32; tracker 256 x 4)
  # on the default hierarchy.
  trace = trace_format.to_sim_arrays(synthetic.generate("aos_walk", 1500, seed=1))
  config = h.CacheConfig()
  for pf in (ip_stride.ip_stride(), sms.sms(), bingo.bingo()):
    params = pf.make_params()
    state, codes, model, rcodes, rpf = run_both(trace, pf, params, config)
    assert_same(pf, state, codes, model, rcodes, rpf)
    if pf.name != "ip_stride3":
      assert int(state.prefetcher.stats[sms.S_PREDICTIONS]) > 0


# ----------------------------------------------------------------------------- jit / vmap


def test_new_param_values_do_not_recompile():
  trace = random_trace(2)
  for pf, first, second in (
      (IPS, dict(degree=3), dict(degree=1, threshold=3, sets=1, ways=1, fill_level="l2")),
      (SMS, dict(), dict(pht_entries=8, pht_ways=1, pb_entries=1, at_entries=1, at_ways=1)),
      (BINGO, dict(), dict(threshold_pct=90, ft_entries=4, ft_ways=1, fill_level="llc"))):
    runner.run(trace, CONFIG, h.make_params(prefetcher=pf.make_params(**first)), pf)
    with testing.count_lowerings() as lowerings:
      state, _ = runner.run(random_trace(3), CONFIG,
                            h.make_params(dram_latency=90, prefetcher=pf.make_params(**second)),
                            pf)
      jax.block_until_ready(state)
    assert not lowerings, pf.name


def test_vmap_over_params_is_a_sweep_of_single_runs():
  trace = random_trace(4)
  params = [h.make_params(prefetcher=BINGO.make_params(threshold_pct=t, pht_entries=e))
            for t, e in ((20, 64), (60, 16))]
  swept = runner.run_batch(trace, CONFIG, h.stack_params(params), BINGO, trace_axis=None,
                           params_axis=0)
  for i, p in enumerate(params):
    single = runner.run(trace, CONFIG, p, BINGO)
    jax.tree.map(lambda b, s: np.testing.assert_array_equal(np.asarray(b)[i], s), swept, single)


def test_factories_are_cached():
  assert ip_stride.ip_stride() is ip_stride.ip_stride()
  assert sms.sms(**SMALL_REGION) is SMS and bingo.bingo(**SMALL_REGION) is BINGO
  assert (IPS.num_candidates, SMS.num_candidates, BINGO.num_candidates) == (4, 32, 32)
  assert SMS.self_masking and BINGO.self_masking and IPS.self_masking


# ----------------------------------------------------------------------------- storage


def test_storage_bits():
  # IP-stride: 256 x (16 tag + 32 block + 7 stride + 2 conf + 2 LRU) = 15104 bits.
  assert ip_stride.storage_bits() == 256 * 59 == 15104
  assert ip_stride.storage_bits(64, 1) == 64 * 57
  # SMS: FT 64 x (31 + 16 + 5 + 3), AT 64 x (31 + 16 + 5 + 32 + 3),
  # PHT 16384 x (11 tag + 32 + 4 LRU), PB 32 x (31 + 32 + 5).
  assert sms.storage_bits() == 64 * 55 + 64 * 87 + 16384 * 47 + 32 * 68 == 781312
  # Bingo: the PHT tag holds the long event: 16 + 32 - 10 = 38 bits.
  assert bingo.storage_bits() == 64 * 55 + 64 * 87 + 16384 * 74 + 32 * 68 == 1223680
  assert bingo.storage_bits(pht_entries=1024) - sms.storage_bits(pht_entries=1024) == (
      1024 * ((16 + 32 - 6) - 11))
  assert sms.storage_bits(pht_entries=1024) < sms.storage_bits()


# ----------------------------------------------------------------------------- errors


def test_errors():
  with pytest.raises(ValueError, match=r"degree: expected 1\.\.4"):
    IPS.make_params(degree=5)
  with pytest.raises(ValueError, match=r"degree: expected 1\.\.4"):
    IPS.make_params(degree=0)
  with pytest.raises(TypeError, match=r"degree: expected an int, given 2.5"):
    IPS.make_params(degree=2.5)
  with pytest.raises(ValueError, match=r"sets: expected a power of two"):
    IPS.make_params(sets=3)
  with pytest.raises(ValueError, match=r"ways: expected 1\.\.2"):
    IPS.make_params(ways=3)
  with pytest.raises(ValueError, match=r"threshold: expected 1\.\.3"):
    IPS.make_params(threshold=0)
  with pytest.raises(ValueError, match=r"max_sets: expected a power of two"):
    ip_stride.ip_stride(3, max_sets=48)
  with pytest.raises(ValueError, match=r"max_degree: expected 1\.\.64"):
    ip_stride.ip_stride(0)
  with pytest.raises(ValueError, match=r"fill_level"):
    IPS.make_params(fill_level="l3")
  with pytest.raises(ValueError, match=r"pht_entries // pht_ways: expected a power of two"):
    sms.sms(pht_entries=48, pht_ways=4)
  with pytest.raises(ValueError, match=r"pht_entries: expected a multiple of pht_ways"):
    bingo.bingo(pht_entries=100, pht_ways=16)
  with pytest.raises(ValueError, match=r"region_blocks: expected a power of two"):
    sms.sms(region_blocks=24)
  with pytest.raises(ValueError, match=r"region_blocks: expected 1\.\.32"):
    sms.sms(region_blocks=64)
  with pytest.raises(ValueError, match=r"pht_entries: expected at most 16 sets"):
    SMS.make_params(pht_entries=128)
  with pytest.raises(ValueError, match=r"at_ways: expected 1\.\.2"):
    SMS.make_params(at_ways=4)
  with pytest.raises(ValueError, match=r"pb_entries: expected 1\.\.4"):
    BINGO.make_params(pb_entries=8)
  with pytest.raises(ValueError, match=r"threshold_pct: expected 1\.\.100"):
    BINGO.make_params(threshold_pct=0)
  with pytest.raises(TypeError, match=r"threshold_pct"):
    SMS.make_params(threshold_pct=20)  # SMS has no vote
  with pytest.raises(ValueError, match=r"entries: expected a multiple of ways"):
    ip_stride.storage_bits(10, 4)


@pytest.mark.parametrize("module", [ip_stride, sms, bingo, R], ids=lambda m: m.__name__)
def test_docstring_examples(module):
  import doctest  # pylint: disable=import-outside-toplevel
  result = doctest.testmod(module)
  assert result.failed == 0
