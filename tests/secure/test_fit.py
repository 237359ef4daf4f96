"""Distribution-aware fitter: exact recovery of a known piecewise cubic, Nimbus's public
exp coefficients as the unweighted least-squares cubic, the continuity constraint
against an independent KKT solve, breakpoint search against brute force, and errors.
Calibration samples are synthetic (no model is loaded)."""

import math
import time

import jax.numpy as jnp
import numpy as np
import pytest

from jaxsys._src import testing
from jaxsys.secure import approx
from jaxsys.secure import fit
from jaxsys.secure.opcount import OpCount

_erf = np.vectorize(math.erf)


def np_gelu(x):
  x = np.asarray(x, np.float64)
  return 0.5 * x * (1.0 + _erf(x / math.sqrt(2.0)))


def poly(coeffs, x):
  """sum_k coeffs[k] x^k (lowest power first)."""
  return sum(c * np.asarray(x, np.float64) ** k for k, c in enumerate(coeffs))


def total_mse(x, f, lo, hi, coeffs, below="zero", above="identity"):
  """The objective, per sample: asymptote below lo, polynomial on [lo, hi), asymptote from hi."""
  x = np.asarray(x, np.float64)
  lo = -np.inf if lo is None else lo
  hi = np.inf if hi is None else hi
  tail = {"zero": lambda v: 0.0 * v, "identity": lambda v: v}
  approx_x = np.where(x < lo, tail[below](x), np.where(x >= hi, tail[above](x), poly(coeffs, x)))
  return float(np.mean((approx_x - f(x)) ** 2))


def gelu_like_samples(n, seed=0):
  """Bell-shaped, left-skewed GELU inputs with a heavy tail (MiniLM-like, secure.md 3.2)."""
  rng = np.random.default_rng(seed)
  k = n // 10
  return np.concatenate([rng.normal(-0.6, 0.9, n - k), rng.standard_t(3, k) * 2.0])


def exp_like_samples(n, seed=0):
  """Max-subtracted softmax inputs: <= 0, median about -2.7."""
  return -np.random.default_rng(seed).gamma(2.0, 1.6, n)


# ------------------------------------------------------------------- exact recovery

CUBIC = (0.05, 0.6, 0.3, -0.04)  # on [-2, 1.5)


def piecewise_cubic(x):
  x = np.asarray(x, np.float64)
  return np.where(x < -2.0, 0.0, np.where(x >= 1.5, x, poly(CUBIC, x)))


def test_recovers_known_cubic_exactly():
  x = np.random.default_rng(1).uniform(-4.0, 4.0, 5000)
  r = fit.fit_piecewise(x, piecewise_cubic, 3, lo=-2.0, hi=1.5, below="zero", above="identity")
  np.testing.assert_allclose(r.spec.pieces[1], CUBIC, atol=1e-9)
  assert r.spec.breakpoints == (-2.0, 1.5) and r.spec.pieces[0] == "zero"
  assert r.spec.pieces[2] == "identity" and r.mse < 1e-20


def test_search_finds_the_true_breakpoints():
  x = np.random.default_rng(2).uniform(-4.0, 4.0, 5000)
  grid_lo, grid_hi = [-3.0, -2.5, -2.0, -1.5, -1.0], [0.5, 1.0, 1.5, 2.0, 2.5]
  for bins in (2048, None):
    r = fit.fit_piecewise(x, piecewise_cubic, 3, below="zero", above="identity",
                          lo_grid=grid_lo, hi_grid=grid_hi, bins=bins)
    assert (r.lo, r.hi) == (-2.0, 1.5), bins
    np.testing.assert_allclose(r.spec.pieces[1], CUBIC, atol=1e-9)


def test_nimbus_public_exp_is_the_unweighted_lsq_cubic():
  # Uniform samples on [-3.9, 0] (bin midpoints): the continuous least-squares cubic of e^x.
  x = -3.9 + 3.9 * (np.arange(100_000) + 0.5) / 100_000
  r = fit.fit_exp(x, 3, threshold=-3.9)
  published = (0.970898, 0.831807, 0.263326, 0.029179)  # Nimbus nonlinear.py, lowest first
  np.testing.assert_allclose(r.spec.pieces[1], published, atol=1e-4)
  # and it is plain least squares: numpy's polyfit on the same samples
  np.testing.assert_allclose(r.spec.pieces[1], np.polyfit(x, np.exp(x), 3)[::-1], atol=1e-10)
  assert r.lo == -3.9 and r.hi is None and r.tail_fraction == 0.0
  assert r.spec == approx.nimbus_exp(-3.9, r.spec.pieces[1])


# ---------------------------------------------------------------------- continuity


def kkt_fit(x, y, lo, hi, v_lo, v_hi, degree):
  """min ||V c - y||^2 s.t. p(lo) = v_lo, p(hi) = v_hi, by the KKT system (monomials)."""
  xs = (x - 0.5 * (lo + hi)) / (0.5 * (hi - lo))  # scaled for conditioning
  v = np.vander(xs, degree + 1, increasing=True)
  a = np.vander(np.array([-1.0, 1.0]), degree + 1, increasing=True)
  kkt = np.block([[2 * v.T @ v, a.T], [a, np.zeros((2, 2))]])
  sol = np.linalg.solve(kkt, np.concatenate([2 * v.T @ y, [v_lo, v_hi]]))
  c_t = sol[:degree + 1]
  # back to powers of x: t = (x - m) / h
  m, h = 0.5 * (lo + hi), 0.5 * (hi - lo)
  out = np.zeros(degree + 1)
  for k, ck in enumerate(c_t):
    for j in range(k + 1):
      out[j] += ck * math.comb(k, j) * (-m) ** (k - j) / h**k
  return out


def test_continuous_gelu_matches_kkt_and_is_continuous():
  x = gelu_like_samples(20_000, seed=3)
  lo, hi = -2.5, 1.5
  r = fit.fit_gelu(x, 3, lo=lo, hi=hi, continuous=True)
  c = r.spec.pieces[1]
  assert abs(poly(c, lo)) < 1e-9 and abs(poly(c, hi) - hi) < 1e-9
  inside = x[(x >= lo) & (x < hi)]
  np.testing.assert_allclose(c, kkt_fit(inside, np_gelu(inside), lo, hi, 0.0, hi, 3), atol=1e-8)
  # the jnp function is continuous across both breakpoints
  eps = 1e-4
  y = np.asarray(r.fn(jnp.array([lo - eps, lo + eps, hi - eps, hi + eps], jnp.float32)))
  assert abs(y[1] - y[0]) < 1e-3 and abs(y[3] - y[2]) < 1e-3
  # the constraint can only cost inside error
  free = fit.fit_gelu(x, 3, lo=lo, hi=hi)
  assert free.mse_inside <= r.mse_inside and abs(poly(free.spec.pieces[1], hi) - hi) > 1e-3


def test_continuous_search_and_exp():
  x = gelu_like_samples(20_000, seed=4)
  r = fit.fit_gelu(x, 2, continuous=True, grid_size=9)
  c = r.spec.pieces[1]
  assert abs(poly(c, r.lo)) < 1e-9 and abs(poly(c, r.hi) - r.hi) < 1e-9
  e = exp_like_samples(20_000, seed=4)
  re = fit.fit_exp(e, 3, threshold=-4.0, continuous=True)
  assert abs(poly(re.spec.pieces[1], -4.0)) < 1e-9


def test_degree_one_continuous_is_the_chord():
  x = np.linspace(-3.0, 3.0, 200)
  r = fit.fit_gelu(x, 1, lo=-1.0, hi=1.0, continuous=True)  # p(-1) = 0, p(1) = 1
  np.testing.assert_allclose(r.spec.pieces[1], [0.5, 0.5], atol=1e-12)


# ------------------------------------------------------------------ search vs brute force


def brute_exp(e, grid, degree=3):
  """Per threshold: polyfit on x >= t, plus e^{2x} below; the MSE table."""
  out = []
  for t in grid:
    inside = e[e >= t]
    c = np.polyfit(inside, np.exp(inside), degree)
    sse = np.sum((np.polyval(c, inside) - np.exp(inside)) ** 2) + np.sum(np.exp(2 * e[e < t]))
    out.append(sse / e.size)
  return np.array(out)


def test_threshold_search_matches_brute_force():
  e = exp_like_samples(20_000, seed=5)
  grid = np.linspace(-9.0, -1.0, 33)
  table = brute_exp(e, grid)
  i = int(np.argmin(table))
  assert 0 < i < len(grid) - 1  # an interior optimum: a sensible threshold, not a grid end
  for bins in (None, 2048):
    r = fit.fit_exp(e, 3, thresholds=grid, refine=False, bins=bins)
    assert r.lo == grid[i], bins
    np.testing.assert_allclose(r.mse, table[i], rtol=1e-9)
  # refinement can only improve on the grid's best
  rr = fit.fit_exp(e, 3, thresholds=grid)
  assert rr.mse <= table[i] * (1 + 1e-12) and grid[i - 1] <= rr.lo <= grid[i + 1]


def test_gelu_search_matches_brute_force():
  x = gelu_like_samples(20_000, seed=6)
  los, his = [-4.0, -3.0, -2.5, -2.0, -1.5], [0.5, 1.0, 1.5, 2.0, 3.0]
  table = {}
  for lo in los:
    for hi in his:
      inside = x[(x >= lo) & (x < hi)]
      c = np.polyfit(inside, np_gelu(inside), 3)[::-1]
      table[lo, hi] = total_mse(x, np_gelu, lo, hi, c)
  best = min(table, key=table.get)
  exact = fit.fit_gelu(x, 3, lo_grid=los, hi_grid=his, refine=False, bins=None)
  assert (exact.lo, exact.hi) == best
  np.testing.assert_allclose(exact.mse, table[best], rtol=1e-9)
  binned = fit.fit_gelu(x, 3, lo_grid=los, hi_grid=his, refine=False)
  assert binned.mse <= table[best] * 1.01


def test_default_search_beats_public_nimbus_on_its_distribution():
  x = gelu_like_samples(100_000, seed=7)
  r = fit.fit_gelu(x, 2)
  assert -4.0 < r.lo < -1.0 and 0.0 < r.hi < 3.5
  public = approx.NIMBUS_GELU_COEFFS
  assert r.mse < 0.5 * total_mse(x, np_gelu, -1.8, 0.5, public)
  # same cost tag as the public one: 2 comparisons, x^2, 2 selects (degree 2, Z_2^32)
  assert r.opcount == approx.get("nimbus_public_gelu").opcount


# ------------------------------------------------------------------------ FitResult


def test_fit_result_fields_against_independent_numbers():
  x = gelu_like_samples(30_000, seed=8)
  r = fit.fit_gelu(x, 3, lo=-2.7, hi=1.2)
  c = r.spec.pieces[1]
  inside = (x >= -2.7) & (x < 1.2)
  assert r.n_samples == x.size and r.n_inside == int(inside.sum())
  assert r.tail_fraction == pytest.approx(1.0 - inside.mean(), abs=1e-15)
  np.testing.assert_allclose(r.mse, total_mse(x, np_gelu, -2.7, 1.2, c), rtol=1e-10)
  np.testing.assert_allclose(r.mse_inside, np.mean((poly(c, x[inside]) - np_gelu(x[inside])) ** 2),
                             rtol=1e-10)
  out = x[~inside]
  tail = np.where(out < -2.7, 0.0, out)
  np.testing.assert_allclose(r.mse_tail, np.mean((tail - np_gelu(out)) ** 2), rtol=1e-10)
  np.testing.assert_allclose(
      r.mse, (1 - r.tail_fraction) * r.mse_inside + r.tail_fraction * r.mse_tail, rtol=1e-12)
  # degree 3: x^2, x^3 (depth 2); truncations 2 + 1; Z_2^32 by default
  assert r.opcount == OpCount(2, 2, 2, 2, 3, 3, 32)
  assert fit.fit_gelu(x, 3, lo=-2.7, hi=1.2, ring_bits=64).opcount.ring_bits == 64
  probe = np.array([-3.0, -2.0, 0.0, 1.0, 2.0], np.float32)
  want = np.where(probe < -2.7, 0.0, np.where(probe >= 1.2, probe, poly(c, probe)))
  testing.assert_allclose(r.fn(jnp.asarray(probe)), want.astype(np.float32), scale=10.0)


def test_fitted_exp_becomes_a_softmax():
  r = fit.fit_exp(exp_like_samples(20_000, seed=9), 3)
  a = approx.activation_from_spec("fitted_exp", "softmax", r.spec, "test fit")
  s = jnp.array([[1.0, 0.0, -2.0, -9.0, -1e30]], jnp.float32)
  p = np.asarray(a.fn(s, -1))
  assert p[0, 4] == 0.0 and abs(p.sum() - 1.0) < 1e-5
  # against exact softmax: the fit is within a few percent on these keys
  np.testing.assert_allclose(p[0, :4], np.asarray(jnp.exp(s[0, :4]) / jnp.exp(s[0, :4]).sum()),
                             atol=0.02)


def test_one_million_samples_under_ten_seconds():
  x = gelu_like_samples(1_000_000, seed=10)
  t0 = time.perf_counter()
  r = fit.fit_gelu(x, 3)
  elapsed = time.perf_counter() - t0
  assert elapsed < 10.0, elapsed
  assert r.n_samples == 1_000_000 and r.mse < 1e-3


# ---------------------------------------------------------------------------- errors


@pytest.mark.parametrize("kwargs, exc, msg", [
    (dict(samples=[0.0, np.nan] + [1.0] * 30), ValueError,
     r"samples: expected finite values, given 1 non-finite of 32 \(first at flat index 1"),
    (dict(samples=[np.inf] * 40), ValueError, "samples: expected finite values"),
    (dict(samples=np.linspace(-1, 1, 15)), ValueError,
     "samples: expected at least 16 samples to fit a degree-3 polynomial .4 per coefficient.,"
     " given 15"),
    (dict(lo=-0.5, hi=-0.4), ValueError,
     r"samples: expected at least 16 samples inside \[lo, hi\) = \[-0.5, -0.4\).*given 1"),
    (dict(degree=0), ValueError, "degree: expected an int >= 1, given 0"),
    (dict(degree=True), ValueError, "degree: expected an int >= 1, given True"),
    (dict(degree=2.0), ValueError, "degree: expected an int >= 1, given 2.0"),
    (dict(lo=1.0, hi=1.0), ValueError, "lo, hi: expected lo < hi, given lo=1.0, hi=1.0"),
    (dict(lo=math.nan), ValueError, "lo: expected a finite number"),
    (dict(lo=-1.0, lo_grid=[-2.0]), ValueError, "lo_grid: only used when lo is searched"),
    (dict(hi_grid=[]), ValueError, "hi_grid: expected a non-empty sequence"),
    (dict(bins=8), ValueError, "bins: expected an int >= 16, given 8"),
    (dict(ring_bits=16), ValueError, "ring_bits: expected 32 or 64, given 16"),
    (dict(continuous=1), TypeError, "continuous: expected a bool"),
    (dict(lo_grid=[5.0, 5.5], hi_grid=[6.0, 7.0]), ValueError,
     r"samples: no candidate interval holds the 16 samples"),
])
def test_fit_gelu_errors(kwargs, exc, msg):
  args = dict(samples=np.linspace(-3.0, 3.0, 64), degree=3)
  args.update(kwargs)
  with pytest.raises(exc, match=msg):
    fit.fit_gelu(args.pop("samples"), args.pop("degree"), **args)


def test_fit_piecewise_and_fit_exp_errors():
  x = np.linspace(-3.0, 0.0, 64)
  with pytest.raises(ValueError, match="below: expected one of .* given 'one'"):
    fit.fit_piecewise(x, np.exp, 2, below="one", above=None)
  with pytest.raises(ValueError, match="hi: this side has no tail .above=None., so no breakpoint"):
    fit.fit_piecewise(x, np.exp, 2, hi=0.0, below="zero", above=None)
  with pytest.raises(ValueError, match=r"target_fn: expected an output of the input's shape"):
    fit.fit_piecewise(x, lambda v: v[:3], 2, lo=-1.0, below="zero", above=None)
  with pytest.raises(ValueError, match="target_fn: expected finite values, given 64 non-finite"):
    fit.fit_piecewise(x, lambda v: np.full_like(v, np.inf), 2, lo=-1.0, below="zero", above=None)
  with pytest.raises(TypeError, match="target_fn: expected a callable"):
    fit.fit_piecewise(x, 3.0, 2, lo=-1.0, below="zero", above=None)
  with pytest.raises(TypeError, match="samples: expected an array of real numbers"):
    fit.fit_exp(["a", "b"], 2)
  with pytest.raises(ValueError, match=r"samples: expected max-subtracted softmax inputs \(<= 0\),"
                     " given a maximum of 0.5"):
    fit.fit_exp(np.append(x, 0.5), 2)
  with pytest.raises(ValueError, match="samples: expected unmasked scores, given 2 values <= -1e"):
    fit.fit_exp(np.append(x, [-1e30, -1e30]), 2)


def test_plain_polynomial_without_tails():
  x = np.linspace(-1.0, 1.0, 101)
  r = fit.fit_piecewise(x, lambda v: 0.5 - 2.5 * v**2, 2, below=None, above=None)
  assert r.spec.breakpoints == () and r.lo is None and r.hi is None
  np.testing.assert_allclose(r.spec.pieces[0], [0.5, 0.0, -2.5], atol=1e-12)
  # one piece: no comparison, no select; x^2 and its truncation + one for the combination
  assert r.opcount == OpCount(0, 0, 1, 1, 2, 2, 32)
