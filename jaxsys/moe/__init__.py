"""Mixture-of-experts routing, auxiliary losses and dispatch.

From the MoE inference survey (arXiv 2412.14219) and HOBBIT (arXiv 2411.01433):

* `jaxsys.moe.routing`: top-k (softmax / sigmoid), DeepSeek group-limited with
  the auxiliary-loss-free bias, expert choice, jitter, top-p, AdapMoE threshold
  gating, HOBBIT's high / low / skip score classes;
* `jaxsys.moe.losses`: Switch load balance (MaxText normalisation), router z-loss;
* `jaxsys.moe.dispatch`: sort-based permute / unpermute, expert capacity, token
  dropping with batch-prioritised routing, and the expert MLP with a backend
  switch ("ragged_dot", "capacity_einsum", "pallas");
* `jaxsys.moe.quant`: packed int8/int4/int2 experts, HOBBIT's mixed-precision forward;
* `jaxsys.moe.layer`: the NNX `MoE` module; `jaxsys.moe.predictor`: HOBBIT's
  cross-layer expert predictor (one stacked matmul over the next p routers).
"""

from jaxsys.moe import dispatch
from jaxsys.moe import layer
from jaxsys.moe import losses
from jaxsys.moe import predictor
from jaxsys.moe import quant
from jaxsys.moe import routing
from jaxsys.moe.dispatch import BACKENDS
from jaxsys.moe.dispatch import capacity
from jaxsys.moe.dispatch import expert_mlp
from jaxsys.moe.dispatch import keep_within_capacity
from jaxsys.moe.dispatch import permute
from jaxsys.moe.dispatch import token_positions
from jaxsys.moe.dispatch import unpermute
from jaxsys.moe.layer import MoE
from jaxsys.moe.losses import load_balance_loss
from jaxsys.moe.losses import router_z_loss
from jaxsys.moe.predictor import predict_experts
from jaxsys.moe.predictor import prediction_accuracy
from jaxsys.moe.predictor import trace_accuracy
from jaxsys.moe.routing import HIGH
from jaxsys.moe.routing import LOW
from jaxsys.moe.routing import SKIP
from jaxsys.moe.routing import ExpertChoice
from jaxsys.moe.routing import Routing
from jaxsys.moe.routing import ScoreClasses
from jaxsys.moe.routing import hobbit_score_classes
from jaxsys.moe.routing import jitter
from jaxsys.moe.routing import route_adapmoe
from jaxsys.moe.routing import route_expert_choice
from jaxsys.moe.routing import route_group_limited
from jaxsys.moe.routing import route_top_p
from jaxsys.moe.routing import route_topk
from jaxsys.moe.routing import update_expert_bias
