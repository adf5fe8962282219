"""Safe loading and validation of MMSA feature files and GEAR split directories (docs/methods.md §1).

A pickle can run code when it is loaded, so files are read with a restricted unpickler that admits
only numpy arrays, numpy dtypes/scalars and plain Python containers/scalars. Every array is then
checked (key presence, rank, shape, sample count, token ids, length bounds, label range, NaN) and a
failure raises `DataFormatError` with one line naming the file, split and key, what was expected and
what was found. A path that does not exist also raises `DataFormatError`.

A directory written by `msa_jax.data.ondisk.convert` (MOSEI-sized data as memory-mapped `.npy`
files) is recognised by `load_mmsa` and opened memory-mapped; the conversion runs every check here.
"""

from __future__ import annotations

import collections
import dataclasses
import os
import pickle
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

import numpy as np
from numpy._core import multiarray as _np_multiarray
from numpy._core import numeric as _np_numeric

from msa_jax.data.split import IID_SPLITS, OOD_SPLITS, Split

# GEAR's released per-split files (docs/methods.md §1) and the msa_jax split each becomes.
GEAR_FILES = {
    "train": "train.pkl",
    "valid": "valid.pkl",
    "test": "test_iid.pkl",
    "ood_text": "test_nn_text.pkl",
    "ood_audio": "test_nn_audio.pkl",
    "ood_vision": "test_nn_vision.pkl",
    "ood_all": "test_nn_tav.pkl",
}
# bert-base-uncased (MOSI, MOSEI, synthetic presets) and bert-base-chinese (SIMS) vocabulary sizes.
VOCAB_UNCASED = 30522
VOCAB_CHINESE = 21128


class DataFormatError(ValueError):
  """A data file is unreadable, unsafe or does not match the MMSA format of docs/methods.md §1."""


@dataclasses.dataclass(frozen=True)
class _Limits:
  """Per-dataset validation bounds: |label| <= label_bound, token ids in [0, vocab_size)."""

  label_bound: float
  vocab_size: int


_DATASETS = {
    "mosi": _Limits(3.0, VOCAB_UNCASED),
    "mosei": _Limits(3.0, VOCAB_UNCASED),
    "sims": _Limits(1.0, VOCAB_CHINESE),
}
_DEFAULT_LIMITS = _Limits(3.0, VOCAB_UNCASED)


@dataclasses.dataclass(frozen=True)
class _Where:
  """The file and split an error message names."""

  file: str
  split: str

  def error(self, key: str, message: str) -> DataFormatError:
    return DataFormatError(_one_line(f"{self.file}: split '{self.split}', key '{key}': {message}"))


def _one_line(text: str) -> str:
  return text.replace("\r", "\\r").replace("\n", "\\n")


# ---------------------------------------------------------------------------------------------
# Restricted unpickler.


def _latin1_encode(obj: Any, encoding: str = "utf-8", errors: str = "strict") -> bytes:
  """The only use of `_codecs.encode` in protocol-2 pickles: bytes stored as a latin-1 str."""
  if not isinstance(obj, str) or encoding.lower().replace("_", "-") not in ("latin1", "latin-1"):
    raise pickle.UnpicklingError(f"refused _codecs.encode with encoding {encoding!r}")
  return obj.encode("latin-1", errors)


def _allowed_globals() -> dict[tuple[str, str], Any]:
  """Every (module, name) a pickle of numpy arrays and plain containers may reference.

  Covers what numpy 1.x (`numpy.core.*`) and numpy 2.x (`numpy._core.*`) write for arrays,
  dtypes and scalars under pickle protocols 2-5, and the builtins that protocol 2 (Python 2
  names `__builtin__`) and later use for sets, complex numbers and byte arrays.
  """
  table: dict[tuple[str, str], Any] = {
      ("numpy", "ndarray"): np.ndarray,
      ("numpy", "dtype"): np.dtype,
      ("collections", "OrderedDict"): collections.OrderedDict,
      ("_codecs", "encode"): _latin1_encode,
  }
  for core in ("numpy.core", "numpy._core"):
    table[(f"{core}.multiarray", "_reconstruct")] = _np_multiarray._reconstruct
    table[(f"{core}.multiarray", "scalar")] = _np_multiarray.scalar
    table[(f"{core}.numeric", "_frombuffer")] = _np_numeric._frombuffer
  for name in dir(np.dtypes):
    if name.endswith("DType") and isinstance(getattr(np.dtypes, name), type):
      table[("numpy.dtypes", name)] = getattr(np.dtypes, name)
  plain = {"set": set, "frozenset": frozenset, "complex": complex, "bytearray": bytearray,
           "slice": slice, "range": range}
  for module in ("builtins", "__builtin__"):
    for name, obj in plain.items():
      table[(module, name)] = obj
  return table


_ALLOWED_GLOBALS = _allowed_globals()


class _RestrictedUnpickler(pickle.Unpickler):
  """Unpickler that resolves only the globals in `_ALLOWED_GLOBALS` (docs/methods.md §1)."""

  def __init__(self, file: Any, source: str):
    super().__init__(file, encoding="latin1")
    self._source = source

  def find_class(self, module: str, name: str) -> Any:
    try:
      return _ALLOWED_GLOBALS[(module, name)]
    except KeyError:
      raise DataFormatError(_one_line(
          f"{self._source}: refused to load global '{module}.{name}': only numpy arrays, "
          "dtypes and plain Python containers/scalars are allowed in a data pickle")) from None

  def persistent_load(self, pid: Any) -> Any:
    raise DataFormatError(_one_line(
        f"{self._source}: refused persistent id {pid!r}: a data pickle must not reference "
        "external objects"))


def _read_pickle(path: Path) -> Any:
  """Unpickles `path` with the restricted unpickler; every failure becomes a DataFormatError."""
  source = str(path)
  try:
    with open(path, "rb") as f:
      return _RestrictedUnpickler(f, source).load()
  except DataFormatError:
    raise
  except EOFError:
    raise DataFormatError(
        f"{source}: file is truncated or empty (pickle data ended early)") from None
  except pickle.UnpicklingError as e:
    text = str(e)
    if "truncated" in text:
      raise DataFormatError(_one_line(f"{source}: file is truncated ({text})")) from None
    raise DataFormatError(_one_line(f"{source}: not a valid pickle file ({text})")) from None
  except OSError as e:
    raise DataFormatError(_one_line(f"{source}: cannot read file ({e})")) from None
  except Exception as e:  # noqa: BLE001 - any other failure inside pickle means a malformed file.
    raise DataFormatError(_one_line(
        f"{source}: malformed pickle ({type(e).__name__}: {e})")) from None


# ---------------------------------------------------------------------------------------------
# Array validation.


def _shape_text(shape: tuple[int, ...]) -> str:
  return "(" + ", ".join(str(int(s)) for s in shape) + ("," if len(shape) == 1 else "") + ")"


def _fmt(value: Any) -> str:
  if isinstance(value, (np.floating, float)):
    return format(float(value), "g")
  return repr(value.item() if isinstance(value, np.generic) else value)


def _numeric(value: Any, where: _Where, key: str, kinds: str = "biuf") -> np.ndarray:
  """`value` as a numpy array without copying when it already is one; kind must be numeric."""
  if isinstance(value, np.ndarray):
    arr = value
  else:
    try:
      arr = np.asarray(value)
    except (ValueError, TypeError) as e:
      raise where.error(
          key, f"expected a numeric array, got {type(value).__name__} ({e})") from None
  if arr.dtype.kind not in kinds:
    raise where.error(key, f"expected a numeric array, got dtype {arr.dtype}")
  return arr


def _check_shape(arr: np.ndarray, where: _Where, key: str, expected: tuple[int | None, ...],
                 names: str) -> None:
  """Checks rank, sample count (axis 0) and fixed sizes of `arr`; `None` entries are free."""
  got = _shape_text(arr.shape)
  if arr.ndim != len(expected):
    raise where.error(key, f"expected rank {len(expected)} {names}, got shape {got}")
  if expected[0] is not None and arr.shape[0] != expected[0]:
    raise where.error(key, f"expected N={expected[0]} samples (as regression_labels), "
                      f"got {arr.shape[0]} (shape {got})")
  for axis in range(1, arr.ndim):
    want = expected[axis]
    if (want is not None and arr.shape[axis] != want) or arr.shape[axis] == 0:
      size = f"size {want}" if want is not None else "a non-zero size"
      raise where.error(key, f"expected {names} with {size} on axis {axis}, got shape {got}")


def _first_bad(bad: np.ndarray) -> tuple[int, ...]:
  return tuple(int(i) for i in np.argwhere(bad)[0])


def _labels(value: Any, where: _Where, key: str, n: int | None, bound: float) -> np.ndarray:
  """(N,) float32 labels (docs/methods.md §1): finite and within [-bound, bound]; (N, 1) is flattened."""
  arr = _numeric(value, where, key, kinds="iuf")
  if arr.ndim == 2 and arr.shape[1] == 1:
    arr = arr.reshape(-1)
  _check_shape(arr, where, key, (n,), "(N,) labels")
  arr = arr.astype(np.float32, copy=False)
  bad = ~(np.abs(arr) <= bound)
  if bad.any():
    (i,) = _first_bad(bad)
    raise where.error(key, f"expected finite labels in [{-bound:g}, {bound:g}], "
                      f"got {_fmt(arr[i])} at sample {i}")
  return arr


def _text_bert(value: Any, where: _Where, n: int, vocab_size: int) -> np.ndarray:
  """(N, 3, L) int32 BERT input (docs/methods.md §1) from the float array of the file, ids checked."""
  key = "text_bert"
  arr = _numeric(value, where, key)
  _check_shape(arr, where, key, (n, 3, None), "(N, 3, L) text_bert")
  rows = (("token ids (row 0)", vocab_size, f"integers in [0, {vocab_size})"),
          ("attention mask (row 1)", 2, "0 or 1"), ("segment ids (row 2)", 2, "0 or 1"))
  for row, (what, high, allowed) in enumerate(rows):
    values = arr[:, row, :]
    bad = ~((values >= 0) & (values < high))
    if arr.dtype.kind == "f":
      bad |= values != np.floor(values)
    if bad.any():
      i, j = _first_bad(bad)
      raise where.error(key, f"expected {what} to be {allowed}, "
                        f"got {_fmt(values[i, j])} at sample {i}, position {j}")
  return arr.astype(np.int32, copy=False)


def row_chunks(shape: tuple[int, ...], max_elements: int = 1 << 22) -> Iterator[slice]:
  """Consecutive row ranges of an array of `shape`, each at most ~`max_elements` elements."""
  per_row = max(1, int(np.prod(shape[1:])))
  step = max(1, max_elements // per_row)
  for start in range(0, shape[0], step):
    yield slice(start, min(start + step, shape[0]))


def clean_feature_rows(block: np.ndarray, where: _Where, key: str, start: int) -> None:
  """Sets ±inf to 0 in place (docs/methods.md §1: `-inf` audio frames) and rejects NaN in `block`, the
  rows of a feature array that begin at sample `start` (named in the error)."""
  nan = np.isnan(block)
  if nan.any():
    i, *rest = _first_bad(nan)
    raise where.error(key, f"expected no NaN in features, got NaN at sample {start + i}, "
                      f"index {tuple(rest)}")
  inf = np.isinf(block)
  if inf.any():
    block[inf] = 0.0


def _zero_infinities(arr: np.ndarray, where: _Where, key: str) -> None:
  """`clean_feature_rows` over `arr` in row chunks (bounded temporary memory)."""
  for rows in row_chunks(arr.shape):
    clean_feature_rows(arr[rows], where, key, rows.start)


def checked_features(value: Any, where: _Where, key: str, expected: tuple[int | None, ...],
                     names: str) -> np.ndarray:
  """`value` as a numeric array whose rank and sizes match `expected`; not converted or copied."""
  arr = _numeric(value, where, key)
  _check_shape(arr, where, key, expected, names)
  return arr


def _features(value: Any, where: _Where, key: str, expected: tuple[int | None, ...],
              names: str) -> np.ndarray:
  """A float32 feature array of the given shape with ±inf set to 0 (no copy when possible)."""
  arr = checked_features(value, where, key, expected, names)
  if arr.dtype != np.float32:
    arr = arr.astype(np.float32)
  elif not arr.flags.writeable:
    arr = arr.copy()
  _zero_infinities(arr, where, key)
  return arr


def _lengths(value: Any, where: _Where, key: str, n: int, t: int) -> np.ndarray:
  """(N,) int32 valid frame counts in [1, T]; absent (aligned files) means all T frames."""
  if value is None:
    return np.full((n,), t, dtype=np.int32)
  arr = _numeric(value, where, key, kinds="iuf")
  _check_shape(arr, where, key, (n,), "(N,) lengths")
  bad = ~((arr >= 1) & (arr <= t))
  if arr.dtype.kind == "f":
    bad |= arr != np.floor(arr)
  if bad.any():
    (i,) = _first_bad(bad)
    raise where.error(
        key, f"expected integer lengths in [1, {t}], got {_fmt(arr[i])} at sample {i}")
  return arr.astype(np.int32, copy=False)


def _strings(value: Any, where: _Where, key: str, n: int) -> np.ndarray:
  """(N,) str/object array (ids, raw_text) kept as numpy str/object array."""
  arr = value if isinstance(value, np.ndarray) else np.asarray(value, dtype=object)
  if arr.dtype.kind not in "OUS":
    raise where.error(key, f"expected an (N,) array of str, got dtype {arr.dtype}")
  _check_shape(arr, where, key, (n,), "(N,) strings")
  return arr


def _required(raw: dict, where: _Where, key: str) -> Any:
  if key not in raw:
    present = ", ".join(sorted(str(k) for k in raw))
    raise where.error(key, f"expected key to be present, got keys [{present}]")
  return raw.pop(key)


# Turns one raw feature array (audio, vision, text) into the array a `Split` holds:
# (value, where, key, expected shape, shape names) -> array. `_features` keeps it in memory;
# `msa_jax.data.ondisk` streams it to a file instead.
FeatureHandler = Callable[[Any, _Where, str, tuple, str], np.ndarray]


def _build_split(raw: Any, where: _Where, limits: _Limits,
                 features: FeatureHandler = _features) -> Split:
  """Validates one raw split dict (docs/methods.md §1 table) into a `Split`; consumes `raw`'s entries."""
  if not isinstance(raw, Mapping):
    raise DataFormatError(_one_line(
        f"{where.file}: split '{where.split}': expected a dict of arrays, "
        f"got {type(raw).__name__}"))
  raw = dict(raw)
  labels = _labels(_required(raw, where, "regression_labels"), where, "regression_labels",
                   None, limits.label_bound)
  n = int(labels.shape[0])
  if n == 0:
    raise where.error("regression_labels", "expected at least one sample, got 0")
  text_bert = _text_bert(_required(raw, where, "text_bert"), where, n, limits.vocab_size)
  seq_len = int(text_bert.shape[2])
  audio = features(_required(raw, where, "audio"), where, "audio", (n, None, None),
                   "(N, Ta, Da) audio")
  vision = features(_required(raw, where, "vision"), where, "vision", (n, None, None),
                    "(N, Tv, Dv) vision")
  optional: dict[str, Any] = {}
  if "text" in raw:
    optional["text"] = features(raw.pop("text"), where, "text", (n, seq_len, None),
                                f"(N, L={seq_len}, Dt) text")
  for suffix in "TAV":
    key = f"regression_labels_{suffix}"
    if key in raw:
      optional[f"labels_{suffix}"] = _labels(raw.pop(key), where, key, n, limits.label_bound)
  if "id" in raw:
    optional["ids"] = _strings(raw.pop("id"), where, "id", n)
  if "raw_text" in raw:
    optional["raw_text"] = _strings(raw.pop("raw_text"), where, "raw_text", n)
  return Split(
      text_bert=text_bert,
      audio=audio,
      vision=vision,
      audio_lengths=_lengths(raw.pop("audio_lengths", None), where, "audio_lengths", n,
                             audio.shape[1]),
      vision_lengths=_lengths(raw.pop("vision_lengths", None), where, "vision_lengths", n,
                              vision.shape[1]),
      labels=labels,
      **optional,
  )


def _dims(split: Split) -> dict[str, tuple[str, tuple[int, ...]]]:
  """The per-key sizes that must agree across splits: L, (Ta, Da), (Tv, Dv), Dt."""
  dims = {"text_bert": ("L", (split.text_len,)), "audio": ("(Ta, Da)", split.audio_shape),
          "vision": ("(Tv, Dv)", split.vision_shape)}
  if split.text is not None:
    dims["text"] = ("Dt", (int(split.text.shape[2]),))
  return dims


def _check_consistent(splits: dict[str, Split], files: dict[str, str]) -> None:
  """All splits share L, (Ta, Da), (Tv, Dv) and the text feature size with 'train' (docs/methods.md §1)."""
  ref = _dims(splits["train"])
  for name, split in splits.items():
    for key, (what, got) in _dims(split).items():
      if key in ref and ref[key][1] != got:
        want = ref[key][1]
        show_want = str(want[0]) if len(want) == 1 else str(want)
        show_got = str(got[0]) if len(got) == 1 else str(got)
        raise _Where(files[name], name).error(
            key, f"expected {what} = {show_want} as in split 'train', got {show_got}")


# ---------------------------------------------------------------------------------------------
# Public API.


def _limits(dataset: str | None, vocab_size: int | None) -> _Limits:
  if dataset is None:
    limits = _DEFAULT_LIMITS
  elif isinstance(dataset, str) and dataset.lower() in _DATASETS:
    limits = _DATASETS[dataset.lower()]
  else:
    raise ValueError(f"unknown dataset {dataset!r}: expected one of {sorted(_DATASETS)} or None")
  if vocab_size is not None:
    integral = isinstance(vocab_size, (int, np.integer)) and not isinstance(vocab_size, bool)
    if not integral or vocab_size < 1:
      raise ValueError(f"vocab_size: expected a positive int, got {vocab_size!r}")
    limits = dataclasses.replace(limits, vocab_size=int(vocab_size))
  return limits


def _load_file(path: Path, limits: _Limits,
               features: FeatureHandler) -> tuple[dict[str, Split], dict[str, str], dict]:
  """One MMSA pickle {'train': {...}, 'valid': {...}, 'test': {...}, [ood_*], [metadata]}."""
  source = str(path)
  data = _read_pickle(path)
  if not isinstance(data, Mapping):
    raise DataFormatError(_one_line(
        f"{source}: expected a dict of splits {{'train', 'valid', 'test'}}, "
        f"got {type(data).__name__}"))
  data = dict(data)
  for name in IID_SPLITS:
    if name not in data:
      present = ", ".join(sorted(str(k) for k in data))
      hint = " (a flat split file? pass GEAR's directory instead)" if "text_bert" in data else ""
      raise DataFormatError(_one_line(
          f"{source}: split '{name}': missing; expected top-level keys train, valid, test, "
          f"got [{present}]{hint}"))
  metadata = data.pop("metadata", {})
  if not isinstance(metadata, Mapping):
    raise DataFormatError(_one_line(
        f"{source}: key 'metadata': expected a dict, got {type(metadata).__name__}"))
  splits = {}
  for name in IID_SPLITS + OOD_SPLITS:
    if name in data:
      splits[name] = _build_split(data.pop(name), _Where(source, name), limits, features)
  return splits, {name: source for name in splits}, dict(metadata)


def _load_gear_dir(path: Path, limits: _Limits,
                   features: FeatureHandler) -> tuple[dict[str, Split], dict[str, str]]:
  """GEAR's directory of flat per-split pickles (docs/methods.md §1), renamed to msa_jax split names."""
  splits, files = {}, {}
  for name, filename in GEAR_FILES.items():
    file = path / filename
    if not file.is_file():
      if name in IID_SPLITS:
        raise DataFormatError(_one_line(
            f"{file}: split '{name}': missing file {filename} (GEAR directory layout expects "
            f"{', '.join(GEAR_FILES.values())})"))
      continue
    splits[name] = _build_split(_read_pickle(file), _Where(str(file), name), limits, features)
    files[name] = str(file)
  return splits, files


def load_source(path: Path, dataset: str | None, vocab_size: int | None,
                features: FeatureHandler = _features) -> tuple[dict[str, Split], dict]:
  """Reads and validates an MMSA pickle or a GEAR split directory, every feature array passing
  through `features`; see `load_mmsa_with_metadata` (which also accepts converted directories)."""
  limits = _limits(dataset, vocab_size)
  path = Path(path)
  if path.is_dir():
    splits, files = _load_gear_dir(path, limits, features)
    metadata: dict = {}
  elif path.is_file():
    splits, files, metadata = _load_file(path, limits, features)
  else:
    raise DataFormatError(
        f"{path}: not found; expected an MMSA feature pickle or a GEAR split directory")
  _check_consistent(splits, files)
  return splits, metadata


def load_mmsa_with_metadata(path: str | os.PathLike, dataset: str | None = None,
                            vocab_size: int | None = None) -> tuple[dict[str, Split], dict]:
  """Loads and validates an MMSA feature pickle or a GEAR split directory (docs/methods.md §1).

  Args:
    path: an MMSA pickle `{'train', 'valid', 'test'[, 'ood_*'][, 'metadata']}`, a directory
      holding GEAR's train.pkl, valid.pkl, test_iid.pkl and optionally test_nn_{text, audio,
      vision, tav}.pkl (loaded as splits test, ood_text, ood_audio, ood_vision, ood_all), or a
      directory written by `msa_jax.data.ondisk.convert` (recognised by its manifest.json;
      opened memory-mapped).
    dataset: 'mosi' / 'mosei' (labels in [-3, 3]), 'sims' (labels in [-1, 1]), case-insensitive,
      or None (labels finite with |y| <= 3).
    vocab_size: token ids must lie in [0, vocab_size); default 30522 (bert-base-uncased), 21128
      (bert-base-chinese) for 'sims'. Pass the text encoder's vocabulary size.

  Returns:
    (splits, metadata): split name -> `Split`, and the file's top-level 'metadata' dict ({} when
    absent, always {} for a GEAR directory).

  Raises:
    DataFormatError: the path does not exist, or a file is unsafe, unreadable or malformed.
    ValueError: unknown `dataset` or bad `vocab_size`.
  """
  path = Path(path)
  from msa_jax.data import ondisk  # ondisk builds on this module.
  if ondisk.is_converted(path):
    return ondisk.open_ondisk_with_metadata(path, dataset, vocab_size)
  return load_source(path, dataset, vocab_size)


def load_mmsa(path: str | os.PathLike, dataset: str | None = None,
              vocab_size: int | None = None) -> dict[str, Split]:
  """Loads and validates MMSA/GEAR data (docs/methods.md §1); see `load_mmsa_with_metadata`."""
  return load_mmsa_with_metadata(path, dataset, vocab_size)[0]
