"""The secure benchmark computes its six claims from its rows (made-up rows here)."""

import pytest

from tests.conftest import load_benchmark


@pytest.fixture(scope="module")
def sec():
  return load_benchmark("secure")


FITTED = "nimbus_fitted_gelu+nimbus_fitted_exp_softmax"


def rows(sec, *, cos=0.995, cos_kd=0.9992, nl=(3.0, 4.0), lin=(2.0, 5.0), e2e=(2.5, 3.0),
         shares=0.99995):
  out = [dict(part="fit", kind="gelu", degree=3), dict(part="fit", kind="exp", degree=3),
         dict(part="fit", kind="gelu", degree=2, variant="nimbus_public"),
         dict(part="accuracy", variant=FITTED, stage="no_finetune", cos_mean=cos, cos_min=0.98),
         dict(part="accuracy", variant=FITTED, stage="distilled", cos_mean=cos_kd, cos_min=0.99),
         dict(part="shares", sentences=16, cos_mean=shares, cos_min=shares - 1e-5)]
  # Nimbus: every category costs 1 s; others scale the non-linear / linear / total rows.
  for net, f_nl, f_lin, f_e2e in zip(("LAN", "WAN"), nl, lin, e2e):
    for system in ("nimbus", "bumblebee", "puma_nonlinear"):
      for cat in ("Linear_qkv", "Linear_o", "Linear_h1", "Linear_h2", "Softmax", "GELU",
                  "Total"):
        v = 1.0
        if system != "nimbus":
          v = f_nl if cat in ("Softmax", "GELU") else f_e2e if cat == "Total" else f_lin
        out.append(dict(part="cost", system=system, network=net, category=cat, latency_s=v,
                        bytes=v))
  return out


def claims(sec, **kw):
  return {c.id: c for c in sec.claims_from(rows(sec, **kw), sec.Config())}


def test_all_six_claims_hold_on_good_rows(sec):
  got = claims(sec)
  assert set(got) == {"fitted_poly_cos", "distilled_cos", "nimbus_cheaper_nonlinear",
                      "cop_beats_sip", "end_to_end_speedup", "shares_match_plaintext"}
  assert all(c.holds for c in got.values()), {k: c.measured for k, c in got.items()}
  assert got["cop_beats_sip"].measured == "LAN 2.00x, WAN 5.00x"
  assert got["end_to_end_speedup"].measured == "LAN 2.50x, WAN 3.00x"


@pytest.mark.parametrize("kw, claim", [
    (dict(cos=0.989), "fitted_poly_cos"),
    (dict(cos_kd=0.9985), "distilled_cos"),
    (dict(nl=(1.9, 4.0)), "nimbus_cheaper_nonlinear"),
    (dict(lin=(2.0, 0.9)), "cop_beats_sip"),
    (dict(e2e=(1.9, 3.0)), "end_to_end_speedup"),
    (dict(shares=0.998), "shares_match_plaintext"),
])
def test_each_claim_fails_below_its_threshold(sec, kw, claim):
  got = claims(sec, **kw)
  assert not got[claim].holds
  assert all(c.holds for k, c in got.items() if k != claim)


def test_missing_rows_drop_claims(sec):
  rs = [r for r in rows(sec) if r["part"] not in ("shares", "cost")]
  got = {c.id for c in sec.claims_from(rs, sec.Config())}
  assert got == {"fitted_poly_cos", "distilled_cos"}
