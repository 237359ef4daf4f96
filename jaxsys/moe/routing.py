"""MoE routers: which experts each token uses, and with what combine weight.

Every token-choice router returns a `Routing`: ``K`` expert slots per token, each
with an expert id, a combine weight and a mask (False for a slot a dynamic router
left unused). Expert-choice routing returns an `ExpertChoice` instead (each expert
picks tokens). All functions are pure and jitted; hyperparameters are static.

Rules (survey arXiv 2412.14219, Sec. 2 Eq. 1-4 and Table 4; jaxsys notes
``papers/moe.md`` 1.2, with the implementation each rule was checked against):

* `route_topk`: ``softmax(logits) -> TopK -> renormalise`` (survey Eq. 1-4);
  ``scoring="sigmoid"`` scores each expert independently (DeepSeek-V3).
* `route_group_limited`: DeepSeek group-limited routing; a bias chooses experts
  but the weights come from the pre-bias scores (MaxText ``deepseek_routing``).
  `update_expert_bias` is the auxiliary-loss-free balancing step.
* `route_expert_choice`: each expert takes its top-C tokens (Zhou et al. 2022).
  It reads future tokens, so it refuses ``causal=True`` (Flaxformer's docstring).
* `jitter`: multiplicative input noise ``U(1 - eps, 1 + eps)`` (Flaxformer).
* `route_top_p`: add experts by probability until the cumulative probability
  reaches ``p`` (Huang et al., arXiv 2403.07652).
* `route_adapmoe`: drop the 2nd expert when its renormalised weight is below a
  threshold (AdapMoE, arXiv 2408.10284, ``src/custom_layers.py``).
* `hobbit_score_classes`: HOBBIT's high / low / skip classes from the summed
  weight of the experts ranked above (HOBBIT, arXiv 2411.01433, Sec. 4.1).

Shape letters: T tokens, E experts, K expert slots per token, C tokens per expert.

>>> import jax.numpy as jnp
>>> from jaxsys.moe import routing
>>> r = routing.route_topk(jnp.log(jnp.array([[0.5, 0.3, 0.2]])), k=2)
>>> r.experts_TK.tolist(), [round(w, 3) for w in r.weights_TK[0].tolist()]
([[0, 1]], [0.625, 0.375])
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp

SCORINGS = ("softmax", "sigmoid")

# HOBBIT's classes for a selected expert on a cache miss.
HIGH = 0  # load the high-precision copy
LOW = 1  # load the low-precision copy
SKIP = 2  # do not compute the expert


class Routing(NamedTuple):
  """A token-choice routing decision."""

  weights_TK: jax.Array  # [T, K] float32 combine weight per slot; 0 where mask_TK is False
  experts_TK: jax.Array  # [T, K] int32 expert id per slot, distinct within a token
  mask_TK: jax.Array  # [T, K] bool, False for a slot the router left unused
  probs_TE: jax.Array  # [T, E] float32 router scores before any bias (softmax or sigmoid)
  logits_TE: jax.Array  # [T, E] the router logits as given


class ExpertChoice(NamedTuple):
  """An expert-choice routing decision: each expert picks C tokens."""

  weights_EC: jax.Array  # [E, C] float32 probs_TE[token, e] of each picked token
  tokens_EC: jax.Array  # [E, C] int32 token picked by expert e, most probable first
  probs_TE: jax.Array  # [T, E] float32 softmax over experts
  logits_TE: jax.Array  # [T, E] the router logits as given


class ScoreClasses(NamedTuple):
  """HOBBIT's per-slot unimportance score and loading class."""

  scores_TK: jax.Array  # [T, K] float32 summed normalised weight of the slots ranked above
  classes_TK: jax.Array  # [T, K] int32 HIGH, LOW or SKIP (SKIP for unused slots)


# ----------------------------------------------------------------------------- checks


def _check_logits(logits_TE: jax.Array, name: str = "logits_TE") -> None:
  if logits_TE.ndim != 2:
    raise ValueError(
        f"{name}: expected 2 dims [tokens, experts], given shape {logits_TE.shape}")
  if not jnp.issubdtype(logits_TE.dtype, jnp.floating):
    raise TypeError(f"{name}: expected a floating dtype, given {logits_TE.dtype}")


def _check_int(name: str, value, lo: int, hi: int | None = None, hi_what: str = "") -> None:
  if not isinstance(value, int) or isinstance(value, bool) or value < lo:
    raise ValueError(f"{name}: expected an int >= {lo}, given {value!r}")
  if hi is not None and value > hi:
    raise ValueError(f"{name}: expected at most {hi_what} ({hi}), given {value}")


def _check_k(k, num_experts: int, name: str = "k") -> None:
  _check_int(name, k, 1, num_experts, "the number of experts")


def _check_float(name: str, value, lo: float, hi: float | None = None, *,
                 lo_open: bool = False, hi_open: bool = False) -> float:
  """`value` as a float in the interval; a clear error otherwise."""
  lb, rb = ("(" if lo_open else "["), (")" if hi_open else "]")
  where = f"in {lb}{lo}, {hi}{rb}" if hi is not None else (f"> {lo}" if lo_open else f">= {lo}")
  if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
    raise ValueError(f"{name}: expected a finite number {where}, given {value!r}")
  v = float(value)
  bad = (v <= lo if lo_open else v < lo) or (
      hi is not None and (v >= hi if hi_open else v > hi))
  if bad:
    raise ValueError(f"{name}: expected a number {where}, given {value!r}")
  return v


def _check_slots(name: str, x_TK: jax.Array, like_TK: jax.Array, like_name: str) -> None:
  if x_TK.shape != like_TK.shape:
    raise ValueError(
        f"{name}: expected the shape of {like_name} {like_TK.shape}, given {x_TK.shape}")


def _scores(logits_TE: jax.Array, scoring: str) -> jax.Array:
  x = logits_TE.astype(jnp.float32)
  if scoring == "softmax":
    return jax.nn.softmax(x, axis=-1)
  if scoring == "sigmoid":
    return jax.nn.sigmoid(x)
  raise ValueError(f"scoring: expected one of {SCORINGS}, given {scoring!r}")


def _renormalise(w_TK: jax.Array, mask_TK: jax.Array) -> jax.Array:
  """Weights over the active slots scaled to sum to 1 (rows with none stay 0)."""
  w_TK = jnp.where(mask_TK, w_TK, jnp.float32(0))
  z_T1 = jnp.sum(w_TK, axis=-1, keepdims=True)
  return w_TK / jnp.where(z_T1 > 0, z_T1, jnp.float32(1))


def _exclusive_cumsum(x_TK: jax.Array) -> jax.Array:
  """``out[:, j] = sum(x[:, :j])``: each slot's sum over the slots before it."""
  c_TK = jnp.cumsum(x_TK, axis=-1)
  return jnp.concatenate([jnp.zeros_like(c_TK[:, :1]), c_TK[:, :-1]], axis=-1)


# ---------------------------------------------------------------------------- routers


@functools.partial(jax.jit, static_argnames=("k", "scoring", "renormalize"))
def route_topk(
    logits_TE: jax.Array, *, k: int, scoring: str = "softmax", renormalize: bool = True
) -> Routing:
  """Top-k routing: score, keep the k best experts, renormalise their weights.

  ``p = softmax(logits)`` (or ``sigmoid(logits)``), ``experts = TopK(p)`` and
  ``weights = p[experts] / sum(p[experts])`` (survey arXiv 2412.14219, Eq. 1-4).
  Ties go to the lower expert id (`jax.lax.top_k`).

  Args:
    logits_TE: router logits.
    k: experts per token, ``1 <= k <= E``.
    scoring: "softmax" (Mixtral, Switch) or "sigmoid" (DeepSeek-V3).
    renormalize: scale the k selected weights to sum to 1.

  Returns:
    `Routing`, every slot active, experts in decreasing score order.

  >>> route_topk(jnp.zeros((4, 8)), k=2).weights_TK.shape
  (4, 2)
  """
  _check_logits(logits_TE)
  _check_k(k, logits_TE.shape[1])
  probs_TE = _scores(logits_TE, scoring)
  w_TK, experts_TK = jax.lax.top_k(probs_TE, k)
  mask_TK = jnp.ones(w_TK.shape, bool)
  if renormalize:
    w_TK = _renormalise(w_TK, mask_TK)
  return Routing(w_TK, experts_TK.astype(jnp.int32), mask_TK, probs_TE, logits_TE)


@functools.partial(
    jax.jit,
    static_argnames=("k", "num_groups", "top_groups", "scoring", "renormalize", "scale"))
def route_group_limited(
    logits_TE: jax.Array,
    bias_E: jax.Array | None = None,
    *,
    k: int,
    num_groups: int,
    top_groups: int,
    scoring: str = "sigmoid",
    renormalize: bool = True,
    scale: float = 1.0,
) -> Routing:
  """DeepSeek group-limited routing with a selection-only bias.

  The experts form ``num_groups`` contiguous groups of ``E / num_groups``. With
  ``s = scores(logits)`` and ``b = s + bias``: each group is scored by the sum of
  its two largest ``b`` (its only one, for groups of one expert); the
  ``top_groups`` best groups are kept; the k largest ``b`` inside them are the
  experts. Their weights are the pre-bias ``s``, renormalised when
  ``renormalize``, times ``scale`` (DeepSeek-V3's routed scaling factor). This is
  MaxText's ``deepseek_routing``: selection on post-bias scores, weights from
  pre-bias scores (jaxsys ``papers/moe.md`` 1.2; survey arXiv 2412.14219 Sec. 4).

  Args:
    logits_TE: router logits.
    bias_E: per-expert selection bias (see `update_expert_bias`); None for none.
    k: experts per token, at most ``top_groups * E / num_groups``.
    num_groups: groups of experts; must divide E.
    top_groups: groups kept per token, ``1 <= top_groups <= num_groups``.
    scoring: "sigmoid" (DeepSeek-V3) or "softmax" (DeepSeek-V2).
    renormalize: scale the k pre-bias weights to sum to 1.
    scale: factor applied to the weights after renormalising.

  Returns:
    `Routing` with ``probs_TE`` the pre-bias scores.
  """
  _check_logits(logits_TE)
  T, E = logits_TE.shape
  _check_int("num_groups", num_groups, 1, E, "the number of experts")
  if E % num_groups:
    raise ValueError(
        f"num_groups: expected a divisor of the number of experts ({E}), given {num_groups}")
  _check_int("top_groups", top_groups, 1, num_groups, "num_groups")
  group_size = E // num_groups
  _check_int("k", k, 1, top_groups * group_size,
             f"top_groups * experts per group = {top_groups} * {group_size}")
  _check_float("scale", scale, 0.0, lo_open=True)
  if bias_E is None:
    bias_E = jnp.zeros((E,), jnp.float32)
  if bias_E.shape != (E,):
    raise ValueError(
        f"bias_E: expected shape ({E},) (one bias per expert of logits_TE), given {bias_E.shape}")
  probs_TE = _scores(logits_TE, scoring)
  biased_TE = probs_TE + bias_E.astype(jnp.float32)[None, :]
  biased_TGS = biased_TE.reshape(T, num_groups, group_size)
  top2_TGS, _ = jax.lax.top_k(biased_TGS, min(2, group_size))
  group_score_TG = jnp.sum(top2_TGS, axis=-1)
  _, groups_TH = jax.lax.top_k(group_score_TG, top_groups)
  keep_TG = jnp.any(
      groups_TH[:, :, None] == jnp.arange(num_groups, dtype=groups_TH.dtype)[None, None, :],
      axis=1)
  keep_TE = jnp.repeat(keep_TG, group_size, axis=1)
  _, experts_TK = jax.lax.top_k(jnp.where(keep_TE, biased_TE, -jnp.inf), k)
  w_TK = jnp.take_along_axis(probs_TE, experts_TK, axis=-1)
  mask_TK = jnp.ones(w_TK.shape, bool)
  if renormalize:
    w_TK = _renormalise(w_TK, mask_TK)
  w_TK = w_TK * jnp.float32(scale)
  return Routing(w_TK, experts_TK.astype(jnp.int32), mask_TK, probs_TE, logits_TE)


@jax.jit
def update_expert_bias(
    bias_E: jax.Array,
    experts_TK: jax.Array,
    mask_TK: jax.Array | None = None,
    *,
    rate: float | jax.Array,
) -> jax.Array:
  """Auxiliary-loss-free balancing: ``bias_e += rate * sign(mean load - load_e)``.

  ``load_e`` counts the active slots routed to expert e in this batch; the mean is
  over experts. Overloaded experts lose bias, underloaded ones gain it
  (DeepSeek-V3, arXiv 2412.19437 Sec. 2.1.2; survey arXiv 2412.14219 Sec. 4).
  `rate` is traced, so a schedule does not recompile.

  Args:
    bias_E: current bias, one per expert.
    experts_TK: expert ids chosen this batch (from `route_group_limited`).
    mask_TK: active slots (default all).
    rate: the update speed u (DeepSeek-V3 uses 0.001).

  Returns:
    The new ``bias_E``, same dtype.
  """
  if bias_E.ndim != 1:
    raise ValueError(f"bias_E: expected 1 dim [experts], given shape {bias_E.shape}")
  if experts_TK.ndim != 2 or not jnp.issubdtype(experts_TK.dtype, jnp.integer):
    raise ValueError(
        f"experts_TK: expected integer [tokens, k], given {experts_TK.dtype} {experts_TK.shape}")
  if mask_TK is None:
    mask_TK = jnp.ones(experts_TK.shape, bool)
  _check_slots("mask_TK", mask_TK, experts_TK, "experts_TK")
  E = bias_E.shape[0]
  load_E = jnp.zeros((E,), jnp.float32).at[experts_TK.reshape(-1)].add(
      mask_TK.reshape(-1).astype(jnp.float32), mode="drop")
  mean = jnp.mean(load_E)
  step_E = jnp.asarray(rate, jnp.float32) * jnp.sign(mean - load_E)
  return (bias_E.astype(jnp.float32) + step_E).astype(bias_E.dtype)


@functools.partial(jax.jit, static_argnames=("capacity", "causal"))
def route_expert_choice(logits_TE: jax.Array, *, capacity: int, causal: bool) -> ExpertChoice:
  """Expert-choice routing: each expert takes its ``capacity`` most probable tokens.

  ``p = softmax(logits)`` over experts; expert e picks ``TopK(p[:, e], C)``
  (Zhou et al. 2022, arXiv 2202.09368; survey arXiv 2412.14219 Sec. 4). Loads are
  exactly C per expert, with no auxiliary loss; a token may get 0 or several
  experts. An expert's choice depends on every token of the batch, future ones
  included, so this is not causal-safe in a decoder (Flaxformer's
  ``ExpertsChooseMaskedRouter`` docstring): ``causal=True`` raises.

  Args:
    logits_TE: router logits.
    capacity: tokens per expert C, ``1 <= C <= T``.
    causal: whether the caller is an autoregressive decoder; must be False.

  Returns:
    `ExpertChoice`.
  """
  if not isinstance(causal, bool):
    raise ValueError(f"causal: expected a bool, given {causal!r}")
  if causal:
    raise ValueError(
        "causal: expert-choice routing is not causal-safe (each expert ranks all tokens of"
        " the batch, future ones included), so it cannot serve an autoregressive decoder;"
        " expected causal=False, given causal=True. Use a token-choice router (route_topk)")
  _check_logits(logits_TE)
  T = logits_TE.shape[0]
  _check_int("capacity", capacity, 1, T, "the number of tokens")
  probs_TE = _scores(logits_TE, "softmax")
  w_EC, tokens_EC = jax.lax.top_k(probs_TE.T, capacity)
  return ExpertChoice(w_EC, tokens_EC.astype(jnp.int32), probs_TE, logits_TE)


@functools.partial(jax.jit, static_argnames=("eps",))
def jitter(key: jax.Array, x: jax.Array, *, eps: float) -> jax.Array:
  """Multiplicative input noise: ``x * U(1 - eps, 1 + eps)``, elementwise.

  Applied to the router input during training (Flaxformer ``jitter_noise``;
  survey arXiv 2412.14219 Sec. 4). The key is explicit; the same key gives the
  same noise.

  Args:
    key: a PRNG key.
    x: a floating array (usually the router input ``x_TD``).
    eps: noise half-width, ``0 <= eps < 1``.

  Returns:
    The jittered ``x``, same shape and dtype.
  """
  _check_float("eps", eps, 0.0, 1.0, hi_open=True)
  if not jnp.issubdtype(x.dtype, jnp.floating):
    raise TypeError(f"x: expected a floating dtype, given {x.dtype}")
  noise = jax.random.uniform(key, x.shape, x.dtype, 1.0 - eps, 1.0 + eps)
  return x * noise


@functools.partial(jax.jit, static_argnames=("p", "max_k", "renormalize"))
def route_top_p(
    logits_TE: jax.Array, *, p: float, max_k: int, renormalize: bool = True
) -> Routing:
  """Top-p (dynamic) routing: experts by probability until their sum reaches p.

  With ``softmax`` probabilities sorted in decreasing order, slot j is used when
  the probability of the slots before it is still below p, i.e. experts are added
  until the cumulative probability is ``>= p`` (Huang et al., arXiv 2403.07652;
  survey arXiv 2412.14219 Table 4). At most ``max_k`` experts (a static shape);
  the unused slots have ``mask_TK`` False and weight 0. The first slot is always
  used.

  Args:
    logits_TE: router logits.
    p: probability mass to cover, ``0 < p <= 1``.
    max_k: the most experts a token may use, ``1 <= max_k <= E``.
    renormalize: scale the used weights to sum to 1 (else the raw probabilities).

  Returns:
    `Routing` with K = max_k.
  """
  _check_logits(logits_TE)
  _check_float("p", p, 0.0, 1.0, lo_open=True)
  _check_k(max_k, logits_TE.shape[1], name="max_k")
  probs_TE = _scores(logits_TE, "softmax")
  w_TK, experts_TK = jax.lax.top_k(probs_TE, max_k)
  mask_TK = _exclusive_cumsum(w_TK) < jnp.float32(p)
  w_TK = _renormalise(w_TK, mask_TK) if renormalize else jnp.where(mask_TK, w_TK, 0.0)
  return Routing(w_TK, experts_TK.astype(jnp.int32), mask_TK, probs_TE, logits_TE)


@functools.partial(jax.jit, static_argnames=("threshold",))
def route_adapmoe(logits_TE: jax.Array, *, threshold: float) -> Routing:
  """AdapMoE threshold gating: top-2, keeping the 2nd expert only if it matters.

  Top-2 softmax routing with renormalised weights ``(w1, w2)``; the 2nd slot is
  kept when ``w2 >= threshold`` and otherwise dropped, leaving the 1st with weight
  1 (AdapMoE, arXiv 2408.10284: ``src/custom_layers.py`` compares the renormalised
  2nd weight; its per-layer threshold is ``t_l = sqrt(0.005 / H_l)`` from a
  Hessian sensitivity H_l). ``threshold = 0`` is plain top-2.

  Args:
    logits_TE: router logits (E >= 2).
    threshold: the least renormalised weight a 2nd expert needs, ``>= 0``.

  Returns:
    `Routing` with K = 2.
  """
  _check_logits(logits_TE)
  _check_k(2, logits_TE.shape[1], name="k (AdapMoE routes top-2)")
  _check_float("threshold", threshold, 0.0)
  r = route_topk(logits_TE, k=2)
  keep2_T = r.weights_TK[:, 1] >= jnp.float32(threshold)
  mask_TK = jnp.stack([jnp.ones_like(keep2_T), keep2_T], axis=1)
  return r._replace(weights_TK=_renormalise(r.weights_TK, mask_TK), mask_TK=mask_TK)


@functools.partial(jax.jit, static_argnames=("t1", "t2"))
def hobbit_score_classes(
    weights_TK: jax.Array, mask_TK: jax.Array | None = None, *, t1: float, t2: float
) -> ScoreClasses:
  """HOBBIT's token-level classes: load high precision, low precision, or skip.

  A token's active slots are normalised to sum to 1 and sorted by weight,
  decreasing (ties: lower slot first). Slot i's unimportance score is the summed
  weight of the slots ranked above it, ``s_i = sum_{j<i} g_j`` (so the top-1 has
  ``s = 0``). Classes (HOBBIT, arXiv 2411.01433 Sec. 4.1, as transcribed in jaxsys
  ``papers/moe.md`` 1.1): ``s <= t1`` HIGH, ``t1 < s <= t2`` LOW, ``s > t2`` SKIP.
  With ``t1 >= 0`` the top-1 expert is always HIGH. Unused slots are SKIP (their
  score is the token's whole weight, 1). HOBBIT uses t1 = 0.6, t2 = 0.9 on Mixtral.

  Args:
    weights_TK: combine weights (e.g. `Routing.weights_TK`).
    mask_TK: active slots (default all).
    t1: high/low boundary, ``0 <= t1 <= t2``.
    t2: low/skip boundary.

  Returns:
    `ScoreClasses`.

  >>> c = hobbit_score_classes(jnp.array([[0.5, 0.25, 0.25]]), t1=0.5, t2=0.6)
  >>> c.scores_TK.tolist(), c.classes_TK.tolist()
  ([[0.0, 0.5, 0.75]], [[0, 0, 2]])
  """
  t1 = _check_float("t1", t1, 0.0)
  t2 = _check_float("t2", t2, 0.0)
  if t1 > t2:
    raise ValueError(f"t1, t2: expected t1 <= t2, given t1={t1} > t2={t2}")
  if weights_TK.ndim != 2 or not jnp.issubdtype(weights_TK.dtype, jnp.floating):
    raise ValueError(
        f"weights_TK: expected floating [tokens, k], given {weights_TK.dtype} {weights_TK.shape}")
  if mask_TK is None:
    mask_TK = jnp.ones(weights_TK.shape, bool)
  _check_slots("mask_TK", mask_TK, weights_TK, "weights_TK")
  g_TK = _renormalise(weights_TK.astype(jnp.float32), mask_TK)
  order_TK = jnp.argsort(jnp.where(mask_TK, -g_TK, jnp.inf), axis=-1, stable=True)
  s_sorted_TK = _exclusive_cumsum(jnp.take_along_axis(g_TK, order_TK, axis=-1))
  inverse_TK = jnp.argsort(order_TK, axis=-1)
  s_TK = jnp.take_along_axis(s_sorted_TK, inverse_TK, axis=-1)
  classes_TK = jnp.where(s_TK <= jnp.float32(t1), HIGH,
                         jnp.where(s_TK <= jnp.float32(t2), LOW, SKIP))
  classes_TK = jnp.where(mask_TK, classes_TK, SKIP).astype(jnp.int32)
  return ScoreClasses(s_TK, classes_TK)
