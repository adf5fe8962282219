"""A/B with one process alive at a time: each variant, and the authors' step, in a fresh process
per round, one after another (`scripts/bench.py --compare ... --alternate ROUNDS`).

Interleaving steps inside one process (`compare`) cancels the machine's drift, but keeps every
variant's buffers, and the reference worker's, resident beside the step being timed. On a 2-vCPU,
24 GB machine a bert-base step timed beside another large process was measured up to 1.45× slower
than alone, while the authors' step was not slowed (docs/benchmarks.md): what a user sees running
one program at a time is the alternating figure. Each round runs every variant's
`scripts/bench.py` (train step only, `--warmup` then `--steps` steps after compiling) and then,
with `--reference-python`, `bench_reference.py` (`--reference-warmup` untimed steps, then
`--steps`), each to completion before the next starts. The processes share a persistent
compilation cache in a temporary directory, so rounds after the first load our compiled steps
instead of compiling them again. A round's figure is the median of its steps; ratios are the
median over rounds of a variant's figure / the first variant's in the same round.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import pathlib
import statistics
import subprocess
import sys
import tempfile
from typing import Any

from msa_jax.bench.compare import parse_variant
from msa_jax.bench.figures import fig, round_ratio, time_stats
from msa_jax.bench.reference import reference_command, reference_env, reference_info
from msa_jax.bench.run import ROOT, child_command
from msa_jax.bench.timing import log

ROUND_NOTE = "median over rounds of this round's median step / the first variant's, same round"


def _run(cmd: list[str], what: str, env: dict[str, str] | None = None) -> str:
  """Runs `cmd` to completion, passing its error output (its progress log) on; its stdout, or
  RuntimeError with the tail of its error output."""
  log(f"{what}: {' '.join(cmd)}")
  tail: collections.deque[str] = collections.deque(maxlen=40)
  with tempfile.TemporaryFile("w+", encoding="utf-8") as out:
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=out, stderr=subprocess.PIPE, text=True, env=env)
    for line in proc.stderr:
      sys.stderr.write(line)
      tail.append(line)
    code = proc.wait()
    out.seek(0)
    stdout = out.read()
  if code != 0:
    raise RuntimeError(f"{what} failed (exit {code}):\n{(''.join(tail) or stdout)[-2000:]}")
  return stdout


def _ours(
  args: argparse.Namespace, script: pathlib.Path, items: list[str], out: str, env: dict
) -> dict[str, Any]:
  """One process of our train step for the variant `items` (on top of `args.set`): its JSON."""
  child = argparse.Namespace(**{**vars(args), "set": [*args.set, *items]})
  child.sweep_samples, child.profile = 0, None
  cmd = child_command(child, script, args.method, args.encoder, args.shape, out)
  _run(cmd, f"ours {','.join(items) or '(base)'}", env)
  with open(out, encoding="utf-8") as f:
    return json.load(f)


def _reference(args: argparse.Namespace, steps: int) -> dict[str, Any]:
  """One process of the authors' step: `--reference-warmup` untimed steps, `steps` timed; its
  JSON (the last line of its output that is one)."""
  cmd = reference_command(args, "--warmup", str(args.reference_warmup), "--steps", str(steps))
  lines = [
    ln for ln in _run(cmd, "reference", reference_env(args)).splitlines() if ln.startswith("{")
  ]
  if not lines:
    raise RuntimeError(f"reference {cmd[1]} printed no JSON result")
  return json.loads(lines[-1])


def _round_medians(runs: list[list[float]]) -> list[float]:
  return [statistics.median(r) for r in runs]


def alternate_variants(
  args: argparse.Namespace, script: pathlib.Path, steps: int
) -> dict[str, Any]:
  """`args.alternate` rounds of every `args.compare` variant, each in its own process of `script`
  (scripts/bench.py) timing `steps` steps, then the reference's process where
  `args.reference_python` is set; the result has `compare`'s layout."""
  parsed = [(text, parse_variant(text)) for text in args.compare]  # every variant checked first
  ours: dict[str, list[dict]] = {text: [] for text, _ in parsed}
  theirs: list[dict] = []
  with tempfile.TemporaryDirectory() as tmp:
    env = {**os.environ, "JAX_COMPILATION_CACHE_DIR": os.path.join(tmp, "compile_cache")}
    for r in range(args.alternate):
      for i, (text, items) in enumerate(parsed):
        ours[text].append(_ours(args, script, items, os.path.join(tmp, f"{r}_{i}.json"), env))
      if args.reference_python:
        theirs.append(_reference(args, steps))
      log(
        f"round {r + 1}/{args.alternate}: "
        + ", ".join(f"{ours[t][-1]['train']['step_s']['median']['value']:.3f}s" for t, _ in parsed)
        + (f", reference {theirs[-1]['step_s_median']:.3f}s" if theirs else "")
      )
  step_runs = {t: [run["train"]["step_s"]["all_s"] for run in runs] for t, runs in ours.items()}
  base = _round_medians(step_runs[parsed[0][0]])
  rows = []
  for text, runs in ours.items():
    first = runs[0]
    rows.append(
      {
        "variant": text,
        "compile_s": first["train"]["compile_s"],
        "compile_s_cached": fig(
          statistics.median(run["train"]["compile_s"]["value"] for run in runs[1:])
          if len(runs) > 1
          else None,
          "s",
          "measured",
          "rounds after the first, from the persistent compilation cache",
        ),
        "step_s": time_stats([t for run in step_runs[text] for t in run]),
        "round_median_s": [round(m, 6) for m in _round_medians(step_runs[text])],
        "xla_temp_gb": first["train"].get("xla_temp_gb", fig(None, "GB", "measured")),
        "peak_rss_gb": fig(
          max(run["train"]["peak_rss_train_gb"]["value"] or 0.0 for run in runs) or None,
          "GB",
          "measured",
          "the largest VmHWM over the train steps of this variant's processes",
        ),
        "step_ratio": {
          **round_ratio(_round_medians(step_runs[text]), base),
          "note": ROUND_NOTE,
        },
      }
    )
  sgemm = [run["sgemm"]["value"] for runs in ours.values() for run in runs]
  result: dict[str, Any] = {
    "config": {
      "method": args.method,
      "encoder": args.encoder,
      "shape": args.shape,
      "set": list(args.set),
      "protocol": "alternating",
      "rounds": args.alternate,
      "warmup": args.warmup,
      "reference_warmup": args.reference_warmup,
      "reference_malloc": args.reference_malloc,
      "steps": steps,
    },
    "machine": ours[parsed[0][0]][0]["machine"],
    "sgemm": fig(
      statistics.median(sgemm),
      "GFLOP/s",
      "measured",
      f"median of our processes' sgemm rates ({min(sgemm):.0f}-{max(sgemm):.0f})",
    ),
    "compare": rows,
  }
  if theirs:
    ref_runs = [run["step_s"] for run in theirs]
    result["reference"] = {
      **reference_info(theirs, measured=("step_s", "cpu_s", "step_s_median")),
      "step_s": time_stats([t for run in ref_runs for t in run]),
      "round_median_s": [round(m, 6) for m in _round_medians(ref_runs)],
      "step_ratio": {**round_ratio(_round_medians(ref_runs), base), "note": ROUND_NOTE},
      "peak_rss_gb": fig(
        max(run["peak_rss_gb"] for run in theirs),
        "GB",
        "measured",
        "the largest ru_maxrss of the reference's processes",
      ),
      "note": "the authors' PyTorch train step (scripts/reference/bench_reference.py) in a process "
      "of its own after ours in each round; step_ratio = its speed-up measured against the first "
      "variant",
    }
  return result
