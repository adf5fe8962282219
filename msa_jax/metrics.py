"""MMSA-exact regression metrics (docs/methods.md §3).

The definitions follow MMSA's `metricsTop.py` (thuiar/MMSA), with two deliberate differences
(docs/methods.md §3, §9): values are not rounded (round only for display), and F1 is computed with
the correct argument order. Everything is plain numpy, so no scikit-learn is needed at run time; the
tests check every number against scikit-learn.
"""

from __future__ import annotations

import warnings

import numpy as np

DATASETS = ("mosi", "mosei", "sims")
MOSI_KEYS = (
  "Has0_acc_2",
  "Has0_F1_score",
  "Non0_acc_2",
  "Non0_F1_score",
  "Mult_acc_5",
  "Mult_acc_7",
  "MAE",
  "Corr",
)
SIMS_KEYS = ("Mult_acc_2", "Mult_acc_3", "Mult_acc_5", "F1_score", "MAE", "Corr")
# Metrics where smaller is better; every other metric is better when larger.
LOWER_IS_BETTER = frozenset({"MAE"})

_SIMS_BINS = {
  "Mult_acc_2": (-1.01, 0.0, 1.01),
  "Mult_acc_3": (-1.01, -0.1, 0.1, 1.01),
  "Mult_acc_5": (-1.01, -0.7, -0.1, 0.1, 0.7, 1.01),
}


def metric_keys(dataset: str) -> tuple[str, ...]:
  """The metric names reported for `dataset` ("mosi", "mosei" or "sims")."""
  _check_dataset(dataset)
  return SIMS_KEYS if dataset == "sims" else MOSI_KEYS


def is_better(metric: str, new: float, old: float) -> bool:
  """Whether `new` strictly improves on `old` for `metric` (NaN never improves; ties keep `old`)."""
  if np.isnan(new):
    return False
  if np.isnan(old):
    return True
  return new < old if metric in LOWER_IS_BETTER else new > old


def accuracy(pred_classes: np.ndarray, true_classes: np.ndarray) -> float:
  """Fraction of equal entries; NaN for an empty set."""
  if true_classes.size == 0:
    return float("nan")
  return float(np.mean(pred_classes == true_classes))


def weighted_f1(true_classes: np.ndarray, pred_classes: np.ndarray) -> float:
  """scikit-learn's `f1_score(y_true, y_pred, average="weighted")`, in numpy.

  Per class of the union of true and predicted labels: F1 (0 where precision and recall are both
  0), weighted by the class's support in `true_classes`. NaN for an empty set.
  """
  if true_classes.size == 0:
    return float("nan")
  labels = np.union1d(true_classes, pred_classes)
  total, support_sum = 0.0, 0
  for label in labels:
    t, p = true_classes == label, pred_classes == label
    tp, support, predicted = int(np.sum(t & p)), int(np.sum(t)), int(np.sum(p))
    denom = support + predicted
    f1 = 2.0 * tp / denom if denom > 0 else 0.0
    total += f1 * support
    support_sum += support
  return total / support_sum if support_sum else 0.0


def pearson(pred: np.ndarray, label: np.ndarray) -> float:
  """Pearson correlation as `np.corrcoef`; NaN (no warning) when either side is constant."""
  if pred.size < 2 or np.ptp(pred) == 0 or np.ptp(label) == 0:
    return float("nan")
  with warnings.catch_warnings():
    warnings.simplefilter("ignore", RuntimeWarning)
    return float(np.corrcoef(pred, label)[0, 1])


def _mult_acc(pred: np.ndarray, label: np.ndarray, bound: float) -> float:
  """Accuracy after clipping to [-bound, bound] and rounding half to even (MMSA's Mult_acc_k)."""
  return accuracy(np.round(np.clip(pred, -bound, bound)), np.round(np.clip(label, -bound, bound)))


def _bin(values: np.ndarray, edges: tuple[float, ...]) -> np.ndarray:
  """Class index of each value for the left-open bins (edges[i], edges[i+1]] (MMSA's SIMS bins)."""
  classes = np.full(values.shape, -1, dtype=np.int64)
  for i in range(len(edges) - 1):
    classes[(values > edges[i]) & (values <= edges[i + 1])] = i
  return classes


def _mosi_metrics(pred: np.ndarray, label: np.ndarray) -> dict[str, float]:
  non_zero = label != 0
  nz_true, nz_pred = label[non_zero] > 0, pred[non_zero] > 0
  has0_true, has0_pred = label >= 0, pred >= 0
  return {
    "Has0_acc_2": accuracy(has0_pred, has0_true),
    "Has0_F1_score": weighted_f1(has0_true, has0_pred),
    "Non0_acc_2": accuracy(nz_pred, nz_true),
    "Non0_F1_score": weighted_f1(nz_true, nz_pred),
    "Mult_acc_5": _mult_acc(pred, label, 2.0),
    "Mult_acc_7": _mult_acc(pred, label, 3.0),
    "MAE": float(np.mean(np.abs(pred - label))),
    "Corr": pearson(pred, label),
  }


def _sims_metrics(pred: np.ndarray, label: np.ndarray) -> dict[str, float]:
  pred, label = np.clip(pred, -1.0, 1.0), np.clip(label, -1.0, 1.0)
  out = {
    name: accuracy(_bin(pred, edges), _bin(label, edges)) for name, edges in _SIMS_BINS.items()
  }
  out["F1_score"] = weighted_f1(
    _bin(label, _SIMS_BINS["Mult_acc_2"]), _bin(pred, _SIMS_BINS["Mult_acc_2"])
  )
  out["MAE"] = float(np.mean(np.abs(pred - label)))
  out["Corr"] = pearson(pred, label)
  return {k: out[k] for k in SIMS_KEYS}


def _check_dataset(dataset: str) -> None:
  if dataset not in DATASETS:
    raise ValueError(f"dataset must be one of {DATASETS}, got {dataset!r}")


def mmsa_metrics(preds, labels, dataset: str, valid=None) -> dict[str, float]:
  """MMSA's regression metrics of `preds` against `labels` (docs/methods.md §3).

  Args:
    preds: predictions, any shape (flattened).
    labels: labels, same number of elements.
    dataset: "mosi" / "mosei" (the MOSI keys) or "sims" (the SIMS keys).
    valid: optional boolean mask of the same size; only True entries count (padded evaluation
      batches mark their filler rows False).

  Returns:
    A dict of unrounded floats keyed as MMSA names them; NaN where a metric is undefined
    (Corr of a constant prediction, Non0 metrics when every label is 0).
  """
  _check_dataset(dataset)
  pred = np.asarray(preds, dtype=np.float64).reshape(-1)
  label = np.asarray(labels, dtype=np.float64).reshape(-1)
  if pred.shape != label.shape:
    raise ValueError(f"preds has {pred.size} elements but labels has {label.size}")
  if valid is not None:
    mask = np.asarray(valid, dtype=bool).reshape(-1)
    if mask.shape != pred.shape:
      raise ValueError(f"valid has {mask.size} elements but preds has {pred.size}")
    pred, label = pred[mask], label[mask]
  if pred.size == 0:
    raise ValueError("mmsa_metrics needs at least one (valid) sample")
  if not np.all(np.isfinite(pred)):
    raise ValueError(f"predictions contain {int(np.sum(~np.isfinite(pred)))} non-finite values")
  return _sims_metrics(pred, label) if dataset == "sims" else _mosi_metrics(pred, label)


def with_derived(m: dict[str, float]) -> dict[str, float]:
  """`m` plus the metrics derived from it: `Acc_2_mean` = mean(Has0_acc_2, Non0_acc_2), GEAR's
  default selection criterion (docs/methods.md §5), where the Has0 / Non0 accuracies are present."""
  if "Has0_acc_2" in m:
    m = dict(m)
    m["Acc_2_mean"] = 0.5 * (m["Has0_acc_2"] + m["Non0_acc_2"])
  return m
