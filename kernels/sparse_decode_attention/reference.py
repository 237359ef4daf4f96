"""Plain-JAX sparse decode attention: the reference the Pallas kernel is held to.

One decode query per sequence attends to three sets of tokens of its own KV cache:

* the sinks, positions ``[0, num_sinks)``;
* the recent window, positions ``[length - window, length)``;
* a selected list of positions per (sequence, KV head), e.g. ClusterKV's recalled
  clusters or Quest's pages.

A selected position counts only if it lies strictly between the two dense parts
(``num_sinks <= pos < length - window``); entries outside that range, negative
ones included, are padding. So no token is counted twice and a policy may pad its
list with -1. Keys and values are stored once per KV head; the query heads of a
GQA group share the KV head's list.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def token_positions(
    indices_BKS: jax.Array, lengths_B: jax.Array, *, num_sinks: int, window: int
) -> tuple[jax.Array, jax.Array]:
  """The positions each (sequence, KV head) attends to, and which are valid.

  Returns:
    ``pos_BKP`` (int32) and ``valid_BKP`` (bool), P = num_sinks + window + S, in
    the order sinks, window, selected.
  """
  B, K, _ = indices_BKS.shape
  lengths_B11 = lengths_B.astype(jnp.int32)[:, None, None]
  sink_P = jnp.arange(num_sinks, dtype=jnp.int32)
  sink_BKP = jnp.broadcast_to(sink_P, (B, K, num_sinks))
  sink_ok = sink_BKP < lengths_B11
  win_BKP = lengths_B11 - window + jnp.arange(window, dtype=jnp.int32)[None, None, :]
  win_BKP = jnp.broadcast_to(win_BKP, (B, K, window))
  win_ok = (win_BKP >= num_sinks) & (win_BKP >= 0)
  sel_BKS = indices_BKS.astype(jnp.int32)
  sel_ok = (
      (sel_BKS >= num_sinks) & (sel_BKS >= 0) & (sel_BKS < lengths_B11 - window)
  )
  pos = jnp.concatenate([sink_BKP, win_BKP, sel_BKS], axis=-1)
  valid = jnp.concatenate([sink_ok, win_ok, sel_ok], axis=-1)
  return pos, valid


def sparse_decode_attention_reference(
    q_BHD: jax.Array,
    k_BKTD: jax.Array,
    v_BKTD: jax.Array,
    indices_BKS: jax.Array,
    lengths_B: jax.Array,
    *,
    num_sinks: int,
    window: int,
    scale: float | None = None,
) -> jax.Array:
  """Attention of one query per sequence over sinks + window + selected tokens.

  Args:
    q_BHD: queries, H query heads (a multiple of the K KV heads).
    k_BKTD, v_BKTD: the KV cache, T slots per KV head.
    indices_BKS: selected positions per (sequence, KV head); see module doc.
    lengths_B: tokens in each sequence's cache (ragged batch).
    num_sinks: leading positions always attended.
    window: trailing positions always attended.
    scale: score scale, default ``1/sqrt(D)``.

  Returns:
    ``o_BHD`` in the dtype of `q_BHD`; zeros for a sequence with no valid token.
  """
  B, H, D = q_BHD.shape
  K, T = k_BKTD.shape[1], k_BKTD.shape[2]
  G = H // K
  scale = D**-0.5 if scale is None else scale
  pos_BKP, valid_BKP = token_positions(
      indices_BKS, lengths_B, num_sinks=num_sinks, window=window
  )
  if pos_BKP.shape[-1] == 0:  # nothing can be attended
    return jnp.zeros_like(q_BHD)
  pos_BKP = jnp.clip(pos_BKP, 0, T - 1)
  k_BKPD = jnp.take_along_axis(k_BKTD, pos_BKP[..., None], axis=2)
  v_BKPD = jnp.take_along_axis(v_BKTD, pos_BKP[..., None], axis=2)
  q_BKGD = q_BHD.reshape(B, K, G, D).astype(jnp.float32)
  hi = jax.lax.Precision.HIGHEST  # a reference: no TF32 on GPUs
  s_BKGP = jnp.einsum(
      "bkgd,bkpd->bkgp", q_BKGD, k_BKPD.astype(jnp.float32), precision=hi
  ) * jnp.float32(scale)
  valid_BK1P = valid_BKP[:, :, None, :]
  s_BKGP = jnp.where(valid_BK1P, s_BKGP, -jnp.inf)
  m_BKG1 = jnp.max(s_BKGP, axis=-1, keepdims=True)
  m_BKG1 = jnp.where(jnp.isfinite(m_BKG1), m_BKG1, 0.0)
  p_BKGP = jnp.where(valid_BK1P, jnp.exp(s_BKGP - m_BKG1), 0.0)
  l_BKG1 = jnp.sum(p_BKGP, axis=-1, keepdims=True)
  o_BKGD = jnp.einsum(
      "bkgp,bkpd->bkgd", p_BKGP, v_BKPD.astype(jnp.float32), precision=hi
  )
  o_BKGD = jnp.where(l_BKG1 > 0, o_BKGD / jnp.where(l_BKG1 > 0, l_BKG1, 1.0), 0.0)
  return o_BKGD.reshape(B, H, D).astype(q_BHD.dtype)


def dense_decode_attention(
    q_BHD: jax.Array,
    k_BKTD: jax.Array,
    v_BKTD: jax.Array,
    lengths_B: jax.Array,
    *,
    scale: float | None = None,
) -> jax.Array:
  """Full GQA decode attention over positions ``[0, length)``: the dense baseline."""
  B, H, D = q_BHD.shape
  K, T = k_BKTD.shape[1], k_BKTD.shape[2]
  G = H // K
  scale = D**-0.5 if scale is None else scale
  q_BKGD = q_BHD.reshape(B, K, G, D)
  hi = jax.lax.Precision.HIGHEST  # float32 stays float32 (no TF32 on GPUs)
  s_BKGT = jnp.einsum(
      "bkgd,bktd->bkgt", q_BKGD, k_BKTD, preferred_element_type=jnp.float32,
      precision=hi,
  ) * jnp.float32(scale)
  mask_B11T = (jnp.arange(T)[None, :] < lengths_B[:, None])[:, None, None, :]
  s_BKGT = jnp.where(mask_B11T, s_BKGT, -jnp.inf)
  p_BKGT = jax.nn.softmax(s_BKGT, axis=-1)
  p_BKGT = jnp.where(mask_B11T, p_BKGT, 0.0)
  o_BKGD = jnp.einsum(
      "bkgt,bktd->bkgd", p_BKGT.astype(v_BKTD.dtype), v_BKTD,
      preferred_element_type=jnp.float32, precision=hi,
  )
  return o_BKGD.reshape(B, H, D).astype(q_BHD.dtype)
