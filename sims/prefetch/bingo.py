"""Bingo (Bakhshalipour et al., HPCA'19), a baseline of Gaze (papers/prefetch.md 1.2).

Parameters as listed for the Gaze study (``papers/prefetch.md`` 1.2: "2 KB
region, PHT 16K x 16-way, FT/AT 64x8, threshold 0.2, L1 fill"): 2 KiB regions
(32 blocks), FT and AT of 64 entries 8-way, a 16K-entry 16-way pattern history
table (1024 sets), a 32-entry prefetch buffer (the PB is this model's issue
policy, as for `sms`; the 32 entries are our choice), L1D fill.

**Mechanism.** Regions, generations, FT / AT, training on AT eviction and the
PB drain are those of `sms` (see its docstring; this module reuses that core).
The difference is the PHT, which associates footprints with two events of the
trigger access (PC ``p``, block ``b``, offset ``o = b & 31``):

* the **long event** (PC + address): ``(p, b)``;
* the **short event** (PC + offset): ``(p, o)``.

One table holds both (Bingo's single-table trick): an entry is indexed by the
short event (``set = sms.pht_set(p, o)``) and tagged with the long event.

* **Training** (an AT entry evicted): the entry with the same long event is
  overwritten with the footprint, else an LRU (or empty) way of the set.
* **Prediction** (a trigger access): an entry whose long event matches gives
  its footprint (and is touched for LRU). Otherwise every entry of the set whose
  short event matches votes: an offset is predicted when it is in at least
  ``threshold_pct`` percent (default 20) of the matching footprints
  (``100 * votes >= threshold_pct * matches``, exact integers); the voters are
  not touched. No match: no prediction.

All predicted blocks go to ``fill_level`` (default L1D; Bingo's single-level
fill, no per-block L1/L2 split). The simplifications of `sms` apply (generations
end on AT eviction only; the PB drains on loads of its region).

>>> pf = bingo(pht_entries=256, pht_ways=16)
>>> pf.name, pf.num_candidates
('bingo', 32)
>>> storage_bits() // 8         # 149.4 KiB with 38-bit long-event tags
152960
"""

from __future__ import annotations

import functools

from jaxsys.sims.cache.protocol import Prefetcher

from . import sms as _sms
from .sms import RegionParams
from .sms import RegionState

__all__ = ["bingo", "storage_bits", "RegionParams", "RegionState"]


def _bingo_make_params(dims: _sms.Dims, *, ft_entries: int | None = None,
                       ft_ways: int | None = None, at_entries: int | None = None,
                       at_ways: int | None = None, pht_entries: int | None = None,
                       pht_ways: int | None = None, pb_entries: int | None = None,
                       fill_level: str | int = "l1d", threshold_pct: int = 20) -> RegionParams:
  return _sms.make_region_params(dims, ft_entries=ft_entries, ft_ways=ft_ways,
                                 at_entries=at_entries, at_ways=at_ways,
                                 pht_entries=pht_entries, pht_ways=pht_ways,
                                 pb_entries=pb_entries, fill_level=fill_level,
                                 threshold_pct=threshold_pct)


@functools.lru_cache(maxsize=None)
def bingo(*, pht_entries: int = 16384, pht_ways: int = 16, ft_entries: int = 64,
          ft_ways: int = 8, at_entries: int = 64, at_ways: int = 8, pb_entries: int = 32,
          region_blocks: int = 32) -> Prefetcher:
  """The Bingo prefetcher (module docstring); arguments are the allocated sizes.

  Args:
    pht_entries, pht_ways: PHT (default 16K entries, 16-way; 256 KiB of int32
      state, updated a row at a time).
    ft_entries, ft_ways, at_entries, at_ways: FT / AT (default 64 x 8).
    pb_entries: prefetch buffer entries (default 32).
    region_blocks: blocks per region, a power of two <= 32 (default 32); also K.

  Params (`Prefetcher.make_params`, traced): those of `sms.sms` plus
  ``threshold_pct`` (1..100, default 20: the paper's 0.2).

  >>> pf = bingo(pht_entries=256, pht_ways=16)
  >>> int(pf.make_params(threshold_pct=50).threshold_pct)
  50
  """
  dims = _sms.make_dims(region_blocks=region_blocks, ft_entries=ft_entries, ft_ways=ft_ways,
                        at_entries=at_entries, at_ways=at_ways, pht_entries=pht_entries,
                        pht_ways=pht_ways, pb_entries=pb_entries)
  return _sms.make_prefetcher("bingo", dims, "bingo",
                              functools.partial(_bingo_make_params, dims))


def storage_bits(*, pht_entries: int = 16384, pht_ways: int = 16, ft_entries: int = 64,
                 ft_ways: int = 8, at_entries: int = 64, at_ways: int = 8, pb_entries: int = 32,
                 region_blocks: int = 32, pc_bits: int = 16, region_tag_bits: int = 31,
                 block_bits: int = 32) -> int:
  """Bits of hardware state of Bingo with these sizes.

  As `sms.storage_bits` except the PHT tag, which must hold the long event:
  ``pc_bits + block_bits - log2(pht sets)`` (16 + 32 - 10 = 38 bits by
  default). Defaults: FT 64 x 55, AT 64 x 87, PHT 16384 x 74, PB 32 x 68 bits:
  1223680 bits = 149.4 KiB (the paper reports about 119 KB with narrower tags;
  papers/prefetch.md marks that figure unchecked).
  """
  sets, _ = _sms.table_geometry("pht", pht_entries, pht_ways)
  tag = pc_bits + block_bits - (sets.bit_length() - 1)
  if tag < 0:
    raise ValueError(f"pc_bits + block_bits: expected >= log2(pht sets) = "
                     f"{sets.bit_length() - 1}, given {pc_bits + block_bits}")
  return _sms.storage_bits(pht_entries=pht_entries, pht_ways=pht_ways, ft_entries=ft_entries,
                           ft_ways=ft_ways, at_entries=at_entries, at_ways=at_ways,
                           pb_entries=pb_entries, region_blocks=region_blocks, pc_bits=pc_bits,
                           region_tag_bits=region_tag_bits, pht_tag_bits=tag)
