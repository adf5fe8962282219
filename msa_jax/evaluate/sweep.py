"""LNLN's robustness sweep: the test split at each missing rate, read per metric.

Each reported metric is read from the checkpoint selected for it on the validation split (F1 from
its accuracy's), and the paper's table holds one row per rate plus their mean.
"""

from __future__ import annotations

import numpy as np

from msa_jax.evaluate.sets import EvalSet

# Column order of the LNLN paper's per-rate tables (Tables 9, 10): Acc-2 / F1 as Non0 then Has0, the
# paper's "negative/positive / negative/non-negative" order (docs/methods.md §3). Used by the
# training report (msa_jax.train.lnln) and scripts/report.py.
PAPER_COLUMNS = {
  "mosi": (
    "Mult_acc_7",
    "Mult_acc_5",
    "Non0_acc_2",
    "Has0_acc_2",
    "Non0_F1_score",
    "Has0_F1_score",
    "MAE",
    "Corr",
  ),
  "sims": ("Mult_acc_5", "Mult_acc_3", "Mult_acc_2", "F1_score", "MAE", "Corr"),
}
PAPER_COLUMNS["mosei"] = PAPER_COLUMNS["mosi"]
# Which checkpoint a reported metric is read from.
READ_FROM = {"Has0_F1_score": "Has0_acc_2", "Non0_F1_score": "Non0_acc_2", "F1_score": "Mult_acc_2"}


def sweep_evals(rates: list[float]) -> tuple[EvalSet, ...]:
  """The final evaluation sets of the sweep: the test split at each rate."""
  return tuple(EvalSet("test", r) for r in rates)


def per_rate_table(results: dict, dataset: str, rates: list[float]) -> dict[str, dict[str, float]]:
  """One seed's paper table: {"0.0": {metric: value}, ..., "mean": {...}}; each metric read from
  the checkpoint selected for it (F1 from its accuracy's)."""
  table = {}
  for r in rates:
    ev = f"test@{r:.1f}"
    table[f"{r:.1f}"] = {m: results[READ_FROM.get(m, m)][ev][m] for m in PAPER_COLUMNS[dataset]}
  table["mean"] = {
    m: float(np.mean([table[f"{r:.1f}"][m] for r in rates])) for m in PAPER_COLUMNS[dataset]
  }
  return table
