"""The KV-cache benchmark computes its claims from its rows (made-up rows here)."""

import pytest

from tests.conftest import load_benchmark


@pytest.fixture(scope="module")
def kv_cache():
  return load_benchmark("kv_cache")


def rows(cluster_recall, quest_recall, speedup):
  out = [dict(part="fidelity", method=m, budget=b, recall=r)
         for m, rs in (("clusterkv", cluster_recall), ("quest", quest_recall))
         for b, r in zip((64, 128), rs)]
  out.append(dict(part="timing", method="clusterkv", context=32768, budget=2048,
                  speedup_vs_dense=speedup))
  return out


def test_claims_follow_the_rows(kv_cache):
  cfg = kv_cache.Config(context=256, eval_steps=4, layers=(2,), budgets=(64, 128),
                        methods=("quest", "clusterkv"), timing_contexts=(32768,),
                        timing_budgets=(2048,))
  good = {c.id: c for c in kv_cache.claims_from(rows((0.8, 0.9), (0.7, 0.85), 2.5), cfg)}
  assert good["clusterkv_recall_ge_quest"].holds and good["clusterkv_recall_ge_quest"].measured == 0.05
  assert good["clusterkv_decode_speedup"].holds and good["clusterkv_decode_speedup"].measured == 2.5
  bad = {c.id: c for c in kv_cache.claims_from(rows((0.8, 0.84), (0.7, 0.85), 1.5), cfg)}
  assert not bad["clusterkv_recall_ge_quest"].holds
  assert bad["clusterkv_recall_ge_quest"].measured == pytest.approx(-0.01)
  assert not bad["clusterkv_decode_speedup"].holds


def test_unknown_method_is_rejected(kv_cache):
  with pytest.raises(ValueError, match="methods: unknown \\['magic'\\]"):
    kv_cache.Config(context=256, eval_steps=4, layers=(2,), budgets=(64,), methods=("magic",))
