"""The expert-offload simulator: JAX cache vs the Python reference, golden traces,
Belady optimality, sweeps, the transfer model and the weight tuner."""

import hypothesis
import hypothesis.strategies as st
import jax
import numpy as np
import pytest

from jaxsys._src import testing
from jaxsys.sims.expert_offload import cache
from jaxsys.sims.expert_offload import loading
from jaxsys.sims.expert_offload import reference
from jaxsys.sims.expert_offload import traces
from jaxsys.sims.expert_offload import transfer
from jaxsys.sims.expert_offload import tuning
from jaxsys.sims.expert_offload.cache import (HIT_HIGH, HIT_LOW, MISS_HIGH, MISS_LOW,
                                              NOT_CACHED, SKIPPED)

H, M = HIT_HIGH, MISS_HIGH  # shorthands for single-precision goldens
# One trace shape for the randomized tests, so they share one compile.
N, L, E, K = 12, 3, 5, 2
CONFIG = cache.CacheConfig(L, E)


def random_trace(seed, *, mixed=True, n=N, layers=L, experts=E, top_k=K):
  rng = np.random.default_rng(seed)
  # Skewed popularity with some repetition, ids distinct per (token, layer).
  pop = rng.dirichlet(np.full(experts, 0.5))
  ids = np.stack([[rng.choice(experts, size=top_k, replace=False, p=pop) for _ in range(layers)]
                  for _ in range(n)]).astype(np.int32)
  prec = (rng.integers(0, 3, ids.shape) if mixed else np.zeros(ids.shape)).astype(np.int32)
  starts = rng.random(n) < 0.2
  return ids, prec, starts


def run_one(config, ids, prec=None, starts=None, **kw):
  params = cache.make_params(config, **kw)
  return cache.simulate(config, params, cache.make_trace(config, ids, prec, starts))


def column(ids_list):
  """[n] ids -> [n, 1, 1] (one layer, top-1)."""
  return np.asarray(ids_list, np.int32)[:, None, None]


# ----------------------------------------------------------------------------- reference


@hypothesis.settings(deadline=None, max_examples=25)
@hypothesis.given(
    seed=st.integers(0, 2**31 - 1),
    capacity_high=st.integers(1, L * E),
    capacity_low=st.integers(0, L * E),
    weights=st.lists(st.integers(0, 4), min_size=4, max_size=4),
    per_layer=st.booleans(),
)
def test_every_policy_matches_python_reference(seed, capacity_high, capacity_low, weights,
                                               per_layer):
  ids, prec, starts = random_trace(seed)
  params, labels = cache.param_grid(CONFIG, cache.POLICIES, [capacity_high], [capacity_low],
                                    weights=weights, bytes_high=4.0, bytes_low=1.0,
                                    per_layer=per_layer)
  res = cache.sweep(CONFIG, params, cache.make_trace(CONFIG, ids, prec, starts))
  for i, label in enumerate(labels):
    want = reference.simulate_reference(
        ids, prec, starts, num_experts=E, policy=label["policy"], capacity_high=capacity_high,
        capacity_low=capacity_low, weights=weights, bytes_high=4.0, bytes_low=1.0,
        per_layer=per_layer)
    where = f"policy {label['policy']}"
    assert np.asarray(res.outcome_NLK[i]).tolist() == want["outcome"], where
    assert np.asarray(res.evicted_NLK[i]).tolist() == want["evicted"], where
    for field, key in (("hits_N", "hits"), ("misses_high_N", "misses_high"),
                       ("misses_low_N", "misses_low"), ("skips_N", "skips")):
      assert np.asarray(getattr(res, field)[i]).tolist() == want[key], (where, field)
    testing.assert_allclose(res.bytes_N[i], np.asarray(want["bytes"], np.float32))


@hypothesis.settings(deadline=None, max_examples=20)
@hypothesis.given(seed=st.integers(0, 2**31 - 1), capacity_high=st.integers(1, L * E))
def test_belady_never_misses_more_than_any_policy(seed, capacity_high):
  # Single precision (every access high): the classic setting where the oracle
  # is optimal, current-layer pinning included. (With mixed classes and two
  # caches, next use of any class is a heuristic, not an optimum.)
  ids, _, starts = random_trace(seed, mixed=False)
  params, _ = cache.param_grid(CONFIG, cache.POLICIES, [capacity_high],
                               weights=np.random.default_rng(seed).integers(0, 5, 4))
  res = cache.sweep(CONFIG, params, cache.make_trace(CONFIG, ids, None, starts))
  misses = np.asarray(res.misses_high_N).sum(axis=-1)
  belady = misses[cache.BELADY]
  assert np.all(belady <= misses), dict(zip(cache.POLICIES, misses.tolist()))


def test_step_by_step_equals_simulate():
  ids, prec, starts = random_trace(7)
  trace = cache.make_trace(CONFIG, ids, prec, starts)
  params = cache.make_params(CONFIG, "hobbit", 6, 2)
  want = cache.simulate(CONFIG, params, trace)
  step = jax.jit(cache.step)
  state = cache.init(CONFIG)
  for n in range(N):
    event = cache.Event(trace.ids_NLK[n], trace.precision_NLK[n], trace.next_use_NLK[n],
                        trace.seq_start_N[n], np.int32(n))
    state, out = step(state, event, params)
    assert np.asarray(out.outcome_LK).tolist() == np.asarray(want.outcome_NLK[n]).tolist()
    assert np.asarray(out.evicted_LK).tolist() == np.asarray(want.evicted_NLK[n]).tolist()


# ----------------------------------------------------------------------------- goldens

TINY = cache.CacheConfig(num_layers=1, num_experts=4)


def test_lru_golden():
  # capacity 2, accesses 0 1 0 2 1:
  #   0 miss {0} | 1 miss {0,1} | 0 hit | 2 miss, LRU is 1 -> {0,2} | 1 miss, LRU is 0 -> {2,1}
  res = run_one(TINY, column([0, 1, 0, 2, 1]), policy="lru", capacity_high=2)
  assert res.outcome_NLK[:, 0, 0].tolist() == [M, M, H, M, M]
  assert res.evicted_NLK[:, 0, 0].tolist() == [-1, -1, -1, 1, 0]
  assert res.hits_N.tolist() == [0, 0, 1, 0, 0]


def test_lfu_golden_and_sequence_reset():
  # capacity 2, accesses 0 0 1 2 0 1, one sequence; counts F in brackets:
  #   0 miss [0:1] | 0 hit [0:2] | 1 miss [1:1] | 2 miss: F 0:2 > 1:1, evict 1 |
  #   0 hit [0:3] | 1 miss: F 0:3 > 2:1, evict 2
  trace = column([0, 0, 1, 2, 0, 1])
  res = run_one(TINY, trace, policy="lfu", capacity_high=2)
  assert res.outcome_NLK[:, 0, 0].tolist() == [M, H, M, M, H, M]
  assert res.evicted_NLK[:, 0, 0].tolist() == [-1, -1, -1, 1, -1, 2]
  # A new sequence at step 3 resets the counts (sequence-level LFU):
  #   step 3: 2 miss, F 0:0 = 1:0, tie -> LRU evicts 0 (last used at step 1) |
  #   step 4: 0 miss, F 1:0 < 2:1, evict 1 | step 5: 1 miss, F 2:1 = 0:1, LRU evicts 2
  starts = np.array([True, False, False, True, False, False])
  res = run_one(TINY, trace, None, starts, policy="lfu", capacity_high=2)
  assert res.outcome_NLK[:, 0, 0].tolist() == [M, H, M, M, M, M]
  assert res.evicted_NLK[:, 0, 0].tolist() == [-1, -1, -1, 0, 1, 2]


def test_belady_golden():
  # capacity 2, accesses 0 1 2 0 1 3 0 (access index = step):
  #   0 miss | 1 miss | 2 miss: next use 0 -> 3, 1 -> 4, evict 1 (furthest) |
  #   0 hit | 1 miss: next use 0 -> 6, 2 never, evict 2 | 3 miss: 0 -> 6, 1 never,
  #   evict 1 | 0 hit.   5 misses; LRU misses all 7 on this trace.
  trace = column([0, 1, 2, 0, 1, 3, 0])
  res = run_one(TINY, trace, policy="belady", capacity_high=2)
  assert res.outcome_NLK[:, 0, 0].tolist() == [M, M, M, H, M, M, H]
  assert res.evicted_NLK[:, 0, 0].tolist() == [-1, -1, 1, -1, 2, 1, -1]
  assert int(run_one(TINY, trace, policy="lru", capacity_high=2).misses_high_N.sum()) == 7


def test_hobbit_golden_weights_decide():
  # capacity 2, accesses 0 0 1 2 (token T = 1 2 3 4), L = 1 so the FLD term is
  # the same for every key. At step 3 (T = 4): R0 = 2, F0 = 2; R1 = 3, F1 = 1.
  #   weights (1, 1, 0, 0): p*T*L = R + F: key 0 -> 4, key 1 -> 4, tie -> LRU evicts 0
  #   weights (1, 2, 0, 0): R + 2F:        key 0 -> 6, key 1 -> 5, evicts 1
  trace = column([0, 0, 1, 2])
  res = run_one(TINY, trace, policy="hobbit", capacity_high=2, weights=(1, 1, 0, 0))
  assert res.evicted_NLK[3, 0, 0] == 0
  res = run_one(TINY, trace, policy="hobbit", capacity_high=2, weights=(1, 2, 0, 0))
  assert res.evicted_NLK[3, 0, 0] == 1


def test_fld_evicts_the_layer_furthest_ahead():
  # 4 layers, 1 expert each, top-1, capacity 3: token 0 loads layers 0 1 2 3;
  # at layer 3 the cache {0, 1, 2} is full. Distances ahead of layer 3:
  # layer 0 -> 1, layer 1 -> 2, layer 2 -> 3: layer 2 (just used) goes.
  config = cache.CacheConfig(num_layers=4, num_experts=1)
  res = run_one(config, np.zeros((1, 4, 1), np.int32), policy="fld", capacity_high=3)
  assert res.evicted_NLK[0, :, 0].tolist() == [-1, -1, -1, 2]


def test_current_layer_is_pinned_and_bypass_when_all_pinned():
  # top-2, capacity 2, LFU. Steps [0,1] [0,1] [2,3]: at step 2, 2 misses and
  # evicts 0 (F 0:2 = 1:2, LRU); 3 misses: the lowest count is key 2 (F 1), but 2
  # is pinned by this layer, so 1 goes.
  res = run_one(TINY, np.array([[[0, 1]], [[0, 1]], [[2, 3]]], np.int32), policy="lfu",
                capacity_high=2)
  assert res.outcome_NLK[2, 0].tolist() == [M, M]
  assert res.evicted_NLK[2, 0].tolist() == [0, 1]
  # capacity 1 < top-2: the second expert of a layer finds only a pinned entry,
  # so it is loaded but not cached. Step 1: 1 misses (was never cached) and
  # evicts 0; 2 misses and finds 1 pinned.
  res = run_one(TINY, np.array([[[0, 1]], [[1, 2]]], np.int32), policy="lru", capacity_high=1)
  assert res.outcome_NLK[:, 0].tolist() == [[M, M], [M, M]]
  assert res.evicted_NLK[:, 0].tolist() == [[-1, NOT_CACHED], [0, NOT_CACHED]]


def test_mixed_precision_golden():
  # high cache 1, low cache 1, LRU; expert (class) per step:
  #   0 (low): low miss -> low {0}           | 0 (high): a low copy does not serve -> high {0}
  #   1 (skip): nothing cached -> skipped     | 0 (low): served by the high copy
  #   1 (low): low miss, low full -> evict 0  | 1 (skip): served by the low copy
  ids = column([0, 0, 1, 0, 1, 1])
  prec = column([1, 0, 2, 1, 1, 2])
  res = run_one(TINY, ids, prec, policy="lru", capacity_high=1, capacity_low=1,
                bytes_high=4.0, bytes_low=1.0)
  assert res.outcome_NLK[:, 0, 0].tolist() == [MISS_LOW, MISS_HIGH, SKIPPED, HIT_HIGH,
                                               MISS_LOW, HIT_LOW]
  assert res.evicted_NLK[:, 0, 0].tolist() == [-1, -1, -1, -1, 0, -1]
  assert res.bytes_N.tolist() == [1.0, 4.0, 0.0, 0.0, 1.0, 0.0]
  assert res.skips_N.tolist() == [0, 0, 1, 0, 0, 0]
  # No low cache: low copies are streamed, never cached.
  res = run_one(TINY, ids, prec, policy="lru", capacity_high=1, capacity_low=0)
  assert res.evicted_NLK[:, 0, 0].tolist() == [NOT_CACHED, -1, -1, -1, NOT_CACHED, -1]
  assert res.outcome_NLK[5, 0, 0] == SKIPPED
  # miss penalty = high misses + (B_l / B_h) low misses = 1 + 2 * 0.25
  params = cache.make_params(TINY, "lru", 1, 1, bytes_high=4.0, bytes_low=1.0)
  res = cache.simulate(TINY, params, cache.make_trace(TINY, ids, prec))
  testing.assert_allclose(cache.miss_penalty(res, params), np.float32(1.5))


def test_per_layer_groups():
  # 2 layers x 2 experts, top-1, capacity 3 in per-layer groups: layer 0 owns 2
  # entries, layer 1 owns 1. Token 1 routes layer 1 to expert 1: layer 1's group
  # (holding expert 0) is full, so its own key goes, not one of layer 0's.
  config = cache.CacheConfig(num_layers=2, num_experts=2)
  ids = np.array([[[0], [0]], [[1], [1]]], np.int32)
  res = run_one(config, ids, policy="lru", capacity_high=3, per_layer=True)
  assert res.evicted_NLK[:, :, 0].tolist() == [[-1, -1], [-1, 2]]  # key 2 = (layer 1, expert 0)
  res = run_one(config, ids, policy="lru", capacity_high=3)  # global: LRU key 0 goes
  assert res.evicted_NLK[:, :, 0].tolist() == [[-1, -1], [-1, 0]]


def test_empty_trace():
  res = run_one(TINY, np.zeros((0, 1, 2), np.int32), policy="lru", capacity_high=2)
  assert res.outcome_NLK.shape == (0, 1, 2) and res.hits_N.shape == (0,)


def test_precision_classes_golden():
  # gates sorted descending; s_i = sum of the gates above:
  #   [0.5, 0.3, 0.2]  -> s = [0, 0.5, 0.8]   -> high, high, low   (T1 0.6, T2 0.9)
  #   [0.05, 0.7, 0.25] sorted [0.7, 0.25, 0.05] -> s = [0, 0.7, 0.95] -> high, low, skip
  ids = np.array([[[4, 5, 6], [1, 2, 3]]], np.int32)
  gates = np.array([[[0.5, 0.3, 0.2], [0.05, 0.7, 0.25]]], np.float32)
  sorted_ids, cls = loading.precision_classes(ids, gates)
  assert np.asarray(sorted_ids).tolist() == [[[4, 5, 6], [2, 3, 1]]]
  assert np.asarray(cls).tolist() == [[[0, 0, 1], [0, 1, 2]]]


def test_synthetic_trace_is_valid_and_local():
  tr = traces.synthetic_trace(0, num_steps=64, num_layers=4, num_experts=8, top_k=2,
                              locality=0.6)
  cache.make_trace(cache.CacheConfig(4, 8), tr.ids_NLK, None, tr.seq_start_N)  # validates
  testing.assert_allclose(tr.gates_NLK.sum(-1), np.ones((64, 4), np.float32), n=2)
  assert np.all(tr.gates_NLK[..., 0] >= tr.gates_NLK[..., 1])
  same = tr.ids_NLK[1:, :, 0] == tr.ids_NLK[:-1, :, 0]
  assert same[~tr.seq_start_N[1:]].mean() > 0.5  # uniform would be 1/8
  assert tr.seq_start_N.sum() == 4


# ----------------------------------------------------------------------------- sweeps


def test_sweep_equals_loop_of_single_runs():
  ids, prec, starts = random_trace(3)
  trace = cache.make_trace(CONFIG, ids, prec, starts)
  params, labels = cache.param_grid(CONFIG, cache.POLICIES, [2, 7], [0, 3])
  res = cache.sweep(CONFIG, params, trace)
  for i, label in enumerate(labels):
    one = cache.simulate(CONFIG, cache.make_params(CONFIG, **label), trace)
    for field in cache.Result._fields:
      np.testing.assert_array_equal(getattr(res, field)[i], getattr(one, field),
                                    err_msg=f"{label} {field}")


def test_sweep_compiles_once():
  config = cache.CacheConfig(num_layers=2, num_experts=3)  # a shape no other test uses
  ids, prec, starts = random_trace(0, n=7, layers=2, experts=3, top_k=1)
  trace = cache.make_trace(config, ids, prec, starts)
  first, _ = cache.param_grid(config, ["lru", "belady", "hobbit"], [1, 6])
  second, _ = cache.param_grid(config, ["lfu", "fld", "lhu"], [2, 4], [5],
                               weights=(1, 0, 2, 3))
  with testing.count_lowerings() as lowerings:
    jax.block_until_ready(cache.sweep(config, first, trace))
  assert len(lowerings) == 1
  with testing.count_lowerings() as lowerings:
    jax.block_until_ready(cache.sweep(config, second, trace))
  assert not lowerings


def test_tune_weights_finds_the_grid_minimum():
  ids, prec, starts = random_trace(11)
  trace = cache.make_trace(CONFIG, ids, prec, starts)
  res = tuning.tune_weights(CONFIG, trace, capacity_high=5, capacity_low=2, resolution=2)
  assert res.weights_G4.shape == (10, 4) and np.all(res.weights_G4.sum(-1) == 2)
  loop = [
      float(cache.miss_penalty(
          cache.simulate(CONFIG, p := cache.make_params(CONFIG, "hobbit", 5, 2, w), trace), p))
      for w in res.weights_G4
  ]
  testing.assert_allclose(res.penalty_G, np.asarray(loop, np.float32))
  assert res.best_penalty == min(loop)
  assert res.best_weights.tolist() == res.weights_G4[int(np.argmin(loop))].tolist()


def test_weight_grid_sizes():
  assert tuning.weight_grid(3).shape == (20, 4)
  assert tuning.weight_grid(9).shape == (220, 4)
  assert len({tuple(w) for w in tuning.weight_grid(9).tolist()}) == 220


# ----------------------------------------------------------------------------- transfer


def hand_timeline(demand, prefetch, wait, expert_s, *, bw=25e9, dense_s=1e-3):
  work = transfer.LayerWork(np.asarray(demand, np.float32), np.asarray(prefetch, np.float32),
                            np.asarray(wait, bool), np.asarray(expert_s, np.float32))
  return transfer.timeline(work, np.float32(bw), np.float32(dense_s))


def test_timeline_two_experts_over_25_gbps():
  # 2 experts x 100 MB over 25 GB/s = 8 ms of copies; dense 1 ms, experts 2 ms:
  # layer = 1 + 8 + 2 = 11 ms, of which 8 ms stalled.
  tl = hand_timeline([[200e6]], [[0.0]], [[False]], [[2e-3]])
  testing.assert_allclose(tl.total_s, np.float32(11e-3), n=4)
  testing.assert_allclose(tl.stall_s_NL, np.float32([[8e-3]]), n=4)
  testing.assert_allclose(tl.copy_busy_s, np.float32(8e-3), n=4)


def test_timeline_wrong_prefetch_blocks_the_demand_load():
  # 2 layers, dense 1 ms, experts 2 ms each, 25 GB/s (100 MB = 4 ms).
  # Layer 0 routes at 1 ms and queues a 100 MB prefetch (1 -> 5 ms); ends at 3 ms.
  # Layer 1 routes at 4 ms.
  #   wrong guess: its 100 MB demand load waits for the copy engine: 5 -> 9 ms;
  #                experts 9 -> 11 ms.
  #   no prefetch: demand 4 -> 8 ms, ends at 10 ms.
  #   right guess: nothing on demand, waits for the prefetch (5 ms), ends at 7 ms.
  wrong = hand_timeline([[0.0, 100e6]], [[100e6, 0.0]], [[False, False]], [[2e-3, 2e-3]])
  none = hand_timeline([[0.0, 100e6]], [[0.0, 0.0]], [[False, False]], [[2e-3, 2e-3]])
  right = hand_timeline([[0.0, 0.0]], [[100e6, 0.0]], [[False, True]], [[2e-3, 2e-3]])
  testing.assert_allclose(wrong.total_s, np.float32(11e-3), n=8)
  testing.assert_allclose(wrong.stall_s_NL, np.float32([[0.0, 5e-3]]), n=8, scale=10)
  testing.assert_allclose(none.total_s, np.float32(10e-3), n=8)
  testing.assert_allclose(right.total_s, np.float32(7e-3), n=8)


def test_profiles_match_the_notes():
  mixtral, phi = transfer.MODELS["mixtral-8x7b"], transfer.MODELS["phi-moe"]
  assert mixtral.expert_bytes(16) == 3 * 4096 * 14336 * 2  # ~352 MB (moe.md 3(d))
  assert mixtral.expert_bytes(4) == 176_160_768 // 32 * 18  # 4.5 bits per weight
  assert mixtral.expert_bytes(8) == 176_160_768 // 32 * 34
  # 87 GB and 78 GB at fp16 (moe.md 3: read as GiB), 42B / 6.6B active for Phi-MoE.
  assert abs(mixtral.total_params * 2 / transfer.GIB - 87) < 0.02 * 87
  assert abs(phi.total_params * 2 / transfer.GIB - 78) < 0.02 * 78
  phi_active = phi.total_params - phi.num_layers * (phi.num_experts - phi.top_k) * phi.expert_params
  assert abs(phi_active / 1e9 - 6.6) < 0.1
  gpu = transfer.DEVICES["rtx4090_pcie4"]
  # Loading one Mixtral layer (8 experts) over PCIe 4.0: 8 * 352 MB / 32 GB/s = 88 ms;
  # HOBBIT measured about 80 ms (moe.md 1.1), within 15%.
  load_s = 8 * mixtral.expert_bytes(16) / gpu.load_bw
  assert abs(load_s - 88.1e-3) < 1e-4 and abs(load_s / 80e-3 - 1) < 0.15
  # Computing that layer on a 4090 "takes about 3 ms" (moe.md 1.1), within 15%.
  compute_s = (8 * mixtral.expert_bytes(16) + mixtral.dense_bytes_per_layer(16)) / gpu.compute_bw
  assert abs(compute_s / 3e-3 - 1) < 0.15
  for profile in (*transfer.MODELS.values(), *transfer.DEVICES.values()):
    assert "[V" in profile.sources  # every profile cites its numbers


def test_layer_work_by_hand():
  # expert = 3 * 1000 * 1000 weights: fp16 6 MB; int4 1.5 MB + 93,750 fp16 scales = 1.6875 MB
  model = transfer.ModelProfile("toy", num_layers=2, num_experts=4, top_k=2, hidden=1000,
                                expert_ffn=1000, num_heads=1, num_kv_heads=1, head_dim=8,
                                vocab=10, sources="test [V]")
  device = transfer.DeviceProfile("toy", load_bw=6e9, compute_bw=60e9, memory_bytes=1e9,
                                  reserve_bytes=0.0, high_bits=16, low_bits=4)
  assert model.expert_bytes(4) == 1_687_500
  ids = np.array([[[0, 1], [2, 3]]], np.int32)
  outcome = np.array([[[MISS_HIGH, MISS_LOW], [HIT_HIGH, MISS_HIGH]]], np.int32)
  work = transfer.layer_work(model, device, ids, outcome)
  testing.assert_allclose(work.demand_bytes_NL, np.float32([[6e6 + 1.6875e6, 6e6]]))
  testing.assert_allclose(work.expert_s_NL, np.float32([[7.6875e6 / 60e9, 12e6 / 60e9]]), n=2)
  # Layer 1 predicted {3, 0}: 3 (a miss) moves to layer 0's prefetch; 0 is not
  # used at layer 1, a wasted low-precision load.
  work = transfer.layer_work(model, device, ids, outcome, np.array([[[9, 9], [3, 0]]]))
  testing.assert_allclose(work.demand_bytes_NL, np.float32([[7.6875e6, 0.0]]))
  testing.assert_allclose(work.prefetch_bytes_NL, np.float32([[6e6 + 1.6875e6, 0.0]]))
  assert work.wait_prefetch_NL.tolist() == [[False, True]]


def test_baselines_on_a_synthetic_mixtral_trace():
  tr = traces.synthetic_trace(1, num_steps=16, num_layers=32, num_experts=8, top_k=2,
                              seq_len=8)
  out = transfer.compare_baselines("mixtral-8x7b", "rtx4090_pcie4", tr.ids_NLK, tr.gates_NLK,
                                   tr.seq_start_N)
  no_cache, lru, hobbit = out["no_cache"], out["lru_offload"], out["hobbit"]
  # No cache: 32 layers x 2 experts x 352 MB per token; loading dominates, as the
  # 85.5% HOBBIT measured on a 4090 (our model: 22 ms load vs 0.8 ms compute per layer).
  assert no_cache.bytes_per_token == 64 * 3 * 4096 * 14336 * 2
  assert 0.855 < no_cache.load_share < 0.99
  assert no_cache.tokens_per_s < lru.tokens_per_s < hobbit.tokens_per_s
  assert hobbit.bytes_per_token < lru.bytes_per_token < no_cache.bytes_per_token


# ----------------------------------------------------------------------------- errors


def test_errors():
  with pytest.raises(ValueError, match=r"capacity_high: expected 1 <= capacity_high <= 15"):
    cache.make_params(CONFIG, "lru", 0)
  with pytest.raises(ValueError, match=r"capacity_high: .* given 16"):
    cache.make_params(CONFIG, "lru", 16)
  with pytest.raises(ValueError,
                     match=r"capacity_low: expected 0 <= capacity_low <= 15 .*, given -1"):
    cache.make_params(CONFIG, "lru", 1, -1)
  with pytest.raises(ValueError, match=r"policy: unknown name 'arc'; known: lru, lfu"):
    cache.make_params(CONFIG, "arc", 1)
  with pytest.raises(ValueError, match=r"policy: expected 0..5"):
    cache.make_params(CONFIG, 6, 1)
  with pytest.raises(ValueError, match=r"weights: expected integers >= 0"):
    cache.make_params(CONFIG, "hobbit", 1, weights=(1, -1, 0, 0))
  bad = cache.stack_params([cache.make_params(CONFIG, "lru", 1),
                            cache.make_params(CONFIG, "lru", 2)])._replace(
                                capacity_high=np.array([3, 99], np.int32))
  with pytest.raises(ValueError, match=r"given 99 at sweep index \(1,\)"):
    cache.sweep(CONFIG, bad, cache.make_trace(CONFIG, *random_trace(0)))

  ids = np.zeros((4, L, K), np.int32)
  ids[..., 1] = 1
  ids[3, 1, 0] = 9
  with pytest.raises(ValueError, match=r"ids_NLK: expert id 9 at step 3, layer 1, slot 0 is"
                     r" outside \[0, 5\)"):
    cache.make_trace(CONFIG, ids)
  ids[3, 1, 0] = -1
  with pytest.raises(ValueError, match=r"expert id -1 at step 3, layer 1, slot 0"):
    cache.make_trace(CONFIG, ids)
  ids[3, 1, 0] = 1
  with pytest.raises(ValueError, match=r"ids_NLK: expert 1 appears twice at step 3, layer 1"):
    cache.make_trace(CONFIG, ids)
  ids[3, 1, 0] = 0
  with pytest.raises(ValueError, match=r"ids_NLK: expected 3 layers \(axis 1\), given 2"):
    cache.make_trace(CONFIG, ids[:, :2])
  with pytest.raises(TypeError, match=r"ids_NLK: expected an integer dtype"):
    cache.make_trace(CONFIG, ids.astype(np.float32))
  prec = np.zeros_like(ids)
  prec[2, 0, 1] = 3
  with pytest.raises(ValueError, match=r"precision_NLK: class 3 at step 2, layer 0, slot 1"):
    cache.make_trace(CONFIG, ids, prec)
  with pytest.raises(ValueError, match=r"seq_start_N: expected a bool array of shape \(4,\)"):
    cache.make_trace(CONFIG, ids, None, np.zeros(3, bool))

  trace = cache.make_trace(CONFIG, ids)
  one = cache.make_params(CONFIG, "lru", 2)
  with pytest.raises(ValueError, match=r"simulate runs one configuration"):
    cache.simulate(CONFIG, cache.stack_params([one]), trace)
  with pytest.raises(ValueError, match=r"sweep needs a leading sweep axis"):
    cache.sweep(CONFIG, one, trace)
  with pytest.raises(ValueError, match=r"CacheConfig.num_experts: expected an int >= 1"):
    cache.CacheConfig(2, 0)

  with pytest.raises(ValueError, match=r"model: unknown name 'gpt'"):
    transfer.get_model("gpt")
  with pytest.raises(ValueError, match=r"device: unknown name 'tpu'; known: rtx4090_pcie4"):
    transfer.get_device("tpu")
  with pytest.raises(ValueError, match=r"bits: expected 16, 8, 4 or 2, given 3"):
    transfer.quantized_bytes(10, 3)
  with pytest.raises(ValueError, match=r"ids_NLK: expected \[N, 32, 2\] for mixtral-8x7b"):
    transfer.compare_baselines("mixtral-8x7b", "rtx4090_pcie4", ids, ids.astype(np.float32))
  with pytest.raises(ValueError, match=r"resolution: expected an int >= 1"):
    tuning.weight_grid(0)
