"""Transfer and latency model of offloaded-MoE decoding: copies, prefetch, tokens/s.

The cache simulator (`cache`) says which expert copies each layer must load;
this module turns that into time on one device (HOBBIT, arXiv 2411.01433,
Sec. 2 and 5; ``papers/moe.md`` 1.1 and 3):

* a load of ``b`` bytes takes ``b / load_bw`` on one copy engine, first in first
  out, and cannot be interrupted (``cudaMemcpy``): a wrong prefetch still in
  flight delays the on-demand loads queued behind it;
* batch-1 decoding is memory bound, so computing weights of ``b`` bytes takes
  ``b / compute_bw`` (a roofline, ``compute_bw`` about the GPU's memory
  bandwidth);
* per layer: the dense part (attention, router) runs, then the layer's misses are
  queued (on-demand loads), then the prefetch for the next layer is queued
  behind them; the expert GEMMs start when every copy the layer needs has
  landed; the next layer starts when they end.

``load_share`` is the share of layer time the GPU waits for copies (the paper
reports expert loading at 85.5% of a Mixtral layer's time on an RTX 4090 and
94.5% on a Jetson Orin, papers/moe.md 1.1).

Profiles cite where every number comes from: [V] verified in papers/moe.md
(which cites the HOBBIT paper), [I] inferred here (public spec sheets or model
configs not in the notes, or a modelling choice).

>>> from jaxsys.sims.expert_offload import transfer
>>> m = transfer.MODELS["mixtral-8x7b"]
>>> round(m.expert_bytes(16) / 1e6, 1)  # 3 * 4096 * 14336 * 2 bytes
352.3
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from . import cache as cache_lib
from .loading import T1_MIXTRAL, T2_MIXTRAL, precision_classes

GIB = 2**30

# ----------------------------------------------------------------------------- profiles


def quantized_bytes(num_params: int, bits: int) -> int:
  """Bytes of `num_params` weights stored at `bits` per weight.

  16: fp16, 2 bytes each. 8 / 4 / 2: symmetric group-32 quantisation with one
  fp16 scale per 32 weights, i.e. 8.5 / 4.5 / 2.5 bits per weight [I: the layout
  of llama.cpp's Q8_0 / Q4_0, which HOBBIT builds on; int2 simplified the same
  way; papers/moe.md 3(c) also uses group-32 symmetric quantisation].
  """
  if bits == 16:
    return 2 * num_params
  if bits in (8, 4, 2):
    groups = -(-num_params // 32)
    return num_params * bits // 8 + 2 * groups
  raise ValueError(f"bits: expected 16, 8, 4 or 2, given {bits!r}")


@dataclasses.dataclass(frozen=True)
class ModelProfile:
  """An MoE decoder's sizes (every layer is an MoE layer)."""

  name: str
  num_layers: int
  num_experts: int
  top_k: int
  hidden: int
  expert_ffn: int  # intermediate size of one expert (gate, up, down projections)
  num_heads: int
  num_kv_heads: int
  head_dim: int
  vocab: int
  sources: str = ""

  @property
  def expert_params(self) -> int:
    """Weights of one expert: gate, up and down, ``3 * hidden * ffn``."""
    return 3 * self.hidden * self.expert_ffn

  @property
  def dense_params_per_layer(self) -> int:
    """Attention (q, k, v, o), the router and two norms of one layer."""
    q_o = 2 * self.hidden * self.num_heads * self.head_dim
    k_v = 2 * self.hidden * self.num_kv_heads * self.head_dim
    return q_o + k_v + self.hidden * self.num_experts + 2 * self.hidden

  @property
  def total_params(self) -> int:
    """Every weight: experts, dense layers, input embedding and LM head (untied)."""
    return (self.num_layers * (self.num_experts * self.expert_params + self.dense_params_per_layer)
            + 2 * self.vocab * self.hidden)

  def expert_bytes(self, bits: int) -> int:
    return quantized_bytes(self.expert_params, bits)

  def dense_bytes_per_layer(self, bits: int) -> int:
    return quantized_bytes(self.dense_params_per_layer, bits)

  def resident_bytes(self, bits: int) -> int:
    """Non-expert weights kept on the GPU: every dense layer, embeddings, LM head."""
    return (self.num_layers * self.dense_bytes_per_layer(bits)
            + quantized_bytes(2 * self.vocab * self.hidden, bits))


MODELS: dict[str, ModelProfile] = {
    "mixtral-8x7b": ModelProfile(
        name="mixtral-8x7b", num_layers=32, num_experts=8, top_k=2, hidden=4096,
        expert_ffn=14336, num_heads=32, num_kv_heads=8, head_dim=128, vocab=32000,
        sources=("layers 32, experts 8, top-2, 45B params, 87 GB [V: papers/moe.md 3];"
                 " expert = 3*4096*14336 weights [V: papers/moe.md 3(d)];"
                 " attention 32 heads / 8 KV heads / dim 128, vocab 32000 [I: public"
                 " Mixtral-8x7B config]"),
    ),
    "phi-moe": ModelProfile(
        name="phi-moe", num_layers=32, num_experts=16, top_k=2, hidden=4096,
        expert_ffn=6400, num_heads=32, num_kv_heads=8, head_dim=128, vocab=32064,
        sources=("layers 32, experts 16, top-2, 42B params, 6.6B active, 78 GB [V:"
                 " papers/moe.md 3]; hidden 4096, expert ffn 6400, 32 heads / 8 KV heads,"
                 " vocab 32064 [I: public Phi-3.5-MoE config, consistent with 42B / 6.6B]"),
    ),
}


@dataclasses.dataclass(frozen=True)
class DeviceProfile:
  """A GPU, where its offloaded experts live, and its precision pair."""

  name: str
  load_bw: float  # bytes/s from expert storage into GPU memory
  compute_bw: float  # bytes/s of weights streamed by batch-1 decoding (roofline)
  memory_bytes: float  # GPU memory for weights (dense layers + expert caches)
  reserve_bytes: float  # of that, held back for KV cache, activations, runtime
  high_bits: int
  low_bits: int
  sources: str = ""

  def __post_init__(self):
    for name in ("load_bw", "compute_bw", "memory_bytes"):
      if not getattr(self, name) > 0:
        raise ValueError(f"DeviceProfile.{name}: expected > 0, given {getattr(self, name)!r}")
    for name in ("high_bits", "low_bits"):
      quantized_bytes(1, getattr(self, name))  # raises for unknown bits


_RTX4090_NOTE = (
    "24 GB [V: papers/moe.md 3], read as GiB [I]; compute_bw 1008 GB/s [I: RTX 4090"
    " spec memory bandwidth; consistent with papers/moe.md 1.1 'computing [a Mixtral"
    " layer] on a 4090 takes about 3 ms': 8 experts + attention = 2.9 GB / 1008 GB/s ="
    " 2.9 ms]; fp16 with int4 [V: papers/moe.md 1.1]; reserve 2 GiB [I]")
_NVME_NOTE = "Samsung 980 PRO NVMe: 7 GB/s rated, about 3 GB/s in practice [V: papers/moe.md 3]"

DEVICES: dict[str, DeviceProfile] = {
    "rtx4090_pcie4": DeviceProfile(
        name="rtx4090_pcie4", load_bw=32e9, compute_bw=1008e9, memory_bytes=24 * GIB,
        reserve_bytes=2 * GIB, high_bits=16, low_bits=4,
        sources=("experts in host RAM over PCIe 4.0 at 32 GB/s [V: papers/moe.md 1.1]; "
                 + _RTX4090_NOTE),
    ),
    "rtx4090_nvme": DeviceProfile(
        name="rtx4090_nvme", load_bw=3e9, compute_bw=1008e9, memory_bytes=24 * GIB,
        reserve_bytes=2 * GIB, high_bits=16, low_bits=4,
        sources="experts on NVMe: " + _NVME_NOTE + "; " + _RTX4090_NOTE,
    ),
    "jetson_orin_nvme": DeviceProfile(
        name="jetson_orin_nvme", load_bw=3e9, compute_bw=204.8e9, memory_bytes=32 * GIB,
        reserve_bytes=6 * GIB, high_bits=8, low_bits=2,
        sources=("Jetson AGX Orin, 32 GB unified memory [V: papers/moe.md 3]; int8 with"
                 " int2 [V: papers/moe.md 1.1]; experts on the NVMe SSD (the model does not"
                 " fit in 32 GB) [I]: " + _NVME_NOTE + "; compute_bw 204.8 GB/s [I: Jetson"
                 " AGX Orin LPDDR5 spec]; reserve 6 GiB for the OS and CPU side [I]"),
    ),
}


def get_model(name: str | ModelProfile) -> ModelProfile:
  if isinstance(name, ModelProfile):
    return name
  if name not in MODELS:
    raise ValueError(f"model: unknown name {name!r}; known: {', '.join(MODELS)}")
  return MODELS[name]


def get_device(name: str | DeviceProfile) -> DeviceProfile:
  if isinstance(name, DeviceProfile):
    return name
  if name not in DEVICES:
    raise ValueError(f"device: unknown name {name!r}; known: {', '.join(DEVICES)}")
  return DEVICES[name]


def cache_capacity(model: str | ModelProfile, device: str | DeviceProfile,
                   low_fraction: float = 0.0) -> tuple[int, int]:
  """Expert-cache entries that fit beside the resident (dense) weights.

  The free memory ``memory - reserve - resident`` is split: ``low_fraction`` of
  it holds low-precision copies, the rest high-precision copies (HOBBIT only
  says the high cache is the larger one [V]; the split is a choice [I]).

  Returns:
    ``(capacity_high, capacity_low)``, clamped to ``[1, L*E]`` and ``[0, L*E]``.
  """
  model, device = get_model(model), get_device(device)
  if not 0.0 <= low_fraction < 1.0:
    raise ValueError(f"low_fraction: expected in [0, 1), given {low_fraction}")
  free = device.memory_bytes - device.reserve_bytes - model.resident_bytes(device.high_bits)
  if free <= 0:
    raise ValueError(
        f"device {device.name}: {device.memory_bytes / GIB:.1f} GiB cannot hold the"
        f" resident weights of {model.name}"
        f" ({model.resident_bytes(device.high_bits) / GIB:.1f} GiB)"
        f" plus the {device.reserve_bytes / GIB:.1f} GiB reserve")
  keys = model.num_layers * model.num_experts
  high = int(free * (1.0 - low_fraction) // model.expert_bytes(device.high_bits))
  low = int(free * low_fraction // model.expert_bytes(device.low_bits))
  return min(max(high, 1), keys), min(low, keys)


# ----------------------------------------------------------------------------- timeline


class LayerWork(NamedTuple):
  """What each (token, layer) of a decode asks of the copy engine and the GPU."""

  demand_bytes_NL: Any  # [N, L] float32 on-demand loads, queued when the layer has routed
  prefetch_bytes_NL: Any  # [N, L] float32 loads queued next (behind them) for layer l + 1
  wait_prefetch_NL: Any  # [N, L] bool the layer uses copies prefetched at layer l - 1
  expert_s_NL: Any  # [N, L] float32 expert GEMM seconds


class Timeline(NamedTuple):
  layer_s_NL: jax.Array  # [N, L] float32 seconds from layer start to its end
  stall_s_NL: jax.Array  # [N, L] float32 seconds the GPU waits for copies
  total_s: jax.Array  # [] float32 decode time of the N tokens
  copy_busy_s: jax.Array  # [] float32 seconds the copy engine is busy


@jax.jit
def timeline(work: LayerWork, load_bw: jax.Array, dense_s: jax.Array) -> Timeline:
  """Plays `work` on one copy engine and one GPU, layer after layer.

  Per layer, with ``route = start + dense_s``:
  on-demand loads run from ``max(route, copy engine free)`` for
  ``demand / load_bw``; the experts start at ``ready = max(route, end of the
  demand loads, end of the previous layer's prefetch if used)`` and the layer
  ends at ``ready + expert_s``; the next layer's prefetch is queued at ``route``
  behind this layer's demand loads. Copies are never interrupted.

  Args:
    work: `LayerWork`.
    load_bw: bytes per second of the copy engine.
    dense_s: seconds of each layer's non-expert compute.

  Returns:
    `Timeline`.
  """
  N, L = jnp.shape(work.demand_bytes_NL)
  bw = jnp.asarray(load_bw, jnp.float32)
  dense = jnp.asarray(dense_s, jnp.float32)
  xs = tuple(jnp.reshape(jnp.asarray(a), (N * L,)) for a in work)

  def body(carry, x):
    t, copy_free, prefetch_done = carry
    demand, prefetch, wait, expert_s = x
    route = t + dense
    has_demand = demand > 0
    demand_end = jnp.maximum(route, copy_free) + demand.astype(jnp.float32) / bw
    copy_free = jnp.where(has_demand, demand_end, copy_free)
    ready = jnp.maximum(route, jnp.where(has_demand, demand_end, route))
    ready = jnp.maximum(ready, jnp.where(wait, prefetch_done, route))
    has_prefetch = prefetch > 0
    prefetch_end = jnp.maximum(route, copy_free) + prefetch.astype(jnp.float32) / bw
    copy_free = jnp.where(has_prefetch, prefetch_end, copy_free)
    prefetch_done = jnp.where(has_prefetch, prefetch_end, route)
    end = ready + expert_s.astype(jnp.float32)
    return (end, copy_free, prefetch_done), (end - t, ready - route)

  zero = jnp.zeros((), jnp.float32)
  (total, _, _), (layer_s, stall_s) = jax.lax.scan(body, (zero, zero, zero), xs)
  busy = (jnp.sum(xs[0].astype(jnp.float32)) + jnp.sum(xs[1].astype(jnp.float32))) / bw
  return Timeline(layer_s.reshape(N, L), stall_s.reshape(N, L), total, busy)


# ----------------------------------------------------------------------------- glue


def noisy_prediction(ids_NLK: Any, num_experts: int, accuracy: float, seed: int = 0) -> np.ndarray:
  """A stand-in for HOBBIT's next-layer predictor: each routed expert is predicted
  right with probability `accuracy`, else replaced by an expert not routed there.

  HOBBIT reports 96% top-1 accuracy one layer ahead (papers/moe.md 1.1 (2)) [V];
  errors independent per slot are an assumption [I].
  """
  if not 0.0 <= accuracy <= 1.0:
    raise ValueError(f"accuracy: expected a probability in [0, 1], given {accuracy}")
  ids = np.asarray(ids_NLK)
  rng = np.random.default_rng(seed)
  pred = ids.copy()
  N, L, K = ids.shape
  for n in range(N):
    for l in range(L):
      others = np.setdiff1d(np.arange(num_experts), ids[n, l])
      wrong = np.flatnonzero(rng.random(K) >= accuracy)[: len(others)]
      pred[n, l, wrong] = rng.choice(others, size=len(wrong), replace=False)
  return pred.astype(np.int32)


def layer_work(
    model: str | ModelProfile,
    device: str | DeviceProfile,
    ids_NLK: Any,
    outcome_NLK: Any,
    predicted_NLK: Any = None,
    *,
    wrong_prefetch_bits: int | None = None,
) -> LayerWork:
  """Per-layer copies and compute of a replayed trace (numpy).

  Loads: a high miss loads ``expert_bytes(high_bits)``, a low miss
  ``expert_bytes(low_bits)``; hits and skips load nothing. Compute: every
  served access (not a skip) runs its expert at the precision of its copy.

  Prefetch (when `predicted_NLK` is given; ``predicted_NLK[n, l]`` are the
  experts predicted for layer l while layer l - 1 runs, depth 1): a miss at
  layer l >= 1 whose expert was predicted is loaded by the prefetch queued at
  layer l - 1 instead of on demand; a predicted expert that layer l does not use
  (or skips) is a wasted, non-interruptible load of ``wrong_prefetch_bits``
  (default: the device's low precision, as HOBBIT prefetches in mixed
  precision [V]; [I] that a wrong guess is never already cached). Prefetched
  copies only move loads earlier: they do not change the cache contents [I].
  """
  model, device = get_model(model), get_device(device)
  ids = np.asarray(ids_NLK)
  outcome = np.asarray(outcome_NLK)
  if ids.shape != outcome.shape or ids.ndim != 3:
    raise ValueError(
        f"outcome_NLK: expected the shape of ids_NLK {ids.shape}, given {outcome.shape}")
  b_high = float(model.expert_bytes(device.high_bits))
  b_low = float(model.expert_bytes(device.low_bits))
  load_NLK = np.where(outcome == cache_lib.MISS_HIGH, b_high,
                      np.where(outcome == cache_lib.MISS_LOW, b_low, 0.0))
  high_copy = (outcome == cache_lib.HIT_HIGH) | (outcome == cache_lib.MISS_HIGH)
  low_copy = (outcome == cache_lib.HIT_LOW) | (outcome == cache_lib.MISS_LOW)
  expert_s = ((np.sum(high_copy, axis=-1) * b_high + np.sum(low_copy, axis=-1) * b_low)
              / device.compute_bw)

  demand = np.sum(load_NLK, axis=-1)
  prefetch = np.zeros_like(demand)
  wait = np.zeros(demand.shape, bool)
  if predicted_NLK is not None:
    pred = np.asarray(predicted_NLK)
    if pred.ndim != 3 or pred.shape[:2] != ids.shape[:2]:
      raise ValueError(f"predicted_NLK: expected shape [{ids.shape[0]}, {ids.shape[1]}, K'],"
                       f" given {pred.shape}")
    wrong_bytes = float(model.expert_bytes(
        device.low_bits if wrong_prefetch_bits is None else wrong_prefetch_bits))
    later = np.arange(ids.shape[1])[None, :, None] >= 1  # no prefetch into layer 0
    predicted = np.any(ids[..., :, None] == pred[..., None, :], axis=-1)  # [N, L, K]
    covered = predicted & (load_NLK > 0) & later
    used = ids[..., None, :] == pred[..., :, None]  # [N, L, K', K]
    skipped_NLK = outcome == cache_lib.SKIPPED
    useful_pred = np.any(used & ~skipped_NLK[..., None, :], axis=-1)  # [N, L, K']
    wasted = (~useful_pred & later).sum(axis=-1) * wrong_bytes
    useful = np.sum(np.where(covered, load_NLK, 0.0), axis=-1)
    demand = demand - useful
    prefetch[:, :-1] = (useful + wasted)[:, 1:]
    wait = np.any(covered, axis=-1)
  return LayerWork(demand.astype(np.float32), prefetch.astype(np.float32), wait,
                   expert_s.astype(np.float32))


class DecodeReport(NamedTuple):
  tokens_per_s: float  # decode speed over the trace
  load_share: float  # share of layer time the GPU waits for expert copies
  copy_busy_share: float  # share of the decode time the copy engine is busy
  bytes_per_token: float  # bytes copied per token (prefetches included)
  hit_ratio: float  # accesses served by a cached copy
  capacity_high: int
  capacity_low: int


def decode_report(model, device, ids_NLK, outcome_NLK, predicted_NLK=None, *,
                  capacity_high: int = 0, capacity_low: int = 0,
                  wrong_prefetch_bits: int | None = None) -> DecodeReport:
  """Tokens/s and load share of a replayed trace (see `layer_work`, `timeline`)."""
  model, device = get_model(model), get_device(device)
  work = layer_work(model, device, ids_NLK, outcome_NLK, predicted_NLK,
                    wrong_prefetch_bits=wrong_prefetch_bits)
  dense_s = model.dense_bytes_per_layer(device.high_bits) / device.compute_bw
  tl = timeline(work, np.float32(device.load_bw), np.float32(dense_s))
  n_tokens = np.shape(ids_NLK)[0]
  total = float(tl.total_s)
  outcome = np.asarray(outcome_NLK)
  hits = np.sum((outcome == cache_lib.HIT_HIGH) | (outcome == cache_lib.HIT_LOW))
  return DecodeReport(
      tokens_per_s=n_tokens / total if total > 0 else float("inf"),
      load_share=float(np.sum(tl.stall_s_NL) / max(np.sum(tl.layer_s_NL), 1e-30)),
      copy_busy_share=float(tl.copy_busy_s) / total if total > 0 else 0.0,
      bytes_per_token=float(np.sum(work.demand_bytes_NL, dtype=np.float64)
                            + np.sum(work.prefetch_bytes_NL, dtype=np.float64)) / max(n_tokens, 1),
      hit_ratio=float(hits) / max(outcome.size, 1),
      capacity_high=int(capacity_high),
      capacity_low=int(capacity_low),
  )


def compare_baselines(
    model: str | ModelProfile,
    device: str | DeviceProfile,
    ids_NLK: Any,
    gates_NLK: Any,
    seq_start_N: Any = None,
    *,
    t1: float = T1_MIXTRAL,
    t2: float = T2_MIXTRAL,
    weights=cache_lib.DEFAULT_WEIGHTS,
    low_fraction: float = 0.1,
    prefetch_accuracy: float | None = None,
    seed: int = 0,
) -> dict[str, DecodeReport]:
  """Decode speed of three offloading designs on one routing trace.

  * ``no_cache``: every routed expert is loaded at high precision every time;
  * ``lru_offload``: on-demand loading into a high-precision LRU cache filling
    the free memory, split into per-layer eviction groups (MoE-Offloading-like:
    mixtral-offloading's ``ExpertCache`` keeps one LRU group per layer,
    papers/moe.md 2 [V]; it also quantises experts with HQQ, left out here so
    the baseline loads the device's high precision [I]; no speculative loading);
  * ``hobbit``: dynamic mixed-precision loading (classes from the gates with
    `t1`, `t2`: low copies for low-class misses, skips for skip-class misses),
    HOBBIT's weighted policy over a high and a low cache (``low_fraction`` of
    the free memory holds low copies), and, with `prefetch_accuracy`, depth-1
    prefetch with a predictor of that accuracy (`noisy_prediction`).

  Returns:
    ``{"no_cache": DecodeReport, "lru_offload": ..., "hobbit": ...}``.
  """
  model, device = get_model(model), get_device(device)
  ids = np.asarray(ids_NLK)
  if ids.ndim != 3 or ids.shape[1] != model.num_layers or ids.shape[2] != model.top_k:
    raise ValueError(
        f"ids_NLK: expected [N, {model.num_layers}, {model.top_k}] for {model.name},"
        f" given shape {ids.shape}")
  config = cache_lib.CacheConfig(model.num_layers, model.num_experts)
  b_high = float(model.expert_bytes(device.high_bits))
  b_low = float(model.expert_bytes(device.low_bits))
  reports = {}

  no_cache = np.full(ids.shape, cache_lib.MISS_HIGH, np.int32)
  cache_lib.make_trace(config, ids)  # validates ids
  reports["no_cache"] = decode_report(model, device, ids, no_cache)

  cap_all, _ = cache_capacity(model, device, 0.0)
  trace = cache_lib.make_trace(config, ids, None, seq_start_N)
  params = cache_lib.make_params(config, "lru", cap_all, 0, weights, b_high, b_low,
                                 per_layer=True)
  lru = cache_lib.simulate(config, params, trace)
  reports["lru_offload"] = decode_report(model, device, ids, lru.outcome_NLK,
                                         capacity_high=cap_all)

  sorted_ids, classes = precision_classes(jnp.asarray(ids, jnp.int32),
                                          jnp.asarray(gates_NLK, jnp.float32), t1, t2)
  sorted_ids, classes = np.asarray(sorted_ids), np.asarray(classes)
  cap_high, cap_low = cache_capacity(model, device, low_fraction)
  trace = cache_lib.make_trace(config, sorted_ids, classes, seq_start_N)
  params = cache_lib.make_params(config, "hobbit", cap_high, cap_low, weights, b_high, b_low)
  hob = cache_lib.simulate(config, params, trace)
  predicted = None
  if prefetch_accuracy is not None:
    predicted = noisy_prediction(sorted_ids, model.num_experts, prefetch_accuracy, seed)
  reports["hobbit"] = decode_report(model, device, sorted_ids, hob.outcome_NLK, predicted,
                                    capacity_high=cap_high, capacity_low=cap_low)
  return reports
