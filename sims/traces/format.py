"""The memory-trace format: a `Trace` of per-access arrays, its ``.npz`` file, and JAX arrays.

A trace is the ordered stream of data-memory accesses of one program run
(``papers/prefetch.md`` 3, "Reduced protocol"), one row per access:

* ``addr``: the byte address accessed (a lackey ``M`` line, ChampSim record
  with a source and a destination, ... gives one load row and one store row);
* ``pc``: the address of the instruction that made the access;
* ``is_store``: store (True) or load (False);
* ``instr``: the number of instructions executed before the accessing one, i.e.
  its 0-based instruction index, so an IPC proxy and a timing model can place
  accesses in time (several accesses of one instruction share it);

plus ``name``, ``source`` (where it came from) and ``n_instructions`` (the
instructions in the traced window, more than every ``instr``).

**File** (`save` / `load`): one ``np.savez_compressed`` archive, format version
`FORMAT_VERSION`, with the columns encoded so that zlib compresses them to
about a byte per access: ``addr_delta`` (int64, the first address then wrapped
differences), ``pc_table`` (uint64, the distinct PCs) with ``pc_index`` (the
smallest unsigned integer type that indexes it), ``instr_delta`` (int64, the
first index then differences, all >= 0), ``is_store_bits`` (``np.packbits``),
and the scalars ``format_version``, ``n``, ``n_instructions``, ``name`` and
``source``. `load` checks every field, dtype, length and range and names the
file and the field in its errors.

**JAX arrays** (`to_sim_arrays`, `pad_traces`): int32 block addresses, PC
hashes and instruction indices, int8 store flags, a ``valid`` mask (the layout
of the "JAX design" notes of ``papers/prefetch.md``). 64-bit addresses do not
fit int32 blocks, so every 1 MiB-aligned chunk of the address space that the
trace touches is renumbered densely (`remap_chunks`) and the low 20 address
bits are kept: cache set indices (up to 2^(20 - block_bits) sets) and spatial
regions up to 1 MiB are exactly those of the real addresses. Chunks adjacent in
the real address space stay adjacent; between two chunks that are not, one
untouched chunk id is left, so a prefetch that runs off the end of a chunk
never lands in another chunk the program used.
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

FORMAT_VERSION = 1
CHUNK_BITS = 20  # 1 MiB chunks keep their low 20 address bits through `remap_chunks`
_INT32_MAX = np.iinfo(np.int32).max


class Trace(NamedTuple):
  """One program's data-memory accesses, in program order (see the module docstring)."""

  addr: np.ndarray  # [N] uint64 byte address of the access
  pc: np.ndarray  # [N] uint64 address of the accessing instruction
  is_store: np.ndarray  # [N] bool True for a store, False for a load
  instr: np.ndarray  # [N] int64 instructions executed before the accessing one (non-decreasing)
  name: str  # short label, e.g. "stream_triad" or "matmul"
  source: str  # origin, e.g. "synthetic:aos_walk(seed=0)", "lackey:/path/prog 80"
  n_instructions: int  # instructions in the traced window (> every instr)

  @property
  def num_accesses(self) -> int:
    """N, the number of accesses (``len(trace)`` is the NamedTuple's 7 fields)."""
    return int(self.addr.shape[0])

  def __repr__(self) -> str:
    return (f"Trace(name={self.name!r}, source={self.source!r}, accesses={self.num_accesses},"
            f" stores={int(np.count_nonzero(self.is_store))},"
            f" n_instructions={self.n_instructions})")


class SimArrays(NamedTuple):
  """A trace as int32 arrays for the JAX simulators (leading batch axis B after `pad_traces`)."""

  block: np.ndarray  # [(B,) N] int32 block address: remapped address >> block_bits
  pc_hash: np.ndarray  # [(B,) N] int32 PC & 0x7fffffff (bits 0..30 of the PC, e.g. [13:8])
  is_store: np.ndarray  # [(B,) N] int8 1 for a store, 0 for a load (and for padding)
  instr: np.ndarray  # [(B,) N] int32 instruction index; padding repeats the last one
  valid: np.ndarray  # [(B,) N] bool False on padding
  n_instructions: np.ndarray  # [(B,)] int32 instructions in the traced window


def _int_array(value, field: str, where: str) -> np.ndarray:
  arr = np.asarray(value)
  if arr.ndim != 1:
    raise ValueError(f"{where}{field}: expected a 1-D array, given shape {arr.shape}")
  if arr.dtype.kind not in "iu" and not (arr.dtype.kind == "b" and field == "is_store"):
    if arr.size == 0 and arr.dtype.kind == "f":  # np.asarray([]) is float64
      return arr.astype(np.int64)
    raise ValueError(f"{where}{field}: expected integers, given dtype {arr.dtype}")
  return arr


def make_trace(addr, pc, is_store, instr=None, *, name: str = "trace", source: str = "",
               n_instructions: int | None = None) -> Trace:
  """Builds a validated `Trace` from array-likes.

  Args:
    addr: [N] non-negative integer byte addresses (< 2^64).
    pc: [N] non-negative integer instruction addresses.
    is_store: [N] bools (or 0/1).
    instr: [N] non-decreasing instruction indices >= 0; default ``arange(N)``
      (one instruction per access).
    name, source: labels kept in the file.
    n_instructions: instructions in the window; default ``instr[-1] + 1``
      (0 for an empty trace). Must exceed every ``instr``.

  Returns:
    A `Trace` with uint64 / uint64 / bool / int64 arrays.

  >>> t = make_trace([64, 128], [0x401000, 0x401004], [False, True])
  >>> t.instr.tolist(), t.n_instructions
  ([0, 1], 2)
  """
  where = f"trace {name!r}: "
  addr_a = _int_array(addr, "addr", where)
  pc_a = _int_array(pc, "pc", where)
  st_a = _int_array(is_store, "is_store", where)
  n = addr_a.shape[0]
  instr_a = np.arange(n, dtype=np.int64) if instr is None else _int_array(instr, "instr", where)
  for field, arr in (("pc", pc_a), ("is_store", st_a), ("instr", instr_a)):
    if arr.shape[0] != n:
      raise ValueError(f"{where}{field}: expected length {n} (that of addr), given {arr.shape[0]}")
  for field, arr in (("addr", addr_a), ("pc", pc_a), ("instr", instr_a)):
    if arr.dtype.kind == "i" and n and arr.min() < 0:
      i = int(np.argmax(arr < 0))
      raise ValueError(f"{where}{field}: expected values >= 0, given {arr[i]} at index {i}")
  if st_a.dtype.kind != "b" and n and not np.all((st_a == 0) | (st_a == 1)):
    i = int(np.argmax((st_a != 0) & (st_a != 1)))
    raise ValueError(f"{where}is_store: expected bools or 0/1, given {st_a[i]} at index {i}")
  if instr_a.dtype == np.uint64 and n and instr_a.max() > np.iinfo(np.int64).max:
    raise ValueError(f"{where}instr: expected values < 2^63, given {instr_a.max()}")
  instr_a = instr_a.astype(np.int64)
  if n > 1 and np.any(np.diff(instr_a) < 0):
    i = int(np.argmax(np.diff(instr_a) < 0)) + 1
    raise ValueError(f"{where}instr: expected non-decreasing values, given {instr_a[i - 1]} then"
                     f" {instr_a[i]} at index {i}")
  last = int(instr_a[-1]) if n else -1
  if n_instructions is None:
    n_instructions = last + 1
  if int(n_instructions) != n_instructions or n_instructions <= last:
    raise ValueError(f"{where}n_instructions: expected an int > the last instr ({last}), given"
                     f" {n_instructions!r}")
  return Trace(addr_a.astype(np.uint64), pc_a.astype(np.uint64), st_a.astype(bool), instr_a,
               str(name), str(source), int(n_instructions))


def concat_traces(traces: Sequence[Trace], *, name: str, source: str = "") -> Trace:
  """Runs traces one after the other: instruction indices of each continue the previous one."""
  if not traces:
    raise ValueError("traces: expected at least one Trace, given none")
  offset, instrs = 0, []
  for t in traces:
    instrs.append(t.instr + offset)
    offset += t.n_instructions
  return make_trace(np.concatenate([t.addr for t in traces]),
                    np.concatenate([t.pc for t in traces]),
                    np.concatenate([t.is_store for t in traces]), np.concatenate(instrs),
                    name=name, source=source, n_instructions=offset)


# ----------------------------------------------------------------------------- file


def save(path: str | os.PathLike, trace: Trace) -> None:
  """Writes `trace` to ``path`` (a ``.npz``; numpy appends the suffix when missing).

  Args:
    path: destination file.
    trace: a `Trace` (validated again here).
  """
  t = make_trace(trace.addr, trace.pc, trace.is_store, trace.instr, name=trace.name,
                 source=trace.source, n_instructions=trace.n_instructions)
  n = t.num_accesses
  addr_delta = np.empty(n, np.uint64)
  instr_delta = np.empty(n, np.int64)
  if n:
    addr_delta[0] = t.addr[0]
    np.subtract(t.addr[1:], t.addr[:-1], out=addr_delta[1:])  # wraps modulo 2^64
    instr_delta[0] = t.instr[0]
    np.subtract(t.instr[1:], t.instr[:-1], out=instr_delta[1:])
  pc_table, pc_index = np.unique(t.pc, return_inverse=True)
  index_dtype = np.min_scalar_type(max(len(pc_table) - 1, 0))
  np.savez_compressed(
      path,
      format_version=np.int64(FORMAT_VERSION),
      n=np.int64(n),
      n_instructions=np.int64(t.n_instructions),
      name=np.str_(t.name),
      source=np.str_(t.source),
      addr_delta=addr_delta.view(np.int64),
      pc_table=pc_table.astype(np.uint64),
      pc_index=pc_index.reshape(-1).astype(index_dtype),
      instr_delta=instr_delta,
      is_store_bits=np.packbits(t.is_store),
  )


_SCALARS = {"format_version": "i", "n": "i", "n_instructions": "i", "name": "U", "source": "U"}
_COLUMNS = {  # field -> accepted dtypes
    "addr_delta": ("int64",),
    "pc_table": ("uint64",),
    "pc_index": ("uint8", "uint16", "uint32", "uint64"),
    "instr_delta": ("int64",),
    "is_store_bits": ("uint8",),
}


def load(path: str | os.PathLike) -> Trace:
  """Reads a trace written by `save`, checking every field.

  Args:
    path: a ``.npz`` file.

  Returns:
    The `Trace`.

  Raises:
    ValueError: naming the file and the field when the file is not a trace of
      this format version, a field is missing, or a field's dtype, shape,
      length or values are wrong.
  """
  where = f"{os.fspath(path)}: "
  try:
    archive = np.load(path, allow_pickle=False)
  except (OSError, ValueError, zipfile.BadZipFile) as e:
    raise ValueError(f"{where}not a readable .npz trace file ({e})") from e
  if not isinstance(archive, np.lib.npyio.NpzFile):
    raise ValueError(f"{where}expected a .npz archive of a trace, given a single array")
  with archive:
    missing = [k for k in (*_SCALARS, *_COLUMNS) if k not in archive.files]
    if missing:
      raise ValueError(f"{where}missing field(s) {', '.join(missing)}; a trace file holds"
                       f" {', '.join((*_SCALARS, *_COLUMNS))}")
    try:
      fields = {k: archive[k] for k in (*_SCALARS, *_COLUMNS)}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
      raise ValueError(f"{where}corrupt archive ({e})") from e
  for key, kind in _SCALARS.items():
    v = fields[key]
    if v.shape != () or v.dtype.kind != kind:
      expected = "a string" if kind == "U" else "an integer"
      raise ValueError(f"{where}field {key!r}: expected {expected} scalar, given dtype {v.dtype}"
                       f" shape {v.shape}")
  version = int(fields["format_version"])
  if version != FORMAT_VERSION:
    raise ValueError(f"{where}field 'format_version': expected {FORMAT_VERSION}, given {version}")
  n = int(fields["n"])
  if n < 0:
    raise ValueError(f"{where}field 'n': expected >= 0, given {n}")
  lengths = {"addr_delta": n, "pc_index": n, "instr_delta": n, "is_store_bits": (n + 7) // 8,
             "pc_table": None}
  for key, dtypes in _COLUMNS.items():
    v = fields[key]
    if v.ndim != 1 or v.dtype.name not in dtypes:
      raise ValueError(f"{where}field {key!r}: expected a 1-D array of {' or '.join(dtypes)},"
                       f" given dtype {v.dtype} shape {v.shape}")
    if lengths[key] is not None and v.shape[0] != lengths[key]:
      raise ValueError(f"{where}field {key!r}: expected length {lengths[key]} (n = {n}), given"
                       f" {v.shape[0]}")
  pc_table, pc_index = fields["pc_table"], fields["pc_index"]
  if n and (len(pc_table) == 0 or int(pc_index.max()) >= len(pc_table)):
    raise ValueError(f"{where}field 'pc_index': expected indices < len(pc_table) ="
                     f" {len(pc_table)}, given max {int(pc_index.max())}")
  instr_delta = fields["instr_delta"]
  if n and instr_delta.min() < 0:
    i = int(np.argmax(instr_delta < 0))
    raise ValueError(f"{where}field 'instr_delta': expected values >= 0, given"
                     f" {instr_delta[i]} at index {i}")
  addr = np.cumsum(fields["addr_delta"].view(np.uint64), dtype=np.uint64)
  instr = np.cumsum(instr_delta, dtype=np.int64)
  is_store = np.unpackbits(fields["is_store_bits"], count=n).astype(bool)
  try:
    return make_trace(addr, pc_table[pc_index], is_store, instr, name=str(fields["name"]),
                      source=str(fields["source"]), n_instructions=int(fields["n_instructions"]))
  except ValueError as e:
    raise ValueError(f"{where}{e}") from e


# ----------------------------------------------------------------------------- JAX arrays


def remap_chunks(addr, chunk_bits: int = CHUNK_BITS) -> tuple[np.ndarray, np.ndarray]:
  """Renumbers the 2^chunk_bits-byte chunks of ``addr`` densely, keeping the low bits.

  The touched chunks, in address order, get ids 0, 1, 2, ...; a chunk that is
  not adjacent to the previous touched chunk gets the previous id + 2 (one
  untouched id between), so ids are adjacent exactly when the chunks are. The
  map is monotone (address order is kept) and one-to-one.

  Args:
    addr: [N] uint64 byte addresses.
    chunk_bits: log2 of the chunk size (20: 1 MiB).

  Returns:
    ``(new_addr, chunk_of_id)``: [N] uint64 ``id << chunk_bits | low bits``, and
    [max id + 1] int64 original chunk number of each id (-1 for a gap id), so
    ``chunk_of_id[new >> chunk_bits] << chunk_bits | low == addr``.

  >>> new, table = remap_chunks(np.array([0x7ff000001234, 0x10, 0x7ff000100000], np.uint64))
  >>> [hex(a) for a in new], table.tolist()
  (['0x201234', '0x10', '0x300000'], [0, -1, 134152192, 134152193])
  """
  addr = np.asarray(addr, np.uint64)
  shift = np.uint64(chunk_bits)
  chunk = addr >> shift
  uniq, inverse = np.unique(chunk, return_inverse=True)
  steps = np.ones(len(uniq), np.int64)
  if len(uniq):
    steps[0] = 0
    steps[1:] = np.where(np.diff(uniq) == 1, 1, 2)
  ids = np.cumsum(steps)
  chunk_of_id = np.full(int(ids[-1]) + 1 if len(uniq) else 0, -1, np.int64)
  chunk_of_id[ids] = uniq.astype(np.int64)
  low = addr & np.uint64((1 << chunk_bits) - 1)
  new = (ids[inverse.reshape(-1)].astype(np.uint64) << shift) | low
  return new, chunk_of_id


def to_sim_arrays(trace: Trace, block_bits: int = 6) -> SimArrays:
  """A trace as int32 arrays for the JAX simulators.

  Args:
    trace: a non-empty `Trace`.
    block_bits: log2 of the cache block size in bytes, 0..20 (6: 64 B).

  Returns:
    `SimArrays` without a batch axis (``valid`` all True):

    * ``block``: ``remap_chunks(addr)[0] >> block_bits``: the low
      ``20 - block_bits`` block bits (set index, offset in a region of up to
      1 MiB) equal those of ``addr >> block_bits``; distinct blocks stay distinct;
    * ``pc_hash``: ``pc & 0x7fffffff``: the PC's bits 0..30 unchanged, so any
      hash of them (Gaze's bits [13:8], PMP's 5-bit hash) can be taken in JAX;
      PCs that differ only above bit 30 collide (user-space code of one program
      lies far below 2 GiB in practice);
    * ``is_store`` int8, ``instr`` int32, ``n_instructions`` int32 scalar.

  Raises:
    ValueError: for an empty trace, a bad ``block_bits``, more touched 1 MiB
      chunks than int32 blocks can number, or instruction counts >= 2^31.

  >>> t = make_trace([0x7f0000000040, 0x7f0000000080], [0x401000, 0x401000], [False, True])
  >>> to_sim_arrays(t).block.tolist()
  [1, 2]
  """
  if not isinstance(trace, Trace):
    raise TypeError(f"trace: expected a Trace, given {type(trace).__name__}")
  if not (isinstance(block_bits, (int, np.integer)) and 0 <= block_bits <= CHUNK_BITS):
    raise ValueError(f"block_bits: expected an int in 0..{CHUNK_BITS}, given {block_bits!r}")
  if trace.num_accesses == 0:
    raise ValueError(f"trace {trace.name!r}: expected at least one access, given an empty trace")
  new, chunk_of_id = remap_chunks(trace.addr)
  max_ids = 1 << (31 - CHUNK_BITS + block_bits)
  if len(chunk_of_id) > max_ids:
    raise ValueError(
        f"trace {trace.name!r}: touches {int(np.count_nonzero(chunk_of_id >= 0))} distinct 1 MiB"
        f" chunks ({len(chunk_of_id)} ids with gaps), but int32 blocks of 2^{block_bits} bytes"
        f" number at most {max_ids} chunks; use a larger block_bits or a shorter trace")
  if trace.n_instructions > _INT32_MAX:
    raise ValueError(f"trace {trace.name!r}: n_instructions = {trace.n_instructions} does not"
                     f" fit int32 (max {_INT32_MAX}); split the trace")
  return SimArrays(
      block=(new >> np.uint64(block_bits)).astype(np.int32),
      pc_hash=(trace.pc & np.uint64(_INT32_MAX)).astype(np.int32),
      is_store=trace.is_store.astype(np.int8),
      instr=trace.instr.astype(np.int32),
      valid=np.ones(trace.num_accesses, bool),
      n_instructions=np.int32(trace.n_instructions),
  )


def pad_traces(traces: Sequence[Trace | SimArrays], length: int | None = None, *,
               block_bits: int = 6, truncate: bool = False) -> SimArrays:
  """Stacks traces of different lengths into [B, length] arrays with a ``valid`` mask.

  Args:
    traces: `Trace`s (converted with `to_sim_arrays`, each remapped on its own)
      or unbatched `SimArrays`.
    length: padded length; default the longest trace.
    block_bits: passed to `to_sim_arrays`.
    truncate: cut traces longer than ``length`` (otherwise that is an error);
      a cut trace's ``n_instructions`` becomes the ``instr`` of its first
      dropped access.

  Returns:
    `SimArrays` with a leading axis B = len(traces); padding has block 0,
    pc_hash 0, is_store 0, ``instr`` equal to the trace's last one and
    ``valid`` False.

  >>> a = make_trace([0, 64, 128], [1, 1, 1], [0, 0, 0])
  >>> pad_traces([a, a._replace(addr=a.addr[:1], pc=a.pc[:1], is_store=a.is_store[:1],
  ...                           instr=a.instr[:1], n_instructions=1)]).valid.tolist()
  [[True, True, True], [True, False, False]]
  """
  if isinstance(traces, (Trace, SimArrays)) or not len(traces):
    raise ValueError("traces: expected a non-empty sequence of Trace or SimArrays, given"
                     f" {type(traces).__name__ if len(traces) else 'an empty sequence'}")
  arrays = []
  for i, t in enumerate(traces):
    if isinstance(t, Trace):
      if t.num_accesses == 0:
        raise ValueError(f"traces[{i}]: expected at least one access, given an empty trace"
                         f" ({t.name!r})")
      try:
        t = to_sim_arrays(t, block_bits)
      except ValueError as e:
        raise ValueError(f"traces[{i}]: {e}") from e
    elif not isinstance(t, SimArrays):
      raise TypeError(f"traces[{i}]: expected a Trace or SimArrays, given {type(t).__name__}")
    if t.block.ndim != 1:
      raise ValueError(f"traces[{i}]: expected unbatched SimArrays (1-D block), given shape"
                       f" {t.block.shape}")
    if t.block.shape[0] == 0:
      raise ValueError(f"traces[{i}]: expected at least one access, given an empty trace")
    arrays.append(t)
  longest = max(t.block.shape[0] for t in arrays)
  if length is None:
    length = longest
  if int(length) != length or length < 1:
    raise ValueError(f"length: expected an int >= 1, given {length!r}")
  length = int(length)
  if longest > length and not truncate:
    i = next(i for i, t in enumerate(arrays) if t.block.shape[0] > length)
    raise ValueError(f"length: expected >= every trace's length, given {length} but traces[{i}]"
                     f" has {arrays[i].block.shape[0]} accesses (pass truncate=True to cut)")
  b = len(arrays)
  out = SimArrays(np.zeros((b, length), np.int32), np.zeros((b, length), np.int32),
                  np.zeros((b, length), np.int8), np.zeros((b, length), np.int32),
                  np.zeros((b, length), bool), np.zeros((b,), np.int32))
  for i, t in enumerate(arrays):
    m = min(t.block.shape[0], length)
    for field in ("block", "pc_hash", "is_store", "instr", "valid"):
      getattr(out, field)[i, :m] = getattr(t, field)[:m]
    out.instr[i, m:] = t.instr[m - 1]
    # A cut trace ends where its first dropped access's instruction begins.
    out.n_instructions[i] = t.instr[m] if m < t.block.shape[0] else t.n_instructions
  return out
