"""Dequantising matmul reference: dequantise in float32, then one HIGHEST-precision dot."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxsys.moe.quant import dequantize_packed


def quant_matmul_reference(
    x_ND: jax.Array,
    packed_PF: jax.Array,
    scales_GF: jax.Array,
    mins_GF: jax.Array | None = None,
    *,
    bits: int,
    group: int,
) -> jax.Array:
  """``x_ND @ dequantize(packed, scales, mins)`` in float32 at HIGHEST precision.

  The weights are those `jaxsys.moe.quant.dequantize_packed` gives (layout in
  `jaxsys.moe.quant`); the result has the dtype of `x_ND`.
  """
  w_DF = dequantize_packed(packed_PF, scales_GF, mins_GF, bits=bits, group=group)
  out = jnp.dot(x_ND.astype(jnp.float32), w_DF, precision=jax.lax.Precision.HIGHEST,
                preferred_element_type=jnp.float32)
  return out.astype(x_ND.dtype)
