"""The policy protocol's helpers, the oracle and full policies, fidelity metrics, replay."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsys._src import testing
from jaxsys.kv import base, metrics


def case(seed=0, B=2, H=6, K=2, T=48, D=8):
  rng = np.random.default_rng(seed)
  q = rng.standard_normal((B, H, T, D)).astype(np.float32)
  k = rng.standard_normal((B, K, T, D)).astype(np.float32)
  v = rng.standard_normal((B, K, T, D)).astype(np.float32)
  return q, k, v


def np_probs(q_hd, k_td, n):
  """Full-attention softmax of one query head over positions [0, n)."""
  s = (k_td[:n] @ q_hd) / math.sqrt(q_hd.shape[-1])
  p = np.exp(s - s.max())
  return p / p.sum()


def np_attended(idx, n, num_sinks, window):
  toks = {t for t in range(min(num_sinks, n))}
  toks |= {t for t in range(max(n - window, 0), n) if t >= num_sinks}
  toks |= {int(t) for t in idx if num_sinks <= t < n - window}
  return toks


def test_oracle_selects_the_true_top_tokens_of_the_group():
  q, k, v = case()
  lengths = np.array([30, 48], np.int32)
  pol = base.oracle_topk(12, num_sinks=2, window=4)
  idx = np.asarray(pol.select((), jnp.asarray(q[:, :, 0]), jnp.asarray(k), jnp.asarray(lengths)))
  assert idx.shape == (2, 2, 6)
  for b in range(2):
    n = lengths[b]
    for kh in range(2):
      mass = sum(np_probs(q[b, h, 0], k[b, kh], n) for h in range(kh * 3, kh * 3 + 3))
      middle = [t for t in range(2, n - 4)]
      want = sorted(sorted(middle, key=lambda t: -mass[t])[:6])
      assert sorted(idx[b, kh].tolist()) == want


def test_full_policy_lists_every_valid_token():
  _, k, _ = case(T=10)
  idx = np.asarray(base.full(10).select((), None, jnp.asarray(k), jnp.asarray(np.array([7, 10], np.int32))))
  assert idx[0, 0].tolist() == list(range(7)) + [-1] * 3
  assert idx[1, 1].tolist() == list(range(10))


def test_fidelity_against_numpy():
  q, k, v = case(1)
  lengths = np.array([40, 25], np.int32)
  rng = np.random.default_rng(2)
  idx = rng.integers(-1, 48, size=(2, 2, 9)).astype(np.int32)
  fid = metrics.fidelity(jnp.asarray(q[:, :, 0]), jnp.asarray(k), jnp.asarray(v),
                         jnp.asarray(lengths), jnp.asarray(idx), num_sinks=3, window=5)
  for b in range(2):
    n = lengths[b]
    for h in range(6):
      kh = h // 3
      att = np_attended(idx[b, kh], n, 3, 5)
      p = np_probs(q[b, h, 0], k[b, kh], n)
      testing.assert_allclose(fid.recall_BH[b, h], sum(p[t] for t in att), n=n)
      top = set(np.argsort(-p)[: len(att)].tolist())
      testing.assert_allclose(fid.topk_hit_BH[b, h], len(top & att) / len(att))
      ps = {t: p[t] for t in att}
      z = sum(ps.values())
      o_sel = sum(ps[t] / z * v[b, kh, t] for t in att)
      o_full = sum(p[t] * v[b, kh, t] for t in range(n))
      rel = np.linalg.norm(o_sel - o_full) / np.linalg.norm(o_full)
      testing.assert_allclose(fid.rel_err_BH[b, h], rel, n=n, scale=10)
    assert fid.attended_B[b] == np.mean([len(np_attended(idx[b, kh], n, 3, 5)) for kh in range(2)])


def test_full_selection_is_exact():
  q, k, v = case(3)
  fid = metrics.replay(base.full(48), *map(jnp.asarray, (q, k, v)), prompt_len=40, steps=8)
  testing.assert_allclose(fid.recall_BH, np.ones((8, 2, 6)), n=48)
  testing.assert_allclose(fid.topk_hit_BH, np.ones((8, 2, 6)))
  assert float(jnp.max(fid.rel_err_BH)) < 1e-5


def test_replay_matches_a_step_loop_and_compiles_once():
  q, k, v = map(jnp.asarray, case(4))
  pol = base.oracle_topk(10, num_sinks=1, window=3)
  run = jax.jit(lambda q, k, v: metrics.replay(pol, q, k, v, prompt_len=30, steps=5))
  fid = testing.assert_compiles_once(run, q, k, v)
  for i in range(5):
    n = jnp.full((2,), 31 + i, jnp.int32)
    idx = pol.select((), q[:, :, 30 + i], k, n)
    one = metrics.fidelity(q[:, :, 30 + i], k, v, n, idx, num_sinks=1, window=3)
    testing.assert_allclose(fid.recall_BH[i], one.recall_BH)
  # the oracle beats a fixed budget's worth of the most recent tokens
  recent = metrics.replay(base.oracle_topk(10, num_sinks=0, window=10), q, k, v, prompt_len=30, steps=5)
  assert float(jnp.mean(fid.recall_BH)) > float(jnp.mean(recent.recall_BH))


def test_errors():
  with pytest.raises(ValueError, match=r"budget \(5\) must be >= num_sinks \+ window \(4 \+ 4 = 8\)"):
    base.oracle_topk(5, num_sinks=4, window=4)
  with pytest.raises(ValueError, match="window must be an int >= 0, given -1"):
    base.oracle_topk(5, window=-1)
  with pytest.raises(ValueError, match=r"query heads \(5\) must be a multiple of the KV heads \(2\)"):
    base.group_queries(jnp.zeros((1, 5, 4)), 2)
  q, k, v = map(jnp.asarray, case())
  with pytest.raises(ValueError, match=r"oracle_topk: budget \(64\) must be <= the context, i.e. the cache slots \(48\)"):
    metrics.replay(base.oracle_topk(64), q, k, v, prompt_len=40, steps=2)
  with pytest.raises(ValueError, match="must be <= the captured length 48"):
    metrics.replay(base.full(48), q, k, v, prompt_len=40, steps=9)
