"""The Nimbus / BumbleBee cost model against hand-computed cases, SPU's published
counts, the latency formula, a vmapped network sweep, monotonicity and every error."""

import collections
import json
import math

import hypothesis
import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsys._src import testing
from jaxsys.secure import cost
from jaxsys.secure import mpc
from jaxsys.secure import ring
from jaxsys.secure.opcount import OpCount

CT64 = 333_824.0  # 2 * 8192 * (59 + 55 + 49) / 8
CT32 = 98_304.0  # 2 * 4096 * (59 + 37) / 8
RESP64 = 233_472.0  # 2 * 8192 * (59 + 55) / 8: responses are mod-switched to 2 moduli
RESP32 = 60_416.0  # 2 * 4096 * 59 / 8
NTT = 26.624e-6  # 8192 / 2 * 13 butterflies at 0.5 ns
OLE_QUERY = 223_232.0  # 2 * 8192 * (60 + 49) / 8
OLE_REPLY = 122_880.0  # 2 * 8192 * 60 / 8
C = cost.FERRET_COT_BITS  # 0.45


def approx(x, rel=1e-12):
  return pytest.approx(x, rel=rel, abs=1e-9)


# ---------------------------------------------------------------- HE parameters


@pytest.mark.parametrize("bits, n, moduli, ct, resp", [
    (64, 8192, (59, 55, 49), CT64, RESP64),
    (33, 8192, (59, 55, 49), CT64, RESP64),
    (32, 4096, (59, 37), CT32, RESP32),
    (20, 4096, (59, 37), CT32, RESP32),
    # above 64 bits two moduli are dropped: 3 x 59 bits -> 724_992 bytes
    (128, 16384, (59, 59, 59, 59, 49), 2 * 16384 * 285 / 8, 2 * 16384 * 177 / 8),
])
def test_he_params(bits, n, moduli, ct, resp):
  p = cost.he_params(bits)
  assert (p.poly_degree, p.modulus_bits, p.num_moduli) == (n, moduli, len(moduli))
  assert p.ciphertext_bytes == ct
  assert p.seeded_ciphertext_bytes == ct / 2
  assert p.response_ciphertext_bytes == resp
  assert p.response_num_moduli == len(moduli) - (2 if bits > 64 else 1)
  assert p.keyswitch_num_moduli == len(moduli) - 1  # the last is the special prime


def test_fm64_ciphertext_is_about_334_kb():
  assert round(cost.he_params(64).ciphertext_bytes / 1e3) == 334


@pytest.mark.parametrize("bad", [0, 129, 256, -64, 64.0, True, "64", None])
def test_he_params_rejects_bad_ring_bits(bad):
  with pytest.raises(ValueError, match="ring_bits"):
    cost.he_params(bad)


def test_galois_keys_hand():
  # 13 keys (log2 8192) x 2 digits (data moduli) x one seeded 3-modulus ciphertext.
  assert cost.galois_key_bytes(64) == 13 * 2 * CT64 / 2 == 4_339_712


def test_compute_model_defaults_hand():
  m = cost.DEFAULT_COMPUTE
  # COP's scalar loop and SIP's pointwise loop run the same multiply_add_uint_mod.
  assert m.seconds_per_scalar_coeff == m.seconds_per_dyadic_coeff == 1e-9
  assert m.ntt_s(8192) == approx(NTT)
  # decryption at 2 moduli: 6 NTTs + 8192 * 2 dyadic ops.
  assert m.decryption_s(8192, 2) == approx(6 * NTT + 16_384e-9)


# ----------------------------------------------------------------- COP (Nimbus)


def test_cop_ffn1_hand():
  # m=3072 out, k=768 in, n=128 tokens, FM64: N=8192, t=next_pow2(3072)=4096, 1 block.
  c = cost.cop_linear(3072, 768, 128, 64)
  assert c.weight_ciphertexts == 768  # one per input column: 768 * ceil(3072/4096)
  assert c.unpacked_output_ciphertexts == 128  # one per token
  assert c.output_ciphertexts == 64  # gap = 8192/4096 = 2 per ct: ceil(128*4096/8192)
  assert c.shift_adds == 128 - 64
  assert c.scalar_poly_macs == 128 * 768  # n k ceil(m/t) = 98_304
  assert (c.input_ciphertexts, c.poly_products, c.automorphisms, c.messages) == (0, 0, 0, 1)
  assert c.ntts == 64 * 3 * 2  # server decryptions only, 3 NTTs per response modulus
  assert c.online_bytes == 64 * RESP64 == 14_942_208  # mod-switched to 59 + 55 bits
  assert c.setup_bytes == 768 * CT64 / 2 == 128_188_416  # seeded
  assert c.client_memory_bytes == 768 * CT64
  assert c.cost == cost.Cost(64 * RESP64, 1.0, c.compute_s)
  # compute: (MACs + shifts) x 2 N L = 49_152 scalar ops at 1 ns; 384 NTTs of 26.624 us;
  # 64 decryptions x N x 2 response moduli dyadic ops at 1 ns.
  want = (98_304 + 64) * 49_152 * 1e-9 + 384 * NTT + 64 * 16_384 * 1e-9
  assert c.compute_s == approx(want)


def test_cop_square_hand():
  # m=k=768: t=1024, gap 8 columns per ciphertext.
  c = cost.cop_linear(768, 768, 128, 64)
  assert (c.weight_ciphertexts, c.output_ciphertexts, c.scalar_poly_macs) == (768, 16, 98_304)
  assert c.shift_adds == 128 - 16


def test_cop_m_larger_than_n_hand():
  # m=16384 > N=8192: t=N, 2 row blocks, gap 1 (no packing possible).
  c = cost.cop_linear(16384, 10, 3, 64)
  assert c.weight_ciphertexts == 10 * 2
  assert c.output_ciphertexts == 2 * 3  # 2 blocks x ceil(3*8192/8192)
  assert c.scalar_poly_macs == 3 * 10 * 2
  assert c.shift_adds == 0


def test_cop_small_ring_and_ragged_hand():
  # FM32: N=4096, m=5 -> t=8, gap 512: 3 tokens share one ciphertext.
  c = cost.cop_linear(5, 7, 3, 32)
  assert (c.weight_ciphertexts, c.output_ciphertexts, c.scalar_poly_macs) == (7, 1, 21)
  assert c.online_bytes == RESP32  # one 59-bit modulus left
  assert c.ntts == 3  # one decryption at one modulus
  # m=3000 -> t=4096, gap 2: 5 tokens -> ceil(5/2) = 3 ciphertexts.
  assert cost.cop_linear(3000, 2, 5, 64).output_ciphertexts == 3


def test_cop_seeded_setup_halves_transfer_not_memory():
  c = cost.cop_linear(768, 768, 128, 64)  # seeded by default, as the Nimbus code sends
  assert c.setup_bytes == 768 * CT64 / 2
  assert c.client_memory_bytes == 768 * CT64
  full = cost.cop_linear(768, 768, 128, 64, seeded_setup=False)
  assert full.setup_bytes == 768 * CT64 and full.client_memory_bytes == 768 * CT64


def test_bert_base_cop_setup_hand():
  # 12 layers x (3*768 QKV + 768 O + 768 FFN1 + 3072 FFN2) = 82_944 ciphertexts
  # (papers/secure.md 1.2): 27.69 GB at FM64, 13.84 GB seeded.
  shapes = [(768, 768)] * 4 + [(3072, 768), (768, 3072)]
  per_layer = sum(cost.cop_linear(m, k, 128, 64).weight_ciphertexts for m, k in shapes)
  assert per_layer == 3 * 768 + 768 + 768 + 3072
  assert 12 * per_layer == 82_944
  r = cost.bert_report(design="nimbus", include_embedding=False)
  assert r.weight_ciphertexts == 82_944
  assert r.setup_bytes == 82_944 * CT64 / 2 == 13_844_348_928  # seeded
  assert r.client_memory_bytes == 82_944 * CT64 == 27_688_697_856
  full = cost.bert_report(design="nimbus", include_embedding=False, seeded_setup=False)
  assert full.setup_bytes == 27_688_697_856
  # The embedding table adds 30522 * ceil(768/1024) ciphertexts.
  assert cost.bert_report(design="nimbus").weight_ciphertexts == 82_944 + 30_522


def test_cop_embedding_selects_without_macs():
  e = cost.cop_embedding(30_522, 768, 128, 64)
  assert (e.weight_ciphertexts, e.output_ciphertexts, e.scalar_poly_macs) == (30_522, 16, 0)
  assert e.compute_s < cost.cop_linear(768, 30_522, 128, 64).compute_s


# ---------------------------------------------------------------- SIP (BumbleBee)


def test_sip_subshape_single_input_ciphertext_hand():
  # W 64x64, X 64x128 (one attention head's QK^T shape): X has 8192 = N entries, so
  # the only subshape with 1 input and 1 packed output ciphertext is d0=128 tokens,
  # d1=64 inputs, d2 = 8192 / (128*64) = 1 output, with SPU's cost
  # 1000 (1 + 1) + ceil(128*64/8192) * 64 + 64/10 = 2070.4; any other has >= 3 cts.
  assert cost.sip_subshape(64, 64, 128, 64) == (128, 64, 1)
  c = cost.sip_linear(64, 64, 128, 64)
  assert c.input_ciphertexts == 1
  assert c.poly_products == 64  # b0 b1 b2 = 1 * 1 * 64
  assert c.unpacked_output_ciphertexts == 64  # b0 b2, each with 128 useful coeffs of 8192
  assert c.output_ciphertexts == 1  # PackLWE: ceil(64 / d1=64)
  assert c.automorphisms == 63  # one full group: 32 + 16 + 8 + 4 + 2 + 1
  assert c.messages == 2 and c.weight_ciphertexts == 0 and c.scalar_poly_macs == 0
  assert c.online_bytes == CT64 / 2 + RESP64 == 400_384  # seeded query, 2-modulus reply
  assert c.setup_bytes == 13 * 2 * CT64 / 2
  # NTTs: input encode + encrypt 1*3*2, weight plaintexts 64*3, back to coefficients
  # 64*2*3, 63 key switches at 2 data moduli x (2 + 6 + 6 + 4), client decryption 3*2.
  assert c.ntts == 6 + 192 + 384 + 63 * 18 + 6 == 1722
  # dyadic: encryption 2NL, 64 products x 2NL, 63 x 2*2*3 N per key switch, decryption
  # N x 2; scalar: the 64 products scaled by 64^-1 (2NL each).
  dyadic = 49_152 + 64 * 49_152 + 63 * 12 * 8192 + 16_384
  assert c.compute_s == approx(1722 * NTT + dyadic * 1e-9 + 64 * 49_152 * 1e-9)
  unpacked = cost.sip_linear(64, 64, 128, 64, pack=False)
  assert (unpacked.output_ciphertexts, unpacked.automorphisms) == (64, 0)
  assert unpacked.online_bytes == CT64 / 2 + 64 * RESP64
  assert cost.sip_linear(64, 64, 128, 64, seeded_input=False).online_bytes == CT64 + RESP64
  cached = cost.sip_linear(64, 64, 128, 64, cache_weight_ntt=True)
  assert cached.ntts == c.ntts - 192


def test_sip_trivial_hand():
  c = cost.sip_linear(1, 1, 1, 64)
  assert cost.sip_subshape(1, 1, 1, 64) == (1, 1, 1)
  assert (c.input_ciphertexts, c.output_ciphertexts, c.automorphisms) == (1, 1, 0)


@pytest.mark.parametrize("num, gap, want", [
    (768, 64, 756),  # 12 full groups x 63 (BERT-base 768 x 768)
    (64, 64, 63),
    (65, 64, 63 + 6),  # a lone ciphertext still goes through log2(64) levels
    (2, 64, 2 * 5 + 1),  # two ciphertexts: 2 automorphisms per level until h = 1
    (3072, 64, 48 * 63),
    (1, 64, 0),  # SPU skips packing for a single ciphertext
    (0, 8, 0),
    (5, 1, 0),  # gap 1: nothing to merge
])
def test_packlwe_automorphisms_hand(num, gap, want):
  assert cost.packlwe_automorphisms(num, gap) == want


def test_packlwe_automorphisms_errors():
  with pytest.raises(ValueError, match="num_ciphertexts"):
    cost.packlwe_automorphisms(-1, 8)
  with pytest.raises(ValueError, match="gap"):
    cost.packlwe_automorphisms(8, 0)


def test_bert_base_layer_work_hand():
  # One BERT-base layer at seq 128: COP multiply-adds n k ceil(m/t) against SIP's
  # b0 b1 b2 products, both over 2 N L coefficients.
  shapes = [(768, 768)] * 4 + [(3072, 768), (768, 3072)]
  cop = sum(cost.cop_linear(m, k, 128).scalar_poly_macs for m, k in shapes)
  sip = sum(cost.sip_linear(m, k, 128).poly_products for m, k in shapes)
  assert cop == 5 * 98_304 + 393_216 == 884_736
  assert sip == 4 * 9216 + 2 * 36_864 == 110_592
  assert sum(cost.sip_linear(m, k, 128).automorphisms for m, k in shapes) == 4 * 756 + 3024 + 756


@hypothesis.settings(max_examples=40, deadline=None)
@hypothesis.given(st.integers(1, 3000), st.integers(1, 3000), st.integers(1, 40),
                  st.sampled_from([32, 64]))
def test_linear_invariants(m, k, n, bits):
  N = cost.he_params(bits).poly_degree
  cop = cost.cop_linear(m, k, n, bits)
  t = min(N, cost.next_pow2(m))
  assert t >= min(m, N) and (t & (t - 1)) == 0
  blocks = math.ceil(m / t)
  assert cop.weight_ciphertexts == k * blocks
  assert cop.output_ciphertexts == blocks * math.ceil(n * t / N)
  assert cop.output_ciphertexts * (N // t) >= cop.unpacked_output_ciphertexts  # all packed
  d0, d1, d2 = cost.sip_subshape(m, k, n, bits)
  assert d0 * d1 * d2 <= N and (d1 & (d1 - 1)) == 0 and d0 <= n and d1 <= k and d2 <= m
  sip = cost.sip_linear(m, k, n, bits)
  assert sip.input_ciphertexts == math.ceil(n / d0) * math.ceil(k / d1)
  assert sip.poly_products == sip.input_ciphertexts * math.ceil(m / d2)
  assert sip.output_ciphertexts * d1 >= sip.unpacked_output_ciphertexts
  assert sip.output_ciphertexts >= math.ceil(m * n / N)  # at most N results per ciphertext
  if sip.unpacked_output_ciphertexts > 1:  # each merge is one automorphism, <= d1 - 1 a group
    assert sip.unpacked_output_ciphertexts - sip.output_ciphertexts <= sip.automorphisms
    assert sip.automorphisms <= sip.output_ciphertexts * (d1 - 1)


def test_secret_matmul_two_cross_terms():
  one = cost.sip_linear(128, 64, 128, 64)
  c = cost.secret_matmul_cost(128, 64, 128, 64, batch=12)
  assert c == cost.Cost(2 * one.online_bytes * 12, 2.0, one.compute_s * 12)


@pytest.mark.parametrize("fn", [cost.cop_linear, cost.sip_linear])
@pytest.mark.parametrize("dims, name", [((0, 4, 4), "m"), ((4, -1, 4), "k"), ((4, 4, 0), "n"),
                                        ((4.0, 4, 4), "m")])
def test_linear_rejects_bad_dims(fn, dims, name):
  with pytest.raises(ValueError, match=rf"^{name} "):
    fn(*dims, 64)


@pytest.mark.parametrize("fn", [cost.cop_linear, cost.sip_linear])
def test_linear_rejects_bad_ring(fn):
  with pytest.raises(ValueError, match="ring_bits"):
    fn(4, 4, 4, 0)


# -------------------------------------------------------- non-linear primitives


def test_millionaire_hand():
  # 32 bits, radix 4: q=8 digits, s=3 plain ANDs on the spine, 4 correlated ANDs.
  # 8 (4 + 32) + 4*3 + 6*4 + 0.45 (8*4 + 2*7) = 288 + 12 + 24 + 20.7 = 344.7 bits.
  c = cost.millionaire_cost(32, 1)
  assert c.bytes * 8 == approx(344.7)
  assert c.rounds == 5  # 2 OT flights + 3 AND levels
  # 64 bits: q=16, s=4, 11 correlated: 576 + 16 + 66 + 0.45 (64 + 30) = 700.3 bits.
  c64 = cost.millionaire_cost(64, 1)
  assert c64.bytes * 8 == approx(700.3)
  assert c64.rounds == 6
  # one digit: no tree: 4 + 32 bits + 0.45 * 4 COTs; 2 rounds.
  one = cost.millionaire_cost(4, 3)
  assert one.bytes * 8 == approx(3 * 37.8) and one.rounds == 2
  # a larger radix trades bytes for rounds: q=4 digits of 8 bits.
  r8 = cost.millionaire_cost(32, 1, radix=8)
  assert r8.rounds == 4 and r8.bytes > c.bytes


def test_matches_spu_published_counts():
  # SPU libspu/mpc/cheetah/nonlinear/README.md (bits sent + received per instance).
  spu = {("mill", 32): 348.377, ("mill", 64): 690.503,
         ("trunc", 32): 369.503, ("trunc", 64): 723.754}
  model = {("mill", 32): cost.millionaire_cost(32, 1).bytes * 8,
           ("mill", 64): cost.millionaire_cost(64, 1).bytes * 8,
           ("trunc", 32): cost.truncation_cost(32, 1, shift=12).bytes * 8,
           ("trunc", 64): cost.truncation_cost(64, 1, shift=12).bytes * 8}
  for key, want in spu.items():
    assert abs(model[key] / want - 1) < 0.035, (key, model[key], want)


def test_small_primitives_hand():
  assert cost.comparison_cost(64, 5) == cost.millionaire_cost(63, 5)  # MSB of the difference
  mux = cost.mux_cost(64, 1)
  assert mux.bytes * 8 == approx(2 * (1 + 64 + C)) and mux.rounds == 2  # 130.9 bits
  assert cost.open_cost(32, 10) == cost.Cost(80.0, 1.0, 0.0)
  b2a = cost.b2a_cost(13, 1)
  assert b2a.bytes * 8 == approx(14.45) and b2a.rounds == 2
  a = cost.and_cost(8)
  assert a.bytes == approx(8 * (4 + 2 * C) / 8) and a.rounds == 1
  tr = cost.truncation_cost(64, 1, shift=12)
  assert tr.bytes * 8 == approx(700.3 + 13.45) and tr.rounds == 8
  assert cost.wrap_bit_cost(32, 1, out_bits=0) == cost.millionaire_cost(32, 1)
  # Nimbus's fused trunc + upcast: B2A into 32 + 13 = 45 bits; plain lift: 32 bits.
  fused = cost.upcast_cost(1, 32, 64, shift=13)
  assert fused.bytes * 8 == approx(344.7 + 1 + 45 + C) and fused.rounds == 7
  assert cost.upcast_cost(1, 32, 64).bytes * 8 == approx(344.7 + 1 + 32 + C)


def test_ole_mul_hand():
  # FM64: ceil((128 + 15)/36) = 4 CRT primes; per prime and 8192 elements one query
  # ciphertext out and one reply back, in both directions.
  assert cost.ole_crt_primes(64) == 4 and cost.ole_crt_primes(32) == 3
  c = cost.ole_mul_cost(64, 8192)
  assert c.bytes == 2 * 4 * (OLE_QUERY + OLE_REPLY) == 2_768_896
  assert c.rounds == 2
  assert cost.ole_mul_cost(64, 8193).bytes == 2 * c.bytes  # a second batch
  assert cost.ole_mul_cost(32, 1).bytes == 2 * 3 * (OLE_QUERY + OLE_REPLY)  # 2_076_672
  assert cost.ole_mul_cost(64, 0) == cost.Cost(0.0, 0.0, 0.0)
  b = cost.beaver_mul_cost(32, 100)
  assert b.bytes == cost.triple_cost(32, 100).bytes + 2 * 2 * 100 * 4 and b.rounds == 3


def test_price_opcount_nimbus_gelu_hand():
  n = 8192
  c = cost.price_opcount(cost.NIMBUS_GELU, n)
  cmp = 2 * n * 344.7 / 8  # 2 comparisons, 31-bit millionaire (q = 8)
  mul = 2_076_672  # one OLE batch at FM32
  tr = 2 * n * (344.7 + 14.45) / 8  # 2 truncations by f = 13
  mux = 2 * n * 2 * (1 + 32 + C) / 8
  assert c.bytes == approx(cmp + mul + tr + mux) == approx(3_655_168.0)
  assert c.rounds == 5 + 2 + 2 * 7 + 2  # cmp, product, 2 truncation levels, mux = 23
  # Inside the FM64 network: Nimbus fuses the sum truncation into the lift.
  f = cost.activation_cost(cost.NIMBUS_GELU, n, ring_bits=64, fused_switch=True)
  lift = n * (344.7 + 1 + 45 + C) / 8
  assert f.bytes == approx(cmp + mul + tr / 2 + mux + lift)
  assert f.rounds == 5 + 2 + 7 + 2 + 7
  u = cost.activation_cost(cost.NIMBUS_GELU, n, ring_bits=64, fused_switch=False)
  assert u.bytes == approx(3_655_168.0 + n * (344.7 + 1 + 32 + C) / 8)
  assert u.rounds == 23 + 7
  # Same ring: no switch at all.
  assert cost.activation_cost(cost.NIMBUS_GELU, n, ring_bits=32) == c


def test_price_opcount_limit_exp_hand():
  n = 8192
  c = cost.price_opcount(cost.LIMIT_EXP, n)
  # 1 comparison (63-bit millionaire, 700.3 bits), 8 squarings (8 OLE batches),
  # 9 truncations by 18 (700.3 + 19.45 bits), 1 mux at 64 bits.
  want = n * 700.3 / 8 + 8 * 2_768_896 + 9 * n * 719.75 / 8 + n * 2 * (65 + C) / 8
  assert c.bytes == approx(want)
  assert c.rounds == 6 + 8 * 2 + 9 * 8 + 2  # = 96
  # A tag without truncations is charged one per product (same bytes, one level less).
  bare = OpCount(comparisons=1, muxes=1, multiplications=8, mult_depth=8, ring_bits=64)
  assert cost.price_opcount(bare, n).bytes == approx(want - n * 719.75 / 8)
  assert cost.price_opcount(OpCount(), 10) == cost.Cost(0.0, 0.0, 0.0)


def test_reciprocal_rsqrt_layernorm_rounds_hand():
  # normalise at 64 bits: 6 adder + 6 prefix-OR levels + B2A 2 = 14 rounds;
  # Goldschmidt, 2 iterations: 5 levels of (product 2 + truncation 8).
  assert cost.normalise_cost(64, 1).rounds == 14
  assert cost.reciprocal_cost(64, 1).rounds == 14 + 5 * 10
  # rsqrt: 14 + 6 levels x 10 + 1 extra truncation level 8 + mux 2.
  assert cost.rsqrt_cost(64, 1).rounds == 84
  # LayerNorm: T, M+T, T, rsqrt, M+T, T with T=8, M=2.
  assert cost.layernorm_cost(4, 8, 64).rounds == 8 + 10 + 8 + 84 + 10 + 8
  # normalise bytes: 3 * 64 * 6 ANDs and 64 B2As of 64 bits.
  assert cost.normalise_cost(64, 1).bytes == approx(
      (3 * 64 * 6 * (4 + 2 * C) + 64 * (65 + C)) / 8)


def test_softmax_rounds_hand():
  # one row of two scores, Nimbus exp in FM32 inside an FM64 network:
  # max tree 1 level (cmp 5 + mux 2); exp = cmp 5 + 2 secret products x 2 (Horner's
  # c3 * x is local) + 2 truncation levels x 7 (last fused) + mux 2 + lift 7 = 32;
  # reciprocal 64; product 2 + trunc 8.
  c = cost.softmax_cost(cost.NIMBUS_EXP, 1, 2)
  assert c.rounds == 7 + 32 + 64 + 10
  # more scores per row add max-tree levels only: 128 -> 7 levels.
  assert cost.softmax_cost(cost.NIMBUS_EXP, 1, 128).rounds == 7 * 7 + 32 + 64 + 10
  assert cost.softmax_cost(cost.LIMIT_EXP, 1, 2).rounds == (6 + 2) + 96 + 64 + 10


def test_nonlinear_errors():
  with pytest.raises(TypeError, match="op: expected an OpCount"):
    cost.price_opcount({"comparisons": 1}, 4)
  with pytest.raises(ValueError, match="n_elements"):
    cost.price_opcount(cost.NIMBUS_GELU, -1)
  with pytest.raises(ValueError, match="op.ring_bits: expected at most ring_bits"):
    cost.activation_cost(cost.LIMIT_EXP, 4, ring_bits=32)
  with pytest.raises(ValueError, match="bits"):
    cost.comparison_cost(1, 4)
  with pytest.raises(ValueError, match="radix"):
    cost.millionaire_cost(32, 4, radix=9)
  with pytest.raises(ValueError, match="to_bits"):
    cost.upcast_cost(4, 64, 32)
  with pytest.raises(ValueError, match="cot_bits"):
    cost.mux_cost(32, 4, cot_bits=-1.0)
  with pytest.raises(ValueError, match="rows"):
    cost.softmax_cost(cost.NIMBUS_EXP, 0, 4)
  with pytest.raises(ValueError, match="ComputeModel.threads"):
    cost.ComputeModel(threads=0)
  with pytest.raises(ValueError, match="ComputeModel.seconds_per_cot"):
    cost.ComputeModel(seconds_per_cot=-1e-9)


# -------------------------------------------------------------------- network


def test_latency_hand():
  # 0.5 s compute + 1.25e8 B * 8 / 1e9 b/s = 1 s + 10 flights * 20 ms / 2 = 0.1 s.
  got = cost.latency(cost.Cost(1.25e8, 10.0, 0.5), cost.make_network(1e9, 0.02))
  testing.assert_allclose(got, 1.6, dtype=np.float32)
  # LAN: 3 Gbps, 1 ms: 3e8 bytes -> 0.8 s, 4 rounds -> 2 ms.
  testing.assert_allclose(cost.latency(cost.Cost(3e8, 4.0), cost.LAN), 0.802, dtype=np.float32)


def test_network_constants():
  for net, bw, rtt in [(cost.LAN, 3e9, 1e-3), (cost.WAN, 400e6, 10e-3),
                       (cost.LAN_TABLE6, 3e9, 0.8e-3), (cost.WAN_TABLE6, 200e6, 40e-3)]:
    testing.assert_allclose(net.bandwidth_bps, bw, dtype=np.float32)
    testing.assert_allclose(net.rtt_s, rtt, dtype=np.float32)


def test_latency_vmap_over_networks_equals_loop():
  rng = np.random.default_rng(0)
  nets = cost.make_network(rng.uniform(1e7, 1e10, 100), rng.uniform(1e-4, 0.1, 100))
  c = cost.bert_report(design="bumblebee").total
  c = cost.Cost(c.bytes, c.rounds, c.compute_s)
  swept = jax.vmap(cost.latency, in_axes=(None, 0))(c, jax.tree.map(jnp.asarray, nets))
  assert swept.shape == (100,)
  loop = np.array([float(cost.latency(c, cost.Network(b, r)))
                   for b, r in zip(nets.bandwidth_bps, nets.rtt_s)])
  testing.assert_allclose(swept, loop, dtype=np.float32)
  # and the formula in float64
  want = c.compute_s + c.bytes * 8 / nets.bandwidth_bps.astype(np.float64) + (
      c.rounds * nets.rtt_s.astype(np.float64) / 2)
  testing.assert_allclose(swept, want, dtype=np.float32, scale=4)


def test_latency_compiles_once():
  testing.assert_compiles_once(
      cost.latency, cost.Cost(jnp.float32(1e6), jnp.float32(3.0), jnp.float32(0.1)),
      cost.Network(jnp.float32(1e9), jnp.float32(1e-3)))


@pytest.mark.parametrize("design", cost.DESIGNS)
def test_more_bandwidth_never_slower(design):
  total = cost.bert_report(design=design).total
  c = cost.Cost(total.bytes, total.rounds, total.compute_s)
  bw = jnp.asarray(np.geomspace(1e7, 1e11, 64), jnp.float32)
  lat = jax.vmap(cost.latency, in_axes=(None, 0))(c, cost.Network(bw, jnp.full(64, 5e-3)))
  assert np.all(np.diff(np.asarray(lat)) <= 0)
  rtt = jnp.asarray(np.linspace(0.0, 0.1, 64), jnp.float32)
  lat = jax.vmap(cost.latency, in_axes=(None, 0))(c, cost.Network(jnp.full(64, 1e9), rtt))
  assert np.all(np.diff(np.asarray(lat)) >= 0)
  # the report's own latency grows when the link is worse
  assert cost.bert_report(design=design, network=cost.WAN).total.latency_s > total.latency_s


def test_network_errors():
  with pytest.raises(ValueError, match="bandwidth_bps"):
    cost.make_network(0.0, 1e-3)
  with pytest.raises(ValueError, match="rtt_s"):
    cost.make_network(1e9, -1.0)
  with pytest.raises(ValueError, match="rtt_s: expected the shape"):
    cost.make_network([1e9, 2e9], 1e-3)
  with pytest.raises(TypeError, match="network: expected a Network"):
    cost.bert_layer_report(network=(3e9, 1e-3))
  with pytest.raises(ValueError, match="network: expected one link"):
    cost.bert_report(network=cost.make_network([1e9, 2e9], [1e-3, 1e-3]))


# --------------------------------------------------------------------- reports


def test_layer_report_rows_and_linear_hand():
  rows = cost.bert_layer_report(design="nimbus", network=cost.LAN)
  assert tuple(r.category for r in rows) == cost.CATEGORIES
  qkv = rows[0]
  # 3 x (16 COP output cts of 2 moduli + truncation of 768*128 outputs by 18 at 64
  # bits: 700.3 + 19.45 = 719.75 bits each); rounds: 1 message + 8 truncation flights.
  want = 3 * (16 * RESP64 + 768 * 128 * 719.75 / 8)
  assert qkv.bytes == approx(want) == approx(37_739_520.0)
  assert qkv.rounds == 9
  assert qkv.latency_s == approx(qkv.compute_s + want * 8 / 3e9 + 9 * 1e-3 / 2, rel=1e-6)
  sip = cost.bert_layer_report(design="bumblebee", network=cost.LAN)
  assert sip[0].rounds == 10  # 2 messages + 8
  # QK^T&PV and LN are the same in both designs.
  assert sip[6].bytes == rows[6].bytes and sip[7].bytes == rows[7].bytes


def test_bert_report_sums_layers():
  layer = cost.bert_layer_costs(design="bumblebee")
  r = cost.bert_report(layers=3, design="bumblebee", include_embedding=False)
  for row in r.rows:
    assert row.bytes == approx(3 * layer[row.category].bytes)
    assert row.rounds == 3 * layer[row.category].rounds
  assert r.total.bytes == approx(sum(row.bytes for row in r.rows))
  assert r.total.latency_s == approx(sum(row.latency_s for row in r.rows), rel=1e-9)
  assert r.setup_bytes == cost.galois_key_bytes(64) and r.weight_ciphertexts == 0
  e = cost.bert_report(layers=3, design="bumblebee")
  assert e.rows[-1].category == "Embedding"
  assert e.total.bytes == approx(r.total.bytes + e.rows[-1].bytes)


def test_fused_qkv_cuts_cop_work():
  sep = cost.bert_layer_costs(design="nimbus")["Linear_qkv"]
  fused = cost.bert_layer_costs(design="nimbus", fuse_qkv=True)["Linear_qkv"]
  assert fused.compute_s < sep.compute_s / 2  # one 2304x768 product: t=4096 holds all three
  assert cost.bert_report(design="nimbus", include_embedding=False,
                          fuse_qkv=True).weight_ciphertexts == 12 * (768 + 768 + 768 + 3072)


def test_small_ring_nonlinears_are_cheaper():
  nim = cost.bert_layer_costs(design="nimbus")
  bb = cost.bert_layer_costs(design="bumblebee")
  puma = cost.bert_layer_costs(design="bumblebee", gelu_op=cost.PUMA_GELU,
                               exp_op=cost.LIMIT_EXP)
  for name in ("GELU", "Softmax"):
    assert nim[name].bytes < bb[name].bytes and nim[name].rounds < bb[name].rounds
  assert bb["GELU"].bytes < puma["GELU"].bytes  # FM32 seg3 vs FM64 degree-6


def test_setup_amortisation():
  q = jnp.asarray([1.0, 10.0, 100.0, 1e4], jnp.float32)
  s = cost.setup_amortised_speedup(q, network=cost.LAN)
  assert s.shape == (4,)
  assert np.all(np.diff(np.asarray(s)) > 0)  # Nimbus pays setup once
  nb = cost.bert_report(design="nimbus")
  bb = cost.bert_report(design="bumblebee")
  testing.assert_allclose(s[-1], (bb.setup_s + 1e4 * bb.total.latency_s)
                          / (nb.setup_s + 1e4 * nb.total.latency_s), dtype=np.float32)
  q_star = cost.break_even_queries(network=cost.LAN)
  if math.isfinite(q_star):
    testing.assert_allclose(cost.setup_amortised_speedup(q_star), 1.0, dtype=np.float32,
                            scale=10)


def test_report_errors():
  with pytest.raises(ValueError, match="design"):
    cost.bert_layer_report(design="iron")
  with pytest.raises(ValueError, match="heads: expected a divisor"):
    cost.bert_layer_costs(d_model=768, heads=7)
  with pytest.raises(ValueError, match="seq"):
    cost.bert_layer_costs(seq=0)
  with pytest.raises(ValueError, match="layers"):
    cost.bert_report(layers=0)
  with pytest.raises(TypeError, match="gelu_op"):
    cost.bert_layer_costs(gelu_op="nimbus")


# ------------------------------------------------- pricing the simulator's ledger


def test_price_ledger_one_of_each_counter():
  beaver = ("beaver", 64, "bthd,bshd->bhts", (2, 8, 3, 16), (2, 8, 3, 16))
  static = ("static", 32, "...k,kn->...n", (2, 3, 16), (16, 5))
  oc = mpc.OpCounts(
      calls=9, rounds=3, messages=6,
      opened_elements=collections.Counter({32: 10, 64: 4}),
      comparisons=collections.Counter({32: 5}), wrap_bits=collections.Counter({64: 3}),
      muxes=collections.Counter({32: 2}), truncations=collections.Counter({64: 3}),
      triples=collections.Counter({32: 7}), square_pairs=collections.Counter({64: 2}),
      matmul_triples=collections.Counter({beaver: 1, static: 2}),
      ideal_calls=collections.Counter({("reciprocal", 64): 4, ("rsqrt", 64): 2,
                                       ("embedding_select", 64): 10_000}))
  got = cost.price_ledger_breakdown(oc)
  assert list(got) == [
      "opened_elements", "triples", "square_pairs", "matmul_triples", "comparisons",
      "wrap_bits", "truncations", "muxes", "ideal_calls/embedding_select",
      "ideal_calls/reciprocal", "ideal_calls/rsqrt"]
  # each party sends its shares: 2 (10 x 32 + 4 x 64) / 8 bytes, the simulator's 3 rounds
  assert got["opened_elements"] == cost.Cost(144.0, 3.0, 0.0)
  assert got["triples"] == cost.triple_cost(32, 7)
  assert got["square_pairs"] == cost.triple_cost(64, 2)  # as general triples
  # QK^T: b h = 2 x 3 = 6 products of (t x d)(d x s) = (8 x 16)(16 x 8); the static one:
  # one SIP product of the fixed 16 x 5 mask by X's 6 rows, per query (2 queries)
  sip = cost.sip_linear(5, 16, 6, 32, cache_weight_ntt=True)
  assert got["matmul_triples"] == cost.chain(
      cost.secret_matmul_cost(8, 16, 8, 64, batch=6), sip.cost.times(2))
  assert got["comparisons"] == cost.comparison_cost(32, 5).then(cost.b2a_cost(32, 5))
  assert got["comparisons"].bytes * 8 == approx(5 * (344.7 + 1 + 32 + C))
  assert got["comparisons"].rounds == 7  # 2 + 3 AND levels, then a 2-round B2A
  assert got["wrap_bits"] == cost.wrap_bit_cost(64, 3)
  assert got["wrap_bits"].bytes * 8 == approx(3 * (700.3 + 1 + 64 + C))
  assert got["truncations"] == got["muxes"] == cost.Cost(0.0, 0.0, 0.0)
  # 10_000 elements packed into ceil(10_000 / 8192) = 2 response ciphertexts, 1 message
  emb = got["ideal_calls/embedding_select"]
  assert (emb.bytes, emb.rounds) == (2 * RESP64, 1.0)
  assert emb.compute_s == approx(2 * (3 * 2 * NTT + 8192 * 2 * 1e-9))
  assert got["ideal_calls/reciprocal"] == cost.reciprocal_cost(64, 4)
  assert got["ideal_calls/rsqrt"] == cost.rsqrt_cost(64, 2)
  total = cost.price_ledger(oc)
  assert total == cost.chain(*got.values())
  parts = list(got.values())
  assert total.bytes == approx(sum(c.bytes for c in parts))
  # opened 3, triples 2, squares 2, matrix 2 + 2, comparisons 7, wrap bits (q = 16:
  # 2 + 4 + B2A 2) 8, embedding 1, reciprocal (normalise 2 x 6 + 2, then 5 levels of
  # product 2 + truncation 8) 64, rsqrt
  assert got["ideal_calls/reciprocal"].rounds == 64
  assert total.rounds == 3 + 2 + 2 + 4 + 7 + 8 + 1 + 64 + cost.rsqrt_cost(64, 2).rounds == 175
  # the as_dict() form, also after JSON (string ring bits), prices the same
  assert cost.price_ledger(oc.as_dict()) == total
  assert cost.price_ledger(json.loads(json.dumps(oc.as_dict()))) == total


def test_price_ledger_options_reach_every_primitive():
  oc = mpc.OpCounts(comparisons=collections.Counter({64: 3}),
                    wrap_bits=collections.Counter({32: 2}),
                    ideal_calls=collections.Counter({("rsqrt", 32): 5}))
  slow = cost.ComputeModel(seconds_per_cot=1e-6, threads=2)
  got = cost.price_ledger_breakdown(oc, radix=2, cot_bits=1.0, compute=slow)
  kw = dict(cot_bits=1.0, compute=slow)
  assert got["comparisons"] == cost.comparison_cost(64, 3, 2, **kw).then(
      cost.b2a_cost(64, 3, **kw))
  assert got["wrap_bits"] == cost.wrap_bit_cost(32, 2, radix=2, **kw)
  assert got["ideal_calls/rsqrt"] == cost.rsqrt_cost(32, 5, radix=2, **kw)


def test_price_ledger_real_ledger_hand():
  dealer, ledger = mpc.Dealer(jax.random.key(0)), mpc.Ledger()
  x = mpc.share(ring.encode(jnp.array([1.5, -2.0, 0.25, 3.0]), ring.RING32), dealer,
                ring.RING32)
  y = mpc.mul_fixed(x, x, dealer, ledger)  # Beaver mul + 1-bit truncation
  mpc.less_than_public(x, ring.encode(jnp.array(0.5), ring.RING32), dealer, ledger)
  mpc.reciprocal(y, dealer, ledger)
  got = cost.price_ledger_breakdown(ledger)
  open_ = 2 * 8 * 32 / 8  # x - a and x - b: 8 elements per party
  ole = 2 * 3 * (OLE_QUERY + OLE_REPLY)  # 3 CRT primes at 32 bits, one batch each way
  bit = 4 * (344.7 + 1 + 32 + C) / 8  # millionaire on 31 / 32 bits (q = 8) + B2A to 32
  # Goldschmidt: normalise (3 x 32 x 5 ANDs, 10 rounds; 32 B2As of 32 bits, 2 rounds),
  # 6 products over 5 levels, each with a truncation by 13 (B2A into 13 bits)
  recip = (3 * 32 * 5 * 4 * (4 + 2 * C) + 32 * 4 * (1 + 32 + C)) / 8 + 6 * (
      ole + 4 * (344.7 + 1 + 13 + C) / 8)
  want = {"opened_elements": (open_, 1), "triples": (ole, 2), "comparisons": (bit, 7),
          "wrap_bits": (bit, 7), "ideal_calls/reciprocal": (recip, 10 + 2 + 5 * (2 + 7))}
  for key, c in got.items():
    b, r = want.get(key, (0.0, 0))
    assert c.bytes == approx(b), key
    assert c.rounds == r, key
  total = cost.price_ledger(ledger)
  assert total.bytes == approx(64 + 2_076_672 + 2 * 189.075 + 12_462_820.65)
  assert total.rounds == 1 + 2 + 7 + 7 + 57 == 74
  assert total.compute_s == approx(sum(c.compute_s for c in got.values()))
  # every path ran once, so the ledger and its online counts agree
  assert cost.price_ledger(ledger.online()) == total
  assert cost.price_ledger(ledger.online().as_dict()) == total


def test_price_ledger_counts_each_call_of_a_ledger():
  dealer, ledger = mpc.Dealer(jax.random.key(1)), mpc.Ledger()
  x = mpc.share(ring.encode(jnp.zeros((2, 3)), ring.RING32), dealer, ring.RING32)
  b = mpc.less_than_public(x, ring.encode(jnp.array(0.5), ring.RING32), dealer, ledger)
  mpc.less_than_public(x, ring.encode(jnp.array(0.5), ring.RING32), dealer, ledger)
  mpc.select(b, x, x, dealer, ledger)
  by_ledger = cost.price_ledger_breakdown(ledger)
  by_counts = cost.price_ledger_breakdown(ledger.online())
  # two sequential calls of 6 elements: the bytes of 12, the rounds of two calls
  one = cost.comparison_cost(32, 12).then(cost.b2a_cost(32, 12))
  assert by_counts["comparisons"] == one
  assert by_ledger["comparisons"] == cost.Cost(one.bytes, 2 * one.rounds, one.compute_s)
  # the select is a Beaver product: 2 x 6 openings and 6 triples, the mux itself free
  assert by_ledger["muxes"] == cost.Cost(0.0, 0.0, 0.0)
  assert by_ledger["triples"] == cost.triple_cost(32, 6)
  assert by_ledger["opened_elements"] == cost.open_cost(32, 12)


def test_price_ledger_leaves_out_setup_and_prices_matrix_triples():
  dealer, ledger = mpc.Dealer(jax.random.key(2)), mpc.Ledger()
  w = mpc.setup_static_weight(np.ones((8, 3), np.uint64), dealer, ledger, ring=ring.RING64)
  x = mpc.share(np.ones((2, 4, 8), np.uint64), dealer, ring.RING64)
  mpc.matmul_static(x, w, dealer, ledger)  # opens X - A only; W - B was opened at setup
  mpc.matmul(x, mpc.share(np.ones((8, 5), np.uint64), dealer, ring.RING64), dealer, ledger)
  got = cost.price_ledger_breakdown(ledger)
  assert got["opened_elements"] == cost.Cost(2 * (64 + 64 + 40) * 64 / 8, 2.0, 0.0)
  static = cost.sip_linear(3, 8, 8, 64, cache_weight_ntt=True).cost  # X's 2 x 4 rows
  beaver = cost.secret_matmul_cost(8, 8, 5, 64)  # '...k,kn->...n': (8 x 8)(8 x 5)
  assert got["matmul_triples"] == cost.chain(beaver, static)  # sorted: beaver first
  assert cost.price_ledger(ledger) == cost.chain(got["opened_elements"], beaver, static)


def test_price_ledger_errors():
  with pytest.raises(TypeError, match="counts: expected an mpc.OpCounts"):
    cost.price_ledger([1, 2])
  with pytest.raises(TypeError, match="counts: expected an mpc.OpCounts"):
    cost.price_ledger(None)
  with pytest.raises(ValueError, match=r"'softmax'.*\('embedding_select', 'reciprocal', 'rsqrt'\)"):
    cost.price_ledger(mpc.OpCounts(ideal_calls=collections.Counter({("softmax", 64): 3})))
  with pytest.raises(ValueError, match="'gelu'.*one of"):
    cost.price_ledger({"ideal_calls": {"gelu": {64: 1}}})
  with pytest.raises(ValueError, match=r"counts: unknown keys \['opens'\]"):
    cost.price_ledger({"opens": {32: 1}})
  with pytest.raises(TypeError, match=r"counts\['triples'\]: expected a dict"):
    cost.price_ledger({"triples": [32, 1]})
  with pytest.raises(ValueError, match=r"counts\['muxes'\]\['32'\]: expected an int >= 0"):
    cost.price_ledger({"muxes": {"32": "two"}})
  with pytest.raises(ValueError, match=r"counts.triples\[32\]: expected an int >= 0"):
    cost.price_ledger(mpc.OpCounts(triples=collections.Counter({32: -1})))
  with pytest.raises(ValueError, match="counts.opened_elements key: expected an int number"):
    cost.price_ledger(mpc.OpCounts(opened_elements=collections.Counter({None: 4})))
  with pytest.raises(ValueError, match="counts.rounds"):
    cost.price_ledger(mpc.OpCounts(rounds=1.5))
  with pytest.raises(ValueError, match="kind: expected one of"):
    cost.price_ledger(mpc.OpCounts(matmul_triples=collections.Counter(
        {("dealer", 64, "ij,jk->ik", (2, 3), (3, 4)): 1})))
  with pytest.raises(ValueError, match="spec: expected an explicit two-operand einsum"):
    cost.price_ledger(mpc.OpCounts(matmul_triples=collections.Counter(
        {("beaver", 64, "ij,jk", (2, 3), (3, 4)): 1})))
  with pytest.raises(ValueError, match="does not fit the shapes"):
    cost.price_ledger(mpc.OpCounts(matmul_triples=collections.Counter(
        {("beaver", 64, "ij,jk->ik", (2, 3, 1), (3, 4)): 1})))
  with pytest.raises(ValueError, match=r"counts\['matmul_triples'\]\[0\]: expected a dict"):
    cost.price_ledger({"matmul_triples": [{"kind": "beaver"}]})
  with pytest.raises(ValueError, match="radix"):
    cost.price_ledger(mpc.OpCounts(), radix=9)
  with pytest.raises(ValueError, match="cot_bits"):
    cost.price_ledger(mpc.OpCounts(), cot_bits=-1.0)
  with pytest.raises(TypeError, match="compute: expected a ComputeModel"):
    cost.price_ledger(mpc.OpCounts(), compute="fast")
  assert cost.price_ledger(mpc.OpCounts()) == cost.Cost(0.0, 0.0, 0.0)
