"""msa_jax.bench's pieces on their own: the standard-library-only timing and memory probes that
scripts/reference/bench_reference.py loads without jax, the HLO attribution of the profile
summary, and the quoted figures' data file."""

import ast
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from msa_jax.bench import hlo, memory, timing

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "msa_jax" / "bench"


def test_timing_and_memory_import_only_the_standard_library():
  for name in ("timing", "memory"):
    tree = ast.parse((BENCH / f"{name}.py").read_text())
    modules = {
      alias.name.split(".")[0]
      for node in ast.walk(tree)
      if isinstance(node, ast.Import)
      for alias in node.names
    }
    modules |= {
      node.module.split(".")[0]
      for node in ast.walk(tree)
      if isinstance(node, ast.ImportFrom) and node.level == 0
    }
    assert modules <= sys.stdlib_module_names | {"__future__"}, (name, modules)


def test_timed_applies_block_inside_the_span_and_rss_is_positive():
  blocked = []
  out, wall, cpu = timing.timed(lambda: 7, lambda x: blocked.append(x) or x)
  assert out == 7 and blocked == [7] and wall >= 0 and cpu >= 0
  assert timing.timed(lambda: "x")[0] == "x"
  assert memory.max_rss_bytes() > 0 and memory.process_peak_rss() >= memory.max_rss_bytes()


STUBBED_REFERENCE = """
import importlib.util, sys, types
sys.modules["jax"] = sys.modules["msa_jax"] = None  # the torch virtualenv has neither
for name in ("torch", "transformers", "yaml"):
  sys.modules[name] = types.ModuleType(name)
spec = importlib.util.spec_from_file_location("bench_reference", sys.argv[1])
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
out, wall, cpu = module.timing.timed(lambda: 3)
assert out == 3 and wall >= 0 and module.memory.max_rss_bytes() > 0
print("ok")
"""


def test_bench_reference_loads_the_probes_without_jax():
  script = ROOT / "scripts" / "reference" / "bench_reference.py"
  proc = subprocess.run(
    [sys.executable, "-c", STUBBED_REFERENCE, str(script)],
    cwd="/",
    capture_output=True,
    text=True,
    timeout=120,
  )
  assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-2000:]


HLO = """HloModule jit_step

%fused_dot (p0: f32[2,4], p1: f32[4,4]) -> f32[2,4] {
  %p0 = f32[2,4]{1,0} parameter(0)
  %p1 = f32[4,4]{1,0} parameter(1)
  ROOT %dot.1 = f32[2,4]{1,0} dot(%p0, %p1), lhs_contracting_dims={1}, rhs_contracting_dims={0}, \
metadata={op_name="jit(step)/transpose(jvp(LNLN))/text/layer_0/attn/dot_general"}
}

ENTRY %main (a: f32[2,4], b: f32[4,4]) -> f32[2,4] {
  %a = f32[2,4]{1,0} parameter(0)
  %b = f32[4,4]{1,0} parameter(1)
  %fusion.1 = f32[2,4]{1,0} fusion(%a, %b), kind=kOutput, calls=%fused_dot
  ROOT %tanh.2 = f32[2,4]{1,0} tanh(%fusion.1), \
metadata={op_name="jit(step)/jvp(LNLN)/fusion/to_q/tanh"}
}
"""


def test_hlo_instructions_are_attributed_to_model_parts():
  instrs, comps = hlo.parse_hlo(HLO)
  dot_name = "jit(step)/transpose(jvp(LNLN))/text/layer_0/attn/dot_general"
  assert instrs["dot.1"] == ("dot", dot_name, None, "fused_dot")
  assert instrs["fusion.1"] == ("fusion", None, "fused_dot", "main")
  assert comps["fused_dot"] == [dot_name]
  assert hlo.instruction_op_name("fusion.1", instrs, comps) == dot_name  # the fusion's dot
  assert hlo.classify_op(dot_name) == ("backward", "text", "attention core")
  assert hlo.classify_op(hlo.instruction_op_name("tanh.2", instrs, comps)) == (
    "forward",
    "fusion",
    "other",
  )
  assert hlo.classify_op("jit(step)/jvp(LNLN)/fusion/to_q/dot_general") == (
    "forward",
    "fusion",
    "dense",
  )
  assert hlo.classify_op(None) == ("?", "?", "other")


def test_quoted_figures_state_their_source():
  data = json.loads((BENCH / "quoted.json").read_text())
  for repository in ("github.com/Haoyu-ha/LNLN", "github.com/Teng-Sun/GEAR"):
    assert repository in data["source"]
  assert set(data["figures"]) == {"lnln", "gear"}


@pytest.mark.parametrize("method", ["lnln", "gear"])
def test_bench_builds_each_methods_default_config_on_its_random_data(method):
  """The benchmark builds the real Method from each method's default config on random splits
  (GEAR's default selection needs OOD validation splits, which random data lacks)."""
  import argparse

  from configs import gear, lnln
  from msa_jax.bench import configuration

  args = argparse.Namespace(
    method=method,
    encoder="tiny",
    shape="default",
    batch=4,
    eval_batch=4,
    dtype="float32",
    attention_chunk=None,
    remat=None,
  )
  config, splits, built = configuration.build_configuration(
    args, (), {"lnln": lnln.get_config, "gear": gear.get_config}[method]
  )
  assert config.batch_size == 4 and {"train", "valid", "test"} <= set(splits)
  assert built.valid_splits


def test_profile_coverage_is_the_union_of_the_op_spans():
  """Against a per-nanosecond mask of random overlapping spans."""
  from msa_jax.bench.profile import coverage

  rng = np.random.default_rng(0)
  starts = rng.integers(100, 10_000, 60)
  spans = [(int(s), int(s + d)) for s, d in zip(starts, rng.integers(0, 400, 60))]
  mask = np.zeros(11_000, bool)
  for s, e in spans:
    mask[s:e] = True
  extent, covered = coverage(spans)
  assert extent == max(e for _, e in spans) - min(s for s, _ in spans)
  assert covered == int(mask.sum()) and covered < extent
  assert coverage([]) == (0, 0) and coverage([(5, 9), (1, 3)]) == (8, 6)


def _bench_kernels():
  spec = importlib.util.spec_from_file_location(
    "bench_kernels", ROOT / "scripts" / "bench_kernels.py"
  )
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def test_bench_kernels_times_the_layer_products_of_their_shapes(tmp_path):
  """The jax products have the shapes of a BERT layer's at batch × length rows; the command line's
  rates are each product's FLOPs (counted here from the shapes) over its median time."""
  kernels = _bench_kernels()
  calls, block = kernels.jax_calls(batch=2, length=8, sgemm_n=32)
  shapes = {name: block(call()).shape for name, call in calls.items()}
  assert shapes["sgemm"] == (32, 32)
  assert shapes["ff_in_fwd"] == (16, 3072) and shapes["ff_in_dx"] == (16, 768)
  assert shapes["ff_in_dw"] == (768, 3072) and shapes["ff_out_dw"] == (3072, 768)
  assert shapes["proj_dw"] == (768, 768)
  assert shapes["scores"] == shapes["softmax"] == (2, 12, 8, 8)
  assert shapes["values"] == shapes["key_grad"] == (2, 12, 8, 64)

  out = tmp_path / "kernels.json"
  argv = ["--batch", "2", "--length", "8", "--sgemm-n", "32", "--runs", "2", "--json", str(out)]
  proc = subprocess.run(
    [sys.executable, str(ROOT / "scripts" / "bench_kernels.py"), *argv],
    capture_output=True,
    text=True,
    timeout=300,
  )
  assert proc.returncode == 0, proc.stderr[-2000:]
  result = json.loads(out.read_text())
  rows = result["products"]
  expected_flops = {
    "sgemm": 2 * 32**3,
    "ff_in_dw": 2 * 16 * 768 * 3072,
    "ff_out_fwd": 2 * 16 * 3072 * 768,
    "proj_dx": 2 * 16 * 768 * 768,
    "scores": 2 * 2 * 12 * 8 * 8 * 64,
    "key_grad": 2 * 2 * 12 * 8 * 8 * 64,
  }
  for name, flops in expected_flops.items():
    assert rows[name]["gflops_per_s"] == pytest.approx(flops / (rows[name]["ms"] / 1e3) / 1e9)
  assert rows["softmax"]["gflops_per_s"] is None
  dense = {n: sum(rows[f"{n}_{p}"]["ms"] for p in ("fwd", "dx", "dw")) for n in kernels.DENSE}
  layer = dense["ff_in"] + dense["ff_out"] + 4 * dense["proj"]
  assert result["layer_dense_ms"] == pytest.approx(layer)
  assert "one layer's dense work" in proc.stdout
