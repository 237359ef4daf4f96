"""The prefetcher registry: every name builds a Prefetcher that runs; unknown names fail."""

import numpy as np
import pytest

from jaxsys.sims import prefetch
from jaxsys.sims.cache import hierarchy, protocol, runner


def test_names_cover_every_prefetcher():
  assert set(prefetch.NAMES) == {"none", "next_line", "gaze", "ip_stride", "sms", "bingo", "pmp",
                                 "berti_simplified", "spp", "ipcp", "dspatch"}


def _stream():
  """A sequential stream, two loads per block (constant stride for IP-stride)."""
  return np.arange(600, dtype=np.int32) // 2 + 4096


def _footprints():
  """400 regions of 64 blocks, each touched at offsets 3, 9, 17, 30 (a recurring footprint)."""
  return (np.arange(400, dtype=np.int32)[:, None] * 64 + 64 * 64
          + np.array([3, 9, 17, 30], np.int32)[None, :]).reshape(-1)


@pytest.mark.parametrize("name, blocks", [
    ("ip_stride", _stream()), ("gaze", _footprints()), ("pmp", _footprints()),
    ("berti_simplified", _stream()), ("spp", _footprints()), ("sms", _footprints()),
    ("bingo", _footprints()), ("ipcp", _stream()), ("dspatch", _footprints())])
def test_each_builds_and_issues(name, blocks):
  pf = prefetch.get(name)
  assert isinstance(pf, protocol.Prefetcher) and pf is prefetch.get(name)  # cached
  config = hierarchy.CacheConfig.make(l1d=dict(sets=4, ways=2), l2=dict(sets=8, ways=2),
                                      llc=dict(sets=16, ways=2))
  n = blocks.size
  trace = runner.make_trace(blocks, pc_hash=np.full(n, 0x4400, np.int32),
                            instr=np.arange(n, dtype=np.int32) * 40)
  params = hierarchy.make_params(cpi0=1, prefetcher=pf.make_params())
  state, _ = runner.run(trace, config, params, pf)
  assert int(hierarchy.counters(state.cache)["pf_issued"]) > 0


def test_unknown_name_lists_valid_ones():
  with pytest.raises(ValueError, match="expected one of .*gaze"):
    prefetch.get("stream_buffer")
