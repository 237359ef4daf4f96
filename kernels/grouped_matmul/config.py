"""Tile sizes of the grouped-matmul Pallas kernel."""

from __future__ import annotations

import dataclasses

from jaxsys._src.pallas_util import is_pow2 as _is_pow2


@dataclasses.dataclass(frozen=True)
class BlockConfig:
  """Tiling: `block_m` rows x `block_n` output columns per program, `block_k` per step.

  All three are powers of two >= 16 (Triton `dot` needs 16 and power-of-two
  tensor shapes). Rows, the contraction and the output columns are padded up to
  their tiles.
  """

  # Defaults: the fastest of three tilings timed on an H100 in bfloat16
  # (benchmarks/kernels/grouped_matmul.py; 2-7x over lax.ragged_dot there).
  block_m: int = 128
  block_n: int = 128
  block_k: int = 64
  num_warps: int = 8
  num_stages: int = 3

  def __post_init__(self):
    for name in ("block_m", "block_n", "block_k"):
      v = getattr(self, name)
      if not _is_pow2(v) or v < 16:
        raise ValueError(f"{name} must be a power of two >= 16, given {v}")
    if not _is_pow2(self.num_warps):
      raise ValueError(f"num_warps must be a power of two, given {self.num_warps}")
    if self.num_stages < 1:
      raise ValueError(f"num_stages must be >= 1, given {self.num_stages}")

  @classmethod
  def get_default(cls) -> "BlockConfig":
    return cls()
