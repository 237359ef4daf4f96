"""Simulators (pure step functions, vmapped sweeps), installed as ``jaxsys.sims``."""

if __name__ != "jaxsys.sims":
  raise ImportError(
      "This folder installs as 'jaxsys.sims'; it was imported as"
      f" {__name__!r}. Use `import jaxsys.sims` (install the package with"
      " `make setup` or `pip install -e .`)."
  )
