"""Fidelity metrics of a KV selection against full attention, and a replay driver.

For one decode query and the token set a policy lets it attend to:

* attention-mass recall: ``sum_{t in attended} softmax(q K^T / sqrt(D))_t`` under
  *full* attention, per query head (1.0 means nothing that mattered was dropped);
* top-k hit rate: ``|attended ∩ topk_t p_t| / k`` per query head, with k the
  number of attended tokens (ClusterKV's own measure);
* relative output error: ``||o_sel - o_full|| / ||o_full||`` per query head.

`replay` runs a policy over captured real queries/keys/values (teacher forcing):
init on a prompt prefix, then one decode step per following position.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxsys.kernels.sparse_decode_attention import reference as sda_reference
from jaxsys.kv import base


def attended_mask(
    indices_BKS: jax.Array, lengths_B: jax.Array, T: int, *, num_sinks: int, window: int
) -> jax.Array:
  """``[B, K, T]`` bool: the tokens a (sinks, window, indices) selection attends to."""
  pos_BKP, valid_BKP = sda_reference.token_positions(
      indices_BKS, lengths_B, num_sinks=num_sinks, window=window
  )
  B, K, _ = pos_BKP.shape
  hit = jax.nn.one_hot(jnp.where(valid_BKP, pos_BKP, T), T + 1, dtype=jnp.bool_)
  return jnp.any(hit, axis=2)[..., :T]


def full_attention_probs(q_BHD: jax.Array, k_BKTD: jax.Array, lengths_B: jax.Array) -> jax.Array:
  """``[B, K, G, T]`` float32 softmax of full attention over valid positions."""
  T = k_BKTD.shape[2]
  s = base.decode_scores(q_BHD, k_BKTD)
  valid = (jnp.arange(T)[None, :] < lengths_B[:, None])[:, None, None, :]
  p = jax.nn.softmax(jnp.where(valid, s, -jnp.inf), axis=-1)
  return jnp.where(valid, p, 0.0)


class Fidelity(NamedTuple):
  recall_BH: jax.Array  # [B, H] attention mass on the attended set
  topk_hit_BH: jax.Array  # [B, H] share of the true top-k that was attended
  rel_err_BH: jax.Array  # [B, H] relative error of the attention output
  attended_B: jax.Array  # [B] tokens attended per (sequence, KV head), head-averaged


def fidelity(
    q_BHD: jax.Array,
    k_BKTD: jax.Array,
    v_BKTD: jax.Array,
    lengths_B: jax.Array,
    indices_BKS: jax.Array,
    *,
    num_sinks: int,
    window: int,
) -> Fidelity:
  """All three metrics for one decode query per sequence."""
  B, H, D = q_BHD.shape
  K, T = k_BKTD.shape[1], k_BKTD.shape[2]
  att_BKT = attended_mask(indices_BKS, lengths_B, T, num_sinks=num_sinks, window=window)
  p_BKGT = full_attention_probs(q_BHD, k_BKTD, lengths_B)
  att_BK1T = att_BKT[:, :, None, :]
  recall = jnp.sum(jnp.where(att_BK1T, p_BKGT, 0.0), axis=-1).reshape(B, H)
  n_att_BK = jnp.sum(att_BKT, axis=-1)
  # true top-k per query head, k = tokens attended by its KV head
  rank_BKGT = jnp.argsort(jnp.argsort(-p_BKGT, axis=-1), axis=-1)
  in_top_BKGT = rank_BKGT < n_att_BK[:, :, None, None]
  hits = jnp.sum(in_top_BKGT & att_BK1T, axis=-1)
  topk_hit = (hits / jnp.maximum(n_att_BK[:, :, None], 1)).reshape(B, H)
  o_sel = sda_reference.sparse_decode_attention_reference(
      q_BHD, k_BKTD, v_BKTD, indices_BKS, lengths_B, num_sinks=num_sinks, window=window
  ).astype(jnp.float32)
  o_full = sda_reference.dense_decode_attention(
      q_BHD.astype(jnp.float32), k_BKTD.astype(jnp.float32), v_BKTD.astype(jnp.float32),
      lengths_B,
  )
  num = jnp.linalg.norm(o_sel - o_full, axis=-1)
  den = jnp.maximum(jnp.linalg.norm(o_full, axis=-1), 1e-30)
  return Fidelity(recall, topk_hit, num / den, jnp.mean(n_att_BK.astype(jnp.float32), axis=1))


def replay(
    policy: base.KVPolicy,
    q_BHTD: jax.Array,
    k_BKTD: jax.Array,
    v_BKTD: jax.Array,
    *,
    prompt_len: int,
    steps: int,
) -> Fidelity:
  """Runs `policy` over captured tensors of one layer, teacher-forced.

  The policy is initialised on positions ``[0, prompt_len)`` (with the prompt's
  queries), then for ``i < steps`` the query at position ``prompt_len + i``
  decodes with the cache holding ``prompt_len + i + 1`` tokens.

  Returns:
    `Fidelity` with a leading `steps` axis on every field.
  """
  B, H, T, D = q_BHTD.shape
  if prompt_len + steps > T:
    raise ValueError(
        f"prompt_len + steps ({prompt_len} + {steps}) must be <= the captured"
        f" length {T}"
    )
  base.check_fits(policy, k_BKTD.shape[2])
  lengths0 = jnp.full((B,), prompt_len, jnp.int32)
  q_prompt = jnp.where(
      (jnp.arange(T) < prompt_len)[None, None, :, None], q_BHTD, 0.0
  ).astype(q_BHTD.dtype)
  state = policy.init(k_BKTD, v_BKTD, lengths0, q_prompt)

  def step(state, i):
    lengths = lengths0 + 1 + i
    q_BHD = jax.lax.dynamic_index_in_dim(q_BHTD, prompt_len + i, axis=2, keepdims=False)
    idx = policy.select(state, q_BHD, k_BKTD, lengths)
    fid = fidelity(q_BHD, k_BKTD, v_BKTD, lengths, idx,
                   num_sinks=policy.num_sinks, window=policy.window)
    state = policy.update(state, q_BHD, k_BKTD, lengths)
    return state, fid

  _, out = jax.lax.scan(step, state, jnp.arange(steps, dtype=jnp.int32))
  return out
