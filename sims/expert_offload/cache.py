"""An expert cache over (layer, expert) keys, replayed over a routing trace with `lax.scan`.

HOBBIT (arXiv 2411.01433, Sec. "sequence-level multidimensional cache"; notes in
``papers/moe.md`` 1.1 (3)) keeps offloaded MoE experts in two GPU caches, one
for high-precision copies and one (smaller) for low-precision copies, and
evicts by a weighted four-term priority. This module replays a routing trace
through such a cache, one decode step (token) at a time and inside a step layer
by layer, and reports per access whether it hit, loaded a high- or a
low-precision copy, or was skipped, and which key it evicted.

Shape letters: N decode steps (tokens), L layers, K routed experts per token
and layer (top-k), E experts per layer, X = L * E cache keys, P runs of a sweep.
A key is ``layer * E + expert``.

**Access semantics** (one access = one (token, layer, rank) of the trace, in
order n, then l, then k; the trace's K slots are in descending gate order):

* precision class 0 (high): served by a cached high copy (hit), else the high
  copy is loaded into the high cache (high miss);
* class 1 (low): served by a cached high copy, else a cached low copy (hits),
  else the low copy is loaded into the low cache (low miss);
* class 2 (skip): served by any cached copy (hit), else the expert is skipped
  (no load, no compute).
* A miss inserts into its cache; when that cache holds ``capacity`` entries the
  policy evicts one (with ``per_layer``, each layer has its own share of the
  capacity and evicts only its own keys, like mixtral-offloading). The K keys
  of the current (token, layer) are pinned: they are never evicted while that
  layer runs (its expert GEMMs need them all). If every entry of a full cache
  is pinned the copy is loaded but not cached (evicted = ``NOT_CACHED``);
  ``capacity_low = 0`` streams every low copy this way.
* Records: ``last_access`` (global access index, never reset) orders LRU and
  breaks every tie; ``last_token`` (R_t), ``count`` (F_t) and ``high_count``
  (H_t) are per sequence and reset at each ``seq_start``; only served accesses
  (not skips) update them; H_t counts accesses served by a high copy.

**Policies** (``Params.policy``; the victim is the resident, unpinned key of the
target cache with the lowest primary score, ties to the least recently used):

* ``lru``: primary 0, so least recent access;
* ``lfu``: sequence-level use count F_t (reset per sequence);
* ``lhu``: high-precision use count H_t (0 for every entry of the low cache);
* ``fld``: ``L - d``, where ``d = (l_t - l_i + L) mod L`` is how many layers ahead
  the key's layer comes; the layer furthest ahead is evicted first;
* ``hobbit``: HOBBIT's priority
  ``p_t = w_lru R_t/T + w_lfu F_t/T + w_lhu H_t/T + w_fld (1 - d/L)``, computed
  exactly in integers as ``p_t * T * L`` (a positive factor common to all
  candidates): ``L (w_lru R_t + w_lfu F_t + w_lhu H_t) + w_fld T (L - d)``,
  with integer weights (their sum need not be 1: only ratios matter);
* ``belady``: the oracle: the key whose next access (any class) is furthest
  ahead, keys never accessed again first; next-use times come from the trace.
  On single-precision traces (every access high) it never misses more than
  the other policies (the classic optimum, here with pinning; property-tested);
  with mixed classes and two caches it is only a strong heuristic (random
  traces exist where another policy misses less).

Inferred where the paper is silent (see ``papers/moe.md`` 1.1): T and R_t are
1-based token indices within the sequence (R_t = 0: not used in this sequence);
the H_t term is 0 for low-cache entries ("H_t is not updated for low-precision
entries"); a high-class access is not served by a low copy; a low copy and a
high copy of one expert may both be cached; records (not cache contents) reset
per sequence; skipped accesses update no records; ties go to LRU; weights are
integers so that priorities are exact (the JAX run and the Python reference
agree on every tie); current-layer keys are pinned.

>>> import numpy as np
>>> from jaxsys.sims.expert_offload import cache
>>> config = cache.CacheConfig(num_layers=1, num_experts=4)
>>> trace = cache.make_trace(config, np.array([[[0]], [[1]], [[0]]]))
>>> params = cache.make_params(config, policy="lru", capacity_high=2)
>>> cache.simulate(config, params, trace).hits_N.tolist()
[0, 0, 1]
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxsys.moe.routing import HIGH, LOW, SKIP

POLICIES = ("lru", "lfu", "lhu", "fld", "hobbit", "belady")
LRU, LFU, LHU, FLD, HOBBIT, BELADY = range(len(POLICIES))

# Precision classes of an access (HOBBIT's token-level dynamic loading) are
# jaxsys.moe.routing's HIGH / LOW / SKIP.
# Outcome of an access.
HIT_HIGH, HIT_LOW, MISS_HIGH, MISS_LOW, SKIPPED = range(5)
OUTCOMES = ("hit_high", "hit_low", "miss_high", "miss_low", "skipped")
# `evicted` codes besides a key.
NO_EVICTION = -1
NOT_CACHED = -2
NEVER = int(np.iinfo(np.int32).max)  # next use of a key never accessed again

# (lru, lfu, lhu, fld): the best point of a 1/9 grid on the toy trace of
# papers/moe.md 3(d) [M] (0.22, 0.33, 0.33, 0.11). HOBBIT publishes no weights.
DEFAULT_WEIGHTS = (2, 3, 3, 1)
_INT32_LIMIT = 2**31 - 1


@dataclasses.dataclass(frozen=True)
class CacheConfig:
  """Static sizes: every table has ``num_layers * num_experts`` entries."""

  num_layers: int
  num_experts: int

  def __post_init__(self):
    for name in ("num_layers", "num_experts"):
      value = getattr(self, name)
      if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
        raise ValueError(f"CacheConfig.{name}: expected an int >= 1, given {value!r}")

  @property
  def num_keys(self) -> int:
    """X: the number of (layer, expert) keys, the largest useful capacity."""
    return self.num_layers * self.num_experts


class Params(NamedTuple):
  """What a sweep varies (any leaf may carry a leading sweep axis P)."""

  policy: Any  # [] int32 index into POLICIES
  capacity_high: Any  # [] int32 entries of the high-precision cache, 1..X
  capacity_low: Any  # [] int32 entries of the low-precision cache, 0..X
  weights: Any  # [4] int32 HOBBIT weights (lru, lfu, lhu, fld), >= 0
  bytes_high: Any  # [] float32 bytes of one high-precision expert copy
  bytes_low: Any  # [] float32 bytes of one low-precision expert copy
  per_layer: Any  # [] int32 0: one cache over all layers; 1: per-layer eviction groups


class CacheState(NamedTuple):
  in_high_X: jax.Array  # [X] bool key has a copy in the high-precision cache
  in_low_X: jax.Array  # [X] bool key has a copy in the low-precision cache
  last_access_X: jax.Array  # [X] int32 global access index of last served access, -1 never
  last_token_X: jax.Array  # [X] int32 R_t: 1-based token of the last served access, 0 none
  count_X: jax.Array  # [X] int32 F_t: served accesses in this sequence
  high_count_X: jax.Array  # [X] int32 H_t: accesses served by a high copy in this sequence
  next_use_X: jax.Array  # [X] int32 access index of the key's next access (NEVER: none)
  token: jax.Array  # [] int32 T: 1-based index of the current token in its sequence, 0 before any


class Event(NamedTuple):
  """One decode step (token): every layer's routed experts."""

  ids_LK: jax.Array  # [L, K] int32 expert ids, descending gate weight
  precision_LK: jax.Array  # [L, K] int32 HIGH / LOW / SKIP
  next_use_LK: jax.Array  # [L, K] int32 next access index of the same key (NEVER: none)
  seq_start: jax.Array  # [] bool this token starts a new sequence
  step: jax.Array  # [] int32 n, the token's index in the trace


class Trace(NamedTuple):
  """A whole routing trace, validated, with Belady's next-use times (`make_trace`)."""

  ids_NLK: Any  # [N, L, K] int32 expert ids, distinct within a (token, layer)
  precision_NLK: Any  # [N, L, K] int32 HIGH / LOW / SKIP
  next_use_NLK: Any  # [N, L, K] int32 next access index of the same key, NEVER if none
  seq_start_N: Any  # [N] bool a new sequence starts at this token (records reset)


class StepOutput(NamedTuple):
  outcome_LK: jax.Array  # [L, K] int32 HIT_HIGH / HIT_LOW / MISS_HIGH / MISS_LOW / SKIPPED
  evicted_LK: jax.Array  # [L, K] int32 evicted key, NO_EVICTION or NOT_CACHED


class Result(NamedTuple):
  """Per access and per step results of one run (a sweep adds a leading P axis)."""

  outcome_NLK: jax.Array  # [N, L, K] int32 outcome codes (OUTCOMES)
  evicted_NLK: jax.Array  # [N, L, K] int32 evicted key, NO_EVICTION or NOT_CACHED
  hits_N: jax.Array  # [N] int32 accesses served by a cached copy
  misses_high_N: jax.Array  # [N] int32 high-precision loads
  misses_low_N: jax.Array  # [N] int32 low-precision loads
  skips_N: jax.Array  # [N] int32 skip-class accesses with no cached copy
  bytes_N: jax.Array  # [N] float32 bytes loaded


# ----------------------------------------------------------------------------- params


def policy_index(policy: str | int) -> int:
  """The integer of a policy name (or a checked integer)."""
  if isinstance(policy, str):
    if policy not in POLICIES:
      raise ValueError(f"policy: unknown name {policy!r}; known: {', '.join(POLICIES)}")
    return POLICIES.index(policy)
  if isinstance(policy, (int, np.integer)) and not isinstance(policy, bool):
    if not 0 <= policy < len(POLICIES):
      raise ValueError(
          f"policy: expected 0..{len(POLICIES) - 1} ({', '.join(POLICIES)}), given {policy}")
    return int(policy)
  raise TypeError(f"policy: expected a name ({', '.join(POLICIES)}) or an int, given {policy!r}")


def make_params(
    config: CacheConfig,
    policy: str | int,
    capacity_high: int,
    capacity_low: int = 0,
    weights: Sequence[int] = DEFAULT_WEIGHTS,
    bytes_high: float = 1.0,
    bytes_low: float = 0.25,
    per_layer: bool = False,
) -> Params:
  """Checked `Params` of one run (numpy scalars, so building them compiles nothing).

  Args:
    config: the static sizes.
    policy: a name from `POLICIES` or its index.
    capacity_high: high-precision cache entries, 1..``config.num_keys``.
    capacity_low: low-precision cache entries, 0..``config.num_keys`` (0: low
      copies are streamed, never cached).
    weights: HOBBIT's (lru, lfu, lhu, fld) weights as non-negative integers
      (relative: (2, 3, 3, 1) means 2/9, 3/9, 3/9, 1/9). Used by ``hobbit`` only.
    bytes_high: bytes of a high-precision expert copy.
    bytes_low: bytes of a low-precision expert copy (HOBBIT's miss penalty of a
      low miss is ``bytes_low / bytes_high`` of a high miss).

  Returns:
    `Params`.
  """
  w = np.asarray(weights)
  if w.shape != (4,) or w.dtype.kind not in "iu":
    raise ValueError(
        f"weights: expected 4 integers (lru, lfu, lhu, fld), given {weights!r}")
  params = Params(
      policy=np.int32(policy_index(policy)),
      capacity_high=np.int32(_as_int("capacity_high", capacity_high)),
      capacity_low=np.int32(_as_int("capacity_low", capacity_low)),
      weights=w.astype(np.int32),
      bytes_high=np.float32(bytes_high),
      bytes_low=np.float32(bytes_low),
      per_layer=np.int32(bool(per_layer)),
  )
  check_params(config, params)
  return params


def _as_int(name: str, value: Any) -> int:
  if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
    raise TypeError(f"{name}: expected an int, given {value!r}")
  return int(value)


def stack_params(params: Sequence[Params]) -> Params:
  """Stacks single-run `Params` into one with a leading sweep axis P (numpy)."""
  if not params:
    raise ValueError("params: expected at least one Params to stack, given none")
  return Params(*(np.stack([np.asarray(p[i]) for p in params]) for i in range(len(Params._fields))))


def param_grid(
    config: CacheConfig,
    policies: Sequence[str | int],
    capacities_high: Sequence[int],
    capacities_low: Sequence[int] = (0,),
    weights: Sequence[int] = DEFAULT_WEIGHTS,
    bytes_high: float = 1.0,
    bytes_low: float = 0.25,
    per_layer: bool = False,
) -> tuple[Params, list[dict[str, Any]]]:
  """The outer product of policies and capacities as one batched `Params`.

  Returns:
    ``(params, labels)``: params with leading axis P = len(policies) *
    len(capacities_high) * len(capacities_low) (policy slowest), and one dict
    ``{"policy", "capacity_high", "capacity_low"}`` per run.
  """
  runs, labels = [], []
  for pol, ch, cl in itertools.product(policies, capacities_high, capacities_low):
    runs.append(make_params(config, pol, ch, cl, weights, bytes_high, bytes_low, per_layer))
    labels.append({"policy": POLICIES[policy_index(pol)], "capacity_high": ch, "capacity_low": cl})
  return stack_params(runs), labels


def _is_concrete(tree: Any) -> bool:
  return not any(isinstance(x, jax.core.Tracer) for x in jax.tree_util.tree_leaves(tree))


def check_params(config: CacheConfig, params: Params) -> None:
  """Raises ValueError for out-of-range params (skipped for traced values).

  Works for one run or a batch (reports the sweep index of the first bad run).
  """
  if not _is_concrete(params):
    return
  X = config.num_keys
  checks = (
      ("policy", 0, len(POLICIES) - 1, f"0..{len(POLICIES) - 1} ({', '.join(POLICIES)})"),
      ("capacity_high", 1, X, f"1 <= capacity_high <= {X} (the number of (layer, expert) keys)"),
      ("capacity_low", 0, X, f"0 <= capacity_low <= {X} (the number of (layer, expert) keys)"),
      ("per_layer", 0, 1, "0 (global) or 1 (per-layer groups)"),
  )
  for name, lo, hi, expected in checks:
    value = np.asarray(getattr(params, name))
    bad = np.argwhere(np.atleast_1d((value < lo) | (value > hi)))
    if bad.size:
      index = tuple(int(i) for i in bad[0])
      where = "" if value.ndim == 0 else f" at sweep index {index}"
      given = value if value.ndim == 0 else value[index]
      raise ValueError(f"{name}: expected {expected}, given {given}{where}")
  w = np.asarray(params.weights)
  if w.shape[-1:] != (4,):
    raise ValueError(
        f"weights: expected a last axis of 4 (lru, lfu, lhu, fld), given shape {w.shape}")
  if np.any(w < 0):
    raise ValueError(f"weights: expected integers >= 0, given {w.tolist()}")
  for name in ("bytes_high", "bytes_low"):
    value = np.asarray(getattr(params, name))
    if np.any(~(value > 0)):
      raise ValueError(f"{name}: expected > 0, given {value.tolist()}")


# ----------------------------------------------------------------------------- trace


def make_trace(
    config: CacheConfig,
    ids_NLK: Any,
    precision_NLK: Any = None,
    seq_start_N: Any = None,
) -> Trace:
  """Checks a routing trace and precomputes each access's next use (for Belady).

  Args:
    config: static sizes; the trace must have ``config.num_layers`` layers.
    ids_NLK: [N, L, K] integer expert ids, each in ``[0, num_experts)`` and
      distinct within a (token, layer); order K by descending gate weight.
    precision_NLK: [N, L, K] classes HIGH (0) / LOW (1) / SKIP (2) (see
      `jaxsys.sims.expert_offload.loading.precision_classes`); default all HIGH.
    seq_start_N: [N] bool, True where a new sequence starts (records reset);
      default: one sequence (token 0 always starts one).

  Returns:
    A `Trace` of numpy arrays.

  Raises:
    TypeError: traced (non-concrete) or non-integer ids.
    ValueError: a wrong shape, an id or class out of range, a repeated id.
  """
  if not _is_concrete((ids_NLK, precision_NLK, seq_start_N)):
    raise TypeError("make_trace: needs concrete arrays (call it outside jit)")
  ids = np.asarray(ids_NLK)
  if ids.ndim != 3:
    raise ValueError(f"ids_NLK: expected rank 3 [steps, layers, top_k], given shape {ids.shape}")
  if ids.dtype.kind not in "iu":
    raise TypeError(f"ids_NLK: expected an integer dtype, given {ids.dtype}")
  N, L, K = ids.shape
  E = config.num_experts
  if L != config.num_layers:
    raise ValueError(f"ids_NLK: expected {config.num_layers} layers (axis 1), given {L}")
  if not 1 <= K <= E:
    raise ValueError(f"ids_NLK: expected 1 <= top_k (axis 2) <= {E} experts, given {K}")
  bad = np.argwhere((ids < 0) | (ids >= E))
  if bad.size:
    n, l, k = (int(i) for i in bad[0])
    raise ValueError(
        f"ids_NLK: expert id {ids[n, l, k]} at step {n}, layer {l}, slot {k} is"
        f" outside [0, {E})")
  sorted_ids = np.sort(ids, axis=2)
  dup = np.argwhere(sorted_ids[:, :, 1:] == sorted_ids[:, :, :-1])
  if dup.size:
    n, l, k = (int(i) for i in dup[0])
    raise ValueError(
        f"ids_NLK: expert {sorted_ids[n, l, k]} appears twice at step {n}, layer {l};"
        " top-k ids must be distinct")
  if N * L * K >= _INT32_LIMIT:
    raise ValueError(f"ids_NLK: {N * L * K} accesses overflow int32 access indices")

  if precision_NLK is None:
    prec = np.full(ids.shape, HIGH, np.int32)
  else:
    prec = np.asarray(precision_NLK)
    if prec.shape != ids.shape:
      raise ValueError(
          f"precision_NLK: expected shape {ids.shape} (as ids_NLK), given {prec.shape}")
    if prec.dtype.kind not in "iu":
      raise TypeError(f"precision_NLK: expected an integer dtype, given {prec.dtype}")
    bad = np.argwhere((prec < HIGH) | (prec > SKIP))
    if bad.size:
      n, l, k = (int(i) for i in bad[0])
      raise ValueError(
          f"precision_NLK: class {prec[n, l, k]} at step {n}, layer {l}, slot {k};"
          " expected 0 (high), 1 (low) or 2 (skip)")

  if seq_start_N is None:
    starts = np.zeros((N,), bool)
  else:
    starts = np.asarray(seq_start_N)
    if starts.shape != (N,) or starts.dtype != np.bool_:
      raise ValueError(
          f"seq_start_N: expected a bool array of shape ({N},),"
          f" given {starts.dtype} {starts.shape}")
  starts = starts.copy()
  if N:
    starts[0] = True

  # Next access of the same key: sort accesses by key (stable keeps time order).
  keys_M = (np.arange(L)[None, :, None] * E + ids).reshape(-1)
  order_M = np.argsort(keys_M, kind="stable")
  sorted_keys = keys_M[order_M]
  next_sorted = np.full(keys_M.shape, NEVER, np.int64)
  if keys_M.size:
    next_sorted[:-1] = np.where(sorted_keys[1:] == sorted_keys[:-1], order_M[1:], NEVER)
  next_M = np.empty(keys_M.shape, np.int64)
  next_M[order_M] = next_sorted
  return Trace(
      ids_NLK=ids.astype(np.int32),
      precision_NLK=prec.astype(np.int32),
      next_use_NLK=next_M.reshape(ids.shape).astype(np.int32),
      seq_start_N=starts,
  )


def check_trace(config: CacheConfig, trace: Trace) -> None:
  """Shape checks of a `Trace` against the config (values were checked by `make_trace`)."""
  if not isinstance(trace, Trace):
    raise TypeError(f"trace: expected a Trace from make_trace, given {type(trace).__name__}")
  shape = np.shape(trace.ids_NLK)
  if len(shape) != 3 or shape[1] != config.num_layers:
    raise ValueError(
        f"trace.ids_NLK: expected [N, {config.num_layers}, K], given shape {shape}")
  for name in ("precision_NLK", "next_use_NLK"):
    if np.shape(getattr(trace, name)) != shape:
      raise ValueError(
          f"trace.{name}: expected shape {shape}, given {np.shape(getattr(trace, name))}")
  if np.shape(trace.seq_start_N) != shape[:1]:
    raise ValueError(
        f"trace.seq_start_N: expected shape {shape[:1]}, given {np.shape(trace.seq_start_N)}")


def _check_priority_range(config: CacheConfig, params: Params, num_steps: int) -> None:
  """HOBBIT priorities are exact int32: L * T * sum(weights) must fit."""
  if not _is_concrete(params.weights):
    return
  total = int(np.max(np.sum(np.asarray(params.weights, np.int64), axis=-1)))
  if config.num_layers * max(num_steps, 1) * total >= _INT32_LIMIT:
    raise ValueError(
        f"weights: sum {total} is too large for exact int32 priorities over"
        f" {num_steps} steps x {config.num_layers} layers; use smaller integers")


# ----------------------------------------------------------------------------- step


def init(config: CacheConfig) -> CacheState:
  """Empty caches, no records."""
  return _init(config.num_keys)


def _init(num_keys: int) -> CacheState:
  zeros = jnp.zeros((num_keys,), jnp.int32)
  empty = jnp.zeros((num_keys,), jnp.bool_)
  return CacheState(
      in_high_X=empty,
      in_low_X=empty,
      last_access_X=jnp.full((num_keys,), -1, jnp.int32),
      last_token_X=zeros,
      count_X=zeros,
      high_count_X=zeros,
      next_use_X=jnp.full((num_keys,), NEVER, jnp.int32),
      token=jnp.zeros((), jnp.int32),
  )


def _priority_X(state: CacheState, params: Params, layer: jax.Array, layer_X: jax.Array,
                num_layers: int, for_high: jax.Array) -> jax.Array:
  """Primary eviction score of every key under `params.policy` (lowest goes first).

  Every policy is one blend ``L (c_R R + c_F F + c_H H) + c_D (L - d) - c_B next``
  with per-policy scalar coefficients (scaling LFU / LHU by L keeps their order):
  lru all 0 (recency breaks the tie); lfu c_F = 1; lhu c_H = 1; fld c_D = 1;
  hobbit (c_R, c_F, c_H, c_D) = (w_lru, w_lfu, w_lhu, w_fld T); belady c_B = 1.
  """
  L = num_layers
  policy = jnp.asarray(params.policy, jnp.int32)
  w = jnp.asarray(params.weights, jnp.int32)
  is_hobbit = (policy == HOBBIT).astype(jnp.int32)
  c_r = is_hobbit * w[0]
  c_f = is_hobbit * w[1] + (policy == LFU).astype(jnp.int32)
  c_h = is_hobbit * w[2] + (policy == LHU).astype(jnp.int32)
  c_d = is_hobbit * w[3] * state.token + (policy == FLD).astype(jnp.int32)
  c_b = (policy == BELADY).astype(jnp.int32)
  high_X = jnp.where(for_high, state.high_count_X, 0)  # H_t is 0 in the low cache
  fld_X = L - (layer_X - layer + L) % L  # L * (1 - d / L)
  return (L * (c_r * state.last_token_X + c_f * state.count_X + c_h * high_X)
          + c_d * fld_X - c_b * state.next_use_X)


def _access(state: CacheState, params: Params, key, layer, cls, next_use, clock,
            pinned_X, layer_X, key_X, num_layers: int):
  """One access: hit, or load (evicting by the policy), or skip; then records."""
  in_h = state.in_high_X[key]
  in_l = state.in_low_X[key]
  outcome = jnp.where(
      in_h, HIT_HIGH,
      jnp.where(cls == HIGH, MISS_HIGH,
                jnp.where(in_l, HIT_LOW, jnp.where(cls == LOW, MISS_LOW, SKIPPED)))
  ).astype(jnp.int32)
  miss_h = outcome == MISS_HIGH
  miss_l = outcome == MISS_LOW
  miss = miss_h | miss_l

  target_X = jnp.where(miss_h, state.in_high_X, state.in_low_X)
  capacity = jnp.where(miss_h, jnp.asarray(params.capacity_high, jnp.int32),
                       jnp.asarray(params.capacity_low, jnp.int32))
  # Per-layer groups: this layer's share of the capacity, its own keys only.
  per_layer = jnp.asarray(params.per_layer, jnp.int32) == 1
  scope_X = ~per_layer | (layer_X == layer)
  share = capacity // num_layers + (layer < capacity % num_layers).astype(jnp.int32)
  capacity = jnp.where(per_layer, share, capacity)
  full = jnp.sum((target_X & scope_X).astype(jnp.int32)) >= capacity
  cand_X = target_X & ~pinned_X & scope_X
  prio_X = _priority_X(state, params, layer, layer_X, num_layers, miss_h)
  best = jnp.min(jnp.where(cand_X, prio_X, NEVER))
  tie_X = cand_X & (prio_X == best)
  victim = jnp.argmin(jnp.where(tie_X, state.last_access_X, NEVER)).astype(jnp.int32)
  has_cand = jnp.any(cand_X)
  evict = miss & full & has_cand
  insert = miss & (~full | has_cand)
  evicted = jnp.where(evict, victim,
                      jnp.where(miss & ~insert, NOT_CACHED, NO_EVICTION)).astype(jnp.int32)
  target_X = (target_X & ~(evict & (key_X == victim))) | (insert & (key_X == key))

  served = outcome != SKIPPED
  served_high = (outcome == HIT_HIGH) | miss_h

  def upd(arr_X, new):
    return arr_X.at[key].set(jnp.where(served, new, arr_X[key]))

  state = CacheState(
      in_high_X=jnp.where(miss_h, target_X, state.in_high_X),
      in_low_X=jnp.where(miss_l, target_X, state.in_low_X),
      last_access_X=upd(state.last_access_X, clock),
      last_token_X=upd(state.last_token_X, state.token),
      count_X=upd(state.count_X, state.count_X[key] + 1),
      high_count_X=upd(state.high_count_X,
                       state.high_count_X[key] + served_high.astype(jnp.int32)),
      next_use_X=state.next_use_X.at[key].set(next_use),
      token=state.token,
  )
  return state, outcome, evicted


def step(state: CacheState, event: Event, params: Params) -> tuple[CacheState, StepOutput]:
  """One decode step: resets records at a sequence start, then every layer's accesses.

  Sizes come from the shapes: L and K from ``event.ids_LK``, X from the state
  (E = X // L). Jittable, and batched with `jax.vmap` over `params`.

  Returns:
    ``(state, StepOutput)`` with each access's outcome and evicted key.
  """
  L, K = event.ids_LK.shape
  X = state.in_high_X.shape[0]
  E = X // L
  layer_X = jnp.arange(X, dtype=jnp.int32) // E
  key_X = jnp.arange(X, dtype=jnp.int32)

  new_seq = jnp.asarray(event.seq_start) | (state.token == 0)
  zeros = jnp.zeros_like(state.count_X)
  state = state._replace(
      token=jnp.where(new_seq, 1, state.token + 1).astype(jnp.int32),
      last_token_X=jnp.where(new_seq, zeros, state.last_token_X),
      count_X=jnp.where(new_seq, zeros, state.count_X),
      high_count_X=jnp.where(new_seq, zeros, state.high_count_X),
  )
  base = jnp.asarray(event.step, jnp.int32) * (L * K)

  def layer_body(state, xs):
    layer, ids_K, prec_K, next_K = xs
    keys_K = layer * E + ids_K
    pinned_X = jnp.zeros((X,), jnp.bool_).at[keys_K].set(True)
    outcomes, evictions = [], []
    for k in range(K):
      state, outcome, evicted = _access(
          state, params, keys_K[k], layer, prec_K[k], next_K[k], base + layer * K + k,
          pinned_X, layer_X, key_X, L)
      outcomes.append(outcome)
      evictions.append(evicted)
    return state, (jnp.stack(outcomes), jnp.stack(evictions))

  xs = (jnp.arange(L, dtype=jnp.int32), jnp.asarray(event.ids_LK, jnp.int32),
        jnp.asarray(event.precision_LK, jnp.int32), jnp.asarray(event.next_use_LK, jnp.int32))
  state, (outcome_LK, evicted_LK) = jax.lax.scan(layer_body, state, xs)
  return state, StepOutput(outcome_LK, evicted_LK)


# ----------------------------------------------------------------------------- runners


def _run(params: Params, trace: Trace, num_experts: int) -> Result:
  N, L, _ = trace.ids_NLK.shape

  def body(state, xs):
    ids, prec, nxt, start, n = xs
    return step(state, Event(ids, prec, nxt, start, n), params)

  xs = (trace.ids_NLK, trace.precision_NLK, trace.next_use_NLK, trace.seq_start_N,
        jnp.arange(N, dtype=jnp.int32))
  _, out = jax.lax.scan(body, _init(L * num_experts), xs)
  outcome = out.outcome_LK

  def count(code):
    return jnp.sum((outcome == code).astype(jnp.int32), axis=(1, 2))

  misses_high = count(MISS_HIGH)
  misses_low = count(MISS_LOW)
  bytes_N = (misses_high.astype(jnp.float32) * jnp.asarray(params.bytes_high, jnp.float32)
             + misses_low.astype(jnp.float32) * jnp.asarray(params.bytes_low, jnp.float32))
  return Result(
      outcome_NLK=outcome,
      evicted_NLK=out.evicted_LK,
      hits_N=count(HIT_HIGH) + count(HIT_LOW),
      misses_high_N=misses_high,
      misses_low_N=misses_low,
      skips_N=count(SKIPPED),
      bytes_N=bytes_N,
  )


_run_jit = jax.jit(_run, static_argnames="num_experts")


@functools.partial(jax.jit, static_argnames="num_experts")
def _sweep_jit(params: Params, trace: Trace, num_experts: int) -> Result:
  return jax.vmap(lambda p: _run(p, trace, num_experts))(params)


def simulate(config: CacheConfig, params: Params, trace: Trace) -> Result:
  """Replays `trace` through the cache of one `params` (jitted; one compile per shape).

  Args:
    config: static sizes.
    params: one run's `Params` (`make_params`).
    trace: from `make_trace`.

  Returns:
    `Result`: per access outcome and eviction, per step hits, misses by
    precision, skips and bytes loaded.
  """
  check_trace(config, trace)
  check_params(config, params)
  if np.ndim(params.policy) != 0:
    raise ValueError(
        f"params: simulate runs one configuration, given a batch of"
        f" {np.shape(params.policy)}; use sweep")
  _check_priority_range(config, params, np.shape(trace.ids_NLK)[0])
  return _run_jit(params, trace, num_experts=config.num_experts)


def sweep(config: CacheConfig, params: Params, trace: Trace) -> Result:
  """`simulate` vmapped over a leading axis P of `params` (policies, capacities,
  weights, byte sizes): one compile serves every run of that size.

  Returns:
    `Result` with a leading P axis on every field.
  """
  check_trace(config, trace)
  check_params(config, params)
  if np.ndim(params.policy) != 1:
    raise ValueError(
        f"params: sweep needs a leading sweep axis (stack_params / param_grid),"
        f" given policy of shape {np.shape(params.policy)}")
  _check_priority_range(config, params, np.shape(trace.ids_NLK)[0])
  return _sweep_jit(params, trace, num_experts=config.num_experts)


# ----------------------------------------------------------------------------- metrics


def miss_penalty(result: Result, params: Params) -> jax.Array:
  """HOBBIT's miss penalty: high misses + (bytes_low / bytes_high) * low misses.

  A high miss costs C = 1, a low miss ``B_l / B_h`` (papers/moe.md 1.1 (3)).
  Works on a single run or a sweep (sums the last, step axis).
  """
  ratio = (jnp.asarray(params.bytes_low, jnp.float32)
           / jnp.asarray(params.bytes_high, jnp.float32))
  return (jnp.sum(result.misses_high_N, axis=-1).astype(jnp.float32)
          + ratio * jnp.sum(result.misses_low_N, axis=-1).astype(jnp.float32))


def summarize(result: Result) -> dict[str, np.ndarray]:
  """Totals and ratios of one run or a sweep (numpy): accesses, hit ratio, per-layer miss ratio."""
  outcome = np.asarray(result.outcome_NLK)
  accesses = outcome.shape[-3] * outcome.shape[-2] * outcome.shape[-1]
  misses = (outcome == MISS_HIGH) | (outcome == MISS_LOW)
  per_layer_den = max(outcome.shape[-3] * outcome.shape[-1], 1)
  return {
      "accesses": np.asarray(accesses),
      "hits": np.sum(np.asarray(result.hits_N), axis=-1),
      "misses_high": np.sum(np.asarray(result.misses_high_N), axis=-1),
      "misses_low": np.sum(np.asarray(result.misses_low_N), axis=-1),
      "skips": np.sum(np.asarray(result.skips_N), axis=-1),
      "bytes": np.sum(np.asarray(result.bytes_N, np.float64), axis=-1),
      "hit_ratio": np.sum(np.asarray(result.hits_N), axis=-1) / max(accesses, 1),
      "miss_ratio_per_layer": np.sum(misses, axis=(-3, -1)) / per_layer_den,
  }
