"""The training loop's prediction (vmapped over missing rates) compiled and timed on test batches,
and the full MOSI evaluation extrapolated from its throughput."""

from __future__ import annotations

import math
import os
import statistics
import time
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections

from msa_jax import sharding
from msa_jax.bench.figures import fig, time_stats
from msa_jax.bench.flops import flops_of, plain_method
from msa_jax.bench.memory import phase_peak_rss, reset_peak_rss
from msa_jax.bench.quoted import REFERENCE_SELECTION
from msa_jax.bench.timing import log, timed
from msa_jax.data import pipeline
from msa_jax.data.split import Split
from msa_jax.evaluate.predict import make_predict
from msa_jax.train.method import Method

MOSI_TEST = 686  # MOSI test samples
SEEDS = 3  # seeds of a full evaluation
GEAR_EVAL_SPLITS = 5  # test + ood_text, ood_audio, ood_vision, ood_all


def bench_eval(
  method: Method,
  config: ml_collections.ConfigDict,
  splits: dict[str, Split],
  mesh,
  params,
  rates: list[float],
  sweep_samples: int,
  warmup: int,
) -> dict[str, Any]:
  """Compile and time the (vmapped over rates) prediction on test batches."""
  bs = config.eval_batch_size
  ds = pipeline.eval_dataset(splits["test"], bs)
  n_batches = max(1, min(len(ds), math.ceil(sweep_samples / bs)))
  batches = [sharding.put_batch(pipeline.device_arrays(ds[i]), mesh) for i in range(n_batches)]
  # As the training loop evaluates: `eval_rates_per_pass` rates at a time, in one program.
  predict = make_predict(method.predict_fn, mesh, method.eval_rates_per_pass)
  key = jax.random.key(method.mask_seed)
  rates_arr = jnp.asarray(rates, jnp.float32)
  reset_peak_rss()
  start = time.perf_counter()
  lowered = predict.lower(params, batches[0], key, rates_arr)
  lower_s = time.perf_counter() - start
  start = time.perf_counter()
  compiled = lowered.compile()
  compile_s = time.perf_counter() - start
  log(f"evaluation: lower {lower_s:.1f}s, compile {compile_s:.1f}s")
  flops = flops_of(
    make_predict(plain_method(config, splits).predict_fn, mesh).lower(
      params, batches[0], key, rates_arr
    )
  )
  for i in range(warmup):
    timed(lambda: compiled(params, batches[i % n_batches], key, rates_arr), jax.block_until_ready)
  timed_calls = [
    timed(lambda: compiled(params, b, key, rates_arr), jax.block_until_ready)[1:] for b in batches
  ]
  times, cpu_times = [t for t, _ in timed_calls], [c for _, c in timed_calls]
  peak = phase_peak_rss()
  per_batch = statistics.median(times)
  per_batch_idle = statistics.median(cpu_times) / max(1, os.cpu_count() or 1)
  log(
    f"evaluation: {n_batches} call(s), median {per_batch:.3f}s wall, "
    f"{statistics.median(cpu_times):.3f}s CPU"
  )
  throughput = bs * len(rates) / per_batch
  figures: dict[str, Any] = {
    "rates": len(rates),
    "eval_batch": bs,
    "batches_timed": n_batches,
    "lower_s": fig(lower_s, "s", "measured"),
    "compile_s": fig(compile_s, "s", "measured"),
    "batch_s": time_stats(times),
    "batch_cpu_s": time_stats(cpu_times),
    "throughput": fig(
      throughput, "sample-evals/s", "measured", f"eval batch {bs} × {len(rates)} rates per call"
    ),
    "s_per_sample_eval": fig(1.0 / throughput, "s", "measured"),
    "s_per_sample_eval_idle_estimate": fig(
      per_batch_idle / (bs * len(rates)),
      "s",
      "extrapolated",
      "median CPU seconds per call / cores / sample-evaluations per call",
    ),
    "peak_rss_eval_gb": fig(
      None if peak is None else peak / 1e9,
      "GB",
      "measured",
      "VmHWM over evaluation compile + calls",
    ),
  }
  if flops is not None:
    figures["flops_per_call"] = fig(flops, "FLOP", "measured", "model FLOPs (plain attention)")
    figures["gflops_per_s"] = fig(flops / per_batch / 1e9, "GFLOP/s", "measured")
  figures.update(full_evaluation_hours(method, bs, len(rates), per_batch, per_batch_idle))
  return figures


def full_evaluation_hours(
  method: Method, batch: int, n_rates: int, call_s: float, call_s_idle: float
) -> dict[str, Any]:
  """The full MOSI evaluation extrapolated from one call's time: LNLN's sweep (all rates ×
  MOSI_TEST × SEEDS × selection metrics, counted as msa_jax does and as the quoted reference
  does); GEAR's test + 4 OOD splits × MOSI_TEST × SEEDS."""
  figures = {}
  calls = math.ceil(MOSI_TEST / batch)
  for suffix, per_call, source in (
    ("", call_s, "measured median call time"),
    ("_idle_estimate", call_s_idle, "median CPU time per call / cores"),
  ):
    if method.name == "lnln":
      for label, n_sel in (
        ("msa_jax", len(method.selection_metrics)),
        ("reference_count", REFERENCE_SELECTION),
      ):
        figures[f"full_sweep_h_{label}{suffix}"] = fig(
          calls * per_call * SEEDS * n_sel / 3600,
          "h",
          "extrapolated",
          f"{calls} calls of {batch}×{n_rates} per sweep × {SEEDS} seeds × {n_sel} selection "
          f"metrics ({n_rates} rates × {MOSI_TEST} samples), from the {source}",
        )
    else:
      figures[f"full_eval_h{suffix}"] = fig(
        calls * per_call * SEEDS * GEAR_EVAL_SPLITS / 3600,
        "h",
        "extrapolated",
        f"test + 4 OOD splits × {MOSI_TEST} samples × {SEEDS} seeds, from the {source}",
      )
  return figures
