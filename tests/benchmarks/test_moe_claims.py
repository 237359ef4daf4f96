"""The MoE benchmark computes its claims from its rows (made-up rows here), and its
variant forward reproduces the model's own logits."""

import jax.numpy as jnp
import numpy as np
import pytest

from jaxsys.models import moe_lm
from tests.conftest import load_benchmark


@pytest.fixture(scope="module")
def moe():
  return load_benchmark("moe")


def rows(*, kl_replace=0.001, kl_skip=0.01, low_share=0.3, top1=0.9,
         penalties=None, load_share=0.9, lru_tps=3.0, hobbit_tps=7.0,
         capacity_s=0.01, ragged_s=0.1, drop_rate=0.002):
  out = [
      dict(part="quality", variant="replace_int4", kl=kl_replace, low_share=low_share),
      dict(part="quality", variant="skip", kl=kl_skip, low_share=low_share),
      dict(part="predictor", distance=1, top1=top1, overlap=0.8),
      dict(part="predictor", distance=2, top1=0.1, overlap=0.2),  # not the claim's distance
  ]
  penalties = penalties or {8: (0.30, 0.25, 0.24), 16: (0.10, 0.10, 0.09)}
  for cap, values in penalties.items():
    for policy, p in zip(("lru", "lfu", "hobbit"), values):
      out.append(dict(part="cache", policy=policy, capacity_high=cap, capacity_low=4,
                      penalty_per_access=p))
    out.append(dict(part="cache", policy="belady", capacity_high=cap, capacity_low=4,
                    penalty_per_access=0.0))
  common = dict(part="decode", model="mixtral-8x7b", device="rtx4090_pcie4")
  out += [dict(common, system="no_cache", prefetch="no_prefetch", load_share=load_share,
               tokens_per_s=1.0),
          dict(common, system="lru_offload", prefetch="no_prefetch", load_share=0.8,
               tokens_per_s=lru_tps),
          dict(common, system="hobbit", prefetch="no_prefetch", load_share=0.7,
               tokens_per_s=100.0),  # the claim reads the prefetch row
          dict(common, system="hobbit", prefetch="prefetch", load_share=0.7,
               tokens_per_s=hobbit_tps)]
  shape = dict(part="dispatch", device="cpu", tokens=2048, experts=32, d=128, f=256, top_k=2)
  out += [dict(shape, backend="capacity_einsum", capacity_factor=1.25, drop_rate=drop_rate,
               median_s=capacity_s),
          dict(shape, backend="ragged_dot", capacity_factor=None, drop_rate=0.0,
               median_s=ragged_s)]
  return out


def claims(moe, **kw):
  return {c.id: c for c in moe.claims_from(rows(**kw), moe.Config())}


def test_claims_hold_on_good_rows(moe):
  got = claims(moe)
  assert set(got) == {"hobbit_replace_beats_skip", "predictor_top1", "cache_policy_order",
                      "load_share", "decode_speedup_vs_offloading", "dispatch_speedup_cpu"}
  assert all(c.holds for c in got.values()), {k: c.measured for k, c in got.items()}
  assert got["predictor_top1"].measured == 0.9
  assert got["load_share"].measured == 0.9
  assert got["decode_speedup_vs_offloading"].measured == pytest.approx(7.0 / 3.0, abs=1e-3)
  assert got["dispatch_speedup_cpu"].measured.startswith("10.00x")
  assert "0.0020" in got["dispatch_speedup_cpu"].measured
  assert "0.20%" in got["dispatch_speedup_cpu"].statement


@pytest.mark.parametrize("kw, claim", [
    (dict(kl_replace=0.02), "hobbit_replace_beats_skip"),
    (dict(low_share=0.0), "hobbit_replace_beats_skip"),
    (dict(top1=0.64), "predictor_top1"),
    (dict(penalties={8: (0.30, 0.25, 0.26)}), "cache_policy_order"),  # HOBBIT > LFU
    (dict(penalties={8: (0.30, 0.25, 0.24), 16: (0.10, 0.11, 0.09)}), "cache_policy_order"),
    (dict(load_share=0.97), "load_share"),
    (dict(load_share=0.75), "load_share"),
    (dict(hobbit_tps=5.9), "decode_speedup_vs_offloading"),
    (dict(capacity_s=0.03), "dispatch_speedup_cpu"),
])
def test_claims_fail_on_bad_rows(moe, kw, claim):
  got = claims(moe, **kw)
  assert not got[claim].holds
  others = [c for k, c in got.items() if k != claim]
  assert all(c.holds for c in others)


def test_claims_skip_missing_parts(moe):
  assert moe.claims_from([r for r in rows() if r["part"] != "cache"], moe.Config())
  ids = {c.id for c in moe.claims_from([r for r in rows() if r["part"] != "cache"],
                                       moe.Config())}
  assert "cache_policy_order" not in ids


def test_config_rejects_bad_settings(moe):
  with pytest.raises(ValueError, match="cache_capacities"):
    moe.Config(cache_capacities=(0, 8))
  with pytest.raises(ValueError, match="quality_t1, quality_t2"):
    moe.Config(quality_t1=0.9, quality_t2=0.5)


def test_variant_forward_matches_the_model(moe):
  cfg = moe_lm.MoELMConfig(d_model=32, num_layers=2, num_heads=2, d_ff=64, num_experts=4)
  model = moe_lm.init_model(cfg, seed=3)
  tokens = jnp.asarray(moe_lm.sample_batch(np.random.default_rng(0), 2, 16).inputs_BS,
                       jnp.int32)
  high = moe.expert_weights(model)
  low = moe.low_copies(high, 4, 32)
  assert moe.check_forward(model, tokens, high, low) <= 1e-3
  want, _ = model(tokens, dropless=True)
  # LOW slots promoted to HIGH is the full model too, whatever the thresholds.
  got, low_share, _ = moe.hobbit_forward(model, tokens, high, low, t1=0.6, t2=1.0, low_as="high")
  np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=1e-4, rtol=1e-4)
  assert 0.0 < float(low_share) < 0.5
  # Skipping LOW slots moves the logits more than their int4 copies do.
  rep, _, _ = moe.hobbit_forward(model, tokens, high, low, t1=0.6, t2=1.0, low_as="low")
  skip, _, _ = moe.hobbit_forward(model, tokens, high, low, t1=0.6, t2=1.0, low_as="skip")
  assert float(jnp.max(jnp.abs(rep - want))) > 0.0
  assert float(jnp.max(jnp.abs(rep - want))) < float(jnp.max(jnp.abs(skip - want)))
