"""Load-balance and z-loss against numpy and hand-computed values."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsys._src import testing
from jaxsys.moe import losses, routing


def ref_load_balance(probs, experts, mask, weight):
  """Switch / MaxText: weight * E * sum_e f_e P_e, f counting every active slot."""
  T, E = probs.shape
  counts = np.zeros(E)
  for t in range(T):
    for j in range(experts.shape[1]):
      if mask[t, j]:
        counts[experts[t, j]] += 1
  f = counts / T
  P = probs.astype(np.float64).mean(axis=0)
  return weight * E * float(np.sum(f * P))


def ref_z_loss(logits, weight):
  x = logits.astype(np.float64)
  m = x.max(axis=-1, keepdims=True)
  lse = (m + np.log(np.exp(x - m).sum(axis=-1, keepdims=True)))[:, 0]
  return weight * float(np.mean(lse**2))


def test_load_balance_golden():
  # balanced, K = 1: T = 4, E = 2, experts [0, 1, 0, 1], probs all 0.5
  #   f = [0.5, 0.5], P = [0.5, 0.5] -> E * sum f P = 2 * 0.5 = 1 (times weight 1)
  probs = jnp.full((4, 2), 0.5, jnp.float32)
  testing.assert_allclose(
      losses.load_balance_loss(probs, jnp.array([[0], [1], [0], [1]]), weight=1.0), 1.0)
  # balanced, K = 2 of E = 2: f = [1, 1] -> 2 * (0.5 + 0.5) = 2 = K; default weight 0.01
  testing.assert_allclose(
      losses.load_balance_loss(probs, jnp.array([[0, 1]] * 4)), 0.02)
  # unbalanced: T = 2, E = 3, both tokens to expert 0, probs [.5, .3, .2] and [.7, .2, .1]
  #   f = [1, 0, 0], P = [0.6, 0.25, 0.15] -> E * sum f P = 3 * 0.6 = 1.8 -> * 0.01 = 0.018
  probs = jnp.array([[0.5, 0.3, 0.2], [0.7, 0.2, 0.1]], jnp.float32)
  testing.assert_allclose(losses.load_balance_loss(probs, jnp.array([[0], [0]])), 0.018, n=3)
  # the same with a second slot masked out: [[0, 2], [0, 1]] with slot 1 unused -> 0.018
  got = losses.load_balance_loss(probs, jnp.array([[0, 2], [0, 1]]),
                                 jnp.array([[True, False], [True, False]]))
  testing.assert_allclose(got, 0.018, n=3)


@pytest.mark.parametrize("k", [1, 2, 3])
def test_load_balance_matches_numpy(k):
  rng = np.random.default_rng(k)
  logits = jnp.asarray(rng.standard_normal((50, 6)), jnp.float32)
  r = routing.route_topk(logits, k=k)
  mask = rng.random((50, k)) < 0.9
  got = losses.load_balance_loss(r.probs_TE, r.experts_TK, jnp.asarray(mask), weight=0.5)
  want = ref_load_balance(np.asarray(r.probs_TE), np.asarray(r.experts_TK), mask, 0.5)
  testing.assert_allclose(got, want, n=50)
  assert got.dtype == jnp.float32 and got.shape == ()


def test_load_balance_gradient_pushes_probability_off_overloaded_experts():
  # Everything routed to expert 0: d loss / d P_0 > 0, others 0.
  probs = jnp.full((4, 3), 1 / 3, jnp.float32)
  g = jax.grad(lambda p: losses.load_balance_loss(p, jnp.zeros((4, 1), jnp.int32)))(probs)
  assert bool(jnp.all(g[:, 0] > 0)) and bool(jnp.all(g[:, 1:] == 0))


def test_z_loss_golden_and_numpy():
  # token 0: logits [0, 0] -> lse = ln(1 + 1) = ln 2
  # token 1: logits [ln 3, 0] -> lse = ln(3 + 1) = ln 4 = 2 ln 2
  #   mean((ln 2)^2, 4 (ln 2)^2) = 2.5 (ln 2)^2 = 1.2011
  logits = jnp.array([[0.0, 0.0], [math.log(3.0), 0.0]], jnp.float32)
  testing.assert_allclose(losses.router_z_loss(logits), 2.5 * math.log(2.0) ** 2, n=2)
  testing.assert_allclose(losses.router_z_loss(logits, weight=1e-3),
                          1e-3 * 2.5 * math.log(2.0) ** 2, n=2)
  x = np.random.default_rng(0).standard_normal((30, 8)).astype(np.float32) * 3
  testing.assert_allclose(losses.router_z_loss(jnp.asarray(x)), ref_z_loss(x, 1.0), n=30)
  g = jax.grad(losses.router_z_loss)(jnp.asarray(x))
  assert bool(jnp.all(jnp.isfinite(g)))


def test_losses_compile_once():
  r = routing.route_topk(jnp.asarray(np.random.default_rng(1).standard_normal((16, 4)),
                                     jnp.float32), k=2)
  testing.assert_compiles_once(losses.load_balance_loss, r.probs_TE, r.experts_TK)
  testing.assert_compiles_once(losses.router_z_loss, r.logits_TE)


@pytest.mark.parametrize("call,match", [
    (lambda: losses.load_balance_loss(jnp.ones((4, 3)), jnp.zeros((5, 2), jnp.int32)),
     r"experts_TK: expected shape \[tokens=4, k\] \(tokens of probs_TE\), given \(5, 2\)"),
    (lambda: losses.load_balance_loss(jnp.ones((4, 3)), jnp.zeros((4, 2))),
     r"experts_TK: expected an integer dtype, given float32"),
    (lambda: losses.load_balance_loss(jnp.ones(4), jnp.zeros((4, 2), jnp.int32)),
     r"probs_TE: expected floating \[tokens, experts\], given float32 \(4,\)"),
    (lambda: losses.load_balance_loss(jnp.ones((4, 3)), jnp.zeros((4, 2), jnp.int32),
                                      jnp.ones((4, 1), bool)),
     r"mask_TK: expected the shape of experts_TK \(4, 2\), given \(4, 1\)"),
    (lambda: losses.router_z_loss(jnp.ones((2, 3, 4))),
     r"logits_TE: expected floating \[tokens, experts\], given float32 \(2, 3, 4\)"),
])
def test_errors(call, match):
  with pytest.raises((ValueError, TypeError), match=match):
    call()


def test_docstring_examples_run():
  import doctest  # pylint: disable=g-import-not-at-top
  from jaxsys.moe import losses as module  # pylint: disable=g-import-not-at-top
  result = doctest.testmod(module)
  assert result.attempted > 0 and result.failed == 0
