"""GEAR's claim table: variants of GEAR (run directories) side by side under each selection
criterion, with the mechanism diagnostics at the selected epochs (docs/results.md).

Reads each run's results.json (per-seed scores of every criterion's checkpoint, the selected
epochs) and each seed's metrics.jsonl (the diagnostics of those epochs); plain numpy.
"""

from __future__ import annotations

import json
import pathlib
from collections.abc import Sequence

import numpy as np

from msa_jax.data.split import OOD_SPLITS

SETS = ("test", *OOD_SPLITS, "ood_mean")
DIAGNOSTICS = (
  "train/weighted_cue_agreement",
  "train/conflict_weight_ratio",
  "valid/bias_follows_cue_text",
  "valid/bias_follows_cue_audio",
  "valid/bias_follows_cue_vision",
)


def _epoch_records(seed_dir: pathlib.Path) -> dict[int, dict]:
  path = seed_dir / "metrics.jsonl"
  if not path.is_file():
    return {}
  records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
  return {int(r["epoch"]): r for r in records if "epoch" in r}


def _mean_std(values: list[float]) -> tuple[float, float]:
  arr = np.asarray([v for v in values if v is not None and np.isfinite(v)], np.float64)
  if arr.size == 0:
    return float("nan"), float("nan")
  return float(arr.mean()), float(arr.std(ddof=1)) if arr.size > 1 else 0.0


def claim_rows(
  runs: Sequence[pathlib.Path], criterion: str, metric: str = "Has0_acc_2"
) -> list[dict]:
  """One row per run that has a checkpoint for `criterion`: {variant, n, sets: {set: (mean, std)},
  epochs: [per seed], diagnostics: {name: (mean, std)}} over its seeds."""
  rows = []
  for run in runs:
    results = json.loads((run / "results.json").read_text())
    seeds = [str(s) for s in results["seeds"]]
    if criterion not in results["per_seed"][seeds[0]]:
      continue
    per = {ev: [] for ev in SETS}
    diags = {d: [] for d in DIAGNOSTICS}
    epochs = []
    for seed in seeds:
      scores = results["per_seed"][seed][criterion]
      for ev in SETS:
        if ev in scores:
          per[ev].append(scores[ev][metric])
      epoch = results["best_valid"][seed][criterion]["epoch"]
      epochs.append(epoch)
      record = _epoch_records(run / f"seed_{seed}").get(epoch, {})
      for d in DIAGNOSTICS:
        diags[d].append(record.get(d))
    rows.append(
      {
        "variant": run.name,
        "n": len(seeds),
        "sets": {ev: _mean_std(v) for ev, v in per.items() if v},
        "epochs": epochs,
        "diagnostics": {d: _mean_std(v) for d, v in diags.items()},
      }
    )
  return rows


def markdown(rows: list[dict], criterion: str, metric: str = "Has0_acc_2") -> str:
  """The rows as two markdown tables: scores (in %) and diagnostics."""
  pct = lambda ms: f"{100 * ms[0]:.2f} ± {100 * ms[1]:.2f}"
  raw = lambda ms: f"{ms[0]:.3f} ± {ms[1]:.3f}"
  sets = [ev for ev in SETS if any(ev in r["sets"] for r in rows)]
  out = [
    f"Selection: {criterion}. {metric} in %, mean ± std over seeds.",
    "",
    "| variant | " + " | ".join(sets) + " | selected epochs |",
    "|---|" + "---|" * (len(sets) + 1),
  ]
  for r in rows:
    cells = [pct(r["sets"][ev]) if ev in r["sets"] else "–" for ev in sets]
    out.append(f"| {r['variant']} | " + " | ".join(cells) + f" | {r['epochs']} |")
  names = [d.split("/")[1] for d in DIAGNOSTICS]
  out += [
    "",
    "Diagnostics at the selected epochs (mean ± std over seeds):",
    "",
    "| variant | " + " | ".join(names) + " |",
    "|---|" + "---|" * len(names),
  ]
  for r in rows:
    out.append(
      f"| {r['variant']} | " + " | ".join(raw(r["diagnostics"][d]) for d in DIAGNOSTICS) + " |"
    )
  return "\n".join(out) + "\n"
