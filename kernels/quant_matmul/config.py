"""Tile sizes of the dequantising-matmul Pallas kernel."""

from __future__ import annotations

import dataclasses

from jaxsys._src.pallas_util import is_pow2 as _is_pow2


@dataclasses.dataclass(frozen=True)
class BlockConfig:
  """Tiling: `block_m` rows x `block_n` output columns per program, `block_k` per step.

  `block_k` counts unpacked rows of the contraction (``block_k * bits / 8`` packed
  byte rows). All three are powers of two >= 16 (Triton `dot` needs 16 and
  power-of-two tensor shapes). Rows, the contraction and the output columns are
  padded up to their tiles.
  """

  block_m: int = 64
  block_n: int = 64
  block_k: int = 64
  num_warps: int = 4
  num_stages: int = 3

  def __post_init__(self):
    for name in ("block_m", "block_n", "block_k"):
      v = getattr(self, name)
      if not _is_pow2(v) or v < 16:
        raise ValueError(f"{name} must be a power of two >= 16, given {v!r}")
    if not _is_pow2(self.num_warps):
      raise ValueError(f"num_warps must be a power of two, given {self.num_warps!r}")
    if not isinstance(self.num_stages, int) or self.num_stages < 1:
      raise ValueError(f"num_stages must be an int >= 1, given {self.num_stages!r}")

  @classmethod
  def get_default(cls, num_rows: int | None = None) -> "BlockConfig":
    """The default tiling; with `num_rows`, `block_m` shrinks to fit few rows (decode).

    `block_m` is the next power of two >= `num_rows`, between 16 and 64.
    """
    if num_rows is None:
      return cls()
    block_m = 16
    while block_m < min(num_rows, 64):
      block_m *= 2
    return cls(block_m=block_m)
