"""Time grouped matmul (MoE expert FFN dispatch): Pallas kernel vs `ragged_dot` vs dense.

    python benchmarks/kernels/grouped_matmul.py --out results/kernels
    python benchmarks/kernels/grouped_matmul.py --tokens 1024 --experts 8 --dim 128 --hidden 256

Rows = tokens x top-k, sorted by expert with random (Zipf-skewed) routing; each
implementation computes ``rows @ w[expert]``. Compile time apart, medians
(jaxsys._src.bench). On a CPU only the XLA implementations run. Prints a table and
writes grouped_matmul.json (rows only; the MoE benchmark states the claims).
"""

from __future__ import annotations

import argparse
import functools

import jax
import jax.numpy as jnp
import numpy as np

from jaxsys._src import backend, bench
from jaxsys.kernels.grouped_matmul import BlockConfig, grouped_matmul

CONFIGS = {  # name: BlockConfig for the Pallas kernel
    "pallas_64x64x32": BlockConfig(64, 64, 32, num_warps=4, num_stages=3),
    "pallas_128x128x64": BlockConfig(128, 128, 64, num_warps=8, num_stages=3),
    "pallas_128x64x64": BlockConfig(128, 64, 64, num_warps=4, num_stages=4),
}


def routing_sizes(rng, tokens, experts, k):
  """Rows per expert for `tokens` tokens with top-`k` Zipf-skewed routing."""
  p = 1.0 / np.arange(1, experts + 1) ** 0.8
  p /= p.sum()
  picks = np.stack([rng.choice(experts, size=k, replace=False, p=p) for _ in range(tokens)])
  return np.bincount(picks.ravel(), minlength=experts).astype(np.int32)


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--tokens", default="4096,16384")
  p.add_argument("--experts", default="8,32")
  p.add_argument("--topk", type=int, default=2)
  p.add_argument("--dim", type=int, default=1024)
  p.add_argument("--hidden", type=int, default=2048)
  p.add_argument("--dtype", default="bfloat16")
  p.add_argument("--dense_max_bytes", type=float, default=2e9,
                 help="skip the dense baseline when its [N, E, F] buffer is larger")
  p.add_argument("--iters", type=int, default=20)
  p.add_argument("--out", default="results/kernels")
  ns = p.parse_args(argv)
  dtype = jnp.dtype(ns.dtype)
  rng = np.random.default_rng(0)
  rows = []
  print(f"device: {jax.devices()[0].device_kind} ({jax.default_backend()})")
  print(f"{'tokens':>6} {'E':>3} {'impl':>18} {'median_ms':>10} {'TFLOP/s':>8} {'compile_s':>9}"
        f" {'vs ragged':>9} {'max_err':>8}")
  for T in (int(t) for t in ns.tokens.split(",")):
    for E in (int(e) for e in ns.experts.split(",")):
      sizes = jnp.asarray(routing_sizes(rng, T, E, ns.topk))
      N = T * ns.topk
      x = jnp.asarray(rng.standard_normal((N, ns.dim)) / np.sqrt(ns.dim), dtype)
      w = jnp.asarray(rng.standard_normal((E, ns.dim, ns.hidden)), dtype)
      impls = {"ragged_dot": "ragged_dot"}
      if N * E * ns.hidden * 4 <= ns.dense_max_bytes:
        impls["dense"] = "dense"
      if backend.has_gpu():
        impls.update({name: name for name in CONFIGS})
      ref = None
      base_t = None
      for name in impls:
        cfg = CONFIGS.get(name)
        fn = jax.jit(functools.partial(
            grouped_matmul, implementation="pallas" if cfg else name, block_config=cfg))
        t = bench.time_jitted(fn, x, w, sizes, warmup=3, iters=ns.iters)
        out = np.asarray(fn(x, w, sizes), np.float32)
        ref = out if ref is None else ref
        err = float(np.max(np.abs(out - ref)))
        base_t = t if name == "ragged_dot" else base_t
        flops = 2.0 * N * ns.dim * ns.hidden
        row = dict(tokens=T, experts=E, topk=ns.topk, dim=ns.dim, hidden=ns.hidden, impl=name,
                   tflops=flops / t.median_s / 1e12, speedup_vs_ragged_dot=base_t.median_s / t.median_s,
                   max_abs_err_vs_ragged_dot=err, **t.as_row())
        rows.append(row)
        print(f"{T:>6} {E:>3} {name:>18} {t.median_s * 1e3:>10.3f} {row['tflops']:>8.1f}"
              f" {t.compile_s:>9.2f} {row['speedup_vs_ragged_dot']:>9.2f} {err:>8.1e}", flush=True)
  path = bench.write_result(ns.out, name="grouped_matmul", config=vars(ns), rows=rows,
                            claims=[], papers=["MoE-survey"])
  print(f"wrote {path}")


if __name__ == "__main__":
  main()
