"""StreamingLLM: attention sinks plus a rolling window (arXiv 2309.17453).

Each decode query attends to the first ``num_sinks`` tokens of its sequence (the
"attention sinks", 4 in the paper) and to the ``budget - num_sinks`` most recent
tokens; everything in between is evicted as it leaves the window and never
attended again. There is nothing to score, so the state is empty and `select`
returns an empty list (``S = 0``).

Parity: the attended token set at every step is exactly StreamingLLM's cache
(sinks + rolling window of the same size). One deviation: StreamingLLM assigns
positions *inside the cache* (a key is rotated by its slot, not its original
position); here keys are cached post-RoPE with their original positions, as in
kvpress's ``StreamingLLMPress`` without ``KeyRerotationPress``. Attention
between the query and a far sink therefore sees the true (large) distance.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxsys.kv import base


class StreamingLLMState(NamedTuple):
  """No state: the sinks and the window are fixed positions relative to the length."""


def streaming_llm(budget: int, *, num_sinks: int = 4) -> base.KVPolicy:
  """StreamingLLM as a `KVPolicy`: ``num_sinks`` sinks + a window of the rest.

  Args:
    budget: tokens attended per (sequence, KV head), sinks included; the window
      is ``budget - num_sinks`` and must hold at least the current token.
    num_sinks: leading tokens always attended (paper: 4).

  Returns:
    A `KVPolicy` with ``window = budget - num_sinks`` and ``S = 0``.

  Raises:
    ValueError: a negative or non-int setting, or ``budget <= num_sinks``.

  >>> policy = streaming_llm(64, num_sinks=4)
  >>> policy.window, policy.num_selected
  (60, 0)
  """
  base.check_budget("streaming_llm", budget, num_sinks, 0)
  if budget <= num_sinks:
    raise ValueError(
        f"streaming_llm: budget ({budget}) must exceed num_sinks ({num_sinks}) so"
        " the window holds at least the current token"
    )
  window = budget - num_sinks

  def init(k_BKTD, v_BKTD, lengths_B, q_BHTD) -> StreamingLLMState:
    del k_BKTD, v_BKTD, lengths_B, q_BHTD
    return StreamingLLMState()

  def select(state, q_BHD, k_BKTD, lengths_B) -> jax.Array:
    del state, q_BHD, lengths_B
    B, K = k_BKTD.shape[:2]
    return jnp.zeros((B, K, 0), jnp.int32)

  def update(state, q_BHD, k_BKTD, lengths_B) -> StreamingLLMState:
    del q_BHD, k_BKTD, lengths_B
    return state

  return base.KVPolicy("streaming_llm", budget, num_sinks, window, init, select, update)
