"""Sparse decode attention: one query per sequence over sinks + window + selected tokens.

The public entry point. It checks the inputs (at trace time, from static shapes),
chooses an implementation and calls it:

* ``"pallas"``: the Triton kernel in `pallas_gpu.py`; runs on a GPU, or anywhere
  with ``interpret=True`` (slow, for tests);
* ``"reference"``: plain JAX in `reference.py` (gathers the selected rows, then one
  masked softmax);
* ``None``: the best that can run here (the kernel on a GPU, else the reference).

Naming an implementation that cannot run raises `ImplementationError`; it never
falls back silently. A list of names falls back in order with a warning.

>>> import jax.numpy as jnp
>>> from jaxsys.kernels.sparse_decode_attention import sparse_decode_attention
>>> q = jnp.ones((1, 9, 64)); k = v = jnp.ones((1, 3, 128, 64))
>>> idx = jnp.full((1, 3, 8), -1, jnp.int32)          # nothing selected
>>> sparse_decode_attention(q, k, v, idx, jnp.array([100]), num_sinks=4, window=16).shape
(1, 9, 64)
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp

from jaxsys._src import backend
from jaxsys.kernels.sparse_decode_attention import reference
from jaxsys.kernels.sparse_decode_attention.config import BlockConfig

IMPLEMENTATIONS = ("pallas", "reference")


def _check(q_BHD, k_BKTD, v_BKTD, indices_BKS, lengths_B, num_sinks, window):
  if q_BHD.ndim != 3:
    raise ValueError(f"q_BHD: expected 3 dims [batch, q_heads, head_dim], given shape {q_BHD.shape}")
  B, H, D = q_BHD.shape
  for name, x in (("k_BKTD", k_BKTD), ("v_BKTD", v_BKTD)):
    if x.ndim != 4 or x.shape[0] != B or x.shape[3] != D:
      raise ValueError(
          f"{name}: expected shape [batch={B}, kv_heads, seq, head_dim={D}], given {x.shape}"
      )
  if k_BKTD.shape != v_BKTD.shape:
    raise ValueError(f"v_BKTD: expected the shape of k_BKTD {k_BKTD.shape}, given {v_BKTD.shape}")
  K = k_BKTD.shape[1]
  if H % K:
    raise ValueError(
        f"q_BHD: query heads ({H}) must be a multiple of the KV heads of k_BKTD ({K})"
    )
  if indices_BKS.ndim != 3 or indices_BKS.shape[:2] != (B, K):
    raise ValueError(
        f"indices_BKS: expected shape [batch={B}, kv_heads={K}, selected], given {indices_BKS.shape}"
    )
  if not jnp.issubdtype(indices_BKS.dtype, jnp.integer):
    raise TypeError(f"indices_BKS: expected an integer dtype, given {indices_BKS.dtype}")
  if lengths_B.shape != (B,) or not jnp.issubdtype(lengths_B.dtype, jnp.integer):
    raise ValueError(
        f"lengths_B: expected integer shape ({B},), given {lengths_B.dtype} {lengths_B.shape}"
    )
  for name, x in (("q_BHD", q_BHD), ("k_BKTD", k_BKTD), ("v_BKTD", v_BKTD)):
    if not jnp.issubdtype(x.dtype, jnp.floating):
      raise TypeError(f"{name}: expected a floating dtype, given {x.dtype}")
  if not isinstance(num_sinks, int) or num_sinks < 0:
    raise ValueError(f"num_sinks: expected an int >= 0, given {num_sinks!r}")
  if not isinstance(window, int) or window < 0:
    raise ValueError(f"window: expected an int >= 0, given {window!r}")


def sparse_decode_attention(
    q_BHD: jax.Array,
    k_BKTD: jax.Array,
    v_BKTD: jax.Array,
    indices_BKS: jax.Array,
    lengths_B: jax.Array,
    *,
    num_sinks: int,
    window: int,
    scale: float | None = None,
    implementation: str | Sequence[str] | None = None,
    interpret: bool | None = None,
    block_config: BlockConfig | None = None,
) -> jax.Array:
  """Decode attention over sinks, a recent window and a per-head selected list.

  Positions attended by sequence b, KV head k (shared by its GQA query heads):
  ``[0, num_sinks)``, ``[length_b - window, length_b)`` and each
  ``indices_BKS[b, k, i]`` with ``num_sinks <= i < length_b - window`` (other
  entries, such as -1 padding, are ignored, so nothing counts twice). The dense
  and selected parts are merged by log-sum-exp, so the result equals one softmax
  over their union (ClusterKV, arXiv 2412.03213, Sec. 4: attention over sink +
  selected + recent tokens).

  Args:
    q_BHD: one query per sequence and query head.
    k_BKTD, v_BKTD: the cache, stored once per KV head.
    indices_BKS: selected positions per (sequence, KV head).
    lengths_B: valid tokens per sequence.
    num_sinks: leading positions always attended.
    window: trailing positions always attended.
    scale: score scale, default ``1/sqrt(head_dim)``.
    implementation: "pallas", "reference", a list of them, or None (best here).
    interpret: run the Pallas kernel in interpret mode (default: True exactly when
      there is no GPU and "pallas" was named).
    block_config: tiling of the Pallas kernel.

  Returns:
    ``o_BHD`` in the dtype of `q_BHD`. Matches the reference to float32 rounding.
  """
  _check(q_BHD, k_BKTD, v_BKTD, indices_BKS, lengths_B, num_sinks, window)

  def pallas_ok():
    if backend.has_gpu() or interpret:
      return None
    return (
        f"the Pallas GPU kernel needs a GPU (backend is {backend.platform()});"
        " pass interpret=True to run it in interpret mode"
    )

  order = ("pallas", "reference") if backend.has_gpu() else ("reference", "pallas")
  candidates = {"pallas": pallas_ok, "reference": lambda: None}
  candidates = {name: candidates[name] for name in order}
  chosen = backend.select_implementation("sparse_decode_attention", implementation, candidates)
  if chosen == "pallas":
    from jaxsys.kernels.sparse_decode_attention import pallas_gpu  # pylint: disable=g-import-not-at-top

    return pallas_gpu.sparse_decode_attention_pallas(
        q_BHD, k_BKTD, v_BKTD, indices_BKS, lengths_B,
        num_sinks=num_sinks, window=window, scale=scale, block_config=block_config,
        interpret=bool(interpret) if interpret is not None else not backend.has_gpu(),
    )
  return _reference_jit(
      q_BHD, k_BKTD, v_BKTD, indices_BKS, lengths_B,
      num_sinks=num_sinks, window=window, scale=scale,
  )


_reference_jit = jax.jit(
    reference.sparse_decode_attention_reference,
    static_argnames=("num_sinks", "window", "scale"),
)
