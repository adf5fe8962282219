"""The authors' PyTorch train step in a child process, one step on request
(scripts/reference/bench_reference.py --worker), so that its steps interleave with ours.

The protocol: the worker prints one JSON line `{"ready": true, ...}` (its versions and sizes) once
its model is built; then, for each command line on its stdin, one JSON answer: `step` ->
`{"step_s", "cpu_s"}`, `rss` -> `{"peak_rss_gb"}`, an unknown command -> `{"error"}`; `quit` or
EOF ends it. Other lines it prints (the authors' code prints its device) are not answers.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import statistics
import subprocess
from typing import Any

from msa_jax import allocator
from msa_jax.bench.figures import Figure, fig
from msa_jax.bench.timing import log

ROOT = pathlib.Path(__file__).resolve().parents[2]
# The authors' repositories, and a file that identifies a checkout of each (--reference-repo).
REFERENCE_REPOS = {
  "lnln": ("configs/train_mosi.yaml", "github.com/Haoyu-ha/LNLN"),
  "gear": ("src/models/IFL_ES.py", "github.com/Teng-Sun/GEAR"),
}
# Untimed reference steps before the interleaved rounds (`--reference-warmup`). The authors'
# step time falls over the first steps of a fresh process and then holds (measured on the
# project's CPU machine: LNLN bert-base 36.0, 31.7, 29.1, 28.0, 27.5 s, as their own training
# loop shows), while ours holds from the first step after compiling; the steps a user's
# training run consists of are the later ones.
REFERENCE_WARMUP = 4


SCRIPT = ROOT / "scripts" / "reference" / "bench_reference.py"


def reference_env(args: argparse.Namespace) -> dict[str, str]:
  """The environment of the authors' step: the C library's allocator, as their users run it
  (`--reference-malloc system`, the default), or this process's own (`same`: both sides on the
  same allocator)."""
  if args.reference_malloc == "same":
    return dict(os.environ)
  return allocator.without_preload(os.environ)


def reference_command(args: argparse.Namespace, *extra: str) -> list[str]:
  """The command line that runs the authors' step (`bench_reference.py`) for the command line's
  method / encoder / batch, with `extra` options (`--worker`, or `--warmup N --steps N`)."""
  return [
    args.reference_python,
    str(SCRIPT),
    *extra,
    "--method",
    args.method,
    "--ref",
    args.reference_repo,
    "--encoder",
    args.encoder,
    "--batch",
    str(args.batch or 64),
    "--sgemm-n",
    str(args.sgemm_n),
  ]


def reference_sgemm(runs: list[dict[str, Any]]) -> Figure | None:
  """The torch matmul rate the reference's processes measured (`sgemm_gflops` in each one's JSON
  `runs`), as a figure: their median; None where none reported one."""
  rates = [run["sgemm_gflops"] for run in runs if "sgemm_gflops" in run]
  if not rates:
    return None
  note = "torch f32 matmul in the reference's process"
  if len(rates) > 1:
    note += f"es, median ({min(rates):.0f}-{max(rates):.0f})"
  return fig(statistics.median(rates), "GFLOP/s", "measured", note)


def reference_info(runs: list[dict[str, Any]], measured: tuple[str, ...] = ()) -> dict[str, Any]:
  """What the reference's JSON `runs` say of it, for a result's `reference` entry: the first run's
  fields (versions, sizes) less its `measured` per-run figures, and its matmul rate as a figure
  (`sgemm`, from `reference_sgemm`) in place of the raw `sgemm_gflops`."""
  skip = {*measured, "sgemm_gflops"}
  return {**{k: v for k, v in runs[0].items() if k not in skip}, "sgemm": reference_sgemm(runs)}


class ReferenceWorker:
  """The authors' PyTorch train step in a child process (`bench_reference.py --worker`): one
  step per `step()`, its wall time as the child measured it."""

  def __init__(self, proc: subprocess.Popen, info: dict[str, Any]):
    self.proc, self.info = proc, info

  @classmethod
  def start(cls, args: argparse.Namespace) -> ReferenceWorker:
    """Starts the worker for the command line's method / encoder / batch, waits for its `ready`
    answer (kept as `info`) and runs its `--reference-warmup` untimed steps."""
    cmd = reference_command(args, "--worker")
    log("reference: " + " ".join(cmd))
    proc = subprocess.Popen(
      cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=reference_env(args)
    )
    worker = cls(proc, {})
    worker.info = worker._reply()
    for _ in range(args.reference_warmup):
      worker.step()
    return worker

  def _reply(self) -> dict[str, Any]:
    """The worker's next JSON answer; other lines it prints (the authors' code may print) are
    passed on to the log."""
    while True:
      line = self.proc.stdout.readline()
      if not line:
        code = self.proc.wait()
        raise RuntimeError(
          f"reference worker {SCRIPT.name} exited (code {code}) without "
          f"answering; its error is above"
        )
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
    """Runs one reference train step; its wall seconds."""
    return float(self._ask("step")["step_s"])

  def peak_rss_gb(self) -> float:
    """The worker's peak resident set so far (ru_maxrss), GB."""
    return float(self._ask("rss")["peak_rss_gb"])

  def close(self) -> None:
    """Asks the worker to quit; kills it if it does not within a minute."""
    if self.proc.poll() is None:
      try:
        self.proc.stdin.write("quit\n")
        self.proc.stdin.close()
        self.proc.wait(timeout=60)
      except (OSError, subprocess.TimeoutExpired):
        self.proc.kill()
