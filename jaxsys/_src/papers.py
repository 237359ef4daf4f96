"""The ten papers jaxsys reproduces: where each lives and which benchmark tests it.

The report (`report.py`) walks this table so that every paper gets a line, whether
its benchmark has landed, ran, or failed.
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Paper:
  key: str  # short name, used in benchmark JSONs (`papers`, `Claim.source`)
  arxiv: str
  title: str
  technique: str
  module: str  # where the technique lives in the repository
  benchmark: str  # benchmarks/<benchmark>.py


_ALL = (
    Paper(
        "ClusterKV", "2412.03213",
        "ClusterKV: Manipulating LLM KV Cache in Semantic Space for Recallable"
        " Compression",
        "recallable KV-cache compression by semantic clusters of keys",
        "jaxsys/kv/, kernels/sparse_decode_attention/", "kv_cache",
    ),
    Paper(
        "Inf-MLLM", "2409.09086",
        "Inf-MLLM: Efficient Streaming Inference of Multimodal Large Language"
        " Models on a Single GPU",
        "streaming KV cache of recent tokens and attention saddles, attention bias",
        "jaxsys/kv/", "kv_cache",
    ),
    Paper(
        "MoE-survey", "2412.14219",
        "A Survey on Inference Optimization Techniques for Mixture of Experts"
        " Models",
        "routing, load balancing, dispatch, expert compression",
        "jaxsys/moe/, kernels/grouped_matmul/", "moe",
    ),
    Paper(
        "HOBBIT", "2411.01433",
        "HOBBIT: A Mixed Precision Expert Offloading System for Fast MoE"
        " Inference",
        "mixed-precision expert offloading: dynamic loading, prefetch, caching",
        "jaxsys/moe/, sims/expert_offload/", "moe",
    ),
    Paper(
        "Nimbus", "2411.15707",
        "Nimbus: Secure and Efficient Two-Party Inference for Transformers",
        "2PC inference: distribution-aware polynomial GELU/exp, outer-product"
        " linear layers",
        "jaxsys/secure/", "secure",
    ),
    Paper(
        "SparseTem", "2410.20790",
        "SparseTem: Boosting the Efficiency of CNN-Based Video Encoders by"
        " Exploiting Temporal Continuity",
        "diff computation for CNN video encoders",
        "jaxsys/diffconv/, kernels/delta_conv/", "diffconv",
    ),
    Paper(
        "Potamoi", "2408.06608",
        "Potamoi: Accelerating Neural Rendering via a Unified Streaming"
        " Architecture",
        "NeRF sampling and sparse radiance warping (SpaRW)",
        "jaxsys/nerf/", "nerf",
    ),
    Paper(
        "Gaze", "2412.05211",
        "Gaze into the Pattern: Characterizing Spatial Patterns with Internal"
        " Temporal Correlations for Hardware Prefetching",
        "spatial prefetcher using footprint-internal temporal correlation",
        "sims/prefetch/, sims/cache/, sims/traces/", "prefetch",
    ),
    Paper(
        "vTensor", "2407.15309",
        "vTensor: Flexible Virtual Tensor Management for Efficient LLM Serving",
        "KV-cache memory on GPU virtual memory chunks, vs paged and static",
        "sims/kvalloc/", "kvalloc",
    ),
    Paper(
        "DGG", "2412.19083",
        "A Microservice Graph Generator with Production Characteristics",
        "microservice call-graph and dependency-graph generator from traces",
        "sims/msgraph/", "msgraph",
    ),
)

PAPERS: dict[str, Paper] = {p.key: p for p in _ALL}
