"""PNG figures of finished runs (scripts/report.py): LNLN metric vs missing rate, GEAR IID/OOD bars.

Figures are built on `matplotlib.figure.Figure` directly (the Agg renderer, no pyplot state, no
display needed) and written atomically. Accuracies and F1 are drawn in %, MAE and Corr raw.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.figure import Figure

from msa_jax.io import atomic_file

RAW_METRICS = frozenset({"MAE", "Corr"})


@dataclasses.dataclass(frozen=True)
class Series:
  """One run's line (or bars): x positions' mean and std over seeds per metric.

  Attributes:
    label: legend text.
    x: missing rates (LNLN) or split names (GEAR), in order.
    mean, std: metric -> one value per x (fractions for accuracies; NaN where absent).
    n_seeds: seeds behind the values (no band / error bar for one).
  """

  label: str
  x: tuple
  mean: Mapping[str, Sequence[float]]
  std: Mapping[str, Sequence[float]]
  n_seeds: int


def _scale(metric: str) -> float:
  return 1.0 if metric in RAW_METRICS else 100.0


def _unit(metric: str) -> str:
  return metric if metric in RAW_METRICS else f"{metric} (%)"


def _array(values: Sequence[float | None]) -> np.ndarray:
  return np.array([math.nan if v is None else float(v) for v in values], dtype=np.float64)


def _grid(n: int) -> tuple[int, int]:
  cols = min(n, 4)
  return math.ceil(n / cols), cols


def _panels(
  n: int, panel_w: float, panel_h: float, n_legend: int, hspace: float
) -> tuple[Figure, list]:
  """A figure of `n` panels (at most 4 a row) with room for a figure legend of `n_legend` entries
  below them. Margins are fixed in inches (no layout engine: it would redraw the figure twice)."""
  rows, cols = _grid(n)
  legend_h = 0.25 * math.ceil(n_legend / 3) + 0.2
  top, bottom = 0.75, legend_h + 0.55
  width, height = panel_w * cols, panel_h * rows + top + bottom
  fig = Figure(figsize=(width, height))
  fig.subplots_adjust(
    left=0.75 / width,
    right=1 - 0.15 / width,
    top=1 - top / height,
    bottom=bottom / height,
    wspace=0.32,
    hspace=hspace,
  )
  axes = list(fig.subplots(rows, cols, squeeze=False).ravel())
  for ax in axes[n:]:
    ax.set_visible(False)
  return fig, axes[:n]


def _finish(fig: Figure, axes: list, title: str) -> None:
  handles, labels = axes[0].get_legend_handles_labels()
  height = fig.get_size_inches()[1]
  fig.legend(
    handles,
    labels,
    loc="lower center",
    bbox_to_anchor=(0.5, 0.08 / height),
    ncols=min(len(labels), 3),
    fontsize="small",
  )
  fig.suptitle(title, y=1 - 0.12 / height, va="top")


def lnln_rates_figure(
  series: Sequence[Series], metrics: Sequence[str], title: str, published: Series | None = None
) -> Figure:
  """One panel per metric: the metric against the missing rate, one line per run with a shaded
  mean ± std band over seeds, and the paper's per-rate numbers dashed when given."""
  fig, axes = _panels(len(metrics), 4.2, 3.0, len(series) + (published is not None), hspace=0.5)
  for ax, m in zip(axes, metrics):
    k = _scale(m)
    for s in series:
      x = np.array(s.x, dtype=np.float64)
      mu, sd = k * _array(s.mean[m]), k * _array(s.std[m])
      (line,) = ax.plot(
        x, mu, marker="o", ms=3, label=f"{s.label} ({s.n_seeds} seed{'s' * (s.n_seeds > 1)})"
      )
      if s.n_seeds > 1:
        ax.fill_between(x, mu - sd, mu + sd, color=line.get_color(), alpha=0.2, linewidth=0)
    if published is not None and m in published.mean:
      ax.plot(
        np.array(published.x, dtype=np.float64),
        k * _array(published.mean[m]),
        "k--",
        marker="x",
        ms=4,
        label=published.label,
      )
    ax.set_title(m)
    ax.set_xlabel("missing rate r")
    ax.set_ylabel(_unit(m))
    ax.grid(alpha=0.3)
  _finish(fig, axes, title)
  return fig


# The score of a constant guess, drawn as a line where a metric has one: the binary accuracies
# (and their F1 scores, for a balanced guess) of the GEAR plots.
CHANCE = {
  "Has0_acc_2": 0.5,
  "Non0_acc_2": 0.5,
  "Has0_F1_score": 0.5,
  "Non0_F1_score": 0.5,
  "Acc_2_mean": 0.5,
}


def gear_bars_figure(
  series: Sequence[Series], splits: Sequence[str], metrics: Sequence[str], title: str
) -> Figure:
  """One panel per metric: grouped bars over the evaluation splits (IID test, OOD splits, OOD
  mean), one bar per run, error bars of ± std over seeds."""
  panel_w = min(6.5, max(4.5, 0.35 * len(splits) * max(len(series), 1) ** 0.5 + 2.0))
  fig, axes = _panels(len(metrics), panel_w, 3.4, len(series), hspace=0.7)
  x = np.arange(len(splits), dtype=np.float64)
  width = 0.8 / max(len(series), 1)
  for ax, m in zip(axes, metrics):
    k = _scale(m)
    for i, s in enumerate(series):
      mu = k * _array([s.mean[m][s.x.index(sp)] if sp in s.x else None for sp in splits])
      sd = k * _array([s.std[m][s.x.index(sp)] if sp in s.x else None for sp in splits])
      ax.bar(
        x + (i - (len(series) - 1) / 2) * width,
        mu,
        width,
        yerr=sd if s.n_seeds > 1 else None,
        capsize=2,
        label=f"{s.label} ({s.n_seeds} seed{'s' * (s.n_seeds > 1)})",
      )
    if m in CHANCE:
      ax.axhline(k * CHANCE[m], color="0.3", linestyle="--", linewidth=1, label="chance")
    ax.set_xticks(x, list(splits), rotation=30, ha="right")
    ax.set_title(m)
    ax.set_ylabel(_unit(m))
    ax.grid(axis="y", alpha=0.3)
  _finish(fig, axes, title)
  return fig


def save_png_atomic(fig: Figure, path: str | os.PathLike, dpi: int = 120) -> None:
  """Writes `fig` as a PNG atomically (`msa_jax.io.atomic_file`)."""
  with atomic_file(path, "wb", suffix=".tmp.png") as f:
    fig.savefig(f, format="png", dpi=dpi)
