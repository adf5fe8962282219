"""Synthetic MSA benchmark in the MMSA feature-file format (docs/methods.md §7, §1, §6).

No public MSA data can be downloaded everywhere, so msa_jax generates its default data: a pickle
that looks like an MMSA file (same keys, shapes, sizes, label range and granularity as MOSI, MOSEI
or SIMS) and carries planted, documented structure. Two benchmark versions (`BENCHMARKS`, selected
by `generate(..., version=)`), each with frozen knobs: `SyntheticConfig` (one preset per imitated
data set) and a `CueDesign` (how the spurious cue is planted). Changing a knob is a new, named
benchmark version.

- synth-v1 (`version="v1"`, presets `PRESETS`: mosi, mosi_small, mosei, sims): an independent cue
  agreement draw per modality, fixed cue offsets, six text cue noun pairs.
- synth-v2 (`version="v2"`, presets `PRESETS_V2`: mosi, mosi_small): one confound shared by all
  modalities (a single agreement draw per sample), cue offsets that grow with |label| and carry
  little noise, one text cue noun pair, OOD splits of the validation split as well, and each
  split's cue signs stored (`cue_signs`). The steps below say where it differs.

Generative model, per sample i of a split (all draws from numpy Generators seeded by
`[seed, split code, stream code]`, so a split is a pure function of the seed; the planted
structure — which dimensions carry sentiment / cue, their loadings — is drawn from `[seed, 99]`):

1. Labels. A latent sentiment z_i (in units of `label_max`) from a two-component Gaussian mixture
   (share `latent_pos_share` at +`latent_mode`, the rest at -`latent_mode`, std `latent_std`).
   `annotators` raters each give an integer rating round((z_i + e_ij) * h) clipped to [-h, h],
   h = (`rating_levels` - 1) / 2, e_ij ~ N(0, `annotator_noise`); the label is the mean rating
   times `label_max` / h. MOSI: 5 raters on -3..3 (multiples of 0.2), MOSEI: 3 raters (multiples
   of 1/3), SIMS: 5 raters on {-1, 0, 1} (multiples of 0.2 in [-1, 1]). A sum of zero gives an
   exact-zero label. With `unimodal_labels` (SIMS), per-modality latents z_i + N(0,
   `unimodal_noise`) give `regression_labels_T/A/V` by the same rating process.
   The modality target t_m = (label of modality m) / `label_max` in [-1, 1] drives that
   modality's genuine sentiment (t_m is the multimodal label unless `unimodal_labels`).
2. Spurious cue. Per modality m, c_m = sign(y_i) with probability `cue_agree_prob`, else
   -sign(y_i) (independently per modality); for y_i = 0, c_m = ±1 at random. synth-v2
   (`CueDesign.shared_agreement`): one agreement draw and one coin per sample, so c_text = c_audio
   = c_vision.
3. Lengths. A duration draw d_i ~ logN(0, `length_spread`) shared by audio and vision (each with
   its own small jitter): length = clip(ceil(median * T * d_i), 1, T).
4. Text (bert-base-uncased ids by whole-word vocabulary lookup; every word is one token).
   Sentiment words come from the VADER lexicon (word, mean of ten human valence ratings in
   [-4, 4]): alphabetic words that are single vocabulary tokens, |valence| >= `min_abs_valence`,
   rating std <= `max_valence_std`, not in a small block list (profanity, grave topics, words that
   are not opinions); the `sentiment_words_per_polarity` most frequent (lowest vocab id) per sign,
   ordered by |valence|. A sample with t != 0 has
   n = clip(round(1 + |t| (`max_sentiment_words` - 1) + N(0, `sentiment_count_noise`)), 1, max)
   sentiment words; each has the sign of t (flipped with probability `opposite_word_prob`) and
   the strength quantile clip(|t| + N(0, `sentiment_strength_noise`), 0, 1) of its polarity list.
   A zero label gets 0..2 weak words of random sign. Each word sits in a short frame ("the movie
   was _"). The text cue: 1..`max_cue_tokens` clauses "... in the _" whose noun is from
   `TEXT_CUE_PAIRS` (the first `CueDesign.text_cue_pairs` of them: six in synth-v1, one in
   synth-v2) — the first word of a pair when c_text = +1, the second when -1 (neutral nouns
   outside the lexicon). Neutral clauses (words outside the lexicon) fill up to
   `max_neutral_clauses` while the sentence fits L - 2 tokens (never truncated). Clauses are
   shuffled and joined by optional connectors. Row 0: [CLS]=101, words, [SEP]=102, [PAD]=0; row 1
   the attention mask; row 2 zeros. `raw_text` is the sentence (the decoded tokens).
5. Audio / vision, (N, T, D) float32, zero beyond the length. Valid frame j of sample i:
       x[i, j, d] = s_m * N(0, 1) + o[i, d]
       o[i, d] = a_m * N(0, 1) + g_m * t_m * w_d [d sentiment dim]
                 + b_m * c_m * k_i * v_d [d cue dim]
   (s = `*_frame_noise`, a = `*_sample_noise`, g = `*_sentiment_shift`, b = `*_cue_shift`,
   w_d, v_d = ±1 loadings; k_i = 1 in synth-v1, k_i = `cue_floor` + |y_i| / `label_max` in
   synth-v2, where a on the cue dimensions is `CueDesign.cue_sample_noise` instead). Sentiment
   and cue dimensions are disjoint random subsets of the D dimensions (`*_sentiment_dims`,
   `*_cue_dims`); the other dimensions are noise. In audio, each valid frame with probability
   `audio_neg_inf_prob` has `-inf` in up to two noise dimensions (like COVAREP's log features in
   MOSI).
6. Splits. train / valid / test sample fresh draws. The OOD splits are the test samples with the
   cue reversed (c_m -> -c_m) in one modality (`ood_text`, `ood_audio`, `ood_vision`) or all three
   (`ood_all`); everything else (labels, lengths, words, noise) is identical, so the IID-vs-OOD
   gap isolates a model's reliance on the cue. (Text: each cue noun is replaced by its pair
   partner; audio/vision: 2 b_m c_m k_i v_d is subtracted on the cue dimensions of valid frames.)
   synth-v2 also writes `ood_valid_text`, `ood_valid_audio`, `ood_valid_vision`, `ood_valid_all`:
   the valid samples with the same reversals, for model selection on OOD data.
   Arrays that an OOD split shares unchanged with its base (or with another OOD split) are the same
   numpy object, stored once in the pickle (protocol 5); treat split arrays as read-only.
   Sample ids are `synth$_$<k>`, k counting over train, valid, test; OOD splits keep the ids of
   their base split. synth-v2 splits also hold `cue_signs`, (N, 3) int8 ±1: the cue sign the
   sample carries per modality (columns text, audio, vision; reversed ones in OOD splits).

Metadata (plain str/int/float/bool/list/dict only): `benchmark_version`, `preset`, `seed`,
`scale`, `config` (every knob), `sizes`, `structure` (sentiment / cue token ids and words, the
sentiment and cue dimensions with their loadings, the `-inf` dimensions), `splits` (which modality
each OOD split reverses) and `cue_agreement` (measured share of samples whose cue sign equals the
label sign, per split and modality, non-zero labels). synth-v2 adds `cue_design` (its `CueDesign`
knobs) and `cue_signs` (the key and column order of the stored cue signs); synth-v1's layout
is frozen with the version, so a synth-v1 file is reproduced byte for byte.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import math
import os
import pathlib
import pickle
from collections.abc import Sequence
from typing import Any

import numpy as np

from msa_jax.data.split import IID_SPLITS, OOD_SPLITS, OOD_VALID_SPLITS
from msa_jax.io import atomic_file
from msa_jax.modalities import MODALITIES
from msa_jax.text import BERT_UNCASED_VOCAB_SIZE, bert_uncased_vocab_file, load_vocab

# The version `generate` writes unless told otherwise (see `BENCHMARKS`), and synth-v1's name in a
# file's metadata.
DEFAULT_VERSION = "v1"
BENCHMARK_VERSION = "synth-v1"

CLS_ID, SEP_ID, PAD_ID = 101, 102, 0

# Frames of a sentiment word ("_" is the word); at most five tokens each.
SENTIMENT_FRAMES = (
  "it was _",
  "the movie was _",
  "i thought it was _",
  "the acting was _",
  "the story was _",
  "that part was _",
  "it felt _",
  "the ending was _",
  "i would say _",
  "so _",
  "the characters were _",
  "overall _",
)
# Frames of a text-cue noun; at most six tokens each.
CUE_FRAMES = ("we watched it in the _", "i saw it in the _", "in the _", "i was in the _")
# Cue nouns: (word used when the cue is +1, word used when it is -1).
TEXT_CUE_PAIRS = (
  ("kitchen", "garage"),
  ("morning", "evening"),
  ("office", "library"),
  ("basement", "attic"),
  ("garden", "hallway"),
  ("car", "bus"),
)
NEUTRAL_CLAUSES = (
  "i went to see it last weekend",
  "the movie is about a family",
  "it is about a man and his daughter",
  "there is a scene in the middle",
  "the story takes place in a small town",
  "it came out this year",
  "my brother watched it with me",
  "it runs about two hours",
  "they travel across the country",
  "the main character is a teacher",
  "the director also made the first one",
  "most of it was filmed in new york",
  "um",
  "you know",
  "i mean",
  "so basically",
  "the second half is different",
  "there are three main characters",
  "she moves to the city",
  "it is based on a book",
  "the trailer came out in march",
  "we bought the tickets online",
  "he works at a newspaper",
  "the music is by a band from london",
  "i read about it before",
  "it has a lot of dialogue",
  "the first scene is at night",
)
CONNECTORS = ("and", "so", "then", "also", "um")
# VADER entries kept out of the sentiment vocabulary: profanity, grave topics, non-opinions.
SENTIMENT_BLOCKLIST = frozenset(
  """
  like united hand party parties help original sure free created creation yes yeah festival
  awards awarded security certain novel championships chance agreed agreement please supported
  increase join share shares shared sharing ability promoted safety advanced grant accepted
  prominent gained entitled interests committed profit favor secure secured charity strongly
  bonus supporters wealth treat surely honour stable huge respectively admiral united god
  stop low lower cut cuts anti lack pressure risk critical critics critic refused missing drop
  charges resigned struck weapon weapons wars war prisoners prisoner prison bomb mia delay firing
  resignation cancelled restricted suspended penalty interrupted hesitated argues sin witch devil
  hell damn damned bitch bastard pissed rape slavery terrorist suicide cancer murder murdered
  kill killed killing killer rob steal abuse illegal crime criminal violence dick fuck shit ass
  asshole cunt whore slut sex sexy nigger fag faggot retarded dumbass bullshit crap suck sucks
  sucked porn penis vagina death dead died die attack attacked attacks enemy enemies battle
  battles fought fight fighting fights gun shoot beaten beating assault terror terrorism
""".split()
)


@dataclasses.dataclass(frozen=True)
class SyntheticConfig:
  """Every knob of the synthetic generator (docs/methods.md §7); see the module docstring for the
  model.

  Sizes are full-scale split sizes; `generate(scale=...)` multiplies them. Noise/shift values of
  audio and vision are in feature units (frame noise 1 means unit-variance frames).
  """

  name: str
  n_train: int
  n_valid: int
  n_test: int
  text_len: int
  audio_frames: int
  audio_dim: int
  vision_frames: int
  vision_dim: int
  # Labels.
  label_max: float = 3.0
  annotators: int = 5
  rating_levels: int = 7
  latent_pos_share: float = 0.55
  latent_mode: float = 0.4
  latent_std: float = 0.3
  annotator_noise: float = 0.2
  unimodal_labels: bool = False
  unimodal_noise: float = 0.15
  # Spurious cue (all modalities).
  cue_agree_prob: float = 0.9
  # Text.
  sentiment_words_per_polarity: int = 150
  min_abs_valence: float = 1.0
  max_valence_std: float = 0.9
  max_sentiment_words: int = 4
  sentiment_count_noise: float = 0.6
  sentiment_strength_noise: float = 0.2
  opposite_word_prob: float = 0.1
  max_neutral_clauses: int = 2
  max_cue_tokens: int = 2
  connector_prob: float = 0.4
  # Audio.
  audio_sentiment_dims: int = 2
  audio_cue_dims: int = 1
  audio_sentiment_shift: float = 0.35
  audio_cue_shift: float = 1.2
  audio_sample_noise: float = 0.5
  audio_frame_noise: float = 1.0
  audio_neg_inf_prob: float = 0.004
  audio_length_median: float = 0.4
  # Vision.
  vision_sentiment_dims: int = 4
  vision_cue_dims: int = 2
  vision_sentiment_shift: float = 0.3
  vision_cue_shift: float = 1.0
  vision_sample_noise: float = 0.5
  vision_frame_noise: float = 1.0
  vision_length_median: float = 0.4
  # Lengths.
  length_spread: float = 0.5
  length_jitter: float = 0.1

  def sizes(self, scale: float = 1.0) -> dict[str, int]:
    """Split sizes at `scale` (at least 4 samples each); OOD splits have the test size."""
    base = {"train": self.n_train, "valid": self.n_valid, "test": self.n_test}
    sizes = {k: max(4, int(round(v * scale))) for k, v in base.items()}
    sizes.update({name: sizes["test"] for name in OOD_SPLITS})
    return sizes


PRESETS: dict[str, SyntheticConfig] = {
  "mosi": SyntheticConfig(
    name="mosi",
    n_train=1284,
    n_valid=229,
    n_test=686,
    text_len=50,
    audio_frames=375,
    audio_dim=5,
    vision_frames=500,
    vision_dim=20,
  ),
  # The reduced MOSI-like preset of LNLN's fast default run: fewer samples and 32 audio / vision
  # frames (full MOSI frame counts cost minutes per epoch on a 2-core CPU).
  "mosi_small": SyntheticConfig(
    name="mosi_small",
    n_train=384,
    n_valid=128,
    n_test=256,
    text_len=50,
    audio_frames=32,
    audio_dim=5,
    vision_frames=32,
    vision_dim=20,
  ),
  "mosei": SyntheticConfig(
    name="mosei",
    n_train=16326,
    n_valid=1871,
    n_test=4659,
    text_len=50,
    audio_frames=500,
    audio_dim=74,
    vision_frames=500,
    vision_dim=35,
    annotators=3,
    audio_sentiment_dims=6,
    audio_cue_dims=2,
    audio_sentiment_shift=0.2,
    audio_cue_shift=1.0,
    vision_sentiment_dims=6,
    vision_cue_dims=2,
    vision_sentiment_shift=0.25,
  ),
  "sims": SyntheticConfig(
    name="sims",
    n_train=1368,
    n_valid=456,
    n_test=457,
    text_len=39,
    audio_frames=400,
    audio_dim=33,
    vision_frames=55,
    vision_dim=709,
    label_max=1.0,
    rating_levels=3,
    latent_mode=0.45,
    latent_std=0.35,
    annotator_noise=0.3,
    unimodal_labels=True,
    audio_sentiment_dims=4,
    audio_cue_dims=2,
    audio_sentiment_shift=0.25,
    audio_cue_shift=1.0,
    vision_sentiment_dims=8,
    vision_cue_dims=4,
    vision_sentiment_shift=0.2,
    vision_cue_shift=0.8,
    vision_length_median=0.6,
  ),
}


@dataclasses.dataclass(frozen=True)
class CueDesign:
  """How a benchmark version plants the spurious cue (docs/methods.md §7); frozen per version.

  Attributes:
    shared_agreement: one agreement draw per sample used by every modality (one confound seen
      everywhere at once) instead of one draw per modality.
    label_scaled_cue: the audio / vision cue offset is b c (cue_floor + |y| / label_max), so it
      carries the label's magnitude, instead of the fixed b c.
    cue_floor: the offset's size at y = 0 when `label_scaled_cue`.
    cue_sample_noise: std of the per-sample noise on the cue dimensions; None: the modality's
      `*_sample_noise`, as on every other dimension.
    text_cue_pairs: how many of `TEXT_CUE_PAIRS`, from the first, the text cue draws nouns from.
    ood_valid: also write the OOD splits of the validation split (`OOD_VALID_SPLITS`).
    store_cue_signs: write each split's (N, 3) cue signs under the key `cue_signs`.
  """

  shared_agreement: bool
  label_scaled_cue: bool
  cue_floor: float
  cue_sample_noise: float | None
  text_cue_pairs: int
  ood_valid: bool
  store_cue_signs: bool


# synth-v2: the confound of real MSA data (speaker and recording conditions, visible in every
# modality at once and stronger for stronger sentiment), easier to learn than the label. Frozen
# before any method was run on it: b = 3.0 on audio and vision, offset b c (0.1 + |y| / 3), noise
# 0.1 on the cue dimensions, one text cue pair, agreement 0.9 shared by the three modalities.
PRESETS_V2: dict[str, SyntheticConfig] = {
  name: dataclasses.replace(PRESETS[name], audio_cue_shift=3.0, vision_cue_shift=3.0)
  for name in ("mosi", "mosi_small")
}


@dataclasses.dataclass(frozen=True)
class Benchmark:
  """A named benchmark version: its presets and its cue design."""

  name: str
  presets: dict[str, SyntheticConfig]
  design: CueDesign


BENCHMARKS: dict[str, Benchmark] = {
  "v1": Benchmark(
    BENCHMARK_VERSION,
    PRESETS,
    CueDesign(
      shared_agreement=False,
      label_scaled_cue=False,
      cue_floor=0.0,
      cue_sample_noise=None,
      text_cue_pairs=len(TEXT_CUE_PAIRS),
      ood_valid=False,
      store_cue_signs=False,
    ),
  ),
  "v2": Benchmark(
    "synth-v2",
    PRESETS_V2,
    CueDesign(
      shared_agreement=True,
      label_scaled_cue=True,
      cue_floor=0.1,
      cue_sample_noise=0.1,
      text_cue_pairs=1,
      ood_valid=True,
      store_cue_signs=True,
    ),
  ),
}


def benchmark(version: str) -> Benchmark:
  """The benchmark version `version` ('v1' or 'v2'), or a ValueError naming the choices."""
  if version not in BENCHMARKS:
    raise ValueError(
      f"unknown synthetic benchmark version {version!r}; expected one of {sorted(BENCHMARKS)}"
    )
  return BENCHMARKS[version]


_SPLIT_CODES = {"train": 0, "valid": 1, "test": 2}
_STREAMS = {"labels": 0, "cue": 1, "lengths": 2, "text": 3, "audio": 4, "vision": 5}
_STRUCTURE_STREAM = 99


def _rng(seed: int, *codes: int) -> np.random.Generator:
  return np.random.default_rng([seed, *codes])


# ------------------------------------------------------------------------------------------------
# Text resources: lexicon, vocabulary, word lists.


def vader_lexicon_path() -> pathlib.Path:
  """Path of `vader_lexicon.txt` inside the installed vaderSentiment package
  (docs/methods.md §7)."""
  spec = importlib.util.find_spec("vaderSentiment")
  if spec is None or spec.origin is None:
    raise FileNotFoundError(
      "Python package 'vaderSentiment' (PyPI: vadersentiment) is not "
      "installed; the synthetic benchmark takes its sentiment words from it"
    )
  path = pathlib.Path(spec.origin).parent / "vader_lexicon.txt"
  if not path.is_file():
    raise FileNotFoundError(f"{path} is missing from the installed vaderSentiment package")
  return path


def load_vader_lexicon(path: pathlib.Path | str | None = None) -> dict[str, tuple[float, float]]:
  """VADER lexicon as word -> (mean valence in [-4, 4], std of the ten ratings)."""
  path = pathlib.Path(path) if path is not None else vader_lexicon_path()
  lexicon = {}
  with open(path, encoding="utf-8") as f:
    for line in f:
      parts = line.rstrip("\n").split("\t")
      if len(parts) >= 3:
        lexicon[parts[0]] = (float(parts[1]), float(parts[2]))
  return lexicon


@dataclasses.dataclass(frozen=True)
class TextResources:
  """Token-id tables the text generator draws from (docs/methods.md §7).

  Attributes:
    vocab: the bert-base-uncased vocabulary (id -> token).
    positive_ids, negative_ids: sentiment word ids per polarity, by increasing |valence|.
    positive_valence, negative_valence: their VADER valences.
    cue_ids: (P, 2) ids of `TEXT_CUE_PAIRS` (column 0 for cue +1, column 1 for cue -1).
    sentiment_frames, cue_frames, neutral_clauses, connectors: token-id tuples; a frame's slot
      is the id -1.
  """

  vocab: tuple[str, ...]
  positive_ids: np.ndarray
  negative_ids: np.ndarray
  positive_valence: np.ndarray
  negative_valence: np.ndarray
  cue_ids: np.ndarray
  sentiment_frames: tuple[tuple[int, ...], ...]
  cue_frames: tuple[tuple[int, ...], ...]
  neutral_clauses: tuple[tuple[int, ...], ...]
  connectors: tuple[int, ...]


def _lookup(text: str, index: dict[str, int], lexicon: dict, what: str) -> tuple[int, ...]:
  """Token ids of a template (slot '_' -> -1); every word must be neutral and one vocab token."""
  ids = []
  for word in text.split():
    if word == "_":
      ids.append(-1)
      continue
    if word not in index:
      raise ValueError(
        f"synthetic {what} {text!r}: word {word!r} is not a single token of the "
        "bert-base-uncased vocabulary"
      )
    if word in lexicon:
      raise ValueError(
        f"synthetic {what} {text!r}: word {word!r} is in the VADER lexicon "
        f"(valence {lexicon[word][0]}), expected a sentiment-neutral word"
      )
    ids.append(index[word])
  return tuple(ids)


def build_text_resources(
  cfg: SyntheticConfig,
  vocab: Sequence[str],
  lexicon: dict[str, tuple[float, float]],
  cue_pairs: int = len(TEXT_CUE_PAIRS),
) -> TextResources:
  """Selects the sentiment words and tokenizes every template (docs/methods.md §7); the text cue
  uses the first `cue_pairs` of `TEXT_CUE_PAIRS` (all of them stay out of the sentiment words)."""
  index = {w: i for i, w in enumerate(vocab)}
  reserved = {w for pair in TEXT_CUE_PAIRS for w in pair}
  templates = SENTIMENT_FRAMES + CUE_FRAMES + NEUTRAL_CLAUSES + CONNECTORS
  reserved |= {w for t in templates for w in t.split()}

  def pick(sign: int) -> tuple[np.ndarray, np.ndarray]:
    cands = sorted(
      (index[w], v)
      for w, (v, sd) in lexicon.items()
      if w in index
      and w.isalpha()
      and w.isascii()
      and len(w) >= 3
      and w not in reserved
      and w not in SENTIMENT_BLOCKLIST
      and sign * v >= cfg.min_abs_valence
      and sd <= cfg.max_valence_std
    )
    if len(cands) < cfg.sentiment_words_per_polarity:
      raise ValueError(
        f"synthetic config {cfg.name!r}: only {len(cands)} VADER words of sign "
        f"{sign:+d} qualify, sentiment_words_per_polarity="
        f"{cfg.sentiment_words_per_polarity}"
      )
    chosen = cands[: cfg.sentiment_words_per_polarity]
    chosen.sort(key=lambda iv: (abs(iv[1]), iv[0]))
    return (
      np.array([i for i, _ in chosen], dtype=np.int64),
      np.array([v for _, v in chosen], dtype=np.float64),
    )

  pos_ids, pos_val = pick(+1)
  neg_ids, neg_val = pick(-1)
  cue_ids = np.array(
    [
      [_lookup(a, index, lexicon, "cue word")[0], _lookup(b, index, lexicon, "cue word")[0]]
      for a, b in TEXT_CUE_PAIRS[:cue_pairs]
    ],
    dtype=np.int64,
  )
  return TextResources(
    vocab=tuple(vocab),
    positive_ids=pos_ids,
    negative_ids=neg_ids,
    positive_valence=pos_val,
    negative_valence=neg_val,
    cue_ids=cue_ids,
    sentiment_frames=tuple(_lookup(t, index, lexicon, "frame") for t in SENTIMENT_FRAMES),
    cue_frames=tuple(_lookup(t, index, lexicon, "cue frame") for t in CUE_FRAMES),
    neutral_clauses=tuple(_lookup(t, index, lexicon, "clause") for t in NEUTRAL_CLAUSES),
    connectors=tuple(_lookup(t, index, lexicon, "connector")[0] for t in CONNECTORS),
  )


# ------------------------------------------------------------------------------------------------
# Per-sample base draws: labels, cue signs, lengths.


def _rate(latent: np.ndarray, cfg: SyntheticConfig, rng: np.random.Generator) -> np.ndarray:
  """Mean of `annotators` integer ratings of a latent sentiment, in label units (step 1: labels)."""
  half = (cfg.rating_levels - 1) // 2
  noise = rng.normal(0.0, cfg.annotator_noise, size=(latent.shape[0], cfg.annotators))
  ratings = np.clip(np.rint((latent[:, None] + noise) * half), -half, half)
  return (ratings.sum(axis=1) * (cfg.label_max / half) / cfg.annotators).astype(np.float32)


def sample_labels(cfg: SyntheticConfig, n: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
  """(N,) float32 regression labels (and T/A/V for `unimodal_labels`) — step 1 of the model."""
  positive = rng.random(n) < cfg.latent_pos_share
  latent = np.where(positive, cfg.latent_mode, -cfg.latent_mode) + rng.normal(0, cfg.latent_std, n)
  out = {"regression_labels": _rate(latent, cfg, rng)}
  if cfg.unimodal_labels:
    for suffix in ("T", "A", "V"):
      uni = latent + rng.normal(0.0, cfg.unimodal_noise, n)
      out[f"regression_labels_{suffix}"] = _rate(uni, cfg, rng)
  return out


def sample_cues(
  labels: np.ndarray, agree_prob: float, rng: np.random.Generator, shared: bool = False
) -> dict[str, np.ndarray]:
  """(N,) ±1 cue signs per modality: sign(label) with prob `agree_prob`, random for zero labels.

  Each modality draws its own agreement and coin unless `shared`: then one draw per sample gives
  every modality the same sign (step 2).
  """
  sign = np.sign(labels).astype(np.int64)
  n = labels.shape[0]

  def draw() -> np.ndarray:
    agree = rng.random(n) < agree_prob
    coin = np.where(rng.random(n) < 0.5, 1, -1)
    return np.where(sign == 0, coin, np.where(agree, sign, -sign)).astype(np.int64)

  if shared:
    cue = draw()
    return {m: cue for m in MODALITIES}
  return {m: draw() for m in MODALITIES}


def sample_lengths(
  cfg: SyntheticConfig, n: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
  """(N,) int64 audio and vision lengths in [1, T] sharing one duration draw (step 3)."""
  duration = np.exp(rng.normal(0.0, cfg.length_spread, n))
  out = []
  for frames, median in (
    (cfg.audio_frames, cfg.audio_length_median),
    (cfg.vision_frames, cfg.vision_length_median),
  ):
    jitter = np.exp(rng.normal(0.0, cfg.length_jitter, n))
    out.append(np.clip(np.ceil(median * frames * duration * jitter), 1, frames).astype(np.int64))
  return out[0], out[1]


# ------------------------------------------------------------------------------------------------
# Text.


def _sentiment_words(
  target: np.ndarray, cfg: SyntheticConfig, res: TextResources, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
  """(N, K) sentiment word ids and (N,) counts for text targets in [-1, 1] (step 4)."""
  n, k = target.shape[0], cfg.max_sentiment_words
  mag = np.abs(target)
  count = np.clip(np.rint(1 + mag * (k - 1) + rng.normal(0, cfg.sentiment_count_noise, n)), 1, k)
  count = np.where(target == 0, rng.integers(0, 3, n), count).astype(np.int64)
  sign = np.where(
    (target == 0)[:, None],
    np.where(rng.random((n, k)) < 0.5, 1, -1),
    np.sign(target)[:, None].astype(np.int64),
  )
  flip = rng.random((n, k)) < cfg.opposite_word_prob
  sign = np.where(flip & (target != 0)[:, None], -sign, sign)
  strength = np.clip(mag[:, None] + rng.normal(0, cfg.sentiment_strength_noise, (n, k)), 0, 1)
  pos = res.positive_ids[
    np.minimum((strength * len(res.positive_ids)).astype(np.int64), len(res.positive_ids) - 1)
  ]
  neg = res.negative_ids[
    np.minimum((strength * len(res.negative_ids)).astype(np.int64), len(res.negative_ids) - 1)
  ]
  return np.where(sign > 0, pos, neg), count


def _fill(frame: tuple[int, ...], word: int) -> list[int]:
  return [word if t == -1 else t for t in frame]


def sample_text(
  target: np.ndarray,
  cue: np.ndarray,
  cfg: SyntheticConfig,
  res: TextResources,
  rng: np.random.Generator,
) -> np.ndarray:
  """(N, 3, L) float32 text_bert rows [ids, mask, segment] of generated sentences (step 4)."""
  n, budget = target.shape[0], cfg.text_len - 2
  words, count = _sentiment_words(target, cfg, res, rng)
  sent_frame = rng.integers(0, len(res.sentiment_frames), (n, cfg.max_sentiment_words))
  n_cue = rng.integers(1, cfg.max_cue_tokens + 1, n)
  cue_pair = rng.integers(0, len(res.cue_ids), (n, cfg.max_cue_tokens))
  cue_frame = rng.integers(0, len(res.cue_frames), (n, cfg.max_cue_tokens))
  n_neutral = rng.integers(0, cfg.max_neutral_clauses + 1, n)
  neutral = rng.integers(0, len(res.neutral_clauses), (n, cfg.max_neutral_clauses))
  n_clauses = cfg.max_sentiment_words + cfg.max_cue_tokens + cfg.max_neutral_clauses
  order_keys = rng.random((n, n_clauses))
  use_conn = rng.random((n, n_clauses)) < cfg.connector_prob
  conn = rng.integers(0, len(res.connectors), (n, n_clauses))
  column = np.where(cue > 0, 0, 1)
  out = np.zeros((n, 3, cfg.text_len), dtype=np.float32)
  for i in range(n):
    clauses = [
      _fill(res.sentiment_frames[f], w)
      for f, w in zip(sent_frame[i, : count[i]], words[i, : count[i]])
    ]
    clauses += [
      _fill(res.cue_frames[cue_frame[i, j]], res.cue_ids[cue_pair[i, j], column[i]])
      for j in range(n_cue[i])
    ]
    used = sum(len(c) for c in clauses)
    if used > budget:
      raise ValueError(
        f"synthetic config {cfg.name!r}: text_len={cfg.text_len} cannot hold "
        f"{used} required words; lower max_sentiment_words or max_cue_tokens"
      )
    for j in range(n_neutral[i]):
      clause = res.neutral_clauses[neutral[i, j]]
      if used + len(clause) <= budget:
        clauses.append(list(clause))
        used += len(clause)
    ids = [CLS_ID]
    for pos, j in enumerate(np.argsort(order_keys[i, : len(clauses)], kind="stable")):
      if pos > 0 and use_conn[i, pos] and used < budget:
        ids.append(res.connectors[conn[i, pos]])
        used += 1
      ids.extend(clauses[j])
    ids.append(SEP_ID)
    out[i, 0, : len(ids)] = ids
    out[i, 1, : len(ids)] = 1.0
  return out


def decode_text(text_bert: np.ndarray, vocab: Sequence[str]) -> np.ndarray:
  """(N,) object array of sentences: the words between [CLS] and [SEP] of each row."""
  ids = text_bert[:, 0, :].astype(np.int64)
  lengths = text_bert[:, 1, :].sum(axis=1).astype(np.int64)
  out = np.empty(ids.shape[0], dtype=object)
  for i in range(ids.shape[0]):
    out[i] = " ".join(vocab[t] for t in ids[i, 1 : lengths[i] - 1])
  return out


def swap_text_cue(text_bert: np.ndarray, cue_ids: np.ndarray) -> np.ndarray:
  """text_bert with every cue noun replaced by its pair partner (reversed text cue, step 6)."""
  table = np.arange(BERT_UNCASED_VOCAB_SIZE, dtype=np.float32)
  table[cue_ids[:, 0]] = cue_ids[:, 1]
  table[cue_ids[:, 1]] = cue_ids[:, 0]
  out = text_bert.copy()
  out[:, 0, :] = table[text_bert[:, 0, :].astype(np.int64)]
  return out


# ------------------------------------------------------------------------------------------------
# Audio / vision.


@dataclasses.dataclass(frozen=True)
class FrameStructure:
  """Which dimensions of one modality carry sentiment, cue and `-inf` (step 5)."""

  sentiment_dims: np.ndarray
  sentiment_loadings: np.ndarray
  cue_dims: np.ndarray
  cue_loadings: np.ndarray
  neg_inf_dims: np.ndarray


def frame_structure(
  dim: int, n_sentiment: int, n_cue: int, with_neg_inf: bool, rng: np.random.Generator
) -> FrameStructure:
  """Random disjoint sentiment / cue dimensions with ±1 loadings (`-inf` dims among the rest)."""
  if n_sentiment + n_cue > dim:
    raise ValueError(
      f"synthetic config: {n_sentiment} sentiment + {n_cue} cue dimensions do not "
      f"fit a feature dimension of {dim}"
    )
  perm = rng.permutation(dim)
  sent, cue = perm[:n_sentiment], perm[n_sentiment : n_sentiment + n_cue]
  rest = perm[n_sentiment + n_cue :]
  loads = np.where(rng.random(n_sentiment + n_cue) < 0.5, -1.0, 1.0)
  neg_inf = np.sort(rest[:2]) if with_neg_inf else np.zeros((0,), np.int64)
  if with_neg_inf and neg_inf.size == 0:
    neg_inf = np.sort(perm[-1:])
  return FrameStructure(
    sentiment_dims=np.sort(sent),
    sentiment_loadings=loads[:n_sentiment][np.argsort(sent)],
    cue_dims=np.sort(cue),
    cue_loadings=loads[n_sentiment:][np.argsort(cue)],
    neg_inf_dims=neg_inf.astype(np.int64),
  )


def render_frames(
  frames: int,
  dim: int,
  lengths: np.ndarray,
  target: np.ndarray,
  cue: np.ndarray,
  structure: FrameStructure,
  sentiment_shift: float,
  cue_shift: float,
  sample_noise: float,
  frame_noise: float,
  neg_inf_prob: float,
  rng: np.random.Generator,
  cue_noise: float | None = None,
) -> np.ndarray:
  """(N, T, D) float32 frames of step 5, zero beyond each length, written chunk by chunk.

  `cue` is each sample's signed cue strength c_i k_i (the cue sign, times its size in synth-v2);
  `cue_noise`, when given, replaces `sample_noise` on the cue dimensions. Only valid frames are
  drawn: per chunk of samples, a (sum of lengths, D) block of noise plus each sample's offset is
  scattered into the zero-initialised output.
  """
  n = lengths.shape[0]
  noise = np.full(dim, sample_noise)
  if cue_noise is not None:
    noise[structure.cue_dims] = cue_noise
  offset = rng.normal(0.0, noise, (n, dim)).astype(np.float32)
  offset[:, structure.sentiment_dims] += (
    sentiment_shift * target[:, None] * structure.sentiment_loadings[None, :]
  ).astype(np.float32)
  offset[:, structure.cue_dims] += (
    cue_shift * cue[:, None] * structure.cue_loadings[None, :]
  ).astype(np.float32)
  out = np.zeros((n, frames, dim), dtype=np.float32)
  chunk = max(1, (1 << 22) // (frames * dim))
  steps = np.arange(frames)
  for start in range(0, n, chunk):
    lens = lengths[start : start + chunk]
    values = rng.standard_normal((int(lens.sum()), dim), dtype=np.float32)
    if frame_noise != 1.0:
      values *= np.float32(frame_noise)
    values += np.repeat(offset[start : start + chunk], lens, axis=0)
    if neg_inf_prob > 0 and structure.neg_inf_dims.size:
      hit = np.flatnonzero(rng.random(values.shape[0]) < neg_inf_prob)
      values[hit[:, None], structure.neg_inf_dims[None, :]] = -np.inf
    out[start : start + chunk][steps[None, :] < lens[:, None]] = values
  return out


def reverse_frame_cue(
  x: np.ndarray, lengths: np.ndarray, cue: np.ndarray, structure: FrameStructure, cue_shift: float
) -> np.ndarray:
  """A copy of frames `x` (N, T, D) rendered with the cue reversed: the cue term b c k v_d (`cue`
  = the signed strength c k, as for `render_frames`) is subtracted twice on the cue dimensions of
  valid frames (step 6); every other value is unchanged."""
  out = x.copy()
  valid = (np.arange(x.shape[1])[None, :] < lengths[:, None]).astype(np.float32)
  for d, load in zip(structure.cue_dims, structure.cue_loadings):
    delta = (2.0 * cue_shift * load * cue).astype(np.float32)
    out[:, :, d] -= delta[:, None] * valid
  return out


# ------------------------------------------------------------------------------------------------
# Assembly.


def _modality_args(cfg: SyntheticConfig, modality: str, design: CueDesign) -> dict[str, Any]:
  return {
    "frames": getattr(cfg, f"{modality}_frames"),
    "dim": getattr(cfg, f"{modality}_dim"),
    "sentiment_shift": getattr(cfg, f"{modality}_sentiment_shift"),
    "cue_shift": getattr(cfg, f"{modality}_cue_shift"),
    "sample_noise": getattr(cfg, f"{modality}_sample_noise"),
    "frame_noise": getattr(cfg, f"{modality}_frame_noise"),
    "neg_inf_prob": cfg.audio_neg_inf_prob if modality == "audio" else 0.0,
    "cue_noise": design.cue_sample_noise,
  }


def _targets(cfg: SyntheticConfig, labels: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
  """Per-modality sentiment targets t_m in [-1, 1] (step 1)."""
  out = {}
  for m, suffix in zip(MODALITIES, ("T", "A", "V")):
    key = f"regression_labels_{suffix}" if cfg.unimodal_labels else "regression_labels"
    out[m] = labels[key].astype(np.float64) / cfg.label_max
  return out


def _cue_strength(
  cue: np.ndarray, labels: np.ndarray, cfg: SyntheticConfig, design: CueDesign
) -> np.ndarray:
  """(N,) signed audio / vision cue strength c k (step 5): k = 1, or with `label_scaled_cue`
  k = cue_floor + |y| / label_max of the (multimodal) label y."""
  if not design.label_scaled_cue:
    return cue
  return cue * (design.cue_floor + np.abs(labels.astype(np.float64)) / cfg.label_max)


def _reversed_modalities(ood_split: str) -> tuple[str, ...]:
  """The modalities whose cue an OOD split reverses: `ood_[valid_]<modality>` or `..._all`."""
  kind = ood_split.rsplit("_", 1)[1]
  return tuple(m for m in MODALITIES if kind in ("all", m))


def _split_dict(
  labels: dict[str, np.ndarray],
  text_bert: np.ndarray,
  raw_text: np.ndarray,
  audio: np.ndarray,
  vision: np.ndarray,
  audio_lengths: np.ndarray,
  vision_lengths: np.ndarray,
  ids: np.ndarray,
  cues: dict[str, np.ndarray] | None = None,
) -> dict[str, np.ndarray]:
  """One split in MMSA keys; with `cues`, also their (N, 3) int8 signs under `cue_signs`."""
  split = {
    "text_bert": text_bert,
    "audio": audio,
    "vision": vision,
    "audio_lengths": audio_lengths,
    "vision_lengths": vision_lengths,
    **labels,
    "raw_text": raw_text,
    "id": ids,
  }
  if cues is not None:
    split["cue_signs"] = np.stack([cues[m] for m in MODALITIES], axis=1).astype(np.int8)
  return split


def _cue_agreement(labels: np.ndarray, cues: dict[str, np.ndarray]) -> dict[str, float]:
  nonzero = labels != 0
  return {
    m: float(np.mean(c[nonzero] == np.sign(labels[nonzero]))) if nonzero.any() else 0.0
    for m, c in cues.items()
  }


def _iid_split(
  cfg: SyntheticConfig,
  design: CueDesign,
  seed: int,
  code: int,
  n: int,
  first_id: int,
  res: TextResources,
  structures: dict[str, FrameStructure],
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
  """One fresh split (steps 1-5) and its per-modality cue signs."""
  labels = sample_labels(cfg, n, _rng(seed, code, _STREAMS["labels"]))
  cues = sample_cues(
    labels["regression_labels"],
    cfg.cue_agree_prob,
    _rng(seed, code, _STREAMS["cue"]),
    shared=design.shared_agreement,
  )
  audio_len, vision_len = sample_lengths(cfg, n, _rng(seed, code, _STREAMS["lengths"]))
  lengths = {"audio": audio_len, "vision": vision_len}
  targets = _targets(cfg, labels)
  audio, vision = (
    render_frames(
      lengths=lengths[m],
      target=targets[m],
      cue=_cue_strength(cues[m], labels["regression_labels"], cfg, design),
      structure=structures[m],
      rng=_rng(seed, code, _STREAMS[m]),
      **_modality_args(cfg, m, design),
    )
    for m in ("audio", "vision")
  )
  text_bert = sample_text(
    targets["text"], cues["text"], cfg, res, _rng(seed, code, _STREAMS["text"])
  )
  ids = np.array([f"synth$_${first_id + i}" for i in range(n)], dtype=object)
  split = _split_dict(
    labels,
    text_bert,
    decode_text(text_bert, res.vocab),
    audio,
    vision,
    audio_len,
    vision_len,
    ids,
    cues if design.store_cue_signs else None,
  )
  return split, cues


def _ood_splits(
  cfg: SyntheticConfig,
  design: CueDesign,
  base: dict[str, np.ndarray],
  res: TextResources,
  structures: dict[str, FrameStructure],
  cues: dict[str, np.ndarray],
  names: Sequence[str],
) -> dict[str, tuple[dict[str, np.ndarray], dict[str, np.ndarray]]]:
  """The OOD splits `names` of one base split (step 6) with their cue signs: `base` with reversed
  cues, sharing every unchanged array with `base`."""
  text = {False: (base["text_bert"], base["raw_text"])}
  text_bert = swap_text_cue(base["text_bert"], res.cue_ids)
  text[True] = (text_bert, decode_text(text_bert, res.vocab))
  frames = {(m, False): base[m] for m in ("audio", "vision")}
  for m in ("audio", "vision"):
    strength = _cue_strength(cues[m], base["regression_labels"], cfg, design)
    frames[(m, True)] = reverse_frame_cue(
      base[m], base[f"{m}_lengths"], strength, structures[m], getattr(cfg, f"{m}_cue_shift")
    )
  labels = {k: v for k, v in base.items() if k.startswith("regression_labels")}
  out = {}
  for name in names:
    flipped = _reversed_modalities(name)
    split_cues = {m: (-c if m in flipped else c) for m, c in cues.items()}
    split = _split_dict(
      labels,
      *text["text" in flipped],
      frames[("audio", "audio" in flipped)],
      frames[("vision", "vision" in flipped)],
      base["audio_lengths"],
      base["vision_lengths"],
      base["id"],
      split_cues if design.store_cue_signs else None,
    )
    out[name] = (split, split_cues)
  return out


def generate(
  preset: str,
  seed: int = 0,
  scale: float = 1.0,
  config: SyntheticConfig | None = None,
  version: str = DEFAULT_VERSION,
) -> dict[str, Any]:
  """The synthetic benchmark as an MMSA-format dict (docs/methods.md §7, §1).

  Args:
    preset: the imitated data set's shapes, sizes and label range: one of the version's presets
      ('mosi', 'mosi_small', 'mosei', 'sims' in v1; 'mosi', 'mosi_small' in v2).
    seed: all randomness (structure and samples) derives from it.
    scale: multiplies the split sizes (e.g. 0.1 for a small file).
    config: replaces the version's preset when given.
    version: the benchmark version, 'v1' (synth-v1) or 'v2' (synth-v2); see `BENCHMARKS`.

  Returns:
    {'train', 'valid', 'test', 'ood_text', 'ood_audio', 'ood_vision', 'ood_all'[, 'ood_valid_text',
     'ood_valid_audio', 'ood_valid_vision', 'ood_valid_all']: split dict, 'metadata': plain
    dict}; a split has text_bert (N, 3, L), audio (N, Ta, Da), vision (N, Tv, Dv) float32,
    audio_lengths / vision_lengths (N,) int64, regression_labels (N,) float32 (and _T/_A/_V for
    SIMS), raw_text and id (N,) object str (and cue_signs (N, 3) int8 in v2).
  """
  bench = benchmark(version)
  design = bench.design
  if config is None:
    if preset not in bench.presets:
      raise ValueError(
        f"unknown synthetic preset {preset!r} for {bench.name}; expected one of "
        f"{sorted(bench.presets)}"
      )
    config = bench.presets[preset]
  cfg = config
  if not (isinstance(scale, (int, float)) and math.isfinite(scale) and scale > 0):
    raise ValueError(f"synthetic scale must be a positive number, got {scale!r}")
  vocab = load_vocab()
  if len(vocab) != BERT_UNCASED_VOCAB_SIZE:
    raise ValueError(
      f"{bert_uncased_vocab_file()}: expected {BERT_UNCASED_VOCAB_SIZE} tokens, got {len(vocab)}"
    )
  lexicon = load_vader_lexicon()
  res = build_text_resources(cfg, vocab, lexicon, design.text_cue_pairs)
  srng = _rng(seed, _STRUCTURE_STREAM)
  structures = {
    m: frame_structure(
      getattr(cfg, f"{m}_dim"),
      getattr(cfg, f"{m}_sentiment_dims"),
      getattr(cfg, f"{m}_cue_dims"),
      m == "audio",
      srng,
    )
    for m in ("audio", "vision")
  }
  sizes = cfg.sizes(scale)
  ood_bases = {"test": OOD_SPLITS}
  if design.ood_valid:
    ood_bases["valid"] = OOD_VALID_SPLITS
    sizes.update({name: sizes["valid"] for name in OOD_VALID_SPLITS})

  data: dict[str, Any] = {}
  agreement: dict[str, dict[str, float]] = {}
  first_id = 0
  iid_cues: dict[str, dict[str, np.ndarray]] = {}
  for name in IID_SPLITS:
    split, iid_cues[name] = _iid_split(
      cfg, design, seed, _SPLIT_CODES[name], sizes[name], first_id, res, structures
    )
    first_id += sizes[name]
    data[name] = split
    agreement[name] = _cue_agreement(split["regression_labels"], iid_cues[name])
  for base, names in ood_bases.items():
    for name, (split, cues) in _ood_splits(
      cfg, design, data[base], res, structures, iid_cues[base], names
    ).items():
      data[name] = split
      agreement[name] = _cue_agreement(split["regression_labels"], cues)
  data["metadata"] = _metadata(
    cfg, bench, preset, seed, scale, sizes, res, structures, agreement, ood_bases
  )
  return data


def _metadata(
  cfg: SyntheticConfig,
  bench: Benchmark,
  preset: str,
  seed: int,
  scale: float,
  sizes: dict[str, int],
  res: TextResources,
  structures: dict[str, FrameStructure],
  agreement: dict[str, dict[str, float]],
  ood_bases: dict[str, Sequence[str]],
) -> dict[str, Any]:
  """The file's plain-typed metadata: version, knobs, planted structure (docs/methods.md §7).

  synth-v1's layout is frozen with the version (its files are reproduced byte for byte); later
  versions add `cue_design` and `cue_signs` at the end.
  """

  def ints(a: np.ndarray) -> list[int]:
    return [int(x) for x in a]

  def floats(a: np.ndarray) -> list[float]:
    return [float(x) for x in a]

  cue_pairs = TEXT_CUE_PAIRS[: bench.design.text_cue_pairs]
  structure: dict[str, Any] = {
    "text": {
      "positive_sentiment_token_ids": ints(res.positive_ids),
      "negative_sentiment_token_ids": ints(res.negative_ids),
      "positive_sentiment_words": [res.vocab[i] for i in res.positive_ids],
      "negative_sentiment_words": [res.vocab[i] for i in res.negative_ids],
      "positive_sentiment_valence": floats(res.positive_valence),
      "negative_sentiment_valence": floats(res.negative_valence),
      "positive_cue_token_ids": ints(res.cue_ids[:, 0]),
      "negative_cue_token_ids": ints(res.cue_ids[:, 1]),
      "positive_cue_words": [a for a, _ in cue_pairs],
      "negative_cue_words": [b for _, b in cue_pairs],
    }
  }
  for m, s in structures.items():
    structure[m] = {
      "sentiment_dims": ints(s.sentiment_dims),
      "sentiment_loadings": floats(s.sentiment_loadings),
      "cue_dims": ints(s.cue_dims),
      "cue_loadings": floats(s.cue_loadings),
      "neg_inf_dims": ints(s.neg_inf_dims),
    }
  config = {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(cfg).items()}
  meta = {
    "benchmark_version": bench.name,
    "generator": "msa_jax.data.synthetic",
    "preset": str(preset),
    "seed": int(seed),
    "scale": float(scale),
    "config": config,
    "sizes": {k: int(v) for k, v in sizes.items()},
    "structure": structure,
    "splits": {
      name: {"base": base, "cue_reversed": list(_reversed_modalities(name))}
      for base, names in ood_bases.items()
      for name in names
    },
    "cue_agreement": agreement,
  }
  if bench.name != BENCHMARK_VERSION:
    meta["cue_design"] = dataclasses.asdict(bench.design)
    meta["cue_signs"] = {"key": "cue_signs", "columns": list(MODALITIES)}
  return meta


def write_synthetic(
  path: str | os.PathLike,
  preset: str,
  seed: int = 0,
  scale: float = 1.0,
  version: str = DEFAULT_VERSION,
) -> pathlib.Path:
  """Generates the benchmark and writes it atomically as a pickle (`msa_jax.io.atomic_file`)."""
  path = pathlib.Path(path)
  data = generate(preset, seed=seed, scale=scale, version=version)
  with atomic_file(path, "wb") as f:
    pickle.dump(data, f, protocol=5)
  return path


def default_path(preset: str, seed: int = 0, version: str = DEFAULT_VERSION) -> str:
  """The data path of a config whose data is the synthetic `preset` of benchmark `version` with
  `seed`: the only path at which `msa_jax.train` generates the benchmark on first use (elsewhere a
  missing file is an error). Each version has its own file."""
  tag = "" if version == "v1" else f"_{version}"
  return f"data/synthetic_{preset}{tag}_seed{seed}.pkl"


def ensure_synthetic(
  path: str | os.PathLike,
  preset: str,
  seed: int = 0,
  scale: float = 1.0,
  version: str = DEFAULT_VERSION,
) -> pathlib.Path:
  """`path`, generated with `write_synthetic` first if no file is there yet (an existing file is
  used as it is, whatever version it holds: give each version its own path)."""
  path = pathlib.Path(path)
  if path.is_file():
    return path
  return write_synthetic(path, preset, seed=seed, scale=scale, version=version)
