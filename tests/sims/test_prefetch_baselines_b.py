"""PMP, Berti (simplified) and SPP: hand-derived prefetch streams, the JAX
prefetchers against the plain-Python references event for event (inside
`runner.run` / `run_reference`), synthetic traces, no recompiles, storage and
errors.

Compiles dominate the runtime, so every small-geometry run goes through one
recording wrapper per prefetcher on traces padded to one length `N`.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsys._src import testing
from jaxsys.sims.cache import hierarchy as h
from jaxsys.sims.cache import protocol
from jaxsys.sims.cache import reference as ref
from jaxsys.sims.cache import runner
from jaxsys.sims.prefetch import baselines_b_reference as bref
from jaxsys.sims.prefetch import berti
from jaxsys.sims.prefetch import pmp
from jaxsys.sims.prefetch import spp
from jaxsys.sims.traces import format as tformat
from jaxsys.sims.traces import synthetic

N = 600  # every small-geometry trace is padded to this length (one compile per prefetcher)
FAR = 1000  # instructions between accesses that never overlap in time
# A small hierarchy: L1D 4 sets x 2 ways, 8 MSHRs, PQ 4, so an idle access has
# budget min(8 - 1 - pq - mshr, 4 - pq) = 4 and evictions happen everywhere.
SMALL = h.CacheConfig.make(l1d=dict(sets=4, ways=2, mshr=8), l2=dict(sets=16, ways=4),
                           llc=dict(sets=32, ways=4), pq_size=4)

# Small-table instances (static geometry) and their references' geometry.
PMP_GEOM = dict(ft_sets=2, ft_ways=2, at_sets=1, at_ways=1, pb_sets=2, pb_ways=2)
PMP_T = pmp.pmp(8, **PMP_GEOM)
BERTI_GEOM = dict(hist_sets=2, hist_ways=4, dt_entries=4, dt_deltas=4)
BERTI_T = berti.berti(**BERTI_GEOM)
SPP_GEOM = dict(st_entries=8, pt_sets=64, ghr_entries=4)
SPP_T = spp.spp(6, **SPP_GEOM)


def make_ref(pf, kw):
  """The reference prefetcher matching a JAX instance and its params kwargs."""
  if isinstance(kw.get("low_fill_level"), str):
    kw = {**kw, "low_fill_level": h.level_index(kw["low_fill_level"])}
  if pf is PMP_T:
    return bref.ReferencePMP(num_candidates=8, **PMP_GEOM, **kw)
  if pf is BERTI_T:
    return bref.ReferenceBerti(**BERTI_GEOM, **kw)
  if pf is SPP_T:
    return bref.ReferenceSPP(**SPP_GEOM, **{"degree": 6, **kw})
  if pf is pmp.pmp():
    return bref.ReferencePMP(**kw)
  if pf is berti.berti():
    return bref.ReferenceBerti(**kw)
  if pf is spp.spp():
    return bref.ReferenceSPP(**kw)
  raise AssertionError(pf)


# ----------------------------------------------------------------------------- recording


def recording(pf: protocol.Prefetcher, n: int = N) -> protocol.Prefetcher:
  """`pf`, also logging per L1D demand load the candidates the cache accepted."""
  K = pf.num_candidates

  def init(pp):
    return (pf.init(pp), jnp.zeros((n, K), jnp.int32), jnp.zeros((n, K), jnp.int32),
            jnp.zeros((n, K), jnp.bool_), jnp.int32(0))

  def train(s, access, hit_l1, now, pp):
    return (pf.train(s[0], access, hit_l1, now, pp),) + tuple(s[1:])

  def issue(s, cache, access, now, budget, pp):
    inner, cand = pf.issue(s[0], cache, access, now, budget, pp)
    ok = (cand.valid_K & (cand.block_K >= 0) & (cand.fill_level_K >= 0)
          & (cand.fill_level_K <= 2))
    take = protocol.accepted_mask(ok, budget)
    i = s[4]
    put = lambda log, row: jax.lax.dynamic_update_index_in_dim(log, row, i, axis=0)
    return (inner, put(s[1], cand.block_K), put(s[2], cand.fill_level_K), put(s[3], take),
            i + 1), cand

  # Not self-masking: the runner keeps the old state (and log position) on
  # steps that are not L1D demand loads.
  return protocol.Prefetcher(name=f"rec_{pf.name}", num_candidates=K,
                             make_params=pf.make_params, init=init, train=train, issue=issue)


RECORDERS = {}


def recorder(pf):
  if pf not in RECORDERS:
    RECORDERS[pf] = recording(pf)
  return RECORDERS[pf]


class RecordingRef:
  """Wraps a reference prefetcher, logging the accepted candidates per load."""

  def __init__(self, inner):
    self.inner = inner
    self.log = []

  def train(self, access):
    self.inner.train(access)

  def issue(self, access, budget):
    out = self.inner.issue(access, budget)
    ok = [c for c in out if c[0] >= 0 and c[1] in (0, 1, 2)]
    self.log.append([(int(b), int(l)) for b, l in ok[:budget]])
    return out


def pad(trace, n=N):
  """A `TraceArrays` padded with invalid steps to length n."""
  t = runner.as_trace(trace)
  m = len(t.block)
  assert m <= n
  extra = n - m
  def p(x, fill):
    return np.concatenate([np.asarray(x), np.full((extra,), fill, np.asarray(x).dtype)])
  last = int(np.asarray(t.instr)[-1])
  return runner.TraceArrays(p(t.block, 0), p(t.pc_hash, 0), p(t.is_store, 0),
                            p(t.instr, last), p(t.valid, False))


def spaced(blocks, pcs=0, gap=FAR):
  blocks = np.asarray(blocks, np.int32)
  pcs = np.broadcast_to(np.asarray(pcs, np.int32), blocks.shape)
  return runner.make_trace(blocks, pc_hash=pcs.copy(),
                           instr=(np.arange(len(blocks)) * gap).astype(np.int32))


def jax_log(state, n_loads):
  _, blk, lvl, take, count = state.prefetcher
  assert int(count) == n_loads
  blk, lvl, take = np.asarray(blk), np.asarray(lvl), np.asarray(take)
  return [[(int(b), int(l)) for b, l, t in zip(blk[i], lvl[i], take[i]) if t]
          for i in range(n_loads)]


def assert_same_run(state, codes, model, rcodes, config):
  """Step codes, every counter and the final L1D / L2 / LLC tags."""
  codes = np.asarray(codes).tolist()[:len(rcodes)]
  if codes != rcodes:
    i = next(i for i, (a, b) in enumerate(zip(codes, rcodes)) if a != b)
    raise AssertionError(f"step {i}: JAX code {codes[i]}, reference {rcodes[i]}")
  got = {k: int(v) for k, v in h.counters(state.cache).items()}
  want = model.counters()
  diff = {k: (got[k], want[k]) for k in want if got[k] != want[k]}
  assert not diff, diff
  for level, lc in enumerate(config.levels):
    tags = np.asarray(state.cache.tables[level])[..., h.TAG]
    assert tags.tolist() == [[line.tag for line in ways] for ways in model.sets[level]], level


def run_both(pf, trace, kw=None, config=SMALL, cpi0=1):
  """JAX (recording, padded to N) and reference runs; returns both logs after checks."""
  kw = {} if kw is None else kw
  params = h.make_params(cpi0=cpi0, prefetcher=pf.make_params(**kw))
  t = runner.as_trace(trace)
  rec = recorder(pf)
  state, codes = runner.run(pad(t), config, params, rec)
  rpf = RecordingRef(make_ref(pf, kw))
  model, rcodes = ref.run_reference(t, config, cpi0=cpi0, prefetcher=rpf)
  assert_same_run(state, codes, model, rcodes, config)
  loads = int((np.asarray(t.is_store) == 0).sum())
  log = jax_log(state, loads)
  assert log == rpf.log
  rpf.codes = rcodes
  return state, rpf, log


def random_trace(seed, n=480, span=40000, n_pcs=8):
  """A few PCs walking with their own strides (some negative), random noise, stores,
  bursts and pauses."""
  rng = np.random.default_rng(seed)
  strides = np.array([1, 2, 3, -1, 5, 7, 1, -3])[:n_pcs]
  start = rng.integers(1000, span - 1000, len(strides))
  pcs = rng.integers(0, len(strides), n)
  step = np.zeros(n, np.int64)
  for p in range(len(strides)):
    m = pcs == p
    step[m] = np.cumsum(np.full(m.sum(), strides[p]))
  block = (start[pcs] + step) % span
  noise = rng.random(n) < 0.15
  block[noise] = rng.integers(0, span, noise.sum())
  gap = np.where(rng.random(n) < 0.7, rng.integers(0, 5, n), rng.integers(20, 300, n))
  return runner.make_trace(block.astype(np.int32),
                           pc_hash=(0x401000 + pcs * 0x140).astype(np.int32),
                           is_store=(rng.random(n) < 0.1).astype(np.int8),
                           instr=np.cumsum(gap).astype(np.int32))


def synthetic_trace(name, n, seed=0):
  arrays = tformat.to_sim_arrays(synthetic.generate(name, n, seed=seed))
  return runner.TraceArrays(arrays.block, arrays.pc_hash, arrays.is_store, arrays.instr,
                            arrays.valid)


# ----------------------------------------------------------------------------- PMP


def test_pmp_hand_worked_stream():
  # R = 64 blocks (4 KB), AT of one entry (so the region moved into AT evicts and
  # trains the previous one), budget 4 per idle access (SMALL), K = 8.
  # Example 1, PC 0 (hash 0). Region A = 10 (base 640): trigger 60, then 62, 1,
  # 3, 50, 56: footprint {60, 62, 1, 3, 50, 56}, anchored at 60 (i = (x-60) mod 64):
  # {0, 2, 5, 7, 54, 60}. B = 11 (base 704): 764 (o 60, OPT[60] empty: nothing),
  # 766 moves B into AT, evicting A: OPT[60] = 1 at {0,2,5,7,54,60}, PPT[0] = 1 at
  # the coarse {0,1,2,3,27,30}. C = 12 (base 768): 828 = first access at 60:
  # every anchored i votes 1/1 in OPT and PPT -> L1D. Rotated back: x = 62, 1, 3,
  # 50, 56; nearest-first from 60: +2 (62), -4 (56), -10 (50), -57 (3), -59 (1).
  # Budget 4: 830, 824, 818, 771 go, 769 stays in the prefetch buffer; at 830
  # (C's next access) the buffer drains it.
  a = [700, 702, 641, 643, 690, 696]
  b = [764, 766]
  c = [828, 830]
  # Example 2, PC 1 (hash 1): footprints with trigger 5 merge into OPT[5].
  # D = 20: 1285, 1287, 1289 ({5,7,9}); E = 21: 1349, 1351 (moves E, trains D:
  # OPT[5] = {0:1, 2:1, 4:1}), 1364 ({5,7,20}); F = 22: 1413 predicts 7, 9 at
  # 1/1 -> L1D: 1415, 1417; 1415 moves F and trains E: OPT[5] = {0:2, 2:2, 4:1,
  # 15:1}, PPT[1] = {0:2, 1:2, 2:1, 7:1}; 1438 ({5,7,30}). G = 23: 1477 predicts
  # 7 (2/2), 9 (1/2 = 50 %), 20 (1/2), all L1 in both tables: 1479, 1481, 1492;
  # 1479 trains F: OPT[5] = {0:3, 2:3, 4:1, 15:1, 25:1}. H = 24: 1541 predicts
  # 7 at 3/3 (L1D) and 9, 20, 30 at 1/3 = 33 % >= 15 %: L2.
  d = [1285, 1287, 1289]
  e = [1349, 1351, 1364]
  f = [1413, 1415, 1438]
  g = [1477, 1479]
  hh = [1541]
  blocks = a + b + c + d + e + f + g + hh
  pcs = [0] * 10 + [1] * 12
  _, _, log = run_both(PMP_T, spaced(blocks, pcs))
  want = [[] for _ in blocks]
  want[blocks.index(828)] = [(830, 0), (824, 0), (818, 0), (771, 0)]
  want[blocks.index(830)] = [(769, 0)]
  want[blocks.index(1413)] = [(1415, 0), (1417, 0)]
  want[blocks.index(1477)] = [(1479, 0), (1481, 0), (1492, 0)]
  want[blocks.index(1541)] = [(1543, 0), (1545, 1), (1556, 1), (1566, 1)]
  assert log == want


def test_pmp_two_kilobyte_regions_rotate_inside_the_region():
  # region_blocks = 32 (the Gaze copy's 2 KB): region A = 20 (base 640) with
  # trigger 30 and offsets 31, 2 (anchored (x-30) mod 32 = {0, 1, 4});
  # B = 21 (base 672): 702, 703 (moves B, trains A). C = 22 (base 704): 734 at
  # 30 predicts x = 31 (+1) and (30+4) mod 32 = 2 (-28), both 1/1 -> L1D.
  blocks = [670, 671, 642, 702, 703, 734]
  _, _, log = run_both(PMP_T, spaced(blocks), dict(region_blocks=32))
  assert log == [[], [], [], [], [], [(735, 0), (706, 0)]]


@pytest.mark.parametrize("seed", [0, 1])
def test_pmp_matches_reference_on_random_traces(seed):
  kw = [dict(), dict(region_blocks=16, l1_pct=60, l2_pct=20, counter_max=4)][seed]
  state, rpf, log = run_both(PMP_T, random_trace(seed), kw, cpi0=[1, 0.5][seed])
  assert sum(map(len, log)) > 50
  c = h.counters(state.cache)
  assert int(c["pf_refused"]) > 0  # the budget binds and the buffer keeps the rest
  assert int(state.prefetcher[0].clock_issued[1]) == rpf.inner.issued
  np.testing.assert_array_equal(np.asarray(state.prefetcher[0].opt), rpf.inner.opt)
  np.testing.assert_array_equal(np.asarray(state.prefetcher[0].ppt), rpf.inner.ppt)


# ----------------------------------------------------------------------------- Berti


def test_berti_hand_worked_timely_delta():
  # One IP (PC 7), blocks 1000 + 2k at cycle 100 k (k = 0..19): every access is
  # a DRAM miss (latency 195) until prefetches start. At event k the timely
  # records are those with cycle <= 100 k - 195, i.e. k-2 and older; the
  # youngest, k-2, gives delta 4 (inserted at k = 2, coverage 1); from then on
  # each event adds 1 to delta 4 (delta 6 from k-3 is never the youngest):
  # coverage k - 1 and search counter k + 1. At k = 15 the counter reaches 16:
  # coverage 14 >= 10 -> status L1D. Each access from then on prefetches
  # b + 4 into L1D: 1034, 1036, 1038, 1040, 1042 (1034, prefetched at cycle
  # 1500 and ready at 1695, is hit on time at 1700).
  blocks = [1000 + 2 * k for k in range(20)]
  trace = spaced(blocks, pcs=7, gap=100)
  _, rpf, log = run_both(BERTI_T, trace)
  want = [[] for _ in blocks]
  for k in range(15, 20):
    want[k] = [(1000 + 2 * k + 4, 0)]
  assert log == want
  assert runner.decode(rpf.codes)["level"].tolist() == [3] * 17 + [0, 0, 0]

  # With l1_conf 15, coverage 14 rates L2 instead: the same blocks go to L2.
  # At k = 17 the demand finds 1034 in L2 (a prefetch hit, latency 15): records
  # up to cycle 1685 are timely, the youngest (k = 16, block 1032) gives the new
  # delta 2; delta 4 keeps its slot.
  state, rpf, log = run_both(BERTI_T, trace, dict(l1_conf=15))
  assert log == [[(b_, 1) for b_, _ in w] for w in want]
  dt = np.asarray(state.prefetcher[0].dt)
  entry = dt[dt[:, berti.DT_PC] == 7][0]
  assert entry[berti.DT_SLOTS:berti.DT_SLOTS + 4].tolist() == [4, 2, 0, 0]


@pytest.mark.parametrize("seed", [0, 1])
def test_berti_matches_reference_on_random_traces(seed):
  kw = [dict(l1_conf=3, l2_conf=2, window=4),
        dict(l1_conf=4, l2_conf=2, window=6, latency=(60, 10, 30, 120), max_delta=64)][seed]
  state, rpf, log = run_both(BERTI_T, random_trace(seed, n_pcs=[8, 3][seed]), kw)
  assert sum(map(len, log)) > 10
  assert {l for step in log for _, l in step} == {0, 1}
  assert int(state.prefetcher[0].clock_issued[1]) == rpf.inner.issued


# ----------------------------------------------------------------------------- SPP


def test_spp_hand_worked_lookahead():
  # Page 5 (base 320), offsets 0..8, delta +1, accesses far apart; PT 64 sets,
  # so set = sig & 63. k=1: sig next(0,1) = 1. k=2: PT[1] learns +1; sig 9.
  # k=3: PT[9] learns +1 (c 1/1); sig (9<<3)^1 = 73, set 73 & 63 = 9: conf 100
  # -> offset 4 into L1D; depth 1 needs alpha = 0 (nothing issued yet): stop.
  # k=4: 4 is a prefetch hit: useful 1, issued 1 -> alpha 100; PT set 9 = 2/2;
  # sig next(73,1) = 585 (set 9), a fixed point: the path stays at 100 through
  # degree 4 candidates: 5, 6, 7, 8 into L1D. issued 5.
  # k=5: useful 2 -> alpha 200 // 5 = 40; set 9 3/3: depth 0 conf 100 -> 6
  # (L1D); depth 1 ((40*3)//3)*100//100 = 40 -> 7 into L2; depth 2 40*40//100 =
  # 16 < 25: stop. issued 7. k=6: alpha 300 // 7 = 42: 7 (L1D), 8 (L2, 42).
  # k=7: alpha 400 // 9 = 44: 8, 9 (L2). k=8: alpha 500 // 11 = 45: 9, 10 (L2).
  blocks = [320 + k for k in range(9)]
  _, rpf, log = run_both(SPP_T, spaced(blocks), dict(degree=4))
  o = lambda k, lvl: (320 + k, lvl)
  assert log == [[], [], [], [o(4, 0)], [o(5, 0), o(6, 0), o(7, 0), o(8, 0)],
                 [o(6, 0), o(7, 1)], [o(7, 0), o(8, 1)], [o(8, 0), o(9, 1)],
                 [o(9, 0), o(10, 1)]]
  assert (rpf.inner.useful, rpf.inner.issued) == (5, 13)


def test_spp_page_crossing_bootstraps_from_the_ghr():
  # A +1 walk to the end of page 5 (offsets 56..63) with accesses far apart:
  # the lookahead from offset 63 proposes offset 64 (next page's offset 0),
  # which is recorded in the GHR and not prefetched. The first access to
  # page 6 at offset 0 then starts from the recorded signature and prefetches
  # at once (offset 1 into L1D), where a fresh page without GHR would wait for
  # two accesses.
  blocks = [320 + k for k in range(56, 64)] + [384]
  _, _, with_ghr = run_both(SPP_T, spaced(blocks))
  _, _, without = run_both(SPP_T, spaced(blocks), dict(use_ghr=False))
  assert with_ghr[-1][:1] == [(385, 0)]
  assert without[-1] == []
  assert with_ghr[:-1] == without[:-1]


@pytest.mark.parametrize("seed", [0, 1])
def test_spp_matches_reference_on_random_traces(seed):
  kw = [dict(), dict(pf_threshold=40, fill_threshold=60, degree=3, low_fill_level="llc",
                     c_max=7, acc_max=16)][seed]
  state, rpf, log = run_both(SPP_T, random_trace(seed), kw)
  levels = {l for step in log for _, l in step}
  assert sum(map(len, log)) > 50 and levels == {0, [1, 2][seed]}
  ghr = np.asarray(state.prefetcher[0].ghr)
  assert (ghr[:, spp.G_CONF] >= 0).any()  # page crossings were recorded
  assert [g["conf"] if g else -1 for g in rpf.inner.ghr] == ghr[:, spp.G_CONF].tolist()


# ----------------------------------------------------------------------------- all three


@pytest.mark.parametrize("name", ["aos_walk", "stencil2d_col", "phase_mix"])
def test_small_tables_match_reference_on_synthetic_traces(name):
  # cpi0 = 30 spreads the accesses out: at 1 cycle per instruction the demand
  # misses keep all 8 L1D MSHRs busy and the issue budget stays 0.
  trace = synthetic_trace(name, N)
  for pf in (PMP_T, BERTI_T, SPP_T):
    _, _, log = run_both(pf, trace, cpi0=30)
    if name == "aos_walk":  # (a column-major stencil touches each 4 KB region once)
      assert sum(map(len, log)) > 0, pf.name


DEFAULTS = {"pmp": pmp.pmp, "berti": berti.berti, "spp": spp.spp}


@pytest.mark.parametrize("name", sorted(DEFAULTS))
def test_default_geometry_matches_reference_and_params_do_not_recompile(name):
  # The paper's table sizes on the paper's hierarchy, on the order-sensitive
  # AoS walks (~100 regions: PMP's 32-entry AT fills and trains), accesses
  # spread by cpi0 = 30 so that the MSHRs leave an issue budget.
  pf = DEFAULTS[name]()
  trace = synthetic_trace("aos_walk", 3000, seed=3)
  config = h.CacheConfig()
  params = h.make_params(cpi0=30, prefetcher=pf.make_params())
  state, codes = runner.run(trace, config, params, pf)
  rpf = make_ref(pf, {})
  model, rcodes = ref.run_reference(trace, config, cpi0=30, prefetcher=rpf)
  assert_same_run(state, codes, model, rcodes, config)
  assert int(h.counters(state.cache)["pf_issued"]) > 0
  other = {"pmp": dict(region_blocks=32, l1_pct=70), "berti": dict(window=8, l1_conf=5, l2_conf=3),
           "spp": dict(pf_threshold=50, degree=3)}[name]
  with testing.count_lowerings() as lowerings:
    runner.run(synthetic_trace("stream_copy", 3000), config,
               h.make_params(cpi0=0.5, prefetcher=pf.make_params(**other)), pf)
  assert not lowerings


# ----------------------------------------------------------------------------- storage, errors


def test_storage_bits():
  # PMP, 48-bit addresses, 4 KB regions: region tag 48 - 6 - 6 = 36 bits.
  # FT 64 x (36 - 3 set bits + 6 + 5 + 3 LRU) = 3008; AT 32 x (35 + 6 + 5 + 64 + 4)
  # = 3648; OPT 64 x 64 x 5 = 20480; PPT 32 x 32 x 5 = 5120; PB 32 x (34 + 128 + 3)
  # = 5280; total 37536 bits = 4692 bytes.
  assert pmp.storage_bits() == dict(ft=3008, at=3648, opt=20480, ppt=5120, pb=5280,
                                    total=37536)
  assert pmp.storage_bits(region_blocks=32)["at"] == 32 * (36 + 6 + 5 + 32 + 4)
  # Berti: history 8 x (16 x (7 + 24 + 16) + 4) = 6048; delta table
  # 16 x (10 + 4 + 4 + 16 x (13 + 4 + 2)) = 5152.
  assert berti.storage_bits() == dict(history=6048, delta_table=5152, total=11200)
  # SPP: ST 256 x (16 + 6 + 12 + 8) = 10752; PT 512 x (4 x 11 + 4) = 24576;
  # GHR 8 x 33 = 264; accuracy 20: 35612 bits.
  assert spp.storage_bits() == dict(st=10752, pt=24576, ghr=264, accuracy=20, total=35612)


def test_errors():
  with pytest.raises(ValueError, match="ft_sets: expected a power of two"):
    pmp.pmp(ft_sets=6)
  with pytest.raises(ValueError, match="at_sets"):
    pmp.pmp(at_sets=0)
  with pytest.raises(TypeError, match="num_candidates"):
    pmp.pmp(2.5)
  with pytest.raises(ValueError, match="region_blocks: expected a power of two"):
    PMP_T.make_params(region_blocks=48)
  with pytest.raises(ValueError, match="region_blocks"):
    PMP_T.make_params(region_blocks=128)
  with pytest.raises(ValueError, match="l2_pct: expected <= l1_pct"):
    PMP_T.make_params(l1_pct=10, l2_pct=20)
  with pytest.raises(ValueError, match="hist_sets: expected a power of two"):
    berti.berti(hist_sets=3)
  with pytest.raises(ValueError, match="l1_conf"):
    BERTI_T.make_params(l1_conf=17)
  with pytest.raises(ValueError, match="latency: expected 4 ints"):
    BERTI_T.make_params(latency=(1, 2))
  with pytest.raises(ValueError, match="pt_sets: expected a power of two"):
    spp.spp(pt_sets=500)
  with pytest.raises(ValueError, match="degree"):
    SPP_T.make_params(degree=7)
  with pytest.raises(ValueError, match="low_fill_level"):
    SPP_T.make_params(low_fill_level="l1d")
  with pytest.raises(TypeError, match="use_ghr"):
    SPP_T.make_params(use_ghr=1)
  assert pmp.pmp() is pmp.pmp() and berti.berti() is berti.berti()  # cached factories
  assert berti.berti().name == "berti_simplified"
