"""msa_jax.report.claim: the claim table's rows from run directories, against direct means."""

import json

import numpy as np
import pytest

from msa_jax.data.split import OOD_SPLITS
from msa_jax.report import claim


def _run(root, name, scores, epochs, diag):
  """A run directory as train.py writes it: results.json with per-seed scores of two criteria and
  their selected epochs, and each seed's metrics.jsonl."""
  run = root / name
  seeds = list(scores)
  per_seed, best = {}, {}
  for seed in seeds:
    per_seed[seed] = {
      crit: {ev: {"Has0_acc_2": scores[seed][crit] + 0.01 * i} for i, ev in enumerate(claim.SETS)}
      for crit in ("ood_valid", "Acc_2_mean")
    }
    best[seed] = {crit: {"epoch": epochs[seed][crit]} for crit in ("ood_valid", "Acc_2_mean")}
    (run / f"seed_{seed}").mkdir(parents=True)
    lines = [
      {
        "epoch": e,
        "train/weighted_cue_agreement": diag[seed] + e,
        "valid/bias_follows_cue_text": 0.5,
      }
      for e in (1, 2, 3)
    ]
    (run / f"seed_{seed}" / "metrics.jsonl").write_text("\n".join(json.dumps(l) for l in lines))
  results = {"seeds": [int(s) for s in seeds], "per_seed": per_seed, "best_valid": best}
  (run / "results.json").write_text(json.dumps(results))
  return run


def test_rows_are_seed_means_at_each_criterion_with_the_selected_epochs_diagnostics(tmp_path):
  run = _run(
    tmp_path,
    "full",
    {"1": {"ood_valid": 0.6, "Acc_2_mean": 0.5}, "2": {"ood_valid": 0.8, "Acc_2_mean": 0.7}},
    {"1": {"ood_valid": 3, "Acc_2_mean": 1}, "2": {"ood_valid": 2, "Acc_2_mean": 1}},
    {"1": 0.0, "2": 0.1},
  )
  (row,) = claim.claim_rows([run], "ood_valid")
  assert row["variant"] == "full" and row["epochs"] == [3, 2]
  test = row["sets"]["test"]
  assert test == pytest.approx((0.7, np.std([0.6, 0.8], ddof=1)))
  assert row["sets"]["ood_mean"][0] == pytest.approx(0.7 + 0.01 * (len(OOD_SPLITS) + 1))
  # the diagnostics of epoch 3 (seed 1) and epoch 2 (seed 2)
  agreement = row["diagnostics"]["train/weighted_cue_agreement"]
  assert agreement == pytest.approx((np.mean([3.0, 2.1]), np.std([3.0, 2.1], ddof=1)))
  assert all(np.isnan(row["diagnostics"]["train/conflict_weight_ratio"]))  # not recorded
  (iid,) = claim.claim_rows([run], "Acc_2_mean")
  assert iid["epochs"] == [1, 1] and iid["sets"]["test"][0] == pytest.approx(0.6)
  assert claim.claim_rows([run], "MAE") == []
  md = claim.markdown([row], "ood_valid")
  assert "| full | 70.00 ± 14.14 |" in md and "[3, 2]" in md
