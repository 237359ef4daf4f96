"""Memory traces: the .npz format and its checks, the int32 JAX view, the lackey converter
against a line-by-line Python parser and a hand-derived golden log, real lackey runs (skipped
without valgrind), every synthetic generator's defining property, and ChampSim records built
byte by byte with `struct`."""

import doctest
import lzma
import os
import shutil
import struct
import subprocess
import time
import zipfile
from collections import defaultdict

import hypothesis
import hypothesis.strategies as st
import numpy as np
import pytest

from jaxsys.sims import traces
from jaxsys.sims.traces import champsim
from jaxsys.sims.traces import format as fmt
from jaxsys.sims.traces import lackey
from jaxsys.sims.traces import synthetic

U64 = np.uint64
HAVE_VALGRIND = shutil.which("valgrind") is not None
HAVE_CC = shutil.which(os.environ.get("CC", "cc")) is not None
needs_lackey = pytest.mark.skipif(
    not (HAVE_VALGRIND and HAVE_CC),
    reason="needs valgrind and a C compiler on PATH (apt-get install valgrind gcc)")


def assert_trace_equal(got, want_addr, want_pc, want_store, want_instr, want_n=None):
  assert got.addr.dtype == np.uint64 and got.pc.dtype == np.uint64
  assert got.is_store.dtype == bool and got.instr.dtype == np.int64
  assert got.addr.tolist() == [int(a) for a in want_addr]
  assert got.pc.tolist() == [int(p) for p in want_pc]
  assert got.is_store.tolist() == [bool(s) for s in want_store]
  assert got.instr.tolist() == [int(i) for i in want_instr]
  if want_n is not None:
    assert got.n_instructions == want_n


def test_docstring_examples_run():
  for module in (fmt, lackey, synthetic, champsim):
    result = doctest.testmod(module)
    assert result.failed == 0, module.__name__


# ----------------------------------------------------------------------------- format


@st.composite
def random_traces(draw):
  n = draw(st.integers(0, 40))
  addr = draw(st.lists(st.integers(0, 2**64 - 1), min_size=n, max_size=n))
  pc = draw(st.lists(st.sampled_from([0x401000, 0x401004, 2**63 + 5, 0]), min_size=n, max_size=n))
  store = draw(st.lists(st.booleans(), min_size=n, max_size=n))
  steps = draw(st.lists(st.integers(0, 2**20), min_size=n, max_size=n))
  instr = np.cumsum(np.asarray(steps, np.int64))
  extra = draw(st.integers(1, 5))
  n_instr = (int(instr[-1]) if n else -1) + extra
  return fmt.make_trace(np.asarray(addr, np.uint64), np.asarray(pc, np.uint64), store, instr,
                        name=draw(st.text(max_size=8)), source="hypothesis",
                        n_instructions=n_instr)


@hypothesis.settings(deadline=None, max_examples=40,
                     suppress_health_check=[hypothesis.HealthCheck.function_scoped_fixture])
@hypothesis.given(trace=random_traces())
def test_save_load_round_trip(tmp_path, trace):
  path = tmp_path / "t.npz"  # overwritten by each example
  fmt.save(path, trace)
  back = fmt.load(path)
  assert_trace_equal(back, trace.addr, trace.pc, trace.is_store, trace.instr,
                     trace.n_instructions)
  assert (back.name, back.source) == (trace.name, trace.source)


def test_saved_file_is_compact():
  t = synthetic.generate("stream_triad", 200_000, seed=0)
  import tempfile
  with tempfile.TemporaryDirectory() as d:
    fmt.save(os.path.join(d, "t.npz"), t)
    size = os.path.getsize(os.path.join(d, "t.npz"))
  assert size / t.num_accesses < 0.5  # bytes per access; raw columns take 25


def _good_file(tmp_path):
  path = tmp_path / "good.npz"
  fmt.save(path, fmt.make_trace([64, 128, 4096], [0x401000, 0x401008, 0x401000],
                                [False, True, False], [0, 2, 7], name="g", n_instructions=9))
  with np.load(path) as z:
    return {k: z[k] for k in z.files}


@pytest.mark.parametrize("change, field, expected", [
    (lambda f: f.pop("pc_table"), "pc_table", "missing field"),
    (lambda f: f.update(addr_delta=f["addr_delta"].astype(np.float64)), "addr_delta", "int64"),
    (lambda f: f.update(instr_delta=f["instr_delta"][:2]), "instr_delta", "expected length 3"),
    (lambda f: f.update(format_version=np.int64(99)), "format_version", "expected 1, given 99"),
    (lambda f: f.update(name=np.int64(3)), "name", "string"),
    (lambda f: f.update(pc_index=np.array([0, 5, 0], np.uint8)), "pc_index", "< len(pc_table)"),
    (lambda f: f.update(instr_delta=np.array([0, -1, 3])), "instr_delta", ">= 0"),
    (lambda f: f.update(is_store_bits=np.zeros((1, 1), np.uint8)), "is_store_bits", "1-D"),
    (lambda f: f.update(n_instructions=np.int64(7)), "n_instructions", "the last instr (7)"),
])
def test_load_names_file_and_field(tmp_path, change, field, expected):
  fields = _good_file(tmp_path)
  change(fields)
  bad = tmp_path / "bad.npz"
  np.savez(bad, **fields)
  with pytest.raises(ValueError) as e:
    fmt.load(bad)
  assert str(bad) in str(e.value)
  assert field in str(e.value)
  assert expected in str(e.value)


def test_load_rejects_non_archives(tmp_path):
  text = tmp_path / "not.npz"
  text.write_text("hello")
  with pytest.raises(ValueError, match=f"{text}: not a readable .npz"):
    fmt.load(text)
  single = tmp_path / "single.npy"
  np.save(single, np.zeros(3))
  with pytest.raises(ValueError, match="single array"):
    fmt.load(single)
  broken = tmp_path / "broken.npz"
  with zipfile.ZipFile(broken, "w") as zf:
    zf.writestr("addr_delta.npy", b"garbage")
  with pytest.raises(ValueError, match=str(broken)):
    fmt.load(broken)


@pytest.mark.parametrize("kwargs, message", [
    (dict(addr=[1, 2], pc=[1], is_store=[0, 0]), "pc: expected length 2"),
    (dict(addr=[-1], pc=[1], is_store=[0]), "addr: expected values >= 0, given -1"),
    (dict(addr=[1, 2], pc=[1, 1], is_store=[0, 0], instr=[5, 4]), "non-decreasing"),
    (dict(addr=[1], pc=[1], is_store=[2]), "is_store: expected bools or 0/1"),
    (dict(addr=[1.5], pc=[1], is_store=[0]), "addr: expected integers"),
    (dict(addr=[[1]], pc=[1], is_store=[0]), "addr: expected a 1-D array"),
    (dict(addr=[1], pc=[1], is_store=[0], instr=[3], n_instructions=3),
     r"n_instructions: expected an int > the last instr \(3\)"),
])
def test_make_trace_errors(kwargs, message):
  with pytest.raises(ValueError, match=message):
    fmt.make_trace(**kwargs)


def test_concat_traces_continues_instruction_indices():
  a = fmt.make_trace([1, 2], [7, 7], [0, 1], [0, 3], n_instructions=5)
  b = fmt.make_trace([3], [8], [0], [1], n_instructions=2)
  c = fmt.concat_traces([a, b], name="ab")
  assert_trace_equal(c, [1, 2, 3], [7, 7, 8], [0, 1, 0], [0, 3, 6], 7)


def test_to_sim_arrays_golden():
  # Chunks (1 MiB): 0x7f0000000 (two addresses), 0x7f0000001 (adjacent), 0x10 (far below).
  # Sorted chunk numbers 0x10 < 0x7f0000000 < 0x7f0000001 get ids 0, 2 (gap), 3 (adjacent).
  addr = [0x7f0000000040, 0x7f00000fffc0, 0x7f0000100000, 0x1000abc0]
  t = fmt.make_trace(addr, [0x8123_4567_89ab, 1, 2, 3], [0, 1, 0, 1], [0, 0, 4, 9])
  s = fmt.to_sim_arrays(t)
  # id << 20 | low 20 bits, then >> 6: 2 << 14 | 0x40 >> 6 = 32769; 2 << 14 | 0xfffc0 >> 6 =
  # 32768 + 16383; 3 << 14 = 49152; 0 << 14 | 0xabc0 >> 6 = 687.
  assert s.block.tolist() == [32769, 49151, 49152, 687]
  assert s.block.dtype == np.int32
  assert s.pc_hash.tolist() == [0x0123_4567_89ab & 0x7FFFFFFF, 1, 2, 3]
  assert s.is_store.dtype == np.int8 and s.is_store.tolist() == [0, 1, 0, 1]
  assert s.instr.dtype == np.int32 and s.instr.tolist() == [0, 0, 4, 9]
  assert s.valid.all() and int(s.n_instructions) == 10


@hypothesis.settings(deadline=None, max_examples=60)
@hypothesis.given(
    chunks=st.lists(st.integers(0, 2**44 - 1), min_size=1, max_size=6),
    lows=st.lists(st.integers(0, 2**20 - 1), min_size=1, max_size=30),
    picks=st.lists(st.integers(0, 5), min_size=1, max_size=30),
    block_bits=st.integers(0, 12),
)
def test_remap_keeps_low_bits_order_distinctness_and_adjacency(chunks, lows, picks, block_bits):
  chunks = chunks + [c + 1 for c in chunks[:2] if c + 1 < 2**44]  # some adjacent chunks
  addr = np.array([(chunks[p % len(chunks)] << 20) | lows[i % len(lows)]
                   for i, p in enumerate(picks)], np.uint64)
  new, table = fmt.remap_chunks(addr)
  assert ((new & U64(0xFFFFF)) == (addr & U64(0xFFFFF))).all()
  back = (table[(new >> U64(20)).astype(np.int64)].astype(np.uint64) << U64(20)) | (new &
                                                                                   U64(0xFFFFF))
  assert (back == addr).all()
  order = np.argsort(addr, kind="stable")
  assert (np.diff(new[order].astype(np.int64)) >= 0).all()  # monotone
  ids = {int(c): i for i, c in enumerate(table) if c >= 0}
  for c in ids:  # adjacent chunks keep adjacent ids, others do not
    if c + 1 in ids:
      assert ids[c + 1] == ids[c] + 1
  for c1, c2 in zip(sorted(ids), sorted(ids)[1:]):
    if c2 != c1 + 1:
      assert ids[c2] == ids[c1] + 2
  t = fmt.make_trace(addr, np.zeros(len(addr), np.uint64), np.zeros(len(addr), bool))
  block = fmt.to_sim_arrays(t, block_bits).block.astype(np.int64)
  low_mask = (1 << (20 - block_bits)) - 1
  assert ((block & low_mask) == ((addr >> U64(block_bits)).astype(np.int64) & low_mask)).all()
  assert len(np.unique(block)) == len(np.unique(addr >> U64(block_bits)))


def test_to_sim_arrays_errors():
  empty = fmt.make_trace([], [], [], name="nothing")
  with pytest.raises(ValueError, match="trace 'nothing': expected at least one access"):
    fmt.to_sim_arrays(empty)
  one = fmt.make_trace([1], [1], [0])
  with pytest.raises(ValueError, match="block_bits: expected an int in 0..20, given 21"):
    fmt.to_sim_arrays(one, block_bits=21)
  # block_bits = 0 leaves 2^11 chunk ids; 1100 chunks 2 MiB apart need 2199 (with gaps).
  spread = fmt.make_trace(np.arange(1100, dtype=np.uint64) << U64(21), np.zeros(1100, np.uint64),
                          np.zeros(1100, bool), name="spread")
  with pytest.raises(ValueError, match="trace 'spread': touches 1100 distinct 1 MiB chunks"):
    fmt.to_sim_arrays(spread, block_bits=0)
  assert fmt.to_sim_arrays(spread, block_bits=6).block.max() < 2**31
  long = fmt.make_trace([1], [1], [0], [2**31], name="long")
  with pytest.raises(ValueError, match="n_instructions = 2147483649 does not fit int32"):
    fmt.to_sim_arrays(long)
  with pytest.raises(TypeError, match="trace: expected a Trace"):
    fmt.to_sim_arrays(np.zeros(3))


def test_pad_traces():
  a = fmt.make_trace([0, 64, 128], [1, 2, 3], [0, 1, 0], [0, 2, 5], n_instructions=8)
  b = fmt.make_trace([4096], [9], [1], [3], n_instructions=4)
  p = fmt.pad_traces([a, b])
  assert p.block.shape == (2, 3)
  assert p.block.tolist() == [[0, 1, 2], [64, 0, 0]]
  assert p.valid.tolist() == [[True, True, True], [True, False, False]]
  assert p.instr.tolist() == [[0, 2, 5], [3, 3, 3]]  # padding repeats the last index
  assert p.is_store.tolist() == [[0, 1, 0], [1, 0, 0]]
  assert p.n_instructions.tolist() == [8, 4]
  q = fmt.pad_traces([fmt.to_sim_arrays(a), b], length=5)
  assert q.valid.sum(axis=1).tolist() == [3, 1] and q.block.shape == (2, 5)
  cut = fmt.pad_traces([a, b], length=2, truncate=True)
  assert cut.block.tolist() == [[0, 1], [64, 0]]
  assert cut.n_instructions.tolist() == [5, 4]  # a was cut before its access at instruction 5
  with pytest.raises(ValueError, match=r"given 2 but traces\[0\] has 3 accesses"):
    fmt.pad_traces([a, b], length=2)
  with pytest.raises(ValueError, match="non-empty sequence"):
    fmt.pad_traces([])
  with pytest.raises(ValueError, match=r"traces\[1\]: expected at least one access"):
    fmt.pad_traces([a, fmt.make_trace([], [], [])])
  with pytest.raises(TypeError, match=r"traces\[0\]: expected a Trace or SimArrays"):
    fmt.pad_traces([np.zeros(2)])


# ----------------------------------------------------------------------------- lackey converter

GOLDEN_LOG = """\
==77== Lackey, an example Valgrind tool
==77== Command: ./prog 3
==77== 
I  04000100,3
 L 1ffefff000,8
I  00401000,4
 S 1ffefff008,8
I  00401004,3
 L 00404040,4
 M 00404044,4
I  04000200,2
 S 00405000,8
I  00401007,5
I  0040100c,2
 L 7ff0000010,16
I  04000300,1
==77== 
==77== Exit code:       0
"""
# Instructions 0..6 at 0x4000100, 0x401000, 0x401004, 0x4000200, 0x401007, 0x40100c, 0x4000300.
# With the range [0x401000, 0x402000): the first instruction inside is 1 and the last 5, so
# instr is rebased by -1 and n_instructions = 5 - 1 + 1 = 5; the M line is a load then a
# store of one address, PC and instruction; accesses of instructions 0 and 3 are dropped.
GOLDEN_IN_RANGE = dict(
    want_addr=[0x1ffefff008, 0x404040, 0x404044, 0x404044, 0x7ff0000010],
    want_pc=[0x401000, 0x401004, 0x401004, 0x401004, 0x40100c],
    want_store=[1, 0, 0, 1, 0],
    want_instr=[0, 1, 1, 1, 4],
    want_n=5)
GOLDEN_ALL = dict(
    want_addr=[0x1ffefff000, 0x1ffefff008, 0x404040, 0x404044, 0x404044, 0x405000, 0x7ff0000010],
    want_pc=[0x4000100, 0x401000, 0x401004, 0x401004, 0x401004, 0x4000200, 0x40100c],
    want_store=[0, 1, 0, 0, 1, 1, 0],
    want_instr=[0, 1, 2, 2, 2, 3, 5],
    want_n=7)


def python_lackey(text, ranges):
  """Line-by-line reference converter (independent of the vectorised one)."""
  out = {"addr": [], "pc": [], "store": [], "instr": []}
  count, pc, first, last = -1, None, None, -1

  def inside(p):
    return ranges is None or any(lo <= p < hi for lo, hi in ranges)

  for line in text.splitlines():
    if not line or line.startswith(("==", "--")):
      continue
    address = int(line[3:].split(",")[0], 16)
    if line[0] == "I":
      count, pc = count + 1, address
      if inside(pc):
        first = count if first is None else first
        last = count
    elif inside(pc):
      for store in ((False, True) if line[1] == "M" else (line[1] == "S",)):
        out["addr"].append(address)
        out["pc"].append(pc)
        out["store"].append(store)
        out["instr"].append(count)
  first = first if first is not None else out["instr"][0]
  last = max(last, out["instr"][-1])
  return dict(want_addr=out["addr"], want_pc=out["pc"], want_store=out["store"],
              want_instr=[i - first for i in out["instr"]], want_n=last - first + 1)


@pytest.mark.parametrize("chunk_bytes", [1, 7, 16, 64, 1 << 20])
def test_converter_golden_log(tmp_path, chunk_bytes):
  log = tmp_path / "golden.lackey"
  log.write_text(GOLDEN_LOG)
  t = lackey.convert_lackey(log, pc_ranges=[(0x401000, 0x402000)], chunk_bytes=chunk_bytes)
  assert_trace_equal(t, **GOLDEN_IN_RANGE)
  assert (t.name, t.source) == ("golden", f"lackey:{log}")
  assert_trace_equal(lackey.convert_lackey(log, chunk_bytes=chunk_bytes), **GOLDEN_ALL)
  assert python_lackey(GOLDEN_LOG, [(0x401000, 0x402000)]) == GOLDEN_IN_RANGE
  assert python_lackey(GOLDEN_LOG, None) == GOLDEN_ALL


def test_converter_reads_streams_and_a_missing_final_newline(tmp_path):
  import io
  t = lackey.convert_lackey(io.BytesIO(GOLDEN_LOG.rstrip("\n").encode()),
                            pc_ranges=[(0x401000, 0x402000)])
  assert_trace_equal(t, **GOLDEN_IN_RANGE)


@st.composite
def lackey_logs(draw):
  lines = ["==1== Lackey, an example Valgrind tool", f"I  {draw(st.integers(0, 2**40)):08x},3"]
  for _ in range(draw(st.integers(1, 60))):
    kind = draw(st.sampled_from("IIILSM="))
    address = draw(st.one_of(st.integers(0, 2**64 - 1), st.integers(0x401000, 0x401100),
                             st.integers(0, 0xFFF)))
    size = draw(st.integers(1, 99999))
    if kind == "I":
      lines.append(f"I  {address:08x},{size}")
    elif kind == "=":
      lines.append("==1== message, with a comma")
    else:
      lines.append(f" {kind} {address:0{draw(st.integers(1, 16))}x},{size}")
  return "\n".join(lines) + "\n"


@hypothesis.settings(deadline=None, max_examples=60,
                     suppress_health_check=[hypothesis.HealthCheck.function_scoped_fixture])
@hypothesis.given(text=lackey_logs(), chunk=st.integers(1, 300),
                  ranges=st.sampled_from([None, [(0x401000, 0x401080)], [(0, 2**40)],
                                          [(0x401000, 0x401010), (0x401080, 0x402000)]]))
def test_converter_matches_python_parser(tmp_path, text, chunk, ranges):
  path = tmp_path / "random.lackey"  # overwritten by each example
  path.write_text(text)
  try:
    want = python_lackey(text, ranges)
  except IndexError:  # nothing in range: the converter must say so
    with pytest.raises(ValueError, match="no memory access with a PC in"):
      lackey.convert_lackey(path, pc_ranges=ranges, chunk_bytes=chunk)
    return
  assert_trace_equal(lackey.convert_lackey(path, pc_ranges=ranges, chunk_bytes=chunk), **want)


@pytest.mark.parametrize("bad_line, why", [
    ("X  00401000,3", "not a lackey line"),
    (" Q 00401000,3", "not a lackey line"),
    ("I 00401000,3", "not a lackey line"),
    ("I  004g1000,3", "hex address"),
    ("I  00401000", "hex address"),
    ("I  00401000,", "hex address"),
    ("I  00401000,3a", "hex address"),
    (" L 1234,8,9", "hex address"),
    ("I  ,3", "hex address"),
    ("I  00000000000000001,3", "hex address"),
    ("I  00401000,123456", "hex address"),
    ("I  0x401000,3", "hex address"),
    ("abc", "not a lackey line"),
])
@pytest.mark.parametrize("chunk_bytes", [5, 1 << 20])
def test_malformed_line_names_file_line_and_text(tmp_path, bad_line, why, chunk_bytes):
  lines = GOLDEN_LOG.splitlines()
  lines.insert(6, bad_line)  # becomes line 7
  log = tmp_path / "bad.lackey"
  log.write_text("\n".join(lines) + "\n")
  with pytest.raises(lackey.LackeyFormatError) as e:
    lackey.convert_lackey(log, chunk_bytes=chunk_bytes)
  message = str(e.value)
  assert message.startswith(f"{log}:7: ")
  assert why in message
  assert repr(bad_line) in message
  assert isinstance(e.value, ValueError)


def test_converter_other_errors(tmp_path):
  log = tmp_path / "early.lackey"
  log.write_text("==1== x\n L 00001000,8\nI  00401000,3\n")
  with pytest.raises(lackey.LackeyFormatError, match=r"early.lackey:2: data access before any"):
    lackey.convert_lackey(log)
  log.write_text(GOLDEN_LOG)
  with pytest.raises(ValueError, match=r"no memory access with a PC in \[0x500000, 0x600000\)"):
    lackey.convert_lackey(log, pc_ranges=[(0x500000, 0x600000)])
  with pytest.raises(ValueError, match="pc_ranges: expected 0 <= lo < hi"):
    lackey.convert_lackey(log, pc_ranges=[(5, 5)])
  with pytest.raises(ValueError, match="pc_ranges: expected None or a sequence"):
    lackey.convert_lackey(log, pc_ranges=[5])
  with pytest.raises(ValueError, match="chunk_bytes: expected an int >= 1, given 0"):
    lackey.convert_lackey(log, chunk_bytes=0)


# ----------------------------------------------------------------------------- real lackey runs

FILL_C = r"""
#include <stdio.h>
int a[1000];
int main(void) {
  for (int i = 0; i < 1000; i++) a[i] = i;
  printf("%d\n", a[999]);
  return 0;
}
"""


def readelf_exec_ranges(binary):
  """Executable PT_LOAD segments as printed by binutils' readelf (an independent ELF reader)."""
  out = subprocess.run(["readelf", "-lW", str(binary)], capture_output=True, text=True,
                       check=True).stdout
  ranges = []
  for line in out.splitlines():
    f = line.split()
    if f and f[0] == "LOAD" and "E" in f[6:-1]:
      ranges.append((int(f[2], 16), int(f[2], 16) + int(f[5], 16)))
  return sorted(ranges)


@pytest.fixture(scope="module")
def fill_binary(tmp_path_factory):
  if not HAVE_CC:
    pytest.skip("needs a C compiler on PATH (apt-get install gcc)")
  d = tmp_path_factory.mktemp("fill")
  (d / "fill.c").write_text(FILL_C)
  cc = shutil.which(os.environ.get("CC", "cc"))
  subprocess.run([cc, *lackey.CFLAGS, "-o", str(d / "fill"), str(d / "fill.c")], check=True)
  subprocess.run([cc, "-O1", "-fpie", "-pie", "-o", str(d / "fill_pie"), str(d / "fill.c")],
                 check=True)
  return d


def test_text_ranges_match_readelf(fill_binary, tmp_path):
  if shutil.which("readelf") is None:
    pytest.skip("needs binutils' readelf")
  got = lackey.text_ranges(fill_binary / "fill")
  assert got == readelf_exec_ranges(fill_binary / "fill")
  with pytest.raises(ValueError, match=r"fill_pie: position-independent executable.*-no-pie"):
    lackey.text_ranges(fill_binary / "fill_pie")
  (tmp_path / "x.txt").write_text("not elf")
  with pytest.raises(ValueError, match="x.txt: not an ELF file"):
    lackey.text_ranges(tmp_path / "x.txt")


@needs_lackey
def test_real_lackey_fill_loop(fill_binary):
  t = lackey.run_lackey([str(fill_binary / "fill")])
  lo, hi = lackey.text_ranges(fill_binary / "fill")[0]
  assert ((t.pc >= lo) & (t.pc < hi)).all()
  assert t.name == "fill" and t.source.startswith("lackey:")
  pcs, counts = np.unique(t.pc[t.is_store], return_counts=True)
  loop_pc = pcs[np.argmax(counts)]
  loop = t.addr[t.is_store & (t.pc == loop_pc)]
  assert len(loop) == 1000  # one store per iteration, all from the loop's store instruction
  assert (np.diff(loop.astype(np.int64)) == 4).all()  # a[0], a[1], ... 4 bytes apart
  assert t.num_accesses < 1100  # the loader's and libc's accesses are filtered out
  assert (np.diff(t.instr) >= 0).all() and t.instr[-1] < t.n_instructions
  everything = lackey.run_lackey([str(fill_binary / "fill")], pc_ranges=None)
  assert everything.num_accesses > 10 * t.num_accesses  # ld.so + libc dominate a tiny program


@needs_lackey
def test_real_lackey_failure_and_timeout(tmp_path):
  with pytest.raises(RuntimeError, match="exited with status 1"):
    lackey.run_lackey(["/bin/false"], pc_ranges=None)
  with pytest.raises(RuntimeError, match="killed after the 0.5 s timeout"):
    lackey.run_lackey(["/bin/sleep", "30"], pc_ranges=None, timeout=0.5)


@needs_lackey
def test_capture_caches_and_every_program_runs(tmp_path, monkeypatch):
  sizes = {"stream_triad": 2000, "stencil2d": 24, "matmul": 16, "spmv_csr": 300, "bfs": 300,
           "hash_join": 256, "aos_walk": 40, "pointer_chase": 500}
  assert set(sizes) == set(lackey.PROGRAMS)
  for name, size in sizes.items():
    t = lackey.capture(name, size, cache=str(tmp_path))
    binary = lackey.build(name, cache=str(tmp_path))
    ranges = lackey.text_ranges(binary)
    assert any(((t.pc >= lo) & (t.pc < hi)).all() for lo, hi in ranges), name
    assert t.num_accesses > 1000 and t.name == name
    if name == "aos_walk":  # the C walkers give the designed footprints and orders
      loads = ~t.is_store
      pcs, counts = np.unique(t.pc[loads], return_counts=True)
      walk_pcs = pcs[np.argsort(counts)[-8:]]  # 2 loads x 4 walkers, the hottest PCs
      walk = t.addr[loads & np.isin(t.pc, walk_pcs)]
      assert aos_orders(walk)[0] == AOS_ORDERS
  # A second call reads the cache: no lackey run (it would fail here).
  monkeypatch.setattr(lackey, "run_lackey", lambda *a, **k: pytest.fail("not cached"))
  again = lackey.capture("stream_triad", 2000, cache=str(tmp_path))
  first = lackey.capture("stream_triad", 2000, cache=str(tmp_path))
  assert_trace_equal(again, first.addr, first.pc, first.is_store, first.instr)
  # stream_triad's kernel: 3 sweeps of (load b[i], load c[i], store a[i]) over 2000 doubles.
  pcs, counts = np.unique(again.pc[again.is_store], return_counts=True)
  store_pc = pcs[np.argmax(counts)]
  assert counts.max() == 3 * 2000
  stores = again.addr[again.pc == store_pc].astype(np.int64)
  assert (np.diff(stores[:2000]) == 8).all()


def test_capture_and_build_errors(tmp_path, monkeypatch):
  with pytest.raises(ValueError, match="unknown name 'nope'; known: stream_triad, stencil2d"):
    lackey.capture("nope")
  with pytest.raises(ValueError, match="unknown name 'nope'; known: stream_triad, stencil2d"):
    lackey.build("nope")
  with monkeypatch.context() as m:
    m.setattr(lackey, "PROGRAMS_DIR", str(tmp_path / "absent"))
    with pytest.raises(FileNotFoundError, match=r"matmul.c: the C source .* package data"):
      lackey.capture("matmul", 16, cache=str(tmp_path))
  with pytest.raises(ValueError, match="size: expected an int >= 1, given 0"):
    lackey.capture("matmul", 0, cache=str(tmp_path))
  monkeypatch.setenv("CC", "no-such-compiler-xyz")
  with pytest.raises(lackey.ToolMissingError, match=r"C compiler 'no-such-compiler-xyz'.*gcc"):
    lackey.capture("matmul", 16, cache=str(tmp_path))
  monkeypatch.setenv("PATH", str(tmp_path))
  with pytest.raises(lackey.ToolMissingError, match=r"valgrind.*apt-get install valgrind"):
    lackey.run_lackey(["/bin/true"], pc_ranges=None)


def test_cache_dir_follows_environment(monkeypatch, tmp_path):
  monkeypatch.setenv("JAXSYS_CACHE_DIR", str(tmp_path))
  assert lackey.cache_dir() == os.path.join(str(tmp_path), "traces")
  monkeypatch.delenv("JAXSYS_CACHE_DIR")
  monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
  assert lackey.cache_dir() == os.path.join(str(tmp_path / "xdg"), "jaxsys", "traces")


# ----------------------------------------------------------------------------- synthetic

SITES = {"stream_copy": 2, "stream_triad": 3, "strided": 3, "stencil2d_row": 6,
         "stencil2d_col": 6, "gemm_tiled": 4, "spmv_csr": 6, "bfs": 8, "hash_join": 9,
         "aos_walk": 8, "pointer_chase": 2}
SMALL = {"bfs": dict(vertices=2000), "hash_join": dict(build=1024), "spmv_csr": dict(rows=2000),
         "aos_walk": dict(records=1024)}


def by_site(t):
  """PC -> site number (the generator's PCs are base + site * 0x140)."""
  return ((t.pc - t.pc.min()) // U64(0x140)).astype(np.int64)


@pytest.mark.parametrize("name", list(synthetic.GENERATORS))
def test_generator_basics(name):
  n = 30_000
  opts = SMALL.get(name, {})
  t = synthetic.generate(name, n, seed=3, **opts)
  assert t.num_accesses == n and t.name == name
  assert t.addr.dtype == np.uint64 and t.is_store.dtype == bool
  assert (np.diff(t.instr) >= 1).all() and t.n_instructions == t.instr[-1] + 1
  again = synthetic.generate(name, n, seed=3, **opts)
  assert all(np.array_equal(a, b) for a, b in zip(t[:4], again[:4]))
  short = synthetic.generate(name, 777, seed=3, **opts)  # a prefix of the longer trace
  assert all(np.array_equal(a[:777], b) for a, b in zip(t[:4], short[:4]))
  other = synthetic.generate(name, n, seed=4, **opts)
  assert not np.array_equal(t.addr, other.addr)
  pcs = np.unique(t.pc)
  if name in SITES:
    assert len(pcs) == SITES[name]
    assert len(np.unique((pcs >> U64(8)) & U64(63))) == len(pcs)  # distinct Gaze PC hashes
  traces.to_sim_arrays(t)  # fits the JAX view


def test_generators_are_fast():
  for name in synthetic.GENERATORS:
    start = time.process_time()
    synthetic.generate(name, 1_000_000, seed=0)
    assert time.process_time() - start < 2.0, name  # target < 1 s; slack for a busy machine


def test_generate_errors():
  with pytest.raises(ValueError, match="unknown generator 'nope'; known: stream_copy"):
    synthetic.generate("nope", 10)
  with pytest.raises(ValueError, match="n: expected an int >= 1, given 0"):
    synthetic.generate("stream_copy", 0)
  with pytest.raises(ValueError, match="dim: expected a multiple of tile"):
    synthetic.generate("gemm_tiled", 10, dim=20, tile=16)
  with pytest.raises(ValueError, match="walkers: expected names from ac, ca, ad, da"):
    synthetic.generate("aos_walk", 10, walkers=("xy",))
  with pytest.raises(ValueError, match="kinds: expected generator names"):
    synthetic.generate("phase_mix", 10, kinds=("phase_mix",))


@pytest.mark.parametrize("name, step", [("stream_copy", 8), ("stream_triad", 8)])
def test_streams_are_unit_stride_per_pc(name, step):
  sites = 2 if name == "stream_copy" else 3
  t = synthetic.generate(name, sites * 4096 + sites, seed=1, length=4096)
  site = by_site(t)
  for s in np.unique(site):
    a = t.addr[site == s].astype(np.int64)
    assert (np.diff(a[:4096]) == step).all()
    assert a[4096] == a[0]  # the next sweep starts over
  assert t.is_store.tolist()[:6] == ([False, True] * 3 if name == "stream_copy" else
                                     [False, False, True] * 2)


def test_strided_streams():
  t = synthetic.generate("strided", 9000, seed=2, strides=(128, 192, 320))
  site = by_site(t)
  for s, stride in enumerate((128, 192, 320)):
    assert (np.diff(t.addr[site == s].astype(np.int64)) == stride).all()


@pytest.mark.parametrize("name", ["stencil2d_row", "stencil2d_col"])
def test_stencil_points_and_order(name):
  rows, cols = 8, 10
  t = synthetic.generate(name, 6 * (rows - 2) * (cols - 2), seed=0, rows=rows, cols=cols)
  site = by_site(t)
  center = t.addr[site == 2].astype(np.int64)
  loads = t.addr.astype(np.int64).reshape(-1, 6)
  # Neighbours of each point: up, left, (centre), right, down; then the store to the other grid.
  assert (loads[:, 0] == center - 8 * cols).all() and (loads[:, 4] == center + 8 * cols).all()
  assert (loads[:, 1] == center - 8).all() and (loads[:, 3] == center + 8).all()
  assert t.is_store.reshape(-1, 6)[:, 5].all() and not t.is_store.reshape(-1, 6)[:, :5].any()
  grid = center - center.min() + 8 * (cols + 1)  # byte offset of (i, j) from (0, 0)
  i, j = grid // (8 * cols), (grid % (8 * cols)) // 8
  if name == "stencil2d_row":
    assert (i.tolist(), j.tolist()) == ([r for r in range(1, 7) for _ in range(8)],
                                        [c for _ in range(6) for c in range(1, 9)])
  else:
    assert (i.tolist(), j.tolist()) == ([r for _ in range(8) for r in range(1, 7)],
                                        [c for c in range(1, 9) for _ in range(6)])


def test_gemm_reads_every_element_dim_times():
  dim, tile = 32, 8
  per_multiply = (dim // tile) ** 3 * tile * tile * (2 + 2 * tile)
  t = synthetic.generate("gemm_tiled", per_multiply, seed=0, dim=dim, tile=tile)
  site = by_site(t)
  for s in (1, 2):  # A and B
    _, counts = np.unique(t.addr[site == s], return_counts=True)
    assert len(counts) == dim * dim and (counts == dim).all()
  _, stores = np.unique(t.addr[site == 3], return_counts=True)
  assert len(stores) == dim * dim and (stores == dim // tile).all()  # once per kk block
  a = t.addr[site == 1].astype(np.int64)
  assert (np.diff(a[:tile]) == 8).all()  # A[i][k], k in the tile: unit stride
  b = t.addr[site == 2].astype(np.int64)
  assert (np.diff(b[:tile]) == 8 * dim).all()  # B[k][j]: a row apart


def test_spmv_structure():
  t = synthetic.generate("spmv_csr", 200_000, seed=5, rows=3000)
  site = by_site(t)
  val = t.addr[site == 3].astype(np.int64)
  col = t.addr[site == 2].astype(np.int64)
  first_pass = np.flatnonzero(np.diff(val) < 0)[0] + 1  # val restarts with the next product
  assert (np.diff(val[:first_pass]) == 8).all() and (np.diff(col[:first_pass]) == 4).all()
  assert (site == 4).sum() == len(val)  # one x gather per nonzero
  stores = np.flatnonzero(site == 5)
  lengths = np.diff(stores[:3000]) // 3 - 1  # 3 + 3 len events per row
  assert lengths.max() > 10 * lengths.mean()  # heavy-tailed rows


def reference_bfs(rowptr, adj, root, bases):
  """Plain queue BFS, logging (address, site) in program order."""
  n = len(rowptr) - 1
  log = [(bases["dist"] + 8 * v, 0) for v in range(n)]
  dist = [-1] * n
  queue = [root]
  dist[root] = 0
  log += [(bases["dist"] + 8 * root, 6), (bases["queue"], 7)]
  head = 0
  while head < len(queue):
    u = queue[head]
    log += [(bases["queue"] + 8 * head, 1), (bases["rowptr"] + 8 * u, 2),
            (bases["rowptr"] + 8 * (u + 1), 3)]
    head += 1
    for k in range(rowptr[u], rowptr[u + 1]):
      w = adj[k]
      log += [(bases["adj"] + 8 * k, 4), (bases["dist"] + 8 * w, 5)]
      if dist[w] < 0:
        dist[w] = dist[u] + 1
        log += [(bases["dist"] + 8 * w, 6), (bases["queue"] + 8 * len(queue), 7)]
        queue.append(w)
  return log


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_bfs_matches_queue_bfs(seed):
  rowptr, adj = synthetic.power_law_graph(300, 700, seed=seed)
  bases = {"rowptr": 1 << 20, "adj": 2 << 20, "dist": 3 << 20, "queue": 4 << 20}
  root = int(np.argmax(np.diff(rowptr)))
  addr, site = synthetic._bfs_events(rowptr, adj, root, bases)  # pylint: disable=protected-access
  want = reference_bfs(rowptr.tolist(), adj.tolist(), root, bases)
  assert list(zip(addr.tolist(), site.tolist())) == want


def test_power_law_graph_is_skewed():
  rowptr, adj = synthetic.power_law_graph(20_000, 80_000, seed=0)
  deg = np.diff(rowptr)
  assert len(adj) == 160_000 and deg.sum() == 160_000
  assert deg.max() > 20 * deg.mean()
  top = np.sort(deg)[::-1]
  assert top[:200].sum() > 0.1 * deg.sum()  # 1 % of the vertices hold > 10 % of the edge ends


def test_hash_join_probes_walk_their_chains():
  build = 512
  t = synthetic.generate("hash_join", 20_000, seed=1, build=build)
  site = by_site(t)
  addr = t.addr.astype(np.int64)
  # Rebuild the table from the build phase: entry address -> bucket (head) address.
  b = addr[:4 * build].reshape(build, 4)
  assert (site[:4 * build].reshape(build, 4) == [0, 1, 2, 3]).all()
  assert (np.diff(b[:, 2]) == 16).all()  # entries stored in order, 16 bytes each
  chains = defaultdict(list)
  for entry, head in zip(b[:, 2], b[:, 1]):
    chains[head].insert(0, entry)  # pushed at the head: newest first
  starts = np.flatnonzero(site == 4)
  s_keys = 4 * build  # the probe relation, read in order (and again from its start)
  assert (np.diff(addr[starts]) % (4 * s_keys) == 4).all()
  matched = 0
  for s, e in zip(starts[:-1], starts[1:]):
    head = addr[s + 1]
    assert site[s + 1] == 5
    entries = addr[s + 2:e:2]
    chain = chains.get(head, [])
    assert entries.tolist() == chain[:len(entries)]
    if site[e - 1] == 8:  # the match: payload at +4, the walk stops there
      matched += 1
      assert addr[e - 1] == entries[-1] + 4
    else:
      assert len(entries) == len(chain)  # a miss walks the whole chain
      assert (addr[s + 3:e:2] == entries + 8).all()
  assert 0.4 < matched / (len(starts) - 1) < 0.6


EVEN = sum(1 << k for k in range(0, 64, 2))  # blocks 0, 2, 4, ... of a 4 KiB region
ZERO_THREE = sum(1 << k for k in range(64) if k % 4 in (0, 3))  # blocks 0, 3, 4, 7, ...
AOS_ORDERS = {EVEN: {(0, 2), (2, 0)}, ZERO_THREE: {(0, 3), (3, 0)}}


def aos_orders(addr):
  """Footprint -> {(first, second) block offsets} and first offset -> {footprints}.

  Region visits are consecutive groups of 32 loads (16 records x 2 fields).
  """
  off = ((addr >> U64(6)) & U64(63)).astype(np.int64)
  region = (addr >> U64(12)).astype(np.int64)
  orders, footprints_of_trigger = defaultdict(set), defaultdict(set)
  for visit in range(0, len(addr), 32):
    o = off[visit:visit + 32]
    assert len(set(region[visit:visit + 32].tolist())) == 1
    footprint = sum(1 << int(x) for x in set(o.tolist()))
    orders[footprint].add((int(o[0]), int(o[1])))
    footprints_of_trigger[int(o[0])].add(footprint)
  return dict(orders), dict(footprints_of_trigger)


def test_aos_walk_same_footprints_in_different_orders():
  t = synthetic.generate("aos_walk", 64 * 400, seed=0)
  orders, footprints_of_trigger = aos_orders(t.addr)
  assert orders == AOS_ORDERS  # each footprint with two different (first, second) orders
  assert footprints_of_trigger[0] == {EVEN, ZERO_THREE}  # one trigger offset, two footprints
  pcs_of_order = defaultdict(set)
  off = ((t.addr >> U64(6)) & U64(63)).astype(np.int64)
  for visit in range(0, t.num_accesses, 32):
    pcs_of_order[(int(off[visit]), int(off[visit + 1]))].add(int(t.pc[visit]))
  assert all(len(p) == 1 for p in pcs_of_order.values())  # one walker (PC) per order
  assert len({next(iter(p)) for p in pcs_of_order.values()}) == 4


def test_pointer_chase_visits_every_node_once_per_lap():
  nodes = 4096
  t = synthetic.generate("pointer_chase", 4 * nodes, seed=0, nodes=nodes)
  nxt = t.addr[by_site(t) == 1].astype(np.int64)
  assert len(np.unique(nxt[:nodes])) == nodes
  assert (nxt[nodes:] == nxt[:nodes]).all()  # the same cycle again
  assert ((np.unique(nxt) - nxt.min()) % 64 == 0).all()
  same_region = np.mean((nxt[1:] >> 12) == (nxt[:-1] >> 12))
  assert same_region < 0.05  # no spatial locality from one node to the next


def test_phase_mix_phases():
  phase = 1000
  t = synthetic.generate("phase_mix", 9500, seed=0, phase=phase)
  kinds = synthetic.PHASE_KINDS
  gen_of_pc = ((t.pc - U64(synthetic._TEXT)) // U64(synthetic._PCS_PER_GENERATOR)).astype(int)
  for p in range(10):
    kind = kinds[p % len(kinds)]
    seg = slice(p * phase, min((p + 1) * phase, 9500))
    assert (gen_of_pc[seg] == list(synthetic.GENERATORS).index(kind)).all()
    assert ((t.addr[seg] >> U64(32)) == p % len(kinds)).all()
  # Phase 4 (the second triad phase) continues the triad of phase 0.
  triad = synthetic.generate("stream_triad", 2 * phase, seed=0)
  assert (t.addr[4 * phase:5 * phase] == triad.addr[phase:]).all()


# ----------------------------------------------------------------------------- ChampSim


def pack_record(ip, is_branch=0, taken=0, dst_regs=(0, 0), src_regs=(0, 0, 0, 0),
                dst_mem=(0, 0), src_mem=(0, 0, 0, 0)):
  """One input_instr record, byte by byte from the C struct (64 bytes, little-endian)."""
  return struct.pack("<QBB2B4B2Q4Q", ip, is_branch, taken, *dst_regs, *src_regs, *dst_mem,
                     *src_mem)


RECORDS = [
    pack_record(0x401000, src_mem=(0x1000, 0, 0x2000, 0)),  # two loads
    pack_record(0x401004, is_branch=1, taken=1, src_regs=(1, 2, 0, 0)),  # no memory
    pack_record(0x401008, dst_mem=(0, 0x3000), src_mem=(0x4000, 0, 0, 0)),  # load, then store
    pack_record(0x40100c, dst_mem=(0x5000, 0x5008)),  # two stores
]
# Expected: loads before stores within a record, slots in order, instr = record index.
RECORDS_WANT = dict(want_addr=[0x1000, 0x2000, 0x4000, 0x3000, 0x5000, 0x5008],
                    want_pc=[0x401000, 0x401000, 0x401008, 0x401008, 0x40100c, 0x40100c],
                    want_store=[0, 0, 0, 1, 1, 1], want_instr=[0, 0, 2, 2, 3, 3], want_n=4)


@pytest.mark.parametrize("suffix", [".champsimtrace", ".champsimtrace.xz", ".champsimtrace.gz"])
def test_champsim_hand_built_file(tmp_path, suffix):
  assert len(RECORDS[0]) == 64 == champsim.RECORD_DTYPE.itemsize
  raw = b"".join(RECORDS)
  path = tmp_path / f"hand{suffix}"
  if suffix.endswith(".xz"):
    path.write_bytes(lzma.compress(raw))
  elif suffix.endswith(".gz"):
    import gzip
    path.write_bytes(gzip.compress(raw))
  else:
    path.write_bytes(raw)
  t = champsim.read_champsim(path, block_records=3)  # crosses a block boundary
  assert_trace_equal(t, **RECORDS_WANT)
  assert t.name == "hand" and t.source == f"champsim:{path}"
  records = np.frombuffer(raw, champsim.RECORD_DTYPE)
  assert records["is_branch"].tolist() == [0, 1, 0, 0]
  assert records["source_registers"][1].tolist() == [1, 2, 0, 0]
  out = tmp_path / f"again{suffix}"
  champsim.write_champsim(out, records)
  with champsim._open(str(out), "rb") as f:  # pylint: disable=protected-access
    assert f.read() == raw
  head = champsim.read_champsim(path, max_instructions=3)
  assert_trace_equal(head, RECORDS_WANT["want_addr"][:4], RECORDS_WANT["want_pc"][:4],
                     RECORDS_WANT["want_store"][:4], RECORDS_WANT["want_instr"][:4], 3)


@pytest.mark.parametrize("suffix", [".champsimtrace", ".champsimtrace.xz"])
def test_champsim_truncated_file(tmp_path, suffix):
  raw = b"".join(RECORDS[:3]) + RECORDS[3][:10]
  path = tmp_path / f"cut{suffix}"
  path.write_bytes(lzma.compress(raw) if suffix.endswith(".xz") else raw)
  with pytest.raises(ValueError) as e:
    champsim.read_champsim(path, block_records=2)
  assert str(path) in str(e.value)
  assert "truncated record 3 (byte offset 192)" in str(e.value)
  assert "ends 10 bytes into a 64-byte record" in str(e.value)


def test_champsim_other_errors(tmp_path):
  bad = tmp_path / "bad.champsimtrace.xz"
  bad.write_bytes(b"this is not xz data")
  with pytest.raises(ValueError, match=f"{bad}: cannot read the trace after record 0"):
    champsim.read_champsim(bad)
  with pytest.raises(ValueError, match="records: expected a 1-D array of RECORD_DTYPE"):
    champsim.write_champsim(tmp_path / "x.champsimtrace", np.zeros(3))
  empty = tmp_path / "empty.champsimtrace"
  empty.write_bytes(b"")
  t = champsim.read_champsim(empty)
  assert t.num_accesses == 0 and t.n_instructions == 0
