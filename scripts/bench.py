"""Benchmarks the training step and the evaluation sweep of LNLN and GEAR (issue #8).

  python scripts/bench.py                                   # LNLN, tiny encoder, default config
  python scripts/bench.py --method all --encoder minilm,bert-base --shape paper --json bench.json
  python scripts/bench.py --method lnln --encoder minilm --shape paper --batch 16 --profile /tmp/prof

What is measured builds the real `Method` (msa_jax.train.{lnln,gear}.build) from the method's
config (configs/lnln.py, configs/gear.py; their default preset, with the encoder, batch size,
dtype and attention options of the command line), and jit-compiles the train step exactly as
`msa_jax.train.loop` does (same shardings, state donated), so the figures are those of training.
Data are random arrays of the chosen shapes (`paper`: MOSI, text 50 tokens, audio 375×5, vision
500×20, MOSI split sizes; `default`: the shapes of the config's synthetic preset).

Per configuration (each in its own subprocess when several are asked for, so that peak memory is
per configuration):
  - compile: `jit(...).lower()` and `.compile()` times of the train step and of the evaluation;
  - train step: `--warmup` untimed steps, then `--steps` timed ones (block_until_ready), median,
    min / max, quartiles, mean; FLOPs per step from XLA's cost analysis of the compiled step and
    the achieved GFLOP/s, beside an f32 matmul (sgemm) rate measured in the same process;
  - GEAR: a step is one micro-batch (forward + backward) plus half an optimizer update (it sums 2
    micro-batches per update), so an even number of steps is timed; its four LSTM scans (audio and
    vision, robust and bias) are timed separately, forward + backward;
  - evaluation: the real `msa_jax.evaluate.predict.make_predict` (LNLN's 10 sweep rates in one
    program, `eval_rates_per_pass` of them vmapped at a time as in training; GEAR one rate) on
    `--sweep-samples` test samples in batches of `--eval-batch`; throughput in sample-evaluations
    per second, and the full MOSI evaluation extrapolated from it (LNLN: 10 rates × 686 samples
    × 3 seeds × selection metrics, 6 in msa_jax and 5 in the reference's count; GEAR: test + 4
    OOD splits × 686 × 3 seeds);
  - memory: the process's peak resident set (ru_maxrss), the peak of each phase (VmHWM, reset
    between phases through /proc/self/clear_refs where the kernel allows it), and on an
    accelerator the device's peak bytes in use.
Every figure is tagged {"kind": "measured" | "extrapolated" | "quoted"}; the authors' PyTorch
figures on the 2-vCPU CPU machine (quoted from issue #8) and the ratios reference / ours are added
where the configuration matches theirs (paper shapes, batch 64, float32).

`--compare VARIANT [VARIANT ...]` is an A/B mode for one configuration: each VARIANT is a
comma-separated list of KEY=VALUE config overrides on top of `--set` ("" for none). Every variant's
train step is compiled in this one process, then the timed steps are interleaved (one step of each
variant per round), so a drift of the machine's speed, which moved the same configuration's step
by ±15% between runs an hour apart on the 2-vCPU machine, hits every variant alike. Reported per
variant: median / min / max step, XLA temporaries, and the median over rounds of its step time
over the first variant's in the same round.

With `--reference-python PY --reference-repo DIR` (`--shape paper`, `--encoder minilm` or
`bert-base`), `--compare` adds the authors' PyTorch train step as one more variant, interleaved
with ours round by round: `scripts/reference/bench_reference.py --worker`, run by PY (a Python
with torch, transformers, pyyaml, einops, scikit-learn, tqdm) on the authors' checkout DIR of the
method (LNLN or GEAR), in a separate process that stays alive between its steps. Its `step_ratio`
over ours is the speed-up measured on this machine at this hour, not against the quoted figure.

`--profile DIR` traces two more train steps with jax.profiler into DIR, writes the compiled HLO
beside the trace, and attributes the traced op time to model parts (top-level module, forward or
backward, attention core / dense / other), from the ops' source metadata.
"""

from __future__ import annotations

import argparse
import ast
import collections
import glob
import importlib
import json
import math
import os
import pathlib
import platform
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from typing import Any

ROOT = pathlib.Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
  sys.path.insert(0, str(ROOT))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import ml_collections  # noqa: E402
import numpy as np  # noqa: E402

METHODS = ("lnln", "gear")
ENCODERS = ("tiny", "minilm", "bert-base")
SHAPES = ("paper", "default")
DTYPES = ("float32", "bfloat16")
MOSI_TEST = 686
SEEDS = 3
# The authors' repositories, and a file that identifies a checkout of each (--reference-repo).
REFERENCE_REPOS = {"lnln": ("configs/train_mosi.yaml", "github.com/Haoyu-ha/LNLN"),
                   "gear": ("src/models/IFL_ES.py", "github.com/Teng-Sun/GEAR")}
REFERENCE_SELECTION = 5  # selection metrics in the reference's LNLN sweep count (issue #8)
GEAR_EVAL_SPLITS = 5     # test + ood_text, ood_audio, ood_vision, ood_all

# The authors' PyTorch code on this machine kind (2 vCPU AMD EPYC, AVX2; torch CPU, 2 threads; MOSI
# shapes, batch 64; random-init BERTs; glibc allocator), quoted from issue #8.
QUOTED = {
    ("lnln", "bert-base"): {"train_step_s": 62.5, "peak_rss_gb": 14.1, "eval_s_per_sample": 0.229,
                            "full_sweep_h": 6.8},
    ("lnln", "minilm"): {"train_step_s": 37.9, "peak_rss_gb": 9.2, "eval_s_per_sample": 0.102,
                         "full_sweep_h": 3.2},
    ("gear", "bert-base"): {"train_step_s": 37.7, "peak_rss_gb": 8.6},
    ("gear", "minilm"): {"train_step_s": 6.45},
}
# XLA's jitted f32 matmul on an idle 2-vCPU machine of this kind: 135–150 GFLOP/s (issue #8, quoted).
IDLE_SGEMM_GFLOPS = 135.0
QUOTED_NOTE = ("authors' PyTorch code, 2 vCPU AMD EPYC (AVX2), torch CPU 2 threads, MOSI shapes, "
               "batch 64, random-init BERTs (issue #8); LNLN evaluation at batch size 1")

Figure = dict[str, Any]
_START = time.perf_counter()


def log(message: str) -> None:
  """A progress line on stderr, with the seconds since the process started."""
  print(f"[bench {time.perf_counter() - _START:7.1f}s] {message}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------------------
# Figures and statistics.


def fig(value: float | int | None, unit: str, kind: str, note: str | None = None) -> Figure:
  """One tagged figure: {"value", "unit", "kind"} (+ "note")."""
  assert kind in ("measured", "extrapolated", "quoted"), kind
  out = {"value": None if value is None else float(value), "unit": unit, "kind": kind}
  if note:
    out["note"] = note
  return out


def time_stats(times: Sequence[float]) -> dict[str, Figure]:
  """Median, min, max, quartiles and mean of measured durations (seconds)."""
  arr = np.asarray(times, float)
  q1, q3 = np.percentile(arr, [25, 75])
  out = {name: fig(v, "s", "measured") for name, v in (
      ("median", np.median(arr)), ("min", arr.min()), ("max", arr.max()), ("q1", q1), ("q3", q3),
      ("mean", arr.mean()))}
  out["n"] = int(arr.size)
  out["all_s"] = [round(float(t), 6) for t in arr]
  return out


def _timed(fn: Callable[[], Any]) -> tuple[Any, float]:
  """(fn()'s result after block_until_ready, seconds)."""
  start = time.perf_counter()
  out = jax.block_until_ready(fn())
  return out, time.perf_counter() - start


def _timed_cpu(fn: Callable[[], Any]) -> tuple[Any, float, float]:
  """(fn()'s result after block_until_ready, wall seconds, CPU seconds of all this process's
  threads): the CPU time is what the work costs whatever else runs on the machine."""
  cpu = time.process_time()
  out, wall = _timed(fn)
  return out, wall, time.process_time() - cpu


# ------------------------------------------------------------------------------------------------
# Memory.


def max_rss_bytes() -> int:
  """The process's peak resident set size since it started (ru_maxrss, KiB on Linux)."""
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _status_bytes(field: str) -> int | None:
  try:
    with open("/proc/self/status", encoding="ascii") as f:
      for line in f:
        if line.startswith(field + ":"):
          return int(line.split()[1]) * 1024
  except OSError:
    return None
  return None


def reset_peak_rss() -> bool:
  """Resets the kernel's peak-RSS mark (VmHWM) to the current RSS; False where not allowed."""
  try:
    with open("/proc/self/clear_refs", "w", encoding="ascii") as f:
      f.write("5")
    return True
  except OSError:
    return False


_PEAK_SEEN = [0]


def phase_peak_rss() -> int | None:
  """VmHWM: the peak resident set since the last `reset_peak_rss` (or the process start)."""
  peak = _status_bytes("VmHWM")
  if peak is not None:
    _PEAK_SEEN[0] = max(_PEAK_SEEN[0], peak)
  return peak


def process_peak_rss() -> int:
  """The process's peak resident set: the largest phase peak and ru_maxrss (which a VmHWM reset
  lowers too, so neither alone is the peak once phases have been reset)."""
  phase_peak_rss()
  return max(_PEAK_SEEN[0], max_rss_bytes())


def device_memory() -> dict[str, Figure]:
  """Peak / current bytes in use on the first device, where the backend reports them (GPU, TPU)."""
  try:
    stats = jax.devices()[0].memory_stats() or {}
  except Exception:  # CPU backends may not implement memory_stats
    stats = {}
  out = {}
  for key in ("peak_bytes_in_use", "bytes_in_use", "bytes_limit"):
    if key in stats:
      out[key.replace("bytes", "gb")] = fig(stats[key] / 1e9, "GB", "measured")
  return out


# ------------------------------------------------------------------------------------------------
# Machine.


def load_average() -> list[float]:
  try:
    return [round(x, 2) for x in os.getloadavg()]
  except OSError:
    return []


def machine_info() -> dict[str, Any]:
  dev = jax.devices()[0]
  cpu = platform.processor()
  try:
    with open("/proc/cpuinfo", encoding="utf-8") as f:
      text = f.read()
    names = re.findall(r"^model name\s*:\s*(.*)$", text, re.M)
    flags = set(re.findall(r"^flags\s*:\s*(.*)$", text, re.M)[0].split()) if "flags" in text else set()
    cpu = names[0] if names else cpu
    simd = sorted(f for f in flags if f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "fma"))
  except (OSError, IndexError):
    simd = []
  return {"backend": jax.default_backend(), "device": f"{dev.platform} {dev.device_kind}",
          "devices": jax.device_count(), "cpu": cpu, "cpu_flags": simd, "cpus": os.cpu_count(),
          "jax": jax.__version__, "python": platform.python_version(),
          "xla_flags": os.environ.get("XLA_FLAGS", "")}


def sgemm_rate(n: int = 2048, runs: int = 5) -> Figure:
  """A jitted (n, n) @ (n, n) float32 matmul's rate, median of `runs` calls after a warm-up."""
  key_a, key_b = jax.random.split(jax.random.key(0))
  a = jax.random.normal(key_a, (n, n), jnp.float32)
  b = jax.random.normal(key_b, (n, n), jnp.float32)
  mm = jax.jit(jnp.matmul)
  jax.block_until_ready(mm(a, b))
  times = [_timed(lambda: mm(a, b))[1] for _ in range(runs)]
  return fig(2.0 * n ** 3 / statistics.median(times) / 1e9, "GFLOP/s", "measured",
             f"jit f32 matmul {n}x{n}, median of {runs}")


# ------------------------------------------------------------------------------------------------
# Configs and data.


def load_method_config(method: str) -> ml_collections.ConfigDict:
  """The method's default config (configs/<method>.py, no preset)."""
  return importlib.import_module(f"configs.{method}").get_config()


def apply_overrides(config: ml_collections.ConfigDict, overrides: Sequence[str]) -> None:
  """`key.sub=value` assignments (values parsed as Python literals where possible)."""
  for item in overrides:
    key, sep, raw = item.partition("=")
    if not sep:
      raise SystemExit(f"--set {item!r}: expected key=value")
    try:
      value = ast.literal_eval(raw)
    except (ValueError, SyntaxError):
      value = raw
    node, parts = config, key.split(".")
    for part in parts[:-1]:
      node = node[part]
    node[parts[-1]] = value


def make_config(method: str, encoder: str, shape: str, batch: int | None, eval_batch: int | None,
                dtype: str, attention_chunk: int | None, remat: bool | None = None,
                overrides: Sequence[str] = ()) -> ml_collections.ConfigDict:
  """The method's default config with the benchmark's encoder, batch sizes, dtype and attention.

  `paper` shapes default to batch 64 (the reference's LNLN batch, and the batch of the quoted GEAR
  figures) and eval batch 64 (configs/lnln.py:mosi); `default` keeps the config's sizes.
  `overrides` (`--set key=value`) come last.
  """
  c = load_method_config(method)
  c.encoder = encoder
  if shape == "paper":
    c.batch_size, c.eval_batch_size = 64, 64
  if batch:
    c.batch_size = batch
  if eval_batch:
    c.eval_batch_size = eval_batch
  if dtype != "float32" or "dtype" in c.model:
    c.model.dtype = dtype
  if attention_chunk is not None:
    if method != "lnln":
      raise SystemExit("--attention-chunk applies to LNLN only")
    c.model.attention_chunk = attention_chunk
  if remat is not None:
    c.model.remat = remat
  apply_overrides(c, overrides)
  return c


def data_preset(config: ml_collections.ConfigDict, shape: str):
  """The synthetic preset whose shapes and split sizes the benchmark data take."""
  from msa_jax.data import synthetic
  return synthetic.PRESETS["mosi" if shape == "paper" else config.data.synthetic]


def random_split(n: int, text_len: int, audio: tuple[int, int], vision: tuple[int, int],
                 rng: np.random.Generator):
  """A `Split` of n random samples (token ids from the bert-base-uncased vocabulary)."""
  from msa_jax.data.split import Split
  text_lengths = rng.integers(max(3, text_len // 4), text_len + 1, n)
  valid = np.arange(text_len)[None, :] < text_lengths[:, None]
  ids = np.where(valid, rng.integers(1000, 30000, (n, text_len)), 0)
  ids[:, 0] = 101
  ids[np.arange(n), text_lengths - 1] = 102
  text_bert = np.stack([ids, valid, np.zeros_like(ids)], axis=1).astype(np.int32)

  def frames(shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    lengths = rng.integers(max(1, shape[0] // 4), shape[0] + 1, n).astype(np.int32)
    x = rng.standard_normal((n, *shape), dtype=np.float32)
    x *= (np.arange(shape[0])[None, :] < lengths[:, None])[..., None]
    return x, lengths

  (a, a_len), (v, v_len) = frames(audio), frames(vision)
  labels = rng.uniform(-3.0, 3.0, n).astype(np.float32)
  return Split(text_bert=text_bert, audio=a, vision=v, audio_lengths=a_len, vision_lengths=v_len,
               labels=labels)


def random_splits(preset, seed: int = 0) -> dict[str, Any]:
  """train / valid / test splits of random data with the preset's shapes and sizes."""
  rng = np.random.default_rng(seed)
  shapes = (preset.text_len, (preset.audio_frames, preset.audio_dim),
            (preset.vision_frames, preset.vision_dim))
  return {name: random_split(n, *shapes, rng) for name, n in (
      ("train", preset.n_train), ("valid", preset.n_valid), ("test", preset.n_test))}


# ------------------------------------------------------------------------------------------------
# Cost analysis.


def flops_of(compiled) -> float | None:
  """FLOPs of a lowered or compiled program from XLA's cost analysis (None where unavailable).

  XLA counts a while loop's body once, whatever its trip count: for programs with loops (blocked
  attention, scans) use `model_flops`."""
  try:
    cost = compiled.cost_analysis()
  except Exception:
    return None
  if isinstance(cost, (list, tuple)):
    cost = cost[0] if cost else {}
  value = (cost or {}).get("flops")
  return None if value is None or value < 0 else float(value)


def xla_temp_bytes(compiled) -> int | None:
  """Bytes of temporaries XLA's buffer assignment gives a compiled program (None if unknown)."""
  try:
    return int(compiled.memory_analysis().temp_size_in_bytes)
  except Exception:
    return None


def plain_method(config: ml_collections.ConfigDict, splits):
  """The method built with plain attention and no rematerialisation: the model's math without
  loops (XLA's cost analysis counts a loop body once) and without recomputation."""
  from msa_jax.train import methods
  plain = ml_collections.ConfigDict(config.to_dict())
  if "attention_chunk" in plain.model:
    plain.model.attention_chunk = 0
  if "remat" in plain.model:
    plain.model.remat = False
  return methods.build(plain, splits)


def model_flops(config: ml_collections.ConfigDict, splits, mesh, state, batch, key) -> float | None:
  """FLOPs of one train step of the model's math: XLA's cost analysis of the step lowered with
  plain attention (no loops to undercount, no recomputation counted). GEAR's LSTM scans still
  count one time step (negligible: hidden 16 / 32)."""
  from msa_jax import sharding
  from msa_jax.train.state import make_train_step
  method = plain_method(config, splits)
  repl, batch_sh = sharding.replicated(mesh), sharding.batch_sharded(mesh)
  step = jax.jit(make_train_step(method.loss_fn, method.optimizer),
                 in_shardings=(repl, batch_sh, repl), out_shardings=(repl, repl))
  return flops_of(step.lower(state, batch, key))


# ------------------------------------------------------------------------------------------------
# Phases.


def build_configuration(args: argparse.Namespace, overrides: Sequence[str]):
  """(config, random splits of its shapes, the real Method) for the command line's method,
  encoder, shape, batch sizes, dtype and attention options, plus `overrides`."""
  from msa_jax.train import methods
  config = make_config(args.method, args.encoder, args.shape, args.batch, args.eval_batch,
                       args.dtype, args.attention_chunk, args.remat, overrides)
  splits = random_splits(data_preset(config, args.shape))
  return config, splits, methods.build(config, splits)


def timed_step_count(args: argparse.Namespace) -> int:
  """`--steps`, rounded up to even for GEAR (a step is half an update)."""
  return args.steps + (args.steps % 2 if args.method == "gear" else 0)


def train_inputs(method, config, splits, mesh) -> tuple[Any, list, jax.Array, float]:
  """A fresh train state from the loop's init jit, two device batches of the train split and the
  step key: (state, batches, key, init seconds incl. compile)."""
  from msa_jax import sharding
  from msa_jax.data import pipeline
  from msa_jax.train import loop
  train_ds = pipeline.train_dataset(splits["train"], config.batch_size, seed=0)
  batches = [sharding.put_batch(train_ds[i], mesh) for i in range(2)]
  key = jax.random.key(0)
  init = loop._init_fn(method, mesh)
  state, init_s = _timed(lambda: init(jax.random.fold_in(key, 0), batches[0]))
  return state, batches, jax.random.fold_in(key, 1), init_s


def bench_train(method, config, splits, mesh, warmup: int, steps: int,
                profile_dir: str | None) -> tuple[dict[str, Any], Any, dict]:
  """Compile and time the train step; returns (figures, final state, one device batch)."""
  from msa_jax import xla
  from msa_jax.train import loop

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
    (state, metrics), t, cpu = _timed_cpu(lambda: compiled(state, batches[i % 2], k_train))
    if i >= warmup:
      times.append(t)
      cpu_times.append(cpu)
    log(f"train step {i + 1}/{warmup + steps}: {t:.3f}s wall, {cpu:.3f}s CPU"
        f"{'' if i >= warmup else ' (warm-up)'}")
  loss = float(metrics["loss"])
  peak_train = phase_peak_rss()
  figures: dict[str, Any] = {
      "params_m": fig(n_params / 1e6, "M", "measured"),
      "init_s": fig(init_s, "s", "measured", "jit init incl. compile"),
      "lower_s": fig(lower_s, "s", "measured"),
      "compile_s": fig(compile_s, "s", "measured"),
      "step_s": time_stats(times),
      "step_cpu_s": time_stats(cpu_times),
      "step_s_idle_estimate": fig(statistics.median(cpu_times) / max(1, os.cpu_count() or 1), "s",
                                  "extrapolated",
                                  "median CPU seconds / cores: the step on an otherwise idle "
                                  "machine if it kept every core busy (idle-spinning worker "
                                  "threads add CPU time, imperfect parallelism adds wall time)"),
      "last_loss": fig(loss, "", "measured"),
      "peak_rss_compile_gb": fig(None if peak_compile is None else peak_compile / 1e9, "GB",
                                 "measured", "VmHWM from process start through compile"),
      "peak_rss_train_gb": fig(None if peak_train is None else peak_train / 1e9, "GB", "measured",
                               "VmHWM over the train steps"),
  }
  if flops is not None:
    figures["flops_per_step"] = fig(flops, "FLOP", "measured",
                                    "XLA cost analysis of the step lowered with plain attention "
                                    "(model FLOPs)")
    figures["gflops_per_s"] = fig(flops / statistics.median(times) / 1e9, "GFLOP/s", "measured",
                                  "model FLOPs / median step time")
  temp = xla_temp_bytes(compiled)
  if temp is not None:
    figures["xla_temp_gb"] = fig(temp / 1e9, "GB", "measured",
                                 "XLA buffer assignment: temporaries of the compiled step")
  if compiled_flops is not None:
    figures["flops_per_step_compiled"] = fig(compiled_flops, "FLOP", "measured",
                                             "cost analysis of the compiled step (loop bodies "
                                             "counted once)")
  if profile_dir:
    figures["profile"], state = profile_steps(compiled, state, batches, k_train, profile_dir)
  return figures, state, batches[0]


def profile_steps(compiled, state, batches, key, directory: str, steps: int = 2
                  ) -> tuple[dict[str, Any], Any]:
  """Traces `steps` train steps into `directory` and attributes the op time to model parts.

  Returns (the summary, the train state after those steps: the one passed in is donated)."""
  path = pathlib.Path(directory)
  path.mkdir(parents=True, exist_ok=True)
  hlo = compiled.as_text()
  (path / "train_step.hlo.txt").write_text(hlo, encoding="utf-8")
  jax.profiler.start_trace(str(path))
  for i in range(steps):
    state, metrics = compiled(state, batches[i % 2], key)
    jax.block_until_ready((state, metrics))
  jax.profiler.stop_trace()
  try:
    return summarise_profile(path, hlo, steps), state
  except Exception as e:  # the trace is still on disk for other tools
    return {"error": f"{type(e).__name__}: {e}", "trace_dir": str(path)}, state


_INSTR = re.compile(r"^\s*(?:ROOT\s+)?%?([\w.\-]+)\s*=\s*(.*)$")
_OPCODE = re.compile(r"\s([a-z][a-z0-9\-]*)\(")
_COMP = re.compile(r"^(?:ENTRY\s+)?%?([\w.\-]+)\s.*\{\s*$")


def parse_hlo(hlo: str) -> tuple[dict[str, tuple[str, str | None, str | None, str | None]],
                                 dict[str, list[str]]]:
  """HLO text -> ({instruction: (opcode, op_name or None, called computation or None, the
  computation it is in)}, {computation: op_names of its instructions})."""
  instrs, comps, current = {}, collections.defaultdict(list), None
  for line in hlo.splitlines():
    m = _COMP.match(line)
    if m and "=" not in line.split("{")[0]:
      current = m.group(1)
      continue
    m = _INSTR.match(line)
    if not m:
      continue
    name, rest = m.groups()
    op = _OPCODE.search(" " + rest.split(", metadata=")[0])
    op_name = re.search(r'op_name="([^"]*)"', rest)
    calls = re.search(r"calls=%?([\w.\-]+)", rest)
    instrs[name] = (op.group(1) if op else "?", op_name.group(1) if op_name else None,
                    calls.group(1) if calls else None, current)
    if current and op_name:
      comps[current].append(op_name.group(1))
  return instrs, comps


def classify_op(op_name: str | None) -> tuple[str, str, str]:
  """op_name metadata -> (forward/backward, top-level module, kind: attention core / dense / other)."""
  if not op_name:
    return "?", "?", "other"
  phase = "backward" if "transpose(" in op_name else "forward"
  path, previous = op_name, None
  while path != previous:  # unwrap nested transforms: transpose(jvp(LNLN)) -> LNLN
    previous = path
    path = re.sub(r"\b(?:jit|jvp|transpose|vmap|checkpoint|remat|pjit|while|body|cond|rematted_computation)"
                  r"\(([^()]*)\)", r"\1", path)
  parts = [p for p in path.split("/") if p]
  # Drop everything up to the model's class name (LNLN, GEAR) where present.
  for i, p in enumerate(parts):
    if p in ("LNLN", "GEAR"):
      parts = parts[i + 1:]
      break
  else:
    parts = parts[1:]
  module = parts[0] if len(parts) > 1 else "(top)"
  inner = "/".join(parts[:-1])
  leaf = parts[-1] if parts else ""
  is_dot = "dot_general" in leaf or "einsum" in leaf
  core = (re.search(r"(^|/)(attn|self|attention_core)($|/)", inner) is not None
          and not re.search(r"/(to_q|to_k|to_v|to_out|query|key|value|to_k_a|to_v_a|to_k_v|to_v_v)$", inner))
  if core or "hyper" in module and is_dot and not re.search(r"/to_", inner):
    kind = "attention core"
  elif is_dot:
    kind = "dense"
  else:
    kind = "other"
  return phase, module, kind


def _instruction_op_name(name: str, instrs, comps) -> str | None:
  """The op_name an instruction's time is attributed to: its own, else that of the computation it
  calls (the dots first), else the most common one of the computation it is in (a loop body)."""
  opcode, op_name, calls, parent = instrs[name]
  for comp in (calls, None if op_name else parent):
    if comp and comps.get(comp):
      names = comps[comp]
      dots = [n for n in names if "dot_general" in n]
      return collections.Counter(dots or names).most_common(1)[0][0]
  return op_name


def summarise_profile(path: pathlib.Path, hlo: str, steps: int, top: int = 20) -> dict[str, Any]:
  """Sums traced op durations per (phase, module, kind) and lists the slowest ops."""
  files = sorted(glob.glob(str(path / "**" / "*.xplane.pb"), recursive=True), key=os.path.getmtime)
  if not files:
    return {"error": "no .xplane.pb written", "trace_dir": str(path)}
  data = jax.profiler.ProfileData.from_file(files[-1])
  instrs, comps = parse_hlo(hlo)
  per_op: dict[str, float] = collections.Counter()
  for plane in data.planes:
    for line in plane.lines:
      for event in line.events:
        name = event.name
        if name in instrs and instrs[name][0] not in ("while", "call", "conditional"):
          per_op[name] += event.duration_ns / 1e9 / steps
  groups: dict[tuple[str, str, str], float] = collections.Counter()
  for name, secs in per_op.items():
    groups[classify_op(_instruction_op_name(name, instrs, comps))] += secs
  total = sum(per_op.values())
  rows = [{"phase": p, "module": m, "kind": k, "s_per_step": round(s, 4),
           "share": round(s / total, 4) if total else None}
          for (p, m, k), s in sorted(groups.items(), key=lambda kv: -kv[1])]
  slowest = [{"op": n, "opcode": instrs[n][0], "op_name": _instruction_op_name(n, instrs, comps),
              "s_per_step": round(s, 4)} for n, s in per_op.most_common(top)]
  return {"trace_file": files[-1], "op_time_s_per_step": round(total, 4), "groups": rows,
          "slowest_ops": slowest,
          "note": "summed durations of traced XLA ops per step (ops on parallel threads add up)"}


def bench_eval(method, config, splits, mesh, params, rates: list[float], sweep_samples: int,
               warmup: int) -> dict[str, Any]:
  """Compile and time the (vmapped over rates) prediction on test batches."""
  from msa_jax import sharding
  from msa_jax.data import pipeline
  from msa_jax.evaluate.predict import make_predict

  bs = config.eval_batch_size
  ds = pipeline.eval_dataset(splits["test"], bs)
  n_batches = max(1, min(len(ds), math.ceil(sweep_samples / bs)))
  batches = [sharding.put_batch(ds[i], mesh) for i in range(n_batches)]
  # As the training loop evaluates: `eval_rates_per_pass` rates at a time, in one program.
  predict = make_predict(method.predict_fn, mesh, config.get("eval_rates_per_pass", None))
  key = jax.random.key(config.get("mask_seed", 0))
  rates_arr = jnp.asarray(rates, jnp.float32)
  reset_peak_rss()
  start = time.perf_counter()
  lowered = predict.lower(params, batches[0], key, rates_arr)
  lower_s = time.perf_counter() - start
  start = time.perf_counter()
  compiled = lowered.compile()
  compile_s = time.perf_counter() - start
  log(f"evaluation: lower {lower_s:.1f}s, compile {compile_s:.1f}s")
  flops = flops_of(make_predict(plain_method(config, splits).predict_fn, mesh).lower(
      params, batches[0], key, rates_arr))
  for i in range(warmup):
    _timed(lambda: compiled(params, batches[i % n_batches], key, rates_arr))
  timed = [_timed_cpu(lambda: compiled(params, b, key, rates_arr))[1:] for b in batches]
  times, cpu_times = [t for t, _ in timed], [c for _, c in timed]
  peak = phase_peak_rss()
  per_batch = statistics.median(times)
  per_batch_idle = statistics.median(cpu_times) / max(1, os.cpu_count() or 1)
  log(f"evaluation: {n_batches} call(s), median {per_batch:.3f}s wall, "
      f"{statistics.median(cpu_times):.3f}s CPU")
  throughput = bs * len(rates) / per_batch
  figures: dict[str, Any] = {
      "rates": len(rates), "eval_batch": bs, "batches_timed": n_batches,
      "lower_s": fig(lower_s, "s", "measured"),
      "compile_s": fig(compile_s, "s", "measured"),
      "batch_s": time_stats(times),
      "batch_cpu_s": time_stats(cpu_times),
      "throughput": fig(throughput, "sample-evals/s", "measured",
                        f"eval batch {bs} × {len(rates)} rates per call"),
      "s_per_sample_eval": fig(1.0 / throughput, "s", "measured"),
      "s_per_sample_eval_idle_estimate": fig(
          per_batch_idle / (bs * len(rates)), "s", "extrapolated",
          "median CPU seconds per call / cores / sample-evaluations per call"),
      "peak_rss_eval_gb": fig(None if peak is None else peak / 1e9, "GB", "measured",
                              "VmHWM over evaluation compile + calls"),
  }
  if flops is not None:
    figures["flops_per_call"] = fig(flops, "FLOP", "measured", "model FLOPs (plain attention)")
    figures["gflops_per_s"] = fig(flops / per_batch / 1e9, "GFLOP/s", "measured")
  calls = math.ceil(MOSI_TEST / bs)
  for suffix, call_s, source in (("", per_batch, "measured median call time"),
                                 ("_idle_estimate", per_batch_idle, "median CPU time per call / cores")):
    if method.name == "lnln":
      for label, n_sel in (("msa_jax", len(method.selection_metrics)),
                           ("reference_count", REFERENCE_SELECTION)):
        figures[f"full_sweep_h_{label}{suffix}"] = fig(
            calls * call_s * SEEDS * n_sel / 3600, "h", "extrapolated",
            f"{calls} calls of {bs}×{len(rates)} per sweep × {SEEDS} seeds × {n_sel} selection "
            f"metrics ({len(rates)} rates × {MOSI_TEST} samples), from the {source}")
    else:
      figures[f"full_eval_h{suffix}"] = fig(
          calls * call_s * SEEDS * GEAR_EVAL_SPLITS / 3600, "h", "extrapolated",
          f"test + 4 OOD splits × {MOSI_TEST} samples × {SEEDS} seeds, from the {source}")
  return figures


def bench_lstm(config, splits, params, batch, warmup: int, steps: int) -> dict[str, Any]:
  """GEAR's four LSTM scans (audio, vision × robust, bias), forward + backward, timed alone."""
  from msa_jax.models.bert import BertConfig
  from msa_jax.models.gear import ROLES, SequenceEncoder
  from msa_jax.train import gear as gear_train

  cfg = gear_train.model_config(config, splits, BertConfig.tiny())
  sizes = {"audio": (cfg.audio_hidden, cfg.audio_out), "vision": (cfg.vision_hidden, cfg.vision_out)}
  names = [f"{m}_{r}" for r in ROLES for m in sizes]
  sub = {n: params[n] for n in names}

  def loss(p, batch, key):
    total = 0.0
    for n in names:
      m = n.split("_")[0]
      hid, out = sizes[m]
      h = SequenceEncoder(hid, out, cfg.extractor_dropout).apply(
          {"params": p[n]}, batch[m], batch[f"{m}_lengths"], deterministic=False,
          rngs={"dropout": key})
      total = total + jnp.sum(h)
    return total

  grad = jax.jit(jax.grad(loss))
  key = jax.random.key(2)
  start = time.perf_counter()
  compiled = grad.lower(sub, batch, key).compile()
  compile_s = time.perf_counter() - start
  for _ in range(warmup):
    _timed(lambda: compiled(sub, batch, key))
  times = [_timed(lambda: compiled(sub, batch, key))[1] for _ in range(max(3, steps))]
  log(f"LSTM scans: compile {compile_s:.1f}s, median {statistics.median(times):.3f}s")
  return {"compile_s": fig(compile_s, "s", "measured"), "fwd_bwd_s": time_stats(times),
          "note": "audio + vision LSTMs of both extractors (4 scans over 375 / 500 frames at paper "
                  "shapes), forward + backward, inside the train step they run with the rest"}


# ------------------------------------------------------------------------------------------------
# One configuration.


def reference_figures(method: str, encoder: str, shape: str, batch: int, dtype: str) -> dict | None:
  """The quoted PyTorch figures for this configuration, where the configuration is theirs."""
  quoted = QUOTED.get((method, encoder))
  if not quoted or shape != "paper" or batch != 64 or dtype != "float32":
    return None
  units = {"train_step_s": "s", "peak_rss_gb": "GB", "eval_s_per_sample": "s", "full_sweep_h": "h"}
  return {k: fig(v, units[k], "quoted", QUOTED_NOTE) for k, v in quoted.items()}


def ratios(result: dict[str, Any]) -> dict[str, Figure]:
  """reference / ours for the quoted figures (kind: that of ours; the reference is quoted)."""
  ref = result.get("reference")
  if not ref:
    return {}
  train, ev = result["train"], result.get("eval", {})
  pairs = {
      "train_step_speedup": ("train_step_s", train["step_s"]["median"]),
      "train_step_speedup_idle_estimate": ("train_step_s", train.get("step_s_idle_estimate")),
      "train_step_speedup_sgemm_scaled": ("train_step_s", train.get("step_s_sgemm_scaled")),
      "peak_rss_ratio": ("peak_rss_gb", result["memory"]["peak_rss_gb"]),
      "eval_speedup": ("eval_s_per_sample", ev.get("s_per_sample_eval")),
      "eval_speedup_idle_estimate": ("eval_s_per_sample", ev.get("s_per_sample_eval_idle_estimate")),
      "full_sweep_speedup": ("full_sweep_h", ev.get("full_sweep_h_msa_jax")),
      "full_sweep_speedup_idle_estimate": ("full_sweep_h", ev.get("full_sweep_h_msa_jax_idle_estimate")),
  }
  out = {}
  for name, (ref_key, ours) in pairs.items():
    if ref_key in ref and ours and ours.get("value"):
      out[name] = fig(ref[ref_key]["value"] / ours["value"], "x", ours["kind"],
                      f"quoted reference {ref_key} / ours ({ours['kind']})")
  return out


def run_one(args: argparse.Namespace) -> dict[str, Any]:
  """Benchmarks one (method, encoder, shape) configuration in this process."""
  from msa_jax import sharding
  from msa_jax.train import lnln as lnln_train

  reset_peak_rss()
  load_before = load_average()
  config, splits, method = build_configuration(args, args.set)
  mesh = sharding.make_mesh()
  sgemm = sgemm_rate(args.sgemm_n)
  log(f"{args.method}/{args.encoder}/{args.shape}: sgemm {sgemm['value']:.0f} GFLOP/s, "
      f"load {load_before}")
  steps = timed_step_count(args)
  train, state, batch = bench_train(method, config, splits, mesh, args.warmup, steps, args.profile)
  sgemm_after = sgemm_rate(args.sgemm_n)
  sgemm = fig(0.5 * (sgemm["value"] + sgemm_after["value"]), "GFLOP/s", "measured",
              f"{sgemm['note']}; mean of the rates before ({sgemm['value']:.1f}) and after "
              f"({sgemm_after['value']:.1f}) the train steps")
  if "gflops_per_s" in train:
    utilisation = train["gflops_per_s"]["value"] / sgemm["value"]
    train["utilisation"] = fig(utilisation, "fraction of sgemm", "measured",
                               "model GFLOP/s / the sgemm rate measured in the same process")
    if jax.default_backend() == "cpu":
      train["step_s_sgemm_scaled"] = fig(
          train["flops_per_step"]["value"] / (utilisation * IDLE_SGEMM_GFLOPS * 1e9), "s",
          "extrapolated", f"model FLOPs / (utilisation × {IDLE_SGEMM_GFLOPS:.0f} GFLOP/s, the quoted "
          "jitted-matmul rate of this machine kind when idle): the step on an idle machine if "
          "the step keeps its fraction of sgemm")
  result: dict[str, Any] = {
      "config": {"method": args.method, "encoder": args.encoder, "shape": args.shape,
                 "batch": config.batch_size, "eval_batch": config.eval_batch_size,
                 "dtype": args.dtype, "attention_chunk": config.model.get("attention_chunk"),
                 "remat": config.model.get("remat"), "warmup": args.warmup, "steps": steps,
                 "model": json.loads(config.model.to_json_best_effort())},
      "machine": {**machine_info(), "load_before": load_before},
      "sgemm": sgemm,
      "train": train,
  }
  if args.method == "gear":
    result["lstm"] = bench_lstm(config, splits, state.params, batch, args.warmup, args.steps)
  if args.sweep_samples > 0:
    rates = lnln_train.sweep_rates(config) if args.method == "lnln" else [0.0]
    result["eval"] = bench_eval(method, config, splits, mesh, state.params, rates,
                                args.sweep_samples, min(args.warmup, 1))
  result["memory"] = {"peak_rss_gb": fig(process_peak_rss() / 1e9, "GB", "measured",
                                         "peak resident set of the whole process (the largest "
                                         "phase peak, ru_maxrss)"),
                      **device_memory()}
  result["machine"]["load_after"] = load_average()
  result["reference"] = reference_figures(args.method, args.encoder, args.shape,
                                          config.batch_size, args.dtype)
  result["ratios"] = ratios(result)
  return result


# ------------------------------------------------------------------------------------------------
# A/B: config variants of one configuration, steps interleaved in one process.


def parse_variant(text: str) -> list[str]:
  """'a.b=1,c=x' -> ['a.b=1', 'c=x']; '' -> []."""
  items = [t.strip() for t in text.split(",") if t.strip()]
  for item in items:
    if "=" not in item:
      raise ValueError(f"--compare variant {text!r}: {item!r} is not KEY=VALUE")
  return items


def compare_variants(args: argparse.Namespace) -> dict[str, Any]:
  """Compiles each `--compare` variant's train step and times them interleaved (module docstring)."""
  from msa_jax import sharding, xla
  from msa_jax.train import loop

  parsed = [(text, parse_variant(text)) for text in args.compare]  # every variant checked first
  mesh = sharding.make_mesh()
  sgemm = sgemm_rate(args.sgemm_n)
  variants = []
  for text, items in parsed:
    config, splits, method = build_configuration(args, [*args.set, *items])
    state, batches, k_train, _ = train_inputs(method, config, splits, mesh)
    start = time.perf_counter()
    compiled = loop.train_step_fn(method, mesh).lower(state, batches[0], k_train).compile()
    compile_s = time.perf_counter() - start
    xla.release_host_memory()
    for i in range(args.warmup):
      state, _ = _timed(lambda: compiled(state, batches[i % 2], k_train))[0]
    log(f"variant {text!r}: compiled in {compile_s:.1f}s")
    variants.append({"variant": text, "compiled": compiled, "state": state, "batches": batches,
                     "key": k_train, "compile_s": compile_s, "times": []})
  reference = ReferenceWorker.start(args) if args.reference_python else None
  try:
    steps = timed_step_count(args)
    ref_times: list[float] = []
    for i in range(steps):
      for v in variants:
        (v["state"], _), t = _timed(
            lambda: v["compiled"](v["state"], v["batches"][i % 2], v["key"]))
        v["times"].append(t)
      if reference is not None:
        ref_times.append(reference.step())
      log(f"round {i + 1}/{steps}: " + ", ".join(
          f"{t:.3f}s" for t in [v["times"][-1] for v in variants] + ref_times[-1:]))
    ref_rss = reference.peak_rss_gb() if reference is not None else None
  finally:
    if reference is not None:
      reference.close()
  base = variants[0]["times"]
  rows = []
  for v in variants:
    temp = xla_temp_bytes(v["compiled"])
    rows.append({"variant": v["variant"], "compile_s": fig(v["compile_s"], "s", "measured"),
                 "step_s": time_stats(v["times"]),
                 "xla_temp_gb": fig(None if temp is None else temp / 1e9, "GB", "measured",
                                    "XLA buffer assignment: temporaries of the compiled step"),
                 "step_ratio": _round_ratio(v["times"], base)})
  result = {"config": {"method": args.method, "encoder": args.encoder, "shape": args.shape,
                       "set": list(args.set), "warmup": args.warmup, "steps": steps},
            "machine": machine_info(), "sgemm": sgemm, "compare": rows}
  if reference is not None:
    result["reference"] = {
        **reference.info, "step_s": time_stats(ref_times), "step_ratio": _round_ratio(ref_times, base),
        "peak_rss_gb": fig(ref_rss, "GB", "measured", "the reference process's ru_maxrss"),
        "note": "the authors' PyTorch train step (scripts/reference/bench_reference.py), its "
                "steps interleaved with ours; step_ratio = its speed-up measured against the "
                "first variant"}
  return result


def _round_ratio(times: Sequence[float], base: Sequence[float]) -> Figure:
  return fig(statistics.median(t / b for t, b in zip(times, base)), "", "measured",
             "median over rounds of this step / the first variant's step in the same round")


class ReferenceWorker:
  """The authors' PyTorch train step in a child process (`bench_reference.py --worker`): one
  step per `step()`, its wall time as the child measured it."""

  SCRIPT = ROOT / "scripts" / "reference" / "bench_reference.py"

  def __init__(self, proc: subprocess.Popen, info: dict[str, Any]):
    self.proc, self.info = proc, info

  @classmethod
  def start(cls, args: argparse.Namespace) -> "ReferenceWorker":
    """Starts the worker for the command line's method / encoder / batch, waits for its `ready`
    answer (kept as `info`) and runs its `--warmup` untimed steps."""
    cmd = [args.reference_python, str(cls.SCRIPT), "--worker", "--method", args.method,
           "--ref", args.reference_repo, "--encoder", args.encoder, "--batch", str(args.batch or 64)]
    log("reference: " + " ".join(cmd))
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    worker = cls(proc, {})
    worker.info = worker._reply()
    for _ in range(args.warmup):
      worker.step()
    return worker

  def _reply(self) -> dict[str, Any]:
    """The worker's next JSON answer; other lines it prints (the authors' code may print) are
    passed on to the log."""
    while True:
      line = self.proc.stdout.readline()
      if not line:
        code = self.proc.wait()
        raise RuntimeError(f"reference worker {self.SCRIPT.name} exited (code {code}) without "
                           f"answering; its error is above")
      if line.startswith("{"):
        break
      log(f"reference worker: {line.rstrip()}")
    reply = json.loads(line)
    if "error" in reply:
      raise RuntimeError(f"reference worker: {reply['error']}")
    return reply

  def _ask(self, command: str) -> dict[str, Any]:
    self.proc.stdin.write(command + "\n")
    self.proc.stdin.flush()
    return self._reply()

  def step(self) -> float:
    return float(self._ask("step")["step_s"])

  def peak_rss_gb(self) -> float:
    return float(self._ask("rss")["peak_rss_gb"])

  def close(self) -> None:
    if self.proc.poll() is None:
      try:
        self.proc.stdin.write("quit\n")
        self.proc.stdin.close()
        self.proc.wait(timeout=60)
      except (OSError, subprocess.TimeoutExpired):
        self.proc.kill()


def format_compare(result: dict[str, Any]) -> str:
  c = result["config"]
  lines = [f"{c['method']} / {c['encoder']} / {c['shape']}: {c['steps']} interleaved rounds "
           f"(sgemm {result['sgemm']['value']:.0f} GFLOP/s)",
           f"{'variant':<40} {'step s (med)':>12} {'min-max':>15} {'ratio':>7} {'temp GB':>8}"]
  rows = [(r["variant"] or "(base)", r) for r in result["compare"]]
  if "reference" in result:
    ref = result["reference"]
    rows.append((f"reference: authors' PyTorch (torch {ref.get('torch', '?')})",
                 {**ref, "xla_temp_gb": None}))
  for name, r in rows:
    st = r["step_s"]
    lines.append(f"{name:<40} {st['median']['value']:>12.3f} "
                 f"{st['min']['value']:>7.3f}-{st['max']['value']:<7.3f} "
                 f"{r['step_ratio']['value']:>7.3f} {_v(r['xla_temp_gb']):>8}")
  return "\n".join(lines)


# ------------------------------------------------------------------------------------------------
# Several configurations: one subprocess each.


def child_command(args: argparse.Namespace, method: str, encoder: str, shape: str,
                  out: str) -> list[str]:
  cmd = [sys.executable, str(pathlib.Path(__file__).resolve()), "--method", method, "--encoder",
         encoder, "--shape", shape, "--steps", str(args.steps), "--warmup", str(args.warmup),
         "--dtype", args.dtype, "--sweep-samples", str(args.sweep_samples), "--sgemm-n",
         str(args.sgemm_n), "--json", out, "--quiet"]
  for flag, value in (("--batch", args.batch), ("--eval-batch", args.eval_batch),
                      ("--attention-chunk", args.attention_chunk)):
    if value is not None:
      cmd += [flag, str(value)]
  if args.remat is not None:
    cmd.append("--remat" if args.remat else "--no-remat")
  for item in args.set:
    cmd += ["--set", item]
  if args.profile:
    cmd += ["--profile", os.path.join(args.profile, f"{method}_{encoder}_{shape}")]
  return cmd


def run_children(args: argparse.Namespace, combos: list[tuple[str, str, str]]) -> list[dict]:
  """Runs each configuration in its own process; a failed one is recorded with its error."""
  results = []
  with tempfile.TemporaryDirectory() as tmp:
    for i, (method, encoder, shape) in enumerate(combos):
      out = os.path.join(tmp, f"{i}.json")
      print(f"[bench] {method} / {encoder} / {shape} ...", flush=True)
      proc = subprocess.run(child_command(args, method, encoder, shape, out), cwd=ROOT,
                            capture_output=True, text=True)
      if proc.returncode == 0 and os.path.exists(out):
        with open(out, encoding="utf-8") as f:
          results.append(json.load(f))
        print(format_table(results[-1:], header=False), flush=True)
      else:
        tail = (proc.stderr or proc.stdout)[-2000:]
        print(f"[bench] failed (exit {proc.returncode}):\n{tail}", flush=True)
        results.append({"config": {"method": method, "encoder": encoder, "shape": shape},
                        "error": {"returncode": proc.returncode, "stderr_tail": tail}})
  return results


# ------------------------------------------------------------------------------------------------
# Output.


def _v(figure: Figure | None, fmt: str = "{:.2f}") -> str:
  if not figure or figure.get("value") is None:
    return "-"
  mark = {"measured": "", "extrapolated": "~", "quoted": "q"}[figure["kind"]]
  return mark + fmt.format(figure["value"])


COLUMNS = ("method", "encoder", "shape", "batch", "dtype", "compile s", "step s (med)", "step min-max",
           "step CPU s", "idle step s", "TFLOP/step", "GFLOP/s", "sgemm", "peak RSS GB",
           "eval samp/s", "sweep h", "idle sweep h", "ref step s", "speedup", "idle speedup",
           "LSTM s")


def table_row(r: dict[str, Any]) -> list[str]:
  c = r["config"]
  if "error" in r:
    return [c["method"], c["encoder"], c["shape"], "-", "-", "FAILED"] + ["-"] * (len(COLUMNS) - 6)
  t, ev, ref = r["train"], r.get("eval", {}), r.get("reference") or {}
  flops = t.get("flops_per_step")
  compile_s = t["lower_s"]["value"] + t["compile_s"]["value"]
  sweep = ev.get("full_sweep_h_msa_jax") or ev.get("full_eval_h")
  sweep_idle = ev.get("full_sweep_h_msa_jax_idle_estimate") or ev.get("full_eval_h_idle_estimate")
  lstm = r.get("lstm", {}).get("fwd_bwd_s", {}).get("median")
  ratio = r.get("ratios", {})
  return [c["method"], c["encoder"], c["shape"], str(c["batch"]), c["dtype"], f"{compile_s:.1f}",
          _v(t["step_s"]["median"], "{:.3f}"),
          f"{t['step_s']['min']['value']:.3f}-{t['step_s']['max']['value']:.3f}",
          _v(t.get("step_cpu_s", {}).get("median"), "{:.2f}"),
          _v(t.get("step_s_idle_estimate"), "{:.2f}"),
          _v(None if not flops else {**flops, "value": flops["value"] / 1e12}, "{:.3f}"),
          _v(t.get("gflops_per_s"), "{:.1f}"), _v(r["sgemm"], "{:.0f}"),
          _v(r["memory"]["peak_rss_gb"]), _v(ev.get("throughput"), "{:.1f}"), _v(sweep, "{:.2f}"),
          _v(sweep_idle, "{:.2f}"), _v(ref.get("train_step_s"), "{:.2f}"),
          _v(ratio.get("train_step_speedup")), _v(ratio.get("train_step_speedup_idle_estimate")),
          _v(lstm, "{:.3f}")]


def format_table(results: list[dict[str, Any]], header: bool = True) -> str:
  rows = [table_row(r) for r in results]
  widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(COLUMNS)]
  line = lambda cells: "  ".join(cell.rjust(w) for cell, w in zip(cells, widths))
  out = [line(COLUMNS), line(["-" * w for w in widths])] if header else []
  return "\n".join(out + [line(row) for row in rows])


def legend(results: list[dict[str, Any]]) -> str:
  loads = [(r["config"]["method"], r["config"]["encoder"], r["machine"]["load_before"],
            r["machine"]["load_after"]) for r in results if "machine" in r]
  machine = next((r["machine"] for r in results if "machine" in r), {})
  text = ("values measured unless marked: ~ extrapolated, q quoted (the authors' PyTorch code, issue "
          "#8); sweep h: LNLN full MOSI robustness sweep (10 rates × 686 × 3 seeds × 6 selection "
          "metrics) / GEAR test + 4 OOD evaluation, extrapolated from the measured throughput; "
          "idle: from the process's CPU time / cores (an otherwise idle machine); "
          "speedup = quoted reference step / ours.\n"
          f"machine: {machine.get('device')} · {machine.get('cpu')} · {machine.get('cpus')} cpus · "
          f"jax {machine.get('jax')}")
  for method, encoder, before, after in loads:
    text += f"\n  load average {method}/{encoder}: before {before}, after {after}"
  return text


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--method", default="lnln", choices=(*METHODS, "all"))
  p.add_argument("--encoder", default="tiny", help=f"comma-separated, of {ENCODERS}")
  p.add_argument("--shape", default="default", help=f"comma-separated, of {SHAPES}")
  p.add_argument("--batch", type=int, default=None, help="train batch (paper: 64; default: config)")
  p.add_argument("--eval-batch", type=int, default=None, help="eval batch (paper: 64; default: config)")
  p.add_argument("--steps", type=int, default=5, help="timed train steps (GEAR: rounded up to even)")
  p.add_argument("--warmup", type=int, default=1, help="untimed train steps after compiling")
  p.add_argument("--dtype", default="float32", choices=DTYPES,
                 help="compute dtype (parameters stay float32); sets config.model.dtype")
  p.add_argument("--attention-chunk", type=int, default=None,
                 help="LNLN: config.model.attention_chunk (0: plain attention)")
  p.add_argument("--remat", action=argparse.BooleanOptionalAction, default=None,
                 help="config.model.remat: recompute the BERT layers in the backward pass")
  p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                 help="config override, e.g. --set model.depth=1 (repeatable)")
  p.add_argument("--sweep-samples", type=int, default=64,
                 help="test samples timed in the evaluation (0: skip evaluation)")
  p.add_argument("--sgemm-n", type=int, default=2048, help="size of the reference matmul")
  p.add_argument("--json", default=None, help="write the results here")
  p.add_argument("--profile", default=None, help="jax.profiler trace directory")
  p.add_argument("--compare", nargs="+", default=None, metavar="VARIANT",
                 help="A/B mode: comma-separated KEY=VALUE overrides per variant ('' for none), "
                      "train steps interleaved in one process (one method/encoder/shape)")
  p.add_argument("--reference-python", default=None, metavar="PY",
                 help="with --compare: a Python with torch that runs the authors' train step "
                      "(scripts/reference/bench_reference.py) interleaved with ours")
  p.add_argument("--reference-repo", default=None, metavar="DIR",
                 help="the authors' checkout of --method (LNLN or GEAR), for --reference-python")
  p.add_argument("--quiet", action="store_true", help="no table (used by the parent process)")
  args = p.parse_args(argv)
  for name, valid in (("encoder", ENCODERS), ("shape", SHAPES)):
    for item in getattr(args, name).split(","):
      if item not in valid:
        p.error(f"--{name}: {item!r} is not one of {valid}")
  check_reference_args(p, args)
  return args


def check_reference_args(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
  """--reference-python / --reference-repo: both or neither, with --compare, for a configuration
  the reference worker runs (LNLN or GEAR, paper shapes, minilm or bert-base), on paths that exist."""
  if (args.reference_python is None) != (args.reference_repo is None):
    p.error("--reference-python and --reference-repo go together")
  if args.reference_python is None:
    return
  if args.compare is None:
    p.error("--reference-python needs --compare (the reference's steps are interleaved with the "
            "variants'; give --compare \"\" for ours as configured)")
  if (args.method not in METHODS or args.shape != "paper"
      or args.encoder not in ("minilm", "bert-base")):
    p.error(f"--reference-python: the reference worker runs one --method (lnln or gear) at --shape "
            f"paper with --encoder minilm or bert-base, not {args.method} / {args.shape} / "
            f"{args.encoder}")
  if not os.access(args.reference_python, os.X_OK):
    p.error(f"--reference-python {args.reference_python}: not an executable file")
  marker, repo = REFERENCE_REPOS[args.method]
  if not (pathlib.Path(args.reference_repo) / marker).is_file():
    p.error(f"--reference-repo {args.reference_repo}: no {marker} there; expected a checkout of "
            f"{repo}")


def write_json(path: str | None, payload: dict[str, Any]) -> None:
  """The results as JSON at `path` (parent folders created); nothing without a path."""
  if path:
    from msa_jax.io import write_text_atomic
    write_text_atomic(path, json.dumps(payload, indent=1))


def main(argv: Sequence[str] | None = None) -> None:
  args = parse_args(argv)
  methods = METHODS if args.method == "all" else (args.method,)
  combos = [(m, e, s) for m in methods for e in args.encoder.split(",") for s in args.shape.split(",")]
  if args.compare is not None:
    if len(combos) != 1:
      sys.exit("bench.py: --compare takes one --method, --encoder and --shape")
    args.method, args.encoder, args.shape = combos[0]
    try:
      result = compare_variants(args)
    except (ValueError, RuntimeError) as e:
      sys.exit(f"bench.py: {e}")
    write_json(args.json, result)
    print(format_compare(result))
    return
  if len(combos) == 1:
    args.method, args.encoder, args.shape = combos[0]
    results = [run_one(args)]
  else:
    results = run_children(args, combos)
  write_json(args.json, results[0] if len(combos) == 1 else {"runs": results})
  if not args.quiet:
    print(format_table(results))
    print(legend(results))
    for r in results:
      prof = r.get("train", {}).get("profile")
      if prof and "groups" in prof:
        print(f"\nprofile {r['config']['method']}/{r['config']['encoder']}: op time "
              f"{prof['op_time_s_per_step']:.2f} s/step")
        for g in prof["groups"][:15]:
          print(f"  {g['share'] * 100:5.1f}%  {g['s_per_step']:8.3f} s  {g['phase']:<8} "
                f"{g['module']:<22} {g['kind']}")
  if any("error" in r for r in results):
    sys.exit(1)


if __name__ == "__main__":
  main()
