"""Pallas kernels, installed as ``jaxsys.kernels``.

Each kernel has a folder with ``api.py`` (implementation choice), ``reference.py``
(plain JAX), one file per backend and ``config.py`` (block sizes).
"""

if __name__ != "jaxsys.kernels":
  raise ImportError(
      "This folder installs as 'jaxsys.kernels'; it was imported as"
      f" {__name__!r}. Use `import jaxsys.kernels` (install the package with"
      " `make setup` or `pip install -e .`)."
  )
