"""A toy decoder-only MoE language model on generated multi-domain text, with routing traces.

The reduced evaluation protocol of jaxsys ``papers/moe.md`` 3 (a): a small Flax NNX
MoE LM (byte vocabulary, causal attention with RoPE, RMSNorm, a `jaxsys.moe.layer.MoE`
feed-forward in every layer) trained for a couple of minutes on CPU on text made at
run time by a seeded generator of six "domains" with distinct vocabularies and
grammars, so that experts can specialise by domain. Its per-(layer, token) routing
trace feeds HOBBIT's cross-layer predictor (`jaxsys.moe.predictor`) and the expert
offloading simulator (`jaxsys.sims.expert_offload`, which takes ``ids [N, L, K]``
and ``gates [N, L, K]``).

* `sample_batch`: the data generator (arithmetic, English-like sentences, code-like
  lines, DNA-like strings, two sparse Markov chains over high bytes);
* `MoELMConfig`, `MoELM`: the model; `TrainConfig`, `train`: AdamW training with an
  `nnx.jit` step that compiles once; `evaluate`: mean next-byte cross-entropy;
* `save_checkpoint` / `restore_checkpoint`: the parameters through orbax;
* `record_routing`: top-k expert ids, gate weights, router logits and gate inputs
  (the normed hidden state fed to each router) per (token, layer);
  `router_weights`: the [L, D, E] stack of router matrices.

Shape letters: B sequences, S positions, N = B*S tokens, L layers, D model width,
E experts, K experts per token, V vocabulary.

>>> cfg = MoELMConfig(d_model=32, num_layers=3, num_heads=2, d_ff=64, num_experts=4)
>>> model = init_model(cfg)
>>> batch = sample_batch(np.random.default_rng(0), 4, 32)   # 4 sequences of 32 + 1 bytes
>>> trace = record_routing(model, batch.inputs_BS)
>>> trace.ids_NLK.shape, trace.gate_inputs_NLD.shape
((128, 3, 2), (128, 3, 32))
"""

from __future__ import annotations

import dataclasses
import functools
import os
import time
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
from flax import nnx

from jaxsys.models.smollm2 import apply_rope
from jaxsys.moe import dispatch
from jaxsys.moe.layer import MoE

# ------------------------------------------------------------------------------ data

DOMAINS = ("arithmetic", "english", "code", "dna", "markov_low", "markov_high")

_DET = ("the", "a", "one", "every", "some", "my")
_ADJ = ("small", "red", "old", "quiet", "happy", "green", "tall", "cold")
_NOUN = ("cat", "dog", "house", "river", "child", "bird", "tree", "stone", "friend")
_VERB = ("sees", "likes", "finds", "follows", "helps", "hears", "wants")
_ADV = ("today", "again", "slowly", "at night", "near the river")
_NAME = ("foo", "bar", "baz", "idx", "buf", "val", "tmp", "acc")
_CODONS = ("GCA", "GCT", "TTA", "CTG", "GAA", "GAT", "AAA", "CGT", "TCC", "GGC", "ACG", "CAG")
# Sparse Markov domains: each over its own 64-byte block, 4 successors per state.
_MARKOV = {"markov_low": (128, 20250), "markov_high": (192, 20251)}
_MARKOV_STATES = 64
_MARKOV_FANOUT = 4


def _markov_table(domain: str) -> tuple[np.ndarray, np.ndarray]:
  """A domain's fixed chain: successors [64, 4] (byte ids) and probabilities [64, 4]."""
  lo, seed = _MARKOV[domain]
  rng = np.random.default_rng(seed)
  succ = np.stack([rng.choice(_MARKOV_STATES, _MARKOV_FANOUT, replace=False)
                   for _ in range(_MARKOV_STATES)]) + lo
  probs = rng.dirichlet(np.ones(_MARKOV_FANOUT), size=_MARKOV_STATES)
  return succ.astype(np.int32), probs


_MARKOV_TABLES = {d: _markov_table(d) for d in _MARKOV}


def _pick(rng: np.random.Generator, words: tuple[str, ...]) -> str:
  return words[int(rng.integers(len(words)))]


def _text_unit(domain: str, rng: np.random.Generator) -> str:
  """One sentence / expression / line / gene of a text domain."""
  if domain == "arithmetic":
    a, b = (int(v) for v in rng.integers(0, 100, 2))
    op = "+-*"[int(rng.integers(3))]
    c = a + b if op == "+" else (a - b if op == "-" else a * b)
    return f"{a}{op}{b}={c};"
  if domain == "english":
    subject = f"{_pick(rng, _DET)} {_pick(rng, _ADJ)} {_pick(rng, _NOUN)}"
    obj = f"{_pick(rng, _DET)} {_pick(rng, _NOUN)}"
    tail = f" {_pick(rng, _ADV)}" if rng.random() < 0.5 else ""
    return f"{subject} {_pick(rng, _VERB)} {obj}{tail}. "
  if domain == "code":
    x, y, f = _pick(rng, _NAME), _pick(rng, _NAME), _pick(rng, _NAME)
    n = int(rng.integers(10))
    kind = int(rng.integers(4))
    if kind == 0:
      return f"def {f}({x}, {y}):\n"
    if kind == 1:
      return f"    {x} = {f}({y}, {n})\n"
    if kind == 2:
      return f"for {x} in range({n}):\n"
    return f"    return {x} + {y}\n"
  if domain == "dna":
    body = "".join(_pick(rng, _CODONS) for _ in range(int(rng.integers(3, 9))))
    return f"ATG{body}TAA"
  raise ValueError(f"domain: expected one of {DOMAINS}, given {domain!r}")


def domain_tokens(domain: str, rng: np.random.Generator, length: int) -> np.ndarray:
  """``length`` byte tokens of one domain, int32.

  Text domains concatenate generated units (sentences, expressions, lines,
  genes) and start at a random offset of 0-7 bytes into the first one; Markov
  domains walk their fixed sparse chain from a random state.

  Args:
    domain: one of `DOMAINS`.
    rng: the numpy generator to draw from.
    length: tokens to return, ``>= 1``.

  Returns:
    int32 array [length] of byte values.
  """
  if not isinstance(length, int) or isinstance(length, bool) or length < 1:
    raise ValueError(f"length: expected an int >= 1, given {length!r}")
  if domain in _MARKOV:
    succ, probs = _MARKOV_TABLES[domain]
    lo = _MARKOV[domain][0]
    out = np.empty(length, np.int32)
    state = int(rng.integers(_MARKOV_STATES))
    u = rng.random(length)
    for i in range(length):
      out[i] = lo + state
      j = min(int(np.searchsorted(np.cumsum(probs[state]), u[i])), _MARKOV_FANOUT - 1)
      state = int(succ[state, j]) - lo
    return out
  offset = int(rng.integers(8))
  parts, n = [], 0
  while n < offset + length:
    unit = _text_unit(domain, rng)
    parts.append(unit)
    n += len(unit)
  raw = "".join(parts).encode("ascii")[offset:offset + length]
  return np.frombuffer(raw, np.uint8).astype(np.int32)


class Batch(NamedTuple):
  """A batch of single-domain sequences."""

  tokens_BS: np.ndarray  # [B, S + 1] int32 bytes; inputs are [:, :-1], targets [:, 1:]
  domains_B: np.ndarray  # [B] int32 index into DOMAINS

  @property
  def inputs_BS(self) -> np.ndarray:
    return self.tokens_BS[:, :-1]

  @property
  def targets_BS(self) -> np.ndarray:
    return self.tokens_BS[:, 1:]


def sample_batch(rng: np.random.Generator, batch_size: int, seq_len: int) -> Batch:
  """B sequences of ``seq_len + 1`` bytes, each from one domain drawn uniformly.

  Args:
    rng: numpy generator (seed it for reproducible data).
    batch_size: B >= 1.
    seq_len: S >= 1 model positions (each row holds S + 1 tokens).

  Returns:
    `Batch`.
  """
  for name, v in (("batch_size", batch_size), ("seq_len", seq_len)):
    if not isinstance(v, int) or isinstance(v, bool) or v < 1:
      raise ValueError(f"{name}: expected an int >= 1, given {v!r}")
  domains = rng.integers(len(DOMAINS), size=batch_size).astype(np.int32)
  tokens = np.stack([domain_tokens(DOMAINS[d], rng, seq_len + 1) for d in domains])
  return Batch(tokens, domains)


# ----------------------------------------------------------------------------- model


@dataclasses.dataclass(frozen=True)
class MoELMConfig:
  """Sizes and MoE settings of `MoELM` (defaults: the ``papers/moe.md`` 3 (a) toy)."""

  vocab_size: int = 256
  d_model: int = 128
  num_layers: int = 4
  num_heads: int = 4
  d_ff: int = 256
  num_experts: int = 8
  top_k: int = 2
  backend: str = "capacity_einsum"
  capacity_factor: float | None = 1.25
  jitter_eps: float = 0.0
  load_balance_weight: float = 0.01
  z_loss_weight: float = 1e-3
  rope_base: float = 10000.0
  norm_eps: float = 1e-6

  def __post_init__(self):
    for name in ("vocab_size", "d_model", "num_layers", "num_heads", "d_ff", "num_experts",
                 "top_k"):
      v = getattr(self, name)
      if not isinstance(v, int) or isinstance(v, bool) or v < 1:
        raise ValueError(f"MoELMConfig.{name}: expected an int >= 1, given {v!r}")
    if self.top_k > self.num_experts:
      raise ValueError(
          f"MoELMConfig.top_k: expected at most num_experts ({self.num_experts}), given"
          f" {self.top_k}")
    if self.d_model % self.num_heads:
      raise ValueError(
          f"MoELMConfig.num_heads: expected a divisor of d_model ({self.d_model}), given"
          f" {self.num_heads}")
    if (self.d_model // self.num_heads) % 2:
      raise ValueError(
          f"MoELMConfig.num_heads: RoPE needs an even head width, given d_model"
          f" {self.d_model} / num_heads {self.num_heads} = {self.d_model // self.num_heads}")
    if self.backend not in dispatch.BACKENDS:
      raise ValueError(
          f"MoELMConfig.backend: expected one of {dispatch.BACKENDS}, given {self.backend!r}")
    for name in ("rope_base", "norm_eps"):
      v = getattr(self, name)
      if isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0:
        raise ValueError(f"MoELMConfig.{name}: expected a number > 0, given {v!r}")


class Attention(nnx.Module):
  """Causal multi-head self-attention with RoPE (interleaved pairs, `apply_rope`)."""

  def __init__(self, config: MoELMConfig, *, rngs: nnx.Rngs):
    d = config.d_model
    self.num_heads = config.num_heads
    self.rope_base = config.rope_base
    self.qkv = nnx.Linear(d, 3 * d, use_bias=False, rngs=rngs)
    self.out = nnx.Linear(d, d, use_bias=False, rngs=rngs)

  def __call__(self, x_BSD: jax.Array, positions_BS: jax.Array) -> jax.Array:
    B, S, D = x_BSD.shape
    H = self.num_heads
    qkv = self.qkv(x_BSD).reshape(B, S, 3, H, D // H)
    q_BSHd = apply_rope(qkv[:, :, 0], positions_BS, self.rope_base)
    k_BSHd = apply_rope(qkv[:, :, 1], positions_BS, self.rope_base)
    v_BSHd = qkv[:, :, 2]
    s_BHQK = jnp.einsum("bqhd,bkhd->bhqk", q_BSHd, k_BSHd) * ((D // H) ** -0.5)
    causal_11QK = jnp.tril(jnp.ones((S, S), bool)).reshape(1, 1, S, S)
    s_BHQK = jnp.where(causal_11QK, s_BHQK, jnp.finfo(s_BHQK.dtype).min)
    p_BHQK = jax.nn.softmax(s_BHQK, axis=-1)
    o_BSHd = jnp.einsum("bhqk,bkhd->bqhd", p_BHQK, v_BSHd)
    return self.out(o_BSHd.reshape(B, S, D))


class Block(nnx.Module):
  """Pre-norm decoder layer: ``x += attn(norm(x)); x += moe(norm(x))``."""

  def __init__(self, config: MoELMConfig, *, rngs: nnx.Rngs):
    d = config.d_model
    self.attn_norm = nnx.RMSNorm(d, epsilon=config.norm_eps, rngs=rngs)
    self.attn = Attention(config, rngs=rngs)
    self.moe_norm = nnx.RMSNorm(d, epsilon=config.norm_eps, rngs=rngs)
    self.moe = MoE(
        d, config.d_ff, num_experts=config.num_experts, top_k=config.top_k,
        backend=config.backend, capacity_factor=config.capacity_factor,
        jitter_eps=config.jitter_eps, load_balance_weight=config.load_balance_weight,
        z_loss_weight=config.z_loss_weight, rngs=rngs)

  def __call__(self, x_BSD, positions_BS, jitter_key, dropless):
    x_BSD = x_BSD + self.attn(self.attn_norm(x_BSD), positions_BS)
    y_BSD, aux = self.moe(self.moe_norm(x_BSD), jitter_key=jitter_key, dropless=dropless)
    return x_BSD + y_BSD, aux


class MoELM(nnx.Module):
  """Decoder-only MoE LM: byte embedding, `Block` x L, RMSNorm, untied LM head."""

  def __init__(self, config: MoELMConfig, *, rngs: nnx.Rngs):
    if not isinstance(config, MoELMConfig):
      raise TypeError(f"config: expected a MoELMConfig, given {type(config).__name__}")
    self.config = config
    self.embed = nnx.Embed(config.vocab_size, config.d_model, rngs=rngs)
    self.blocks = nnx.List([Block(config, rngs=rngs) for _ in range(config.num_layers)])
    self.final_norm = nnx.RMSNorm(config.d_model, epsilon=config.norm_eps, rngs=rngs)
    self.head = nnx.Linear(config.d_model, config.vocab_size, use_bias=False, rngs=rngs)

  def __call__(
      self, tokens_BS: jax.Array, *, jitter_key: jax.Array | None = None,
      dropless: bool = False,
  ) -> tuple[jax.Array, dict[str, Any]]:
    """Next-token logits.

    Args:
      tokens_BS: int tokens in ``[0, vocab_size)``.
      jitter_key: PRNG key for router jitter (training); None: deterministic.
      dropless: run every MoE without a capacity limit (evaluation, tracing):
        each sequence's output is then independent of the rest of the batch.
        False uses the config's ``capacity_factor`` (training).

    Returns:
      ``(logits_BSV float32, aux)``: aux has ``"load_balance_loss"`` and
      ``"z_loss"`` (summed over layers, weighted), ``"drop_rate"`` (mean over
      layers) and ``"layers"``, a tuple of each `MoE`'s aux dict.
    """
    if tokens_BS.ndim != 2 or not jnp.issubdtype(tokens_BS.dtype, jnp.integer):
      raise ValueError(
          f"tokens_BS: expected integer [batch, seq], given {tokens_BS.dtype} {tokens_BS.shape}")
    B, S = tokens_BS.shape
    positions_BS = jnp.broadcast_to(jnp.arange(S, dtype=jnp.int32).reshape(1, S), (B, S))
    keys = (jax.random.split(jitter_key, len(self.blocks)) if jitter_key is not None
            else [None] * len(self.blocks))
    x_BSD = self.embed(tokens_BS)
    layers = []
    for block, key in zip(self.blocks, keys):
      x_BSD, aux = block(x_BSD, positions_BS, key, dropless)
      layers.append(aux)
    logits_BSV = self.head(self.final_norm(x_BSD)).astype(jnp.float32)
    total = {
        "load_balance_loss": sum(a["load_balance_loss"] for a in layers),
        "z_loss": sum(a["z_loss"] for a in layers),
        "drop_rate": jnp.mean(jnp.stack([a["drop_rate"] for a in layers])),
        "layers": tuple(layers),
    }
    return logits_BSV, total


def init_model(config: MoELMConfig, seed: int = 0) -> MoELM:
  """A freshly initialised `MoELM`."""
  return MoELM(config, rngs=nnx.Rngs(seed))


def router_weights(model: MoELM) -> jax.Array:
  """Every layer's router matrix stacked: [L, D, E] float32 (logits = h @ W[l])."""
  return jnp.stack([b.moe.router.kernel[...].astype(jnp.float32) for b in model.blocks])


# -------------------------------------------------------------------------- training


@dataclasses.dataclass(frozen=True)
class TrainConfig:
  """What `train` runs.

  The defaults train the default model in under a minute on 2 CPU cores (measured
  on a shared 2-core machine: 45 s wall, 4 s of it compiling; held-out cross-entropy
  5.95 -> 1.01 nats per byte; about 0.6% of slots dropped at capacity factor 1.25).
  """

  model: MoELMConfig = MoELMConfig()
  batch_size: int = 16
  seq_len: int = 64
  steps: int = 300
  learning_rate: float = 3e-3
  warmup_steps: int = 20
  weight_decay: float = 0.01
  grad_clip: float = 1.0
  seed: int = 0
  eval_batch_size: int = 64

  def __post_init__(self):
    if not isinstance(self.model, MoELMConfig):
      raise TypeError(f"TrainConfig.model: expected a MoELMConfig, given {self.model!r}")
    for name, lo in (("batch_size", 1), ("seq_len", 1), ("steps", 1), ("warmup_steps", 0),
                     ("seed", 0), ("eval_batch_size", 1)):
      v = getattr(self, name)
      if not isinstance(v, int) or isinstance(v, bool) or v < lo:
        raise ValueError(f"TrainConfig.{name}: expected an int >= {lo}, given {v!r}")
    for name in ("learning_rate", "grad_clip"):
      v = getattr(self, name)
      if isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0:
        raise ValueError(f"TrainConfig.{name}: expected a number > 0, given {v!r}")
    if isinstance(self.weight_decay, bool) or not self.weight_decay >= 0:
      raise ValueError(f"TrainConfig.weight_decay: expected a number >= 0, given"
                       f" {self.weight_decay!r}")


def _cross_entropy(logits_BSV: jax.Array, targets_BS: jax.Array) -> jax.Array:
  return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits_BSV, targets_BS))


def _loss(model: MoELM, tokens_BS: jax.Array, jitter_key: jax.Array):
  logits_BSV, aux = model(tokens_BS[:, :-1], jitter_key=jitter_key)
  ce = _cross_entropy(logits_BSV, tokens_BS[:, 1:])
  total = ce + aux["load_balance_loss"] + aux["z_loss"]
  return total, {"loss": ce, "load_balance_loss": aux["load_balance_loss"],
                 "z_loss": aux["z_loss"], "drop_rate": aux["drop_rate"]}


@nnx.jit
def train_step(model: MoELM, optimizer: nnx.Optimizer, tokens_BS: jax.Array,
               jitter_key: jax.Array) -> dict[str, jax.Array]:
  """One AdamW step on ``tokens_BS`` ([B, S + 1]: inputs and shifted targets).

  Updates `model` and `optimizer` in place; returns float32 scalars ``loss``
  (next-token cross-entropy), ``load_balance_loss``, ``z_loss``, ``drop_rate``.
  """
  grad_fn = nnx.value_and_grad(_loss, has_aux=True)
  (_, metrics), grads = grad_fn(model, tokens_BS, jitter_key)
  # optax's Adam bias correction computes ``b1 ** count`` (float ** int32), which
  # strict dtype promotion rejects; allow standard promotion for optax alone.
  with jax.numpy_dtype_promotion("standard"):
    optimizer.update(model, grads)
  return metrics


@nnx.jit
def _eval_loss(model: MoELM, tokens_BS: jax.Array) -> jax.Array:
  logits_BSV, _ = model(tokens_BS[:, :-1], dropless=True)
  return _cross_entropy(logits_BSV, tokens_BS[:, 1:])


def evaluate(model: MoELM, tokens_BS: Any) -> float:
  """Mean next-token cross-entropy (nats) of ``tokens_BS`` [B, S + 1]: deterministic, dropless."""
  return float(_eval_loss(model, jnp.asarray(tokens_BS, jnp.int32)))


def make_optimizer(model: MoELM, config: TrainConfig) -> nnx.Optimizer:
  """AdamW with linear warm-up then cosine decay, after global-norm clipping.

  The optax transformation is built once per `TrainConfig` (cached), so two
  optimizers of one config share it and `train_step` compiles once for both.
  """
  return nnx.Optimizer(model, _transform(config), wrt=nnx.Param)


@functools.lru_cache(maxsize=32)
def _transform(config: TrainConfig) -> optax.GradientTransformation:
  warmup = max(1, min(config.warmup_steps, config.steps - 1))
  schedule = optax.warmup_cosine_decay_schedule(
      0.0, config.learning_rate, warmup, max(config.steps, warmup + 1),
      end_value=config.learning_rate * 0.1)
  return optax.chain(optax.clip_by_global_norm(config.grad_clip),
                     optax.adamw(schedule, weight_decay=config.weight_decay))


def train(config: TrainConfig = TrainConfig()) -> tuple[MoELM, dict[str, Any]]:
  """Trains an `MoELM` on freshly generated batches (one new batch per step).

  Data: `sample_batch` with ``numpy.random.default_rng(seed)``; a held-out batch
  of ``eval_batch_size`` sequences from a different seed is scored before and
  after training.

  Args:
    config: a `TrainConfig`.

  Returns:
    ``(model, metrics)``: metrics holds ``initial_loss`` / ``final_loss`` (held-out
    cross-entropy, nats per byte), ``losses`` (training cross-entropy per step,
    numpy [steps]), ``load_balance_loss``, ``z_loss``, ``drop_rate`` (per step),
    ``compile_seconds`` (the first step, compile included), ``train_seconds``
    (the remaining steps) and ``steps``.
  """
  if not isinstance(config, TrainConfig):
    raise TypeError(f"config: expected a TrainConfig, given {type(config).__name__}")
  model = init_model(config.model, config.seed)
  optimizer = make_optimizer(model, config)
  rng = np.random.default_rng(config.seed)
  held_out = sample_batch(np.random.default_rng([config.seed, 1]), config.eval_batch_size,
                          config.seq_len).tokens_BS
  initial_loss = evaluate(model, held_out)
  base_key = jax.random.key(config.seed)
  history = []
  t0 = time.perf_counter()
  compile_seconds = 0.0
  for step in range(config.steps):
    tokens = jnp.asarray(sample_batch(rng, config.batch_size, config.seq_len).tokens_BS)
    history.append(train_step(model, optimizer, tokens, jax.random.fold_in(base_key, step)))
    if step == 0:
      jax.block_until_ready(history[0])
      compile_seconds = time.perf_counter() - t0
  history = jax.device_get(history)
  train_seconds = time.perf_counter() - t0 - compile_seconds
  final_loss = evaluate(model, held_out)
  metrics = {k: np.asarray([h[k] for h in history]) for k in history[0]}
  metrics["losses"] = metrics.pop("loss")
  metrics.update(initial_loss=initial_loss, final_loss=final_loss,
                 compile_seconds=compile_seconds, train_seconds=train_seconds,
                 steps=config.steps)
  return model, metrics


# ------------------------------------------------------------------------ checkpoints


def save_checkpoint(path: str | os.PathLike[str], model: MoELM) -> str:
  """Writes the model's parameters (`nnx.Param` state) to a new orbax directory.

  Args:
    path: the checkpoint directory; must not exist yet.
    model: the model to save.

  Returns:
    The absolute path written.
  """
  path = os.path.abspath(os.fspath(path))
  if os.path.exists(path):
    raise ValueError(f"path: checkpoint directory {path} already exists; give a new path")
  with ocp.StandardCheckpointer() as ckptr:
    ckptr.save(path, nnx.state(model, nnx.Param))
    ckptr.wait_until_finished()
  return path


def _leaf_specs(tree: Any) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
  """``{"blocks.0.moe.router.kernel.value": (shape, dtype)}`` for each array of a tree."""
  specs = {}
  for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
    parts = [str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k)))) for k in path]
    specs[".".join(parts)] = (tuple(leaf.shape), np.dtype(leaf.dtype))
  return specs


def restore_checkpoint(path: str | os.PathLike[str], model: MoELM) -> MoELM:
  """Loads parameters saved by `save_checkpoint` into ``model`` (in place) and returns it.

  ``model`` supplies the structure, shapes and dtypes (e.g. a freshly initialised
  `MoELM` of the same `MoELMConfig`); the checkpoint's metadata is checked against
  it before any array is read.

  Raises:
    FileNotFoundError: no checkpoint directory at ``path``.
    ValueError: not an orbax checkpoint, or one whose parameters do not fit
      ``model`` (names the checkpoint and the first parameter that differs).
  """
  path = os.path.abspath(os.fspath(path))
  if not os.path.isdir(path):
    raise FileNotFoundError(f"path: no checkpoint directory at {path}")
  target = nnx.state(model, nnx.Param)
  with ocp.StandardCheckpointer() as ckptr:
    try:
      stored = _leaf_specs(ckptr.metadata(path).item_metadata)
    except (FileNotFoundError, ValueError, KeyError, TypeError, AttributeError) as e:
      raise ValueError(
          f"restore_checkpoint: {path} is not an orbax checkpoint written by save_checkpoint"
          f" ({type(e).__name__}: {e})") from e
    if not stored:
      raise ValueError(
          f"restore_checkpoint: {path} holds no parameter metadata; expected a directory"
          f" written by save_checkpoint")
    wanted = _leaf_specs(target)
    for name in sorted(wanted.keys() | stored.keys()):
      if name not in stored:
        raise ValueError(f"restore_checkpoint: the checkpoint at {path} has no parameter {name}"
                         f" that the model (config {model.config}) needs")
      if name not in wanted:
        raise ValueError(f"restore_checkpoint: the checkpoint at {path} holds parameter {name},"
                         f" which the model (config {model.config}) does not have")
      if stored[name] != wanted[name]:
        raise ValueError(
            f"restore_checkpoint: parameter {name} of the checkpoint at {path} has shape/dtype"
            f" {stored[name][0]} {stored[name][1]}; the model (config {model.config}) expects"
            f" {wanted[name][0]} {wanted[name][1]}")
    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), target)
    restored = ckptr.restore(path, abstract)
  nnx.update(model, restored)
  return model


# --------------------------------------------------------------------------- tracing


class RoutingTrace(NamedTuple):
  """Per (token, layer) routing of a batch, tokens in row-major (sequence, position) order."""

  ids_NLK: jax.Array  # [N, L, K] int32 expert ids, descending gate weight
  gates_NLK: jax.Array  # [N, L, K] float32 renormalised gate weights (sum 1 over K)
  logits_NLE: jax.Array  # [N, L, E] float32 router logits
  gate_inputs_NLD: jax.Array  # [N, L, D] float32 the normed hidden state fed to each router
  tokens_N: jax.Array  # [N] int32 the input token
  seq_start_N: jax.Array  # [N] bool, True at position 0 of each sequence


@nnx.jit
def _route(model: MoELM, tokens_BS: jax.Array):
  _, aux = model(tokens_BS, dropless=True)
  layers = aux["layers"]
  return (jnp.stack([a["routing"].experts_TK for a in layers], axis=1),
          jnp.stack([a["routing"].weights_TK for a in layers], axis=1),
          jnp.stack([a["routing"].logits_TE for a in layers], axis=1),
          jnp.stack([a["gate_input_TD"] for a in layers], axis=1))


def record_routing(model: MoELM, tokens_BS: Any) -> RoutingTrace:
  """Runs the model (deterministic, dropless) and records every layer's routing per token.

  Dropless, as at inference: no token loses an expert to a capacity limit, so a
  sequence's trace does not depend on the other sequences of the batch.

  Args:
    model: an `MoELM`.
    tokens_BS: int tokens [B, S] (or [S] for one sequence).

  Returns:
    `RoutingTrace` with N = B*S. ``ids_NLK`` and ``gates_NLK`` are what
    `jaxsys.sims.expert_offload` consumes (with ``seq_start_N``).
  """
  tokens = jnp.asarray(tokens_BS)
  if tokens.ndim == 1:
    tokens = tokens.reshape(1, -1)
  if tokens.ndim != 2 or not jnp.issubdtype(tokens.dtype, jnp.integer):
    raise ValueError(
        f"tokens_BS: expected integer [batch, seq] or [seq], given {tokens.dtype}"
        f" {jnp.shape(tokens_BS)}")
  tokens = tokens.astype(jnp.int32)
  ids, gates, logits, gate_inputs = _route(model, tokens)
  B, S = tokens.shape
  seq_start = jnp.broadcast_to((jnp.arange(S) == 0).reshape(1, S), (B, S)).reshape(-1)
  return RoutingTrace(ids, gates, logits, gate_inputs, tokens.reshape(-1), seq_start)
