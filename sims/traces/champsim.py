"""ChampSim binary traces: read ``.champsimtrace`` (or ``.xz`` / ``.gz``) files, and write them.

A ChampSim trace (papers/prefetch.md 2, "ChampSim") is a flat array of 64-byte
``input_instr`` records, one per instruction, little-endian, no header::

  uint64 ip; uint8 is_branch; uint8 branch_taken;
  uint8 destination_registers[2]; uint8 source_registers[4];
  uint64 destination_memory[2]; uint64 source_memory[4];

`RECORD_DTYPE` is that layout as a numpy structured dtype. `read_champsim`
turns each nonzero ``source_memory`` slot into a load and each nonzero
``destination_memory`` slot into a store (0 means an unused slot), in slot
order, loads before stores, all with ``pc = ip`` and ``instr`` = the record's
index; ``n_instructions`` = the number of records. (The CloudSuite variant,
with 4 destinations and an ASID per record, is a different size and is not
read.) Files are read in blocks, so an ``.xz`` DPC trace need not fit in memory
as text; ``max_instructions`` stops early.
"""

from __future__ import annotations

import gzip
import lzma
import os
from typing import BinaryIO

import numpy as np

from . import format as fmt

RECORD_BYTES = 64
RECORD_DTYPE = np.dtype([
    ("ip", "<u8"),
    ("is_branch", "u1"),
    ("branch_taken", "u1"),
    ("destination_registers", "u1", (2,)),
    ("source_registers", "u1", (4,)),
    ("destination_memory", "<u8", (2,)),
    ("source_memory", "<u8", (4,)),
])
assert RECORD_DTYPE.itemsize == RECORD_BYTES


def _open(path: str, mode: str) -> BinaryIO:
  if path.endswith(".xz"):
    return lzma.open(path, mode)
  if path.endswith(".gz"):
    return gzip.open(path, mode)
  return open(path, mode)


def records_to_trace(records: np.ndarray, *, name: str = "champsim", source: str = "champsim",
                     first_index: int = 0) -> fmt.Trace:
  """Accesses of an array of `RECORD_DTYPE` records (see the module docstring).

  Args:
    records: [R] structured array of `RECORD_DTYPE`.
    name, source: the trace's labels.
    first_index: instruction index of ``records[0]``.
  """
  if not isinstance(records, np.ndarray) or records.dtype != RECORD_DTYPE or records.ndim != 1:
    given = getattr(records, "dtype", type(records).__name__)
    raise ValueError(f"records: expected a 1-D array of RECORD_DTYPE, given {given}")
  mem = np.concatenate([records["source_memory"], records["destination_memory"]], axis=1)  # [R, 6]
  store_slot = np.array([False] * 4 + [True] * 2)
  row, slot = np.nonzero(mem)  # row-major: record order, then slot order
  return fmt.make_trace(mem[row, slot], records["ip"][row], store_slot[slot],
                        row.astype(np.int64) + first_index, name=name, source=source,
                        n_instructions=first_index + len(records))


def read_champsim(path: str | os.PathLike, *, max_instructions: int | None = None,
                  name: str | None = None, block_records: int = 1 << 20) -> fmt.Trace:
  """Reads a ChampSim trace (``.champsimtrace``, ``.xz`` or ``.gz``) into a `Trace`.

  Args:
    path: the trace file; ``.xz`` and ``.gz`` are decompressed as read.
    max_instructions: read at most this many records (None: all).
    name: the trace's name (default: the file name up to its first dot).
    block_records: records decoded per numpy pass.

  Returns:
    The `Trace` (``source = "champsim:<path>"``).

  Raises:
    ValueError: naming the file and the record index when the data ends inside
      a record (its size is not a multiple of 64 bytes), or when the file is not
      a readable (compressed) trace.
  """
  where = os.fspath(path)
  if max_instructions is not None and (int(max_instructions) != max_instructions or
                                       max_instructions < 0):
    raise ValueError(f"max_instructions: expected None or an int >= 0, given {max_instructions!r}")
  limit = None if max_instructions is None else int(max_instructions)
  parts, count = [], 0
  try:
    with _open(where, "rb") as f:
      while limit is None or count < limit:
        want = block_records if limit is None else min(block_records, limit - count)
        data = _read_exactly(f, want * RECORD_BYTES)
        whole = len(data) // RECORD_BYTES
        if whole:
          records = np.frombuffer(data, RECORD_DTYPE, count=whole)
          parts.append(records_to_trace(records))  # concat_traces numbers them on
          count += whole
        if len(data) % RECORD_BYTES:
          raise ValueError(
              f"{where}: truncated record {count} (byte offset {count * RECORD_BYTES}): the data"
              f" ends {len(data) % RECORD_BYTES} bytes into a {RECORD_BYTES}-byte record")
        if len(data) < want * RECORD_BYTES:
          break
  except (OSError, EOFError, lzma.LZMAError) as e:
    raise ValueError(f"{where}: cannot read the trace after record {count} ({e})") from e
  stem = os.path.basename(where).split(".")[0] or os.path.basename(where)
  if not parts:
    return fmt.make_trace([], [], [], name=name or stem, source=f"champsim:{where}")
  return fmt.concat_traces(parts, name=name or stem, source=f"champsim:{where}")


def _read_exactly(f: BinaryIO, size: int) -> bytes:
  """Up to ``size`` bytes, fewer only at the end of the stream."""
  chunks, got = [], 0
  while got < size:
    chunk = f.read(size - got)
    if not chunk:
      break
    chunks.append(chunk)
    got += len(chunk)
  return b"".join(chunks)


def write_champsim(path: str | os.PathLike, records: np.ndarray) -> None:
  """Writes `RECORD_DTYPE` records as a ChampSim trace (``.xz`` / ``.gz`` paths are compressed).

  >>> r = np.zeros(2, RECORD_DTYPE); r["ip"] = [0x401000, 0x401004]
  >>> r["source_memory"][0, 0] = 0x1000; r["destination_memory"][1, 1] = 0x2000
  >>> import tempfile; p = tempfile.mktemp(suffix=".champsimtrace.xz")
  >>> write_champsim(p, r); t = read_champsim(p); os.remove(p)
  >>> t.addr.tolist(), t.is_store.tolist(), t.instr.tolist()
  ([4096, 8192], [False, True], [0, 1])
  """
  if not isinstance(records, np.ndarray) or records.dtype != RECORD_DTYPE or records.ndim != 1:
    given = getattr(records, "dtype", type(records).__name__)
    raise ValueError(f"records: expected a 1-D array of RECORD_DTYPE, given {given}")
  with _open(os.fspath(path), "wb") as f:
    f.write(np.ascontiguousarray(records).tobytes())
