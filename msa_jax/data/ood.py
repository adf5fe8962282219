"""GEAR's out-of-distribution test and validation splits, and the cluster-bias cue signs of real
data: K-means surface clusters + simulated annealing (docs/methods.md §6).

The construction, deterministic from one non-negative integer seed:

1. Surface features (`surface_features_of`). Text: the mean of the frozen `text` features over
   valid tokens (attention mask = row 1 of `text_bert`). When `text` is absent: a bag of token ids —
   the counts of the `text_vocab` most frequent training token ids ([PAD]/[UNK]/[CLS]/[SEP]
   excluded; other ids ignored), each row L2-normalised. Audio / vision: the mean over the valid
   frames (`audio_lengths` / `vision_lengths`), standardised per dimension with the training mean
   and std.
2. K-means (`kmeans`: numpy k-means++ seeding and Lloyd iterations, best of `n_init` starts) fitted
   on the training features; train, valid and test samples get their nearest centre c(i).
3. Bias predictor b(c) = mean training label of cluster c (`cluster_bias`).
4. Simulated annealing (`anneal_subset`) picks S ⊂ test with |S| = round(fraction · N_test) that
   minimises the sum, over the split's modalities, of corr(b_m(c_m(i)), y_i) over i ∈ S.
   Label shares: the start is a stratified random subset whose counts of negative / zero / positive
   labels are the test split's shares times |S| (largest-remainder rounding), and every move swaps a
   member for a non-member *of the same label class*. The shares therefore stay exactly those of the
   start, within 1/|S| of the test split's; this is checked against `share_tolerance` (±2 points)
   and a target size too small to meet it is an error. The correlation sums are updated in O(1) per
   move; Metropolis acceptance; geometric cooling from T0 = t0_scale · median |Δ| of random moves at
   the start down to T0 · t_final_ratio over a fixed number of steps; the best subset visited is
   returned.
5. Splits `ood_text`, `ood_audio`, `ood_vision` (one modality's objective each) and `ood_all` (the
   sum of the three objectives), saved as sorted index lists into the test split (`write_ood_json`)
   in `default_ood_path(data)`, and attached to a split family with `apply_ood`.
6. OOD validation splits `ood_valid_*`: step 4 on the valid split (the same clusters and b), saved
   as index lists into valid under `valid_splits`.
7. Cue signs: each train / valid / test sample's sign of b_m(c_m(i)) per modality (`cue_signs_of`),
   saved under `cue_signs`; `read_ood_file` + `apply_ood` fill `Split.cue_signs` with them.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import pathlib
from collections.abc import Mapping, Sequence

import numpy as np

from msa_jax.data import pipeline
from msa_jax.data.split import IID_SPLITS, OOD_SPLITS, OOD_VALID_SPLITS, Split
from msa_jax.io import write_text_atomic
from msa_jax.metrics import pearson
from msa_jax.modalities import MODALITIES

# 2: adds the OOD validation splits (valid_splits, n_valid), cluster_bias and cue_signs.
OOD_VERSION = 2
# BERT [PAD], [UNK], [CLS], [SEP] (docs/methods.md §1): left out of the bag-of-tokens text feature.
SPECIAL_TOKEN_IDS = (0, 100, 101, 102)
# Label-sign classes, in the order of `label_classes`' codes 0, 1, 2.
LABEL_CLASSES = ("negative", "zero", "positive")
# Which modalities' objectives each OOD split minimises (docs/methods.md §6 step 5).
SPLIT_OBJECTIVES = {
  "ood_text": ("text",),
  "ood_audio": ("audio",),
  "ood_vision": ("vision",),
  "ood_all": MODALITIES,
  "ood_valid_text": ("text",),
  "ood_valid_audio": ("audio",),
  "ood_valid_vision": ("vision",),
  "ood_valid_all": MODALITIES,
}
# The split each OOD split is a subset of.
SOURCE_SPLIT = {**{n: "test" for n in OOD_SPLITS}, **{n: "valid" for n in OOD_VALID_SPLITS}}
_DEGENERATE = 1e-10


# ------------------------------------------------------------------------------------------------
# Surface features (docs/methods.md §6 step 1)


def masked_mean(x: np.ndarray, mask: np.ndarray) -> np.ndarray:
  """Mean of `x` (N, T, D) over positions where `mask` (N, T) is non-zero -> (N, D) float64.

  Rows without any valid position give zeros.
  """
  m = (np.asarray(mask) > 0).astype(np.float32)
  total = np.matmul(m[:, None, :], np.asarray(x, dtype=np.float32))[:, 0, :]
  count = np.maximum(m.sum(axis=1, keepdims=True), 1.0)
  return total.astype(np.float64) / count


def length_mask(lengths: np.ndarray, t: int) -> np.ndarray:
  """(N, T) boolean mask of the first `lengths[i]` frames of each sample."""
  return np.arange(t)[None, :] < np.asarray(lengths)[:, None]


def token_vocab(text_bert: np.ndarray, size: int) -> np.ndarray:
  """The `size` most frequent valid token ids of `text_bert` (N, 3, L), specials excluded.

  Ties are broken by the smaller id; returns the ids sorted ascending (fewer if fewer occur).
  """
  ids = np.asarray(text_bert[:, 0]).astype(np.int64)
  valid = np.asarray(text_bert[:, 1]) > 0
  counts = np.bincount(ids[valid], minlength=max(SPECIAL_TOKEN_IDS) + 1)
  counts[list(SPECIAL_TOKEN_IDS)] = 0
  order = np.argsort(-counts, kind="stable")[:size]
  return np.sort(order[counts[order] > 0])


def token_bag(text_bert: np.ndarray, vocab: np.ndarray) -> np.ndarray:
  """L2-normalised counts (N, V) of the `vocab` ids among the valid tokens of `text_bert`
  (N, 3, L)."""
  ids = np.asarray(text_bert[:, 0]).astype(np.int64)
  valid = np.asarray(text_bert[:, 1]) > 0
  n, v = ids.shape[0], len(vocab)
  lookup = np.full(max(int(ids.max(initial=0)), int(np.max(vocab, initial=0))) + 1, -1, np.int64)
  lookup[vocab] = np.arange(v)
  col = lookup[np.clip(ids, 0, None)]
  keep = valid & (col >= 0)
  rows = np.broadcast_to(np.arange(n)[:, None], ids.shape)
  bag = np.zeros((n, v), np.float64)
  np.add.at(bag, (rows[keep], col[keep]), 1.0)
  norm = np.linalg.norm(bag, axis=1, keepdims=True)
  return bag / np.where(norm > 0, norm, 1.0)


def _raw_features(split: Split, modality: str, vocab: np.ndarray | None) -> np.ndarray:
  if modality == "text":
    if split.text is not None:
      return masked_mean(split.text, split.text_bert[:, 1])
    return token_bag(split.text_bert, vocab)
  frames = split.audio if modality == "audio" else split.vision
  lengths = split.audio_lengths if modality == "audio" else split.vision_lengths
  return masked_mean(frames, length_mask(lengths, frames.shape[1]))


def surface_features_of(
  train: Split, others: Sequence[Split], modality: str, *, text_vocab: int = 512
) -> tuple[np.ndarray, list[np.ndarray], str]:
  """Per-sample surface features of one modality for train and each of `others`
  (docs/methods.md §6 step 1).

  Returns (train (N_train, D), [(N_i, D) per split of `others`], a short description of the feature
  used). Text uses the frozen `text` features when every split carries them, otherwise the bag of
  the `text_vocab` most frequent training tokens; audio / vision are standardised with training
  statistics.
  """
  if modality not in MODALITIES:
    raise ValueError(f"unknown modality {modality!r}; expected one of {MODALITIES}")
  if modality == "text":
    if train.text is not None and all(s.text is not None for s in others):
      feats = [_raw_features(s, "text", None) for s in others]
      return _raw_features(train, "text", None), feats, "text_mean"
    vocab = token_vocab(train.text_bert, text_vocab)
    if len(vocab) == 0:
      raise ValueError("bag-of-tokens text feature: the training split has no non-special tokens")
    feats = [token_bag(s.text_bert, vocab) for s in others]
    return token_bag(train.text_bert, vocab), feats, f"token_bag_{len(vocab)}"
  f_train = _raw_features(train, modality, None)
  mean, std = f_train.mean(axis=0), f_train.std(axis=0)
  std = np.where(std > 1e-8, std, 1.0)
  feats = [(_raw_features(s, modality, None) - mean) / std for s in others]
  return (f_train - mean) / std, feats, f"{modality}_mean_standardised"


def surface_features(
  train: Split, test: Split, modality: str, *, text_vocab: int = 512
) -> tuple[np.ndarray, np.ndarray, str]:
  """`surface_features_of` for one other split: (train (N_train, D), test (N_test, D),
  description)."""
  f_train, (f_test,), desc = surface_features_of(train, [test], modality, text_vocab=text_vocab)
  return f_train, f_test, desc


# ------------------------------------------------------------------------------------------------
# K-means (docs/methods.md §6 step 2)


@dataclasses.dataclass(frozen=True)
class KMeansResult:
  """A fitted K-means model.

  Attributes:
    centers: (K, D) float64 cluster centres.
    labels: (N,) int64 cluster of each training sample.
    inertia: sum of squared distances of the training samples to their centre.
    n_iter: Lloyd iterations of the retained start.
  """

  centers: np.ndarray
  labels: np.ndarray
  inertia: float
  n_iter: int


def _sq_dists(x: np.ndarray, x_sq: np.ndarray, centers: np.ndarray) -> np.ndarray:
  """Squared Euclidean distances (N, K) between `x` (N, D) and `centers` (K, D)."""
  d = x_sq[:, None] - 2.0 * (x @ centers.T) + np.sum(centers * centers, axis=1)[None, :]
  return np.maximum(d, 0.0)


def kmeans_plus_plus(x: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
  """Greedy k-means++ seeding (2 + ln K candidates per centre, as scikit-learn) -> (K, D)
  centres."""
  n = x.shape[0]
  x_sq = np.sum(x * x, axis=1)
  n_trials = 2 + int(math.log(k))
  centers = np.empty((k, x.shape[1]), np.float64)
  centers[0] = x[rng.integers(n)]
  closest = _sq_dists(x, x_sq, centers[:1])[:, 0]
  for c in range(1, k):
    potential = closest.sum()
    if potential > 0:
      draws = rng.random(n_trials) * potential
      candidates = np.minimum(np.searchsorted(np.cumsum(closest), draws), n - 1)
    else:
      candidates = rng.integers(n, size=n_trials)
    trial = np.minimum(closest[:, None], _sq_dists(x, x_sq, x[candidates]))
    best = int(np.argmin(trial.sum(axis=0)))
    centers[c] = x[candidates[best]]
    closest = trial[:, best]
  return centers


def _update_centers(x: np.ndarray, labels: np.ndarray, dists: np.ndarray, k: int) -> np.ndarray:
  """Cluster means; an empty cluster moves to the point farthest from its current centre."""
  counts = np.bincount(labels, minlength=k)
  onehot = (labels[:, None] == np.arange(k)[None, :]).astype(np.float64)
  centers = (x.T @ onehot).T / np.maximum(counts, 1)[:, None]
  empty = np.flatnonzero(counts == 0)
  if len(empty):
    far = np.argsort(-dists[np.arange(len(labels)), labels], kind="stable")[: len(empty)]
    centers[empty] = x[far]
  return centers


def _lloyd(
  x: np.ndarray, centers: np.ndarray, max_iter: int, tol: float
) -> tuple[np.ndarray, np.ndarray, float, int]:
  k = centers.shape[0]
  x_sq = np.sum(x * x, axis=1)
  labels = None
  it = 0
  for it in range(1, max_iter + 1):  # noqa: B007 (the iteration count is returned)
    dists = _sq_dists(x, x_sq, centers)
    new_labels = dists.argmin(axis=1)
    new_centers = _update_centers(x, new_labels, dists, k)
    shift = float(np.sum((new_centers - centers) ** 2))
    converged = labels is not None and np.array_equal(labels, new_labels)
    centers, labels = new_centers, new_labels
    if converged or shift <= tol:
      break
  labels = _sq_dists(x, x_sq, centers).argmin(axis=1)
  inertia = float(np.sum((x - centers[labels]) ** 2))
  return centers, labels, inertia, it


def kmeans(
  x: np.ndarray,
  k: int,
  *,
  seed: int | np.random.SeedSequence | np.random.Generator = 0,
  n_init: int = 4,
  max_iter: int = 300,
  tol: float = 1e-4,
) -> KMeansResult:
  """K-means on `x` (N, D): best (lowest inertia) of `n_init` k-means++ / Lloyd runs
  (docs/methods.md §6 step 2).

  `tol` is relative to the mean per-dimension variance of `x`, as in scikit-learn's KMeans.
  """
  x = np.asarray(x, np.float64)
  if x.ndim != 2:
    raise ValueError(f"kmeans expects a (N, D) array, got shape {x.shape}")
  if not 1 <= k <= x.shape[0]:
    raise ValueError(f"kmeans: k={k} clusters needs 1 <= k <= number of samples ({x.shape[0]})")
  if n_init < 1:
    raise ValueError(f"kmeans: n_init must be >= 1, got {n_init}")
  rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
  abs_tol = tol * float(np.mean(np.var(x, axis=0)))
  best = None
  for _ in range(n_init):
    run = _lloyd(x, kmeans_plus_plus(x, k, rng), max_iter, abs_tol)
    if best is None or run[2] < best[2]:
      best = run
  centers, labels, inertia, n_iter = best
  return KMeansResult(
    centers=centers, labels=labels.astype(np.int64), inertia=inertia, n_iter=n_iter
  )


def assign_clusters(x: np.ndarray, centers: np.ndarray) -> np.ndarray:
  """Nearest centre (N,) int64 of each row of `x` (N, D) among `centers` (K, D)."""
  x = np.asarray(x, np.float64)
  return _sq_dists(x, np.sum(x * x, axis=1), centers).argmin(axis=1).astype(np.int64)


def cluster_bias(clusters: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
  """Bias predictor b(c) (K,): mean training label per cluster (docs/methods.md §6 step 3).

  A cluster without training samples gets the overall training mean.
  """
  labels = np.asarray(labels, np.float64)
  counts = np.bincount(clusters, minlength=k)
  sums = np.bincount(clusters, weights=labels, minlength=k)
  return np.where(counts > 0, sums / np.maximum(counts, 1), labels.mean())


# ------------------------------------------------------------------------------------------------
# Label shares, simulated annealing (docs/methods.md §6 step 4)


def label_classes(labels: np.ndarray) -> np.ndarray:
  """Label-sign class (N,) int64 of each label: 0 negative, 1 zero, 2 positive."""
  return (np.sign(np.asarray(labels, np.float64)) + 1).astype(np.int64)


def label_shares(labels: np.ndarray) -> dict[str, float]:
  """Shares of negative / zero / positive labels in `labels` (N,)."""
  counts = np.bincount(label_classes(labels), minlength=3)
  return {name: float(c) / max(len(labels), 1) for name, c in zip(LABEL_CLASSES, counts)}


def stratified_counts(classes: np.ndarray, size: int) -> np.ndarray:
  """Per-class counts (3,) of a subset of `size` with the shares of `classes`
  (largest remainder)."""
  counts = np.bincount(classes, minlength=3)
  quota = counts * size / len(classes)
  out = np.floor(quota).astype(np.int64)
  remainder = quota - out
  for c in np.argsort(-remainder, kind="stable")[: size - int(out.sum())]:
    out[c] += 1
  return out


@dataclasses.dataclass(frozen=True)
class AnnealResult:
  """Outcome of `anneal_subset`.

  Attributes:
    indices: (size,) sorted int64 indices of the chosen subset.
    objective: the subset's objective as tracked incrementally by the annealer.
    objective_start: objective of the stratified random start.
    n_accepted: accepted moves.
    temperature_start: T0 after calibration.
  """

  indices: np.ndarray
  objective: float
  objective_start: float
  n_accepted: int
  temperature_start: float


class _CorrSums:
  """Running sums of Σ_m corr(x_m, y) over a subset of fixed size n, updated by swaps in O(M)."""

  def __init__(self, xs: list[list[float]], y: list[float], members: list[int]):
    self.xs, self.y, self.n = xs, y, float(len(members))
    self.sy = sum(y[i] for i in members)
    self.syy = sum(y[i] * y[i] for i in members)
    self.sx = [sum(x[i] for i in members) for x in xs]
    self.sxx = [sum(x[i] * x[i] for i in members) for x in xs]
    self.sxy = [sum(x[i] * y[i] for i in members) for x in xs]

  def objective(
    self, sy: float, syy: float, sx: list[float], sxx: list[float], sxy: list[float]
  ) -> float:
    n = self.n
    vy = n * syy - sy * sy
    if vy <= _DEGENERATE * n * syy:
      return 0.0
    total = 0.0
    for m in range(len(sx)):
      vx = n * sxx[m] - sx[m] * sx[m]
      if vx > _DEGENERATE * n * sxx[m]:
        total += (n * sxy[m] - sx[m] * sy) / math.sqrt(vx * vy)
    return total

  def propose(self, out: int, into: int) -> tuple:
    """Sums after swapping member `out` for non-member `into`, and their objective."""
    y = self.y
    yo, yi = y[out], y[into]
    sy = self.sy + yi - yo
    syy = self.syy + yi * yi - yo * yo
    sx, sxx, sxy = [], [], []
    for m, x in enumerate(self.xs):
      xo, xi = x[out], x[into]
      sx.append(self.sx[m] + xi - xo)
      sxx.append(self.sxx[m] + xi * xi - xo * xo)
      sxy.append(self.sxy[m] + xi * yi - xo * yo)
    return self.objective(sy, syy, sx, sxx, sxy), (sy, syy, sx, sxx, sxy)

  def accept(self, sums: tuple) -> None:
    self.sy, self.syy, self.sx, self.sxx, self.sxy = sums

  def current(self) -> float:
    return self.objective(self.sy, self.syy, self.sx, self.sxx, self.sxy)


def anneal_subset(
  x: np.ndarray,
  y: np.ndarray,
  size: int,
  *,
  rng: np.random.Generator,
  steps: int = 100_000,
  t0_scale: float = 1.0,
  t_final_ratio: float = 1e-3,
  n_calibration: int = 256,
) -> AnnealResult:
  """Simulated annealing: a subset of `size` samples minimising Σ_m corr(x[m, S], y[S])
  (docs/methods.md §6 step 4).

  Args:
    x: (M, N) bias-predictor values b_m(c_m(i)) per objective modality m and test sample i.
    y: (N,) labels.
    size: subset size.
    rng: the only source of randomness (start subset, moves, acceptance).
    steps: proposed moves; each swaps a random member for a random non-member of the same
      label-sign class, so the subset's label-class counts stay those of the stratified start.
    t0_scale: start temperature in units of the median |Δobjective| of `n_calibration` random
      moves from the start.
    t_final_ratio: final / start temperature (geometric cooling over `steps`).
  """
  x = np.atleast_2d(np.asarray(x, np.float64))
  y = np.asarray(y, np.float64)
  n_total = y.shape[0]
  if x.shape[1] != n_total:
    raise ValueError(f"anneal_subset: x has {x.shape[1]} samples, y has {n_total}")
  if not 1 <= size <= n_total:
    raise ValueError(f"anneal_subset: size {size} must be in [1, {n_total}]")
  classes = label_classes(y)
  xs = (x - x.mean(axis=1, keepdims=True)).tolist()
  yl = (y - y.mean()).tolist()
  members, others = [], []
  for c, count in enumerate(stratified_counts(classes, size)):
    perm = rng.permutation(np.flatnonzero(classes == c)).tolist()
    members.append(perm[:count])
    others.append(perm[count:])
  sums = _CorrSums(xs, yl, [i for group in members for i in group])
  objective = start = sums.current()
  movable = [c for c in range(3) if members[c] and others[c]]
  if steps <= 0 or not movable:
    indices = np.sort(np.array([i for group in members for i in group], np.int64))
    return AnnealResult(indices, objective, start, 0, 0.0)

  weights = np.array([len(members[c]) for c in movable], np.float64)
  n_draws = steps + n_calibration
  cls = rng.choice(len(movable), size=n_draws, p=weights / weights.sum()).tolist()
  u_out, u_in = rng.random(n_draws).tolist(), rng.random(n_draws).tolist()

  def pick(t: int) -> tuple[int, int, int]:
    c = movable[cls[t]]
    return c, int(u_out[t] * len(members[c])), int(u_in[t] * len(others[c]))

  deltas = []
  for t in range(n_calibration):
    c, p, q = pick(steps + t)
    deltas.append(abs(sums.propose(members[c][p], others[c][q])[0] - objective))
  nonzero = [d for d in deltas if d > 0]
  t0 = t0_scale * float(np.median(nonzero)) if nonzero else 0.0
  temps = t0 * np.power(t_final_ratio, np.arange(steps) / max(steps - 1, 1))
  thresholds = (-temps * np.log1p(-rng.random(steps))).tolist()

  best = objective
  since_best: list[tuple[int, int]] = []
  accepted = 0
  for t in range(steps):
    c, p, q = pick(t)
    out, into = members[c][p], others[c][q]
    value, new_sums = sums.propose(out, into)
    if value - objective <= thresholds[t]:
      sums.accept(new_sums)
      objective = value
      members[c][p], others[c][q] = into, out
      accepted += 1
      if value < best:
        best = value
        since_best.clear()
      else:
        since_best.append((out, into))

  mask = np.zeros(n_total, bool)
  mask[[i for group in members for i in group]] = True
  for out, into in reversed(since_best):
    mask[into], mask[out] = False, True
  return AnnealResult(np.flatnonzero(mask).astype(np.int64), best, start, accepted, t0)


# ------------------------------------------------------------------------------------------------
# The OOD split families and cue signs (docs/methods.md §6 steps 5-7)


def _require(splits: Mapping[str, Split], name: str) -> Split:
  if name not in splits:
    raise KeyError(f"OOD splits need a {name!r} split; got splits {sorted(splits)}")
  return splits[name]


def _subset_size(n: int, fraction: float, source: str, hint: str) -> int:
  """round(fraction · n), or an error when that leaves no proper subset of at least 2."""
  size = int(round(fraction * n))
  if not 2 <= size < n:
    raise ValueError(
      f"fraction {fraction} of a {n}-sample {source} split gives a subset of {size}; "
      f"need 2 <= size < {n}; {hint}"
    )
  return size


def _check_shares(y: np.ndarray, size: int, tolerance: float, source: str, hint: str) -> None:
  """Error when a stratified subset of `size` cannot keep each label-class share of `y`."""
  shares = label_shares(y)
  for name, count in zip(LABEL_CLASSES, stratified_counts(label_classes(y), size)):
    if abs(count / size - shares[name]) > tolerance:
      raise ValueError(
        f"an OOD subset of {size} samples of the {source} split cannot keep the {name} label "
        f"share {shares[name]:.4f} within ±{tolerance}; {hint}"
      )


def cue_signs_of(bias_values: np.ndarray) -> np.ndarray:
  """Cue signs (N,) int8 of samples whose cluster bias b(c(i)) is `bias_values` (N,): +1 where
  b ≥ 0, else -1 (docs/methods.md §6 step 7)."""
  return np.where(np.asarray(bias_values) >= 0, 1, -1).astype(np.int8)


def _sign_string(signs: np.ndarray) -> str:
  return "".join(np.where(np.asarray(signs) > 0, "+", "-").tolist())


def _anneal_family(
  names: Sequence[str],
  source: str,
  bias: Mapping[str, np.ndarray],
  y: np.ndarray,
  size: int,
  *,
  seed: int,
  stream: int,
  schedule: Mapping[str, float],
) -> dict:
  """One annealed subset of the `source` split per name in `names` (its `SPLIT_OBJECTIVES`), split
  s drawn with `SeedSequence([seed, stream, s])`."""
  shares = label_shares(y)
  corr_all = {m: pearson(bias[m], y) for m in MODALITIES}
  out = {}
  for s_index, name in enumerate(names):
    modalities = SPLIT_OBJECTIVES[name]
    x = np.stack([bias[m] for m in modalities])
    result = anneal_subset(
      x, y, size, rng=np.random.default_rng([seed, stream, s_index]), **schedule
    )
    idx = result.indices
    corr_split = {m: pearson(bias[m][idx], y[idx]) for m in MODALITIES}
    out[name] = {
      "indices": idx.tolist(),
      "size": int(len(idx)),
      "modalities": list(modalities),
      "objective_before": float(sum(corr_all[m] for m in modalities)),
      "objective_start": float(result.objective_start),
      "objective_after": float(sum(corr_split[m] for m in modalities)),
      "corr_split": corr_split,
      f"label_shares_{source}": shares,
      "label_shares_split": label_shares(y[idx]),
      "sa_accepted": int(result.n_accepted),
    }
  return out


def build_ood_splits(
  splits: Mapping[str, Split],
  *,
  seed: int = 0,
  k: int = 10,
  fraction: float = 0.47,
  steps: int = 100_000,
  n_init: int = 4,
  text_vocab: int = 512,
  share_tolerance: float = 0.02,
  t0_scale: float = 1.0,
  t_final_ratio: float = 1e-3,
  with_valid: bool = True,
) -> dict:
  """GEAR's OOD test splits ood_text / ood_audio / ood_vision / ood_all from train + test, the OOD
  validation splits ood_valid_* from train + valid, and every IID split's cue signs
  (docs/methods.md §6).

  Args:
    splits: at least 'train' (clusters and the bias predictor) and 'test' (the OOD test splits'
      source); 'valid' when present is the OOD validation splits' source.
    seed: non-negative; K-means of modality m uses SeedSequence([seed, 0, m]), the annealer of
      OOD test split s SeedSequence([seed, 1, s]) and of OOD validation split s
      SeedSequence([seed, 2, s]) (m, s = positions in MODALITIES, OOD_SPLITS / OOD_VALID_SPLITS).
    k, n_init: K-means clusters and k-means++ starts per modality.
    fraction: subset size as a fraction of the test (and of the valid) split (MOSEI's released
      2200 / 4659 ≈ 0.47).
    steps, t0_scale, t_final_ratio: annealing schedule (see `anneal_subset`).
    text_vocab: vocabulary of the bag-of-tokens text feature (used when `text` is absent).
    share_tolerance: the most a label-class share may differ from the source split's.
    with_valid: build the OOD validation splits when `splits` has 'valid' (cue signs of every IID
      split are written either way).

  Returns:
    A JSON-able dict: version, seed, n_train, n_test, n_valid (when 'valid' is present), params,
    features (per modality), kmeans_inertia, corr_train / corr_test / corr_valid (per modality
    corr(b, y)), splits: name -> {indices (sorted, into test), size, modalities, objective_before
    (on the whole test split), objective_start (stratified random start), objective_after,
    corr_split (per modality), label_shares_test, label_shares_split, sa_accepted}; with the OOD
    validation splits valid_splits: name -> the same entries (indices into valid,
    label_shares_valid); cluster_bias: modality -> b (K,); cue_signs: IID split -> modality -> a
    string of '+' / '-', one character per sample (`cue_signs_of`).
  """
  train, test = _require(splits, "train"), _require(splits, "test")
  if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
    raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
  if not 0.0 < fraction < 1.0:
    raise ValueError(f"fraction must be in (0, 1), got {fraction}")
  y_test = np.asarray(test.labels, np.float64)
  test_hint = "raise fraction or the test size"
  size = _subset_size(len(test), fraction, "test", test_hint)
  _check_shares(y_test, size, share_tolerance, "test", test_hint)
  valid = splits["valid"] if with_valid and "valid" in splits else None
  if valid is not None:
    y_valid = np.asarray(valid.labels, np.float64)
    valid_hint = "raise fraction, or build the OOD test splits only (with_valid=False, --no-valid)"
    size_valid = _subset_size(len(valid), fraction, "valid", valid_hint)
    _check_shares(y_valid, size_valid, share_tolerance, "valid", valid_hint)

  others = [name for name in IID_SPLITS if name != "train" and name in splits]
  features, inertia, biases = {}, {}, {}
  bias_of: dict[str, dict[str, np.ndarray]] = {name: {} for name in ("train", *others)}
  for m_index, modality in enumerate(MODALITIES):
    f_train, f_others, features[modality] = surface_features_of(
      train, [splits[name] for name in others], modality, text_vocab=text_vocab
    )
    km = kmeans(f_train, k, seed=np.random.SeedSequence([seed, 0, m_index]), n_init=n_init)
    bias = cluster_bias(km.labels, train.labels, k)
    biases[modality] = bias.tolist()
    inertia[modality] = km.inertia
    bias_of["train"][modality] = bias[km.labels]
    for name, f in zip(others, f_others):
      bias_of[name][modality] = bias[assign_clusters(f, km.centers)]

  corr = lambda name: {m: pearson(bias_of[name][m], splits[name].labels) for m in MODALITIES}
  schedule = {"steps": steps, "t0_scale": t0_scale, "t_final_ratio": t_final_ratio}
  result = {
    "version": OOD_VERSION,
    "seed": int(seed),
    "n_train": len(train),
    "n_test": len(test),
    **({"n_valid": len(splits["valid"])} if "valid" in splits else {}),
    "params": {
      "k": k,
      "fraction": fraction,
      "size": size,
      **({"size_valid": size_valid} if valid is not None else {}),
      "steps": steps,
      "n_init": n_init,
      "text_vocab": text_vocab,
      "share_tolerance": share_tolerance,
      "t0_scale": t0_scale,
      "t_final_ratio": t_final_ratio,
    },
    "features": features,
    "kmeans_inertia": inertia,
    "corr_train": corr("train"),
    "corr_test": corr("test"),
    **({"corr_valid": corr("valid")} if valid is not None else {}),
    "splits": _anneal_family(
      OOD_SPLITS, "test", bias_of["test"], y_test, size, seed=seed, stream=1, schedule=schedule
    ),
  }
  if valid is not None:
    result["valid_splits"] = _anneal_family(
      OOD_VALID_SPLITS,
      "valid",
      bias_of["valid"],
      y_valid,
      size_valid,
      seed=seed,
      stream=2,
      schedule=schedule,
    )
  result["cluster_bias"] = biases
  result["cue_signs"] = {
    name: {m: _sign_string(cue_signs_of(b)) for m, b in per_modality.items()}
    for name, per_modality in bias_of.items()
  }
  return result


# ------------------------------------------------------------------------------------------------
# Files


def default_ood_path(data_path: str | os.PathLike) -> pathlib.Path:
  """Where the OOD index file of a data set lives: DIR/ood.json for a GEAR directory, FILE.ood.json
  (appended, e.g. `unaligned_50.pkl.ood.json`) for an MMSA pickle (docs/methods.md §6 step 5)."""
  path = pathlib.Path(data_path)
  return path / "ood.json" if path.is_dir() else path.with_name(path.name + ".ood.json")


def write_ood_json(result: Mapping, path: str | os.PathLike) -> pathlib.Path:
  """Write `result` (from `build_ood_splits`) as JSON atomically (`msa_jax.io.atomic_file`)."""
  path = pathlib.Path(path)
  write_text_atomic(path, json.dumps(result, indent=1) + "\n")
  return path


def _check_indices(indices: object, n: int, where: str, source: str = "test") -> np.ndarray:
  if not isinstance(indices, (list, np.ndarray)) or any(
    isinstance(i, bool) or not isinstance(i, (int, np.integer)) for i in indices
  ):
    raise ValueError(f"{where}: indices must be a list of integers")
  idx = np.asarray(indices, np.int64).reshape(-1)
  bad = idx[(idx < 0) | (idx >= n)]
  if bad.size:
    raise ValueError(
      f"{where}: index {int(bad[0])} out of range for a {source} split of {n} samples"
    )
  values, counts = np.unique(idx, return_counts=True)
  if np.any(counts > 1):
    raise ValueError(f"{where}: duplicate index {int(values[counts > 1][0])}")
  return idx


@dataclasses.dataclass(frozen=True)
class OODFile:
  """An OOD index file as `read_ood_file` gives it.

  Attributes:
    indices: OOD split name -> (n,) int64 indices into its source split (`SOURCE_SPLIT`: test for
      the OOD test splits, valid for the OOD validation splits).
    cue_signs: IID split name -> (N, 3) int8 ±1 cue signs (columns in `MODALITIES` order); empty
      for a file without them.
  """

  indices: dict[str, np.ndarray]
  cue_signs: dict[str, np.ndarray]


def _read_json(path: pathlib.Path) -> dict:
  try:
    with open(path, encoding="utf-8") as f:
      data = json.load(f)
  except FileNotFoundError:
    raise FileNotFoundError(
      f"{path}: OOD index file not found (build it with scripts/build_ood_splits.py)"
    ) from None
  except json.JSONDecodeError as e:
    raise ValueError(f"{path}: not valid JSON ({e})") from None
  if not isinstance(data, dict) or not isinstance(data.get("splits"), dict):
    raise ValueError(f"{path}: expected a JSON object with a 'splits' object")
  return data


def _read_family(
  path: pathlib.Path, data: dict, key: str, names: Sequence[str], source: str, n: int
) -> dict[str, np.ndarray]:
  recorded = data.get(f"n_{source}")
  if recorded is not None and recorded != n:
    raise ValueError(f"{path}: built for a {source} split of {recorded} samples, this one has {n}")
  family = data[key]
  if not isinstance(family, dict):
    raise ValueError(f"{path}: '{key}' must be an object of split name -> {{indices}}")
  out = {}
  for name, entry in family.items():
    if name not in names:
      raise ValueError(f"{path}: unknown split {name!r}; expected names from {tuple(names)}")
    if not isinstance(entry, dict) or "indices" not in entry:
      raise ValueError(f"{path}: split {name!r} has no 'indices' list")
    out[name] = _check_indices(entry["indices"], n, f"{path}: split {name!r}", source)
  return out


def _read_cue_signs(path: pathlib.Path, split: str, value: object, n: int) -> np.ndarray:
  where = f"{path}: cue_signs of split {split!r}"
  if not isinstance(value, dict) or set(value) != set(MODALITIES):
    raise ValueError(f"{where}: expected an object with the keys {MODALITIES}")
  columns = []
  for m in MODALITIES:
    text = value[m]
    if not isinstance(text, str) or len(text) != n or set(text) - {"+", "-"}:
      raise ValueError(
        f"{where}, {m}: expected a string of {n} '+' / '-' characters (one per sample)"
      )
    columns.append(np.frombuffer(text.encode("ascii"), np.uint8) == ord("+"))
  return np.where(np.stack(columns, axis=1), 1, -1).astype(np.int8)


def read_ood_file(path: str | os.PathLike, sizes: Mapping[str, int]) -> OODFile:
  """Read an OOD index file for a split family whose IID splits have `sizes` (split name ->
  samples; 'test' required), validated: known split names, integer indices in range, no
  duplicates, recorded n_test / n_valid matching, cue signs one '+' / '-' per sample.

  The OOD validation splits and cue signs of a split missing from `sizes` are left out; a file
  without them (written before the builder added them) gives none.
  """
  path = pathlib.Path(path)
  if "test" not in sizes:
    raise ValueError(f"read_ood_file needs the test split's size; got sizes of {sorted(sizes)}")
  data = _read_json(path)
  indices = _read_family(path, data, "splits", OOD_SPLITS, "test", sizes["test"])
  if "valid" in sizes and "valid_splits" in data:
    valid = _read_family(path, data, "valid_splits", OOD_VALID_SPLITS, "valid", sizes["valid"])
    indices.update(valid)
  raw = data.get("cue_signs", {})
  if not isinstance(raw, dict) or set(raw) - set(IID_SPLITS):
    raise ValueError(f"{path}: 'cue_signs' must be an object keyed by split names {IID_SPLITS}")
  cue_signs = {
    split: _read_cue_signs(path, split, value, sizes[split])
    for split, value in raw.items()
    if split in sizes
  }
  return OODFile(indices=indices, cue_signs=cue_signs)


def load_ood_json(path: str | os.PathLike, n_test: int) -> dict[str, np.ndarray]:
  """Read the OOD test splits of an OOD index file -> {split name: (n,) int64 indices into the
  test split}, validated as by `read_ood_file`."""
  return read_ood_file(path, {"test": n_test}).indices


def apply_ood(
  splits: Mapping[str, Split],
  ood_indices: Mapping[str, np.ndarray],
  *,
  cue_signs: Mapping[str, np.ndarray] | None = None,
  overwrite: bool = False,
) -> dict[str, Split]:
  """A new split family: `splits` plus each OOD subset of its source split (`SOURCE_SPLIT`: test
  or valid; docs/methods.md §6), taken with `pipeline.take_rows`: arrays memory-mapped from a
  converted directory stay on disk.

  `cue_signs` (IID split name -> (N, 3) ±1, e.g. `OODFile.cue_signs`) fill the `cue_signs` of
  those splits that carry none (a synthetic file's planted signs are kept), before the subsets are
  taken, so each OOD subset has its samples' signs. An OOD name already present (e.g. a GEAR
  directory's released splits) is an error unless `overwrite`.
  """
  out = dict(splits)
  for name, signs in (cue_signs or {}).items():
    if name in out and out[name].cue_signs is None:
      signs = np.asarray(signs, np.int8)
      if signs.shape != (len(out[name]), 3):
        raise ValueError(
          f"cue signs of split {name!r}: shape {signs.shape}, expected ({len(out[name])}, 3)"
        )
      out[name] = dataclasses.replace(out[name], cue_signs=signs)
  for name, indices in ood_indices.items():
    if name not in SOURCE_SPLIT:
      raise ValueError(f"unknown OOD split {name!r}; expected names from {tuple(SOURCE_SPLIT)}")
    if name in splits and not overwrite:
      raise ValueError(f"split {name!r} already exists (pass overwrite=True to replace it)")
    source = _require(out, SOURCE_SPLIT[name])
    where = f"split {name!r}"
    idx = _check_indices(np.asarray(indices).tolist(), len(source), where, SOURCE_SPLIT[name])
    out[name] = pipeline.take_rows(source, idx)
  return out
