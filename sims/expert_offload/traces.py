"""Synthetic routing traces: skewed expert popularity and temporal locality.

A stand-in for traces recorded from a real MoE model (not part of this
package): per layer, experts have Zipf popularity over a random ranking; each
sequence redraws the ranking of a layer with probability ``domain_shift`` (a new
"domain"); within a sequence the top-1 expert of a layer is reused from the
previous token with probability ``locality``; gate weights are Dirichlet draws
sorted descending. papers/moe.md 3(b) measured on a toy MoE LM: P(top-1 reused
by the next token) = 0.625 with E = 8 [M], which ``locality=0.5`` roughly gives.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np


class SyntheticTrace(NamedTuple):
  ids_NLK: np.ndarray  # [N, L, K] int32 expert ids, distinct per (token, layer), descending gate
  gates_NLK: np.ndarray  # [N, L, K] float32 normalised gate weights, descending
  seq_start_N: np.ndarray  # [N] bool a new sequence starts


def synthetic_trace(
    seed: int,
    *,
    num_steps: int,
    num_layers: int,
    num_experts: int,
    top_k: int,
    seq_len: int = 16,
    zipf_a: float = 1.0,
    locality: float = 0.5,
    domain_shift: float = 0.5,
    gate_concentration: float = 2.0,
) -> SyntheticTrace:
  """A reproducible synthetic routing trace (numpy, seeded).

  Args:
    seed: RNG seed.
    num_steps, num_layers, num_experts, top_k: N, L, E, K (``1 <= K <= E``).
    seq_len: tokens per sequence (records of sequence-level policies reset).
    zipf_a: popularity of the expert ranked r is proportional to ``r ** -zipf_a``.
    locality: probability that a layer's top-1 expert repeats the previous token's.
    domain_shift: probability that a new sequence redraws a layer's ranking.
    gate_concentration: Dirichlet concentration of the K gate weights.

  Returns:
    `SyntheticTrace`.
  """
  for name, value in (("num_steps", num_steps), ("num_layers", num_layers),
                      ("num_experts", num_experts), ("top_k", top_k), ("seq_len", seq_len)):
    if int(value) != value or value < (0 if name == "num_steps" else 1):
      low = 0 if name == "num_steps" else 1
      raise ValueError(f"{name}: expected an int >= {low}, given {value!r}")
  if top_k > num_experts:
    raise ValueError(f"top_k: expected <= num_experts ({num_experts}), given {top_k}")
  for name, value in (("locality", locality), ("domain_shift", domain_shift)):
    if not 0.0 <= value <= 1.0:
      raise ValueError(f"{name}: expected a probability in [0, 1], given {value}")
  rng = np.random.default_rng(seed)
  N, L, E, K = num_steps, num_layers, num_experts, top_k
  weights_E = np.arange(1, E + 1, dtype=np.float64) ** -float(zipf_a)
  ranking_LE = np.stack([rng.permutation(E) for _ in range(L)])
  ids = np.zeros((N, L, K), np.int32)
  starts = np.zeros((N,), bool)
  for n in range(N):
    if n % seq_len == 0:
      starts[n] = True
      for l in range(L):
        if rng.random() < domain_shift:
          ranking_LE[l] = rng.permutation(E)
    for l in range(L):
      p_E = np.zeros(E)
      p_E[ranking_LE[l]] = weights_E
      chosen: list[int] = []
      if not starts[n] and rng.random() < locality:
        chosen.append(int(ids[n - 1, l, 0]))
      while len(chosen) < K:
        p = p_E.copy()
        p[chosen] = 0.0
        chosen.append(int(rng.choice(E, p=p / p.sum())))
      ids[n, l] = chosen
  gates = rng.dirichlet(np.full(K, gate_concentration), size=(N, L))
  gates = -np.sort(-gates, axis=-1)
  return SyntheticTrace(ids, gates.astype(np.float32), starts)
