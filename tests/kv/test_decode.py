"""KV policies inside SmolLM2's jitted decode loop."""

import jax.numpy as jnp
import numpy as np
import pytest

from jaxsys._src import testing
from jaxsys.kv import base, decode
from jaxsys.models import smollm2

PROMPT = "The capital of France is Paris, and the capital of Italy is"


@pytest.fixture(scope="module")
def model():
  return smollm2.load_smollm2()


def test_full_policy_generates_what_dense_attention_generates(model):
  config, params, tok = model
  ids = tok.encode(PROMPT)
  want = smollm2.generate_greedy(params, config, ids, 6, max_len=32)
  pa = decode.policy_attention(base.full(32), dense_layers=2)
  got = smollm2.generate_greedy(params, config, ids, 6, max_len=32,
                                attend_fn=pa.attend_fn, state_init_fn=pa.state_init_fn)
  np.testing.assert_array_equal(got, want)
  assert "Rome" in tok.decode(got[0])


def test_policy_decode_step_threads_state_and_compiles_once(model):
  config, params, tok = model
  ids = jnp.asarray([tok.encode(PROMPT)], jnp.int32)
  T = ids.shape[1]
  pa = decode.policy_attention(base.oracle_topk(8, num_sinks=2, window=2), dense_layers=2)
  logits, cache, q_LBHTD = smollm2.prefill(
      params, config, ids, jnp.asarray([T], jnp.int32), max_len=T + 4, return_queries=True)
  state = pa.state_init_fn(cache, q_LBHTD)
  tok_B = jnp.argmax(logits, axis=-1).astype(jnp.int32)

  def step(cache, tok_B, state):
    return smollm2.decode_step(params, config, cache, tok_B, attend_fn=pa.attend_fn,
                               policy_state=state)

  out = testing.assert_compiles_once(step, cache, tok_B, state)
  logits2, cache2, _ = out
  # the dense reference step on the same cache: an 8-token budget changes the
  # logits, but not beyond recognition (same top token on this easy prompt)
  dense_logits, _ = smollm2.decode_step(params, config, cache, tok_B)
  assert int(jnp.argmax(logits2)) == int(jnp.argmax(dense_logits))
  assert not np.allclose(np.asarray(logits2), np.asarray(dense_logits))
  np.testing.assert_array_equal(cache2.lengths_B, [T + 1])


def test_dense_layers_must_be_non_negative():
  with pytest.raises(ValueError, match="dense_layers: expected an int >= 0, given -1"):
    decode.policy_attention(base.full(4), dense_layers=-1)


def test_budget_larger_than_the_context_is_an_error():
  cache = smollm2.KVCache(jnp.zeros((2, 1, 1, 16, 4), jnp.float32),
                          jnp.zeros((2, 1, 1, 16, 4), jnp.float32), jnp.asarray([8], jnp.int32))
  pa = decode.policy_attention(base.oracle_topk(32))
  with pytest.raises(ValueError, match=r"budget \(32\) must be <= the context, i.e. the cache slots \(16\)"):
    pa.state_init_fn(cache, jnp.zeros((2, 1, 1, 8, 4), jnp.float32))
