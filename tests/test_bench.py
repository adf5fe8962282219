"""scripts/bench.py end to end on a small LNLN (tiny encoder, default shapes): the JSON has every
figure, each tagged measured / extrapolated / quoted. No timing assertions."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
KINDS = {"measured", "extrapolated", "quoted"}


def _figures(node):
  """Every tagged figure ({"value", "unit", "kind"}) inside a JSON tree."""
  if isinstance(node, dict):
    if "kind" in node and "value" in node:
      yield node
    else:
      for v in node.values():
        yield from _figures(v)
  elif isinstance(node, list):
    for v in node:
      yield from _figures(v)


def test_bench_writes_tagged_figures(tmp_path):
  out = tmp_path / "bench.json"
  cmd = [sys.executable, str(ROOT / "scripts" / "bench.py"), "--method", "lnln", "--encoder", "tiny",
         "--shape", "default", "--batch", "8", "--eval-batch", "8", "--sweep-samples", "8", "--steps", "2",
         "--warmup", "0", "--sgemm-n", "128", "--json", str(out),
         "--set", "model.depth=1", "--set", "model.num_hyper_layers=2", "--set", "model.fusion_depth=1",
         "--set", "model.dim=32", "--set", "model.heads=2", "--set", "model.dim_head=16"]
  proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "step s (med)" in proc.stdout
  result = json.loads(out.read_text())
  assert result["config"]["method"] == "lnln" and result["config"]["batch"] == 8
  train, ev = result["train"], result["eval"]
  for key in ("lower_s", "compile_s", "flops_per_step", "gflops_per_s"):
    assert train[key]["kind"] == "measured" and train[key]["value"] > 0, key
  assert train["step_s"]["n"] == 2 and len(train["step_s"]["all_s"]) == 2
  assert {"median", "min", "max", "q1", "q3", "mean"} <= set(train["step_s"])
  assert result["sgemm"]["kind"] == "measured" and result["sgemm"]["value"] > 0
  assert ev["rates"] == 10 and ev["throughput"]["value"] > 0
  for key in ("full_sweep_h_msa_jax", "full_sweep_h_reference_count"):
    assert ev[key]["kind"] == "extrapolated" and ev[key]["value"] > 0
  assert result["memory"]["peak_rss_gb"]["value"] > 0
  assert result["reference"] is None and result["ratios"] == {}  # not the reference's configuration
  figures = list(_figures(result))
  assert len(figures) > 20 and all(f["kind"] in KINDS for f in figures)


def test_quoted_reference_and_ratios():
  import importlib.util
  spec = importlib.util.spec_from_file_location("bench", ROOT / "scripts" / "bench.py")
  bench = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(bench)
  ref = bench.reference_figures("lnln", "bert-base", "paper", 64, "float32")
  assert ref["train_step_s"] == {"value": 62.5, "unit": "s", "kind": "quoted", "note": bench.QUOTED_NOTE}
  assert bench.reference_figures("lnln", "bert-base", "paper", 32, "float32") is None
  assert bench.reference_figures("lnln", "tiny", "paper", 64, "float32") is None
  result = {"reference": ref,
            "train": {"step_s": {"median": bench.fig(25.0, "s", "measured")}},
            "memory": {"peak_rss_gb": bench.fig(7.05, "GB", "measured")},
            "eval": {"s_per_sample_eval": bench.fig(0.05, "s", "measured"),
                     "full_sweep_h_msa_jax": bench.fig(2.0, "h", "extrapolated")}}
  r = bench.ratios(result)
  assert r["train_step_speedup"]["value"] == 2.5 and r["train_step_speedup"]["kind"] == "measured"
  assert r["peak_rss_ratio"]["value"] == 2.0
  assert r["full_sweep_speedup"]["value"] == 3.4 and r["full_sweep_speedup"]["kind"] == "extrapolated"


SMALL_LNLN = ["--method", "lnln", "--encoder", "tiny", "--shape", "default", "--batch", "8",
              "--sgemm-n", "128", "--set", "model.depth=1", "--set", "model.num_hyper_layers=2",
              "--set", "model.fusion_depth=1", "--set", "model.dim=32", "--set", "model.heads=2",
              "--set", "model.dim_head=16"]


def test_compare_interleaves_variants_and_reports_ratios(tmp_path):
  out = tmp_path / "ab.json"
  cmd = [sys.executable, str(ROOT / "scripts" / "bench.py"), *SMALL_LNLN, "--steps", "3",
         "--warmup", "1", "--json", str(out), "--compare", "", "model.dropout_impl=threefry,model.remat=True"]
  proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "3 interleaved rounds" in proc.stdout and "(base)" in proc.stdout
  result = json.loads(out.read_text())
  assert result["config"]["steps"] == 3 and "model.dim=32" in result["config"]["set"]
  base, other = result["compare"]
  assert base["variant"] == "" and other["variant"] == "model.dropout_impl=threefry,model.remat=True"
  assert base["step_ratio"]["value"] == 1.0
  ratios = [t / b for t, b in zip(other["step_s"]["all_s"], base["step_s"]["all_s"])]
  assert other["step_ratio"]["value"] == pytest.approx(sorted(ratios)[1], rel=1e-3)
  for row in (base, other):
    assert row["step_s"]["n"] == 3 and row["compile_s"]["value"] > 0
    assert row["xla_temp_gb"]["kind"] == "measured" and row["xla_temp_gb"]["value"] > 0
  assert all(f["kind"] in KINDS for f in _figures(result))


def test_compare_refuses_a_malformed_variant_before_compiling():
  cmd = [sys.executable, str(ROOT / "scripts" / "bench.py"), *SMALL_LNLN, "--compare", "",
         "model.remat"]
  proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert proc.returncode != 0
  assert "--compare variant 'model.remat': 'model.remat' is not KEY=VALUE" in proc.stderr
  assert "compiled" not in proc.stderr
