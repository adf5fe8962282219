"""Safe reading of MMSA feature pickles and GEAR split directories.

A pickle can run code when it is loaded, so files are read with a restricted unpickler that admits
only numpy arrays, numpy dtypes/scalars and plain Python containers/scalars. Every split then passes
the checks of `msa_jax.data.validate`. `msa_jax.data.load` chooses between this reader and the
memory-mapped directories of `msa_jax.data.ondisk`.
"""

from __future__ import annotations

import collections
import math
import os
import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from numpy._core import multiarray as _np_multiarray
from numpy._core import numeric as _np_numeric

from msa_jax.data.split import IID_SPLITS, SPLITS, Split
from msa_jax.data.validate import (
  DataFormatError,
  FeatureHandler,
  Limits,
  Where,
  check_consistent,
  dataset_limits,
  float_features,
  one_line,
  split_from_dict,
)

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
  plain = {
    "set": set,
    "frozenset": frozenset,
    "complex": complex,
    "bytearray": bytearray,
    "slice": slice,
    "range": range,
  }
  for module in ("builtins", "__builtin__"):
    for name, obj in plain.items():
      table[(module, name)] = obj
  return table


_ALLOWED_GLOBALS = _allowed_globals()


class _NdarrayName:
  """What the name `numpy.ndarray` stands for in a data pickle: only the first argument of
  `_reconstruct`, which makes the (size-checked) array; it cannot be called or instantiated."""


class _RestrictedUnpickler(pickle.Unpickler):
  """Unpickler that resolves only the globals in `_ALLOWED_GLOBALS` (docs/methods.md §1), and
  refuses an allocation larger than the file could describe (`limit` bytes): a pickle of a few
  bytes can ask for `bytearray(2**40)` or an empty array of any shape."""

  def __init__(self, file: Any, source: str, limit: int):
    super().__init__(file, encoding="latin1")
    self._source = source
    self._limit = limit
    self._ndarray = _NdarrayName()
    self._bounded = {
      "bytearray": self._bytearray,
      "_reconstruct": self._reconstruct,
    }

  def _check_size(self, nbytes: int, what: str) -> None:
    if nbytes > self._limit:
      raise DataFormatError(
        one_line(
          f"{self._source}: refused {what} of {nbytes} bytes: more than the file "
          f"({self._limit} bytes) could describe"
        )
      )

  def _bytearray(self, *args: Any) -> bytearray:
    if args and isinstance(args[0], int):
      self._check_size(args[0], "a bytearray")
    return bytearray(*args)

  def _array_bytes(self, shape: Any, dtype: Any) -> int:
    shape = (shape,) if isinstance(shape, int) else tuple(shape)
    return math.prod(int(d) for d in shape) * np.dtype(dtype).itemsize

  def _reconstruct(self, subtype: Any, shape: Any, dtype: Any) -> np.ndarray:
    if subtype is not self._ndarray:
      raise DataFormatError(one_line(f"{self._source}: refused an array of type {subtype!r}"))
    self._check_size(self._array_bytes(shape, dtype), "an array")
    return _np_multiarray._reconstruct(np.ndarray, shape, dtype)

  def find_class(self, module: str, name: str) -> Any:
    try:
      found = _ALLOWED_GLOBALS[(module, name)]
    except KeyError:
      raise DataFormatError(
        one_line(
          f"{self._source}: refused to load global '{module}.{name}': only numpy arrays, "
          "dtypes and plain Python containers/scalars are allowed in a data pickle"
        )
      ) from None
    if (module, name) == ("numpy", "ndarray"):
      return self._ndarray
    if name in self._bounded and found in (bytearray, _np_multiarray._reconstruct):
      return self._bounded[name]
    return found

  def persistent_load(self, pid: Any) -> Any:
    raise DataFormatError(
      one_line(
        f"{self._source}: refused persistent id {pid!r}: a data pickle must not reference "
        "external objects"
      )
    )


def _read_pickle(path: Path) -> Any:
  """Unpickles `path` with the restricted unpickler; every failure becomes a DataFormatError."""
  source = str(path)
  try:
    with open(path, "rb") as f:
      return _RestrictedUnpickler(f, source, os.fstat(f.fileno()).st_size).load()
  except DataFormatError:
    raise
  except EOFError:
    raise DataFormatError(
      f"{source}: file is truncated or empty (pickle data ended early)"
    ) from None
  except pickle.UnpicklingError as e:
    text = str(e)
    if "truncated" in text:
      raise DataFormatError(one_line(f"{source}: file is truncated ({text})")) from None
    raise DataFormatError(one_line(f"{source}: not a valid pickle file ({text})")) from None
  except OSError as e:
    raise DataFormatError(one_line(f"{source}: cannot read file ({e})")) from None
  except Exception as e:  # noqa: BLE001 - any other failure inside pickle means a malformed file.
    raise DataFormatError(
      one_line(f"{source}: malformed pickle ({type(e).__name__}: {e})")
    ) from None


# ---------------------------------------------------------------------------------------------
# Files and directories.


def _load_file(
  path: Path, limits: Limits, features: FeatureHandler
) -> tuple[dict[str, Split], dict[str, str], dict]:
  """One MMSA pickle {'train': {...}, 'valid': {...}, 'test': {...}, [ood_*], [metadata]}; the
  split names it reads are `SPLITS`."""
  source = str(path)
  data = _read_pickle(path)
  if not isinstance(data, Mapping):
    raise DataFormatError(
      one_line(
        f"{source}: expected a dict of splits {{'train', 'valid', 'test'}}, "
        f"got {type(data).__name__}"
      )
    )
  data = dict(data)
  for name in IID_SPLITS:
    if name not in data:
      present = ", ".join(sorted(str(k) for k in data))
      hint = " (a flat split file? pass GEAR's directory instead)" if "text_bert" in data else ""
      raise DataFormatError(
        one_line(
          f"{source}: split '{name}': missing; expected top-level keys train, valid, test, "
          f"got [{present}]{hint}"
        )
      )
  metadata = data.pop("metadata", {})
  if not isinstance(metadata, Mapping):
    raise DataFormatError(
      one_line(f"{source}: key 'metadata': expected a dict, got {type(metadata).__name__}")
    )
  splits = {}
  for name in SPLITS:
    if name in data:
      splits[name] = split_from_dict(data.pop(name), Where(source, name), limits, features)
  return splits, {name: source for name in splits}, dict(metadata)


def _load_gear_dir(
  path: Path, limits: Limits, features: FeatureHandler
) -> tuple[dict[str, Split], dict[str, str]]:
  """GEAR's directory of flat per-split pickles (docs/methods.md §1), renamed to msa_jax split
  names."""
  splits, files = {}, {}
  for name, filename in GEAR_FILES.items():
    file = path / filename
    if not file.is_file():
      if name in IID_SPLITS:
        raise DataFormatError(
          one_line(
            f"{file}: split '{name}': missing file {filename} (GEAR directory layout expects "
            f"{', '.join(GEAR_FILES.values())})"
          )
        )
      continue
    splits[name] = split_from_dict(_read_pickle(file), Where(str(file), name), limits, features)
    files[name] = str(file)
  return splits, files


def load_source(
  path: Path, dataset: str | None, vocab_size: int | None, features: FeatureHandler = float_features
) -> tuple[dict[str, Split], dict]:
  """Reads and validates an MMSA pickle or a GEAR split directory, every feature array passing
  through `features`; see `msa_jax.data.load_with_metadata` (which also opens converted
  directories)."""
  limits = dataset_limits(dataset, vocab_size)
  path = Path(path)
  if path.is_dir():
    splits, files = _load_gear_dir(path, limits, features)
    metadata: dict = {}
  elif path.is_file():
    splits, files, metadata = _load_file(path, limits, features)
  else:
    raise DataFormatError(
      f"{path}: not found; expected an MMSA feature pickle or a GEAR split directory"
    )
  check_consistent(splits, files)
  return splits, metadata
