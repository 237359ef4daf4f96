"""The accuracy harness: sentence generator, activation capture on the real MiniLM
(checked against a numpy recomputation of layer 0), agreement metrics against
plain-Python formulas, and the distillation loss and a few training steps."""

import math

import jax.numpy as jnp
import numpy as np
import pytest

from jaxsys.models import minilm
from jaxsys.secure import distill
from jaxsys.secure import evaluate


def test_sentences_seeded_distinct_and_exclusive():
  a = evaluate.generate_sentences(50, 3)
  assert a == evaluate.generate_sentences(50, 3)
  assert len(set(a)) == 50
  assert a != evaluate.generate_sentences(50, 4)
  b = evaluate.generate_sentences(50, 3, exclude=a)
  assert not set(a) & set(b)
  assert all(s.endswith(".") and s[0].isupper() for s in a)
  with pytest.raises(ValueError, match="n: expected an int"):
    evaluate.generate_sentences(0, 0)
  with pytest.raises(ValueError, match="n: expected an int"):
    evaluate.generate_sentences(10**6, 0)


def test_sentences_fit_sixteen_tokens():
  _, _, tok = minilm.load_minilm()
  _, mask = tok(evaluate.generate_sentences(200, 0))
  assert mask.sum(1).max() <= 16


def _rank(v):
  order = sorted(range(len(v)), key=lambda i: v[i])
  r = [0.0] * len(v)
  for pos, i in enumerate(order):
    r[i] = float(pos)
  return r


def _pearson(a, b):
  ma, mb = sum(a) / len(a), sum(b) / len(b)
  cov = sum((x - ma) * (y - mb) for x, y in zip(a, b))
  return cov / math.sqrt(sum((x - ma) ** 2 for x in a) * sum((y - mb) ** 2 for y in b))


def test_agreement_against_plain_python():
  rng = np.random.default_rng(0)
  ref = rng.normal(size=(7, 5))
  app = ref + 0.4 * rng.normal(size=(7, 5))
  got = evaluate.agreement(ref, app)
  unit = lambda v: [x / math.sqrt(sum(y * y for y in v)) for x in v]
  r = [unit(list(row)) for row in ref]
  a = [unit(list(row)) for row in app]
  dot = lambda u, v: sum(x * y for x, y in zip(u, v))
  cos = [dot(u, v) for u, v in zip(r, a)]
  pairs = [(i, j) for i in range(7) for j in range(i + 1, 7)]
  sim_r = [dot(r[i], r[j]) for i, j in pairs]
  sim_a = [dot(a[i], a[j]) for i, j in pairs]
  nn = lambda e, i: max((j for j in range(7) if j != i), key=lambda j: dot(e[i], e[j]))
  assert got["cos_mean"] == pytest.approx(sum(cos) / 7, abs=1e-12)
  assert got["cos_min"] == pytest.approx(min(cos), abs=1e-12)
  assert got["spearman"] == pytest.approx(_pearson(_rank(sim_r), _rank(sim_a)), abs=1e-12)
  assert got["nn_agreement"] == pytest.approx(sum(nn(r, i) == nn(a, i) for i in range(7)) / 7)
  same = evaluate.agreement(ref, 3.0 * ref)  # scale does not matter
  assert same == pytest.approx({"cos_mean": 1.0, "cos_min": 1.0, "spearman": 1.0,
                                "nn_agreement": 1.0})


def test_agreement_errors():
  with pytest.raises(ValueError, match="same shape"):
    evaluate.agreement(np.ones((4, 3)), np.ones((4, 2)))
  bad = np.ones((4, 3))
  bad[0, 0] = np.nan
  with pytest.raises(ValueError, match="finite"):
    evaluate.agreement(bad, np.ones((4, 3)))


def test_capture_matches_numpy_layer0():
  sentences = ["A man is playing a guitar.", "The stock market fell."]
  cal = evaluate.capture_inputs(sentences)
  _, _, tok = minilm.load_minilm()
  ids, mask = tok(sentences)
  n = mask.sum(1)
  assert cal.gelu.size == int(n.sum()) * 1536 * 6
  assert cal.exp.size == int(np.sum(n ** 2)) * 12 * 6
  assert np.all(cal.exp <= 0) and np.sum(cal.exp == 0) >= int(n.sum()) * 12 * 6
  # layer 0's GELU inputs, recomputed in float64 numpy from the weights
  w = {k: np.asarray(v, np.float64) for k, v in minilm.load_weights().items()}
  first = []
  for b in range(2):
    t = int(n[b])
    x = (w["embeddings.word_embeddings.weight"][ids[b, :t]]
         + w["embeddings.position_embeddings.weight"][:t]
         + w["embeddings.token_type_embeddings.weight"][0])
    mu = x.mean(-1, keepdims=True)
    x = (x - mu) / np.sqrt(((x - mu) ** 2).mean(-1, keepdims=True) + 1e-12)
    x = x * w["embeddings.LayerNorm.weight"] + w["embeddings.LayerNorm.bias"]
    p = "encoder.layer.0."
    heads = lambda m: m.reshape(t, 12, 32)
    lin = lambda name, v: v @ w[p + name + ".weight"].T + w[p + name + ".bias"]
    q, k, v = (heads(lin(f"attention.self.{s}", x)) for s in ("query", "key", "value"))
    s = np.einsum("thd,shd->hts", q, k) / math.sqrt(32)
    pr = np.exp(s - s.max(-1, keepdims=True))
    pr /= pr.sum(-1, keepdims=True)
    o = np.einsum("hts,shd->thd", pr, v).reshape(t, 384)
    h = x + lin("attention.output.dense", o)
    mu = h.mean(-1, keepdims=True)
    h = (h - mu) / np.sqrt(((h - mu) ** 2).mean(-1, keepdims=True) + 1e-12)
    h = h * w[p + "attention.output.LayerNorm.weight"] + w[p + "attention.output.LayerNorm.bias"]
    first.append(lin("intermediate.dense", h))
  # the capture's first GELU call is layer 0 over the whole (padded) batch, masked rows dropped
  # in row-major (batch, token, feature) order
  want = np.concatenate([f.reshape(-1) for f in first])
  np.testing.assert_allclose(cal.gelu[:want.size], want, atol=2e-4)


def test_capture_rejects_empty():
  with pytest.raises(ValueError, match="at least one"):
    evaluate.capture_inputs([])


def _crude_gelu(x):
  return jnp.where(x < -1.8, 0.0, jnp.where(x > 0.5, x, 0.17 * x * x + 0.32 * x))


def test_distill_loss_zero_for_the_teacher_and_steps_reduce_it():
  _, teacher, tok = minilm.load_minilm()
  sentences = evaluate.generate_sentences(8, 5)
  ids, mask = (jnp.asarray(a) for a in tok(sentences))
  hidden = teacher(ids, mask, hidden_states=True)[1]
  assert float(distill.distill_loss(teacher, hidden, ids, mask, 1.0, 10.0)) == pytest.approx(
      0.0, abs=1e-6)
  _, student, _ = minilm.load_minilm(gelu_fn=_crude_gelu)
  before = float(distill.distill_loss(student, hidden, ids, mask, 1.0, 10.0))
  assert before > 1e-3
  losses = distill.distill(student, sentences,
                           distill.DistillConfig(steps=6, batch=8, lr=2e-5, warmup=1))
  assert losses[0] == pytest.approx(before, rel=1e-4)
  after = float(distill.distill_loss(student, hidden, ids, mask, 1.0, 10.0))
  assert after < 0.8 * before
  assert all(np.isfinite(losses))


def test_distill_config_errors():
  with pytest.raises(ValueError, match="DistillConfig.steps"):
    distill.DistillConfig(steps=0)
  with pytest.raises(ValueError, match="DistillConfig.warmup"):
    distill.DistillConfig(steps=5, warmup=5)
  with pytest.raises(ValueError, match="at least batch"):
    _, student, _ = minilm.load_minilm()
    distill.distill(student, ["one sentence."], distill.DistillConfig(batch=4))
