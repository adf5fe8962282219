"""scripts/bench.py end to end on a small LNLN (tiny encoder, default shapes): the JSON has every
figure, each tagged measured / extrapolated / quoted; msa_jax.bench's quoted figures, ratios,
reference worker, interleaved and alternating --compare. No timing assertions."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from configs import lnln as lnln_config
from msa_jax import allocator
from msa_jax.bench.alternate import alternate_variants
from msa_jax.bench.compare import compare_variants
from msa_jax.bench.figures import fig
from msa_jax.bench.output import format_compare
from msa_jax.bench.quoted import QUOTED_NOTE, ratios, reference_figures
from msa_jax.bench.reference import ReferenceWorker, reference_sgemm

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
  cmd = [
    sys.executable,
    str(ROOT / "scripts" / "bench.py"),
    *SMALL_LNLN,
    "--eval-batch",
    "8",
    "--sweep-samples",
    "8",
    "--steps",
    "2",
    "--warmup",
    "0",
    "--json",
    str(out),
  ]
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
  ref = reference_figures("lnln", "bert-base", "paper", 64, "float32")
  assert ref["train_step_s"] == {"value": 62.5, "unit": "s", "kind": "quoted", "note": QUOTED_NOTE}
  assert reference_figures("lnln", "bert-base", "paper", 32, "float32") is None
  assert reference_figures("lnln", "tiny", "paper", 64, "float32") is None
  result = {
    "reference": ref,
    "train": {"step_s": {"median": fig(25.0, "s", "measured")}},
    "memory": {"peak_rss_gb": fig(7.05, "GB", "measured")},
    "eval": {
      "s_per_sample_eval": fig(0.05, "s", "measured"),
      "full_sweep_h_msa_jax": fig(2.0, "h", "extrapolated"),
    },
  }
  r = ratios(result)
  assert r["train_step_speedup"]["value"] == 2.5 and r["train_step_speedup"]["kind"] == "measured"
  assert r["peak_rss_ratio"]["value"] == 2.0
  assert (
    r["full_sweep_speedup"]["value"] == 3.4 and r["full_sweep_speedup"]["kind"] == "extrapolated"
  )


SMALL_LNLN = [
  "--method",
  "lnln",
  "--encoder",
  "tiny",
  "--shape",
  "default",
  "--batch",
  "8",
  "--sgemm-n",
  "128",
  "--set",
  "model.depth=1",
  "--set",
  "model.num_hyper_layers=2",
  "--set",
  "model.fusion_depth=1",
  "--set",
  "model.dim=32",
  "--set",
  "model.heads=2",
  "--set",
  "model.dim_head=16",
]


def test_compare_interleaves_variants_and_reports_ratios(tmp_path):
  out = tmp_path / "ab.json"
  cmd = [
    sys.executable,
    str(ROOT / "scripts" / "bench.py"),
    *SMALL_LNLN,
    "--steps",
    "3",
    "--warmup",
    "1",
    "--json",
    str(out),
    "--compare",
    "",
    "model.dropout_impl=threefry,model.remat=True",
  ]
  proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "3 interleaved rounds" in proc.stdout and "(base)" in proc.stdout
  result = json.loads(out.read_text())
  assert result["config"]["steps"] == 3 and "model.dim=32" in result["config"]["set"]
  base, other = result["compare"]
  assert (
    base["variant"] == "" and other["variant"] == "model.dropout_impl=threefry,model.remat=True"
  )
  assert base["step_ratio"]["value"] == 1.0
  ratios = [t / b for t, b in zip(other["step_s"]["all_s"], base["step_s"]["all_s"])]
  assert other["step_ratio"]["value"] == pytest.approx(sorted(ratios)[1], rel=1e-3)
  for row in (base, other):
    assert row["step_s"]["n"] == 3 and row["compile_s"]["value"] > 0
    assert row["xla_temp_gb"]["kind"] == "measured" and row["xla_temp_gb"]["value"] > 0
  assert all(f["kind"] in KINDS for f in _figures(result))


def test_compare_refuses_a_malformed_variant_before_compiling():
  cmd = [
    sys.executable,
    str(ROOT / "scripts" / "bench.py"),
    *SMALL_LNLN,
    "--compare",
    "",
    "model.remat",
  ]
  proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert proc.returncode != 0
  assert "--compare variant 'model.remat': 'model.remat' is not KEY=VALUE" in proc.stderr
  assert "compiled" not in proc.stderr


# --- the authors' step as a --compare row (scripts/reference/bench_reference.py --worker) -------

FAKE_WORKER = """
import json, os, sys
print("cpu", flush=True)  # the authors' train.py prints its device: not an answer
env = {k: os.environ.get(k) for k in ("LD_PRELOAD", "MSA_JAX_MALLOC")}
ready = {"ready": True, "torch": "fake", "argv": sys.argv[1:], "env": env, "sgemm_gflops": 300.0}
print(json.dumps(ready), flush=True)
times = iter([3.0, 6.0, 9.0, 12.0, 15.0])
for line in sys.stdin:
  cmd = line.strip()
  if cmd == "step":
    print(json.dumps({"step_s": next(times), "cpu_s": 1.0}), flush=True)
  elif cmd == "rss":
    print(json.dumps({"peak_rss_gb": 1.5}), flush=True)
  elif cmd == "quit":
    break
  else:
    print(json.dumps({"error": f"unknown command {cmd!r}"}), flush=True)
"""


def _bench_module():
  sys.path.insert(0, str(ROOT / "scripts"))
  try:
    import bench
  finally:
    sys.path.pop(0)
  return bench


def _fake_worker(tmp_path, body=FAKE_WORKER):
  """An executable standing in for the torch Python: it ignores the script path it is given and
  speaks the worker protocol."""
  script = tmp_path / "fake_worker.py"
  script.write_text(body)
  exe = tmp_path / "python-with-torch"
  exe.write_text(f'#!/bin/sh\nexec {sys.executable} {script} "$@"\n')
  exe.chmod(0o755)
  return str(exe)


@pytest.mark.parametrize(
  "extra, message",
  [
    (["--reference-python", "/bin/sh"], "--reference-python and --reference-repo go together"),
    (["--reference-python", "/bin/sh", "--reference-repo", "."], "needs --compare"),
    (
      ["--reference-python", "/bin/sh", "--reference-repo", ".", "--compare", ""],
      "runs one --method (lnln or gear) at --shape paper with --encoder minilm or bert-base, not "
      "lnln / default / tiny",
    ),
    (
      ["--reference-python", "/bin/sh", "--reference-repo", ".", "--reference-warmup", "-1"],
      "--reference-warmup -1: expected a count >= 0",
    ),
  ],
)
def test_reference_options_are_checked(extra, message, capsys):
  bench = _bench_module()
  with pytest.raises(SystemExit):
    bench.parse_args(["--method", "lnln", "--encoder", "tiny", "--shape", "default", *extra])
  assert message in capsys.readouterr().err


@pytest.mark.parametrize(
  "method, marker", [("lnln", "configs/train_mosi.yaml"), ("gear", "src/models/IFL_ES.py")]
)
def test_reference_repo_must_be_a_checkout_of_the_method(method, marker, tmp_path, capsys):
  bench = _bench_module()
  argv = [
    "--method",
    method,
    "--encoder",
    "minilm",
    "--shape",
    "paper",
    "--compare",
    "",
    "--reference-python",
    _fake_worker(tmp_path),
    "--reference-repo",
    str(tmp_path),
  ]
  with pytest.raises(SystemExit):
    bench.parse_args(argv)
  assert f"--reference-repo {tmp_path}: no {marker} there" in capsys.readouterr().err
  (tmp_path / marker).parent.mkdir(parents=True)
  (tmp_path / marker).write_text("")
  assert bench.parse_args(argv).reference_repo == str(tmp_path)


def test_reference_worker_protocol_and_failures(tmp_path):
  bench = _bench_module()
  args = bench.parse_args(
    [
      *("--method", "lnln", "--encoder", "bert-base", "--shape", "paper"),
      *("--warmup", "0", "--reference-warmup", "1"),
    ]
  )
  args.reference_python, args.reference_repo = _fake_worker(tmp_path), "/ref/LNLN"
  worker = ReferenceWorker.start(args)  # ready, then one reference warm-up step (3.0 s)
  try:
    assert worker.info["torch"] == "fake"
    assert worker.info["argv"][1:] == [
      "--worker",
      "--method",
      "lnln",
      "--ref",
      "/ref/LNLN",
      "--encoder",
      "bert-base",
      "--batch",
      "64",
      "--sgemm-n",
      "2048",
    ]
    assert worker.info["argv"][0].endswith("scripts/reference/bench_reference.py")
    assert [worker.step(), worker.step()] == [6.0, 9.0]
    assert worker.peak_rss_gb() == 1.5
    with pytest.raises(RuntimeError, match="reference worker: unknown command 'bogus'"):
      worker._ask("bogus")
  finally:
    worker.close()
  assert worker.proc.wait(timeout=10) == 0
  dead = _fake_worker(tmp_path, "import sys\nsys.exit(3)\n")
  args.reference_python = dead
  with pytest.raises(RuntimeError, match=r"exited \(code 3\) without answering"):
    ReferenceWorker.start(args)


@pytest.mark.parametrize("choice", ["system", "same"])
def test_the_reference_runs_on_the_system_allocator_unless_asked(choice, tmp_path, monkeypatch):
  """By default the authors' step runs as their users run it, on the C library's allocator, even
  when ours runs on mimalloc; `--reference-malloc same` gives it our allocator."""
  if not sys.platform.startswith("linux"):
    pytest.skip("LD_PRELOAD is Linux's")
  library = allocator.mimalloc_library()
  monkeypatch.setenv("LD_PRELOAD", str(library))
  bench = _bench_module()
  args = bench.parse_args(
    [*("--method", "gear", "--encoder", "minilm", "--shape", "paper", "--reference-warmup", "0")]
    + ["--reference-malloc", choice]
  )
  args.reference_python, args.reference_repo = _fake_worker(tmp_path), "/ref/GEAR"
  worker = ReferenceWorker.start(args)
  worker.close()
  if choice == "system":
    assert worker.info["env"] == {"LD_PRELOAD": None, "MSA_JAX_MALLOC": "system"}
  else:
    assert worker.info["env"]["LD_PRELOAD"] == str(library)


def test_compare_interleaves_the_reference_and_reports_its_speedup(tmp_path):
  bench = _bench_module()
  args = bench.parse_args(
    [*SMALL_LNLN, "--steps", "2", "--warmup", "0", "--reference-warmup", "0", "--compare", ""]
  )
  args.reference_python, args.reference_repo = _fake_worker(tmp_path), "/ref/LNLN"
  result = compare_variants(args, lnln_config.get_config)
  ours = result["compare"][0]["step_s"]["all_s"]
  ref = result["reference"]
  assert ref["torch"] == "fake" and ref["step_s"]["all_s"] == [3.0, 6.0]
  assert ref["step_ratio"]["value"] == pytest.approx((3.0 / ours[0] + 6.0 / ours[1]) / 2, rel=1e-3)
  assert ref["peak_rss_gb"]["value"] == 1.5
  assert ref["sgemm"]["value"] == 300.0 and "sgemm_gflops" not in ref
  assert all(f["kind"] in KINDS for f in _figures(result))
  table = format_compare(result)
  assert table.splitlines()[0].endswith("GFLOP/s; the reference's torch sgemm 300)")
  assert "reference: authors' PyTorch (torch fake)" in table.splitlines()[-1]


FAKE_REFERENCE_RUN = """
import json, pathlib, sys
argv = sys.argv[2:]  # after the script's path
assert argv[:4] == ["--warmup", "2", "--steps", "2"], argv
counter = pathlib.Path(__file__).with_name("rounds")
r = int(counter.read_text()) if counter.exists() else 0
counter.write_text(str(r + 1))
print("cpu", flush=True)  # the authors' code prints its device: not the result
steps = [3.0 + 4 * r, 5.0 + 4 * r]
print(json.dumps({"torch": "fake", "step_s": steps, "step_s_median": sum(steps) / 2,
                  "cpu_s": [1.0, 1.0], "peak_rss_gb": 1.5 + r, "sgemm_gflops": 250.0 + 100 * r}),
      flush=True)
"""


def test_alternate_runs_each_variant_and_the_reference_in_processes_of_their_own(tmp_path):
  bench = _bench_module()
  args = bench.parse_args(
    [
      *SMALL_LNLN,
      *("--steps", "2", "--warmup", "0", "--reference-warmup", "2", "--alternate", "2"),
      *("--compare", "model.remat=True"),
    ]
  )
  args.reference_python, args.reference_repo = _fake_worker(tmp_path, FAKE_REFERENCE_RUN), "/r"
  result = alternate_variants(args, ROOT / "scripts" / "bench.py", 2)
  assert result["config"]["protocol"] == "alternating" and result["config"]["rounds"] == 2
  (base,) = result["compare"]
  assert base["variant"] == "model.remat=True" and base["step_ratio"]["value"] == 1.0
  assert base["step_s"]["n"] == 4 and len(base["round_median_s"]) == 2  # 2 rounds × 2 steps
  assert base["compile_s"]["value"] > 0 and base["compile_s_cached"]["value"] > 0
  assert base["peak_rss_gb"]["value"] > 0 and base["xla_temp_gb"]["value"] > 0
  # a round's figure is the median of its steps
  assert base["round_median_s"] == pytest.approx(
    [sum(base["step_s"]["all_s"][:2]) / 2, sum(base["step_s"]["all_s"][2:]) / 2], rel=1e-5
  )
  ref = result["reference"]
  assert ref["torch"] == "fake" and ref["step_s"]["all_s"] == [3.0, 5.0, 7.0, 9.0]
  assert ref["round_median_s"] == [4.0, 8.0] and ref["peak_rss_gb"]["value"] == 2.5
  assert ref["sgemm"]["value"] == 300.0 and "(250-350)" in ref["sgemm"]["note"]
  # the speed-up is the median over rounds of the same round's quotient
  speedups = [4.0 / base["round_median_s"][0], 8.0 / base["round_median_s"][1]]
  assert ref["step_ratio"]["value"] == pytest.approx(sum(speedups) / 2, rel=1e-4)
  assert all(f["kind"] in KINDS for f in _figures(result))
  table = format_compare(result)
  assert "2 alternating rounds of 2 steps, one process at a time" in table.splitlines()[0]
  assert "reference: authors' PyTorch (torch fake)" in table.splitlines()[-1]


def test_alternate_reports_a_failed_process_with_its_error(tmp_path):
  bench = _bench_module()
  args = bench.parse_args(
    [*SMALL_LNLN, "--steps", "1", "--warmup", "0", "--alternate", "1", "--compare", ""]
  )
  args.reference_python = _fake_worker(tmp_path, "import sys\nsys.exit('no torch here')\n")
  args.reference_repo = "/r"
  with pytest.raises(RuntimeError, match="reference failed \\(exit 1\\):\nno torch here"):
    alternate_variants(args, ROOT / "scripts" / "bench.py", 1)


@pytest.mark.parametrize(
  "extra, message",
  [
    (["--alternate", "2"], "--alternate needs --compare"),
    (["--alternate", "0", "--compare", ""], "--alternate 0: expected a round count >= 1"),
  ],
)
def test_alternate_options_are_checked(extra, message, capsys):
  bench = _bench_module()
  with pytest.raises(SystemExit):
    bench.parse_args(["--method", "lnln", *extra])
  assert message in capsys.readouterr().err


def test_reference_sgemm_is_the_median_of_the_reference_processes_rates():
  assert reference_sgemm([{"step_s": [1.0]}]) is None  # a reference that measured none
  one = reference_sgemm([{"sgemm_gflops": 310.0}])
  assert one["value"] == 310.0 and one["kind"] == "measured" and "median" not in one["note"]
  three = reference_sgemm([{"sgemm_gflops": r} for r in (250.0, 330.0, 300.0)])
  assert three["value"] == 300.0 and "(250-330)" in three["note"]
