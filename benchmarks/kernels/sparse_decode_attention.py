"""Time sparse decode attention: Pallas kernel vs its XLA reference vs dense attention.

    python benchmarks/kernels/sparse_decode_attention.py --out results/kernels
    python benchmarks/kernels/sparse_decode_attention.py --contexts 4096 --budgets 256 --batches 1

One decode query per sequence; the sparse methods attend to 16 sinks + a 64-token
window + `budget` selected positions per (sequence, KV head), dense attention to
the whole context. Compile time apart, medians of repeated runs (jaxsys._src.bench).
On a CPU only the XLA implementations run (the kernel needs a GPU). Prints a table
and writes sparse_decode_attention.json (rows only; the KV-cache benchmark states
the claims).
"""

from __future__ import annotations

import argparse
import functools
import os

import jax
import jax.numpy as jnp
import numpy as np

from jaxsys._src import backend, bench
from jaxsys.kernels.sparse_decode_attention import BlockConfig
from jaxsys.kernels.sparse_decode_attention import dense_decode_attention
from jaxsys.kernels.sparse_decode_attention import sparse_decode_attention

SHAPES = {  # name: (query heads, KV heads, head dim)
    "llama3-8b": (32, 8, 128),
    "smollm2-135m": (9, 3, 64),
}
NUM_SINKS, WINDOW = 16, 64


def make_inputs(rng, B, H, K, D, T, S, dtype):
  q = jnp.asarray(rng.standard_normal((B, H, D)), dtype)
  k = jnp.asarray(rng.standard_normal((B, K, T, D)), dtype)
  v = jnp.asarray(rng.standard_normal((B, K, T, D)), dtype)
  # distinct positions between the sinks and the window, as a selection gives
  idx = np.stack([np.stack([NUM_SINKS + rng.permutation(T - NUM_SINKS - WINDOW)[:S]
                            for _ in range(K)]) for _ in range(B)])
  return q, k, v, jnp.asarray(idx, jnp.int32), jnp.full((B,), T, jnp.int32)


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--shapes", default=",".join(SHAPES))
  p.add_argument("--contexts", default="4096,32768")
  p.add_argument("--budgets", default="1024,2048")
  p.add_argument("--batches", default="1,8")
  p.add_argument("--dtype", default="bfloat16")
  p.add_argument("--iters", type=int, default=20)
  p.add_argument("--out", default="results/kernels")
  ns = p.parse_args(argv)
  dtype = jnp.dtype(ns.dtype)
  ints = lambda s: [int(x) for x in s.split(",")]  # noqa: E731
  gpu = backend.has_gpu()
  rng = np.random.default_rng(0)
  rows = []
  header = f"{'shape':>13} {'B':>2} {'T':>6} {'S':>5} {'impl':>16} {'median_us':>10} {'compile_s':>9} {'vs dense':>8} {'max_err':>8}"
  print(f"device: {jax.devices()[0].device_kind} ({jax.default_backend()})")
  print(header)
  for shape in ns.shapes.split(","):
    H, K, D = SHAPES[shape]
    for B in ints(ns.batches):
      for T in ints(ns.contexts):
        dense_t = None
        for S in ints(ns.budgets):
          if S > T - NUM_SINKS - WINDOW:
            continue
          q, k, v, idx, lengths = make_inputs(rng, B, H, K, D, T, S, dtype)
          impls = {
              "dense_xla": jax.jit(functools.partial(dense_decode_attention)),
              "sparse_xla": jax.jit(functools.partial(
                  sparse_decode_attention, num_sinks=NUM_SINKS, window=WINDOW,
                  implementation="reference")),
          }
          if gpu:
            for use_dot in (True, False):
              impls[f"pallas_{'dot' if use_dot else 'fma'}"] = jax.jit(functools.partial(
                  sparse_decode_attention, num_sinks=NUM_SINKS, window=WINDOW,
                  implementation="pallas",
                  block_config=BlockConfig(block_s=32 if use_dot else 16, use_dot=use_dot)))
          ref = None
          for name, fn in impls.items():
            if name == "dense_xla" and dense_t is not None:
              continue
            args = (q, k, v, lengths) if name == "dense_xla" else (q, k, v, idx, lengths)
            t = bench.time_jitted(fn, *args, warmup=3, iters=ns.iters)
            err = None
            if name != "dense_xla":  # every sparse implementation against the XLA one
              out = np.asarray(fn(*args), np.float32)
              ref = out if ref is None else ref
              err = float(np.max(np.abs(out - ref)))
            if name == "dense_xla":
              dense_t = t
            kv_bytes = (T if name == "dense_xla" else NUM_SINKS + WINDOW + S) * B * K * D * 2 * dtype.itemsize
            row = dict(shape=shape, batch=B, context=T, budget=S, impl=name,
                       kv_bytes_read=kv_bytes, max_abs_err_vs_xla=err,
                       speedup_vs_dense=dense_t.median_s / t.median_s, **t.as_row())
            rows.append(row)
            print(f"{shape:>13} {B:>2} {T:>6} {S:>5} {name:>16} {t.median_s * 1e6:>10.1f}"
                  f" {t.compile_s:>9.2f} {row['speedup_vs_dense']:>8.2f}"
                  f" {'' if err is None else f'{err:.1e}':>8}", flush=True)
  path = bench.write_result(ns.out, name="sparse_decode_attention", config=vars(ns),
                            rows=rows, claims=[], papers=["ClusterKV"])
  print(f"wrote {path}")


if __name__ == "__main__":
  main()
