"""Analytic cost model of 2PC Transformer inference: Nimbus (COP) vs BumbleBee (SIP).

Everything is priced in three numbers, a `Cost`: bytes sent by both parties,
sequential message flights ("rounds"), and local compute seconds on the
critical path. A `Network` turns them into seconds:

    latency = compute_s + 8 * bytes / bandwidth_bps + rounds * rtt_s / 2

One round is one *flight*: a message one way, or both parties sending at once
(an opening), so it costs one one-way delay, ``rtt / 2``; a request and its
reply are 2 rounds. Bytes are the total of both directions pushed through one
link (conservative for a full-duplex link). `latency` is jitted and vmaps over
a batch of networks.

Sources: [V] read in code or papers (``secretflow/spu``: ``cheetah_dot.cc``,
``matmat_prot.cc``, ``cheetah_mul.cc``, ``compare_prot.cc``,
``nonlinear/README.md``, ``fxp_approx.cc``; jaxsys notes ``papers/secure.md``);
[I] a modelling assumption of this module. The model is for ratios between
designs; absolute seconds hang on `ComputeModel`, whose figures are assumptions.

**HE parameters** [V, Nimbus branch ``DecideSEALParameters``]: ring <= 32 bits:
N = 4096, moduli {59, 37}; <= 64: N = 8192, {59, 55, 49}; <= 128: N = 16384,
4 x 59 + 49. A ciphertext is ``2 N sum(bits) / 8`` bytes (334 KB at FM64); a
seeded one (second polynomial replaced by a PRG seed) half that. The data
context is built with ``set_use_special_prime(false)`` [V], so *every* modulus is
a data modulus: fresh ciphertexts (COP's Enc(W), SIP's Enc(X)) and COP's
multiply-adds carry all L moduli. Every response is mod-switched down before it
is sent (``H2A`` to the decoding context, which drops the last modulus, two above
64 bits) [V]: 2 moduli, 114 bits, 233 KB at FM64 (`HEParams.response_ciphertext_bytes`).
PackLWE's Galois keys live in a second context on the same moduli *with* the
special prime, so BumbleBee's key switches run on L - 1 data moduli [V].

**Linear layers**, ``Y = W X``, W ``m x k`` (out x in, the server's), X ``k x n``
(in x tokens, shared):

* `cop_linear` (Nimbus, client-side outer product) [V subshape rule and
  right-shift packing]: ``t = min(N, next_pow2(m))``, ``k ceil(m/t)`` weight
  ciphertexts sent once (setup, seeded) and cached by the client; online the client
  does ``n k ceil(m/t)`` scalar x ciphertext multiply-adds in coefficient form (no
  NTT) over all ``2 N L`` coefficients, so for ``m < N`` only ``m / N`` of each
  one is useful work; packs ``gap = N / t`` column ciphertexts into one
  (``ceil(n t / N)`` per m-block) and sends them mod-switched: 1 message.
* `sip_linear` (BumbleBee, server-side inner product): the client encrypts its
  share of X in Cheetah's polynomial encoding (seeded, NTT form), the server NTTs
  the plaintext W, multiplies in the NTT domain, PackLWE-compresses, masks and
  replies: 2 messages [V subshape search from SPU's
  ``MatMatProtocol::GetSubMatShape``; automorphisms as executed by
  ``PackingHelper::doPackingRLWEs``, SPU at 5f92887, the commit the Nimbus branch
  forked from].

**Non-linear primitives** [V structure, model constants labelled]: OT from
Ferret silent COT at ``FERRET_COT_BITS`` = 0.45 bits per COT; CrypTFlow2
millionaires with radix-4 digits and SPU's AND tree; Cheetah 1-bit truncation
(one wrap bit + a short B2A); COT-based mux and B2A; secret products by SPU
Cheetah's HE-based OLE (``CheetahMul``: BFV, N = 8192, moduli {60, 49}, 36-bit
CRT primes). The model lands within 3.5 % of SPU's published millionaire and
truncation byte counts (``nonlinear/README.md``; checked in the tests).

**Schedules** [I]: within an approximation all comparisons run as one batch,
then the polynomial level by level (product, truncation), then all selects as
one batch (`price_opcount`); Nimbus runs GELU/exp in FM32 and fuses the last
truncation into the lift back to FM64 (`activation_cost`); BumbleBee casts.

**The simulator's ledger** (`price_ledger`) [I]: `jaxsys.secure.mpc` counts what
it opens exactly and only *that* its dealer and ideal functionalities ran; each
counter is priced once by the protocol above that realises it: openings by
`open_cost` (the simulator's own rounds), elementwise triples by `triple_cost`
(OLE), matrix triples by `secret_matmul_cost` (static ones by `sip_linear`),
comparisons and wrap bits with a B2A into the ring, `reciprocal_cost`,
`rsqrt_cost`; truncations and muxes are already in their wrap bits and Beaver
products. Calls are chained, which overestimates rounds.

**Left out or uncertain**: OT/HE base setup and key generation time; the
pooler and classifier; plaintext work (``W X_S``, local sums); SPU's cheaper
squares; noise-flooding and re-randomising encryptions (counted, not timed: both
designs can precompute them); the exact BumbleBee PackLWE key-switch schedule
and SPU's exact ``highestOneBit`` / ``rsqrt`` gate counts (modelled, [I]);
per-element overheads of the COP code (an ``NdArrayRef`` slice and an RNS
conversion per scalar). Of the Nimbus paper only the abstract and a review's
copy of its Fig. 2 caption could be read ("the input communication is shifted
as a one-time setup, and the output ciphertexts are compact. The expensive
NTT/INTT operations at the online stage are also reduced"); its sections on
complexity, Fig. 6, Table 3 and the hardware were not (``papers/secure.md`` [P]).

**Why COP is not faster here** [V code + I]: the model follows the code's
operation counts. For ``m = 768`` at N = 8192 a COP multiply-add does
``2 N L`` coefficient operations for ``m`` useful products (t = 1024 of 8192
coefficients hold data), while one SIP product uses all N coefficients (subshape
128 x 64 x 1); per BERT-base layer (seq 128) COP does 884_736 multiply-adds of
``2 N L`` coefficients against SIP's 110_592 products of the same size, 8x the
work, which the NTTs and key switches it saves do not repay (Linear_h1, where
t = 4096, is the exception). The speed-ups the paper reports are not
reproduced: linear layers come out about 2x *slower* (LAN and WAN, one thread).
One lead [I]:
in the Nimbus branch's timing mode (``profiling = true`` in ``arithmetic.cc``;
the README names the two modes the other way round) the client's cached weights
are ``resize``-d to ``result_cts[0].size()`` polynomials, and those output
ciphertexts are freshly default-constructed (size 0), so the multiply-add loop
(``for k < lhs.size()``) does no coefficient work at all; timings taken that
way would leave out exactly the work that dominates COP here. Pricing COP's
multiply-adds and shifts at zero (``ComputeModel(seconds_per_scalar_coeff=0)``
for Nimbus only) gives linear speed-ups of 8.9x-24.6x per layer on LAN (10.7x
over all four) and 4.7x-12.3x on WAN (5.8x), end to end 3.7x / 2.7x: close to
the paper's 2.9x-12.5x and 2.7x-4.7x. Not run; not known
to be how the paper's figures were made.

Public names: `he_params`, `HEParams`, `LinearCost`, `ComputeModel`,
`DEFAULT_COMPUTE`, `next_pow2`, `ole_crt_primes`,
`cop_linear`, `cop_embedding`, `sip_linear`, `sip_subshape`, `packlwe_automorphisms`,
`secret_matmul_cost`,
`galois_key_bytes`, `Cost`, `chain`, `parallel`, `millionaire_cost`,
`comparison_cost`, `and_cost`, `b2a_cost`, `wrap_bit_cost`, `truncation_cost`,
`upcast_cost`, `mux_cost`, `open_cost`, `ole_mul_cost`, `triple_cost`,
`beaver_mul_cost`, `normalise_cost`, `reciprocal_cost`, `rsqrt_cost`,
`price_opcount`, `activation_cost`, `softmax_cost`, `layernorm_cost`,
`price_ledger`, `price_ledger_breakdown`, `LEDGER_IDEALS`, `Network`,
`make_network`, `LAN`, `WAN`, `LAN_TABLE6`, `WAN_TABLE6`, `latency`, `LayerRow`,
`BertReport`, `CATEGORIES`, `DESIGNS`, `bert_layer_costs`, `bert_layer_report`,
`bert_report`, `setup_amortised_speedup`,
`break_even_queries`, and the public `OpCount` tags ``NIMBUS_GELU``,
``NIMBUS_EXP``, ``BUMBLEBEE_GELU``, ``LIMIT_EXP``, ``PUMA_GELU``.

>>> from jaxsys.secure import cost
>>> c = cost.cop_linear(3072, 768, 128, 64)
>>> c.weight_ciphertexts, c.output_ciphertexts, round(cost.he_params(64).ciphertext_bytes / 1e3)
(768, 64, 334)
"""

from __future__ import annotations

import collections
import collections.abc
import dataclasses
import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxsys.secure import approx
from jaxsys.secure import mpc
from jaxsys.secure.opcount import OpCount

# ------------------------------------------------------------------- constants

FERRET_COT_BITS = 0.45  # bits per silent COT, Ferret (Yang et al. 2020) [V: a summary, not the paper]
COMPARE_RADIX = 4  # SPU's default millionaire digit size [V: nonlinear/README.md]
FRACTION_BITS = {32: 13, 64: 18}  # Nimbus FM32 f=13 [V: 2pc.json]; SPU FM64 default 18 [V]
GOLDSCHMIDT_ITERS = 2  # SPU fxp_div_goldschmidt_iters default [V]

# SPU CheetahMul (HE-based OLE for secret x secret products) [V: cheetah_mul.cc]
OLE_POLY_DEGREE = 8192
OLE_MODULUS_BITS = (60, 49)
OLE_RESPONSE_MODULUS_BITS = (60,)  # responses are mod-switched to one modulus
OLE_PRIME_BITS = 36  # CRT plaintext primes; ceil((2 l + 15) / 36) of them

# SPU's subshape-search prices [V: MatMatProtocol::GetSubMatShape]
_SIP_BANDWIDTH_PRICE = 1000.0
_SIP_CPU_PRICE = 1.0

DESIGNS = ("nimbus", "bumblebee")
CATEGORIES = ("Linear_qkv", "Linear_o", "Linear_h1", "Linear_h2", "Softmax", "GELU",
              "QK^T&PV", "LN")


# ---------------------------------------------------------------------- checks


def _check_int(name: str, value, lo: int = 1) -> int:
  if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < lo:
    raise ValueError(f"{name}: expected an int >= {lo}, given {value!r}")
  return int(value)


def _check_float(name: str, value, *, positive: bool = True) -> float:
  if isinstance(value, bool) or not isinstance(value, (int, float, np.floating)) or not (
      math.isfinite(value)):
    raise ValueError(f"{name}: expected a finite number, given {value!r}")
  if positive and value <= 0:
    raise ValueError(f"{name}: expected a number > 0, given {value!r}")
  if not positive and value < 0:
    raise ValueError(f"{name}: expected a number >= 0, given {value!r}")
  return float(value)


def _check_bits(name: str, bits, lo: int = 2, hi: int = 128) -> int:
  if not isinstance(bits, (int, np.integer)) or isinstance(bits, bool) or not lo <= bits <= hi:
    raise ValueError(f"{name}: expected an int number of ring bits in [{lo}, {hi}], given {bits!r}")
  return int(bits)


def _check_op(name: str, op) -> OpCount:
  if not isinstance(op, OpCount):
    raise TypeError(f"{name}: expected an OpCount, given {type(op).__name__}")
  return op


def next_pow2(x: int) -> int:
  """Smallest power of two >= x (x >= 1)."""
  return 1 << (int(x) - 1).bit_length()


def _ceil_div(a: int, b: int) -> int:
  return -(-a // b)


def _ceil_log2(x: int) -> int:
  return (int(x) - 1).bit_length() if x > 1 else 0


# ------------------------------------------------------------- HE parameters


class HEParams(NamedTuple):
  """SEAL parameters the Nimbus/SPU Cheetah code picks for a ring."""

  ring_bits: int
  poly_degree: int  # N
  modulus_bits: tuple[int, ...]  # RNS moduli bit sizes

  @property
  def num_moduli(self) -> int:
    return len(self.modulus_bits)

  @property
  def ciphertext_bytes(self) -> float:
    """``2 N sum(modulus_bits) / 8``: two polynomials, bit-packed."""
    return 2 * self.poly_degree * sum(self.modulus_bits) / 8

  @property
  def seeded_ciphertext_bytes(self) -> float:
    """Half a ciphertext: the uniform polynomial is sent as a PRG seed (seed bytes ignored)."""
    return self.ciphertext_bytes / 2

  @property
  def response_modulus_bits(self) -> tuple[int, ...]:
    """Moduli of a ciphertext as sent back after masking [V: ``LazyInit``'s
    ``kUseModDownOptimization`` pops the last modulus (a second above 64 bits) for
    the decoding context, and ``H2A`` mod-switches every response to it]."""
    return self.modulus_bits[:-2] if self.ring_bits > 64 else self.modulus_bits[:-1]

  @property
  def response_num_moduli(self) -> int:
    return len(self.response_modulus_bits)

  @property
  def response_ciphertext_bytes(self) -> float:
    """``2 N sum(response_modulus_bits) / 8``: 233_472 bytes at FM64 (59 + 55 bits)."""
    return 2 * self.poly_degree * sum(self.response_modulus_bits) / 8

  @property
  def keyswitch_num_moduli(self) -> int:
    """Data moduli of PackLWE's key switches: L - 1 [V: the Galois-key context is the
    same moduli with ``set_use_special_prime(true)``, and ``doPackingRLWEs``
    mod-switches each ciphertext to its first data level before packing]."""
    return self.num_moduli - 1


def he_params(ring_bits: int) -> HEParams:
  """N and modulus sizes for a ring of ``ring_bits`` bits [V: ``DecideSEALParameters``].

  ring <= 32: N = 4096, {59, 37}; <= 64: N = 8192, {59, 55, 49}; <= 128:
  N = 16384, {59, 59, 59, 59, 49}.

  >>> he_params(64).poly_degree, he_params(64).ciphertext_bytes
  (8192, 333824.0)
  """
  bits = _check_bits("ring_bits", ring_bits, lo=1, hi=128)
  if bits <= 32:
    return HEParams(bits, 4096, (59, 37))
  if bits <= 64:
    return HEParams(bits, 8192, (59, 55, 49))
  return HEParams(bits, 16384, (59, 59, 59, 59, 49))


def galois_key_bytes(ring_bits: int) -> float:
  """Bytes of the Galois keys PackLWE needs: ``log2 N`` keys (Galois elements
  ``N / 2^i + 1``), each ``L - 1`` key-switching ciphertexts (one per data-modulus
  digit) over all ``L`` moduli, sent seeded [V: ``GenerateGaloisKeyForPacking``
  with ``save_seed``; key context with the special prime]. BumbleBee's SIP setup,
  sent once: 13 x 2 x 166_912 = 4.3 MB at FM64."""
  p = he_params(ring_bits)
  return _ceil_log2(p.poly_degree) * p.keyswitch_num_moduli * p.seeded_ciphertext_bytes


# --------------------------------------------------------------- compute model


@dataclasses.dataclass(frozen=True)
class ComputeModel:
  """Per-operation times of single-core SEAL-style arithmetic [I: assumptions].

  Defaults are plausible for one ~3 GHz x86 core without AVX-512 (SEAL 4):
  a length-N NTT is ``N/2 log2 N`` butterflies at 0.5 ns (27 us at N = 8192); a
  coefficient multiply-add with Barrett reduction (pointwise products) 1 ns; the
  same 1 ns for COP's scalar multiply-adds, because the Nimbus code runs them
  through the same ``seal::util::multiply_add_uint_mod`` (128-bit product,
  Barrett reduction), one coefficient at a time, with no Shoup precomputation
  [V: ``MatMatProtocol::FusedMulAddInplace_scalar``] (a Shoup loop would be
  nearer 0.6 ns: pass ``seconds_per_scalar_coeff``); one Ferret COT plus its
  hashing 20 ns (Ferret reports 13-17 ns per COT). ``threads`` divides all
  compute (ideal parallel speed-up). Encryption, decryption and automorphisms
  are priced from their NTTs and coefficient operations (see `LinearCost`).

  Attributes:
    seconds_per_butterfly: one NTT butterfly.
    seconds_per_dyadic_coeff: one modular multiply-add of two polynomials' coefficients.
    seconds_per_scalar_coeff: one modular multiply-add of a coefficient by a fixed scalar.
    seconds_per_cot: one silent COT with its share of derandomisation hashing.
    threads: cores working in parallel on each side.
  """

  seconds_per_butterfly: float = 0.5e-9
  seconds_per_dyadic_coeff: float = 1.0e-9
  seconds_per_scalar_coeff: float = 1.0e-9
  seconds_per_cot: float = 20e-9
  threads: int = 1

  def __post_init__(self):
    for f in ("seconds_per_butterfly", "seconds_per_dyadic_coeff", "seconds_per_scalar_coeff",
              "seconds_per_cot"):
      _check_float(f"ComputeModel.{f}", getattr(self, f), positive=False)
    _check_int("ComputeModel.threads", self.threads)

  def ntt_s(self, poly_degree: int) -> float:
    """One single-modulus NTT of length N: ``N/2 log2 N`` butterflies."""
    return poly_degree / 2 * _ceil_log2(poly_degree) * self.seconds_per_butterfly

  def scalar_mac_s(self, poly_degree: int, num_moduli: int) -> float:
    """One scalar x ciphertext multiply-add: ``2 N L`` scalar coefficient ops."""
    return 2 * poly_degree * num_moduli * self.seconds_per_scalar_coeff

  def pointwise_product_s(self, poly_degree: int, num_moduli: int) -> float:
    """One ciphertext x plaintext product-accumulate in the NTT domain: ``2 N L`` dyadic ops."""
    return 2 * poly_degree * num_moduli * self.seconds_per_dyadic_coeff

  def encryption_s(self, poly_degree: int, num_moduli: int) -> float:
    """Symmetric encryption [I]: ``L`` NTTs and ``2 N L`` dyadic ops."""
    return num_moduli * self.ntt_s(poly_degree) + self.pointwise_product_s(poly_degree, num_moduli)

  def decryption_s(self, poly_degree: int, num_moduli: int) -> float:
    """Decryption as SPU runs it [V: ``doDotOLESenderRecvStep``]: ``3 L`` NTTs (both
    polynomials forward, the product back) and ``N L`` dyadic ops, at the
    ciphertext's own (response) moduli."""
    return (3 * num_moduli * self.ntt_s(poly_degree)
            + self.pointwise_product_s(poly_degree, num_moduli) / 2)

  def seconds(self, *, poly_degree: int = 8192, ntts: float = 0, dyadic: float = 0,
              scalar: float = 0, cots: float = 0) -> float:
    """Wall seconds for counted work, divided over ``threads``."""
    s = (ntts * self.ntt_s(poly_degree) + dyadic * self.seconds_per_dyadic_coeff
         + scalar * self.seconds_per_scalar_coeff + cots * self.seconds_per_cot)
    return s / self.threads


DEFAULT_COMPUTE = ComputeModel()


def _keyswitch_counts(num_moduli: int) -> tuple[int, int]:
  """NTTs and dyadic ops / N of one automorphism's key switch [I].

  ``num_moduli`` is the data moduli at the key-switch level (SIP passes
  `HEParams.keyswitch_num_moduli`, L - 1 [V]).
  Hybrid RNS key switching with one special prime and ``L`` digits: inverse NTT
  of c1 (L), each digit forward to L + 1 moduli (L (L + 1)), inverse of the two
  accumulators (2 (L + 1)), forward after mod-down (2 L); ``2 L (L + 1)``
  coefficient products per coefficient position.
  """
  L = num_moduli
  return L + L * (L + 1) + 2 * (L + 1) + 2 * L, 2 * L * (L + 1)


# --------------------------------------------------------------------- Cost


class Cost(NamedTuple):
  """What a protocol step costs; floats, so a `Cost` is a pytree for `latency`."""

  bytes: float  # bytes sent, both directions summed
  rounds: float  # sequential message flights (each one one-way delay)
  compute_s: float = 0.0  # local compute seconds on the critical path

  def then(self, *others: "Cost") -> "Cost":
    """Sequential composition: everything adds."""
    return chain(self, *others)

  def beside(self, *others: "Cost") -> "Cost":
    """Parallel composition: bytes and compute add, rounds are the longest."""
    return parallel(self, *others)

  def times(self, k: float) -> "Cost":
    """``k`` independent copies batched together: bytes and compute scale, rounds do not."""
    return Cost(self.bytes * k, self.rounds, self.compute_s * k)


ZERO = Cost(0.0, 0.0, 0.0)


def chain(*costs: Cost) -> Cost:
  """Costs one after another: ``sum`` of every field."""
  return Cost(sum(c.bytes for c in costs), sum(c.rounds for c in costs),
              sum(c.compute_s for c in costs))


def parallel(*costs: Cost) -> Cost:
  """Independent costs run together: bytes and compute add, rounds ``max``."""
  return Cost(sum(c.bytes for c in costs), max((c.rounds for c in costs), default=0.0),
              sum(c.compute_s for c in costs))


# --------------------------------------------------------------- linear layers


@dataclasses.dataclass(frozen=True)
class LinearCost:
  """HE cost of one linear layer ``Y = W X`` (W ``m x k``, X ``k x n``).

  Counts are per query unless said otherwise. ``ntts`` counts single-modulus
  length-N transforms of the online work, those inside encryptions, decryptions
  and key switches included; encryptions of zero for re-randomisation do not
  depend on the input, are precomputed offline on both designs [I] and are
  counted in ``zero_encryptions`` only.
  """

  kind: str  # "cop" or "sip"
  m: int
  k: int
  n: int
  ring_bits: int
  poly_degree: int
  input_ciphertexts: int  # client -> server per query (0 for COP)
  output_ciphertexts: int  # sent per query after packing
  unpacked_output_ciphertexts: int  # before right-shift packing (COP) / PackLWE (SIP)
  weight_ciphertexts: int  # COP: Enc(W) sent at setup and cached; SIP: 0 (W stays plaintext)
  ntts: int
  scalar_poly_macs: int  # COP: scalar x ciphertext multiply-adds
  poly_products: int  # SIP: ciphertext x plaintext products in the NTT domain
  automorphisms: int  # SIP: PackLWE key switches
  shift_adds: int  # COP: monomial shifts + adds of right-shift packing
  zero_encryptions: int  # offline re-randomisers
  online_bytes: float
  setup_bytes: float
  messages: int
  client_memory_bytes: float  # persistent across queries
  compute_s: float

  @property
  def cost(self) -> Cost:
    """Online `Cost`: bytes, ``messages`` flights, compute."""
    return Cost(float(self.online_bytes), float(self.messages), float(self.compute_s))


def _check_dims(m, k, n) -> tuple[int, int, int]:
  return _check_int("m (output features)", m), _check_int("k (input features)", k), _check_int(
      "n (tokens)", n)


def cop_linear(m: int, k: int, n: int, ring_bits: int = 64, *, seeded_setup: bool = True,
               compute: ComputeModel = DEFAULT_COMPUTE) -> LinearCost:
  """Nimbus's client-side outer product (COP) for ``Y = W X``.

  * ``t = min(N, next_pow2(m))``: each ciphertext holds one length-m column of W
    (SPU ``GetSubMatShape`` forces the subshape {t, 1, 1}; no two columns share a
    ciphertext before the multiply-adds) [V];
    ``weight_ciphertexts = k ceil(m / t)``, encrypted by the server under its
    secret key in coefficient form, sent once seeded [V: ``SymmetricRLWEEncrypt``
    with ``ntt = false, seed = true``] and cached by the client
    (``client_memory_bytes``; expanded to full size).
  * N is the same as SIP's (`he_params`, one ``DecideSEALParameters`` for both) and
    the data context has no special prime, so Enc(W) carries all ``L`` moduli [V].
  * Online, the client forms ``Enc(Y[:, j]) = sum_i X_C[i, j] Enc(W[:, i])``:
    ``scalar_poly_macs = n k ceil(m / t)``, each over all ``2 N L`` coefficients
    (only ``m`` of each ``N`` carry data when ``m < N``), coefficient form, no NTT
    [V: ``DoCompute`` with a plaintext ``NdArrayRef``, ``FusedMulAddInplace_scalar``].
    That is linear in N per ciphertext, where a ciphertext x polynomial product
    is quadratic in N schoolbook (N log N with NTTs) [I: the reading of the
    paper's "quadratic to linear" this model takes].
  * Right-shift packing [V: ``RShiftPacking``]: ``gap = N / t`` column ciphertexts
    are merged into one by multiplying the i-th by ``X^(i t)``, so per m-block
    ``ceil(n / gap) = ceil(n t / N)`` ciphertexts go out and
    ``shift_adds = n ceil(m/t) - output_ciphertexts``.
  * The client re-randomises (``H2A``: mod-switch to the response moduli, add an
    encryption of zero, subtract a uniform mask) and sends
    ``output_ciphertexts`` of `HEParams.response_ciphertext_bytes` [V]: 1 message.
    The server decrypts (`ComputeModel.decryption_s` at the response moduli:
    ``3 (L - 1)`` NTTs each [V]) and adds its local plaintext ``W X_S`` (not
    counted). Mod-switches are coefficient-wise and not timed.

  Args:
    m: output features (rows of W).
    k: input features.
    n: tokens.
    ring_bits: ring of the shares (selects N and moduli, `he_params`).
    seeded_setup: send the weight ciphertexts seeded (half size) at setup, as the
      Nimbus code does [V]; False prices full ciphertexts.
    compute: per-operation times.

  Returns:
    `LinearCost` with ``messages = 1``, ``input_ciphertexts = 0``.

  >>> cop_linear(768, 768, 128).output_ciphertexts  # t = 1024, gap 8: ceil(128/8)
  16
  """
  m, k, n = _check_dims(m, k, n)
  p = he_params(ring_bits)
  N, L, Lr = p.poly_degree, p.num_moduli, p.response_num_moduli
  t = min(N, next_pow2(m))
  blocks = _ceil_div(m, t)
  weights = k * blocks
  unpacked = n * blocks
  outputs = blocks * _ceil_div(n * t, N)
  macs = n * k * blocks
  shifts = unpacked - outputs
  ntts = outputs * 3 * Lr  # server decryptions at the response moduli
  seconds = compute.seconds(
      poly_degree=N, ntts=ntts, dyadic=outputs * N * Lr, scalar=(macs + shifts) * 2 * N * L)
  ct_setup = p.seeded_ciphertext_bytes if seeded_setup else p.ciphertext_bytes
  return LinearCost(
      kind="cop", m=m, k=k, n=n, ring_bits=p.ring_bits, poly_degree=N,
      input_ciphertexts=0, output_ciphertexts=outputs, unpacked_output_ciphertexts=unpacked,
      weight_ciphertexts=weights, ntts=ntts, scalar_poly_macs=macs, poly_products=0,
      automorphisms=0, shift_adds=shifts, zero_encryptions=outputs,
      online_bytes=outputs * p.response_ciphertext_bytes, setup_bytes=weights * ct_setup,
      messages=1, client_memory_bytes=weights * p.ciphertext_bytes, compute_s=seconds)


def cop_embedding(vocab: int, d_model: int, n: int, ring_bits: int = 64, *,
                  seeded_setup: bool = True,
                  compute: ComputeModel = DEFAULT_COMPUTE) -> LinearCost:
  """The embedding lookup under COP [I, ``papers/secure.md`` 4]: the client knows its
  token ids, so ``Enc(E[:, token])`` is *selected* from the cached ``Enc(E)``: the
  shape of ``cop_linear(d_model, vocab, n)`` with zero multiply-adds."""
  c = cop_linear(d_model, vocab, n, ring_bits, seeded_setup=seeded_setup, compute=compute)
  p = he_params(ring_bits)
  seconds = compute.seconds(poly_degree=p.poly_degree, ntts=c.ntts,
                            dyadic=c.output_ciphertexts * p.poly_degree * p.response_num_moduli,
                            scalar=c.shift_adds * 2 * p.poly_degree * p.num_moduli)
  return dataclasses.replace(c, scalar_poly_macs=0, compute_s=seconds)


@functools.lru_cache(maxsize=None)
def sip_subshape(m: int, k: int, n: int, ring_bits: int = 64) -> tuple[int, int, int]:
  """Cheetah block shape ``(d0 tokens, d1 inputs, d2 outputs)`` for SIP.

  SPU's search [V: ``MatMatProtocol::GetSubMatShape``] over ``d0 <= min(N, n)``,
  ``d1`` a power of two ``<= k`` with ``d0 d1 <= N``, ``d2 = min(m, N / (d0 d1))``,
  minimising ``1000 (sent + response) + automorphisms + products / 10`` (last
  minimum wins), with ``response = ceil(b0 b2 / d1)``,
  ``automorphisms = ceil(n m / N) d1``, ``products = b0 b1 b2`` and
  ``b = ceil(dims / d)``. One deviation [I]: SPU counts ``sent`` as the smaller of
  the two operands' ciphertexts; SIP fixes the client's X as the encrypted
  operand, so ``sent = b0 b1`` (for every BERT-base shape X is the smaller anyway).
  """
  m, k, n = _check_dims(m, k, n)
  N = he_params(ring_bits).poly_degree
  best, best_cost = (1, 1, 1), math.inf
  for d0 in range(1, min(N, n) + 1):
    b0 = _ceil_div(n, d0)
    d1 = 1
    while d1 <= k and d0 * d1 <= N:
      b1 = _ceil_div(k, d1)
      d2 = min(m, N // (d0 * d1))
      b2 = _ceil_div(m, d2)
      sent = b0 * b1
      resp = _ceil_div(b0 * b2, d1)
      autos = _ceil_div(n * m, N) * d1
      cost = (sent + resp) * _SIP_BANDWIDTH_PRICE + (autos + b0 * b1 * b2 / 10) * _SIP_CPU_PRICE
      if cost <= best_cost:
        best, best_cost = (d0, d1, d2), cost
      d1 *= 2
  return best


def packlwe_automorphisms(num_ciphertexts: int, gap: int) -> int:
  """Automorphisms PackLWE applies to merge ``num_ciphertexts`` in groups of ``gap``.

  [V: SPU ``PackingHelper::doPackingRLWEs`` at 5f92887] Each group of ``c <= gap``
  consecutive ciphertexts is merged FFT-like over levels ``h = gap/2, ..., 1``;
  level ``h`` applies one automorphism per non-empty pair, ``min(h, c)``, and
  leaves ``min(h, c)`` ciphertexts: ``gap - 1`` for a full group, ``log2 gap`` for
  a lone one. SPU skips packing when there is a single ciphertext in all.

  >>> packlwe_automorphisms(768, 64)  # 12 full groups of 64
  756
  """
  num = _check_int("num_ciphertexts", num_ciphertexts, lo=0)
  gap = _check_int("gap", gap)
  if num <= 1:
    return 0
  total = 0
  for start in range(0, num, gap):
    c, h = min(gap, num - start), gap // 2
    while h >= 1:
      c = min(h, c)
      total += c
      h //= 2
  return total


def sip_linear(m: int, k: int, n: int, ring_bits: int = 64, *, pack: bool = True,
               seeded_input: bool = True, cache_weight_ntt: bool = False,
               compute: ComputeModel = DEFAULT_COMPUTE) -> LinearCost:
  """Server-side inner product (Iron / BumbleBee) for ``Y = W X``.

  Cheetah's encoding [V]: X (``k x n``) is cut into ``b0 b1`` blocks of ``d1 x d0``,
  each one polynomial; W into ``b1 b2`` plaintext blocks; one ciphertext x
  plaintext product per ``(b0, b1, b2)`` yields a ``d0 x d2`` block of Y in the
  coefficients at stride ``d1`` (`sip_subshape` picks ``d``).

  * The client encrypts ``input_ciphertexts = b0 b1`` in NTT form (``2 L`` NTTs
    each) and sends them seeded, half size [V: ``SymmetricRLWEEncrypt`` with
    ``ntt = true, seed = true``] (message 1).
  * The server NTTs its plaintext W blocks (``b1 b2 L`` NTTs each query, as SPU's
    ``DotOLE`` does [V]; ``cache_weight_ntt`` moves them to setup), multiplies in
    the NTT domain (``poly_products = b0 b1 b2``), brings the ``b0 b2`` products
    back to coefficients (``2 L`` inverse NTTs each), scales them by ``d1^-1``,
    mod-switches them to the key-switch level and PackLWE-compresses them into
    ``ceil(b0 b2 / d1)`` ciphertexts with `packlwe_automorphisms` (``d1 - 1`` per
    full group) [V: ``doPackingRLWEs``], each a key switch on
    `HEParams.keyswitch_num_moduli` = L - 1 data moduli plus the special prime
    (`_keyswitch_counts` [I]); masks (H2A) and replies at
    `HEParams.response_ciphertext_bytes` (message 2) [V].
  * The client decrypts (`ComputeModel.decryption_s` at the response moduli).
    Setup: the Galois keys (`galois_key_bytes`), reported as this layer's
    ``setup_bytes``; one set serves every layer.

  Args:
    m, k, n: as `cop_linear`.
    ring_bits: ring of the shares.
    pack: BumbleBee's PackLWE; False sends the ``b0 b2`` sparse products (Cheetah).
    seeded_input: send the client's ciphertexts seeded (half size), as SPU does [V];
      False prices full ciphertexts.
    cache_weight_ntt: keep W's NTT-form plaintexts across queries.
    compute: per-operation times.

  Returns:
    `LinearCost` with ``messages = 2``, ``weight_ciphertexts = 0``.
  """
  m, k, n = _check_dims(m, k, n)
  p = he_params(ring_bits)
  N, L, Lr = p.poly_degree, p.num_moduli, p.response_num_moduli
  d0, d1, d2 = sip_subshape(m, k, n, p.ring_bits)
  b0, b1, b2 = _ceil_div(n, d0), _ceil_div(k, d1), _ceil_div(m, d2)
  inputs = b0 * b1
  products = b0 * b1 * b2
  unpacked = b0 * b2
  if pack:
    outputs = _ceil_div(unpacked, d1)
    autos = packlwe_automorphisms(unpacked, d1)
  else:
    outputs, autos = unpacked, 0
  scaled = unpacked if autos else 0  # PackLWE's d1^-1 scaling
  ks_ntts, ks_dyadic = _keyswitch_counts(p.keyswitch_num_moduli)
  ntts = (inputs * L * 2  # encode to NTT form + encryption
          + (0 if cache_weight_ntt else b1 * b2 * L)  # weight plaintexts
          + unpacked * 2 * L  # products back to coefficients
          + autos * ks_ntts
          + outputs * 3 * Lr)  # client decryptions at the response moduli
  dyadic = (inputs * 2 * N * L + products * 2 * N * L + autos * ks_dyadic * N
            + outputs * N * Lr)
  seconds = compute.seconds(poly_degree=N, ntts=ntts, dyadic=dyadic, scalar=scaled * 2 * N * L)
  ct_in = p.seeded_ciphertext_bytes if seeded_input else p.ciphertext_bytes
  return LinearCost(
      kind="sip", m=m, k=k, n=n, ring_bits=p.ring_bits, poly_degree=N,
      input_ciphertexts=inputs, output_ciphertexts=outputs, unpacked_output_ciphertexts=unpacked,
      weight_ciphertexts=0, ntts=ntts, scalar_poly_macs=0, poly_products=products,
      automorphisms=autos, shift_adds=0, zero_encryptions=outputs,
      online_bytes=inputs * ct_in + outputs * p.response_ciphertext_bytes,
      setup_bytes=galois_key_bytes(p.ring_bits) if pack else 0.0, messages=2,
      client_memory_bytes=0.0, compute_s=seconds)


def secret_matmul_cost(m: int, k: int, n: int, ring_bits: int = 64, *, batch: int = 1,
                       compute: ComputeModel = DEFAULT_COMPUTE) -> Cost:
  """Secret x secret ``A B`` (A ``m x k``, B ``k x n``; QK^T and PV), both designs [I].

  ``A B = A0 B0 + A1 B1 + A0 B1 + A1 B0``: the two cross terms are two SIP
  products run at once in opposite directions (each party encrypts its share of
  B, the other multiplies by its share of A, whose NTTs cannot be cached), with
  PackLWE. Bytes double; rounds stay 2; compute counts one direction (the two
  run on different machines). ``batch`` independent products (heads) run
  together.
  """
  _check_int("batch", batch)
  c = sip_linear(m, k, n, ring_bits, compute=compute)
  return Cost(2.0 * c.online_bytes, 2.0, c.compute_s).times(batch)


# ------------------------------------------------------------ OT primitives


def _cot_bits(cot_bits: float) -> float:
  return _check_float("cot_bits", cot_bits, positive=False)


def millionaire_cost(bits: int, n: int, radix: int = COMPARE_RADIX, *,
                     cot_bits: float = FERRET_COT_BITS,
                     compute: ComputeModel = DEFAULT_COMPUTE) -> Cost:
  """CrypTFlow2's millionaires' protocol on ``bits``-bit private inputs, n instances.

  [V: SPU ``compare_prot.cc``] Split into ``q = ceil(bits / r)`` digits; each leaf
  is one 1-of-2^r OT of 2-bit messages (lt, eq) built from r COTs: the receiver
  sends r choice-correction bits, the sender ``2^r * 2`` bits. The AND tree skips
  the equality bit on its left spine: ``s = ceil(log2 q)`` plain ANDs (each
  party opens 2 bits: 4 bits) and ``q - 1 - s`` correlated ANDs (6 bits); every
  AND triple costs 2 COTs. Per instance::

      bits_sent = q (r + 2^(r+1)) + 4 s + 6 (q - 1 - s)
                  + cot_bits (q r + 2 (q - 1))

  Rounds: 2 (choice corrections, then OT messages) + s AND levels.
  For bits = 32 and r = 4 this is 344.7 bits (SPU measured 348.4); 64: 700.3
  (690.5). Exact for q a power of two; other q follow the same formula.
  """
  bits = _check_bits("bits", bits, lo=1)
  n = _check_int("n", n, lo=0)
  r = _check_int("radix", radix)
  if r > 8:
    raise ValueError(f"radix: expected an int in [1, 8] (SPU's bound), given {radix}")
  c = _cot_bits(cot_bits)
  q = _ceil_div(bits, r)
  s = _ceil_log2(q)
  corr = q - 1 - s
  cots = q * r + 2 * (q - 1)
  per = q * (r + 2 ** (r + 1)) + 4 * s + 6 * corr + c * cots
  return Cost(n * per / 8, float(2 + s), compute.seconds(cots=n * cots))


def comparison_cost(bits: int, n: int, radix: int = COMPARE_RADIX, *,
                    cot_bits: float = FERRET_COT_BITS,
                    compute: ComputeModel = DEFAULT_COMPUTE) -> Cost:
  """Secure less-than of n shared ``bits``-bit values (against a constant or another
  share): the MSB of the difference, i.e. a millionaire on the low ``bits - 1`` bits
  plus local XORs [V: SPU ``MsbA2B``]. Output: a Boolean share."""
  bits = _check_bits("bits", bits)
  return millionaire_cost(bits - 1, n, radix, cot_bits=cot_bits, compute=compute)


def and_cost(n: int, *, cot_bits: float = FERRET_COT_BITS,
             compute: ComputeModel = DEFAULT_COMPUTE) -> Cost:
  """n AND gates on Boolean shares: open 2 bits per party (4 bits) with an OT-made
  triple (2 COTs); 1 round."""
  n = _check_int("n", n, lo=0)
  c = _cot_bits(cot_bits)
  return Cost(n * (4 + 2 * c) / 8, 1.0, compute.seconds(cots=2 * n))


def b2a_cost(out_bits: int, n: int, *, cot_bits: float = FERRET_COT_BITS,
             compute: ComputeModel = DEFAULT_COMPUTE) -> Cost:
  """Boolean bit to an arithmetic share mod ``2^out_bits``: one correlated OT with an
  ``out_bits``-bit message and a 1-bit choice correction; 2 rounds."""
  out_bits = _check_bits("out_bits", out_bits, lo=1)
  n = _check_int("n", n, lo=0)
  c = _cot_bits(cot_bits)
  return Cost(n * (1 + out_bits + c) / 8, 2.0, compute.seconds(cots=n))


def wrap_bit_cost(bits: int, n: int, out_bits: int | None = None, radix: int = COMPARE_RADIX,
                  *, cot_bits: float = FERRET_COT_BITS,
                  compute: ComputeModel = DEFAULT_COMPUTE) -> Cost:
  """The wrap bit ``w = 1{x0 + x1 >= 2^bits}`` = ``1{x0 > 2^bits - 1 - x1}``: a
  millionaire on ``bits`` bits, then (``out_bits > 0``) a B2A into ``out_bits`` bits
  (default ``bits``; 0 leaves w Boolean)."""
  bits = _check_bits("bits", bits)
  w = millionaire_cost(bits, n, radix, cot_bits=cot_bits, compute=compute)
  out = bits if out_bits is None else _check_int("out_bits", out_bits, lo=0)
  if out == 0:
    return w
  return w.then(b2a_cost(out, n, cot_bits=cot_bits, compute=compute))


def truncation_cost(bits: int, n: int, shift: int | None = None, radix: int = COMPARE_RADIX,
                    *, cot_bits: float = FERRET_COT_BITS,
                    compute: ComputeModel = DEFAULT_COMPUTE) -> Cost:
  """Cheetah's 1-bit approximate truncation by ``shift`` (default `FRACTION_BITS`):
  ``x >> s = (x0 >> s) + (x1 >> s) - w 2^(bits - s)``, so one wrap bit and a B2A
  of w mod ``2^s`` [V: SPU ``truncate_prot``]. 64 bits, s = 12: 713.8 bits
  (SPU measured 723.8); 32 bits: 358.2 (369.5)."""
  bits = _check_bits("bits", bits)
  s = FRACTION_BITS.get(bits, bits // 4) if shift is None else _check_int("shift", shift)
  return wrap_bit_cost(bits, n, out_bits=s, radix=radix, cot_bits=cot_bits, compute=compute)


def upcast_cost(n: int, from_bits: int = 32, to_bits: int = 64, shift: int = 0,
                radix: int = COMPARE_RADIX, *, cot_bits: float = FERRET_COT_BITS,
                compute: ComputeModel = DEFAULT_COMPUTE) -> Cost:
  """Ring switch up, ``Z_2^from -> Z_2^to`` (down is a local reduction, free).

  ``x = x0 + x1 - w 2^from``: the wrap bit with a B2A into ``from`` bits. With
  ``shift = s > 0`` this is Nimbus's fused truncation + upcast [P + I]:
  ``(x0 >> s) + (x1 >> s) - w 2^(from - s)`` lifted to ``Z_2^to`` needs w mod
  ``2^(from + s)``, so one wrap bit serves both.
  """
  fb = _check_bits("from_bits", from_bits)
  tb = _check_bits("to_bits", to_bits)
  if tb <= fb:
    raise ValueError(f"to_bits: expected more than from_bits ({fb}), given {tb}")
  s = _check_int("shift", shift, lo=0)
  return wrap_bit_cost(fb, n, out_bits=min(fb + s, tb), radix=radix, cot_bits=cot_bits,
                       compute=compute)


def mux_cost(bits: int, n: int, *, cot_bits: float = FERRET_COT_BITS,
             compute: ComputeModel = DEFAULT_COMPUTE) -> Cost:
  """Select ``b ? x : 0`` for a Boolean share b and a ``bits``-bit share x
  (CrypTFlow2 / Cheetah): two correlated OTs, one each way, each a 1-bit choice
  correction and a ``bits``-bit message; 2 rounds."""
  bits = _check_bits("bits", bits)
  n = _check_int("n", n, lo=0)
  c = _cot_bits(cot_bits)
  return Cost(n * 2 * (1 + bits + c) / 8, 2.0, compute.seconds(cots=2 * n))


def open_cost(bits: int, n: int) -> Cost:
  """Open n shared ``bits``-bit values: each party sends its shares, 1 round."""
  bits = _check_bits("bits", bits, lo=1)
  n = _check_int("n", n, lo=0)
  return Cost(2 * n * bits / 8, 1.0, 0.0)


def ole_crt_primes(bits: int) -> int:
  """CRT plaintext primes CheetahMul uses: ``ceil((2 bits + 15) / 36)`` [V]."""
  bits = _check_bits("bits", bits)
  return _ceil_div(2 * bits + 15, OLE_PRIME_BITS)


def ole_mul_cost(bits: int, n: int, *, compute: ComputeModel = DEFAULT_COMPUTE) -> Cost:
  """n products of two shared ``bits``-bit values, SPU Cheetah style (HE-based OLE).

  [V: ``cheetah_mul.cc``] The cross terms ``x0 y1`` and ``x1 y0`` are two OLEs run
  at once in opposite directions. Each: ``P = ceil((2 bits + 15)/36)`` CRT primes
  x ``ceil(n / 8192)`` batches; per batch and prime one BFV ciphertext (N = 8192,
  moduli {60, 49}: 223 KB) goes out and one comes back mod-switched to the 60-bit
  modulus (123 KB). 2 rounds. Compute [I]: per ciphertext one encryption, one
  product, one decryption; the two directions run on different machines.
  """
  bits = _check_bits("bits", bits)
  n = _check_int("n", n, lo=0)
  if n == 0:
    return ZERO
  N = OLE_POLY_DEGREE
  cts = ole_crt_primes(bits) * _ceil_div(n, N)
  query = 2 * N * sum(OLE_MODULUS_BITS) / 8
  reply = 2 * N * sum(OLE_RESPONSE_MODULUS_BITS) / 8
  L = len(OLE_MODULUS_BITS)
  seconds = cts * (compute.encryption_s(N, L) + compute.pointwise_product_s(N, L)
                   + compute.decryption_s(N, 1)) / compute.threads
  return Cost(2 * cts * (query + reply), 2.0, seconds)


def triple_cost(bits: int, n: int, *, compute: ComputeModel = DEFAULT_COMPUTE) -> Cost:
  """Generating n Beaver triples without a dealer: ``c = a b`` by the same OLE."""
  return ole_mul_cost(bits, n, compute=compute)


def beaver_mul_cost(bits: int, n: int, *, compute: ComputeModel = DEFAULT_COMPUTE) -> Cost:
  """Beaver multiplication without a dealer: `triple_cost` (offline, but counted),
  then open ``x - a`` and ``y - b`` (`open_cost` of 2n, 1 round)."""
  return triple_cost(bits, n, compute=compute).then(open_cost(bits, 2 * n))


def _mul_trunc(bits: int, n: int, shift: int | None, radix: int, cot_bits: float,
               compute: ComputeModel) -> tuple[Cost, Cost]:
  return (ole_mul_cost(bits, n, compute=compute),
          truncation_cost(bits, n, shift, radix, cot_bits=cot_bits, compute=compute))


def _poly_chain(bits: int, n: int, mults: int, depth: int, extra_truncs: int,
                shift: int | None, radix: int, cot_bits: float,
                compute: ComputeModel) -> Cost:
  """``mults`` fixed-point products over ``depth`` levels, each followed by a
  truncation, plus ``extra_truncs`` truncations in one more level."""
  mul, tr = _mul_trunc(bits, n, shift, radix, cot_bits, compute)
  c = Cost(mults * (mul.bytes + tr.bytes), depth * (mul.rounds + tr.rounds),
           mults * (mul.compute_s + tr.compute_s))
  if extra_truncs:
    c = c.then(Cost(extra_truncs * tr.bytes, tr.rounds, extra_truncs * tr.compute_s))
  return c


def normalise_cost(bits: int, n: int, *, cot_bits: float = FERRET_COT_BITS,
                   compute: ComputeModel = DEFAULT_COMPUTE) -> Cost:
  """SPU's ``highestOneBit`` (x = c 2^e, c in [0.5, 1)) and its B2A [V structure, I costs].

  A2B by a Kogge-Stone adder (``2 l log2 l`` ANDs, ``log2 l`` levels), prefix-OR
  (``l log2 l`` ANDs, ``log2 l`` levels), then the bit-reversed one-hot word to
  an arithmetic factor: ``l`` B2As of ``l``-bit messages (2 rounds).
  """
  bits = _check_bits("bits", bits)
  n = _check_int("n", n, lo=0)
  lg = _ceil_log2(bits)
  a = and_cost(3 * bits * lg * n, cot_bits=cot_bits, compute=compute)
  return Cost(a.bytes, 2.0 * lg, a.compute_s).then(
      b2a_cost(bits, bits * n, cot_bits=cot_bits, compute=compute))


def reciprocal_cost(bits: int, n: int, iters: int = GOLDSCHMIDT_ITERS, *,
                    shift: int | None = None, radix: int = COMPARE_RADIX,
                    cot_bits: float = FERRET_COT_BITS,
                    compute: ComputeModel = DEFAULT_COMPUTE) -> Cost:
  """``1/x`` for positive x, SPU's ``reciprocal_goldschmidt_positive`` [V structure]:
  `normalise_cost`, then ``c = x f``, ``w = (2.9142 - 2c) f``, ``e = 1 - x w``, and
  ``iters`` rounds of ``r <- r (1 + e)``, ``e <- e^2`` (the last square skipped):
  ``2 + 2 iters`` products over ``3 + iters`` levels (6 over 5 by default), each
  with a truncation."""
  iters = _check_int("iters", iters)
  mults, depth = 2 + 2 * iters, 3 + iters
  return normalise_cost(bits, n, cot_bits=cot_bits, compute=compute).then(
      _poly_chain(bits, n, mults, depth, 0, shift, radix, cot_bits, compute))


def rsqrt_cost(bits: int, n: int, *, shift: int | None = None, radix: int = COMPARE_RADIX,
               cot_bits: float = FERRET_COT_BITS,
               compute: ComputeModel = DEFAULT_COMPUTE) -> Cost:
  """``1/sqrt(x)``, SPU's default ``f_rsqrt`` [V structure, I counts]: `normalise_cost`
  plus a second B2A for the half-exponent factor; ``u = x 2^-e``; a degree-4
  polynomial in u (u^2, u^3, u^4 in sequence, one coefficient-sum truncation);
  the exponent compensation (a mux on the exponent's parity and one product):
  6 products over 6 levels, 1 extra truncation, 1 mux."""
  bits = _check_bits("bits", bits)
  n = _check_int("n", n, lo=0)
  norm = normalise_cost(bits, n, cot_bits=cot_bits, compute=compute)
  half = b2a_cost(bits, bits * n, cot_bits=cot_bits, compute=compute)
  return chain(norm, Cost(half.bytes, 0.0, half.compute_s),
               _poly_chain(bits, n, 6, 6, 1, shift, radix, cot_bits, compute),
               mux_cost(bits, n, cot_bits=cot_bits, compute=compute))


# ------------------------------------------------------ pricing OpCount tags


# The tags come from the approximation registry (one source of truth): the
# public Nimbus GELU / exp, BumbleBee seg3 GELU, the limit exp of BumbleBee /
# PUMA / SPU, and PUMA's GELU.
NIMBUS_GELU = approx.get("nimbus_public_gelu").opcount
NIMBUS_EXP = approx.get("nimbus_public_exp_softmax").opcount
BUMBLEBEE_GELU = approx.get("bumblebee_gelu").opcount
LIMIT_EXP = approx.get("limit_exp_softmax").opcount
PUMA_GELU = approx.get("puma_gelu").opcount


def _price(op: OpCount, n: int, *, fuse_last_truncation: bool, shift: int | None,
           radix: int, cot_bits: float, compute: ComputeModel) -> Cost:
  """`price_opcount`; ``fuse_last_truncation`` drops the final truncation (and its
  level when it was alone there), for Nimbus's fused truncation + upcast."""
  bits = op.ring_bits
  kw = dict(cot_bits=cot_bits, compute=compute)
  mults = op.multiplications
  depth = max(op.mult_depth, 1) if mults else 0
  prod_truncs = mults  # one after every product, in its level
  extra = max(op.truncations - mults, 0)  # coefficient sums: one more level
  trunc_levels = depth + (1 if extra else 0)
  if fuse_last_truncation and prod_truncs + extra:
    if extra:
      extra -= 1
      trunc_levels = depth + (1 if extra else 0)
    else:
      prod_truncs -= 1
      trunc_levels = depth - 1
  parts = []
  if op.comparisons:
    parts.append(comparison_cost(bits, op.comparisons * n, radix, **kw))
  if prod_truncs + extra or mults:
    mul = ole_mul_cost(bits, mults * n, compute=compute)
    tr = truncation_cost(bits, n, shift, radix, **kw)
    truncs = prod_truncs + extra
    parts.append(Cost(mul.bytes + truncs * tr.bytes,
                      depth * mul.rounds + trunc_levels * tr.rounds,
                      mul.compute_s + truncs * tr.compute_s))
  if op.muxes:
    parts.append(mux_cost(bits, op.muxes * n, **kw))
  return chain(*parts) if parts else ZERO


def price_opcount(op: OpCount, n_elements: int, *, shift: int | None = None,
                  radix: int = COMPARE_RADIX, cot_bits: float = FERRET_COT_BITS,
                  compute: ComputeModel = DEFAULT_COMPUTE) -> Cost:
  """Bytes, rounds and compute of an elementwise approximation on n elements.

  In ``op.ring_bits`` bits [I: a batched, sequential schedule]: all comparisons
  in one batched `comparison_cost`, then the polynomial (``multiplications``
  `ole_mul_cost` products over ``mult_depth`` levels, each level one product
  round trip and one truncation), then all muxes in one batched `mux_cost`::

      rounds = R_cmp + depth (R_mul + R_trunc) + [truncs > mults] R_trunc + R_mux

  Truncations charged are ``truncs = max(op.truncations, op.multiplications)``:
  every fixed-point product needs one, so a tag that left them at 0 is read as
  not having counted them; the extras (coefficient sums) take one more level.
  Squares are priced as general products (SPU's ``SquareA`` would halve their bytes).

  >>> price_opcount(NIMBUS_GELU, 1).rounds  # 5 cmp + (2 mul + 7 trunc) + 7 trunc + 2 mux
  23.0
  """
  _check_op("op", op)
  n = _check_int("n_elements", n_elements, lo=0)
  return _price(op, n, fuse_last_truncation=False, shift=shift, radix=radix,
                cot_bits=cot_bits, compute=compute)


def activation_cost(op: OpCount, n_elements: int, *, ring_bits: int = 64,
                    fused_switch: bool = True, shift: int | None = None,
                    radix: int = COMPARE_RADIX, cot_bits: float = FERRET_COT_BITS,
                    compute: ComputeModel = DEFAULT_COMPUTE) -> Cost:
  """An activation whose input and output live in ``ring_bits`` (the linear layers').

  If ``op.ring_bits < ring_bits`` the input is reduced locally (free) and the
  output lifted back with `upcast_cost`: with ``fused_switch`` (Nimbus) the
  approximation's last truncation is fused into the lift (one wrap bit for
  both, B2A into ``op.ring_bits + shift`` bits); without it (BumbleBee's casts) a
  plain lift follows the full approximation.
  """
  _check_op("op", op)
  bits = _check_bits("ring_bits", ring_bits)
  n = _check_int("n_elements", n_elements, lo=0)
  if op.ring_bits > bits:
    raise ValueError(f"op.ring_bits: expected at most ring_bits ({bits}), given {op.ring_bits}")
  if op.ring_bits == bits:
    return price_opcount(op, n, shift=shift, radix=radix, cot_bits=cot_bits, compute=compute)
  s = FRACTION_BITS.get(op.ring_bits, op.ring_bits // 4) if shift is None else shift
  fuse = fused_switch and max(op.truncations, op.multiplications) > 0
  body = _price(op, n, fuse_last_truncation=fuse, shift=shift, radix=radix, cot_bits=cot_bits,
                compute=compute)
  lift = upcast_cost(n, op.ring_bits, bits, shift=s if fuse else 0, radix=radix,
                     cot_bits=cot_bits, compute=compute)
  return body.then(lift)


def softmax_cost(exp_op: OpCount, rows: int, row_len: int, *, ring_bits: int = 64,
                 fused_switch: bool = True, radix: int = COMPARE_RADIX,
                 cot_bits: float = FERRET_COT_BITS,
                 compute: ComputeModel = DEFAULT_COMPUTE) -> Cost:
  """Softmax over ``rows`` rows of ``row_len`` scores held in ``ring_bits``.

  Max tree in ``exp_op.ring_bits`` (scores reduced locally when smaller):
  ``ceil(log2 row_len)`` levels of comparison + mux, ``row_len - 1`` of each per
  row; subtract (local); exp (`activation_cost`, lifting back to ``ring_bits``);
  sum (local); one `reciprocal_cost` per row; one product + truncation per
  element, in ``ring_bits``.
  """
  _check_op("exp_op", exp_op)
  rows = _check_int("rows", rows)
  row_len = _check_int("row_len", row_len)
  bits = _check_bits("ring_bits", ring_bits)
  kw = dict(cot_bits=cot_bits, compute=compute)
  e_bits = exp_op.ring_bits
  pairs = rows * (row_len - 1)
  levels = _ceil_log2(row_len)
  cmp = comparison_cost(e_bits, pairs, radix, **kw)
  mux = mux_cost(e_bits, pairs, **kw)
  max_tree = Cost(cmp.bytes + mux.bytes, levels * (cmp.rounds + mux.rounds),
                  cmp.compute_s + mux.compute_s)
  exp = activation_cost(exp_op, rows * row_len, ring_bits=bits, fused_switch=fused_switch,
                        radix=radix, **kw)
  recip = reciprocal_cost(bits, rows, radix=radix, **kw)
  mul, tr = _mul_trunc(bits, rows * row_len, None, radix, cot_bits, compute)
  return chain(max_tree, exp, recip, mul, tr)


def layernorm_cost(rows: int, width: int, ring_bits: int = 64, *, radix: int = COMPARE_RADIX,
                   cot_bits: float = FERRET_COT_BITS,
                   compute: ComputeModel = DEFAULT_COMPUTE) -> Cost:
  """LayerNorm on ``rows x width`` shares [I: the SPU/PUMA recipe].

  mean = sum / width (local sum, one truncation per row); x - mean (local);
  var = sum (x - mean)^2 / width (products + truncations, then one truncation per
  row); `rsqrt_cost` per row; (x - mean) rsqrt (products + truncations); times
  the public gamma (truncations), plus beta (local).
  """
  rows = _check_int("rows", rows)
  width = _check_int("width", width)
  bits = _check_bits("ring_bits", ring_bits)
  kw = dict(cot_bits=cot_bits, compute=compute)
  n = rows * width
  tr_rows = truncation_cost(bits, rows, None, radix, **kw)
  mul, tr = _mul_trunc(bits, n, None, radix, cot_bits, compute)
  return chain(tr_rows, mul, tr, tr_rows, rsqrt_cost(bits, rows, radix=radix, **kw), mul, tr, tr)


# ------------------------------------------------ pricing the simulator's ledger

LEDGER_IDEALS = ("embedding_select", "reciprocal", "rsqrt")  # ideal_calls names priced here
_LEDGER_COUNTERS = ("opened_elements", "comparisons", "wrap_bits", "muxes", "truncations",
                    "triples", "square_pairs")
_LEDGER_KEYS = ("calls", "rounds", "messages") + _LEDGER_COUNTERS + ("matmul_triples",
                                                                     "ideal_calls")
_MATMUL_KINDS = ("beaver", "static")
_MATMUL_FIELDS = ("kind", "bits", "spec", "a_shape", "b_shape", "count")


def _bits_key(name: str, key) -> int:
  if isinstance(key, str) and key.isdecimal():  # an as_dict() that went through JSON
    key = int(key)
  return _check_bits(name, key, lo=1)


def _check_shape(name: str, shape) -> tuple[int, ...]:
  if isinstance(shape, (str, bytes)) or not isinstance(shape, (tuple, list)):
    raise ValueError(f"{name}: expected a shape (a tuple of ints >= 1), given {shape!r}")
  return tuple(_check_int(f"{name}[{i}]", d) for i, d in enumerate(shape))


def _opcounts_from_dict(d: collections.abc.Mapping) -> mpc.OpCounts:
  """`mpc.OpCounts.as_dict` form -> `mpc.OpCounts` (missing keys count nothing)."""
  unknown = sorted(str(k) for k in d if k not in _LEDGER_KEYS)
  if unknown:
    raise ValueError(
        f"counts: unknown keys {unknown}; expected those of mpc.OpCounts.as_dict():"
        f" {list(_LEDGER_KEYS)}")
  oc = mpc.OpCounts(**{k: _check_int(f"counts[{k!r}]", d.get(k, 0), lo=0)
                       for k in ("calls", "rounds", "messages")})
  for name in _LEDGER_COUNTERS:
    per_bits = d.get(name, {})
    if not isinstance(per_bits, collections.abc.Mapping):
      raise TypeError(
          f"counts[{name!r}]: expected a dict {{ring bits: elements}}, given"
          f" {type(per_bits).__name__}")
    for bits, n in per_bits.items():
      getattr(oc, name)[_bits_key(f"counts[{name!r}] key", bits)] += _check_int(
          f"counts[{name!r}][{bits!r}]", n, lo=0)
  entries = d.get("matmul_triples", [])
  if isinstance(entries, (str, bytes, collections.abc.Mapping)) or not isinstance(
      entries, collections.abc.Sequence):
    raise TypeError(
        f"counts['matmul_triples']: expected a list of dicts with keys {list(_MATMUL_FIELDS)},"
        f" given {type(entries).__name__}")
  for i, e in enumerate(entries):
    where = f"counts['matmul_triples'][{i}]"
    if not isinstance(e, collections.abc.Mapping) or set(e) != set(_MATMUL_FIELDS):
      raise ValueError(
          f"{where}: expected a dict with keys {list(_MATMUL_FIELDS)}, given"
          f" {sorted(e) if isinstance(e, collections.abc.Mapping) else type(e).__name__}")
    key = (e["kind"], _bits_key(f"{where}['bits']", e["bits"]), e["spec"],
           _check_shape(f"{where}['a_shape']", e["a_shape"]),
           _check_shape(f"{where}['b_shape']", e["b_shape"]))
    oc.matmul_triples[key] += _check_int(f"{where}['count']", e["count"], lo=0)
  ideal = d.get("ideal_calls", {})
  if not isinstance(ideal, collections.abc.Mapping):
    raise TypeError(
        f"counts['ideal_calls']: expected a dict {{name: {{ring bits: elements}}}}, given"
        f" {type(ideal).__name__}")
  for name, per_bits in ideal.items():
    if not isinstance(per_bits, collections.abc.Mapping):
      raise TypeError(
          f"counts['ideal_calls'][{name!r}]: expected a dict {{ring bits: elements}}, given"
          f" {type(per_bits).__name__}")
    for bits, n in per_bits.items():
      oc.ideal_calls[(name, _bits_key(f"counts['ideal_calls'][{name!r}] key", bits))] += (
          _check_int(f"counts['ideal_calls'][{name!r}][{bits!r}]", n, lo=0))
  return oc


def _checked_opcounts(oc: mpc.OpCounts) -> mpc.OpCounts:
  """A validated copy: int ring bits, int counts >= 0, known matmul kinds and ideal names."""
  out = mpc.OpCounts(**{k: _check_int(f"counts.{k}", getattr(oc, k), lo=0)
                        for k in ("calls", "rounds", "messages")})
  for name in _LEDGER_COUNTERS:
    counter = getattr(oc, name)
    if not isinstance(counter, collections.abc.Mapping):
      raise TypeError(
          f"counts.{name}: expected a Counter {{ring bits: elements}}, given"
          f" {type(counter).__name__}")
    for bits, n in counter.items():
      b = _check_bits(f"counts.{name} key", bits, lo=1)
      getattr(out, name)[b] += _check_int(f"counts.{name}[{b}]", n, lo=0)
  for key, n in oc.matmul_triples.items():
    if not isinstance(key, tuple) or len(key) != 5:
      raise ValueError(
          f"counts.matmul_triples key: expected (kind, bits, spec, a_shape, b_shape), given"
          f" {key!r}")
    kind, bits, spec, a_shape, b_shape = key
    if kind not in _MATMUL_KINDS:
      raise ValueError(
          f"counts.matmul_triples kind: expected one of {_MATMUL_KINDS}, given {kind!r}")
    if not isinstance(spec, str):
      raise ValueError(f"counts.matmul_triples spec: expected an einsum string, given {spec!r}")
    key = (kind, _check_bits("counts.matmul_triples bits", bits), spec,
           _check_shape("counts.matmul_triples a_shape", a_shape),
           _check_shape("counts.matmul_triples b_shape", b_shape))
    out.matmul_triples[key] += _check_int(f"counts.matmul_triples[{key!r}]", n, lo=0)
  for key, n in oc.ideal_calls.items():
    if not isinstance(key, tuple) or len(key) != 2:
      raise ValueError(f"counts.ideal_calls key: expected (name, bits), given {key!r}")
    name, bits = key
    if name not in LEDGER_IDEALS:
      raise ValueError(
          f"counts.ideal_calls: unknown ideal functionality {name!r}; expected one of"
          f" {LEDGER_IDEALS} (the ones with a price in jaxsys.secure.cost)")
    b = _check_bits(f"counts.ideal_calls[{name!r}] bits", bits)
    out.ideal_calls[(name, b)] += _check_int(f"counts.ideal_calls[{key!r}]", n, lo=0)
  return out


def _ledger_invocations(ledger: mpc.Ledger) -> collections.Counter:
  """``(kind, bits) -> calls``: over the online paths, the calls of every path that
  ran that input-dependent ideal functionality (comparisons, wrap bits, ideal calls)."""
  inv: collections.Counter = collections.Counter()
  for path, rec in ledger.ops.items():
    if path.startswith(mpc.Ledger.SETUP + "/"):
      continue
    for kind in ("comparisons", "wrap_bits"):
      for bits, n in getattr(rec, kind).items():
        if n:
          inv[(kind, bits)] += rec.calls
    for (name, bits), n in rec.ideal_calls.items():
      if n:
        inv[(f"ideal_calls/{name}", bits)] += rec.calls
  return inv


def _einsum_dims(spec: str, a_shape: tuple[int, ...],
                 b_shape: tuple[int, ...]) -> tuple[int, int, int, int]:
  """``(batch, m, k, n)`` of ``einsum(spec, A, B)`` read as ``batch`` products of
  ``(m x k) (k x n)``: batch indices are in A, B and the output; m in A and the
  output only; n in B and the output only; k in A and B only (contracted). An
  index in one operand alone, not in the output, is summed locally first (free).
  ``...`` dims are aligned from the right, as in NumPy broadcasting."""
  if "->" not in spec or spec.count(",") != 1:
    raise ValueError(
        f"counts.matmul_triples spec: expected an explicit two-operand einsum like"
        f" 'ij,jk->ik', given {spec!r}")
  ins, out = spec.replace(" ", "").split("->")
  terms = ins.split(",")
  ell = [len(s) - len(t.replace("...", "")) if "..." in t else 0
         for t, s in zip(terms, (a_shape, b_shape))]
  if min(ell) < 0:
    raise ValueError(
        f"counts.matmul_triples: spec {spec!r} names more dims than the shapes {a_shape}"
        f" and {b_shape} have")
  pool = [chr(0x3B1 + i) for i in range(max(ell))]  # Greek letters: fresh indices for '...'
  expanded = [t.replace("...", "".join(pool[len(pool) - e:]))
              for t, e in zip(terms, ell)]
  out = out.replace("...", "".join(pool))
  sizes: dict[str, int] = {}
  for term, shape, which in zip(expanded, (a_shape, b_shape), ("a_shape", "b_shape")):
    if len(term) != len(shape):
      raise ValueError(
          f"counts.matmul_triples {which}: spec {spec!r} does not fit the shapes"
          f" {a_shape} and {b_shape}")
    for letter, d in zip(term, shape):
      sizes[letter] = max(sizes.get(letter, 1), d)
  a, b, o = set(expanded[0]), set(expanded[1]), set(out)

  def size(letters):
    return math.prod(sizes[x] for x in letters)

  return size(a & b & o), size((a & o) - b), size((a & b) - o), size((b & o) - a)


def _matmul_triple_cost(kind: str, bits: int, spec: str, a_shape: tuple[int, ...],
                        b_shape: tuple[int, ...], count: int, compute: ComputeModel) -> Cost:
  batch, m, k, n = _einsum_dims(spec, a_shape, b_shape)
  if kind == "beaver":
    return secret_matmul_cost(m, k, n, bits, batch=count * batch, compute=compute)
  # static: X (batch m x k) times the fixed (k x n) mask, whose NTT form is cached
  lin = sip_linear(n, k, batch * m, bits, cache_weight_ntt=True, compute=compute)
  return lin.cost.times(count)


def price_ledger_breakdown(counts, *, radix: int = COMPARE_RADIX,
                           cot_bits: float = FERRET_COT_BITS,
                           compute: ComputeModel = DEFAULT_COMPUTE) -> dict[str, Cost]:
  """`price_ledger` per counter kind: where the bytes, rounds and seconds go.

  Keys (always all present; `chain` of the values is `price_ledger`):

  * ``"opened_elements"``: ``sum_l 2 n_l l / 8`` bytes (`open_cost`: each party
    sends its ``n_l`` shares), ``counts.rounds`` rounds (the simulator's), no compute.
  * ``"triples"``, ``"square_pairs"``: the dealer's work for elementwise Beaver
    products (`mpc.mul`, `mpc.select`) and squares, done without a dealer by
    HE-based OLE: `triple_cost` per ring width (one batch each). Their openings
    are in ``"opened_elements"``. Squares are priced as general triples (SPU's
    one-direction square OLE would halve the bytes; not modelled).
  * ``"matmul_triples"``: matrix triples ``C = A B``, the dealer's work for
    `mpc.einsum` / `mpc.matmul` (``"beaver"``): `secret_matmul_cost` of the spec
    read as ``batch`` products ``(m x k)(k x n)``, ``batch`` times the entry's count;
    for `mpc.matmul_static` (``"static"``): the mask B is fixed, so the weight
    owner can hold it and ``C = A_c B + A_s B`` needs one HE product of the client's
    share with the plaintext B per query: `sip_linear` (``m`` = B's columns, ``k``,
    ``n`` = X's rows) with ``cache_weight_ntt``, times the count, the same as
    BumbleBee's linear layer, moved offline.
  * ``"comparisons"``: `comparison_cost` then `b2a_cost` into the ring (the
    simulator's less-than returns an arithmetic 0/1 share).
  * ``"wrap_bits"``: `wrap_bit_cost` with its B2A into the ring's own width.
  * ``"truncations"``, ``"muxes"``: zero, priced elsewhere: a `mpc.trunc_1bit` /
    `mpc.trunc_upcast` truncation is its wrap bit and a local shift;
    `mpc.trunc_local` is local; a `mpc.select` mux is a Beaver product, whose
    openings and triple are in ``"opened_elements"`` and ``"triples"``.
  * ``"ideal_calls/reciprocal"``, ``"ideal_calls/rsqrt"``: `reciprocal_cost`,
    `rsqrt_cost`. ``"ideal_calls/embedding_select"``: the client selects rows of
    the server's cached encrypted table (`cop_embedding`, no multiply-adds); the
    ledger keeps only the ``E`` elements, not the width, so they are priced packed
    densely, ``ceil(E / N)`` response ciphertexts (``cop_embedding(1, N, ceil(E/N))``:
    exact for a power-of-two width <= N; a width w below that costs
    ``next_pow2(w) / w`` times more bytes).

  Rounds [I]: input-dependent functionalities (comparisons, wrap bits, ideal
  calls) run one after another: per ring width one batched call, its rounds times
  the number of calls that ran it. That number is known for an `mpc.Ledger` (the
  ``calls`` of each online path that recorded it, summed); an `mpc.OpCounts` keeps
  elements only, so each width counts as one call there. Triples do not depend on
  the inputs: one batch per width (per shape for matrices), its rounds counted
  once, as `beaver_mul_cost` does. Everything is chained, never overlapped.

  Args:
    counts: an `mpc.OpCounts`, its ``as_dict()`` form (ring bits may be decimal
      strings, as after JSON), or an `mpc.Ledger`, whose online counts
      (`mpc.Ledger.online`, the ``setup`` scope left out) are priced.
    radix: millionaire digit bits (comparisons, wrap bits, reciprocal, rsqrt).
    cot_bits: bits per silent COT.
    compute: per-operation times.

  Returns:
    ``{kind: Cost}`` in the order above.
  """
  radix = _check_int("radix", radix)
  if radix > 8:
    raise ValueError(f"radix: expected an int in [1, 8] (SPU's bound), given {radix}")
  cot_bits = _cot_bits(cot_bits)
  if not isinstance(compute, ComputeModel):
    raise TypeError(f"compute: expected a ComputeModel, given {type(compute).__name__}")
  if isinstance(counts, mpc.Ledger):
    oc, inv = counts.online(), _ledger_invocations(counts)
  elif isinstance(counts, mpc.OpCounts):
    oc, inv = counts, collections.Counter()
  elif isinstance(counts, collections.abc.Mapping):
    oc, inv = _opcounts_from_dict(counts), collections.Counter()
  else:
    raise TypeError(
        f"counts: expected an mpc.OpCounts, its as_dict() form or an mpc.Ledger, given"
        f" {type(counts).__name__}")
  oc = _checked_opcounts(oc)
  kw = dict(cot_bits=cot_bits, compute=compute)

  def per_width(kind, counter, price):
    parts = []
    for bits, n in sorted(counter.items()):
      if n:
        c = price(bits, n)
        parts.append(Cost(c.bytes, c.rounds * (inv.get((kind, bits)) or 1), c.compute_s))
    return chain(ZERO, *parts)

  def embedding(bits, n):
    N = he_params(bits).poly_degree
    return cop_embedding(1, N, _ceil_div(n, N), bits, compute=compute).cost

  ideal_price = {
      "embedding_select": embedding,
      "reciprocal": lambda b, n: reciprocal_cost(b, n, radix=radix, **kw),
      "rsqrt": lambda b, n: rsqrt_cost(b, n, radix=radix, **kw),
  }
  out = {
      "opened_elements": Cost(
          float(sum(open_cost(b, n).bytes for b, n in oc.opened_elements.items())),
          float(oc.rounds), 0.0),
      "triples": per_width("triples", oc.triples,
                           lambda b, n: triple_cost(b, n, compute=compute)),
      "square_pairs": per_width("square_pairs", oc.square_pairs,
                                lambda b, n: triple_cost(b, n, compute=compute)),
      "matmul_triples": chain(ZERO, *(
          _matmul_triple_cost(*key, count, compute)
          for key, count in sorted(oc.matmul_triples.items()) if count)),
      "comparisons": per_width(
          "comparisons", oc.comparisons,
          lambda b, n: comparison_cost(b, n, radix, **kw).then(b2a_cost(b, n, **kw))),
      "wrap_bits": per_width("wrap_bits", oc.wrap_bits,
                             lambda b, n: wrap_bit_cost(b, n, radix=radix, **kw)),
      "truncations": ZERO,
      "muxes": ZERO,
  }
  for name in LEDGER_IDEALS:
    key = f"ideal_calls/{name}"
    out[key] = per_width(key, {b: n for (nm, b), n in oc.ideal_calls.items() if nm == name},
                         ideal_price[name])
  return out


def price_ledger(counts, *, radix: int = COMPARE_RADIX, cot_bits: float = FERRET_COT_BITS,
                 compute: ComputeModel = DEFAULT_COMPUTE) -> Cost:
  """Bytes, rounds and compute of the exact operation counts `mpc` records.

  The simulator counts what it opens itself (elements, rounds) and only *that*
  its ideal functionalities and dealer ran; this prices each counter with the
  protocol that would realise it, once (`price_ledger_breakdown` lists the
  mapping and the per-kind costs)::

      bytes  = sum_l 2 l opened_l / 8 + triples (OLE) + matrix triples (HE)
               + comparisons + wrap bits + reciprocal + rsqrt + embedding select
      rounds = counts.rounds + sum_{kind, width} calls * R_kind
               + 2 per triple batch (one per width / matrix shape)

  Rounds assume the calls run sequentially, never overlapped [I]: an overestimate
  where independent calls (the heads of one layer, say) could share rounds. For
  an `mpc.OpCounts` each (kind, width) counts as one call (the counts do not say
  how many there were); pass the `mpc.Ledger` to count every call. The
  simulator's ``messages`` and ``calls`` are not priced (bytes come from elements),
  nor is the one-time ``setup`` scope of a `Ledger`.

  Wrap bits [I]: the ledger does not keep the truncation shift, so every wrap
  bit's B2A goes into the ring's own ``l`` bits: exact for `mpc.upcast`, over by
  ``(l - s) / 8`` bytes per element for a truncation by s (`truncation_cost`
  needs ``s`` bits), under by ``s / 8`` for Nimbus's fused `mpc.trunc_upcast`
  (``32 + s``). Reciprocal is SPU's positive Goldschmidt (`reciprocal_cost`); the
  simulator's ideal also takes negative inputs, whose sign handling (a comparison
  and a mux) is not priced.

  Args:
    counts: an `mpc.OpCounts`, its ``as_dict()`` form, or an `mpc.Ledger` (its
      `mpc.Ledger.online` counts, with the calls of each path).
    radix, cot_bits, compute: as `comparison_cost`.

  Returns:
    `Cost`: the `chain` of `price_ledger_breakdown`'s values.

  Raises:
    TypeError: `counts` of another type, or a counter that is not a dict.
    ValueError: an unknown ideal functionality (the known ones are `LEDGER_IDEALS`),
      matmul kind or dict key; negative counts; bad ring bits, specs or shapes.

  >>> import collections
  >>> from jaxsys.secure import mpc
  >>> oc = mpc.OpCounts(rounds=1, opened_elements=collections.Counter({32: 8}),
  ...                   triples=collections.Counter({32: 4}))
  >>> price_ledger(oc) == beaver_mul_cost(32, 4)  # one mul of 4 elements
  True
  """
  return chain(*price_ledger_breakdown(counts, radix=radix, cot_bits=cot_bits,
                                       compute=compute).values())


# ------------------------------------------------------------------ network


class Network(NamedTuple):
  """A link: arrays, so a batch of networks is one pytree for `jax.vmap`."""

  bandwidth_bps: jax.Array  # [...] float32 bits per second
  rtt_s: jax.Array  # [...] float32 round-trip time in seconds


def make_network(bandwidth_bps, rtt_s) -> Network:
  """A checked `Network` from numbers or arrays (bandwidth > 0, rtt >= 0)."""
  bw = np.asarray(bandwidth_bps, np.float32)
  rtt = np.asarray(rtt_s, np.float32)
  if bw.shape != rtt.shape:
    raise ValueError(f"rtt_s: expected the shape of bandwidth_bps {bw.shape}, given {rtt.shape}")
  if not np.all(np.isfinite(bw)) or np.any(bw <= 0):
    raise ValueError(f"bandwidth_bps: expected finite values > 0, given {bandwidth_bps!r}")
  if not np.all(np.isfinite(rtt)) or np.any(rtt < 0):
    raise ValueError(f"rtt_s: expected finite values >= 0, given {rtt_s!r}")
  return Network(bw, rtt)


LAN = make_network(3e9, 1e-3)  # Nimbus paper LAN [P]
WAN = make_network(400e6, 10e-3)  # Nimbus paper WAN [P]
LAN_TABLE6 = make_network(3e9, 0.8e-3)  # Table 6 [P]
WAN_TABLE6 = make_network(200e6, 40e-3)  # Table 6 [P]


@jax.jit
def latency(cost: Cost, network: Network) -> jax.Array:
  """Seconds: ``compute_s + 8 bytes / bandwidth_bps + rounds rtt_s / 2`` (float32).

  One round is one flight (one-way delay, ``rtt / 2``); see the module docstring.
  Jitted; vmap over networks with ``jax.vmap(latency, in_axes=(None, 0))``.

  >>> round(float(latency(Cost(1.25e8, 10.0, 0.5), make_network(1e9, 0.02))), 6)  # 0.5 + 1 + 0.1
  1.6
  """
  f32 = jnp.float32
  bw = jnp.asarray(network.bandwidth_bps, f32)
  rtt = jnp.asarray(network.rtt_s, f32)
  return (jnp.asarray(cost.compute_s, f32) + jnp.asarray(cost.bytes, f32) * f32(8) / bw
          + jnp.asarray(cost.rounds, f32) * rtt / f32(2))


def _check_network(network) -> Network:
  if not isinstance(network, Network):
    raise TypeError(f"network: expected a Network (make_network), given {type(network).__name__}")
  if np.shape(network.bandwidth_bps) != () or np.shape(network.rtt_s) != ():
    raise ValueError(
        "network: expected one link (scalar fields) for a report, given shapes"
        f" {np.shape(network.bandwidth_bps)}, {np.shape(network.rtt_s)}; vmap `latency` for sweeps")
  return network


def _latency_py(cost: Cost, network: Network) -> float:
  bw = float(np.asarray(network.bandwidth_bps))
  rtt = float(np.asarray(network.rtt_s))
  return cost.compute_s + cost.bytes * 8 / bw + cost.rounds * rtt / 2


# ------------------------------------------------------------- BERT reports


class LayerRow(NamedTuple):
  """One Fig. 6 category: bytes, rounds, compute and latency on the given network."""

  category: str
  bytes: float
  rounds: float
  compute_s: float
  latency_s: float


class BertReport(NamedTuple):
  """`bert_report`: per category summed over layers, the embedding, totals, setup."""

  design: str
  rows: tuple[LayerRow, ...]  # CATEGORIES summed over layers, then "Embedding"
  total: LayerRow  # category "Total": one query, setup excluded
  setup_bytes: float  # once per model (COP weights / SIP Galois keys)
  setup_s: float  # setup transfer + server encryption time on this network
  client_memory_bytes: float  # COP: cached Enc(W)
  weight_ciphertexts: int  # COP setup ciphertexts (0 for SIP)


def _design(design: str) -> str:
  if design not in DESIGNS:
    raise ValueError(f"design: expected one of {DESIGNS}, given {design!r}")
  return design


def _linear(design: str, m: int, k: int, n: int, ring_bits: int,
            compute: ComputeModel) -> LinearCost:
  if design == "nimbus":
    return cop_linear(m, k, n, ring_bits, compute=compute)
  return sip_linear(m, k, n, ring_bits, compute=compute)


def bert_layer_costs(d_model: int = 768, d_ff: int = 3072, heads: int = 12, seq: int = 128,
                     design: str = "nimbus", *, gelu_op: OpCount | None = None,
                     exp_op: OpCount | None = None, linear_ring_bits: int = 64,
                     fuse_qkv: bool = False, compute: ComputeModel = DEFAULT_COMPUTE,
                     radix: int = COMPARE_RADIX,
                     cot_bits: float = FERRET_COT_BITS) -> dict[str, Cost]:
  """One BERT encoder layer's `Cost` per Fig. 6 category (network-free).

  * Linear rows: COP (``design="nimbus"``) or SIP with PackLWE
    (``"bumblebee"``), then one `truncation_cost` per output element in
    ``linear_ring_bits``. Q/K/V are three ``d x d`` products run at once (as
    separate HF BERT linears run under SPU), or with ``fuse_qkv`` one
    ``3d x d`` product (COP then needs one third of the weight ciphertexts and
    multiply-adds when ``3d <= N``; SIP encrypts X once).
  * QK^T&PV: `secret_matmul_cost` per head (``seq x d_h x seq`` and
    ``seq x seq x d_h``), each followed by truncations; same for both designs.
  * Softmax: `softmax_cost` on ``heads seq`` rows; GELU: `activation_cost` on
    ``seq d_ff`` elements; Nimbus fuses the ring switch (FM32 -> FM64),
    BumbleBee casts. LN: two `layernorm_cost` in ``linear_ring_bits``.

  Defaults: Nimbus ``NIMBUS_GELU`` / ``NIMBUS_EXP``; BumbleBee ``BUMBLEBEE_GELU`` /
  ``LIMIT_EXP``. Pass ``gelu_op=PUMA_GELU, exp_op=LIMIT_EXP`` for PUMA-style
  non-linears.
  """
  design = _design(design)
  d = _check_int("d_model", d_model)
  ff = _check_int("d_ff", d_ff)
  h = _check_int("heads", heads)
  n = _check_int("seq", seq)
  if d % h:
    raise ValueError(f"heads: expected a divisor of d_model ({d}), given {h}")
  bits = _check_bits("linear_ring_bits", linear_ring_bits)
  if gelu_op is None:
    gelu_op = NIMBUS_GELU if design == "nimbus" else BUMBLEBEE_GELU
  if exp_op is None:
    exp_op = NIMBUS_EXP if design == "nimbus" else LIMIT_EXP
  _check_op("gelu_op", gelu_op)
  _check_op("exp_op", exp_op)
  fused = design == "nimbus"
  kw = dict(cot_bits=cot_bits, compute=compute)

  def lin(m, k):
    c = _linear(design, m, k, n, bits, compute).cost
    return c.then(truncation_cost(bits, m * n, None, radix, **kw))

  dh = d // h
  qk = secret_matmul_cost(n, dh, n, bits, batch=h, compute=compute).then(
      truncation_cost(bits, h * n * n, None, radix, **kw))
  pv = secret_matmul_cost(n, n, dh, bits, batch=h, compute=compute).then(
      truncation_cost(bits, n * d, None, radix, **kw))
  return {
      "Linear_qkv": lin(3 * d, d) if fuse_qkv else lin(d, d).times(3),
      "Linear_o": lin(d, d),
      "Linear_h1": lin(ff, d),
      "Linear_h2": lin(d, ff),
      "Softmax": softmax_cost(exp_op, h * n, n, ring_bits=bits, fused_switch=fused, radix=radix,
                              **kw),
      "GELU": activation_cost(gelu_op, n * ff, ring_bits=bits, fused_switch=fused, radix=radix,
                              **kw),
      "QK^T&PV": qk.then(pv),
      "LN": layernorm_cost(n, d, bits, radix=radix, **kw).times(2),
  }


def _repeat(c: Cost, times: int) -> Cost:
  """``times`` copies one after another (layers)."""
  return Cost(c.bytes * times, c.rounds * times, c.compute_s * times)


def _row(name: str, c: Cost, network: Network) -> LayerRow:
  return LayerRow(name, c.bytes, c.rounds, c.compute_s, _latency_py(c, network))


def bert_layer_report(d_model: int = 768, d_ff: int = 3072, heads: int = 12, seq: int = 128,
                      design: str = "nimbus", network: Network = LAN,
                      **kwargs) -> tuple[LayerRow, ...]:
  """Fig. 6-style rows for one layer, in `CATEGORIES` order, priced on ``network``.

  ``kwargs`` go to `bert_layer_costs` (``gelu_op``, ``exp_op``, ``compute`` ...).

  >>> [r.category for r in bert_layer_report()][:2]
  ['Linear_qkv', 'Linear_o']
  """
  network = _check_network(network)
  costs = bert_layer_costs(d_model, d_ff, heads, seq, design, **kwargs)
  return tuple(_row(name, costs[name], network) for name in CATEGORIES)


def bert_report(layers: int = 12, d_model: int = 768, d_ff: int = 3072, heads: int = 12,
                seq: int = 128, vocab: int = 30522, design: str = "nimbus",
                network: Network = LAN, *, include_embedding: bool = True,
                seeded_setup: bool = True, linear_ring_bits: int = 64, fuse_qkv: bool = False,
                compute: ComputeModel = DEFAULT_COMPUTE, **kwargs) -> BertReport:
  """A whole BERT: ``layers`` encoder layers, the embedding, and the setup.

  Embedding [I]: Nimbus selects cached ``Enc(E)`` columns (`cop_embedding`);
  BumbleBee multiplies the client's one-hot ids by E (`sip_linear` with
  ``k = vocab``); both then one LayerNorm. Setup: Nimbus sends every weight
  ciphertext once (`cop_linear` ``setup_bytes``, seeded unless ``seeded_setup`` is
  False, the embedding table included when ``include_embedding``) and the server
  encrypts them; BumbleBee sends one set of Galois keys (`galois_key_bytes`). The pooler and classifier are left out.
  """
  design = _design(design)
  L = _check_int("layers", layers)
  V = _check_int("vocab", vocab)
  network = _check_network(network)
  layer = bert_layer_costs(d_model, d_ff, heads, seq, design, linear_ring_bits=linear_ring_bits,
                           fuse_qkv=fuse_qkv, compute=compute, **kwargs)
  rows = [_row(name, _repeat(layer[name], L), network) for name in CATEGORIES]
  p = he_params(linear_ring_bits)
  qkv = [(3 * d_model, d_model)] if fuse_qkv else [(d_model, d_model)] * 3
  per_layer_linears = qkv + [(d_model, d_model), (d_ff, d_model), (d_model, d_ff)]
  if design == "nimbus":
    lins = [cop_linear(m, k, seq, linear_ring_bits, seeded_setup=seeded_setup, compute=compute)
            for m, k in per_layer_linears]
    weights = L * sum(c.weight_ciphertexts for c in lins)
    setup_bytes = L * sum(c.setup_bytes for c in lins)
    memory = L * sum(c.client_memory_bytes for c in lins)
  else:
    weights, setup_bytes, memory = 0, galois_key_bytes(linear_ring_bits), 0.0
  total = _repeat(chain(*(layer[name] for name in CATEGORIES)), L)
  if include_embedding:
    ln = layernorm_cost(seq, d_model, linear_ring_bits, compute=compute,
                        cot_bits=kwargs.get("cot_bits", FERRET_COT_BITS),
                        radix=kwargs.get("radix", COMPARE_RADIX))
    if design == "nimbus":
      emb = cop_embedding(V, d_model, seq, linear_ring_bits, seeded_setup=seeded_setup,
                          compute=compute)
      weights += emb.weight_ciphertexts
      setup_bytes += emb.setup_bytes
      memory += emb.client_memory_bytes
    else:
      emb = sip_linear(d_model, V, seq, linear_ring_bits, compute=compute)
    emb_cost = emb.cost.then(ln)
    rows.append(_row("Embedding", emb_cost, network))
    total = total.then(emb_cost)
  enc_s = weights * compute.encryption_s(p.poly_degree, p.num_moduli) / compute.threads
  setup_cost = Cost(setup_bytes, 1.0, enc_s)
  return BertReport(design, tuple(rows), _row("Total", total, network), setup_bytes,
                    _latency_py(setup_cost, network), memory, weights)


def setup_amortised_speedup(queries, *, network: Network = LAN, **kwargs) -> jax.Array:
  """Fig. 12 style: BumbleBee time over Nimbus time for q queries, setup included.

  ``speedup(q) = (S_bb + q T_bb) / (S_nimbus + q T_nimbus)`` with ``S`` the setup
  and ``T`` the per-query latency of `bert_report` on ``network`` (``kwargs`` go
  to it). ``queries`` may be an array; the result has its shape.
  """
  nb = bert_report(design="nimbus", network=network, **kwargs)
  bb = bert_report(design="bumblebee", network=network, **kwargs)
  q = jnp.asarray(queries, jnp.float32)
  f32 = jnp.float32
  return (f32(bb.setup_s) + q * f32(bb.total.latency_s)) / (
      f32(nb.setup_s) + q * f32(nb.total.latency_s))


def break_even_queries(*, network: Network = LAN, **kwargs) -> float:
  """Smallest real q with ``setup_amortised_speedup(q) >= 1``: ``(S_n - S_b) / (T_b - T_n)``;
  ``inf`` when Nimbus is not faster per query, 0 when its setup is not larger."""
  nb = bert_report(design="nimbus", network=network, **kwargs)
  bb = bert_report(design="bumblebee", network=network, **kwargs)
  ds = nb.setup_s - bb.setup_s
  dt = bb.total.latency_s - nb.total.latency_s
  if ds <= 0:
    return 0.0
  return ds / dt if dt > 0 else math.inf
