"""Time the dequantising matmul (HOBBIT's low-precision experts): Pallas vs XLA vs bf16.

    python benchmarks/kernels/quant_matmul.py --out results/kernels
    python benchmarks/kernels/quant_matmul.py --rows 16,64 --dim 512 --hidden 512 --iters 5  # CPU

``x [N, D] @ W [D, F]`` with W stored as int8 / int4 / int2 codes packed along D
and one fp16 scale per `group` rows (`jaxsys.moe.quant`). Implementations:

* ``bf16_dense``: a plain bfloat16 matmul on the unquantised weights (the
  high-precision expert HOBBIT loads on a hit, and the speed baseline);
* ``reference``: `quant_matmul(implementation="reference")`: dequantise to
  float32, then a HIGHEST-precision float32 dot (the accuracy reference);
* ``xla_dequant_bf16``: dequantise to bfloat16 in XLA, then a bfloat16 dot (what
  plain XLA does with packed weights);
* ``pallas_<tiling>``: the Triton kernel, which reads only the packed bytes and
  the scales (GPU only).

Compile time apart, medians (jaxsys._src.bench). ``weight_GBps`` is the bytes of
the weights as stored (packed + scales for the quantised ones) over the median
time: at decode sizes (small N) the matmul is bound by it. ``rel_err`` is the
largest difference from ``reference`` over the largest |reference| entry (for
``bf16_dense`` that is the quantisation error itself). On a CPU only the XLA
paths run. Prints a table and writes quant_matmul.json (rows only; no claims).
"""

from __future__ import annotations

import argparse
import functools

import jax
import jax.numpy as jnp
import numpy as np

from jaxsys._src import backend, bench
from jaxsys.kernels.quant_matmul import BlockConfig, quant_matmul
from jaxsys.moe import quant

CONFIGS = {  # name: BlockConfig for the Pallas kernel; block_m is fitted to N when None
    "pallas_auto": None,
    "pallas_m_128x64": "n128k64",
    "pallas_m_64x128": "n64k128",
}


def pallas_config(name: str, N: int) -> BlockConfig:
  base = BlockConfig.get_default(N)
  kind = CONFIGS[name]
  if kind == "n128k64":
    return BlockConfig(base.block_m, 128, 64, num_warps=4, num_stages=3)
  if kind == "n64k128":
    return BlockConfig(base.block_m, 64, 128, num_warps=4, num_stages=3)
  return base


def xla_dequant_bf16(x, packed, scales, *, bits, group):
  w = quant.dequantize_packed(packed, scales, bits=bits, group=group, dtype=jnp.bfloat16)
  return jnp.dot(x, w, preferred_element_type=jnp.float32).astype(x.dtype)


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--rows", default="16,256,4096", help="N values (tokens)")
  p.add_argument("--dim", type=int, default=4096, help="D (contraction)")
  p.add_argument("--hidden", type=int, default=4096, help="F (output columns)")
  p.add_argument("--bits", default="8,4,2")
  p.add_argument("--group", type=int, default=32)
  p.add_argument("--iters", type=int, default=20)
  p.add_argument("--out", default="results/kernels")
  ns = p.parse_args(argv)
  rng = np.random.default_rng(0)
  D, F = ns.dim, ns.hidden
  w = jnp.asarray(rng.standard_normal((D, F)) / np.sqrt(D), jnp.float32)
  w_bf16 = w.astype(jnp.bfloat16)
  rows = []
  print(f"device: {jax.devices()[0].device_kind} ({jax.default_backend()})")
  print(f"{'N':>5} {'bits':>4} {'impl':>18} {'median_ms':>10} {'TFLOP/s':>8} {'weight_GBps':>11}"
        f" {'compile_s':>9} {'vs bf16':>8} {'rel_err':>8}")
  for N in (int(n) for n in ns.rows.split(",")):
    x = jnp.asarray(rng.standard_normal((N, D)), jnp.bfloat16)
    dense_fn = jax.jit(lambda x, w: jnp.dot(x, w, preferred_element_type=jnp.float32).astype(x.dtype))
    t_dense = bench.time_jitted(dense_fn, x, w_bf16, warmup=3, iters=ns.iters)
    out_dense = np.asarray(dense_fn(x, w_bf16), np.float32)
    for bits in (int(b) for b in ns.bits.split(",")):
      q = quant.quantize(w, bits=bits, group=ns.group)
      args = (x, q.packed, q.scales)
      impls = {
          "reference": jax.jit(functools.partial(quant_matmul, bits=bits, group=ns.group,
                                                 implementation="reference")),
          "xla_dequant_bf16": jax.jit(functools.partial(xla_dequant_bf16, bits=bits,
                                                        group=ns.group)),
      }
      if backend.has_gpu():
        for name in CONFIGS:
          impls[name] = jax.jit(functools.partial(
              quant_matmul, bits=bits, group=ns.group, implementation="pallas",
              block_config=pallas_config(name, N)))
      measured = [("bf16_dense", t_dense, out_dense, w_bf16.nbytes)]
      for name, fn in impls.items():  # timed before any other call, so compile_s is real
        try:
          t = bench.time_jitted(fn, *args, warmup=3, iters=ns.iters)
          out = np.asarray(fn(*args), np.float32)
        except Exception as e:  # pylint: disable=broad-except  # one bad tiling, not the table
          print(f"{N:>5} {bits:>4} {name:>18} failed: {type(e).__name__}: {str(e)[:200]}")
          rows.append(dict(rows=N, dim=D, hidden=F, bits=bits, impl=name, error=str(e)[:500]))
          continue
        measured.append((name, t, out, quant.nbytes(q)))
      ref = next(out for name, _, out, _ in measured if name == "reference")
      ref_scale = float(np.max(np.abs(ref))) or 1.0
      for name, t, out, wbytes in measured:
        err = float(np.max(np.abs(out - ref))) / ref_scale
        row = dict(rows=N, dim=D, hidden=F, bits=bits, group=ns.group, impl=name,
                   weight_bytes=wbytes, tflops=2.0 * N * D * F / t.median_s / 1e12,
                   weight_GBps=wbytes / t.median_s / 1e9,
                   speedup_vs_bf16_dense=t_dense.median_s / t.median_s, rel_err=err, **t.as_row())
        rows.append(row)
        print(f"{N:>5} {bits:>4} {name:>18} {t.median_s * 1e3:>10.3f} {row['tflops']:>8.2f}"
              f" {row['weight_GBps']:>11.1f} {t.compile_s or 0.0:>9.2f}"
              f" {row['speedup_vs_bf16_dense']:>8.2f} {err:>8.1e}", flush=True)
  path = bench.write_result(ns.out, name="quant_matmul", config=vars(ns), rows=rows,
                            claims=[], papers=["HOBBIT"])
  print(f"wrote {path}")


if __name__ == "__main__":
  main()
