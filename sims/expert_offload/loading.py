"""HOBBIT's token-level dynamic expert loading: gate weights to precision classes.

HOBBIT (arXiv 2411.01433; ``papers/moe.md`` 1.1 (1)) uses the normalised gate
weight as a proxy for an expert's importance. The top-K experts of a token are
sorted by gate weight, descending; expert i gets the unimportance score
``s_i = sum_{j<i} g_j`` (so ``s_0 = 0``: the top-1 expert is always high), and
on a cache miss it is loaded at high precision when ``s <= T1``, at low precision
when ``T1 < s <= T2``, and skipped when ``s > T2``. Mixtral settings: T1 = 0.6,
T2 = 0.9 (about 67% high, 30% low, 3% skip in the paper).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from jaxsys.moe import routing

T1_MIXTRAL = 0.6  # papers/moe.md 1.1 (1) [V]
T2_MIXTRAL = 0.9  # papers/moe.md 1.1 (1) [V]


@functools.partial(jax.jit, static_argnames=("t1", "t2"))
def precision_classes(ids_NLK: jax.Array, gates_NLK: jax.Array, t1: float = T1_MIXTRAL,
                      t2: float = T2_MIXTRAL) -> tuple[jax.Array, jax.Array]:
  """Sorts each (token, layer)'s experts by gate weight and classes them.

  The classes are `jaxsys.moe.routing.hobbit_score_classes` of the gates; this
  only lays them out per (token, layer) in descending gate order, as the cache
  simulator consumes them.

  Args:
    ids_NLK: [N, L, K] int expert ids.
    gates_NLK: [N, L, K] float gate weights of those experts (renormalised to
      sum to 1 over K, as the paper's scores are).
    t1, t2: the thresholds (``0 <= t1 <= t2``, static).

  Returns:
    ``(ids_NLK, precision_NLK)``: ids in descending gate order and their
    classes HIGH (0) / LOW (1) / SKIP (2), both int32.

  >>> import jax.numpy as jnp
  >>> ids, cls = precision_classes(jnp.array([[[3, 5]]]), jnp.array([[[0.25, 0.75]]]))
  >>> ids.tolist(), cls.tolist()   # s = 0 for expert 5; s = 0.75 in (0.6, 0.9] for 3
  ([[[5, 3]]], [[[0, 1]]])
  """
  N, L, K = ids_NLK.shape
  gates = gates_NLK.astype(jnp.float32)
  classes = routing.hobbit_score_classes(
      gates.reshape(N * L, K), t1=float(t1), t2=float(t2)).classes_TK.reshape(N, L, K)
  order = jnp.argsort(-gates, axis=-1, stable=True)
  ids = jnp.take_along_axis(ids_NLK.astype(jnp.int32), order, axis=-1)
  return ids, jnp.take_along_axis(classes, order, axis=-1)
