"""The prefetch benchmark computes its six claims from its rows (made-up rows here)."""

import types

import numpy as np
import pytest

from tests.conftest import load_benchmark


@pytest.fixture(scope="module")
def pf():
  return load_benchmark("prefetch")


def rows(*, gaze=(1.10, 1.20), pmp=(1.05, 1.10), berti=(1.0, 1.1), useless_on=10,
         useless_off=50, kib=4.42, compilations=1, ratio=60.0):
  out = []
  for name, speedups in (("gaze", gaze), ("pmp", pmp), ("berti_simplified", berti)):
    for trace, s in zip(("syn:stream_copy", "real:matmul"), speedups):
      out.append(dict(part="compare", prefetcher=name, trace=trace, speedup=s, pf_useless=1,
                      pf_resident=0))
  for name, useless in (("gaze", useless_on), ("gaze_no_ss", useless_off)):
    out.append(dict(part="ablation", prefetcher=name, trace="real:stream_triad", speedup=None,
                    pf_useless=useless, pf_resident=2))
  out.append(dict(part="storage", prefetcher="gaze", total_kib=kib))
  for p in (128, 256):
    out.append(dict(part="sweep", pt_entries=p, region_bytes=4096, trace="syn:aos_walk",
                    speedup=1.0, compilations=compilations, executables=1, runs=4))
  out.append(dict(part="speed", trace="syn:aos_walk", accesses=1000, device="cpu", ratio=ratio,
                  jax_accesses_per_s=ratio * 1e3, python_accesses_per_s=1e3))
  return out


def claims(pf, **kw):
  return {c.id: c for c in pf.claims_from(rows(**kw), pf.Config())}


def test_all_six_claims_hold_on_good_rows(pf):
  got = claims(pf)
  assert set(got) == {"gaze_ge_pmp", "gaze_ge_berti", "ss_module_curbs_overprefetch",
                      "storage_kb", "sweep_one_compile", "sim_speedup_vs_python"}
  assert all(c.holds for c in got.values()), {k: c.measured for k, c in got.items()}
  # geomean of Gaze's two speedups (the None row is left out): sqrt(1.1 * 1.2)
  assert got["gaze_ge_pmp"].measured.startswith(f"{(1.1 * 1.2) ** 0.5:.4f} vs")
  # the ablation rows on real:stream_triad: 10 + 2 useless with SS on, 50 + 2 off
  assert got["ss_module_curbs_overprefetch"].measured == "12 vs 52"
  assert got["sweep_one_compile"].measured == "1 lowered, 1 held"


@pytest.mark.parametrize("kw, claim", [
    (dict(gaze=(1.0, 1.0), berti=(0.9, 0.9)), "gaze_ge_pmp"),
    (dict(berti=(1.3, 1.3)), "gaze_ge_berti"),
    (dict(useless_off=10), "ss_module_curbs_overprefetch"),
    (dict(kib=4.0), "storage_kb"),
    (dict(compilations=2), "sweep_one_compile"),
    (dict(ratio=49.0), "sim_speedup_vs_python"),
])
def test_each_claim_fails_below_its_threshold(pf, kw, claim):
  got = claims(pf, **kw)
  assert not got[claim].holds
  assert all(c.holds for k, c in got.items() if k != claim), kw


def test_claims_use_the_l1d_placement_only(pf):
  # Rows of the L2 placement (part compare_l2) where Gaze loses badly change no claim.
  extra = [dict(part="compare_l2", prefetcher=name, placement="l2", trace="syn:stream_copy",
                speedup=s, pf_useless=1, pf_resident=0)
           for name, s in (("gaze", 0.5), ("pmp", 2.0), ("berti_simplified", 2.0))]
  got = {c.id: c for c in pf.claims_from(rows() + extra, pf.Config())}
  assert got["gaze_ge_pmp"].holds and got["gaze_ge_berti"].holds
  assert got["gaze_ge_pmp"].measured == claims(pf)["gaze_ge_pmp"].measured


def test_warmups_keep_the_measured_accesses_when_a_trace_is_short(pf):
  # warm-up 30 + 10 measured: a 40-access trace warms 30; a 25-access one warms 15
  # (10 left to measure); a 5-access one cannot warm at all.
  cfg = pf.Config(warmup=30, accesses=10)
  traces = {n: types.SimpleNamespace(block=np.zeros(k)) for n, k in (("a", 40), ("b", 25),
                                                                      ("c", 5))}
  assert pf.warmups(cfg, traces, ["a", "b", "c"]) == [30, 15, 0]
