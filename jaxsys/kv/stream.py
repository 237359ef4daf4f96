"""A physically bounded streaming KV cache with positions re-assigned inside the cache.

StreamingLLM (arXiv 2309.17453) and Inf-MLLM (arXiv 2409.09086) run streams of
any length in a fixed memory: evicted tokens leave the cache for good, and a
token's RoPE position is its index *inside the cache*, not its index in the
stream, so positions never outgrow the model's trained context. (The policies in
`jaxsys.kv.streaming_llm` and `jaxsys.kv.inf_mllm` only *mask* tokens: every
token stays at its original position in a cache as long as the stream.)

This module supplies the missing pieces:

* `rerotate_keys`: RoPE rotations compose, ``R(p + d) = R(d) R(p)``, so a
  post-RoPE key moved from position p to p + d is rotated by d (interleaved
  adjacent-pair layout, as `jaxsys.models.smollm2.apply_rope`);
* `compact`: per (sequence, KV head), gathers the kept slots to the front of the
  buffer in their original order, re-assigns their positions to ``0 .. n-1`` and
  re-rotates their keys (and, optionally, the cached queries of the same tokens);
* `keep_mask`: the slots a `KVPolicy` attends (sinks + window + selection);
* `stream_nll`: SmolLM2 teacher-forced over a stream of any length in a buffer
  of ``capacity`` slots, evicting with a `KVPolicy` whenever the buffer is full.

Design choices of `stream_nll` (documented once here):

* **Eviction when full.** Tokens are appended until the buffer holds
  ``capacity`` tokens; before the next token is written the policy picks the
  tokens to keep and the buffer is compacted. The kept set is what the policy
  would attend at the next step, the new token aside: sinks, the window and
  ``select``, all evaluated with ``lengths + 1``. Between evictions attention is
  dense over the buffer. For the eviction policies this is exactly their cache:
  StreamingLLM with ``capacity == budget`` evicts one token per step and attends
  4 sinks + the last ``budget - 4`` tokens; Inf-MLLM with ``capacity ==
  policy.budget`` (= its ``budget + chunk``) evicts every ``chunk`` tokens back
  to ``budget`` tokens (sinks + relevant + recent), as its masked form does. A
  larger capacity evicts in larger chunks.
* **Policy state.** Policies index tokens by slot, and compaction renumbers the
  slots, so no policy state outlives a compaction: at every eviction the state
  is rebuilt with ``policy.init`` on the full buffer (keys, values and the
  cached queries of the buffered tokens, each at its in-cache position, query
  row t belonging to the token in slot t, exactly the layout `init` gets after
  a prefill), used once for ``select``, and dropped. The queries are compacted
  and re-rotated along with the keys (per KV head: query head h follows KV head
  ``h // G``). For Inf-MLLM the relevance of a token is therefore scored by the
  W most recent queries in the buffer's current coordinates, which are the W
  most recent queries of the stream when ``retrieval_window <= recent`` (checked).
* **Per-head compaction, one shared position.** Keys are stored per KV head and
  each (layer, KV head) may keep different tokens, so compaction is per (layer,
  sequence, KV head). The next token is written at one slot and one position for
  all layers and heads, so every (layer, KV head) of a sequence must keep the
  same number of tokens: if a policy keeps fewer in some head (StreamingLLM and
  Inf-MLLM never do once the buffer is full), that head is topped up with its
  most recent evicted-to-be tokens. After compaction all heads hold ``n`` tokens
  at positions ``0 .. n-1`` and the next query sits at position ``n``: a
  position is always a slot index, at most ``capacity - 1``.

Numerics: re-rotation is exact for a zero offset (sinks never move) and
otherwise adds one float32 rotation rounding per compaction; `stream_nll` matches
an independent recomputation (raw keys rotated from scratch at their in-cache
positions every step) to float32 rounding over the model's reductions.

Shape letters: B batch, K KV heads, H query heads, G = H // K, T or C cache
slots (C = capacity), D head dim, L layers, N scored tokens, S decode steps.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxsys.kv import base
from jaxsys.models import smollm2


# ----------------------------------------------------------------------------
# Re-rotation
# ----------------------------------------------------------------------------


def _inv_freq(d: int, rope_base: float) -> np.ndarray:
  """``[D/2]`` float32 RoPE frequencies, computed as `smollm2.apply_rope` does."""
  return np.power(float(rope_base), -np.arange(0, d, 2, dtype=np.float64) / d).astype(np.float32)


def _rotate(x: jax.Array, delta: jax.Array, rope_base: float) -> jax.Array:
  """Rotates adjacent pairs of ``x[..., T, D]`` by ``delta[..., T]`` positions (same rank)."""
  d = x.shape[-1]
  inv_freq = jnp.asarray(_inv_freq(d, rope_base)).reshape((1,) * delta.ndim + (d // 2,))
  angle = delta.astype(jnp.float32)[..., None] * inv_freq
  cos, sin = jnp.cos(angle), jnp.sin(angle)
  pairs = x.astype(jnp.float32).reshape(x.shape[:-1] + (d // 2, 2))
  x0, x1 = pairs[..., 0], pairs[..., 1]
  out = jnp.stack([x0 * cos - x1 * sin, x0 * sin + x1 * cos], axis=-1)
  return out.reshape(x.shape).astype(x.dtype)


def rerotate_keys(k_BKTD: jax.Array, delta_BKT: jax.Array, rope_base: float) -> jax.Array:
  """Moves post-RoPE keys by ``delta`` positions: ``R(p + d) k = R(d) R(p) k``.

  RoPE rotates each adjacent pair ``(2i, 2i+1)`` of a head by the angle
  ``p * rope_base**(-2i / D)``; rotations of a plane compose by adding angles, so
  a key cached at position p is moved to ``p + d`` by rotating it by d, without
  the pre-RoPE key. Same layout and frequencies as `smollm2.apply_rope`, so
  ``rerotate_keys(apply_rope(k, p), d) == apply_rope(k, p + d)`` to float32
  rounding of the angles (about ``|p + d| * 2**-24`` radians). This is how
  StreamingLLM re-assigns positions inside its cache (kvpress calls it key
  re-rotation).

  Args:
    k_BKTD: post-RoPE keys (B, K, T, D), D even; any float dtype (computed in
      float32, returned in the input dtype).
    delta_BKT: integer position offset per key (B, K, T); 0 leaves a key exact.
    rope_base: RoPE frequency base (`SmolLM2Config.rope_base`).

  Returns:
    The re-rotated keys, shape and dtype of `k_BKTD`.

  Raises:
    ValueError: a wrong rank, odd D, mismatched or non-integer `delta_BKT`.

  >>> k = jnp.asarray([[[[1.0, 0.0]]]])  # B = K = T = 1, D = 2: frequency 1
  >>> rerotate_keys(k, jnp.asarray([[[1]]], jnp.int32), 10000.0).round(4)
  Array([[[[0.5403, 0.8415]]]], dtype=float32)
  """
  if k_BKTD.ndim != 4 or k_BKTD.shape[-1] % 2:
    raise ValueError(
        f"k_BKTD: expected a 4-D (B, K, T, D) array with D even, given shape {k_BKTD.shape}"
    )
  if not jnp.issubdtype(k_BKTD.dtype, jnp.floating):
    raise ValueError(f"k_BKTD: expected a float array, given {k_BKTD.dtype}")
  if delta_BKT.shape != k_BKTD.shape[:3] or not jnp.issubdtype(delta_BKT.dtype, jnp.integer):
    raise ValueError(
        f"delta_BKT: expected integer offsets of shape {k_BKTD.shape[:3]} (the keys' B, K, T),"
        f" given {delta_BKT.dtype} with shape {delta_BKT.shape}"
    )
  return _rotate(k_BKTD, delta_BKT, rope_base)


# ----------------------------------------------------------------------------
# Compaction
# ----------------------------------------------------------------------------


class Compacted(NamedTuple):
  """A buffer after `compact`: kept tokens first, at positions ``0 .. n-1``."""

  k_BKTD: jax.Array  # (B, K, T, D) keys re-rotated to their new slots; zeros from n on
  v_BKTD: jax.Array  # (B, K, T, Dv) values moved with them; zeros from n on
  lengths_BK: jax.Array  # (B, K) int32 n: tokens kept per (sequence, KV head)
  src_BKT: jax.Array  # (B, K, T) int32 old slot of each new slot, -1 from n on
  q_BHTD: jax.Array | None  # (B, H, T, D) cached queries moved likewise, or None


def compact(
    k_BKTD: jax.Array,
    v_BKTD: jax.Array,
    keep_BKT: jax.Array,
    *,
    rope_base: float,
    positions_BKT: jax.Array | None = None,
    q_BHTD: jax.Array | None = None,
) -> Compacted:
  """Gathers the kept slots to the front, per (sequence, KV head), re-assigning positions.

  For each (b, k), the slots with ``keep_BKT[b, k]`` set move, in their original
  order, to slots ``0 .. n-1`` (n = their count), their positions become ``0 ..
  n-1`` and their keys are re-rotated from the old position to the new one
  (`rerotate_keys`); slots ``n ..`` are zeroed. The buffer keeps its static
  size, so this runs under `jit`, `vmap` and `lax.scan`. This is the position
  re-assignment of StreamingLLM's cache and of Inf-MLLM (arXiv 2409.09086)
  after an eviction. The counts may differ per (b, k) (a caller that needs a
  shared next position keeps equal counts, as `stream_nll` does).

  Args:
    k_BKTD: post-RoPE keys (B, K, T, D).
    v_BKTD: values (B, K, T, Dv).
    keep_BKT: bool (B, K, T), slots to keep (any slot; a caller masks unused ones).
    rope_base: RoPE frequency base.
    positions_BKT: integer current position of every key; default the slot index
      (what `smollm2.prefill`/`decode_step` and this function produce).
    q_BHTD: optional post-RoPE queries cached per slot (query head h, slot t: the
      query of the token in slot t of KV head ``h // G``, at that token's
      position); moved and re-rotated like the keys.

  Returns:
    A `Compacted` buffer.

  Raises:
    ValueError: shapes or dtypes that do not fit, naming the argument.

  >>> k = jnp.ones((1, 1, 3, 2)); keep = jnp.asarray([[[True, False, True]]])
  >>> c = compact(k, k, keep, rope_base=10000.0)
  >>> c.lengths_BK.tolist(), c.src_BKT.tolist()
  ([[2]], [[[0, 2, -1]]])
  """
  if k_BKTD.ndim != 4 or k_BKTD.shape[-1] % 2:
    raise ValueError(
        f"k_BKTD: expected a 4-D (B, K, T, D) array with D even, given shape {k_BKTD.shape}"
    )
  B, K, T, D = k_BKTD.shape
  if v_BKTD.ndim != 4 or v_BKTD.shape[:3] != (B, K, T):
    raise ValueError(
        f"v_BKTD: expected shape ({B}, {K}, {T}, Dv) to match k_BKTD, given {v_BKTD.shape}"
    )
  if keep_BKT.shape != (B, K, T) or keep_BKT.dtype != jnp.bool_:
    raise ValueError(
        f"keep_BKT: expected a bool array of shape {(B, K, T)}, given {keep_BKT.dtype}"
        f" with shape {keep_BKT.shape}"
    )
  t_T = jnp.arange(T, dtype=jnp.int32)
  if positions_BKT is None:
    positions_BKT = jnp.broadcast_to(t_T[None, None, :], (B, K, T))
  elif positions_BKT.shape != (B, K, T) or not jnp.issubdtype(positions_BKT.dtype, jnp.integer):
    raise ValueError(
        f"positions_BKT: expected integer positions of shape {(B, K, T)}, given"
        f" {positions_BKT.dtype} with shape {positions_BKT.shape}"
    )
  if q_BHTD is not None and (
      q_BHTD.ndim != 4 or q_BHTD.shape[0] != B or q_BHTD.shape[1] % K
      or q_BHTD.shape[2:] != (T, D)):
    raise ValueError(
        f"q_BHTD: expected shape ({B}, H, {T}, {D}) with H a multiple of K = {K}, given"
        f" {q_BHTD.shape}"
    )
  t_11T = t_T[None, None, :]
  # kept slots sort first, each group in slot order (the keys are distinct)
  src_BKT = jnp.argsort(jnp.where(keep_BKT, t_11T, t_11T + T), axis=-1).astype(jnp.int32)
  lengths_BK = jnp.sum(keep_BKT, axis=-1, dtype=jnp.int32)
  valid_BKT = t_11T < lengths_BK[:, :, None]
  old_pos_BKT = jnp.take_along_axis(positions_BKT.astype(jnp.int32), src_BKT, axis=-1)
  delta_BKT = jnp.where(valid_BKT, t_11T - old_pos_BKT, 0)

  def move(x_BKTD):
    moved = jnp.take_along_axis(x_BKTD, src_BKT[..., None], axis=2)
    return jnp.where(valid_BKT[..., None], moved, jnp.zeros_like(moved))

  k_new = rerotate_keys(move(k_BKTD), delta_BKT, rope_base)
  v_new = move(v_BKTD)
  q_new = None
  if q_BHTD is not None:
    G = q_BHTD.shape[1] // K
    q_BKGTD = q_BHTD.reshape(B, K, G, T, D)
    moved = jnp.take_along_axis(q_BKGTD, src_BKT[:, :, None, :, None], axis=3)
    moved = jnp.where(valid_BKT[:, :, None, :, None], moved, jnp.zeros_like(moved))
    q_new = _rotate(moved, delta_BKT[:, :, None, :], rope_base).reshape(q_BHTD.shape)
  src_BKT = jnp.where(valid_BKT, src_BKT, -1)
  return Compacted(k_new, v_new, lengths_BK, src_BKT, q_new)


def keep_mask(
    lengths_B: jax.Array, indices_BKS: jax.Array, T: int, *, num_sinks: int, window: int
) -> jax.Array:
  """``[B, K, T]`` bool: the slots a `KVPolicy` attends at a step of length `lengths_B`.

  The union of the ``num_sinks`` leading slots, the ``window`` slots before
  ``lengths_B`` and the valid entries (``0 <= i < lengths_B``) of ``indices_BKS``
  (``select``'s list, -1 for unused), all restricted to ``t < lengths_B``.

  Args:
    lengths_B: valid slots per sequence (B,).
    indices_BKS: selected slots (B, K, S) int, -1 where unused.
    T: buffer slots.
    num_sinks: leading slots always kept.
    window: most recent slots always kept.
  """
  B, K, _ = indices_BKS.shape
  t_11T = jnp.arange(T, dtype=jnp.int32)[None, None, :]
  L_B11 = lengths_B.astype(jnp.int32)[:, None, None]
  fixed_B1T = (t_11T < num_sinks) | (t_11T >= L_B11 - window)
  idx = indices_BKS.astype(jnp.int32)
  safe = jnp.where((idx >= 0) & (idx < L_B11), idx, T)
  b = jnp.broadcast_to(jnp.arange(B)[:, None, None], safe.shape)
  k = jnp.broadcast_to(jnp.arange(K)[None, :, None], safe.shape)
  sel_BKT = jnp.zeros((B, K, T + 1), jnp.bool_).at[b, k, safe].set(True)[..., :T]
  return (fixed_B1T | sel_BKT) & (t_11T < L_B11)


# ----------------------------------------------------------------------------
# Streaming runner for SmolLM2
# ----------------------------------------------------------------------------


class StreamTrace(NamedTuple):
  """What the buffer held at each decode step of `stream_nll` (after the append)."""

  lengths_SB: jax.Array  # (S, B) int32 tokens attended (buffer length, new token included)
  origin_SLBKC: jax.Array  # (S, L, B, K, C) int32 stream index of the token in each slot, -1 empty


def _max_kept(policy: base.KVPolicy) -> int:
  """The most tokens `_policy_keep` can keep: sinks + window - 1 + selection."""
  return policy.num_sinks + max(policy.window - 1, 0) + policy.num_selected


def _policy_keep(policy, k_BKTD, v_BKTD, q_BHTD, lengths_B):
  """``[B, K, T]`` bool: what `policy`, rebuilt on this buffer, attends next (new token aside)."""
  T = k_BKTD.shape[2]
  L_B = lengths_B.astype(jnp.int32)
  state = policy.init(k_BKTD, v_BKTD, L_B, q_BHTD)
  q_last_BHD = jnp.take_along_axis(q_BHTD, (L_B - 1)[:, None, None, None], axis=2)[:, :, 0]
  idx_BKS = policy.select(state, q_last_BHD, k_BKTD, L_B + 1)
  return keep_mask(L_B + 1, idx_BKS, T, num_sinks=policy.num_sinks, window=policy.window) & (
      jnp.arange(T, dtype=jnp.int32)[None, None, :] < L_B[:, None, None])


def _top_up(keep_LBKT: jax.Array, lengths_B: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Equal counts per sequence: short (layer, head)s also keep their newest other tokens.

  Returns the new mask and the shared count ``n_B`` (the largest count of the row).
  """
  T = keep_LBKT.shape[-1]
  valid_1B1T = (jnp.arange(T, dtype=jnp.int32)[None, :] < lengths_B[:, None])[None, :, None, :]
  keep = keep_LBKT & valid_1B1T
  count_LBK = jnp.sum(keep, axis=-1, dtype=jnp.int32)
  n_B = jnp.max(count_LBK, axis=(0, 2))
  deficit_LBK1 = (n_B[None, :, None] - count_LBK)[..., None]
  spare = valid_1B1T & ~keep
  rank = jnp.flip(jnp.cumsum(jnp.flip(spare, -1).astype(jnp.int32), axis=-1), -1)  # 1 = newest
  return keep | (spare & (rank <= deficit_LBK1)), n_B


def _record_query_attention(q_BHD, k_BKTD, v_BKTD, lengths_B, layer, q_BHCD):
  """`smollm2` attend_fn: full attention, and the new query stored in its slot."""
  slot_B = lengths_B.astype(jnp.int32) - 1
  at_B1C1 = (jnp.arange(q_BHCD.shape[2], dtype=jnp.int32)[None, :] == slot_B[:, None])[
      :, None, :, None]
  q_BHCD = jnp.where(at_B1C1, q_BHD[:, :, None, :].astype(q_BHCD.dtype), q_BHCD)
  return smollm2.full_attention(q_BHD, k_BKTD, v_BKTD, lengths_B, layer), q_BHCD


def _check(policy: Any, config: smollm2.SmolLM2Config, tokens_BT: Any, capacity: Any,
           prompt_len: Any) -> None:
  if not isinstance(policy, base.KVPolicy):
    raise TypeError(f"policy: expected a jaxsys.kv.KVPolicy, given {type(policy).__name__}")
  if (not hasattr(tokens_BT, "dtype") or not jnp.issubdtype(tokens_BT.dtype, jnp.integer)
      or tokens_BT.ndim != 2):
    raise ValueError(
        "tokens_BT: expected a 2-D (B, T) integer array, given"
        f" {getattr(tokens_BT, 'dtype', type(tokens_BT).__name__)} with shape"
        f" {getattr(tokens_BT, 'shape', None)}"
    )
  T = tokens_BT.shape[1]
  for name, value in (("capacity", capacity), ("prompt_len", prompt_len)):
    if not isinstance(value, int) or isinstance(value, bool):
      raise ValueError(f"{name}: expected an int, given {value!r}")
  if not 1 <= prompt_len < T:
    raise ValueError(
        f"prompt_len: expected in [1, {T}) (T = tokens_BT.shape[1]), given {prompt_len}")
  if capacity < policy.budget:
    raise ValueError(
        f"capacity ({capacity}) must be >= the {policy.name} policy's budget ({policy.budget}):"
        " the buffer must hold every token the policy attends"
    )
  if capacity <= _max_kept(policy):
    raise ValueError(
        f"capacity ({capacity}) must exceed the most tokens the {policy.name} policy can keep"
        f" at an eviction ({_max_kept(policy)} = sinks + window - 1 + selected), so an"
        " eviction frees a slot"
    )
  if capacity > config.context_length:
    raise ValueError(
        f"capacity ({capacity}) must be <= the model's context ({config.context_length}):"
        " positions inside the buffer run up to capacity - 1"
    )
  if prompt_len > capacity:
    raise ValueError(
        f"prompt_len ({prompt_len}) must be <= capacity ({capacity}): the prompt is"
        " prefilled into the buffer"
    )


@functools.partial(
    jax.jit, static_argnames=("config", "policy", "capacity", "prompt_len", "return_trace"))
def stream_nll(
    params: Mapping[str, Any],
    config: smollm2.SmolLM2Config,
    tokens_BT: jax.Array,
    *,
    policy: base.KVPolicy,
    capacity: int,
    prompt_len: int,
    return_trace: bool = False,
) -> jax.Array | tuple[jax.Array, StreamTrace]:
  """Teacher-forced NLL of a stream of any length in a buffer of `capacity` slots.

  StreamingLLM / Inf-MLLM (arXiv 2409.09086) streaming with SmolLM2: the first
  `prompt_len` tokens are prefilled into the buffer; every later token is fed
  by one `smollm2.decode_step` at position = buffer length; whenever the buffer
  is full, `policy` chooses what to keep and the buffer is compacted
  (`compact`), positions re-assigned to ``0 .. n-1``. Positions never exceed
  ``capacity - 1``, so the stream may run past the model's 8192-token context.
  See the module docstring for the eviction rule, the per-head compaction and
  how the policy state is rebuilt. One compilation per (shapes, policy,
  capacity, prompt_len): the decode steps run under one `lax.scan`.

  With ``capacity > T`` nothing is evicted and the result equals
  `smollm2.score_continuation` with full attention (to float32 rounding).

  Args:
    params: weights from `smollm2.load_smollm2`.
    config: the model config (static).
    tokens_BT: token ids (B, T), all rows of full length.
    policy: the eviction `KVPolicy` (static), e.g. ``streaming_llm(capacity)`` or
      ``inf_mllm(budget, chunk=c)`` with ``capacity = budget + c``.
    capacity: buffer slots C (static): ``policy.budget <= C <= context_length``
      and C above the most tokens the policy keeps.
    prompt_len: tokens prefilled (static), ``1 <= prompt_len <= min(C, T - 1)``.
    return_trace: also return a `StreamTrace` (static).

  Returns:
    ``nll_BN`` float32 (B, T - prompt_len): -log p(token t | kept context) for
    ``t = prompt_len .. T-1``; with `return_trace`, ``(nll_BN, trace)`` with
    one trace entry per decode step (S = T - prompt_len - 1).

  Raises:
    ValueError: a capacity below the policy's budget or above the context, a
      prompt that does not fit, or an Inf-MLLM ``retrieval_window`` larger than
      its recent window (its queries would not all be in the buffer).
    TypeError: `policy` is not a `KVPolicy`.

  Example:
    >>> config, params, _ = smollm2.load_smollm2()  # doctest: +SKIP
    >>> nll = stream_nll(params, config, ids_BT, capacity=256, prompt_len=16,  # doctest: +SKIP
    ...                  policy=streaming_llm.streaming_llm(256, num_sinks=4))
  """
  _check(policy, config, tokens_BT, capacity, prompt_len)
  B, T = tokens_BT.shape
  C, P, K, H, D = capacity, prompt_len, config.n_kv_heads, config.n_heads, config.head_dim
  dtype = params["embed_VM"].dtype
  state_shape = jax.eval_shape(
      policy.init, jax.ShapeDtypeStruct((B, K, C, D), dtype),
      jax.ShapeDtypeStruct((B, K, C, D), dtype), jax.ShapeDtypeStruct((B,), jnp.int32),
      jax.ShapeDtypeStruct((B, H, C, D), dtype))
  ring = getattr(state_shape, "queries_BHWD", None)  # Inf-MLLM's ring of the last W queries
  if ring is not None and ring.shape[2] > policy.window:
    raise ValueError(
        f"{policy.name}: retrieval_window ({ring.shape[2]}) must be <= recent ({policy.window})"
        " when streaming: only the recent window's queries are sure to be in the buffer"
    )

  tokens_BT = tokens_BT.astype(jnp.int32)
  lengths_B = jnp.full((B,), P, jnp.int32)
  logits_BV, cache, q_LBHPD = smollm2.prefill(
      params, config, tokens_BT[:, :P], lengths_B, max_len=C, return_queries=True)
  q_LBHCD = jnp.pad(q_LBHPD, ((0, 0), (0, 0), (0, 0), (0, C - P), (0, 0)))
  t_C = jnp.arange(C, dtype=jnp.int32)
  origin_LBKC = jnp.broadcast_to(
      jnp.where(t_C < P, t_C, -1)[None, None, None, :], (config.n_layers, B, K, C))

  def nll(logits_BV, next_B):
    logp_BV = jax.nn.log_softmax(logits_BV, axis=-1)
    return -jnp.take_along_axis(logp_BV, next_B[:, None], axis=1)[:, 0]

  def evict(buf):
    k, v, q, L_B, origin = buf
    keep = jax.vmap(lambda k, v, q: _policy_keep(policy, k, v, q, L_B))(k, v, q)
    keep, n_B = _top_up(keep, L_B)
    comp = jax.vmap(
        lambda k, v, keep, q: compact(k, v, keep, rope_base=config.rope_base, q_BHTD=q)
    )(k, v, keep, q)
    moved = jnp.take_along_axis(origin, jnp.maximum(comp.src_BKT, 0), axis=-1)
    moved = jnp.where(comp.src_BKT >= 0, moved, -1)
    full_B = L_B >= C
    f5 = full_B[None, :, None, None, None]
    return (jnp.where(f5, comp.k_BKTD, k), jnp.where(f5, comp.v_BKTD, v),
            jnp.where(f5, comp.q_BHTD, q), jnp.where(full_B, n_B, L_B),
            jnp.where(full_B[None, :, None, None], moved, origin))

  def step(buf, i):
    tok_B = lax.dynamic_index_in_dim(tokens_BT, i, axis=1, keepdims=False)
    nxt_B = lax.dynamic_index_in_dim(tokens_BT, i + 1, axis=1, keepdims=False)
    buf = lax.cond(jnp.any(buf[3] >= C), evict, lambda b: b, buf)
    k, v, q, L_B, origin = buf
    logits_BV, cache, q = smollm2.decode_step(
        params, config, smollm2.KVCache(k, v, L_B), tok_B,
        attend_fn=_record_query_attention, policy_state=q)
    at_1B1C = (t_C[None, :] == L_B[:, None])[None, :, None, :]
    origin = jnp.where(at_1B1C, i, origin)
    buf = (cache.k_LBKTD, cache.v_LBKTD, q, cache.lengths_B, origin)
    ys = (nll(logits_BV, nxt_B), cache.lengths_B, origin) if return_trace else nll(
        logits_BV, nxt_B)
    return buf, ys

  first_B = nll(logits_BV, tokens_BT[:, P])
  buf = (cache.k_LBKTD, cache.v_LBKTD, q_LBHCD, cache.lengths_B, origin_LBKC)
  _, ys = lax.scan(step, buf, jnp.arange(P, T - 1, dtype=jnp.int32))
  rest_SB = ys[0] if return_trace else ys
  nll_BN = jnp.concatenate([first_B[:, None], rest_SB.T], axis=1)
  if not return_trace:
    return nll_BN
  return nll_BN, StreamTrace(ys[1], ys[2])
