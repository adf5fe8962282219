"""One configuration measured in this process (`run_one`), or several, each in its own process so
that peak memory is per configuration (`run_children`)."""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import subprocess
import sys
import tempfile
from typing import Any

import jax

from msa_jax import sharding
from msa_jax.bench.configuration import GetConfig, build_configuration, timed_step_count
from msa_jax.bench.evaluation import bench_eval
from msa_jax.bench.figures import fig
from msa_jax.bench.machine import device_memory, load_average, machine_info, sgemm_rate
from msa_jax.bench.memory import process_peak_rss, reset_peak_rss
from msa_jax.bench.output import format_table
from msa_jax.bench.quoted import IDLE_SGEMM_GFLOPS, ratios, reference_figures
from msa_jax.bench.timing import log
from msa_jax.bench.train_step import bench_lstm, bench_train
from msa_jax.train import lnln as lnln_train

ROOT = pathlib.Path(__file__).resolve().parents[2]


def run_one(args: argparse.Namespace, get_config: GetConfig) -> dict[str, Any]:
  """Benchmarks one (method, encoder, shape) configuration of the command line's options
  (scripts/bench.py) in this process; `get_config` gives the method's default config."""
  reset_peak_rss()
  load_before = load_average()
  config, splits, method = build_configuration(args, args.set, get_config)
  mesh = sharding.make_mesh()
  sgemm = sgemm_rate(args.sgemm_n)
  log(
    f"{args.method}/{args.encoder}/{args.shape}: sgemm {sgemm['value']:.0f} GFLOP/s, "
    f"load {load_before}"
  )
  steps = timed_step_count(args)
  train, state, batch = bench_train(method, config, splits, mesh, args.warmup, steps, args.profile)
  sgemm_after = sgemm_rate(args.sgemm_n)
  sgemm = fig(
    0.5 * (sgemm["value"] + sgemm_after["value"]),
    "GFLOP/s",
    "measured",
    f"{sgemm['note']}; mean of the rates before ({sgemm['value']:.1f}) and after "
    f"({sgemm_after['value']:.1f}) the train steps",
  )
  if "gflops_per_s" in train:
    utilisation = train["gflops_per_s"]["value"] / sgemm["value"]
    train["utilisation"] = fig(
      utilisation,
      "fraction of sgemm",
      "measured",
      "model GFLOP/s / the sgemm rate measured in the same process",
    )
    if jax.default_backend() == "cpu":
      train["step_s_sgemm_scaled"] = fig(
        train["flops_per_step"]["value"] / (utilisation * IDLE_SGEMM_GFLOPS * 1e9),
        "s",
        "extrapolated",
        f"model FLOPs / (utilisation × {IDLE_SGEMM_GFLOPS:.0f} GFLOP/s, the "
        "quoted jitted-matmul rate of this machine kind when idle): the step on an idle machine "
        "if the step keeps its fraction of sgemm",
      )
  result: dict[str, Any] = {
    "config": {
      "method": args.method,
      "encoder": args.encoder,
      "shape": args.shape,
      "batch": config.batch_size,
      "eval_batch": config.eval_batch_size,
      "dtype": args.dtype,
      "attention_chunk": config.model.attention_chunk if args.method == "lnln" else None,
      "remat": config.model.remat,
      "warmup": args.warmup,
      "steps": steps,
      "model": json.loads(config.model.to_json_best_effort()),
    },
    "machine": {**machine_info(), "load_before": load_before},
    "sgemm": sgemm,
    "train": train,
  }
  if args.method == "gear":
    result["lstm"] = bench_lstm(config, splits, state.params, batch, args.warmup, args.steps)
  if args.sweep_samples > 0:
    rates = lnln_train.sweep_rates(config) if args.method == "lnln" else [0.0]
    result["eval"] = bench_eval(
      method, config, splits, mesh, state.params, rates, args.sweep_samples, min(args.warmup, 1)
    )
  result["memory"] = {
    "peak_rss_gb": fig(
      process_peak_rss() / 1e9,
      "GB",
      "measured",
      "peak resident set of the whole process (the largest phase peak, ru_maxrss)",
    ),
    **device_memory(),
  }
  result["machine"]["load_after"] = load_average()
  result["reference"] = reference_figures(
    args.method, args.encoder, args.shape, config.batch_size, args.dtype
  )
  result["ratios"] = ratios(result)
  return result


def child_command(
  args: argparse.Namespace, script: pathlib.Path, method: str, encoder: str, shape: str, out: str
) -> list[str]:
  """The command line that runs `script` (scripts/bench.py) on one configuration of `args`,
  writing its JSON to `out`."""
  cmd = [
    sys.executable,
    str(script),
    "--method",
    method,
    "--encoder",
    encoder,
    "--shape",
    shape,
    "--steps",
    str(args.steps),
    "--warmup",
    str(args.warmup),
    "--dtype",
    args.dtype,
    "--sweep-samples",
    str(args.sweep_samples),
    "--sgemm-n",
    str(args.sgemm_n),
    "--json",
    out,
    "--quiet",
  ]
  for flag, value in (
    ("--batch", args.batch),
    ("--eval-batch", args.eval_batch),
    ("--attention-chunk", args.attention_chunk),
  ):
    if value is not None:
      cmd += [flag, str(value)]
  if args.remat is not None:
    cmd.append("--remat" if args.remat else "--no-remat")
  for item in args.set:
    cmd += ["--set", item]
  if args.profile:
    cmd += ["--profile", os.path.join(args.profile, f"{method}_{encoder}_{shape}")]
  return cmd


def run_children(
  args: argparse.Namespace, combos: list[tuple[str, str, str]], script: pathlib.Path
) -> list[dict]:
  """Runs each (method, encoder, shape) through `script` in its own process, printing its table
  row; a failed one is recorded with its error."""
  results = []
  with tempfile.TemporaryDirectory() as tmp:
    for i, (method, encoder, shape) in enumerate(combos):
      out = os.path.join(tmp, f"{i}.json")
      print(f"[bench] {method} / {encoder} / {shape} ...", flush=True)
      proc = subprocess.run(
        child_command(args, script, method, encoder, shape, out),
        cwd=ROOT,
        capture_output=True,
        text=True,
      )
      if proc.returncode == 0 and os.path.exists(out):
        with open(out, encoding="utf-8") as f:
          results.append(json.load(f))
        print(format_table(results[-1:], header=False), flush=True)
      else:
        tail = (proc.stderr or proc.stdout)[-2000:]
        print(f"[bench] failed (exit {proc.returncode}):\n{tail}", flush=True)
        results.append(
          {
            "config": {"method": method, "encoder": encoder, "shape": shape},
            "error": {"returncode": proc.returncode, "stderr_tail": tail},
          }
        )
  return results
