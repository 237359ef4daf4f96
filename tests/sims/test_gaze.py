"""Gaze (arXiv 2412.05211) in the cache simulator: hand-worked examples of each
path, the lax.scan prefetcher against the pure-Python reference event for event
(both modes, synthetic traces), artifact vs fixed, the artifact's ablation
variants (`gaze.VARIANTS`: hand-worked, against the reference, all in one
compiled sweep), a one-compile sweep, the storage budget, errors."""

import functools
import itertools

import jax
import numpy as np
import pytest

from jaxsys._src import testing
from jaxsys.sims.cache import hierarchy as h
from jaxsys.sims.cache import reference as ref
from jaxsys.sims.cache import runner
from jaxsys.sims.cache import sweep
from jaxsys.sims.prefetch import gaze as gz
from jaxsys.sims.prefetch import gaze_reference as gref
from jaxsys.sims.traces import format as trace_format
from jaxsys.sims.traces import synthetic

ARTIFACT = gz.gaze("artifact")
FIXED = gz.gaze("fixed")
DEFAULT = h.CacheConfig()
# Every level small (evictions everywhere, a tight MSHR / PQ budget).
SMALL = h.CacheConfig.make(l1d=dict(sets=8, ways=4, mshr=8), l2=dict(sets=32, ways=4),
                           llc=dict(sets=64, ways=8), pq_size=6)
N = 4096  # one trace length for every test (hand traces are padded): one compile per case
FAR = 1000  # instructions between hand-worked accesses: every MSHR and PQ entry is free again
# Regions whose FT / AT set (XOR of 3-bit chunks, `fold_set`) is 0: octal digits XOR to 0.
SET0 = [9, 18, 27, 36, 45, 54, 63, 65, 72, 83, 90, 101, 108, 119, 126, 130, 139, 144, 153, 166]
SET0_MORE = [r for r in range(167, 400) if gref.fold_set(r) == 0]  # 173, 182, ...: past SET0
P = 0x1200  # a PC, hash (bits [13:8]) 18
Q = 0x4400  # hash 4
S = 0x2300  # hash 35


def hand_trace(accesses, n=N):
  """(block, pc) pairs FAR instructions apart, padded to n with invalid steps."""
  k = len(accesses)
  block = np.zeros((n,), np.int32)
  pc = np.zeros((n,), np.int32)
  block[:k] = [a[0] for a in accesses]
  pc[:k] = [a[1] for a in accesses]
  instr = (np.minimum(np.arange(n), k - 1) * FAR).astype(np.int32)
  return runner.make_trace(block, pc_hash=pc, instr=instr, valid=np.arange(n) < k)


def region(r, offsets, pc, R=64):
  return [(r * R + o, pc) for o in offsets]


def reference_for(pf, pparams):
  mode = "fixed" if pf is FIXED or "fixed" in pf.name else "artifact"
  return gref.GazeReference(mode, pt_entries=int(pparams.pt_entries),
                            region_blocks=int(pparams.region_blocks), degree=int(pparams.degree),
                            lookahead=int(pparams.lookahead),
                            ss_enabled=bool(pparams.ss_enabled),
                            pt_enabled=bool(pparams.pt_enabled),
                            ss_all_l1=bool(pparams.ss_all_l1),
                            max_candidates=pf.num_candidates)


def assert_tables_equal(state, g):
  """The JAX tables hold what the reference's dicts hold, way for way."""
  R = g.R
  ft = np.asarray(state.ft)
  for s in range(gz.FT_SETS):
    for w in range(gz.FT_WAYS):
      e = g.ft[s][w]
      got = ft[s, w]
      if e is None:
        assert got[gz.FT_TAG] == -1, ("ft", s, w)
      else:
        assert got.tolist() == [e["tag"], e["trig"], e["pc"], e["rrpv"]], ("ft", s, w)

  def lru_order(ways, stamps):
    valid = [i for i, e in enumerate(ways) if e is not None]
    assert sorted(valid, key=lambda i: stamps[i]) == sorted(valid, key=lambda i: ways[i]["lru"])

  at = np.asarray(state.at)
  for s in range(gz.AT_SETS):
    for w in range(gz.AT_WAYS):
      e = g.at[s][w]
      got = at[s, w]
      if e is None:
        assert got[gz.AT_TAG] == -1
        continue
      flags = int(e["missed"]) * gz.MISSED + int(e["con"]) * gz.CON
      want = [e["tag"], e["trig"], e["second"], e["pc"], e["last_off"], e["last_stride"], flags]
      assert got[:gz.AT_LRU].tolist() == want, ("at", s, w)
      assert set(np.flatnonzero(got[gz.AT_FIELDS:]).tolist()) == e["fp"], ("at fp", s, w)
    lru_order(g.at[s], at[s, :, gz.AT_LRU])
  pt = np.asarray(state.pt)
  assert (pt[g.pt_sets:, :, gz.X_TAG] == -1).all()  # the masked sets stay empty
  for s in range(g.pt_sets):
    for w in range(gz.PT_WAYS):
      e = g.pt[s][w]
      if e is None:
        assert pt[s, w, gz.X_TAG] == -1
      else:
        assert pt[s, w, gz.X_TAG] == e["tag"], ("pt", s, w)
        assert set(np.flatnonzero(pt[s, w, gz.X_FIELDS:]).tolist()) == e["pat"], ("pt", s, w)
    lru_order(g.pt[s], pt[s, :, gz.X_LRU])
  pb = np.asarray(state.pb)
  for s in range(gz.PB_SETS):
    for w in range(gz.PB_WAYS):
      e = g.pb[s][w]
      if e is None:
        assert pb[s, w, gz.X_TAG] == -1
      else:
        assert pb[s, w, gz.X_TAG] == e["tag"], ("pb", s, w)
        vals = pb[s, w, gz.X_FIELDS:]
        got = {int(o): int(vals[o]) & 3 for o in np.flatnonzero(vals & 3)}
        assert got == e["pat"], ("pb", s, w)  # the pending levels
        assert (vals[:R] >> 2).tolist() == e["src"], ("pb src", s, w)  # every offset's source
        assert not vals[R:].any()
    lru_order(g.pb[s], pb[s, :, gz.X_LRU])
  assert int(state.con_counter) == g.con_counter
  deque = [int(x) for x in np.asarray(state.deque) if x >= 0]
  assert deque == g.deque


def run_both(trace, pf=ARTIFACT, config=DEFAULT, cpi0=1, **kw):
  """The JAX run and the reference run; asserts they agree event for event."""
  pparams = pf.make_params(**kw)
  state, codes = runner.run(trace, config, h.make_params(cpi0=cpi0, prefetcher=pparams), pf)
  g = reference_for(pf, pparams)
  model, rcodes = ref.run_reference(trace, config, cpi0=cpi0, prefetcher=g)
  codes = np.asarray(codes).tolist()
  if codes != rcodes:
    i = next(i for i, (a, b) in enumerate(zip(codes, rcodes)) if a != b)
    raise AssertionError(f"step {i}: JAX code {codes[i]}, reference {rcodes[i]}")
  got = {k: int(v) for k, v in h.counters(state.cache).items()}
  want = model.counters()
  assert {k: (got[k], want[k]) for k in want if got[k] != want[k]} == {}
  assert {k: int(v) for k, v in gz.stats(state.prefetcher).items()} == g.stats
  assert_tables_equal(state.prefetcher, g)
  return state, g


def blocks_of(r, offsets, level, R=64):
  return [(r * R + o, level) for o in offsets]


# ----------------------------------------------------------------------------- hand-worked


def test_pt_miss_prefetches_nothing_and_trains_nothing():
  # Region 5, offsets 10 then 20: the first access only enters the FT (Gaze
  # never prefetches on a first access); the second looks up PT key (10, 20):
  # the PT is empty, a miss. The region moves to the AT flagged missed_in_pt;
  # no AT entry is evicted, so nothing trains the PT. Offset 35 (stride 15 vs
  # last stride 10: not confirmed) only extends the footprint.
  _, g = run_both(hand_trace(region(5, [10, 20, 35], P)))
  assert g.log == [[], [], []]
  assert g.stats["ft_inserts"] == 1 and g.stats["pt_lookups"] == 1
  assert g.stats["pt_hits"] == 0 and g.stats["pt_writes"] == 0
  e = g.at[gref.fold_set(5)][0]
  assert e["missed"] and not e["con"] and e["fp"] == {10, 20, 35}


def test_at_eviction_trains_pt_then_pt_hit_drains_circularly_within_budget():
  # Region 9 (AT set 0): offsets 10, 20, 5, 41, 35 (strides 10, -15, 36, -6:
  # never confirmed, no stride prefetch). Seven more set-0 regions fill the
  # 8 AT ways (two accesses each, key (3, 5)); the ninth, 72, evicts the LRU
  # entry, region 9, whose footprint {5, 10, 20, 35, 41} trains PT key (10, 20).
  # Region 100 then accesses 10, 20: a PT hit (bits besides 10 and 20). Its
  # pattern minus the key offsets, {5, 35, 41}, goes to the PB and drains
  # upward from 21, wrapping: 35, 41, then 5, all into L1D. The demand at
  # offset 20 misses and holds one MSHR: budget = MSHR 16 - 1 - 1 = 14: all go.
  fillers = [a for r in SET0[1:9] for a in region(r, [3, 5], Q)]
  accesses = region(9, [10, 20, 5, 41, 35], P) + fillers + region(100, [10, 20], P)
  state, g = run_both(hand_trace(accesses))
  assert g.stats["at_evictions"] == 1 and g.stats["pt_writes"] == 1
  assert g.stats["pt_hits"] == 1
  assert g.log[-1] == blocks_of(100, [35, 41, 5], 0)
  assert sum(map(len, g.log[:-1])) == 0


def test_pb_keeps_what_the_budget_refuses():
  # Same PT training as above; then region 100's second access comes 1 cycle
  # after 13 demand misses to fresh blocks (13 MSHRs busy): budget = 15 - 13
  # - 1 (its own miss) = 1, so only 35 is issued. 41 and 5 stay in the PB. A
  # later access to region 100 (offset 50, far away in time, a miss: budget
  # 14) drains them upward from 51, wrapping past 63: 5, then 41.
  fillers = [a for r in SET0[1:9] for a in region(r, [3, 5], Q)]
  head = region(9, [10, 20, 5, 41, 35], P) + fillers + region(100, [10], P)
  burst = [(5000 * 64 + 64 * k, S) for k in range(13)]  # 13 regions, first accesses
  k = len(head)
  accesses = head + burst + region(100, [20], P) + region(100, [50], P)
  trace = hand_trace(accesses)
  instr = np.asarray(trace.instr).copy()
  # The burst and region 100's offset 20 one instruction apart, then far again.
  instr[k:k + 14] = instr[k - 1] + FAR + np.arange(14)
  instr[k + 14:] = np.maximum(instr[k + 14:], instr[k + 13] + FAR)
  trace = trace._replace(instr=instr)
  _, g = run_both(trace)
  assert g.log[k + 13] == blocks_of(100, [35], 0)
  assert g.log[k + 14] == blocks_of(100, [5, 41], 0)


def test_drain_clears_the_accessed_offset_without_issuing_it():
  # As test_pb_keeps_what_the_budget_refuses: offset 20 of region 100 issues 35
  # only, 41 and 5 stay pending. Then region 100's offset 41 (far in time, a
  # miss, budget 14; stride 21 vs 10, no trigger): 41's level is cleared, not
  # issued (the artifact's `pattern[region_offset] = 0`); the drain from 42
  # wraps to 5, the last pending offset: the entry is erased. Issued by the
  # PT: 35 and 5 (issuing 41 last would have made 3).
  fillers = [a for r in SET0[1:9] for a in region(r, [3, 5], Q)]
  head = region(9, [10, 20, 5, 41, 35], P) + fillers + region(100, [10], P)
  burst = [(5000 * 64 + 64 * k, S) for k in range(13)]
  k = len(head)
  trace = hand_trace(head + burst + region(100, [20], P) + region(100, [41], P))
  instr = np.asarray(trace.instr).copy()
  instr[k:k + 14] = instr[k - 1] + FAR + np.arange(14)
  instr[k + 14:] = np.maximum(instr[k + 14:], instr[k + 13] + FAR)
  for pf in (ARTIFACT, FIXED):
    _, g = run_both(trace._replace(instr=instr), pf)
    assert g.log[k + 13] == blocks_of(100, [35], 0)
    assert g.log[k + 14] == blocks_of(100, [5], 0)
    assert g.stats["issued_pt"] == 2 and not any(g.pb[100 % gz.PB_SETS])


@pytest.mark.parametrize("pf", [ARTIFACT, FIXED], ids=["artifact", "fixed"])
def test_ss_lookup_pc_artifact_second_access_fixed_trigger(pf):
  # Region 9's full (0, 1) footprint with PC P puts P's hash (18) in the deque,
  # con_counter 1 (as in test_streaming_bulk_then_promote). Region 100: offset
  # 0 with PC Q (hash 4, the trigger: the FT keeps Q), offset 1 with PC P. The
  # artifact hashes the second access's PC, 18: in the deque, the aggressive
  # bulk, 2..15 into L1D (budget 14). Fixed hashes the trigger's, 4: not in the
  # deque and the counter 1 <= 2, no bulk (missed_in_pt).
  fillers = [a for r in SET0[1:9] for a in region(r, [3, 5], Q)]
  accesses = region(9, range(64), P) + fillers + region(100, [0], Q) + region(100, [1], P)
  _, g = run_both(hand_trace(accesses), pf)
  assert g.deque == [18] and g.stats["ss_lookups"] == 2
  if pf is ARTIFACT:
    assert g.log[-1] == blocks_of(100, range(2, 16), 0) and g.stats["ss_bulk"] == 1
  else:
    assert g.log[-1] == [] and g.stats["ss_bulk"] == 0


def test_streaming_bulk_then_promote():
  # Region 9 (set 0) is accessed at all 64 offsets with PC P: signature (0, 1),
  # SS counter 0 and an empty deque, so no bulk; it is flagged missed_in_pt
  # and the stride engine covers it. Eight (3, 5) regions of set 0 then evict
  # it: a full (0, 1) footprint: con_counter 1 and P's hash (18) enters the
  # deque. Region 100, PC P, offsets 0 then 1: (0, 1) with the PC in the
  # deque -> bulk: 0..15 (R / 4) into L1D, 16..63 into L2, minus the key 0, 1.
  # Drain from 2 with budget 14 (the demand miss holds an MSHR): 2..15 (L1D).
  # Offset 2 (an L1D hit, budget 15): a new offset, stride 2 - 1 = 1 equals
  # the last stride (1 - 0) and the region carries `con`: the stride engine
  # (lookahead 2, degree 4) promotes 2+3 .. 2+6 = 5, 6, 7, 8 into L1D (issued
  # already at offset 1 and re-requested, dropped by the cache as redundant).
  # They were no longer pending, so their source "SS bulk" becomes "promote".
  # Drain from 3: 5, 6, 7, 8 (L1D), then 16..26 (L2): 15 in all.
  fillers = [a for r in SET0[1:9] for a in region(r, [3, 5], Q)]
  accesses = region(9, range(64), P) + fillers + region(100, [0, 1, 2], P)
  _, g = run_both(hand_trace(accesses))
  assert g.stats["ss_full"] == 1 and g.stats["ss_bulk"] == 1
  assert g.log[-2] == blocks_of(100, range(2, 16), 0)
  assert g.log[-1] == blocks_of(100, [5, 6, 7, 8], 0) + blocks_of(100, range(16, 27), 1)
  assert g.con_counter == 1 and g.deque == [18]
  assert g.stats["issued_promote"] == 4 and g.stats["issued_ss"] == 14 + 11


def test_stride_engine_on_pt_misses():
  # Region 7, offsets 4, 6: PT miss (missed_in_pt). Offset 8: stride 2 = last
  # stride (6 - 4): armed; targets 8 + (2 + i) * 2, i = 1..4: 14, 16, 18, 20
  # (L1D), drained from 9 upward in that order. The trigger resets the last
  # offset and stride to 0, so offset 10 (stride 10 - 0 = 10 vs 0) does not
  # arm again. Region 11, offsets 40, 37, 34 (stride -3): targets 34 - 9, -12,
  # -15, -18 = 25, 22, 19, 16; the drain walks up from 35 and wraps: 16, 19,
  # 22, 25.
  accesses = region(7, [4, 6, 8, 10], P) + region(11, [40, 37, 34], P)
  _, g = run_both(hand_trace(accesses))
  assert g.log == [[], [], blocks_of(7, [14, 16, 18, 20], 0), [],
                   [], [], blocks_of(11, [16, 19, 22, 25], 0)]
  assert g.stats["stride_triggers"] == 2 and g.stats["issued_stride"] == 8
  # Degree 2, lookahead 0: targets o + s, o + 2s.
  _, g = run_both(hand_trace(accesses), degree=2, lookahead=0)
  assert g.log[2] == blocks_of(7, [10, 12], 0) and g.log[6] == blocks_of(11, [28, 31], 0)


def test_stride_trigger_resets_last_offset_and_stride():
  # Region 7, stride 2 from offset 4 (PT miss, missed_in_pt). 8: trigger, 14,
  # 16, 18, 20; last offset and stride become (0, 0). 10: stride 10 - 0 = 10 !=
  # 0, last (10, 10). 12: stride 2 != 10, last (12, 2). 14: stride 2 = 2,
  # trigger: 20, 22, 24, 26 (20 was issued, not accessed: asked again). With
  # the old re-arming, 10 and 12 would each have triggered too.
  accesses = region(7, [4, 6, 8, 10, 12, 14], P)
  _, g = run_both(hand_trace(accesses))
  assert g.log == [[], [], blocks_of(7, [14, 16, 18, 20], 0), [], [],
                   blocks_of(7, [20, 22, 24, 26], 0)]
  assert g.stats["stride_triggers"] == 2
  e = g.at[gref.fold_set(7)][0]
  assert (e["last_off"], e["last_stride"]) == (0, 0)


@pytest.mark.parametrize("pf", [ARTIFACT, FIXED], ids=["artifact", "fixed"])
def test_stride_trigger_without_targets_evicts_a_pb_entry_in_artifact_mode(pf):
  # Region 9 (all 64 offsets, PC P) and eight (3, 5) fillers of AT set 0: 9 is
  # evicted full, con_counter 1 and P's hash in the deque. Regions 100, 104,
  # ..., 128 (PB set r & 3 = 0), PC P, offsets 0, 1 each: the aggressive bulk;
  # the drain at 1 (a miss, budget 14) issues 2..15 and leaves 16..63 pending
  # (L2): PB set 0 is full, 100 its LRU entry. Region 132 (PB set 0), PC Q,
  # offsets 54, 56 (PT miss), 58: stride 2 = 2, a trigger whose targets 64, 66,
  # 68, 70 are all past the region. The artifact allocates 132 an entry
  # anyway: the LRU victim, 100, loses its 48 pending offsets (the empty entry
  # is erased by the drain at 58). Region 100, offset 40 (stride 39, no
  # trigger; a miss, budget 14): fixed drains 41..54 into L2, the artifact
  # finds no entry.
  fillers = [a for r in SET0[1:9] for a in region(r, [3, 5], Q)]
  bulks = [a for r in range(100, 132, 4) for a in region(r, [0, 1], P)]
  accesses = (region(9, range(64), P) + fillers + bulks + region(132, [54, 56, 58], Q)
              + region(100, [40], P))
  _, g = run_both(hand_trace(accesses), pf)
  # Region 9's triggers: 2, 5, ..., 62 (each resets); the last has no target.
  assert g.stats["ss_bulk"] == 8 and g.stats["stride_triggers"] == 20
  if pf is ARTIFACT:
    assert g.stats["pb_evictions"] == 1 and g.log[-1] == []
  else:
    assert g.stats["pb_evictions"] == 0 and g.log[-1] == blocks_of(100, range(41, 55), 1)


def test_deque_holds_distinct_hashes():
  # 8-block regions (R = 8). AT set 0 takes, in order: a full (0, 1) region with
  # PC S (hash 35), then eight times a full (0, 1) region with PC P (hash 18)
  # and a (0, 1) region with PC Q touched at 0, 1 only, then eight (3, 5)
  # fillers: the first 17 are evicted in that order. con_counter: S full 1, P
  # full 2, partial 1 (<= 2: decrement), P 2, partial 1, ...: 1 at the end. The
  # deque takes 35, then 18 once (already there later): [18, 35]; pushing 18
  # eight times would have dropped 35. Region 100, PC S, offsets 0, 1: counter
  # 1, but 35 is in the deque: the aggressive bulk, 0..1 (a quarter of 8) into
  # L1D, 2..7 into L2; minus the key, 2..7 go (L2).
  set0 = SET0 + SET0_MORE
  accesses = region(set0[0], range(8), S, R=8)
  for k in range(8):
    accesses += region(set0[1 + 2 * k], range(8), P, R=8)
    accesses += region(set0[2 + 2 * k], [0, 1], Q, R=8)
  accesses += [a for r in set0[17:25] for a in region(r, [3, 5], Q, R=8)]
  accesses += region(100, [0, 1], S, R=8)
  _, g = run_both(hand_trace(accesses), region_blocks=8)
  assert g.stats["ss_full"] == 9 and g.stats["at_evictions"] == 17
  assert g.deque == [18, 35] and g.con_counter == 1
  assert g.log[-1] == blocks_of(100, range(2, 8), 1, R=8)


@pytest.mark.parametrize("pf", [ARTIFACT, FIXED], ids=["artifact", "fixed"])
def test_pt_hit_touches_the_pt_lru_in_fixed_mode_only(pf):
  # AT set 0: regions with keys (10, 20), (10, 21), (10, 22), (10, 23) and
  # footprints {10, 20 + k, 40}, then eight (3, 5) fillers: the first four
  # evict them in order and train PT set 10 (set = trigger, tag = second),
  # filling its 4 ways oldest-first. Region 100 (set 1), offsets 10, 20: a PT
  # hit, 40 into L1D; fixed touches the entry's LRU, the artifact does not.
  # Key (10, 24) then trains the same full set (it evicts the first filler,
  # and eight more fillers evict the other seven, then it):
  # its LRU victim is (10, 20) in the artifact (the oldest write), (10, 21) in
  # fixed. Region 102 (set 3), offsets 10, 20: the artifact misses, fixed hits.
  set0 = SET0 + SET0_MORE
  keyed = [a for k, r in enumerate(set0[:4]) for a in region(r, [10, 20 + k, 40], P)]
  fill1 = [a for r in set0[4:12] for a in region(r, [3, 5], Q)]
  fill2 = [a for r in set0[13:21] for a in region(r, [3, 5], Q)]
  accesses = (keyed + fill1 + region(100, [10, 20], P) + region(set0[12], [10, 24, 40], P)
              + fill2 + region(102, [10, 20], P))
  _, g = run_both(hand_trace(accesses), pf)
  k = len(keyed) + len(fill1)
  assert g.log[k + 1] == blocks_of(100, [40], 0)
  assert g.stats["pt_writes"] == 4 + 1 + 7 + 1  # the 4 keys, 8 fillers, (10, 24)
  if pf is ARTIFACT:
    assert g.log[-1] == [] and g.stats["pt_hits"] == 1
  else:
    assert g.log[-1] == blocks_of(102, [40], 0) and g.stats["pt_hits"] == 2


def test_ss_bulk_spans_a_quarter_region():
  # R = 16: region 9 (all 16 offsets, PC P) evicted full by eight fillers
  # (deque [18]); region 100, PC P, offsets 0, 1: the aggressive bulk fills
  # 0..3 (16 / 4) into L1D and 4..15 into L2; minus the key, the drain from 2
  # (budget 14): 2, 3 (L1D), then 4..15 (L2): 14 in all.
  fillers = [a for r in SET0[1:9] for a in region(r, [3, 5], Q, R=16)]
  accesses = region(9, range(16), P, R=16) + fillers + region(100, [0, 1], P, R=16)
  _, g = run_both(hand_trace(accesses), region_blocks=16)
  assert g.log[-1] == blocks_of(100, [2, 3], 0, R=16) + blocks_of(100, range(4, 16), 1, R=16)
  # R = 8: three full (0, 1) regions evicted: con_counter 3, deque [18].
  # Region 101, PC S (not in the deque), offsets 0, 1: the conservative bulk
  # covers 0..1 (8 / 4), only the key: a miss, nothing issued, the region is
  # flagged missed_in_pt (no `con`). Offset 2: stride 1 = 1, the stride engine
  # (its fallback): 2 + 3, 4, 5 = 5, 6, 7 (8 is past the region), into L1D as
  # "stride".
  full = [a for r in SET0[:3] for a in region(r, range(8), P, R=8)]
  fill = [a for r in SET0[3:11] for a in region(r, [3, 5], Q, R=8)]
  _, g = run_both(hand_trace(full + fill + region(SET0[11], [0, 1, 2], S, R=8)),
                  region_blocks=8)
  assert g.con_counter == 3 and g.deque == [18]
  assert g.log[-2] == [] and g.log[-1] == blocks_of(SET0[11], [5, 6, 7], 0, R=8)
  assert (g.stats["ss_lookups"], g.stats["ss_bulk"]) == (4, 0)
  e = next(e for e in g.at[0] if e and e["tag"] == SET0[11])
  assert e["missed"] and not e["con"]


def test_stride_merge_keeps_ss_source_of_offsets_pending_for_l1d():
  # Region 9 full and eight fillers (deque [18]); region 100, PC P, offset 0;
  # 13 demand misses to fresh regions; one cycle later region 100's offset 1:
  # the aggressive bulk (2..15 L1D, 16..63 L2, source SS) with budget 15 - 13 -
  # 1 = 1: only 2 goes. Offset 2, far later (an L1D hit, budget 15): stride 1 =
  # 1 with `con`: targets 5, 6, 7, 8, all still pending for L1D, so they keep
  # the source "SS bulk" (not "promote"). Drain from 3: 3..15 (L1D), 16, 17
  # (L2), all SS: issued_ss 1 + 15, issued_promote 0.
  fillers = [a for r in SET0[1:9] for a in region(r, [3, 5], Q)]
  head = region(9, range(64), P) + fillers + region(100, [0], P)
  burst = [(5000 * 64 + 64 * k, S) for k in range(13)]  # 13 regions, first accesses
  k = len(head)
  trace = hand_trace(head + burst + region(100, [1, 2], P))
  instr = np.asarray(trace.instr).copy()
  instr[k:k + 14] = instr[k - 1] + FAR + np.arange(14)  # the burst and offset 1
  instr[k + 14:] = np.maximum(instr[k + 14:], instr[k + 13] + FAR)
  _, g = run_both(trace._replace(instr=instr))
  assert g.log[-2] == blocks_of(100, [2], 0)
  assert g.log[-1] == blocks_of(100, range(3, 16), 0) + blocks_of(100, [16, 17], 1)
  assert (g.stats["issued_ss"], g.stats["issued_promote"]) == (16, 0)


def _counter_trace():
  # Three full (0, 1) regions (9, 18, 27, PC P) and five (3, 5) fillers fill AT
  # set 0; three more fillers evict 9, 18, 27: con_counter 3. Region 101, PC S
  # (hash 35, not in the deque), offsets 0, 1: counter 3 > 2 -> conservative
  # bulk, 2..15 into L2. Eight more set-0 regions evict 101 with a partial
  # (0, 1) footprint {0, 1}: counter 3 > 2, so the artifact computes
  # `con_counter >> 1` and drops it (stays 3); the fixed mode halves it to 1.
  # Region 200 (set 2), PC S, offsets 0, 1: the artifact's counter 3 gives the
  # conservative bulk again (2..15 into L2); the fixed counter 1 gives nothing.
  full = [a for r in SET0[:3] for a in region(r, range(64), P)]
  fill1 = [a for r in SET0[3:11] for a in region(r, [3, 5], Q)]
  fill2 = [a for r in SET0[12:20] for a in region(r, [3, 5], Q)]
  return full + fill1 + region(SET0[11], [0, 1], S) + fill2 + region(200, [0, 1], S)


@pytest.mark.parametrize("pf", [ARTIFACT, FIXED], ids=["artifact", "fixed"])
def test_con_counter_artifact_no_op_vs_fixed_halving(pf):
  state, g = run_both(hand_trace(_counter_trace()), pf)
  assert g.stats["ss_full"] == 3 and g.deque == [18]  # P's hash, pushed once
  k = 3 * 64 + 16
  assert g.log[k + 1] == blocks_of(SET0[11], range(2, 16), 1)  # conservative: L2
  if pf is ARTIFACT:
    assert g.con_counter == 3 and g.log[-1] == blocks_of(200, range(2, 16), 1)
  else:
    assert g.con_counter == 1 and g.log[-1] == []
  assert int(state.prefetcher.con_counter) == g.con_counter


def test_ss_disabled_makes_0_1_an_ordinary_pt_key():
  # Without the SS module, region 9's full (0, 1) footprint trains PT key
  # (0, 1) like any other; region 100 (0, 1) then hits it and drains the other
  # 62 offsets into L1D: 2..15 now (budget 14), the rest on later accesses.
  fillers = [a for r in SET0[1:9] for a in region(r, [3, 5], Q)]
  accesses = region(9, range(64), P) + fillers + region(100, [0, 1], P)
  _, g = run_both(hand_trace(accesses), ss_enabled=False)
  assert g.stats["ss_lookups"] == 0 and g.stats["pt_hits"] == 1
  assert g.log[-1] == blocks_of(100, range(2, 16), 0)


def test_pt_enabled_off_misses_every_key_but_0_1_and_still_trains():
  # AT set 0 takes region 9 (offsets 10, 20, 5, 41, 35: key (10, 20)), region
  # 18 (all 64 offsets: key (0, 1)) and six (3, 5) fillers; two more fillers
  # evict 9 (trains PT key (10, 20) with {5, 10, 20, 35, 41}) then 18. Then
  # region 100 (set 1) accesses 10, 20 and region 200 (set 2, PC P) 0, 1.
  fillers = [a for r in SET0[2:10] for a in region(r, [3, 5], Q)]
  accesses = (region(9, [10, 20, 5, 41, 35], P) + region(18, range(64), P) + fillers
              + region(100, [10, 20], P) + region(200, [0, 1], P))
  trace = hand_trace(accesses)
  # PT on, SS off ("pht"): 18 trains PT key (0, 1) like any other. Region
  # 100 hits (10, 20): 35, 41, 5 into L1D (drained upward from 21, wrapping);
  # region 200 hits (0, 1): 2..15 into L1D (budget 14: its demand miss holds
  # an MSHR).
  _, g = run_both(trace, **gz.VARIANTS["pht"])
  assert g.log[-3] == blocks_of(100, [35, 41, 5], 0)
  assert g.log[-1] == blocks_of(200, range(2, 16), 0)
  assert (g.stats["pt_writes"], g.stats["pt_lookups"], g.stats["pt_hits"]) == (2, 12, 2)
  # PT off, SS off ("pht4ss"): the same two trainings and twelve lookups, but
  # only the (0, 1) lookup may hit: region 100 gets nothing, region 200 the
  # same 2..15.
  _, g = run_both(trace, **gz.VARIANTS["pht4ss"])
  assert g.log[-3] == [] and g.log[-1] == blocks_of(200, range(2, 16), 0)
  assert (g.stats["pt_writes"], g.stats["pt_lookups"], g.stats["pt_hits"]) == (2, 12, 1)
  # PT off, SS on (the SS bulk's default levels): 18 and 200 go to the SS
  # module, not the PT (10 lookups). 18 trains it (full: counter 1, P's hash
  # 18 in the deque); 9 still trains the PT, whose (10, 20) entry (set 10, tag
  # 20) is there but never read: region 100 gets nothing. Region 200 (0, 1)
  # with PC P: the aggressive bulk, 2..15 into L1D now (16..63 wait in the PB
  # for L2).
  _, g = run_both(trace, ss_enabled=True, pt_enabled=False, degree=0)
  assert g.log[-3] == [] and g.log[-1] == blocks_of(200, range(2, 16), 0)
  assert (g.stats["pt_writes"], g.stats["pt_lookups"], g.stats["pt_hits"]) == (1, 10, 0)
  assert (g.con_counter, g.deque, g.stats["ss_lookups"], g.stats["ss_bulk"]) == (1, [18], 2, 1)
  assert [(e["tag"], e["pat"]) for e in g.pt[10] if e] == [(20, {5, 10, 20, 35, 41})]


def test_ss_all_l1_fills_both_bulks_into_l1d():
  # Aggressive bulk: region 9's full (0, 1) footprint puts P's hash in the
  # deque (as in test_streaming_bulk_then_promote); region 100, PC P, offsets
  # 0, 1, 2, stride engine off. Offset 1: 2..15 into L1D either way (budget 14).
  # Offset 2 (an L1D hit, budget 15) drains upward from 3: the next pending
  # offsets are 16..30, into L2 by default, into L1D with ss_all_l1.
  fillers = [a for r in SET0[1:9] for a in region(r, [3, 5], Q)]
  trace = hand_trace(region(9, range(64), P) + fillers + region(100, [0, 1, 2], P))
  _, g = run_both(trace, degree=0)
  assert g.log[-2] == blocks_of(100, range(2, 16), 0)
  assert g.log[-1] == blocks_of(100, range(16, 31), 1)
  _, g = run_both(trace, degree=0, ss_all_l1=True)
  assert g.log[-2] == blocks_of(100, range(2, 16), 0)
  assert g.log[-1] == blocks_of(100, range(16, 31), 0)
  # Conservative bulk (counter 3, PC not in the deque; see _counter_trace):
  # 2..15 into L2 by default (test_con_counter_artifact_no_op_vs_fixed_halving),
  # into L1D with ss_all_l1.
  _, g = run_both(hand_trace(_counter_trace()), ss_all_l1=True)
  assert g.log[3 * 64 + 16 + 1] == blocks_of(SET0[11], range(2, 16), 0)


# ----------------------------------------------------------------------------- parity


def dedupe(arrays, n):
  """One access per block run per PC (a sparser trace: more regions per access)."""
  order = np.argsort(arrays.pc_hash, kind="stable")
  pcs, blocks = arrays.pc_hash[order], arrays.block[order]
  keep_sorted = np.ones(len(order), bool)
  keep_sorted[1:] = (pcs[1:] != pcs[:-1]) | (blocks[1:] != blocks[:-1])
  keep = np.zeros(len(order), bool)
  keep[order] = keep_sorted
  idx = np.flatnonzero(keep)[:n]
  return runner.make_trace(arrays.block[idx], pc_hash=arrays.pc_hash[idx],
                           is_store=arrays.is_store[idx], instr=arrays.instr[idx])


def synthetic_trace(name, seed, sparse):
  if sparse:
    return dedupe(trace_format.to_sim_arrays(synthetic.generate(name, 8 * N, seed)), N)
  a = trace_format.to_sim_arrays(synthetic.generate(name, N, seed))
  return runner.make_trace(a.block, pc_hash=a.pc_hash, is_store=a.is_store, instr=a.instr)


# Accesses come a few instructions apart and time does not stall on misses (the
# hierarchy has no core model), so at cpi0 = 1 a miss-heavy trace keeps every
# L1D MSHR busy and the budget at 0: most cases give the memory time (cpi0).
PARITY = [
    # (generator, seed, sparse, prefetcher, config, cpi0, params, what it must exercise)
    ("aos_walk", 0, False, ARTIFACT, DEFAULT, 8, {}, ("pt_hits", "issued_pt", "at_evictions")),
    ("aos_walk", 1, False, FIXED, SMALL, 32, dict(pt_entries=128), ("pt_hits", "issued_pt")),
    ("stream_copy", 0, True, ARTIFACT, DEFAULT, 8, dict(region_blocks=8),
     ("ss_bulk", "ss_full", "issued_ss")),
    # (No synthetic case here evicts a pending PB entry since the drain clears
    # the accessed offset: a fully streamed region's entry empties and is erased.
    # The PB eviction is hand-worked in test_stride_trigger_without_targets_...)
    ("stream_copy", 1, True, FIXED, DEFAULT, 1, dict(region_blocks=16, pt_entries=512),
     ("ss_bulk", "ss_full", "stride_triggers")),
    ("stencil2d_row", 0, True, ARTIFACT, SMALL, 16, dict(region_blocks=16, degree=2, lookahead=1),
     ("ss_lookups", "issued_stride")),
    ("stencil2d_row", 2, True, FIXED, DEFAULT, 1, dict(ss_enabled=False, region_blocks=8),
     ("pt_hits", "issued_pt", "issued_stride")),
]


@pytest.mark.parametrize("case", range(len(PARITY)))
def test_matches_reference_on_synthetic_traces(case):
  name, seed, sparse, pf, config, cpi0, kw, exercised = PARITY[case]
  trace = synthetic_trace(name, seed, sparse)
  state, g = run_both(trace, pf, config, cpi0, **kw)
  for stat in exercised:
    assert g.stats[stat] > 0, stat
  c = h.counters(state.cache)
  assert int(c["pf_issued"]) > 0 and int(c["l1d_pf_useful"]) + int(c["l2_pf_useful"]) > 0


@functools.lru_cache(maxsize=None)
def mixed_trace(seed):
  """Chunks of 256 accesses taken in turn from a sparse stream_copy (full
  (0, 1) regions: the SS module, or PT key (0, 1)) and an aos_walk (other PT
  keys, strides) in a far address range, 4 instructions apart."""
  a = dedupe(trace_format.to_sim_arrays(synthetic.generate("stream_copy", 8 * N, seed)), N)
  b = trace_format.to_sim_arrays(synthetic.generate("aos_walk", N, seed))

  def interleave(x, y, dtype):  # [N / 512 chunk pairs, 2 sources, 256] -> [N]
    pair = [np.asarray(v)[:N // 2].reshape(-1, 1, 256) for v in (x, y)]
    return np.concatenate(pair, axis=1).reshape(-1).astype(dtype)

  return runner.make_trace(interleave(a.block, np.asarray(b.block) + (1 << 22), np.int32),
                           pc_hash=interleave(a.pc_hash, np.asarray(b.pc_hash) + 0x100, np.int32),
                           is_store=interleave(a.is_store, b.is_store, np.int8),
                           instr=(np.arange(N) * 4).astype(np.int32))


VARIANT_RB = 32  # the variant runs' region size: full regions, bulks past their L1D span (8)


@pytest.mark.parametrize("name", list(gz.VARIANTS))
def test_variants_match_reference(name):
  kw = gz.VARIANTS[name]
  _, g = run_both(mixed_trace(0), ARTIFACT, DEFAULT, 8, region_blocks=VARIANT_RB, **kw)
  st = g.stats
  levels = {lvl for _, lvl in g.issued}
  assert st["pt_writes"] > 0 and st["pt_lookups"] > 0  # the PT trains in every variant
  assert (st["stride_triggers"] > 0) == (kw["degree"] > 0)
  assert (st["ss_bulk"] > 0) == kw["ss_enabled"] and (st["ss_full"] > 0) == kw["ss_enabled"]
  assert (st["pt_hits"] > 0) == (kw["pt_enabled"] or not kw["ss_enabled"])
  if name == "gaze":
    assert levels == {0, 1} and st["issued_promote"] > 0  # the bulk's L2 part, stage 2
  if kw["ss_all_l1"]:
    assert levels == {0} and st["issued_ss"] > 0


def test_variants_in_one_sweep_equal_single_runs_and_compile_once():
  trace = mixed_trace(1)
  names = list(gz.VARIANTS)
  grid = [dict(gz.VARIANTS[n], region_blocks=VARIANT_RB) for n in names]
  with testing.count_lowerings() as lowerings:
    result = sweep.sweep([trace], DEFAULT, ARTIFACT, grid, cpi0=8, devices=1)
  assert result.compilations == 1 and len(lowerings) == 1  # all 7 variants and the baseline
  for c, kw in enumerate(grid):
    single, _ = runner.run(trace, DEFAULT, h.make_params(cpi0=8, prefetcher=ARTIFACT.make_params(
        **kw)), ARTIFACT)
    for part in ("cache", "prefetcher"):
      jax.tree.map(lambda b, s: np.testing.assert_array_equal(np.asarray(b)[c, 0], s),
                   getattr(result.state, part), getattr(single, part))
  # Variants with the same switches ("pht" and "no_ss", "sm4ss" and "ss_only")
  # end with the same statistics; any two others differ.
  stats_CS = np.stack([v[:, 0] for v in gz.stats(result.state.prefetcher).values()], axis=1)
  for i, j in itertools.combinations(range(len(names)), 2):
    same = gz.VARIANTS[names[i]] == gz.VARIANTS[names[j]]
    assert np.array_equal(stats_CS[i], stats_CS[j]) == same, (names[i], names[j])
  # Other traced values (another order, another PT size): the same program.
  grid2 = [dict(gz.VARIANTS[n], region_blocks=16, pt_entries=512) for n in reversed(names)]
  with testing.count_lowerings() as lowerings:
    again = sweep.sweep([trace], DEFAULT, ARTIFACT, grid2, cpi0=8, devices=1)
  assert again.compilations == 0 and not lowerings


def test_stores_and_padding_leave_the_state_unchanged():
  # A store-only trace: Gaze sees nothing.
  trace = hand_trace(region(3, [1, 2, 3, 4], P))
  trace = trace._replace(is_store=np.ones((N,), np.int8))
  state, _ = runner.run(trace, DEFAULT, h.make_params(prefetcher=ARTIFACT.make_params()),
                        ARTIFACT)
  init = ARTIFACT.init(ARTIFACT.make_params())
  jax.tree.map(np.testing.assert_array_equal, state.prefetcher, init)


# ----------------------------------------------------------------------------- sweep


SWEEP_PF = gz.gaze("artifact", max_pt_entries=1024, max_region_blocks=128)


def test_sweep_is_one_compile_and_equals_single_runs():
  trace = synthetic_trace("aos_walk", 3, False)
  grid = [dict(pt_entries=128, region_blocks=32), dict(pt_entries=1024, region_blocks=64),
          dict(pt_entries=256, region_blocks=128, degree=0, ss_enabled=False)]
  params = [h.make_params(prefetcher=SWEEP_PF.make_params(**kw)) for kw in grid]
  stacked = h.stack_params(params)
  swept, codes = runner.run_batch(trace, DEFAULT, stacked, SWEEP_PF, trace_axis=None,
                                  params_axis=0)
  for i, p in enumerate(params):
    single, single_codes = runner.run(trace, DEFAULT, p, SWEEP_PF)
    np.testing.assert_array_equal(np.asarray(codes)[i], single_codes)
    jax.tree.map(lambda b, s: np.testing.assert_array_equal(np.asarray(b)[i], s), swept, single)
  hits = gz.stats(swept.prefetcher)["pt_hits"]
  assert len(set(hits.tolist())) > 1  # the configurations differ
  # New values, same shapes: nothing is traced or compiled again.
  other = h.stack_params([h.make_params(prefetcher=SWEEP_PF.make_params(**kw)) for kw in (
      dict(pt_entries=512, region_blocks=8), dict(pt_entries=128, region_blocks=16, lookahead=0),
      dict(pt_entries=256, region_blocks=64, degree=8))])
  with testing.count_lowerings() as lowerings:
    runner.run_batch(trace, DEFAULT, other, SWEEP_PF, trace_axis=None, params_axis=0)
    runner.run(trace, DEFAULT, h.make_params(prefetcher=SWEEP_PF.make_params(region_blocks=16)),
               SWEEP_PF)
  assert not lowerings
  # One swept point against the reference (a region size other than the max).
  run_both(trace, SWEEP_PF, DEFAULT, pt_entries=128, region_blocks=32)


# ----------------------------------------------------------------------------- storage, errors


def test_storage_within_5_percent_of_4_46_kb():
  bits = gz.storage_bits(ARTIFACT.make_params())
  # FT 64 x (1 + 34 + 6 + 6 + 2) = 3136; AT 64 x (1 + 34 + 6 + 6 + 6 + 64 + 6 + 7 + 2 + 3)
  # = 8640; PT 256 x (1 + 6 + 64 + 2) = 18688; PB 32 x (1 + 35 + 6 + 6 + 128 + 3) = 5728;
  # SS 4 + 8 x 6 = 52.
  assert (bits["ft"], bits["at"], bits["pt"], bits["pb"], bits["ss"]) == (
      3136, 8640, 18688, 5728, 52)
  assert bits["total"] == 36244
  assert abs(bits["total_kib"] - 4.46) / 4.46 < 0.05
  assert gz.storage_bits() == bits == gz.storage_bits(dict(pt_entries=256))
  # Twice the PT entries: 256 more entries, one tag bit fewer each.
  assert gz.storage_bits(pt_entries=512)["pt"] == 512 * (1 + 5 + 64 + 2)
  assert gz.storage_bits(region_blocks=1024)["total"] > bits["total"]
  # A table a variant never reads costs nothing: the PT of sm4ss / ss_only
  # (trained, never looked up), the SS module without ss_enabled. pht4ss reads
  # its PT (key (0, 1)) and pays for all of it.
  for name, (pt, ss) in dict(gaze=(18688, 52), no_ss=(18688, 0), pht=(18688, 0),
                             pt_only=(18688, 0), pht4ss=(18688, 0), sm4ss=(0, 52),
                             ss_only=(0, 52)).items():
    v = gz.storage_bits(**gz.VARIANTS[name])
    assert (v["pt"], v["ss"]) == (pt, ss), name
    assert v["total"] == bits["total"] - (18688 - pt) - (52 - ss)


def test_variants_table():
  assert list(gz.VARIANTS) == ["gaze", "no_ss", "pht", "pt_only", "pht4ss", "sm4ss", "ss_only"]
  keys = {"ss_enabled", "pt_enabled", "ss_all_l1", "degree"}
  assert all(set(kw) == keys for kw in gz.VARIANTS.values())  # a sweep grid as it stands
  # "gaze" is the defaults; every variant builds checked params.
  assert ARTIFACT.make_params(**gz.VARIANTS["gaze"]) == ARTIFACT.make_params()
  for kw in gz.VARIANTS.values():
    p = ARTIFACT.make_params(**kw)
    assert (bool(p.ss_enabled), bool(p.pt_enabled), bool(p.ss_all_l1), int(p.degree)) == (
        kw["ss_enabled"], kw["pt_enabled"], kw["ss_all_l1"], kw["degree"])


def test_errors():
  with pytest.raises(ValueError, match=r"pt_entries: expected a power of two, given 384"):
    ARTIFACT.make_params(pt_entries=384)
  with pytest.raises(ValueError, match=r"pt_entries: expected 128..1024.*given 2048"):
    ARTIFACT.make_params(pt_entries=2048)
  with pytest.raises(ValueError, match=r"region_blocks: expected a power of two, given 48"):
    ARTIFACT.make_params(region_blocks=48)
  with pytest.raises(ValueError, match=r"region_blocks: expected 8..64 \(the prefetcher's"
                     r" max_region_blocks\), given 128"):
    ARTIFACT.make_params(region_blocks=128)
  with pytest.raises(ValueError, match=r"region_blocks: expected 8..64.*given 4"):
    ARTIFACT.make_params(region_blocks=4)
  with pytest.raises(ValueError, match=r"mode: expected one of 'artifact', 'fixed', given 'paper'"):
    gz.gaze("paper")
  with pytest.raises(ValueError, match=r"max_region_blocks: expected a power of two, given 100"):
    gz.gaze(max_region_blocks=100)
  with pytest.raises(ValueError, match=r"degree: expected 0..8, given 9"):
    ARTIFACT.make_params(degree=9)
  with pytest.raises(TypeError, match=r"ss_enabled: expected a bool"):
    ARTIFACT.make_params(ss_enabled=1)
  with pytest.raises(TypeError, match=r"pt_enabled: expected a bool, given 0"):
    ARTIFACT.make_params(pt_enabled=0)
  with pytest.raises(TypeError, match=r"ss_all_l1: expected a bool, given 'yes'"):
    ARTIFACT.make_params(ss_all_l1="yes")
  with pytest.raises(TypeError, match=r"pt_enabled: expected a bool, given None"):
    gz.storage_bits(pt_enabled=None)
  with pytest.raises(TypeError, match=r"pt_entries: expected an int"):
    ARTIFACT.make_params(pt_entries=256.0)
  with pytest.raises(ValueError, match=r"max_candidates: expected an int >= 1"):
    gz.gaze(max_candidates=0)
  with pytest.raises(ValueError, match=r"mode: expected 'artifact' or 'fixed'"):
    gref.GazeReference("paper")
  assert gz.gaze() is gz.gaze("artifact", 1024, 64, 16)  # cached: one compile per shape
