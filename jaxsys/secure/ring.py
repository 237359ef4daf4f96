"""Fixed point over the rings Z_2^32 and Z_2^64: encode, decode, exact ring products.

A real number x is held as the ring element ``round(x * 2^f) mod 2^l`` (two's
complement; ``l`` ring bits, ``f`` fraction bits), so the representable reals
are ``[-2^(l-1-f), 2^(l-1-f) - 2^-f]`` (jaxsys ``papers/secure.md`` 1.1). Nimbus
runs its non-linear layers in ``Z_2^32`` with f = 13 (`RING32`, its ``FM32``
setting); SPU's default ``FM64`` has f = 18 (`RING64`). A `Ring` insists on
``2f + 2 <= l``: the product of two encoded values carries 2f fraction bits and
must still fit, with room for a sign.

* `encode` / `decode`: ``round(x * 2^f)`` (half to even) and back to float32.
  `encode` reports values out of range (how many, the worst, the limit) instead
  of wrapping them; inside `jax.jit` use `encode_traced`, which saturates and
  counts.
* `ring_einsum` / `ring_matmul`: exact products mod 2^l. XLA's integer dot is
  slow on CPU (no BLAS), so the default ``method="limbs"`` splits each operand
  into 16-bit limbs ``a = sum_i a_i 2^(16 i)``, multiplies limbs in float64 and
  recombines ``a @ b = sum_(i+j <= l/16 - 1) (a_i @ b_j) 2^(16 (i+j)) mod 2^l``:
  3 limb products for Z_2^32, 10 for Z_2^64. Each limb product is exact while the
  contraction length K satisfies ``K (2^16 - 1)^2 <= 2^53`` (`MAX_K` =
  2,097,216); a larger K raises. ``method="native"`` is XLA's integer dot.

64-bit rings do not need ``jax_enable_x64`` in the caller's process: every
public function here (and in `jaxsys.secure.mpc`) runs inside the scoped
``jax.enable_x64(True)`` (`with_x64`), and leaves the global flag as it was.
Arrays it returns keep their uint64 / int64 dtypes. Jitted helpers are always
called inside the scope, so their cache key is stable: a second call with new
values of the same shapes does not retrace.

>>> import jax.numpy as jnp
>>> from jaxsys.secure import ring
>>> x = ring.encode(jnp.array([1.5, -0.25]), ring.RING32)
>>> x.tolist(), ring.decode(x, ring.RING32).tolist()
([12288, 4294965248], [1.5, -0.25])
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable
from typing import Any, TypeVar

import jax
import jax.numpy as jnp
import numpy as np

F = TypeVar("F", bound=Callable[..., Any])

LIMB_BITS = 16
# Largest contraction length for which a float64 sum of K products of two
# 16-bit limbs is exact: every partial sum is an integer <= K (2^16 - 1)^2 <= 2^53.
MAX_K = 2**53 // (2**LIMB_BITS - 1) ** 2
METHODS = ("limbs", "native")


def with_x64(fn: F) -> F:
  """Runs `fn` inside ``jax.enable_x64(True)``; the global setting is untouched."""

  @functools.wraps(fn)
  def wrapped(*args, **kwargs):
    with jax.enable_x64(True):
      return fn(*args, **kwargs)

  return wrapped  # type: ignore[return-value]


@dataclasses.dataclass(frozen=True)
class Ring:
  """The ring Z_2^bits with `frac` fraction bits of fixed point.

  ``2 * frac + 2 <= bits`` is required: a product of two encoded values has
  ``2 * frac`` fraction bits and must still fit with a sign bit and one spare.
  """

  bits: int  # 32 or 64
  frac: int  # fraction bits f of an encoded value

  def __post_init__(self):
    if isinstance(self.bits, bool) or self.bits not in (32, 64):
      raise ValueError(f"Ring.bits: expected 32 or 64, given {self.bits!r}")
    if not isinstance(self.frac, int) or isinstance(self.frac, bool) or self.frac < 0:
      raise ValueError(f"Ring.frac: expected an int >= 0, given {self.frac!r}")
    if 2 * self.frac + 2 > self.bits:
      raise ValueError(
          f"Ring: fraction bits do not fit the ring: frac={self.frac} needs"
          f" 2*frac + 2 = {2 * self.frac + 2} bits (a product of two encoded values),"
          f" but bits={self.bits}; expected frac <= {(self.bits - 2) // 2}")

  @property
  def dtype(self):
    """The unsigned storage dtype: jnp.uint32 or jnp.uint64."""
    return jnp.uint32 if self.bits == 32 else jnp.uint64

  @property
  def signed_dtype(self):
    """The signed view of a ring element: jnp.int32 or jnp.int64."""
    return jnp.int32 if self.bits == 32 else jnp.int64

  @property
  def modulus(self) -> int:
    """2^bits, as a Python int."""
    return 1 << self.bits

  @property
  def max_abs(self) -> float:
    """2^(bits-1-frac): the largest |x| representable (only -max_abs itself)."""
    return 2.0 ** (self.bits - 1 - self.frac)

  @property
  def ulp(self) -> float:
    """2^-frac, the spacing of representable values."""
    return 2.0 ** -self.frac

  def const(self, value: int) -> np.ndarray:
    """The Python int `value` mod 2^bits as a 0-d array of the ring dtype."""
    return np.asarray(int(value) % self.modulus, dtype=np.dtype(self.dtype))


RING32 = Ring(32, 13)  # Nimbus FM32, f = 13 (papers/secure.md 1.3)
RING64 = Ring(64, 18)  # SPU FM64 default, f = 18 (papers/secure.md 1.4)


# ----------------------------------------------------------------------------- checks


def _check_ring(ring: Any, name: str = "ring") -> Ring:
  if not isinstance(ring, Ring):
    raise TypeError(f"{name}: expected a jaxsys.secure.ring.Ring, given {type(ring).__name__}")
  return ring


def _frac(ring: Ring, frac: int | None, name: str = "frac") -> int:
  """`frac` (default ring.frac), checked to leave a sign bit: 0 <= frac <= bits - 1."""
  if frac is None:
    return ring.frac
  if not isinstance(frac, int) or isinstance(frac, bool) or not 0 <= frac < ring.bits:
    raise ValueError(f"{name}: expected an int in [0, {ring.bits - 1}], given {frac!r}")
  return frac


@with_x64
def check_ring_array(x: Any, ring: Ring, name: str = "x") -> jax.Array:
  """`x` as a jax array of the ring's dtype; a clear error for any other dtype."""
  dt = getattr(x, "dtype", None)
  if dt is None or np.dtype(dt) != np.dtype(ring.dtype):
    raise TypeError(
        f"{name}: expected ring elements of dtype {np.dtype(ring.dtype).name} for a"
        f" {ring.bits}-bit ring, given {np.dtype(dt).name if dt is not None else type(x).__name__}"
        " (use ring.encode for real values)")
  return jnp.asarray(x)


def _is_traced(x: Any) -> bool:
  return isinstance(x, jax.core.Tracer)


# --------------------------------------------------------------------- encode / decode


@functools.partial(jax.jit, static_argnames=("ring", "frac"))
def _encode_core(x: jax.Array, ring: Ring, frac: int) -> tuple[jax.Array, jax.Array]:
  v = jnp.round(x.astype(jnp.float64) * np.float64(2.0**frac))
  lo = np.float64(-(2.0 ** (ring.bits - 1)))
  hi = np.float64(2.0 ** (ring.bits - 1))
  ok = (v >= lo) & (v < hi)  # False for NaN too
  n_bad = jnp.sum(jnp.logical_not(ok), dtype=jnp.int32)
  safe = jnp.where(jnp.isnan(v), np.float64(0.0), v)
  safe = jnp.clip(safe, lo, np.nextafter(hi, np.float64(0.0)))
  v_int = safe.astype(jnp.int64)
  imax = np.int64((1 << (ring.bits - 1)) - 1)
  v_int = jnp.where(v >= hi, imax, v_int)  # saturate exactly at the top of the range
  return v_int.astype(ring.dtype), n_bad


def _check_real(x: Any, name: str) -> Any:
  dt = getattr(x, "dtype", None)
  if dt is not None:
    if np.dtype(dt) == np.bool_ or not (
        jnp.issubdtype(dt, jnp.floating) or jnp.issubdtype(dt, jnp.integer)):
      raise TypeError(f"{name}: expected real numbers (float or int), given dtype {dt}")
  elif isinstance(x, bool) or not isinstance(x, (int, float, list, tuple)):
    raise TypeError(f"{name}: expected real numbers (an array, float or int), given {x!r}")
  return x


@with_x64
def encode(x: Any, ring: Ring, *, frac: int | None = None) -> jax.Array:
  """``round(x * 2^frac)`` as a two's complement element of Z_2^bits.

  Rounding is half to even. The representable range is
  ``-2^(bits-1-frac) <= x < 2^(bits-1-frac)`` after rounding; values outside it
  (and NaN / inf) are reported, never wrapped: x must be concrete (not traced),
  and the ValueError says how many elements overflow, the worst one and the
  limit. Inside `jax.jit` use `encode_traced`.

  Args:
    x: real values (array, float or int; float32 inputs are exact in float64).
    ring: the ring.
    frac: fraction bits (default ``ring.frac``).

  Returns:
    ``ring.dtype`` array of ``x``'s shape.

  >>> encode(-1.0, RING32).tolist()
  4294959104
  """
  ring = _check_ring(ring)
  frac = _frac(ring, frac)
  _check_real(x, "x")
  if _is_traced(x):
    raise TypeError(
        "x: encode needs concrete values to report overflow, given a traced array;"
        " inside jax.jit use ring.encode_traced(x, ring), which saturates and counts")
  xf = np.asarray(x, dtype=np.float64)
  v = np.round(xf * 2.0**frac)
  lo, hi = -(2.0 ** (ring.bits - 1)), 2.0 ** (ring.bits - 1)
  bad = ~((v >= lo) & (v < hi))
  if bad.any():
    mags = np.where(np.isnan(xf), np.inf, np.abs(xf))
    worst = float(xf.reshape(-1)[int(np.argmax(np.where(bad, mags, -1.0).reshape(-1)))])
    raise ValueError(
        f"x: {int(bad.sum())} of {xf.size} element(s) overflow the {ring.bits}-bit ring"
        f" with {frac} fraction bits; worst value {worst!r}; expected"
        f" {-2.0 ** (ring.bits - 1 - frac)!r} <= x < {2.0 ** (ring.bits - 1 - frac)!r}"
        f" (largest representable {2.0 ** (ring.bits - 1 - frac)!r} - 2^-{frac})")
  out, _ = _encode_core(jnp.asarray(xf), ring, frac)
  return out


@with_x64
def encode_traced(x: Any, ring: Ring, *, frac: int | None = None) -> tuple[jax.Array, jax.Array]:
  """`encode` for use under `jax.jit`: saturates out-of-range values and counts them.

  Values above the range become ``2^(bits-1) - 1``, below it ``-2^(bits-1)``,
  NaN becomes 0; each of these counts as one overflow.

  Returns:
    ``(x_ring, n_overflow)``: the ring array and an int32 scalar count.
  """
  ring = _check_ring(ring)
  frac = _frac(ring, frac)
  _check_real(x, "x")
  return _encode_core(jnp.asarray(x), ring, frac)


@functools.partial(jax.jit, static_argnames=("ring", "frac"))
def _decode_core(x: jax.Array, ring: Ring, frac: int) -> jax.Array:
  signed = jax.lax.bitcast_convert_type(x, ring.signed_dtype)
  return (signed.astype(jnp.float64) * np.float64(2.0**-frac)).astype(jnp.float32)


@with_x64
def decode(x_ring: Any, ring: Ring, *, frac: int | None = None) -> jax.Array:
  """The real value of ring elements: ``signed(x) / 2^frac`` as float32.

  Computed in float64 and rounded once to float32 (values of a 64-bit ring keep
  only float32's 24 significant bits).

  Args:
    x_ring: ``ring.dtype`` array.
    ring: the ring.
    frac: fraction bits (default ``ring.frac``).

  Returns:
    float32 array of the same shape.
  """
  ring = _check_ring(ring)
  frac = _frac(ring, frac)
  return _decode_core(check_ring_array(x_ring, ring, "x_ring"), ring, frac)


@with_x64
def to_signed(x_ring: Any, ring: Ring) -> jax.Array:
  """The two's complement view: int32 / int64 in ``[-2^(bits-1), 2^(bits-1))``."""
  ring = _check_ring(ring)
  return jax.lax.bitcast_convert_type(check_ring_array(x_ring, ring, "x_ring"), ring.signed_dtype)


@with_x64
def from_signed(x_int: Any, ring: Ring) -> jax.Array:
  """Integers (any int dtype, e.g. from `to_signed`) as ring elements mod 2^bits."""
  ring = _check_ring(ring)
  dt = getattr(x_int, "dtype", None)
  if dt is None or not jnp.issubdtype(dt, jnp.integer) or np.dtype(dt) == np.bool_:
    raise TypeError(f"x_int: expected an integer array, given {dt if dt is not None else x_int!r}")
  x = jnp.asarray(x_int)
  if jnp.issubdtype(dt, jnp.signedinteger):
    x = x.astype(jnp.int64)
  return x.astype(ring.dtype)


# ----------------------------------------------------------------------- ring einsum


def _term_sizes(term: str, shape: tuple[int, ...], which: str, spec: str) -> dict[str, int]:
  """Letter -> dimension for one einsum operand (``...`` allowed)."""
  if "..." in term:
    pre, post = term.split("...", 1)
    if "." in pre or "." in post:
      raise ValueError(f"spec: malformed ellipsis in {spec!r}")
    if len(pre) + len(post) > len(shape):
      raise ValueError(
          f"{which}: spec {spec!r} names {len(pre) + len(post)} dims plus '...', given"
          f" shape {shape}")
    dims = list(zip(pre, shape[:len(pre)])) + list(zip(post, shape[len(shape) - len(post):]))
  else:
    if len(term) != len(shape):
      raise ValueError(
          f"{which}: spec {spec!r} expects {len(term)} dims ({term!r}), given shape {shape}")
    dims = list(zip(term, shape))
  out: dict[str, int] = {}
  for letter, size in dims:
    if not letter.isalpha():
      raise ValueError(f"spec: expected letters, '...', ',' and '->', given {spec!r}")
    if out.setdefault(letter, size) != size:
      raise ValueError(f"{which}: index {letter!r} has two sizes in shape {shape}")
  return out


def contraction_length(spec: str, a_shape: tuple[int, ...], b_shape: tuple[int, ...]) -> int:
  """K: the number of products summed into each output element of ``einsum(spec, a, b)``.

  Every index that appears in an input but not in the output is summed over.
  The spec must be explicit (``"ij,jk->ik"``); ``...`` must appear in the output
  when it appears in an input.
  """
  if not isinstance(spec, str) or "->" not in spec:
    raise ValueError(f"spec: expected an explicit two-operand einsum like 'ij,jk->ik', given {spec!r}")
  ins, out = spec.replace(" ", "").split("->")
  terms = ins.split(",")
  if len(terms) != 2:
    raise ValueError(f"spec: expected two operands, given {spec!r}")
  if ("..." in terms[0] or "..." in terms[1]) and "..." not in out:
    raise ValueError(f"spec: '...' in an input must also be in the output, given {spec!r}")
  sa = _term_sizes(terms[0], tuple(a_shape), "a", spec)
  sb = _term_sizes(terms[1], tuple(b_shape), "b", spec)
  for letter in set(sa) & set(sb):
    if sa[letter] != sb[letter]:
      raise ValueError(
          f"a, b: index {letter!r} of spec {spec!r} has size {sa[letter]} in a {tuple(a_shape)}"
          f" but {sb[letter]} in b {tuple(b_shape)}")
  out_letters = set(out.replace("...", ""))
  missing = out_letters - set(sa) - set(sb)
  if missing:
    raise ValueError(f"spec: output indices {sorted(missing)} appear in no input of {spec!r}")
  sizes = {**sa, **sb}
  return math.prod(sizes[k] for k in sizes if k not in out_letters)


def _limbs(x: jax.Array, n: int) -> list[jax.Array]:
  mask = np.asarray(2**LIMB_BITS - 1, x.dtype)
  return [((x >> np.asarray(LIMB_BITS * i, x.dtype)) & mask).astype(jnp.float64)
          for i in range(n)]


def _einsum_limbs(spec: str, a: jax.Array, b: jax.Array, ring: Ring) -> jax.Array:
  """Exact ``einsum(spec, a, b) mod 2^bits`` from float64 products of 16-bit limbs."""
  n = ring.bits // LIMB_BITS
  a_l, b_l = _limbs(a, n), _limbs(b, n)
  out = None
  for d in range(n):  # limb products of weight 2^(16 d); those with d >= n vanish mod 2^bits
    acc = None
    for i in range(d + 1):
      p = jnp.einsum(spec, a_l[i], b_l[d - i], preferred_element_type=jnp.float64,
                     precision=jax.lax.Precision.HIGHEST).astype(jnp.uint64)
      acc = p if acc is None else acc + p
    term = acc << np.uint64(LIMB_BITS * d)
    out = term if out is None else out + term
  return out.astype(ring.dtype)


@functools.partial(jax.jit, static_argnames=("spec", "ring", "method"))
def _ring_einsum_core(spec: str, a: jax.Array, b: jax.Array, ring: Ring, method: str) -> jax.Array:
  if method == "native":
    return jnp.einsum(spec, a, b, preferred_element_type=ring.dtype)
  return _einsum_limbs(spec, a, b, ring)


def check_einsum(spec: str, a: Any, b: Any, ring: Ring, method: str = "limbs") -> int:
  """Validates a ring einsum's operands (static shapes); returns K."""
  if method not in METHODS:
    raise ValueError(f"method: expected one of {METHODS}, given {method!r}")
  k = contraction_length(spec, a.shape, b.shape)
  if method == "limbs" and k > MAX_K:
    raise ValueError(
        f"a, b: contraction length K={k} of {spec!r} is too large for the exact limb"
        f" product: K * (2^16 - 1)^2 must be <= 2^53, i.e. K <= {MAX_K}; split the"
        " contraction or use method='native'")
  return k


@with_x64
def ring_einsum(spec: str, a: Any, b: Any, ring: Ring, *, method: str = "limbs") -> jax.Array:
  """Exact two-operand einsum of ring elements, mod 2^bits.

  ``out = sum_K a * b mod 2^bits`` for the indices summed by `spec` (explicit,
  e.g. ``"bhqd,bhkd->bhqk"``). ``method="limbs"`` (default) is exact while the
  contraction length ``K <= MAX_K`` and raises otherwise; ``"native"`` uses
  XLA's integer dot (exact for any K, slow on CPU).

  Args:
    spec: explicit einsum spec with two operands.
    a, b: ``ring.dtype`` arrays.
    ring: the ring.
    method: "limbs" or "native".

  Returns:
    ``ring.dtype`` array.

  >>> import jax.numpy as jnp
  >>> a = jnp.array([[2**31, 3]], jnp.uint32)
  >>> ring_einsum("ik,kj->ij", a, jnp.array([[2], [5]], jnp.uint32), RING32).tolist()
  [[15]]
  """
  ring = _check_ring(ring)
  a = check_ring_array(a, ring, "a")
  b = check_ring_array(b, ring, "b")
  check_einsum(spec, a, b, ring, method)
  return _ring_einsum_core(spec.replace(" ", ""), a, b, ring, method)


@with_x64
def ring_matmul(a: Any, b: Any, ring: Ring, *, method: str = "limbs") -> jax.Array:
  """Exact ``a @ b mod 2^bits`` for ``a: (..., K)`` and ``b: (K, N)``.

  See `ring_einsum` (this is ``"...k,kn->...n"``).
  """
  ring = _check_ring(ring)
  a = check_ring_array(a, ring, "a")
  b = check_ring_array(b, ring, "b")
  if a.ndim < 1 or b.ndim != 2:
    raise ValueError(f"a, b: expected a (..., K) and b (K, N), given {a.shape} and {b.shape}")
  if a.shape[-1] != b.shape[0]:
    raise ValueError(
        f"a, b: expected a.shape[-1] == b.shape[0] (K), given {a.shape} and {b.shape}")
  return ring_einsum("...k,kn->...n", a, b, ring, method=method)
