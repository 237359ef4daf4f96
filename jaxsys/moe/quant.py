"""Group quantisation of expert weights and HOBBIT's mixed-precision expert layer.

HOBBIT (arXiv 2411.01433, Sec. 4.1; jaxsys notes ``papers/moe.md`` 1.1) keeps each
expert in two precisions, fp16 + int4 on an RTX 4090 and int8 + int2 on a Jetson
Orin, and on a cache miss loads the high-precision copy, the low-precision copy or
nothing, by the class `jaxsys.moe.routing.hobbit_score_classes` gives each
(token, slot). This module holds the tensor side of that:

* `quantize` / `dequantize`: round-to-nearest group quantisation of ``[..., D, F]``
  weights along D (the contraction axis) in groups of `group` rows, to int8, int4
  or int2, symmetric (``w ~ code * scale``, codes in ``[-qmax, qmax]``,
  ``qmax = 2**(bits-1) - 1``; int2 is therefore ternary) or asymmetric
  (``w ~ code * scale + min``, codes in ``[0, 2**bits - 1]``, llama.cpp's Q4_1
  form). Every element is within ``scale / 2`` of its dequantised value;
* `nbytes`: the exact storage, packed codes plus scales (plus mins): e.g. int4
  with fp16 scales per 32 rows is 4.5 bits a weight, 3.56x less than fp16;
* `hobbit_expert_mlp`: the routed expert layer where every slot runs on the high
  precision weights, on the dequantised low-precision copy, or is skipped;
* `quantization_error`: each expert's Frobenius error, the ``eps_ij`` of MC-MoE's
  per-expert bit allocation (survey arXiv 2412.14219 Sec. 3; ``papers/moe.md`` 1.2).

Packed layout (`QuantizedExperts.packed`, uint8, ``[..., D * bits / 8, F]``): the
``pack = 8 // bits`` consecutive rows ``pack*r, ..., pack*r + pack - 1`` of column f
share byte ``packed[..., r, f]``; row ``pack*r + i`` sits in bits
``[i*bits, (i+1)*bits)`` (low bits first), as two's complement for symmetric codes
and unsigned for asymmetric ones. int8 is one code per byte (its two's complement
pattern). The Pallas kernel `jaxsys.kernels.quant_matmul` reads this layout.

Skipped slots: HOBBIT skips an expert by not computing it; ``papers/moe.md`` 1.1
says nothing of rescaling the experts that remain, and its motivation (Fig. 3b)
measures the cost of skipping as such, so by default the remaining weights are
NOT renormalised (``renormalize=True`` rescales them to their old sum, for
ablations).

Shape letters: E experts, D contraction rows, F output columns, G = D / group
groups, P = D * bits / 8 packed rows, T tokens, K slots per token.

>>> import jax.numpy as jnp
>>> from jaxsys.moe import quant
>>> w = jnp.linspace(-1.0, 1.0, 2 * 64 * 8).reshape(2, 64, 8)
>>> q = quant.quantize(w, bits=4, group=32)
>>> q.packed.shape, q.scales.shape, quant.nbytes(q)   # 2*32*8 + 2*2*8*2 bytes
((2, 32, 8), (2, 2, 8), 576)
>>> bool(jnp.all(jnp.abs(quant.dequantize(q) - w) <= q.scales.astype(jnp.float32).max() / 2))
True
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jaxsys.moe import dispatch
from jaxsys.moe.routing import HIGH, LOW, SKIP, Routing

BITS = (8, 4, 2)
SCALE_DTYPES = (jnp.dtype(jnp.float16), jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float32))
_HIGHEST = jax.lax.Precision.HIGHEST


class QuantizedExperts(NamedTuple):
  """Group-quantised weights ``[..., D, F]`` (usually ``[E, D, F]``), packed along D.

  `bits` and `group` are static: they are the pytree's auxiliary data, so a
  `QuantizedExperts` passes through `jax.jit`, `vmap` and `scan` with them as
  Python ints; only the arrays are leaves.
  """

  packed: jax.Array  # [..., P = D*bits/8, F] uint8: row pack*r+i at bits [i*bits, (i+1)*bits) of byte r
  scales: jax.Array  # [..., G = D/group, F] float16 / bfloat16 / float32: step of each group
  bits: int  # 8, 4 or 2 (static)
  group: int  # rows of D per scale (static)
  mins: jax.Array | None = None  # [..., G, F] like scales: value of code 0 (asymmetric); None: symmetric

  @property
  def pack(self) -> int:
    """Codes per byte."""
    return 8 // self.bits

  @property
  def shape(self) -> tuple[int, ...]:
    """The logical (unpacked) shape ``[..., D, F]``."""
    *lead, p, f = self.packed.shape
    return (*lead, p * self.pack, f)

  @property
  def symmetric(self) -> bool:
    return self.mins is None


def _flatten_with_keys(q: QuantizedExperts):
  children = ((jax.tree_util.GetAttrKey("packed"), q.packed),
              (jax.tree_util.GetAttrKey("scales"), q.scales),
              (jax.tree_util.GetAttrKey("mins"), q.mins))
  return children, (q.bits, q.group)


def _unflatten(aux, children) -> QuantizedExperts:
  packed, scales, mins = children
  bits, group = aux
  return QuantizedExperts(packed, scales, bits, group, mins)


jax.tree_util.register_pytree_with_keys(QuantizedExperts, _flatten_with_keys, _unflatten)


class ExpertWeights(NamedTuple):
  """The matrices of one expert layer, each float ``jax.Array`` or `QuantizedExperts`."""

  w_in_EDF: Any  # [E, D, F] first matrix
  w_out_EFD: Any  # [E, F, D] second matrix (quantised along F, its contraction axis)
  w_gate_EDF: Any = None  # [E, D, F] gate of a gated FFN (SwiGLU), or None


# ----------------------------------------------------------------------------- checks


def _check_bits(bits) -> int:
  if isinstance(bits, bool) or not isinstance(bits, int) or bits not in BITS:
    raise ValueError(f"bits: expected one of {BITS}, given {bits!r}")
  return bits


def _check_group(group, D: int, bits: int, name: str = "w") -> int:
  if isinstance(group, bool) or not isinstance(group, int) or group < 1:
    raise ValueError(f"group: expected an int >= 1, given {group!r}")
  if D % group:
    raise ValueError(
        f"group: expected a divisor of {name}'s quantised axis D={D} (axis -2), given {group}")
  pack = 8 // bits
  if D % pack:
    raise ValueError(
        f"{name}: D={D} (axis -2) must be a multiple of {pack} to pack {pack} {bits}-bit"
        f" codes per byte")
  return group


def _check_quantized(q: QuantizedExperts, name: str = "q") -> None:
  _check_bits(q.bits)
  if q.packed.ndim < 2 or q.packed.dtype != jnp.uint8:
    raise ValueError(
        f"{name}.packed: expected uint8 [..., D*bits/8, F], given {q.packed.dtype}"
        f" {q.packed.shape}")
  *lead, D, F = q.shape
  _check_group(q.group, D, q.bits, name)
  want = (*lead, D // q.group, F)
  if q.scales.shape != want:
    raise ValueError(
        f"{name}.scales: expected shape {want} (one scale per {q.group} rows of D={D}),"
        f" given {q.scales.shape}")
  if q.scales.dtype not in SCALE_DTYPES:
    raise TypeError(
        f"{name}.scales: expected one of {[str(d) for d in SCALE_DTYPES]}, given"
        f" {q.scales.dtype}")
  if q.mins is not None and (q.mins.shape != want or q.mins.dtype != q.scales.dtype):
    raise ValueError(
        f"{name}.mins: expected {q.scales.dtype} {want} (like scales), given {q.mins.dtype}"
        f" {q.mins.shape}")


# ------------------------------------------------------------------------------ packing


def pack_codes(codes: jax.Array, bits: int) -> jax.Array:
  """Packs integer codes ``[..., D, F]`` along D into uint8 ``[..., D*bits/8, F]``.

  Codes are signed (``[-2**(bits-1), 2**(bits-1) - 1]``, stored as two's
  complement) or unsigned (``[0, 2**bits - 1]``); only the low `bits` bits of each
  are kept, so both round-trip through `unpack_codes` with the matching `signed`.
  Row ``pack*r + i`` goes to bits ``[i*bits, (i+1)*bits)`` of byte row r.
  """
  bits = _check_bits(bits)
  if codes.ndim < 2 or not jnp.issubdtype(codes.dtype, jnp.integer):
    raise ValueError(f"codes: expected integer [..., D, F], given {codes.dtype} {codes.shape}")
  pack = 8 // bits
  *lead, D, F = codes.shape
  if D % pack:
    raise ValueError(f"codes: D={D} (axis -2) must be a multiple of {pack} for {bits}-bit codes")
  u = codes.astype(jnp.int32) & jnp.int32((1 << bits) - 1)
  u = u.reshape(*lead, D // pack, pack, F)
  shifts = (jnp.arange(pack, dtype=jnp.int32) * bits).reshape((1,) * len(lead) + (1, pack, 1))
  # The fields are disjoint, so their sum is their bitwise or.
  return jnp.sum(u << shifts, axis=-2).astype(jnp.uint8)


def unpack_codes(packed: jax.Array, bits: int, *, signed: bool = True) -> jax.Array:
  """Inverse of `pack_codes`: uint8 ``[..., P, F]`` to int8 codes ``[..., P*8/bits, F]``."""
  bits = _check_bits(bits)
  if packed.ndim < 2 or packed.dtype != jnp.uint8:
    raise ValueError(f"packed: expected uint8 [..., P, F], given {packed.dtype} {packed.shape}")
  pack = 8 // bits
  *lead, P, F = packed.shape
  shifts = (jnp.arange(pack, dtype=jnp.int32) * bits).reshape((1,) * len(lead) + (1, pack, 1))
  u = (packed.astype(jnp.int32)[..., :, None, :] >> shifts) & jnp.int32((1 << bits) - 1)
  if signed:  # sign-extend the two's complement field
    u = jnp.where(u >= (1 << (bits - 1)), u - jnp.int32(1 << bits), u)
  return u.reshape(*lead, P * pack, F).astype(jnp.int8 if signed else jnp.uint8)


# ---------------------------------------------------------------- quantise / dequantise


def _round_to(x_f32: jax.Array, dtype, direction: float) -> jax.Array:
  """`x_f32` in `dtype`, rounded up (direction=+inf) or down (-inf), never nearest."""
  y = x_f32.astype(dtype)
  off = (y.astype(jnp.float32) < x_f32) if direction > 0 else (y.astype(jnp.float32) > x_f32)
  return jnp.where(off, jnp.nextafter(y, jnp.asarray(direction, dtype)), y)


@functools.partial(jax.jit, static_argnames=("bits", "group", "scale_dtype", "symmetric"))
def quantize(
    w: jax.Array,
    *,
    bits: int,
    group: int = 32,
    scale_dtype: Any = jnp.float16,
    symmetric: bool = True,
) -> QuantizedExperts:
  """Round-to-nearest group quantisation of `w` ``[..., D, F]`` along D.

  Each group of `group` consecutive rows of a column shares one scale.
  Symmetric: ``scale = max|w| / qmax`` with ``qmax = 2**(bits-1) - 1`` and
  ``code = round(w / scale)`` in ``[-qmax, qmax]`` (int2: -1, 0, 1). Asymmetric:
  ``min`` and ``scale = (max - min) / (2**bits - 1)``, ``code = round((w - min) /
  scale)`` in ``[0, 2**bits - 1]``. Scales are rounded up (and mins down) to
  `scale_dtype` before the codes are computed from the stored values, so no
  code clips and every element satisfies ``|w - dequantize(q)| <= scale / 2``
  up to float32 rounding. An all-zero group gets scale 0 and codes 0.

  Args:
    w: float weights, e.g. ``[E, D, F]``; groups run along axis -2.
    bits: 8, 4 or 2.
    group: rows per scale; must divide D (D must also be a multiple of 8 // bits).
    scale_dtype: float16 (default), bfloat16 or float32. Float16 scales need
      ``max|w| / qmax <= 65504``.
    symmetric: symmetric (no mins) or asymmetric (scale and min per group).

  Returns:
    `QuantizedExperts`.

  >>> q = quantize(jnp.array([[1.0], [-0.5], [0.25], [0.0]]), bits=2, group=4)
  >>> q.scales.tolist(), unpack_codes(q.packed, 2).ravel().tolist()  # int2: ternary
  ([[1.0]], [1, 0, 0, 0])
  """
  bits = _check_bits(bits)
  if w.ndim < 2 or not jnp.issubdtype(w.dtype, jnp.floating):
    raise ValueError(f"w: expected floating [..., D, F], given {w.dtype} {w.shape}")
  *lead, D, F = w.shape
  group = _check_group(group, D, bits)
  sdt = jnp.dtype(scale_dtype)
  if sdt not in SCALE_DTYPES:
    raise TypeError(f"scale_dtype: expected one of {[str(d) for d in SCALE_DTYPES]}, given {sdt}")
  G = D // group
  w_GgF = w.astype(jnp.float32).reshape(*lead, G, group, F)
  if symmetric:
    qmax = (1 << (bits - 1)) - 1
    amax = jnp.max(jnp.abs(w_GgF), axis=-2)  # [..., G, F]
    scales = _round_to(amax / jnp.float32(qmax), sdt, jnp.inf)
    s = scales.astype(jnp.float32)[..., :, None, :]
    codes = jnp.round(w_GgF / jnp.where(s > 0, s, jnp.float32(1)))
    codes = jnp.clip(jnp.where(s > 0, codes, 0.0), -qmax, qmax)
    mins = None
  else:
    levels = (1 << bits) - 1
    mins = _round_to(jnp.min(w_GgF, axis=-2), sdt, -jnp.inf)
    m = mins.astype(jnp.float32)
    scales = _round_to((jnp.max(w_GgF, axis=-2) - m) / jnp.float32(levels), sdt, jnp.inf)
    s = scales.astype(jnp.float32)[..., :, None, :]
    codes = jnp.round((w_GgF - m[..., :, None, :]) / jnp.where(s > 0, s, jnp.float32(1)))
    codes = jnp.clip(jnp.where(s > 0, codes, 0.0), 0, levels)
  packed = pack_codes(codes.astype(jnp.int32).reshape(*lead, D, F), bits)
  return QuantizedExperts(packed, scales, bits, group, mins)


def dequantize_packed(
    packed: jax.Array,
    scales: jax.Array,
    mins: jax.Array | None = None,
    *,
    bits: int,
    group: int,
    dtype: Any = jnp.float32,
) -> jax.Array:
  """Float weights ``[..., D, F]`` from packed codes and per-group scales (and mins).

  ``w = code * scale`` (symmetric, two's complement codes) or ``w = code * scale +
  min`` (asymmetric, unsigned codes), computed in float32 and cast to `dtype`.
  """
  q = QuantizedExperts(packed, scales, bits, group, mins)
  _check_quantized(q, "q")
  *lead, D, F = q.shape
  G = D // group
  codes = unpack_codes(packed, bits, signed=mins is None).astype(jnp.float32)
  w = codes.reshape(*lead, G, group, F) * scales.astype(jnp.float32)[..., :, None, :]
  if mins is not None:
    w = w + mins.astype(jnp.float32)[..., :, None, :]
  return w.reshape(*lead, D, F).astype(dtype)


def dequantize(q: QuantizedExperts, dtype: Any = jnp.float32) -> jax.Array:
  """The float weights ``[..., D, F]`` that `q` stands for (see `dequantize_packed`)."""
  if not isinstance(q, QuantizedExperts):
    raise TypeError(f"q: expected a QuantizedExperts, given {type(q).__name__}")
  return dequantize_packed(q.packed, q.scales, q.mins, bits=q.bits, group=q.group, dtype=dtype)


def nbytes(x: Any) -> int:
  """Exact storage in bytes: packed codes + scales (+ mins), or an array's bytes.

  Accepts a `QuantizedExperts`, a float array, an `ExpertWeights`, or any pytree
  of these (summed). From static shapes, so it also works on tracers.

  >>> q = quantize(jnp.ones((2, 128, 16)), bits=4, group=32)
  >>> nbytes(q) * 8 / (2 * 128 * 16)   # 4 bits + 16 bits of scale per 32 weights
  4.5
  """
  if isinstance(x, QuantizedExperts):
    total = x.packed.size * x.packed.dtype.itemsize + x.scales.size * x.scales.dtype.itemsize
    if x.mins is not None:
      total += x.mins.size * x.mins.dtype.itemsize
    return int(total)
  if isinstance(x, (jax.Array, jax.ShapeDtypeStruct)) or hasattr(x, "dtype"):
    return int(x.size * jnp.dtype(x.dtype).itemsize)
  leaves = jax.tree_util.tree_leaves(x, is_leaf=lambda v: isinstance(v, QuantizedExperts))
  return sum(nbytes(v) for v in leaves)


def quantize_expert_weights(weights: ExpertWeights, **kwargs: Any) -> ExpertWeights:
  """`quantize` applied to each matrix of `weights` (keyword arguments as `quantize`)."""
  return ExpertWeights(*(None if w is None else quantize(w, **kwargs) for w in weights))


@functools.partial(jax.jit, static_argnames=("bits", "group", "scale_dtype", "symmetric"))
def quantization_error(
    w_EDF: jax.Array, *, bits: int, group: int = 32, scale_dtype: Any = jnp.float16,
    symmetric: bool = True,
) -> jax.Array:
  """Per-expert Frobenius error ``||w_e - dequantize(quantize(w_e))||_F``, float32 ``[E]``.

  The quantisation error ``eps_ij`` that MC-MoE's per-expert bit allocation weighs
  against access frequency and routing weight (``papers/moe.md`` 1.2).
  """
  q = quantize(w_EDF, bits=bits, group=group, scale_dtype=scale_dtype, symmetric=symmetric)
  d = dequantize(q) - w_EDF.astype(jnp.float32)
  return jnp.sqrt(jnp.sum(d * d, axis=tuple(range(1, w_EDF.ndim))))


# ------------------------------------------------------------------ mixed-precision MLP


def _logical(w, name: str) -> tuple[tuple[int, ...], Any]:
  if isinstance(w, QuantizedExperts):
    _check_quantized(w, name)
    return w.shape, None
  if not (hasattr(w, "shape") and hasattr(w, "dtype")):
    raise TypeError(f"{name}: expected an array or a QuantizedExperts, given {type(w).__name__}")
  return tuple(w.shape), w.dtype


def _materialise(weights: ExpertWeights, which: str, dtype) -> tuple[Any, Any, Any]:
  """Float matrices of `weights` in `dtype`: quantised ones are dequantised."""
  if not isinstance(weights, ExpertWeights):
    raise TypeError(f"{which}: expected an ExpertWeights, given {type(weights).__name__}")
  out = []
  for name, w in zip(ExpertWeights._fields, weights):
    if w is None:
      out.append(None)
      continue
    _, dt = _logical(w, f"{which}.{name}")
    if dt is None:
      out.append(dequantize(w, dtype))
    elif dt != dtype:
      raise TypeError(
          f"{which}.{name}: expected the dtype of x_TD ({dtype}) for unquantised weights,"
          f" given {dt}")
    else:
      out.append(w)
  return tuple(out)


def _check_pair(high: ExpertWeights, low: ExpertWeights) -> None:
  for name, h, l in zip(ExpertWeights._fields, high, low):
    if (h is None) != (l is None):
      raise ValueError(
          f"high.{name} / low.{name}: both or neither must be given (gated FFN in both"
          f" precisions), given {'None' if h is None else 'weights'} /"
          f" {'None' if l is None else 'weights'}")
    if h is not None:
      hs, _ = _logical(h, f"high.{name}")
      ls, _ = _logical(l, f"low.{name}")
      if hs != ls:
        raise ValueError(
            f"low.{name}: expected the logical shape of high.{name} {hs}, given {ls}")


@functools.partial(jax.jit,
                   static_argnames=("activation", "backend", "renormalize", "interpret"))
def hobbit_expert_mlp(
    x_TD: jax.Array,
    routing: Routing,
    classes_TK: jax.Array,
    high: ExpertWeights,
    low: ExpertWeights,
    *,
    activation: str = "gelu",
    backend: str = "ragged_dot",
    renormalize: bool = False,
    interpret: bool | None = None,
) -> jax.Array:
  """HOBBIT's mixed-precision expert layer: each slot HIGH, LOW or SKIP.

  ``y[t] = sum_k w[t, k] * FFN^{c[t, k]}_{e[t, k]}(x[t])`` where ``FFN^HIGH`` uses
  the `high` weights (float, e.g. fp16; or a `QuantizedExperts`, e.g. int8 on a
  Jetson), ``FFN^LOW`` the dequantised `low` copy (e.g. int4 / int2), and SKIP
  slots contribute 0 (HOBBIT arXiv 2411.01433 Sec. 4.1; ``papers/moe.md`` 1.1).
  The remaining weights are not renormalised unless ``renormalize`` (module
  docstring). Each precision runs as one `dispatch.expert_mlp` over its own slots
  (dropless), so with every slot HIGH this equals `dispatch.expert_mlp` on the
  high weights.

  Args:
    x_TD: token activations (float).
    routing: the `Routing` (unused slots, ``mask_TK`` False, contribute 0).
    classes_TK: int ``HIGH`` (0), ``LOW`` (1) or ``SKIP`` (2) per slot, e.g.
      `routing.hobbit_score_classes(...).classes_TK`.
    high: the high-precision `ExpertWeights`.
    low: the low-precision `ExpertWeights`, same logical shapes.
    activation: as `dispatch.expert_mlp` ("silu" with a gate for SwiGLU/Mixtral).
    backend: "ragged_dot", "capacity_einsum" (dropless) or "pallas".
    renormalize: rescale the weights of the computed slots to the token's old sum.
    interpret: for backend "pallas" (CPU tests).

  Returns:
    ``y_TD`` in the dtype of `x_TD`.
  """
  if x_TD.ndim != 2 or not jnp.issubdtype(x_TD.dtype, jnp.floating):
    raise ValueError(f"x_TD: expected floating [tokens, D], given {x_TD.dtype} {x_TD.shape}")
  if not isinstance(routing, Routing):
    raise TypeError(f"routing: expected a Routing, given {type(routing).__name__}")
  if classes_TK.shape != routing.experts_TK.shape:
    raise ValueError(
        f"classes_TK: expected the shape of routing.experts_TK {routing.experts_TK.shape},"
        f" given {classes_TK.shape}")
  if not jnp.issubdtype(classes_TK.dtype, jnp.integer):
    raise TypeError(
        f"classes_TK: expected an integer dtype (HIGH/LOW/SKIP), given {classes_TK.dtype}")
  _check_pair(high, low)
  hi = _materialise(high, "high", x_TD.dtype)
  lo = _materialise(low, "low", x_TD.dtype)

  mask_TK = routing.mask_TK.astype(bool)
  w_TK = jnp.where(mask_TK, routing.weights_TK, jnp.zeros_like(routing.weights_TK))
  kept_TK = mask_TK & (classes_TK != SKIP)
  if renormalize:
    old_T1 = jnp.sum(w_TK, axis=-1, keepdims=True)
    kept_w_TK = jnp.where(kept_TK, w_TK, jnp.zeros_like(w_TK))
    new_T1 = jnp.sum(kept_w_TK, axis=-1, keepdims=True)
    w_TK = kept_w_TK * (old_T1 / jnp.where(new_T1 > 0, new_T1, jnp.ones_like(new_T1)))

  y_TD = jnp.zeros(x_TD.shape, jnp.float32)
  for cls, (w_in, w_out, w_gate) in ((HIGH, hi), (LOW, lo)):
    use_TK = kept_TK & (classes_TK == cls)
    r = routing._replace(weights_TK=jnp.where(use_TK, w_TK, jnp.zeros_like(w_TK)), mask_TK=use_TK)
    y, _ = dispatch.expert_mlp(x_TD, r, w_in, w_out, w_gate, backend=backend,
                               capacity_factor=None, activation=activation, interpret=interpret)
    y_TD = y_TD + y.astype(jnp.float32)
  return y_TD.astype(x_TD.dtype)
