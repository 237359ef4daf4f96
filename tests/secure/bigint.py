"""A pure-Python big-integer reference for fixed point over Z_2^l and its protocols.

Everything here works on Python ints and `fractions.Fraction`, element by
element, with no JAX and no fixed-width arithmetic, so it is independent of the
code under test. Ring elements are ints in ``[0, 2^l)``; signed values are ints
in ``[-2^(l-1), 2^(l-1))``.
"""

from __future__ import annotations

import itertools
import math
from fractions import Fraction


def mod(x: int, bits: int) -> int:
  return x % (1 << bits)


def signed(v: int, bits: int) -> int:
  """Two's complement value of ring element v."""
  v = mod(v, bits)
  return v - (1 << bits) if v >= 1 << (bits - 1) else v


def encode(x, bits: int, frac: int) -> int:
  """round(x 2^frac) (half to even) mod 2^bits; ValueError out of range."""
  v = round(Fraction(x) * (1 << frac))  # Fraction.__round__ is half to even
  if not -(1 << (bits - 1)) <= v < 1 << (bits - 1):
    raise ValueError(f"{x} does not fit")
  return mod(v, bits)


def decode(v: int, bits: int, frac: int) -> Fraction:
  return Fraction(signed(v, bits), 1 << frac)


def floor_shift(x: int, s: int) -> int:
  """floor(x / 2^s) for a signed int (Python's >> floors)."""
  return x >> s


def ring_mul(a: int, b: int, bits: int) -> int:
  return mod(a * b, bits)


def einsum(spec: str, a, b, bits: int):
  """Two-operand einsum of nested lists of ints, mod 2^bits (no ellipsis)."""
  ins, out = spec.split("->")
  ta, tb = ins.split(",")

  def shape(x, n):
    dims = []
    for _ in range(n):
      dims.append(len(x))
      x = x[0] if len(x) else []
    return dims

  size = dict(zip(ta, shape(a, len(ta))))
  size.update(zip(tb, shape(b, len(tb))))
  summed = [k for k in dict.fromkeys(ta + tb) if k not in out]

  def get(x, term, idx):
    for k in term:
      x = x[idx[k]]
    return x

  def build(prefix, rest):
    if not rest:
      total = 0
      for vals in itertools.product(*[range(size[k]) for k in summed]):
        idx = {**prefix, **dict(zip(summed, vals))}
        total += get(a, ta, idx) * get(b, tb, idx)
      return mod(total, bits)
    k = rest[0]
    return [build({**prefix, k: i}, rest[1:]) for i in range(size[k])]

  return build({}, list(out))


# ----------------------------------------------------------------------- truncations


def secureml_trunc(c: int, s: int, t: int, bits: int) -> tuple[int, int]:
  """SecureML local truncation on shares: (c >> t, -((-s mod 2^l) >> t)) mod 2^l."""
  return mod(c >> t, bits), mod(-(mod(-s, bits) >> t), bits)


def secureml_fails(c: int, x: int, bits: int) -> bool:
  """SecureML fails iff c - x wraps (leaves [0, 2^l)) over the integers."""
  return not 0 <= c - x < 1 << bits


def wrap_trunc(c: int, s: int, t: int, bits: int, out_bits: int) -> int:
  """Cheetah / Nimbus wrap-bit truncation of shares (c, s) of Z_2^bits into Z_2^out_bits.

  x' = x + 2^(bits-2) (the client adds the offset); w = 1{c' + s >= 2^bits};
  result = (c' >> t) + (s >> t) - w 2^(bits-t) - 2^(bits-2-t), as a signed int.
  """
  off = 1 << (bits - 2)
  cp = mod(c + off, bits)
  w = 1 if cp + s >= 1 << bits else 0
  r = (cp >> t) + (s >> t) - w * (1 << (bits - t)) - (off >> t)
  return signed(mod(r, out_bits), out_bits)


def msb_wrap(c: int, s: int, bits: int) -> int:
  """Cheetah's wrap bit when the MSB of x' is known to be 0: msb(c') OR msb(s)."""
  cp = mod(c + (1 << (bits - 2)), bits)
  return (cp >> (bits - 1)) | (s >> (bits - 1))


# ---------------------------------------------------------------- ideal functionalities


def reciprocal(x: int, frac: int) -> int:
  """round(2^(2 frac) / x), nearest with ties away from zero; x = 0 taken as 1."""
  if x == 0:
    x = 1
  q = Fraction(1 << (2 * frac), abs(x))
  y = math.floor(q + Fraction(1, 2))
  return y if x > 0 else -y


def rsqrt(x: int, frac: int) -> int:
  """The integer nearest sqrt(2^(3 frac) / x) (ties up); x <= 0 taken as 1."""
  x = max(x, 1)
  r = Fraction(1 << (3 * frac), x)
  y = math.isqrt(r.numerator // r.denominator)
  for cand in (y - 1, y, y + 1, y + 2):  # y <= sqrt(r) < y + 1; nearest is y or y + 1
    lo, hi = Fraction(2 * cand - 1, 2), Fraction(2 * cand + 1, 2)
    if cand >= 0 and (cand == 0 or lo * lo <= r) and r < hi * hi:
      return cand
  raise AssertionError("no nearest integer found")
