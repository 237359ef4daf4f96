"""Small helpers shared by the Pallas (Triton) kernels in `jaxsys.kernels`."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.experimental.pallas import triton as plgpu


def is_pow2(n: int) -> bool:
  """Whether `n` is a positive power of two (Triton tensor shapes must be)."""
  return n > 0 and n & (n - 1) == 0


def next_pow2(n: int) -> int:
  """The smallest power of two >= `n` (1 for n <= 1)."""
  return 1 << max(0, (n - 1).bit_length())


def round_up(n: int, m: int) -> int:
  """`n` rounded up to a multiple of `m`."""
  return -(-n // m) * m


def triton_dot(a, b, *, trans_b: bool = False, allow_tf32: bool | None = None):
  """2-D matmul inside a Triton kernel, float32 accumulation.

  `pl.dot` is gone from JAX >= 0.11; the Triton module's own `dot` is used where
  it exists, else `lax.dot_general`, which the Triton lowering also accepts.
  ``allow_tf32=False`` keeps float32 inputs in float32.
  """
  dot = getattr(plgpu, "dot", None)
  if dot is not None:
    return dot(a, b, trans_b=trans_b, allow_tf32=allow_tf32)
  dims = (((1,), (1 if trans_b else 0,)), ((), ()))
  precision = jax.lax.Precision.HIGHEST if allow_tf32 is False else None
  return jax.lax.dot_general(a, b, dims, precision=precision, preferred_element_type=jnp.float32)
