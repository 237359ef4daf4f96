"""`MoE`: a Flax NNX mixture-of-experts feed-forward layer over the pure functions.

A thin module (DESIGN.md, "Flax layers are thin wrappers"): it owns the router
and the stacked expert weights and calls

* `jaxsys.moe.routing.route_topk` for the top-k softmax routing (survey arXiv
  2412.14219 Eq. 1-4: ``softmax -> TopK -> renormalise``), with optional
  `jaxsys.moe.routing.jitter` on the router input (Flaxformer);
* `jaxsys.moe.dispatch.expert_mlp` for the SwiGLU experts, with its backend
  switch ("capacity_einsum", "ragged_dot", "pallas");
* `jaxsys.moe.losses.load_balance_loss` and `router_z_loss` for the auxiliary
  losses, already multiplied by their coefficients.

Each expert is SwiGLU: ``FFN_e(x) = (silu(x W_gate[e]) * (x W_in[e])) W_out[e]``,
and the layer computes ``y[t] = sum_k w[t, k] FFN_{e[t, k]}(x[t])``. The aux dict
also returns the `Routing` and the router's input, so a caller can trace which
experts each token used (HOBBIT, arXiv 2411.01433, and
`jaxsys.models.moe_lm.record_routing`).

Shape letters: T tokens, D model width, F expert hidden width, E experts, K
experts per token.

>>> import jax.numpy as jnp
>>> from flax import nnx
>>> moe = MoE(8, 16, num_experts=4, top_k=2, rngs=nnx.Rngs(0))
>>> y, aux = moe(jnp.ones((2, 3, 8)))
>>> y.shape, aux["routing"].experts_TK.shape
((2, 3, 8), (6, 2))
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from jaxsys.moe import dispatch
from jaxsys.moe import losses
from jaxsys.moe import routing as routing_lib

_HIGHEST = jax.lax.Precision.HIGHEST


def _check_positive_int(name: str, value: Any) -> int:
  if not isinstance(value, int) or isinstance(value, bool) or value < 1:
    raise ValueError(f"{name}: expected an int >= 1, given {value!r}")
  return value


def _check_nonnegative(name: str, value: Any, hi: float | None = None) -> float:
  ok = isinstance(value, (int, float)) and not isinstance(value, bool)
  if not ok or not value >= 0 or (hi is not None and not value < hi):
    where = f"in [0, {hi})" if hi is not None else ">= 0"
    raise ValueError(f"{name}: expected a number {where}, given {value!r}")
  return float(value)


class MoE(nnx.Module):
  """Top-k routed SwiGLU experts with a linear router.

  Attributes:
    router: `nnx.Linear` D -> E without bias; ``router.kernel`` is [D, E].
    w_in_EDF: `nnx.Param` [E, D, F], the "up" projection of each expert.
    w_gate_EDF: `nnx.Param` [E, D, F], the SwiGLU gate projection.
    w_out_EFD: `nnx.Param` [E, F, D], the "down" projection.
    num_experts, top_k, backend, capacity_factor, jitter_eps,
    load_balance_weight, z_loss_weight, dtype, interpret: static settings.
  """

  def __init__(
      self,
      d_model: int,
      d_ff: int,
      *,
      num_experts: int,
      top_k: int,
      backend: str = "capacity_einsum",
      capacity_factor: float | None = 2.0,
      jitter_eps: float = 0.0,
      load_balance_weight: float = 0.01,
      z_loss_weight: float = 1e-3,
      dtype: Any = jnp.float32,
      param_dtype: Any = jnp.float32,
      interpret: bool | None = None,
      rngs: nnx.Rngs,
  ):
    """Builds the router and the experts.

    Args:
      d_model: D, the width of the tokens.
      d_ff: F, each expert's hidden width.
      num_experts: E.
      top_k: K, experts per token, ``1 <= K <= E``.
      backend: `jaxsys.moe.dispatch.BACKENDS`: "capacity_einsum" (fast on CPU, may
        drop tokens past capacity), "ragged_dot" (exact) or "pallas".
      capacity_factor: for "capacity_einsum": cf > 0, or -1 / None for dropless
        (see `jaxsys.moe.dispatch.capacity`).
      jitter_eps: multiplicative router-input noise ``U(1 - eps, 1 + eps)``,
        applied only when a ``jitter_key`` is passed to the call; 0 for none.
      load_balance_weight: coefficient of the Switch load-balance loss.
      z_loss_weight: coefficient of the router z-loss.
      dtype: compute dtype of the experts (the router runs in float32).
      param_dtype: dtype of the weights.
      interpret: for backend "pallas": run the kernel in interpret mode.
      rngs: initialisation keys (stream "params").

    Raises:
      ValueError: a size that is not a positive int, ``top_k > num_experts``,
        an unknown backend, a bad capacity factor or jitter.
    """
    _check_positive_int("d_model", d_model)
    _check_positive_int("d_ff", d_ff)
    _check_positive_int("num_experts", num_experts)
    _check_positive_int("top_k", top_k)
    if top_k > num_experts:
      raise ValueError(
          f"top_k: expected at most num_experts ({num_experts}), given {top_k}")
    if backend not in dispatch.BACKENDS:
      raise ValueError(f"backend: expected one of {dispatch.BACKENDS}, given {backend!r}")
    dispatch.capacity(1, num_experts, top_k, capacity_factor)  # validates cf
    self.jitter_eps = _check_nonnegative("jitter_eps", jitter_eps, 1.0)
    self.load_balance_weight = _check_nonnegative("load_balance_weight", load_balance_weight)
    self.z_loss_weight = _check_nonnegative("z_loss_weight", z_loss_weight)
    self.num_experts = num_experts
    self.top_k = top_k
    self.backend = backend
    self.capacity_factor = capacity_factor
    self.dtype = dtype
    self.interpret = interpret

    self.router = nnx.Linear(
        d_model, num_experts, use_bias=False, dtype=jnp.float32, param_dtype=param_dtype,
        precision=_HIGHEST, kernel_init=nnx.initializers.normal(d_model ** -0.5),
        rngs=rngs)
    init_in = nnx.initializers.variance_scaling(
        1.0, "fan_in", "truncated_normal", in_axis=-2, out_axis=-1, batch_axis=(0,))
    key_in, key_gate, key_out = rngs.params(), rngs.params(), rngs.params()
    self.w_in_EDF = nnx.Param(init_in(key_in, (num_experts, d_model, d_ff), param_dtype))
    self.w_gate_EDF = nnx.Param(init_in(key_gate, (num_experts, d_model, d_ff), param_dtype))
    self.w_out_EFD = nnx.Param(init_in(key_out, (num_experts, d_ff, d_model), param_dtype))

  def router_logits(self, x_TD: jax.Array) -> jax.Array:
    """``x_TD @ router.kernel`` in float32: the [T, E] router logits."""
    return self.router(x_TD.astype(jnp.float32))

  def __call__(
      self, x: jax.Array, *, jitter_key: jax.Array | None = None, dropless: bool = False
  ) -> tuple[jax.Array, dict[str, Any]]:
    """Routes every token to its top-k experts and sums their weighted outputs.

    Args:
      x: tokens ``[..., D]`` (any leading dims; they are flattened to T).
      jitter_key: a PRNG key; when given and ``jitter_eps > 0`` the router input
        is jittered (training). None: deterministic.
      dropless: ignore ``capacity_factor`` and drop nothing (inference and
        tracing: then a token's output does not depend on the other tokens of
        the batch).

    Returns:
      ``(y, aux)``: ``y`` with the shape of ``x`` (in ``dtype``), and aux with
      ``"load_balance_loss"``, ``"z_loss"`` (float32 scalars, already weighted),
      ``"drop_rate"`` (float32 fraction of (token, slot)s dropped for capacity),
      ``"routing"`` (the `jaxsys.moe.routing.Routing` over the T flattened
      tokens) and ``"gate_input_TD"`` (the [T, D] float32 router input).
    """
    D = self.w_in_EDF.shape[1]
    if x.ndim < 1 or x.shape[-1] != D:
      raise ValueError(f"x: expected shape [..., D={D}] (d_model of the MoE), given {x.shape}")
    if not jnp.issubdtype(x.dtype, jnp.floating):
      raise TypeError(f"x: expected a floating dtype, given {x.dtype}")
    x_TD = x.reshape(-1, D)
    gate_in_TD = x_TD.astype(jnp.float32)
    if jitter_key is not None and self.jitter_eps > 0:
      gate_in_TD = routing_lib.jitter(jitter_key, gate_in_TD, eps=self.jitter_eps)
    logits_TE = self.router_logits(gate_in_TD)
    r = routing_lib.route_topk(logits_TE, k=self.top_k)
    w = [p[...].astype(self.dtype) for p in (self.w_in_EDF, self.w_out_EFD, self.w_gate_EDF)]
    y_TD, drop_rate = dispatch.expert_mlp(
        x_TD.astype(self.dtype), r, w[0], w[1], w[2], backend=self.backend,
        capacity_factor=None if dropless else self.capacity_factor, activation="silu",
        interpret=self.interpret)
    aux = {
        "load_balance_loss": losses.load_balance_loss(
            r.probs_TE, r.experts_TK, weight=self.load_balance_weight),
        "z_loss": losses.router_z_loss(logits_TE, weight=self.z_loss_weight),
        "drop_rate": drop_rate,
        "routing": r,
        "gate_input_TD": gate_in_TD,
    }
    return y_TD.reshape(x.shape[:-1] + (D,)), aux
