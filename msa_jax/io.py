"""Atomic file writing: a reader never sees a half-written file; a failed write keeps the old one.

Every file msa_jax writes for a user (configs, results, reports, figures, generated data, OOD index
files, measurements) goes through `atomic_file`: the content is written to a temporary file in the
target's directory, flushed to disk, then renamed onto the target with `os.replace`.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import pathlib
import tempfile
from collections.abc import Iterator
from typing import IO, Any

import numpy as np

from msa_jax.errors import FileContentError


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike, mode: str = "w", suffix: str = ".tmp") -> Iterator[IO]:
  """An open temporary file beside `path` that replaces `path` when the block ends without error.

  Args:
    path: the target; its parent directories are created.
    mode: "w" (text, UTF-8) or "wb" (bytes).
    suffix: the temporary file's suffix (a writer that infers the format from it may need one).
  """
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)
  try:
    with os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as f:
      yield f
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.unlink(tmp)
    raise


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
  """Writes `text` to `path` atomically (see `atomic_file`)."""
  with atomic_file(path) as f:
    f.write(text)


def to_jsonable(x: Any) -> Any:
  """`x` with numpy numbers as Python numbers, tuples as lists, keys as strings and NaN as None."""
  if isinstance(x, dict):
    return {str(k): to_jsonable(v) for k, v in x.items()}
  if isinstance(x, (list, tuple)):
    return [to_jsonable(v) for v in x]
  if isinstance(x, (np.floating, float)):
    return None if math.isnan(float(x)) else float(x)
  if isinstance(x, np.integer):
    return int(x)
  return x


def write_json_atomic(path: str | os.PathLike, obj: Any) -> None:
  """`obj` as indented strict JSON (NaN written as null, see `to_jsonable`), atomically."""
  text = json.dumps(to_jsonable(obj), indent=2, sort_keys=False, allow_nan=False)
  write_text_atomic(path, text + "\n")


def read_json(path: str | os.PathLike) -> Any:
  """The JSON content of `path`; a truncated or damaged file raises `FileContentError` naming it."""
  try:
    with open(path, encoding="utf-8") as f:
      return json.load(f)
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise FileContentError(
      f"{path}: not valid JSON ({e}): the file is truncated or damaged; restore it, or remove it "
      "to have it written again"
    ) from None
