"""Flax NNX hook: any `KVPolicy` as the decode-time attention of an NNX layer.

`PolicyAttention` is a thin module around the pure functions: it keeps the
policy's state in an `nnx.Cache` variable, so a Flax decoder can switch KV
policy by swapping one submodule. The cache tensors stay with the caller (keys
stored once per KV head, post-RoPE)::

    from flax import nnx
    from jaxsys.kv import clusterkv
    from jaxsys.kv.nnx_attention import PolicyAttention

    class DecoderAttention(nnx.Module):
      def __init__(self, policy, rngs):
        self.q_proj = nnx.Linear(64, 4 * 16, rngs=rngs)
        self.attend = PolicyAttention(policy)

      def __call__(self, x_BM, k_BKTD, v_BKTD, lengths_B):
        q_BHD = self.q_proj(x_BM).reshape(x_BM.shape[0], 4, 16)
        return self.attend(q_BHD, k_BKTD, v_BKTD, lengths_B)

    layer = DecoderAttention(clusterkv.clusterkv(128), nnx.Rngs(0))
    layer.attend.prefill(k_BKTD, v_BKTD, prompt_lengths_B, q_prompt_BHTD)
    o_BHD = nnx.jit(lambda m, *a: m(*a))(layer, x_BM, k_BKTD, v_BKTD, lengths_B)
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
from flax import nnx

from jaxsys.kernels.sparse_decode_attention import api as sda
from jaxsys.kv import base


class PolicyAttention(nnx.Module):
  """Decode attention through a KV policy, with the policy state held by the module.

  Attributes:
    policy: the `KVPolicy` (static).
    implementation: of the sparse attention ("pallas", "reference", None).
    state: `nnx.Cache` holding the policy's state once `prefill` ran.
  """

  def __init__(
      self,
      policy: base.KVPolicy,
      *,
      implementation: str | Sequence[str] | None = None,
  ):
    self.policy = policy
    self.implementation = implementation
    self.state = nnx.Cache(None)

  def prefill(
      self, k_BKTD: jax.Array, v_BKTD: jax.Array, lengths_B: jax.Array, q_BHTD: jax.Array
  ) -> None:
    """Builds the policy state from the prompt's cache and queries (`KVPolicy.init`)."""
    base.check_fits(self.policy, k_BKTD.shape[2])
    self.state.value = self.policy.init(k_BKTD, v_BKTD, lengths_B, q_BHTD)

  def __call__(
      self, q_BHD: jax.Array, k_BKTD: jax.Array, v_BKTD: jax.Array, lengths_B: jax.Array
  ) -> jax.Array:
    """Attends the new query (the cache already holds its token) and updates the state.

    Returns:
      ``o_BHD`` in the dtype of `v_BKTD`.
    """
    if self.state.value is None:
      raise ValueError(
          f"PolicyAttention({self.policy.name}): call prefill(...) before decoding"
      )
    state = self.state.value
    idx = self.policy.select(state, q_BHD, k_BKTD, lengths_B)
    o = sda.sparse_decode_attention(
        q_BHD, k_BKTD, v_BKTD, idx, lengths_B, num_sinks=self.policy.num_sinks,
        window=self.policy.window, implementation=self.implementation,
    )
    self.state.value = self.policy.update(state, q_BHD, k_BKTD, lengths_B)
    return o.astype(v_BKTD.dtype)
