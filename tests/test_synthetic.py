"""Tests of the synthetic benchmark generator (docs/methods.md §7, §1): format, determinism, structure."""

import dataclasses
import pathlib
import pickle

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from msa_jax.data import synthetic
from msa_jax.data.split import IID_SPLITS, OOD_SPLITS
from msa_jax.text import BERT_UNCASED_VOCAB_SIZE, load_vocab

ALL_SPLITS = IID_SPLITS + OOD_SPLITS
SHAPES = {  # preset: (L, Ta, Da, Tv, Dv, n_train, n_valid, n_test, label_max)
    "mosi": (50, 375, 5, 500, 20, 1284, 229, 686, 3.0),
    "mosei": (50, 500, 74, 500, 35, 16326, 1871, 4659, 3.0),
    "sims": (39, 400, 33, 55, 709, 1368, 456, 457, 1.0),
}
SCALES = {"mosi": 1.0, "mosei": 0.02, "sims": 0.25}


@pytest.fixture(scope="module")
def mosi():
  return synthetic.generate("mosi", seed=0)


@pytest.fixture(scope="module")
def small():
  return {p: synthetic.generate(p, seed=1, scale=SCALES[p]) for p in ("mosei", "sims")}


def _preset_data(preset, mosi, small):
  return mosi if preset == "mosi" else small[preset]


def _vader():
  """word -> valence, read straight from the lexicon file (independent of the generator)."""
  path = pathlib.Path(synthetic.vader_lexicon_path())
  out = {}
  for line in path.read_text(encoding="utf-8").splitlines():
    parts = line.split("\t")
    out[parts[0]] = float(parts[1])
  return out


# ------------------------------------------------------------------------------------------------
# Format (docs/methods.md §1).


@pytest.mark.parametrize("preset", sorted(SHAPES))
def test_shapes_sizes_dtypes(preset, mosi, small):
  data = _preset_data(preset, mosi, small)
  seq, ta, da, tv, dv, n_train, n_valid, n_test, _ = SHAPES[preset]
  scale = SCALES[preset]
  want_n = {"train": n_train, "valid": n_valid, "test": n_test}
  want_n = {k: max(4, round(v * scale)) for k, v in want_n.items()}
  want_n.update({k: want_n["test"] for k in OOD_SPLITS})
  assert set(data) == set(ALL_SPLITS) | {"metadata"}
  for name in ALL_SPLITS:
    split, n = data[name], want_n[name]
    keys = {"text_bert", "audio", "vision", "audio_lengths", "vision_lengths",
            "regression_labels", "raw_text", "id"}
    if preset == "sims":
      keys |= {"regression_labels_T", "regression_labels_A", "regression_labels_V"}
    assert set(split) == keys, name
    assert split["text_bert"].shape == (n, 3, seq) and split["text_bert"].dtype == np.float32
    assert split["audio"].shape == (n, ta, da) and split["audio"].dtype == np.float32
    assert split["vision"].shape == (n, tv, dv) and split["vision"].dtype == np.float32
    for key in ("audio_lengths", "vision_lengths"):
      assert split[key].shape == (n,) and split[key].dtype.kind == "i"
    for key in keys:
      if key.startswith("regression_labels"):
        assert split[key].shape == (n,) and split[key].dtype == np.float32
    for key in ("raw_text", "id"):
      assert split[key].shape == (n,) and split[key].dtype == object
      assert all(isinstance(s, str) for s in split[key])
  ids = np.concatenate([data[s]["id"] for s in IID_SPLITS])
  assert list(ids) == [f"synth$_${k}" for k in range(len(ids))]
  for name in OOD_SPLITS:
    assert list(data[name]["id"]) == list(data["test"]["id"])


@pytest.mark.parametrize("preset", sorted(SHAPES))
def test_labels_range_granularity_and_zeros(preset, mosi, small):
  data = _preset_data(preset, mosi, small)
  label_max = SHAPES[preset][-1]
  step = {"mosi": 1 / 5, "mosei": 1 / 3, "sims": 1 / 5}[preset]
  keys = ["regression_labels"] + (["regression_labels_T", "regression_labels_A",
                                   "regression_labels_V"] if preset == "sims" else [])
  for name in IID_SPLITS:
    for key in keys:
      y = data[name][key].astype(np.float64)
      assert np.all(np.abs(y) <= label_max)
      units = y / step
      np.testing.assert_allclose(units, np.rint(units), atol=1e-4)
  y = np.concatenate([data[s]["regression_labels"] for s in IID_SPLITS])
  assert 0.45 < np.mean(y > 0) < 0.65
  assert np.mean(y == 0) > 0.02
  assert np.unique(y).size >= 11
  if preset == "mosi":
    assert 10 <= np.sum(data["test"]["regression_labels"] == 0) <= 100
    assert np.abs(y).max() == 3.0


@pytest.mark.parametrize("preset", sorted(SHAPES))
def test_text_bert_layout(preset, mosi, small):
  data = _preset_data(preset, mosi, small)
  vocab = load_vocab()
  for name in ALL_SPLITS:
    tb = data[name]["text_bert"]
    ids, mask, seg = tb[:, 0], tb[:, 1], tb[:, 2]
    assert np.all(ids == np.floor(ids)) and ids.min() >= 0
    assert ids.max() < BERT_UNCASED_VOCAB_SIZE
    n_valid = mask.sum(axis=1).astype(int)
    pos = np.arange(tb.shape[2])[None, :]
    np.testing.assert_array_equal(mask, (pos < n_valid[:, None]).astype(np.float32))
    assert np.all(seg == 0)
    rows = np.arange(tb.shape[0])
    assert np.all(ids[:, 0] == synthetic.CLS_ID)
    assert np.all(ids[rows, n_valid - 1] == synthetic.SEP_ID)
    assert np.all(ids[pos >= n_valid[:, None]] == synthetic.PAD_ID)
    inner = ids[(pos > 0) & (pos < n_valid[:, None] - 1)]
    assert not np.isin(inner, [0, 100, 101, 102, 103]).any()
    assert n_valid.min() >= 3 and np.unique(n_valid).size > 10
    for i in range(0, tb.shape[0], 37):
      words = [vocab[int(t)] for t in ids[i, 1:n_valid[i] - 1]]
      assert data[name]["raw_text"][i] == " ".join(words)


@pytest.mark.parametrize("preset", sorted(SHAPES))
def test_frames_lengths_padding_and_neg_inf(preset, mosi, small):
  data = _preset_data(preset, mosi, small)
  for name in ALL_SPLITS:
    for m in ("audio", "vision"):
      x, lengths = data[name][m], data[name][f"{m}_lengths"]
      t = x.shape[1]
      assert lengths.min() >= 1 and lengths.max() <= t
      pad = np.arange(t)[None, :] >= lengths[:, None]
      assert np.all(x[pad] == 0)
      assert not np.isnan(x).any()
      last = x[np.arange(x.shape[0]), lengths - 1]
      assert np.all(np.any(last != 0, axis=-1))
    assert np.isfinite(data[name]["vision"]).all()
  lengths = data["train"]["audio_lengths"]
  t = data["train"]["audio"].shape[1]
  assert lengths.min() < 0.3 * t and lengths.max() > 0.8 * t and np.unique(lengths).size > 10
  audio = data["train"]["audio"]
  neg_inf = np.isneginf(audio)
  assert neg_inf.any() and not np.isposinf(audio).any()
  assert not (np.isinf(audio) & ~neg_inf).any()
  dims = data["metadata"]["structure"]["audio"]["neg_inf_dims"]
  assert set(np.nonzero(neg_inf)[2]) <= set(dims)


def test_determinism():
  a = synthetic.generate("sims", seed=3, scale=0.05)
  b = synthetic.generate("sims", seed=3, scale=0.05)
  c = synthetic.generate("sims", seed=4, scale=0.05)
  for name in ALL_SPLITS:
    for key, value in a[name].items():
      if value.dtype == object:
        assert list(value) == list(b[name][key])
      else:
        assert value.tobytes() == b[name][key].tobytes(), (name, key)
  assert a["metadata"] == b["metadata"]
  assert a["train"]["audio"].tobytes() != c["train"]["audio"].tobytes()
  assert list(a["train"]["raw_text"]) != list(c["train"]["raw_text"])


def _assert_plain(obj, where="metadata"):
  if isinstance(obj, dict):
    for k, v in obj.items():
      assert isinstance(k, str), where
      _assert_plain(v, f"{where}.{k}")
  elif isinstance(obj, list):
    for i, v in enumerate(obj):
      _assert_plain(v, f"{where}[{i}]")
  else:
    assert type(obj) in (str, int, float, bool), (where, type(obj))


def test_metadata_plain_and_complete(mosi):
  meta = mosi["metadata"]
  _assert_plain(meta)
  assert meta["benchmark_version"] == synthetic.BENCHMARK_VERSION
  assert (meta["preset"], meta["seed"], meta["scale"]) == ("mosi", 0, 1.0)
  assert meta["config"] == dataclasses.asdict(synthetic.PRESETS["mosi"])
  assert meta["sizes"] == {"train": 1284, "valid": 229, "test": 686, "ood_text": 686,
                           "ood_audio": 686, "ood_vision": 686, "ood_all": 686}
  for m, dim in (("audio", 5), ("vision", 20)):
    st = meta["structure"][m]
    sent, cue = set(st["sentiment_dims"]), set(st["cue_dims"])
    assert sent and cue and not sent & cue and max(sent | cue) < dim
    assert len(st["sentiment_loadings"]) == len(sent) and len(st["cue_loadings"]) == len(cue)
  text = meta["structure"]["text"]
  cue_ids = set(text["positive_cue_token_ids"]) | set(text["negative_cue_token_ids"])
  sent_ids = set(text["positive_sentiment_token_ids"]) | set(text["negative_sentiment_token_ids"])
  assert not cue_ids & sent_ids
  assert meta["splits"]["ood_all"]["cue_reversed"] == ["text", "audio", "vision"]
  agreement = meta["cue_agreement"]
  assert agreement["ood_audio"]["audio"] < 0.2 and agreement["train"]["audio"] > 0.8


def test_sentiment_words_follow_vader_and_filler_is_neutral(mosi):
  """Sentiment tokens carry VADER valence of the label's sign; every other word is outside VADER."""
  vader = _vader()
  vocab = load_vocab()
  text = mosi["metadata"]["structure"]["text"]
  for sign, key in ((1, "positive_sentiment_words"), (-1, "negative_sentiment_words")):
    assert len(text[key]) == synthetic.PRESETS["mosi"].sentiment_words_per_polarity
    assert all(sign * vader[w] >= 1.0 for w in text[key])
  sent_ids = set(text["positive_sentiment_token_ids"]) | set(text["negative_sentiment_token_ids"])
  split = mosi["train"]
  y = split["regression_labels"]
  mean_valence, counts = [], []
  for i in range(len(y)):
    words = split["raw_text"][i].split()
    ids = split["text_bert"][i, 0, 1:len(words) + 1].astype(int)
    sentiment = [vader[w] for w, t in zip(words, ids) if t in sent_ids]
    assert all(w not in vader for w, t in zip(words, ids) if t not in sent_ids), words
    mean_valence.append(np.mean(sentiment) if sentiment else 0.0)
    counts.append(len(sentiment))
  mean_valence, counts = np.array(mean_valence), np.array(counts)
  nonzero = y != 0
  assert np.mean(np.sign(mean_valence[nonzero]) == np.sign(y[nonzero])) > 0.85
  assert np.corrcoef(np.abs(y), counts)[0, 1] > 0.3
  assert np.corrcoef(np.abs(y[nonzero]), np.abs(mean_valence[nonzero]))[0, 1] > 0.3


def test_ood_splits_are_test_with_cue_reversed(mosi):
  test, meta = mosi["test"], mosi["metadata"]["structure"]
  text = meta["text"]
  cue_ids = np.array(text["positive_cue_token_ids"] + text["negative_cue_token_ids"])
  partner = dict(zip(text["positive_cue_token_ids"], text["negative_cue_token_ids"]))
  partner.update({b: a for a, b in partner.items()})
  for name in OOD_SPLITS:
    ood = mosi[name]
    reversed_ = mosi["metadata"]["splits"][name]["cue_reversed"]
    np.testing.assert_array_equal(ood["regression_labels"], test["regression_labels"])
    ids, base = ood["text_bert"][:, 0].astype(int), test["text_bert"][:, 0].astype(int)
    if "text" in reversed_:
      is_cue = np.isin(base, cue_ids)
      assert is_cue.any(axis=1).all()
      np.testing.assert_array_equal(ids[~is_cue], base[~is_cue])
      np.testing.assert_array_equal(ids[is_cue], [partner[t] for t in base[is_cue]])
    else:
      np.testing.assert_array_equal(ids, base)
    for m in ("audio", "vision"):
      cue_dims = meta[m]["cue_dims"]
      other = [d for d in range(test[m].shape[2]) if d not in cue_dims]
      np.testing.assert_array_equal(ood[m][:, :, other], test[m][:, :, other])
      same = np.array_equal(ood[m][:, :, cue_dims], test[m][:, :, cue_dims])
      assert same == (m not in reversed_), (name, m)


# ------------------------------------------------------------------------------------------------
# Planted structure: linear probes (scikit-learn) on each modality's cue and sentiment parts.


def _features(data, split, modality, part):
  """Probe inputs: bag of cue/sentiment tokens (text) or the part's dims mean-pooled over valid
  frames with -inf read as 0 (audio/vision)."""
  st = data["metadata"]["structure"][modality]
  s = data[split]
  if modality == "text":
    ids = st[f"positive_{part}_token_ids"] + st[f"negative_{part}_token_ids"]
    tokens = s["text_bert"][:, 0, :].astype(np.int64)
    return np.stack([(tokens == i).sum(axis=1) for i in ids], axis=1).astype(np.float64)
  x = s[modality][:, :, st[f"{part}_dims"]].astype(np.float64)
  x[~np.isfinite(x)] = 0.0
  return x.sum(axis=1) / s[f"{modality}_lengths"][:, None]


def _probe(data, modality, part):
  """Accuracy of a logistic regression fit on train predicting sign(label), per split (y != 0)."""
  def xy(split):
    y = data[split]["regression_labels"]
    keep = y != 0
    return _features(data, split, modality, part)[keep], y[keep] > 0
  clf = LogisticRegression(max_iter=2000).fit(*xy("train"))
  return {split: clf.score(*xy(split)) for split in ALL_SPLITS}


@pytest.fixture(scope="module")
def probes(mosi):
  return {(m, p): _probe(mosi, m, p) for m in ("text", "audio", "vision")
          for p in ("cue", "sentiment")}


@pytest.mark.parametrize("modality", ["text", "audio", "vision"])
def test_cue_probe_reverses_on_its_ood_split(modality, probes):
  acc = probes[(modality, "cue")]
  assert acc["train"] > 0.8 and acc["test"] > 0.8
  for split in OOD_SPLITS:
    if split in (f"ood_{modality}", "ood_all"):
      assert acc[split] < 0.5, (split, acc[split])
    else:
      assert acc[split] == acc["test"]


@pytest.mark.parametrize("modality,low,high", [("text", 0.85, 1.0), ("audio", 0.58, 0.8),
                                               ("vision", 0.58, 0.8)])
def test_sentiment_probe_holds_on_every_split(modality, low, high, probes):
  acc = probes[(modality, "sentiment")]
  for split in ("valid",) + ("test",) + OOD_SPLITS:
    assert low < acc[split] < high, (split, acc[split])


def test_text_sentiment_is_strongest(probes):
  text = probes[("text", "sentiment")]["test"]
  for m in ("audio", "vision"):
    assert text > probes[(m, "sentiment")]["test"] + 0.1


# ------------------------------------------------------------------------------------------------
# Files.


def test_write_and_ensure(tmp_path):
  path = tmp_path / "nested" / "dir" / "synthetic_mosi.pkl"
  out = synthetic.ensure_synthetic(path, "mosi", seed=2, scale=0.03)
  assert out == path and path.is_file()
  assert [p.name for p in path.parent.iterdir()] == [path.name]
  with open(path, "rb") as f:
    loaded = pickle.load(f)
  expected = synthetic.generate("mosi", seed=2, scale=0.03)
  assert loaded["metadata"] == expected["metadata"]
  for name in ALL_SPLITS:
    for key, value in expected[name].items():
      np.testing.assert_array_equal(loaded[name][key], value)
  mtime = path.stat().st_mtime_ns
  assert synthetic.ensure_synthetic(path, "mosi", seed=2, scale=0.03) == path
  assert path.stat().st_mtime_ns == mtime


def test_file_loads_through_restricted_loader(tmp_path):
  from msa_jax import data
  path = synthetic.write_synthetic(tmp_path / "s.pkl", "sims", seed=0, scale=0.05)
  splits, meta = data.load_with_metadata(path, vocab_size=BERT_UNCASED_VOCAB_SIZE)
  expected = synthetic.generate("sims", seed=0, scale=0.05)
  assert set(splits) == set(ALL_SPLITS)
  assert meta == expected["metadata"]
  for name in ALL_SPLITS:
    want = expected[name]
    np.testing.assert_array_equal(splits[name].text_bert, want["text_bert"].astype(np.int32))
    np.testing.assert_array_equal(splits[name].audio, np.where(np.isinf(want["audio"]), 0,
                                                               want["audio"]))
    np.testing.assert_array_equal(splits[name].labels_V, want["regression_labels_V"])
  assert set(data.load(path, vocab_size=BERT_UNCASED_VOCAB_SIZE)) == set(ALL_SPLITS)


def test_errors_name_the_bad_value():
  with pytest.raises(ValueError, match="unknown synthetic preset 'mosx'"):
    synthetic.generate("mosx")
  with pytest.raises(ValueError, match="scale must be a positive number, got -1"):
    synthetic.generate("mosi", scale=-1)
  tight = dataclasses.replace(synthetic.PRESETS["mosi"], text_len=12)
  with pytest.raises(ValueError, match="text_len=12 cannot hold"):
    synthetic.generate("mosi", scale=0.05, config=tight)
  crowded = dataclasses.replace(synthetic.PRESETS["mosi"], audio_sentiment_dims=5)
  with pytest.raises(ValueError, match="do not fit a feature dimension of 5"):
    synthetic.generate("mosi", scale=0.05, config=crowded)
