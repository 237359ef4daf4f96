"""Long-context probes built at run time: the passkey (needle) retrieval prompt.

A 5-digit key is stated once inside repetitive filler at a chosen depth, and the
model is asked for it at the end (Mohtashami & Jaggi's passkey task, the
ClusterKV/Quest evaluations' needle test). Nothing is downloaded.
"""

from __future__ import annotations

from typing import Any

FILLER = (
    "The grass is green. The sky is blue. The sun is yellow. Here we go."
    " There and back again. "
)


def passkey_text(key: int, depth: float, n_filler: int) -> str:
  """The user message: `n_filler` filler blocks with the key after ``depth`` of them."""
  if not 0.0 <= depth <= 1.0:
    raise ValueError(f"depth: expected a fraction in [0, 1], given {depth}")
  if n_filler < 1:
    raise ValueError(f"n_filler: expected >= 1, given {n_filler}")
  at = round(depth * n_filler)
  needle = f"The pass key is {key}. Remember it. {key} is the pass key. "
  return FILLER * at + needle + FILLER * (n_filler - at) + "What is the pass key?"


def passkey_prompt(tokenizer: Any, key: int, depth: float, max_tokens: int) -> list[int]:
  """Chat-formatted passkey prompt with as many filler blocks as fit in `max_tokens`.

  Args:
    tokenizer: a tokenizer with ``encode(text) -> ids`` and ``chat_prompt(text)``
      (e.g. `jaxsys.models.smollm2.SmolLM2Tokenizer`).
    key: the pass key (5 digits).
    depth: where the needle sits in the filler, 0 (start) to 1 (end).
    max_tokens: upper bound on the prompt length in tokens.

  Returns:
    The token ids (at most `max_tokens`).
  """
  def ids(n):
    return tokenizer.encode(tokenizer.chat_prompt(passkey_text(key, depth, n)))

  per_block = max(1, len(tokenizer.encode(FILLER)))
  n = max(1, max_tokens // per_block)
  while n > 1 and len(ids(n)) > max_tokens:
    n -= max(1, (len(ids(n)) - max_tokens) // per_block)
  out = ids(n)
  if len(out) > max_tokens:
    raise ValueError(f"max_tokens: {max_tokens} is too small for a passkey prompt")
  return out
