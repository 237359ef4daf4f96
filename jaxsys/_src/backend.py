"""Backend queries and the implementation choice every kernel's ``api.py`` makes.

The rule (DESIGN.md, STYLE.md "dispatch that never lies"): naming one
implementation that cannot run raises and says why; naming none takes the first
that can run; naming a list takes the first that can run and warns about each one
skipped.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence

import jax


class ImplementationError(ValueError):
  """The requested kernel implementation cannot run here."""


def platform() -> str:
  """The default backend's platform: "cpu", "gpu" or "tpu"."""
  return jax.default_backend()


def has_gpu() -> bool:
  return platform() == "gpu"


def has_tpu() -> bool:
  return platform() == "tpu"


def select_implementation(
    kernel: str,
    requested: str | Sequence[str] | None,
    candidates: Mapping[str, Callable[[], str | None]],
) -> str:
  """Chooses an implementation of `kernel`.

  Args:
    kernel: the kernel's name, for messages.
    requested: None (first runnable candidate, in the mapping's order), one name
      (that one or an error), or a sequence of names (the first runnable one; a
      warning for each skipped).
    candidates: name -> a function returning None if that implementation can run
      here, or a sentence saying why it cannot.

  Returns:
    The chosen name.

  Raises:
    ImplementationError: the named implementation (or every listed one) cannot
      run, or a name is unknown.
  """
  if isinstance(requested, str):
    names: Sequence[str] = (requested,)
  elif requested is None:
    names = tuple(candidates)
  else:
    names = tuple(requested)
    if not names:
      raise ImplementationError(f"{kernel}: implementation list is empty")
  for name in names:
    if name not in candidates:
      raise ImplementationError(
          f"{kernel}: unknown implementation {name!r}; choose one of"
          f" {list(candidates)} or None for the best available"
      )
  reasons = []
  for name in names:
    reason = candidates[name]()
    if reason is None:
      if reasons and requested is not None:
        warnings.warn(
            f"{kernel}: using {name!r}; skipped " + "; ".join(reasons),
            stacklevel=2,
        )
      return name
    reasons.append(f"{name!r}: {reason}")
  raise ImplementationError(
      f"{kernel}: no requested implementation can run on {platform()}: "
      + "; ".join(reasons)
  )
