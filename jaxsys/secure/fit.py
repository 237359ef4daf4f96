"""Distribution-aware piecewise-polynomial fits of GELU and exp (Nimbus, arXiv 2411.15707).

Nimbus fits each non-linearity where its inputs actually fall: a low-degree
polynomial on an interval [lo, hi) that holds most calibration inputs, and the
function's asymptote outside it (GELU: 0 below, x above; exp after
max-subtraction: 0 below a threshold, and the top end is max(x) = 0; jaxsys
``papers/secure.md`` 1.3 and 3.2(b)). The fitter minimises the mean squared
error over ALL calibration samples x_i (the observed distribution, so dense
regions weigh more)::

    MSE(lo, hi, p) = 1/N [ sum_{x_i < lo} (f(x_i) - below(x_i))^2
                         + sum_{lo <= x_i < hi} (p(x_i) - f(x_i))^2
                         + sum_{x_i >= hi} (f(x_i) - above(x_i))^2 ]

For fixed (lo, hi) the middle term is a least-squares fit of p on the inside
samples (unit weight per sample); ``continuous=True`` adds the equality
constraints ``p(lo) = below(lo)`` and ``p(hi) = above(hi)``, solved exactly by
substitution (``p = p_0 + Z z`` with ``Z`` spanning the null space of the
constraints, then an unconstrained least squares in z). Polynomials are fitted
in a Chebyshev basis of the interval mapped to [-1, 1] and converted to
monomial coefficients in x (lowest power first) for the `PiecewisePoly`.

Breakpoints given as None are searched: every candidate (pair) on a grid
(default: sample quantiles and a uniform grid over the 0.1%-99.9% quantile
range), then, with ``refine``, a finer grid between the best candidate's
neighbours. During the search, the inside least squares runs on a histogram
(``bins``: half uniform, half equal-count bins, with every candidate as an
edge, so inside / outside membership is exact); each bin is one point at its
samples' mean, weighted by its count. The tail terms are exact per-sample
prefix sums. With ``bins=None`` the search fits every candidate on the raw
samples (exact, slower). The chosen breakpoints are always refit on the raw
samples, and every reported error is exact, computed with the returned spec.

All arithmetic is float64 numpy; a degree-3 GELU fit of 1e6 samples with the
default search takes about 2 s on 2 CPU cores.

>>> import numpy as np
>>> x = np.linspace(-3.9, 0.0, 100_001)
>>> r = fit_exp(x, 3, threshold=-3.9)
>>> [round(c, 4) for c in r.spec.pieces[1]]
[0.9709, 0.8317, 0.2633, 0.0292]
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np
from numpy.polynomial import chebyshev as npcheb
from numpy.polynomial import polynomial as nppoly

from jaxsys.secure.approx import MASKED_SCORE
from jaxsys.secure.approx import PiecewisePoly
from jaxsys.secure.opcount import OpCount

TAILS = ("zero", "identity")
PER_COEFFICIENT = 4  # samples needed inside the interval per polynomial coefficient
REFINE_SIZE = 17  # points per searched breakpoint in the refinement grid


@dataclasses.dataclass(frozen=True)
class FitResult:
  """A fitted approximation and its errors on the calibration samples.

  Attributes:
    spec: the fitted `PiecewisePoly` (tails + polynomial, lowest power first).
    mse: mean squared error of `spec` against the target over all samples.
    mse_inside: mean squared error over the samples in [lo, hi).
    mse_tail: mean squared error over the samples outside it (0 if none);
      ``mse = (1 - tail_fraction) * mse_inside + tail_fraction * mse_tail``.
    tail_fraction: fraction of samples outside [lo, hi).
    lo, hi: the breakpoints (None where that side has none, e.g. exp's top).
    n_samples: number of calibration samples.
    n_inside: samples in [lo, hi).
    fn: `spec` jitted, elementwise (the GELU or the exp itself; see
      `jaxsys.secure.approx.activation_from_spec` for a softmax).
    opcount: ``spec.opcount(ring_bits)``.
  """

  spec: PiecewisePoly
  mse: float
  mse_inside: float
  mse_tail: float
  tail_fraction: float
  lo: float | None
  hi: float | None
  n_samples: int
  n_inside: int
  fn: Callable[[jax.Array], jax.Array]
  opcount: OpCount


# ----------------------------------------------------------------------------- checks


def _check_real(name: str, value: Any) -> float:
  if isinstance(value, (bool, np.bool_)) or not isinstance(
      value, (int, float, np.integer, np.floating)) or not math.isfinite(float(value)):
    raise ValueError(f"{name}: expected a finite number, given {value!r}")
  return float(value)


def _check_int(name: str, value: Any, lo: int) -> int:
  if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or value < lo:
    raise ValueError(f"{name}: expected an int >= {lo}, given {value!r}")
  return int(value)


def _check_samples(samples: Any) -> np.ndarray:
  try:
    x = np.asarray(samples, dtype=np.float64).reshape(-1)
  except (TypeError, ValueError) as e:
    raise TypeError(f"samples: expected an array of real numbers, given {type(samples)}") from e
  bad = ~np.isfinite(x)
  if bad.any():
    first = int(np.argmax(bad))
    raise ValueError(
        f"samples: expected finite values, given {int(bad.sum())} non-finite of {x.size}"
        f" (first at flat index {first}: {x[first]})")
  return x


def _check_grid(name: str, grid: Any) -> np.ndarray:
  g = np.asarray(grid, dtype=np.float64).reshape(-1)
  if g.size == 0 or not np.isfinite(g).all():
    raise ValueError(f"{name}: expected a non-empty sequence of finite numbers, given {grid!r}")
  return np.unique(g)


def _asymptote(kind: str, x: np.ndarray) -> np.ndarray:
  return np.zeros_like(x) if kind == "zero" else x


# -------------------------------------------------------------------- least squares


def _lsq(x: np.ndarray, y: np.ndarray, w: np.ndarray | None, degree: int,
         cons: Sequence[tuple[float, float]]) -> tuple[tuple[float, ...], float]:
  """Weighted least-squares polynomial with equality constraints ``p(u) = v``.

  Returns the monomial coefficients in x (lowest power first) and the weighted
  sum of squared residuals.
  """
  pts = np.concatenate([x, np.array([u for u, _ in cons], np.float64)])
  c = 0.5 * (pts.max() + pts.min())
  s = 0.5 * (pts.max() - pts.min())
  s = s if s > 0 else 1.0
  a_mat = npcheb.chebvander((x - c) / s, degree)
  r = y
  if w is not None:
    sw = np.sqrt(w)
    a_mat = a_mat * sw[:, None]
    r = y * sw
  if cons:
    c_mat = npcheb.chebvander(np.array([(u - c) / s for u, _ in cons]), degree)
    d = np.array([v for _, v in cons], np.float64)
    a0 = np.linalg.lstsq(c_mat, d, rcond=None)[0]
    z_mat = np.linalg.svd(c_mat)[2][len(cons):].T  # null space of the constraints
    coef = a0
    if z_mat.shape[1]:
      coef = a0 + z_mat @ np.linalg.lstsq(a_mat @ z_mat, r - a_mat @ a0, rcond=None)[0]
  else:
    coef = np.linalg.lstsq(a_mat, r, rcond=None)[0]
  sse = float(np.sum((a_mat @ coef - r) ** 2))
  # Chebyshev in t = (x - c) / s  ->  monomials in t  ->  monomials in x.
  p_t = npcheb.cheb2poly(coef)
  p_x = np.zeros(1)
  basis = np.ones(1)
  for k, ck in enumerate(p_t):
    p_x = nppoly.polyadd(p_x, ck * basis)
    if k + 1 < len(p_t):
      basis = nppoly.polymul(basis, np.array([-c / s, 1.0 / s]))
  out = np.zeros(degree + 1)
  out[:min(len(p_x), degree + 1)] = p_x[:degree + 1]
  return tuple(float(v) for v in out), sse


# ------------------------------------------------------------------------- the fitter


class _Problem:
  """Sorted samples, target values and exact tail-error prefix sums."""

  def __init__(self, x: np.ndarray, target_fn: Callable[[np.ndarray], Any], degree: int,
               below: str | None, above: str | None, continuous: bool):
    self.xs = np.sort(x)
    f = np.asarray(target_fn(self.xs), dtype=np.float64)
    if f.shape != self.xs.shape:
      raise ValueError(
          f"target_fn: expected an output of the input's shape {self.xs.shape}, given {f.shape}")
    bad = ~np.isfinite(f)
    if bad.any():
      raise ValueError(
          f"target_fn: expected finite values, given {int(bad.sum())} non-finite"
          f" (first at x = {self.xs[int(np.argmax(bad))]})")
    self.target_fn = target_fn
    self.f = f
    self.n = self.xs.size
    self.degree = degree
    self.below, self.above = below, above
    self.continuous = continuous
    self.min_inside = PER_COEFFICIENT * (degree + 1)
    zeros = np.zeros(1)
    # cum_below[k]: tail SSE of the k smallest samples; suf_above[k]: of samples k.. n-1.
    self.cum_below = self.suf_above = None
    if below:
      self.cum_below = np.concatenate([zeros, np.cumsum((f - _asymptote(below, self.xs)) ** 2)])
    if above:
      e2 = (f - _asymptote(above, self.xs)) ** 2
      self.suf_above = np.concatenate([np.cumsum(e2[::-1])[::-1], zeros])

  def k(self, b: float | None, default: int) -> int:
    return default if b is None else int(np.searchsorted(self.xs, b, "left"))

  def tails(self, k_lo: int, k_hi: int) -> float:
    t = 0.0
    if self.below:
      t += self.cum_below[k_lo]
    if self.above:
      t += self.suf_above[k_hi]
    return float(t)

  def constraints(self, lo: float | None, hi: float | None) -> list[tuple[float, float]]:
    if not self.continuous:
      return []
    cons = []
    if lo is not None:
      cons.append((lo, 0.0 if self.below == "zero" else lo))
    if hi is not None:
      cons.append((hi, 0.0 if self.above == "zero" else hi))
    return cons

  def search(self, los: Sequence[float | None], his: Sequence[float | None],
             bins: int | None) -> tuple[float, float | None, float | None] | None:
    """The (objective, lo, hi) minimising the total SSE over the candidate pairs."""
    if bins is not None:
      binned = self._bins([b for b in los if b is not None], [b for b in his if b is not None],
                          bins)
    best = None
    for lo in los:
      k_lo = self.k(lo, 0)
      for hi in his:
        if lo is not None and hi is not None and not lo < hi:
          continue
        k_hi = self.k(hi, self.n)
        if k_hi - k_lo < self.min_inside:
          continue
        cons = self.constraints(lo, hi)
        if bins is None:
          _, sse = _lsq(self.xs[k_lo:k_hi], self.f[k_lo:k_hi], None, self.degree, cons)
        else:
          xb, yb, wb, left_edges, edges = binned
          i0 = 0 if lo is None else int(np.searchsorted(left_edges, np.searchsorted(edges, lo)))
          i1 = (len(xb) if hi is None
                else int(np.searchsorted(left_edges, np.searchsorted(edges, hi))))
          _, sse = _lsq(xb[i0:i1], yb[i0:i1], wb[i0:i1], self.degree, cons)
        obj = sse + self.tails(k_lo, k_hi)
        if best is None or obj < best[0]:
          best = (obj, lo, hi)
    return best

  def _bins(self, los: list[float], his: list[float], bins: int):
    """Histogram of the samples that can be inside some candidate interval."""
    xs = self.xs
    a = min(los) if los else xs[0]
    b = max(his) if his else np.nextafter(xs[-1], np.inf)
    ka, kb = int(np.searchsorted(xs, a, "left")), int(np.searchsorted(xs, b, "left"))
    half = max(bins // 2, 1)
    quantile_edges = (xs[np.unique(np.linspace(ka, kb - 1, half + 1).round().astype(int))]
                      if kb > ka else np.zeros(0))
    edges = np.unique(np.concatenate([
        np.linspace(a, b, half + 1), quantile_edges[(quantile_edges > a) & (quantile_edges < b)],
        np.asarray(los + his, np.float64)]))
    edges = edges[(edges >= a) & (edges <= b)]
    idx = np.searchsorted(xs, edges, "left")
    counts = np.diff(idx)
    keep = counts > 0
    starts = idx[:-1][keep]
    sums = np.add.reduceat(xs[:idx[-1]], starts) if starts.size else np.zeros(0)
    xb = sums / counts[keep]
    yb = np.asarray(self.target_fn(xb), dtype=np.float64)
    left_edges = np.nonzero(keep)[0]
    return xb, yb, counts[keep].astype(np.float64), left_edges, edges

  def result(self, lo: float | None, hi: float | None, ring_bits: int) -> FitResult:
    k_lo, k_hi = self.k(lo, 0), self.k(hi, self.n)
    coeffs, _ = _lsq(self.xs[k_lo:k_hi], self.f[k_lo:k_hi], None, self.degree,
                     self.constraints(lo, hi))
    bps, pieces = [], []
    if lo is not None:
      bps.append(lo)
      pieces.append(self.below)
    pieces.append(coeffs)
    if hi is not None:
      bps.append(hi)
      pieces.append(self.above)
    spec = PiecewisePoly(tuple(bps), tuple(pieces))
    err2 = (spec.evaluate_np(self.xs) - self.f) ** 2
    n_in = k_hi - k_lo
    n_tail = self.n - n_in
    sse_in = float(np.sum(err2[k_lo:k_hi]))
    sse_tail = float(np.sum(err2[:k_lo]) + np.sum(err2[k_hi:]))
    return FitResult(
        spec=spec, mse=(sse_in + sse_tail) / self.n, mse_inside=sse_in / n_in,
        mse_tail=sse_tail / n_tail if n_tail else 0.0, tail_fraction=n_tail / self.n,
        lo=lo, hi=hi, n_samples=self.n, n_inside=n_in, fn=jax.jit(spec.__call__),
        opcount=spec.opcount(ring_bits))


def _default_grid(xs: np.ndarray, size: int, upper: bool) -> np.ndarray:
  """Sample quantiles plus a uniform grid over the 0.1%-99.9% quantile range."""
  n = xs.size
  q = xs[np.linspace(0, n - 1, size).round().astype(int)]
  u = np.linspace(xs[int(0.001 * (n - 1))], xs[int(0.999 * (n - 1))], size)
  extra = [np.nextafter(xs[-1], np.inf)] if upper else []
  return np.unique(np.concatenate([q, u, extra]))


def _refined(grid: np.ndarray, best: float) -> np.ndarray:
  i = int(np.searchsorted(grid, best))
  lo = grid[max(i - 1, 0)]
  hi = grid[min(i + 1, grid.size - 1)]
  return np.unique(np.concatenate([np.linspace(lo, hi, REFINE_SIZE), [best]]))


def fit_piecewise(
    samples: Any,
    target_fn: Callable[[np.ndarray], Any],
    degree: int,
    *,
    lo: float | None = None,
    hi: float | None = None,
    below: str | None,
    above: str | None,
    continuous: bool = False,
    lo_grid: Sequence[float] | None = None,
    hi_grid: Sequence[float] | None = None,
    grid_size: int = 33,
    refine: bool = True,
    bins: int | None = 2048,
    ring_bits: int = 32,
) -> FitResult:
  """Fits ``below`` / degree-d polynomial / ``above`` to `target_fn` on `samples`.

  Minimises the total MSE of the module docstring. A side whose asymptote is
  None has no breakpoint (its `lo` / `hi` must be None and means "none"); a
  side with an asymptote and a None breakpoint is searched.

  Args:
    samples: calibration inputs, any shape (flattened), all finite.
    target_fn: the exact function, vectorised float64 numpy ``x -> f(x)``.
    degree: polynomial degree, >= 1.
    lo, hi: fixed breakpoints, or None to search (where the side has a tail).
    below, above: the tail asymptotes, "zero" or "identity", or None for no tail.
    continuous: constrain ``p(lo) = below(lo)`` and ``p(hi) = above(hi)``.
    lo_grid, hi_grid: candidate breakpoints for the search (default:
      `grid_size` sample quantiles plus `grid_size` uniform points).
    grid_size: points of each default grid.
    refine: search again on a grid of 17 points between the best candidate's
      neighbours, keeping the better.
    bins: histogram bins for the search (>= 16), or None to search on the raw
      samples.
    ring_bits: the ring of the returned cost tag.

  Returns:
    `FitResult`; its breakpoints, refit exactly on the raw samples.

  Raises:
    ValueError: non-finite samples; too few samples (fewer than 4 per
      coefficient overall, or inside a fixed interval, or inside every
      candidate interval); degree < 1; lo >= hi; bad tails or grids.
  """
  degree = _check_int("degree", degree, 1)
  for name, tail in (("below", below), ("above", above)):
    if tail is not None and tail not in TAILS:
      raise ValueError(f"{name}: expected one of {TAILS} or None, given {tail!r}")
  if not isinstance(continuous, bool):
    raise TypeError(f"continuous: expected a bool, given {continuous!r}")
  if not isinstance(refine, bool):
    raise TypeError(f"refine: expected a bool, given {refine!r}")
  grid_size = _check_int("grid_size", grid_size, 2)
  if bins is not None:
    bins = _check_int("bins", bins, 16)
  if ring_bits not in (32, 64):
    raise ValueError(f"ring_bits: expected 32 or 64, given {ring_bits!r}")
  if not callable(target_fn):
    raise TypeError(f"target_fn: expected a callable, given {target_fn!r}")
  sides = {}
  for name, b, tail, grid in (("lo", lo, below, lo_grid), ("hi", hi, above, hi_grid)):
    gname = f"{name}_grid"
    if tail is None:
      if b is not None or grid is not None:
        raise ValueError(
            f"{name}: this side has no tail ({'below' if name == 'lo' else 'above'}=None), so"
            f" no breakpoint; expected {name}=None and {gname}=None, given {name}={b!r},"
            f" {gname}={grid!r}")
      sides[name] = None
    elif b is not None:
      if grid is not None:
        raise ValueError(f"{gname}: only used when {name} is searched ({name}=None), given"
                         f" {name}={b!r} and a grid")
      sides[name] = _check_real(name, b)
    else:
      sides[name] = "search" if grid is None else _check_grid(gname, grid)
  if isinstance(sides["lo"], float) and isinstance(sides["hi"], float) and not (
      sides["lo"] < sides["hi"]):
    raise ValueError(f"lo, hi: expected lo < hi, given lo={sides['lo']}, hi={sides['hi']}")

  x = _check_samples(samples)
  need = PER_COEFFICIENT * (degree + 1)
  if x.size < need:
    raise ValueError(
        f"samples: expected at least {need} samples to fit a degree-{degree} polynomial"
        f" ({PER_COEFFICIENT} per coefficient), given {x.size}")
  prob = _Problem(x, target_fn, degree, below, above, continuous)

  def candidates(name: str) -> list[float | None]:
    s = sides[name]
    if s is None or isinstance(s, float):
      return [s]
    if isinstance(s, str):
      sides[name] = _default_grid(prob.xs, grid_size, upper=name == "hi")
    return [float(v) for v in sides[name]]

  los, his = candidates("lo"), candidates("hi")
  if len(los) == 1 and len(his) == 1:
    lo_, hi_ = los[0], his[0]
    n_in = prob.k(hi_, prob.n) - prob.k(lo_, 0)
    if n_in < need:
      raise ValueError(
          f"samples: expected at least {need} samples inside [lo, hi) = [{lo_}, {hi_}) to fit"
          f" a degree-{degree} polynomial ({PER_COEFFICIENT} per coefficient), given {n_in}")
    return prob.result(lo_, hi_, ring_bits)

  best = prob.search(los, his, bins)
  if best is None:
    raise ValueError(
        f"samples: no candidate interval holds the {need} samples a degree-{degree} polynomial"
        f" needs ({PER_COEFFICIENT} per coefficient); given {prob.n} samples in"
        f" [{prob.xs[0]}, {prob.xs[-1]}]; widen the grid or add samples")
  results = [prob.result(best[1], best[2], ring_bits)]
  if refine:
    los2 = los if len(los) == 1 else [float(v) for v in _refined(sides["lo"], best[1])]
    his2 = his if len(his) == 1 else [float(v) for v in _refined(sides["hi"], best[2])]
    best2 = prob.search(los2, his2, bins)
    if best2 is not None and (best2[1], best2[2]) != (best[1], best[2]):
      results.append(prob.result(best2[1], best2[2], ring_bits))
  return min(results, key=lambda r: r.mse)


# -------------------------------------------------------------------- GELU and exp

_ERF = np.frompyfunc(math.erf, 1, 1)


def gelu_f64(x: Any) -> np.ndarray:
  """Exact erf GELU ``x * (1 + erf(x / sqrt 2)) / 2`` in float64 numpy."""
  x = np.asarray(x, np.float64)
  return 0.5 * x * (1.0 + _ERF(x / math.sqrt(2.0)).astype(np.float64))


def fit_gelu(
    samples: Any,
    degree: int,
    *,
    lo: float | None = None,
    hi: float | None = None,
    continuous: bool = False,
    lo_grid: Sequence[float] | None = None,
    hi_grid: Sequence[float] | None = None,
    grid_size: int = 33,
    refine: bool = True,
    bins: int | None = 2048,
    ring_bits: int = 32,
) -> FitResult:
  """Nimbus GELU: 0 below lo, a degree-d polynomial on [lo, hi), x from hi.

  Fits the exact erf GELU on the calibration `samples` (GELU inputs) by
  `fit_piecewise` with ``below="zero"``, ``above="identity"``; lo / hi None are
  searched. ``continuous=True`` forces ``p(lo) = 0`` and ``p(hi) = hi``.

  >>> rng = np.random.default_rng(0)
  >>> r = fit_gelu(rng.normal(-0.5, 1.0, 20_000), 2, lo=-2.0, hi=1.0)
  >>> r.spec.breakpoints, r.opcount.multiplications
  ((-2.0, 1.0), 1)
  """
  return fit_piecewise(samples, gelu_f64, degree, lo=lo, hi=hi, below="zero",
                       above="identity", continuous=continuous, lo_grid=lo_grid,
                       hi_grid=hi_grid, grid_size=grid_size, refine=refine, bins=bins,
                       ring_bits=ring_bits)


def fit_exp(
    samples: Any,
    degree: int,
    *,
    threshold: float | None = None,
    continuous: bool = False,
    thresholds: Sequence[float] | None = None,
    grid_size: int = 33,
    refine: bool = True,
    bins: int | None = 2048,
    ring_bits: int = 32,
) -> FitResult:
  """Nimbus exp for softmax: 0 below the threshold, a degree-d polynomial from it.

  `samples` are max-subtracted softmax inputs (all <= 0, masked keys left
  out); the polynomial covers [threshold, 0]. threshold None is searched
  (over `thresholds`, or the default grid). ``continuous=True`` forces
  ``p(threshold) = 0``. Returns a `FitResult` with ``lo = threshold`` and
  ``hi = None``; `jaxsys.secure.approx.activation_from_spec` makes the softmax.
  """
  x = _check_samples(samples)
  if x.size and x.max() > 0:
    raise ValueError(
        f"samples: expected max-subtracted softmax inputs (<= 0), given a maximum of {x.max()}")
  masked = int(np.sum(x <= MASKED_SCORE))
  if masked:
    raise ValueError(
        f"samples: expected unmasked scores, given {masked} values <= {MASKED_SCORE} (masked"
        " keys); leave them out of the calibration")
  return fit_piecewise(x, np.exp, degree, lo=threshold, hi=None, below="zero", above=None,
                       continuous=continuous, lo_grid=thresholds, grid_size=grid_size,
                       refine=refine, bins=bins, ring_bits=ring_bits)
