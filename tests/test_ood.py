"""GEAR's OOD split builder (docs/methods.md §6): features, K-means, bias predictor, annealing,
OOD validation splits, cue signs, files, script, loading into a GEAR run."""

import dataclasses
import json
import os
import pathlib
import pickle
import subprocess
import sys

import numpy as np
import pytest

from msa_jax.data import ood
from msa_jax.data.split import OOD_SPLITS, OOD_VALID_SPLITS, Split
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


def make_family(
  seed: int = 0, n_train: int = 500, n_test: int = 300, n_valid: int = 60, **kw
) -> dict[str, Split]:
  rng = np.random.default_rng(seed)
  return {
    "train": make_split(rng, n_train, **kw),
    "valid": make_split(rng, n_valid, **kw),
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
  assert set(first["valid_splits"]) == set(OOD_VALID_SPLITS)
  other = ood.build_ood_splits(family, seed=1, steps=3000)
  for name in OOD_SPLITS:
    assert other["splits"][name]["indices"] != first["splits"][name]["indices"]
  for name in OOD_VALID_SPLITS:
    assert other["valid_splits"][name]["indices"] != first["valid_splits"][name]["indices"]


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
# OOD validation splits and cue signs


@pytest.fixture(scope="module")
def family_v():
  """A family whose 200-sample valid split lets a 47% subset keep its label shares within ±2%."""
  return make_family(seed=5, n_valid=200)


@pytest.fixture(scope="module")
def built_v(family_v):
  return ood.build_ood_splits(family_v, seed=0, steps=STEPS)


def _signs(built: dict, split: str) -> np.ndarray:
  """(N, 3) ±1 decoded here from the file's '+' / '-' strings."""
  cols = [[1 if c == "+" else -1 for c in built["cue_signs"][split][m]] for m in MODALITIES]
  return np.array(cols).T


def _agreement(signs: np.ndarray, labels: np.ndarray) -> float:
  """Share of non-zero-label samples whose cue sign equals sign(label)."""
  nz = labels != 0
  return float(np.mean(signs[nz] == np.sign(labels[nz])))


def test_valid_splits_reverse_the_cue_agreement_of_valid(built_v, family_v):
  valid = family_v["valid"]
  y, signs = valid.labels, _signs(built_v, "valid")
  size = round(0.47 * len(valid))
  assert built_v["n_valid"] == len(valid) and built_v["params"]["size_valid"] == size
  assert set(built_v["valid_splits"]) == set(OOD_VALID_SPLITS)
  for name, s in built_v["valid_splits"].items():
    idx = np.asarray(s["indices"])
    assert s["size"] == len(idx) == size == len(np.unique(idx))
    assert idx.min() >= 0 and idx.max() < len(valid) and np.all(np.diff(idx) > 0)
    assert s["objective_after"] < s["objective_before"] - 0.3
    for c in ood.LABEL_CLASSES:
      assert abs(s["label_shares_split"][c] - s["label_shares_valid"][c]) <= 0.02
    for m in s["modalities"]:
      j = MODALITIES.index(m)
      assert _agreement(signs[idx, j], y[idx]) < _agreement(signs[:, j], y) - 0.1, (name, m)
  # On valid the cluster bias agrees with the label; the single-modality audio split reverses it.
  assert all(_agreement(signs[:, j], y) > 0.6 for j in range(3))
  idx = np.asarray(built_v["valid_splits"]["ood_valid_audio"]["indices"])
  assert _agreement(signs[idx, 1], y[idx]) < 0.5


def test_valid_splits_leave_the_test_splits_unchanged(built_v, family_v):
  """The OOD validation splits draw from their own seed stream: the test splits are those of a
  build without them."""
  test_only = ood.build_ood_splits(family_v, seed=0, steps=STEPS, with_valid=False)
  assert "valid_splits" not in test_only and "size_valid" not in test_only["params"]
  assert test_only["splits"] == built_v["splits"]
  assert test_only["cue_signs"] == built_v["cue_signs"]


def test_cue_signs_are_the_sign_of_the_cluster_bias(built_v, family_v):
  """Every stored sign equals sign(b(c(i))), with c(i) the nearest train K-means centre and b the
  mean training label per cluster, both recomputed here with numpy (b = 0 counts as +1)."""
  train = family_v["train"]
  names = ("train", "valid", "test")
  for m_index, modality in enumerate(MODALITIES):
    f_train, feats, _ = ood.surface_features_of(
      train, [family_v["valid"], family_v["test"]], modality
    )
    km = ood.kmeans(f_train, 10, seed=np.random.SeedSequence([0, 0, m_index]), n_init=4)
    y = train.labels.astype(np.float64)
    b = np.array(
      [y[km.labels == c].mean() if np.any(km.labels == c) else y.mean() for c in range(10)]
    )
    np.testing.assert_allclose(built_v["cluster_bias"][modality], b)
    for name, f in zip(names, [f_train, *feats]):
      nearest = np.argmin(((f[:, None] - km.centers[None]) ** 2).sum(-1), axis=1)
      want = np.where(b[nearest] >= 0, 1, -1)
      np.testing.assert_array_equal(_signs(built_v, name)[:, m_index], want)
  assert {len(built_v["cue_signs"][n]["text"]) for n in names} == {500, 200, 300}


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


def _sizes(family: dict) -> dict[str, int]:
  return {k: len(family[k]) for k in ("train", "valid", "test")}


def test_read_and_apply_fill_valid_splits_and_cue_signs(built_v, family_v, tmp_path):
  path = ood.write_ood_json(built_v, tmp_path / "d.pkl.ood.json")
  found = ood.read_ood_file(path, _sizes(family_v))
  assert set(found.indices) == set(OOD_SPLITS) | set(OOD_VALID_SPLITS)
  assert set(found.cue_signs) == {"train", "valid", "test"}
  for name in ("train", "valid", "test"):
    np.testing.assert_array_equal(found.cue_signs[name], _signs(built_v, name))
  out = ood.apply_ood(family_v, found.indices, cue_signs=found.cue_signs)
  valid, test = family_v["valid"], family_v["test"]
  for name in OOD_VALID_SPLITS:
    idx = np.asarray(built_v["valid_splits"][name]["indices"])
    np.testing.assert_array_equal(out[name].labels, valid.labels[idx])
    np.testing.assert_array_equal(out[name].audio, valid.audio[idx])
    np.testing.assert_array_equal(out[name].cue_signs, _signs(built_v, "valid")[idx])
  idx = np.asarray(built_v["splits"]["ood_text"]["indices"])
  np.testing.assert_array_equal(out["ood_text"].labels, test.labels[idx])
  np.testing.assert_array_equal(out["ood_text"].cue_signs, _signs(built_v, "test")[idx])
  np.testing.assert_array_equal(out["train"].cue_signs, _signs(built_v, "train"))
  assert family_v["train"].cue_signs is None  # the input family is left as it was
  # The test-only reader (the TFDS builder's) gives the OOD test splits alone.
  assert set(ood.load_ood_json(path, len(test))) == set(OOD_SPLITS)


def test_apply_keeps_cue_signs_a_split_already_carries(built_v, family_v, tmp_path):
  found = ood.read_ood_file(ood.write_ood_json(built_v, tmp_path / "a.json"), _sizes(family_v))
  planted = np.ones((len(family_v["valid"]), 3), np.int8)
  fam = {**family_v, "valid": dataclasses.replace(family_v["valid"], cue_signs=planted)}
  out = ood.apply_ood(fam, found.indices, cue_signs=found.cue_signs)
  assert out["valid"].cue_signs is planted and np.all(out["ood_valid_all"].cue_signs == 1)
  np.testing.assert_array_equal(out["test"].cue_signs, found.cue_signs["test"])


def _old_file(built: dict) -> dict:
  """`built` as the builder wrote it before the OOD validation splits and cue signs."""
  keep = ("seed", "n_train", "n_test", "params", "features", "kmeans_inertia", "corr_train")
  return {**{k: built[k] for k in keep}, "version": 1, "splits": built["splits"]}


def test_old_file_without_valid_splits_or_cue_signs_loads(built_v, family_v, tmp_path):
  path = ood.write_ood_json(_old_file(built_v), tmp_path / "old.json")
  found = ood.read_ood_file(path, _sizes(family_v))
  assert set(found.indices) == set(OOD_SPLITS) and found.cue_signs == {}
  out = ood.apply_ood(family_v, found.indices, cue_signs=found.cue_signs)
  assert set(out) == {"train", "valid", "test", *OOD_SPLITS}
  assert all(split.cue_signs is None for split in out.values())


def test_read_ood_file_rejects_bad_valid_splits_and_cue_signs(built_v, family_v, tmp_path):
  sizes = _sizes(family_v)

  def fails(data: dict, message: str) -> None:
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match=message) as info:
      ood.read_ood_file(path, sizes)
    assert "bad.json" in str(info.value) and "\n" not in str(info.value)

  fails({**built_v, "n_valid": 7}, "built for a valid split of 7 samples, this one has 200")
  bad = json.loads(json.dumps(built_v))
  bad["valid_splits"]["ood_valid_text"]["indices"] = [0, 200]
  fails(bad, "'ood_valid_text'.*index 200 out of range for a valid split of 200")
  fails({**built_v, "valid_splits": {"ood_text": {"indices": [1]}}}, "unknown split 'ood_text'")
  bad = json.loads(json.dumps(built_v))
  bad["cue_signs"]["test"]["audio"] = bad["cue_signs"]["test"]["audio"][:-1]
  fails(bad, "cue_signs of split 'test', audio: expected a string of 300")
  bad["cue_signs"]["test"]["audio"] = "0" * 300
  fails(bad, "cue_signs of split 'test', audio")
  fails({**built_v, "cue_signs": {"dev": {}}}, "'cue_signs' must be an object keyed by split")


def _pickle_family(family: dict, path: pathlib.Path) -> pathlib.Path:
  with open(path, "wb") as f:
    pickle.dump({name: _raw(s) for name, s in family.items()}, f)
  return path


def _gear_config(data: pathlib.Path, ood_file: pathlib.Path):
  from configs import gear as gear_config

  c = gear_config.get_config()
  c.data.synthetic = ""
  c.data.path = str(data)
  c.data.ood = str(ood_file)
  c.batch_size = c.eval_batch_size = 16
  return c


def test_gear_on_real_shaped_data_gets_ood_valid_and_cue_diagnostics(built_v, family_v, tmp_path):
  """A pickle without OOD splits or cue signs + the builder's file: load_data yields the OOD
  validation splits and fills the cue signs, so GEAR can select on `ood_valid` and runs its cue
  diagnostics; an old file gives no OOD validation splits and `ood_valid`'s one-line error."""
  pytest.importorskip("msa_jax.data.mmsa")
  from msa_jax.errors import RunConfigError
  from msa_jax.train import loop, methods

  data = _pickle_family(family_v, tmp_path / "real.pkl")
  ood_file = ood.write_ood_json(built_v, tmp_path / "real.pkl.ood.json")
  config = _gear_config(data, ood_file)
  assert config.gear.criterion == "ood_valid"
  splits = loop.load_data(config)
  assert set(splits) == {"train", "valid", "test", *OOD_SPLITS, *OOD_VALID_SPLITS}
  np.testing.assert_array_equal(splits["valid"].cue_signs, _signs(built_v, "valid"))
  method = methods.build(config, splits)
  assert method.selection_metrics[0] == "ood_valid"
  assert method.valid_splits == ("valid", *OOD_VALID_SPLITS)
  assert method.diagnostic_fn is not None

  old = ood.write_ood_json(_old_file(built_v), tmp_path / "old.ood.json")
  config = _gear_config(data, old)
  splits = loop.load_data(config)
  assert not set(OOD_VALID_SPLITS) & set(splits) and splits["valid"].cue_signs is None
  with pytest.raises(RunConfigError, match="needs the OOD validation splits") as info:
    methods.build(config, splits)
  assert "scripts/build_ood_splits.py" in str(info.value) and "\n" not in str(info.value)
  config.gear.criterion = "Acc_2_mean"
  assert "ood_valid" not in methods.build(config, splits).selection_metrics


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
  assert "ood_valid_all" in run.stdout
  want = ood.build_ood_splits(fam, seed=2, steps=3000)
  assert result["valid_splits"] == want["valid_splits"] and result["cue_signs"] == want["cue_signs"]
  loaded = ood.load_ood_json(out, 200)
  for name in OOD_SPLITS:
    np.testing.assert_array_equal(loaded[name], want["splits"][name]["indices"])
  again = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env)
  assert (
    again.returncode == 1 and "already exists" in again.stderr and "--overwrite" in again.stderr
  )
  forced = subprocess.run(
    cmd + ["--overwrite", "--no-valid"], capture_output=True, text=True, timeout=120, env=env
  )
  assert forced.returncode == 0, forced.stderr
  result = json.loads(out.read_text())
  assert "valid_splits" not in result and "ood_valid_all" not in forced.stdout
  assert result["cue_signs"] == want["cue_signs"]
