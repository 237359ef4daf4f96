"""MoE dispatch: token permutation, expert capacity, token dropping, the expert MLP.

Two ways to run every token through its experts (survey arXiv 2412.14219 Sec. 4,
"grouped GEMM dispatch" and "capacity"; jaxsys notes ``papers/moe.md`` 1.2):

* sort-based, dropless: `permute` sorts the T*K (token, slot) rows by expert,
  one grouped matmul per layer runs each expert on its contiguous rows
  (`jax.lax.ragged_dot`, or the Pallas grouped-matmul kernel), `unpermute`
  restores token order and sums the K outputs with their weights (MaxText
  ``permute``/``unpermute``);
* capacity-padded: each expert gets a fixed buffer of C rows (`capacity`); a
  row's place in it is its position among the rows routed to that expert
  (`token_positions`), and rows past C are dropped; then one batched einsum over
  the [E, C, D] buffers (MaxText ``dense_matmul``, Flaxformer scatter routers).
  Batch-prioritised routing (BPR) orders tokens by router confidence first, so
  the least confident tokens are the ones dropped (V-MoE, Flaxformer).

`expert_mlp` runs the whole expert layer with either, by name:

* ``"ragged_dot"``: `jax.lax.ragged_dot` on the sorted rows; exact, the reference;
* ``"capacity_einsum"``: [E, C, D] buffers and a batched einsum; may drop (the
  drop rate is returned);
* ``"pallas"``: `jaxsys.kernels.grouped_matmul` with ``implementation="pallas"``
  on the sorted rows.

On CPU the capacity path is far faster than ``ragged_dot``, which XLA lowers to a
dense all-experts computation (measured in ``papers/moe.md`` 2); the capacity
path matches ``ragged_dot`` to float32 rounding when nothing drops.

Shape letters: T tokens, K slots per token, N = T*K rows, E experts, D model
width, F expert hidden width, C capacity (rows per expert).

>>> import jax, jax.numpy as jnp
>>> from jaxsys.moe import dispatch, routing
>>> x = jnp.ones((6, 4)); r = routing.route_topk(jnp.zeros((6, 3)), k=2)
>>> w_in = jnp.ones((3, 4, 8)) / 4; w_out = jnp.ones((3, 8, 4)) / 8
>>> y, drop = dispatch.expert_mlp(x, r, w_in, w_out, backend="capacity_einsum",
...                               capacity_factor=1.0, activation="relu")
>>> y.shape, float(drop)   # experts 0 and 1 chosen by all 6 tokens, C = 4
((6, 4), 0.3333333432674408)
"""

from __future__ import annotations

import functools
import importlib
import math
from collections.abc import Callable

import jax
import jax.numpy as jnp

from jaxsys._src import backend as backend_lib
from jaxsys._src.backend import ImplementationError
from jaxsys.moe.routing import Routing

BACKENDS = ("capacity_einsum", "ragged_dot", "pallas")

ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "gelu": functools.partial(jax.nn.gelu, approximate=False),
    "gelu_tanh": functools.partial(jax.nn.gelu, approximate=True),
    "silu": jax.nn.silu,
    "relu": jax.nn.relu,
}

_PALLAS_MODULE = "jaxsys.kernels.grouped_matmul.api"
_HIGHEST = jax.lax.Precision.HIGHEST


# ---------------------------------------------------------------------------- capacity


def capacity(num_tokens: int, num_experts: int, k: int,
             capacity_factor: float | None) -> int | None:
  """Rows each expert's buffer holds: ``C = max(ceil(T*K/E) * cf, cf)``, truncated.

  MaxText's rule (``generate_masks``): ``int(max(ceil(T*K/E) * cf, cf))``; the outer
  ``max`` keeps C from being 0 when ``T*K < E``. This also clamps C to at least 1
  (MaxText gives 0 for ``cf < 1`` with ``ceil(T*K/E) * cf < 1``, which would drop
  every token). ``cf = -1`` or None means dropless (MaxText's sentinel): no
  capacity, returns None.

  Args:
    num_tokens: T.
    num_experts: E.
    k: slots per token K.
    capacity_factor: cf > 0, or -1 / None for dropless.

  Returns:
    C >= 1, or None for dropless.

  >>> capacity(8, 4, 2, 1.25), capacity(1, 8, 2, 1.5), capacity(8, 4, 2, None)
  (5, 1, None)
  """
  for name, v in (("num_tokens", num_tokens), ("num_experts", num_experts), ("k", k)):
    if not isinstance(v, int) or isinstance(v, bool) or v < 1:
      raise ValueError(f"{name}: expected an int >= 1, given {v!r}")
  if capacity_factor is None:
    return None
  if (isinstance(capacity_factor, bool) or not isinstance(capacity_factor, (int, float))
      or not math.isfinite(capacity_factor)):
    raise ValueError(
        f"capacity_factor: expected a number > 0, or -1 / None for dropless, given"
        f" {capacity_factor!r}")
  if capacity_factor == -1:
    return None
  if capacity_factor <= 0:
    raise ValueError(
        f"capacity_factor: expected > 0, or -1 / None for dropless, given {capacity_factor!r}")
  c = int(max(math.ceil(num_tokens * k / num_experts) * capacity_factor, capacity_factor))
  return max(c, 1)


# ---------------------------------------------------------------------------- checks


def _check_slots(experts_TK, mask_TK, priority_T):
  if experts_TK.ndim != 2 or not jnp.issubdtype(experts_TK.dtype, jnp.integer):
    raise ValueError(
        f"experts_TK: expected integer [tokens, k], given {experts_TK.dtype} {experts_TK.shape}")
  if mask_TK is None:
    mask_TK = jnp.ones(experts_TK.shape, bool)
  if mask_TK.shape != experts_TK.shape:
    raise ValueError(
        f"mask_TK: expected the shape of experts_TK {experts_TK.shape}, given {mask_TK.shape}")
  if priority_T is not None and priority_T.shape != experts_TK.shape[:1]:
    raise ValueError(
        f"priority_T: expected shape ({experts_TK.shape[0]},) (tokens of experts_TK), given"
        f" {priority_T.shape}")
  return mask_TK.astype(bool)


def _check_num_experts(num_experts):
  if not isinstance(num_experts, int) or isinstance(num_experts, bool) or num_experts < 1:
    raise ValueError(f"num_experts: expected an int >= 1, given {num_experts!r}")


# ------------------------------------------------------------------- permute/unpermute


@functools.partial(jax.jit, static_argnames=("num_experts",))
def permute(
    x_TD: jax.Array,
    experts_TK: jax.Array,
    mask_TK: jax.Array | None = None,
    *,
    num_experts: int,
) -> tuple[jax.Array, jax.Array, jax.Array]:
  """Sorts the T*K (token, slot) rows by expert, for a grouped matmul.

  Row ``n = t*K + k`` of the flattened slots goes to expert ``experts_TK[t, k]``;
  a stable sort by expert keeps token order within each expert. Unused slots
  (``mask_TK`` False) sort after every expert and are not counted in
  ``group_sizes_E``, so a grouped matmul gives them zeros (MaxText ``permute``).

  Args:
    x_TD: token activations.
    experts_TK: expert of each slot, in ``[0, num_experts)``.
    mask_TK: used slots (default all).
    num_experts: E.

  Returns:
    ``(x_sorted_ND, group_sizes_E, order_N)``: ``x_sorted_ND[i] = x_TD[order_N[i] // K]``,
    int32 rows per expert, and int32 ``order_N`` (sorted row i is flattened slot
    ``order_N[i]``), which `unpermute` takes back.
  """
  _check_num_experts(num_experts)
  mask_TK = _check_slots(experts_TK, mask_TK, None)
  if x_TD.ndim != 2 or x_TD.shape[0] != experts_TK.shape[0]:
    raise ValueError(
        f"x_TD: expected shape [tokens={experts_TK.shape[0]}, D] (tokens of experts_TK),"
        f" given {x_TD.shape}")
  K = experts_TK.shape[1]
  key_N = jnp.where(mask_TK, experts_TK.astype(jnp.int32), num_experts).reshape(-1)
  order_N = jnp.argsort(key_N, stable=True).astype(jnp.int32)
  x_sorted_ND = x_TD[order_N // K]
  group_sizes_E = jnp.bincount(key_N, length=num_experts + 1)[:num_experts].astype(jnp.int32)
  return x_sorted_ND, group_sizes_E, order_N


@jax.jit
def unpermute(y_ND: jax.Array, order_N: jax.Array, weights_TK: jax.Array) -> jax.Array:
  """Inverse of `permute` plus the weighted combine: ``y_TD[t] = sum_k w[t, k] y[t, k]``.

  Sorted row i is flattened slot ``order_N[i] = t*K + k``; the sum runs in float32
  and the result has the dtype of `y_ND` (MaxText ``unpermute``).

  Args:
    y_ND: expert outputs in sorted order, N = T*K.
    order_N: from `permute`.
    weights_TK: combine weights (0 for unused slots).

  Returns:
    ``y_TD``.
  """
  if weights_TK.ndim != 2:
    raise ValueError(f"weights_TK: expected 2 dims [tokens, k], given shape {weights_TK.shape}")
  T, K = weights_TK.shape
  if y_ND.ndim != 2 or y_ND.shape[0] != T * K:
    raise ValueError(
        f"y_ND: expected shape [T*K={T * K}, D] (T, K from weights_TK {weights_TK.shape}),"
        f" given {y_ND.shape}")
  if order_N.shape != (T * K,):
    raise ValueError(f"order_N: expected shape ({T * K},) (from permute), given {order_N.shape}")
  y_flat_ND = jnp.zeros_like(y_ND).at[order_N].set(y_ND, unique_indices=True)
  return _combine(y_flat_ND.reshape(T, K, y_ND.shape[1]), weights_TK)


def _combine(y_TKD: jax.Array, weights_TK: jax.Array) -> jax.Array:
  y_TD = jnp.einsum("tkd,tk->td", y_TKD.astype(jnp.float32), weights_TK.astype(jnp.float32),
                    precision=_HIGHEST)
  return y_TD.astype(y_TKD.dtype)


# -------------------------------------------------------------------- token dropping


def _positions(experts_TK, mask_TK, num_experts, priority_T):
  """1-based position of each used slot among the slots routed to its expert."""
  T, K = experts_TK.shape
  if priority_T is None:
    tokens_T = jnp.arange(T, dtype=jnp.int32)
  else:  # most confident token first; ties keep token order
    tokens_T = jnp.argsort(-priority_T.astype(jnp.float32), stable=True).astype(jnp.int32)
  e_N = experts_TK[tokens_T].reshape(-1)
  used_N = mask_TK[tokens_T].reshape(-1)
  onehot_NE = jax.nn.one_hot(e_N, num_experts, dtype=jnp.int32) * used_N.astype(jnp.int32)[:, None]
  pos_N = jnp.sum(jnp.cumsum(onehot_NE, axis=0) * onehot_NE, axis=-1)
  return jnp.zeros((T, K), jnp.int32).at[tokens_T].set(pos_N.reshape(T, K), unique_indices=True)


@functools.partial(jax.jit, static_argnames=("num_experts",))
def token_positions(
    experts_TK: jax.Array,
    mask_TK: jax.Array | None = None,
    priority_T: jax.Array | None = None,
    *,
    num_experts: int,
) -> jax.Array:
  """Each slot's 1-based position in its expert's queue: the cumsum rule.

  The slots are flattened token-major, ``(t0, k0), (t0, k1), (t1, k0), ...``; a
  slot's position is the cumulative count of its expert's one-hot up to and
  including it (MaxText ``generate_masks``). With ``priority_T`` the tokens are
  first ordered by decreasing priority (batch-prioritised routing: pass the top-1
  router probability), so confident tokens take the first places. A slot is kept
  when its position is ``<= C`` (`keep_within_capacity`).

  Args:
    experts_TK: expert of each slot.
    mask_TK: used slots (default all); unused ones take no place and get 0.
    priority_T: optional token priority, highest first.
    num_experts: E.

  Returns:
    int32 ``positions_TK``, 1-based, 0 for unused slots.
  """
  _check_num_experts(num_experts)
  mask_TK = _check_slots(experts_TK, mask_TK, priority_T)
  return _positions(experts_TK, mask_TK, num_experts, priority_T)


@functools.partial(jax.jit, static_argnames=("num_experts", "capacity"))
def keep_within_capacity(
    experts_TK: jax.Array,
    mask_TK: jax.Array | None = None,
    priority_T: jax.Array | None = None,
    *,
    num_experts: int,
    capacity: int | None,
) -> jax.Array:
  """``mask_TK & (token_positions(...) <= capacity)``: the slots that are not dropped.

  Args:
    experts_TK, mask_TK, priority_T, num_experts: as `token_positions`.
    capacity: C from `capacity`, or None (dropless: every used slot is kept).

  Returns:
    bool ``keep_TK``.
  """
  _check_num_experts(num_experts)
  mask_TK = _check_slots(experts_TK, mask_TK, priority_T)
  if capacity is None:
    return mask_TK
  if not isinstance(capacity, int) or isinstance(capacity, bool) or capacity < 1:
    raise ValueError(f"capacity: expected an int >= 1 or None, given {capacity!r}")
  return mask_TK & (_positions(experts_TK, mask_TK, num_experts, priority_T) <= capacity)


# ------------------------------------------------------------------------ expert MLP


def _check_mlp(x_TD, routing, w_in_EDF, w_out_EFD, w_gate_EDF, backend, activation):
  if backend not in BACKENDS:
    raise ValueError(f"backend: expected one of {BACKENDS + ('auto',)}, given {backend!r}")
  if activation not in ACTIVATIONS:
    raise ValueError(f"activation: expected one of {tuple(ACTIVATIONS)}, given {activation!r}")
  if x_TD.ndim != 2:
    raise ValueError(f"x_TD: expected 2 dims [tokens, D], given shape {x_TD.shape}")
  T, D = x_TD.shape
  if not jnp.issubdtype(x_TD.dtype, jnp.floating):
    raise TypeError(f"x_TD: expected a floating dtype, given {x_TD.dtype}")
  if w_in_EDF.ndim != 3 or w_in_EDF.shape[1] != D:
    raise ValueError(
        f"w_in_EDF: expected shape [experts, D={D}, F] (D of x_TD), given {w_in_EDF.shape}")
  E, _, F = w_in_EDF.shape
  if w_out_EFD.shape != (E, F, D):
    raise ValueError(
        f"w_out_EFD: expected shape {(E, F, D)} ([E, F] of w_in_EDF, D of x_TD), given"
        f" {w_out_EFD.shape}")
  if w_gate_EDF is not None and w_gate_EDF.shape != w_in_EDF.shape:
    raise ValueError(
        f"w_gate_EDF: expected the shape of w_in_EDF {w_in_EDF.shape}, given {w_gate_EDF.shape}")
  for name, w in (("w_in_EDF", w_in_EDF), ("w_out_EFD", w_out_EFD), ("w_gate_EDF", w_gate_EDF)):
    if w is not None and w.dtype != x_TD.dtype:
      raise TypeError(f"{name}: expected the dtype of x_TD ({x_TD.dtype}), given {w.dtype}")
  experts_TK = routing.experts_TK
  if experts_TK.ndim != 2 or experts_TK.shape[0] != T:
    raise ValueError(
        f"routing.experts_TK: expected shape [tokens={T}, k] (tokens of x_TD), given"
        f" {experts_TK.shape}")
  for name in ("weights_TK", "mask_TK"):
    got = getattr(routing, name).shape
    if got != experts_TK.shape:
      raise ValueError(
          f"routing.{name}: expected the shape of routing.experts_TK {experts_TK.shape},"
          f" given {got}")
  if routing.probs_TE.shape != (T, E):
    raise ValueError(
        f"routing.probs_TE: expected shape {(T, E)} (tokens of x_TD, experts of w_in_EDF);"
        f" the gate and the expert weights disagree, given {routing.probs_TE.shape}")


def _pallas_grouped_matmul():
  """The grouped-matmul kernel's entry point, or a clear error if it is missing."""
  try:
    api = importlib.import_module(_PALLAS_MODULE)
  except ImportError as e:
    raise ImplementationError(
        f"expert_mlp: backend='pallas' needs the grouped-matmul Pallas kernel"
        f" ({_PALLAS_MODULE}, from kernels/grouped_matmul/), which could not be imported"
        f" ({type(e).__name__}: {e}); use backend='ragged_dot' (exact) or"
        f" 'capacity_einsum'") from e
  return api.grouped_matmul


def _expert_ffn(matmul, x, w_in, w_gate, w_out, act):
  """``act(x w_gate) * (x w_in)`` (gated) or ``act(x w_in)``, then ``@ w_out``.

  `matmul(x, w)` returns float32; the hidden layer is cast back to x's dtype.
  """
  h = matmul(x, w_in)
  h = act(matmul(x, w_gate)) * h if w_gate is not None else act(h)
  return matmul(h.astype(x.dtype), w_out).astype(x.dtype)


@functools.partial(
    jax.jit,
    static_argnames=("backend", "capacity_factor", "batch_prioritized", "activation",
                     "interpret"))
def expert_mlp(
    x_TD: jax.Array,
    routing: Routing,
    w_in_EDF: jax.Array,
    w_out_EFD: jax.Array,
    w_gate_EDF: jax.Array | None = None,
    *,
    backend: str = "ragged_dot",
    capacity_factor: float | None = 1.25,
    batch_prioritized: bool = False,
    activation: str = "gelu",
    interpret: bool | None = None,
) -> tuple[jax.Array, jax.Array]:
  """The routed expert layer: ``y[t] = sum_k w[t, k] * FFN_{e[t, k]}(x[t])``.

  The FFN is ``act(x W_in) W_out``, or SwiGLU-style ``(act(x W_gate) * x W_in)
  W_out`` when ``w_gate_EDF`` is given (use ``activation="silu"`` for SwiGLU).
  Matmuls accumulate in float32 at the highest precision; the hidden layer and
  the output have the dtype of ``x_TD``.

  Backends (module docstring): "auto" picks per device, "pallas" on a GPU and
  "capacity_einsum" elsewhere (on a CPU `ragged_dot` costs about as much as
  running every expert; the capacity path may drop, and says how much);
  "ragged_dot" (`jax.lax.ragged_dot`, exact, never
  drops), "capacity_einsum" ([E, C, D] buffers, C from `capacity`; slots past C
  are dropped, i.e. contribute nothing; dropless cf sizes C = T, which assumes a
  token's experts are distinct, as every router in `jaxsys.moe.routing` makes
  them), "pallas" (the grouped-matmul Pallas kernel; raises `ImplementationError`
  if `jaxsys.kernels.grouped_matmul` is missing, never falls back). The capacity
  path equals "ragged_dot" to float32 rounding when its drop rate is 0.

  Args:
    x_TD: token activations.
    routing: a `Routing` (``probs_TE`` is read for batch-prioritised routing and
      to check E against the expert weights).
    w_in_EDF: first expert matrix.
    w_out_EFD: second expert matrix.
    w_gate_EDF: optional gate matrix (gated FFN).
    backend: "ragged_dot", "capacity_einsum", "pallas" or "auto".
    capacity_factor: for "capacity_einsum": cf > 0, or -1 / None for dropless.
      The other backends never drop and only validate it. K in the capacity rule
      is the routing's slot count (``max_k`` for top-p).
    batch_prioritized: for "capacity_einsum": order tokens by their top-1 router
      probability before assigning buffer places, so the least confident drop.
    activation: "gelu" (exact erf), "gelu_tanh", "silu" or "relu".
    interpret: for "pallas": run the kernel in interpret mode (CPU tests).

  Returns:
    ``(y_TD, drop_rate)``: the output and the float32 fraction of used slots that
    were dropped (0 for the dropless backends).
  """
  if backend == "auto":
    backend = "pallas" if backend_lib.has_gpu() else "capacity_einsum"
  _check_mlp(x_TD, routing, w_in_EDF, w_out_EFD, w_gate_EDF, backend, activation)
  T, D = x_TD.shape
  E = w_in_EDF.shape[0]
  K = routing.experts_TK.shape[1]
  C = capacity(T, E, K, capacity_factor)
  act = ACTIVATIONS[activation]
  experts_TK = routing.experts_TK.astype(jnp.int32)
  mask_TK = routing.mask_TK.astype(bool)
  weights_TK = jnp.where(mask_TK, routing.weights_TK, jnp.zeros_like(routing.weights_TK))

  if backend == "capacity_einsum":
    C = T if C is None else min(C, T)
    priority_T = jnp.max(routing.probs_TE, axis=-1) if batch_prioritized else None
    pos_TK = _positions(experts_TK, mask_TK, E, priority_T)
    keep_TK = mask_TK & (pos_TK <= C)
    # A dropped or unused slot points one past the buffer: the scatter drops it
    # and the gather reads 0 for it.
    slot_TK = jnp.where(keep_TK, pos_TK - 1, C)
    x_TKD = jnp.broadcast_to(x_TD[:, None, :], (T, K, D))
    buf_ECD = jnp.zeros((E, C, D), x_TD.dtype).at[experts_TK, slot_TK].set(x_TKD, mode="drop")

    def matmul(a_ECX, w_EXY):
      return jnp.einsum("ecx,exy->ecy", a_ECX, w_EXY, precision=_HIGHEST,
                        preferred_element_type=jnp.float32)

    out_ECD = _expert_ffn(matmul, buf_ECD, w_in_EDF, w_gate_EDF, w_out_EFD, act)
    y_TKD = out_ECD.at[experts_TK, slot_TK].get(mode="fill", fill_value=0)
    y_TD = _combine(y_TKD, jnp.where(keep_TK, weights_TK, jnp.zeros_like(weights_TK)))
    used = jnp.sum(mask_TK.astype(jnp.float32))
    dropped = jnp.sum((mask_TK & ~keep_TK).astype(jnp.float32))
    return y_TD, dropped / jnp.maximum(used, jnp.float32(1))

  x_ND, group_sizes_E, order_N = permute(x_TD, experts_TK, mask_TK, num_experts=E)
  if backend == "pallas":
    grouped_matmul = _pallas_grouped_matmul()

    def matmul(a_NX, w_EXY):
      return grouped_matmul(a_NX, w_EXY, group_sizes_E, implementation="pallas",
                            interpret=interpret).astype(jnp.float32)
  else:

    def matmul(a_NX, w_EXY):
      return jax.lax.ragged_dot(a_NX, w_EXY, group_sizes_E, precision=_HIGHEST,
                                preferred_element_type=jnp.float32)

  y_ND = _expert_ffn(matmul, x_ND, w_in_EDF, w_gate_EDF, w_out_EFD, act)
  return unpermute(y_ND, order_N, weights_TK), jnp.zeros((), jnp.float32)
