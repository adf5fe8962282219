"""Tests for msa_jax.data.tfds_mmsa: TFDS builders of MMSA pickles and reading them back through
`tfds.data_source`, compared with `msa_jax.data.load` of the same pickle."""

from __future__ import annotations

import dataclasses
import json
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("tensorflow_datasets")

from msa_jax.data import (  # noqa: E402
  DataFormatError,
  load,
  load_with_metadata,
  ood,
  pipeline,
  synthetic,
  tfds_mmsa,
)
from msa_jax.data.split import OOD_SPLITS, Split  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def manual_dir(tmp_path_factory) -> Path:
  # The synthetic mosi_small benchmark (96 / 32 / 64 samples, 32 frames) as MOSI's manual file.
  directory = tmp_path_factory.mktemp("manual")
  synthetic.write_synthetic(directory / "unaligned_50.pkl", "mosi_small", scale=0.25)
  return directory


@pytest.fixture(scope="module")
def built(manual_dir, tmp_path_factory) -> Path:
  # Shards of 40 samples: every split but valid spans several array_record files.
  with pytest.MonkeyPatch.context() as patch:
    patch.setattr(tfds_mmsa, "SHARD_ROWS", 40)
    return tfds_mmsa.build("mosi", "unaligned_50", manual_dir, tmp_path_factory.mktemp("tfds"))


def _assert_same(want: dict[str, Split], got: dict[str, Split]) -> None:
  assert set(want) == set(got)
  for name in want:
    for field in dataclasses.fields(Split):
      a, b = getattr(want[name], field.name), getattr(got[name], field.name)
      assert (a is None) == (b is None), (name, field.name)
      if a is None:
        continue
      if field.name in tfds_mmsa.COLUMN_FIELDS:
        assert isinstance(b, tfds_mmsa.RecordColumn), (name, field.name, type(b))
      assert a.shape == b.shape, (name, field.name)
      if field.name not in ("ids", "raw_text"):  # object arrays of str come back as numpy str
        assert a.dtype == b.dtype, (name, field.name)
      np.testing.assert_array_equal(a, np.asarray(b), err_msg=f"{name}.{field.name}")


def test_build_reads_back_equal_to_the_pickle(manual_dir, built):
  want, want_meta = load_with_metadata(manual_dir / "unaligned_50.pkl", "mosi")
  got, got_meta = load_with_metadata(f"tfds:{built}", "mosi")
  assert set(want) == {"train", "valid", "test", *OOD_SPLITS}
  _assert_same(want, got)
  assert got_meta == json.loads(json.dumps(want_meta))
  shards = sorted(f.name for f in built.glob("*-train.array_record-*"))
  assert shards == [f"mmsa_mosi-train.array_record-0000{i}-of-00003" for i in range(3)], shards
  assert "tensorflow" not in sys.modules


def test_registered_name_in_the_default_data_dir(built, tmp_path):
  """`tfds:mmsa_mosi/unaligned_50` resolves in TFDS_DATA_DIR (read when TFDS is imported, so in a
  fresh process); an unbuilt config and an unknown name are one-line errors."""
  data_dir = tmp_path / "data"
  shutil.copytree(built, data_dir / "mmsa_mosi" / "unaligned_50" / "1.0.0")
  code = (
    "import numpy as np; from msa_jax.data import load; "
    "s = load('tfds:mmsa_mosi/unaligned_50', 'mosi'); "
    "print(len(s['train']), float(np.asarray(s['test'].audio).sum()))"
  )
  env = {"TFDS_DATA_DIR": str(data_dir), "PATH": "/usr/bin:/bin", "JAX_PLATFORMS": "cpu"}
  out = subprocess.run(
    [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, check=True
  )
  want = load(f"tfds:{built}", "mosi")
  assert out.stdout.split() == [
    str(len(want["train"])),
    str(float(np.asarray(want["test"].audio).sum())),
  ]
  with pytest.raises(DataFormatError, match=r"^mmsa_mosi/aligned_50: not built in .*aligned_50"):
    load("tfds:mmsa_mosi/aligned_50", "mosi")
  with pytest.raises(DataFormatError, match=r"^no_such_set: not a TFDS dataset name or directory"):
    load("tfds:no_such_set", "mosi")


def test_limits_apply_when_opened(built):
  with pytest.raises(DataFormatError, match=r"split 'train', key 'text_bert'"):
    load(f"tfds:{built}", "mosi", vocab_size=1000)
  with pytest.raises(DataFormatError, match=r"split 'train', key 'regression_labels'"):
    load(f"tfds:{built}", "sims", vocab_size=30522)


def test_build_fails_with_the_loaders_error(tmp_path):
  """A malformed pickle stops the build with the one-line error `load` gives, and nothing is
  left prepared; a missing manual file names the file and the directory."""
  data = synthetic.generate("mosi_small", scale=0.1)
  data["valid"]["regression_labels"][2] = 4.5
  with open(tmp_path / "unaligned_50.pkl", "wb") as f:
    pickle.dump(data, f)
  with pytest.raises(DataFormatError) as from_load:
    load(tmp_path / "unaligned_50.pkl", "mosi")
  with pytest.raises(DataFormatError) as from_build:
    tfds_mmsa.build("mosi", "unaligned_50", tmp_path, tmp_path / "data")
  assert str(from_build.value) == str(from_load.value)
  assert "\n" not in str(from_build.value)
  assert not list((tmp_path / "data").rglob("dataset_info.json"))
  with pytest.raises(DataFormatError, match=r"aligned_50\.pkl: not found; place the MMSA"):
    tfds_mmsa.build("mosi", "aligned_50", tmp_path, tmp_path / "data")
  with pytest.raises(ValueError, match="unknown config 'unaligned_39' for mosi"):
    tfds_mmsa.build("mosi", "unaligned_39", tmp_path, tmp_path / "data")


def test_ood_json_beside_the_pickle_gives_the_ood_splits(manual_dir, tmp_path):
  """An OOD index file beside the pickle replaces its planted OOD splits, as
  `--config.data.ood` does for the pickle."""
  pkl = tmp_path / "unaligned_50.pkl"
  shutil.copy(manual_dir / "unaligned_50.pkl", pkl)
  indices = {"ood_text": [3, 1, 40, 7], "ood_audio": [0, 63], "ood_all": list(range(0, 64, 5))}
  ood_file = ood.write_ood_json(
    {"n_test": 64, "splits": {k: {"indices": v} for k, v in indices.items()}},
    ood.default_ood_path(pkl),
  )
  base = {k: v for k, v in load(pkl, "mosi").items() if k not in OOD_SPLITS}
  want = ood.apply_ood(base, ood.load_ood_json(ood_file, 64))
  built = tfds_mmsa.build("mosi", "unaligned_50", tmp_path, tmp_path / "data")
  got = load(f"tfds:{built}", "mosi")
  assert set(got) == {"train", "valid", "test", "ood_text", "ood_audio", "ood_all"}
  _assert_same(want, got)


def test_pipeline_batches_equal_the_pickles(manual_dir, built):
  want = load(manual_dir / "unaligned_50.pkl", "mosi")
  got = load(f"tfds:{built}", "mosi")
  a = pipeline.train_dataset(want["train"], 16, seed=3)
  b = pipeline.train_dataset(got["train"], 16, seed=3)
  for step in (0, 1, 5, 6, 13):  # 6 steps per epoch: batches across an epoch boundary too
    x, y = a[step], b[step]
    assert set(x) == set(y)
    for k in x:
      assert type(y[k]) is np.ndarray and y[k].dtype == x[k].dtype, k
      np.testing.assert_array_equal(x[k], y[k], err_msg=f"step {step} {k}")
  it_a = pipeline.iterate(pipeline.eval_dataset(want["test"], 24))
  it_b = pipeline.iterate(pipeline.eval_dataset(got["test"], 24))
  for x, y in zip(it_a, it_b, strict=True):
    for k in x:
      np.testing.assert_array_equal(x[k], y[k], err_msg=k)
  # OOD subsets of a TFDS split stay in the record files and read the same rows
  sub = pipeline.take_rows(got["test"], np.array([9, 2, 9]))
  assert isinstance(sub.audio, tfds_mmsa.RecordColumn)
  np.testing.assert_array_equal(np.asarray(sub.audio), want["test"].audio[[9, 2, 9]])
  np.testing.assert_array_equal(sub.vision[1, 4], want["test"].vision[2, 4])
  np.testing.assert_array_equal(sub.audio[1:, 0], want["test"].audio[[2, 9], 0])


def test_training_from_tfds_gives_the_same_results(manual_dir, built, tmp_path, monkeypatch):
  """The whole training program (load_data, pipeline, loop, evaluation) reading
  `--config.data.path=tfds:DIR` gives the results it gives on the pickle."""
  from msa_jax import train
  from msa_jax.train import methods
  from tests.test_ondisk import _linear_method
  from tests.test_train_gear import _config

  monkeypatch.setattr(methods, "build", lambda config, splits: _linear_method())
  monkeypatch.setattr(methods, "summarise", lambda config, method, per_seed: {"per_seed": per_seed})
  monkeypatch.setattr(methods, "markdown", lambda config, method, summary: "")
  results = {}
  for name, path in (("pickle", str(manual_dir / "unaligned_50.pkl")), ("tfds", f"tfds:{built}")):
    config = _config(path)
    config.data.synthetic_version = "v1"  # the manual file's benchmark
    config.max_epochs = 2
    train.run(config, tmp_path / name)
    results[name] = json.loads((tmp_path / name / "results.json").read_text())
  assert results["pickle"] == results["tfds"]
  assert results["tfds"]["per_seed"]["1003"]["epochs_trained"] == 2
  # the run recorded the built directory's fingerprint, and resuming it on the same data passes
  recorded = json.loads((tmp_path / "tfds" / "data.json").read_text())
  assert recorded["path"] == f"tfds:{built}"
  assert recorded["bytes"] == sum(p.stat().st_size for p in built.rglob("*") if p.is_file())
  config = _config(f"tfds:{built}")
  config.data.synthetic_version = "v1"
  config.max_epochs = 2
  train.run(config, tmp_path / "tfds")


def test_input_benchmark_reads_the_same_batches(tmp_path):
  """scripts/bench_input.py's measurement on a tiny MOSEI-shaped file: both forms are written
  once (a second prepare reuses them) and the two pipelines deliver the same batch."""
  from msa_jax.bench import data_formats

  first = data_formats.prepare(tmp_path, "mosei", scale=0.005)
  again = data_formats.prepare(tmp_path, "mosei", scale=0.005)
  assert all(v is not None for v in first["seconds"].values())
  assert all(v is None for v in again["seconds"].values())
  assert all(v > 0 for v in first["bytes"].values())
  result = data_formats.compare(first["paths"], batch_size=4, rounds=2, batches=3)
  assert result["checksum_equal"]
  assert len(result["batches_per_second_rounds"]["tfds"]) == 2
