"""Synthetic memory traces covering the spatial-pattern classes of Gaze (papers/prefetch.md 3).

Each generator is ``fn(n, seed=0, **options) -> Trace`` (numpy, vectorised, a
fraction of a second per million accesses): it replays the access stream of
a small kernel for exactly ``n`` accesses, repeating the kernel as needed.
Every access site of the kernel (a load or store in its source) has its own
PC, with distinct bits [13:8] (the PC hash of Gaze's streaming module) for the
sites of one generator; generators use disjoint PC ranges. Arrays are
4 KiB-aligned in a pretend heap at 0x10000000, placed a seeded random number
of pages apart, so ``seed`` changes the addresses (and the random structure:
matrices, graphs, walk choices) but never the pattern class; the same seed
gives the same trace, and with the same seed and options a shorter trace is a
prefix of a longer one.

Instruction indices: access i is one instruction, preceded by a fixed number
of non-memory instructions that depends on its site (`_Sites` gaps, a stand-in
for the loop body's arithmetic), so ``instr`` grows by 1 + gap per access.

Generators (`GENERATORS`):

* ``stream_copy``, ``stream_triad``: dense unit-stride streams (8-byte
  elements), one PC per array;
* ``strided``: three interleaved streams with constant strides (128, 192, 320 B);
* ``stencil2d_row``, ``stencil2d_col``: 5-point Jacobi sweeps over a grid of
  doubles in row-major and in column-major loop order (the latter strides by
  a whole row between consecutive points);
* ``gemm_tiled``: C += A B with square tiles (unit stride in A, row stride in B);
* ``spmv_csr``: CSR y = A x with heavy-tailed row lengths (gathers from x);
* ``bfs``: breadth-first search over a generated power-law graph (CSR), the
  exact access order of a queue-based BFS;
* ``hash_join``: chained hash-table build, then probes (half miss);
* ``aos_walk``: array-of-structs field walks, **Gaze's thesis** (below);
* ``pointer_chase``: a linked list in random order (negative control: no
  spatial or stride pattern);
* ``phase_mix``: phases of streams, stencil, AoS walks and pointer chasing.

**aos_walk and Gaze's key.** Records are 256 B (4 blocks; fields a, b, c, d
start blocks 0..3), so a 4 KiB region holds 16 records. A walk visits every
record of 2 consecutive regions with one of four walkers:

=======  ==========  =========================  ==================  =====================
walker   per record  region offsets, in order   (trigger, second)   footprint
=======  ==========  =========================  ==================  =====================
``ac``   a, then c   0, 2, 4, 6, ...            (0, 2)              all even offsets
``ca``   c, then a   2, 0, 6, 4, ...            (2, 0)              all even offsets
``ad``   a, then d   0, 3, 4, 7, ...            (0, 3)              offsets = 0 or 3 mod 4
``da``   d, then a   3, 0, 7, 4, ...            (3, 0)              offsets = 0 or 3 mod 4
=======  ==========  =========================  ==================  =====================

So each of the two footprints recurs with two different first-two-access
orders, and ``ac`` and ``ad`` share the trigger offset 0 but have different
footprints: a pattern table keyed by the trigger offset alone (PMP's offset
pattern table) merges them into one vote (both footprints at 50 %), while
Gaze's key (trigger, second) = (0, 2) vs (0, 3) tells them apart from the
second access on. No walker starts with (0, 1), Gaze's streaming signature.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from .format import Trace
from .format import make_trace

_TEXT = 0x401000  # first PC of the pretend program
_PCS_PER_GENERATOR = 0x4000
_SITE_STRIDE = 0x140  # PC step between sites: changes bits [13:8] from site to site
_HEAP = 0x10000000
_PAGE = 4096
_BLOCK = 1024  # random choices drawn per block of this many, for prefix-stable traces


def _check_count(value, name: str, low: int = 1) -> int:
  if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
    raise ValueError(f"{name}: expected an int >= {low}, given {value!r}")
  return int(value)


class _Heap:
  """Page-aligned arrays at seeded random distances (1-4 pages apart)."""

  def __init__(self, rng: np.random.Generator, base: int = _HEAP):
    self.rng = rng
    self.cursor = base + int(rng.integers(0, 64)) * _PAGE

  def alloc(self, nbytes: int) -> int:
    addr = self.cursor
    pages = -(-int(nbytes) // _PAGE)
    self.cursor += (pages + int(self.rng.integers(1, 5))) * _PAGE
    return addr


class _Sites:
  """The access sites of one generator: PCs and non-memory instructions before each access."""

  def __init__(self, generator: str, gaps: Sequence[int]):
    gen_id = list(GENERATORS).index(generator)
    base = _TEXT + gen_id * _PCS_PER_GENERATOR
    self.pc = np.array([base + s * _SITE_STRIDE for s in range(len(gaps))], np.uint64)
    self.gap = np.asarray(gaps, np.int64)

  def trace(self, name: str, source: str, addr: np.ndarray, site: np.ndarray,
            is_store: np.ndarray) -> Trace:
    step = 1 + self.gap[site]
    instr = np.cumsum(step) - 1
    return make_trace(addr.astype(np.uint64), self.pc[site], is_store, instr, name=name,
                      source=source, n_instructions=int(instr[-1]) + 1 if len(instr) else 0)


def _source(name: str, seed: int, **options) -> str:
  opts = "".join(f", {k}={v!r}" for k, v in options.items())
  return f"synthetic:{name}(seed={seed}{opts})"


def _tile_until(n: int, one: Callable[[int], tuple[np.ndarray, ...]]) -> tuple[np.ndarray, ...]:
  """Concatenates ``one(rep)`` for rep = 0, 1, ... until n accesses, then cuts to n."""
  parts, total, rep = [], 0, 0
  while total < n:
    part = one(rep)
    if len(part[0]) == 0:
      raise ValueError("internal: a kernel repetition produced no accesses")
    parts.append(part)
    total += len(part[0])
    rep += 1
  return tuple(np.concatenate(x)[:n] for x in zip(*parts))


# ----------------------------------------------------------------------------- streams


def stream_copy(n: int, seed: int = 0, *, length: int = 1 << 17) -> Trace:
  """b[i] = a[i] over ``length`` doubles, repeated: a load stream and a store stream.

  Sites: 0 load a[i], 1 store b[i]. Each site's addresses rise by 8 (wrapping
  to the array start after ``length`` elements).
  """
  n, length = _check_count(n, "n"), _check_count(length, "length")
  heap = _Heap(np.random.default_rng(seed))
  a, b = heap.alloc(8 * length), heap.alloc(8 * length)
  k = np.arange(n, dtype=np.int64)
  i, site = (k // 2) % length, k % 2
  addr = np.where(site == 0, a, b) + 8 * i
  return _Sites("stream_copy", (1, 0)).trace("stream_copy", _source("stream_copy", seed,
                                                                      length=length),
                                             addr, site, site == 1)


def stream_triad(n: int, seed: int = 0, *, length: int = 1 << 17) -> Trace:
  """a[i] = b[i] + s c[i] over ``length`` doubles, repeated (STREAM triad).

  Sites: 0 load b[i], 1 load c[i], 2 store a[i]; each rises by 8 per element.
  """
  n, length = _check_count(n, "n"), _check_count(length, "length")
  heap = _Heap(np.random.default_rng(seed))
  bases = np.array([heap.alloc(8 * length) for _ in range(3)], np.int64)  # b, c, a
  k = np.arange(n, dtype=np.int64)
  i, site = (k // 3) % length, k % 3
  addr = bases[site] + 8 * i
  return _Sites("stream_triad", (1, 0, 2)).trace(
      "stream_triad", _source("stream_triad", seed, length=length), addr, site, site == 2)


def strided(n: int, seed: int = 0, *, strides: Sequence[int] = (128, 192, 320),
            footprint: int = 4 << 20) -> Trace:
  """Interleaved constant-stride load streams, one array and one PC each.

  Site s loads ``base_s + (j * strides[s]) mod footprint`` at its j-th access;
  sites take turns. Within one pass over an array, each site's address
  differences equal its stride.
  """
  n, footprint = _check_count(n, "n"), _check_count(footprint, "footprint")
  strides = [_check_count(s, "strides[i]") for s in strides]
  if not strides:
    raise ValueError("strides: expected at least one stride, given none")
  heap = _Heap(np.random.default_rng(seed))
  bases = np.array([heap.alloc(footprint) for _ in strides], np.int64)
  stride_a = np.array(strides, np.int64)
  k = np.arange(n, dtype=np.int64)
  site = k % len(strides)
  j = k // len(strides)
  addr = bases[site] + (j * stride_a[site]) % footprint
  return _Sites("strided", (2,) * len(strides)).trace(
      "strided", _source("strided", seed, strides=tuple(strides), footprint=footprint), addr,
      site, np.zeros(n, bool))


# ----------------------------------------------------------------------------- stencil, GEMM

# Stencil sites: (row offset, column offset) of the loads, then the store.
_STENCIL = ((-1, 0), (0, -1), (0, 0), (0, 1), (1, 0))


def _stencil(name: str, n: int, seed: int, rows: int, cols: int, column_major: bool) -> Trace:
  n = _check_count(n, "n")
  rows, cols = _check_count(rows, "rows", 3), _check_count(cols, "cols", 3)
  heap = _Heap(np.random.default_rng(seed))
  grids = np.array([heap.alloc(8 * rows * cols) for _ in range(2)], np.int64)
  per_sweep = (rows - 2) * (cols - 2)
  k = np.arange(n, dtype=np.int64)
  point, site = k // 6, k % 6
  sweep, q = point // per_sweep, point % per_sweep
  if column_major:
    j, i = 1 + q // (rows - 2), 1 + q % (rows - 2)
  else:
    i, j = 1 + q // (cols - 2), 1 + q % (cols - 2)
  di = np.array([d[0] for d in _STENCIL] + [0], np.int64)[site]
  dj = np.array([d[1] for d in _STENCIL] + [0], np.int64)[site]
  src, dst = grids[sweep % 2], grids[(sweep + 1) % 2]
  is_store = site == 5
  addr = np.where(is_store, dst, src) + 8 * ((i + di) * cols + (j + dj))
  return _Sites(name, (1, 0, 0, 0, 0, 3)).trace(
      name, _source(name, seed, rows=rows, cols=cols), addr, site, is_store)


def stencil2d_row(n: int, seed: int = 0, *, rows: int = 256, cols: int = 512) -> Trace:
  """5-point Jacobi sweeps over a ``rows`` x ``cols`` grid of doubles, i outer, j inner.

  Per interior point (i, j): loads u[i-1][j], u[i][j-1], u[i][j], u[i][j+1],
  u[i+1][j] (sites 0-4), store v[i][j] (site 5); u and v swap after each sweep.
  Consecutive points of a row are 8 bytes apart at every site.
  """
  return _stencil("stencil2d_row", n, seed, rows, cols, column_major=False)


def stencil2d_col(n: int, seed: int = 0, *, rows: int = 256, cols: int = 512) -> Trace:
  """`stencil2d_row` with the loops swapped (j outer, i inner): each site strides by a row."""
  return _stencil("stencil2d_col", n, seed, rows, cols, column_major=True)


def gemm_tiled(n: int, seed: int = 0, *, dim: int = 96, tile: int = 16) -> Trace:
  """C += A B for ``dim`` x ``dim`` doubles in ``tile``-sized blocks (loops ii, jj, kk, i, j, k).

  Per (ii, jj, kk, i, j): load C[i][j] (site 0), then for k in the tile load
  A[i][k] (site 1) and B[k][j] (site 2), then store C[i][j] (site 3). One full
  multiply reads every element of A and of B exactly ``dim`` times.
  """
  n, dim, tile = _check_count(n, "n"), _check_count(dim, "dim"), _check_count(tile, "tile")
  if dim % tile:
    raise ValueError(f"dim: expected a multiple of tile ({tile}), given {dim}")
  heap = _Heap(np.random.default_rng(seed))
  a, b, c = (heap.alloc(8 * dim * dim) for _ in range(3))
  nt = dim // tile
  group_len = 2 + 2 * tile
  k = np.arange(n, dtype=np.int64)
  g, r = k // group_len, k % group_len
  g = g % (nt ** 3 * tile * tile)  # repeat the multiply
  j_in, g = g % tile, g // tile
  i_in, g = g % tile, g // tile
  kk, g = g % nt, g // nt
  jj, ii = g % nt, g // nt
  i, j = ii * tile + i_in, jj * tile + j_in
  kidx = kk * tile + np.maximum(r - 1, 0) // 2
  site = np.where(r == 0, 0, np.where(r == group_len - 1, 3, 1 + (r - 1) % 2))
  addr = np.select([site == 1, site == 2], [a + 8 * (i * dim + kidx), b + 8 * (kidx * dim + j)],
                   c + 8 * (i * dim + j))
  return _Sites("gemm_tiled", (2, 0, 1, 2)).trace(
      "gemm_tiled", _source("gemm_tiled", seed, dim=dim, tile=tile), addr, site, site == 3)


# ----------------------------------------------------------------------------- sparse, graphs


def _heavy_tailed_lengths(rng: np.random.Generator, count: int, cap: int) -> np.ndarray:
  """1 + 3 Z with Z Zipf(2): mean about 6, a few entries in the hundreds (capped)."""
  return np.minimum(1 + 3 * rng.zipf(2.0, count), cap).astype(np.int64)


def spmv_csr(n: int, seed: int = 0, *, rows: int = 16384) -> Trace:
  """y = A x in CSR on a square matrix with heavy-tailed row lengths, repeated (x, y swap).

  Per row i: load rowptr[i] (site 0), rowptr[i+1] (site 1); per nonzero k:
  load col[k] (site 2, int32), val[k] (site 3), x[col[k]] (site 4); then
  store y[i] (site 5). Columns are uniform, sorted within a row.
  """
  n, rows = _check_count(n, "n"), _check_count(rows, "rows")
  rng = np.random.default_rng(seed)
  lengths = _heavy_tailed_lengths(rng, rows, cap=min(rows, 1024))
  rowptr = np.concatenate([[0], np.cumsum(lengths)])
  nnz = int(rowptr[-1])
  row_of = np.repeat(np.arange(rows), lengths)
  col = rng.integers(0, rows, nnz)
  col = col[np.lexsort((col, row_of))]  # sorted within each row
  heap = _Heap(rng)
  rp_b, col_b, val_b = heap.alloc(8 * (rows + 1)), heap.alloc(4 * nnz), heap.alloc(8 * nnz)
  vec = [heap.alloc(8 * rows), heap.alloc(8 * rows)]
  # One SpMV: per row 3 + 3 * length events.
  counts = 3 + 3 * lengths
  start = np.concatenate([[0], np.cumsum(counts)[:-1]])
  total = int(counts.sum())
  row = np.repeat(np.arange(rows), counts)
  local = np.arange(total) - start[row]
  last = local == counts[row] - 1
  site = np.where(local < 2, local, np.where(last, 5, 2 + (local - 2) % 3))
  nz = rowptr[row] + np.maximum(local - 2, 0) // 3

  def one(rep: int):
    x, y = vec[rep % 2], vec[(rep + 1) % 2]
    addr = np.select(
        [site == 0, site == 1, site == 2, site == 3, site == 4],
        [rp_b + 8 * row, rp_b + 8 * (row + 1), col_b + 4 * nz, val_b + 8 * nz,
         x + 8 * col[np.minimum(nz, nnz - 1)]], y + 8 * row)
    return addr, site

  addr, site_n = _tile_until(n, one)
  return _Sites("spmv_csr", (1, 0, 1, 0, 0, 2)).trace(
      "spmv_csr", _source("spmv_csr", seed, rows=rows), addr, site_n, site_n == 5)


def power_law_graph(vertices: int, edges: int, seed: int = 0,
                    exponent: float = 0.8) -> tuple[np.ndarray, np.ndarray]:
  """An undirected multigraph in CSR whose degrees follow a power law (Chung-Lu style).

  Each edge end is drawn with probability proportional to ``rank ** -exponent``
  over a random ranking of the vertices.

  Returns:
    ``(rowptr, adj)``: [V + 1] and [2 E] int64; neighbours of v are
    ``adj[rowptr[v]:rowptr[v + 1]]`` in edge order.
  """
  vertices, edges = _check_count(vertices, "vertices", 2), _check_count(edges, "edges")
  rng = np.random.default_rng(seed)
  weight = np.arange(1, vertices + 1, dtype=np.float64) ** -float(exponent)
  weight = weight[rng.permutation(vertices)]
  ends = rng.choice(vertices, size=2 * edges, p=weight / weight.sum())
  src = np.concatenate([ends[0::2], ends[1::2]])
  dst = np.concatenate([ends[1::2], ends[0::2]])
  order = np.argsort(src, kind="stable")
  rowptr = np.concatenate([[0], np.cumsum(np.bincount(src, minlength=vertices))])
  return rowptr.astype(np.int64), dst[order].astype(np.int64)


def _bfs_events(rowptr: np.ndarray, adj: np.ndarray, root: int, bases: dict[str, int]):
  """Addresses and sites of a queue-based BFS from ``root``, built level by level.

  Sites: 0 init dist[v] = -1 (store), 1 load queue[head], 2 load rowptr[u],
  3 load rowptr[u + 1], 4 load adj[k], 5 load dist[w], 6 store dist[w],
  7 store queue[tail]. A vertex found at one level is visited at the next, in
  discovery order, so processing whole levels in order is the queue's order.
  """
  vertices = len(rowptr) - 1
  parts_addr = [bases["dist"] + 8 * np.arange(vertices)]
  parts_site = [np.zeros(vertices, np.int64)]
  # The root is enqueued first: store dist[root], store queue[0].
  parts_addr.append(np.array([bases["dist"] + 8 * root, bases["queue"]]))
  parts_site.append(np.array([6, 7]))
  visited = np.zeros(vertices, bool)
  visited[root] = True
  frontier = np.array([root], np.int64)
  head = 0  # queue index of frontier[0]
  while len(frontier):
    deg = rowptr[frontier + 1] - rowptr[frontier]
    owner = np.repeat(np.arange(len(frontier)), deg)
    first_edge = np.concatenate([[0], np.cumsum(deg)[:-1]])
    k = rowptr[frontier][owner] + (np.arange(len(owner)) - first_edge[owner])
    w = adj[k]
    fresh = np.flatnonzero(~visited[w])
    _, first = np.unique(w[fresh], return_index=True)
    disc_pos = np.sort(fresh[first])  # edges that discover a vertex, in edge order
    found = np.zeros(len(w), bool)
    found[disc_pos] = True
    tail0 = head + len(frontier)  # queue index of the first vertex found at this level
    qidx = np.full(len(w), -1, np.int64)
    qidx[disc_pos] = tail0 + np.arange(len(disc_pos))
    # Slots: 3 per frontier vertex, then 4 per edge (the last 2 only when it discovers).
    slots_per_u = 3 + 4 * deg
    u_off = np.concatenate([[0], np.cumsum(slots_per_u)[:-1]])
    size = int(slots_per_u.sum())
    addr = np.zeros(size, np.int64)
    site = np.zeros(size, np.int64)
    valid = np.ones(size, bool)
    q = head + np.arange(len(frontier))
    for j, (s, a) in enumerate(((1, bases["queue"] + 8 * q), (2, bases["rowptr"] + 8 * frontier),
                                (3, bases["rowptr"] + 8 * (frontier + 1)))):
      addr[u_off + j] = a
      site[u_off + j] = s
    e_off = u_off[owner] + 3 + 4 * (np.arange(len(owner)) - first_edge[owner])
    for j, (s, a) in enumerate(((4, bases["adj"] + 8 * k), (5, bases["dist"] + 8 * w),
                                (6, bases["dist"] + 8 * w), (7, bases["queue"] + 8 * qidx))):
      addr[e_off + j] = a
      site[e_off + j] = s
      if j >= 2:
        valid[e_off + j] = found
    parts_addr.append(addr[valid])
    parts_site.append(site[valid])
    visited[w[disc_pos]] = True
    head = tail0
    frontier = w[disc_pos]
  return np.concatenate(parts_addr), np.concatenate(parts_site)


def bfs(n: int, seed: int = 0, *, vertices: int = 32768, degree: int = 4) -> Trace:
  """Queue-based BFS on a `power_law_graph`, from random roots until n accesses.

  Each run first stores dist[v] = -1 for every v (site 0), then follows the
  BFS order (sites in `_bfs_events`): each reached vertex gets exactly one
  dist store (6) and one queue store (7); queue stores are consecutive.
  Arrays are int64: rowptr, adj, dist, queue.
  """
  n, vertices = _check_count(n, "n"), _check_count(vertices, "vertices", 2)
  degree = _check_count(degree, "degree")
  rng = np.random.default_rng(seed)
  rowptr, adj = power_law_graph(vertices, degree * vertices, seed=int(rng.integers(2**31)))
  heap = _Heap(rng)
  bases = {"rowptr": heap.alloc(8 * (vertices + 1)), "adj": heap.alloc(8 * len(adj)),
           "dist": heap.alloc(8 * vertices), "queue": heap.alloc(8 * vertices)}
  deg = np.diff(rowptr)
  roots = rng.choice(np.flatnonzero(deg > 0), size=64)
  addr, site = _tile_until(n, lambda rep: _bfs_events(rowptr, adj, int(roots[rep % 64]), bases))
  return _Sites("bfs", (1, 1, 1, 0, 1, 0, 2, 0)).trace(
      "bfs", _source("bfs", seed, vertices=vertices, degree=degree), addr, site,
      (site == 0) | (site == 6) | (site == 7))


def hash_join(n: int, seed: int = 0, *, build: int = 32768) -> Trace:
  """Chained hash join: insert ``build`` tuples, then probe with random keys (half miss).

  Build, per tuple i: load r_key[i] (site 0), load heads[b] (1), store
  entry[i] (2, 16-byte {key, payload, next}), store heads[b] (3). Probe, per
  key: load s_key (4), load heads[b] (5), then along the chain (newest entry
  first) load entry.key (6) and, to go on, entry.next (7); a match loads
  entry.payload (8) and stops. Probes repeat until n accesses (the build is
  done once, first).
  """
  n, build = _check_count(n, "n"), _check_count(build, "build", 2)
  rng = np.random.default_rng(seed)
  buckets = 1 << max(0, (build // 2 - 1).bit_length())
  heap = _Heap(rng)
  rk_b, sk_b = heap.alloc(4 * build), heap.alloc(4 * 4 * build)
  heads_b, ent_b = heap.alloc(8 * buckets), heap.alloc(16 * build)
  keys = 2 * np.arange(build, dtype=np.int64) + 1  # odd keys in R

  def bucket_of(key):
    return ((key * 2654435761) % (1 << 32) >> 7) & (buckets - 1)

  b_r = bucket_of(keys)
  i = np.arange(build)
  build_addr = np.stack([rk_b + 4 * i, heads_b + 8 * b_r, ent_b + 16 * i, heads_b + 8 * b_r], 1)
  build_site = np.broadcast_to(np.arange(4), (build, 4))
  # Chains: entries of a bucket, newest first.
  order = np.lexsort((-i, b_r))
  chain_start = np.searchsorted(b_r[order], np.arange(buckets + 1))
  pos_in_chain = np.empty(build, np.int64)
  pos_in_chain[order] = np.arange(build) - chain_start[b_r[order]]

  # The probe relation S: 4 * build keys, half of them R keys (hits), half even (misses).
  s_count = 4 * build
  s_row = rng.integers(0, build, s_count)
  s_hit = rng.random(s_count) < 0.5
  s_key = np.where(s_hit, keys[s_row], keys[s_row] - 1)
  s_bucket = bucket_of(s_key)
  s_walk = np.where(s_hit, pos_in_chain[s_row] + 1,
                    chain_start[s_bucket + 1] - chain_start[s_bucket])
  probe_refs = n - build_addr.size  # accesses left after the build (4 per tuple)
  per_rep = min(s_count, -(-probe_refs // 2))  # each probe makes >= 2 accesses

  def probes(rep: int):
    s_index = (rep * per_rep + np.arange(per_rep)) % s_count
    hit, b, walk = s_hit[s_index], s_bucket[s_index], s_walk[s_index]
    counts = 2 + 2 * walk
    start = np.concatenate([[0], np.cumsum(counts)[:-1]])
    p = np.repeat(np.arange(per_rep), counts)
    local = np.arange(int(counts.sum())) - start[p]
    step = np.maximum(local - 2, 0) // 2
    entry = order[np.minimum(chain_start[b[p]] + step, build - 1)]
    second = (local >= 2) & ((local - 2) % 2 == 1)
    is_match_load = second & hit[p] & (step == walk[p] - 1)
    site = np.where(local == 0, 4, np.where(local == 1, 5, np.where(
        ~second, 6, np.where(is_match_load, 8, 7))))
    addr = np.select([site == 4, site == 5, site == 6, site == 7],
                     [sk_b + 4 * s_index[p], heads_b + 8 * b[p], ent_b + 16 * entry,
                      ent_b + 16 * entry + 8], ent_b + 16 * entry + 4)
    return addr, site

  addr, site = _tile_until(probe_refs, probes) if probe_refs > 0 else (
      np.zeros(0, np.int64), np.zeros(0, np.int64))
  addr = np.concatenate([build_addr.reshape(-1), addr])[:n]
  site = np.concatenate([build_site.reshape(-1), site])[:n]
  return _Sites("hash_join", (1, 2, 1, 0, 1, 3, 1, 1, 1)).trace(
      "hash_join", _source("hash_join", seed, build=build), addr, site,
      (site == 2) | (site == 3))


# ----------------------------------------------------------------------------- AoS, chase, mix

AOS_RECORD_BYTES = 256  # 4 blocks: fields a, b, c, d at blocks 0, 1, 2, 3
AOS_WALKERS = {"ac": (0, 2), "ca": (2, 0), "ad": (0, 3), "da": (3, 0)}  # fields, in order


def aos_walk(n: int, seed: int = 0, *, records: int = 16384, regions_per_walk: int = 2,
             walkers: Sequence[str] = tuple(AOS_WALKERS)) -> Trace:
  """Array-of-structs field walks: two footprints, each in two orders (see the module docstring).

  Each walk picks a walker (uniformly from ``walkers``) and a random run of
  ``regions_per_walk`` consecutive 4 KiB regions, and for each of their
  records loads the walker's two fields in its order. Walker w's two loads
  have sites 2 w and 2 w + 1 (own PCs per walker).
  """
  n, records = _check_count(n, "n"), _check_count(records, "records")
  regions_per_walk = _check_count(regions_per_walk, "regions_per_walk")
  per_region = _PAGE // AOS_RECORD_BYTES
  regions = records // per_region
  if regions < regions_per_walk:
    raise ValueError(f"records: expected >= {regions_per_walk * per_region} (regions_per_walk"
                     f" regions of {per_region}), given {records}")
  names = list(walkers)
  unknown = [w for w in names if w not in AOS_WALKERS]
  if not names or unknown:
    raise ValueError(f"walkers: expected names from {', '.join(AOS_WALKERS)}, given {walkers!r}")
  fields = np.array([AOS_WALKERS[w] for w in names], np.int64)  # [W, 2]
  rng = np.random.default_rng(seed)
  base = _Heap(rng).alloc(records * AOS_RECORD_BYTES)
  per_walk = 2 * regions_per_walk * per_region
  walks = -(-n // per_walk)
  # Drawn in fixed blocks so that a shorter trace is a prefix of a longer one.
  blocks = [(rng.integers(0, len(names), _BLOCK),
             rng.integers(0, regions - regions_per_walk + 1, _BLOCK))
            for _ in range(-(-walks // _BLOCK))]
  kind = np.concatenate([b[0] for b in blocks])[:walks]
  first_region = np.concatenate([b[1] for b in blocks])[:walks]
  k = np.arange(n, dtype=np.int64)
  w, r = k // per_walk, k % per_walk
  record = first_region[w] * per_region + r // 2
  slot = r % 2
  addr = base + AOS_RECORD_BYTES * record + 64 * fields[kind[w], slot]
  site = 2 * kind[w] + slot
  return _Sites("aos_walk", (2, 0) * len(names)).trace(
      "aos_walk", _source("aos_walk", seed, records=records, regions_per_walk=regions_per_walk,
                          walkers=tuple(names)), addr, site, np.zeros(n, bool))


def pointer_chase(n: int, seed: int = 0, *, nodes: int = 65536) -> Trace:
  """A walk around a linked list of 64-byte nodes laid out in random cyclic order.

  Per step: load node.value (site 0, offset 8), then node.next (site 1, offset
  0). The list is one cycle through all nodes (Sattolo), so every ``nodes``
  steps visit every node once; successive nodes are unrelated in address.
  """
  n, nodes = _check_count(n, "n"), _check_count(nodes, "nodes", 2)
  rng = np.random.default_rng(seed)
  base = _Heap(rng).alloc(64 * nodes)
  cycle = rng.permutation(nodes)  # visiting order: cycle[0] -> cycle[1] -> ...
  k = np.arange(n, dtype=np.int64)
  node = cycle[(k // 2) % nodes]
  site = k % 2
  addr = base + 64 * node + 8 * (1 - site)
  return _Sites("pointer_chase", (1, 0)).trace(
      "pointer_chase", _source("pointer_chase", seed, nodes=nodes), addr, site,
      np.zeros(n, bool))


PHASE_KINDS = ("stream_triad", "stencil2d_row", "aos_walk", "pointer_chase")


def phase_mix(n: int, seed: int = 0, *, phase: int = 50_000,
              kinds: Sequence[str] = PHASE_KINDS) -> Trace:
  """Phases of ``phase`` accesses cycling through the generators ``kinds``.

  A kind that comes back continues where its previous phase stopped (same
  data, same PCs); kind i's addresses are shifted up by i * 2^32 so kinds
  never share data. Instruction indices run on across phases.
  """
  n, phase = _check_count(n, "n"), _check_count(phase, "phase")
  kinds = list(kinds)
  bad = [k for k in kinds if k not in GENERATORS or k == "phase_mix"]
  if not kinds or bad:
    raise ValueError(f"kinds: expected generator names other than phase_mix, given {kinds!r}")
  n_phases = -(-n // phase)
  need = [phase * len(range(i, n_phases, len(kinds))) for i in range(len(kinds))]
  subs = [GENERATORS[k](max(need[i], 1), seed * 1000 + i) for i, k in enumerate(kinds)]
  addr, pc, st, instr = [], [], [], []
  offset = 0
  for p in range(n_phases):
    i = p % len(kinds)
    t = subs[i]
    lo = (p // len(kinds)) * phase
    hi = min(lo + phase, lo + n - p * phase)
    sub_instr = t.instr[lo:hi]
    begin = t.instr[lo - 1] + 1 if lo else 0
    addr.append(t.addr[lo:hi] + np.uint64(i << 32))
    pc.append(t.pc[lo:hi])
    st.append(t.is_store[lo:hi])
    instr.append(sub_instr - begin + offset)
    offset += int(sub_instr[-1] - begin) + 1
  return make_trace(np.concatenate(addr), np.concatenate(pc), np.concatenate(st),
                    np.concatenate(instr), name="phase_mix",
                    source=_source("phase_mix", seed, phase=phase, kinds=tuple(kinds)),
                    n_instructions=offset)


GENERATORS: dict[str, Callable[..., Trace]] = {
    "stream_copy": stream_copy,
    "stream_triad": stream_triad,
    "strided": strided,
    "stencil2d_row": stencil2d_row,
    "stencil2d_col": stencil2d_col,
    "gemm_tiled": gemm_tiled,
    "spmv_csr": spmv_csr,
    "bfs": bfs,
    "hash_join": hash_join,
    "aos_walk": aos_walk,
    "pointer_chase": pointer_chase,
    "phase_mix": phase_mix,
}


def generate(name: str, n: int, seed: int = 0, **options) -> Trace:
  """Runs the generator ``name`` of `GENERATORS` for exactly ``n`` accesses.

  Args:
    name: a key of `GENERATORS`.
    n: number of accesses (>= 1).
    seed: RNG seed; the same seed gives the same trace (and a shorter trace is a
      prefix of a longer one with the same seed and options).
    **options: the generator's keyword options.

  Returns:
    The `Trace`.

  >>> t = generate("stream_copy", 4, seed=0)
  >>> (t.addr[2] - t.addr[0]).item(), t.is_store.tolist()
  (8, [False, True, False, True])
  """
  if name not in GENERATORS:
    raise ValueError(f"name: unknown generator {name!r}; known: {', '.join(GENERATORS)}")
  return GENERATORS[name](n, seed, **options)
