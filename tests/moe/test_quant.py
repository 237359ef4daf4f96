"""Group quantisation (packing, error bound, bytes) and HOBBIT's mixed-precision expert layer."""

import hypothesis
import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsys._src import testing
from jaxsys.moe import dispatch, quant, routing
from jaxsys.moe.quant import ExpertWeights, QuantizedExperts
from jaxsys.moe.routing import HIGH, LOW, SKIP


def np_unpack(packed, bits, signed):
  """Independent numpy unpacking: row pack*r + i is bits [i*bits, (i+1)*bits) of byte r."""
  packed = np.asarray(packed).astype(np.int64)
  pack = 8 // bits
  *lead, P, F = packed.shape
  codes = np.zeros((*lead, P * pack, F), np.int64)
  for i in range(pack):
    field = (packed >> (i * bits)) & ((1 << bits) - 1)
    if signed:
      field = np.where(field >= 1 << (bits - 1), field - (1 << bits), field)
    codes[..., i::pack, :] = field
  return codes


def np_dequant(q):
  codes = np_unpack(q.packed, q.bits, q.mins is None).astype(np.float64)
  w = codes * np.repeat(np.asarray(q.scales, np.float64), q.group, axis=-2)
  if q.mins is not None:
    w = w + np.repeat(np.asarray(q.mins, np.float64), q.group, axis=-2)
  return w


def weights(seed, shape=(3, 64, 16)):
  rng = np.random.default_rng(seed)
  w = rng.standard_normal(shape)
  w[..., 5, :] *= 8.0  # an outlier row, so groups differ in scale
  return jnp.asarray(w, jnp.float32)


# ------------------------------------------------------------------------------ packing


@pytest.mark.parametrize("bits", [8, 4, 2])
@pytest.mark.parametrize("signed", [True, False])
def test_pack_round_trip_every_code(bits, signed):
  lo, hi = (-(1 << (bits - 1)), 1 << (bits - 1)) if signed else (0, 1 << bits)
  values = np.arange(lo, hi)  # includes the negative extreme -2**(bits-1)
  rng = np.random.default_rng(bits)
  # Every code at every position within a byte: 64 rows of each of 3 shuffles.
  codes = np.stack([rng.permutation(np.resize(values, 64)) for _ in range(6)], axis=-1)
  codes = codes.reshape(2, 64, 3)
  packed = quant.pack_codes(jnp.asarray(codes, jnp.int32), bits)
  assert packed.shape == (2, 64 * bits // 8, 3) and packed.dtype == jnp.uint8
  back = quant.unpack_codes(packed, bits, signed=signed)
  np.testing.assert_array_equal(np.asarray(back), codes)
  np.testing.assert_array_equal(np_unpack(packed, bits, signed), codes)


def test_packed_byte_layout_by_hand():
  # int4 rows [-8, 7, 1, -1]: nibbles 0x8, 0x7, 0x1, 0xF, low nibble = even row:
  # bytes 0x78 = 120 and 0xF1 = 241. int2 rows [-2, 1, 0, -1]: fields 2, 1, 0, 3 at
  # bits 0, 2, 4, 6: 2 + 4 + 0 + 192 = 198.
  c4 = jnp.asarray([[-8], [7], [1], [-1]], jnp.int32)
  assert quant.pack_codes(c4, 4).ravel().tolist() == [120, 241]
  assert quant.pack_codes(jnp.asarray([[-2], [1], [0], [-1]], jnp.int32), 2).ravel().tolist() == [198]
  assert quant.pack_codes(jnp.asarray([[-128], [127]], jnp.int32), 8).ravel().tolist() == [128, 127]


@hypothesis.settings(deadline=None, max_examples=10)
@hypothesis.given(seed=st.integers(0, 10**6), bits=st.sampled_from([8, 4, 2]),
                  rows=st.sampled_from([0, 12]))
def test_pack_round_trip_property(seed, bits, rows):
  rng = np.random.default_rng(seed)  # rows = 0: the empty case
  codes = rng.integers(-(1 << (bits - 1)), 1 << (bits - 1), size=(rows, 3))
  packed = quant.pack_codes(jnp.asarray(codes, jnp.int32), bits)
  np.testing.assert_array_equal(np.asarray(quant.unpack_codes(packed, bits)), codes)


# ----------------------------------------------------------------- quantisation error


@pytest.mark.parametrize("bits", [8, 4, 2])
@pytest.mark.parametrize("symmetric", [True, False])
@pytest.mark.parametrize("scale_dtype", [jnp.float16, jnp.float32])
def test_error_at_most_half_a_step(bits, symmetric, scale_dtype):
  w = weights(bits)
  q = quant.quantize(w, bits=bits, group=16, symmetric=symmetric, scale_dtype=scale_dtype)
  assert q.scales.dtype == scale_dtype and q.scales.shape == (3, 4, 16)
  codes = np_unpack(q.packed, bits, symmetric)
  if symmetric:
    qmax = (1 << (bits - 1)) - 1
    assert codes.min() >= -qmax and codes.max() <= qmax
  else:
    assert codes.min() >= 0 and codes.max() <= (1 << bits) - 1
  err = np.abs(np.asarray(quant.dequantize(q), np.float64) - np.asarray(w, np.float64))
  step = np.repeat(np.asarray(q.scales, np.float64), 16, axis=-2)
  # Round to nearest: |w - code * scale| <= scale / 2, up to float32 rounding of the
  # quotient and of the dequantised product (a few ulps of |w| <= 2**bits * scale).
  slack = step * (1 << bits) * 2.0 ** -22
  assert np.all(err <= step / 2 + slack), float(np.max(err - step / 2))
  # The bound is tight in practice: some element uses most of it.
  assert np.max(err / step) > 0.4
  np.testing.assert_allclose(np.asarray(quant.dequantize(q)), np_dequant(q), rtol=1e-6, atol=1e-6)


def test_weights_on_the_grid_are_exact_and_zero_groups_stay_zero():
  rng = np.random.default_rng(0)
  codes = rng.integers(-7, 8, size=(2, 32, 4))
  codes[:, :16, :] = np.clip(codes[:, :16, :], -6, 6)
  codes[:, 0, :] = 7  # max|w| of group 0 is 7 * 0.25, so the scale is exactly 0.25
  codes[:, 16, :] = 7
  w = codes * 0.25
  w[1, 16:, 2] = 0.0  # one all-zero group
  q = quant.quantize(jnp.asarray(w, jnp.float32), bits=4, group=16)
  np.testing.assert_array_equal(np.asarray(quant.dequantize(q)), w)
  assert float(q.scales[1, 1, 2]) == 0.0


def test_more_bits_less_error():
  w = weights(1, (4, 64, 16))
  errs = [np.asarray(quant.quantization_error(w, bits=b, group=32)) for b in (2, 4, 8)]
  assert errs[0].shape == (4,)
  assert np.all(errs[0] > errs[1]) and np.all(errs[1] > errs[2])
  want = np.sqrt(np.sum((np_dequant(quant.quantize(w, bits=4, group=32))
                         - np.asarray(w, np.float64)) ** 2, axis=(1, 2)))
  testing.assert_allclose(errs[1], want, dtype=jnp.float32, n=64 * 16)


# ------------------------------------------------------------------------------ bytes


@pytest.mark.parametrize("bits, scale_dtype, symmetric, want", [
    # E=2, D=64, F=8: codes 2*64*8 = 1024 weights; groups of 32: 2*2*8 = 32 scales.
    (8, jnp.float16, True, 1024 + 32 * 2),  # 1 byte a code, fp16 scales
    (4, jnp.float16, True, 512 + 32 * 2),  # 2 codes a byte
    (2, jnp.float16, True, 256 + 32 * 2),  # 4 codes a byte
    (4, jnp.float32, True, 512 + 32 * 4),  # fp32 scales
    (2, jnp.float16, False, 256 + 32 * 2 + 32 * 2),  # asymmetric: + fp16 mins
])
def test_nbytes_by_hand(bits, scale_dtype, symmetric, want):
  q = quant.quantize(jnp.ones((2, 64, 8)), bits=bits, group=32, scale_dtype=scale_dtype,
                     symmetric=symmetric)
  assert quant.nbytes(q) == want
  assert q.packed.nbytes + q.scales.nbytes + (0 if symmetric else q.mins.nbytes) == want


def test_nbytes_of_expert_weights_and_the_fp16_int4_ratio():
  w = jnp.ones((2, 128, 64), jnp.float16)
  dense = ExpertWeights(w, jnp.ones((2, 64, 128), jnp.float16))
  q = quant.quantize_expert_weights(dense, bits=4, group=32)
  assert quant.nbytes(dense) == 2 * (2 * 128 * 64 * 2)
  # 4 bits + 16 / 32 bits of scale = 4.5 bits a weight: fp16 / int4 = 16 / 4.5.
  assert quant.nbytes(q) == 2 * (2 * 128 * 64 // 2 + (2 * 128 * 64 // 32) * 2)
  assert quant.nbytes(dense) / quant.nbytes(q) == pytest.approx(16 / 4.5)


# ---------------------------------------------------------------------- pytree and jit


def test_quantized_experts_is_a_pytree_with_static_bits_and_group():
  q = quant.quantize(weights(2), bits=2, group=32)
  leaves, treedef = jax.tree_util.tree_flatten(q)
  assert len(leaves) == 2  # packed, scales (mins is None)
  assert jax.tree_util.tree_unflatten(treedef, leaves).bits == 2
  assert q.shape == (3, 64, 16) and q.pack == 4 and q.symmetric

  @jax.jit
  def f(q):
    assert isinstance(q.bits, int) and isinstance(q.group, int)
    return quant.dequantize(q)

  out = testing.assert_compiles_once(f, q)
  np.testing.assert_array_equal(out, quant.dequantize(q))
  stacked = jax.vmap(quant.dequantize)(q)  # vmap over experts
  np.testing.assert_array_equal(stacked, out)


# ---------------------------------------------------------------- mixed-precision MLP


def np_ffn(x, w_in, w_out, w_gate, activation):
  h = x @ w_in
  if w_gate is not None:
    g = x @ w_gate
    h = g / (1 + np.exp(-g)) * h  # silu(gate) * in
  else:
    h = np.maximum(h, 0.0) if activation == "relu" else h / (1 + np.exp(-h))
  return h @ w_out


def np_mixed(x, experts, weights_, mask, classes, high, low, activation, renormalize=False):
  """Slot by slot: HIGH -> exact weights, LOW -> dequantised copy, SKIP -> nothing."""
  T, K = experts.shape
  y = np.zeros((T, x.shape[1]))
  for t in range(T):
    w_t = np.where(mask[t], weights_[t], 0.0)
    kept = mask[t] & (classes[t] != SKIP)
    if renormalize and w_t[kept].sum() > 0:
      w_t = np.where(kept, w_t * w_t.sum() / w_t[kept].sum(), 0.0)
    for k in range(K):
      if not kept[k]:
        continue
      ws = high if classes[t, k] == HIGH else low
      e = experts[t, k]
      y[t] += w_t[k] * np_ffn(x[t].astype(np.float64), *(None if w is None else w[e] for w in ws),
                              activation=activation)
  return y


def as_np(ws: ExpertWeights):
  return tuple(None if w is None else (np_dequant(w) if isinstance(w, QuantizedExperts)
                                       else np.asarray(w, np.float64)) for w in ws)


def mixed_case(seed, gated, T=16, E=4, D=32, F=64):
  rng = np.random.default_rng(seed)
  x = jnp.asarray(rng.standard_normal((T, D)), jnp.float32)
  r = routing.route_top_p(jnp.asarray(rng.standard_normal((T, E)) * 2, jnp.float32), p=0.9,
                          max_k=3)
  classes = routing.hobbit_score_classes(r.weights_TK, r.mask_TK, t1=0.5, t2=0.8).classes_TK
  w = lambda *s: jnp.asarray(rng.standard_normal(s) / np.sqrt(s[1]), jnp.float32)  # noqa: E731
  high = ExpertWeights(w(E, D, F), w(E, F, D), w(E, D, F) if gated else None)
  return x, r, classes, high


@pytest.mark.parametrize("gated, activation, low_bits, high_bits", [
    (True, "silu", 4, None),  # RTX 4090 pair: float (fp16 in HOBBIT) + int4, SwiGLU
    (False, "relu", 2, 8),  # Jetson pair: int8 + int2
])
def test_mixed_precision_matches_numpy_loop(gated, activation, low_bits, high_bits):
  x, r, classes, high = mixed_case(0, gated)
  c = np.asarray(classes)
  used = np.asarray(r.mask_TK)
  assert {HIGH, LOW, SKIP} <= set(c[used].tolist()) | {SKIP} and (c[used] == LOW).any()
  assert (c[used] == SKIP).any() and (~used).any()  # skipped and unused slots both occur
  low = quant.quantize_expert_weights(high, bits=low_bits, group=16)
  if high_bits is not None:
    high = quant.quantize_expert_weights(high, bits=high_bits, group=16)
  y = quant.hobbit_expert_mlp(x, r, classes, high, low, activation=activation)
  want = np_mixed(np.asarray(x), np.asarray(r.experts_TK), np.asarray(r.weights_TK), used, c,
                  as_np(high), as_np(low), activation)
  testing.assert_allclose(y, want, dtype=jnp.float32, n=32 + 64)
  # LOW really is the low-precision copy: the result moves if LOW slots go HIGH.
  y_all_high = quant.hobbit_expert_mlp(x, r, jnp.where(classes == LOW, HIGH, classes), high, low,
                                       activation=activation)
  assert float(jnp.max(jnp.abs(y_all_high - y))) > 1e-3


def test_skip_is_not_renormalised_by_default():
  x, r, classes, high = mixed_case(1, gated=False)
  low = quant.quantize_expert_weights(high, bits=4, group=16)
  kw = dict(activation="relu", backend="capacity_einsum")
  args = (np.asarray(x), np.asarray(r.experts_TK), np.asarray(r.weights_TK),
          np.asarray(r.mask_TK), np.asarray(classes), as_np(high), as_np(low), "relu")
  y = quant.hobbit_expert_mlp(x, r, classes, high, low, **kw)
  testing.assert_allclose(y, np_mixed(*args), dtype=jnp.float32, n=96)
  y_renorm = quant.hobbit_expert_mlp(x, r, classes, high, low, renormalize=True, **kw)
  testing.assert_allclose(y_renorm, np_mixed(*args, renormalize=True), dtype=jnp.float32, n=96)
  # All SKIP: nothing is computed.
  y0 = quant.hobbit_expert_mlp(x, r, jnp.full_like(classes, SKIP), high, low, **kw)
  np.testing.assert_array_equal(np.asarray(y0), 0.0)


def test_all_high_is_expert_mlp():
  x, r, _, high = mixed_case(2, gated=True)
  low = quant.quantize_expert_weights(high, bits=2, group=32)
  y = quant.hobbit_expert_mlp(x, r, jnp.zeros_like(r.experts_TK), high, low, activation="silu")
  want, _ = dispatch.expert_mlp(x, r, *high, capacity_factor=None, activation="silu")
  testing.assert_allclose(y, want, dtype=jnp.float32, n=96)


# ------------------------------------------------------------------------------ errors


@pytest.mark.parametrize("shape, kwargs, error, match", [
    ((2, 32, 4), dict(bits=3), ValueError, "bits: expected one of \\(8, 4, 2\\), given 3"),
    ((2, 32, 4), dict(bits=4, group=24), ValueError, "group: expected a divisor of w's quantised axis D=32"),
    ((2, 6, 4), dict(bits=2, group=2), ValueError, "D=6 \\(axis -2\\) must be a multiple of 4"),
    ((32,), dict(bits=4), ValueError, "w: expected floating \\[..., D, F\\]"),
    ((2, 32, 4), dict(bits=4, scale_dtype=jnp.int8), TypeError, "scale_dtype: expected one of"),
])
def test_quantize_errors_are_named(shape, kwargs, error, match):
  with pytest.raises(error, match=match):
    quant.quantize(jnp.ones(shape), **{"group": 32, **kwargs})


def test_dequantize_and_pack_errors_are_named():
  q = quant.quantize(jnp.ones((2, 32, 4)), bits=4, group=16)
  with pytest.raises(ValueError, match="q.scales: expected shape \\(2, 2, 4\\)"):
    quant.dequantize(q._replace(scales=q.scales[:, :1]))
  with pytest.raises(ValueError, match="q.packed: expected uint8"):
    quant.dequantize(q._replace(packed=q.packed.astype(jnp.int8)))
  with pytest.raises(TypeError, match="q: expected a QuantizedExperts"):
    quant.dequantize(jnp.ones((2, 32, 4)))
  with pytest.raises(ValueError, match="codes: D=5 \\(axis -2\\) must be a multiple of 2"):
    quant.pack_codes(jnp.zeros((5, 1), jnp.int32), 4)


def test_mixed_precision_errors_are_named():
  x, r, classes, high = mixed_case(3, gated=True)
  low = quant.quantize_expert_weights(high, bits=4, group=16)
  with pytest.raises(ValueError, match="classes_TK: expected the shape of routing.experts_TK"):
    quant.hobbit_expert_mlp(x, r, classes[:, :2], high, low)
  with pytest.raises(TypeError, match="classes_TK: expected an integer dtype"):
    quant.hobbit_expert_mlp(x, r, classes.astype(jnp.float32), high, low)
  small = quant.quantize_expert_weights(
      ExpertWeights(*(w[:, :16] for w in high)), bits=4, group=16)
  with pytest.raises(ValueError, match="low.w_in_EDF: expected the logical shape of high.w_in_EDF"):
    quant.hobbit_expert_mlp(x, r, classes, high, small)
  with pytest.raises(ValueError, match="high.w_gate_EDF / low.w_gate_EDF: both or neither"):
    quant.hobbit_expert_mlp(x, r, classes, high, low._replace(w_gate_EDF=None))
  with pytest.raises(TypeError, match="high.w_in_EDF: expected the dtype of x_TD"):
    quant.hobbit_expert_mlp(x, r, classes, high._replace(w_in_EDF=high.w_in_EDF.astype(jnp.bfloat16)),
                            low)


def test_module_doctests():
  import doctest  # pylint: disable=g-import-not-at-top

  result = doctest.testmod(quant)
  assert result.failed == 0 and result.attempted > 0
