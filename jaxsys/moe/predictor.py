"""HOBBIT's cross-layer expert predictor: the current gate input through future gates.

HOBBIT (arXiv 2411.01433, "layer-level adaptive prefetching"; jaxsys notes
``papers/moe.md`` 1.1 (2)) observes that the gate inputs of neighbouring layers
are highly cosine-similar, so applying the *next* layers' routers to the *current*
layer's gate input predicts which experts those layers will pick, early enough to
prefetch them. Its "Stacking Computer" stacks the router matrices of the next p
layers and applies them in one matmul plus top-k, so the cost stays flat in the
depth p (p = 1-3 recommended). The paper reports 96% top-1 accuracy for layer +1
on Mixtral and about 90% for +2 and +3.

* `predict_experts`: ``logits[j] = h @ W[j]`` for the p stacked routers in ONE
  einsum, then `jaxsys.moe.routing.route_topk` on all of them at once;
* `prediction_accuracy`: top-1 hit rate and top-k overlap of predicted against
  actual experts;
* `trace_accuracy`: both, for every source layer and distance 1..p, from a
  recorded routing trace (`jaxsys.models.moe_lm.record_routing`).

Shape letters: T tokens, D gate-input width, E experts, K experts per token,
P prediction depth (layers ahead), L layers, N traced tokens.

>>> import jax.numpy as jnp
>>> h = jnp.array([[1.0, 0.0, 0.0]])                      # one token, D = 3
>>> w = jnp.stack([jnp.eye(3), jnp.eye(3)[:, ::-1]])       # two future routers, E = 3
>>> predict_experts(h, w, k=1).experts_PTK.tolist()       # argmax of h, then reversed
[[[0]], [[2]]]
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxsys.moe import routing

_HIGHEST = jax.lax.Precision.HIGHEST


class Prediction(NamedTuple):
  """Predicted routing of the next P layers."""

  logits_PTE: jax.Array  # [P, T, E] float32 router logits, layer j = h @ routers[j]
  experts_PTK: jax.Array  # [P, T, K] int32 predicted top-k experts, best first
  weights_PTK: jax.Array  # [P, T, K] float32 their renormalised softmax weights


class Accuracy(NamedTuple):
  """How well predicted experts match the ones actually routed."""

  top1_P: jax.Array  # [P] float32 fraction of tokens whose predicted top-1 is the actual top-1
  overlap_P: jax.Array  # [P] float32 mean |predicted top-k & actual top-k| / K


class TraceAccuracy(NamedTuple):
  """Predictor accuracy on a trace, per source layer and distance."""

  top1_LP: jax.Array  # [L, P] float32 source layer l predicting layer l + 1 + j; 0 if invalid
  overlap_LP: jax.Array  # [L, P] float32 likewise, top-k overlap
  valid_LP: jax.Array  # [L, P] bool, l + 1 + j < L
  top1_P: jax.Array  # [P] float32 mean over the valid source layers, per distance 1..P
  overlap_P: jax.Array  # [P] float32 likewise


def _check_float_array(name: str, x: jax.Array, ndim: int, dims: str) -> None:
  if x.ndim != ndim:
    raise ValueError(f"{name}: expected {ndim} dims {dims}, given shape {x.shape}")
  if not jnp.issubdtype(x.dtype, jnp.floating):
    raise TypeError(f"{name}: expected a floating dtype, given {x.dtype}")


def _check_int_array(name: str, x: jax.Array, ndim: int, dims: str) -> None:
  if x.ndim != ndim:
    raise ValueError(f"{name}: expected {ndim} dims {dims}, given shape {x.shape}")
  if not jnp.issubdtype(x.dtype, jnp.integer):
    raise TypeError(f"{name}: expected an integer dtype, given {x.dtype}")


@functools.partial(jax.jit, static_argnames=("k",))
def predict_experts(gate_input_TD: jax.Array, routers_PDE: jax.Array, *, k: int) -> Prediction:
  """Applies P future routers to the current gate input in one stacked matmul.

  ``logits[j, t] = gate_input[t] @ routers[j]`` is a single
  ``einsum("td,pde->pte")`` (one dot_general contracting D against the [D, P*E]
  stacked routers: HOBBIT's Stacking Computer), computed in float32 at the
  highest precision; then one `route_topk` over all P*T rows (softmax, top-k,
  renormalise; ties to the lower expert id, as the layers themselves route).

  Args:
    gate_input_TD: the current layer's router input (the normed hidden state).
    routers_PDE: the router matrices of the next P layers (`jaxsys.models.moe_lm
      .router_weights(model)[l + 1 : l + 1 + P]`).
    k: experts per token to predict, ``1 <= k <= E``.

  Returns:
    `Prediction`.

  >>> predict_experts(jnp.ones((4, 8)), jnp.ones((3, 8, 6)), k=2).experts_PTK.shape
  (3, 4, 2)
  """
  _check_float_array("gate_input_TD", gate_input_TD, 2, "[tokens, D]")
  _check_float_array("routers_PDE", routers_PDE, 3, "[depth, D, experts]")
  T, D = gate_input_TD.shape
  P, D_w, E = routers_PDE.shape
  if D_w != D:
    raise ValueError(
        f"routers_PDE: expected shape [depth, D={D}, experts] (D of gate_input_TD), given"
        f" {routers_PDE.shape}")
  if not isinstance(k, int) or isinstance(k, bool) or not 1 <= k <= E:
    raise ValueError(f"k: expected an int in [1, {E}] (experts of routers_PDE), given {k!r}")
  logits_PTE = jnp.einsum("td,pde->pte", gate_input_TD.astype(jnp.float32),
                          routers_PDE.astype(jnp.float32), precision=_HIGHEST)
  r = routing.route_topk(logits_PTE.reshape(P * T, E), k=k)
  return Prediction(logits_PTE, r.experts_TK.reshape(P, T, k), r.weights_TK.reshape(P, T, k))


@jax.jit
def prediction_accuracy(predicted_PTK: jax.Array, actual_PTK: jax.Array) -> Accuracy:
  """Top-1 hit rate and top-k overlap of predicted experts against the actual ones.

  Both sets are ordered best first (as `route_topk` and `record_routing` give them).
  ``top1`` is the fraction of tokens with ``predicted[.., 0] == actual[.., 0]``;
  ``overlap`` is the mean over tokens of ``|set(predicted) & set(actual)| / K``
  (ids within a token are distinct). The predicted K may differ from the actual
  K; the overlap divides by the actual K.

  Args:
    predicted_PTK: predicted expert ids, [P, T, K'] (or [T, K'] for one layer).
    actual_PTK: the experts actually routed, [P, T, K] (or [T, K]).

  Returns:
    `Accuracy` with [P] fields (scalars for 2-dim inputs).

  >>> a = prediction_accuracy(jnp.array([[0, 1], [2, 3]]), jnp.array([[0, 5], [3, 2]]))
  >>> a.top1_P.tolist(), a.overlap_P.tolist()   # top-1: 1 of 2; overlap: (1 + 2) / 4
  (0.5, 0.75)
  """
  if predicted_PTK.ndim not in (2, 3) or predicted_PTK.ndim != actual_PTK.ndim:
    raise ValueError(
        f"predicted_PTK, actual_PTK: expected both [depth, tokens, k] (or both [tokens, k]),"
        f" given shapes {predicted_PTK.shape} and {actual_PTK.shape}")
  _check_int_array("predicted_PTK", predicted_PTK, predicted_PTK.ndim, "[depth, tokens, k]")
  _check_int_array("actual_PTK", actual_PTK, actual_PTK.ndim, "[depth, tokens, k]")
  if predicted_PTK.shape[:-1] != actual_PTK.shape[:-1]:
    raise ValueError(
        f"predicted_PTK: expected leading dims {actual_PTK.shape[:-1]} (those of actual_PTK),"
        f" given {predicted_PTK.shape}")
  pred = predicted_PTK.astype(jnp.int32)
  act = actual_PTK.astype(jnp.int32)
  hit1 = (pred[..., 0] == act[..., 0]).astype(jnp.float32)
  member = jnp.any(pred[..., :, None] == act[..., None, :], axis=-1)  # [..., K']
  overlap = jnp.sum(member.astype(jnp.float32), axis=-1) / jnp.float32(act.shape[-1])
  return Accuracy(jnp.mean(hit1, axis=-1), jnp.mean(overlap, axis=-1))


@functools.partial(jax.jit, static_argnames=("depth",))
def trace_accuracy(
    gate_inputs_NLD: jax.Array,
    experts_NLK: jax.Array,
    routers_LDE: jax.Array,
    *,
    depth: int,
) -> TraceAccuracy:
  """The predictor's accuracy on a recorded trace, per source layer and distance.

  For every layer l and distance ``d = 1..depth``: predict layer ``l + d``'s
  experts with `predict_experts` (K of the trace) from layer l's gate input, using
  the routers of layers ``l+1 .. l+depth`` in one stacked matmul, and score them
  against the trace with `prediction_accuracy`. Pairs with ``l + d >= L`` are
  invalid (0, masked out of the per-distance mean).

  Args:
    gate_inputs_NLD: each layer's router input per token (`RoutingTrace.gate_inputs_NLD`).
    experts_NLK: the experts each layer routed (`RoutingTrace.ids_NLK`).
    routers_LDE: every layer's router matrix (`moe_lm.router_weights`).
    depth: P, layers ahead, ``1 <= P <= L - 1``.

  Returns:
    `TraceAccuracy`.
  """
  _check_float_array("gate_inputs_NLD", gate_inputs_NLD, 3, "[tokens, layers, D]")
  _check_int_array("experts_NLK", experts_NLK, 3, "[tokens, layers, k]")
  _check_float_array("routers_LDE", routers_LDE, 3, "[layers, D, experts]")
  N, L, D = gate_inputs_NLD.shape
  if experts_NLK.shape[:2] != (N, L):
    raise ValueError(
        f"experts_NLK: expected shape [tokens={N}, layers={L}, k] (of gate_inputs_NLD), given"
        f" {experts_NLK.shape}")
  if routers_LDE.shape[:2] != (L, D):
    raise ValueError(
        f"routers_LDE: expected shape [layers={L}, D={D}, experts] (of gate_inputs_NLD), given"
        f" {routers_LDE.shape}")
  if not isinstance(depth, int) or isinstance(depth, bool) or not 1 <= depth <= L - 1:
    raise ValueError(
        f"depth: expected an int in [1, {L - 1}] (layers - 1 = {L - 1}), given {depth!r}")
  K = experts_NLK.shape[2]
  top1, overlap, valid = [], [], []
  for l in range(L):
    targets = [min(l + d, L - 1) for d in range(1, depth + 1)]
    pred = predict_experts(gate_inputs_NLD[:, l], routers_LDE[jnp.asarray(targets)], k=K)
    actual_PNK = jnp.transpose(experts_NLK[:, jnp.asarray(targets)], (1, 0, 2))
    acc = prediction_accuracy(pred.experts_PTK, actual_PNK)
    ok = jnp.asarray([l + d < L for d in range(1, depth + 1)])
    top1.append(jnp.where(ok, acc.top1_P, jnp.float32(0)))
    overlap.append(jnp.where(ok, acc.overlap_P, jnp.float32(0)))
    valid.append(ok)
  top1_LP, overlap_LP, valid_LP = jnp.stack(top1), jnp.stack(overlap), jnp.stack(valid)
  count_P = jnp.sum(valid_LP.astype(jnp.float32), axis=0)
  return TraceAccuracy(top1_LP, overlap_LP, valid_LP,
                       jnp.sum(top1_LP, axis=0) / count_P, jnp.sum(overlap_LP, axis=0) / count_P)
