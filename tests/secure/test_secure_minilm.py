"""The two-party MiniLM: piecewise evaluation and LayerNorm on shares against numpy,
their ledger counts by hand, and the whole encoder against the plaintext model with
the same approximations on two real sentences."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsys.models import minilm
from jaxsys.secure import approx, evaluate, mpc, secure_minilm
from jaxsys.secure import ring as ring_lib
from jaxsys.secure.ring import RING32, RING64

GELU = approx.nimbus_gelu(-2.7, 1.2, (0.00002, 0.45119, 0.36213, 0.07338))
EXP = approx.nimbus_exp(-3.2, (0.99665, 0.90612, 0.31846, 0.04060))


def _shared(x, ring, seed=0):
  dealer = mpc.Dealer(jax.random.key(seed))
  return mpc.share(ring_lib.encode(np.asarray(x, np.float64), ring), dealer, ring), dealer


@pytest.mark.parametrize("spec, lo, hi", [(GELU, -20.0, 20.0), (EXP, -60.0, 0.0)])
def test_piecewise_on_shares_matches_numpy(spec, lo, hi):
  rng = np.random.default_rng(1)
  x = np.concatenate([rng.uniform(lo, hi, 400), np.asarray(spec.breakpoints),
                      np.asarray(spec.breakpoints) - 2.0 ** -13])
  x = x[(x >= lo) & (x <= hi)]
  sh, dealer = _shared(x, RING32)
  ledger = mpc.Ledger()
  got = np.asarray(mpc.reveal_float(secure_minilm.eval_piecewise(spec, sh, dealer, ledger)))
  xq = np.asarray(ring_lib.decode(ring_lib.encode(x, RING32), RING32), np.float64)
  # the comparisons are against the encoded breakpoints (the fitted pieces need not meet)
  bq = tuple(float(v) for v in np.asarray(ring_lib.decode(
      ring_lib.encode(np.asarray(spec.breakpoints), RING32), RING32), np.float64))
  # ... and the coefficients are encoded at f = 13 too
  q = lambda c: round(c * 2 ** 13) / 2 ** 13
  pieces = tuple(p if isinstance(p, str) else tuple(q(c) for c in p) for p in spec.pieces)
  want = approx.PiecewisePoly(bq, pieces).evaluate_np(xq)
  # each Horner truncation is off by at most 2 ulps, amplified by the later |x| factors
  inside = np.abs(want - np.where(xq >= bq[-1], xq, 0.0)) > 0
  bound = 4 * 2.0 ** -13 * (1 + np.abs(xq) + xq ** 2)
  assert np.all(np.abs(got - want) <= np.where(inside, bound, 2.0 ** -13)), np.max(
      np.abs(got - want) / bound)
  total = ledger.total()
  n = x.size
  assert total.comparisons[32] == len(spec.breakpoints) * n
  non_zero = sum(p != "zero" for p in spec.pieces)
  assert total.muxes[32] == non_zero * n


def test_layer_norm_on_shares_matches_numpy():
  rng = np.random.default_rng(2)
  x = rng.normal(0.3, 2.0, (3, 5, 384))
  gain, bias = rng.uniform(0.5, 1.5, 384), rng.normal(0, 0.1, 384)
  sh, dealer = _shared(x, RING64)
  g_sh = mpc.share(ring_lib.encode(gain, RING64), dealer, RING64)
  ledger = mpc.Ledger()
  y = secure_minilm.layer_norm(sh, g_sh, ring_lib.encode(bias, RING64), 1e-12,
                               secure_minilm.SecureSettings(), dealer, ledger)
  mu = x.mean(-1, keepdims=True)
  want = (x - mu) / np.sqrt(((x - mu) ** 2).mean(-1, keepdims=True)) * gain + bias
  np.testing.assert_allclose(np.asarray(mpc.reveal_float(y)), want, atol=2e-4)
  assert ledger.total().ideal_calls[("rsqrt", 64)] == 15  # one per row


def test_settings_errors():
  with pytest.raises(ValueError, match="64-bit big ring"):
    secure_minilm.SecureSettings(big=RING32)
  with pytest.raises(ValueError, match="trunc"):
    secure_minilm.SecureSettings(trunc="magic")
  with pytest.raises(TypeError, match="PiecewisePoly"):
    secure_minilm.eval_piecewise(approx.get("bumblebee_gelu"), *_shared([1.0], RING32))


def test_encoder_on_shares_matches_plaintext_with_same_approximations():
  sentences = ["A man is playing a guitar.", "The stock market fell sharply today."]
  gelu = approx.activation_from_spec("t_gelu", "gelu", GELU, "test")
  soft = approx.activation_from_spec("t_exp", "softmax", EXP, "test")
  plain = evaluate.embeddings(sentences, gelu_fn=gelu.fn, softmax_fn=soft.fn)
  exact = evaluate.embeddings(sentences)
  config, _, tok = minilm.load_minilm()
  dealer, ledger = mpc.Dealer(jax.random.key(0)), mpc.Ledger()
  model = secure_minilm.SecureMiniLM(minilm.load_weights(), config, GELU, EXP, dealer, ledger)
  shared = secure_minilm.secure_embeddings(model, tok, sentences, dealer, ledger)
  cos = np.sum(plain * shared, axis=1)
  assert np.all(cos > 0.9999), cos
  # closer to its plaintext twin than the approximation is to the exact model
  assert np.all(1 - cos < 0.1 * (1 - np.sum(exact * plain, axis=1)))
  online = ledger.online()
  ids, mask = tok(sentences)
  t = ids.shape[1]
  # per layer: 2 GELU comparisons per FFN element, 1 exp comparison per score, plus the
  # max tree's comparisons in Z_2^32
  assert online.comparisons[32] >= 6 * (2 * 2 * t * 1536 + 2 * 12 * t * t)
  assert online.ideal_calls[("rsqrt", 64)] == 13 * 2 * t  # 13 LayerNorms, one per row
  setup = ledger.total(mpc.Ledger.SETUP)
  assert setup.opened_elements[64] == 6 * (4 * 384 * 384 + 2 * 384 * 1536)
