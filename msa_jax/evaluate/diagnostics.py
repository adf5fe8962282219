"""Whether a debiasing method does what it claims, on data whose shortcut is known (docs/methods.md
§5, §7): which samples carry a planted cue that agrees with the label, how a method's sample
weights treat them, what its bias heads follow, and how much accuracy the OOD splits cost.

Plain numpy on host arrays, except `cue_weight_sums`, which the training step calls on device
arrays. A sample's cue is *aligned* when every modality's cue sign equals sign(label) and
*conflicting* when some modality's sign is the opposite; samples with label 0 are neither.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import jax.numpy as jnp
import numpy as np

from msa_jax.modalities import MODALITIES

# The training metrics that `cue_weight_sums` adds to a step; `cue_weight_summary` reads their
# epoch means.
CUE_SUM_KEYS = ("cue_w_aligned", "cue_w_conflict", "cue_n_aligned", "cue_n_conflict")


def cue_alignment(labels: np.ndarray, cue_signs: np.ndarray) -> np.ndarray:
  """(N,) int8: 1 cue-aligned, -1 cue-conflicting, 0 neither (label 0), from labels (N,) and the
  (N, 3) ±1 cue signs."""
  sign = np.sign(np.asarray(labels, np.float64)).astype(np.int64)[:, None]
  signs = np.asarray(cue_signs, np.int64)
  aligned = np.all(signs == sign, axis=1)
  conflicting = np.any(signs == -sign, axis=1)
  out = np.where(aligned, 1, np.where(conflicting, -1, 0))
  return np.where(sign[:, 0] == 0, 0, out).astype(np.int8)


def cue_weight_sums(weights, alignment) -> dict:
  """Per-batch sums of the sample weights W (B,) over cue-aligned and cue-conflicting samples and
  the two counts, from `alignment` (B,) as `cue_alignment` gives it (jax or numpy arrays)."""
  aligned = (alignment == 1).astype(weights.dtype)
  conflict = (alignment == -1).astype(weights.dtype)
  return {
    "cue_w_aligned": jnp.sum(weights * aligned),
    "cue_w_conflict": jnp.sum(weights * conflict),
    "cue_n_aligned": jnp.sum(aligned),
    "cue_n_conflict": jnp.sum(conflict),
  }


def cue_weight_summary(sums: Mapping[str, float]) -> dict[str, float]:
  """From totals (or equal-count means) of `cue_weight_sums` over an epoch:

  - `weighted_cue_agreement` = Σ W·1[aligned] / Σ W over aligned and conflicting samples (equal to
    the aligned share when every weight is 1; debiasing weights push it down);
  - `conflict_weight_ratio` = mean W of conflicting samples / mean W of aligned ones (above 1 when
    the weights favour the samples the shortcut gets wrong).
  Empty when `sums` lacks the keys.
  """
  if any(k not in sums for k in CUE_SUM_KEYS):
    return {}
  w_a, w_c, n_a, n_c = (float(sums[k]) for k in CUE_SUM_KEYS)
  total = w_a + w_c
  mean_a = w_a / n_a if n_a > 0 else math.nan
  mean_c = w_c / n_c if n_c > 0 else math.nan
  return {
    "weighted_cue_agreement": w_a / total if total > 0 else math.nan,
    "conflict_weight_ratio": mean_c / mean_a if mean_a > 0 else math.nan,
  }


def bias_follows_cue(
  bias_preds: np.ndarray, labels: np.ndarray, cue_signs: np.ndarray
) -> dict[str, float]:
  """Per modality, the share of cue-conflicting samples whose bias-head prediction has the sign of
  that modality's cue (rather than the label's): `bias_follows_cue_<modality>`.

  `bias_preds` is (N, 3) in `MODALITIES` order. 1.0 means the bias head learned the shortcut
  exactly; near 0 means it predicts the label (it learned the genuine signal instead).
  """
  preds = np.asarray(bias_preds, np.float64)
  signs = np.asarray(cue_signs)
  conflicting = cue_alignment(labels, signs) == -1
  out = {}
  for j, m in enumerate(MODALITIES):
    if not conflicting.any():
      out[f"bias_follows_cue_{m}"] = math.nan
      continue
    follows = np.sign(preds[conflicting, j]) == signs[conflicting, j]
    out[f"bias_follows_cue_{m}"] = float(np.mean(follows))
  return out


def ood_valid_summary(
  per_split: Mapping[str, Mapping[str, float]],
  ood_splits: Sequence[str],
  base: str = "valid",
  criterion_metric: str = "Acc_2_mean",
  gap_metric: str = "Has0_acc_2",
) -> dict[str, float]:
  """The OOD-validation criterion and the IID − OOD gaps from each split's metrics:

  - `ood_valid`: the mean of `criterion_metric` over `ood_splits` (those present);
  - `gap_<name>`: `gap_metric` on `base` minus on each OOD split (in the metric's unit).
  Empty when no OOD split is present.
  """
  present = [s for s in ood_splits if s in per_split]
  if not present:
    return {}
  out = {"ood_valid": float(np.mean([per_split[s][criterion_metric] for s in present]))}
  for s in present:
    out[f"gap_{s}"] = float(per_split[base][gap_metric] - per_split[s][gap_metric])
  return out
