"""GEAR's OOD split builder (docs/methods.md §6): features, K-means, bias predictor, annealing,
files, script."""

import json
import os
import pathlib
import pickle
import subprocess
import sys

import numpy as np
import pytest

from msa_jax.data import ood
from msa_jax.data.split import OOD_SPLITS, Split
from msa_jax.modalities import MODALITIES

ROOT = pathlib.Path(__file__).resolve().parents[1]
STEPS = 20_000


def make_split(rng: np.random.Generator, n: int, *, with_text: bool = False) -> Split:
  """A small split whose labels leak into a surface cue of every modality.

  Text: three tokens after [CLS] come from a 'positive' or 'negative' id pool that agrees with
  the label sign 80% of the time. Audio dim 0 and vision dim 1 are shifted by a noisy copy of y.
  Labels on a 1/3 grid in [-3, 3] with ~10% exact zeros; variable lengths and padding.
  """
  L, ta, da, tv, dv = 12, 8, 4, 6, 5
  y = np.round(rng.uniform(-3, 3, n) * 3) / 3
  y[rng.random(n) < 0.08] = 0.0
  cue = np.where(rng.random(n) < 0.8, np.sign(y), -np.sign(y))
  ids = rng.integers(1000, 1100, (n, L))
  ids[:, 1:4] = np.where(
    cue[:, None] > 0,
    rng.integers(2000, 2010, (n, 3)),
    np.where(cue[:, None] < 0, rng.integers(3000, 3010, (n, 3)), ids[:, 1:4]),
  )
  lens = rng.integers(5, L + 1, n)
  mask = (np.arange(L)[None] < lens[:, None]).astype(np.int32)
  ids[:, 0] = 101
  ids[np.arange(n), lens - 1] = 102
  text_bert = np.stack([ids * mask, mask, np.zeros_like(mask)], 1).astype(np.int32)
  audio = rng.normal(size=(n, ta, da)).astype(np.float32)
  audio[:, :, 0] += (y / 3 + 0.5 * rng.normal(size=n))[:, None]
  vision = rng.normal(size=(n, tv, dv)).astype(np.float32)
  vision[:, :, 1] += (y / 3 + 0.5 * rng.normal(size=n))[:, None]
  text = None
  if with_text:
    text = rng.normal(size=(n, L, 6)).astype(np.float32)
    text[:, :, 2] += (y / 3)[:, None]
  return Split(
    text_bert=text_bert,
    audio=audio,
    vision=vision,
    audio_lengths=rng.integers(1, ta + 1, n).astype(np.int32),
    vision_lengths=rng.integers(1, tv + 1, n).astype(np.int32),
    labels=y.astype(np.float32),
    text=text,
  )


def make_family(seed: int = 0, n_train: int = 500, n_test: int = 300, **kw) -> dict[str, Split]:
  rng = np.random.default_rng(seed)
  return {
    "train": make_split(rng, n_train, **kw),
    "valid": make_split(rng, 60, **kw),
    "test": make_split(rng, n_test, **kw),
  }


@pytest.fixture(autouse=True, scope="module")
def _one_blas_thread():
  """Small matrices on a shared 2-core machine: one BLAS thread avoids oversubscription."""
  try:
    from threadpoolctl import threadpool_limits
  except ImportError:
    yield
    return
  with threadpool_limits(1):
    yield


@pytest.fixture(scope="module")
def family():
  return make_family()


@pytest.fixture(scope="module")
def built(family):
  return ood.build_ood_splits(family, seed=0, steps=STEPS)


# ------------------------------------------------------------------------------------------------
# Features


def test_masked_mean_matches_loop():
  rng = np.random.default_rng(1)
  x = rng.normal(size=(5, 7, 3)).astype(np.float32)
  lengths = np.array([1, 7, 3, 0, 5])
  got = ood.masked_mean(x, ood.length_mask(lengths, 7))
  want = np.stack([x[i, :l].mean(0) if l else np.zeros(3) for i, l in enumerate(lengths)])
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_token_bag_hand_worked():
  ids = np.array([[101, 7, 7, 9, 102, 0], [101, 9, 102, 0, 0, 0]])
  mask = (ids > 0).astype(np.int32)
  tb = np.stack([ids, mask, np.zeros_like(ids)], 1)
  vocab = ood.token_vocab(tb, 10)
  np.testing.assert_array_equal(vocab, [7, 9])
  bag = ood.token_bag(tb, vocab)
  np.testing.assert_allclose(bag, [[2 / np.sqrt(5), 1 / np.sqrt(5)], [0.0, 1.0]])


def test_token_vocab_tie_and_specials():
  ids = np.array([[101, 7, 9, 100, 102], [101, 9, 7, 0, 0]])
  tb = np.stack([ids, (ids > 0).astype(np.int32), np.zeros_like(ids)], 1)
  np.testing.assert_array_equal(ood.token_vocab(tb, 1), [7])
  np.testing.assert_array_equal(ood.token_vocab(tb, 10), [7, 9])


def test_surface_features_standardised_with_train_stats(family):
  train, test = family["train"], family["test"]
  for modality, frames, lengths in (
    ("audio", "audio", "audio_lengths"),
    ("vision", "vision", "vision_lengths"),
  ):
    f_train, f_test, desc = ood.surface_features(train, test, modality)
    raw = lambda s: np.stack(
      [getattr(s, frames)[i, : getattr(s, lengths)[i]].mean(0) for i in range(len(s))]
    )
    r_train, r_test = raw(train), raw(test)
    want = (r_test - r_train.mean(0)) / r_train.std(0)
    np.testing.assert_allclose(f_test, want, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(f_train.mean(0), 0.0, atol=1e-6)
    np.testing.assert_allclose(f_train.std(0), 1.0, rtol=1e-6)
    assert desc == f"{modality}_mean_standardised"
  assert ood.surface_features(train, test, "text")[2].startswith("token_bag_")


def test_text_features_use_frozen_text_when_present():
  fam = make_family(with_text=True, n_train=50, n_test=20)
  f_train, f_test, desc = ood.surface_features(fam["train"], fam["test"], "text")
  assert desc == "text_mean" and f_test.shape == (20, 6)
  s = fam["test"]
  want = np.stack([s.text[i][s.text_bert[i, 1] > 0].mean(0) for i in range(len(s))])
  np.testing.assert_allclose(f_test, want, rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------------------------------------
# K-means and the bias predictor


def test_kmeans_matches_sklearn_inertia_on_blobs():
  sklearn_cluster = pytest.importorskip("sklearn.cluster")
  from sklearn.datasets import make_blobs
  from sklearn.metrics import adjusted_rand_score

  x, _ = make_blobs(n_samples=600, centers=6, n_features=5, cluster_std=1.0, random_state=3)
  ours = ood.kmeans(x, 6, seed=0, n_init=4)
  ref = sklearn_cluster.KMeans(n_clusters=6, n_init=4, random_state=0).fit(x)
  assert ours.inertia == pytest.approx(ref.inertia_, rel=1e-6)
  assert adjusted_rand_score(ref.labels_, ours.labels) == pytest.approx(1.0)
  np.testing.assert_array_equal(ood.assign_clusters(x, ours.centers), ours.labels)
  assert ours.inertia == pytest.approx(float(np.sum((x - ours.centers[ours.labels]) ** 2)))


def test_kmeans_close_to_sklearn_on_unstructured_data():
  sklearn_cluster = pytest.importorskip("sklearn.cluster")
  x = np.random.default_rng(2).normal(size=(800, 4))
  ours = ood.kmeans(x, 10, seed=0, n_init=4)
  ref = sklearn_cluster.KMeans(n_clusters=10, n_init=4, random_state=0).fit(x)
  assert abs(ours.inertia - ref.inertia_) / ref.inertia_ < 0.03


def test_kmeans_deterministic_and_validates():
  x = np.random.default_rng(0).normal(size=(100, 3))
  a, b = ood.kmeans(x, 5, seed=7), ood.kmeans(x, 5, seed=7)
  np.testing.assert_array_equal(a.centers, b.centers)
  with pytest.raises(ValueError, match="k=200"):
    ood.kmeans(x, 200)


def test_cluster_bias_is_mean_label_per_cluster():
  clusters = np.array([0, 0, 1, 2, 2, 2])
  y = np.array([1.0, 3.0, -2.0, 0.0, 1.0, 2.0])
  np.testing.assert_allclose(ood.cluster_bias(clusters, y, 4), [2.0, -2.0, 1.0, y.mean()])


# ------------------------------------------------------------------------------------------------
# Annealing


def test_stratified_counts_sum_and_shares():
  classes = np.array([0] * 37 + [1] * 11 + [2] * 52)
  counts = ood.stratified_counts(classes, 47)
  assert counts.sum() == 47
  np.testing.assert_allclose(counts / 47, [0.37, 0.11, 0.52], atol=1 / 47)


@pytest.mark.parametrize("m", [1, 3])
def test_incremental_objective_matches_brute_force(m):
  rng = np.random.default_rng(m)
  y = np.round(rng.normal(size=400) * 3) / 3
  x = np.stack(
    [np.repeat(rng.normal(size=10), 40)[rng.permutation(400)] + 0.5 * y for _ in range(m)]
  )
  res = ood.anneal_subset(x, y, 190, rng=np.random.default_rng(0), steps=5000)
  brute = sum(np.corrcoef(row[res.indices], y[res.indices])[0, 1] for row in x)
  assert res.objective == pytest.approx(brute, abs=1e-9)
  assert res.objective < res.objective_start
  assert res.n_accepted > 0
  np.testing.assert_array_equal(
    np.bincount(ood.label_classes(y[res.indices]), minlength=3),
    ood.stratified_counts(ood.label_classes(y), 190),
  )


def test_zero_steps_returns_stratified_start():
  rng = np.random.default_rng(0)
  y, x = rng.normal(size=50), rng.normal(size=(1, 50))
  res = ood.anneal_subset(x, y, 20, rng=rng, steps=0)
  assert len(res.indices) == 20 and res.objective == res.objective_start


# ------------------------------------------------------------------------------------------------
# The builder


def test_builder_breaks_the_shortcut(built, family):
  test = family["test"]
  size = round(0.47 * len(test))
  assert set(built["splits"]) == set(OOD_SPLITS)
  for modality in MODALITIES:
    assert built["corr_train"][modality] > 0.3
    assert built["corr_test"][modality] > 0.3
  for s in built["splits"].values():
    idx = np.asarray(s["indices"])
    assert s["size"] == len(idx) == size
    assert len(np.unique(idx)) == size and idx.min() >= 0 and idx.max() < len(test)
    assert s["objective_after"] < s["objective_before"] - 0.3
    for modality in s["modalities"]:
      assert s["corr_split"][modality] < built["corr_test"][modality]
    for c in ood.LABEL_CLASSES:
      assert abs(s["label_shares_split"][c] - s["label_shares_test"][c]) <= 0.02
    want = ood.label_shares(test.labels[idx])
    assert s["label_shares_split"] == want
  # The single-modality objectives are driven below zero.
  for name in ("ood_text", "ood_audio", "ood_vision"):
    assert built["splits"][name]["objective_after"] < 0


def test_builder_objective_independently_recomputed(built, family):
  """objective_after equals corr(b(c(i)), y_i) on the subset, with b, c recomputed here."""
  train, test = family["train"], family["test"]
  for m_index, modality in enumerate(MODALITIES):
    f_train, f_test, _ = ood.surface_features(train, test, modality)
    km = ood.kmeans(f_train, 10, seed=np.random.SeedSequence([0, 0, m_index]), n_init=4)
    b_test = np.array([train.labels.astype(np.float64)[km.labels == c].mean() for c in range(10)])[
      np.argmin(((f_test[:, None] - km.centers[None]) ** 2).sum(-1), axis=1)
    ]
    assert built["corr_test"][modality] == pytest.approx(np.corrcoef(b_test, test.labels)[0, 1])
    idx = np.asarray(built["splits"][f"ood_{modality}"]["indices"])
    assert built["splits"][f"ood_{modality}"]["objective_after"] == pytest.approx(
      np.corrcoef(b_test[idx], test.labels[idx])[0, 1], abs=1e-9
    )


def test_builder_deterministic_and_seed_dependent(family):
  first = ood.build_ood_splits(family, seed=0, steps=3000)
  again = ood.build_ood_splits(family, seed=0, steps=3000)
  assert json.dumps(again) == json.dumps(first)
  other = ood.build_ood_splits(family, seed=1, steps=3000)
  for name in OOD_SPLITS:
    assert other["splits"][name]["indices"] != first["splits"][name]["indices"]


def test_builder_rejects_bad_arguments(family):
  with pytest.raises(ValueError, match="fraction"):
    ood.build_ood_splits(family, fraction=1.5)
  with pytest.raises(ValueError, match="seed"):
    ood.build_ood_splits(family, seed=-1)
  with pytest.raises(KeyError, match="'train'"):
    ood.build_ood_splits({"test": family["test"]})
  tiny = {"train": family["train"], "test": family["test"].take(np.arange(40))}
  with pytest.raises(ValueError, match="label share"):
    ood.build_ood_splits(tiny, steps=10)


# ------------------------------------------------------------------------------------------------
# Files and apply_ood


def test_json_round_trip_and_apply(built, family, tmp_path):
  path = ood.write_ood_json(built, tmp_path / "d.pkl.ood.json")
  assert not list(tmp_path.glob(".*tmp*"))
  loaded = ood.load_ood_json(path, len(family["test"]))
  assert set(loaded) == set(OOD_SPLITS)
  for name in OOD_SPLITS:
    np.testing.assert_array_equal(loaded[name], built["splits"][name]["indices"])
  out = ood.apply_ood(family, loaded)
  idx = loaded["ood_audio"]
  np.testing.assert_array_equal(out["ood_audio"].audio, family["test"].audio[idx])
  np.testing.assert_array_equal(out["ood_audio"].labels, family["test"].labels[idx])
  assert out["train"] is family["train"] and "ood_audio" not in family
  with pytest.raises(ValueError, match="already exists"):
    ood.apply_ood(out, loaded)
  assert len(ood.apply_ood(out, loaded, overwrite=True)["ood_all"]) == len(loaded["ood_all"])


def _write(path: pathlib.Path, splits: dict, n_test=None) -> pathlib.Path:
  data = {"splits": {k: {"indices": v} for k, v in splits.items()}}
  if n_test is not None:
    data["n_test"] = n_test
  path.write_text(json.dumps(data))
  return path


@pytest.mark.parametrize(
  "indices, message",
  [
    ([0, 5, 10], "index 10 out of range"),
    ([0, -1], "index -1 out of range"),
    ([3, 4, 3], "duplicate index 3"),
    ([1, 2.5], "list of integers"),
  ],
)
def test_load_ood_json_rejects_bad_indices(tmp_path, indices, message):
  path = _write(tmp_path / "bad.json", {"ood_text": indices})
  with pytest.raises(ValueError, match=message) as info:
    ood.load_ood_json(path, 10)
  assert str(path) in str(info.value) and "ood_text" in str(info.value)


def test_load_ood_json_rejects_bad_files(tmp_path):
  with pytest.raises(ValueError, match="built for a test split of 12") as info:
    ood.load_ood_json(_write(tmp_path / "a.json", {"ood_text": [1]}, n_test=12), 10)
  assert "a.json" in str(info.value)
  with pytest.raises(ValueError, match="unknown split 'ood_x'"):
    ood.load_ood_json(_write(tmp_path / "b.json", {"ood_x": [1]}), 10)
  (tmp_path / "c.json").write_text("{not json")
  with pytest.raises(ValueError, match="c.json: not valid JSON"):
    ood.load_ood_json(tmp_path / "c.json", 10)
  with pytest.raises(FileNotFoundError, match="missing.json"):
    ood.load_ood_json(tmp_path / "missing.json", 10)


def test_default_ood_path(tmp_path):
  assert (
    ood.default_ood_path(tmp_path / "unaligned_50.pkl") == tmp_path / "unaligned_50.pkl.ood.json"
  )
  assert ood.default_ood_path(tmp_path) == tmp_path / "ood.json"


# ------------------------------------------------------------------------------------------------
# Script


def _raw(split: Split) -> dict:
  return {
    "text_bert": split.text_bert.astype(np.float32),
    "audio": split.audio,
    "vision": split.vision,
    "audio_lengths": split.audio_lengths,
    "vision_lengths": split.vision_lengths,
    "regression_labels": split.labels,
  }


def test_script_end_to_end(tmp_path):
  pytest.importorskip("msa_jax.data.mmsa")
  fam = make_family(seed=3, n_train=300, n_test=200)
  data = tmp_path / "tiny.pkl"
  with open(data, "wb") as f:
    pickle.dump({name: _raw(s) for name, s in fam.items()}, f)
  cmd = [
    sys.executable,
    str(ROOT / "scripts" / "build_ood_splits.py"),
    "--data",
    str(data),
    "--dataset",
    "mosi",
    "--seed",
    "2",
    "--steps",
    "3000",
  ]
  env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
  run = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env)
  assert run.returncode == 0, run.stderr
  out = tmp_path / "tiny.pkl.ood.json"
  assert "ood_all" in run.stdout and str(out) in run.stdout
  result = json.loads(out.read_text())
  assert result["seed"] == 2 and result["data"] == "tiny.pkl" and result["params"]["steps"] == 3000
  loaded = ood.load_ood_json(out, 200)
  want = ood.build_ood_splits(fam, seed=2, steps=3000)
  for name in OOD_SPLITS:
    np.testing.assert_array_equal(loaded[name], want["splits"][name]["indices"])
  again = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env)
  assert (
    again.returncode == 1 and "already exists" in again.stderr and "--overwrite" in again.stderr
  )
  forced = subprocess.run(
    cmd + ["--overwrite"], capture_output=True, text=True, timeout=120, env=env
  )
  assert forced.returncode == 0, forced.stderr
