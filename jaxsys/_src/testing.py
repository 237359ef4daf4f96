"""Test helpers shared by every technique's tests.

* `tolerance(dtype, n)`: the one tolerance rule, keyed by dtype and reduction length.
* `assert_allclose` / `assert_trees_allclose` / `assert_matches_reference`: compare
  with that tolerance, reporting where and by how much values differ.
* `assert_compiles_once(fn, *args)`: a second call with fresh values of the same
  shapes must not trace or compile again.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np


class Tolerance(NamedTuple):
  atol: float
  rtol: float


# Per-element tolerance for one rounding of each dtype; scaled by sqrt(n) for a
# reduction of n terms (rounding errors of a sum grow like a random walk).
_BASE = {
    np.dtype(np.float64): 1e-12,
    np.dtype(np.float32): 1e-6,
    np.dtype(np.float16): 1e-3,
    np.dtype(jnp.bfloat16): 8e-3,
}


def tolerance(dtype: Any, n: int = 1) -> Tolerance:
  """Absolute and relative tolerance for values of `dtype` after an n-term sum.

  Args:
    dtype: the dtype the computation ran in (float64/32/16, bfloat16; integer and
      bool dtypes get zero tolerance).
    n: the length of the longest reduction behind each output (1 for elementwise).

  Returns:
    `Tolerance(atol, rtol)`, both the dtype's base times ``sqrt(n)``.
  """
  if n < 1:
    raise ValueError(f"n (reduction length) must be >= 1, given {n}")
  dt = np.dtype(dtype)
  if dt.kind in "iub":
    return Tolerance(0.0, 0.0)
  if dt not in _BASE:
    raise ValueError(
        f"dtype: no tolerance for {dt}; known: {sorted(str(d) for d in _BASE)}"
    )
  t = _BASE[dt] * math.sqrt(n)
  return Tolerance(t, t)


def assert_allclose(
    actual: Any,
    desired: Any,
    *,
    dtype: Any = None,
    n: int = 1,
    scale: float = 1.0,
    err_msg: str = "",
) -> None:
  """Asserts `actual` matches `desired` within `tolerance(dtype, n) * scale`.

  Both are compared in float64. `dtype` defaults to the dtype of `actual`.
  `scale` widens the tolerance for a known approximation; keep it near 1.
  """
  a = np.asarray(actual)
  d = np.asarray(desired)
  if a.shape != d.shape:
    raise AssertionError(
        f"{err_msg + ': ' if err_msg else ''}shapes differ: actual {a.shape},"
        f" desired {d.shape}"
    )
  tol = tolerance(dtype if dtype is not None else a.dtype, n)
  np.testing.assert_allclose(
      a.astype(np.float64) if a.dtype.kind in "fc" or a.dtype == jnp.bfloat16 else a,
      d.astype(np.float64) if d.dtype.kind in "fc" or d.dtype == jnp.bfloat16 else d,
      atol=tol.atol * scale,
      rtol=tol.rtol * scale,
      err_msg=err_msg,
  )


def assert_trees_allclose(
    actual: Any, desired: Any, *, dtype: Any = None, n: int = 1,
    scale: float = 1.0, err_msg: str = "",
) -> None:
  """`assert_allclose` over two pytrees of the same structure."""
  a_leaves, a_tree = jax.tree_util.tree_flatten_with_path(actual)
  d_leaves, d_tree = jax.tree_util.tree_flatten(desired)
  if a_tree.num_leaves != d_tree.num_leaves:
    raise AssertionError(
        f"{err_msg + ': ' if err_msg else ''}pytrees differ: actual"
        f" {jax.tree_util.tree_structure(actual)}, desired {d_tree}"
    )
  for (path, a), d in zip(a_leaves, d_leaves):
    where = jax.tree_util.keystr(path)
    assert_allclose(
        a, d, dtype=dtype, n=n, scale=scale,
        err_msg=f"{err_msg} at {where}" if err_msg else f"at {where}",
    )


def assert_matches_reference(
    fn: Callable[..., Any],
    reference: Callable[..., Any],
    *args: Any,
    dtype: Any = None,
    n: int = 1,
    scale: float = 1.0,
    **kwargs: Any,
) -> Any:
  """Calls `fn` and `reference` on the same inputs and compares the outputs.

  Returns:
    The output of `fn`, for further checks.
  """
  out = fn(*args, **kwargs)
  ref = reference(*args, **kwargs)
  assert_trees_allclose(
      out, ref, dtype=dtype, n=n, scale=scale,
      err_msg=f"{getattr(fn, '__name__', fn)} vs"
      f" {getattr(reference, '__name__', reference)}",
  )
  return out


@contextlib.contextmanager
def count_lowerings() -> Iterator[list[str]]:
  """Counts jit lowerings (trace + lower to MLIR) inside the `with` block.

  Yields a list that receives one entry per lowering. Lowering happens on every
  jit cache miss, whether or not the persistent compilation cache then has the
  executable, so this counts recompiles even with that cache on.
  """
  events: list[str] = []
  watched = "/jax/core/compile/jaxpr_to_mlir_module_duration"

  def listener(event: str, duration: float, **_: Any) -> None:
    del duration
    if event == watched:
      events.append(event)

  jax.monitoring.register_event_duration_secs_listener(listener)
  try:
    yield events
  finally:
    jax.monitoring.unregister_event_duration_listener(listener)


def _fresh_like(x: Any, rng: np.random.Generator) -> Any:
  """A new value with the shape and dtype of array `x` (Python scalars kept)."""
  if not isinstance(x, (jax.Array, np.ndarray)):
    return x
  dt = np.dtype(x.dtype)
  shape = x.shape
  if dt == np.bool_:
    new = rng.random(shape) < 0.5
  elif dt.kind in "iu":
    # Stay inside the observed range, so indices remain valid.
    lo = int(np.min(x)) if x.size else 0
    hi = int(np.max(x)) if x.size else 0
    new = rng.integers(lo, hi + 1, size=shape)
  elif dt.kind == "c":
    new = rng.standard_normal(shape) + 1j * rng.standard_normal(shape)
  else:
    new = rng.standard_normal(shape)
  new = np.asarray(new).astype(dt)
  return jnp.asarray(new) if isinstance(x, jax.Array) else new


def assert_compiles_once(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
  """Asserts that calling `fn` again with new values of the same shapes compiles nothing.

  `fn` is called with `args`/`kwargs`, then with fresh random arrays of the same
  shapes and dtypes (integers stay in the range they had; Python scalars and
  keyword arguments that are not arrays, i.e. static settings, are kept). The
  second call must not trigger a single jit lowering.

  Returns:
    The output of the first call.
  """
  rng = np.random.default_rng(0)
  out = jax.block_until_ready(fn(*args, **kwargs))
  fresh_args, fresh_kwargs = jax.tree_util.tree_map(
      lambda x: _fresh_like(x, rng), (args, kwargs)
  )
  with count_lowerings() as lowerings:
    jax.block_until_ready(fn(*fresh_args, **fresh_kwargs))
  if lowerings:
    raise AssertionError(
        f"{getattr(fn, '__name__', fn)} compiled {len(lowerings)} more time(s)"
        " when called again with new values of the same shapes and dtypes;"
        " something that should be an array is static (a Python value, a"
        " static_argnums argument) or a jit is created anew per call"
    )
  return out
