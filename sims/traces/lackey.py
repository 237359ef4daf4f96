"""Real memory traces: valgrind lackey capture, a vectorised log converter, and the C kernels.

``valgrind --tool=lackey --trace-mem=yes`` prints one line per guest
instruction and per data access (``papers/prefetch.md`` 3, "Reduced protocol")::

  ==4711== Lackey, an example Valgrind tool      <- valgrind's own lines: skipped
  I  0401136,3                                    <- instruction at 0x401136, 3 bytes
   L 1fff000778,8                                 <- load of 8 bytes
   S 00404040,4                                   <- store
   M 00404044,4                                   <- modify: a load, then a store

``I`` lines start with ``I`` in column 0, data lines with a space; the address
(hex, 1 to 16 digits) always starts in column 3 and ends at the comma, the
size (decimal) follows it. Lines that start with ``==`` or ``--`` (valgrind's
messages, ``-v`` output) and empty lines are skipped; any other line is a
`LackeyFormatError` naming the file, the line number and the text.

**Conversion** (`convert_lackey`, numpy only, no per-line Python): the PC of a
data line is the address of the closest ``I`` line above it; an ``M`` line
becomes a load and a store of the same address, PC and instruction. Accesses
are kept when their PC lies in ``pc_ranges`` (half-open ``(lo, hi)`` byte
ranges; None keeps all). ``instr`` counts every executed instruction (inside
the ranges or not: library calls take time too), starting at 0 at the first
instruction inside the ranges; ``n_instructions`` runs to the last one, so the
window excludes the dynamic loader's start-up and the exit path. The log is
read in chunks (default 2 MiB), so memory stays bounded for long runs. Hex
addresses are decoded eight digits at a time as uint64 words (a byte-to-nibble
``bytes.translate``, then shifts and masks). [M] About 9 M log lines/s, i.e.
1.9-2.3 M kept references/s, on one core of a shared 2-core machine (logs of
the matmul, stream_triad and spmv_csr kernels, 4.5-6 M lines each).

**PC range of the program** (`text_ranges`): the executable ``PT_LOAD``
segments of the main binary's ELF program headers (read with `struct`, no
``readelf``). They are link-time addresses, so this needs a non-PIE binary
(``-no-pie``; the kernels here are built so); for a PIE binary pass the range
yourself. Code of shared libraries (libc, ld.so) and of valgrind's preload
objects lies outside these segments and is dropped; PLT stubs are inside.

**Capture** (`run_lackey`, `capture`): the program runs under lackey with the
log on a pipe (``--log-fd``) that is converted while it runs. `capture` builds
one of the C kernels of ``programs/`` (`PROGRAMS`) with the system C compiler
(``$CC`` or ``cc``; flags `CFLAGS`) into the cache folder and caches the
converted trace there too, keyed by a hash of the C source, the compiler's
``--version``, the flags, the size argument and `CAPTURE_VERSION`; a second
call only reads the ``.npz``. The cache folder is ``$JAXSYS_CACHE_DIR/traces``,
else ``$XDG_CACHE_HOME/jaxsys/traces``, else ``~/.cache/jaxsys/traces``.
"""

from __future__ import annotations

import fcntl
import hashlib
import io  # noqa: F401  (doctest)
import os
import shutil
import struct
import subprocess
import tempfile
import threading
import time
from collections.abc import Sequence
from typing import BinaryIO, NamedTuple

import numpy as np

from . import format as fmt

CAPTURE_VERSION = 1  # bump when the converter's output for a given log changes
CFLAGS = ("-O1", "-g", "-no-pie", "-fno-pie")
PROGRAMS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "programs")


class Program(NamedTuple):
  """A C kernel of ``programs/``: ``programs/<name>.c`` run as ``<binary> <size>``."""

  name: str
  default_size: int  # chosen for about 0.5-3 M references under lackey
  size_means: str  # what the size argument counts
  description: str


PROGRAMS: dict[str, Program] = {p.name: p for p in (
    Program("stream_triad", 100_000, "doubles per array",
            "a[i] = b[i] + s * c[i] over three arrays, 3 sweeps (dense streams)"),
    Program("stencil2d", 200, "grid side (n x n doubles)",
            "5-point Jacobi sweeps, 4 iterations, row-major"),
    Program("matmul", 80, "matrix side (a multiple of 16)",
            "C = A B with 16 x 16 x 16 tiles (i, j, k inner loops)"),
    Program("spmv_csr", 12_000, "matrix rows",
            "y = A x in CSR, 3 times, on a generated matrix with heavy-tailed row lengths"),
    Program("bfs", 8_000, "graph vertices",
            "breadth-first search (2 roots) on a generated graph with skewed degrees"),
    Program("hash_join", 16_384, "build-side tuples (probe side 4x)",
            "chained hash-table build, then probes with half the keys matching"),
    Program("aos_walk", 12_000, "walks",
            "array-of-structs field walks: 256 B records, two footprints, each in two orders"),
    Program("pointer_chase", 32_768, "list nodes of 64 B (8 laps of steps)",
            "linked-list walk over a random cyclic permutation (negative control)"),
)}


class LackeyFormatError(ValueError):
  """A line of a lackey log that is not an instruction, access or valgrind line."""


class ToolMissingError(RuntimeError):
  """valgrind or a C compiler is not installed."""


# ----------------------------------------------------------------------------- converter

_KIND = np.full(256, 255, np.uint8)  # data-line letter -> 0 load, 1 store, 2 modify
_KIND[ord("L")], _KIND[ord("S")], _KIND[ord("M")] = 0, 1, 2
_NIBBLE = np.full(256, 0xff, np.uint8)  # hex digit -> its value; anything else 0xff
for _i, _c in enumerate(b"0123456789abcdef"):
  _NIBBLE[_c] = _i
for _i, _c in enumerate(b"ABCDEF"):
  _NIBBLE[_c] = 10 + _i
_NIBBLE_TABLE = bytes(_NIBBLE.tolist())  # for bytes.translate (much faster than numpy take)
_PAD = 24  # zero bytes around a chunk so fixed-width gathers never leave it
_MAX_HEX = 16
_MAX_SIZE_DIGITS = 5
_SHORT_READ = 64 << 10
_PIPE_BYTES = 1 << 20  # pipe buffer asked for (Linux F_SETPIPE_SZ); the default is 64 KiB
_PIPE_PAUSE = 0.005
# _HIGH[k]: a mask of the high k bytes of a uint64 word.
_HIGH = np.array([((1 << 64) - 1) ^ ((1 << (8 * (8 - k))) - 1) for k in range(9)], np.uint64)
_HIGH_NIBBLES = np.uint64(0xf0f0f0f0f0f0f0f0)


def _words(buf: np.ndarray) -> np.ndarray:
  """An overlapping little-endian uint64 view: ``_words(buf)[i]`` holds ``buf[i:i + 8]``."""
  return np.ndarray((len(buf) - 7,), "<u8", buffer=buf, strides=(1,))


def _pack_nibbles(v: np.ndarray) -> np.ndarray:
  """Per word of 8 nibble bytes (the most significant in the lowest byte): their value."""
  m8, m16, m32 = (np.uint64(0x00ff00ff00ff00ff), np.uint64(0x0000ffff0000ffff),
                  np.uint64(0x00000000ffffffff))
  v = ((v & m8) << np.uint64(4)) | ((v >> np.uint64(8)) & m8)
  v = ((v & m16) << np.uint64(8)) | ((v >> np.uint64(16)) & m16)
  return ((v & m32) << np.uint64(16)) | (v >> np.uint64(32))


def _in_ranges(pc: np.ndarray, ranges) -> np.ndarray:
  if ranges is None:
    return np.ones(pc.shape, bool)
  keep = np.zeros(pc.shape, bool)
  for lo, hi in ranges:
    keep |= (pc >= np.uint64(lo)) & (pc < np.uint64(hi))
  return keep


def _check_ranges(pc_ranges) -> list[tuple[int, int]] | None:
  if pc_ranges is None:
    return None
  try:
    ranges = [(int(lo), int(hi)) for lo, hi in pc_ranges]
  except (TypeError, ValueError) as e:
    raise ValueError(f"pc_ranges: expected None or a sequence of (lo, hi) integer pairs, given"
                     f" {pc_ranges!r}") from e
  for lo, hi in ranges:
    if not 0 <= lo < hi < 2**64 + 1:
      raise ValueError(f"pc_ranges: expected 0 <= lo < hi <= 2^64 in each pair, given"
                       f" ({lo:#x}, {hi:#x})")
  return [(lo, min(hi, 2**64 - 1)) for lo, hi in ranges]


class _Converter:
  """Streaming state of one log: feed it whole lines, chunk by chunk."""

  def __init__(self, where: str, ranges):
    self.where = where
    self.ranges = ranges
    self.lines = 0  # lines already parsed
    self.n_instr = 0  # I lines already parsed
    self.n_data = 0  # L/S/M lines already parsed
    self.last_pc: int | None = None  # address of the last I line so far
    self.first_in: int | None = None  # instruction index of the first I line in range
    self.last_in = -1
    self.parts: list[tuple[np.ndarray, ...]] = []
    self.valgrind_lines: list[str] = []

  def _error(self, buf: bytes, starts, ends, i: int, why: str):
    text = bytes(buf[starts[i]:ends[i]]).decode("utf-8", "replace")
    if len(text) > 100:
      text = text[:100] + "..."
    raise LackeyFormatError(f"{self.where}:{self.lines + i + 1}: {why}: {text!r}")

  def feed(self, chunk: bytes) -> None:
    """Parses ``chunk``, which holds whole lines (ending with a newline)."""
    if not chunk:
      return
    raw = np.frombuffer(chunk, np.uint8)
    ends = np.flatnonzero(raw == 10)
    starts = np.empty_like(ends)
    starts[0] = 0
    starts[1:] = ends[:-1] + 1
    length = ends - starts
    padded = bytes(_PAD) + chunk + bytes(_PAD)
    buf = np.frombuffer(padded, np.uint8)
    s = starts + _PAD
    c0, c1, c2 = buf[s], buf[s + 1], buf[s + 2]
    short = length < 5  # the shortest body line is "I  0,1"
    skip = (length == 0) | (((c0 == 61) & (c1 == 61)) | ((c0 == 45) & (c1 == 45)))
    is_i = (c0 == 73) & (c1 == 32) & (c2 == 32) & ~short
    kind = _KIND[c1]
    is_d = (c0 == 32) & (kind != 255) & (c2 == 32) & ~short
    body = is_i | is_d
    bad = ~(skip | body)
    if bad.any():
      self._error(chunk, starts, ends, int(np.argmax(bad)), "not a lackey line (expected"
                  " 'I  addr,size', ' L|S|M addr,size' or a '==pid==' line)")
    if np.count_nonzero(skip):
      for i in np.flatnonzero(skip)[:max(0, 200 - len(self.valgrind_lines))]:
        self.valgrind_lines.append(chunk[starts[i]:ends[i]].decode("utf-8", "replace"))
    bi = np.flatnonzero(body)
    bs, be = starts[bi] + _PAD, ends[bi] + _PAD  # in buf; be is the newline
    nib = np.frombuffer(padded.translate(_NIBBLE_TABLE), np.uint8)  # hex digits' values, else 0xff
    # The size: 1-5 decimal digits between the last comma and the newline (one
    # digit on most lines, so look further only where needed).
    nsize = np.where(buf[be - 2] == 44, 1, 0)
    for k in range(2, _MAX_SIZE_DIGITS + 1):
      rest = np.flatnonzero(nsize == 0)
      if not len(rest):
        break
      nsize[rest[buf[be[rest] - 1 - k] == 44]] = k
    ndig = be - 1 - nsize - (bs + 3)
    bad = (nsize == 0) | (ndig < 1) | (ndig > _MAX_HEX)
    if bad.any():
      k = int(np.argmax(bad))
      self._error(chunk, starts, ends, int(bi[k]), "expected 'addr,size' from column 4 with 1-16"
                  f" hex address digits and 1-{_MAX_SIZE_DIGITS} decimal size digits")
    bad = nib[be - 1] > 9
    long_size = np.flatnonzero(nsize > 1)
    if len(long_size):
      digits = _words(nib)[be[long_size] - 8] & _HIGH[nsize[long_size]]
      bad[long_size] |= np.any(np.ndarray((len(long_size), 8), np.uint8, digits) > 9, axis=1)
    # The address: up to 16 hex digits ending at the comma, as two words of 8
    # nibbles; bytes before the first digit are masked to 0.
    comma = be - 1 - nsize
    nibwords = _words(nib)
    lo = nibwords[comma - 8] & _HIGH[np.minimum(ndig, 8)]
    bad |= (lo & _HIGH_NIBBLES) != 0
    addr = _pack_nibbles(lo)
    wide = np.flatnonzero(ndig > 8)
    if len(wide):
      hi = nibwords[comma[wide] - 16] & _HIGH[ndig[wide] - 8]
      bad[wide] |= (hi & _HIGH_NIBBLES) != 0
      addr[wide] |= _pack_nibbles(hi) << np.uint64(32)
    if bad.any():
      k = int(np.argmax(bad))
      self._error(chunk, starts, ends, int(bi[k]), "expected 'addr,size' from column 4 with 1-16"
                  f" hex address digits and 1-{_MAX_SIZE_DIGITS} decimal size digits")
    # PC and instruction index of every body line.
    b_is_i = is_i[bi]
    pos = np.arange(len(bi))
    last_i = np.maximum.accumulate(np.where(b_is_i, pos, -1))
    instr_idx = self.n_instr + np.cumsum(b_is_i, dtype=np.int64) - 1
    if len(bi) and last_i[0] < 0 and self.last_pc is None:
      self._error(chunk, starts, ends, int(bi[0]), "data access before any 'I' line")
    pc = np.where(last_i >= 0, addr[np.maximum(last_i, 0)],
                  np.uint64(self.last_pc if self.last_pc is not None else 0))
    # Instruction window inside the ranges.
    i_rows = np.flatnonzero(b_is_i)
    if len(i_rows):
      inside = i_rows[_in_ranges(addr[i_rows], self.ranges)]
      if len(inside):
        if self.first_in is None:
          self.first_in = int(instr_idx[inside[0]])
        self.last_in = int(instr_idx[inside[-1]])
      self.last_pc = int(addr[i_rows[-1]])
    d_rows = np.flatnonzero(~b_is_i)
    d_rows = d_rows[_in_ranges(pc[d_rows], self.ranges)]
    self.parts.append((addr[d_rows], pc[d_rows], kind[bi[d_rows]], instr_idx[d_rows]))
    self.n_instr += int(np.count_nonzero(b_is_i))
    self.n_data += len(bi) - int(np.count_nonzero(b_is_i))
    self.lines += len(starts)

  def finish(self, name: str, source: str) -> fmt.Trace:
    """The `Trace` of everything fed; an error when no access was kept."""
    if self.parts:
      addr, pc, kind, instr = (np.concatenate(x) for x in zip(*self.parts))
    else:
      addr = pc = np.zeros(0, np.uint64)
      kind, instr = np.zeros(0, np.uint8), np.zeros(0, np.int64)
    if len(addr) == 0:
      ranges = ("all PCs" if self.ranges is None else
                ", ".join(f"[{lo:#x}, {hi:#x})" for lo, hi in self.ranges))
      raise ValueError(f"{self.where}: no memory access with a PC in {ranges} ({self.lines} lines,"
                       f" {self.n_instr} instructions, {self.n_data} accesses in the log)")
    reps = np.where(kind == 2, 2, 1)
    idx = np.repeat(np.arange(len(addr)), reps)
    is_store = kind[idx] == 1
    second = np.zeros(len(idx), bool)  # the store half of an M
    second[1:] = idx[1:] == idx[:-1]
    is_store |= second
    first_in = self.first_in if self.first_in is not None else int(instr[0])
    last_in = max(self.last_in, int(instr[-1]))
    return fmt.make_trace(addr[idx], pc[idx], is_store, instr[idx] - first_in, name=name,
                          source=source, n_instructions=last_in - first_in + 1)


def convert_lackey(log: str | os.PathLike | BinaryIO, *, pc_ranges=None, name: str | None = None,
                   source: str | None = None, chunk_bytes: int = 2 << 20) -> fmt.Trace:
  """Converts a lackey ``--trace-mem=yes`` log to a `Trace` (vectorised; see the module docstring).

  Args:
    log: a log file path, or a binary file object (e.g. a pipe) read to its end.
    pc_ranges: None (keep every access) or half-open ``(lo, hi)`` PC ranges;
      `text_ranges` gives those of a non-PIE program.
    name: the trace's name (default: the file's stem).
    source: the trace's source (default ``"lackey:<log>"``).
    chunk_bytes: bytes parsed per numpy pass.

  Returns:
    The `Trace`.

  Raises:
    LackeyFormatError: (a ValueError) naming the file, the line number and the
      text of the first malformed line.
    ValueError: when no access lies in ``pc_ranges``.

  >>> log = io.BytesIO(b"==1== Lackey\\nI  401000,3\\n M 7ff0,8\\nI  5000,2\\n L 80,4\\n")
  >>> t = convert_lackey(log, pc_ranges=[(0x401000, 0x402000)])
  >>> t.addr.tolist(), t.is_store.tolist(), t.instr.tolist(), t.n_instructions
  ([32752, 32752], [False, True], [0, 0], 1)
  """
  ranges = _check_ranges(pc_ranges)
  if int(chunk_bytes) != chunk_bytes or chunk_bytes < 1:
    raise ValueError(f"chunk_bytes: expected an int >= 1, given {chunk_bytes!r}")
  if isinstance(log, (str, os.PathLike)):
    where = os.fspath(log)
    with open(log, "rb") as f:
      return _convert_stream(f, where, ranges, chunk_bytes,
                             name if name is not None else _stem(where),
                             source if source is not None else f"lackey:{where}")
  where = str(getattr(log, "name", "<lackey log>"))
  return _convert_stream(log, where, ranges, chunk_bytes, name if name is not None else "lackey",
                         source if source is not None else f"lackey:{where}")


def _stem(path: str) -> str:
  base = os.path.basename(path)
  return base.split(".")[0] or base


def _convert_stream(f: BinaryIO, where: str, ranges, chunk_bytes: int, name: str,
                    source: str) -> fmt.Trace:
  conv = _Converter(where, ranges)
  _pump(f, conv, chunk_bytes)
  return conv.finish(name, source)


def _pump(f: BinaryIO, conv: _Converter, chunk_bytes: int, pause: float = 0.0) -> None:
  """Reads ``f`` (a file or a pipe) to its end, feeding ``conv`` ~``chunk_bytes`` of whole lines.

  ``pause``: seconds to wait after a short read from a pipe. valgrind writes its
  log a few hundred bytes at a time; waiting lets the pipe fill instead of
  waking up (and paying a system call) for each write.
  """
  pending: list[bytes] = []
  size, target = 0, chunk_bytes
  while True:
    block = f.read(target - size)
    if pause and 0 < len(block) < _SHORT_READ:
      time.sleep(pause)
    if block:
      pending.append(block)
      size += len(block)
      if size < target:
        continue
    data = b"".join(pending)
    if not block:  # end of file
      if data:
        conv.feed(data if data.endswith(b"\n") else data + b"\n")
      return
    cut = data.rfind(b"\n") + 1
    if cut == 0:  # no whole line yet: read more
      pending, target = [data], 2 * target
      continue
    conv.feed(data[:cut])
    rest = data[cut:]
    pending, size = ([rest] if rest else []), len(rest)
    target = max(chunk_bytes, 2 * size)


# ----------------------------------------------------------------------------- ELF


def text_ranges(binary: str | os.PathLike) -> list[tuple[int, int]]:
  """Half-open address ranges of the executable ``PT_LOAD`` segments of a non-PIE ELF64 binary.

  Args:
    binary: path of the program (little-endian ELF64, ``ET_EXEC``).

  Returns:
    ``[(vaddr, vaddr + memsz), ...]`` of segments with the execute flag.

  Raises:
    ValueError: naming the file, if it is not a little-endian ELF64 executable
      or is position-independent (``ET_DYN``: its load address is chosen at run
      time, so pass ``pc_ranges`` yourself or build with ``-no-pie``).
  """
  path = os.fspath(binary)
  with open(path, "rb") as f:
    head = f.read(64)
    if len(head) < 64 or head[:4] != b"\x7fELF":
      raise ValueError(f"{path}: not an ELF file (magic {head[:4]!r})")
    if head[4] != 2 or head[5] != 1:
      raise ValueError(f"{path}: expected a little-endian ELF64 file, given class {head[4]} data"
                       f" {head[5]}")
    e_type = struct.unpack_from("<H", head, 16)[0]
    if e_type == 3:
      raise ValueError(f"{path}: position-independent executable (ET_DYN): its code is loaded at"
                       " an address chosen at run time; build it with -no-pie or pass pc_ranges")
    if e_type != 2:
      raise ValueError(f"{path}: expected an executable (ET_EXEC = 2), given e_type {e_type}")
    phoff = struct.unpack_from("<Q", head, 32)[0]
    phentsize, phnum = struct.unpack_from("<HH", head, 54)
    f.seek(phoff)
    table = f.read(phentsize * phnum)
  if phentsize < 56 or len(table) < phentsize * phnum:
    raise ValueError(f"{path}: truncated program header table")
  ranges = []
  for i in range(phnum):
    p_type, p_flags, _, vaddr, _, _, memsz = struct.unpack_from("<IIQQQQQ", table, i * phentsize)
    if p_type == 1 and p_flags & 1 and memsz:
      ranges.append((vaddr, vaddr + memsz))
  if not ranges:
    raise ValueError(f"{path}: no executable PT_LOAD segment")
  return sorted(ranges)


# ----------------------------------------------------------------------------- capture


def _which(tool: str, what: str, install: str) -> str:
  path = shutil.which(tool)
  if path is None:
    raise ToolMissingError(f"{what} {tool!r} not found on PATH; install it ({install})")
  return path


def _valgrind() -> str:
  return _which("valgrind", "valgrind", "e.g. `apt-get install valgrind`")


def _compiler() -> str:
  cc = os.environ.get("CC", "cc")
  return _which(cc, "C compiler", "e.g. `apt-get install gcc`, or set $CC")


def cache_dir() -> str:
  """The folder for built kernels and captured traces (see the module docstring)."""
  if os.environ.get("JAXSYS_CACHE_DIR"):
    return os.path.join(os.environ["JAXSYS_CACHE_DIR"], "traces")
  base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
  return os.path.join(base, "jaxsys", "traces")


def run_lackey(argv: Sequence[str], *, pc_ranges="main", name: str | None = None,
               timeout: float | None = None, chunk_bytes: int = 2 << 20) -> fmt.Trace:
  """Runs ``argv`` under ``valgrind --tool=lackey --trace-mem=yes`` and converts its log.

  The log goes through a pipe (``--log-fd``) and is converted as it arrives;
  the program's stdout is discarded, its stderr kept for error messages.

  Args:
    argv: the program and its arguments.
    pc_ranges: ``"main"`` (default: `text_ranges` of ``argv[0]``, which must
      be a non-PIE ELF), None (keep all accesses, libraries included) or
      explicit ``(lo, hi)`` pairs.
    name: the trace's name (default: the program's file name).
    timeout: seconds before the run is killed (None: no limit).
    chunk_bytes: bytes of log parsed per numpy pass.

  Returns:
    The `Trace`, ``source = "lackey:" + the command line``.

  Raises:
    ToolMissingError: when valgrind is not installed.
    RuntimeError: when the program (or valgrind) fails or times out.
  """
  argv = [os.fspath(a) for a in argv]
  if not argv:
    raise ValueError("argv: expected a program and its arguments, given an empty list")
  valgrind = _valgrind()
  prog = argv[0] if os.sep in argv[0] else (shutil.which(argv[0]) or argv[0])
  if isinstance(pc_ranges, str):
    if pc_ranges != "main":
      raise ValueError(f"pc_ranges: expected 'main', None or (lo, hi) pairs, given {pc_ranges!r}")
    pc_ranges = text_ranges(prog)
  ranges = _check_ranges(pc_ranges)
  command = " ".join(argv)
  r, w = os.pipe()
  try:
    fcntl.fcntl(w, getattr(fcntl, "F_SETPIPE_SZ", 1031), _PIPE_BYTES)
  except OSError:  # not Linux, or above /proc/sys/fs/pipe-max-size: keep the default
    pass
  with tempfile.TemporaryFile() as err:
    try:
      proc = subprocess.Popen([valgrind, "--tool=lackey", "--trace-mem=yes", f"--log-fd={w}",
                               prog, *argv[1:]], stdin=subprocess.DEVNULL,
                              stdout=subprocess.DEVNULL, stderr=err, pass_fds=(w,))
    finally:
      os.close(w)
    conv = _Converter(f"<lackey log of {command}>", ranges)
    killed = []  # set by the timer

    def kill():
      killed.append(True)
      proc.kill()

    timer = None if timeout is None else threading.Timer(timeout, kill)
    try:
      if timer is not None:
        timer.start()
      with os.fdopen(r, "rb", buffering=0) as f:
        _pump(f, conv, chunk_bytes, pause=_PIPE_PAUSE)
      rc = proc.wait()
    except BaseException:
      proc.kill()
      proc.wait()
      raise
    finally:
      if timer is not None:
        timer.cancel()
    if rc != 0:
      err.seek(0)
      stderr = err.read().decode("utf-8", "replace")[-2000:]
      log = "\n".join(conv.valgrind_lines[-20:])
      why = (f"was killed after the {timeout} s timeout" if killed else
             f"exited with status {rc}")
      raise RuntimeError(f"lackey run of {command!r} {why}.\nstderr:\n{stderr}"
                         f"\nvalgrind log:\n{log}")
  return conv.finish(name if name is not None else os.path.basename(prog), f"lackey:{command}")


def _program_source(program: str) -> tuple[str, bytes]:
  """Path and bytes of ``programs/<program>.c``, with clear errors."""
  if program not in PROGRAMS:
    raise ValueError(f"program: unknown name {program!r}; known: {', '.join(PROGRAMS)}")
  src = os.path.join(PROGRAMS_DIR, f"{program}.c")
  try:
    with open(src, "rb") as f:
      return src, f.read()
  except FileNotFoundError as e:
    raise FileNotFoundError(
        f"{src}: the C source of kernel {program!r} is missing; this installation of jaxsys"
        " lacks the package data sims/traces/programs/*.c (run from a source checkout or"
        " an editable install)") from e


_VERSIONS: dict[str, str] = {}


def _compiler_version(cc: str) -> str:
  if cc not in _VERSIONS:
    proc = subprocess.run([cc, "--version"], capture_output=True, text=True, check=False)
    _VERSIONS[cc] = (proc.stdout or proc.stderr).strip()
  return _VERSIONS[cc]


def _key(*parts) -> str:
  h = hashlib.sha256()
  for p in parts:
    h.update(p if isinstance(p, bytes) else str(p).encode())
    h.update(b"\0")
  return h.hexdigest()[:16]


def build(program: str, *, cflags: Sequence[str] = CFLAGS, cache: str | None = None) -> str:
  """Compiles ``programs/<program>.c`` into the cache folder (once) and returns the binary's path.

  Args:
    program: a name of `PROGRAMS`.
    cflags: compiler flags; keep ``-no-pie`` so `text_ranges` works.
    cache: cache folder (default `cache_dir()`).

  Raises:
    ValueError: for an unknown program (the message lists the known ones).
    ToolMissingError: when no C compiler is installed.
    RuntimeError: when compilation fails (with the compiler's output).
  """
  src, code = _program_source(program)
  cc = _compiler()
  key = _key(code, _compiler_version(cc), *cflags)
  out_dir = os.path.join(cache if cache is not None else cache_dir(), "bin")
  binary = os.path.join(out_dir, f"{program}-{key}")
  if os.path.exists(binary):
    return binary
  os.makedirs(out_dir, exist_ok=True)
  tmp = f"{binary}.tmp{os.getpid()}"
  proc = subprocess.run([cc, *cflags, "-o", tmp, src], capture_output=True, text=True,
                        check=False)
  if proc.returncode != 0:
    raise RuntimeError(f"compiling {src} with `{cc} {' '.join(cflags)}` failed:\n"
                       f"{proc.stderr[-3000:]}")
  os.replace(tmp, binary)
  return binary


def capture(program: str, size: int | None = None, *, cache: str | None = None,
            refresh: bool = False, cflags: Sequence[str] = CFLAGS,
            timeout: float | None = 600.0) -> fmt.Trace:
  """The lackey trace of one C kernel of `PROGRAMS`, from the cache when it is there.

  Args:
    program: a name of `PROGRAMS` (e.g. ``"matmul"``).
    size: the kernel's size argument (default ``PROGRAMS[program].default_size``).
    cache: cache folder (default `cache_dir()`).
    refresh: capture again even when cached.
    cflags: compiler flags (part of the cache key).
    timeout: seconds allowed for the lackey run.

  Returns:
    The `Trace` of the kernel's own code (`text_ranges` of its binary),
    named ``program``.

  Raises:
    ValueError: unknown program (lists the known ones) or a bad size.
    ToolMissingError: valgrind or the C compiler missing (says what to install).

  >>> t = capture("stream_triad", 1000)  # doctest: +SKIP
  """
  _, code = _program_source(program)
  size = PROGRAMS[program].default_size if size is None else size
  if isinstance(size, bool) or int(size) != size or size < 1:
    raise ValueError(f"size: expected an int >= 1, given {size!r}")
  size = int(size)
  folder = cache if cache is not None else cache_dir()
  cc = _compiler()
  key = _key(code, _compiler_version(cc), *cflags, size, CAPTURE_VERSION, fmt.FORMAT_VERSION)
  path = os.path.join(folder, f"{program}-{size}-{key}.npz")
  if os.path.exists(path) and not refresh:
    return fmt.load(path)
  binary = build(program, cflags=cflags, cache=folder)
  trace = run_lackey([binary, str(size)], name=program, timeout=timeout)
  trace = trace._replace(source=f"lackey:programs/{program}.c {size}")
  tmp = f"{path}.tmp{os.getpid()}.npz"
  fmt.save(tmp, trace)
  os.replace(tmp, path)
  return trace
