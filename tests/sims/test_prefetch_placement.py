"""`placement.at_l2`: a prefetcher moved to the L2 hears only L1D misses, sees an L2
hit as its own hit, fills the L2; against the reference wrapper event for event."""

import numpy as np
import pytest

from jaxsys.sims.cache import hierarchy as h
from jaxsys.sims.cache import protocol
from jaxsys.sims.cache import reference as ref
from jaxsys.sims.cache import runner
from jaxsys.sims.prefetch import baselines_a_reference as R
from jaxsys.sims.prefetch import ip_stride
from jaxsys.sims.prefetch import placement

from .cache_fixtures import ROOMY, SMALL_CASCADE, random_trace

FAR = 1000  # instructions between accesses: every fill is done before the next access


def spaced(blocks, pcs=None):
  blocks = np.asarray(blocks, np.int32)
  pcs = np.zeros_like(blocks) if pcs is None else np.asarray(pcs, np.int32)
  return runner.make_trace(blocks, pc_hash=pcs, instr=(np.arange(len(blocks)) * FAR).astype(np.int32))


def run_both(trace, pf, pparams, rpf, config):
  state, codes = runner.run(trace, config, h.make_params(prefetcher=pparams), pf)
  model, rcodes = ref.run_reference(trace, config, prefetcher=rpf)
  return state, np.asarray(codes).tolist(), model, rcodes


def test_next_line_at_l2_hand_worked():
  # next-line (degree 1, asked to fill the L1D) at the L2:
  #   0  L1D miss, DRAM (3)   -> the L2 hears it: prefetch 1 into the L2 (not the L1D)
  #   0  L1D hit (0)          -> not heard, nothing issued
  #   1  L1D miss, L2 hit on the prefetched line (1) -> heard as its own hit: prefetch 2
  #   5  L1D miss, DRAM       -> prefetch 6
  pf = placement.at_l2(protocol.next_line(1))
  pparams = pf.make_params(fill_level="l1d")
  state, codes, model, rcodes = run_both(spaced([0, 0, 1, 5]), pf, pparams,
                                         ref.AtL2(ref.NextLine(1, 0)), ROOMY)
  assert codes == [3 + 8, 0, 1 + 8, 3 + 8] == rcodes
  c = h.counters(state.cache)
  assert (int(c["l1d_pf_fill"]), int(c["l2_pf_fill"])) == (0, 3)
  assert int(c["l2_pf_useful"]) == 1 and int(c["l1d_pf_useful"]) == 0
  assert int(state.prefetcher.loads) == 3  # heard 3 of the 4 loads
  assert {k: int(v) for k, v in c.items()} == model.counters()


def test_the_same_prefetcher_at_l1d_fills_l1d():
  # Control for the test above: unplaced, every load is heard and fills go to the L1D.
  pf = protocol.next_line(1)
  state, codes, _, rcodes = run_both(spaced([0, 0, 1, 5]), pf, pf.make_params(),
                                     ref.NextLine(1, 0), ROOMY)
  assert codes == rcodes == [3 + 8, 0 + 8, 0 + 8, 3 + 8]
  assert int(h.counters(state.cache)["l1d_pf_fill"]) == 3


def test_ip_stride_at_l2_trains_on_l1d_misses_only():
  # One PC strides by 2 blocks. Unplaced, IP-stride's L1D fills make every later
  # access an L1D hit; at the L2 its candidates fill the L2, so every access still
  # misses the L1D and trains it: from the third access (allocate, stride, confirm)
  # each access prefetches 3 strides ahead into the L2, and the later ones hit there.
  pf = placement.at_l2(ip_stride.ip_stride(3, max_sets=4, max_ways=2))
  blocks = list(range(0, 24, 2))
  pparams = pf.make_params(degree=3)
  rpf = ref.AtL2(R.IPStride(3, 4, 2, 1, 0, False))
  state, codes, model, rcodes = run_both(spaced(blocks, [4] * len(blocks)), pf, pparams, rpf,
                                         ROOMY)
  assert codes == rcodes
  level = runner.decode(np.asarray(codes, np.int8))["level"].tolist()
  # 0 allocates, 2 sets stride 2, 4 confirms it and issues 6, 8, 10 into the L2.
  assert level == [3, 3, 3] + [1] * 9
  assert np.asarray(state.prefetcher.stats).tolist() == [12, 10, rpf.inner.issued]
  assert [rpf.inner.loads, rpf.inner.triggers] == [12, 10]


@pytest.mark.parametrize("seed", [0, 1])
def test_at_l2_matches_reference_on_random_traces(seed):
  pf = placement.at_l2(ip_stride.ip_stride(3, max_sets=4, max_ways=2))
  pparams = pf.make_params(degree=2, cross_page=True)
  rpf = ref.AtL2(R.IPStride(2, 4, 2, 1, 0, True))
  trace = random_trace(seed, stores=0.2)
  # The streams (blocks past the random span of 48) get their own PC, so IP-stride trains.
  trace = trace._replace(pc_hash=np.where(np.asarray(trace.block) >= 48, 9,
                                          np.asarray(trace.pc_hash)).astype(np.int32))
  state, codes, model, rcodes = run_both(trace, pf, pparams, rpf, SMALL_CASCADE)
  assert codes == rcodes
  assert {k: int(v) for k, v in h.counters(state.cache).items()} == model.counters()
  assert np.asarray(state.prefetcher.stats).tolist() == [rpf.inner.loads, rpf.inner.triggers,
                                                          rpf.inner.issued]
  # Nothing was filled into the L1D by a prefetch, and the L2 prefetcher was busy.
  c = h.counters(state.cache)
  assert int(c["l1d_pf_fill"]) == 0 and int(c["l2_pf_fill"]) + int(c["llc_pf_fill"]) > 0


def test_not_self_masking_prefetchers_keep_their_state_on_unheard_steps():
  # A prefetcher without self-masking counts every step it is called on; at the L2
  # the wrapper keeps its old state on L1D hits.
  inner = protocol.next_line(1)._replace(name="counting", self_masking=False)
  pf = placement.at_l2(inner)
  state, _ = runner.run(spaced([0, 0, 0, 1]), ROOMY, h.make_params(prefetcher=pf.make_params()), pf)
  assert int(state.prefetcher.loads) == 2


def test_errors_and_caching():
  with pytest.raises(TypeError, match="prefetcher: expected a jaxsys"):
    placement.at_l2("gaze")
  pf = protocol.next_line(2)
  assert placement.at_l2(pf) is placement.at_l2(pf)
  assert placement.at_l2(pf).name == "next_line2@l2"
