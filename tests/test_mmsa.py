"""Tests for msa_jax.data.load on pickles and GEAR directories: safe loading and validation."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest

from msa_jax.data import DataFormatError, load, load_with_metadata, validate
from msa_jax.data.split import Split

L, TA, DA, TV, DV, DT = 8, 6, 3, 5, 4, 7


def _raw_split(seed: int, n: int, *, aligned: bool = False, sims: bool = False) -> dict:
  """A split dict shaped like a real MMSA file: float text_bert, -inf audio, list lengths."""
  rng = np.random.default_rng(seed)
  ta, tv = (L, L) if aligned else (TA, TV)
  text_len = rng.integers(3, L + 1, size=n)
  text_bert = np.zeros((n, 3, L), dtype=np.float64)
  for i, k in enumerate(text_len):
    text_bert[i, 0, :k] = [101, *rng.integers(1000, 5000, size=k - 2), 102]
    text_bert[i, 1, :k] = 1
  audio = rng.normal(size=(n, ta, DA)).astype(np.float32)
  audio[0, 1, :] = -np.inf
  audio[n - 1, 0, 2] = -np.inf
  vision = rng.normal(size=(n, tv, DV)).astype(np.float32)
  bound = 1.0 if sims else 3.0
  labels = np.round(rng.uniform(-bound, bound, size=n) * 5) / 5
  raw = {
    "text_bert": text_bert,
    "text": rng.normal(size=(n, L, DT)).astype(np.float32),
    "audio": audio,
    "vision": vision,
    "regression_labels": labels.astype(np.float32),
    "classification_labels": (labels > 0).astype(np.float32),
    "id": np.array([f"vid{i}$_${i % 3}" for i in range(n)], dtype=object),
    "raw_text": np.array([f"words of sample {i}" for i in range(n)], dtype=object),
    "annotations": np.array(["Positive"] * n, dtype=object),
  }
  if not aligned:
    raw["audio_lengths"] = [int(x) for x in rng.integers(1, ta + 1, size=n)]
    raw["vision_lengths"] = [int(x) for x in rng.integers(1, tv + 1, size=n)]
  if sims:
    for m in "TAV":
      raw[f"regression_labels_{m}"] = np.round(rng.uniform(-1, 1, size=n), 1)
  return raw


def _raw_file(aligned: bool = False, sims: bool = False) -> dict:
  return {
    name: _raw_split(seed, n, aligned=aligned, sims=sims)
    for seed, (name, n) in enumerate([("train", 12), ("valid", 5), ("test", 6)])
  }


def _write(path: Path, obj, protocol: int = 4) -> Path:
  with open(path, "wb") as f:
    pickle.dump(obj, f, protocol=protocol)
  return path


def _assert_matches(split: Split, raw: dict, aligned: bool = False) -> None:
  """Compares a loaded Split to an independent numpy conversion of the raw dict."""
  n = len(raw["regression_labels"])
  assert split.text_bert.dtype == np.int32
  np.testing.assert_array_equal(split.text_bert, raw["text_bert"].astype(np.int64))
  for key in ("audio", "vision", "text"):
    got = getattr(split, key)
    assert got.dtype == np.float32
    want = np.where(np.isinf(raw[key]), 0.0, raw[key]).astype(np.float32)
    np.testing.assert_array_equal(got, want)
  for key in ("audio_lengths", "vision_lengths"):
    got = getattr(split, key)
    assert got.dtype == np.int32 and got.shape == (n,)
    want = np.full(n, raw[key.split("_")[0]].shape[1]) if aligned else np.array(raw[key])
    np.testing.assert_array_equal(got, want)
  assert split.labels.dtype == np.float32
  np.testing.assert_array_equal(split.labels, raw["regression_labels"])
  assert list(split.ids) == list(raw["id"])
  assert list(split.raw_text) == list(raw["raw_text"])
  assert len(split) == n


def test_unaligned_round_trip(tmp_path):
  raw = _raw_file()
  path = _write(tmp_path / "unaligned_50.pkl", raw)
  splits = load(path, "mosi")
  assert set(splits) == {"train", "valid", "test"}
  for name in splits:
    _assert_matches(splits[name], raw[name])
    assert splits[name].labels_T is None
  assert splits["train"].audio_shape == (TA, DA) and splits["train"].vision_shape == (TV, DV)
  assert splits["train"].text_len == L


def test_aligned_round_trip_with_ood_splits_and_metadata(tmp_path):
  raw = _raw_file(aligned=True)
  raw["ood_text"] = _raw_split(7, 4, aligned=True)
  raw["ood_all"] = _raw_split(8, 3, aligned=True)
  raw["metadata"] = {"benchmark": "synthetic-v1", "seed": 3, "knobs": {"cue": 0.5}}
  raw["unrelated"] = [1, 2, 3]
  path = _write(tmp_path / "aligned_50.pkl", raw)
  splits, metadata = load_with_metadata(path)
  assert set(splits) == {"train", "valid", "test", "ood_text", "ood_all"}
  assert metadata == {"benchmark": "synthetic-v1", "seed": 3, "knobs": {"cue": 0.5}}
  for name in splits:
    _assert_matches(splits[name], raw[name], aligned=True)
  assert set(load(path)) == set(splits)
  _, empty = load_with_metadata(_write(tmp_path / "plain.pkl", _raw_file()))
  assert empty == {}


def test_gear_directory_layout(tmp_path):
  files = {
    "train.pkl": 0,
    "valid.pkl": 1,
    "test_iid.pkl": 2,
    "test_nn_text.pkl": 3,
    "test_nn_audio.pkl": 4,
    "test_nn_vision.pkl": 5,
    "test_nn_tav.pkl": 6,
  }
  raws = {f: _raw_split(seed, 4 + seed) for f, seed in files.items()}
  for f, raw in raws.items():
    _write(tmp_path / f, raw)
  splits, metadata = load_with_metadata(tmp_path, "mosei")
  expected = {
    "train": "train.pkl",
    "valid": "valid.pkl",
    "test": "test_iid.pkl",
    "ood_text": "test_nn_text.pkl",
    "ood_audio": "test_nn_audio.pkl",
    "ood_vision": "test_nn_vision.pkl",
    "ood_all": "test_nn_tav.pkl",
  }
  assert set(splits) == set(expected) and metadata == {}
  for name, f in expected.items():
    _assert_matches(splits[name], raws[f])


def test_gear_directory_without_ood_files(tmp_path):
  for seed, f in enumerate(["train.pkl", "valid.pkl", "test_iid.pkl"]):
    _write(tmp_path / f, _raw_split(seed, 4))
  assert set(load(tmp_path)) == {"train", "valid", "test"}


def test_gear_directory_missing_required_file(tmp_path):
  for seed, f in enumerate(["train.pkl", "test_iid.pkl"]):
    _write(tmp_path / f, _raw_split(seed, 4))
  with pytest.raises(DataFormatError, match=r"valid\.pkl.*split 'valid'"):
    load(tmp_path)


def test_infinities_become_zero_and_are_counted_per_modality(tmp_path):
  raw = _raw_file()
  raw["train"]["vision"][2, 3, 1] = -np.inf
  raw["train"]["vision"][3, 0, 0] = np.inf
  raw["train"]["audio"] = raw["train"]["audio"].astype(np.float64)
  splits = load(_write(tmp_path / "f.pkl", raw))
  train = splits["train"]
  assert np.isfinite(train.audio).all() and np.isfinite(train.vision).all()
  assert train.audio.dtype == np.float32
  np.testing.assert_array_equal(train.audio[0, 1], np.zeros(DA, np.float32))
  assert (
    train.audio[-1, 0, 2] == 0.0 and train.vision[2, 3, 1] == 0.0 and train.vision[3, 0, 0] == 0.0
  )
  finite = np.isfinite(raw["train"]["audio"])
  np.testing.assert_array_equal(
    train.audio[finite], raw["train"]["audio"][finite].astype(np.float32)
  )


def test_float32_features_are_cleaned_in_place_and_read_only_ones_copied():
  where = validate.Where("f.pkl", "train")
  # Rows of 2**21 + 1 values force one row per chunk, so chunk offsets are exercised.
  audio = np.ones((3, 1, (1 << 21) + 1), dtype=np.float32)
  audio[1, 0, 5] = -np.inf
  audio[2, 0, 7] = np.inf
  out = validate.float_features(audio, where, "audio", (3, None, None), "(N, Ta, Da) audio")
  assert out is audio
  assert audio[1, 0, 5] == 0.0 and audio[2, 0, 7] == 0.0 and audio.sum() == audio.size - 2
  audio[2, 0, 9] = np.nan
  with pytest.raises(DataFormatError, match=r"NaN at sample 2, index \(0, 9\)"):
    validate.float_features(audio, where, "audio", (3, None, None), "(N, Ta, Da) audio")
  frozen = np.full((2, 2, 2), -np.inf, dtype=np.float32)
  frozen.flags.writeable = False
  out = validate.float_features(frozen, where, "vision", (2, None, None), "(N, Tv, Dv) vision")
  assert out is not frozen and np.isinf(frozen).all() and not out.any()


def test_sims_unimodal_labels_and_vocab(tmp_path):
  raw = _raw_file(sims=True)
  path = _write(tmp_path / "unaligned_39.pkl", raw)
  splits = load(path, "sims", vocab_size=30522)
  for m in "TAV":
    np.testing.assert_array_equal(
      getattr(splits["valid"], f"labels_{m}"),
      raw["valid"][f"regression_labels_{m}"].astype(np.float32),
    )
  raw["train"]["text_bert"][1, 0, 1] = 25000.0
  path = _write(tmp_path / "unaligned_39.pkl", raw)
  with pytest.raises(DataFormatError, match=r"\[0, 21128\), got 25000 at sample 1, position 1"):
    load(path, "sims")
  assert load(path, "sims", vocab_size=30522)["train"].text_bert[1, 0, 1] == 25000


def test_label_range_depends_on_dataset(tmp_path):
  raw = _raw_file(sims=True)
  raw["valid"]["regression_labels"][2] = 1.5
  path = _write(tmp_path / "f.pkl", raw)
  assert load(path)["valid"].labels[2] == 1.5
  assert load(path, "MOSI")["valid"].labels[2] == 1.5
  with pytest.raises(
    DataFormatError, match=r"split 'valid', key 'regression_labels'.*\[-1, 1\], got 1.5"
  ):
    load(path, "sims", vocab_size=30522)
  raw["valid"]["regression_labels"][2] = -3.25
  with pytest.raises(DataFormatError, match=r"\[-3, 3\], got -3.25 at sample 2"):
    load(_write(tmp_path / "f.pkl", raw))


def test_unknown_dataset_and_bad_vocab_size(tmp_path):
  path = _write(tmp_path / "f.pkl", _raw_file())
  with pytest.raises(ValueError, match="unknown dataset 'imdb'"):
    load(path, "imdb")
  with pytest.raises(ValueError, match="vocab_size"):
    load(path, vocab_size=0)


def test_other_pickle_protocols_and_numpy1_module_names(tmp_path):
  raw = _raw_file()
  for protocol in (2, 3, 5):
    splits = load(_write(tmp_path / f"p{protocol}.pkl", raw, protocol=protocol))
    _assert_matches(splits["test"], raw["test"])
  data = pickle.dumps(raw, protocol=2).replace(b"numpy._core.", b"numpy.core.")
  assert b"numpy.core.multiarray\n_reconstruct" in data and b"numpy._core" not in data
  (tmp_path / "np1.pkl").write_bytes(data)
  _assert_matches(load(tmp_path / "np1.pkl")["train"], raw["train"])


def test_lists_and_float_lengths_are_accepted(tmp_path):
  raw = _raw_file()
  raw["train"]["regression_labels"] = [float(x) for x in raw["train"]["regression_labels"]]
  raw["train"]["vision_lengths"] = np.array(raw["train"]["vision_lengths"], dtype=np.float64)
  raw["train"]["id"] = [str(x) for x in raw["train"]["id"]]
  train = load(_write(tmp_path / "f.pkl", raw))["train"]
  assert train.vision_lengths.dtype == np.int32 and train.labels.dtype == np.float32
  assert isinstance(train.ids, np.ndarray) and train.ids[0] == "vid0$_$0"


def _set(split: str, key: str, fn):
  def mutate(raw):
    raw[split][key] = fn(raw[split][key])

  return mutate


def _delete(split: str, key: str):
  def mutate(raw):
    del raw[split][key]

  return mutate


def _item(split: str, key: str, index, value):
  def fn(a):
    a = np.array(a, dtype=np.float64 if np.asarray(a).dtype.kind in "iuf" else None)
    a[index] = value
    return a

  return _set(split, key, fn)


ERROR_CASES = {
  "missing_key": (_delete("valid", "audio"), "valid", "audio", "expected key to be present"),
  "missing_labels": (
    _delete("test", "regression_labels"),
    "test",
    "regression_labels",
    "expected key to be present",
  ),
  "wrong_rank": (_set("train", "vision", lambda a: a[:, 0]), "train", "vision", "expected rank 3"),
  "text_bert_rows": (
    _set("train", "text_bert", lambda a: a[:, :2]),
    "train",
    "text_bert",
    "size 3 on axis 1",
  ),
  "inconsistent_n": (
    _set("valid", "audio", lambda a: a[:-1]),
    "valid",
    "audio",
    "expected N=5 samples",
  ),
  "inconsistent_n_lengths": (
    _set("train", "audio_lengths", lambda a: a[:-2]),
    "train",
    "audio_lengths",
    "expected N=12",
  ),
  "inconsistent_n_ids": (_set("test", "id", lambda a: a[1:]), "test", "id", "expected N=6"),
  "text_features_len": (
    _set("train", "text", lambda a: a[:, :-1]),
    "train",
    "text",
    "size 8 on axis 1",
  ),
  "length_zero": (
    _item("train", "audio_lengths", 4, 0),
    "train",
    "audio_lengths",
    "in [1, 6], got 0 at sample 4",
  ),
  "length_too_long": (
    _item("valid", "vision_lengths", 1, TV + 1),
    "valid",
    "vision_lengths",
    "in [1, 5], got 6 at sample 1",
  ),
  "length_fraction": (
    _item("valid", "vision_lengths", 2, 2.5),
    "valid",
    "vision_lengths",
    "got 2.5 at sample 2",
  ),
  "labels_nan": (
    _item("test", "regression_labels", 3, np.nan),
    "test",
    "regression_labels",
    "got nan at sample 3",
  ),
  "labels_range": (
    _item("train", "regression_labels", 0, 3.5),
    "train",
    "regression_labels",
    "[-3, 3], got 3.5 at sample 0",
  ),
  "labels_rank": (
    _set("train", "regression_labels", lambda a: np.stack([a, a], 1)),
    "train",
    "regression_labels",
    "expected rank 1",
  ),
  "nan_audio": (
    _item("valid", "audio", (2, 1, 0), np.nan),
    "valid",
    "audio",
    "NaN at sample 2, index (1, 0)",
  ),
  "nan_vision": (_item("train", "vision", (7, 0, 3), np.nan), "train", "vision", "NaN at sample 7"),
  "id_out_of_vocab": (
    _item("train", "text_bert", (5, 0, 1), 30522),
    "train",
    "text_bert",
    "token ids (row 0) to be integers in [0, 30522), got 30522 at sample 5",
  ),
  "id_negative": (
    _item("test", "text_bert", (0, 0, 2), -1),
    "test",
    "text_bert",
    "got -1 at sample 0, position 2",
  ),
  "id_fraction": (
    _item("valid", "text_bert", (1, 0, 1), 101.5),
    "valid",
    "text_bert",
    "got 101.5 at sample 1, position 1",
  ),
  "id_nan": (_item("valid", "text_bert", (1, 0, 1), np.nan), "valid", "text_bert", "got nan"),
  "mask_value": (
    _item("train", "text_bert", (2, 1, 0), 2),
    "train",
    "text_bert",
    "attention mask (row 1) to be 0 or 1, got 2 at sample 2, position 0",
  ),
  "segment_value": (
    _item("train", "text_bert", (2, 2, 0), 3),
    "train",
    "text_bert",
    "segment ids (row 2) to be 0 or 1, got 3 at sample 2, position 0",
  ),
  "unimodal_labels": (
    lambda raw: raw["train"].update(regression_labels_A=np.zeros(11, np.float32)),
    "train",
    "regression_labels_A",
    "expected N=12",
  ),
  "features_not_numeric": (
    _set("test", "vision", lambda a: a.astype(str)),
    "test",
    "vision",
    "expected a numeric array",
  ),
  "cue_signs_value": (
    lambda raw: raw["train"].update(cue_signs=np.ones((12, 3), np.int8) * [1, 1, 0]),
    "train",
    "cue_signs",
    "expected cue signs -1 or +1, got 0 at sample 0, column 2",
  ),
  "cue_signs_shape": (
    lambda raw: raw["valid"].update(cue_signs=np.ones((5, 2), np.int8)),
    "valid",
    "cue_signs",
    "(N, 3) cue_signs with size 3 on axis 1",
  ),
  "cross_split_audio": (
    _set("valid", "audio", lambda a: a[:, :, :2]),
    "valid",
    "audio",
    "expected (Ta, Da) = (6, 3) as in split 'train', got (6, 2)",
  ),
  "cross_split_text_dim": (
    _set("ood_text", "text", lambda a: a[:, :, :5]),
    "ood_text",
    "text",
    "expected Dt = 7 as in split 'train', got 5",
  ),
  "cross_split_text_len": (
    lambda raw: raw["test"].update(
      text_bert=raw["test"]["text_bert"][:, :, :-1], text=raw["test"]["text"][:, :-1]
    ),
    "test",
    "text_bert",
    "expected L = 8 as in split 'train', got 7",
  ),
}


@pytest.mark.parametrize("case", sorted(ERROR_CASES))
def test_validation_errors_name_file_split_and_key(tmp_path, case):
  mutate, split, key, fragment = ERROR_CASES[case]
  raw = _raw_file()
  raw["ood_text"] = _raw_split(9, 4)
  mutate(raw)
  path = _write(tmp_path / f"bad_{case}.pkl", raw)
  with pytest.raises(DataFormatError) as info:
    load(path, "mosi")
  message = str(info.value)
  assert "\n" not in message
  assert str(path) in message
  assert f"split '{split}'" in message and f"key '{key}'" in message
  assert fragment in message


def test_missing_split(tmp_path):
  raw = _raw_file()
  del raw["test"]
  path = _write(tmp_path / "nosplit.pkl", raw)
  with pytest.raises(DataFormatError, match=r"nosplit\.pkl: split 'test': missing"):
    load(path)


def test_split_not_a_dict_and_top_level_not_a_dict(tmp_path):
  raw = _raw_file()
  raw["valid"] = [1, 2]
  with pytest.raises(
    DataFormatError, match=r"f\.pkl: split 'valid': expected a dict of arrays, got list"
  ):
    load(_write(tmp_path / "f.pkl", raw))
  with pytest.raises(DataFormatError, match=r"g\.pkl: expected a dict of splits"):
    load(_write(tmp_path / "g.pkl", [raw["train"]]))


def test_path_not_found(tmp_path):
  with pytest.raises(DataFormatError, match=r"nowhere\.pkl: not found"):
    load(tmp_path / "nowhere.pkl")


def test_not_a_pickle_and_empty_file(tmp_path):
  bad = tmp_path / "notes.pkl"
  bad.write_text("this is not a pickle\n")
  with pytest.raises(DataFormatError, match=r"notes\.pkl: not a valid pickle"):
    load(bad)
  empty = tmp_path / "empty.pkl"
  empty.write_bytes(b"")
  with pytest.raises(DataFormatError, match=r"empty\.pkl: file is truncated"):
    load(empty)


@pytest.mark.parametrize("fraction", [0.5, 0.9, 0.01])
def test_truncated_file(tmp_path, fraction):
  data = pickle.dumps(_raw_file(), protocol=4)
  path = tmp_path / "cut.pkl"
  path.write_bytes(data[: int(len(data) * fraction)])
  with pytest.raises(DataFormatError, match=r"cut\.pkl: file is truncated") as info:
    load(path)
  assert "\n" not in str(info.value)


class _OpenFile:
  """Unpickling this calls open(target, 'w'), which would create the file."""

  def __init__(self, target: str):
    self.target = target

  def __reduce__(self):
    return (open, (self.target, "w"))


class _System:
  """Unpickling this runs a shell command that would create the file."""

  def __init__(self, target: str):
    self.target = target

  def __reduce__(self):
    return (os.system, (f"touch {self.target}",))


class _Eval:
  def __init__(self, target: str):
    self.target = target

  def __reduce__(self):
    return (eval, (f"open({self.target!r}, 'w')",))


@pytest.mark.parametrize("where", ["top", "in_split", "in_object_array", "in_metadata"])
@pytest.mark.parametrize(
  "payload,name", [(_OpenFile, "open"), (_System, "system"), (_Eval, "eval")]
)
def test_forbidden_global_is_refused_before_it_runs(tmp_path, payload, name, where):
  target = tmp_path / "pwned.txt"
  evil = payload(str(target))
  raw = _raw_file()
  if where == "top":
    obj = evil
  elif where == "in_split":
    raw["train"]["audio_lengths"] = evil
    obj = raw
  elif where == "in_object_array":
    raw["valid"]["id"] = np.array([evil] * 5, dtype=object)
    obj = raw
  else:
    raw["metadata"] = {"note": evil}
    obj = raw
  path = _write(tmp_path / "evil.pkl", obj)
  with pytest.raises(DataFormatError) as info:
    load(path)
  message = str(info.value)
  assert str(path) in message and "refused to load global" in message
  assert f".{name}'" in message
  assert not target.exists()


def test_forbidden_numpy_and_builtin_globals(tmp_path):
  # Plausible-looking names that are still not data: numpy.load and builtins.getattr.
  class _NpLoad:
    def __reduce__(self):
      return (np.load, ("x.npy",))

  class _GetAttr:
    def __reduce__(self):
      return (getattr, (1, "real"))

  for i, obj in enumerate([_NpLoad(), _GetAttr()]):
    path = _write(tmp_path / f"g{i}.pkl", {"train": obj})
    with pytest.raises(
      DataFormatError, match="refused to load global '(numpy.*load|builtins.getattr)'"
    ):
      load(path)


@pytest.mark.parametrize("payload", [_OpenFile, _System, _Eval])
def test_payloads_do_create_the_file_with_a_plain_unpickler(tmp_path, payload):
  """Control for the test above: the same payloads do run under pickle.loads."""
  target = tmp_path / "created.txt"
  result = pickle.loads(pickle.dumps(payload(str(target))))
  if hasattr(result, "close"):
    result.close()
  assert target.exists()
