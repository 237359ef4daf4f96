"""Grouped matmul: Pallas kernel and references against a per-row numpy loop."""

import hypothesis
import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsys._src import backend, testing
from jaxsys.kernels.grouped_matmul import (
    BlockConfig,
    grouped_matmul,
    grouped_matmul_dense,
    grouped_matmul_reference,
)
from jaxsys.kernels.grouped_matmul.pallas_gpu import work_items


def numpy_gmm(x, w, sizes):
  """Row by row: find the row's group, multiply by that group's matrix."""
  out = np.zeros((x.shape[0], w.shape[2]), np.float64)
  ends = np.cumsum(sizes)
  for n in range(x.shape[0]):
    g = int(np.searchsorted(ends, n, side="right"))
    if g < len(sizes):
      out[n] = x[n].astype(np.float64) @ w[g].astype(np.float64)
  return out


def case(seed, N=100, D=48, F=40, sizes=(10, 0, 37, 23, 20), dtype=np.float32):
  rng = np.random.default_rng(seed)
  x = rng.standard_normal((N, D)).astype(dtype)
  w = rng.standard_normal((len(sizes), D, F)).astype(dtype)
  return x, w, np.asarray(sizes, np.int32)


class GroupedMatmulTest:
  INTERPRET = False
  CONFIG = BlockConfig(16, 16, 16)

  def setup_method(self):
    if not self.INTERPRET and not backend.has_gpu():
      pytest.skip("compiled Pallas GPU kernel needs a GPU")

  def run(self, x, w, sizes, cfg=None):
    return grouped_matmul(jnp.asarray(x), jnp.asarray(w), jnp.asarray(sizes),
                          implementation="pallas", interpret=self.INTERPRET or None,
                          block_config=cfg or self.CONFIG)

  def test_golden_tiny_case(self):
    # rows [1], [2], [3]; groups of sizes 1 and 2 with 1x1 matrices [10] and [100]:
    # row 0 -> 1 * 10 = 10; rows 1, 2 -> 2 * 100 = 200, 3 * 100 = 300.
    x = np.array([[1.0], [2.0], [3.0]], np.float32)
    w = np.array([[[10.0]], [[100.0]]], np.float32)
    out = self.run(x, w, np.array([1, 2], np.int32))
    np.testing.assert_array_equal(np.asarray(out)[:, 0], [10.0, 200.0, 300.0])

  def test_matches_numpy_with_empty_groups_and_uncovered_rows(self):
    x, w, sizes = case(0)  # sizes sum to 90 of 100 rows; group 1 is empty
    out = self.run(x, w, sizes)
    testing.assert_allclose(out, numpy_gmm(x, w, sizes), dtype=jnp.float32, n=48)
    assert np.all(np.asarray(out)[90:] == 0)

  def test_gradients_match_ragged_dot(self):
    x, w, sizes = map(jnp.asarray, case(1))
    loss = lambda f: lambda x, w: jnp.sum(f(x, w) ** 2)  # noqa: E731
    got = jax.grad(loss(lambda x, w: self.run(x, w, sizes)), argnums=(0, 1))(x, w)
    want = jax.grad(loss(lambda x, w: grouped_matmul_reference(x, w, sizes)), argnums=(0, 1))(x, w)
    testing.assert_trees_allclose(got, want, n=48 * 40 * 4)

  def test_bfloat16(self):
    x, w, sizes = case(2, dtype=np.float32)
    xb, wb = jnp.asarray(x, jnp.bfloat16), jnp.asarray(w, jnp.bfloat16)
    out = self.run(xb, wb, sizes)
    ref = numpy_gmm(np.asarray(xb, np.float32), np.asarray(wb, np.float32), sizes)
    testing.assert_allclose(out, ref, dtype=jnp.bfloat16, n=48, scale=4)


class TestInterpret(GroupedMatmulTest):
  INTERPRET = True


class TestCompiled(GroupedMatmulTest):
  INTERPRET = False


def test_work_items_cover_every_row_once():
  sizes = jnp.asarray([5, 0, 20, 3, 12], jnp.int32)
  group, tile, valid = map(np.asarray, work_items(sizes, 48, 16))
  covered = {}
  ends = np.cumsum(sizes)
  starts = ends - np.asarray(sizes)
  for g, t, v in zip(group, tile, valid):
    if v:
      for r in range(t * 16, t * 16 + 16):
        if starts[g] <= r < ends[g]:
          covered[r] = covered.get(r, 0) + 1
  assert covered == {r: 1 for r in range(40)}
  assert len(group) == 48 // 16 + 5


@hypothesis.settings(deadline=None, max_examples=20)
@hypothesis.given(seed=st.integers(0, 10**6), E=st.sampled_from([1, 4]),
                  N=st.sampled_from([0, 1, 33]))
def test_references_match_numpy_property(seed, E, N):
  rng = np.random.default_rng(seed)
  cuts = np.sort(rng.integers(0, N + 1, size=E - 1)) if E > 1 else np.zeros(0, int)
  sizes = np.diff(np.concatenate([[0], cuts, [N]])).astype(np.int32)
  x = rng.standard_normal((N, 8)).astype(np.float32)
  w = rng.standard_normal((E, 8, 5)).astype(np.float32)
  want = numpy_gmm(x, w, sizes)
  for f in (grouped_matmul_reference, grouped_matmul_dense):
    testing.assert_allclose(f(jnp.asarray(x), jnp.asarray(w), jnp.asarray(sizes)), want, n=8)


def test_default_compiles_once_and_is_ragged_dot_on_cpu():
  x, w, sizes = map(jnp.asarray, case(3))
  out = testing.assert_compiles_once(jax.jit(grouped_matmul), x, w, sizes)
  if not backend.has_gpu():
    np.testing.assert_array_equal(out, grouped_matmul_reference(x, w, sizes))


@pytest.mark.skipif(backend.has_gpu(), reason="checks the CPU refusal")
def test_named_pallas_without_gpu_raises():
  x, w, sizes = map(jnp.asarray, case(4))
  with pytest.raises(backend.ImplementationError, match="pass interpret=True"):
    grouped_matmul(x, w, sizes, implementation="pallas")


@pytest.mark.parametrize("args, error, match", [
    ((np.zeros((4, 3, 1), np.float32), np.zeros((2, 3, 5), np.float32), np.zeros(2, np.int32)), ValueError, "lhs_ND: expected 2 dims"),
    ((np.zeros((4, 3), np.float32), np.zeros((2, 4, 5), np.float32), np.zeros(2, np.int32)), ValueError, "rhs_EDF: expected shape \\[groups, in=3, out\\]"),
    ((np.zeros((4, 3), np.float32), np.zeros((2, 3, 5), np.float32), np.zeros(3, np.int32)), ValueError, "group_sizes_E: expected shape \\(2,\\)"),
    ((np.zeros((4, 3), np.float32), np.zeros((2, 3, 5), np.float32), np.zeros(2, np.float32)), TypeError, "group_sizes_E: expected an integer dtype"),
    ((np.zeros((4, 3), np.float32), np.zeros((2, 3, 5), np.float16), np.zeros(2, np.int32)), TypeError, "rhs_EDF: expected the dtype of lhs_ND"),
])
def test_bad_inputs_are_named(args, error, match):
  with pytest.raises(error, match=match):
    grouped_matmul(*map(jnp.asarray, args))


def test_block_config_validates():
  with pytest.raises(ValueError, match="block_k must be a power of two >= 16, given 8"):
    BlockConfig(block_k=8)
