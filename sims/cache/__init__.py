"""Cache hierarchy for the prefetcher simulators (Gaze, arXiv 2412.05211; papers/prefetch.md).

* `hierarchy`: L1D / L2 / LLC as set-associative int32 tables (LRU or SRRIP),
  non-inclusive fills, write-back, late-prefetch timing, the L1D MSHR / PQ issue
  budget, counters and metrics.
* `protocol`: the prefetcher interface (init / train / issue with a budget) and
  the ``none`` and ``next_line`` prefetchers.
* `runner`: one `lax.scan` over a trace, jitted, vmappable over traces and params.
* `reference`: the same model in plain Python, access for access.
"""

from . import hierarchy
from . import protocol
from . import reference
from . import runner
from .hierarchy import CacheConfig
from .hierarchy import CacheState
from .hierarchy import LevelConfig
from .hierarchy import Params
from .hierarchy import can_issue
from .hierarchy import counters
from .hierarchy import issue_budget
from .hierarchy import make_params
from .hierarchy import summarize
from .protocol import NONE
from .protocol import Access
from .protocol import Candidates
from .protocol import Prefetcher
from .protocol import next_line
from .runner import SimState
from .runner import TraceArrays
from .runner import decode
from .runner import make_trace
from .runner import run
from .runner import run_batch
