"""Results files of a run: atomic writes, seed aggregation, and the markdown tables.

A run directory holds `results.json` (machine-readable: every metric of every selected checkpoint
on every evaluation set, per seed, plus mean and std over seeds) and `results.md` (the same as
tables: LNLN's per-rate layout of the paper, GEAR's IID / OOD layout).
"""

from __future__ import annotations

import json
import math
import os
import pathlib
import tempfile
from typing import Any

import numpy as np


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
  """Writes `text` to `path` via a temporary file in the same directory and `os.replace`, so a
  reader never sees a half-written file and an existing file survives a failed write."""
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
  try:
    with os.fdopen(fd, "w", encoding="utf-8") as f:
      f.write(text)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.unlink(tmp)
    raise


def _jsonable(x: Any) -> Any:
  if isinstance(x, dict):
    return {str(k): _jsonable(v) for k, v in x.items()}
  if isinstance(x, (list, tuple)):
    return [_jsonable(v) for v in x]
  if isinstance(x, (np.floating, float)):
    return None if math.isnan(float(x)) else float(x)
  if isinstance(x, np.integer):
    return int(x)
  return x


def write_json_atomic(path: str | os.PathLike, obj: Any) -> None:
  """JSON with NaN written as null (strict JSON), atomically."""
  write_text_atomic(path, json.dumps(_jsonable(obj), indent=2, sort_keys=False, allow_nan=False) + "\n")


def _num(v: Any) -> float:
  return float("nan") if v is None else float(v)


def mean_std(values: list[float]) -> tuple[float, float]:
  """Mean and sample std (ddof=1; 0 for one value) ignoring NaN entries."""
  arr = np.array([_num(v) for v in values], dtype=np.float64)
  arr = arr[~np.isnan(arr)]
  if arr.size == 0:
    return float("nan"), float("nan")
  return float(arr.mean()), float(arr.std(ddof=1)) if arr.size > 1 else 0.0


def aggregate_seeds(per_seed: dict[str, dict]) -> dict:
  """Mean and std over seeds of `per_seed[seed][selection][eval_set][metric]`."""
  seeds = list(per_seed)
  first = per_seed[seeds[0]]
  out: dict[str, dict] = {}
  for sel, evals in first.items():
    out[sel] = {}
    for ev, mets in evals.items():
      out[sel][ev] = {}
      for m in mets:
        mu, sd = mean_std([per_seed[s][sel][ev][m] for s in seeds])
        out[sel][ev][m] = {"mean": mu, "std": sd}
  return out


def _fmt(v: float, metric: str, percent: bool) -> str:
  if v is None or (isinstance(v, float) and math.isnan(v)):
    return "nan"
  if metric in ("MAE", "Corr") or not percent:
    return f"{v:.4f}"
  return f"{100 * v:.2f}"


def _cell(stat: dict, metric: str, n_seeds: int) -> str:
  if n_seeds > 1:
    mu, sd = stat["mean"], stat["std"]
    if metric in ("MAE", "Corr"):
      return f"{_fmt(mu, metric, False)} ± {_fmt(sd, metric, False)}"
    return f"{_fmt(mu, metric, True)} ± {100 * sd:.2f}"
  return _fmt(stat["mean"], metric, True)


def rows_table(table: dict, metrics: tuple[str, ...], rows: list[str], first: str, n_seeds: int = 1) -> str:
  """Markdown table of `table[row][metric] = {"mean", "std"}`: accuracies/F1 in %, MAE/Corr raw,
  `mean ± std` over seeds when there are several."""
  lines = [f"| {first} | " + " | ".join(metrics) + " |", "|---|" + "---|" * len(metrics)]
  for row in rows:
    lines.append(f"| {row} | " + " | ".join(_cell(table[row][m], m, n_seeds) for m in metrics) + " |")
  return "\n".join(lines)


def split_table(summary_sel: dict, metrics: tuple[str, ...], eval_names: list[str], n_seeds: int = 1) -> str:
  """One row per evaluation set (e.g. GEAR's IID test, OOD splits, OOD mean) for one checkpoint."""
  lines = ["| split | " + " | ".join(metrics) + " |", "|---|" + "---|" * len(metrics)]
  for ev in eval_names:
    lines.append(f"| {ev} | " + " | ".join(_cell(summary_sel[ev][m], m, n_seeds) for m in metrics) + " |")
  return "\n".join(lines)
