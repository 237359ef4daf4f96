"""Benchmark timing, environment record, claims and the result JSON."""

import dataclasses
import functools
import json
import pathlib
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsys._src import bench


@jax.jit
def slow_to_compile(x):
  # 400 dependent ops: compiling takes far longer than running on 8 floats.
  for i in range(400):
    x = jnp.sin(x) * jnp.float32(1.0 + 1e-3 * i)
  return x


def test_timer_separates_compile_from_run():
  x = jnp.ones(8, jnp.float32)
  t = bench.time_jitted(slow_to_compile, x, warmup=1, iters=5)
  assert t.compile_s is not None
  assert len(t.times_s) == 5
  assert t.p10_s <= t.median_s <= t.p90_s
  # If compilation leaked into the timed runs, they would be of the order of
  # compile_s; a timed run must be far faster (median: robust to a stray spike).
  assert t.median_s * 20 < t.compile_s, t
  assert t.median_s == pytest.approx(float(np.median(t.times_s)))


def test_timer_handles_static_arguments():
  @functools.partial(jax.jit, static_argnums=(1,), static_argnames=("k",))
  def f(x, n, k=2, y=None):
    return x * n * k + y

  x = jnp.ones(4, jnp.float32)
  t = bench.time_jitted(f, x, 3, k=4, y=x, iters=3)
  assert t.compile_s is not None and len(t.times_s) == 3


def test_timer_on_plain_callable_has_no_compile_time():
  calls = []

  def f(x):
    calls.append(1)
    return x + 1

  t = bench.time_jitted(f, np.ones(3), warmup=2, iters=4)
  assert t.compile_s is None
  assert len(calls) == 1 + 2 + 4  # first call, warm-up, timed
  assert t.first_call_s >= 0


def test_timer_min_time_extends_runs():
  t = bench.time_jitted(lambda: None, iters=2, min_time_s=1e-3, max_iters=50)
  assert 2 <= len(t.times_s) <= 50
  with pytest.raises(ValueError, match="iters must be >= 1"):
    bench.time_jitted(lambda: None, iters=0)


def test_environment_record():
  env = bench.environment()
  assert env["jax"] == jax.__version__
  assert env["backend"] == jax.default_backend()
  assert env["device_kind"] == jax.devices()[0].device_kind
  assert env["device_count"] == jax.device_count()
  assert re.fullmatch(r"[0-9a-f]{40}(-dirty)?|unknown", env["git_commit"])


def test_claim_requires_a_computed_bool():
  measured = 1.7
  c = bench.Claim("speedup", "faster than XLA", "2.0x", measured, holds=np.bool_(measured > 1))
  assert c.holds is True
  with pytest.raises(TypeError, match="holds must be a bool"):
    bench.Claim("x", "s", "p", 1.0, holds=1)


@dataclasses.dataclass(frozen=True)
class Cfg:
  sizes: tuple[int, ...] = (1, 2)


def test_write_result_roundtrip(tmp_path):
  rows = [{"method": "a", "time_s": np.float32(0.5), "n": np.int64(3),
           "curve": jnp.arange(3), "bad": float("nan")}]
  claims = [bench.Claim("c1", "a is fast", "1.0 s", 0.5, holds=True, source="Inf-MLLM")]
  path = bench.write_result(
      tmp_path, name="demo", config=Cfg(), rows=rows, claims=claims,
      papers=["ClusterKV", "Inf-MLLM"], plots=["demo.png"], env={"backend": "cpu"},
  )
  record = json.loads(pathlib.Path(path).read_text())
  assert record["schema"] == bench.SCHEMA_VERSION
  assert record["config"] == {"sizes": [1, 2]}
  assert record["rows"][0] == {"method": "a", "time_s": 0.5, "n": 3,
                               "curve": [0, 1, 2], "bad": "nan"}
  assert record["claims"][0]["source"] == "Inf-MLLM"
  assert record["papers"] == ["ClusterKV", "Inf-MLLM"]
  assert not (tmp_path / "demo.json.tmp").exists()


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(papers=["NoSuchPaper"]), "unknown paper 'NoSuchPaper'"),
        (dict(claims=[bench.Claim("a", "s", "p", 1, True)] * 2), "ids must be unique"),
        (dict(claims=[bench.Claim("a", "s", "p", 1, True, source="Gaze")]),
         "source 'Gaze' is not among papers"),
    ],
)
def test_write_result_rejects_bad_records(tmp_path, kwargs, match):
  args = dict(name="x", config={}, rows=[], claims=[], papers=["ClusterKV"], env={})
  args.update(kwargs)
  with pytest.raises(ValueError, match=match):
    bench.write_result(tmp_path, **args)


def test_cli_loads_config_and_writes(tmp_path):
  cfg_path = tmp_path / "smoke.yaml"
  cfg_path.write_text("sizes: [4, 8]\n")
  seen = []

  def run(cfg, out_dir):
    seen.append((cfg, out_dir))
    rows = [{"size": s, "sum": s * 2} for s in cfg.sizes]
    total = sum(r["sum"] for r in rows)
    return dict(rows=rows, claims=[bench.Claim("sum", "sum is 24", "24", total, total == 24)],
                papers=["Gaze"])

  path = bench.cli("demo", Cfg, run, ["--config", str(cfg_path), "--out", str(tmp_path)])
  assert seen == [(Cfg(sizes=(4, 8)), str(tmp_path))]
  record = json.loads(pathlib.Path(path).read_text())
  assert record["claims"][0]["measured"] == 24 and record["claims"][0]["holds"] is True
