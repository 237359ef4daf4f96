"""Plug a `KVPolicy` into a model's decode loop.

`policy_attention(policy)` returns the two functions a decode loop needs:

* ``state_init_fn(cache, q_LBHTD) -> state_L``: after prefill, `policy.init` on
  every layer (vmapped over the leading layer axis of the cache and the prompt's
  queries);
* ``attend_fn(q_BHD, k_BKTD, v_BKTD, lengths_B, layer, state) -> (o_BHD, state)``:
  one layer's decode attention. Layers below `dense_layers` attend densely
  (ClusterKV and Quest keep layers 0-1 dense); the others select with the policy,
  attend through `jaxsys.kernels.sparse_decode_attention` and update the state.

With SmolLM2::

    init_fn, attend_fn = policy_attention(clusterkv(256))
    out = smollm2.generate_greedy(params, config, ids, 16,
                                  attend_fn=attend_fn, state_init_fn=init_fn)

The same pair works in any loop that scans over layers with a per-layer state
(it is what `smollm2.decode_step(..., policy_state=...)` expects).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jaxsys.kernels.sparse_decode_attention import api as sda
from jaxsys.kernels.sparse_decode_attention import reference as sda_reference
from jaxsys.kv import base


class PolicyAttention(NamedTuple):
  state_init_fn: Callable[[Any, jax.Array], Any]
  attend_fn: Callable[..., tuple[jax.Array, Any]]


def policy_attention(
    policy: base.KVPolicy,
    *,
    dense_layers: int = 0,
    implementation: str | Sequence[str] | None = None,
) -> PolicyAttention:
  """The (state_init_fn, attend_fn) pair that runs `policy` in a decode loop.

  Args:
    policy: the KV policy.
    dense_layers: layers ``< dense_layers`` use full attention.
    implementation: of the sparse attention ("pallas", "reference" or None).

  Returns:
    `PolicyAttention(state_init_fn, attend_fn)`; create it once and reuse it
    (both are static arguments of the jitted loop).
  """
  if not isinstance(dense_layers, int) or dense_layers < 0:
    raise ValueError(f"dense_layers: expected an int >= 0, given {dense_layers!r}")

  def state_init_fn(cache, q_LBHTD):
    lengths_B = cache.lengths_B
    T_cache, T_q = cache.k_LBKTD.shape[3], q_LBHTD.shape[3]
    base.check_fits(policy, T_cache)
    if T_q < T_cache:  # one query row per cache slot, as `KVPolicy.init` takes
      q_LBHTD = jnp.pad(q_LBHTD, ((0, 0), (0, 0), (0, 0), (0, T_cache - T_q), (0, 0)))
    return jax.vmap(policy.init, in_axes=(0, 0, None, 0))(
        cache.k_LBKTD, cache.v_LBKTD, lengths_B, q_LBHTD
    )

  def attend_fn(q_BHD, k_BKTD, v_BKTD, lengths_B, layer, state):
    def dense(operands):
      q, k, v, lengths, st = operands
      return sda_reference.dense_decode_attention(q, k, v, lengths).astype(v.dtype), st

    def sparse(operands):
      q, k, v, lengths, st = operands
      idx = policy.select(st, q, k, lengths)
      o = sda.sparse_decode_attention(
          q, k, v, idx, lengths, num_sinks=policy.num_sinks, window=policy.window,
          implementation=implementation,
      )
      return o.astype(v.dtype), policy.update(st, q, k, lengths)

    operands = (q_BHD, k_BKTD, v_BKTD, lengths_B, state)
    if dense_layers == 0:
      return sparse(operands)
    return jax.lax.cond(layer < dense_layers, dense, sparse, operands)

  return PolicyAttention(state_init_fn, attend_fn)
