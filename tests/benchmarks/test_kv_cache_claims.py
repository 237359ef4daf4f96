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


def test_passkey_and_stream_claims_follow_the_rows(kv_cache):
  cfg = kv_cache.Config(context=256, eval_steps=4, layers=(2,), budgets=(64,),
                        methods=(), passkey_context=1024, passkey_depths=(0.2, 0.8),
                        stream_cache=16, stream_segments=4, timing_contexts=())
  def pk(method, correct, budget=64):  # 64 = passkey_context / 16, the claims' budget
    return [dict(part="passkey", method=method, budget=None if method == "full" else budget,
                 depth=d, correct=c) for d, c in zip((0.2, 0.8), correct)]
  def st(method, ppls):
    rows = [dict(part="stream", method=method, segment=i, ppl=p) for i, p in enumerate(ppls)]
    return rows + [dict(part="stream", method=method, segment="all", ppl=sum(ppls) / 4)]
  rows = (pk("full", (True, True)) + pk("clusterkv", (True, True)) + pk("streaming_llm", (False, True))
          + pk("clusterkv", (False, False), budget=32)  # another budget: not the claims'
          + pk("streaming_llm", (True, True), budget=32)
          + st("dense", (5, 6, 7, 8)) + st("inf_mllm", (5.5, 6, 7, 9.1)) + st("streaming_llm", (6, 7, 8, 9)))
  claims = {c.id: c for c in kv_cache.claims_from(rows, cfg)}
  assert claims["clusterkv_passkey_near_full"].measured == 1.0
  assert claims["clusterkv_passkey_near_full"].holds
  assert claims["clusterkv_passkey_gt_streaming"].holds  # 1.0 > 0.5
  # worst segment ratio 9.1 / 8 = 1.1375 <= 1.15
  assert claims["infmllm_stream_stable"].measured == pytest.approx(1.138, abs=1e-3)
  assert claims["infmllm_stream_stable"].holds
  assert claims["infmllm_le_streaming"].holds  # 6.9 <= 7.5
  rows = [r if not (r.get("method") == "inf_mllm" and r.get("segment") == 0) else
          dict(r, ppl=6.0) for r in rows]  # 6.0 / 5 = 1.2 > 1.15
  assert not {c.id: c for c in kv_cache.claims_from(rows, cfg)}["infmllm_stream_stable"].holds
