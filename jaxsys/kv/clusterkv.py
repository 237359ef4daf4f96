"""ClusterKV: recallable KV-cache selection by semantic clusters of keys.

Liu et al., "ClusterKV: Manipulating LLM KV Cache in Semantic Space for
Recallable Compression", arXiv 2412.03213 (DAC'25). The whole cache is kept; at
each decode step a query attends to a budget of tokens chosen at the
granularity of clusters of (post-RoPE) keys, so a token dropped at one step can
be recalled at the next.

The mechanism, as a `jaxsys.kv.base.KVPolicy` (the paper's method with the
authors' parameters, as read from their code in ``shared/papers/kv_cache.md``
section 1.1):

* **init** (after prefill): per (sequence, KV head), cosine k-means on the keys
  of positions ``[num_sinks, length)`` (the sinks are attended anyway and are not
  clustered). Centroids start from random member keys; each of ``iters``
  iterations assigns every key to the centroid of highest cosine similarity and
  moves each centroid to the arithmetic mean of its members' *unnormalised*
  keys; an empty cluster keeps its centroid. The clusters are stored as a CSR
  index: ``perm`` (positions sorted by cluster), ``size`` and ``start`` (the
  exclusive prefix sum of ``size``) per cluster.
* **select** (each decode step): every cluster is scored by the raw inner
  product of its centroid with the query, summed over the query heads of the
  GQA group (the paper's ``qavg`` option: one list per KV head, which is what
  `jaxsys.kernels.sparse_decode_attention` takes). Clusters are sorted by score;
  their members are concatenated cluster by cluster and the list is truncated
  to exactly ``S = budget - num_sinks - window`` positions (the smallest prefix
  of clusters that reaches ``S``, the paper's "truncate" mode). Decoded tokens
  not yet clustered and older than the window ("pending", attended unclustered
  as in the paper) come first; should they outnumber ``S``, the newest ``S``.
  Members that lie in the dense window (the last prompt tokens are clustered
  but sit in the window for the first decode steps) are skipped rather than
  counted, so all ``S`` slots hold tokens the kernel actually attends.
* **update** (after each step): every ``cluster_every`` decoded tokens, those
  tokens are clustered (same k-means) into ``new_clusters`` clusters that are
  appended to the index (the paper's incremental clustering: 320 tokens into 8
  clusters). Unlike the authors' CUDA kernel, which sorts cluster scores in a
  256-entry shared-memory array, any number of clusters up to ``max_clusters``
  is supported.

Every array is allocated at a static size (``max_clusters`` clusters, ``T``
cache slots) and unused clusters are masked, so one compilation serves a whole
decode loop; everything is jittable and works under `lax.scan` and `vmap`.

Shape letters: B batch, H query heads, K KV heads, G = H // K, T cache slots,
D head dim, C clusters (``max_clusters``), N points of one k-means, S selected
slots, P candidate slots (``S + window``), W tokens clustered per decode event
(``cluster_every``).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxsys.kv import base

_NAME = "clusterkv"
_HI = jax.lax.Precision.HIGHEST  # no TF32 in centroid scores or k-means on GPUs
_EPS = 1e-12


class ClusterKVState(NamedTuple):
  """The cluster index of every (sequence, KV head)."""

  centroids_BKCD: jax.Array  # [B, K, C, D] float32; rows >= num_clusters_B are unused
  size_BKC: jax.Array  # [B, K, C] int32 tokens per cluster (0 for unused clusters)
  start_BKC: jax.Array  # [B, K, C] int32 offset of each cluster in perm (exclusive cumsum of size)
  perm_BKT: jax.Array  # [B, K, T] int32 clustered positions sorted by cluster, then -1
  num_clusters_B: jax.Array  # [B] int32 clusters in use (the same for every KV head)
  clustered_end_B: jax.Array  # [B] int32 positions >= this are not clustered yet


def _check_int(arg: str, value, minimum: int | None, *, optional: bool = False) -> None:
  if optional and value is None:
    return
  if not isinstance(value, int) or isinstance(value, bool) or (
      minimum is not None and value < minimum
  ):
    expected = "an int" + (f" >= {minimum}" if minimum is not None else "")
    if optional:
      expected += " or None"
    raise ValueError(f"{_NAME}: {arg} must be {expected}, given {value!r}")


def _unit(x_ND: jax.Array) -> jax.Array:
  """Rows scaled to unit L2 norm (zero rows stay zero)."""
  norm_N1 = jnp.sqrt(jnp.sum(x_ND * x_ND, axis=-1, keepdims=True))
  return x_ND / jnp.maximum(norm_N1, _EPS)


def cosine_assign(keys_ND: jax.Array, centroids_CD: jax.Array, active_C: jax.Array) -> jax.Array:
  """``[N]`` int32: the active centroid of highest cosine similarity for each key.

  Ties go to the lower cluster index (as `numpy.argmax`).
  """
  sim_NC = jnp.einsum(
      "nd,cd->nc", _unit(keys_ND.astype(jnp.float32)),
      _unit(centroids_CD.astype(jnp.float32)), precision=_HI,
  )
  sim_NC = jnp.where(active_C[None, :], sim_NC, -jnp.inf)
  return jnp.argmax(sim_NC, axis=-1).astype(jnp.int32)


def cosine_kmeans(
    keys_ND: jax.Array,
    valid_N: jax.Array,
    centroids_CD: jax.Array,
    active_C: jax.Array,
    *,
    iters: int,
) -> tuple[jax.Array, jax.Array]:
  """Cosine k-means with mean-of-unnormalised-keys updates (ClusterKV's clustering).

  Each of `iters` iterations assigns every valid key to the active centroid of
  highest cosine similarity, then sets each centroid to the arithmetic mean of
  its members' keys (not normalised, as the authors' kernel does); a cluster
  with no member keeps its centroid. A final assignment against the last
  centroids gives the labels. One (sequence, head) at a time: `jax.vmap` it for
  batches. Matches a float64 numpy k-means to float32 rounding.

  Args:
    keys_ND: the points (e.g. post-RoPE keys), any float dtype.
    valid_N: which points take part (False: padding, sinks, ...).
    centroids_CD: initial centroids (e.g. `random_member_centroids`).
    active_C: which clusters exist; inactive ones get no member and stay as given.
    iters: number of assign/update iterations, >= 1.

  Returns:
    ``(centroids_CD, labels_N)``: float32 centroids, int32 labels (-1 where not valid).

  >>> keys = jnp.array([[1.0, 0.0], [3.0, 0.0], [0.0, 2.0]])
  >>> cent, lab = cosine_kmeans(keys, jnp.ones(3, bool), keys[jnp.array([0, 2])],
  ...                           jnp.ones(2, bool), iters=2)
  >>> cent.tolist(), lab.tolist()
  ([[2.0, 0.0], [0.0, 2.0]], [0, 0, 1])
  """
  _check_int("iters", iters, 1)
  N, _ = keys_ND.shape
  C = centroids_CD.shape[0]
  keys = keys_ND.astype(jnp.float32)

  def labels_of(cent_CD):
    # invalid points go to an extra segment C that is dropped
    return jnp.where(valid_N, cosine_assign(keys, cent_CD, active_C), C)

  def body(_, cent_CD):
    lab_N = labels_of(cent_CD)
    sums_CD = jax.ops.segment_sum(keys, lab_N, num_segments=C + 1)[:C]
    counts_C = jax.ops.segment_sum(jnp.ones((N,), jnp.float32), lab_N, num_segments=C + 1)[:C]
    mean_CD = sums_CD / jnp.maximum(counts_C, 1.0)[:, None]
    return jnp.where((counts_C > 0)[:, None], mean_CD, cent_CD)

  cent_CD = jax.lax.fori_loop(0, iters, body, centroids_CD.astype(jnp.float32))
  lab_N = labels_of(cent_CD)
  return cent_CD, jnp.where(lab_N < C, lab_N, -1)


def random_member_centroids(
    key: jax.Array,
    keys_ND: jax.Array,
    valid_N: jax.Array,
    num_active: jax.Array | int,
    num_clusters: int,
) -> tuple[jax.Array, jax.Array]:
  """Initial centroids: the keys of distinct valid points drawn uniformly at random.

  Args:
    key: a `jax.random` key.
    keys_ND: the points.
    valid_N: which points may be drawn.
    num_active: clusters wanted (traced is fine); capped at the number of valid points.
    num_clusters: C, the static number of centroid rows (<= N).

  Returns:
    ``(centroids_CD, active_C)``: float32 centroids (zero rows where inactive) and
    a bool mask of the first ``min(num_active, valid points)`` clusters.
  """
  N = keys_ND.shape[0]
  if num_clusters > N:
    raise ValueError(
        f"num_clusters ({num_clusters}) must be <= the number of points ({N})"
    )
  u_N = jnp.where(valid_N, jax.random.uniform(key, (N,), jnp.float32), -1.0)
  _, pick_C = jax.lax.top_k(u_N, num_clusters)  # valid points first, in random order
  n_act = jnp.minimum(jnp.asarray(num_active, jnp.int32), jnp.sum(valid_N, dtype=jnp.int32))
  active_C = jnp.arange(num_clusters, dtype=jnp.int32) < n_act
  cent_CD = jnp.where(active_C[:, None], keys_ND[pick_C].astype(jnp.float32), 0.0)
  return cent_CD, active_C


def csr_index(labels_BKT: jax.Array, num_clusters: int) -> tuple[jax.Array, jax.Array, jax.Array]:
  """The CSR cluster index of per-token labels (the authors' perm/size/offset layout).

  Args:
    labels_BKT: cluster of each position, -1 for a position in no cluster.
    num_clusters: C, the static number of clusters (labels must be < C).

  Returns:
    ``(perm_BKT, size_BKC, start_BKC)``, all int32: the clustered positions sorted
    by cluster (ascending positions within a cluster) followed by -1, the
    cluster sizes, and each cluster's offset in ``perm`` (exclusive cumsum).
  """
  T = labels_BKT.shape[-1]
  lab = jnp.where(labels_BKT >= 0, labels_BKT, num_clusters).astype(jnp.int32)
  perm_BKT = jnp.argsort(lab, axis=-1, stable=True).astype(jnp.int32)
  count = lambda l_T: jnp.bincount(l_T, length=num_clusters + 1)[:num_clusters]
  size_BKC = jax.vmap(jax.vmap(count))(lab).astype(jnp.int32)
  total_BK1 = jnp.sum(size_BKC, axis=-1, keepdims=True)
  perm_BKT = jnp.where(jnp.arange(T, dtype=jnp.int32)[None, None, :] < total_BK1, perm_BKT, -1)
  start_BKC = jnp.cumsum(size_BKC, axis=-1, dtype=jnp.int32) - size_BKC
  return perm_BKT, size_BKC, start_BKC


def clusters_needed(
    T: int,
    *,
    num_sinks: int = 16,
    num_clusters: int | None = None,
    tokens_per_cluster: int = 80,
    cluster_every: int = 320,
    new_clusters: int = 8,
) -> int:
  """The most clusters a cache of `T` slots can need: prompt clusters + appended ones.

  The prompt holds at most ``T - num_sinks`` clusterable tokens, so at most
  ``num_clusters`` (or ``ceil((T - num_sinks) / tokens_per_cluster)``) clusters,
  and at most ``(T - num_sinks) // cluster_every`` incremental clusterings append
  ``new_clusters`` each. The default ``max_clusters`` of `clusterkv`.
  """
  mid = max(T - num_sinks, 0)
  prompt = _prompt_clusters(mid, num_clusters, tokens_per_cluster)
  return max(prompt + new_clusters * (mid // cluster_every), 1)


def _prompt_clusters(mid: int, num_clusters: int | None, tokens_per_cluster: int) -> int:
  """Static bound on the prompt's clusters when `mid` positions can be clustered."""
  wanted = math.ceil(mid / tokens_per_cluster) if num_clusters is None else num_clusters
  return min(wanted, mid)


def clusterkv(
    budget: int,
    *,
    num_sinks: int = 16,
    window: int = 16,
    num_clusters: int | None = 400,
    tokens_per_cluster: int = 80,
    max_clusters: int | None = None,
    iters: int = 20,
    cluster_every: int = 320,
    new_clusters: int = 8,
    seed: int = 0,
) -> base.KVPolicy:
  """ClusterKV (arXiv 2412.03213) as a KV policy: select tokens by key clusters.

  Defaults are the authors' (accuracy path): 400 prompt clusters whatever the
  prompt length (capped at the clusterable tokens), 16 sinks, 20 k-means
  iterations, 8 new clusters per 320 decoded tokens. ``num_clusters=None``
  scales the count with the prompt instead,
  ``ceil((length - num_sinks) / tokens_per_cluster)`` per sequence (at 2k
  context, SmolLM2 layers 2-29, 400 clusters recall more attention mass than 80
  tokens per cluster: 0.78 vs 0.66 at budget 64, see benchmarks/kv_cache.py).

  Args:
    budget: tokens attended per (sequence, KV head), sinks and window included.
    num_sinks: leading positions always attended and never clustered.
    window: most recent positions always attended.
    num_clusters: prompt clusters per (sequence, KV head); None: from
      `tokens_per_cluster`. Capped at the number of clusterable prompt tokens.
    tokens_per_cluster: prompt tokens per cluster when `num_clusters` is None.
    max_clusters: static capacity of the cluster arrays; None: enough for any
      prompt filling the cache plus all decode-time clusters
      (`clusters_needed` of the cache size). Checked against that at `init`.
    iters: k-means iterations, for the prompt and each incremental clustering.
    cluster_every: decoded tokens per incremental clustering.
    new_clusters: clusters appended per incremental clustering.
    seed: seed of the random initial centroids.

  Returns:
    A `KVPolicy` whose state is a `ClusterKVState`.

  Raises:
    ValueError: naming the argument, for a budget below ``num_sinks + window``,
      a non-positive count, ``new_clusters > cluster_every``, or a
      `max_clusters` too small for the clusters configured.

  >>> policy = clusterkv(64, num_sinks=4, window=4, tokens_per_cluster=8)
  >>> policy.num_selected
  56
  """
  base.check_budget(_NAME, budget, num_sinks, window)
  _check_int("num_clusters", num_clusters, 1, optional=True)
  _check_int("tokens_per_cluster", tokens_per_cluster, 1)
  _check_int("max_clusters", max_clusters, 1, optional=True)
  _check_int("iters", iters, 1)
  _check_int("cluster_every", cluster_every, 1)
  _check_int("new_clusters", new_clusters, 1)
  _check_int("seed", seed, None)
  if new_clusters > cluster_every:
    raise ValueError(
        f"{_NAME}: new_clusters must be <= cluster_every ({cluster_every}) (each"
        f" new cluster starts from a distinct token), given {new_clusters}"
    )
  if max_clusters is not None:
    for arg, value in (("num_clusters", num_clusters), ("new_clusters", new_clusters)):
      if value is not None and max_clusters < value:
        raise ValueError(
            f"{_NAME}: max_clusters must be >= {arg} ({value}), given {max_clusters}"
        )
  S = budget - num_sinks - window
  base_key = lambda: jax.random.key(seed)  # made inside the traced functions

  def capacity(T: int) -> tuple[int, int]:
    """(C, C0): cluster rows, and static prompt clusters, for a T-slot cache."""
    need = clusters_needed(
        T, num_sinks=num_sinks, num_clusters=num_clusters,
        tokens_per_cluster=tokens_per_cluster, cluster_every=cluster_every,
        new_clusters=new_clusters,
    )
    if max_clusters is not None and max_clusters < need:
      raise ValueError(
          f"{_NAME}: max_clusters must be >= {need} for a cache of {T} slots"
          f" (prompt clusters + {new_clusters} per {cluster_every} decoded"
          f" tokens; see clusters_needed), given {max_clusters}"
      )
    c0 = _prompt_clusters(max(T - num_sinks, 0), num_clusters, tokens_per_cluster)
    return (need if max_clusters is None else max_clusters), c0

  def init(k_BKTD, v_BKTD, lengths_B, q_BHTD):
    del v_BKTD, q_BHTD
    if k_BKTD.ndim != 4:
      raise ValueError(f"{_NAME}: k_BKTD must be [B, K, T, D], given shape {k_BKTD.shape}")
    B, K, T, D = k_BKTD.shape
    if lengths_B.shape != (B,):
      raise ValueError(f"{_NAME}: lengths_B must have shape ({B},), given {lengths_B.shape}")
    C, C0 = capacity(T)
    L_B = lengths_B.astype(jnp.int32)
    n_mid_B = jnp.maximum(L_B - num_sinks, 0)
    if num_clusters is None:
      want_B = (n_mid_B + tokens_per_cluster - 1) // tokens_per_cluster
    else:
      want_B = jnp.full((B,), num_clusters, jnp.int32)
    n_clusters_B = jnp.minimum(want_B, n_mid_B)
    t_T = jnp.arange(T, dtype=jnp.int32)
    valid_BT = (t_T[None, :] >= num_sinks) & (t_T[None, :] < L_B[:, None])
    if C0 > 0:
      key_BK = jax.random.split(jax.random.fold_in(base_key(), 0), B * K).reshape(B, K)

      def one(key, keys_TD, valid_T, n_act):
        cent0_CD, active_C = random_member_centroids(key, keys_TD, valid_T, n_act, C0)
        return cosine_kmeans(keys_TD, valid_T, cent0_CD, active_C, iters=iters)

      per_k = jax.vmap(one, in_axes=(0, 0, None, None))
      cent_BKCD, labels_BKT = jax.vmap(per_k)(key_BK, k_BKTD, valid_BT, n_clusters_B)
      cent_BKCD = jnp.pad(cent_BKCD, ((0, 0), (0, 0), (0, C - C0), (0, 0)))
    else:  # no clusterable slot at all
      cent_BKCD = jnp.zeros((B, K, C, D), jnp.float32)
      labels_BKT = jnp.full((B, K, T), -1, jnp.int32)
    perm_BKT, size_BKC, start_BKC = csr_index(labels_BKT, C)
    return ClusterKVState(
        centroids_BKCD=cent_BKCD,
        size_BKC=size_BKC,
        start_BKC=start_BKC,
        perm_BKT=perm_BKT,
        num_clusters_B=n_clusters_B.astype(jnp.int32),
        clustered_end_B=jnp.maximum(L_B, num_sinks),
    )

  def select(state, q_BHD, k_BKTD, lengths_B):
    B, K, T, _ = k_BKTD.shape
    if S == 0:
      return jnp.zeros((B, K, 0), jnp.int32)
    C = state.size_BKC.shape[-1]
    q_BKGD = base.group_queries(q_BHD, K).astype(jnp.float32)
    # 1. score_c = sum_g q_g . centroid_c (raw inner product, shared by the group)
    score_BKC = jnp.einsum("bkgd,bkcd->bkc", q_BKGD, state.centroids_BKCD, precision=_HI)
    active_BC = jnp.arange(C, dtype=jnp.int32)[None, :] < state.num_clusters_B[:, None]
    score_BKC = jnp.where(active_BC[:, None, :], score_BKC, -jnp.inf)
    # 2. clusters by score, descending (ties: lower index first); cumulative sizes
    order_BKC = jnp.argsort(-score_BKC, axis=-1, stable=True)
    size_BKC = jnp.take_along_axis(state.size_BKC, order_BKC, axis=-1)
    start_BKC = jnp.take_along_axis(state.start_BKC, order_BKC, axis=-1)
    cs_BKC = jnp.cumsum(size_BKC, axis=-1, dtype=jnp.int32)
    # pending: decoded, unclustered, older than the window; the newest S of them
    L_B = lengths_B.astype(jnp.int32)
    hi_B = L_B - window
    lo_B = jnp.maximum(state.clustered_end_B, hi_B - S)
    n_pend_B = jnp.maximum(hi_B - lo_B, 0)
    # 3.-4. candidate slot p: pending first, then the j-th member in cluster order.
    # S + window candidates always hold S attendable ones: only the <= window
    # clustered positions inside the window are not attendable.
    P = S + window
    p_P = jnp.arange(P, dtype=jnp.int32)
    j_BP = p_P[None, :] - n_pend_B[:, None]
    j_BKP = jnp.broadcast_to(j_BP[:, None, :], (B, K, P))
    search = jax.vmap(jax.vmap(lambda cs_C, j_P: jnp.searchsorted(cs_C, j_P, side="right")))
    c_BKP = search(cs_BKC, j_BKP).astype(jnp.int32)  # the cluster (in sorted order) holding slot j
    in_list_BKP = (j_BKP >= 0) & (c_BKP < C)
    c_BKP = jnp.minimum(c_BKP, C - 1)
    first_BKP = jnp.take_along_axis(cs_BKC - size_BKC, c_BKP, axis=-1)
    off_BKP = jnp.take_along_axis(start_BKC, c_BKP, axis=-1) + j_BKP - first_BKP
    tok_BKP = jnp.take_along_axis(state.perm_BKT, jnp.clip(off_BKP, 0, T - 1), axis=-1)
    tok_BKP = jnp.where(in_list_BKP, tok_BKP, -1)
    pend_B1P = (lo_B[:, None] + p_P[None, :])[:, None, :]
    is_pend_B1P = (p_P[None, :] < n_pend_B[:, None])[:, None, :]
    tok_BKP = jnp.where(is_pend_B1P, pend_B1P, tok_BKP)
    # drop what the kernel would ignore (window positions), keep the order, truncate to S
    ok_BKP = (tok_BKP >= num_sinks) & (tok_BKP < hi_B[:, None, None])
    keep_BKS = jnp.argsort((~ok_BKP).astype(jnp.int32), axis=-1, stable=True)[..., :S]
    out_BKS = jnp.take_along_axis(tok_BKP, keep_BKS, axis=-1)
    ok_BKS = jnp.take_along_axis(ok_BKP, keep_BKS, axis=-1)
    return jnp.where(ok_BKS, out_BKS, -1).astype(jnp.int32)

  def append_clusters(state, k_BKTD, do_B):
    """Clusters the next `cluster_every` tokens of each sequence in `do_B`; appends them."""
    B, K, _, _ = k_BKTD.shape
    W, Cn = cluster_every, new_clusters
    ce_B = state.clustered_end_B
    ce_BK = jnp.broadcast_to(ce_B[:, None], (B, K)).reshape(B * K)
    dec_key = jax.random.fold_in(base_key(), 1)
    key_BK = jax.vmap(lambda c, i: jax.random.fold_in(jax.random.fold_in(dec_key, c), i))(
        ce_BK, jnp.arange(B * K, dtype=jnp.int32)
    ).reshape(B, K)

    def one(key, keys_TD, ce):
      win_WD = jax.lax.dynamic_slice_in_dim(keys_TD, ce, W, axis=0)
      valid_W = jnp.ones((W,), jnp.bool_)
      cent0_CD, active_C = random_member_centroids(key, win_WD, valid_W, Cn, Cn)
      return cosine_kmeans(win_WD, valid_W, cent0_CD, active_C, iters=iters)

    new_cent_BKND, lab_BKW = jax.vmap(jax.vmap(one, in_axes=(0, 0, None)))(key_BK, k_BKTD, ce_B)

    def put(cent_CD, size_C, perm_T, n, ce, new_cent_ND, lab_W):
      zero = jnp.int32(0)
      total = jnp.sum(size_C, dtype=jnp.int32)
      cent_CD = jax.lax.dynamic_update_slice(cent_CD, new_cent_ND, (n, zero))
      new_size_N = jnp.bincount(lab_W, length=Cn).astype(jnp.int32)
      size_C = jax.lax.dynamic_update_slice(size_C, new_size_N, (n,))
      seg_W = ce + jnp.argsort(lab_W, stable=True).astype(jnp.int32)
      perm_T = jax.lax.dynamic_update_slice(perm_T, seg_W, (total,))
      return cent_CD, size_C, perm_T

    put_k = jax.vmap(put, in_axes=(0, 0, 0, None, None, 0, 0))
    cent, size, perm = jax.vmap(put_k)(
        state.centroids_BKCD, state.size_BKC, state.perm_BKT, state.num_clusters_B, ce_B,
        new_cent_BKND, lab_BKW,
    )
    do_B1 = do_B[:, None]
    size = jnp.where(do_B1[:, :, None], size, state.size_BKC)
    return ClusterKVState(
        centroids_BKCD=jnp.where(do_B1[:, :, None, None], cent, state.centroids_BKCD),
        size_BKC=size,
        start_BKC=jnp.cumsum(size, axis=-1, dtype=jnp.int32) - size,
        perm_BKT=jnp.where(do_B1[:, :, None], perm, state.perm_BKT),
        num_clusters_B=state.num_clusters_B + jnp.where(do_B, Cn, 0).astype(jnp.int32),
        clustered_end_B=ce_B + jnp.where(do_B, W, 0).astype(jnp.int32),
    )

  def update(state, q_BHD, k_BKTD, lengths_B):
    del q_BHD
    if cluster_every > k_BKTD.shape[2] - num_sinks:  # the cache can never fill one event
      return state
    do_B = (lengths_B.astype(jnp.int32) - state.clustered_end_B) >= cluster_every
    return jax.lax.cond(
        jnp.any(do_B), append_clusters, lambda s, k, d: s, state, k_BKTD, do_B
    )

  return base.KVPolicy(_NAME, budget, num_sinks, window, init, select, update)
