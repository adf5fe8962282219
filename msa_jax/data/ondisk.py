"""MOSEI-sized data: a one-time conversion of MMSA / GEAR pickles into memory-mapped numpy files.

The real MOSEI unaligned file is a 13.65 GB pickle, and a pickle can only be read whole. `convert`
reads it once (with the restricted unpickler and every check of `msa_jax.data.mmsa`) and writes
one `.npy` file per split and `Split` field; `open_ondisk` (and `msa_jax.data.load`, which
recognises a converted directory) opens them with `np.load(mmap_mode="r")`, so a run reads only the
rows it uses and `msa_jax.data.pipeline` fetches a batch's rows with `pread` (page cache, not
process memory).

Format: memory-mapped `.npy`, needing nothing beyond numpy and leaving every `Split` consumer
unchanged. The other on-disk form is a TFDS `array_record` dataset (`msa_jax.data.tfds_mmsa`); on
MOSEI-sized data `.npy` opens in a fraction of a second instead of about 40 s and serves batches
2.6× faster (docs/benchmarks.md, "On-disk forms"), which is why it is the recommended form for
training.

A converted directory holds:
  manifest.json         format and version, the source file, the dataset limits it was checked
                        with, the source's metadata, and per split and field: file, dtype, shape
                        (and the sha256 of every file except the large feature arrays)
  <split>.<field>.npy   C-ordered little-endian arrays: audio / vision / text float32 (non-finite
                        values already set to 0), text_bert / lengths int32, labels float32,
                        ids / raw_text fixed-width str. Arrays that several splits share (the
                        planted OOD splits reuse test's) are written once and named by each.

Conversion streams: each feature array is checked, converted to float32 and cleaned (NaN refused,
±inf set to 0) in row chunks that are written straight to the file, so the peak memory is the
unpickled data plus one chunk. It writes into a temporary directory beside the target and renames
it at the end; an existing non-empty target is refused.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import tempfile
import weakref
from pathlib import Path
from typing import Any

import numpy as np

from msa_jax.data import mmsa, validate
from msa_jax.data.split import IID_SPLITS, SPLITS, Split
from msa_jax.data.validate import DataFormatError

MANIFEST = "manifest.json"
FORMAT = "msa_jax.ondisk"
VERSION = 1
# Split fields written in chunks and opened without a checksum (they are the bulk of the data).
FEATURE_FIELDS = ("audio", "vision", "text")
# Split field -> the MMSA key that error messages name.
_SOURCE_KEYS = {
  "labels": "regression_labels",
  "labels_T": "regression_labels_T",
  "labels_A": "regression_labels_A",
  "labels_V": "regression_labels_V",
  "ids": "id",
}
_REQUIRED = ("text_bert", "audio", "vision", "audio_lengths", "vision_lengths", "labels")


def is_converted(path: str | os.PathLike) -> bool:
  """True when `path` is a directory written by `convert`: it holds a manifest, or `.npy` files
  and no GEAR `train.pkl` (so that a lost manifest is reported as such)."""
  path = Path(path)
  if not path.is_dir():
    return False
  return (path / MANIFEST).exists() or (
    any(path.glob("*.npy")) and not (path / mmsa.GEAR_FILES["train"]).exists()
  )


# ---------------------------------------------------------------------------------------------
# Conversion.


def _check_target(out: Path) -> None:
  if out.exists() and (not out.is_dir() or any(out.iterdir())):
    raise FileExistsError(
      f"{out}: already exists and is not an empty directory; a conversion never overwrites "
      "data: remove it or choose another output directory"
    )


def _fsync_file(path: Path) -> None:
  with open(path, "rb") as f:
    os.fsync(f.fileno())


class _Writer:
  """Writes a conversion's arrays into `directory`; feature arrays pass through it as the
  `validate.FeatureHandler` of `mmsa.load_source` and come back memory-mapped."""

  def __init__(self, directory: Path):
    self.directory = directory
    self._features: dict[int, tuple[weakref.ref, np.memmap]] = {}
    self._small: dict[str, str] = {}

  def __call__(self, value: Any, where: Any, key: str, expected: tuple, names: str) -> np.ndarray:
    arr = validate.checked_features(value, where, key, expected, names)
    seen = self._features.get(id(arr))
    if seen is not None and seen[0]() is arr:
      return seen[1]
    file = self.directory / f"{where.split}.{key}.npy"
    self._stream(arr, file, where, key)
    opened = np.load(file, mmap_mode="r")
    self._features[id(arr)] = (weakref.ref(arr), opened)
    return opened

  @staticmethod
  def _stream(arr: np.ndarray, file: Path, where: Any, key: str) -> None:
    """float32 copy of `arr` with NaN refused and ±inf set to 0, written chunk by chunk."""
    header = np.lib.format.open_memmap(file, mode="w+", dtype=np.float32, shape=arr.shape)
    offset = header.offset
    del header
    with open(file, "r+b") as f:
      f.seek(offset)
      for rows in validate.row_chunks(arr.shape):
        block = np.array(arr[rows], dtype=np.float32, order="C")
        validate.clean_feature_rows(block, where, key, rows.start)
        f.write(block.data)
      f.flush()
      os.fsync(f.fileno())

  def small(self, arr: np.ndarray, stem: str) -> dict[str, Any]:
    """Writes a small array (labels, lengths, token ids, strings) once per distinct content."""
    buffer = io.BytesIO()
    np.save(buffer, arr, allow_pickle=False)
    data = buffer.getvalue()
    digest = hashlib.sha256(data).hexdigest()
    if digest not in self._small:
      name = f"{stem}.npy"
      (self.directory / name).write_bytes(data)
      _fsync_file(self.directory / name)
      self._small[digest] = name
    return {
      "file": self._small[digest],
      "dtype": arr.dtype.str,
      "shape": list(arr.shape),
      "sha256": digest,
    }


def _storable_strings(arr: np.ndarray, source: str, split: str, field: str) -> np.ndarray:
  """An (N,) object array of str (or of bytes) as a fixed-width numpy array a memmap can hold."""
  if arr.dtype.kind != "O":
    return arr
  items = arr.tolist()
  for kind in (str, bytes):
    if all(isinstance(x, kind) for x in items):
      return np.array(items, dtype=kind)
  bad = next(x for x in items if not isinstance(x, (str, bytes)))
  raise validate.Where(source, split).error(
    _SOURCE_KEYS.get(field, field),
    f"expected every item to be str, got {type(bad).__name__} ({bad!r:.60})",
  )


def plain(value: Any) -> Any:
  """Metadata as JSON: numpy scalars and arrays become Python numbers and lists."""
  if isinstance(value, dict):
    return {str(k): plain(v) for k, v in value.items()}
  if isinstance(value, (list, tuple, set, frozenset)):
    return [plain(v) for v in value]
  if isinstance(value, np.ndarray):
    return plain(value.tolist())
  if isinstance(value, np.generic):
    return value.item()
  if isinstance(value, (bytes, bytearray)):
    return value.decode("latin-1")
  if value is None or isinstance(value, (bool, int, float, str)):
    return value
  return repr(value)


def _array_entries(
  split_name: str, split: Split, writer: _Writer, source: str
) -> dict[str, dict[str, Any]]:
  """Manifest entries of one split's fields, writing the small arrays."""
  entries = {}
  for field, arr in vars(split).items():
    if arr is None:
      continue
    if field in FEATURE_FIELDS:
      entries[field] = {
        "file": Path(arr.filename).name,
        "dtype": arr.dtype.str,
        "shape": list(arr.shape),
      }
    else:
      arr = _storable_strings(np.asarray(arr), source, split_name, field)
      entries[field] = writer.small(np.ascontiguousarray(arr), f"{split_name}.{field}")
  return entries


def _source_info(source: Path) -> dict[str, Any]:
  if source.is_dir():
    size = sum(f.stat().st_size for f in source.glob("*.pkl"))
    return {"path": str(source.resolve()), "layout": "GEAR split directory", "bytes": size}
  return {"path": str(source.resolve()), "layout": "MMSA pickle", "bytes": source.stat().st_size}


def convert(
  source: str | os.PathLike,
  out_dir: str | os.PathLike,
  dataset: str | None = None,
  vocab_size: int | None = None,
) -> Path:
  """Converts an MMSA pickle or a GEAR split directory into a memory-mapped directory (once).

  Args:
    source: an MMSA feature pickle or GEAR's directory of split pickles (as `msa_jax.data.load`).
    out_dir: the directory to create; it must not exist or be empty.
    dataset, vocab_size: the validation limits, as for `msa_jax.data.load` (checked again when
      opened).

  Returns:
    `out_dir` as a Path.

  Raises:
    FileExistsError: `out_dir` exists and is not an empty directory.
    DataFormatError: the source is unsafe, unreadable or malformed (nothing is left behind).
  """
  source, out = Path(source), Path(out_dir)
  validate.dataset_limits(dataset, vocab_size)
  _check_target(out)
  out.parent.mkdir(parents=True, exist_ok=True)
  tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
  try:
    writer = _Writer(tmp)
    splits, metadata = mmsa.load_source(source, dataset, vocab_size, writer)
    manifest = {
      "format": FORMAT,
      "version": VERSION,
      "source": _source_info(source),
      "dataset": dataset,
      "vocab_size": vocab_size,
      "splits": {
        name: {
          "num_samples": len(split),
          "arrays": _array_entries(name, split, writer, str(source)),
        }
        for name, split in splits.items()
      },
      "metadata": plain(metadata),
    }
    del splits
    (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
    _fsync_file(tmp / MANIFEST)
    umask = os.umask(0)
    os.umask(umask)
    tmp.chmod(0o777 & ~umask)
    _check_target(out)
    os.rename(tmp, out)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise
  return out


# ---------------------------------------------------------------------------------------------
# Opening.


def _read_manifest(path: Path) -> dict[str, Any]:
  file = path / MANIFEST
  if not path.is_dir():
    raise DataFormatError(f"{path}: not found; expected a directory written by ondisk.convert")
  if not file.is_file():
    raise DataFormatError(
      f"{file}: missing; a converted directory needs the manifest that "
      "scripts/convert_data.py writes (convert the source again)"
    )
  try:
    manifest = json.loads(file.read_text(encoding="utf-8"))
  except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
    raise DataFormatError(validate.one_line(f"{file}: unreadable manifest ({e})")) from None
  if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
    raise DataFormatError(f"{file}: not a {FORMAT} manifest")
  if manifest.get("version") != VERSION:
    raise DataFormatError(
      f"{file}: format version {manifest.get('version')!r}, this msa_jax "
      f"reads version {VERSION}; convert the source again"
    )
  splits = manifest.get("splits")
  if not isinstance(splits, dict) or not all(name in splits for name in IID_SPLITS):
    raise DataFormatError(f"{file}: expected 'splits' to hold {', '.join(IID_SPLITS)}")
  return manifest


def _sha256(file: Path) -> str:
  digest = hashlib.sha256()
  with open(file, "rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
      digest.update(block)
  return digest.hexdigest()


def _open_array(directory: Path, spec: Any, where: str, opened: dict[str, np.memmap]) -> np.memmap:
  """The memory-mapped array a manifest entry names, checked against the entry."""
  manifest = directory / MANIFEST
  name = spec.get("file") if isinstance(spec, dict) else None
  if not isinstance(name, str) or Path(name).name != name or not name.endswith(".npy"):
    raise DataFormatError(f"{manifest}: {where}: expected a file name ending in .npy, got {name!r}")
  file = directory / name
  if name in opened:
    return opened[name]
  if not file.is_file():
    raise DataFormatError(f"{file}: missing ({where} in {manifest})")
  if "sha256" in spec and _sha256(file) != spec["sha256"]:
    raise DataFormatError(
      f"{file}: checksum differs from {manifest}; the file changed or is "
      "corrupted (convert the source again)"
    )
  try:
    arr = np.load(file, mmap_mode="r", allow_pickle=False)
  except (ValueError, OSError, EOFError) as e:
    raise DataFormatError(validate.one_line(f"{file}: not a readable .npy file ({e})")) from None
  if arr.dtype.str != spec.get("dtype") or list(arr.shape) != spec.get("shape"):
    raise DataFormatError(
      f"{file}: expected dtype {spec.get('dtype')} shape {spec.get('shape')} "
      f"as in {manifest}, got dtype {arr.dtype.str} shape {list(arr.shape)}"
    )
  opened[name] = arr
  return arr


def checked_split(
  arrays: dict[str, np.ndarray], name: str, files: dict[str, str], limits: Any
) -> Split:
  """The cheap checks of `msa_jax.data.load` again (labels, token ids, lengths, shapes) on the
  memmaps (or columns read on demand), under the limits of this call; feature values were cleaned
  when converted."""

  def where(field: str) -> validate.Where:
    return validate.Where(files[field], name)

  labels = validate.checked_labels(
    arrays["labels"], where("labels"), "regression_labels", None, limits.label_bound
  )
  n = len(labels)
  text_bert = validate.checked_text_bert(
    arrays["text_bert"], where("text_bert"), n, limits.vocab_size
  )
  fields: dict[str, Any] = {"labels": labels, "text_bert": text_bert}
  shapes = {
    "audio": ((n, None, None), "(N, Ta, Da) audio"),
    "vision": ((n, None, None), "(N, Tv, Dv) vision"),
    "text": ((n, text_bert.shape[2], None), "(N, L, Dt) text"),
  }
  for field, (expected, names) in shapes.items():
    if field in arrays:
      check = (
        validate.checked_features
        if isinstance(arrays[field], np.ndarray)
        else validate.checked_column
      )
      fields[field] = check(arrays[field], where(field), field, expected, names)
      if fields[field].dtype != np.float32:
        raise where(field).error(field, f"expected float32 features, got {fields[field].dtype}")
  for m in ("audio", "vision"):
    key = f"{m}_lengths"
    fields[key] = validate.checked_lengths(arrays[key], where(key), key, n, fields[m].shape[1])
  for field in ("labels_T", "labels_A", "labels_V"):
    if field in arrays:
      fields[field] = validate.checked_labels(
        arrays[field], where(field), _SOURCE_KEYS[field], n, limits.label_bound
      )
  for field in ("ids", "raw_text"):
    if field in arrays:
      fields[field] = validate.checked_strings(
        arrays[field], where(field), _SOURCE_KEYS.get(field, field), n
      )
  if "cue_signs" in arrays:
    fields["cue_signs"] = validate.checked_cue_signs(arrays["cue_signs"], where("cue_signs"), n)
  return Split(**fields)


def open_ondisk_with_metadata(
  path: str | os.PathLike, dataset: str | None = None, vocab_size: int | None = None
) -> tuple[dict[str, Split], dict]:
  """Opens a converted directory: split name -> `Split` of `np.memmap` arrays, and metadata.

  Every file is checked against the manifest (presence, dtype, shape; sha256 except feature
  arrays) and labels, token ids and lengths are validated again with `dataset` / `vocab_size`
  as `msa_jax.data.load` does; errors are `DataFormatError`s naming the file.
  """
  limits = validate.dataset_limits(dataset, vocab_size)
  path = Path(path)
  manifest = _read_manifest(path)
  opened: dict[str, np.memmap] = {}
  splits: dict[str, Split] = {}
  files: dict[str, str] = {}
  for name in SPLITS:
    entry = manifest["splits"].get(name)
    if entry is None:
      continue
    specs = entry.get("arrays") if isinstance(entry, dict) else None
    if not isinstance(specs, dict):
      raise DataFormatError(f"{path / MANIFEST}: split '{name}': expected an 'arrays' mapping")
    for field in _REQUIRED:
      if field not in specs:
        raise DataFormatError(f"{path / MANIFEST}: split '{name}': missing array '{field}'")
    arrays = {
      field: _open_array(path, spec, f"split '{name}', array '{field}'", opened)
      for field, spec in specs.items()
      if field in Split.__dataclass_fields__
    }
    split_files = {field: str(path / specs[field]["file"]) for field in arrays}
    splits[name] = checked_split(arrays, name, split_files, limits)
    files[name] = str(path / MANIFEST)
  validate.check_consistent(splits, files)
  metadata = manifest.get("metadata") or {}
  return splits, metadata if isinstance(metadata, dict) else {}


def open_ondisk(
  path: str | os.PathLike, dataset: str | None = None, vocab_size: int | None = None
) -> dict[str, Split]:
  """Opens a converted directory memory-mapped; see `open_ondisk_with_metadata`."""
  return open_ondisk_with_metadata(path, dataset, vocab_size)[0]
