"""MMSA metrics against scikit-learn and hand-worked cases (docs/methods.md §3)."""

import warnings

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, f1_score

from msa_jax import metrics


def _sklearn_mosi(pred, label):
  nz = label != 0
  return {
    "Has0_acc_2": accuracy_score(label >= 0, pred >= 0),
    "Has0_F1_score": f1_score(label >= 0, pred >= 0, average="weighted"),
    "Non0_acc_2": accuracy_score(label[nz] > 0, pred[nz] > 0),
    "Non0_F1_score": f1_score(label[nz] > 0, pred[nz] > 0, average="weighted"),
    "Mult_acc_5": accuracy_score(np.round(np.clip(label, -2, 2)), np.round(np.clip(pred, -2, 2))),
    "Mult_acc_7": accuracy_score(np.round(np.clip(label, -3, 3)), np.round(np.clip(pred, -3, 3))),
    "MAE": np.mean(np.abs(pred - label)),
    "Corr": np.corrcoef(pred, label)[0, 1],
  }


def _sklearn_sims(pred, label):
  pred, label = np.clip(pred, -1, 1), np.clip(label, -1, 1)
  out = {}
  for name, edges in (
    ("Mult_acc_2", [-1.01, 0.0, 1.01]),
    ("Mult_acc_3", [-1.01, -0.1, 0.1, 1.01]),
    ("Mult_acc_5", [-1.01, -0.7, -0.1, 0.1, 0.7, 1.01]),
  ):
    # np.digitize with right=True puts x in bin i when edges[i-1] < x <= edges[i].
    p, t = np.digitize(pred, edges, right=True), np.digitize(label, edges, right=True)
    out[name] = accuracy_score(t, p)
    if name == "Mult_acc_2":
      out["F1_score"] = f1_score(t, p, average="weighted")
  out["MAE"] = np.mean(np.abs(pred - label))
  out["Corr"] = np.corrcoef(pred, label)[0, 1]
  return out


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("dataset", ["mosi", "mosei"])
def test_mosi_metrics_match_sklearn(seed, dataset):
  rng = np.random.default_rng(seed)
  label = np.round(rng.uniform(-3, 3, 300) * 5) / 5  # MOSI-like granularity, includes exact zeros
  label[:7] = 0.0
  pred = label + rng.normal(0, 1.2, 300)
  pred[:3] = 0.0  # exact-zero predictions: negative for Non0, non-negative for Has0
  got = metrics.mmsa_metrics(pred, label, dataset)
  want = _sklearn_mosi(pred, label)
  assert tuple(got) == metrics.MOSI_KEYS
  for k in metrics.MOSI_KEYS:
    np.testing.assert_allclose(got[k], want[k], rtol=1e-12, err_msg=k)


@pytest.mark.parametrize("seed", range(5))
def test_sims_metrics_match_sklearn(seed):
  rng = np.random.default_rng(seed)
  label = np.round(rng.uniform(-1, 1, 200) * 5) / 5
  pred = label + rng.normal(0, 0.5, 200)  # goes beyond [-1, 1]: clipped first
  pred[:4] = [0.0, 0.1, -0.1, 0.7]  # bin edges are right-closed
  got = metrics.mmsa_metrics(pred, label, "sims")
  want = _sklearn_sims(pred, label)
  assert tuple(got) == metrics.SIMS_KEYS
  for k in metrics.SIMS_KEYS:
    np.testing.assert_allclose(got[k], want[k], rtol=1e-12, err_msg=k)


def test_hand_worked_example():
  label = np.array([2.4, -0.6, 0.0, 1.0])
  pred = np.array([1.6, 0.4, 0.0, -2.6])
  m = metrics.mmsa_metrics(pred, label, "mosi")
  assert m["Has0_acc_2"] == pytest.approx(2 / 4)  # label>=0 [T,F,T,T], pred>=0 [T,T,T,F]
  assert m["Non0_acc_2"] == pytest.approx(
    1 / 3
  )  # non-zero: (2.4, 1.6) right, (-0.6, 0.4) wrong, (1, -2.6) wrong
  # Mult_acc_7: round(clip) -> label [2, -1, 0, 1], pred [2, 0, 0, -3]: 2 of 4.
  assert m["Mult_acc_7"] == pytest.approx(0.5)
  # Mult_acc_5: label [2, -1, 0, 1], pred [2, 0, 0, -2]: 2 of 4.
  assert m["Mult_acc_5"] == pytest.approx(0.5)
  assert m["MAE"] == pytest.approx((0.8 + 1.0 + 0.0 + 3.6) / 4)


def test_round_half_to_even():
  # 0.5 -> 0 and 2.5 -> 2 under numpy rounding (as MMSA); a half-up rule would give 1 and 3.
  m = metrics.mmsa_metrics(np.array([0.5, 2.5]), np.array([0.0, 2.0]), "mosi")
  assert m["Mult_acc_7"] == 1.0


def test_constant_prediction_gives_nan_corr_without_warning():
  label = np.array([1.0, -1.0, 2.0, 0.4])
  with warnings.catch_warnings(record=True) as rec:
    warnings.simplefilter("always")
    m = metrics.mmsa_metrics(np.zeros(4), label, "mosi")
  assert np.isnan(m["Corr"]) and not rec
  assert m["Has0_acc_2"] == pytest.approx(0.75)


def test_all_labels_zero():
  m = metrics.mmsa_metrics(np.array([0.3, -0.2, 0.0]), np.zeros(3), "mosei")
  assert np.isnan(m["Non0_acc_2"]) and np.isnan(m["Non0_F1_score"]) and np.isnan(m["Corr"])
  assert m["Has0_acc_2"] == pytest.approx(2 / 3)
  assert m["Has0_F1_score"] == pytest.approx(
    f1_score([True] * 3, [True, False, True], average="weighted")
  )


@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_all_labels_one_sign(sign):
  rng = np.random.default_rng(0)
  label = sign * rng.uniform(0.2, 3, 50)
  pred = rng.normal(0, 1, 50)
  got = metrics.mmsa_metrics(pred, label, "mosi")
  want = _sklearn_mosi(pred, label)
  for k in ("Has0_acc_2", "Has0_F1_score", "Non0_acc_2", "Non0_F1_score"):
    np.testing.assert_allclose(got[k], want[k], rtol=1e-12, err_msg=k)


def test_valid_mask_drops_padding_rows():
  rng = np.random.default_rng(1)
  label, pred = rng.uniform(-3, 3, 40), rng.uniform(-3, 3, 40)
  valid = np.ones(40, bool)
  valid[33:] = False
  padded_pred = pred.copy()
  padded_pred[33:] = 99.0  # filler rows must not count
  assert metrics.mmsa_metrics(padded_pred, label, "mosi", valid) == metrics.mmsa_metrics(
    pred[:33], label[:33], "mosi"
  )


def test_bad_inputs_raise_clear_errors():
  with pytest.raises(ValueError, match="dataset must be one of"):
    metrics.mmsa_metrics([0.0], [0.0], "iemocap")
  with pytest.raises(ValueError, match="3 elements but labels has 2"):
    metrics.mmsa_metrics([0.0, 1.0, 2.0], [0.0, 1.0], "mosi")
  with pytest.raises(ValueError, match="non-finite"):
    metrics.mmsa_metrics([np.nan, 1.0], [0.0, 1.0], "mosi")


def test_is_better():
  assert metrics.is_better("MAE", 0.5, 0.6) and not metrics.is_better("MAE", 0.6, 0.6)
  assert metrics.is_better("Corr", 0.5, 0.4) and not metrics.is_better("Corr", float("nan"), 0.4)
  assert metrics.is_better("Corr", 0.1, float("nan"))
