"""Where a prefetcher sits: `at_l2` moves any L1D prefetcher to the L2.

Every prefetcher in `jaxsys.sims.prefetch` is written for the L1D: it sees the
L1D's demand loads and fills the L1D or below. Re-evaluations of Gaze place
the prefetchers at the L2 instead (``papers/prefetch.md`` 2: Proba's artifact
puts SMS, Bingo, DSPatch, PMP and Gaze at the L2, where Gaze's gain over PMP
shrinks), so the benchmark reports both placements. `at_l2(pf)` is the same
prefetcher, same tables and params, seeing what an L2 prefetcher sees:

* **Its stream is the L2's demand loads**: the L1D demand loads that missed the
  L1D (``access.level >= 1``). L1D hits never reach it (``access.load`` is
  False for them, so it neither trains nor issues).
* **Levels are its own**: ``access.level`` is 0 for an L2 hit, 2 for the LLC,
  3 for DRAM (the hierarchy's numbers, with the L2 hit renamed 0: "a hit in
  my cache"), and ``hit_l1`` (the train argument) is "hit in the L2".
  ``pf_hit`` / ``late`` are the demand's, as the L2 saw it.
* **It fills the L2 or the LLC**: a candidate's fill level
  ``max(fill_level, 1)``; an L1D fill (0) becomes an L2 fill (1).
* **The issue budget** is the runner's (the L1D prefetch queue and MSHRs,
  `hierarchy.issue_budget`) on its steps and 0 on the others.

Left out: ChampSim's L2 prefetchers also see the L1D's prefetch requests and
the L1D's writebacks as accesses; here the L2 stream is demand loads only
(the L1D prefetcher of an `at_l2` run is none), and an L2 prefetch takes an
L1D prefetch-queue slot like every prefetch in `hierarchy`.

>>> from jaxsys.sims.cache import protocol
>>> pf = at_l2(protocol.next_line(2))
>>> pf.name, pf.num_candidates
('next_line2@l2', 2)
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from jaxsys.sims.cache import hierarchy
from jaxsys.sims.cache import protocol
from jaxsys.sims.cache.protocol import Access, Prefetcher


def l2_view(access: Access) -> Access:
  """`access` as the L2 sees it (module docstring): loads that missed the L1D,
  the L2 hit as level 0."""
  level = jnp.asarray(access.level, jnp.int32)
  return access._replace(load=jnp.asarray(access.load, jnp.bool_) & (level >= hierarchy.L2),
                         level=jnp.where(level == hierarchy.L2, 0, level).astype(jnp.int32))


@functools.lru_cache(maxsize=None)
def at_l2(prefetcher: Prefetcher) -> Prefetcher:
  """`prefetcher` placed at the L2 (module docstring); same params and state.

  Cached, so that runs of one placed prefetcher share their compiled code.

  Raises:
    TypeError: `prefetcher` is not a `Prefetcher`.
  """
  if not isinstance(prefetcher, Prefetcher):
    raise TypeError(f"prefetcher: expected a jaxsys.sims.cache.protocol.Prefetcher, given "
                    f"{type(prefetcher).__name__}")
  inner = prefetcher

  def train(pstate, access, hit_l1, now, pparams):
    del hit_l1
    seen = l2_view(access)
    new = inner.train(pstate, seen, seen.level == 0, now, pparams)
    return new if inner.self_masking else _keep(seen.load, new, pstate)

  def issue(pstate, cache_state, access, now, budget, pparams):
    seen = l2_view(access)
    budget = jnp.where(seen.load, jnp.asarray(budget, jnp.int32), 0).astype(jnp.int32)
    new, cand = inner.issue(pstate, cache_state, seen, now, budget, pparams)
    if not inner.self_masking:
      new = _keep(seen.load, new, pstate)
    if isinstance(cand, protocol.Candidates):  # anything else: the runner reports it
      cand = protocol.Candidates(
          cand.block_K,
          jnp.maximum(jnp.asarray(cand.fill_level_K, jnp.int32), hierarchy.L2),
          jnp.asarray(cand.valid_K, jnp.bool_) & seen.load)
    return new, cand

  return Prefetcher(name=f"{inner.name}@l2", num_candidates=inner.num_candidates,
                    make_params=inner.make_params, init=inner.init, train=train, issue=issue,
                    self_masking=True)


def _keep(take, new, old):
  """`new` where `take`, else `old`, leaf by leaf."""
  return jax.tree.map(lambda n, o: jnp.where(take, n, o), new, old)
