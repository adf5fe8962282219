"""Mechanism diagnostics of debiasing (msa_jax.evaluate.diagnostics) and GEAR's selection criteria,
against direct numpy computations."""

import math

import numpy as np
import pytest

from msa_jax.data.split import OOD_VALID_SPLITS
from msa_jax.errors import RunConfigError
from msa_jax.evaluate import diagnostics
from msa_jax.train import gear as gear_train
from msa_jax.train.loop import update_best

LABELS = np.array([2.0, -1.5, 0.0, 0.4, -3.0, 1.0])
# columns text, audio, vision: aligned, conflicting, zero label, mixed (one modality against),
# aligned, conflicting
CUES = np.array([[1, 1, 1], [1, 1, 1], [1, -1, 1], [1, -1, 1], [-1, -1, -1], [-1, -1, -1]])


def test_cue_alignment_marks_aligned_conflicting_and_zero_label_samples():
  np.testing.assert_array_equal(diagnostics.cue_alignment(LABELS, CUES), [1, -1, 0, -1, 1, -1])


def test_weighted_cue_agreement_equals_numpy_on_a_batch():
  rng = np.random.default_rng(0)
  weights = rng.uniform(0.1, 3.0, LABELS.shape).astype(np.float32)
  alignment = diagnostics.cue_alignment(LABELS, CUES)
  sums = {k: float(v) for k, v in diagnostics.cue_weight_sums(weights, alignment).items()}
  got = diagnostics.cue_weight_summary(sums)
  aligned, conflicting = alignment == 1, alignment == -1
  want_share = weights[aligned].sum() / (weights[aligned].sum() + weights[conflicting].sum())
  want_ratio = weights[conflicting].mean() / weights[aligned].mean()
  assert got["weighted_cue_agreement"] == pytest.approx(want_share, rel=1e-6)
  assert got["conflict_weight_ratio"] == pytest.approx(want_ratio, rel=1e-6)
  # sums over two halves of the batch add up to the batch's
  a = diagnostics.cue_weight_sums(weights[:3], alignment[:3])
  b = diagnostics.cue_weight_sums(weights[3:], alignment[3:])
  halves = {k: float(a[k]) + float(b[k]) for k in a}
  assert diagnostics.cue_weight_summary(halves) == pytest.approx(got)


def test_a_batch_of_only_aligned_samples_gives_agreement_one():
  alignment = np.ones(5, np.int8)
  weights = np.array([0.2, 5.0, 1.0, 0.7, 3.0], np.float32)
  sums = {k: float(v) for k, v in diagnostics.cue_weight_sums(weights, alignment).items()}
  out = diagnostics.cue_weight_summary(sums)
  assert out["weighted_cue_agreement"] == 1.0
  assert math.isnan(out["conflict_weight_ratio"])  # no conflicting sample: undefined, not 0
  assert diagnostics.cue_weight_summary({"cue_w_aligned": 1.0}) == {}


def test_bias_follows_cue_counts_conflicting_samples_only():
  # conflicting samples: 1, 3, 5. Per modality, does sign(pred) equal that modality's cue?
  preds = np.array(
    [
      [9.0, 9.0, 9.0],  # aligned: ignored
      [1.0, -1.0, 0.5],  # cues +1: follows text, vision
      [0.0, 0.0, 0.0],  # zero label: ignored
      [2.0, 2.0, -2.0],  # cues (1, -1, 1): follows text only
      [9.0, 9.0, 9.0],  # aligned: ignored
      [-1.0, -1.0, 1.0],  # cues -1: follows text, audio
    ]
  )
  out = diagnostics.bias_follows_cue(preds, LABELS, CUES)
  assert out == pytest.approx(
    {
      "bias_follows_cue_text": 1.0,
      "bias_follows_cue_audio": 1 / 3,
      "bias_follows_cue_vision": 1 / 3,
    }
  )


def test_ood_valid_criterion_is_the_mean_acc2_of_the_ood_validation_splits():
  per_split = {"valid": {"Acc_2_mean": 0.9, "Has0_acc_2": 0.88}}
  for i, name in enumerate(OOD_VALID_SPLITS):
    per_split[name] = {"Acc_2_mean": 0.1 * (i + 1), "Has0_acc_2": 0.2 * i}
  out = diagnostics.ood_valid_summary(per_split, OOD_VALID_SPLITS)
  assert out["ood_valid"] == pytest.approx(np.mean([0.1, 0.2, 0.3, 0.4]))
  assert out["gap_ood_valid_audio"] == pytest.approx(0.88 - 0.2)
  assert diagnostics.ood_valid_summary({"valid": per_split["valid"]}, OOD_VALID_SPLITS) == {}


def test_ood_validation_selects_another_epoch_than_iid_validation():
  """A constructed history in which IID validation peaks before swap (epoch 2) and OOD validation
  after it (epoch 4), as on the synthetic benchmark."""
  history = [
    {"Acc_2_mean": 0.80, "MAE": 1.0, "ood_valid": 0.30},
    {"Acc_2_mean": 0.90, "MAE": 0.8, "ood_valid": 0.35},
    {"Acc_2_mean": 0.85, "MAE": 0.9, "ood_valid": 0.50},
    {"Acc_2_mean": 0.84, "MAE": 0.7, "ood_valid": 0.60},
    {"Acc_2_mean": 0.86, "MAE": 0.9, "ood_valid": 0.60},  # a tie keeps epoch 4
  ]
  best = {m: {"value": float("nan"), "epoch": None} for m in ("ood_valid", "Acc_2_mean", "MAE")}
  improved = [update_best(best, val, epoch) for epoch, val in enumerate(history, start=1)]
  assert {m: b["epoch"] for m, b in best.items()} == {"ood_valid": 4, "Acc_2_mean": 2, "MAE": 4}
  assert improved[0] == ["ood_valid", "Acc_2_mean", "MAE"] and improved[4] == []


def _splits(names):
  return {name: object() for name in names}


def test_gear_criteria_put_the_configured_one_first_and_need_ood_validation_splits():
  with_ood = _splits(["train", "valid", "test", *OOD_VALID_SPLITS])
  assert gear_train.selection_criteria("ood_valid", with_ood) == ("ood_valid", "Acc_2_mean", "MAE")
  assert gear_train.selection_criteria("MAE", with_ood) == ("MAE", "ood_valid", "Acc_2_mean")
  iid_only = _splits(["train", "valid", "test"])
  assert gear_train.selection_criteria("Acc_2_mean", iid_only) == ("Acc_2_mean", "MAE")
  with pytest.raises(RunConfigError, match="criterion='ood_valid' needs the OOD validation"):
    gear_train.selection_criteria("ood_valid", iid_only)
