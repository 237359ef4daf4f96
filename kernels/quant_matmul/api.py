"""Dequantising matmul: ``x @ dequantize(packed, scales[, mins])`` for group-quantised weights.

The weights are int8 / int4 / int2 codes packed along the contraction D (4-bit:
two per byte, 2-bit: four), one scale (and, asymmetric, one min) per `group`
rows of each column: the layout of `jaxsys.moe.quant` (HOBBIT's low-precision
experts, arXiv 2411.01433 Sec. 4.1).

Implementations:

* ``"pallas"``: the Triton kernel in `pallas_gpu.py` (GPU, or ``interpret=True``),
  which unpacks and scales the codes in registers;
* ``"reference"``: dequantise to float32, then one HIGHEST-precision dot;
* ``None``: the kernel on a GPU, else the reference.

Naming one that cannot run raises `ImplementationError`, never falls back.

>>> import jax.numpy as jnp
>>> from jaxsys.moe import quant
>>> from jaxsys.kernels.quant_matmul import quant_matmul
>>> q = quant.quantize(7 * jnp.eye(4), bits=4, group=4)   # scale 7 / 7 = 1, code 7
>>> quant_matmul(jnp.ones((1, 4)), q.packed, q.scales, bits=4, group=4).tolist()
[[7.0, 7.0, 7.0, 7.0]]
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp

from jaxsys._src import backend
from jaxsys.kernels.quant_matmul import reference
from jaxsys.kernels.quant_matmul.config import BlockConfig

IMPLEMENTATIONS = ("pallas", "reference")
BITS = (8, 4, 2)
_SCALE_DTYPES = (jnp.dtype(jnp.float16), jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float32))


def _check(x_ND, packed_PF, scales_GF, mins_GF, bits, group):
  if isinstance(bits, bool) or not isinstance(bits, int) or bits not in BITS:
    raise ValueError(f"bits: expected one of {BITS}, given {bits!r}")
  if x_ND.ndim != 2:
    raise ValueError(f"x_ND: expected 2 dims [rows, D], given shape {x_ND.shape}")
  if not jnp.issubdtype(x_ND.dtype, jnp.floating):
    raise TypeError(f"x_ND: expected a floating dtype, given {x_ND.dtype}")
  N, D = x_ND.shape
  pack = 8 // bits
  if packed_PF.ndim != 2 or packed_PF.dtype != jnp.uint8:
    raise ValueError(
        f"packed_PF: expected uint8 [D*bits/8, F], given {packed_PF.dtype} {packed_PF.shape}")
  if packed_PF.shape[0] * pack != D:
    raise ValueError(
        f"packed_PF: expected {D} / {pack} = {D / pack:g} rows ({pack} {bits}-bit codes per"
        f" byte for D={D} of x_ND), given {packed_PF.shape[0]}")
  F = packed_PF.shape[1]
  if isinstance(group, bool) or not isinstance(group, int) or group < 1 or D % group:
    raise ValueError(f"group: expected a divisor of D={D} (of x_ND), given {group!r}")
  want = (D // group, F)
  if scales_GF.shape != want:
    raise ValueError(
        f"scales_GF: expected shape {want} (one per {group} rows of D={D}, F of packed_PF),"
        f" given {scales_GF.shape}")
  if scales_GF.dtype not in _SCALE_DTYPES:
    raise TypeError(
        f"scales_GF: expected one of {[str(d) for d in _SCALE_DTYPES]}, given {scales_GF.dtype}")
  if mins_GF is not None and (mins_GF.shape != want or mins_GF.dtype != scales_GF.dtype):
    raise ValueError(
        f"mins_GF: expected {scales_GF.dtype} {want} (like scales_GF), given {mins_GF.dtype}"
        f" {mins_GF.shape}")


def quant_matmul(
    x_ND: jax.Array,
    packed_PF: jax.Array,
    scales_GF: jax.Array,
    mins_GF: jax.Array | None = None,
    *,
    bits: int,
    group: int,
    implementation: str | Sequence[str] | None = None,
    interpret: bool | None = None,
    block_config: BlockConfig | None = None,
) -> jax.Array:
  """``x_ND @ W`` where W ``[D, F]`` is stored as packed `bits`-bit codes.

  Args:
    x_ND: float activations.
    packed_PF: uint8 ``[D * bits / 8, F]`` (`jaxsys.moe.quant.QuantizedExperts.packed`
      of one expert).
    scales_GF: ``[D / group, F]`` float16, bfloat16 or float32.
    mins_GF: ``[D / group, F]`` like `scales_GF` for asymmetric codes, or None.
    bits: 8, 4 or 2.
    group: rows of D per scale.
    implementation: "pallas", "reference", a list, or None.
    interpret: run the Pallas kernel in interpret mode (CPU tests).
    block_config: tiling of the Pallas kernel (default by the number of rows).

  Returns:
    ``out_NF`` in the dtype of `x_ND`; the kernel matches the reference to
    float32 rounding for float32 `x_ND`.
  """
  _check(x_ND, packed_PF, scales_GF, mins_GF, bits, group)

  def pallas_ok():
    if backend.has_gpu() or interpret:
      return None
    return (f"the Pallas GPU kernel needs a GPU (backend is {backend.platform()});"
            " pass interpret=True to run it in interpret mode")

  order = ("pallas", "reference") if backend.has_gpu() else ("reference", "pallas")
  checks = {"pallas": pallas_ok, "reference": lambda: None}
  chosen = backend.select_implementation(
      "quant_matmul", implementation, {name: checks[name] for name in order})
  if chosen == "pallas":
    from jaxsys.kernels.quant_matmul import pallas_gpu  # pylint: disable=g-import-not-at-top

    return pallas_gpu.quant_matmul_pallas(
        x_ND, packed_PF, scales_GF, mins_GF, bits=bits, group=group, block_config=block_config,
        interpret=bool(interpret) if interpret is not None else not backend.has_gpu())
  return reference.quant_matmul_reference(x_ND, packed_PF, scales_GF, mins_GF, bits=bits,
                                          group=group)
