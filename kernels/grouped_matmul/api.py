"""Grouped matmul: rows sorted by group, each group times its own matrix (MoE experts).

``out[n] = lhs[n] @ rhs[g(n)]`` where rows ``[sum(sizes[:g]), sum(sizes[:g+1]))``
belong to group g; rows past ``sum(sizes)`` give zeros (as `lax.ragged_dot`).

Implementations:

* ``"pallas"``: the Triton kernel in `pallas_gpu.py` (GPU, or ``interpret=True``),
  differentiable through its `custom_vjp`;
* ``"ragged_dot"``: `jax.lax.ragged_dot`, the reference;
* ``"dense"``: every row against every group, then a one-hot pick (the obvious
  baseline; E times the work);
* ``None``: the kernel on a GPU, else `ragged_dot`.

Naming one that cannot run raises `ImplementationError`, never falls back.

>>> import jax.numpy as jnp
>>> from jaxsys.kernels.grouped_matmul import grouped_matmul
>>> x = jnp.ones((5, 4)); w = jnp.stack([jnp.eye(4), 2 * jnp.eye(4)])
>>> grouped_matmul(x, w, jnp.array([2, 3]))[:, 0].tolist()
[1.0, 1.0, 2.0, 2.0, 2.0]
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp

from jaxsys._src import backend
from jaxsys.kernels.grouped_matmul import reference
from jaxsys.kernels.grouped_matmul.config import BlockConfig

IMPLEMENTATIONS = ("pallas", "ragged_dot", "dense")


def _check(lhs_ND, rhs_EDF, group_sizes_E):
  if lhs_ND.ndim != 2:
    raise ValueError(f"lhs_ND: expected 2 dims [rows, in], given shape {lhs_ND.shape}")
  if rhs_EDF.ndim != 3 or rhs_EDF.shape[1] != lhs_ND.shape[1]:
    raise ValueError(
        f"rhs_EDF: expected shape [groups, in={lhs_ND.shape[1]}, out], given {rhs_EDF.shape}")
  if group_sizes_E.shape != (rhs_EDF.shape[0],):
    raise ValueError(
        f"group_sizes_E: expected shape ({rhs_EDF.shape[0]},) (one size per group of"
        f" rhs_EDF), given {group_sizes_E.shape}")
  if not jnp.issubdtype(group_sizes_E.dtype, jnp.integer):
    raise TypeError(f"group_sizes_E: expected an integer dtype, given {group_sizes_E.dtype}")
  if lhs_ND.dtype != rhs_EDF.dtype:
    raise TypeError(
        f"rhs_EDF: expected the dtype of lhs_ND ({lhs_ND.dtype}), given {rhs_EDF.dtype}")
  if not jnp.issubdtype(lhs_ND.dtype, jnp.floating):
    raise TypeError(f"lhs_ND: expected a floating dtype, given {lhs_ND.dtype}")


def grouped_matmul(
    lhs_ND: jax.Array,
    rhs_EDF: jax.Array,
    group_sizes_E: jax.Array,
    *,
    implementation: str | Sequence[str] | None = None,
    interpret: bool | None = None,
    block_config: BlockConfig | None = None,
) -> jax.Array:
  """Grouped matmul of row-sorted `lhs_ND` with per-group `rhs_EDF`.

  Args:
    lhs_ND: rows sorted by group.
    rhs_EDF: one [D, F] matrix per group.
    group_sizes_E: rows per group (sum <= N).
    implementation: "pallas", "ragged_dot", "dense", a list, or None.
    interpret: run the Pallas kernel in interpret mode (CPU tests).
    block_config: tiling of the Pallas kernel.

  Returns:
    ``out_NF`` in the dtype of `lhs_ND`; matches `ragged_dot` to float32 rounding.
  """
  _check(lhs_ND, rhs_EDF, group_sizes_E)

  def pallas_ok():
    if backend.has_gpu() or interpret:
      return None
    return (f"the Pallas GPU kernel needs a GPU (backend is {backend.platform()});"
            " pass interpret=True to run it in interpret mode")

  order = ("pallas", "ragged_dot", "dense") if backend.has_gpu() else ("ragged_dot", "pallas", "dense")
  checks = {"pallas": pallas_ok, "ragged_dot": lambda: None, "dense": lambda: None}
  chosen = backend.select_implementation(
      "grouped_matmul", implementation, {name: checks[name] for name in order})
  if chosen == "pallas":
    from jaxsys.kernels.grouped_matmul import pallas_gpu  # pylint: disable=g-import-not-at-top

    return pallas_gpu.grouped_matmul_pallas(
        lhs_ND, rhs_EDF, group_sizes_E, block_config=block_config,
        interpret=bool(interpret) if interpret is not None else not backend.has_gpu())
  if chosen == "dense":
    return reference.grouped_matmul_dense(lhs_ND, rhs_EDF, group_sizes_E)
  return reference.grouped_matmul_reference(lhs_ND, rhs_EDF, group_sizes_E)
