"""Results tables of a run: seed aggregation and the markdown tables.

A run directory holds `results.json` (machine-readable: every metric of every selected checkpoint
on every evaluation set, per seed, plus mean and std over seeds) and `results.md` (the same as
tables: LNLN's per-rate layout of the paper, GEAR's IID / OOD layout).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np


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


def _fmt(v: float | None, metric: str, percent: bool) -> str:
  if v is None or (isinstance(v, float) and math.isnan(v)):
    return "nan"
  if metric in ("MAE", "Corr") or not percent:
    return f"{v:.4f}"
  return f"{100 * v:.2f}"


def _cell(stat: Mapping[str, float | None] | None, metric: str, n_seeds: int) -> str:
  """`mean ± std` (accuracies/F1 in %, MAE/Corr raw); the mean alone for one seed; "–" if absent."""
  if stat is None:
    return "–"
  if n_seeds > 1:
    mu, sd = stat["mean"], stat.get("std")
    pct = metric not in ("MAE", "Corr")
    sd_text = "nan" if sd is None or math.isnan(sd) else (f"{100 * sd:.2f}" if pct else f"{sd:.4f}")
    return f"{_fmt(mu, metric, pct)} ± {sd_text}"
  return _fmt(stat["mean"], metric, True)


def grid_table(
  table: Mapping[str, Mapping[str, Any]],
  rows: Sequence[str],
  cols: Sequence[str],
  first: str,
  n_seeds: int | Mapping[str, int] = 1,
  metric: str | None = None,
  labels: Mapping[str, str] | None = None,
) -> str:
  """Markdown table of `table[row][col] = {"mean", "std"}` (a missing cell prints "–").

  Args:
    table: the cells; a row or column absent from it prints "–".
    rows, cols: their order; `first` heads the row-label column.
    n_seeds: seeds behind each cell (one int, or per row): `mean ± std` when > 1, the mean
      otherwise.
    metric: the metric every cell holds (its format: % or raw); None: each column is a metric name.
    labels: printed row labels (default: the row keys).
  """
  labels = labels or {}
  lines = [f"| {first} | " + " | ".join(cols) + " |", "|---|" + "---|" * len(cols)]
  for row in rows:
    n = n_seeds if isinstance(n_seeds, int) else n_seeds[row]
    cells = table.get(row, {})
    lines.append(
      f"| {labels.get(row, row)} | "
      + " | ".join(_cell(cells.get(c), metric or c, n) for c in cols)
      + " |"
    )
  return "\n".join(lines)


def rows_table(
  table: dict,
  metrics: tuple[str, ...],
  rows: list[str],
  first: str,
  n_seeds: int | Mapping[str, int] = 1,
) -> str:
  """Markdown table of `table[row][metric] = {"mean", "std"}`: accuracies/F1 in %, MAE/Corr raw,
  `mean ± std` over seeds when there are several."""
  return grid_table(table, rows, metrics, first, n_seeds)


def split_table(
  summary_sel: dict, metrics: tuple[str, ...], eval_names: list[str], n_seeds: int = 1
) -> str:
  """One row per evaluation set (e.g. GEAR's IID test, OOD splits, OOD mean) for one checkpoint."""
  return grid_table(summary_sel, eval_names, metrics, "split", n_seeds)
