"""HOBBIT-style expert offloading simulator (arXiv 2411.01433; papers/moe.md 1.1, 2, 3).

* `cache`: the expert cache over (layer, expert) keys, replayed with `lax.scan`
  and swept with `jax.vmap` over `Params` (policy LRU / LFU / LHU / FLD / HOBBIT /
  Belady, capacities, weights); `reference`: the same cache in plain Python.
* `loading`: HOBBIT's token-level precision classes (high / low / skip).
* `transfer`: copy-engine timeline, device and model profiles, decode tokens/s
  and load share for no cache, LRU offloading and HOBBIT.
* `tuning`: grid search of HOBBIT's four cache weights on a calibration trace.
* `traces`: synthetic routing traces (skewed popularity, temporal locality).
"""

from . import cache
from . import loading
from . import reference
from . import traces
from . import transfer
from . import tuning
from .cache import CacheConfig
from .cache import CacheState
from .cache import Event
from .cache import Params
from .cache import POLICIES
from .cache import Result
from .cache import Trace
from .cache import init
from .cache import make_params
from .cache import make_trace
from .cache import miss_penalty
from .cache import param_grid
from .cache import simulate
from .cache import stack_params
from .cache import step
from .cache import summarize
from .cache import sweep
from .loading import precision_classes
from .reference import simulate_reference
from .traces import synthetic_trace
from .transfer import DEVICES
from .transfer import MODELS
from .transfer import compare_baselines
from .transfer import timeline
from .tuning import tune_weights
