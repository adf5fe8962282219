"""The benchmark's results as text tables, and as a JSON file."""

from __future__ import annotations

import json
from typing import Any

from msa_jax.bench.figures import Figure
from msa_jax.io import write_text_atomic

COLUMNS = (
  "method",
  "encoder",
  "shape",
  "batch",
  "dtype",
  "compile s",
  "step s (med)",
  "step min-max",
  "step CPU s",
  "idle step s",
  "TFLOP/step",
  "GFLOP/s",
  "sgemm",
  "peak RSS GB",
  "eval samp/s",
  "sweep h",
  "idle sweep h",
  "ref step s",
  "speedup",
  "idle speedup",
  "LSTM s",
)


def cell(figure: Figure | None, fmt: str = "{:.2f}") -> str:
  """A figure's value for a table: '-' where there is none; '~' marks an extrapolated value and
  'q' a quoted one."""
  if not figure or figure.get("value") is None:
    return "-"
  mark = {"measured": "", "extrapolated": "~", "quoted": "q"}[figure["kind"]]
  return mark + fmt.format(figure["value"])


def table_row(r: dict[str, Any]) -> list[str]:
  """One configuration's result as the cells of `COLUMNS`."""
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
  return [
    c["method"],
    c["encoder"],
    c["shape"],
    str(c["batch"]),
    c["dtype"],
    f"{compile_s:.1f}",
    cell(t["step_s"]["median"], "{:.3f}"),
    f"{t['step_s']['min']['value']:.3f}-{t['step_s']['max']['value']:.3f}",
    cell(t.get("step_cpu_s", {}).get("median"), "{:.2f}"),
    cell(t.get("step_s_idle_estimate"), "{:.2f}"),
    cell(None if not flops else {**flops, "value": flops["value"] / 1e12}, "{:.3f}"),
    cell(t.get("gflops_per_s"), "{:.1f}"),
    cell(r["sgemm"], "{:.0f}"),
    cell(r["memory"]["peak_rss_gb"]),
    cell(ev.get("throughput"), "{:.1f}"),
    cell(sweep, "{:.2f}"),
    cell(sweep_idle, "{:.2f}"),
    cell(ref.get("train_step_s"), "{:.2f}"),
    cell(ratio.get("train_step_speedup")),
    cell(ratio.get("train_step_speedup_idle_estimate")),
    cell(lstm, "{:.3f}"),
  ]


def format_table(results: list[dict[str, Any]], header: bool = True) -> str:
  """The results as a right-aligned table, one row per configuration."""
  rows = [table_row(r) for r in results]
  widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(COLUMNS)]

  def line(cells: list[str]) -> str:
    return "  ".join(text.rjust(w) for text, w in zip(cells, widths))

  out = [line(COLUMNS), line(["-" * w for w in widths])] if header else []
  return "\n".join(out + [line(row) for row in rows])


def legend(results: list[dict[str, Any]]) -> str:
  """What the table's marks and columns mean, the machine, and the load around each run."""
  loads = [
    (
      r["config"]["method"],
      r["config"]["encoder"],
      r["machine"]["load_before"],
      r["machine"]["load_after"],
    )
    for r in results
    if "machine" in r
  ]
  machine = next((r["machine"] for r in results if "machine" in r), {})
  text = (
    "values measured unless marked: ~ extrapolated, q quoted (the authors' PyTorch code, "
    "msa_jax/bench/quoted.json); sweep h: LNLN full MOSI robustness sweep (10 rates × 686 × "
    "3 seeds × 6 selection metrics) / GEAR test + 4 OOD evaluation, extrapolated from the "
    "measured throughput; idle: from the process's CPU time / cores (an otherwise idle "
    "machine); speedup = quoted reference step / ours.\n"
    f"machine: {machine.get('device')} · {machine.get('cpu')} · {machine.get('cpus')} cpus · "
    f"jax {machine.get('jax')} · malloc {machine.get('malloc', 'system')}"
  )
  for method, encoder, before, after in loads:
    text += f"\n  load average {method}/{encoder}: before {before}, after {after}"
  return text


def format_profiles(results: list[dict[str, Any]], groups: int = 15) -> str:
  """The op time per model part of each result traced with --profile (its largest groups)."""
  lines = []
  for r in results:
    prof = r.get("train", {}).get("profile")
    if prof and "groups" in prof:
      lines += [
        "",
        f"profile {r['config']['method']}/{r['config']['encoder']}: op time "
        f"{prof['op_time_s_per_step']:.2f} s/step; no op event running "
        f"{prof['no_op_s_per_step']:.2f} of the {prof['traced_s_per_step']:.2f} s traced per step "
        "(asynchronous dot thunks: see the JSON's note)",
      ]
      lines += [
        f"  {g['share'] * 100:5.1f}%  {g['s_per_step']:8.3f} s  {g['phase']:<8} "
        f"{g['module']:<22} {g['kind']}"
        for g in prof["groups"][:groups]
      ]
  return "\n".join(lines)


def format_compare(result: dict[str, Any]) -> str:
  """A `--compare` result as a table: one row per variant (and the reference's step)."""
  c = result["config"]
  if c.get("protocol") == "alternating":
    how = f"{c['rounds']} alternating rounds of {c['steps']} steps, one process at a time"
  else:
    how = f"{c['steps']} interleaved rounds"
  ref_sgemm = (result.get("reference") or {}).get("sgemm")
  theirs = f"; the reference's torch sgemm {ref_sgemm['value']:.0f}" if ref_sgemm else ""
  lines = [
    f"{c['method']} / {c['encoder']} / {c['shape']}: {how} "
    f"(sgemm {result['sgemm']['value']:.0f} GFLOP/s{theirs})",
    f"{'variant':<40} {'step s (med)':>12} {'min-max':>15} {'ratio':>7} {'temp GB':>8} "
    f"{'peak GB':>8}",
  ]
  rows = [(r["variant"] or "(base)", r) for r in result["compare"]]
  if "reference" in result:
    ref = result["reference"]
    rows.append(
      (f"reference: authors' PyTorch (torch {ref.get('torch', '?')})", {**ref, "xla_temp_gb": None})
    )
  for name, r in rows:
    st = r["step_s"]
    lines.append(
      f"{name:<40} {st['median']['value']:>12.3f} "
      f"{st['min']['value']:>7.3f}-{st['max']['value']:<7.3f} "
      f"{r['step_ratio']['value']:>7.3f} {cell(r['xla_temp_gb']):>8} "
      f"{cell(r.get('peak_rss_gb')):>8}"
    )
  return "\n".join(lines)


def write_json(path: str | None, payload: dict[str, Any]) -> None:
  """The results as JSON at `path` (parent folders created); nothing without a path."""
  if path:
    write_text_atomic(path, json.dumps(payload, indent=1))
