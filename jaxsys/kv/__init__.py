"""KV-cache compression policies (ClusterKV, Inf-MLLM and peers) and their metrics.

Every policy is a `KVPolicy` (see `jaxsys.kv.base` for the protocol): pure
init/select/update functions whose selection feeds
`jaxsys.kernels.sparse_decode_attention`. `jaxsys.kv.decode.policy_attention`
plugs one into a model's decode loop, `jaxsys.kv.nnx_attention.PolicyAttention`
into a Flax NNX module.
"""

from jaxsys.kv.base import KVPolicy
from jaxsys.kv.base import full
from jaxsys.kv.base import oracle_topk
from jaxsys.kv.clusterkv import clusterkv
from jaxsys.kv.decode import policy_attention
from jaxsys.kv.h2o import h2o
from jaxsys.kv.inf_mllm import inf_mllm
from jaxsys.kv.metrics import Fidelity
from jaxsys.kv.metrics import fidelity
from jaxsys.kv.metrics import replay
from jaxsys.kv.quest import quest
from jaxsys.kv.snapkv import snapkv
from jaxsys.kv.streaming_llm import streaming_llm
