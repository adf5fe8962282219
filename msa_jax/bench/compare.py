"""A/B: config variants of one configuration, their train steps interleaved in one process.

Each variant is a comma-separated list of KEY=VALUE config overrides. Every variant's train step is
compiled in this one process, then the timed steps are interleaved (one step of each variant per
round), so a drift of the machine's speed, which moved the same configuration's step by ±15%
between runs an hour apart on a 2-vCPU machine, hits every variant alike. Optionally the authors'
PyTorch train step runs as one more variant in a worker process (`reference.ReferenceWorker`).
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import jax

from msa_jax import sharding, xla
from msa_jax.bench.configuration import (
  GetConfig,
  build_configuration,
  timed_step_count,
  train_inputs,
)
from msa_jax.bench.figures import fig, round_ratio, time_stats
from msa_jax.bench.flops import xla_temp_bytes
from msa_jax.bench.machine import machine_info, sgemm_rate
from msa_jax.bench.reference import ReferenceWorker, reference_info
from msa_jax.bench.timing import log, timed
from msa_jax.train import loop


def parse_variant(text: str) -> list[str]:
  """'a.b=1,c=x' -> ['a.b=1', 'c=x']; '' -> []."""
  items = [t.strip() for t in text.split(",") if t.strip()]
  for item in items:
    if "=" not in item:
      raise ValueError(f"--compare variant {text!r}: {item!r} is not KEY=VALUE")
  return items


def compare_variants(args: argparse.Namespace, get_config: GetConfig) -> dict[str, Any]:
  """Compiles each `args.compare` variant's train step (on top of `args.set`) and times them
  interleaved, with the reference worker's step as one more where `args.reference_python` is
  set; `get_config` gives the method's default config."""
  parsed = [(text, parse_variant(text)) for text in args.compare]  # every variant checked first
  mesh = sharding.make_mesh()
  sgemm = sgemm_rate(args.sgemm_n)
  variants = []
  for text, items in parsed:
    config, splits, method = build_configuration(args, [*args.set, *items], get_config)
    state, batches, k_train, _ = train_inputs(method, config, splits, mesh)
    start = time.perf_counter()
    compiled = loop.train_step_fn(method, mesh).lower(state, batches[0], k_train).compile()
    compile_s = time.perf_counter() - start
    xla.release_host_memory()
    for i in range(args.warmup):
      state, _ = timed(lambda: compiled(state, batches[i % 2], k_train), jax.block_until_ready)[0]
    log(f"variant {text!r}: compiled in {compile_s:.1f}s")
    variants.append(
      {
        "variant": text,
        "compiled": compiled,
        "state": state,
        "batches": batches,
        "key": k_train,
        "compile_s": compile_s,
        "times": [],
      }
    )
  reference = ReferenceWorker.start(args) if args.reference_python else None
  try:
    steps = timed_step_count(args)
    ref_times: list[float] = []
    for i in range(steps):
      for v in variants:
        (v["state"], _), t, _ = timed(
          lambda: v["compiled"](v["state"], v["batches"][i % 2], v["key"]), jax.block_until_ready
        )
        v["times"].append(t)
      if reference is not None:
        ref_times.append(reference.step())
      log(
        f"round {i + 1}/{steps}: "
        + ", ".join(f"{t:.3f}s" for t in [v["times"][-1] for v in variants] + ref_times[-1:])
      )
    ref_rss = reference.peak_rss_gb() if reference is not None else None
  finally:
    if reference is not None:
      reference.close()
  base = variants[0]["times"]
  rows = []
  for v in variants:
    temp = xla_temp_bytes(v["compiled"])
    rows.append(
      {
        "variant": v["variant"],
        "compile_s": fig(v["compile_s"], "s", "measured"),
        "step_s": time_stats(v["times"]),
        "xla_temp_gb": fig(
          None if temp is None else temp / 1e9,
          "GB",
          "measured",
          "XLA buffer assignment: temporaries of the compiled step",
        ),
        "step_ratio": round_ratio(v["times"], base),
      }
    )
  result = {
    "config": {
      "method": args.method,
      "encoder": args.encoder,
      "shape": args.shape,
      "set": list(args.set),
      "warmup": args.warmup,
      "reference_warmup": args.reference_warmup,
      "reference_malloc": args.reference_malloc,
      "steps": steps,
    },
    "machine": machine_info(),
    "sgemm": sgemm,
    "compare": rows,
  }
  if reference is not None:
    result["reference"] = {
      **reference_info([reference.info]),
      "step_s": time_stats(ref_times),
      "step_ratio": round_ratio(ref_times, base),
      "peak_rss_gb": fig(ref_rss, "GB", "measured", "the reference process's ru_maxrss"),
      "note": "the authors' PyTorch train step (scripts/reference/bench_reference.py), its "
      "steps interleaved with ours; step_ratio = its speed-up measured against the "
      "first variant",
    }
  return result
