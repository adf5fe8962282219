"""A run directory's bookkeeping besides checkpoints: the fingerprint of the data it was trained
on, the checks before a run starts there, the undoing of a failed start, and where to resume.

The data fingerprint (`data.json`) holds the data's size in bytes and a BLAKE2b hash of every
array of every split as loaded (after OOD splits are applied); for a directory converted by
`scripts/convert_data.py`, of its manifest (which records the source file and the arrays' shapes)
and the sizes of its files, and for a built TFDS dataset (`tfds:NAME`), of the names, sizes and
`dataset_info.json` of its built directory, so that data read lazily is not read to fingerprint it.
`--mode=eval` and a resumed run refuse data whose fingerprint differs from the recorded one.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import os
import pathlib
import shutil
from collections.abc import Iterator

import numpy as np

from msa_jax.data import loader, ondisk
from msa_jax.data.split import Split
from msa_jax.errors import RunConfigError
from msa_jax.io import read_json, write_json_atomic

FINGERPRINT_FILE = "data.json"


def _size(path: pathlib.Path) -> int:
  if path.is_dir():
    return sum(p.stat().st_size for p in sorted(path.rglob("*")) if p.is_file())
  return path.stat().st_size


def _hash_files(h: hashlib.blake2b, directory: pathlib.Path, contents: str) -> int:
  """Adds every file's relative name and size under `directory`, and the bytes of `contents`;
  returns the files' total size."""
  total = 0
  for p in sorted(directory.rglob("*")):
    if p.is_file():
      size = p.stat().st_size
      h.update(f"{p.relative_to(directory)}:{size}\n".encode())
      total += size
  if (directory / contents).is_file():
    h.update((directory / contents).read_bytes())
  return total


def data_fingerprint(path: str | os.PathLike, splits: dict[str, Split]) -> dict:
  """{"path", "bytes", "blake2b"} of the data at `path` loaded as `splits` (see the module
  docstring)."""
  h = hashlib.blake2b(digest_size=16)
  if loader.is_tfds(path):
    from msa_jax.data import tfds_mmsa  # TFDS is an optional dependency

    built = tfds_mmsa.built_directory(str(path)[len(loader.TFDS_PREFIX) :])
    size = _hash_files(h, built, "dataset_info.json")
    return {"path": str(path), "bytes": size, "blake2b": h.hexdigest()}
  path = pathlib.Path(path).expanduser()
  if ondisk.is_converted(path):
    size = _hash_files(h, path, ondisk.MANIFEST)
  else:
    size = _size(path)
    for name in sorted(splits):
      split = splits[name]
      for f in dataclasses.fields(split):
        arr = getattr(split, f.name)
        if arr is None:
          continue
        arr = np.asarray(arr)
        h.update(f"{name}.{f.name}:{arr.dtype.str}:{arr.shape}\n".encode())
        if arr.dtype.kind == "O":
          h.update("\x00".join(map(str, arr.ravel())).encode())
        else:
          h.update(np.ascontiguousarray(arr).data)
  return {"path": str(path.absolute()), "bytes": size, "blake2b": h.hexdigest()}


def _show(fp: dict) -> str:
  return f"{fp.get('blake2b')} ({fp.get('bytes')} bytes, {fp.get('path')})"


def check_fingerprint(workdir: pathlib.Path, fingerprint: dict) -> None:
  """Refuses data that differs from the data the run in `workdir` was trained on (a run without a
  recorded fingerprint is accepted)."""
  saved_path = workdir / FINGERPRINT_FILE
  if not saved_path.is_file():
    return
  saved = read_json(saved_path)
  if (saved.get("blake2b"), saved.get("bytes")) != (fingerprint["blake2b"], fingerprint["bytes"]):
    raise RunConfigError(
      f"the data differs from the data the run in {workdir} was trained on: data fingerprint "
      f"{_show(fingerprint)}, recorded {_show(saved)} in {saved_path}; use the run's data, or a "
      "new --workdir to train on this data"
    )


def record_fingerprint(workdir: pathlib.Path, fingerprint: dict) -> None:
  """Writes `workdir/data.json` (once: a resumed run keeps the first record)."""
  path = workdir / FINGERPRINT_FILE
  if not path.exists():
    write_json_atomic(path, fingerprint)


def check_writable(workdir: pathlib.Path) -> None:
  """Refuses a workdir that is a file, or that this process cannot create or write in."""
  if workdir.exists() and not workdir.is_dir():
    raise RunConfigError(f"--workdir={workdir}: is a file; expected a directory (new or a run's)")
  existing = workdir
  while not existing.exists():
    existing = existing.parent
  if not existing.is_dir():
    raise RunConfigError(f"--workdir={workdir}: {existing} is a file; expected a directory")
  if not os.access(existing, os.W_OK | os.X_OK):
    raise RunConfigError(
      f"--workdir={workdir}: {existing} is not writable (permission denied or read-only); "
      "choose a --workdir you can write to"
    )


def check_trained(workdir: pathlib.Path, seeds: tuple[int, ...]) -> None:
  """For `--mode=eval`: every seed of `seeds` has a best checkpoint in `workdir`."""
  if not (workdir / "config.json").is_file():
    raise RunConfigError(
      f"--mode=eval: {workdir} holds no trained run (no config.json); train first (--mode=train)"
    )
  for seed in seeds:
    best = workdir / f"seed_{seed}" / "checkpoints" / "best"
    if not best.is_dir() or not any(p.name.isdigit() for p in best.iterdir()):
      raise RunConfigError(
        f"--mode=eval: seed {seed} has no selected checkpoint under {best}; train it first "
        "(--mode=train)"
      )


def _checkpoint_steps(workdir: pathlib.Path) -> set[pathlib.Path]:
  return {
    p
    for p in workdir.glob("seed_*/checkpoints/*/*")
    if p.name.isdigit() and p.parent.name in ("latest", "best")
  }


def _entries(workdir: pathlib.Path) -> set[pathlib.Path]:
  """The paths a start creates: the workdir's entries, the seeds' entries and their checkpoint
  directories."""
  out: set[pathlib.Path] = set()
  for pattern in ("*", "seed_*/*", "seed_*/checkpoints/*"):
    out.update(workdir.glob(pattern))
  return out | _checkpoint_steps(workdir)


@contextlib.contextmanager
def undo_failed_start(workdir: pathlib.Path) -> Iterator[None]:
  """Removes what the block created in `workdir` if it fails before saving any checkpoint, so
  that a failed start leaves the workdir as it was (or absent). A run that saved a checkpoint
  keeps everything: it can be resumed."""
  top = workdir
  while not top.parent.exists() and top.parent != top:
    top = top.parent
  existed = top.exists()
  before = _entries(workdir) if workdir.is_dir() else set()
  steps_before = _checkpoint_steps(workdir) if workdir.is_dir() else set()
  try:
    yield
  except BaseException:
    if workdir.is_dir() and not _checkpoint_steps(workdir) - steps_before:
      if not existed:
        shutil.rmtree(top, ignore_errors=True)
      else:
        new = sorted(_entries(workdir) - before, key=lambda p: len(p.parts))
        for p in new:
          if any(parent in new for parent in p.parents):
            continue
          if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
          else:
            p.unlink(missing_ok=True)
    raise


def resume_note(workdir: pathlib.Path) -> str:
  """Where an interrupted run in `workdir` resumes: its latest checkpoints, or from scratch."""
  latest: dict[str, int] = {}
  # seed_N/ of a run; <variant>/seed_N/ of side-by-side runs (GEAR and its plain model)
  for pattern in ("seed_*/checkpoints/latest/*", "*/seed_*/checkpoints/latest/*"):
    for p in workdir.glob(pattern):
      if p.name.isdigit():
        seed = str(p.parents[2].relative_to(workdir))
        latest[seed] = max(latest.get(seed, -1), int(p.name))
  if not latest:
    return f"no checkpoint was saved in {workdir}; the same command starts the run again"
  where = ", ".join(f"{seed} at step {step}" for seed, step in sorted(latest.items()))
  return f"the same command resumes the run in {workdir} from its latest checkpoints ({where})"
