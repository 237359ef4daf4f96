"""SPP, the Signature Path Prefetcher (Kim et al., MICRO'16; ChampSim's ``spp_dev``).

Parameters of ``spp_dev`` as listed in ``papers/prefetch.md`` 1.2: signature
table 256 entries, pattern table 512 sets x 4 deltas, 12-bit signatures,
PF_THRESHOLD 25 %, FILL_THRESHOLD 90 %, global history register 8 entries.
Placed at the L1D of this simulator (the Gaze study's placement), so it sees
every L1D demand load. What follows is this module's exact specification,
implemented again in plain Python by `baselines_b_reference.ReferenceSPP`; the
tests match the two event for event.

**Signatures.** Pages are 4 KB (64 blocks): page ``b >> 6``, offset ``b & 63``.
A delta d is encoded as ``sd = d`` (d > 0) or ``|d| + 64`` (d < 0, 7 bits) and
``next_sig(s, d) = ((s << 3) ^ sd) & 0xFFF``.

**Tables** (static sizes): ST ``st_entries`` (256), fully associative, LRU
(empty first, else the least recently stamped; the stamp is a clock bumped on
every L1D demand load): (page, last offset, signature). PT ``pt_sets`` (512,
set = ``sig & (pt_sets - 1)``) x ``pt_ways`` (4) of (delta, c_delta) plus a
c_sig per set. GHR ``ghr_entries`` (8): (signature, confidence, offset in the
next page, delta).

**Per L1D demand load** (block b, page p, offset o):

1. ``pf_hit`` (first demand use of a prefetched line) adds 1 to *useful*.
2. ST hit with last offset o' and signature s: ``d = o - o'``. If d == 0,
   nothing else happens (no training, no prefetch; at the L1D most loads
   re-touch the block of the previous one). Otherwise, if s != 0, PT[s]
   learns d: a way holding d (with c_delta > 0) gets c_delta + 1, else the
   way with the smallest c_delta (first on ties) takes d with c_delta = 1; then
   c_sig + 1, and if c_sig exceeds ``c_max`` (15) c_sig and every c_delta of
   the set are halved. The entry becomes (o, next_sig(s, d)); it triggers.
3. ST miss: a new entry (p, o, s0) with s0 = 0, or, if the GHR holds entries
   whose offset is o (``use_ghr``), the one with the highest confidence (first
   on ties), ``s0 = next_sig(g.sig, g.delta)`` (page-crossing bootstrap). It
   triggers when s0 != 0.
4. **Lookahead** (a trigger with signature s at offset o): ``alpha = 100 *
   useful // issued`` (0 before any issue; spp_dev's global accuracy), path
   confidence 100, depth 0. At each depth, for each way of PT[s] with
   c_delta > 0, in way order, ``conf = 100 c_delta // c_sig`` at depth 0,
   else ``((alpha c_delta // c_sig) path) // 100``. A way with conf >=
   ``pf_threshold`` (25) proposes ``o + delta``: inside the page it is a
   candidate, filled into **L1D if conf >= fill_threshold (90), else into
   ``low_fill_level`` (L2 by default)** (spp_dev fills L2 / LLC from the L2;
   here one level lower each); outside the page it is recorded in the GHR
   (the same (sig, offset, delta) updates its confidence, else it replaces the
   lowest-confidence entry, an empty one first) and not prefetched. The way
   with the highest conf (first on ties) continues the path: path = its conf,
   s = next_sig(s, delta), o += delta, depth + 1; the walk stops when no way
   passes, when the best one leaves the page, or at ``degree`` candidates.
5. *issued* += the accepted candidates (the first ``budget``); when *issued*
   reaches ``acc_max`` (1024) both counters are halved.

**Simplifications** [I]: no prefetch filter (the cache drops redundant
prefetches; they still count as issued and lower alpha); PT set = the low
signature bits (spp_dev hashes); full page numbers as ST tags; a new PT delta
starts at c_delta 1; ``d == 0`` accesses are skipped; the lookahead is capped
by ``degree`` (K at most) rather than by spp_dev's queue.

Params (`make_params`, traced): ``pf_threshold`` 25, ``fill_threshold`` 90,
``degree`` (K), ``low_fill_level`` 1, ``c_max`` 15, ``use_ghr`` True,
``acc_max`` 1024.
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxsys.sims.cache import hierarchy
from jaxsys.sims.cache.protocol import Access, Candidates, Prefetcher
from ._checks import check_int as _check_int

PAGE_BLOCKS = 64
SIG_MASK = (1 << 12) - 1
ST_PAGE, ST_OFFSET, ST_SIG, ST_STAMP = range(4)
G_SIG, G_CONF, G_OFFSET, G_DELTA = range(4)
SC_CLOCK, SC_USEFUL, SC_ISSUED = range(3)


class SPPParams(NamedTuple):
  pf_threshold: Any  # [] int32 percent: prefetch (and walk on) at conf >= this (25)
  fill_threshold: Any  # [] int32 percent: fill L1D at conf >= this (90)
  degree: Any  # [] int32 candidates per trigger, 1..K
  low_fill_level: Any  # [] int32 fill level below fill_threshold (1 L2, 2 LLC)
  c_max: Any  # [] int32 c_sig saturates above this: the set is halved (15)
  use_ghr: Any  # [] bool record page-crossing paths and bootstrap new pages from them
  acc_max: Any  # [] int32 issued count at which useful / issued are halved (1024)


class SPPState(NamedTuple):
  st: jax.Array  # [E, 4] int32 (page, last offset, signature, stamp); stamp -1 empty
  pt: jax.Array  # [P, 2W + 1] int32 (delta[W], c_delta[W], c_sig)
  ghr: jax.Array  # [G, 4] int32 (signature, confidence, offset, delta); confidence -1 empty
  scalars: jax.Array  # [3] int32 (clock, useful, issued)


class SPPConfig(NamedTuple):
  st_entries: int
  pt_sets: int
  pt_ways: int
  ghr_entries: int
  num_candidates: int




def _make_params(K: int, pf_threshold: int = 25, fill_threshold: int = 90,
                 degree: int | None = None, low_fill_level: str | int = "l2", c_max: int = 15,
                 use_ghr: bool = True, acc_max: int = 1024) -> SPPParams:
  pf_threshold = _check_int("pf_threshold", pf_threshold, 1, 100)
  fill_threshold = _check_int("fill_threshold", fill_threshold, 1, 100)
  degree = _check_int("degree", K if degree is None else degree, 1, K)
  low = hierarchy.level_index(low_fill_level, name="low_fill_level")
  if low == 0:
    raise ValueError("low_fill_level: expected 'l2' or 'llc' (below the L1D fills), given"
                     f" {low_fill_level!r}")
  c_max = _check_int("c_max", c_max, 1, 1 << 20)
  if not isinstance(use_ghr, (bool, np.bool_)):
    raise TypeError(f"use_ghr: expected a bool, given {use_ghr!r}")
  acc_max = _check_int("acc_max", acc_max, 2, 1 << 20)
  return SPPParams(np.int32(pf_threshold), np.int32(fill_threshold), np.int32(degree),
                   np.int32(low), np.int32(c_max), np.bool_(use_ghr), np.int32(acc_max))


def next_sig(sig: jax.Array, delta: jax.Array) -> jax.Array:
  """``((sig << 3) ^ sd) & 0xFFF`` with sd = delta, or |delta| + 64 if negative."""
  sd = jnp.where(delta >= 0, delta, 64 - delta)
  return ((sig << 3) ^ sd) & SIG_MASK


def _init(cfg: SPPConfig, pparams: SPPParams) -> SPPState:
  del pparams
  st = np.zeros((cfg.st_entries, 4), np.int32)
  st[:, ST_STAMP] = -1
  ghr = np.zeros((cfg.ghr_entries, 4), np.int32)
  ghr[:, G_CONF] = -1
  return SPPState(jnp.asarray(st), jnp.zeros((cfg.pt_sets, 2 * cfg.pt_ways + 1), jnp.int32),
                  jnp.asarray(ghr), jnp.zeros((3,), jnp.int32))


def _train(pstate, access, hit_l1, now, pparams):
  # Training and the lookahead share the tables' reads: everything is in `issue`.
  del access, hit_l1, now, pparams
  return pstate


def _ghr_record(ghr, do, sig, conf, offset, delta):
  """Records a page-crossing proposal (masked by `do`), as the module docstring says."""
  G = ghr.shape[0]
  valid = ghr[:, G_CONF] >= 0
  match_G = valid & (ghr[:, G_SIG] == sig) & (ghr[:, G_OFFSET] == offset) & (ghr[:, G_DELTA]
                                                                               == delta)
  matched = jnp.any(match_G)
  g = jnp.arange(G, dtype=jnp.int32)
  first_match = g == jnp.argmax(match_G)
  victim = g == jnp.argmin(ghr[:, G_CONF])
  col = jnp.arange(4, dtype=jnp.int32)
  entry = jnp.stack([sig, conf, offset, delta])
  upd = jnp.where((do & matched & first_match)[:, None] & (col == G_CONF)[None, :], conf, ghr)
  return jnp.where((do & ~matched & victim)[:, None], entry[None, :], upd)


def _issue(cfg: SPPConfig, pstate: SPPState, cache_state, access: Access, now, budget,
           pp: SPPParams):
  del cache_state, now
  K, W = cfg.num_candidates, cfg.pt_ways
  do = jnp.asarray(access.load, jnp.bool_)
  b = jnp.asarray(access.block, jnp.int32)
  page = b >> 6
  o = b & (PAGE_BLOCKS - 1)
  sc = pstate.scalars
  clock = sc[SC_CLOCK] + do.astype(jnp.int32)
  useful = sc[SC_USEFUL] + (do & jnp.asarray(access.pf_hit, jnp.bool_)).astype(jnp.int32)
  use_ghr = jnp.asarray(pp.use_ghr, jnp.bool_)

  # --- Signature table.
  st = pstate.st
  hit_E = (st[:, ST_STAMP] >= 0) & (st[:, ST_PAGE] == page)
  hit = jnp.any(hit_E)
  way = jnp.where(hit, jnp.argmax(hit_E), jnp.argmin(st[:, ST_STAMP])).astype(jnp.int32)
  e = jax.lax.dynamic_index_in_dim(st, way, axis=0, keepdims=False)
  delta = o - e[ST_OFFSET]
  moved = hit & (delta != 0)
  ghr = pstate.ghr
  g_ok = use_ghr & (ghr[:, G_CONF] >= 0) & (ghr[:, G_OFFSET] == o)
  g_best = jnp.argmax(jnp.where(g_ok, ghr[:, G_CONF], -1))
  g_row = jax.lax.dynamic_index_in_dim(ghr, g_best, axis=0, keepdims=False)
  sig0 = jnp.where(jnp.any(g_ok), next_sig(g_row[G_SIG], g_row[G_DELTA]), 0)
  sig = jnp.where(hit, next_sig(e[ST_SIG], delta), sig0)
  write_st = do & (~hit | moved)
  st_new = jnp.stack([page, o, sig, clock])
  st = jnp.where((write_st & (jnp.arange(cfg.st_entries, dtype=jnp.int32) == way))[:, None],
                 st_new[None, :], st)
  trigger = do & (moved | (~hit & (sig0 != 0)))

  # --- Pattern table: PT[s] learns the delta.
  learn = do & moved & (e[ST_SIG] != 0)
  ps = e[ST_SIG] & (cfg.pt_sets - 1)
  prow = jax.lax.dynamic_index_in_dim(pstate.pt, ps, axis=0, keepdims=False)
  ds, cs, csig = prow[:W], prow[W:2 * W], prow[2 * W]
  match_W = (cs > 0) & (ds == delta)
  w = jnp.arange(W, dtype=jnp.int32)
  tgt = jnp.where(jnp.any(match_W), jnp.argmax(match_W), jnp.argmin(cs)).astype(jnp.int32)
  sel = w == tgt
  ds2 = jnp.where(sel, delta, ds)
  cs2 = jnp.where(sel, jnp.where(jnp.any(match_W), cs + 1, 1), cs)
  csig2 = csig + 1
  over = csig2 > pp.c_max
  cs2 = jnp.where(over, cs2 >> 1, cs2)
  csig2 = jnp.where(over, csig2 >> 1, csig2)
  prow2 = jnp.where(learn, jnp.concatenate([ds2, cs2, csig2[None]]), prow)
  pt = jax.lax.dynamic_update_index_in_dim(pstate.pt, prow2, ps, axis=0)

  # --- Lookahead.
  issued0 = sc[SC_ISSUED]
  alpha = jnp.where(issued0 > 0, (100 * useful) // jnp.maximum(issued0, 1), 0)
  degree = jnp.asarray(pp.degree, jnp.int32)
  thr = jnp.asarray(pp.pf_threshold, jnp.int32)
  k_K = jnp.arange(K, dtype=jnp.int32)

  def cond(c):
    return c[-1]

  def body(c):
    depth, s, base, path, count, blk_K, lvl_K, ghr, _ = c
    row = jax.lax.dynamic_index_in_dim(pt, s & (cfg.pt_sets - 1), axis=0, keepdims=False)
    d_W, c_W, c_sig = row[:W], row[W:2 * W], row[2 * W]
    den = jnp.maximum(c_sig, 1)
    conf_W = jnp.where(depth == 0, (100 * c_W) // den, (((alpha * c_W) // den) * path) // 100)
    pass_W = (c_W > 0) & (c_sig > 0) & (conf_W >= thr)
    x_W = base + d_W
    inside_W = (x_W >= 0) & (x_W < PAGE_BLOCKS)
    emit_W = pass_W & inside_W
    pos_W = count + jnp.cumsum(emit_W.astype(jnp.int32)) - 1
    put_WK = (emit_W & (pos_W < degree))[:, None] & (pos_W[:, None] == k_K[None, :])
    lvl_W = jnp.where(conf_W >= pp.fill_threshold, 0, jnp.asarray(pp.low_fill_level, jnp.int32))
    blk_K = jnp.where(jnp.any(put_WK, axis=0),
                      jnp.sum(jnp.where(put_WK, (page * PAGE_BLOCKS + x_W)[:, None], 0), axis=0),
                      blk_K)
    lvl_K = jnp.where(jnp.any(put_WK, axis=0),
                      jnp.sum(jnp.where(put_WK, lvl_W[:, None], 0), axis=0), lvl_K)
    count = jnp.minimum(count + jnp.sum(emit_W.astype(jnp.int32)), degree)
    cross_W = pass_W & ~inside_W & use_ghr
    for i in range(W):
      ghr = _ghr_record(ghr, cross_W[i], s, conf_W[i], x_W[i] & (PAGE_BLOCKS - 1), d_W[i])
    score_W = jnp.where(pass_W, conf_W, -1)
    best = jnp.argmax(score_W)
    best_d = jnp.take(d_W, best)
    go = jnp.any(pass_W) & jnp.take(inside_W, best) & (count < degree)
    return (depth + 1, next_sig(s, best_d), base + best_d, jnp.take(conf_W, best), count,
            blk_K, lvl_K, ghr, go)

  init = (jnp.int32(0), sig, o, jnp.int32(100), jnp.int32(0), jnp.zeros((K,), jnp.int32),
          jnp.zeros((K,), jnp.int32), ghr, trigger & (degree > 0))
  _, _, _, _, count, blk_K, lvl_K, ghr, _ = jax.lax.while_loop(cond, body, init)

  valid_K = k_K < count
  issued = issued0 + jnp.minimum(count, jnp.asarray(budget, jnp.int32))
  halve = issued >= pp.acc_max
  scalars = jnp.stack([clock, jnp.where(halve, useful >> 1, useful),
                       jnp.where(halve, issued >> 1, issued)])
  return SPPState(st, pt, ghr, scalars), Candidates(blk_K, lvl_K, valid_K)


@functools.lru_cache(maxsize=None)
def spp(num_candidates: int = 8, *, st_entries: int = 256, pt_sets: int = 512, pt_ways: int = 4,
        ghr_entries: int = 8) -> Prefetcher:
  """SPP (module docstring) with static table sizes, named ``"spp"``.

  Args:
    num_candidates: K, the most candidates per access (the ``degree`` param
      may lower it per run).
    st_entries: signature table entries (fully associative, 256).
    pt_sets (a power of two), pt_ways: pattern table (512 x 4).
    ghr_entries: global history register (8).

  Raises:
    TypeError, ValueError: a non-int, non-positive or non-power-of-two size.
  """
  pt_sets = _check_int("pt_sets", pt_sets, 1, SIG_MASK + 1)
  if pt_sets & (pt_sets - 1):
    raise ValueError(f"pt_sets: expected a power of two (the set is the low signature bits),"
                     f" given {pt_sets}")
  st_entries = _check_int("st_entries", st_entries, 1)
  if st_entries & (st_entries - 1):
    raise ValueError(f"st_entries: expected a power of two, given {st_entries}")
  cfg = SPPConfig(st_entries, pt_sets, _check_int("pt_ways", pt_ways, 1, 16),
                  _check_int("ghr_entries", ghr_entries, 1),
                  _check_int("num_candidates", num_candidates, 1, 64))
  return Prefetcher(name="spp", num_candidates=cfg.num_candidates,
                    make_params=functools.partial(_make_params, cfg.num_candidates),
                    init=functools.partial(_init, cfg), train=_train,
                    issue=functools.partial(_issue, cfg), self_masking=True)


def storage_bits(*, st_entries: int = 256, pt_sets: int = 512, pt_ways: int = 4,
                 ghr_entries: int = 8) -> dict[str, int]:
  """Bits of state per table and ``total``, with spp_dev's field widths:

  ST entry: 16-bit partial page tag, 6-bit last offset, 12-bit signature,
  log2(entries) LRU bits; PT set: per way a 7-bit delta and a 4-bit c_delta,
  plus a 4-bit c_sig; GHR entry: 12-bit signature, 7-bit confidence, 6-bit
  offset, 7-bit delta, valid bit; two 10-bit global accuracy counters. (The
  1024-entry prefetch filter of spp_dev is not modelled or counted.)
  """
  for name, v in (("st_entries", st_entries), ("pt_sets", pt_sets), ("pt_ways", pt_ways),
                  ("ghr_entries", ghr_entries)):
    _check_int(name, v, 1)
  st = st_entries * (16 + 6 + 12 + max((st_entries - 1).bit_length(), 0))
  pt = pt_sets * (pt_ways * (7 + 4) + 4)
  ghr = ghr_entries * (12 + 7 + 6 + 7 + 1)
  out = {"st": st, "pt": pt, "ghr": ghr, "accuracy": 20}
  out["total"] = sum(out.values())
  return out
