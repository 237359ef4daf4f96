"""Sparse decode attention: kernel and reference against a plain-numpy reference."""

import math

import hypothesis
import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsys._src import backend, testing
from jaxsys.kernels.sparse_decode_attention import (
    BlockConfig,
    dense_decode_attention,
    sparse_decode_attention,
    sparse_decode_attention_reference,
)


def numpy_sparse_attention(q, k, v, idx, lengths, num_sinks, window, scale=None):
  """Loops over (sequence, query head): the token set written out, one softmax."""
  B, H, D = q.shape
  K = k.shape[1]
  G = H // K
  scale = 1 / math.sqrt(D) if scale is None else scale
  out = np.zeros((B, H, D), np.float64)
  for b in range(B):
    n = int(lengths[b])
    for h in range(H):
      kh = h // G
      toks = [t for t in range(num_sinks) if t < n]
      toks += [t for t in range(n - window, n) if t >= num_sinks and t >= 0]
      toks += [int(t) for t in idx[b, kh] if num_sinks <= t < n - window]
      if not toks:
        continue
      s = np.array([q[b, h] @ k[b, kh, t] for t in toks], np.float64) * scale
      p = np.exp(s - s.max())
      p /= p.sum()
      out[b, h] = sum(pi * v[b, kh, t] for pi, t in zip(p, toks))
  return out


def random_case(rng, B=2, H=6, K=2, T=96, D=16, S=20, lengths=None):
  q = rng.standard_normal((B, H, D)).astype(np.float32)
  k = rng.standard_normal((B, K, T, D)).astype(np.float32)
  v = rng.standard_normal((B, K, T, D)).astype(np.float32)
  # distinct positions per (b, k), some padding with -1
  idx = np.stack([np.stack([rng.permutation(T)[:S] for _ in range(K)]) for _ in range(B)])
  idx = np.where(rng.random(idx.shape) < 0.1, -1, idx).astype(np.int32)
  if lengths is None:
    lengths = rng.integers(1, T + 1, size=B)
  return q, k, v, idx, np.asarray(lengths, np.int32)


class SparseDecodeAttentionTest:
  """Kernel tests, compiled on a GPU; `InterpretTest` runs them on CPU."""

  INTERPRET = False
  CONFIG = BlockConfig(block_s=16, num_splits=3)

  def setup_method(self):
    if not self.INTERPRET and not backend.has_gpu():
      pytest.skip("compiled Pallas GPU kernel needs a GPU")

  def run(self, q, k, v, idx, lengths, **kw):
    return sparse_decode_attention(
        jnp.asarray(q), jnp.asarray(k), jnp.asarray(v), jnp.asarray(idx),
        jnp.asarray(lengths), implementation="pallas", interpret=self.INTERPRET or None,
        block_config=kw.pop("block_config", self.CONFIG), **kw)

  def test_golden_tiny_case(self):
    # One sequence, one head, head dim 1, 4 tokens, scale 1.
    # keys   k = [0, 1, 2, 3]   values v = [10, 20, 30, 40]   query q = 1
    # length 4, 1 sink (t=0), window 1 (t=3), selected [2, 0, -1]:
    #   t=0 is a sink (its repeat in the list is ignored), -1 is padding,
    #   so the tokens are {0, 3, 2} with scores {0, 3, 2}.
    # softmax: e^0, e^3, e^2 over Z = 1 + e^3 + e^2 = 28.4746...
    # o = (10 + 40 e^3 + 30 e^2) / Z = (10 + 803.4215 + 221.6717) / 28.4746 = 36.3514...
    q = np.ones((1, 1, 1), np.float32)
    k = np.arange(4, dtype=np.float32).reshape(1, 1, 4, 1)
    v = (10 * np.arange(1, 5, dtype=np.float32)).reshape(1, 1, 4, 1)
    idx = np.array([[[2, 0, -1]]], np.int32)
    expected = (10 + 40 * math.e**3 + 30 * math.e**2) / (1 + math.e**3 + math.e**2)
    out = self.run(q, k, v, idx, np.array([4]), num_sinks=1, window=1, scale=1.0)
    testing.assert_allclose(out[0, 0, 0], expected, n=3)
    assert abs(expected - 36.3514) < 1e-3

  def test_matches_numpy(self):
    rng = np.random.default_rng(1)
    q, k, v, idx, lengths = random_case(rng, lengths=[70, 96])
    out = self.run(q, k, v, idx, lengths, num_sinks=4, window=8)
    ref = numpy_sparse_attention(q, k, v, idx, lengths, 4, 8)
    testing.assert_allclose(out, ref, dtype=jnp.float32, n=96)

  def test_nothing_valid_gives_zeros_and_no_nans(self):
    rng = np.random.default_rng(2)
    q, k, v, idx, _ = random_case(rng, B=2)
    out = self.run(q, k, v, np.full_like(idx, -1), np.array([0, 5], np.int32),
                   num_sinks=0, window=0)
    assert np.all(np.asarray(out) == 0)

  @pytest.mark.parametrize("use_dot", [True, False])
  def test_both_inner_products_and_empty_list(self, use_dot):
    rng = np.random.default_rng(8)
    q, k, v, idx, lengths = random_case(rng, T=64, S=0)
    out = self.run(q, k, v, idx, lengths, num_sinks=0, window=5,
                   block_config=BlockConfig(block_s=16, num_splits=2, use_dot=use_dot))
    ref = numpy_sparse_attention(q, k, v, idx, lengths, 0, 5)
    testing.assert_allclose(out, ref, dtype=jnp.float32, n=64)

  def test_bfloat16_cache(self):
    rng = np.random.default_rng(9)
    q, k, v, idx, lengths = random_case(rng, T=64, S=24)
    q, k, v = (x.astype(jnp.bfloat16) for x in (q, k, v))
    out = self.run(q, k, v, idx, lengths, num_sinks=4, window=8)
    ref = numpy_sparse_attention(*(np.asarray(x, np.float32) for x in (q, k, v)), idx, lengths, 4, 8)
    testing.assert_allclose(out, ref, dtype=jnp.bfloat16, n=64)

  def test_splits_do_not_change_the_answer(self):
    rng = np.random.default_rng(3)
    q, k, v, idx, lengths = random_case(rng, T=128, S=40)
    outs = [np.asarray(self.run(q, k, v, idx, lengths, num_sinks=16, window=16,
                                block_config=BlockConfig(block_s=16, num_splits=n)))
            for n in (1, 2, 7)]
    testing.assert_allclose(outs[1], outs[0], n=128)
    testing.assert_allclose(outs[2], outs[0], n=128)


class TestInterpret(SparseDecodeAttentionTest):
  INTERPRET = True


class TestCompiled(SparseDecodeAttentionTest):
  INTERPRET = False


# ---- the reference, dispatch and input checks (no kernel needed) ----

@hypothesis.settings(deadline=None, max_examples=25)
@hypothesis.given(
    seed=st.integers(0, 2**31 - 1),
    K=st.sampled_from([1, 2]),
    G=st.sampled_from([1, 3]),
    T=st.integers(1, 40),
    S=st.integers(0, 12),
    num_sinks=st.integers(0, 6),
    window=st.integers(0, 10),
)
def test_reference_matches_numpy_property(seed, K, G, T, S, num_sinks, window):
  rng = np.random.default_rng(seed)
  B, D = 2, 4
  q = rng.standard_normal((B, K * G, D)).astype(np.float32)
  k = rng.standard_normal((B, K, T, D)).astype(np.float32)
  v = rng.standard_normal((B, K, T, D)).astype(np.float32)
  S = min(S, T + 3)  # distinct positions in [-3, T): some padding, some out of range
  idx = np.stack([np.stack([rng.permutation(T + 3)[:S] - 3 for _ in range(K)])
                  for _ in range(B)]).astype(np.int32).reshape(B, K, S)
  lengths = rng.integers(0, T + 1, size=B).astype(np.int32)
  out = sparse_decode_attention_reference(
      jnp.asarray(q), jnp.asarray(k), jnp.asarray(v), jnp.asarray(idx), jnp.asarray(lengths),
      num_sinks=num_sinks, window=window)
  ref = numpy_sparse_attention(q, k, v, idx, lengths, num_sinks, window)
  testing.assert_allclose(out, ref, dtype=jnp.float32, n=max(T, 1))


def test_selecting_everything_equals_dense_attention():
  rng = np.random.default_rng(4)
  B, H, K, T, D = 2, 6, 2, 64, 16
  q, k, v, _, _ = random_case(rng, B, H, K, T, D)
  lengths = np.array([40, 64], np.int32)
  idx = np.broadcast_to(np.arange(T, dtype=np.int32), (B, K, T))
  sparse = sparse_decode_attention(jnp.asarray(q), jnp.asarray(k), jnp.asarray(v),
                                   jnp.asarray(idx), jnp.asarray(lengths), num_sinks=4, window=8)
  dense = dense_decode_attention(jnp.asarray(q), jnp.asarray(k), jnp.asarray(v), jnp.asarray(lengths))
  testing.assert_allclose(sparse, dense, n=T)


def test_default_implementation_compiles_once_and_matches_reference():
  rng = np.random.default_rng(5)
  q, k, v, idx, lengths = map(jnp.asarray, random_case(rng))
  out = testing.assert_compiles_once(
      lambda *a: sparse_decode_attention(*a, num_sinks=4, window=8), q, k, v, idx, lengths)
  ref = sparse_decode_attention_reference(q, k, v, idx, lengths, num_sinks=4, window=8)
  if backend.has_gpu():  # the default there is the kernel
    testing.assert_allclose(out, ref, n=96)
  else:  # the default on CPU is the reference itself
    np.testing.assert_array_equal(out, ref)


@pytest.mark.skipif(backend.has_gpu(), reason="checks the CPU refusal")
def test_named_pallas_without_gpu_or_interpret_raises():
  rng = np.random.default_rng(6)
  args = map(jnp.asarray, random_case(rng))
  with pytest.raises(backend.ImplementationError, match="pass interpret=True"):
    sparse_decode_attention(*args, num_sinks=4, window=8, implementation="pallas")


@pytest.mark.parametrize(
    "change, error, match",
    [
        (dict(q=np.zeros((2, 5, 16), np.float32)), ValueError, "query heads \\(5\\) must be a multiple"),
        (dict(k=np.zeros((2, 2, 96, 8), np.float32)), ValueError, "k_BKTD: expected shape"),
        (dict(v=np.zeros((2, 2, 90, 16), np.float32)), ValueError, "v_BKTD: expected the shape of k_BKTD"),
        (dict(idx=np.zeros((2, 3, 4), np.int32)), ValueError, "indices_BKS: expected shape"),
        (dict(idx=np.zeros((2, 2, 4), np.float32)), TypeError, "indices_BKS: expected an integer dtype"),
        (dict(lengths=np.zeros((3,), np.int32)), ValueError, "lengths_B: expected integer shape \\(2,\\)"),
        (dict(q=np.zeros((2, 6, 16), np.int32)), TypeError, "q_BHD: expected a floating dtype"),
        (dict(num_sinks=-1), ValueError, "num_sinks: expected an int >= 0, given -1"),
    ],
)
def test_bad_inputs_are_named(change, error, match):
  rng = np.random.default_rng(7)
  q, k, v, idx, lengths = random_case(rng)
  args = dict(q=q, k=k, v=v, idx=idx, lengths=lengths, num_sinks=4, window=8)
  args.update(change)
  with pytest.raises(error, match=match):
    sparse_decode_attention(
        jnp.asarray(args["q"]), jnp.asarray(args["k"]), jnp.asarray(args["v"]),
        jnp.asarray(args["idx"]), jnp.asarray(args["lengths"]),
        num_sinks=args["num_sinks"], window=args["window"])


def test_block_config_validates():
  with pytest.raises(ValueError, match="block_s must be a power of two, given 48"):
    BlockConfig(block_s=48)
  with pytest.raises(ValueError, match="block_s must be >= 16 with use_dot=True, given 8"):
    BlockConfig(block_s=8)
  assert BlockConfig().splits_for(programs=2, num_blocks=10) == 10
  assert BlockConfig(num_splits=4).splits_for(programs=2, num_blocks=3) == 3
