"""Routers against plain-numpy references, golden hand-computed cases, and every error."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsys._src import testing
from jaxsys.moe import routing
from jaxsys.moe.routing import HIGH, LOW, SKIP


# ------------------------------------------------------------------ numpy references


def np_softmax(x):
  x = np.asarray(x, np.float64)
  e = np.exp(x - x.max(axis=-1, keepdims=True))
  return e / e.sum(axis=-1, keepdims=True)


def np_sigmoid(x):
  return 1.0 / (1.0 + np.exp(-np.asarray(x, np.float64)))


def np_topk(scores, k):
  """Indices of the k largest per row, ties to the lower index (as lax.top_k)."""
  return np.argsort(-scores, axis=-1, kind="stable")[:, :k]


def ref_topk(logits, k, scoring="softmax", renormalize=True):
  p = np_softmax(logits) if scoring == "softmax" else np_sigmoid(logits)
  idx = np_topk(p, k)
  w = np.take_along_axis(p, idx, axis=-1)
  if renormalize:
    w = w / w.sum(axis=-1, keepdims=True)
  return w, idx, p


def ref_group_limited(logits, bias, k, num_groups, top_groups, scoring, renormalize, scale):
  p = np_softmax(logits) if scoring == "softmax" else np_sigmoid(logits)
  T, E = p.shape
  gs = E // num_groups
  ws, ids = [], []
  for t in range(T):
    b = p[t] + bias
    gscore = [sum(sorted(b[g * gs:(g + 1) * gs], reverse=True)[:2]) for g in range(num_groups)]
    groups = sorted(range(num_groups), key=lambda g: (-gscore[g], g))[:top_groups]
    allowed = [e for e in range(E) if e // gs in groups]
    chosen = sorted(allowed, key=lambda e: (-b[e], e))[:k]
    w = np.array([p[t, e] for e in chosen])
    if renormalize:
      w = w / w.sum()
    ws.append(w * scale)
    ids.append(chosen)
  return np.array(ws), np.array(ids), p


def ref_bias_update(bias, experts, mask, rate):
  E = bias.shape[0]
  load = np.zeros(E)
  for t in range(experts.shape[0]):
    for j in range(experts.shape[1]):
      if mask[t, j]:
        load[experts[t, j]] += 1
  return bias + rate * np.sign(load.mean() - load)


def ref_top_p(logits, p, max_k, renormalize=True):
  probs = np_softmax(logits)
  T = probs.shape[0]
  idx = np_topk(probs, max_k)
  w = np.zeros((T, max_k))
  mask = np.zeros((T, max_k), bool)
  for t in range(T):
    total = 0.0
    for j in range(max_k):
      if total >= p:  # cumulative probability already reached p: stop adding
        break
      mask[t, j] = True
      w[t, j] = probs[t, idx[t, j]]
      total += probs[t, idx[t, j]]
    if renormalize:
      w[t] = w[t] / w[t].sum()
  return w, idx, mask


def ref_adapmoe(logits, threshold):
  w, idx, _ = ref_topk(logits, 2)
  mask = np.ones(w.shape, bool)
  for t in range(w.shape[0]):
    if w[t, 1] < threshold:
      mask[t, 1] = False
      w[t] = [1.0, 0.0]
  return w, idx, mask


def ref_hobbit(weights, mask, t1, t2):
  """Per token: sort the active slots by weight, score = sum of the weights above."""
  T, K = weights.shape
  scores = np.zeros((T, K))
  classes = np.full((T, K), SKIP)
  for t in range(T):
    active = [j for j in range(K) if mask[t, j]]
    total = sum(weights[t, j] for j in active)
    g = {j: weights[t, j] / total for j in active}
    ranked = sorted(active, key=lambda j: (-g[j], j))
    above = 0.0
    for j in ranked:
      scores[t, j] = above
      classes[t, j] = HIGH if above <= t1 else (LOW if above <= t2 else SKIP)
      above += g[j]
    for j in range(K):
      if not mask[t, j]:
        scores[t, j] = above
  return scores, classes


def random_logits(seed, T=24, E=8, scale=1.5):
  rng = np.random.default_rng(seed)
  return (rng.standard_normal((T, E)) * scale).astype(np.float32)


def assert_same_sets(got_idx, want_idx):
  np.testing.assert_array_equal(np.asarray(got_idx), want_idx)


# ----------------------------------------------------------------------------- top-k


@pytest.mark.parametrize("scoring", ["softmax", "sigmoid"])
@pytest.mark.parametrize("renormalize", [True, False])
def test_topk_matches_numpy(scoring, renormalize):
  logits = random_logits(0)
  r = routing.route_topk(jnp.asarray(logits), k=3, scoring=scoring, renormalize=renormalize)
  w, idx, p = ref_topk(logits, 3, scoring, renormalize)
  assert_same_sets(r.experts_TK, idx)
  testing.assert_allclose(r.weights_TK, w, n=8)
  testing.assert_allclose(r.probs_TE, p, n=8)
  assert r.experts_TK.dtype == jnp.int32 and bool(jnp.all(r.mask_TK))
  np.testing.assert_array_equal(r.logits_TE, logits)


def test_topk_golden_three_experts_two_tokens():
  # token 0: softmax(log p) = p = [0.5, 0.3, 0.2] -> top-2 = experts 0, 1;
  #   renormalised: 0.5 / 0.8 = 0.625, 0.3 / 0.8 = 0.375
  # token 1: p = [0.1, 0.6, 0.3] -> experts 1, 2; 0.6 / 0.9 = 2/3, 0.3 / 0.9 = 1/3
  p = np.array([[0.5, 0.3, 0.2], [0.1, 0.6, 0.3]], np.float32)
  r = routing.route_topk(jnp.log(jnp.asarray(p)), k=2)
  assert r.experts_TK.tolist() == [[0, 1], [1, 2]]
  testing.assert_allclose(r.weights_TK, [[0.625, 0.375], [2 / 3, 1 / 3]], n=3)


def test_sigmoid_golden():
  # sigmoid([0, ln 3, -ln 3]) = [1/2, 3/4, 1/4] -> top-2 = experts 1, 0;
  #   renormalised over 3/4 + 1/2 = 5/4: 0.6, 0.4; unnormalised: 0.75, 0.5
  logits = jnp.array([[0.0, math.log(3.0), -math.log(3.0)]], jnp.float32)
  r = routing.route_topk(logits, k=2, scoring="sigmoid")
  assert r.experts_TK.tolist() == [[1, 0]]
  testing.assert_allclose(r.weights_TK, [[0.6, 0.4]], n=3)
  raw = routing.route_topk(logits, k=2, scoring="sigmoid", renormalize=False)
  testing.assert_allclose(raw.weights_TK, [[0.75, 0.5]], n=3)


def test_topk_works_under_vmap_and_grad_and_compiles_once():
  logits = jnp.asarray(random_logits(1).reshape(3, 8, 8))
  batched = jax.vmap(lambda l: routing.route_topk(l, k=2))(logits)
  for b in range(3):
    one = routing.route_topk(logits[b], k=2)
    np.testing.assert_array_equal(batched.experts_TK[b], one.experts_TK)
  g = jax.grad(lambda l: jnp.sum(routing.route_topk(l, k=2).weights_TK[:, 0]))(logits[0])
  assert bool(jnp.all(jnp.isfinite(g)))
  testing.assert_compiles_once(routing.route_topk, logits[0], k=2)


# ------------------------------------------------------------------ DeepSeek grouped


@pytest.mark.parametrize("scoring", ["sigmoid", "softmax"])
def test_group_limited_matches_numpy(scoring):
  logits = random_logits(2, T=32, E=12)
  bias = (np.random.default_rng(3).standard_normal(12) * 0.3).astype(np.float32)
  kw = dict(k=3, num_groups=4, top_groups=2, scoring=scoring, renormalize=True, scale=2.5)
  r = routing.route_group_limited(jnp.asarray(logits), jnp.asarray(bias), **kw)
  w, idx, p = ref_group_limited(logits, bias.astype(np.float64), **kw)
  assert_same_sets(r.experts_TK, idx)
  testing.assert_allclose(r.weights_TK, w, n=12)
  testing.assert_allclose(r.probs_TE, p, n=12)


def test_group_limited_golden_and_selection_only_bias():
  # 4 experts in 2 groups {0, 1}, {2, 3}; sigmoid scores s = [0.9, 0.1, 0.6, 0.5]
  # (logit = ln(s / (1 - s))). Group scores (sum of the top-2 = the whole group):
  #   g0 = 0.9 + 0.1 = 1.0, g1 = 0.6 + 0.5 = 1.1 -> keep group 1 -> experts 2, 3,
  #   weights 0.6 / 1.1, 0.5 / 1.1 (plain top-2 would have picked 0 and 2).
  s = np.array([[0.9, 0.1, 0.6, 0.5]])
  logits = jnp.asarray(np.log(s / (1 - s)), jnp.float32)
  kw = dict(k=2, num_groups=2, top_groups=1)
  r = routing.route_group_limited(logits, **kw)
  assert r.experts_TK.tolist() == [[2, 3]]
  testing.assert_allclose(r.weights_TK, [[0.6 / 1.1, 0.5 / 1.1]], n=4)
  # bias +0.3 on expert 0: biased = [1.2, 0.1, 0.6, 0.5], g0 = 1.3 > g1 = 1.1 ->
  #   group 0 -> experts 0, 1; weights from the PRE-bias scores: 0.9 / 1.0, 0.1 / 1.0
  rb = routing.route_group_limited(logits, jnp.array([0.3, 0.0, 0.0, 0.0]), **kw)
  assert rb.experts_TK.tolist() == [[0, 1]]
  testing.assert_allclose(rb.weights_TK, [[0.9, 0.1]], n=4)
  testing.assert_allclose(rb.probs_TE, s, n=4)


def test_bias_update_golden_and_numpy():
  # 3 experts, slots [[0, 1], [0, 2], [0, 1]] -> loads [3, 2, 1], mean 2;
  #   sign(2 - load) = [-1, 0, +1] -> bias + 0.01 * [-1, 0, 1]
  bias = jnp.array([0.1, 0.2, 0.3], jnp.float32)
  experts = jnp.array([[0, 1], [0, 2], [0, 1]], jnp.int32)
  new = routing.update_expert_bias(bias, experts, rate=0.01)
  testing.assert_allclose(new, [0.09, 0.2, 0.31], n=2)
  rng = np.random.default_rng(4)
  ex = rng.integers(0, 6, size=(20, 2)).astype(np.int32)
  mask = rng.random((20, 2)) < 0.8
  b = rng.standard_normal(6).astype(np.float32)
  got = routing.update_expert_bias(jnp.asarray(b), jnp.asarray(ex), jnp.asarray(mask), rate=1e-3)
  testing.assert_allclose(got, ref_bias_update(b.astype(np.float64), ex, mask, 1e-3), n=2)
  testing.assert_compiles_once(routing.update_expert_bias, jnp.asarray(b), jnp.asarray(ex),
                               jnp.asarray(mask), rate=jnp.float32(1e-3))


def test_bias_update_balances_a_skewed_router():
  # Repeated updates push a router that always favours expert 0 towards balance.
  rng = np.random.default_rng(5)
  logits = jnp.asarray(rng.standard_normal((256, 4)) * 0.2 + np.array([1.0, 0, 0, 0]),
                       jnp.float32)
  bias = jnp.zeros(4, jnp.float32)
  kw = dict(k=1, num_groups=1, top_groups=1)
  load0 = np.bincount(np.asarray(routing.route_group_limited(logits, bias, **kw).experts_TK)
                      .ravel(), minlength=4)
  for _ in range(60):
    r = routing.route_group_limited(logits, bias, **kw)
    bias = routing.update_expert_bias(bias, r.experts_TK, rate=0.01)
  load = np.bincount(np.asarray(routing.route_group_limited(logits, bias, **kw).experts_TK)
                     .ravel(), minlength=4)
  assert load0.max() - load0.min() > 150
  assert load.max() - load.min() < 60


# ---------------------------------------------------------------------- expert choice


def test_expert_choice_matches_numpy_and_golden():
  logits = random_logits(6, T=10, E=4)
  ec = routing.route_expert_choice(jnp.asarray(logits), capacity=3, causal=False)
  p = np_softmax(logits)
  want_tokens = np_topk(p.T, 3)
  np.testing.assert_array_equal(ec.tokens_EC, want_tokens)
  testing.assert_allclose(ec.weights_EC, np.take_along_axis(p.T, want_tokens, axis=-1), n=4)
  # golden: 2 experts, 3 tokens, p(token, e) = [[.8, .2], [.3, .7], [.6, .4]];
  #   expert 0 takes tokens 0 (.8), 2 (.6); expert 1 takes 1 (.7), 2 (.4)
  p = np.array([[0.8, 0.2], [0.3, 0.7], [0.6, 0.4]], np.float32)
  ec = routing.route_expert_choice(jnp.log(jnp.asarray(p)), capacity=2, causal=False)
  assert ec.tokens_EC.tolist() == [[0, 2], [1, 2]]
  testing.assert_allclose(ec.weights_EC, [[0.8, 0.6], [0.7, 0.4]], n=2)


def test_expert_choice_refuses_causal():
  with pytest.raises(ValueError, match=r"causal: expert-choice routing is not causal-safe.*"
                     r"expected causal=False, given causal=True"):
    routing.route_expert_choice(jnp.zeros((4, 2)), capacity=2, causal=True)
  with pytest.raises(ValueError, match=r"causal: expected a bool, given None"):
    routing.route_expert_choice(jnp.zeros((4, 2)), capacity=2, causal=None)
  with pytest.raises(ValueError, match=r"capacity: expected at most the number of tokens \(4\),"
                     r" given 5"):
    routing.route_expert_choice(jnp.zeros((4, 2)), capacity=5, causal=False)


# ---------------------------------------------------------------------------- jitter


def test_jitter_bounds_determinism_and_identity():
  key = jax.random.key(0)
  x = jnp.asarray(np.random.default_rng(7).standard_normal((64, 8)), jnp.float32)
  y = routing.jitter(key, x, eps=0.1)
  ratio = np.asarray(y) / np.asarray(x)
  assert ratio.min() >= 0.9 - 1e-6 and ratio.max() <= 1.1 + 1e-6
  assert ratio.std() > 0.02  # actually noisy
  np.testing.assert_array_equal(y, routing.jitter(key, x, eps=0.1))
  want = x * jax.random.uniform(key, x.shape, jnp.float32, 0.9, 1.1)
  np.testing.assert_array_equal(y, want)
  np.testing.assert_array_equal(routing.jitter(key, x, eps=0.0), x)
  assert not np.array_equal(y, routing.jitter(jax.random.key(1), x, eps=0.1))


# ----------------------------------------------------------------------------- top-p


@pytest.mark.parametrize("p", [0.3, 0.6, 0.9, 1.0])
def test_top_p_matches_numpy(p):
  logits = random_logits(8, T=40, E=6, scale=1.0)
  r = routing.route_top_p(jnp.asarray(logits), p=p, max_k=4)
  w, idx, mask = ref_top_p(logits, p, 4)
  assert_same_sets(r.experts_TK, idx)
  np.testing.assert_array_equal(r.mask_TK, mask)
  testing.assert_allclose(r.weights_TK, w, n=6)


def test_top_p_golden():
  # p = [0.5, 0.3, 0.2] sorted; cumulative before each slot: 0, 0.5, 0.8.
  #   p = 0.7: slots with cumulative-before < 0.7 -> first two (0.5 + 0.3 = 0.8 >= 0.7);
  #   renormalised 0.625, 0.375, 0. p = 0.45: the first alone (0.5 >= 0.45) -> weight 1.
  #   p = 0.85: all three; without renormalising the raw 0.5, 0.3, 0.2.
  logits = jnp.log(jnp.array([[0.5, 0.3, 0.2]], jnp.float32))
  r = routing.route_top_p(logits, p=0.7, max_k=3)
  assert r.mask_TK.tolist() == [[True, True, False]]
  testing.assert_allclose(r.weights_TK, [[0.625, 0.375, 0.0]], n=3)
  r = routing.route_top_p(logits, p=0.45, max_k=3)
  assert r.mask_TK.tolist() == [[True, False, False]]
  testing.assert_allclose(r.weights_TK, [[1.0, 0.0, 0.0]], n=3)
  r = routing.route_top_p(logits, p=0.85, max_k=3, renormalize=False)
  assert r.mask_TK.tolist() == [[True, True, True]]
  testing.assert_allclose(r.weights_TK, [[0.5, 0.3, 0.2]], n=3)
  # max_k caps the count: p = 0.85 with max_k = 2 uses 2 experts
  assert routing.route_top_p(logits, p=0.85, max_k=2).mask_TK.tolist() == [[True, True]]


# --------------------------------------------------------------------------- AdapMoE


def test_adapmoe_matches_numpy_and_golden():
  logits = random_logits(9, T=40, E=8, scale=1.0)
  r = routing.route_adapmoe(jnp.asarray(logits), threshold=0.3)
  w, idx, mask = ref_adapmoe(logits, 0.3)
  assert_same_sets(r.experts_TK, idx)
  np.testing.assert_array_equal(r.mask_TK, mask)
  testing.assert_allclose(r.weights_TK, w, n=2)
  assert 0 < mask[:, 1].sum() < 40  # the threshold bites on some tokens only
  # golden: p = [0.5, 0.3, 0.2] -> top-2 renormalised (0.625, 0.375);
  #   threshold 0.4 > 0.375 drops the 2nd (weights 1, 0); 0.3 <= 0.375 keeps both
  logits = jnp.log(jnp.array([[0.5, 0.3, 0.2]], jnp.float32))
  r = routing.route_adapmoe(logits, threshold=0.4)
  assert r.mask_TK.tolist() == [[True, False]] and r.experts_TK.tolist() == [[0, 1]]
  testing.assert_allclose(r.weights_TK, [[1.0, 0.0]])
  r = routing.route_adapmoe(logits, threshold=0.3)
  assert r.mask_TK.tolist() == [[True, True]]
  testing.assert_allclose(r.weights_TK, [[0.625, 0.375]], n=3)


# ---------------------------------------------------------------------------- HOBBIT


def test_hobbit_golden_with_boundaries():
  # dyadic weights, so the sums below are exact in float32.
  # token 0: sorted 0.5, 0.25, 0.25 -> scores 0, 0.5, 0.75.
  #   t1 = 0.5, t2 = 0.75 (s <= t1 high, t1 < s <= t2 low, s > t2 skip):
  #   0 -> HIGH, 0.5 -> HIGH (at t1), 0.75 -> LOW (at t2)
  # token 1: slots [0.125, 0.625, 0.25] sorted 0.625 (slot 1), 0.25 (slot 2), 0.125 (slot 0)
  #   -> slot 1: 0 HIGH; slot 2: 0.625 LOW; slot 0: 0.625 + 0.25 = 0.875 SKIP
  w = jnp.array([[0.5, 0.25, 0.25], [0.125, 0.625, 0.25]], jnp.float32)
  c = routing.hobbit_score_classes(w, t1=0.5, t2=0.75)
  assert c.scores_TK.tolist() == [[0.0, 0.5, 0.75], [0.875, 0.0, 0.625]]
  assert c.classes_TK.tolist() == [[HIGH, HIGH, LOW], [SKIP, HIGH, LOW]]
  assert c.classes_TK.dtype == jnp.int32


def test_hobbit_normalises_and_respects_the_mask():
  # unnormalised [2, 1, 1] -> [0.5, 0.25, 0.25]; slot 2 unused -> [2/3, 1/3, -]:
  #   scores 0, 2/3, 1 (the unused slot gets the whole weight) -> HIGH, LOW, SKIP
  w = jnp.array([[2.0, 1.0, 1.0]], jnp.float32)
  mask = jnp.array([[True, True, False]])
  c = routing.hobbit_score_classes(w, mask, t1=0.6, t2=0.9)
  testing.assert_allclose(c.scores_TK, [[0.0, 2 / 3, 1.0]], n=3)
  assert c.classes_TK.tolist() == [[HIGH, LOW, SKIP]]


@pytest.mark.parametrize("t1,t2", [(0.6, 0.9), (0.0, 0.5), (0.3, 0.3)])
def test_hobbit_matches_numpy_on_random_routes(t1, t2):
  logits = random_logits(10, T=64, E=8)
  r = routing.route_top_p(jnp.asarray(logits), p=0.8, max_k=4)
  c = routing.hobbit_score_classes(r.weights_TK, r.mask_TK, t1=t1, t2=t2)
  s, cls = ref_hobbit(np.asarray(r.weights_TK, np.float64), np.asarray(r.mask_TK), t1, t2)
  testing.assert_allclose(c.scores_TK, s, n=4)
  np.testing.assert_array_equal(c.classes_TK, cls)
  assert np.all(np.asarray(c.classes_TK)[:, 0] == HIGH)  # the top-1 always loads high


@pytest.mark.parametrize("name,call", [
    ("group_limited", lambda l, b: routing.route_group_limited(l, b, k=2, num_groups=4,
                                                               top_groups=2)),
    ("top_p", lambda l, b: routing.route_top_p(l, p=0.7, max_k=3)),
    ("adapmoe", lambda l, b: routing.route_adapmoe(l, threshold=0.3)),
    ("expert_choice", lambda l, b: routing.route_expert_choice(l, capacity=4, causal=False)),
    ("hobbit", lambda l, b: routing.hobbit_score_classes(l[:, :3], t1=0.6, t2=0.9)),
])
def test_routers_compile_once(name, call):
  del name
  logits = jnp.asarray(random_logits(11, T=16, E=8))
  bias = jnp.zeros(8, jnp.float32)
  testing.assert_compiles_once(call, logits, bias)


# ---------------------------------------------------------------------------- errors


@pytest.mark.parametrize("call,match", [
    (lambda: routing.route_topk(jnp.zeros((4, 3)), k=4),
     r"k: expected at most the number of experts \(3\), given 4"),
    (lambda: routing.route_topk(jnp.zeros((4, 3)), k=0), r"k: expected an int >= 1, given 0"),
    (lambda: routing.route_topk(jnp.zeros((4, 3, 2)), k=1),
     r"logits_TE: expected 2 dims \[tokens, experts\], given shape \(4, 3, 2\)"),
    (lambda: routing.route_topk(jnp.zeros((4, 3)), k=1, scoring="relu"),
     r"scoring: expected one of \('softmax', 'sigmoid'\), given 'relu'"),
    (lambda: routing.route_group_limited(jnp.zeros((4, 6)), jnp.zeros(5), k=2, num_groups=2,
                                         top_groups=1),
     r"bias_E: expected shape \(6,\) \(one bias per expert of logits_TE\), given \(5,\)"),
    (lambda: routing.route_group_limited(jnp.zeros((4, 6)), k=2, num_groups=4, top_groups=1),
     r"num_groups: expected a divisor of the number of experts \(6\), given 4"),
    (lambda: routing.route_group_limited(jnp.zeros((4, 6)), k=2, num_groups=3, top_groups=4),
     r"top_groups: expected at most num_groups \(3\), given 4"),
    (lambda: routing.route_group_limited(jnp.zeros((4, 6)), k=3, num_groups=3, top_groups=1),
     r"k: expected at most top_groups \* experts per group = 1 \* 2 \(2\), given 3"),
    (lambda: routing.update_expert_bias(jnp.zeros(3), jnp.zeros((4, 2), jnp.int32),
                                        jnp.ones((4, 1), bool), rate=0.1),
     r"mask_TK: expected the shape of experts_TK \(4, 2\), given \(4, 1\)"),
    (lambda: routing.route_top_p(jnp.zeros((4, 3)), p=0.0, max_k=2),
     r"p: expected a number in \(0.0, 1.0\], given 0.0"),
    (lambda: routing.route_top_p(jnp.zeros((4, 3)), p=1.5, max_k=2),
     r"p: expected a number in \(0.0, 1.0\], given 1.5"),
    (lambda: routing.route_top_p(jnp.zeros((4, 3)), p=0.5, max_k=4),
     r"max_k: expected at most the number of experts \(3\), given 4"),
    (lambda: routing.route_adapmoe(jnp.zeros((4, 1)), threshold=0.1),
     r"k \(AdapMoE routes top-2\): expected at most the number of experts \(1\), given 2"),
    (lambda: routing.route_adapmoe(jnp.zeros((4, 3)), threshold=-0.1),
     r"threshold: expected a number >= 0.0, given -0.1"),
    (lambda: routing.hobbit_score_classes(jnp.ones((2, 2)), t1=0.9, t2=0.6),
     r"t1, t2: expected t1 <= t2, given t1=0.9 > t2=0.6"),
    (lambda: routing.hobbit_score_classes(jnp.ones((2, 2)), t1=-0.1, t2=0.6),
     r"t1: expected a number >= 0.0, given -0.1"),
    (lambda: routing.hobbit_score_classes(jnp.ones((2, 2)), jnp.ones((2, 3), bool), t1=0.1,
                                          t2=0.6),
     r"mask_TK: expected the shape of weights_TK \(2, 2\), given \(2, 3\)"),
    (lambda: routing.jitter(jax.random.key(0), jnp.ones(3), eps=1.0),
     r"eps: expected a number in \[0.0, 1.0\), given 1.0"),
    (lambda: routing.jitter(jax.random.key(0), jnp.ones(3, jnp.int32), eps=0.1),
     r"x: expected a floating dtype, given int32"),
])
def test_errors_name_argument_expected_and_given(call, match):
  with pytest.raises((ValueError, TypeError), match=match):
    call()


def test_docstring_examples_run():
  import doctest  # pylint: disable=g-import-not-at-top
  from jaxsys.moe import routing as module  # pylint: disable=g-import-not-at-top
  result = doctest.testmod(module)
  assert result.attempted > 0 and result.failed == 0
