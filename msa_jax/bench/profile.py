"""Train steps traced with jax.profiler, and the traced op time attributed to model parts."""

from __future__ import annotations

import collections
import glob
import os
import pathlib
from typing import Any

import jax

from msa_jax.bench.hlo import classify_op, instruction_op_name, parse_hlo


def profile_steps(
  compiled, state, batches: list, key: jax.Array, directory: str, steps: int = 2
) -> tuple[dict[str, Any], Any]:
  """Traces `steps` train steps into `directory` (the compiled HLO written beside the trace) and
  attributes the op time to model parts.

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


def summarise_profile(path: pathlib.Path, hlo: str, steps: int, top: int = 20) -> dict[str, Any]:
  """Sums traced op durations per (phase, module, kind) and lists the slowest ops."""
  files = sorted(glob.glob(str(path / "**" / "*.xplane.pb"), recursive=True), key=os.path.getmtime)
  if not files:
    return {"error": "no .xplane.pb written", "trace_dir": str(path)}
  data = jax.profiler.ProfileData.from_file(files[-1])
  instrs, comps = parse_hlo(hlo)
  per_op: dict[str, float] = collections.Counter()
  spans: list[tuple[int, int]] = []
  for plane in data.planes:
    for line in plane.lines:
      for event in line.events:
        name = event.name
        if name in instrs and instrs[name][0] not in ("while", "call", "conditional"):
          per_op[name] += event.duration_ns / 1e9 / steps
          spans.append((event.start_ns, event.start_ns + event.duration_ns))
  traced_ns, covered_ns = coverage(spans)
  groups: dict[tuple[str, str, str], float] = collections.Counter()
  for name, secs in per_op.items():
    groups[classify_op(instruction_op_name(name, instrs, comps))] += secs
  total = sum(per_op.values())
  rows = [
    {
      "phase": p,
      "module": m,
      "kind": k,
      "s_per_step": round(s, 4),
      "share": round(s / total, 4) if total else None,
    }
    for (p, m, k), s in sorted(groups.items(), key=lambda kv: -kv[1])
  ]
  slowest = [
    {
      "op": n,
      "opcode": instrs[n][0],
      "op_name": instruction_op_name(n, instrs, comps),
      "s_per_step": round(s, 4),
    }
    for n, s in per_op.most_common(top)
  ]
  return {
    "trace_file": files[-1],
    "op_time_s_per_step": round(total, 4),
    "traced_s_per_step": round(traced_ns / 1e9 / steps, 4),
    "no_op_s_per_step": round((traced_ns - covered_ns) / 1e9 / steps, 4),
    "groups": rows,
    "slowest_ops": slowest,
    "note": "op time: summed durations of traced XLA ops per step (ops on parallel threads add "
    "up); traced: from the first op's start to the last op's end; no op: the part of it with no "
    "op event on any thread. XLA:CPU runs dot thunks that go to Eigen (e.g. the weight gradients "
    "x^T dy) asynchronously: their events cover the launch, and their work runs in the no-op "
    "time or beside, and inside the durations of, the ops that follow",
  }


def coverage(spans: list[tuple[int, int]]) -> tuple[int, int]:
  """(the extent of the (start, end) `spans`: last end - first start, the length of their union):
  the traced time and the part of it with at least one op event running."""
  if not spans:
    return 0, 0
  ordered = sorted(spans)
  covered, (start, end) = 0, ordered[0]
  for s, e in ordered[1:]:
    if s > end:
      covered += end - start
      start, end = s, e
    else:
      end = max(end, e)
  covered += end - start
  return end - ordered[0][0], covered  # the last merged span ends last
