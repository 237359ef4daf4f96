"""MoE router auxiliary losses: Switch load balance and router z-loss.

Both are pure, jitted, differentiable scalars (float32), to be added to the
training loss (survey arXiv 2412.14219 Sec. 4, "load balancing"; jaxsys notes
``papers/moe.md`` 1.2). For the auxiliary-loss-free alternative see
`jaxsys.moe.routing.update_expert_bias`.

>>> import jax.numpy as jnp
>>> from jaxsys.moe import losses
>>> probs = jnp.full((4, 2), 0.5); experts = jnp.array([[0], [1], [0], [1]])
>>> float(losses.load_balance_loss(probs, experts, weight=1.0))   # balanced, K = 1
1.0
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp


@functools.partial(jax.jit, static_argnames=("weight",))
def load_balance_loss(
    probs_TE: jax.Array,
    experts_TK: jax.Array,
    mask_TK: jax.Array | None = None,
    *,
    weight: float = 0.01,
) -> jax.Array:
  """Switch Transformer load-balance loss, with MaxText's normalisation.

  ``f_e = (1/T) * #{(t, k) active : experts[t, k] = e}`` (the fraction of tokens
  routed to e, counting each of a token's K choices, so ``sum_e f_e = K``),
  ``P_e = (1/T) * sum_t probs[t, e]`` (mean router probability), and

      loss = weight * E**2 * mean_e(f_e * P_e) = weight * E * sum_e f_e * P_e.

  This is MaxText's ``load_balance_loss`` (``mean(density * density_prob) * E**2 *
  w``, default w = 0.01, MaxText PR #860), which for K = 1 is the Switch
  Transformer loss ``alpha * E * sum_e f_e P_e`` (Fedus et al., arXiv 2101.03961
  Eq. 4). A perfectly balanced router (``f_e = K/E``, ``P_e = 1/E``) gives
  ``weight * K``, the value the loss pushes towards. MaxText averages
  per sequence and then over the batch; pass one sequence (or a flattened batch)
  as T here.

  Args:
    probs_TE: router probabilities (`Routing.probs_TE`, softmax, pre-bias).
    experts_TK: selected experts.
    mask_TK: active slots (default all); inactive ones are not counted in f.
    weight: the loss coefficient alpha.

  Returns:
    Scalar float32 loss; differentiable in ``probs_TE`` (f is a count).
  """
  if probs_TE.ndim != 2 or not jnp.issubdtype(probs_TE.dtype, jnp.floating):
    raise ValueError(
        f"probs_TE: expected floating [tokens, experts], given {probs_TE.dtype} {probs_TE.shape}")
  T, E = probs_TE.shape
  if experts_TK.ndim != 2 or experts_TK.shape[0] != T:
    raise ValueError(
        f"experts_TK: expected shape [tokens={T}, k] (tokens of probs_TE), given"
        f" {experts_TK.shape}")
  if not jnp.issubdtype(experts_TK.dtype, jnp.integer):
    raise TypeError(f"experts_TK: expected an integer dtype, given {experts_TK.dtype}")
  if mask_TK is None:
    mask_TK = jnp.ones(experts_TK.shape, bool)
  if mask_TK.shape != experts_TK.shape:
    raise ValueError(
        f"mask_TK: expected the shape of experts_TK {experts_TK.shape}, given {mask_TK.shape}")
  counts_E = jnp.zeros((E,), jnp.float32).at[experts_TK.reshape(-1)].add(
      mask_TK.reshape(-1).astype(jnp.float32), mode="drop")
  f_E = counts_E / jnp.float32(T)
  P_E = jnp.mean(probs_TE.astype(jnp.float32), axis=0)
  return jnp.mean(f_E * P_E) * jnp.float32(E * E * weight)


@functools.partial(jax.jit, static_argnames=("weight",))
def router_z_loss(logits_TE: jax.Array, *, weight: float = 1.0) -> jax.Array:
  """Router z-loss: ``weight * mean_t(logsumexp(logits[t])**2)``.

  Penalises large router logits, which keeps the softmax numerically stable
  (ST-MoE, Zoph et al., arXiv 2202.08906 Eq. 5; Flaxformer ``_router_z_loss``
  returns the unweighted mean, and the usual coefficient is 1e-3). The default
  ``weight=1`` returns that raw mean; pass the coefficient as ``weight``.

  Args:
    logits_TE: router logits.
    weight: the loss coefficient.

  Returns:
    Scalar float32 loss.
  """
  if logits_TE.ndim != 2 or not jnp.issubdtype(logits_TE.dtype, jnp.floating):
    raise ValueError(
        f"logits_TE: expected floating [tokens, experts], given {logits_TE.dtype}"
        f" {logits_TE.shape}")
  lse_T = jax.nn.logsumexp(logits_TE.astype(jnp.float32), axis=-1)
  return jnp.mean(lse_T * lse_T) * jnp.float32(weight)
