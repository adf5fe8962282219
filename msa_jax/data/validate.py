"""Validation of MMSA data: every check a loader runs on the arrays of a split.

Each raw array is checked (key presence, rank, shape, sample count, token ids, length bounds,
label range, NaN) and turned into the array a `Split` holds; a failure raises `DataFormatError`
with one line naming the file, split and key, what was expected and what was found. The pickle
reader (`msa_jax.data.mmsa`) and the memory-mapped format (`msa_jax.data.ondisk`) share them.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import numpy as np

from msa_jax.data.split import Split
from msa_jax.errors import UserError
from msa_jax.text import BERT_CHINESE_VOCAB_SIZE, BERT_UNCASED_VOCAB_SIZE


class DataFormatError(UserError, ValueError):
  """A data file is unreadable, unsafe or does not match the MMSA format of docs/methods.md §1."""


# [CLS], the first token of every BERT input: 101 in bert-base-uncased's and bert-base-chinese's
# vocabularies (and MiniLM's, which is bert-base-uncased's).
CLS_ID = 101
# Keys of real MMSA splits that msa_jax does not use; any other unknown key is reported.
IGNORED_KEYS = frozenset(
  {"annotations", "classification_labels"} | {f"classification_labels_{m}" for m in "TAV"}
)
# Misspellings found in released files: the key each stands for.
KEY_ALIASES = {"audio_length": "audio_lengths", "vision_length": "vision_lengths"}


def warn(message: str) -> None:
  """One warning line on stderr: data that was repaired or ignored."""
  print(f"[msa_jax] warning: {one_line(message)}", file=sys.stderr, flush=True)


@dataclasses.dataclass(frozen=True)
class Limits:
  """Per-dataset validation bounds: |label| <= label_bound, token ids in [0, vocab_size)."""

  label_bound: float
  vocab_size: int


DATASET_LIMITS = {
  "mosi": Limits(3.0, BERT_UNCASED_VOCAB_SIZE),
  "mosei": Limits(3.0, BERT_UNCASED_VOCAB_SIZE),
  "sims": Limits(1.0, BERT_CHINESE_VOCAB_SIZE),
}
DEFAULT_LIMITS = Limits(3.0, BERT_UNCASED_VOCAB_SIZE)


@dataclasses.dataclass(frozen=True)
class Where:
  """The file and split an error message names."""

  file: str
  split: str

  def error(self, key: str, message: str) -> DataFormatError:
    return DataFormatError(one_line(f"{self.file}: split '{self.split}', key '{key}': {message}"))


def one_line(text: str) -> str:
  """`text` with line breaks escaped, so that an error message stays on one line."""
  return text.replace("\r", "\\r").replace("\n", "\\n")


# ---------------------------------------------------------------------------------------------
# Array validation.


def _shape_text(shape: tuple[int, ...]) -> str:
  return "(" + ", ".join(str(int(s)) for s in shape) + ("," if len(shape) == 1 else "") + ")"


def _fmt(value: Any) -> str:
  if isinstance(value, (np.floating, float)):
    return format(float(value), "g")
  return repr(value.item() if isinstance(value, np.generic) else value)


def _numeric(value: Any, where: Where, key: str, kinds: str = "biuf") -> np.ndarray:
  """`value` as a numpy array without copying when it already is one; kind must be numeric."""
  if isinstance(value, np.ndarray):
    arr = value
  else:
    try:
      arr = np.asarray(value)
    except (ValueError, TypeError) as e:
      raise where.error(
        key, f"expected a numeric array, got {type(value).__name__} ({e})"
      ) from None
  if arr.dtype.kind not in kinds:
    raise where.error(key, f"expected a numeric array, got dtype {arr.dtype}")
  return arr


def _check_shape(
  arr: np.ndarray, where: Where, key: str, expected: tuple[int | None, ...], names: str
) -> None:
  """Checks rank, sample count (axis 0) and fixed sizes of `arr`; `None` entries are free."""
  got = _shape_text(arr.shape)
  if arr.ndim != len(expected):
    raise where.error(key, f"expected rank {len(expected)} {names}, got shape {got}")
  if expected[0] is not None and arr.shape[0] != expected[0]:
    raise where.error(
      key,
      f"expected N={expected[0]} samples (as regression_labels), got {arr.shape[0]} (shape {got})",
    )
  for axis in range(1, arr.ndim):
    want = expected[axis]
    if (want is not None and arr.shape[axis] != want) or arr.shape[axis] == 0:
      size = f"size {want}" if want is not None else "a non-zero size"
      raise where.error(key, f"expected {names} with {size} on axis {axis}, got shape {got}")


def _first_bad(bad: np.ndarray) -> tuple[int, ...]:
  return tuple(int(i) for i in np.argwhere(bad)[0])


def checked_labels(value: Any, where: Where, key: str, n: int | None, bound: float) -> np.ndarray:
  """(N,) float32 labels (docs/methods.md §1): finite and within [-bound, bound]; (N, 1) is
  flattened."""
  arr = _numeric(value, where, key, kinds="iuf")
  if arr.ndim == 2 and arr.shape[1] == 1:
    arr = arr.reshape(-1)
  _check_shape(arr, where, key, (n,), "(N,) labels")
  arr = arr.astype(np.float32, copy=False)
  bad = ~(np.abs(arr) <= bound)
  if bad.any():
    (i,) = _first_bad(bad)
    raise where.error(
      key, f"expected finite labels in [{-bound:g}, {bound:g}], got {_fmt(arr[i])} at sample {i}"
    )
  return arr


def checked_text_bert(value: Any, where: Where, n: int, vocab_size: int) -> np.ndarray:
  """(N, 3, L) int32 BERT input (docs/methods.md §1) from the float array of the file, ids
  checked."""
  key = "text_bert"
  arr = _numeric(value, where, key)
  _check_shape(arr, where, key, (n, 3, None), "(N, 3, L) text_bert")
  rows = (
    ("token ids (row 0)", vocab_size, f"integers in [0, {vocab_size})"),
    ("attention mask (row 1)", 2, "0 or 1"),
    ("segment ids (row 2)", 2, "0 or 1"),
  )
  for row, (what, high, allowed) in enumerate(rows):
    values = arr[:, row, :]
    bad = ~((values >= 0) & (values < high))
    if arr.dtype.kind == "f":
      bad |= values != np.floor(values)
    if bad.any():
      i, j = _first_bad(bad)
      raise where.error(
        key,
        f"expected {what} to be {allowed}, got {_fmt(values[i, j])} at sample {i}, position {j}",
      )
  bad = arr[:, 0, 0] != CLS_ID
  if bad.any():
    (i,) = _first_bad(bad)
    raise where.error(
      key,
      f"expected token id {CLS_ID} ([CLS]) at position 0 of every sample, got "
      f"{_fmt(arr[i, 0, 0])} at sample {i}",
    )
  bad = ~(arr[:, 1, :] != 0).any(axis=1)
  if bad.any():
    (i,) = _first_bad(bad)
    raise where.error(
      key,
      f"expected at least one valid token (attention mask 1), got an all-zero mask at sample {i}",
    )
  return arr.astype(np.int32, copy=False)


def row_chunks(shape: tuple[int, ...], max_elements: int = 1 << 22) -> Iterator[slice]:
  """Consecutive row ranges of an array of `shape`, each at most ~`max_elements` elements."""
  per_row = max(1, int(np.prod(shape[1:])))
  step = max(1, max_elements // per_row)
  for start in range(0, shape[0], step):
    yield slice(start, min(start + step, shape[0]))


def clean_feature_rows(block: np.ndarray, where: Where, key: str, start: int) -> None:
  """Sets ±inf to 0 in place (docs/methods.md §1: `-inf` audio frames) and rejects NaN in `block`,
  the rows of a feature array that begin at sample `start` (named in the error)."""
  nan = np.isnan(block)
  if nan.any():
    i, *rest = _first_bad(nan)
    raise where.error(
      key, f"expected no NaN in features, got NaN at sample {start + i}, index {tuple(rest)}"
    )
  inf = np.isinf(block)
  if inf.any():
    block[inf] = 0.0


def _zero_infinities(arr: np.ndarray, where: Where, key: str) -> None:
  """`clean_feature_rows` over `arr` in row chunks (bounded temporary memory)."""
  for rows in row_chunks(arr.shape):
    clean_feature_rows(arr[rows], where, key, rows.start)


def checked_features(
  value: Any, where: Where, key: str, expected: tuple[int | None, ...], names: str
) -> np.ndarray:
  """`value` as a numeric array whose rank and sizes match `expected`; not converted or copied."""
  arr = _numeric(value, where, key)
  _check_shape(arr, where, key, expected, names)
  return arr


def checked_column(
  value: Any, where: Where, key: str, expected: tuple[int | None, ...], names: str
) -> Any:
  """`value`, a feature column read on demand (with `shape` and `dtype`, e.g. a TFDS record
  column), whose dtype is numeric and rank and sizes match `expected`; no row is read."""
  if np.dtype(value.dtype).kind not in "biuf":
    raise where.error(key, f"expected a numeric array, got dtype {value.dtype}")
  _check_shape(value, where, key, expected, names)
  return value


def float_features(
  value: Any, where: Where, key: str, expected: tuple[int | None, ...], names: str
) -> np.ndarray:
  """A float32 feature array of the given shape with ±inf set to 0 (no copy when possible)."""
  arr = checked_features(value, where, key, expected, names)
  if arr.dtype != np.float32:
    arr = arr.astype(np.float32)
  elif not arr.flags.writeable:
    arr = arr.copy()
  _zero_infinities(arr, where, key)
  return arr


def checked_lengths(value: Any, where: Where, key: str, n: int, t: int) -> np.ndarray:
  """(N,) int32 valid frame counts in [1, T]; absent (aligned files) means all T frames."""
  if value is None:
    return np.full((n,), t, dtype=np.int32)
  arr = _numeric(value, where, key, kinds="iuf")
  if arr.shape == (n + 1,):
    warn(
      f"{where.file}: split '{where.split}', key '{key}': {n + 1} entries for {n} samples; "
      f"using the first {n} (the extra last entry of some SIMS releases)"
    )
    arr = arr[:n]
  _check_shape(arr, where, key, (n,), "(N,) lengths")
  bad = ~((arr >= 1) & (arr <= t))
  if arr.dtype.kind == "f":
    bad |= arr != np.floor(arr)
  if bad.any():
    (i,) = _first_bad(bad)
    raise where.error(
      key, f"expected integer lengths in [1, {t}], got {_fmt(arr[i])} at sample {i}"
    )
  return arr.astype(np.int32, copy=False)


def checked_strings(value: Any, where: Where, key: str, n: int) -> np.ndarray:
  """(N,) str/object array (ids, raw_text) kept as numpy str/object array."""
  arr = value if isinstance(value, np.ndarray) else np.asarray(value, dtype=object)
  if arr.dtype.kind not in "OUS":
    raise where.error(key, f"expected an (N,) array of str, got dtype {arr.dtype}")
  _check_shape(arr, where, key, (n,), "(N,) strings")
  return arr


def checked_cue_signs(value: Any, where: Where, n: int) -> np.ndarray:
  """(N, 3) int8 planted cue signs (columns text, audio, vision), each -1 or +1."""
  key = "cue_signs"
  arr = _numeric(value, where, key, kinds="iuf")
  _check_shape(arr, where, key, (n, 3), "(N, 3) cue_signs")
  bad = ~np.isin(arr, (-1, 1))
  if bad.any():
    i, j = _first_bad(bad)
    raise where.error(
      key, f"expected cue signs -1 or +1, got {_fmt(arr[i, j])} at sample {i}, column {j}"
    )
  return arr.astype(np.int8, copy=False)


def _required(raw: dict, where: Where, key: str) -> Any:
  if key not in raw:
    present = ", ".join(sorted(str(k) for k in raw))
    raise where.error(key, f"expected key to be present, got keys [{present}]")
  return raw.pop(key)


# Turns one raw feature array (audio, vision, text) into the array a `Split` holds:
# (value, where, key, expected shape, shape names) -> array. `float_features` keeps it in memory;
# `msa_jax.data.ondisk` streams it to a file instead.
FeatureHandler = Callable[[Any, Where, str, tuple, str], np.ndarray]


def split_from_dict(
  raw: Any, where: Where, limits: Limits, features: FeatureHandler = float_features
) -> Split:
  """Validates one raw split dict (docs/methods.md §1 table) into a `Split`; consumes `raw`'s
  entries."""
  if not isinstance(raw, Mapping):
    raise DataFormatError(
      one_line(
        f"{where.file}: split '{where.split}': expected a dict of arrays, got {type(raw).__name__}"
      )
    )
  raw = dict(raw)
  for alias, key in KEY_ALIASES.items():
    if alias in raw and key not in raw:
      warn(f"{where.file}: split '{where.split}': key '{alias}' read as '{key}'")
      raw[key] = raw.pop(alias)
  labels = checked_labels(
    _required(raw, where, "regression_labels"), where, "regression_labels", None, limits.label_bound
  )
  n = int(labels.shape[0])
  if n == 0:
    raise where.error("regression_labels", "expected at least one sample, got 0")
  text_bert = checked_text_bert(_required(raw, where, "text_bert"), where, n, limits.vocab_size)
  seq_len = int(text_bert.shape[2])
  audio = features(
    _required(raw, where, "audio"), where, "audio", (n, None, None), "(N, Ta, Da) audio"
  )
  vision = features(
    _required(raw, where, "vision"), where, "vision", (n, None, None), "(N, Tv, Dv) vision"
  )
  optional: dict[str, Any] = {}
  if "text" in raw:
    optional["text"] = features(
      raw.pop("text"), where, "text", (n, seq_len, None), f"(N, L={seq_len}, Dt) text"
    )
  for suffix in "TAV":
    key = f"regression_labels_{suffix}"
    if key in raw:
      optional[f"labels_{suffix}"] = checked_labels(raw.pop(key), where, key, n, limits.label_bound)
  if "id" in raw:
    optional["ids"] = checked_strings(raw.pop("id"), where, "id", n)
  if "raw_text" in raw:
    optional["raw_text"] = checked_strings(raw.pop("raw_text"), where, "raw_text", n)
  if "cue_signs" in raw:
    optional["cue_signs"] = checked_cue_signs(raw.pop("cue_signs"), where, n)
  audio_lengths = checked_lengths(
    raw.pop("audio_lengths", None), where, "audio_lengths", n, audio.shape[1]
  )
  vision_lengths = checked_lengths(
    raw.pop("vision_lengths", None), where, "vision_lengths", n, vision.shape[1]
  )
  unknown = sorted(str(k) for k in raw if k not in IGNORED_KEYS)
  if unknown:
    warn(f"{where.file}: split '{where.split}': ignored unknown key(s) {', '.join(unknown)}")
  return Split(
    text_bert=text_bert,
    audio=audio,
    vision=vision,
    audio_lengths=audio_lengths,
    vision_lengths=vision_lengths,
    labels=labels,
    **optional,
  )


def _dims(split: Split) -> dict[str, tuple[str, tuple[int, ...]]]:
  """The per-key sizes that must agree across splits: L, (Ta, Da), (Tv, Dv), Dt."""
  dims = {
    "text_bert": ("L", (split.text_len,)),
    "audio": ("(Ta, Da)", split.audio_shape),
    "vision": ("(Tv, Dv)", split.vision_shape),
  }
  if split.text is not None:
    dims["text"] = ("Dt", (int(split.text.shape[2]),))
  return dims


def check_consistent(splits: dict[str, Split], files: dict[str, str]) -> None:
  """All splits share L, (Ta, Da), (Tv, Dv) and the text feature size with 'train'
  (docs/methods.md §1)."""
  ref = _dims(splits["train"])
  for name, split in splits.items():
    for key, (what, got) in _dims(split).items():
      if key in ref and ref[key][1] != got:
        want = ref[key][1]
        show_want = str(want[0]) if len(want) == 1 else str(want)
        show_got = str(got[0]) if len(got) == 1 else str(got)
        raise Where(files[name], name).error(
          key, f"expected {what} = {show_want} as in split 'train', got {show_got}"
        )


def dataset_limits(dataset: str | None, vocab_size: int | None) -> Limits:
  """The bounds of `dataset` ("mosi", "mosei", "sims", any case, or None), with `vocab_size`
  (when given) replacing the dataset's vocabulary size."""
  if dataset is None:
    limits = DEFAULT_LIMITS
  elif isinstance(dataset, str) and dataset.lower() in DATASET_LIMITS:
    limits = DATASET_LIMITS[dataset.lower()]
  else:
    raise ValueError(
      f"unknown dataset {dataset!r}: expected one of {sorted(DATASET_LIMITS)} or None"
    )
  if vocab_size is not None:
    integral = isinstance(vocab_size, (int, np.integer)) and not isinstance(vocab_size, bool)
    if not integral or vocab_size < 1:
      raise ValueError(f"vocab_size: expected a positive int, got {vocab_size!r}")
    limits = dataclasses.replace(limits, vocab_size=int(vocab_size))
  return limits
