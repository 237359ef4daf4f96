"""IPCP-lite (papers/prefetch.md 1.2): hand-worked prefetch streams for each class
(constant stride, complex stride, global stream, next line) and their priority, the
JAX prefetcher against its plain-Python reference event for event inside the cache
runner (a random and two synthetic traces), no recompiles for new params, storage,
errors.

Compiles dominate the runtime: one prefetcher instance (the paper's table sizes;
smaller tables are params), one jitted train+issue step for the hand-worked streams
and one runner program (every runner trace has `N` accesses and the same hierarchy).
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
from jaxsys.sims.prefetch import ipcp
from jaxsys.sims.prefetch import ipcp_reference as R
from jaxsys.sims.traces import format as trace_format
from jaxsys.sims.traces import synthetic

PF = ipcp.ipcp()  # K = 6; IP table 64, CSPT 128, RST 8
# Small hierarchy: L1D 8 sets x 2 ways, 8 MSHRs, PQ 4 (an idle access has budget 4).
CONFIG = h.CacheConfig.make(l1d=dict(sets=8, ways=2, mshr=8), l2=dict(sets=16, ways=4),
                            llc=dict(sets=32, ways=4), pq_size=4)
N = 1000  # every runner trace has this many accesses (one compile)
MISS, HIT = 3, 0  # demand levels for the hand-worked streams


# ----------------------------------------------------------------------------- helpers


def _one(pstate, block, pc, level, budget, pparams):
  access = protocol.Access(block=block, pc_hash=pc, is_store=jnp.bool_(False),
                           instr=jnp.int32(0), valid=jnp.bool_(True), load=jnp.bool_(True),
                           level=level, pf_hit=jnp.bool_(False), late=jnp.bool_(False))
  pstate = PF.train(pstate, access, level == 0, jnp.int32(0), pparams)
  return PF.issue(pstate, (), access, jnp.int32(0), budget, pparams)


_step = jax.jit(_one)


def jax_stream(pparams, blocks, pcs, levels=None, budget=8):
  """The valid candidate blocks of each load (train + issue called directly), and the state."""
  levels = [MISS] * len(blocks) if levels is None else levels
  pstate = PF.init(pparams)
  out = []
  for b, pc, lvl in zip(blocks, pcs, levels):
    pstate, cand = _step(pstate, jnp.int32(b), jnp.int32(pc), jnp.int32(lvl), jnp.int32(budget),
                         pparams)
    valid = np.asarray(cand.valid_K)
    assert set(np.asarray(cand.fill_level_K)[valid].tolist()) <= {int(pparams.fill_level)}
    out.append(np.asarray(cand.block_K)[valid].tolist())
  return out, pstate


def ref_for(pparams):
  p = {k: v.item() for k, v in pparams._asdict().items()}
  return R.IPCP(**p)


def ref_stream(rpf, blocks, pcs, levels=None, budget=8):
  levels = [MISS] * len(blocks) if levels is None else levels
  out = []
  for b, pc, lvl in zip(blocks, pcs, levels):
    access = ref.RefAccess(b, pc, 0, 0, lvl, False, False)
    rpf.train(access)
    out.append([blk for blk, _ in rpf.issue(access, budget)])
  return out


def check_stream(kw, blocks, pcs, want, levels=None):
  """JAX and reference candidate streams both equal the hand-worked `want`."""
  pparams = PF.make_params(**kw)
  got, pstate = jax_stream(pparams, blocks, pcs, levels)
  assert got == want
  rpf = ref_for(pparams)
  assert ref_stream(rpf, blocks, pcs, levels) == want
  assert np.asarray(pstate.scalars).tolist() == rpf.stats()
  return pstate


def scalars(pstate):
  return dict(zip(["loads", "w_loads", "w_misses", "spec_nl", "trains", "gs", "cs", "cplx", "nl",
                   "issued"], np.asarray(pstate.scalars).tolist()))


def jax_tables(pstate, cspt_rows=128):
  """IP table {row: fields}, CSPT rows in use (the rest must be untouched), RST set."""
  cspt = np.asarray(pstate.cspt)
  assert not cspt[cspt_rows:].any()
  ipt = np.asarray(pstate.ipt)
  ip = {i: tuple(int(x) for x in row[ipcp.I_TAG:]) for i, row in enumerate(ipt)
        if row[ipcp.I_USED] == 1}
  rst = np.asarray(pstate.rst)
  regions = {(int(r[ipcp.R_REGION]), int(r[ipcp.R_BITS]) & 0xffffffff, int(r[ipcp.R_POSNEG]),
              int(r[ipcp.R_TRAINED]), int(r[ipcp.R_TENT])) for r in rst if r[ipcp.R_STAMP] >= 0}
  return ip, cspt[:cspt_rows].tolist(), regions


def ref_tables(rpf):
  keys = ("tag", "valid", "last", "stride", "conf", "sig", "stream", "dir")
  ip = {i: tuple(int(e[k]) for k in keys) for i, e in enumerate(rpf.ipt) if e is not None}
  regions = {(r, e["bits"], e["posneg"], int(e["trained"]), int(e["tentative"]))
             for r, e in rpf.rst.items()}
  return ip, rpf.cspt, regions


# ----------------------------------------------------------------------------- classes


def test_constant_stride_hand_worked():
  # PC 5 strides by 3 from block 1024 (page 16 = blocks 1024..1087, offset o = b - 1024):
  #   1024  IP miss: the row is allocated                         -> nothing
  #   1027  d = 3 != stride 0: conf 0 - 1 -> 0, so stride = 3     -> nothing
  #   1030  d = 3: conf 1 (< cs_conf 2)                           -> nothing
  #   1033  conf 2: CS, b + 3k, k = 1..3                          -> 1036, 1039, 1042
  #   1036  conf 3                                                -> 1039, 1042, 1045
  #   1040  d = 4 != 3: conf 2 but the stride stays 3 (it only
  #         changes at conf 0): still CS                          -> 1043, 1046, 1049
  #   1043  d = 3: conf 3                                         -> 1046, 1049, 1052
  # PC 6 strides by 5 to the end of page 16 and on:
  #   1070 (alloc), 1075 (conf 0), 1080 (conf 1), 1085 (conf 2, o = 61: 1090.. leave the
  #   page)                                                       -> nothing
  #   1090  conf 3, page 17 (o = 2)                               -> 1095, 1100, 1105
  blocks = [1024, 1027, 1030, 1033, 1036, 1040, 1043, 1070, 1075, 1080, 1085, 1090]
  pcs = [5] * 7 + [6] * 5
  want = [[], [], [], [1036, 1039, 1042], [1039, 1042, 1045], [1043, 1046, 1049],
          [1046, 1049, 1052], [], [], [], [], [1095, 1100, 1105]]
  pstate = check_stream({}, blocks, pcs, want)
  s = scalars(pstate)
  assert (s["loads"], s["trains"], s["cs"], s["gs"], s["cplx"], s["nl"]) == (12, 10, 5, 0, 0, 0)
  assert s["issued"] == 15  # 5 loads x 3 candidates, budget 8
  # A degree and a fill level are params: degree_cs 2, into L2.
  pparams = PF.make_params(degree_cs=2, fill_level="l2")
  got, _ = jax_stream(pparams, blocks[:5], pcs[:5])
  assert got[3:] == [[1036, 1039], [1039, 1042]]


def test_complex_stride_hand_worked():
  # PC 9 alternates deltas +1, +2 from block 2048 (page 32; o = b - 2048). CS never
  # gets confident (every delta differs from the last). Signatures (7 bits):
  # next(s, d) = ((s << 1) ^ enc(d)) & 127 with enc(+1) = 1, enc(+2) = 2, so they
  # alternate 0 -> 1 -> 0: CSPT[0] learns "+1 after sig 0", CSPT[1] "+2 after sig 1".
  #   2048  alloc (sig 0)                                          -> nothing
  #   2049  d = 1: CSPT[0] = (1, conf 0); sig 1; CSPT[1] empty     -> nothing
  #   2051  d = 2: CSPT[1] = (2, 0); sig 0; CSPT[0] = (1, 0) is set: CPLX walk
  #         off 1, 3, 4 but every step has conf 0 < cplx_conf 1    -> nothing
  #   2052  d = 1: CSPT[0] = (1, 1); sig 1: walk CSPT[1] (2, 0): off 2, no candidate;
  #         CSPT[0] (1, 1): off 3 -> 2055; CSPT[1] (2, 0): off 5, none -> 2055
  #   2054  d = 2: CSPT[1] = (2, 1); sig 0: off 1, 3, 4, all conf 1 -> 2055, 2057, 2058
  #   2055  d = 1: CSPT[0] = (1, 2); sig 1: off 2, 3, 5            -> 2057, 2058, 2060
  blocks = [2048, 2049, 2051, 2052, 2054, 2055]
  want = [[], [], [], [2055], [2055, 2057, 2058], [2057, 2058, 2060]]
  pstate = check_stream({}, blocks, [9] * 6, want)
  assert np.asarray(pstate.cspt)[:2].tolist() == [[1, 2], [2, 1]]
  s = scalars(pstate)
  assert (s["cplx"], s["cs"], s["trains"]) == (3, 0, 5)
  # degree_cplx 2 cuts the walk after two steps; cplx_conf 0 lets every step prefetch.
  check_stream(dict(degree_cplx=2), blocks, [9] * 6,
               [[], [], [], [2055], [2055, 2057], [2057, 2058]])
  check_stream(dict(cplx_conf=0), blocks, [9] * 6,
               [[], [], [2052, 2054, 2055], [2054, 2055, 2057], [2055, 2057, 2058],
                [2057, 2058, 2060]])


def test_global_stream_hand_worked():
  # dense_lines = 4: a 2 KB region (32 blocks) is dense once 4 of its lines were
  # touched by training loads. Region 128 = blocks 4096..4127 (page 64 = 4096..4159).
  #   PC 7: 4096 (alloc), 4097 (RST allocates region 128, line 1, pos/neg 32),
  #   4098 (lines 1-2, pos/neg 33), 4099 (lines 1-3, pos/neg 34; CS conf 2) -> CS 4100..4102
  #   4100  lines 1-4: dense; pos/neg 35 > 32: the IP is GS, direction + (GS beats its
  #         CS, conf 3)                                             -> 4101..4106
  #   PC 8: 4110 (alloc); 4108 (d = -2): the region is dense, pos/neg 35 - 1 = 34 > 32:
  #         GS in the region's direction, not the IP's; (its last region, 128, is
  #         dense, so 128 also becomes tentatively dense)          -> 4109..4114
  #   PC 7: 4128 (region 129, not in the RST): its last region (128) is dense, so the new
  #         entry is tentatively dense; the IP's stream bit carries on -> 4129..4134
  #   4129  region 129: tentative, pos/neg 33: GS                  -> 4130..4135
  #   8192  (region 256, new; last region 129 is only tentative): bit carried -> 8193..8198
  #   8200  region 256 is neither dense nor tentative: stream bit cleared; CS conf 1
  #         (strides 1, 1, 1, 1, 28, 1, 4063, 8), CSPT[98] empty -> nothing
  blocks = [4096, 4097, 4098, 4099, 4100, 4110, 4108, 4128, 4129, 8192, 8200]
  pcs = [7] * 5 + [8, 8] + [7] * 4
  want = [[], [], [], [4100, 4101, 4102], list(range(4101, 4107)), [],
          list(range(4109, 4115)), list(range(4129, 4135)), list(range(4130, 4136)),
          list(range(8193, 8199)), []]
  pstate = check_stream(dict(dense_lines=4), blocks, pcs, want)
  s = scalars(pstate)
  assert (s["gs"], s["cs"]) == (5, 1)
  _, _, regions = jax_tables(pstate)
  # (region, line bitmap, pos/neg, trained, tentative)
  assert regions == {(128, 0b11110 | 1 << 12, 34, 1, 1), (129, 0b11, 33, 0, 1),
                     (256, 1 | 1 << 8, 33, 0, 0)}
  # Descending: PC 3 walks down 3103..3099 (region 96 = 3072..3103; page 48 = 3072..3135):
  # CS at 3100 (o = 28); at 3099 the region is dense with pos/neg 32 - 3 = 29 < 32:
  # GS downward from o = 27: 3098..3093.
  check_stream(dict(dense_lines=4), [3103, 3102, 3101, 3100, 3099], [3] * 5,
               [[], [], [], [3099, 3098, 3097], list(range(3098, 3092, -1))])
  got, _ = jax_stream(PF.make_params(dense_lines=4), [3077, 3076, 3075, 3074, 3073], [3] * 5)
  assert got[-1] == [3072]  # o = 1: only 3072 is left in the page


def test_next_line_gated_by_the_miss_rate():
  # nl_window 2, nl_mpki 500: every 2nd L1D miss, spec_nl = misses per 1000 loads
  # of the window <= 500. PC 11 jumps around in page 78 (4992..5055) with deltas
  # 7, -5, 11, -3, 10, -5, 8, 32: CS never confident, the CSPT rows it looks up
  # (signatures 7, 75, 29, 121, 120, 53, 98, 100) are never trained first.
  #   5000 miss (window 1 load, 1 miss) alloc; 5007 hit (2, 1)
  #   5002 miss (3, 2): 2000 > 500 x 3: spec_nl 0, window restarts
  #   5013 hit, 5010 hit, 5020 miss (3, 1)
  #   5015 miss (4, 2): 2000 <= 500 x 4: spec_nl 1; no class         -> 5016
  #   5023 hit                                                       -> 5024
  #   5055 hit (o = 63: the next line is in the next page)           -> nothing
  blocks = [5000, 5007, 5002, 5013, 5010, 5020, 5015, 5023, 5055]
  levels = [MISS, HIT, MISS, HIT, HIT, MISS, MISS, HIT, HIT]
  kw = dict(nl_window=2, nl_mpki=500)
  want = [[]] * 6 + [[5016], [5024], []]
  pstate = check_stream(kw, blocks, [11] * 9, want, levels)
  s = scalars(pstate)
  assert (s["spec_nl"], s["w_loads"], s["w_misses"], s["nl"]) == (1, 2, 0, 2)
  # A stricter threshold (2000 > 400 x 4) or the fallback off: never.
  check_stream(dict(kw, nl_mpki=400), blocks, [11] * 9, [[]] * 9, levels)
  check_stream(dict(kw, next_line=False), blocks, [11] * 9, [[]] * 9, levels)


def test_class_priority():
  # CS beats CPLX. PC 5 strides by 3 from 1024 with degree_cs 1 and cplx_conf 0 (a
  # CPLX walk would offer b + 3, b + 6, b + 9). Its signature runs 3, 5, 9, 17, 33,
  # 65, 1, 1, ...; CSPT[1] is trained at the 8th training load (block 1048), so
  # from there on CPLX applies too, but CS (conf 3) keeps the IP: one candidate.
  blocks = [1024 + 3 * k for k in range(11)]
  want = [[]] * 3 + [[b + 3] for b in blocks[3:]]
  pstate = check_stream(dict(degree_cs=1, cplx_conf=0), blocks, [5] * 11, want)
  assert np.asarray(pstate.cspt)[1].tolist() == [3, 2]  # trained at 1048, 1051, 1054
  assert np.asarray(pstate.ipt)[5, ipcp.I_SIG] == 1
  assert (scalars(pstate)["cs"], scalars(pstate)["cplx"]) == (8, 0)
  # GS beats CS: test_global_stream_hand_worked (block 4100).
  # NL only when the IP's class gave nothing: the +1/+2 stream of PC 9 with the
  # fallback always on (nl_window 1, nl_mpki 1000). 2049: no class -> 2050; 2051: CPLX
  # walks but every step has conf 0 -> 2052; from 2052 on CPLX gives blocks: no NL.
  blocks = [2048, 2049, 2051, 2052, 2054, 2055]
  want = [[], [2050], [2052], [2055], [2055, 2057, 2058], [2057, 2058, 2060]]
  pstate = check_stream(dict(nl_window=1, nl_mpki=1000), blocks, [9] * 6, want)
  assert (scalars(pstate)["nl"], scalars(pstate)["cplx"]) == (2, 3)


def test_ip_table_valid_bit_hysteresis():
  # ip_entries 8: PCs 2 and 10 share row (pc ^ pc >> 6 ^ pc >> 12) & 7 = 2.
  #   PC 2: 100, 103, 106, 109 (conf 2)                             -> 112, 115, 118
  #   PC 10 at 500: the row is PC 2's with valid 1: the bit is cleared, PC 2 stays
  #   PC 2 at 112: a hit sets the bit again; conf 3                 -> 115, 118, 121
  #   PC 10 at 500 (clears), 510 (valid 0: PC 10 takes the row)
  #   PC 2 at 115 (clears), 118 (takes it back, all history lost), 121 (conf 0) -> nothing
  blocks = [100, 103, 106, 109, 500, 112, 500, 510, 115, 118, 121]
  pcs = [2, 2, 2, 2, 10, 2, 10, 10, 2, 2, 2]
  want = [[], [], [], [112, 115, 118], [], [115, 118, 121], [], [], [], [], []]
  pstate = check_stream(dict(ip_entries=8), blocks, pcs, want)
  ip, _, _ = jax_tables(pstate)
  assert ip == {2: (2, 1, 121, 3, 0, 3, 0, 0)}  # (tag, valid, last, stride, conf, sig, ...)


# ----------------------------------------------------------------------------- parity


def random_trace(seed, n=N):
  """12 PCs: constant strides (some negative), a +1/+3/-1 delta cycle, streams over
  shared regions (both directions), random jumps; hits and misses, stores, pauses."""
  rng = np.random.default_rng(seed)
  pcs = rng.integers(0, 12, n)
  count = np.zeros(n, np.int64)
  for pc in range(12):
    count[pcs == pc] = np.arange(int((pcs == pc).sum()))
  stride = np.array([1, 2, 3, -1, 5, -7])
  cycle = np.cumsum(np.tile([1, 3, -1], n))[count]
  block = np.select(
      [pcs < 6, pcs < 9],
      [30000 + 2000 * pcs + stride[pcs % 6] * count, 60000 + 500 * pcs + cycle],
      90000 + np.where(pcs % 2 == 0, count // 2, 600 - count // 2))
  jump = rng.random(n) < 0.05
  block[jump] = rng.integers(0, 120000, int(jump.sum()))
  gap = np.where(rng.random(n) < 0.7, rng.integers(0, 4, n), rng.integers(50, 400, n))
  return runner.make_trace(block.astype(np.int32),
                           pc_hash=(0x401000 + 0x140 * pcs).astype(np.int32),
                           is_store=(rng.random(n) < 0.1).astype(np.int8),
                           instr=np.cumsum(gap).astype(np.int32))


def run_both(trace, kw, cpi0=1):
  pparams = PF.make_params(**kw)
  state, codes = runner.run(trace, CONFIG, h.make_params(cpi0=cpi0, prefetcher=pparams), PF)
  rpf = ref_for(pparams)
  model, rcodes = ref.run_reference(trace, CONFIG, cpi0=cpi0, prefetcher=rpf)
  codes = np.asarray(codes).tolist()
  if codes != rcodes:
    i = next(i for i, (a, b) in enumerate(zip(codes, rcodes)) if a != b)
    raise AssertionError(f"step {i}: JAX code {codes[i]}, reference {rcodes[i]}")
  got = {k: int(v) for k, v in h.counters(state.cache).items()}
  diff = {k: (got[k], v) for k, v in model.counters().items() if got[k] != v}
  assert not diff, diff
  assert np.asarray(state.prefetcher.scalars).tolist() == rpf.stats()
  assert jax_tables(state.prefetcher, int(pparams.cspt_entries)) == ref_tables(rpf)
  return state, scalars(state.prefetcher)


# Small tables (params of the one instance); nl_mpki 800: this trace's miss rate
# crosses it back and forth (~40 spec_nl changes), so the gate opens and closes.
SMALL = dict(ip_entries=8, cspt_entries=32, rst_entries=4, dense_lines=6, nl_window=8,
             nl_mpki=800)


@pytest.mark.parametrize("kw", [SMALL, dict(SMALL, degree_gs=3, degree_cs=2, degree_cplx=2,
                                                 cs_conf=3, cplx_conf=2, fill_level="l2")],
                         ids=["small", "small_l2"])
def test_runner_matches_reference_on_a_random_trace(kw):
  state, s = run_both(random_trace(0), kw)
  assert min(s["gs"], s["cs"], s["cplx"], s["nl"]) > 0, s  # every class issued
  c = h.counters(state.cache)
  assert int(c["pf_issued"]) > 100 and int(c["pf_refused"]) > 0  # the budget binds
  target = "l2" if "fill_level" in kw else "l1d"
  assert int(c[f"{target}_pf_fill"]) > 0 and int(c["llc_pf_fill"]) == 0


@pytest.mark.parametrize("name,classes", [("stream_copy", ("gs", "cs")),
                                          ("gemm_tiled", ("cs", "cplx"))])
def test_runner_matches_reference_on_synthetic_traces(name, classes):
  # cpi0 = 30 spreads the accesses out so that the MSHRs leave an issue budget;
  # nl_mpki 1000 keeps the next-line fallback on.
  trace = trace_format.to_sim_arrays(synthetic.generate(name, N, seed=3))
  state, s = run_both(trace, dict(nl_window=16, nl_mpki=1000), cpi0=30)
  assert all(s[c] > 0 for c in classes), s
  assert int(h.counters(state.cache)["l1d_pf_useful"]) > 0


def test_new_param_values_do_not_recompile():
  trace = random_trace(1)
  runner.run(trace, CONFIG, h.make_params(prefetcher=PF.make_params()), PF)
  with testing.count_lowerings() as lowerings:
    state, _ = runner.run(trace, CONFIG, h.make_params(
        dram_latency=90, prefetcher=PF.make_params(**SMALL, degree_gs=2, next_line=False,
                                                    fill_level="llc")), PF)
    jax.block_until_ready(state)
  assert not lowerings
  assert int(state.prefetcher.scalars[ipcp.S_NL]) == 0


def test_factory_is_cached_and_self_masking():
  assert ipcp.ipcp() is PF and ipcp.ipcp(3, rst_entries=2) is not PF
  assert (PF.name, PF.num_candidates, PF.self_masking) == ("ipcp_l1", 6, True)
  state = PF.init(PF.make_params())
  assert [x.shape for x in state] == [(64, 9), (128, 2), (8, 6), (10,)]
  assert all(x.dtype == jnp.int32 for x in state)


# ----------------------------------------------------------------------------- storage


def test_storage_bits():
  bits = ipcp.storage_bits()
  # IP table 64 x 36, CSPT 128 x 9, RST 8 x 47, RR filter 32 x 12 (the authors' widths),
  # 768 L1D lines x 2-bit class, counters 4 x 31 + 28.
  assert bits == {"ip_table": 2304, "cspt": 1152, "rst": 376, "rr_filter": 384,
                  "line_class": 1536, "counters": 152, "total": 5904}
  assert abs(bits["total"] / 8 - 740) / 740 < 0.01  # the paper: 740 B at the L1
  # A 32-entry CSPT has 5-bit signatures; a 16-entry RST 4 LRU bits.
  small = ipcp.storage_bits(cspt_entries=32, rst_entries=16, rr_entries=0, l1d_lines=0)
  assert small["ip_table"] == 64 * 34 and small["cspt"] == 32 * 9
  assert small["rst"] == 16 * 48 and small["rr_filter"] == small["line_class"] == 0


# ----------------------------------------------------------------------------- errors


def test_errors():
  with pytest.raises(ValueError, match=r"degree_gs: expected an int in 1\.\.6, given 7"):
    PF.make_params(degree_gs=7)
  with pytest.raises(ValueError, match=r"degree_cplx: expected an int in 1\.\.3, given 4"):
    PF.make_params(degree_cplx=4)
  with pytest.raises(TypeError, match=r"degree_cs: expected an int, given 2\.5"):
    PF.make_params(degree_cs=2.5)
  with pytest.raises(ValueError, match=r"cs_conf: expected an int in 1\.\.3, given 0"):
    PF.make_params(cs_conf=0)
  with pytest.raises(ValueError, match=r"dense_lines: expected an int in 1\.\.32, given 33"):
    PF.make_params(dense_lines=33)
  with pytest.raises(ValueError, match=r"nl_mpki: expected an int in 0\.\.1000, given 1001"):
    PF.make_params(nl_mpki=1001)
  with pytest.raises(TypeError, match=r"next_line: expected a bool, given 1"):
    PF.make_params(next_line=1)
  with pytest.raises(ValueError, match=r"ip_entries: expected a power of two \(the "
                                       r"allocated IP table\), given 48"):
    PF.make_params(ip_entries=48)
  with pytest.raises(ValueError, match=r"ip_entries: expected an int in 1\.\.64 \(the "
                                       r"allocated IP table\), given 128"):
    PF.make_params(ip_entries=128)
  with pytest.raises(ValueError, match=r"rst_entries: expected an int in 1\.\.8, given 9"):
    PF.make_params(rst_entries=9)
  with pytest.raises(ValueError, match=r"fill_level"):
    PF.make_params(fill_level="l3")
  with pytest.raises(ValueError, match=r"max_degree: expected an int in 1\.\.64, given 0"):
    ipcp.ipcp(0)
  with pytest.raises(ValueError, match=r"cspt_entries: expected an int in 1\.\.128 \(.*\), given 256"):
    ipcp.ipcp(cspt_entries=256)
  with pytest.raises(ValueError, match=r"cspt_entries: expected a power of two"):
    ipcp.ipcp(cspt_entries=96)
  with pytest.raises(TypeError, match=r"rst_entries: expected an int, given '8'"):
    ipcp.ipcp(rst_entries="8")
  with pytest.raises(ValueError, match=r"ip_entries: expected a power of two"):
    ipcp.storage_bits(ip_entries=60)


@pytest.mark.parametrize("module", [ipcp, R], ids=lambda m: m.__name__)
def test_docstring_examples(module):
  import doctest  # pylint: disable=import-outside-toplevel
  result = doctest.testmod(module)
  assert result.failed == 0 and result.attempted > 0
