"""The tolerance rule, comparison helpers and the no-recompile assertion."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsys._src import testing


def test_tolerance_by_dtype_and_length():
  assert testing.tolerance(jnp.float32) == (1e-6, 1e-6)
  assert testing.tolerance(jnp.bfloat16, n=100).atol == pytest.approx(8e-2)
  assert testing.tolerance(np.float64, n=4).rtol == pytest.approx(2e-12)
  assert testing.tolerance(jnp.int32) == (0.0, 0.0)
  # tolerances order by precision
  assert (testing.tolerance(jnp.float64).atol < testing.tolerance(jnp.float32).atol
          < testing.tolerance(jnp.float16).atol < testing.tolerance(jnp.bfloat16).atol)
  with pytest.raises(ValueError, match="n \\(reduction length\\) must be >= 1"):
    testing.tolerance(jnp.float32, n=0)
  with pytest.raises(ValueError, match="no tolerance for complex64"):
    testing.tolerance(jnp.complex64)


def test_assert_allclose_uses_the_tolerance():
  x = np.ones(4, np.float32)
  testing.assert_allclose(x + 5e-7, x)  # inside f32 tolerance
  with pytest.raises(AssertionError):
    testing.assert_allclose(x + 1e-4, x)
  # a 10000-term reduction earns sqrt(10000) = 100x the slack
  testing.assert_allclose(x + 1e-4, x, n=10000)
  with pytest.raises(AssertionError, match="shapes differ"):
    testing.assert_allclose(np.ones(3), np.ones(4))
  # bfloat16 values are compared in float64, with bf16 tolerance
  testing.assert_allclose(jnp.ones(3, jnp.bfloat16) * 1.004, np.ones(3))


def test_trees_and_reference():
  ref = lambda x: {"a": x * 2, "b": (x.sum(),)}  # noqa: E731
  good = lambda x: {"a": x + x, "b": (jnp.sum(x),)}  # noqa: E731
  bad = lambda x: {"a": x * 2, "b": (x.sum() + 1,)}  # noqa: E731
  x = jnp.arange(5, dtype=jnp.float32)
  out = testing.assert_matches_reference(good, ref, x, n=5)
  assert float(out["b"][0]) == 10.0
  with pytest.raises(AssertionError, match=r"\['b'\]\[0\]"):
    testing.assert_matches_reference(bad, ref, x, n=5)


def test_compiles_once_passes_for_a_shape_stable_function():
  @jax.jit
  def f(x, idx):
    return x[idx] * 2

  x = jnp.ones((8, 3), jnp.float32)
  idx = jnp.array([0, 7, 3])
  out = testing.assert_compiles_once(f, x, idx)
  np.testing.assert_array_equal(out, np.full((3, 3), 2.0, np.float32))


@functools.partial(jax.jit, static_argnums=(0,))
def _scaled(scale, x):
  return x * scale


def test_compiles_once_catches_a_value_made_static():
  # An array value turned into a static argument: each new value recompiles.
  def f(x):
    return _scaled(float(x[0]), x)

  with pytest.raises(AssertionError, match="compiled 1 more time"):
    testing.assert_compiles_once(f, jnp.ones(3, jnp.float32))


def test_compiles_once_catches_a_jit_made_per_call():
  def f(x):
    return jax.jit(lambda y: y + 1)(x)  # a new jit every call: retraced

  with pytest.raises(AssertionError, match="compiled 1 more time"):
    testing.assert_compiles_once(f, jnp.ones(3, jnp.float32))


def test_compiles_once_catches_value_dependent_shapes():
  double = jax.jit(lambda y: y * 2)

  def f(x):
    n = int(abs(float(x[0])) * 100) + 1  # the output length depends on a value
    return double(jnp.zeros(n, jnp.float32))

  with pytest.raises(AssertionError, match="more time"):
    testing.assert_compiles_once(f, jnp.ones(3, jnp.float32))
