"""The two-party simulator against a pure-Python big-integer reference (tests/secure/bigint.py).

Beaver products are exact mod 2^l; truncations are checked share by share
against the big-int protocol and against their stated error bounds, at the
edges of their ranges; SecureML's failure rate is measured; the ledger is
checked on hand-counted programs, under jit and without running (eval_shape).
"""

import math
from fractions import Fraction

import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings

from jaxsys._src import testing
from jaxsys.secure import mpc
from jaxsys.secure import ring as R
from tests.secure import bigint

RINGS = [R.RING32, R.RING64]
IDS = ["z32", "z64"]


# ------------------------------------------------------------------------------ helpers


def arr(vals, ring):
  """Signed Python ints (any nesting) as ring elements (numpy, ring dtype)."""
  v = np.array(vals, dtype=object)
  return np.vectorize(lambda i: i % ring.modulus, otypes=[object])(v).astype(
      np.dtype(ring.dtype))


def ints(x):
  """Flat list of Python ints of an unsigned array."""
  return np.asarray(x).astype(object).reshape(-1).tolist()


def values(sh):
  """The shared values as flat signed Python ints (big-int reconstruction)."""
  bits = sh.ring.bits
  return [bigint.signed(c + s, bits) for c, s in zip(ints(sh.c), ints(sh.s))]


def share_ints(vals, ring, seed=0, frac=None):
  return mpc.share(arr(vals, ring), mpc.Dealer(jax.random.key(seed)), ring, frac=frac)


def random_signed(rng, n, bits):
  return [int(v) - 2 ** (bits - 1) for v in rng.integers(0, 2**bits, size=n, dtype=np.uint64)]


# --------------------------------------------------------------------- shares, local ops


@pytest.mark.parametrize("ring", RINGS, ids=IDS)
def test_share_reveal_and_dealer_determinism(ring):
  rng = np.random.default_rng(0)
  vals = random_signed(rng, 16, ring.bits) + [0, -1, -(2 ** (ring.bits - 1))]
  a = share_ints(vals, ring, seed=1)
  b = share_ints(vals, ring, seed=1)
  c = share_ints(vals, ring, seed=2)
  assert values(a) == vals
  assert ints(mpc.reveal(a)) == [v % ring.modulus for v in vals]
  assert ints(a.c) == ints(b.c) and ints(a.c) != ints(c.c)
  assert ints(a.c) != ints(mpc.reveal(a))  # the client share is a random mask
  assert a.frac == ring.frac and a.ring == ring
  x = mpc.share_float(np.array([1.5, -0.25]), mpc.Dealer(jax.random.key(0)), ring)
  assert mpc.reveal_float(x).tolist() == [1.5, -0.25]


@pytest.mark.parametrize("ring", RINGS, ids=IDS)
def test_local_ops_exact(ring):
  rng = np.random.default_rng(1)
  l = ring.bits
  xa, xb = random_signed(rng, 12, l), random_signed(rng, 12, l)
  k = [int(v) for v in rng.integers(-1000, 1000, size=12)]
  a, b = share_ints(xa, ring, 1), share_ints(xb, ring, 2)
  wrap = lambda v: bigint.signed(v, l)
  assert values(mpc.add(a, b)) == [wrap(p + q) for p, q in zip(xa, xb)]
  assert values(mpc.sub(a, b)) == [wrap(p - q) for p, q in zip(xa, xb)]
  assert values(mpc.neg(a)) == [wrap(-p) for p in xa]
  pub = mpc.add_public(a, arr(xb, ring))
  assert values(pub) == [wrap(p + q) for p, q in zip(xa, xb)]
  assert ints(pub.s) == ints(a.s)  # only the client adds a public value
  assert values(mpc.mul_public_int(a, np.array(k, np.int32))) == [
      wrap(p * q) for p, q in zip(xa, k)]
  assert values(mpc.mul_public_int(a, -3)) == [wrap(-3 * p) for p in xa]
  sh = mpc.lshift(a, 5)
  assert values(sh) == [wrap(p << 5) for p in xa] and sh.frac == ring.frac + 5
  m = a.reshape(3, 4)
  assert values(mpc.reduce_sum(m, axis=1)) == [wrap(sum(xa[4 * i:4 * i + 4])) for i in range(3)]
  assert values(mpc.concatenate([a, b])) == xa + xb
  assert values(m.transpose(1, 0)[0]) == [xa[0], xa[4], xa[8]]


# ---------------------------------------------------------------------- Beaver products


@pytest.mark.parametrize("ring", RINGS, ids=IDS)
def test_beaver_mul_and_square_exact(ring):
  rng = np.random.default_rng(2)
  l = ring.bits
  edge = [0, 1, -1, 2 ** (l - 1) - 1, -(2 ** (l - 1))]
  xa = random_signed(rng, 27, l) + edge
  xb = random_signed(rng, 27, l) + edge[::-1]
  dealer = mpc.Dealer(jax.random.key(3))
  a, b = share_ints(xa, ring, 4), share_ints(xb, ring, 5)
  prod = mpc.mul(a, b, dealer)
  assert values(prod) == [bigint.signed(bigint.ring_mul(p, q, l), l) for p, q in zip(xa, xb)]
  assert prod.frac == 2 * ring.frac
  sq = mpc.square(a, dealer)
  assert values(sq) == [bigint.signed(p * p, l) for p in xa]


@pytest.mark.parametrize("ring", RINGS, ids=IDS)
def test_fixed_point_products(ring):
  """mul_fixed / mul_public_fixed: floor(product / 2^f) or one less; einsum_public exact."""
  f, l = ring.frac, ring.bits
  rng = np.random.default_rng(22)
  # |a b| < 2^(l-2) at 2f fraction bits: |a|, |b| <= 4 in Z_2^32 (f = 13), 2^12 in Z_2^64.
  m = (4 if l == 32 else 2**12) << f
  xa = [int(v) for v in rng.integers(-m, m, size=12)] + [-m, 0, -1, 1]
  xb = [int(v) for v in rng.integers(-m, m, size=12)] + [m - 1, -1, -1, 1]
  dealer = mpc.Dealer(jax.random.key(23))
  a, b = share_ints(xa, ring, 24), share_ints(xb, ring, 25)
  prod = mpc.mul_fixed(a, b, dealer)
  assert prod.frac == f
  for p, q, r in zip(xa, xb, values(prod)):
    assert bigint.floor_shift(p * q, f) - r in (0, 1)
  k = bigint.signed(bigint.encode(-0.37, l, f), l)
  scaled = mpc.mul_public_fixed(a, -0.37, dealer)
  for p, r in zip(xa, values(scaled)):
    assert bigint.floor_shift(p * k, f) - r in (0, 1)
  w = [[int(v) for v in row] for row in rng.integers(-(2**20), 2**20, size=(4, 2))]
  out = mpc.einsum_public("ik,kn->in", a.reshape(4, 4), arr(w, ring))
  assert out.frac == 2 * f
  assert values(out) == [bigint.signed(sum(xa[4 * i + k_] * w[k_][j] for k_ in range(4)), l)
                         for i in range(4) for j in range(2)]


EINSUMS = [  # spec, a shape, b shape, big-int spec
    ("...k,kn->...n", (4, 8), (8, 3), "ik,kn->in"),
    ("bhqd,bhkd->bhqk", (1, 2, 3, 4), (1, 2, 5, 4), "bhqd,bhkd->bhqk"),
    ("bhqk,bhkd->bhqd", (1, 2, 3, 5), (1, 2, 5, 4), "bhqk,bhkd->bhqd"),
]


def nested(flat, shape):
  return np.array(flat, dtype=object).reshape(shape).tolist()


@pytest.mark.parametrize("ring", RINGS, ids=IDS)
@pytest.mark.parametrize("spec,a_shape,b_shape,ref", EINSUMS, ids=[e[0] for e in EINSUMS])
def test_beaver_einsum_exact(ring, spec, a_shape, b_shape, ref):
  rng = np.random.default_rng(math.prod(a_shape) + ring.bits)
  l = ring.bits
  xa = random_signed(rng, math.prod(a_shape), l)
  xb = random_signed(rng, math.prod(b_shape), l)
  a = share_ints(nested(xa, a_shape), ring, 6)
  b = share_ints(nested(xb, b_shape), ring, 7)
  out = mpc.einsum(spec, a, b, mpc.Dealer(jax.random.key(8)))
  want = bigint.einsum(ref, nested([v % 2**l for v in xa], a_shape),
                       nested([v % 2**l for v in xb], b_shape), l)
  assert values(out) == [bigint.signed(v, l) for v in np.array(want, object).reshape(-1)]
  assert out.frac == 2 * ring.frac


def test_ledger_beaver_matmul_by_hand():
  """(4, 8) @ (8, 3): each party opens X - A (32) and W - B (24) in one round."""
  ring = R.RING32
  dealer, ledger = mpc.Dealer(jax.random.key(0)), mpc.Ledger()
  x = mpc.share(np.ones((4, 8), np.uint32), dealer, ring)
  w = mpc.share(np.full((8, 3), 2, np.uint32), dealer, ring)
  with ledger.scope("layer0/ffn1"):
    out = mpc.matmul(x, w, dealer, ledger)
  assert ints(mpc.reveal(out)) == [16] * 12  # 8 * (1 * 2)
  summary = ledger.summary()
  assert list(summary["ops"]) == ["layer0/ffn1/einsum"]
  rec = summary["ops"]["layer0/ffn1/einsum"]
  assert rec["opened_elements"] == {32: 4 * 8 + 8 * 3}
  assert rec["rounds"] == 1 and rec["messages"] == 2 and rec["calls"] == 1
  assert rec["matmul_triples"] == [{"kind": "beaver", "bits": 32, "spec": "...k,kn->...n",
                                    "a_shape": [4, 8], "b_shape": [8, 3], "count": 1}]
  assert rec["triples"] == {} and rec["comparisons"] == {} and rec["ideal_calls"] == {}
  assert summary["total"] == summary["online"] == rec
  assert summary["setup"]["calls"] == 0
  assert ledger.total("layer0").opened_elements[32] == 56


@pytest.mark.parametrize("ring", RINGS, ids=IDS)
def test_static_weight_matmul_exact_and_cheaper_online(ring):
  rng = np.random.default_rng(9)
  l = ring.bits
  xs = [random_signed(rng, 4 * 8, l) for _ in range(2)]
  xw = random_signed(rng, 8 * 3, l)
  dealer, ledger = mpc.Dealer(jax.random.key(10)), mpc.Ledger()
  w = share_ints(nested(xw, (8, 3)), ring, 11)
  with ledger.scope("layer0/ffn1"):
    weight = mpc.setup_static_weight(w, dealer, ledger)
    outs = [mpc.matmul_static(share_ints(nested(x, (4, 8)), ring, 12 + i), weight, dealer, ledger)
            for i, x in enumerate(xs)]
  wmod = nested([v % 2**l for v in xw], (8, 3))
  for x, out in zip(xs, outs):
    want = bigint.einsum("ik,kn->in", nested([v % 2**l for v in x], (4, 8)), wmod, l)
    assert values(out) == [bigint.signed(v, l) for row in want for v in row]
  ops = ledger.summary()["ops"]
  assert ops["setup/layer0/ffn1/static_weight"]["opened_elements"] == {l: 8 * 3}
  per_query = ops["layer0/ffn1/matmul_static"]
  assert per_query["opened_elements"] == {l: 2 * 4 * 8} and per_query["rounds"] == 2
  plain = mpc.Ledger()
  mpc.matmul(share_ints(nested(xs[0], (4, 8)), ring), w, dealer, plain)
  assert per_query["opened_elements"][l] // 2 < plain.total().opened_elements[l] == 4 * 8 + 8 * 3
  assert ledger.summary()["setup"]["opened_elements"] == {l: 24}
  assert ledger.online().opened_elements[l] == 64


# --------------------------------------------------------------------------- truncation


def trunc_values(ring, shift_max):
  """Signed ints of the wrap-bit truncations' range [-2^(l-2), 2^(l-2)), edges included."""
  l = ring.bits
  lo, hi = -(2 ** (l - 2)), 2 ** (l - 2) - 1
  edge = [lo, hi, lo + 1, hi - 1, 0, -1, 1, -(2**shift_max), 2**shift_max - 1, 2**shift_max]
  return st.lists(st.one_of(st.integers(lo, hi), st.sampled_from(edge)),
                  min_size=32, max_size=32)


@pytest.mark.parametrize("ring", RINGS, ids=IDS)
@settings(max_examples=15, deadline=None)
@given(data=st.data())
def test_trunc_1bit_matches_bigint_and_bound(ring, data):
  l, f = ring.bits, 2 * ring.frac  # a product: 2f fraction bits
  t = data.draw(st.sampled_from([1, ring.frac, 2 * ring.frac]))
  vals = data.draw(trunc_values(ring, t))
  seed = data.draw(st.integers(0, 2**31 - 1))
  x = share_ints(vals, ring, seed, frac=f)
  out = mpc.trunc_1bit(x, t, mpc.Dealer(jax.random.key(seed + 1)))
  assert out.frac == f - t and out.ring == ring
  got = values(out)
  cs, ss = ints(x.c), ints(x.s)
  assert got == [bigint.wrap_trunc(c, s, t, l, l) for c, s in zip(cs, ss)]
  for v, r in zip(vals, got):  # result is floor(x / 2^t) or one less
    assert bigint.floor_shift(v, t) - r in (0, 1), (v, t, r)
  for c, s in zip(cs, ss):  # in range the exact wrap bit is Cheetah's msb(c') | msb(s)
    cp = (c + 2 ** (l - 2)) % 2**l
    assert bigint.msb_wrap(c, s, l) == int(cp + s >= 2**l)


@pytest.mark.parametrize("ring", RINGS, ids=IDS)
def test_trunc_1bit_fails_below_range(ring):
  l, t = ring.bits, ring.frac
  vals = [-(2 ** (l - 2)) - 1, -(2 ** (l - 2)) - 2**20, -(2 ** (l - 1))]
  x = share_ints(vals, ring, 3, frac=2 * ring.frac)
  got = values(mpc.trunc_1bit(x, t, mpc.Dealer(jax.random.key(4))))
  for v, r in zip(vals, got):  # off by 2^(l-t) (mod 2^l), not by 1
    assert (bigint.floor_shift(v, t) - r + 2 ** (l - t)) % 2**l in (0, 1)


@pytest.mark.parametrize("ring", RINGS, ids=IDS)
@settings(max_examples=15, deadline=None)
@given(data=st.data())
def test_trunc_local_matches_bigint_and_bound(ring, data):
  l, t = ring.bits, ring.frac
  lo, hi = -(2 ** (l - 1)), 2 ** (l - 1) - 1
  edge = [lo, hi, 0, -1, 1, -(2 ** (l - 8)), 2 ** (l - 8)]
  small = st.integers(max(lo, -(2**40)), min(hi, 2**40))
  vals = data.draw(st.lists(st.one_of(small, st.integers(lo, hi),
                                      st.sampled_from(edge)), min_size=32, max_size=32))
  seed = data.draw(st.integers(0, 2**31 - 1))
  x = share_ints(vals, ring, seed, frac=2 * ring.frac)
  out = mpc.trunc_local(x, t)
  assert out.frac == ring.frac
  cs, ss = ints(x.c), ints(x.s)
  assert list(zip(ints(out.c), ints(out.s))) == [
      bigint.secureml_trunc(c, s, t, l) for c, s in zip(cs, ss)]
  for v, c, r in zip(vals, cs, values(out)):
    err = (r - bigint.floor_shift(v, t)) % 2**l
    if bigint.secureml_fails(c, v, l):  # off by -2^(l-t) (x > 0) or +2^(l-t) (x < 0)
      assert (err - (-(2 ** (l - t)) if v > 0 else 2 ** (l - t))) % 2**l in (0, 1), (v, r)
    else:
      assert err in (0, 1), (v, r)


@pytest.mark.parametrize("ring", RINGS, ids=IDS)
def test_trunc_local_failure_rate(ring):
  """2^17 elements with |x| = 2^(l-8): failures ~ Binomial(n, 2^-8), exactly where c - x wraps."""
  l, t, n = ring.bits, ring.frac, 2**17
  mag = 2 ** (l - 8)
  p = mpc.secureml_failure_prob(ring, mag / 2**ring.frac)
  assert p == 2.0**-8
  udt = np.dtype(ring.dtype)
  pos = np.arange(n) % 2 == 0
  x_ring = np.where(pos, udt.type(mag), udt.type(2**l - mag)).astype(udt)
  x = mpc.share(x_ring, mpc.Dealer(jax.random.key(21)), ring)
  rev = np.asarray(mpc.reveal(mpc.trunc_local(x, t)))
  out = rev.view(np.int32 if l == 32 else np.int64).astype(np.int64)
  floor = np.where(pos, mag >> t, (-mag) >> t)
  failed = ~np.isin(out - floor, [0, 1])
  c = np.asarray(x.c)
  predicted = np.where(pos, c < udt.type(mag), c >= udt.type(2**l - mag))
  np.testing.assert_array_equal(failed, predicted)
  sigma = math.sqrt(n * p * (1 - p))
  assert abs(int(failed.sum()) - n * p) < 5 * sigma, (int(failed.sum()), n * p)
  assert mpc.secureml_failure_prob(R.RING32, 16.0) == 2.0**-15  # papers/secure.md 1.4 example


# ----------------------------------------------------------------------- ring switching


@settings(max_examples=15, deadline=None)
@given(data=st.data())
def test_upcast_downcast_exact(data):
  vals = data.draw(trunc_values(R.RING32, 13))
  seed = data.draw(st.integers(0, 2**31 - 1))
  x = share_ints(vals, R.RING32, seed)
  up = mpc.upcast(x, R.RING64, mpc.Dealer(jax.random.key(seed)))
  assert up.ring == R.RING64 and up.frac == R.RING32.frac
  assert values(up) == vals
  assert values(up) == [bigint.wrap_trunc(c, s, 0, 32, 64) for c, s in zip(ints(x.c), ints(x.s))]
  down = mpc.downcast(up, R.RING32)
  assert down.ring == R.RING32 and values(down) == vals


def test_downcast_of_64_bit_values():
  big = [2**31 - 1, -(2**31), 5, 2**31]  # the last does not fit 32 signed bits
  down = mpc.downcast(share_ints(big, R.RING64, 1), R.RING32)
  assert values(down) == [2**31 - 1, -(2**31), 5, -(2**31)]


@settings(max_examples=15, deadline=None)
@given(data=st.data())
def test_trunc_upcast_fused_equals_trunc_then_upcast(data):
  vals = data.draw(trunc_values(R.RING32, 8))
  seed = data.draw(st.integers(0, 2**31 - 1))
  x = share_ints(vals, R.RING32, seed, frac=26)  # a RING32 product: 2 * 13 fraction bits
  ledger = mpc.Ledger()
  fused = mpc.trunc_upcast(x, 8, R.RING64, mpc.Dealer(jax.random.key(seed)), ledger)
  assert fused.ring == R.RING64 and fused.frac == 18 == R.RING64.frac
  two_step = mpc.upcast(mpc.trunc_1bit(x, 8, mpc.Dealer(jax.random.key(seed + 1)), ledger),
                        R.RING64, mpc.Dealer(jax.random.key(seed + 2)), ledger)
  assert values(fused) == values(two_step)
  cs, ss = ints(x.c), ints(x.s)
  assert values(fused) == [bigint.wrap_trunc(c, s, 8, 32, 64) for c, s in zip(cs, ss)]
  for v, r in zip(vals, values(fused)):
    assert bigint.floor_shift(v, 8) - r in (0, 1)
  ops = ledger.summary()["ops"]
  assert ops["trunc_upcast"]["wrap_bits"] == {32: 32}  # one wrap bit per element ...
  assert ops["trunc_1bit"]["wrap_bits"] == ops["upcast"]["wrap_bits"] == {32: 32}  # ... not two


# -------------------------------------------------------------------------- comparisons


@pytest.mark.parametrize("ring", RINGS, ids=IDS)
def test_comparisons_select_exact(ring):
  f, l = ring.frac, ring.bits
  half = 2 ** (f - 1)  # the threshold 0.5 at f fraction bits
  va = [-(2 ** (l - 2)), -1, 0, 1, half - 1, half, half + 1, 2 ** (l - 2) - 1]
  vb = [0, 0, 0, 0, half, half, half, -(2 ** (l - 2))]
  dealer, ledger = mpc.Dealer(jax.random.key(5)), mpc.Ledger()
  a, b = share_ints(va, ring, 6), share_ints(vb, ring, 7)
  lt_half = mpc.less_than_public(a, 0.5, dealer, ledger)
  assert lt_half.frac == 0 and values(lt_half) == [int(v < half) for v in va]
  assert values(mpc.ltz(a, dealer, ledger)) == [int(v < 0) for v in va]
  lt = mpc.less_than(a, b, dealer, ledger)
  assert values(lt) == [int(p < q) for p, q in zip(va, vb)]
  sel = mpc.select(lt, a, b, dealer, ledger)
  assert values(sel) == [p if p < q else q for p, q in zip(va, vb)]
  ops = ledger.summary()["ops"]
  assert ops["less_than"]["comparisons"] == {l: 24} and ops["less_than"]["calls"] == 3
  assert ops["select"]["muxes"] == {l: 8} and ops["select"]["opened_elements"] == {l: 16}
  assert ops["less_than"]["rounds"] == 0  # priced by jaxsys.secure.cost


@pytest.mark.parametrize("ring", RINGS, ids=IDS)
def test_maximum_tree(ring):
  rng = np.random.default_rng(8)
  l = ring.bits
  vals = [int(v) for v in rng.integers(-(2**28), 2**28, size=15)]  # |a - b| < 2^31: no wrap
  vals[3] = 2**28  # the row max at a middle position
  x = share_ints(nested(vals, (3, 5)), ring, 9)
  dealer, ledger = mpc.Dealer(jax.random.key(10)), mpc.Ledger()
  rows = mpc.maximum(x, 1, dealer, ledger)
  assert values(rows) == [max(vals[5 * i:5 * i + 5]) for i in range(3)]
  ops = ledger.summary()["ops"]
  assert ops["maximum/less_than"]["calls"] == 3 == math.ceil(math.log2(5))
  assert ops["maximum/select"]["rounds"] == 3
  assert ops["maximum/less_than"]["comparisons"] == {l: 3 * (2 + 1 + 1)}
  cols = mpc.maximum(x, 0, dealer, keepdims=True)
  assert cols.shape == (1, 5)
  assert values(cols) == [max(vals[j::5]) for j in range(5)]


# --------------------------------------------------------------------------- polynomials


@pytest.mark.parametrize("ring", RINGS, ids=IDS)
@pytest.mark.parametrize("trunc", ["1bit", "secureml"])
def test_poly_eval_within_truncation_bound(ring, trunc):
  coeffs = [0.00002, 0.45119, 0.36213, 0.07338]  # papers/secure.md 3.2(b) GELU fit
  f = ring.frac
  u = Fraction(1, 2**f)
  xs = np.linspace(-2.7, 1.2, 32)
  x_ring = R.encode(xs, ring)
  x = mpc.share(x_ring, mpc.Dealer(jax.random.key(11)), ring)
  ledger = mpc.Ledger()
  y = mpc.poly_eval(x, coeffs, mpc.Dealer(jax.random.key(12)), ledger, trunc=trunc)
  assert y.frac == f
  enc = [Fraction(bigint.signed(bigint.encode(c, ring.bits, f), ring.bits), 2**f) for c in coeffs]
  for xv, yv in zip([Fraction(v, 2**f) for v in values(x)], values(y)):
    exact = sum(c * xv**i for i, c in enumerate(enc))
    bound = 2 * u * sum(abs(xv) ** j for j in range(len(coeffs) - 1))  # 2u per truncation
    assert abs(Fraction(yv, 2**f) - exact) < bound, (xv, yv)
  total = ledger.total("poly_eval")
  assert total.triples[ring.bits] == 2 * 32 and total.rounds == 2  # degree 3: 2 products
  assert total.truncations[ring.bits] == 3 * 32
  assert total.wrap_bits[ring.bits] == (3 * 32 if trunc == "1bit" else 0)


# ----------------------------------------------------------------- ideal functionalities


@pytest.mark.parametrize("ring", RINGS, ids=IDS)
def test_reciprocal_rsqrt_correctly_rounded(ring):
  f, l = ring.frac, ring.bits
  rng = np.random.default_rng(13)
  vals = [1, -1, 0, 2**f, 3 * 2**f, 2 ** (f - 1), 12345, -12345, 2 ** (l - 1) - 1,
          -(2 ** (l - 1)), 2 ** (2 * f), 2 ** (2 * f) + 1, 2 ** (2 * f + 1) - 1]
  vals += [int(v) for v in rng.integers(1, 2 ** (l - 2), size=19)]
  x = share_ints(vals, ring, 14)
  dealer, ledger = mpc.Dealer(jax.random.key(15)), mpc.Ledger()
  rec = mpc.reciprocal(x, dealer, ledger)
  assert values(rec) == [bigint.reciprocal(v, f) for v in vals]
  rs = mpc.rsqrt(x, dealer, ledger)
  assert values(rs) == [bigint.rsqrt(v, f) for v in vals]
  assert values(rec)[3] == 2**f and values(rs)[3] == 2**f  # 1/1 and 1/sqrt(1)
  summary = ledger.summary()
  assert summary["total"]["ideal_calls"] == {"reciprocal": {l: 32}, "rsqrt": {l: 32}}
  assert summary["total"]["opened_elements"] == {} and summary["total"]["rounds"] == 0


# --------------------------------------------------------- ledger: jit, eval_shape, errors


def program(x, w, *, dealer, ledger):
  """|trunc(x @ w)| with a comparison and a select, in scope "layer0"."""
  with ledger.scope("layer0"):
    y = mpc.trunc_1bit(mpc.matmul(x, w, dealer, ledger), x.frac, dealer, ledger)
    return mpc.select(mpc.ltz(y, dealer, ledger), mpc.neg(y), y, dealer, ledger)


def test_count_ops_without_running_and_jit_records_once_per_trace():
  ring = R.RING64
  rng = np.random.default_rng(16)
  xv = [[int(v) for v in row] for row in rng.integers(-(2**25), 2**25, size=(4, 8))]
  wv = [[int(v) for v in row] for row in rng.integers(-(2**20), 2**20, size=(8, 3))]
  x, w = share_ints(xv, ring, 17), share_ints(wv, ring, 18)
  eager = mpc.Ledger()
  out = program(x, w, dealer=mpc.Dealer(jax.random.key(19)), ledger=eager)
  want = [abs(sum(xv[i][k] * wv[k][j] for k in range(8)) >> ring.frac)
          for i in range(4) for j in range(3)]
  assert all(abs(g - e) <= 1 for g, e in zip(values(out), want))

  sds = lambda shape: jax.ShapeDtypeStruct(shape, jnp.uint64)
  counted = mpc.count_ops(program, mpc.Shared(sds((4, 8)), sds((4, 8)), ring),
                          mpc.Shared(sds((8, 3)), sds((8, 3)), ring),
                          dealer=mpc.Dealer(jax.random.key(0)))
  assert counted.summary() == eager.summary()
  ops = eager.summary()["ops"]
  assert set(ops) == {"layer0/einsum", "layer0/trunc_1bit", "layer0/less_than", "layer0/select"}
  assert eager.total().rounds == 2  # the matmul's opening and the select's

  traced = mpc.Ledger()

  @jax.jit
  def run(key, x, w):
    return program(x, w, dealer=mpc.Dealer(key), ledger=traced)

  run(jax.random.key(1), x, w)
  x2, w2 = share_ints(xv[::-1], ring, 20), share_ints(wv[::-1], ring, 21)
  with testing.count_lowerings() as lowerings:
    out2 = jax.block_until_ready(run(jax.random.key(2), x2, w2))
  assert not lowerings
  assert traced.summary() == eager.summary()  # recorded once, at the one trace
  want2 = [abs(sum(xv[::-1][i][k] * wv[::-1][k][j] for k in range(8)) >> ring.frac)
           for i in range(4) for j in range(3)]
  assert all(abs(g - e) <= 1 for g, e in zip(values(out2), want2))


def test_x64_scope_does_not_leak_and_ops_do_not_retrace():
  assert not jax.config.jax_enable_x64
  ring = R.RING64
  dealer = mpc.Dealer(jax.random.key(0))

  def step(seed):
    a, b = share_ints([[seed, 2], [3, 4]], ring, seed), share_ints([[5, 6], [7, seed]], ring, 1)
    m = mpc.mul(a, b, dealer)
    t = mpc.trunc_1bit(mpc.matmul(a, b, dealer), 1, dealer)
    return jax.block_until_ready((m.c, t.c))

  step(1)
  assert not jax.config.jax_enable_x64 and jnp.arange(3).dtype == jnp.int32
  with testing.count_lowerings() as lowerings:
    step(2)
  assert not lowerings, f"retraced {len(lowerings)} time(s)"
  assert not jax.config.jax_enable_x64 and jnp.arange(3).dtype == jnp.int32


def test_clear_errors():
  d = mpc.Dealer(jax.random.key(0))
  a32 = share_ints([1, 2], R.RING32)
  a64 = share_ints([1, 2], R.RING64)
  with pytest.raises(ValueError, match=r"a, b: rings differ: Ring\(bits=32.*Ring\(bits=64"):
    mpc.add(a32, a64)
  with pytest.raises(ValueError, match=r"rings differ"):
    mpc.mul(a32, a64, d)
  with pytest.raises(ValueError, match=r"rings differ"):
    mpc.einsum("i,i->", a32, a64, d)
  with pytest.raises(ValueError, match=r"a, b: fraction bits differ: 26 vs 13"):
    mpc.add(mpc.mul(a32, a32, d), a32)
  with pytest.raises(ValueError, match=r"sh.ring: expected a 32-bit ring"):
    mpc.upcast(a64, R.RING64, d)
  with pytest.raises(ValueError, match=r"ring64: expected a 64-bit ring"):
    mpc.upcast(a32, R.RING32, d)
  with pytest.raises(ValueError, match=r"ring32: expected a 32-bit ring"):
    mpc.downcast(a64, R.RING64)
  with pytest.raises(ValueError, match=r"s: expected an int in \[0, 13\]"):
    mpc.trunc_1bit(a32, 14, d)
  with pytest.raises(ValueError, match=r"bit: expected a shared 0/1 bit \(frac 0\)"):
    mpc.select(a32, a32, a32, d)
  with pytest.raises(ValueError, match=r"a, b: expected \(\.\.\., K\) @ \(K, N\)"):
    mpc.matmul(a32.reshape(1, 2), a32.reshape(1, 2), d)
  with pytest.raises(TypeError, match=r"k: expected a public integer"):
    mpc.mul_public_int(a32, np.array([0.5, 1.0]))
  with pytest.raises(TypeError, match=r"x_ring: expected ring elements of dtype uint64"):
    mpc.share(np.array([1], np.uint32), d, R.RING64)
  with pytest.raises(TypeError, match=r"ledger: expected an mpc.Ledger"):
    mpc.mul(a32, a32, d, ledger={})
  with pytest.raises(ValueError, match=r"t: expected a shape that broadcasts to \(2,\)"):
    mpc.less_than_public(a32, np.zeros(3), d)
  with pytest.raises(ValueError, match=r"x: 1 of 1 element\(s\) overflow"):
    mpc.mul_public_fixed(a32, 1e6, d)
  with pytest.raises(ValueError, match=r"dealer: method='1bit'"):
    mpc.truncate(a32, 1)
  with pytest.raises(ValueError, match=r"Shared.frac: expected an int in \[0, 31\]"):
    mpc.Shared(a32.c, a32.s, R.RING32, 32)
