"""scripts/bench.py end to end on a small LNLN (tiny encoder, default shapes): the JSON has every
figure, each tagged measured / extrapolated / quoted. No timing assertions."""

import json
import subprocess
import sys
from pathlib import Path

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
