"""Memory traces for the prefetcher simulators (Gaze, arXiv 2412.05211; papers/prefetch.md 3).

* `format`: the `Trace` (addr, pc, is_store, instr + name, source,
  n_instructions), its ``.npz`` file (`save` / `load`), and int32 arrays for
  JAX (`to_sim_arrays`, `pad_traces` with a ``valid`` mask).
* `lackey`: real traces: `capture` of the C kernels in ``programs/``
  (`PROGRAMS`) under ``valgrind --tool=lackey``, cached on disk; `run_lackey`
  for any command; `convert_lackey`, a vectorised log converter; `text_ranges`
  (the PC filter).
* `synthetic`: seeded numpy generators of Gaze's pattern classes
  (`GENERATORS`, `generate`), including the array-of-structs walks whose equal
  footprints come in different first-two-access orders.
* `champsim`: ChampSim ``input_instr`` traces (``.xz``): `read_champsim`,
  `write_champsim`.
"""

from . import champsim
from . import format
from . import lackey
from . import synthetic
from .champsim import RECORD_DTYPE
from .champsim import read_champsim
from .champsim import records_to_trace
from .champsim import write_champsim
from .format import FORMAT_VERSION
from .format import SimArrays
from .format import Trace
from .format import concat_traces
from .format import load
from .format import make_trace
from .format import pad_traces
from .format import remap_chunks
from .format import save
from .format import to_sim_arrays
from .lackey import PROGRAMS
from .lackey import LackeyFormatError
from .lackey import ToolMissingError
from .lackey import build
from .lackey import cache_dir
from .lackey import capture
from .lackey import convert_lackey
from .lackey import run_lackey
from .lackey import text_ranges
from .synthetic import GENERATORS
from .synthetic import generate
