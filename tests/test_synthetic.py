"""Tests of the synthetic benchmark generator (docs/methods.md §7, §1): format, determinism,
structure."""

import dataclasses
import hashlib
import json
import pathlib
import pickle
import subprocess
import sys

import numpy as np
import pytest
from sklearn.linear_model import LinearRegression, LogisticRegression

from msa_jax.data import synthetic
from msa_jax.data.split import IID_SPLITS, OOD_SPLITS, OOD_VALID_SPLITS
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
    keys = {
      "text_bert",
      "audio",
      "vision",
      "audio_lengths",
      "vision_lengths",
      "regression_labels",
      "raw_text",
      "id",
    }
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
  keys = ["regression_labels"] + (
    ["regression_labels_T", "regression_labels_A", "regression_labels_V"]
    if preset == "sims"
    else []
  )
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
      words = [vocab[int(t)] for t in ids[i, 1 : n_valid[i] - 1]]
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
  assert meta["sizes"] == {
    "train": 1284,
    "valid": 229,
    "test": 686,
    "ood_text": 686,
    "ood_audio": 686,
    "ood_vision": 686,
    "ood_all": 686,
  }
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
    ids = split["text_bert"][i, 0, 1 : len(words) + 1].astype(int)
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
  return {
    (m, p): _probe(mosi, m, p) for m in ("text", "audio", "vision") for p in ("cue", "sentiment")
  }


@pytest.mark.parametrize("modality", ["text", "audio", "vision"])
def test_cue_probe_reverses_on_its_ood_split(modality, probes):
  acc = probes[(modality, "cue")]
  assert acc["train"] > 0.8 and acc["test"] > 0.8
  for split in OOD_SPLITS:
    if split in (f"ood_{modality}", "ood_all"):
      assert acc[split] < 0.5, (split, acc[split])
    else:
      assert acc[split] == acc["test"]


@pytest.mark.parametrize(
  "modality,low,high", [("text", 0.85, 1.0), ("audio", 0.58, 0.8), ("vision", 0.58, 0.8)]
)
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
    np.testing.assert_array_equal(
      splits[name].audio, np.where(np.isinf(want["audio"]), 0, want["audio"])
    )
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


# ------------------------------------------------------------------------------------------------
# synth-v1 stays as it was generated before synth-v2 existed.


def _digest(data):
  """sha256 over every split array (name, key, dtype, shape, contents) and the metadata."""
  h = hashlib.sha256()
  for name in sorted(k for k in data if k != "metadata"):
    for key in sorted(data[name]):
      a = data[name][key]
      h.update(f"{name}/{key}/{a.dtype.str}/{a.shape}".encode())
      h.update("\n".join(a).encode() if a.dtype == object else np.ascontiguousarray(a).tobytes())
  h.update(json.dumps(data["metadata"], sort_keys=True).encode())
  return h.hexdigest()


@pytest.mark.parametrize(
  "preset,scale,digest",
  [
    ("mosi_small", 0.25, "e2f21de18c565790ae126262227898f22051117751e8edc532174e6645337132"),
    ("sims", 0.05, "eb1278e07c5dd3ecc25f80642f1df2e7afa80abc8b53ac44e8379b46d6c674d2"),
  ],
)
def test_v1_generates_byte_identically(preset, scale, digest):
  data = synthetic.generate(preset, seed=0, scale=scale)
  assert data["metadata"]["benchmark_version"] == "synth-v1"
  assert _digest(data) == digest
  assert _digest(synthetic.generate(preset, seed=0, scale=scale, version="v1")) == digest


# ------------------------------------------------------------------------------------------------
# synth-v2 (docs/methods.md §7): one shared, label-scaled confound; OOD validation splits.

V2_SPLITS = ALL_SPLITS + OOD_VALID_SPLITS
V2_OOD_BASES = {**{s: "test" for s in OOD_SPLITS}, **{s: "valid" for s in OOD_VALID_SPLITS}}


@pytest.fixture(scope="module")
def v2():
  return synthetic.generate("mosi_small", seed=0, version="v2")


def _aligned(split):
  """(N, 3) bool: the stored cue sign equals the label's sign (zero labels: never aligned)."""
  return split["cue_signs"] == np.sign(split["regression_labels"])[:, None]


def test_v2_splits_and_cue_signs(v2):
  assert set(v2) == set(V2_SPLITS) | {"metadata"}
  for name in V2_SPLITS:
    split = v2[name]
    base = v2[V2_OOD_BASES.get(name, name)]
    assert list(split["id"]) == list(base["id"])
    np.testing.assert_array_equal(split["regression_labels"], base["regression_labels"])
    signs = split["cue_signs"]
    assert signs.shape == (len(split["id"]), 3) and signs.dtype == np.int8
    assert set(np.unique(signs)) <= {-1, 1}
  assert len(v2["ood_valid_all"]["id"]) == len(v2["valid"]["id"]) == 128


@pytest.mark.parametrize("name", IID_SPLITS)
def test_v2_cue_agreement_is_shared_across_modalities(name, v2):
  signs = v2[name]["cue_signs"]
  np.testing.assert_array_equal(signs, np.repeat(signs[:, :1], 3, axis=1))


@pytest.mark.parametrize("preset", ["mosi_small", "mosi"])
def test_v2_aligned_fraction_on_train(preset, v2):
  data = v2 if preset == "mosi_small" else synthetic.generate(preset, seed=0, version="v2")
  train = data["train"]
  nonzero = train["regression_labels"] != 0
  fraction = _aligned(train)[nonzero, 0].mean()
  assert abs(fraction - 0.9) <= 0.02, fraction
  assert data["metadata"]["cue_agreement"]["train"]["audio"] == fraction


@pytest.mark.parametrize("name", OOD_SPLITS + OOD_VALID_SPLITS)
def test_v2_cues_reversed_in_every_ood_split(name, v2):
  """Stored signs, text nouns and audio / vision offsets are reversed exactly in the split's
  modalities; the offset removed is 2 b c (0.1 + |y| / 3) v on the cue dimensions."""
  ood, base = v2[name], v2[V2_OOD_BASES[name]]
  meta = v2["metadata"]
  reversed_ = meta["splits"][name]["cue_reversed"]
  assert meta["splits"][name]["base"] == V2_OOD_BASES[name]
  flip = np.array([-1 if m in reversed_ else 1 for m in ("text", "audio", "vision")])
  np.testing.assert_array_equal(ood["cue_signs"], base["cue_signs"] * flip)
  text = meta["structure"]["text"]
  pos, neg = text["positive_cue_token_ids"], text["negative_cue_token_ids"]
  assert len(pos) == len(neg) == 1
  for split in (base, ood):
    ids = split["text_bert"][:, 0].astype(int)
    want = np.where(split["cue_signs"][:, 0] > 0, pos[0], neg[0])
    has_cue = np.isin(ids, pos + neg)
    assert has_cue.any(axis=1).all()
    assert np.all(ids[has_cue] == np.broadcast_to(want[:, None], ids.shape)[has_cue])
  y = base["regression_labels"].astype(np.float64)
  for m in ("audio", "vision"):
    st = meta["structure"][m]
    cue_dims = st["cue_dims"]
    other = [d for d in range(base[m].shape[2]) if d not in cue_dims]
    np.testing.assert_array_equal(ood[m][:, :, other], base[m][:, :, other])
    valid = np.arange(base[m].shape[1])[None, :] < base[f"{m}_lengths"][:, None]
    column = ("text", "audio", "vision").index(m)
    strength = 3.0 * base["cue_signs"][:, column] * (0.1 + np.abs(y) / 3.0)
    for d, load in zip(cue_dims, st["cue_loadings"]):
      delta = (ood[m][:, :, d] - base[m][:, :, d]).astype(np.float64)
      want = -2.0 * strength[:, None] * load * valid if m in reversed_ else np.zeros_like(delta)
      np.testing.assert_allclose(delta, want, atol=1e-4)


def test_v2_cue_only_linear_probe(v2):
  """A linear regression on the audio / vision cue dimensions alone (frame means) predicts the
  label's sign on IID data and the opposite sign once the cue is reversed in every modality."""

  def xy(split):
    y = v2[split]["regression_labels"]
    keep = y != 0
    x = np.concatenate([_features(v2, split, m, "cue") for m in ("audio", "vision")], axis=1)
    return x[keep], y[keep]

  probe = LinearRegression().fit(*xy("train"))

  def acc2(split):
    x, y = xy(split)
    return np.mean((probe.predict(x) > 0) == (y > 0))

  assert acc2("test") >= 0.85 and acc2("valid") >= 0.85
  assert acc2("ood_all") <= 0.2 and acc2("ood_valid_all") <= 0.2


def test_v2_metadata_lists_every_knob_and_the_version(v2):
  meta = v2["metadata"]
  _assert_plain(meta)
  assert meta["benchmark_version"] == "synth-v2"
  assert (meta["preset"], meta["seed"], meta["scale"]) == ("mosi_small", 0, 1.0)
  preset = synthetic.PRESETS_V2["mosi_small"]
  assert meta["config"] == dataclasses.asdict(preset)
  assert meta["cue_design"] == dataclasses.asdict(synthetic.BENCHMARKS["v2"].design)
  # The frozen knobs of synth-v2.
  assert meta["config"]["cue_agree_prob"] == 0.9
  assert meta["config"]["audio_cue_shift"] == meta["config"]["vision_cue_shift"] == 3.0
  assert meta["cue_design"] == {
    "shared_agreement": True,
    "label_scaled_cue": True,
    "cue_floor": 0.1,
    "cue_sample_noise": 0.1,
    "text_cue_pairs": 1,
    "ood_valid": True,
    "store_cue_signs": True,
  }
  assert meta["structure"]["text"]["positive_cue_words"] == ["kitchen"]
  assert meta["cue_signs"] == {"key": "cue_signs", "columns": ["text", "audio", "vision"]}
  assert set(meta["splits"]) == set(V2_OOD_BASES) and set(meta["sizes"]) == set(V2_SPLITS)
  assert set(meta["cue_agreement"]) == set(V2_SPLITS)
  assert sorted(synthetic.PRESETS_V2) == ["mosi", "mosi_small"]
  for name, cfg in synthetic.PRESETS_V2.items():
    assert cfg == dataclasses.replace(
      synthetic.PRESETS[name], audio_cue_shift=3.0, vision_cue_shift=3.0
    )


def test_v2_cue_dims_carry_little_noise(v2):
  """Per-sample noise on the cue dimensions is 0.1 (0.5 on the others): the spread of a cue
  dimension's offset around b c (0.1 + |y| / 3), read from frame means of long samples."""
  train = v2["train"]
  y = train["regression_labels"].astype(np.float64)
  st = v2["metadata"]["structure"]["vision"]
  strength = 3.0 * train["cue_signs"][:, 2] * (0.1 + np.abs(y) / 3.0)
  lengths = train["vision_lengths"]
  long = lengths >= 24
  assert long.sum() > 20
  for d, load in zip(st["cue_dims"], st["cue_loadings"]):
    mean = train["vision"][:, :, d].sum(axis=1) / lengths
    residual = (mean - strength * load)[long]
    # frame noise 1 over >= 24 frames adds at most ~0.2 std; sample noise 0.5 would give >= 0.5.
    assert np.std(residual) < 0.3, np.std(residual)


def test_v2_file_loads_with_ood_valid_splits_and_cue_signs(tmp_path):
  from msa_jax import data
  from msa_jax.data import ondisk
  from msa_jax.evaluate.ood import ood_evals

  path = synthetic.write_synthetic(
    tmp_path / "v2.pkl", "mosi_small", seed=0, scale=0.25, version="v2"
  )
  expected = synthetic.generate("mosi_small", seed=0, scale=0.25, version="v2")
  converted = ondisk.convert(path, tmp_path / "v2_converted")
  for source in (path, converted):
    splits, meta = data.load_with_metadata(source, vocab_size=BERT_UNCASED_VOCAB_SIZE)
    assert set(splits) == set(V2_SPLITS) and meta == expected["metadata"]
    for name in V2_SPLITS:
      np.testing.assert_array_equal(splits[name].cue_signs, expected[name]["cue_signs"])
      np.testing.assert_array_equal(splits[name].vision, expected[name]["vision"])
    # The OOD validation splits are for selection; the final evaluation stays test + OOD test.
    assert [e.split for e in ood_evals(splits)] == ["test", *OOD_SPLITS]
  v1 = data.load(
    synthetic.write_synthetic(tmp_path / "v1.pkl", "mosi_small", scale=0.1),
    vocab_size=BERT_UNCASED_VOCAB_SIZE,
  )
  assert set(v1) == set(ALL_SPLITS) and all(s.cue_signs is None for s in v1.values())


def test_v2_errors_name_the_bad_value():
  with pytest.raises(
    ValueError,
    match="unknown synthetic preset 'mosei' for synth-v2; expected "
    r"one of \['mosi', 'mosi_small'\]",
  ):
    synthetic.generate("mosei", version="v2")
  with pytest.raises(ValueError, match="unknown synthetic benchmark version 'v3'"):
    synthetic.generate("mosi", version="v3")


def test_make_synthetic_script_writes_the_chosen_version(tmp_path):
  script = pathlib.Path(__file__).resolve().parents[1] / "scripts" / "make_synthetic.py"
  out = tmp_path / "v2.pkl"
  proc = subprocess.run(
    [
      sys.executable,
      str(script),
      "--version",
      "v2",
      "--preset",
      "mosi_small",
      "--scale",
      "0.1",
      "--out",
      str(out),
    ],
    capture_output=True,
    text=True,
    check=False,
  )
  assert proc.returncode == 0, proc.stderr
  assert "synth-v2, preset mosi_small" in proc.stdout
  with open(out, "rb") as f:
    assert pickle.load(f)["metadata"]["benchmark_version"] == "synth-v2"
  proc = subprocess.run(
    [
      sys.executable,
      str(script),
      "--version",
      "v2",
      "--preset",
      "mosei",
      "--out",
      str(tmp_path / "x.pkl"),
    ],
    capture_output=True,
    text=True,
    check=False,
  )
  assert proc.returncode == 2
  assert "--preset mosei is not a preset of synth-v2" in proc.stderr
