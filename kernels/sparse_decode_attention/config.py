"""Block sizes of the sparse decode-attention Pallas kernel."""

from __future__ import annotations

import dataclasses

from jaxsys._src.pallas_util import is_pow2 as _is_pow2


@dataclasses.dataclass(frozen=True)
class BlockConfig:
  """Tiling of the kernel.

  Attributes:
    block_s: tokens gathered per inner-loop step (a power of two; Triton tensors
      must have power-of-two shapes).
    num_splits: programs per (sequence, KV head) along the token list, merged
      afterwards by log-sum-exp (flash-decoding's split-K). None picks enough
      splits to fill the GPU: about `target_programs` programs in all.
    target_programs: used when `num_splits` is None.
    use_dot: compute scores and the value sum with the Triton `dot` (tensor cores; the
      query group is padded to 16 rows) instead of broadcast-multiply-sum.
    num_warps, num_stages: Triton launch parameters.
  """

  block_s: int = 32
  num_splits: int | None = None
  target_programs: int = 512
  use_dot: bool = True
  num_warps: int = 4
  num_stages: int = 2

  def __post_init__(self):
    if not _is_pow2(self.block_s):
      raise ValueError(f"block_s must be a power of two, given {self.block_s}")
    if self.use_dot and self.block_s < 16:
      raise ValueError(f"block_s must be >= 16 with use_dot=True, given {self.block_s}")
    if self.num_splits is not None and self.num_splits < 1:
      raise ValueError(f"num_splits must be >= 1 or None, given {self.num_splits}")
    if self.target_programs < 1:
      raise ValueError(f"target_programs must be >= 1, given {self.target_programs}")
    if self.num_warps < 1 or not _is_pow2(self.num_warps):
      raise ValueError(f"num_warps must be a power of two, given {self.num_warps}")
    if self.num_stages < 1:
      raise ValueError(f"num_stages must be >= 1, given {self.num_stages}")

  @classmethod
  def get_default(cls) -> "BlockConfig":
    return cls()

  def splits_for(self, programs: int, num_blocks: int) -> int:
    """The number of splits for `programs` (sequence, head) pairs and `num_blocks`."""
    if self.num_splits is not None:
      return max(1, min(self.num_splits, num_blocks))
    want = -(-self.target_programs // max(programs, 1))
    return max(1, min(want, num_blocks))
