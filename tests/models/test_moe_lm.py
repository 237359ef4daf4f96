"""The toy MoE LM: data generator, training, orbax round trip, routing traces, errors.

One tiny model (3 layers, D = 32, E = 4, top-2) is trained once per module for 60
steps (about a second after compiling); the default 4-layer config's two-minute
training is the benchmark's, not the tests'.
"""

import dataclasses
import string

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxsys._src import testing
from jaxsys.models import moe_lm
from jaxsys.models.moe_lm import MoELMConfig, TrainConfig
from jaxsys.moe import predictor

TINY_MODEL = MoELMConfig(d_model=32, num_layers=3, num_heads=2, d_ff=64, num_experts=4, top_k=2)
TINY = TrainConfig(model=TINY_MODEL, batch_size=8, seq_len=32, steps=60, learning_rate=1e-2,
                   warmup_steps=5, eval_batch_size=16)


@pytest.fixture(scope="module")
def trained():
  return moe_lm.train(TINY)


@nnx.jit
def forward_logits(model, tokens_BS):
  return model(tokens_BS)[0]


def np_softmax(x):
  e = np.exp(x - x.max(axis=-1, keepdims=True))
  return e / e.sum(axis=-1, keepdims=True)


# ------------------------------------------------------------------------------ data


def test_sample_batch_is_seeded_and_shaped():
  a = moe_lm.sample_batch(np.random.default_rng(7), 12, 40)
  b = moe_lm.sample_batch(np.random.default_rng(7), 12, 40)
  c = moe_lm.sample_batch(np.random.default_rng(8), 12, 40)
  np.testing.assert_array_equal(a.tokens_BS, b.tokens_BS)
  assert not np.array_equal(a.tokens_BS, c.tokens_BS)
  assert a.tokens_BS.shape == (12, 41) and a.tokens_BS.dtype == np.int32
  assert a.inputs_BS.shape == a.targets_BS.shape == (12, 40)
  np.testing.assert_array_equal(a.inputs_BS[:, 1:], a.targets_BS[:, :-1])
  assert a.domains_B.shape == (12,) and set(a.domains_B) <= set(range(len(moe_lm.DOMAINS)))


def test_domains_have_their_own_vocabularies_and_grammar():
  rng = np.random.default_rng(0)
  charset = {
      "arithmetic": set(string.digits + "+-*=;"),
      "english": set(string.ascii_lowercase + " ."),
      "code": set(string.ascii_lowercase + string.digits + " ():=+,\n"),
      "dna": set("ACGT"),
  }
  for domain, allowed in charset.items():
    text = bytes(moe_lm.domain_tokens(domain, rng, 500).astype(np.uint8)).decode("ascii")
    assert set(text) <= allowed, (domain, set(text) - allowed)
  # Arithmetic is correct arithmetic: every complete "a op b = c;" holds.
  text = bytes(moe_lm.domain_tokens("arithmetic", rng, 400).astype(np.uint8)).decode("ascii")
  for expr in text.split(";")[1:-1]:
    lhs, rhs = expr.split("=")
    assert eval(lhs) == int(rhs), expr  # pylint: disable=eval-used
  # Markov domains: their own 64-byte block, and every step follows the sparse chain.
  for domain, lo in (("markov_low", 128), ("markov_high", 192)):
    toks = moe_lm.domain_tokens(domain, rng, 300)
    assert toks.min() >= lo and toks.max() < lo + 64
    succ, _ = moe_lm._MARKOV_TABLES[domain]  # pylint: disable=protected-access
    for a, b in zip(toks[:-1], toks[1:]):
      assert b in succ[a - lo]
  with pytest.raises(ValueError, match=r"domain: expected one of"):
    moe_lm.domain_tokens("latin", rng, 10)
  with pytest.raises(ValueError, match=r"length: expected an int >= 1, given 0"):
    moe_lm.domain_tokens("dna", rng, 0)


# ---------------------------------------------------------------------------- errors


@pytest.mark.parametrize("kwargs,match", [
    (dict(top_k=9), r"MoELMConfig.top_k: expected at most num_experts \(8\), given 9"),
    (dict(num_heads=3), r"MoELMConfig.num_heads: expected a divisor of d_model \(128\), given 3"),
    (dict(d_model=8, num_heads=8), r"RoPE needs an even head width"),
    (dict(backend="dense"), r"MoELMConfig.backend: expected one of .*given 'dense'"),
    (dict(num_layers=0), r"MoELMConfig.num_layers: expected an int >= 1, given 0"),
    (dict(rope_base=0.0), r"MoELMConfig.rope_base: expected a number > 0"),
])
def test_model_config_errors(kwargs, match):
  with pytest.raises(ValueError, match=match):
    MoELMConfig(**kwargs)


def test_train_config_errors():
  with pytest.raises(ValueError, match=r"TrainConfig.steps: expected an int >= 1, given 0"):
    TrainConfig(steps=0)
  with pytest.raises(ValueError, match=r"TrainConfig.learning_rate: expected a number > 0"):
    TrainConfig(learning_rate=0.0)
  with pytest.raises(TypeError, match=r"TrainConfig.model: expected a MoELMConfig"):
    TrainConfig(model={"d_model": 32})
  with pytest.raises(TypeError, match=r"config: expected a TrainConfig, given dict"):
    moe_lm.train({})
  with pytest.raises(TypeError, match=r"config: expected a MoELMConfig"):
    moe_lm.MoELM(TINY, rngs=nnx.Rngs(0))


# -------------------------------------------------------------------------- training


def test_training_lowers_the_loss_by_a_margin(trained):
  _, metrics = trained
  # A uniform guess over 256 bytes costs ln 256 = 5.55 nats; init is near it.
  assert abs(metrics["initial_loss"] - np.log(256)) < 0.7
  assert metrics["final_loss"] < metrics["initial_loss"] - 1.5, metrics
  losses = metrics["losses"]
  assert losses.shape == (TINY.steps,) and np.all(np.isfinite(losses))
  assert np.mean(losses[-10:]) < losses[0] - 1.5
  for key in ("load_balance_loss", "z_loss", "drop_rate"):
    assert metrics[key].shape == (TINY.steps,) and np.all(np.isfinite(metrics[key]))
  assert np.all((metrics["drop_rate"] >= 0) & (metrics["drop_rate"] <= 1))


def test_train_step_compiles_once(trained):
  del trained  # train() compiled train_step for TINY; a new model + optimizer reuse it
  model = moe_lm.init_model(TINY_MODEL, seed=3)
  optimizer = moe_lm.make_optimizer(model, TINY)
  rng = np.random.default_rng(3)
  batches = [jnp.asarray(moe_lm.sample_batch(rng, TINY.batch_size, TINY.seq_len).tokens_BS)
             for _ in range(2)]
  keys = [jax.random.key(i) for i in range(2)]
  before = jax.tree.map(np.asarray, nnx.state(model, nnx.Param))
  with testing.count_lowerings() as lowerings:
    m1 = moe_lm.train_step(model, optimizer, batches[0], keys[0])
    m2 = moe_lm.train_step(model, optimizer, batches[1], keys[1])
    jax.block_until_ready((m1, m2))
  assert not lowerings, f"train_step lowered {len(lowerings)} time(s) for new values"
  after = nnx.state(model, nnx.Param)
  changed = jax.tree.map(lambda a, b: not np.array_equal(a, b), before, after)
  assert all(jax.tree.leaves(changed))
  assert float(m1["loss"]) != float(m2["loss"])


# ------------------------------------------------------------------------ checkpoints


def test_orbax_round_trip(trained, tmp_path):
  model, _ = trained
  tokens = jnp.asarray(moe_lm.sample_batch(np.random.default_rng(5), 4, 32).inputs_BS)
  path = moe_lm.save_checkpoint(tmp_path / "ckpt", model)
  fresh = moe_lm.init_model(TINY_MODEL, seed=1)
  assert not np.array_equal(forward_logits(fresh, tokens), forward_logits(model, tokens))
  restored = moe_lm.restore_checkpoint(path, fresh)
  assert restored is fresh
  np.testing.assert_array_equal(forward_logits(fresh, tokens), forward_logits(model, tokens))
  jax.tree.map(np.testing.assert_array_equal, nnx.state(fresh, nnx.Param),
               nnx.state(model, nnx.Param))


def test_checkpoint_errors(trained, tmp_path):
  model, _ = trained
  path = moe_lm.save_checkpoint(tmp_path / "ckpt", model)
  with pytest.raises(ValueError, match=r"path: checkpoint directory .* already exists"):
    moe_lm.save_checkpoint(path, model)
  wider = moe_lm.init_model(dataclasses.replace(TINY_MODEL, d_ff=48))
  with pytest.raises(ValueError, match=r"parameter blocks\.0\.moe\.w_gate_EDF.* has shape/dtype"
                     r" \(4, 32, 64\) float32; the model .* expects \(4, 32, 48\)"):
    moe_lm.restore_checkpoint(path, wider)
  deeper = moe_lm.init_model(dataclasses.replace(TINY_MODEL, num_layers=4))
  with pytest.raises(ValueError, match=r"has no parameter blocks\.3\."):
    moe_lm.restore_checkpoint(path, deeper)
  with pytest.raises(FileNotFoundError, match=r"path: no checkpoint directory at"):
    moe_lm.restore_checkpoint(tmp_path / "missing", model)


# --------------------------------------------------------------------------- tracing


def test_record_routing_shapes_and_values(trained):
  model, _ = trained
  B, S, L, K, E, D = 4, 32, 3, 2, 4, 32
  tokens = moe_lm.sample_batch(np.random.default_rng(11), B, S).inputs_BS
  trace = moe_lm.record_routing(model, tokens)
  N = B * S
  assert trace.ids_NLK.shape == (N, L, K) and trace.ids_NLK.dtype == jnp.int32
  assert trace.gates_NLK.shape == (N, L, K) and trace.gates_NLK.dtype == jnp.float32
  assert trace.logits_NLE.shape == (N, L, E) and trace.gate_inputs_NLD.shape == (N, L, D)
  np.testing.assert_array_equal(trace.tokens_N, tokens.reshape(-1))
  np.testing.assert_array_equal(trace.seq_start_N, np.tile(np.arange(S) == 0, B))

  # Recompute every router in float64 numpy from the recorded gate inputs.
  h = np.asarray(trace.gate_inputs_NLD, np.float64)
  w = np.asarray(moe_lm.router_weights(model), np.float64)
  assert w.shape == (L, D, E)
  logits = np.einsum("nld,lde->nle", h, w)
  testing.assert_allclose(trace.logits_NLE, logits, dtype=jnp.float32, n=D, scale=10)
  p = np_softmax(logits)
  order = np.argsort(-p, axis=-1, kind="stable")
  ids = order[..., :K]
  sorted_p = np.take_along_axis(p, order, axis=-1)
  clear = (sorted_p[..., K - 1] - sorted_p[..., K]) > 1e-4   # not a near-tie at the cut
  assert clear.mean() > 0.95
  np.testing.assert_array_equal(np.asarray(trace.ids_NLK)[clear], ids[clear])
  g = np.take_along_axis(p, ids, axis=-1)
  testing.assert_allclose(np.asarray(trace.gates_NLK)[clear],
                          (g / g.sum(-1, keepdims=True))[clear], dtype=jnp.float32, n=D,
                          scale=10)
  assert np.all(np.diff(np.asarray(trace.gates_NLK), axis=-1) <= 0)   # descending gates

  # The gate input of layer 0 is the normed hidden state after attention.
  blk = model.blocks[0]
  x = model.embed(jnp.asarray(tokens))
  pos = jnp.broadcast_to(jnp.arange(S, dtype=jnp.int32).reshape(1, S), (B, S))
  x = x + blk.attn(blk.attn_norm(x), pos)
  testing.assert_allclose(trace.gate_inputs_NLD[:, 0], blk.moe_norm(x).reshape(N, D), n=D,
                          scale=10)

  # The trace is what the expert-offload simulator consumes.
  from jaxsys.sims.expert_offload import cache  # pylint: disable=g-import-not-at-top
  sim_trace = cache.make_trace(cache.CacheConfig(num_layers=L, num_experts=E),
                               np.asarray(trace.ids_NLK),
                               seq_start_N=np.asarray(trace.seq_start_N))
  assert sim_trace is not None


def test_record_routing_one_sequence_and_errors(trained):
  model, _ = trained
  tokens = moe_lm.sample_batch(np.random.default_rng(11), 4, 32).inputs_BS
  one = moe_lm.record_routing(model, tokens[2])   # [S]: a batch of one
  batch = moe_lm.record_routing(model, tokens)
  assert one.ids_NLK.shape == (32, 3, 2)
  np.testing.assert_array_equal(one.ids_NLK, batch.ids_NLK[64:96])
  with pytest.raises(ValueError, match=r"tokens_BS: expected integer \[batch, seq\]"):
    moe_lm.record_routing(model, np.zeros((2, 8), np.float32))


def test_predictor_runs_on_a_trained_trace(trained):
  model, _ = trained
  tokens = moe_lm.sample_batch(np.random.default_rng(12), 4, 32).inputs_BS
  trace = moe_lm.record_routing(model, tokens)
  acc = predictor.trace_accuracy(trace.gate_inputs_NLD, trace.ids_NLK,
                                 moe_lm.router_weights(model), depth=2)
  np.testing.assert_array_equal(acc.valid_LP, [[True, True], [True, False], [False, False]])
  assert np.all((acc.top1_P >= 0) & (acc.top1_P <= 1))
  assert np.all((acc.overlap_P >= 0) & (acc.overlap_P <= 1))


def test_docstring_examples():
  import doctest  # pylint: disable=g-import-not-at-top

  result = doctest.testmod(moe_lm, extraglobs={"np": np})
  assert result.failed == 0 and result.attempted > 0
