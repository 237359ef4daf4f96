"""KV-cache compression policies (ClusterKV, Inf-MLLM and peers) and their metrics.

Every policy is a `KVPolicy` (see `jaxsys.kv.base` for the protocol): pure
init/select/update functions whose selection feeds
`jaxsys.kernels.sparse_decode_attention`. `jaxsys.kv.decode.policy_attention`
plugs one into a model's decode loop, `jaxsys.kv.nnx_attention.PolicyAttention`
into a Flax NNX module. Each policy lives in its own module, named after it, with
a constructor of the same name: ``jaxsys.kv.clusterkv.clusterkv(256)``.
"""

from jaxsys.kv import clusterkv
from jaxsys.kv import decode
from jaxsys.kv import h2o
from jaxsys.kv import inf_mllm
from jaxsys.kv import metrics
from jaxsys.kv import offload
from jaxsys.kv import quest
from jaxsys.kv import snapkv
from jaxsys.kv import stream
from jaxsys.kv import streaming_llm
from jaxsys.kv import tasks
from jaxsys.kv.base import KVPolicy
from jaxsys.kv.base import full
from jaxsys.kv.base import oracle_topk
from jaxsys.kv.decode import policy_attention
from jaxsys.kv.metrics import Fidelity
from jaxsys.kv.metrics import fidelity
from jaxsys.kv.metrics import replay
