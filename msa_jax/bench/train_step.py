"""The train step compiled and timed as the training loop runs it, and GEAR's LSTM scans alone."""

from __future__ import annotations

import os
import statistics
import time
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from msa_jax import xla
from msa_jax.bench.configuration import train_inputs
from msa_jax.bench.figures import fig, time_stats
from msa_jax.bench.flops import flops_of, model_flops, xla_temp_bytes
from msa_jax.bench.memory import phase_peak_rss, reset_peak_rss
from msa_jax.bench.profile import profile_steps
from msa_jax.bench.timing import log, timed
from msa_jax.data.split import Split
from msa_jax.models.bert import BertConfig
from msa_jax.models.gear import ROLES, SequenceEncoder
from msa_jax.train import gear as gear_train
from msa_jax.train import loop
from msa_jax.train.method import Method


def bench_train(
  method: Method,
  config: ml_collections.ConfigDict,
  splits: dict[str, Split],
  mesh,
  warmup: int,
  steps: int,
  profile_dir: str | None,
) -> tuple[dict[str, Any], Any, dict]:
  """Compile and time the train step; returns (figures, final state, one device batch)."""
  state, batches, k_train, init_s = train_inputs(method, config, splits, mesh)
  n_params = sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(state.params))
  step_fn = loop.train_step_fn(method, mesh)  # the training loop's jit, compiler options included
  start = time.perf_counter()
  lowered = step_fn.lower(state, batches[0], k_train)
  lower_s = time.perf_counter() - start
  start = time.perf_counter()
  compiled = lowered.compile()
  compile_s = time.perf_counter() - start
  log(f"train step: lower {lower_s:.1f}s, compile {compile_s:.1f}s")
  flops = model_flops(config, splits, mesh, state, batches[0], k_train)
  compiled_flops = flops_of(compiled)
  peak_compile = phase_peak_rss()
  xla.release_host_memory()  # as the training loop does after its first step's compile
  reset_peak_rss()

  times, cpu_times = [], []
  for i in range(warmup + steps):
    (state, metrics), t, cpu = timed(
      lambda: compiled(state, batches[i % 2], k_train), jax.block_until_ready
    )
    if i >= warmup:
      times.append(t)
      cpu_times.append(cpu)
    log(
      f"train step {i + 1}/{warmup + steps}: {t:.3f}s wall, {cpu:.3f}s CPU"
      f"{'' if i >= warmup else ' (warm-up)'}"
    )
  loss = float(metrics["loss"])
  peak_train = phase_peak_rss()
  figures: dict[str, Any] = {
    "params_m": fig(n_params / 1e6, "M", "measured"),
    "init_s": fig(init_s, "s", "measured", "jit init incl. compile"),
    "lower_s": fig(lower_s, "s", "measured"),
    "compile_s": fig(compile_s, "s", "measured"),
    "step_s": time_stats(times),
    "step_cpu_s": time_stats(cpu_times),
    "step_s_idle_estimate": fig(
      statistics.median(cpu_times) / max(1, os.cpu_count() or 1),
      "s",
      "extrapolated",
      "median CPU seconds / cores: the step on an otherwise idle "
      "machine if it kept every core busy (idle-spinning worker "
      "threads add CPU time, imperfect parallelism adds wall time)",
    ),
    "last_loss": fig(loss, "", "measured"),
    "peak_rss_compile_gb": fig(
      None if peak_compile is None else peak_compile / 1e9,
      "GB",
      "measured",
      "VmHWM from process start through compile",
    ),
    "peak_rss_train_gb": fig(
      None if peak_train is None else peak_train / 1e9,
      "GB",
      "measured",
      "VmHWM over the train steps",
    ),
  }
  if flops is not None:
    figures["flops_per_step"] = fig(
      flops,
      "FLOP",
      "measured",
      "XLA cost analysis of the step lowered with plain attention (model FLOPs)",
    )
    figures["gflops_per_s"] = fig(
      flops / statistics.median(times) / 1e9,
      "GFLOP/s",
      "measured",
      "model FLOPs / median step time",
    )
  temp = xla_temp_bytes(compiled)
  if temp is not None:
    figures["xla_temp_gb"] = fig(
      temp / 1e9, "GB", "measured", "XLA buffer assignment: temporaries of the compiled step"
    )
  if compiled_flops is not None:
    figures["flops_per_step_compiled"] = fig(
      compiled_flops,
      "FLOP",
      "measured",
      "cost analysis of the compiled step (loop bodies counted once)",
    )
  if profile_dir:
    figures["profile"], state = profile_steps(compiled, state, batches, k_train, profile_dir)
  return figures, state, batches[0]


def bench_lstm(
  config: ml_collections.ConfigDict,
  splits: dict[str, Split],
  params,
  batch,
  warmup: int,
  steps: int,
) -> dict[str, Any]:
  """GEAR's four LSTM scans (audio, vision × robust, bias), forward + backward, timed alone."""
  cfg = gear_train.model_config(config, splits, BertConfig.tiny())
  sizes = {
    "audio": (cfg.audio_hidden, cfg.audio_out),
    "vision": (cfg.vision_hidden, cfg.vision_out),
  }
  names = [f"{m}_{r}" for r in ROLES for m in sizes]
  sub = {n: params[n] for n in names}

  def loss(p, batch, key):
    total = 0.0
    for n in names:
      m = n.split("_")[0]
      hid, out = sizes[m]
      h = SequenceEncoder(hid, out, cfg.extractor_dropout).apply(
        {"params": p[n]},
        batch[m],
        batch[f"{m}_lengths"],
        deterministic=False,
        rngs={"dropout": key},
      )
      total = total + jnp.sum(h)
    return total

  grad = jax.jit(jax.grad(loss))
  key = jax.random.key(2)
  start = time.perf_counter()
  compiled = grad.lower(sub, batch, key).compile()
  compile_s = time.perf_counter() - start
  for _ in range(warmup):
    timed(lambda: compiled(sub, batch, key), jax.block_until_ready)
  times = [
    timed(lambda: compiled(sub, batch, key), jax.block_until_ready)[1] for _ in range(max(3, steps))
  ]
  log(f"LSTM scans: compile {compile_s:.1f}s, median {statistics.median(times):.3f}s")
  return {
    "compile_s": fig(compile_s, "s", "measured"),
    "fwd_bwd_s": time_stats(times),
    "note": "audio + vision LSTMs of both extractors (4 scans over 375 / 500 frames at paper "
    "shapes), forward + backward, inside the train step they run with the rest",
  }
