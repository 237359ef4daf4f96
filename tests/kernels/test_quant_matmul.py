"""Dequantising matmul: Pallas kernel (interpret / compiled) against the reference."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsys._src import backend, testing
from jaxsys.kernels.quant_matmul import BlockConfig, quant_matmul, quant_matmul_reference
from jaxsys.kernels.quant_matmul import pallas_gpu
from jaxsys.moe import quant


def case(seed, N, D, F, bits, group, symmetric=True, scale_dtype=jnp.float16):
  rng = np.random.default_rng(seed)
  w = jnp.asarray(rng.standard_normal((D, F)), jnp.float32)
  x = jnp.asarray(rng.standard_normal((N, D)), jnp.float32)
  q = quant.quantize(w, bits=bits, group=group, symmetric=symmetric, scale_dtype=scale_dtype)
  return x, q


def assert_close_to_output_scale(out, ref, *, dtype, n):
  """Within `testing.tolerance(dtype, n)` relative to the largest |reference| entry."""
  scale = float(np.max(np.abs(np.asarray(ref, np.float64)))) or 1.0
  testing.assert_allclose(np.asarray(out, np.float64) / scale,
                          np.asarray(ref, np.float64) / scale, dtype=dtype, n=n)


class QuantMatmulTest:
  INTERPRET = False

  def setup_method(self):
    if not self.INTERPRET and not backend.has_gpu():
      pytest.skip("compiled Pallas GPU kernel needs a GPU")

  def run(self, x, packed, scales, mins=None, *, bits, group, cfg=None):
    return quant_matmul(jnp.asarray(x), jnp.asarray(packed), jnp.asarray(scales),
                        None if mins is None else jnp.asarray(mins), bits=bits, group=group,
                        implementation="pallas", interpret=self.INTERPRET or None,
                        block_config=cfg or BlockConfig(16, 16, 16))

  @pytest.mark.parametrize("bits, column_bytes, scale, mins, want", [
      # int4, codes [-8, 7, 1, -1] (two's complement nibbles 0x8, 0x7, 0x1, 0xF), low nibble
      # first: byte 0 = 0x8 | 0x7 << 4 = 0x78 = 120, byte 1 = 0x1 | 0xF << 4 = 0xF1 = 241.
      # scale 0.5: W = [-4, 3.5, 0.5, -0.5]; x = [1, 2, 3, 4]: -4 + 7 + 1.5 - 2 = 2.5.
      (4, [120, 241], 0.5, None, 2.5),
      # int2, codes [-2, 1, 0, -1] (fields 2, 1, 0, 3): byte = 2 | 1<<2 | 0<<4 | 3<<6 = 198.
      # scale 2: W = [-4, 2, 0, -2]; x . W = -4 + 4 + 0 - 8 = -8.
      (2, [198], 2.0, None, -8.0),
      # int8, codes [-128, 127, 3, -1] as bytes [128, 127, 3, 255]; scale 0.25:
      # W = [-32, 31.75, 0.75, -0.25]; x . W = -32 + 63.5 + 2.25 - 1 = 32.75.
      (8, [128, 127, 3, 255], 0.25, None, 32.75),
      # int4 asymmetric, unsigned codes [0, 15, 1, 2]: bytes 0 | 15<<4 = 240, 1 | 2<<4 = 33.
      # scale 0.5, min -1: W = [-1, 6.5, -0.5, 0]; x . W = -1 + 13 - 1.5 + 0 = 10.5.
      (4, [240, 33], 0.5, -1.0, 10.5),
  ])
  def test_golden_tiny_case(self, bits, column_bytes, scale, mins, want):
    x = np.array([[1.0, 2.0, 3.0, 4.0]], np.float32)
    packed = np.array(column_bytes, np.uint8)[:, None]  # one output column, group = D = 4
    scales = np.array([[scale]], np.float32)
    m = None if mins is None else np.array([[mins]], np.float32)
    out = self.run(x, packed, scales, m, bits=bits, group=4)
    np.testing.assert_array_equal(np.asarray(out), [[want]])
    ref = quant_matmul_reference(*map(jnp.asarray, (x, packed, scales)),
                                 None if m is None else jnp.asarray(m), bits=bits, group=4)
    np.testing.assert_array_equal(np.asarray(ref), [[want]])

  @pytest.mark.parametrize("bits, group, symmetric, cfg", [
      (8, 32, True, BlockConfig(16, 16, 16)),  # a step inside one group: one scale row
      (4, 16, True, BlockConfig(16, 16, 32)),  # a step over two groups: gathered scales
      (2, 32, True, BlockConfig(32, 16, 16)),
      (4, 32, False, BlockConfig(16, 32, 64)),  # asymmetric; D = 96 pads to 128
  ])
  def test_matches_reference_odd_shapes(self, bits, group, symmetric, cfg):
    # N = 19, F = 40 are not multiples of any tile: rows and columns are padded.
    x, q = case(bits, 19, 96, 40, bits, group, symmetric)
    out = self.run(x, q.packed, q.scales, q.mins, bits=bits, group=group, cfg=cfg)
    ref = quant_matmul_reference(x, q.packed, q.scales, q.mins, bits=bits, group=group)
    assert out.shape == (19, 40) and out.dtype == jnp.float32
    assert_close_to_output_scale(out, ref, dtype=jnp.float32, n=96)

  def test_bfloat16_activations_float32_scales(self):
    x, q = case(7, 24, 64, 32, 4, 32, scale_dtype=jnp.float32)
    xb = x.astype(jnp.bfloat16)
    out = self.run(xb, q.packed, q.scales, bits=4, group=32)
    assert out.dtype == jnp.bfloat16
    ref = quant_matmul_reference(xb, q.packed, q.scales, bits=4, group=32)
    # The kernel rounds the dequantised weights to bfloat16 for the dot.
    assert_close_to_output_scale(out, ref, dtype=jnp.bfloat16, n=64)


class TestInterpret(QuantMatmulTest):
  INTERPRET = True


class TestCompiled(QuantMatmulTest):
  INTERPRET = False


def test_reference_is_x_times_dequantized():
  x, q = case(3, 5, 64, 12, 2, 16)
  want = np.asarray(x, np.float64) @ np.asarray(quant.dequantize(q), np.float64)
  testing.assert_allclose(quant_matmul_reference(x, q.packed, q.scales, bits=2, group=16), want,
                          dtype=jnp.float32, n=64)


@pytest.mark.parametrize("bits, symmetric", [(4, True), (2, False)])
def test_kernel_lowers_to_triton_ir(bits, symmetric):
  """Cross-lowers the compiled kernel for CUDA on any host: the Triton lowering rules
  accept every op (gathers, shifts, masks); compiling the IR still needs a GPU."""
  export = getattr(jax, "export", None)
  if export is None or not hasattr(export, "DisabledSafetyCheck"):
    pytest.skip("jax.export is unavailable")
  x, q = case(0, 19, 96, 40, bits, 16, symmetric)
  fn = jax.jit(functools.partial(pallas_gpu.quant_matmul_pallas, bits=bits, group=16,
                                 block_config=BlockConfig(16, 16, 32)))
  try:
    exported = export.export(
        fn, platforms=["cuda"],
        disabled_checks=[export.DisabledSafetyCheck.custom_call("__gpu$xla.gpu.triton")],
    )(x, q.packed, q.scales, q.mins)
  except RuntimeError as e:  # a jaxlib without the CUDA lowering
    if "cuda" in str(e).lower() and "lowering" in str(e).lower():
      pytest.skip(f"no CUDA lowering here: {e}")
    raise
  assert "xla.gpu.triton" in exported.mlir_module()


def test_default_compiles_once_and_is_reference_on_cpu():
  x, q = case(4, 8, 64, 16, 4, 32)
  fn = jax.jit(functools.partial(quant_matmul, bits=4, group=32))
  out = testing.assert_compiles_once(fn, x, q.packed, q.scales)
  if not backend.has_gpu():
    np.testing.assert_array_equal(
        out, quant_matmul_reference(x, q.packed, q.scales, bits=4, group=32))


@pytest.mark.skipif(backend.has_gpu(), reason="checks the CPU refusal")
def test_named_pallas_without_gpu_raises():
  x, q = case(5, 4, 32, 8, 4, 32)
  with pytest.raises(backend.ImplementationError, match="pass interpret=True"):
    quant_matmul(x, q.packed, q.scales, bits=4, group=32, implementation="pallas")


def test_unknown_implementation_raises():
  x, q = case(5, 4, 32, 8, 4, 32)
  with pytest.raises(backend.ImplementationError, match="unknown implementation 'triton'"):
    quant_matmul(x, q.packed, q.scales, bits=4, group=32, implementation="triton")


_X = np.zeros((4, 64), np.float32)
_P4 = np.zeros((32, 8), np.uint8)  # int4: 64 rows in 32 bytes
_S = np.zeros((2, 8), np.float16)  # group 32


@pytest.mark.parametrize("args, kwargs, error, match", [
    ((_X, _P4, _S), dict(bits=3, group=32), ValueError, "bits: expected one of \\(8, 4, 2\\), given 3"),
    ((_X[0], _P4, _S), dict(bits=4, group=32), ValueError, "x_ND: expected 2 dims"),
    ((_X.astype(np.int32), _P4, _S), dict(bits=4, group=32), TypeError, "x_ND: expected a floating"),
    ((_X, _P4.astype(np.int8), _S), dict(bits=4, group=32), ValueError, "packed_PF: expected uint8"),
    ((_X, _P4, _S), dict(bits=2, group=32), ValueError, "packed_PF: expected 64 / 4 = 16 rows"),
    ((_X, _P4, _S), dict(bits=4, group=24), ValueError, "group: expected a divisor of D=64"),
    ((_X, _P4, _S[:1]), dict(bits=4, group=32), ValueError, "scales_GF: expected shape \\(2, 8\\)"),
    ((_X, _P4, _S.astype(np.int32)), dict(bits=4, group=32), TypeError, "scales_GF: expected one of"),
    ((_X, _P4, _S, _S.astype(np.float32)), dict(bits=4, group=32), ValueError, "mins_GF: expected float16"),
])
def test_bad_inputs_are_named(args, kwargs, error, match):
  with pytest.raises(error, match=match):
    quant_matmul(*map(jnp.asarray, args), **kwargs)


def test_block_config_validates_and_fits_few_rows():
  with pytest.raises(ValueError, match="block_k must be a power of two >= 16, given 8"):
    BlockConfig(block_k=8)
  with pytest.raises(ValueError, match="num_warps must be a power of two"):
    BlockConfig(num_warps=3)
  assert BlockConfig.get_default(1).block_m == 16
  assert BlockConfig.get_default(33).block_m == 64
  assert BlockConfig.get_default(4096).block_m == 64


def test_api_doctest():
  import doctest  # pylint: disable=g-import-not-at-top

  from jaxsys.kernels.quant_matmul import api  # pylint: disable=g-import-not-at-top

  result = doctest.testmod(api)
  assert result.failed == 0 and result.attempted > 0
