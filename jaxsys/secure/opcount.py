"""`OpCount`: the secure operations an elementwise approximation costs, per element.

Every approximation in `jaxsys.secure.approx` carries one, and
`jaxsys.secure.cost` prices it in bytes and rounds for a given ring. The counts
are those of evaluating the function on additive shares:

* ``comparisons``: secure less-than of a shared value against a public constant
  (a millionaires' protocol on ``ring_bits``-bit inputs);
* ``muxes``: secure selects, a shared bit times a shared value;
* ``multiplications``: products of two shared values (squares included);
  products by public constants are local and not counted;
* ``mult_depth``: the multiplications that must run one after another (rounds);
* ``truncations``: fixed-point truncations after products;
* ``degree``: the highest polynomial degree evaluated (0 for none);
* ``ring_bits``: the ring the approximation is meant to run in (32 or 64).

Counts add with ``+`` (the ring must agree), so composite functions are tagged
by summing their parts; depth adds too (sequential composition).
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class OpCount:
  comparisons: int = 0
  muxes: int = 0
  multiplications: int = 0
  mult_depth: int = 0
  truncations: int = 0
  degree: int = 0
  ring_bits: int = 64

  def __post_init__(self):
    for f in dataclasses.fields(self):
      v = getattr(self, f.name)
      if not isinstance(v, int) or isinstance(v, bool) or v < 0:
        raise ValueError(f"OpCount.{f.name}: expected a non-negative int, given {v!r}")
    if self.ring_bits not in (32, 64):
      raise ValueError(f"OpCount.ring_bits: expected 32 or 64, given {self.ring_bits}")

  def __add__(self, other: "OpCount") -> "OpCount":
    if not isinstance(other, OpCount):
      return NotImplemented
    if other.ring_bits != self.ring_bits:
      raise ValueError(
          f"OpCount +: rings differ ({self.ring_bits} vs {other.ring_bits} bits);"
          " price them separately")
    return OpCount(
        comparisons=self.comparisons + other.comparisons,
        muxes=self.muxes + other.muxes,
        multiplications=self.multiplications + other.multiplications,
        mult_depth=self.mult_depth + other.mult_depth,
        truncations=self.truncations + other.truncations,
        degree=max(self.degree, other.degree),
        ring_bits=self.ring_bits)
