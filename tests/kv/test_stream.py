"""Bounded streaming KV cache: key re-rotation, compaction, and SmolLM2 streams.

The references are independent of `jaxsys.kv.stream`:

* re-rotation against `smollm2.apply_rope` at the summed position;
* compaction against a plain-numpy gather and float64 rotation;
* streams against `reference_nll`, a *parallel* forward pass (layer by layer
  over all tokens, like a prefill) in which query t attends, per layer and KV
  head, an explicit list of stream tokens, the token in entry j rotated from
  its raw (pre-RoPE) key at position j. No cache, no compaction, no re-rotation,
  no decode step: if the sequential stream is right, the two agree to float32
  rounding. For StreamingLLM the lists come from the paper's definition (4 sinks
  + the most recent tokens); for Inf-MLLM, whose choice of tokens is tested in
  ``test_inf_mllm.py``, from the stream's own trace (the test then checks the
  per-head compaction and position re-assignment, not the choice).

Every decode step reads all SmolLM2 weights (about 80 ms on a busy 2-core CPU),
so the streams are short: a 16-slot buffer over 48 tokens.
"""

import functools

import hypothesis
import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsys._src import testing
from jaxsys.kv import base, inf_mllm, stream, streaming_llm
from jaxsys.models import smollm2

# Logits end a chain of 30 blocks, each with sums of up to F = 1536 terms.
LOGITS_N = 30 * 1536
ROPE_BASE = 10000.0
TEXT = (
    "Once upon a time, in a small village by the sea, there lived an old fisherman"
    " named Tom. Every morning he rowed his little boat out past the rocks, cast his"
    " nets, and waited for the tide to turn. One day he caught a golden fish that"
    " could speak, and it promised him three wishes if he would let it go."
)
CAPACITY, SINKS, T_STREAM, PROMPT = 16, 4, 48, 8


@pytest.fixture(scope="module")
def model():
  return smollm2.load_smollm2()


@pytest.fixture(scope="module")
def tokens_1T(model):
  ids = model[2].encode(TEXT)
  assert len(ids) >= T_STREAM
  return jnp.asarray([ids[:T_STREAM]], jnp.int32)


# ----------------------------------------------------------------------------
# Re-rotation
# ----------------------------------------------------------------------------


def test_rerotate_golden_pair():
  # D = 2: one pair at frequency base**0 = 1. (1, 0) turned by 2 rad is
  # (cos 2, sin 2) = (-0.41615, 0.90930); (0, 1) turned by -1 rad is
  # (-sin -1, cos -1) = (0.84147, 0.54030).
  k = jnp.asarray([[[[1.0, 0.0], [0.0, 1.0]]]])
  out = stream.rerotate_keys(k, jnp.asarray([[[2, -1]]], jnp.int32), ROPE_BASE)
  want = np.asarray([[[[np.cos(2.0), np.sin(2.0)], [-np.sin(-1.0), np.cos(-1.0)]]]])
  testing.assert_allclose(out, want)


@hypothesis.settings(max_examples=12, deadline=None)
@hypothesis.given(seed=st.integers(0, 2**31 - 1), span=st.sampled_from([1, 16, 1024, 8192]))
def test_rerotate_composes_with_apply_rope(seed, span):
  rng = np.random.default_rng(seed)
  B, K, T, D = 2, 3, 5, 64
  k_BKTD = rng.standard_normal((B, K, T, D)).astype(np.float32)
  p_BKT = rng.integers(0, span, (B, K, T))
  d_BKT = rng.integers(-span, span, (B, K, T))
  if seed % 4 == 0:
    d_BKT[..., 0] = 0  # a zero offset leaves a key exact

  def rope(x_BKTD, pos_BKT):  # apply_rope takes (B, T, heads, D); one "batch" per (b, k)
    out = smollm2.apply_rope(
        jnp.asarray(x_BKTD).reshape(B * K, T, 1, D),
        jnp.asarray(pos_BKT, jnp.int32).reshape(B * K, T), ROPE_BASE)
    return out.reshape(B, K, T, D)

  got = stream.rerotate_keys(rope(k_BKTD, p_BKT), jnp.asarray(d_BKT, jnp.int32), ROPE_BASE)
  want = rope(k_BKTD, p_BKT + d_BKT)
  # float32 angles p * f are rounded to ~|p| * 2**-24 rad (three roundings here):
  # the tolerance grows with the largest position involved.
  largest = int(max(np.abs(p_BKT).max(), np.abs(d_BKT).max(), np.abs(p_BKT + d_BKT).max(), 1))
  testing.assert_allclose(got, want, dtype=np.float32, scale=largest)
  if seed % 4 == 0:
    np.testing.assert_array_equal(got[..., 0, :], rope(k_BKTD, p_BKT)[..., 0, :])


def test_rerotate_rejects_bad_input():
  k = jnp.zeros((1, 1, 2, 4))
  with pytest.raises(ValueError, match=r"delta_BKT: expected integer offsets of shape \(1, 1, 2\)"):
    stream.rerotate_keys(k, jnp.zeros((1, 1, 2)), ROPE_BASE)
  with pytest.raises(ValueError, match="delta_BKT"):
    stream.rerotate_keys(k, jnp.zeros((1, 2), jnp.int32), ROPE_BASE)
  with pytest.raises(ValueError, match="k_BKTD: expected a 4-D .* D even"):
    stream.rerotate_keys(jnp.zeros((1, 1, 2, 3)), jnp.zeros((1, 1, 2), jnp.int32), ROPE_BASE)


# ----------------------------------------------------------------------------
# Compaction
# ----------------------------------------------------------------------------


def np_rotate(x_TD, delta_T):
  """float64 interleaved RoPE rotation of each row by its own offset."""
  D = x_TD.shape[-1]
  ang = delta_T[:, None] * np.power(ROPE_BASE, -np.arange(0, D, 2) / D)[None, :]
  x0, x1 = x_TD[:, 0::2].astype(np.float64), x_TD[:, 1::2].astype(np.float64)
  out = np.empty(x_TD.shape, np.float64)
  out[:, 0::2] = x0 * np.cos(ang) - x1 * np.sin(ang)
  out[:, 1::2] = x0 * np.sin(ang) + x1 * np.cos(ang)
  return out


def np_compact(k, v, keep, pos, q):
  """Plain-numpy compaction, one (b, kv head) at a time."""
  B, K, T, D = k.shape
  G = q.shape[1] // K
  k_out, v_out, q_out = np.zeros(k.shape), np.zeros(v.shape), np.zeros(q.shape)
  n_out, src_out = np.zeros((B, K), np.int64), np.full((B, K, T), -1)
  for b in range(B):
    for h in range(K):
      kept = np.flatnonzero(keep[b, h])
      n = len(kept)
      delta = np.arange(n) - pos[b, h, kept]
      n_out[b, h], src_out[b, h, :n] = n, kept
      k_out[b, h, :n] = np_rotate(k[b, h, kept], delta)
      v_out[b, h, :n] = v[b, h, kept]
      for g in range(G):
        q_out[b, h * G + g, :n] = np_rotate(q[b, h * G + g, kept], delta)
  return k_out, v_out, n_out, src_out, q_out


@hypothesis.settings(max_examples=15, deadline=None)
@hypothesis.given(seed=st.integers(0, 2**31 - 1), p_keep=st.sampled_from([0.0, 0.3, 0.7, 1.0]),
                  slot_positions=st.booleans())
def test_compact_matches_numpy_gather(seed, p_keep, slot_positions):
  rng = np.random.default_rng(seed)
  B, K, G, T, D, Dv = 2, 3, 2, 9, 8, 6
  k = rng.standard_normal((B, K, T, D)).astype(np.float32)
  v = rng.standard_normal((B, K, T, Dv)).astype(np.float32)
  q = rng.standard_normal((B, K * G, T, D)).astype(np.float32)
  keep = rng.random((B, K, T)) < p_keep  # ragged: a different count per (b, k)
  keep[0, 0] = False  # an empty head
  keep[1, 2] = True  # a full head
  pos = (np.broadcast_to(np.arange(T), (B, K, T)) if slot_positions
         else rng.integers(0, 40, (B, K, T)))
  got = stream.compact(
      jnp.asarray(k), jnp.asarray(v), jnp.asarray(keep), rope_base=ROPE_BASE,
      positions_BKT=None if slot_positions else jnp.asarray(pos, jnp.int32), q_BHTD=jnp.asarray(q))
  k_w, v_w, n_w, src_w, q_w = np_compact(k, v, keep, pos, q)
  np.testing.assert_array_equal(got.lengths_BK, n_w)
  np.testing.assert_array_equal(got.src_BKT, src_w)
  np.testing.assert_array_equal(got.v_BKTD, v_w)  # a pure gather: exact
  largest = max(int(np.abs(pos).max()), T, 1)  # angle rounding grows with the offset
  testing.assert_allclose(got.k_BKTD, k_w, dtype=np.float32, scale=largest)
  testing.assert_allclose(got.q_BHTD, q_w, dtype=np.float32, scale=largest)


def test_compact_keeps_unmoved_keys_exact_and_rejects_bad_keep():
  k = jnp.asarray(np.random.default_rng(0).standard_normal((1, 2, 4, 4)), jnp.float32)
  keep = jnp.asarray([[[True, True, False, True], [True, True, True, True]]])
  out = stream.compact(k, k, keep, rope_base=ROPE_BASE)
  # slots 0, 1 of head 0 and every slot of head 1 stay put: delta 0, bit-exact
  np.testing.assert_array_equal(out.k_BKTD[0, 0, :2], k[0, 0, :2])
  np.testing.assert_array_equal(out.k_BKTD[0, 1], k[0, 1])
  np.testing.assert_array_equal(out.k_BKTD[0, 0, 3], np.zeros(4))  # unused slot zeroed
  assert out.q_BHTD is None
  with pytest.raises(ValueError, match=r"keep_BKT: expected a bool array of shape \(1, 2, 4\)"):
    stream.compact(k, k, keep.astype(jnp.int32), rope_base=ROPE_BASE)
  with pytest.raises(ValueError, match="q_BHTD: expected shape"):
    stream.compact(k, k, keep, rope_base=ROPE_BASE, q_BHTD=jnp.zeros((1, 3, 4, 4)))


def test_keep_mask_unions_sinks_window_and_selection():
  # length 8, 2 sinks, window 3: slots 0, 1 and 5, 6, 7; selection adds 3 (and
  # ignores -1 and 9, which is past the length)
  idx = jnp.asarray([[[3, -1, 9]]], jnp.int32)
  got = stream.keep_mask(jnp.asarray([8], jnp.int32), idx, 10, num_sinks=2, window=3)
  np.testing.assert_array_equal(got[0, 0], [1, 1, 0, 1, 0, 1, 1, 1, 0, 0])


# ----------------------------------------------------------------------------
# Streams through SmolLM2
# ----------------------------------------------------------------------------


@functools.partial(jax.jit, static_argnames=("config",))
def reference_nll(params, config, tokens_T, attend_TLKC, qpos_T):
  """NLL of tokens 1..T-1 when query t attends the tokens listed in `attend_TLKC[t]`.

  Layer l, KV head k: query t attends the stream tokens ``attend_TLKC[t, l, k, j]``
  (-1: nothing), the one in entry j with its key rotated from the raw projection
  at RoPE position j; the query itself sits at position ``qpos_T[t]``. Every
  token's keys and values are its own projections at each layer, computed once
  in a causal pass, exactly what a cache that never recomputes holds.
  """
  T = tokens_T.shape[0]
  K, H, D = config.n_kv_heads, config.n_heads, config.head_dim
  G = H // K
  C = attend_TLKC.shape[-1]
  x_TM = jnp.take(params["embed_VM"], tokens_T, axis=0)

  def layer(x_TM, xs):
    lp, att_TKC = xs
    h_TM = smollm2.rms_norm(x_TM, lp["attn_norm_LM"], config.rms_eps)
    q_THD = jnp.einsum("tm,mhd->thd", h_TM, lp["wq_LMHD"])
    k_TKD = jnp.einsum("tm,mkd->tkd", h_TM, lp["wk_LMKD"])
    v_TKD = jnp.einsum("tm,mkd->tkd", h_TM, lp["wv_LMKD"])
    q_THD = smollm2.apply_rope(q_THD[None], qpos_T[None, :], config.rope_base)[0]
    safe_TKC = jnp.maximum(att_TKC, 0)
    kk_TKC = jnp.broadcast_to(jnp.arange(K)[None, :, None], safe_TKC.shape)
    k_TKCD, v_TKCD = k_TKD[safe_TKC, kk_TKC], v_TKD[safe_TKC, kk_TKC]
    pos = jnp.broadcast_to(jnp.arange(C, dtype=jnp.int32)[None, :], (T * K, C))
    k_TKCD = smollm2.apply_rope(
        k_TKCD.reshape(T * K, C, 1, D), pos, config.rope_base).reshape(T, K, C, D)
    s_TKGC = jnp.einsum("tkgd,tkcd->tkgc", q_THD.reshape(T, K, G, D), k_TKCD) / np.float32(
        np.sqrt(D))
    s_TKGC = jnp.where((att_TKC >= 0)[:, :, None, :], s_TKGC, -jnp.inf)
    o_THD = jnp.einsum("tkgc,tkcd->tkgd", jax.nn.softmax(s_TKGC, axis=-1), v_TKCD).reshape(T, H, D)
    x_TM = x_TM + jnp.einsum("thd,hdm->tm", o_THD, lp["wo_LHDM"])
    h_TM = smollm2.rms_norm(x_TM, lp["mlp_norm_LM"], config.rms_eps)
    gate_TF = jnp.einsum("tm,mf->tf", h_TM, lp["w_gate_LMF"])
    up_TF = jnp.einsum("tm,mf->tf", h_TM, lp["w_up_LMF"])
    return x_TM + jnp.einsum("tf,fm->tm", jax.nn.silu(gate_TF) * up_TF, lp["w_down_LFM"]), None

  x_TM, _ = jax.lax.scan(layer, x_TM, (params["layers"], jnp.swapaxes(attend_TLKC, 0, 1)))
  h_TM = smollm2.rms_norm(x_TM, params["final_norm_M"], config.rms_eps)
  logp_TV = jax.nn.log_softmax(jnp.einsum("tm,vm->tv", h_TM, params["embed_VM"]), axis=-1)
  return -jnp.take_along_axis(logp_TV[:-1], tokens_T[1:, None], axis=1)[:, 0]


def streaming_llm_lists(T, L, K, capacity, sinks):
  """StreamingLLM by definition: query t attends tokens 0..t while they fit, then
  the sinks and the most recent ``capacity - sinks`` tokens (itself included)."""
  attend = np.full((T, L, K, capacity), -1, np.int32)
  for t in range(T):
    toks = (list(range(t + 1)) if t < capacity
            else list(range(sinks)) + list(range(t - (capacity - sinks) + 1, t + 1)))
    attend[t, :, :, :len(toks)] = toks
  qpos = np.minimum(np.arange(T), capacity - 1).astype(np.int32)
  return attend, qpos


def lists_from_trace(trace, T, prompt_len, capacity, b=0):
  """Per-query attended lists of a stream: the prompt causally, then the trace."""
  L, K = trace.origin_SLBKC.shape[1], trace.origin_SLBKC.shape[3]
  attend = np.full((T, L, K, capacity), -1, np.int32)
  qpos = np.zeros(T, np.int32)
  for t in range(prompt_len):
    attend[t, :, :, :t + 1], qpos[t] = np.arange(t + 1), t
  origin = np.asarray(trace.origin_SLBKC)[:, :, b]
  lengths = np.asarray(trace.lengths_SB)[:, b]
  for s in range(T - 1 - prompt_len):
    attend[prompt_len + s], qpos[prompt_len + s] = origin[s], lengths[s] - 1
  return attend, qpos


def test_stream_without_eviction_equals_score_continuation(model, tokens_1T):
  config, params, _ = model
  toks = jnp.concatenate([tokens_1T[:, :16], tokens_1T[:, 16:32]], axis=0)  # B = 2, T = 16
  policy = streaming_llm.streaming_llm(8, num_sinks=4)

  def run(toks):
    return stream.stream_nll(params, config, toks, policy=policy, capacity=32, prompt_len=4)

  got = testing.assert_compiles_once(run, toks)  # one compilation for the whole stream
  want = smollm2.score_continuation(params, config, toks, prompt_len=4)
  assert got.shape == (2, 12)
  testing.assert_allclose(got, want, n=LOGITS_N)


def test_streaming_llm_stream_matches_definition(model, tokens_1T):
  config, params, _ = model
  policy = streaming_llm.streaming_llm(CAPACITY, num_sinks=SINKS)
  nll, trace = stream.stream_nll(params, config, tokens_1T, policy=policy, capacity=CAPACITY,
                                 prompt_len=PROMPT, return_trace=True)
  attend, qpos = streaming_llm_lists(T_STREAM, config.n_layers, config.n_kv_heads, CAPACITY, SINKS)
  # the buffer: fills to the capacity, then evicts one token per step, never more
  lengths = np.asarray(trace.lengths_SB)[:, 0]
  np.testing.assert_array_equal(lengths, np.minimum(np.arange(PROMPT + 1, T_STREAM), CAPACITY))
  np.testing.assert_array_equal(np.asarray(trace.origin_SLBKC)[:, :, 0], attend[PROMPT:-1])
  want = reference_nll(params, config, tokens_1T[0], jnp.asarray(attend), jnp.asarray(qpos))
  # positions run past the buffer size: stream token 47 sits at position 15
  assert T_STREAM - 1 > CAPACITY and qpos[-1] == CAPACITY - 1
  testing.assert_allclose(nll[0], want[PROMPT - 1:], n=LOGITS_N)


def test_inf_mllm_stream_attends_kept_tokens_at_cache_positions(model, tokens_1T):
  config, params, _ = model
  policy = inf_mllm.inf_mllm(12, num_sinks=2, recent=6, chunk=4, retrieval_window=4)
  assert policy.budget == CAPACITY
  nll, trace = stream.stream_nll(params, config, tokens_1T, policy=policy, capacity=CAPACITY,
                                 prompt_len=PROMPT, return_trace=True)
  origin = np.asarray(trace.origin_SLBKC)[:, :, 0]  # (S, L, K, C)
  lengths = np.asarray(trace.lengths_SB)[:, 0]
  # evicts every `chunk` tokens back to `budget` = 12, then appends: 13 .. 16 attended
  assert lengths.max() == CAPACITY
  np.testing.assert_array_equal(lengths[CAPACITY - PROMPT:], 13 + np.arange(len(lengths) - 8) % 4)
  for s, n in enumerate(lengths):
    i = PROMPT + s
    assert (origin[s, ..., n - 1] == i).all() and (origin[s, ..., n:] == -1).all()
    assert (np.diff(origin[s, ..., :n], axis=-1) > 0).all()  # original order kept
    assert (origin[s, ..., :2] == np.arange(2)).all()  # the sinks
    assert (origin[s, ..., n - 6:n] == np.arange(i - 5, i + 1)).all()  # the recent window
  # (layer, KV head)s keep different relevant tokens: compaction is per head
  assert any(len({tuple(r) for r in origin[s].reshape(-1, CAPACITY)}) > 1
             for s in range(len(lengths)))
  attend, qpos = lists_from_trace(trace, T_STREAM, PROMPT, CAPACITY)
  want = reference_nll(params, config, tokens_1T[0], jnp.asarray(attend), jnp.asarray(qpos))
  testing.assert_allclose(nll[0], want[PROMPT - 1:], n=LOGITS_N)


def test_stream_rejects_bad_settings(model, tokens_1T):
  config, params, _ = model
  run = functools.partial(stream.stream_nll, params, config, tokens_1T)
  with pytest.raises(ValueError,
                     match=r"capacity \(15\) must be >= the streaming_llm policy's budget \(16\)"):
    run(policy=streaming_llm.streaming_llm(16), capacity=15, prompt_len=4)
  with pytest.raises(ValueError, match=r"capacity \(8\) must exceed the most tokens the oracle"):
    run(policy=base.oracle_topk(8, num_sinks=2), capacity=8, prompt_len=4)
  with pytest.raises(ValueError, match=r"prompt_len \(20\) must be <= capacity \(16\)"):
    run(policy=streaming_llm.streaming_llm(16), capacity=16, prompt_len=20)
  with pytest.raises(ValueError, match=r"prompt_len: expected in \[1, 48\)"):
    run(policy=streaming_llm.streaming_llm(16), capacity=16, prompt_len=48)
  with pytest.raises(ValueError, match=r"capacity \(9000\) must be <= the model's context"):
    run(policy=streaming_llm.streaming_llm(16), capacity=9000, prompt_len=4)
  with pytest.raises(ValueError, match=r"retrieval_window \(8\) must be <= recent \(6\)"):
    run(policy=inf_mllm.inf_mllm(12, recent=6, chunk=4, retrieval_window=8), capacity=16,
        prompt_len=4)
  with pytest.raises(TypeError, match="policy: expected a jaxsys.kv.KVPolicy"):
    run(policy="streaming_llm", capacity=16, prompt_len=4)
