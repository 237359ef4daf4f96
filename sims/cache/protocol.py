"""How a prefetcher plugs into the cache runner, and the first two prefetchers.

A prefetcher is a `Prefetcher`: a name, a static candidate count K and pure
functions over its own state ``pstate`` (a pytree) and params ``pparams`` (a
pytree of arrays, the part of `hierarchy.Params` a sweep varies):

* ``make_params(**kw) -> pparams``: checked params (numpy, outside jit);
* ``init(pparams) -> pstate``;
* ``train(pstate, access, hit_l1, now, pparams) -> pstate``: after the demand
  access (``access.level``, ``access.pf_hit``, ``access.late`` say what it did;
  ``hit_l1 = access.level == 0``);
* ``issue(pstate, cache_state, access, now, budget, pparams) -> (pstate,
  candidates)``: `Candidates` ``(block_K, fill_level_K, valid_K)``, K fixed.

**One step of the runner** (`runner.step`), for each trace access:

1. the demand access (`hierarchy.access`) at ``now = cycle_of(instr)``;
2. ``train`` then ``issue`` with ``budget = hierarchy.issue_budget(cache, now)``,
   the number of prefetches the cache will accept right now (0 on steps that are
   not L1D demand loads);
3. the runner offers the valid candidates to the cache in order while
   `hierarchy.can_issue` holds. Every prefetch accepted at cycle ``now`` sits in
   the L1D prefetch queue at ``now``, so exactly **the first ``budget`` valid
   candidates are accepted** and the rest are refused (`accepted_mask`). A
   prefetcher knows this when it builds its candidates, so it marks exactly
   those as issued (Gaze's prefetch buffer keeps the others and drains them on
   a later access to the region) and needs no second hook. An accepted
   candidate already present at its target level is dropped by the cache
   (``pf_redundant``) but still counts as issued, as a ChampSim prefetch queue
   would take it before its lookup.

**Which steps a prefetcher sees.** Gaze trains and drains on L1D demand loads
only (``papers/prefetch.md`` 1.1). Inside `lax.scan` both functions run on
every step; ``access.load`` (valid step and not a store) says whether the step
counts. On other steps the runner refuses every candidate (budget 0) and keeps
the old ``pstate``: by default it selects old vs new state leaf by leaf
(cheap for small states). A prefetcher with large tables sets
``self_masking=True`` and guarantees that ``train`` and ``issue`` return
``pstate`` unchanged when ``access.load`` is False (masking the rows it writes,
``papers/prefetch.md`` 3 "mask the row, never the table"); the runner then
skips the select.

Candidates with ``block < 0`` or a fill level outside 0..2 are ignored, like
invalid ones. Fill levels: 0 L1D (fills L1D, L2 and LLC on the way), 1 L2,
2 LLC.

**Writing a fast prefetcher** (XLA:CPU, measured with this hierarchy; see
`hierarchy`'s module docstring): every kernel in the step costs ~0.1-0.2 us, so
count kernels, not flops: update each table once per step (read a row with
`jax.lax.dynamic_index_in_dim`, write it back once with
`jax.lax.dynamic_update_index_in_dim`); a row read used in several places must
be materialised (``lax.div(row, opaque_one)``) or XLA copies the whole table
every step; prefer one variadic `jax.lax.reduce` over several argmin / sum
calls; keep scalars in one vector.

Prefetchers here: `NONE` (K = 0) and `next_line(max_degree)`: on an L1D demand
load (every load, or only L1D misses with ``on_miss_only``), blocks
``b + 1 .. b + degree`` into ``fill_level`` (ChampSim's next_line is every
access, degree 1, L1D: the default).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from . import hierarchy

INT32_MAX = int(np.iinfo(np.int32).max)


class Access(NamedTuple):
  """One trace access as a prefetcher sees it (all scalars)."""

  block: jax.Array  # [] int32 block number (byte address >> 6)
  pc_hash: jax.Array  # [] int32 hashed PC
  is_store: jax.Array  # [] bool
  instr: jax.Array  # [] int32 instructions executed before the access
  valid: jax.Array  # [] bool a real (not padded) trace step
  load: jax.Array  # [] bool valid and a load: the only steps that count for a prefetcher
  level: jax.Array  # [] int32 where the demand found the block: 0 L1D, 1 L2, 2 LLC, 3 DRAM
  pf_hit: jax.Array  # [] bool first demand use of a prefetched line (at `level`)
  late: jax.Array  # [] bool that prefetched line's data was still in flight


class Candidates(NamedTuple):
  """Up to K prefetch requests, offered to the cache in order."""

  block_K: jax.Array  # [K] int32 block numbers
  fill_level_K: jax.Array  # [K] int32 0 L1D, 1 L2, 2 LLC
  valid_K: jax.Array  # [K] bool


class Prefetcher(NamedTuple):
  """A prefetcher: static name and K, pure functions (see the module docstring).

  Hashable (a `jax.jit` static argument): build each one once (the factories
  here are cached) so that runs share their compiled code.
  """

  name: str
  num_candidates: int
  make_params: Callable[..., Any]
  init: Callable[[Any], Any]
  train: Callable[..., Any]
  issue: Callable[..., Any]
  self_masking: bool = False


def accepted_mask(valid_K: jax.Array, budget: jax.Array) -> jax.Array:
  """[K] bool: the valid candidates the cache accepts, the first `budget` of them."""
  valid_K = jnp.asarray(valid_K, jnp.bool_)
  rank_K = jnp.cumsum(valid_K.astype(jnp.int32))
  return valid_K & (rank_K <= jnp.asarray(budget, jnp.int32))


def no_candidates(num: int = 0) -> Candidates:
  """K = `num` invalid candidates."""
  return Candidates(jnp.zeros((num,), jnp.int32), jnp.zeros((num,), jnp.int32),
                    jnp.zeros((num,), jnp.bool_))


# ----------------------------------------------------------------------------- none


def _none_make_params() -> tuple:
  return ()


def _none_init(pparams: Any) -> tuple:
  del pparams
  return ()


def _none_train(pstate, access, hit_l1, now, pparams):
  del access, hit_l1, now, pparams
  return pstate


def _none_issue(pstate, cache_state, access, now, budget, pparams):
  del cache_state, access, now, budget, pparams
  return pstate, no_candidates(0)


NONE = Prefetcher(name="none", num_candidates=0, make_params=_none_make_params, init=_none_init,
                  train=_none_train, issue=_none_issue, self_masking=True)


# ----------------------------------------------------------------------------- next line


class NextLineParams(NamedTuple):
  degree: Any  # [] int32 blocks ahead, 1..max_degree
  fill_level: Any  # [] int32 0 L1D, 1 L2, 2 LLC
  on_miss_only: Any  # [] bool trigger only on L1D demand load misses


class NextLineState(NamedTuple):
  loads: jax.Array  # [] int32 L1D demand loads seen
  issued: jax.Array  # [] int32 candidates the cache accepted (from the budget)


def _next_line_make_params(max_degree: int, degree: int = 1, fill_level: str | int = "l1d",
                           on_miss_only: bool = False) -> NextLineParams:
  if isinstance(degree, bool) or not isinstance(degree, (int, np.integer)):
    raise TypeError(f"degree: expected an int, given {degree!r}")
  if not 1 <= degree <= max_degree:
    raise ValueError(
        f"degree: expected 1..{max_degree} (the prefetcher's max_degree), given {degree}")
  level = hierarchy.level_index(fill_level, name="fill_level")
  if not isinstance(on_miss_only, (bool, np.bool_)):
    raise TypeError(f"on_miss_only: expected a bool, given {on_miss_only!r}")
  return NextLineParams(np.int32(degree), np.int32(level), np.bool_(on_miss_only))


def _next_line_init(pparams: NextLineParams) -> NextLineState:
  del pparams
  return NextLineState(jnp.zeros((), jnp.int32), jnp.zeros((), jnp.int32))


def _next_line_train(pstate: NextLineState, access: Access, hit_l1, now, pparams):
  del hit_l1, now, pparams
  return pstate._replace(loads=pstate.loads + access.load.astype(jnp.int32))


def _next_line_issue(max_degree: int, pstate: NextLineState, cache_state, access: Access, now,
                     budget, pparams: NextLineParams):
  del cache_state, now
  trigger = access.load & (~jnp.asarray(pparams.on_miss_only, jnp.bool_) | (access.level > 0))
  k_K = jnp.arange(max_degree, dtype=jnp.int32)
  block = jnp.asarray(access.block, jnp.int32)
  valid_K = (trigger & (k_K < jnp.asarray(pparams.degree, jnp.int32))
             & (block <= INT32_MAX - 1 - k_K))
  cand = Candidates(block + 1 + k_K,
                    jnp.broadcast_to(jnp.asarray(pparams.fill_level, jnp.int32), (max_degree,)),
                    valid_K)
  issued = jnp.sum(accepted_mask(valid_K, budget).astype(jnp.int32))
  return pstate._replace(issued=pstate.issued + issued), cand


@functools.lru_cache(maxsize=None)
def next_line(max_degree: int = 1) -> Prefetcher:
  """The next-line prefetcher with up to `max_degree` candidates per access (static K).

  Params (`Prefetcher.make_params`): ``degree`` (1..max_degree, default 1),
  ``fill_level`` (``"l1d"`` default, ``"l2"``, ``"llc"`` or 0..2),
  ``on_miss_only`` (default False: every L1D demand load triggers).

  >>> pf = next_line(2)
  >>> pf.make_params(degree=2, fill_level="l2")
  NextLineParams(degree=np.int32(2), fill_level=np.int32(1), on_miss_only=np.False_)
  """
  if isinstance(max_degree, bool) or not isinstance(max_degree, (int, np.integer)):
    raise TypeError(f"max_degree: expected an int, given {max_degree!r}")
  if max_degree < 1:
    raise ValueError(f"max_degree: expected an int >= 1, given {max_degree}")
  max_degree = int(max_degree)
  return Prefetcher(
      name=f"next_line{max_degree}",
      num_candidates=max_degree,
      make_params=functools.partial(_next_line_make_params, max_degree),
      init=_next_line_init,
      train=_next_line_train,
      issue=functools.partial(_next_line_issue, max_degree),
      self_masking=True,
  )


PREFETCHERS = {"none": lambda: NONE, "next_line": next_line}


def get(name: str, **kwargs: Any) -> Prefetcher:
  """A prefetcher by name (``"none"``, ``"next_line"``); kwargs go to its factory."""
  if name not in PREFETCHERS:
    raise ValueError(f"prefetcher: expected one of {sorted(PREFETCHERS)}, given {name!r}")
  return PREFETCHERS[name](**kwargs)
