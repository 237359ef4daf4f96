"""Drop-in GELU / softmax approximations for secure inference, and their registry.

Every approximation is an `Activation`: a jitted callable with the signature
`jaxsys.models.minilm` takes (``gelu_fn(x)`` or ``softmax_fn(scores, axis)``),
the secure-op cost tag (`OpCount`, per input element), where its formula and
constants come from, and, where the function is piecewise polynomial in x, its
`PiecewisePoly`: a pure data description (breakpoints + per-piece polynomial)
that the two-party simulator evaluates on secret shares.

`PiecewisePoly` (breakpoints ``b_1 < ... < b_k``, pieces ``P_0 .. P_k``)::

    f(x) = P_i(x)   for b_i <= x < b_{i+1}    (b_0 = -inf, b_{k+1} = +inf)

A piece is ``"zero"``, ``"identity"`` or coefficients ``(c0, c1, ..., cd)``,
lowest power first: ``P(x) = c0 + c1 x + ... + cd x^d``. Ties go right: at
``x == b_i`` the piece above applies (``x >= b_i`` is the comparison).

Softmax approximations (`softmax_from_exp`)::

    x = scores - max(scores, axis)      (unless max_subtract=False)
    e = exp_fn(x);  softmax = e / max(sum(e, axis), SUM_EPS)

Keys whose score is ``<= MASKED_SCORE = -1e29`` (MiniLM gives padded keys
``-1e30``) get weight exactly 0 in every softmax here, whatever ``exp_fn``
would give them: 2Quad's ``(x + 5)^2`` would otherwise give them ~1e60, and the
limit exp would overflow. In 2PC the padding mask is public, so this costs
nothing. A row with no unmasked key gives all zeros (``jax.nn.softmax`` would
give a uniform row); ``SUM_EPS`` only guards all-zero rows (2ReLU when every
score is <= 0), rows with a sum >= SUM_EPS sum to 1.

Registered entries (`names()`; jaxsys ``papers/secure.md`` 1.3-1.4, constants at
the full precision of the authors' code, which rounds to the values quoted
there):

* ``exact_gelu`` (erf GELU), ``exact_softmax``: the plaintext references;
* ``nimbus_public_gelu``: ``0`` for x < -1.8, ``0.170255 x^2 + 0.324211 x -
  0.006946`` on [-1.8, 0.5), ``x`` from 0.5 (Nimbus ``ours_fake_gelu``). It
  JUMPS at 0.5: the quadratic gives 0.198 there, the identity 0.5 (exact GELU
  0.346). Kept as published: the README calls the constants "examples";
* ``nimbus_public_exp_softmax``: after max-subtraction,
  ``((0.029179 x + 0.263326) x + 0.831807) x + 0.970898`` for x >= -3.9, else 0;
* ``puma_gelu``: 0 below -5; cubic on [-5, -1.97); degree-6 even+linear
  polynomial on [-1.97, 3); ``x`` from 3 (PUMA-style, Nimbus ``bumblebee_gelu``);
* ``bumblebee_gelu``: BumbleBee seg3, ``0.5 x + 0.001621 - 0.037982 |x| +
  0.541055 x^2 - 0.183525 |x|^3 + 0.020849 x^4`` on [-3, 3), 0 below, ``x`` above.
  Its ``spec`` is None: the protocol takes |x| with a mux and evaluates one
  polynomial in |x| (the cost tag counts that), although the same values are
  a 4-piece spec with breakpoints -3, 0, 3;
* ``limit_exp_softmax``: ``exp(x) ~ (1 + x / 2^8)^(2^8)`` (8 squarings), 0 for
  x < -14 (BumbleBee ``f_neg_exp_taylor``, PUMA ``hack_softmax``, SPU's
  default TAYLOR exp with ``fxp_exp_iters = 8``);
* ``crypten_exp_softmax``: the same limit formula with 8 iterations and no
  mask (CrypTen ``approximations.exp``). For x < -2^8 the base ``1 + x / 2^8``
  is negative and its 2^8-th power grows again (above 1 for x < -2^9, inf in
  float32 for x below about -1000); CrypTen has this flaw and so does this entry;
* ``mpcformer_quad_gelu``: ``0.125 x^2 + 0.5 x + 0.25``;
* ``mpcformer_2quad_softmax``: ``(x + 5)^2 / sum (x + 5)^2`` on RAW scores (no
  max-subtraction: MPCFormer's ``softmax_2QUAD`` applies it to the scores as
  they are, and ``(x + 5)^2`` is not shift invariant);
* ``mpcformer_2relu_softmax``: ``ReLU(x) / max(sum ReLU(x), SUM_EPS)`` on raw
  scores (MPCFormer's ``softmax_2RELU`` has no epsilon; an all-zero row here
  gives zeros instead of NaN).

Ties at breakpoints follow the rule above. The published codes compare with
``>`` at three points, so they differ from the entries exactly there: Nimbus
GELU at x = 0.5 (code: the quadratic), Nimbus exp at x = -3.9 (code: 0), PUMA
GELU at x = 3 (code: the polynomial). Either comparison costs the same in 2PC.

Counting convention of the cost tags (`OpCount`, per input element):

* ``comparisons``: one per breakpoint (a secure ``x < b`` against a public b);
* ``muxes``: one select per piece that is not ``"zero"`` (the piece's value
  times its interval bit), none for a single-piece polynomial;
* ``multiplications`` / ``mult_depth``: the POWER method, not Horner: the
  powers ``x^k`` (k >= 2) with a nonzero coefficient in any piece are computed
  once, by the shortest chain of secret products (then the least depth; PUMA
  needs x^2, x^3, x^4, x^6: 4 products, depth 3), and each piece is a local
  linear combination of them with public coefficients. For degree <= 3 this
  equals Horner's count of secret products (Horner's first step ``c_d x`` is a
  public product); its depth is ``ceil(log2 d)``-like instead of ``d - 1``;
* ``truncations``: one per secret product, plus one per polynomial piece whose
  coefficients of x^1.. are not all integers (the public-coefficient linear
  combination is accumulated at double scale and truncated once);
* ``degree``: the highest power evaluated (1 for a piece ``"identity"``);
* ``ring_bits``: 32 for Nimbus and BumbleBee (they run these in Z_2^32), 64 for
  PUMA, SPU, CrypTen and MPCFormer.

Softmax entries tag only the elementwise part (exp, or its stand-in); the
row max, sum and reciprocal are priced by the cost model (`jaxsys.secure.cost`).
The exact entries have ``opcount=None``: they have no secure evaluation.

Float evaluation: inputs are computed in float32 (float64 stays float64) and
cast back, so the result keeps the input dtype.

>>> import jax.numpy as jnp
>>> from jaxsys.secure import approx
>>> g = approx.get("nimbus_public_gelu")
>>> [round(v, 4) for v in g.fn(jnp.array([-2.0, 0.0, 1.0])).tolist()]
[0.0, -0.0069, 1.0]
>>> g.opcount.comparisons, g.opcount.multiplications, g.opcount.muxes
(2, 1, 2)
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import math
from collections.abc import Callable, Sequence
from typing import Any, Union

import jax
import jax.numpy as jnp
import numpy as np

from jaxsys.secure.opcount import OpCount

KINDS = ("gelu", "softmax")
TAILS = ("zero", "identity")
MASKED_SCORE = -1e29  # scores at or below this are masked keys (MiniLM uses -1e30)
SUM_EPS = 1e-12  # softmax denominators are max(sum, SUM_EPS)

Piece = Union[str, tuple[float, ...]]


# ----------------------------------------------------------------------------- checks


def _check_real(name: str, value: Any) -> float:
  """`value` as a finite float; a clear error otherwise."""
  if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer,
                                                                   np.floating)):
    raise TypeError(f"{name}: expected a finite real number, given {value!r}")
  v = float(value)
  if not math.isfinite(v):
    raise ValueError(f"{name}: expected a finite real number, given {value!r}")
  return v


def _check_floating(name: str, x: jax.Array) -> None:
  if not jnp.issubdtype(x.dtype, jnp.floating):
    raise TypeError(f"{name}: expected a floating array, given dtype {x.dtype}")


def _compute_dtype(dtype: Any) -> Any:
  """float64 stays float64; float32 / bfloat16 / float16 compute in float32."""
  return jnp.float64 if np.dtype(dtype) == np.dtype(np.float64) else jnp.float32


def _piece(name: str, piece: Any) -> Piece:
  if isinstance(piece, str):
    if piece not in TAILS:
      raise ValueError(
          f"{name}: expected 'zero', 'identity' or a tuple of coefficients (lowest power"
          f" first), given {piece!r}")
    return piece
  if isinstance(piece, (bool, int, float, np.number)) or not isinstance(
      piece, (Sequence, np.ndarray)):
    raise TypeError(
        f"{name}: expected 'zero', 'identity' or a tuple of coefficients (lowest power"
        f" first), given {piece!r}")
  coeffs = tuple(_check_real(f"{name}[{k}]", c) for k, c in enumerate(piece))
  if not coeffs:
    raise ValueError(f"{name}: expected at least one coefficient, given an empty sequence")
  return coeffs


def _poly_degree(coeffs: tuple[float, ...]) -> int:
  """The highest power with a nonzero coefficient (0 for a constant)."""
  for k in range(len(coeffs) - 1, 0, -1):
    if coeffs[k] != 0.0:
      return k
  return 0


# ------------------------------------------------------------------------ power chains


def _chain_depth(powers: Sequence[int]) -> int | None:
  """Depth of computing `powers` (sorted, all >= 2) from x, each as a product of two
  earlier ones; None when some power is not the sum of two available ones."""
  depth = {1: 0}
  for p in powers:
    options = [max(depth[a], depth[p - a]) + 1 for a in depth if a <= p - a and p - a in depth]
    if not options:
      return None
    depth[p] = min(options)
  return max(depth.values())


@functools.lru_cache(maxsize=None)
def power_chain(needed: frozenset[int]) -> tuple[int, int]:
  """``(products, depth)`` of computing every ``x^k``, k in `needed` (k >= 2).

  The fewest secret products (squares included), then the least depth, over
  all chains whose members are sums of two earlier members (exhaustive up to
  degree 12; a binary chain above). ``{2, 3, 4, 6}`` (PUMA) -> ``(4, 3)``.
  """
  if not needed:
    return 0, 0
  if min(needed) < 2:
    raise ValueError(f"needed: expected powers >= 2, given {sorted(needed)}")
  top = max(needed)
  if top <= 12:
    extra = [k for k in range(2, top) if k not in needed]
    for r in range(len(extra) + 1):
      best = None
      for combo in itertools.combinations(extra, r):
        depth = _chain_depth(sorted(needed | set(combo)))
        if depth is not None and (best is None or depth < best):
          best = depth
      if best is not None:
        return len(needed) + r, best
  chain = {1 << j for j in range(1, top.bit_length()) if (1 << j) <= top}
  for p in needed:
    acc = 0
    for bit in range(p.bit_length() - 1, -1, -1):
      if p >> bit & 1:
        acc += 1 << bit
        if acc > 1:
          chain.add(acc)
  depth = _chain_depth(sorted(chain))
  assert depth is not None
  return len(chain), depth


# -------------------------------------------------------------------------- the spec


@dataclasses.dataclass(frozen=True)
class PiecewisePoly:
  """A piecewise-polynomial function of x, as data (hashable, static under jit).

  ``f(x) = pieces[i](x)`` for ``breakpoints[i-1] <= x < breakpoints[i]``; the
  first piece is unbounded below, the last unbounded above, and at a breakpoint
  the piece above applies. A piece is ``"zero"``, ``"identity"`` or polynomial
  coefficients lowest power first, ``(c0, c1, ..., cd)``. Sequences are
  normalised to tuples of floats.

  Calling it evaluates f in jnp (Horner per piece, each piece on x clipped to
  its interval so the other branches stay finite under `jax.grad`); NaN
  propagates. `evaluate_np` is the same in float64 numpy; `opcount` the secure
  cost (module docstring for the convention).

  >>> f = PiecewisePoly((-1.0, 1.0), ("zero", (0.25, 0.5, 0.25), "identity"))
  >>> f(jnp.array([-2.0, 0.0, 2.0])).tolist()
  [0.0, 0.25, 2.0]
  """

  breakpoints: tuple[float, ...]
  pieces: tuple[Piece, ...]

  def __post_init__(self):
    bps = self.breakpoints
    if isinstance(bps, (str, bytes)) or not isinstance(bps, (Sequence, np.ndarray)):
      raise TypeError(
          f"PiecewisePoly.breakpoints: expected a sequence of finite numbers, given {bps!r}")
    bps = tuple(_check_real(f"PiecewisePoly.breakpoints[{i}]", b) for i, b in enumerate(bps))
    for i in range(1, len(bps)):
      if not bps[i - 1] < bps[i]:
        raise ValueError(
            "PiecewisePoly.breakpoints: expected strictly ascending values, given"
            f" {bps} (breakpoints[{i - 1}] = {bps[i - 1]} >= breakpoints[{i}] = {bps[i]})")
    pieces = self.pieces
    if isinstance(pieces, (str, bytes)) or not isinstance(pieces, (Sequence, np.ndarray)):
      raise TypeError(f"PiecewisePoly.pieces: expected a sequence of pieces, given {pieces!r}")
    if len(pieces) != len(bps) + 1:
      raise ValueError(
          f"PiecewisePoly.pieces: expected len(breakpoints) + 1 = {len(bps) + 1} pieces,"
          f" given {len(pieces)}")
    pieces = tuple(_piece(f"PiecewisePoly.pieces[{i}]", p) for i, p in enumerate(pieces))
    object.__setattr__(self, "breakpoints", bps)
    object.__setattr__(self, "pieces", pieces)

  def interval(self, i: int) -> tuple[float, float]:
    """``[lo, hi)`` covered by piece i (``-inf`` / ``inf`` at the ends)."""
    lo = self.breakpoints[i - 1] if i > 0 else -math.inf
    hi = self.breakpoints[i] if i < len(self.breakpoints) else math.inf
    return lo, hi

  @property
  def degree(self) -> int:
    """The highest power over the pieces (``"identity"`` counts 1, ``"zero"`` 0)."""
    deg = 0
    for p in self.pieces:
      deg = max(deg, 1 if p == "identity" else 0 if p == "zero" else _poly_degree(p))
    return deg

  def __call__(self, x: jax.Array) -> jax.Array:
    return _evaluate(self, jnp.asarray(x))

  def evaluate_np(self, x: Any) -> np.ndarray:
    """f(x) in float64 numpy, same pieces and tie rule (for fitting and references)."""
    x = np.asarray(x, np.float64)
    idx = np.zeros(x.shape, np.int64)
    for b in self.breakpoints:
      idx += x >= b
    out = np.zeros(x.shape, np.float64)
    for i, p in enumerate(self.pieces):
      if p == "zero":
        continue
      if p == "identity":
        val = x
      else:
        val = np.full(x.shape, p[-1])
        for c in reversed(p[:-1]):
          val = val * x + c
      out = np.where(idx == i, val, out)
    return np.where(np.isnan(x), x, out)

  def opcount(self, ring_bits: int = 32) -> OpCount:
    """Secure ops per element (module docstring: power method, one mux per non-zero piece).

    >>> nimbus_gelu(-1.8, 0.5, (0.0, 0.3, 0.2)).opcount(32).multiplications
    1
    """
    polys = [p for p in self.pieces if not isinstance(p, str)]
    needed = frozenset(k for p in polys for k in range(2, len(p)) if p[k] != 0.0)
    mults, depth = power_chain(needed)
    lin_truncs = sum(1 for p in polys if any(c != float(int(c)) for c in p[1:]))
    muxes = 0 if len(self.pieces) == 1 else sum(1 for p in self.pieces if p != "zero")
    return OpCount(
        comparisons=len(self.breakpoints), muxes=muxes, multiplications=mults,
        mult_depth=depth, truncations=mults + lin_truncs, degree=self.degree,
        ring_bits=ring_bits)


def _horner(coeffs: tuple[float, ...], x: jax.Array) -> jax.Array:
  acc = jnp.full(x.shape, coeffs[-1], x.dtype)
  for c in reversed(coeffs[:-1]):
    acc = acc * x + jnp.asarray(c, x.dtype)
  return acc


@functools.partial(jax.jit, static_argnums=0)
def _evaluate(spec: PiecewisePoly, x: jax.Array) -> jax.Array:
  _check_floating("x", x)
  xc = x.astype(_compute_dtype(x.dtype))
  idx = jnp.zeros(xc.shape, jnp.int32)
  for b in spec.breakpoints:
    idx = idx + (xc >= jnp.asarray(b, xc.dtype)).astype(jnp.int32)
  out = jnp.zeros_like(xc)
  for i, p in enumerate(spec.pieces):
    if p == "zero":
      continue
    if p == "identity":
      val = xc
    else:
      lo, hi = spec.interval(i)
      xi = xc
      if lo > -math.inf:
        xi = jnp.maximum(xi, jnp.asarray(lo, xc.dtype))
      if hi < math.inf:
        xi = jnp.minimum(xi, jnp.asarray(hi, xc.dtype))
      val = _horner(p, xi)
    out = val if len(spec.pieces) == 1 else jnp.where(idx == i, val, out)
  return jnp.where(jnp.isnan(xc), xc, out).astype(x.dtype)


def nimbus_gelu(lo: float, hi: float, coeffs: Sequence[float]) -> PiecewisePoly:
  """Nimbus-shaped GELU: ``0`` below lo, ``sum_k coeffs[k] x^k`` on [lo, hi), ``x`` from hi.

  >>> nimbus_gelu(-2.0, 1.0, (0.0, 0.5, 0.25)).breakpoints
  (-2.0, 1.0)
  """
  lo = _check_real("lo", lo)
  hi = _check_real("hi", hi)
  if not lo < hi:
    raise ValueError(f"lo, hi: expected lo < hi, given lo={lo}, hi={hi}")
  return PiecewisePoly((lo, hi), ("zero", _piece("coeffs", coeffs), "identity"))


def nimbus_exp(threshold: float, coeffs: Sequence[float]) -> PiecewisePoly:
  """Nimbus-shaped exp (for max-subtracted inputs): ``0`` below threshold, the polynomial
  ``sum_k coeffs[k] x^k`` from it (no range reduction; the clip replaces it)."""
  threshold = _check_real("threshold", threshold)
  return PiecewisePoly((threshold,), ("zero", _piece("coeffs", coeffs)))


# ----------------------------------------------------------------------- activations


GeluFn = Callable[[jax.Array], jax.Array]
SoftmaxFn = Callable[..., jax.Array]


@dataclasses.dataclass(frozen=True)
class Activation:
  """One approximation, ready to pass to MiniLM as ``gelu_fn`` / ``softmax_fn``.

  Attributes:
    name: registry key.
    kind: "gelu" (``fn(x)``) or "softmax" (``fn(scores, axis)``).
    fn: the jitted callable; same shape and dtype out.
    opcount: secure ops per input element (`OpCount`); for softmax, of the
      exp / elementwise part only (max, sum and reciprocal are priced by the
      cost model). None for the exact references.
    source: where the formula and constants come from.
    spec: the `PiecewisePoly` of the GELU or of the exp stand-in; None where the
      evaluation is not a coefficient list in x (erf, repeated squaring, |x|).
  """

  name: str
  kind: str
  fn: Callable[..., jax.Array]
  opcount: OpCount | None
  source: str
  spec: PiecewisePoly | None = None

  def __post_init__(self):
    if not isinstance(self.name, str) or not self.name:
      raise ValueError(f"Activation.name: expected a non-empty str, given {self.name!r}")
    if self.kind not in KINDS:
      raise ValueError(f"Activation.kind: expected one of {KINDS}, given {self.kind!r}")
    if not callable(self.fn):
      raise TypeError(f"Activation.fn: expected a callable, given {self.fn!r}")
    if self.opcount is not None and not isinstance(self.opcount, OpCount):
      raise TypeError(f"Activation.opcount: expected an OpCount or None, given {self.opcount!r}")
    if not isinstance(self.source, str) or not self.source:
      raise ValueError(f"Activation.source: expected a non-empty str, given {self.source!r}")
    if self.spec is not None and not isinstance(self.spec, PiecewisePoly):
      raise TypeError(f"Activation.spec: expected a PiecewisePoly or None, given {self.spec!r}")

  def __call__(self, *args: Any, **kwargs: Any) -> jax.Array:
    return self.fn(*args, **kwargs)


def _gelu_jit(f: Callable[[jax.Array], jax.Array], name: str) -> GeluFn:
  """Jitted ``gelu_fn(x)``: checks a floating x, computes in float32/64, keeps x's dtype."""

  def gelu_fn(x: jax.Array) -> jax.Array:
    x = jnp.asarray(x)
    _check_floating("x", x)
    return f(x.astype(_compute_dtype(x.dtype))).astype(x.dtype)

  gelu_fn.__name__ = gelu_fn.__qualname__ = name
  return jax.jit(gelu_fn)


def softmax_from_exp(exp_fn: Callable[[jax.Array], jax.Array], *, max_subtract: bool = True,
                     eps: float = SUM_EPS, name: str = "softmax_fn") -> SoftmaxFn:
  """``softmax_fn(scores, axis)`` from an elementwise exp stand-in.

  ``x = scores - max(scores, axis)`` (when `max_subtract`), ``e = exp_fn(x)``,
  ``out = e / max(sum(e, axis), eps)``. Keys with ``scores <= MASKED_SCORE``
  get exactly 0 (and `exp_fn` sees 0 in their place, so it never sees -1e30);
  a row with no unmasked key gives zeros. Computed in float32 (float64 stays),
  returned in the scores' dtype; jitted with `axis` static.

  Args:
    exp_fn: elementwise ``x -> e`` in jnp, same shape and dtype (a
      `PiecewisePoly`, `jnp.exp`, ...).
    max_subtract: subtract the row max first (exp stand-ins); False for
      MPCFormer's 2Quad / 2ReLU, which work on raw scores.
    eps: floor of the denominator (guards all-zero rows).
    name: the function's ``__name__``.

  Returns:
    ``softmax_fn(scores, axis=-1)``.

  >>> sm = softmax_from_exp(jnp.exp)
  >>> [round(v, 4) for v in sm(jnp.array([0.0, 0.0, -1e30]), -1).tolist()]
  [0.5, 0.5, 0.0]
  """
  if not callable(exp_fn):
    raise TypeError(f"exp_fn: expected a callable, given {exp_fn!r}")
  if not isinstance(max_subtract, bool):
    raise TypeError(f"max_subtract: expected a bool, given {max_subtract!r}")
  eps = _check_real("eps", eps)
  if eps <= 0:
    raise ValueError(f"eps: expected a number > 0, given {eps}")

  def softmax_fn(scores: jax.Array, axis: int = -1) -> jax.Array:
    scores = jnp.asarray(scores)
    _check_floating("scores", scores)
    if isinstance(axis, bool) or not isinstance(axis, int) or not (
        -scores.ndim <= axis < scores.ndim):
      raise ValueError(
          f"axis: expected an int in [-{scores.ndim}, {scores.ndim}) for scores of shape"
          f" {scores.shape}, given {axis!r}")
    s = scores.astype(_compute_dtype(scores.dtype))
    masked = s <= jnp.asarray(MASKED_SCORE, s.dtype)
    x = s - jnp.max(s, axis=axis, keepdims=True) if max_subtract else s
    x = jnp.where(masked, jnp.zeros_like(x), x)
    e = jnp.where(masked, jnp.zeros_like(x), exp_fn(x).astype(s.dtype))
    z = jnp.maximum(jnp.sum(e, axis=axis, keepdims=True), jnp.asarray(eps, s.dtype))
    return (e / z).astype(scores.dtype)

  softmax_fn.__name__ = softmax_fn.__qualname__ = name
  return jax.jit(softmax_fn, static_argnums=(1,))


def activation_from_spec(name: str, kind: str, spec: PiecewisePoly, source: str, *,
                         ring_bits: int = 32) -> Activation:
  """An `Activation` from a (fitted) spec: the GELU itself, or the exp of a softmax.

  For ``kind="softmax"`` the spec is the exp stand-in, applied after
  max-subtraction by `softmax_from_exp`. ``opcount = spec.opcount(ring_bits)``
  (32: Nimbus runs its polynomials in Z_2^32). Register it with `register`.
  """
  if not isinstance(spec, PiecewisePoly):
    raise TypeError(f"spec: expected a PiecewisePoly, given {spec!r}")
  if kind == "gelu":
    fn = _gelu_jit(spec, name)
  elif kind == "softmax":
    fn = softmax_from_exp(spec, name=name)
  else:
    raise ValueError(f"kind: expected one of {KINDS}, given {kind!r}")
  return Activation(name, kind, fn, spec.opcount(ring_bits), source, spec)


# ------------------------------------------------------------------------- registry


_REGISTRY: dict[str, Activation] = {}


def register(activation: Activation, *, replace: bool = False) -> Activation:
  """Adds `activation` under its name (an existing name needs ``replace=True``)."""
  if not isinstance(activation, Activation):
    raise TypeError(f"activation: expected an Activation, given {activation!r}")
  if activation.name in _REGISTRY and not replace:
    raise ValueError(
        f"activation.name: {activation.name!r} is already registered; pass replace=True to"
        " overwrite it")
  _REGISTRY[activation.name] = activation
  return activation


def names(kind: str | None = None) -> tuple[str, ...]:
  """Registered names in registration order, all or those of one kind."""
  if kind is not None and kind not in KINDS:
    raise ValueError(f"kind: expected one of {KINDS} or None, given {kind!r}")
  return tuple(n for n, a in _REGISTRY.items() if kind is None or a.kind == kind)


def get(name: str) -> Activation:
  """The registered `Activation` called `name`."""
  if not isinstance(name, str):
    raise TypeError(f"name: expected a str, given {name!r}")
  if name not in _REGISTRY:
    raise ValueError(f"name: expected one of {names()}, given {name!r}")
  return _REGISTRY[name]


# ---------------------------------------------------------------- published entries

# Constants at the precision of the authors' code (secure.md quotes them rounded).
NIMBUS_GELU_LO, NIMBUS_GELU_HI = -1.8, 0.5
NIMBUS_GELU_COEFFS = (-0.006946478426716862, 0.32421075145645123, 0.17025471961795552)
NIMBUS_EXP_THRESHOLD = -3.9
NIMBUS_EXP_COEFFS = (0.9708981428645548, 0.8318065569430768, 0.26332572942924737,
                     0.0291786417536755)
PUMA_GELU_BREAKPOINTS = (-5.0, -1.97, 3.0)
PUMA_GELU_CUBIC = (-0.5054031199708174, -0.4222658115198386, -0.1180761295118195,
                   -0.0110341340306157)
PUMA_GELU_SEXTIC = (0.0085263215410380, 0.5, 0.3603292692789629, 0.0, -0.037688200365904, 0.0,
                    0.0018067462606141)
# 0.5 x + c0 + c1 |x| + c2 x^2 + c3 |x|^3 + c4 x^4 on [-3, 3)
BUMBLEBEE_GELU_COEFFS = (0.001620808531841547, -0.03798164612714154, 0.5410550166368381,
                         -0.18352506127082727, 0.020848611754127593)
BUMBLEBEE_GELU_RANGE = 3.0
LIMIT_EXP_ITERS = 8
LIMIT_EXP_MASK_BELOW = -14.0
MPCFORMER_QUAD_COEFFS = (0.25, 0.5, 0.125)
MPCFORMER_2QUAD_COEFFS = (25.0, 10.0, 1.0)  # (x + 5)^2


def _exact_gelu(x: jax.Array) -> jax.Array:
  return jax.nn.gelu(x, approximate=False)


def _bumblebee_gelu(x: jax.Array) -> jax.Array:
  r = jnp.asarray(BUMBLEBEE_GELU_RANGE, x.dtype)
  xs = jnp.clip(x, -r, r)  # the polynomial on its own interval only (finite grads)
  a = jnp.abs(xs)
  x2 = xs * xs
  c0, c1, c2, c3, c4 = (jnp.asarray(c, x.dtype) for c in BUMBLEBEE_GELU_COEFFS)
  seg = jnp.asarray(0.5, x.dtype) * xs + c0 + c1 * a + c2 * x2 + c3 * a * x2 + c4 * x2 * x2
  out = jnp.where(x >= r, x, jnp.where(x >= -r, seg, jnp.zeros_like(x)))
  return jnp.where(jnp.isnan(x), x, out)


def limit_exp(x: jax.Array, *, iters: int = LIMIT_EXP_ITERS,
              mask_below: float | None = LIMIT_EXP_MASK_BELOW) -> jax.Array:
  """``(1 + x / 2^iters)^(2^iters)`` by `iters` squarings; 0 below `mask_below` (None: no mask).

  Masked inputs are clipped before squaring, so the result and its gradient stay
  finite there; unmasked, the formula diverges for ``x < -2^(iters+1)``.
  """
  xc = x if mask_below is None else jnp.maximum(x, jnp.asarray(mask_below, x.dtype))
  r = jnp.asarray(1.0, x.dtype) + xc * jnp.asarray(2.0 ** -iters, x.dtype)
  for _ in range(iters):
    r = r * r
  if mask_below is not None:
    r = jnp.where(x < jnp.asarray(mask_below, x.dtype), jnp.zeros_like(r), r)
  return r


_NIMBUS_SRC = ("Nimbus (arXiv 2411.15707) public code, secretflow/spu branch 'nimbus',"
               " examples/python/ml/Nimbus/nonlinear.py")

register(Activation(
    "exact_gelu", "gelu", _gelu_jit(_exact_gelu, "exact_gelu"), None,
    "erf GELU, x * Phi(x) (BERT's hidden_act 'gelu'; jax.nn.gelu(approximate=False))"))
register(Activation(
    "exact_softmax", "softmax", softmax_from_exp(jnp.exp, name="exact_softmax"), None,
    "softmax exp(x - max) / sum, masked keys exactly 0 (jax.nn.softmax to rounding)"))
register(activation_from_spec(
    "nimbus_public_gelu", "gelu",
    nimbus_gelu(NIMBUS_GELU_LO, NIMBUS_GELU_HI, NIMBUS_GELU_COEFFS),
    _NIMBUS_SRC + " `ours_fake_gelu` (example constants; jump at 0.5); secure.md 1.3",
    ring_bits=32))
register(activation_from_spec(
    "nimbus_public_exp_softmax", "softmax",
    nimbus_exp(NIMBUS_EXP_THRESHOLD, NIMBUS_EXP_COEFFS),
    _NIMBUS_SRC + " `ours_fake_softmax` / `ours_fake_exp`; secure.md 1.3", ring_bits=32))
register(activation_from_spec(
    "puma_gelu", "gelu",
    PiecewisePoly(PUMA_GELU_BREAKPOINTS, ("zero", PUMA_GELU_CUBIC, PUMA_GELU_SEXTIC,
                                          "identity")),
    "PUMA-style GELU as in Nimbus's nonlinear.py `bumblebee_gelu` and SPU flax_llama7b"
    " `hack_silu` (clip at -5; PUMA's paper uses -4); secure.md 1.4", ring_bits=64))
register(Activation(
    "bumblebee_gelu", "gelu", _gelu_jit(_bumblebee_gelu, "bumblebee_gelu"),
    # 3 batched comparisons (-3, 0, 3); muxes: |x| plus the two non-zero pieces;
    # products |x|^2, |x|^3, |x|^4 (depth 2); truncations: those 3 + 1 for the sum.
    OpCount(comparisons=3, muxes=3, multiplications=3, mult_depth=2, truncations=4, degree=4,
            ring_bits=32),
    "BumbleBee seg3 GELU, AntCPLab/OpenBumbleBee libspu/kernel/hal/intrinsic/nn/activation.cc"
    " `do_f_seg3_gelu` (FM32, 12 fraction bits); secure.md 1.4"))
register(Activation(
    "limit_exp_softmax", "softmax",
    softmax_from_exp(limit_exp, name="limit_exp_softmax"),
    # the -14 mask: 1 comparison + 1 mux; x / 2^8 is a truncation, then 8 squarings.
    OpCount(comparisons=1, muxes=1, multiplications=LIMIT_EXP_ITERS, mult_depth=LIMIT_EXP_ITERS,
            truncations=LIMIT_EXP_ITERS + 1, degree=2 ** LIMIT_EXP_ITERS, ring_bits=64),
    "limit exp (1 + x/2^8)^(2^8), 0 for x < -14: BumbleBee `f_neg_exp_taylor`, PUMA"
    " `hack_softmax`, SPU TAYLOR exp with fxp_exp_iters = 8; secure.md 1.4"))
register(Activation(
    "crypten_exp_softmax", "softmax",
    softmax_from_exp(functools.partial(limit_exp, mask_below=None), name="crypten_exp_softmax"),
    OpCount(comparisons=0, muxes=0, multiplications=LIMIT_EXP_ITERS, mult_depth=LIMIT_EXP_ITERS,
            truncations=LIMIT_EXP_ITERS + 1, degree=2 ** LIMIT_EXP_ITERS, ring_bits=64),
    "CrypTen crypten/common/functions/approximations.py `exp` (limit formula, exp_iterations"
    " = 8, no mask) and `softmax` (max-subtract, exp, reciprocal of the sum; the reciprocal is"
    " exact here, Newton-Raphson in CrypTen); secure.md 1.4"))
register(activation_from_spec(
    "mpcformer_quad_gelu", "gelu", PiecewisePoly((), (MPCFORMER_QUAD_COEFFS,)),
    "MPCFormer (ICLR'23) Quad GELU 0.125x^2 + 0.5x + 0.25, DachengLi1/MPCFormer"
    " src/benchmark/utils.py `activation_quad`; secure.md 1.4", ring_bits=64))
_2QUAD = PiecewisePoly((), (MPCFORMER_2QUAD_COEFFS,))
register(Activation(
    "mpcformer_2quad_softmax", "softmax",
    softmax_from_exp(_2QUAD, max_subtract=False, name="mpcformer_2quad_softmax"),
    _2QUAD.opcount(64),
    "MPCFormer 2Quad (x + 5)^2 / sum (x + 5)^2 on raw scores, src/benchmark/utils.py"
    " `softmax_2QUAD`; secure.md 1.4", _2QUAD))
_RELU = PiecewisePoly((0.0,), ("zero", "identity"))
register(Activation(
    "mpcformer_2relu_softmax", "softmax",
    softmax_from_exp(_RELU, max_subtract=False, name="mpcformer_2relu_softmax"),
    _RELU.opcount(64),
    "MPCFormer 2ReLU ReLU(x) / sum ReLU(x) on raw scores (denominator floored at SUM_EPS),"
    " src/benchmark/utils.py `softmax_2RELU`; secure.md 1.4", _RELU))
