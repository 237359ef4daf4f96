"""KV-cache compression policies (ClusterKV, Inf-MLLM and peers) and their metrics.

See `jaxsys.kv.base` for the protocol every policy follows.
"""

from jaxsys.kv.base import KVPolicy
from jaxsys.kv.base import full
from jaxsys.kv.base import oracle_topk
from jaxsys.kv.metrics import Fidelity
from jaxsys.kv.metrics import fidelity
from jaxsys.kv.metrics import replay
