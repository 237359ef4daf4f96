"""Knowledge distillation that recovers accuracy with approximate activations in place.

MPCFormer and Nimbus's fine-tuned column ("Nimbus†") train the model with the
cheap approximations in the forward pass, using the exact model as teacher.
Here the student is a `jaxsys.models.minilm.MiniLM` built with the
approximations (its GELU / softmax arguments), the teacher the same weights with
exact activations, and the data generated sentences. The loss per batch is

    L = w_h * mean_l mean_{real tokens} ||h_l^S - h_l^T||^2 / M
        + w_c * mean_b (1 - cos(e_b^S, e_b^T))

over the ``L + 1`` hidden states ``h_l`` (embedding output and every layer) and
the pooled, normalised sentence embeddings ``e``: MPCFormer's hidden-state
distillation plus the cosine the sentence-embedding task is judged by. Adam
(optax) with a linear warm-up and cosine decay, all parameters trained, one
compiled step (sentences are padded to one length).

Left out: MPCFormer also distils the attention matrices; with a 6-layer
384-wide model the hidden-state term is enough to reach the targets, so the
attention term is not implemented.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from jaxsys.models import minilm


@dataclasses.dataclass(frozen=True)
class DistillConfig:
  """Hyperparameters of `distill`.

  Attributes:
    steps: optimiser steps.
    batch: sentences per step.
    lr: peak learning rate (Adam).
    warmup: linear warm-up steps before the cosine decay to 0.
    hidden_weight: ``w_h`` (hidden-state MSE).
    cos_weight: ``w_c`` (embedding cosine).
    seed: batch-order seed.
  """

  steps: int = 150
  batch: int = 32
  lr: float = 5e-5
  warmup: int = 10
  hidden_weight: float = 1.0
  cos_weight: float = 10.0
  seed: int = 0

  def __post_init__(self):
    for name in ("steps", "batch"):
      v = getattr(self, name)
      if not isinstance(v, int) or v < 1:
        raise ValueError(f"DistillConfig.{name}: expected a positive int, given {v!r}")
    if not self.lr > 0:
      raise ValueError(f"DistillConfig.lr: expected > 0, given {self.lr!r}")
    if not isinstance(self.warmup, int) or not 0 <= self.warmup < self.steps:
      raise ValueError(
          f"DistillConfig.warmup: expected an int in [0, steps={self.steps}), given {self.warmup!r}")


def _embed(tokens_BTM: jax.Array, mask_BT: jax.Array) -> jax.Array:
  return minilm.l2_normalize(minilm.mean_pool(tokens_BTM, mask_BT))


def distill_loss(student: minilm.MiniLM, teacher_hidden_LBTM: jax.Array, ids_BT: jax.Array,
                 mask_BT: jax.Array, hidden_weight: float, cos_weight: float) -> jax.Array:
  """The loss of the module docstring for one batch (teacher states precomputed)."""
  _, hidden_LBTM = student(ids_BT, mask_BT, hidden_states=True)
  m_BT = mask_BT.astype(jnp.float32)
  sq_LBT = jnp.mean(jnp.square(hidden_LBTM - teacher_hidden_LBTM), axis=-1)
  hidden_term = jnp.sum(sq_LBT * m_BT[None]) / (hidden_LBTM.shape[0] * jnp.sum(m_BT))
  e_s = _embed(hidden_LBTM[-1], mask_BT)
  e_t = _embed(teacher_hidden_LBTM[-1], mask_BT)
  cos_term = jnp.mean(1.0 - jnp.sum(e_s * e_t, axis=-1))
  return hidden_weight * hidden_term + cos_weight * cos_term


@nnx.jit(static_argnums=(5, 6))
def _train_step(student, optimizer, teacher_hidden, ids_BT, mask_BT, hidden_weight, cos_weight):
  loss, grads = nnx.value_and_grad(distill_loss)(
      student, teacher_hidden, ids_BT, mask_BT, hidden_weight, cos_weight)
  optimizer.update(student, grads)
  return loss


@nnx.jit
def _teacher_hidden(teacher, ids_BT, mask_BT):
  return teacher(ids_BT, mask_BT, hidden_states=True)[1]


def distill(student: minilm.MiniLM, sentences: Sequence[str],
            config: DistillConfig = DistillConfig(), *,
            teacher: minilm.MiniLM | None = None) -> list[float]:
  """Fine-tunes `student` (in place) towards the exact model on `sentences`.

  Args:
    student: a MiniLM built with the approximations (``load_minilm(gelu_fn=...,
      softmax_fn=...)``); its parameters are updated in place.
    sentences: training sentences (keep them apart from evaluation sentences).
    config: `DistillConfig`.
    teacher: the exact model (default: a fresh ``load_minilm()`` model).

  Returns:
    The loss at every step.
  """
  if len(sentences) < config.batch:
    raise ValueError(
        f"sentences: expected at least batch={config.batch} sentences, given {len(sentences)}")
  _, default_teacher, tok = minilm.load_minilm()
  teacher = default_teacher if teacher is None else teacher
  ids_NT, mask_NT = tok(list(sentences))
  schedule = optax.warmup_cosine_decay_schedule(
      0.0, config.lr, config.warmup, config.steps, end_value=0.0)
  optimizer = nnx.Optimizer(student, optax.adam(schedule), wrt=nnx.Param)
  rng = np.random.default_rng(config.seed)
  order = np.zeros(0, np.int64)
  losses = []
  for _ in range(config.steps):
    if order.size < config.batch:
      order = np.concatenate([order, rng.permutation(len(sentences))])
    pick, order = order[:config.batch], order[config.batch:]
    ids_BT, mask_BT = jnp.asarray(ids_NT[pick]), jnp.asarray(mask_NT[pick])
    target = _teacher_hidden(teacher, ids_BT, mask_BT)
    # optax's Adam bias correction raises a float to an int32 power, which
    # strict dtype promotion (the test suite's setting) rejects.
    with jax.numpy_dtype_promotion("standard"):
      loss = _train_step(student, optimizer, target, ids_BT, mask_BT,
                         config.hidden_weight, config.cos_weight)
    losses.append(float(loss))
  return losses
