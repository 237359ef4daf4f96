"""Hardware data prefetchers for the cache simulator (`jaxsys.sims.cache`).

Each prefetcher is a `jaxsys.sims.cache.protocol.Prefetcher` (pure
``make_params`` / ``init`` / ``train`` / ``issue`` functions over its own state,
self-masking tables), with a plain-Python reference that the tests hold it to,
event for event, and a ``storage_bits`` calculator:

* `gaze` (Gaze, HPCA'25; ``mode="artifact"`` or ``"fixed"``), reference
  `gaze_reference.GazeReference`;
* `ip_stride`, `sms`, `bingo` (reference `baselines_a_reference`);
* `pmp`, `berti` (``berti_simplified``), `spp` (reference `baselines_b_reference`);
* `ipcp` (IPCP-lite, the L1 IPCP of DPC-3; reference `ipcp_reference.IPCP`);
* `dspatch` (DSPatch; reference `dspatch_reference.DSPatch`);
* ``none`` and ``next_line`` live in `jaxsys.sims.cache.protocol`.

`get(name, **factory_kwargs)` builds one by name; `NAMES` lists them.
`placement.at_l2(pf)` places any of them at the L2 instead of the L1D.

>>> from jaxsys.sims import prefetch
>>> prefetch.get("gaze").name == prefetch.get("gaze", mode="artifact").name
True
"""

from __future__ import annotations

import importlib
from typing import Any

from jaxsys.sims.cache import protocol

# name -> (module, factory); modules are imported on first use.
_FACTORIES = {
    "gaze": ("gaze", "gaze"),
    "ip_stride": ("ip_stride", "ip_stride"),
    "sms": ("sms", "sms"),
    "bingo": ("bingo", "bingo"),
    "pmp": ("pmp", "pmp"),
    "berti_simplified": ("berti", "berti"),
    "spp": ("spp", "spp"),
    "ipcp": ("ipcp", "ipcp"),
    "dspatch": ("dspatch", "dspatch"),
}
NAMES = tuple(sorted(set(protocol.PREFETCHERS) | set(_FACTORIES)))


def get(name: str, **kwargs: Any) -> protocol.Prefetcher:
  """A prefetcher by name; `kwargs` go to its (cached) factory.

  Raises:
    ValueError: an unknown name (the message lists the valid ones).
  """
  if name in protocol.PREFETCHERS:
    return protocol.get(name, **kwargs)
  if name not in _FACTORIES:
    raise ValueError(f"prefetcher: expected one of {list(NAMES)}, given {name!r}")
  module, factory = _FACTORIES[name]
  return getattr(importlib.import_module(f"{__name__}.{module}"), factory)(**kwargs)


def __getattr__(name: str) -> Any:
  """Submodules (`jaxsys.sims.prefetch.gaze`, ...) on attribute access."""
  if name in {m for m, _ in _FACTORIES.values()} | {
      "gaze_reference", "baselines_a_reference", "baselines_b_reference", "ipcp_reference",
      "dspatch_reference", "placement"}:
    return importlib.import_module(f"{__name__}.{name}")
  raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
