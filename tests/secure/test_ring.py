"""Fixed point over Z_2^32 / Z_2^64 against a pure-Python big-integer reference.

Covers `Ring` validation, `encode` / `decode` at the edges of the range
(``-max_abs``, ``max_abs - ulp``, 0, ``-ulp``, ties), overflow reporting (eager
and under jit), and `ring_einsum` / `ring_matmul` exact against Python ints,
including the worst case at the largest exact contraction length.
"""

import re
import zlib
from fractions import Fraction

import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings

from jaxsys._src import testing
from jaxsys.secure import ring as R
from tests.secure import bigint

RINGS = [R.RING32, R.RING64]
IDS = ["z32", "z64"]


def random_ring(rng, shape, ring):
  """Uniform ring elements (full range) as a numpy array of the ring dtype."""
  return rng.integers(0, ring.modulus, size=shape, dtype=np.uint64).astype(np.dtype(ring.dtype))


def to_ints(x):
  """A (nested) list of Python ints from an unsigned array."""
  return np.asarray(x).astype(object).tolist()


def top(ring):
  """The largest float64 that encodes: max_abs - ulp, or the float just below
  max_abs where float64 cannot hold max_abs - ulp (Z_2^64: 2^45 - 2^-18)."""
  t = ring.max_abs - ring.ulp
  return t if t < ring.max_abs else float(np.nextafter(ring.max_abs, 0.0))


def edges(ring):
  """The edges of the representable range, and rounding ties, as floats."""
  u = ring.ulp
  return [-ring.max_abs, top(ring), 0.0, -u, u, u / 2, 1.5 * u, -u / 2, -2.5 * u,
          1.0, -1.0, 3.25, -7.125, ring.max_abs / 3]


# ------------------------------------------------------------------------------- Ring


def test_ring_validation_errors():
  with pytest.raises(ValueError, match=r"Ring.bits: expected 32 or 64, given 16"):
    R.Ring(16, 3)
  with pytest.raises(ValueError, match=r"fraction bits do not fit the ring: frac=16.*bits=32"):
    R.Ring(32, 16)
  with pytest.raises(ValueError, match=r"fraction bits do not fit the ring: frac=32.*bits=64"):
    R.Ring(64, 32)
  with pytest.raises(ValueError, match=r"Ring.frac: expected an int >= 0, given -1"):
    R.Ring(32, -1)
  assert R.Ring(32, 15).frac == 15 and R.Ring(64, 31).frac == 31  # 2f + 2 == bits fits


def test_ring_constants():
  assert R.RING32 == R.Ring(32, 13) and R.RING64 == R.Ring(64, 18)
  assert np.dtype(R.RING32.dtype) == np.uint32 and np.dtype(R.RING64.dtype) == np.uint64
  assert R.RING32.modulus == 2**32 and R.RING64.modulus == 2**64
  assert R.RING32.max_abs == 2.0**18 and R.RING64.max_abs == 2.0**45
  assert hash(R.RING32) == hash(R.Ring(32, 13))  # static under jit


# ---------------------------------------------------------------------- encode / decode


@pytest.mark.parametrize("ring", RINGS, ids=IDS)
def test_encode_decode_edges_exact(ring):
  xs = edges(ring)
  got = to_ints(R.encode(np.array(xs), ring))
  want = [bigint.encode(x, ring.bits, ring.frac) for x in xs]
  assert got == want
  # Ties go to even: u/2 -> 0, 1.5u -> 2u, -u/2 -> 0, -2.5u -> -2u.
  assert want[5] == 0 and want[6] == 2 and want[7] == 0
  assert bigint.signed(want[8], ring.bits) == -2
  dec = np.asarray(R.decode(np.array(want, np.dtype(ring.dtype)), ring))
  assert dec.dtype == np.float32
  ref = np.array([float(bigint.decode(v, ring.bits, ring.frac)) for v in want], np.float32)
  np.testing.assert_array_equal(dec, ref)
  assert dec[0] == -ring.max_abs


@pytest.mark.parametrize("ring", RINGS, ids=IDS)
@settings(max_examples=30, deadline=None)
@given(data=st.data())
def test_encode_matches_bigint(ring, data):
  finite = st.floats(-ring.max_abs, top(ring), allow_nan=False, width=64)
  xs = data.draw(st.lists(st.one_of(finite, st.sampled_from(edges(ring))),
                          min_size=16, max_size=16))
  got = to_ints(R.encode(np.array(xs), ring))
  assert got == [bigint.encode(x, ring.bits, ring.frac) for x in xs]
  signed = np.asarray(R.to_signed(np.array(got, np.dtype(ring.dtype)), ring))
  assert signed.tolist() == [bigint.signed(v, ring.bits) for v in got]


@pytest.mark.parametrize("ring", RINGS, ids=IDS)
def test_encode_reports_overflow(ring):
  u = ring.ulp
  below = -ring.max_abs - u if ring.bits == 32 else float(np.nextafter(-ring.max_abs, -np.inf))
  xs = [1.0, ring.max_abs, below, 2 * ring.max_abs, top(ring)]
  with pytest.raises(ValueError) as err:
    R.encode(np.array(xs), ring)
  msg = str(err.value)
  assert "3 of 5 element(s) overflow" in msg
  assert f"worst value {2 * ring.max_abs!r}" in msg
  assert f"{-ring.max_abs!r} <= x < {ring.max_abs!r}" in msg
  with pytest.raises(ValueError, match=r"1 of 2 element\(s\) overflow.*worst value nan"):
    R.encode([0.0, float("nan")], ring)
  with pytest.raises(ValueError, match=r"1 of 1 element"):
    R.encode(float("inf"), ring)


def test_encode_traced_saturates_and_counts():
  ring = R.RING32
  fn = jax.jit(lambda x: R.encode_traced(x, ring))
  # float32 input (the caller's jit runs without x64); 2^18 - 2^-6 is the largest
  # float32 below max_abs = 2^18 and encodes to 2^31 - 2^7.
  x = np.array([1.0, 1e30, -1e30, np.nan, -ring.max_abs, 2.0**18 - 2.0**-6], np.float32)
  out, n = fn(x)
  assert int(n) == 3
  assert np.asarray(R.to_signed(out, ring)).tolist() == [
      2**13, 2**31 - 1, -(2**31), 0, -(2**31), 2**31 - 2**7]
  with pytest.raises(TypeError, match="encode_traced"):
    jax.jit(lambda x: R.encode(x, ring))(x)


def test_encode_decode_argument_errors():
  with pytest.raises(TypeError, match=r"x_ring: expected ring elements of dtype uint64"):
    R.decode(np.zeros(3, np.uint32), R.RING64)
  with pytest.raises(TypeError, match=r"x: expected real numbers"):
    R.encode(np.array([True]), R.RING32)
  with pytest.raises(TypeError, match=r"ring: expected a jaxsys.secure.ring.Ring"):
    R.encode(1.0, 32)
  with pytest.raises(ValueError, match=r"frac: expected an int in \[0, 31\]"):
    R.encode(1.0, R.RING32, frac=32)


def test_signed_round_trip():
  ring = R.RING64
  v = np.array([-(2**63), -1, 0, 1, 2**63 - 1], np.int64)
  x = R.from_signed(v, ring)
  assert to_ints(x) == [bigint.mod(int(i), 64) for i in v]
  assert np.asarray(R.to_signed(x, ring)).tolist() == v.tolist()


# --------------------------------------------------------------------------- ring einsum


CASES = [  # spec, a shape, b shape, bigint spec (no ellipsis)
    ("ik,kj->ij", (3, 5), (5, 4), "ik,kj->ij"),
    ("bqd,bkd->bqk", (2, 3, 4), (2, 5, 4), "bqd,bkd->bqk"),
    ("bhqk,bhkd->bhqd", (1, 2, 3, 4), (1, 2, 4, 2), "bhqk,bhkd->bhqd"),
    ("...k,kn->...n", (2, 3, 5), (5, 2), "bik,kn->bin"),
    ("ij,ij->i", (3, 6), (3, 6), "ij,ij->i"),
]


@pytest.mark.parametrize("ring", RINGS, ids=IDS)
@pytest.mark.parametrize("spec,a_shape,b_shape,ref_spec", CASES, ids=[c[0] for c in CASES])
def test_ring_einsum_exact(ring, spec, a_shape, b_shape, ref_spec):
  rng = np.random.default_rng([zlib.crc32(spec.encode()), ring.bits])
  a, b = random_ring(rng, a_shape, ring), random_ring(rng, b_shape, ring)
  want = bigint.einsum(ref_spec, to_ints(a), to_ints(b), ring.bits)
  got = R.ring_einsum(spec, a, b, ring)
  assert got.dtype == ring.dtype
  assert to_ints(got) == want
  assert to_ints(R.ring_einsum(spec, a, b, ring, method="native")) == want


@pytest.mark.parametrize("ring", RINGS, ids=IDS)
def test_ring_matmul_exact(ring):
  rng = np.random.default_rng(7)
  a, b = random_ring(rng, (4, 9), ring), random_ring(rng, (9, 3), ring)
  want = bigint.einsum("ik,kj->ij", to_ints(a), to_ints(b), ring.bits)
  assert to_ints(R.ring_matmul(a, b, ring)) == want
  assert to_ints(R.ring_matmul(a[1], b, ring)) == want[1]  # (K,) @ (K, N)


@pytest.mark.parametrize("ring", RINGS, ids=IDS)
def test_ring_matmul_exact_at_max_k(ring):
  """Every limb 0xFFFF: the float64 partial sums reach K (2^16 - 1)^2 <= 2^53 exactly."""
  k = R.MAX_K
  assert k * (2**16 - 1) ** 2 <= 2**53 < (k + 1) * (2**16 - 1) ** 2
  ones = np.full((1, k), np.iinfo(np.dtype(ring.dtype)).max, np.dtype(ring.dtype))  # = -1
  got = R.ring_matmul(ones, ones.reshape(k, 1), ring)
  # sum of K products (2^l - 1)^2 = K mod 2^l
  assert to_ints(got) == [[bigint.mod(k * (2**ring.bits - 1) ** 2, ring.bits)]] == [[k]]


def test_ring_einsum_errors():
  ring = R.RING32
  a = np.zeros((2, 3), np.uint32)
  with pytest.raises(ValueError, match=re.escape(f"K={R.MAX_K + 1}") + ".*" + str(R.MAX_K)):
    jax.eval_shape(lambda x, y: R.ring_matmul(x, y, ring),
                   jax.ShapeDtypeStruct((1, R.MAX_K + 1), jnp.uint32),
                   jax.ShapeDtypeStruct((R.MAX_K + 1, 1), jnp.uint32))
  with pytest.raises(TypeError, match=r"b: expected ring elements of dtype uint32"):
    R.ring_matmul(a, np.zeros((3, 2), np.float32), ring)
  with pytest.raises(TypeError, match=r"a: expected ring elements of dtype uint64"):
    R.ring_matmul(a, np.zeros((3, 2), np.uint64), R.RING64)
  with pytest.raises(ValueError, match=r"spec: expected an explicit two-operand einsum"):
    R.ring_einsum("ij,jk", a, a.T, ring)
  with pytest.raises(ValueError, match=r"index 'j' .* size 3 in a \(2, 3\) but 2 in b"):
    R.ring_einsum("ij,jk->ik", a, a, ring)
  with pytest.raises(ValueError, match=r"a, b: expected a.shape\[-1\] == b.shape\[0\]"):
    R.ring_matmul(a, a, ring)
  with pytest.raises(ValueError, match=r"method: expected one of"):
    R.ring_einsum("ij,jk->ik", a, a.T, ring, method="fast")


# ------------------------------------------------------------------- x64 scope, caching


def test_x64_scope_does_not_leak_and_jit_caches():
  assert not jax.config.jax_enable_x64
  rng = np.random.default_rng(3)
  ring = R.RING64
  a, b = random_ring(rng, (4, 6), ring), random_ring(rng, (6, 5), ring)
  out = R.ring_matmul(a, b, ring)
  enc = R.encode(np.array([1.5, -2.0]), ring)
  dec = R.decode(enc, ring)
  assert out.dtype == jnp.uint64 and enc.dtype == jnp.uint64 and dec.dtype == jnp.float32
  assert not jax.config.jax_enable_x64
  assert jnp.arange(3).dtype == jnp.int32
  a2, b2 = random_ring(rng, (4, 6), ring), random_ring(rng, (6, 5), ring)
  with testing.count_lowerings() as lowerings:
    out2 = R.ring_matmul(a2, b2, ring)
    R.decode(R.encode(np.array([0.25, 3.0]), ring), ring)
    jax.block_until_ready(out2)
  assert not lowerings, f"retraced {len(lowerings)} time(s)"
  assert to_ints(out2) == bigint.einsum("ik,kj->ij", to_ints(a2), to_ints(b2), 64)
  assert not jax.config.jax_enable_x64


def test_decode_rounds_once_to_float32():
  ring = R.RING64
  v = 2**40 + 1  # needs 41 significant bits: float32 keeps 24
  got = np.asarray(R.decode(np.array([v], np.uint64), ring))[0]
  assert got == np.float32(float(Fraction(v, 2**18)))
