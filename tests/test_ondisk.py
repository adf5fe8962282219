"""Tests for msa_jax.data.ondisk: conversion to memory-mapped .npy files and reading them back."""

from __future__ import annotations

import dataclasses
import json
import pickle
from pathlib import Path

import numpy as np
import pytest

from msa_jax.data import DataFormatError, load, load_with_metadata, ondisk, pipeline, synthetic
from msa_jax.data.split import Split

VOCAB = 30522


@pytest.fixture(scope="module")
def synthetic_pickle(tmp_path_factory) -> Path:
  # 96 / 32 / 64 samples, 32 audio and vision frames: small enough to train on in the test.
  return synthetic.write_synthetic(
    tmp_path_factory.mktemp("synth") / "s.pkl", "mosi_small", scale=0.25
  )


@pytest.fixture(scope="module")
def converted(synthetic_pickle, tmp_path_factory) -> Path:
  return ondisk.convert(
    synthetic_pickle, tmp_path_factory.mktemp("conv") / "mosi_small", vocab_size=VOCAB
  )


def _assert_same(want: dict[str, Split], got: dict[str, Split]) -> None:
  assert set(want) == set(got)
  for name in want:
    for field in dataclasses.fields(Split):
      a, b = getattr(want[name], field.name), getattr(got[name], field.name)
      assert (a is None) == (b is None), (name, field.name)
      if a is None:
        continue
      assert isinstance(b, np.memmap), (name, field.name, type(b))
      assert a.shape == b.shape, (name, field.name)
      if field.name not in ("ids", "raw_text"):
        assert a.dtype == b.dtype, (name, field.name)
      np.testing.assert_array_equal(a, b, err_msg=f"{name}.{field.name}")


def _raw_split(seed: int, n: int) -> dict:
  """An MMSA-like split: float64 token ids, float64 audio with -inf, list lengths, object ids."""
  rng = np.random.default_rng(seed)
  text_bert = np.zeros((n, 3, 6))
  text_bert[:, 0, :3] = [101, 2000, 102]
  text_bert[:, 1, :3] = 1
  audio = rng.normal(size=(n, 5, 3))
  audio[0, 1, :] = -np.inf
  audio[n - 1, 0, 2] = np.inf
  return {
    "text_bert": text_bert,
    "audio": audio,
    "vision": rng.normal(size=(n, 4, 2)).astype(np.float32),
    "text": rng.normal(size=(n, 6, 7)).astype(np.float32),
    "audio_lengths": [int(x) for x in rng.integers(1, 6, size=n)],
    "vision_lengths": rng.integers(1, 5, size=n),
    "regression_labels": rng.uniform(-3, 3, n),
    "id": np.array([f"v{i}$_${seed}" for i in range(n)], dtype=object),
    "annotations": np.array(["Positive"] * n, dtype=object),
  }


def _raw_file() -> dict:
  return {
    name: _raw_split(seed, n)
    for seed, (name, n) in enumerate([("train", 9), ("valid", 4), ("test", 5)])
  }


def _pickle(path: Path, obj) -> Path:
  with open(path, "wb") as f:
    pickle.dump(obj, f, protocol=4)
  return path


def test_synthetic_round_trip_equals_the_pickle(synthetic_pickle, converted):
  want, want_meta = load_with_metadata(synthetic_pickle, vocab_size=VOCAB)
  got, got_meta = load_with_metadata(converted, vocab_size=VOCAB)
  _assert_same(want, got)
  assert got_meta == json.loads(json.dumps(want_meta))
  manifest = json.loads((converted / ondisk.MANIFEST).read_text())
  assert manifest["format"] == ondisk.FORMAT and manifest["version"] == ondisk.VERSION
  arrays = manifest["splits"]
  # OOD splits name test's files for every array they share instead of duplicating them.
  assert arrays["ood_text"]["arrays"]["audio"]["file"] == "test.audio.npy"
  assert arrays["ood_audio"]["arrays"]["vision"]["file"] == "test.vision.npy"
  assert arrays["ood_audio"]["arrays"]["labels"]["file"] == "test.labels.npy"
  assert got["ood_text"].audio is got["test"].audio
  assert not list(converted.parent.glob(".*.tmp"))


def test_infinities_zeroed_dtypes_converted_and_strings_kept(tmp_path):
  src = _pickle(tmp_path / "raw.pkl", _raw_file())
  out = ondisk.convert(src, tmp_path / "conv", dataset="mosi")
  want, got = load(src, "mosi"), ondisk.open_ondisk(out, "mosi")
  _assert_same(want, got)
  train = got["train"]
  assert train.audio.dtype == np.float32 and train.text_bert.dtype == np.int32
  assert np.isfinite(train.audio).all() and train.audio[0, 1].tolist() == [0.0, 0.0, 0.0]
  assert train.audio[-1, 0, 2] == 0.0 and train.ids[3] == "v3$_$0"


def test_gear_directory_converts(tmp_path):
  files = {
    "train": "train.pkl",
    "valid": "valid.pkl",
    "test": "test_iid.pkl",
    "ood_all": "test_nn_tav.pkl",
  }
  raw = _raw_file()
  raw["ood_all"] = _raw_split(7, 3)
  (tmp_path / "gear").mkdir()
  for name, file in files.items():
    _pickle(tmp_path / "gear" / file, raw[name])
  out = ondisk.convert(tmp_path / "gear", tmp_path / "conv")
  _assert_same(load(tmp_path / "gear"), load(out))
  assert (
    json.loads((out / ondisk.MANIFEST).read_text())["source"]["layout"] == "GEAR split directory"
  )


def test_existing_output_is_refused_and_empty_one_is_used(synthetic_pickle, converted, tmp_path):
  before = sorted(p.name for p in converted.iterdir())
  with pytest.raises(FileExistsError, match="already exists and is not an empty directory"):
    ondisk.convert(synthetic_pickle, converted, vocab_size=VOCAB)
  assert sorted(p.name for p in converted.iterdir()) == before
  (tmp_path / "empty").mkdir()
  assert ondisk.is_converted(ondisk.convert(synthetic_pickle, tmp_path / "empty", vocab_size=VOCAB))


def test_bad_source_leaves_nothing_behind(tmp_path):
  raw = _raw_file()
  raw["valid"]["vision"][1, 2, 0] = np.nan
  src = _pickle(tmp_path / "nan.pkl", raw)
  with pytest.raises(
    DataFormatError, match=r"nan\.pkl: split 'valid', key 'vision': expected no NaN.*sample 1"
  ):
    ondisk.convert(src, tmp_path / "out")
  assert sorted(p.name for p in tmp_path.iterdir()) == ["nan.pkl"]


def test_string_arrays_must_hold_strings(tmp_path):
  raw = _raw_file()
  raw["test"]["id"][2] = 17
  with pytest.raises(
    DataFormatError, match=r"split 'test', key 'id': expected every item to be str, got int"
  ):
    ondisk.convert(_pickle(tmp_path / "ids.pkl", raw), tmp_path / "out")


def _copy(converted: Path, dst: Path) -> Path:
  dst.mkdir()
  for f in converted.iterdir():
    (dst / f.name).write_bytes(f.read_bytes())
  return dst


@pytest.mark.parametrize(
  "damage, message",
  [
    (lambda d: (d / "manifest.json").unlink(), r"manifest\.json: missing"),
    (
      lambda d: (d / "manifest.json").write_text("{not json"),
      r"manifest\.json: unreadable manifest",
    ),
    (
      lambda d: (d / "train.vision.npy").unlink(),
      r"train\.vision\.npy: missing \(split 'train', array 'vision'",
    ),
    (
      lambda d: (d / "train.audio.npy").write_bytes((d / "train.audio.npy").read_bytes()[:-100]),
      r"train\.audio\.npy: not a readable \.npy file",
    ),
    (
      lambda d: (d / "test.labels.npy").write_bytes(
        (d / "test.labels.npy").read_bytes()[:-4] + b"\0\0\0\0"
      ),
      r"test\.labels\.npy: checksum differs",
    ),
  ],
)
def test_damaged_directory_errors_name_the_file(converted, tmp_path, damage, message):
  broken = _copy(converted, tmp_path / "broken")
  damage(broken)
  with pytest.raises(DataFormatError, match=message):
    load(broken, vocab_size=VOCAB)


def test_limits_of_the_open_apply(converted):
  with pytest.raises(
    DataFormatError, match=r"train\.text_bert\.npy: split 'train', key 'text_bert'"
  ):
    ondisk.open_ondisk(converted, vocab_size=1000)
  with pytest.raises(DataFormatError, match=r"labels\.npy: split 'train', key 'regression_labels'"):
    ondisk.open_ondisk(converted, "sims", vocab_size=VOCAB)


def test_pipeline_reads_rows_from_the_files(synthetic_pickle, converted):
  want = load(synthetic_pickle, vocab_size=VOCAB)["train"]
  got = load(converted, vocab_size=VOCAB)["train"]
  idx = np.array([5, 0, 63, 5, 17])
  a, b = pipeline.SplitSource(want).gather(idx), pipeline.SplitSource(got).gather(idx)
  assert set(a) == set(b)
  for k in a:
    assert type(b[k]) is np.ndarray and b[k].dtype == a[k].dtype
    np.testing.assert_array_equal(a[k], b[k], err_msg=k)
  rec = pipeline.SplitSource(got)[63]
  np.testing.assert_array_equal(rec["audio"], want.audio[63])
  with pytest.raises(IndexError):
    pipeline.SplitSource(got).gather(np.array([len(got)]))


def test_ood_subsets_of_converted_data_stay_on_disk(synthetic_pickle, converted):
  """`apply_ood` on memory-mapped splits keeps the frames of each OOD subset on disk (RowSubset)
  and reads the same rows as the in-memory subsets of the pickle."""
  from msa_jax.data import ood
  from msa_jax.data.split import OOD_SPLITS

  strip = lambda splits: {k: v for k, v in splits.items() if k not in OOD_SPLITS}
  indices = {"ood_text": np.array([3, 1, 40, 7]), "ood_all": np.arange(0, 64, 5)}
  want = ood.apply_ood(strip(load(synthetic_pickle, vocab_size=VOCAB)), indices)
  got = ood.apply_ood(strip(load(converted, vocab_size=VOCAB)), indices)
  for name, idx in indices.items():
    lazy = got[name]
    assert isinstance(lazy.audio, pipeline.RowSubset) and isinstance(
      lazy.vision, pipeline.RowSubset
    )
    assert len(lazy) == len(idx) and lazy.audio_shape == want[name].audio_shape
    np.testing.assert_array_equal(np.asarray(lazy.audio), want[name].audio)
    np.testing.assert_array_equal(lazy.vision[2], want[name].vision[2])
    np.testing.assert_array_equal(lazy.vision[2, 1], want[name].vision[2, 1])
    np.testing.assert_array_equal(lazy.audio[1:3, :, 0], want[name].audio[1:3, :, 0])
    assert (
      type(lazy.labels) is np.ndarray and type(lazy.text_bert) is np.ndarray
    )  # small: in memory
    np.testing.assert_array_equal(lazy.text_bert, want[name].text_bert)
    rows = np.array([1, 0, len(idx) - 1, 1])
    a, b = pipeline.SplitSource(want[name]).gather(rows), pipeline.SplitSource(lazy).gather(rows)
    for k in a:
      np.testing.assert_array_equal(a[k], b[k], err_msg=(name, k))
  # a subset of a subset composes the row indices; bad indices are refused
  sub = pipeline.take_rows(got["ood_all"], np.array([2, 0]))
  np.testing.assert_array_equal(np.asarray(sub.audio), want["ood_all"].audio[[2, 0]])
  with pytest.raises(IndexError):
    pipeline.take_rows(got["test"], np.array([64]))


def _linear_method():
  """A tiny linear method on audio (compiles in a second) standing in for LNLN / GEAR."""
  import jax.numpy as jnp
  import optax

  from msa_jax.evaluate.sets import EvalSet
  from msa_jax.train.method import Method

  def predict(params, batch, key, rate):
    return batch["audio"].mean((1, 2)) * params["w"] + params["b"]

  def loss_fn(params, batch, key, step):
    return jnp.mean((predict(params, batch, key, 0.0) - batch["labels"]) ** 2), {}

  return Method(
    name="linear",
    init_params=lambda k, b: {"w": jnp.zeros(()), "b": jnp.zeros(())},
    loss_fn=loss_fn,
    predict_fn=predict,
    optimizer=optax.adam(0.1),
    selection_metrics=("MAE", "Corr"),
    valid_rate=None,
    final_evals=tuple(EvalSet(s) for s in ("test", "ood_audio", "ood_all")),
    patience=None,
  )


def test_training_from_converted_directory_gives_the_same_results(
  synthetic_pickle, converted, tmp_path, monkeypatch
):
  from configs import gear as gear_config
  from msa_jax import train
  from msa_jax.train import methods
  from tests.test_train_gear import _config

  # The whole training program (load_data, pipeline, loop, evaluation, results.json) on a method
  # that compiles fast; GEAR's own build (text encoder checks on the memmaps) runs below.
  monkeypatch.setattr(methods, "build", lambda config, splits: _linear_method())
  monkeypatch.setattr(methods, "summarise", lambda config, method, per_seed: {"per_seed": per_seed})
  monkeypatch.setattr(methods, "markdown", lambda config, method, summary: "")
  results = {}
  for name, path in (("pickle", synthetic_pickle), ("converted", converted)):
    config = _config(path)
    config.data.synthetic_version = "v1"  # synthetic_pickle's benchmark
    config.max_epochs = 2
    train.run(config, tmp_path / name)
    results[name] = json.loads((tmp_path / name / "results.json").read_text())
  assert results["pickle"] == results["converted"]
  assert results["converted"]["per_seed"]["1003"]["epochs_trained"] == 2
  monkeypatch.undo()
  config = gear_config.get_config()
  config.data.path = str(converted)
  config.data.synthetic_version = "v1"
  config.gear.criterion = "Acc_2_mean"  # synth-v1 has no OOD validation splits
  gear = methods.build(config, train.loop.load_data(config))
  assert gear.name == "gear"
