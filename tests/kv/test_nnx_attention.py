"""The NNX hook runs a policy step for step like the pure functions."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxsys._src import testing
from jaxsys.kernels.sparse_decode_attention import sparse_decode_attention
from jaxsys.kv import base
from jaxsys.kv.nnx_attention import PolicyAttention


class DecoderAttention(nnx.Module):
  """The docstring's example layer: a query projection then the policy attention."""

  def __init__(self, policy, rngs):
    self.q_proj = nnx.Linear(8, 4 * 8, rngs=rngs)
    self.attend = PolicyAttention(policy)

  def __call__(self, x_BM, k_BKTD, v_BKTD, lengths_B):
    q_BHD = self.q_proj(x_BM).reshape(x_BM.shape[0], 4, 8)
    return self.attend(q_BHD, k_BKTD, v_BKTD, lengths_B)


def test_module_matches_pure_functions_over_steps():
  rng = np.random.default_rng(0)
  B, K, T, D = 2, 2, 40, 8
  k = jnp.asarray(rng.standard_normal((B, K, T, D)), jnp.float32)
  v = jnp.asarray(rng.standard_normal((B, K, T, D)), jnp.float32)
  x = jnp.asarray(rng.standard_normal((3, B, 8)), jnp.float32)
  policy = base.oracle_topk(10, num_sinks=2, window=3)
  layer = DecoderAttention(policy, nnx.Rngs(0))
  prompt = jnp.asarray([30, 25], jnp.int32)
  layer.attend.prefill(k, v, prompt, jnp.zeros((B, 4, T, D), jnp.float32))
  step = nnx.jit(lambda m, *a: m(*a))
  for i in range(3):
    lengths = prompt + 1 + i
    got = step(layer, x[i], k, v, lengths)
    q = layer.q_proj(x[i]).reshape(B, 4, 8)
    idx = policy.select((), q, k, lengths)
    want = sparse_decode_attention(q, k, v, idx, lengths, num_sinks=2, window=3)
    testing.assert_allclose(got, want, n=T)


def test_decoding_before_prefill_is_an_error():
  layer = PolicyAttention(base.full(8))
  z = jnp.zeros((1, 2, 4), jnp.float32)
  with pytest.raises(ValueError, match=r"PolicyAttention\(full\): call prefill"):
    layer(z, jnp.zeros((1, 1, 8, 4), jnp.float32), jnp.zeros((1, 1, 8, 4), jnp.float32),
          jnp.asarray([3], jnp.int32))
