"""jaxsys: ML-systems techniques from ten recent papers, as jitted JAX functions.

Subpackages are imported lazily, so ``import jaxsys`` stays light (no networkx,
matplotlib or model loaders until a subpackage that needs them is touched)::

    >>> import jaxsys
    >>> jaxsys.__version__
    '0.1.0'

``jaxsys.kernels`` (Pallas kernels) and ``jaxsys.sims`` (simulators) live in the
repository's top-level ``kernels/`` and ``sims/`` folders and install under this
package.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# Public subpackages, imported on first attribute access (PEP 562).
_SUBPACKAGES = frozenset(
    {"kv", "moe", "secure", "diffconv", "nerf", "models", "kernels", "sims"}
)


def __getattr__(name: str) -> Any:
  if name in _SUBPACKAGES:
    try:
      module = importlib.import_module(f"{__name__}.{name}")
    except ModuleNotFoundError as e:
      if e.name == f"{__name__}.{name}":
        raise AttributeError(
            f"jaxsys.{name} is not implemented yet (see the papers table in"
            " README.md for what has landed)"
        ) from e
      raise
    globals()[name] = module
    return module
  raise AttributeError(f"module 'jaxsys' has no attribute {name!r}")


def __dir__() -> list[str]:
  return sorted(set(globals()) | _SUBPACKAGES)
