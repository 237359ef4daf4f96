"""Grouped matmul references: `lax.ragged_dot` and a dense per-group einsum."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def grouped_matmul_reference(
    lhs_ND: jax.Array, rhs_EDF: jax.Array, group_sizes_E: jax.Array
) -> jax.Array:
  """``out[n] = lhs[n] @ rhs[g(n)]`` for rows sorted by group: `jax.lax.ragged_dot`.

  Rows past ``sum(group_sizes_E)`` belong to no group and give zeros.
  """
  return jax.lax.ragged_dot(
      lhs_ND, rhs_EDF, group_sizes_E.astype(jnp.int32),
      precision=jax.lax.Precision.HIGHEST,
      preferred_element_type=jnp.float32,
  ).astype(lhs_ND.dtype)


def group_ids(group_sizes_E: jax.Array, num_rows: int) -> jax.Array:
  """``[N]`` int32 group of each row (E for rows past the last group)."""
  ends_E = jnp.cumsum(group_sizes_E.astype(jnp.int32))
  return jnp.searchsorted(ends_E, jnp.arange(num_rows, dtype=jnp.int32), side="right").astype(jnp.int32)


def grouped_matmul_dense(
    lhs_ND: jax.Array, rhs_EDF: jax.Array, group_sizes_E: jax.Array
) -> jax.Array:
  """Every row against every group's matrix, then a one-hot pick: the obvious baseline."""
  E = rhs_EDF.shape[0]
  g_N = group_ids(group_sizes_E, lhs_ND.shape[0])
  hi = jax.lax.Precision.HIGHEST  # float32 stays float32 (no TF32 on GPUs)
  all_NEF = jnp.einsum("nd,edf->nef", lhs_ND, rhs_EDF, preferred_element_type=jnp.float32,
                       precision=hi)
  pick_NE = jax.nn.one_hot(g_N, E, dtype=jnp.float32)
  return jnp.einsum("nef,ne->nf", all_NEF, pick_NE, precision=hi).astype(lhs_ND.dtype)
