"""Package discovery for the three source roots (metadata lives in pyproject.toml).

``kernels/`` and ``sims/`` are top-level folders in the repository but install as
``jaxsys.kernels`` and ``jaxsys.sims`` (PyPI already has packages named ``kernels``
and ``sims``), so their subpackages are found here and renamed under ``jaxsys``.
"""

from setuptools import find_packages, setup

_ROOTS = {"jaxsys": "jaxsys", "jaxsys.kernels": "kernels", "jaxsys.sims": "sims"}

packages = []
for name, folder in _ROOTS.items():
  packages.append(name)
  packages += [f"{name}.{sub}" for sub in find_packages(folder)]

# The C kernels that sims/traces compiles and traces under valgrind ship with the package.
setup(packages=packages, package_dir=_ROOTS,
      package_data={"jaxsys.sims.traces": ["programs/*.c"]})
