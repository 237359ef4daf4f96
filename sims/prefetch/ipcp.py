"""IPCP-lite: the L1D Instruction Pointer Classifier-based spatial Prefetcher, simplified.

After Pakalapati & Panda, "Bouquet of Instruction Pointers: Instruction Pointer
Classifier-based Spatial Hardware Prefetching", ISCA 2020 (the DPC-3 winner;
``papers/prefetch.md`` 1.2: 740 B at the L1, 155 B at the L2). IPCP classifies
each load's instruction pointer (IP) into **global stream (GS)**, **constant
stride (CS)** or **complex stride (CPLX)**, prefetches with the highest class
that applies (GS > CS > CPLX), and falls back to **next line (NL)** while the
L1D miss rate is low. **This is IPCP-lite, not a faithful port**: what follows
is this module's exact specification, implemented again in plain Python by
`ipcp_reference.IPCP`; the tests match the two event for event. Table sizes,
degrees and thresholds are those of the authors' released ISCA'20 L1 code
(IP table 64, CSPT 128, RST 8, degrees GS 6 / CS 3 / CPLX 3 / NL 1, dense at
more than 24 of 32 lines, NL while misses per kilo access <= 50, checked every
256 misses).

Blocks are 64 B; a **page** is 4 KB (64 blocks: page ``b >> 6``, offset
``o = b & 63``), a **region** 2 KB (32 blocks: region ``b >> 5``, line
``b & 31``). Every candidate stays in the page of the triggering block ``b``.

**Tables** (allocated at the factory's static sizes; the params ``ip_entries``,
``cspt_entries``, ``rst_entries`` use part of them):

* IP table, ``ip_entries`` (64, a power of two) rows, direct-mapped, row
  ``(pc ^ pc >> 6 ^ pc >> 12) & (ip_entries - 1)``: (used, IP tag = the full
  PC hash, valid bit, last block, stride, 2-bit confidence, signature, stream
  bit, direction bit).
* CSPT (complex stride prediction table), ``cspt_entries`` (128, a power of
  two) rows indexed by a signature of ``log2(cspt_entries)`` (7) bits: (stride,
  2-bit confidence), all 0 at start.
* RST (region stream table), ``rst_entries`` (8) regions, fully associative,
  LRU (an empty entry first, else the least recently stamped; the stamp is a
  clock bumped on every L1D demand load): (region, 32-bit line bitmap,
  pos/neg counter, trained-dense bit, tentative-dense bit).

**Per L1D demand load** (block ``b``, PC ``pc``, ``miss = level > 0``):

1. *Miss rate.* ``loads += 1`` (capped at 2**20), ``misses += miss``. When
   ``misses`` reaches ``nl_window`` (256): ``spec_nl = (1000 * misses <=
   nl_mpki * loads)`` (misses per kilo L1D load <= ``nl_mpki``, 50) and both
   counts restart at 0. ``spec_nl`` starts at 0 (off).
2. *IP table.* Row ``e``. If ``e`` is unused or its tag is not ``pc``: if ``e``
   is used and its valid bit is 1, the bit is cleared (the old IP keeps the row
   for now); otherwise ``e`` becomes (pc, valid 1, last ``b``, stride 0,
   conf 0, signature 0, stream 0, direction 0). Nothing else happens.
   If the tag is ``pc``: valid = 1, ``d = b - last``; if ``d == 0`` nothing else
   happens. Otherwise the load **trains** (steps 3-6, then 7 and ``last = b``).
3. *RST.* ``flag`` = the region of ``last`` (before this load) is in the RST
   with its trained-dense bit set. Region ``r = b >> 5``:

   * in the RST: stamp it, set line ``b & 31`` in the bitmap; the pos/neg
     counter is first reset to 32 if it is <= 0 or >= 64, then ``+1`` if
     ``d > 0`` else ``-1``; trained-dense |= popcount(bitmap) >=
     ``dense_lines`` (25: more than 75 % of 32); tentative-dense |= ``flag``.
     If tentative or trained: the IP's stream bit = 1 and direction =
     (pos/neg > 32), else its stream bit = 0 (direction kept).
   * not in the RST: the LRU entry becomes (r, bitmap = line ``b & 31``,
     pos/neg 32, trained 0, tentative = ``flag``), stamped. The IP's stream
     bit and direction are left as they were (a stream carries on into a new
     region).
4. *CS.* ``conf = min(conf + 1, 3)`` if ``d == stride`` else ``max(conf - 1,
   0)``; if the new ``conf == 0``, ``stride = d``.
5. *CPLX training.* Row ``s`` = the IP's signature: CSPT[s] gets the same
   hysteresis update with ``d``; then the IP's signature becomes
   ``next(s, d) = ((s << 1) ^ enc(d)) & (cspt_entries - 1)``, ``enc(d) =
   min(|d|, 63) + 64 * (d < 0)`` (7-bit sign-magnitude).
6. *Classify and prefetch* (``sig``, ``stride``, ``conf`` the new values; ``o``
   the offset of ``b``). The first class that applies is the load's class:

   * **GS**, stream bit 1: ``b + k`` (direction 1) or ``b - k`` (direction 0),
     k = 1..``degree_gs`` (6), those inside the page.
   * **CS**, ``conf >= cs_conf`` (2) and ``stride != 0``: ``b + k * stride``,
     k = 1..``degree_cs`` (3), inside the page (none if ``|stride| > 63``).
   * **CPLX**, CSPT[sig].stride != 0: a lookahead walk, ``off = 0``, for
     i = 1..``degree_cplx`` (3, at most 3): (t, c) = CSPT[sig]; stop if
     ``t == 0`` or ``|t| > 63``; ``off += t``; stop if ``o + off`` leaves the page; if
     ``c >= cplx_conf`` (1) the candidate is ``b + off``; ``sig = next(sig,
     t)``. (A low-confidence step advances the path without a candidate.)

   **NL**: if the load's class gave no candidate (or it has none), ``spec_nl``
   is 1 and ``next_line`` (True) is set: ``b + 1`` if inside the page.
   All candidates fill ``fill_level`` (L1D), in the order above; the cache
   accepts the first ``budget`` (`protocol`), the rest are dropped.

**Simplified or left out** against the paper and the authors' code:

* L1 only: no L2 IPCP and no metadata (class, stride) passed to the L2.
* Physical block numbers from the trace, not virtual addresses. The IP table
  row is a fold of the PC (the paper: its low 6 bits; the synthetic traces'
  load sites differ only in PC bits 8-13, and would all share row 0) and the
  tag is the full PC hash (the paper: 9 bits, so no aliasing is modelled). The
  last block is stored in full (the paper: a 2-bit page hash and a 6-bit
  offset, with a page-crossing stride correction), and strides are full-width
  (a 7-bit stride of the paper is |d| <= 63; wider strides never give a
  candidate, as they leave the page).
* No accuracy-based degree throttling (the paper adapts each class's degree
  from its useful/filled counts, which need a class tag on every L1D line):
  the degrees are fixed params.
* No recent-request (RR) filter: the cache drops redundant prefetches, which
  still use the issue budget and count as issued.
* Strict class priority (the paper's GS > CS > CPLX > NL): exactly one class
  issues. The authors' code also runs CS after GS when the GS degree is below
  3 or the IP's previous region was dense (its ``flag`` variable is reused),
  and CPLX after CS when the CS degree is below 2; its RR filter then drops
  the repeats.
* RST: the LRU stamp is also refreshed on a hit (the authors' code refreshes
  it only on allocation); a new region's bitmap records its first line (the
  authors' code starts it empty); density is the bitmap's popcount (the
  authors' code counts the current line's bit 32 times, so a region there is
  "dense" from its second access on).
* The miss rate is per kilo *L1D load* (the authors' code; the paper calls it
  MPKI), over windows of ``nl_window`` misses (the authors' counts are
  cumulative); the authors' ``flag_nl``, which skips the first NL opportunity
  (and one after each low NL-accuracy check), is left out.
* The CPLX lookahead is at most 3 steps (the authors' cap on its degree).

Static (the factory): ``max_degree`` (K, default 6) and the allocated table
sizes. Traced params (`make_params`, no recompile): ``degree_gs`` (6, <= K),
``degree_cs`` (3, <= K), ``degree_cplx`` (3, <= min(K, 3)), ``cs_conf`` (2),
``cplx_conf`` (1), ``dense_lines`` (25), ``next_line`` (True), ``nl_mpki``
(50), ``nl_window`` (256), ``ip_entries`` / ``cspt_entries`` /
``rst_entries`` (the allocated sizes), ``fill_level`` (``"l1d"``). State: `IPCPState`; its ``scalars``
(``S_*``) count loads, training loads, the loads that gave candidates per
class and the accepted candidates.

**Speed** (XLA:CPU, `protocol`'s rules): one read and one write of the IP row
and of a CSPT row, three CSPT reads for the walk (before the write, so the
table is updated in place), the RST (8 rows) looked up by one variadic reduce
and written by one select, and every small vector assembled by a select chain
(`_vec`: ``jnp.stack`` of scalars costs a kernel per element here). The
runner's scan body has 61 kernels with IPCP-lite, 49 with `ip_stride`, 19
with no prefetcher (jax 0.10.2).

>>> pf = ipcp()
>>> pf.name, pf.num_candidates, pf.self_masking
('ipcp_l1', 6, True)
>>> int(pf.make_params(degree_gs=4).degree_gs)
4
>>> storage_bits()["total"] // 8   # bytes; the paper: 740
738
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxsys.sims.cache import hierarchy
from jaxsys.sims.cache import protocol
from jaxsys.sims.cache.protocol import Access, Candidates, Prefetcher
from ._checks import check_bool as _check_bool
from ._checks import check_int as _check_int
from ._checks import check_pow2

INT32_MAX = protocol.INT32_MAX
PAGE_BLOCKS = 64  # 4 KB pages
REGION_BLOCKS = 32  # 2 KB regions
CONF_MAX = 3  # 2-bit saturating confidence
MAX_STRIDE = 63  # the paper's 7-bit sign-magnitude stride
POSNEG_MID, POSNEG_MAX = 32, 64  # 6-bit pos/neg counter
LOADS_CAP = 1 << 20  # the miss-rate window's load count saturates here
MAX_CPLX_DEGREE = 3  # the CPLX lookahead is at most 3 steps (the authors' cap)

# IP table fields (last axis).
I_USED, I_TAG, I_VALID, I_LAST, I_STRIDE, I_CONF, I_SIG, I_STREAM, I_DIR = range(9)
IP_FIELDS = 9
# CSPT fields.
C_STRIDE, C_CONF = range(2)
# RST fields; stamp -1: empty.
R_STAMP, R_REGION, R_BITS, R_POSNEG, R_TRAINED, R_TENT = range(6)
RST_FIELDS = 6
# Scalars: clock (= L1D demand loads seen), the miss-rate window (loads,
# misses), spec_nl, training loads, the loads whose class gave candidates (GS,
# CS, CPLX; NL: the fallback fired), accepted candidates.
(S_CLOCK, S_WLOADS, S_WMISSES, S_SPEC_NL, S_TRAINS, S_GS, S_CS, S_CPLX, S_NL,
 S_ISSUED) = range(10)
NUM_SCALARS = 10


class IPCPParams(NamedTuple):
  degree_gs: Any  # [] int32 GS candidates per load, 1..K (6)
  degree_cs: Any  # [] int32 CS candidates per load, 1..K (3)
  degree_cplx: Any  # [] int32 CPLX lookahead steps, 1..min(K, 3) (3)
  cs_conf: Any  # [] int32 CS needs confidence >= this, 1..3 (2)
  cplx_conf: Any  # [] int32 a CPLX step prefetches at CSPT confidence >= this, 0..3 (1)
  dense_lines: Any  # [] int32 a region is dense with this many of its 32 lines touched (25)
  next_line: Any  # [] bool the NL fallback is on (True)
  nl_mpki: Any  # [] int32 NL while misses per 1000 L1D loads <= this, 0..1000 (50)
  nl_window: Any  # [] int32 misses between miss-rate checks (256)
  ip_entries: Any  # [] int32 IP table rows in use, a power of two <= allocated
  cspt_entries: Any  # [] int32 CSPT rows in use, a power of two <= allocated
  rst_entries: Any  # [] int32 RST entries in use, <= allocated
  fill_level: Any  # [] int32 0 L1D, 1 L2, 2 LLC


class IPCPState(NamedTuple):
  ipt: jax.Array  # [I, 9] int32 (used, tag, valid, last, stride, conf, sig, stream, dir)
  cspt: jax.Array  # [C, 2] int32 (stride, conf)
  rst: jax.Array  # [R, 6] int32 (stamp (-1 empty), region, bitmap, pos/neg, trained, tentative)
  scalars: jax.Array  # [10] int32 (S_* above)


def _check_pow2(name: str, value: Any, hi: int, what: str = "") -> int:
  return check_pow2(name, value, 1, hi, what)  # table sizes: 1..hi


class IPCPConfig(NamedTuple):
  num_candidates: int
  ip_entries: int
  cspt_entries: int
  rst_entries: int


def _make_params(cfg: IPCPConfig, degree_gs: int = 6, degree_cs: int = 3, degree_cplx: int = 3,
                 cs_conf: int = 2, cplx_conf: int = 1, dense_lines: int = 25,
                 next_line: bool = True, nl_mpki: int = 50, nl_window: int = 256,
                 ip_entries: int | None = None, cspt_entries: int | None = None,
                 rst_entries: int | None = None, fill_level: str | int = "l1d") -> IPCPParams:
  K = cfg.num_candidates
  degrees = [_check_int("degree_gs", degree_gs, 1, K), _check_int("degree_cs", degree_cs, 1, K),
             _check_int("degree_cplx", degree_cplx, 1, min(K, MAX_CPLX_DEGREE))]
  cs_conf = _check_int("cs_conf", cs_conf, 1, CONF_MAX)
  cplx_conf = _check_int("cplx_conf", cplx_conf, 0, CONF_MAX)
  dense_lines = _check_int("dense_lines", dense_lines, 1, REGION_BLOCKS)
  next_line = _check_bool("next_line", next_line)
  nl_mpki = _check_int("nl_mpki", nl_mpki, 0, 1000)
  nl_window = _check_int("nl_window", nl_window, 1, LOADS_CAP)
  ip_entries = _check_pow2("ip_entries", cfg.ip_entries if ip_entries is None else ip_entries,
                           cfg.ip_entries, " (the allocated IP table)")
  cspt_entries = _check_pow2(
      "cspt_entries", cfg.cspt_entries if cspt_entries is None else cspt_entries,
      cfg.cspt_entries, " (the allocated CSPT)")
  rst_entries = _check_int("rst_entries", cfg.rst_entries if rst_entries is None else rst_entries,
                           1, cfg.rst_entries)
  level = hierarchy.level_index(fill_level, name="fill_level")
  i32 = np.int32
  return IPCPParams(i32(degrees[0]), i32(degrees[1]), i32(degrees[2]), i32(cs_conf),
                    i32(cplx_conf), i32(dense_lines), np.bool_(next_line), i32(nl_mpki),
                    i32(nl_window), i32(ip_entries), i32(cspt_entries), i32(rst_entries),
                    i32(level))


def _init(cfg: IPCPConfig, pparams: IPCPParams) -> IPCPState:
  del pparams
  rst = np.zeros((cfg.rst_entries, RST_FIELDS), np.int32)
  rst[:, R_STAMP] = -1
  return IPCPState(jnp.zeros((cfg.ip_entries, IP_FIELDS), jnp.int32),
                   jnp.zeros((cfg.cspt_entries, 2), jnp.int32), jnp.asarray(rst),
                   jnp.zeros((NUM_SCALARS,), jnp.int32))


def _train(pstate, access, hit_l1, now, pparams):
  """All the work is in `issue`, which also knows the budget."""
  del access, hit_l1, now, pparams
  return pstate


def _hysteresis(match: jax.Array, conf: jax.Array) -> jax.Array:
  """2-bit confidence: +1 (saturating at 3) on a match, else -1 (floored at 0)."""
  return jnp.where(match, jnp.minimum(conf + 1, CONF_MAX), jnp.maximum(conf - 1, 0))


def _next_sig(sig: jax.Array, delta: jax.Array, mask: jax.Array) -> jax.Array:
  """``((sig << 1) ^ enc(delta)) & mask``, enc the 7-bit sign-magnitude of delta (|.| <= 63)."""
  enc = jnp.where(delta < 0, jnp.minimum(-delta, MAX_STRIDE) + 64,
                  jnp.minimum(delta, MAX_STRIDE))
  return ((sig << 1) ^ enc) & mask


def _vec(values: list[jax.Array], dtype: Any = jnp.int32) -> jax.Array:
  """``[len(values)]`` vector of scalars as one select chain over a lane index
  (XLA:CPU fuses it with the producers; ``jnp.stack`` makes a kernel per element)."""
  lane = jnp.arange(len(values), dtype=jnp.int32)
  out = jnp.broadcast_to(jnp.asarray(values[0], dtype), lane.shape)
  for i, v in enumerate(values[1:], start=1):
    out = jnp.where(lane == i, jnp.asarray(v, dtype), out)
  return out


def _issue(cfg: IPCPConfig, pstate: IPCPState, cache_state, access: Access, now, budget,
           p: IPCPParams):
  del cache_state, now
  K = cfg.num_candidates
  load = jnp.asarray(access.load, jnp.bool_)
  b = jnp.asarray(access.block, jnp.int32)
  pc = jnp.asarray(access.pc_hash, jnp.int32)
  miss = jnp.asarray(access.level, jnp.int32) > 0
  sc = pstate.scalars
  clock = sc[S_CLOCK] + 1
  one = 1 + (clock < 0).astype(jnp.int32)  # an opaque 1: materialises a row read once

  # 1. Miss rate (misses per 1000 L1D loads, per window of nl_window misses).
  w_loads = jnp.minimum(sc[S_WLOADS] + 1, LOADS_CAP)
  w_misses = sc[S_WMISSES] + miss.astype(jnp.int32)
  close = w_misses >= jnp.asarray(p.nl_window, jnp.int32)
  low = (1000 * w_misses <= jnp.asarray(p.nl_mpki, jnp.int32) * w_loads).astype(jnp.int32)
  spec_nl = jnp.where(close, low, sc[S_SPEC_NL])
  w_loads = jnp.where(close, 0, w_loads)
  w_misses = jnp.where(close, 0, w_misses)

  # 2. IP table row.
  idx = (pc ^ (pc >> 6) ^ (pc >> 12)) & (jnp.asarray(p.ip_entries, jnp.int32) - 1)
  e = jax.lax.div(jax.lax.dynamic_index_in_dim(pstate.ipt, idx, axis=0, keepdims=False), one)
  used = e[I_USED] == 1
  hit = used & (e[I_TAG] == pc)
  d = b - e[I_LAST]
  train = load & hit & (d != 0)

  # 3. RST (8 rows: updated with a whole-table select).
  rst = pstate.rst
  R = rst.shape[0]
  way_R = jnp.arange(R, dtype=jnp.int32)
  live_R = rst[:, R_STAMP] >= 0
  region_R = rst[:, R_REGION]
  cur_R = live_R & (region_R == (b >> 5))
  # One variadic reduce picks the way (b's region if present, else an empty
  # usable way, lowest first, else the least recently stamped) with its fields,
  # and ORs flag over the table.
  key_R = jnp.where(cur_R, -2, jnp.where(way_R < jnp.asarray(p.rst_entries, jnp.int32),
                                         rst[:, R_STAMP], INT32_MAX))
  prev_R = (live_R & (region_R == (e[I_LAST] >> 5)) & (rst[:, R_TRAINED] == 1)).astype(jnp.int32)
  tt_R = 2 * rst[:, R_TRAINED] + rst[:, R_TENT]

  def pick(x, y):
    take_x = (x[0] < y[0]) | ((x[0] == y[0]) & (x[1] < y[1]))
    return tuple(jnp.where(take_x, a, c) for a, c in zip(x[:2], y[:2])) + (
        jnp.maximum(x[2], y[2]),) + tuple(jnp.where(take_x, a, c) for a, c in zip(x[3:], y[3:]))

  big = jnp.int32(INT32_MAX)
  zero = jnp.int32(0)
  key, way, flag_i, old_bits, old_pn, old_tt = jax.lax.reduce(
      (key_R, way_R, prev_R, rst[:, R_BITS], rst[:, R_POSNEG], tt_R),
      (big, big, zero, zero, zero, zero), pick, (0,))
  r_hit = key == -2
  flag = flag_i == 1
  line_bit = jnp.left_shift(jnp.int32(1), b & (REGION_BLOCKS - 1))
  pn = jnp.where((old_pn <= 0) | (old_pn >= POSNEG_MAX), POSNEG_MID, old_pn) + jnp.where(
      d > 0, 1, -1)
  bits = old_bits | line_bit
  dense = jax.lax.population_count(bits) >= jnp.asarray(p.dense_lines, jnp.int32)
  trained = (old_tt >> 1) | dense.astype(jnp.int32)
  tent = (old_tt & 1) | flag.astype(jnp.int32)
  new_F = _vec([clock, b >> 5, jnp.where(r_hit, bits, line_bit),
                jnp.where(r_hit, pn, POSNEG_MID), jnp.where(r_hit, trained, 0),
                jnp.where(r_hit, tent, flag.astype(jnp.int32))])
  rst = jnp.where(((way_R == way) & train)[:, None], new_F[None, :], rst)
  on = r_hit & ((tent | trained) == 1)
  stream = jnp.where(r_hit, on.astype(jnp.int32), e[I_STREAM])
  direction = jnp.where(on, (pn > POSNEG_MID).astype(jnp.int32), e[I_DIR])

  # 4. CS.
  conf = _hysteresis(d == e[I_STRIDE], e[I_CONF])
  stride = jnp.where(conf == 0, d, e[I_STRIDE])

  # 5. CPLX training, then the new signature. (The CSPT write comes after the
  # walk's reads below, so that XLA updates the table in place.)
  sig_mask = jnp.asarray(p.cspt_entries, jnp.int32) - 1
  s_old = e[I_SIG]
  c_F = jax.lax.div(jax.lax.dynamic_index_in_dim(pstate.cspt, s_old, axis=0, keepdims=False), one)
  c_conf = _hysteresis(d == c_F[C_STRIDE], c_F[C_CONF])
  c_new = jnp.where(train, _vec([jnp.where(c_conf == 0, d, c_F[C_STRIDE]), c_conf]), c_F)
  sig = _next_sig(s_old, d, sig_mask)

  # 6. Candidates of each class, as page offsets.
  o = b & (PAGE_BLOCKS - 1)
  base = b - o
  k_K = jnp.arange(1, K + 1, dtype=jnp.int32)
  gs_off_K = o + jnp.where(direction == 1, k_K, -k_K)
  gs_ok_K = (k_K <= jnp.asarray(p.degree_gs, jnp.int32))
  small = jnp.abs(stride) <= MAX_STRIDE
  cs_off_K = o + jnp.where(small, stride, 0) * k_K
  cs_ok_K = small & (k_K <= jnp.asarray(p.degree_cs, jnp.int32))
  # CPLX lookahead walk: min(K, 3) sequential reads of the CSPT as updated in
  # step 5 (the old table, with row s_old replaced by c_new).
  alive = jnp.bool_(True)
  off = jnp.int32(0)
  walk_sig = sig
  cplx_off, cplx_ok, first_t = [], [], None
  for i in range(min(K, MAX_CPLX_DEGREE)):
    read = jax.lax.div(jax.lax.dynamic_index_in_dim(pstate.cspt, walk_sig, axis=0,
                                                    keepdims=False), one)
    t_c = jnp.where(walk_sig == s_old, c_new, read)
    t, c = t_c[C_STRIDE], t_c[C_CONF]
    first_t = t if first_t is None else first_t
    alive = alive & (i < jnp.asarray(p.degree_cplx, jnp.int32)) & (t != 0) & (
        jnp.abs(t) <= MAX_STRIDE)
    off = off + jnp.where(alive, t, 0)
    alive = alive & (o + off >= 0) & (o + off < PAGE_BLOCKS)
    cplx_off.append(o + off)
    cplx_ok.append(alive & (c >= jnp.asarray(p.cplx_conf, jnp.int32)))
    walk_sig = _next_sig(walk_sig, t, sig_mask)
  # An opaque 1 that depends on the last read: the write is ordered after every read.
  after = 1 + (read[C_CONF] < 0).astype(jnp.int32)
  cspt = jax.lax.dynamic_update_index_in_dim(pstate.cspt, jax.lax.div(c_new, after), s_old,
                                             axis=0)
  pad = K - len(cplx_off)
  cplx_off_K = _vec(cplx_off + [jnp.int32(0)] * pad)
  cplx_ok_K = _vec(cplx_ok + [jnp.bool_(False)] * pad, jnp.bool_)

  is_gs = stream == 1
  is_cs = ~is_gs & (conf >= jnp.asarray(p.cs_conf, jnp.int32)) & (stride != 0)
  is_cplx = ~is_gs & ~is_cs & (first_t != 0)
  off_K = jnp.where(is_gs, gs_off_K, jnp.where(is_cs, cs_off_K, cplx_off_K))
  ok_K = jnp.where(is_gs, gs_ok_K, jnp.where(is_cs, cs_ok_K, cplx_ok_K & is_cplx))
  ok_K = train & ok_K & (off_K >= 0) & (off_K < PAGE_BLOCKS)
  gave = jnp.any(ok_K)
  nl = (train & ~gave & (spec_nl == 1) & jnp.asarray(p.next_line, jnp.bool_)
        & (o < PAGE_BLOCKS - 1))
  first_K = k_K == 1
  valid_K = ok_K | (nl & first_K)
  block_K = base + jnp.where(nl & first_K, o + 1, off_K)
  cand = Candidates(block_K, jnp.broadcast_to(jnp.asarray(p.fill_level, jnp.int32), (K,)),
                    valid_K)

  # 7. The IP row (masked: only L1D demand loads write). A training load
  # writes its new values; a miss on an unused row or on a row whose valid bit
  # is clear allocates; otherwise the row is kept with the valid bit = hit (a
  # hit sets it, a miss on a valid row clears it).
  alloc = ~hit & ~(used & (e[I_VALID] == 1))
  one_i, zero_i = jnp.int32(1), jnp.int32(0)
  trained_v = [one_i, pc, one_i, b, stride, conf, sig, stream, direction]
  fresh_v = [one_i, pc, one_i, b] + [zero_i] * 5
  kept_v = [hit.astype(jnp.int32) if f == I_VALID else e[f] for f in range(IP_FIELDS)]
  new_e = _vec([jnp.where(train, t, jnp.where(alloc, a_, k))
                for t, a_, k in zip(trained_v, fresh_v, kept_v)])
  ipt = jax.lax.dynamic_update_index_in_dim(pstate.ipt, jnp.where(load, new_e, e), idx, axis=0)

  # The cache accepts the first `budget` valid candidates.
  issued = jnp.minimum(jnp.sum(valid_K.astype(jnp.int32)), jnp.asarray(budget, jnp.int32))
  gave_i = gave.astype(jnp.int32)
  scalars = _vec([clock, w_loads, w_misses, spec_nl,
                  sc[S_TRAINS] + train.astype(jnp.int32),
                  sc[S_GS] + gave_i * is_gs.astype(jnp.int32),
                  sc[S_CS] + gave_i * is_cs.astype(jnp.int32),
                  sc[S_CPLX] + gave_i * is_cplx.astype(jnp.int32),
                  sc[S_NL] + nl.astype(jnp.int32), sc[S_ISSUED] + issued])
  scalars = jnp.where(load, scalars, sc)
  return IPCPState(ipt, cspt, rst, scalars), cand


@functools.lru_cache(maxsize=None)
def ipcp(max_degree: int = 6, *, ip_entries: int = 64, cspt_entries: int = 128,
         rst_entries: int = 8) -> Prefetcher:
  """IPCP-lite at the L1D (module docstring), K = `max_degree` candidates, named ``"ipcp_l1"``.

  Args:
    max_degree: static candidate count K (1..64); the ``degree_*`` params are <= it.
    ip_entries: allocated IP table rows (a power of two; the paper: 64).
    cspt_entries: allocated CSPT rows (a power of two <= 128, i.e. a signature
      of at most 7 bits; the paper: 128).
    rst_entries: allocated RST entries (the paper: 8).

  Params (`Prefetcher.make_params`): see the module docstring.

  Raises:
    TypeError, ValueError: a non-int, out-of-range or non-power-of-two size.

  >>> pf = ipcp(3, rst_entries=2)
  >>> pf.num_candidates, int(pf.make_params(degree_gs=3).rst_entries)
  (3, 2)
  """
  K = _check_int("max_degree", max_degree, 1, 64)
  cfg = IPCPConfig(K, _check_pow2("ip_entries", ip_entries, 1 << 16),
                   _check_pow2("cspt_entries", cspt_entries, 128,
                               " (a signature of at most 7 bits)"),
                   _check_int("rst_entries", rst_entries, 1, 1024))
  return Prefetcher(name="ipcp_l1", num_candidates=K,
                    make_params=functools.partial(_make_params, cfg),
                    init=functools.partial(_init, cfg), train=_train,
                    issue=functools.partial(_issue, cfg), self_masking=True)


def storage_bits(*, ip_entries: int = 64, cspt_entries: int = 128, rst_entries: int = 8,
                 rr_entries: int = 32, l1d_lines: int = 768) -> dict[str, int]:
  """Bits of IPCP's L1 hardware state per structure, and ``total``.

  With the defaults this gives 5904 bits = **738 B**, against the paper's
  740 B (-0.3 %). The first four items use the field widths that the
  authors' released ISCA'20 L1 code documents (527 B); the paper's 740 B is not
  itemised in any source we could check, so the last two are our accounting
  [I] of the remaining ~213 B:

  * ``ip_table``: 64 x (9 tag + 1 valid + 2 page hash + 6 line offset + 7 stride
    + 2 conf + 7 signature + 1 stream + 1 direction) = 64 x 36 bits = 288 B;
  * ``cspt``: 128 x (7 stride + 2 conf) = 144 B;
  * ``rst``: 8 x (3 region id (the 2-bit page hash and the half-page bit) + 1
    tentative + 1 trained + 6 pos/neg + 1 direction + 3 LRU + 32 line bitmap)
    = 8 x 47 bits = 47 B;
  * ``rr_filter``: 32 x 12-bit tags (recent-request filter) = 48 B;
  * ``line_class`` [I]: 768 lines of the 48 KB L1D x a 2-bit prefetch class =
    192 B;
  * ``counters`` [I]: 4 classes x (10-bit fills + 10-bit useful + 7-bit
    accuracy + 4-bit degree) + an 8-bit miss counter (the 256-miss window) +
    an 18-bit access counter + 2 NL bits = 152 bits = 19 B.

  The signature width is log2(cspt_entries) and the LRU width log2(rst_entries).
  The JAX model keeps full-width fields and has no RR filter, class tags or
  throttling counters (module docstring); this is the paper's hardware.
  """
  ip_entries = _check_pow2("ip_entries", ip_entries, 1 << 16)
  cspt_entries = _check_pow2("cspt_entries", cspt_entries, 1 << 16)
  rst_entries = _check_int("rst_entries", rst_entries, 1, 1 << 16)
  rr_entries = _check_int("rr_entries", rr_entries, 0, 1 << 16)
  l1d_lines = _check_int("l1d_lines", l1d_lines, 0, 1 << 24)
  sig_bits = (cspt_entries - 1).bit_length()
  lru_bits = (rst_entries - 1).bit_length()
  out = {
      "ip_table": ip_entries * (9 + 1 + 2 + 6 + 7 + 2 + sig_bits + 1 + 1),
      "cspt": cspt_entries * (7 + 2),
      "rst": rst_entries * (3 + 1 + 1 + 6 + 1 + lru_bits + REGION_BLOCKS),
      "rr_filter": rr_entries * 12,
      "line_class": l1d_lines * 2,
      "counters": 4 * (10 + 10 + 7 + 4) + 8 + 18 + 2,
  }
  out["total"] = sum(out.values())
  return out
