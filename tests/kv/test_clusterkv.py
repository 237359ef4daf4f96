"""ClusterKV (arXiv 2412.03213): k-means, CSR index, selection and incremental clustering.

Every check compares against an independent plain-numpy / plain-Python
reference or a case worked out by hand.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsys._src import testing
from jaxsys.kv import base
from jaxsys.kv import clusterkv
from jaxsys.kv import metrics


# ---------------------------------------------------------------- references


def np_cosine_assign(keys, cent, active):
  kn = keys / np.maximum(np.linalg.norm(keys, axis=-1, keepdims=True), 1e-12)
  cn = cent / np.maximum(np.linalg.norm(cent, axis=-1, keepdims=True), 1e-12)
  sim = kn @ cn.T
  sim[:, ~active] = -np.inf
  return np.argmax(sim, axis=-1)


def np_cosine_kmeans(keys, valid, cent, active, iters):
  """Plain float64 cosine k-means: assign by cosine, centroid = mean of raw keys."""
  keys = np.asarray(keys, np.float64)
  cent = np.array(cent, np.float64)
  for _ in range(iters):
    lab = np_cosine_assign(keys, cent, active)
    for c in range(cent.shape[0]):
      members = valid & (lab == c)
      if members.any():
        cent[c] = keys[members].mean(axis=0)
  lab = np.where(valid, np_cosine_assign(keys, cent, active), -1)
  return cent, lab


def np_csr(labels, C):
  """perm/size/start of labels with numpy argsort and bincount."""
  B, K, T = labels.shape
  perm = np.full((B, K, T), -1, np.int64)
  size = np.zeros((B, K, C), np.int64)
  for b in range(B):
    for k in range(K):
      lab = labels[b, k]
      clustered = np.flatnonzero(lab >= 0)
      order = clustered[np.argsort(lab[clustered], kind="stable")]
      perm[b, k, : order.size] = order
      size[b, k] = np.bincount(lab[clustered], minlength=C)
  start = np.cumsum(size, axis=-1) - size
  return perm, size, start


def labels_from_state(state, T):
  """Per-token cluster labels read back from the CSR index (-1: in no cluster)."""
  perm = np.asarray(state.perm_BKT)
  size = np.asarray(state.size_BKC)
  start = np.asarray(state.start_BKC)
  B, K, C = size.shape
  labels = np.full((B, K, T), -1, np.int64)
  seen = np.zeros((B, K, T), np.int64)
  for b in range(B):
    for k in range(K):
      for c in range(C):
        for t in perm[b, k, start[b, k, c] : start[b, k, c] + size[b, k, c]]:
          labels[b, k, t] = c
          seen[b, k, t] += 1
  assert seen.max() <= 1, "a position is in two clusters"
  return labels


def py_select(q, cent, labels, num_clusters, clustered_end, lengths, *, num_sinks, window, S):
  """Plain-Python ClusterKV selection: pending first, then clusters by score, truncate at S."""
  B, H, _ = q.shape
  K, T = labels.shape[1], labels.shape[2]
  G = H // K
  out = np.full((B, K, S), -1, np.int64)
  for b in range(B):
    hi = int(lengths[b]) - window
    for k in range(K):
      pending = list(range(int(clustered_end[b]), hi))
      chosen = pending[max(len(pending) - S, 0) :] if S else []  # the newest S
      n = int(num_clusters[b])
      score = [sum(float(q[b, k * G + g] @ cent[b, k, c]) for g in range(G)) for c in range(n)]
      for c in sorted(range(n), key=lambda c: -score[c]):  # stable: ties to the lower index
        if len(chosen) >= S:
          break
        chosen += [t for t in range(T) if labels[b, k, t] == c and num_sinks <= t < hi]
      chosen = chosen[:S]
      out[b, k, : len(chosen)] = chosen
  return out


def hand_state(rng, *, B, K, T, D, C, num_clusters, clustered_end, num_sinks):
  """A state with random centroids and random labels on [num_sinks, clustered_end)."""
  labels = np.full((B, K, T), -1, np.int64)
  for b in range(B):
    n = num_clusters[b]
    if n:
      labels[b, :, num_sinks : clustered_end[b]] = rng.integers(
          0, n, size=(K, clustered_end[b] - num_sinks))
  cent = rng.standard_normal((B, K, C, D)).astype(np.float32)
  perm, size, start = clusterkv.csr_index(jnp.asarray(labels, jnp.int32), C)
  state = clusterkv.ClusterKVState(
      centroids_BKCD=jnp.asarray(cent), size_BKC=size, start_BKC=start, perm_BKT=perm,
      num_clusters_B=jnp.asarray(num_clusters, jnp.int32),
      clustered_end_B=jnp.asarray(clustered_end, jnp.int32),
  )
  return state, labels, cent


def blobs(rng, n, centers, noise):
  z = rng.integers(0, centers.shape[0], size=n)
  return (centers[z] + noise * rng.standard_normal((n, centers.shape[1]))).astype(np.float32), z


# ---------------------------------------------------------------- 1. k-means


@pytest.mark.parametrize("structured", [True, False])
def test_kmeans_matches_numpy(structured):
  rng = np.random.default_rng(1)
  N, D, C, n_active = 120, 8, 8, 6
  if structured:
    keys, _ = blobs(rng, N, 3.0 * rng.standard_normal((5, D)), 0.7)
  else:
    keys = rng.standard_normal((N, D)).astype(np.float32)
  valid = rng.random(N) < 0.85
  cent0, active = clusterkv.random_member_centroids(
      jax.random.key(3), jnp.asarray(keys), jnp.asarray(valid), n_active, C)
  cent0, active = np.asarray(cent0), np.asarray(active)
  # the initial centroids are distinct valid members' keys; the rest inactive and zero
  assert active.tolist() == [True] * n_active + [False] * (C - n_active)
  picked = [int(np.flatnonzero((keys == row).all(axis=1))[0]) for row in cent0[:n_active]]
  assert len(set(picked)) == n_active and valid[picked].all()
  np.testing.assert_array_equal(cent0[n_active:], 0.0)

  cent, lab = jax.jit(clusterkv.cosine_kmeans, static_argnames="iters")(
      jnp.asarray(keys), jnp.asarray(valid), jnp.asarray(cent0), jnp.asarray(active), iters=20)
  ref_cent, ref_lab = np_cosine_kmeans(keys, valid, cent0, active, 20)
  np.testing.assert_array_equal(np.asarray(lab), ref_lab)
  testing.assert_allclose(cent, ref_cent, n=N)
  assert np.all(np.asarray(lab)[~valid] == -1)


# ---------------------------------------------------------------- 2. CSR index


def test_csr_index_matches_numpy():
  rng = np.random.default_rng(2)
  B, K, T, C = 2, 3, 50, 7
  labels = rng.integers(-1, C - 2, size=(B, K, T))  # clusters C-2, C-1 stay empty
  perm, size, start = clusterkv.csr_index(jnp.asarray(labels, jnp.int32), C)
  ref_perm, ref_size, ref_start = np_csr(labels, C)
  np.testing.assert_array_equal(np.asarray(perm), ref_perm)
  np.testing.assert_array_equal(np.asarray(size), ref_size)
  np.testing.assert_array_equal(np.asarray(start), ref_start)


def test_init_index_is_a_cosine_clustering_of_the_prompt():
  rng = np.random.default_rng(3)
  B, H, K, T, D = 2, 4, 2, 64, 8
  num_sinks, tpc = 4, 10
  k = rng.standard_normal((B, K, T, D)).astype(np.float32)
  lengths = np.array([64, 37], np.int32)  # ragged: row 1 is padded after 37
  policy = clusterkv.clusterkv(24, num_sinks=num_sinks, window=4, num_clusters=None, tokens_per_cluster=tpc,
                               iters=5, cluster_every=16, new_clusters=2)
  state = jax.jit(policy.init)(jnp.asarray(k), jnp.asarray(k), jnp.asarray(lengths),
                               jnp.zeros((B, H, T, D), jnp.float32))
  C = state.size_BKC.shape[-1]
  # max_clusters default: ceil(60 / 10) prompt clusters + 2 per 16 of the 60 slots
  assert C == math.ceil(60 / tpc) + 2 * (60 // 16)
  np.testing.assert_array_equal(state.num_clusters_B, [math.ceil(60 / tpc), math.ceil(33 / tpc)])
  np.testing.assert_array_equal(state.clustered_end_B, lengths)
  labels = labels_from_state(state, T)
  cent = np.asarray(state.centroids_BKCD)
  for b in range(B):
    n = int(state.num_clusters_B[b])
    for kk in range(K):
      valid = (np.arange(T) >= num_sinks) & (np.arange(T) < lengths[b])
      # every clusterable prompt position is in exactly one cluster, nothing else is
      np.testing.assert_array_equal(labels[b, kk] >= 0, valid)
      # each key sits in the cluster of highest cosine similarity (the final assignment)
      active = np.arange(C) < n
      ref = np_cosine_assign(k[b, kk].astype(np.float64), cent[b, kk].astype(np.float64), active)
      np.testing.assert_array_equal(labels[b, kk][valid], ref[valid])
  # CSR fields agree with numpy on the read-back labels
  ref_perm, ref_size, ref_start = np_csr(labels, C)
  np.testing.assert_array_equal(state.perm_BKT, ref_perm)
  np.testing.assert_array_equal(state.size_BKC, ref_size)
  np.testing.assert_array_equal(state.start_BKC, ref_start)


# ---------------------------------------------------------------- 3. selection


def test_select_matches_python_reference():
  rng = np.random.default_rng(4)
  B, H, K, T, D, C = 3, 6, 2, 40, 4, 10  # GQA group of 3
  num_sinks, window = 2, 3
  lengths = np.array([40, 27, 33], np.int32)  # ragged
  clustered_end = np.array([30, 27, 20], np.int32)  # rows 0 and 2 have pending tokens
  num_clusters = [6, 4, 3]
  state, labels, cent = hand_state(rng, B=B, K=K, T=T, D=D, C=C, num_clusters=num_clusters,
                                   clustered_end=clustered_end, num_sinks=num_sinks)
  q = rng.standard_normal((B, H, D)).astype(np.float32)

  # S exactly at a cluster boundary of (b=0, k=0): its 7 pending + its top two clusters
  G = H // K
  score = [sum(float(q[0, g] @ cent[0, 0, c]) for g in range(G)) for c in range(6)]
  top2 = np.argsort(-np.asarray(score), kind="stable")[:2]
  top2_members = [t for c in top2 for t in range(T) if labels[0, 0, t] == c]
  s_exact = 7 + len(top2_members)

  for S in (1, 5, s_exact, s_exact + 1, 40):
    policy = clusterkv.clusterkv(num_sinks + window + S, num_sinks=num_sinks, window=window,
                                 iters=1)
    idx = np.asarray(jax.jit(policy.select)(state, jnp.asarray(q), jnp.zeros((B, K, T, D)),
                                            jnp.asarray(lengths)))
    ref = py_select(q, cent, labels, num_clusters, clustered_end, lengths,
                    num_sinks=num_sinks, window=window, S=S)
    np.testing.assert_array_equal(idx, ref, err_msg=f"S={S}")
    for b in range(B):  # distinct, attendable positions, then -1 padding
      for kk in range(K):
        sel = idx[b, kk][idx[b, kk] >= 0]
        assert len(set(sel.tolist())) == sel.size
        assert np.all((sel >= num_sinks) & (sel < lengths[b] - window))
        assert np.all(idx[b, kk][sel.size :] == -1)
    if S == s_exact:
      assert idx[0, 0].tolist() == list(range(30, 37)) + top2_members
  # S = 40 covers everything: every middle position of every row, once
  for b in range(B):
    np.testing.assert_array_equal(
        np.sort(idx[b, 0][idx[b, 0] >= 0]), np.arange(num_sinks, lengths[b] - window))


def test_select_after_init_matches_python_reference():
  rng = np.random.default_rng(5)
  B, H, K, T, D = 2, 3, 1, 48, 8
  lengths = np.array([48, 29], np.int32)
  k = rng.standard_normal((B, K, T, D)).astype(np.float32)
  q = rng.standard_normal((B, H, D)).astype(np.float32)
  policy = clusterkv.clusterkv(4 + 4 + 13, num_sinks=4, window=4, num_clusters=None, tokens_per_cluster=6, iters=4)
  state = jax.jit(policy.init)(jnp.asarray(k), jnp.asarray(k), jnp.asarray(lengths),
                               jnp.zeros((B, H, T, D), jnp.float32))
  idx = jax.jit(policy.select)(state, jnp.asarray(q), jnp.asarray(k), jnp.asarray(lengths))
  ref = py_select(q, np.asarray(state.centroids_BKCD), labels_from_state(state, T),
                  np.asarray(state.num_clusters_B), np.asarray(state.clustered_end_B), lengths,
                  num_sinks=4, window=4, S=13)
  np.testing.assert_array_equal(idx, ref)


# ---------------------------------------------------------------- 4. golden case


def test_golden_two_clusters():
  # 12 tokens, D = 2, 2 sinks, window 2 (positions 10, 11), one KV head, 2 query heads.
  #   sinks 0, 1: excluded from clustering.
  #   A (x axis): positions 2, 4, 6, 10 with keys (2,0) (4,0) (3,0) (3,0) -> centroid (3, 0)
  #   B (y axis): positions 3, 5, 7, 8, 9, 11 with y = 1, 1, .5, 1.5, 1, 1 -> centroid (0, 1)
  # Cosine k-means separates the two directions from any start (a start inside one
  # direction puts everything in one cluster, whose mean then pulls the other
  # direction's keys away on the next iteration).
  # Query heads (0.5, 0.4) + (0, 0.6) = (0.5, 1.0):
  #   score_A = 0.5 * 3 = 1.5 > score_B = 1.0 * 1 = 1.0, so A first. (Cosine would rank
  #   B first: 0.5 / |q| < 1 / |q|; ClusterKV uses the raw inner product.)
  # A's members 2, 4, 6, 10 minus 10 (in the window) = 2, 4, 6; then B: 3, 5, 7, ...
  k = np.zeros((1, 1, 12, 2), np.float32)
  k[0, 0, :2] = [[5.0, 5.0], [-5.0, 5.0]]
  for t, x in zip([2, 4, 6, 10], [2.0, 4.0, 3.0, 3.0]):
    k[0, 0, t] = [x, 0.0]
  for t, y in zip([3, 5, 7, 8, 9, 11], [1.0, 1.0, 0.5, 1.5, 1.0, 1.0]):
    k[0, 0, t] = [0.0, y]
  q = np.array([[[0.5, 0.4], [0.0, 0.6]]], np.float32)
  lengths = jnp.array([12], jnp.int32)
  expected = {3: [2, 4, 6], 4: [2, 4, 6, 3], 5: [2, 4, 6, 3, 5],
              9: [2, 4, 6, 3, 5, 7, 8, 9, -1]}
  q_prompt = jnp.zeros((1, 2, 12, 2), jnp.float32)
  policy = clusterkv.clusterkv(2 + 2 + 9, num_sinks=2, window=2, num_clusters=2)
  state = jax.jit(policy.init)(jnp.asarray(k), jnp.asarray(k), lengths, q_prompt)
  cent = np.asarray(state.centroids_BKCD)[0, 0, :2]
  order = np.argsort(-cent[:, 0])  # A's centroid first
  testing.assert_allclose(cent[order], np.array([[3.0, 0.0], [0.0, 1.0]]), n=6)
  assert np.asarray(state.size_BKC)[0, 0, :2][order].tolist() == [4, 6]
  for S, want in expected.items():
    policy = clusterkv.clusterkv(2 + 2 + S, num_sinks=2, window=2, num_clusters=2)
    idx = jax.jit(policy.select)(state, jnp.asarray(q), jnp.asarray(k), lengths)
    assert np.asarray(idx)[0, 0].tolist() == want, S


# ---------------------------------------------------------------- 5. incremental clustering


def test_incremental_clustering_appends_and_compiles_once():
  rng = np.random.default_rng(6)
  B, H, K, D = 2, 4, 2, 8
  num_sinks, window, every, new = 2, 4, 16, 3
  prompt = np.array([40, 33], np.int32)
  steps = 2 * every + 3
  T = 40 + steps
  k = rng.standard_normal((B, K, T, D)).astype(np.float32)
  q = rng.standard_normal((B, H, T, D)).astype(np.float32)
  policy = clusterkv.clusterkv(num_sinks + window + 20, num_sinks=num_sinks, window=window,
                               num_clusters=None, tokens_per_cluster=8, iters=5, cluster_every=every,
                               new_clusters=new)
  k_j = jnp.asarray(k)
  state = jax.jit(policy.init)(k_j, k_j, jnp.asarray(prompt),
                               jnp.zeros((B, H, T, D), jnp.float32))
  n0 = np.asarray(state.num_clusters_B)

  @jax.jit
  def step(state, q_BHD, lengths_B):
    idx = policy.select(state, q_BHD, k_j, lengths_B)
    return idx, policy.update(state, q_BHD, k_j, lengths_B)

  with testing.count_lowerings() as lowerings:
    for i in range(steps):
      lengths = (prompt + 1 + i).astype(np.int32)
      q_BHD = q[np.arange(B), :, lengths - 1]
      idx, state = step(state, q_BHD, lengths)
      st = jax.tree.map(np.asarray, state)  # host copies: no eager op may lower here
      decoded = i + 1
      events = decoded // every
      np.testing.assert_array_equal(st.num_clusters_B, n0 + new * events)
      np.testing.assert_array_equal(st.clustered_end_B, prompt + every * events)
      idx = np.asarray(idx)
      labels = labels_from_state(st, T)  # also asserts no position is in two clusters
      for b in range(B):
        pending = np.arange(prompt[b] + every * events, lengths[b] - window)
        older = np.arange(num_sinks, lengths[b] - window)
        for kk in range(K):
          # after the update: every decoded token older than the window is in exactly
          # one cluster or still pending, never both; the selection (before the
          # update) attended all pending tokens of its step
          clustered = np.flatnonzero(labels[b, kk] >= 0)
          assert np.intersect1d(clustered, pending).size == 0
          np.testing.assert_array_equal(
              np.union1d(clustered, pending)[: older.size], older)
          pend_before = np.arange(int(prompt[b] + every * ((decoded - 1) // every)),
                                  lengths[b] - window)
          assert set(pend_before.tolist()) <= set(idx[b, kk].tolist())
        if decoded % every == 0:  # the new clusters hold exactly the last `every` tokens
          n = int(st.num_clusters_B[b])
          new_tokens = np.arange(prompt[b] + decoded - every, prompt[b] + decoded)
          for kk in range(K):
            assert set(labels[b, kk][new_tokens].tolist()) <= set(range(n - new, n))
            assert int(np.sum(st.size_BKC[b, kk, n - new : n])) == every
            # and they are a cosine clustering of those tokens
            ref = np_cosine_assign(k[b, kk, new_tokens].astype(np.float64),
                                   st.centroids_BKCD[b, kk, n - new : n],
                                   np.ones(new, bool))
            np.testing.assert_array_equal(labels[b, kk][new_tokens], n - new + ref)
  assert len(lowerings) == 1, f"the decode step lowered {len(lowerings)} times"


# ---------------------------------------------------------------- 6. fidelity


def random_policy(budget, *, num_sinks, window, seed=0):
  """Uniformly random middle positions: the baseline ClusterKV must beat."""
  S = budget - num_sinks - window

  def select(state, q_BHD, k_BKTD, lengths_B):
    del state, q_BHD
    B, K, T, _ = k_BKTD.shape
    u_BKT = jax.random.uniform(jax.random.fold_in(jax.random.key(seed), lengths_B[0]), (B, K, T))
    allowed_BKT = jnp.broadcast_to(
        base.middle_mask(lengths_B, T, num_sinks, window)[:, None, :], (B, K, T))
    return base.top_positions(u_BKT, allowed_BKT, S)

  return base.KVPolicy("random", budget, num_sinks, window, lambda *a: (), select,
                       lambda state, *a: state)


def clustered_qkv(rng, *, B, H, K, T, D, num_centers):
  """Keys drawn around a few centres per KV head; each query points at one centre."""
  G = H // K
  k = np.zeros((B, K, T, D), np.float32)
  q = np.zeros((B, H, T, D), np.float32)
  for b in range(B):
    for kk in range(K):
      centers = rng.standard_normal((num_centers, D))
      centers = 3.0 * centers / np.linalg.norm(centers, axis=-1, keepdims=True)
      k[b, kk], _ = blobs(rng, T, centers, 0.3)
      z = rng.integers(0, num_centers, size=T)
      for g in range(G):
        q[b, kk * G + g] = 2.0 * centers[z] + 0.3 * rng.standard_normal((T, D))
  v = rng.standard_normal((B, K, T, D)).astype(np.float32)
  return jnp.asarray(q), jnp.asarray(k), jnp.asarray(v)


def test_recalls_more_than_random_and_full_budget_is_exact():
  rng = np.random.default_rng(7)
  B, H, K, D, prompt, steps = 2, 4, 2, 16, 200, 8
  T = prompt + steps
  q, k, v = clustered_qkv(rng, B=B, H=H, K=K, T=T, D=D, num_centers=12)
  budget, ns, w = 32, 4, 4
  run = jax.jit(metrics.replay, static_argnames=("policy", "prompt_len", "steps"))
  ckv = run(clusterkv.clusterkv(budget, num_sinks=ns, window=w, num_clusters=None, tokens_per_cluster=16,
                                iters=10), q, k, v, prompt_len=prompt, steps=steps)
  rnd = run(random_policy(budget, num_sinks=ns, window=w), q, k, v,
            prompt_len=prompt, steps=steps)
  ckv_recall = float(jnp.mean(ckv.recall_BH))
  rnd_recall = float(jnp.mean(rnd.recall_BH))
  assert ckv_recall > rnd_recall + 0.3, (ckv_recall, rnd_recall)
  assert ckv_recall > 0.7, ckv_recall
  np.testing.assert_array_equal(ckv.attended_B, budget)  # the budget is used in full

  # a budget covering every token (with incremental clustering on): full attention
  full = run(clusterkv.clusterkv(T, num_sinks=ns, window=w, num_clusters=None, tokens_per_cluster=16, iters=3,
                                 cluster_every=3, new_clusters=2),
             q, k, v, prompt_len=prompt, steps=steps)
  testing.assert_allclose(full.recall_BH, jnp.ones_like(full.recall_BH), n=T)
  testing.assert_allclose(full.rel_err_BH, jnp.zeros_like(full.rel_err_BH), n=T)


# ---------------------------------------------------------------- 7. errors


@pytest.mark.parametrize("kwargs, arg", [
    (dict(budget=20, num_sinks=16, window=16), "budget"),
    (dict(budget=64, iters=0), "iters"),
    (dict(budget=64, iters=True), "iters"),
    (dict(budget=64, tokens_per_cluster=0), "tokens_per_cluster"),
    (dict(budget=64, num_clusters=0), "num_clusters"),
    (dict(budget=64, cluster_every=0), "cluster_every"),
    (dict(budget=64, new_clusters=0), "new_clusters"),
    (dict(budget=64, cluster_every=4, new_clusters=8), "new_clusters"),
    (dict(budget=64, num_clusters=10, max_clusters=5), "max_clusters"),
    (dict(budget=64, max_clusters=0), "max_clusters"),
    (dict(budget=64, seed=1.5), "seed"),
])
def test_bad_settings_raise(kwargs, arg):
  with pytest.raises(ValueError, match=arg) as err:
    clusterkv.clusterkv(**kwargs)
  assert str(kwargs[arg]) in str(err.value)  # the value given


def test_bad_shapes_raise():
  # raised while tracing, from static shapes: eval_shape compiles nothing
  B, H, K, T, D = 1, 4, 2, 64, 4
  k = jax.ShapeDtypeStruct((B, K, T, D), jnp.float32)
  q_prompt = jax.ShapeDtypeStruct((B, H, T, D), jnp.float32)
  lengths = jax.ShapeDtypeStruct((B,), jnp.int32)
  # 4 sinks, 8 tokens per cluster: ceil(60 / 8) = 8 prompt clusters + 4 per 320 -> 8 needed
  small = clusterkv.clusterkv(32, num_sinks=4, window=4, num_clusters=None, tokens_per_cluster=8, max_clusters=7,
                              new_clusters=4)
  with pytest.raises(ValueError, match=r"max_clusters must be >= 8 .*given 7"):
    jax.eval_shape(small.init, k, k, lengths, q_prompt)
  policy = clusterkv.clusterkv(32, num_sinks=4, window=4, num_clusters=None, tokens_per_cluster=8)
  with pytest.raises(ValueError, match="lengths_B"):
    jax.eval_shape(policy.init, k, k, jax.ShapeDtypeStruct((2,), jnp.int32), q_prompt)
  with pytest.raises(ValueError, match="k_BKTD"):
    k3 = jax.ShapeDtypeStruct((K, T, D), jnp.float32)
    jax.eval_shape(policy.init, k3, k3, lengths, q_prompt)
  state = jax.eval_shape(policy.init, k, k, lengths, q_prompt)
  with pytest.raises(ValueError, match="q_BHD"):  # 5 query heads, 2 KV heads
    jax.eval_shape(policy.select, state, jax.ShapeDtypeStruct((B, 5, D), jnp.float32), k,
                   lengths)
