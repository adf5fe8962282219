"""TFDS builders for MMSA feature pickles (CMU-MOSI, CMU-MOSEI, CH-SIMS) and their reader.

The MMSA feature files cannot be downloaded by a program, so the builders use TFDS's manual
download: put the pickle in the manual directory under the name of the builder config and build:

  python scripts/build_tfds.py --dataset mosi --config unaligned_50 \
      --manual_dir MOSI/Processed --data_dir ~/tensorflow_datasets
  python train.py --config=configs/lnln.py:mosi --config.data.path=tfds:mmsa_mosi/unaligned_50

The builders are ordinary TFDS builders (`tfds.builder('mmsa_mosi/unaligned_50')` once this module
is imported), but TFDS 4.9.10's `tfds build` command line imports TensorFlow, so the script above
is the way to build without it.

Datasets `mmsa_mosi` and `mmsa_mosei` (configs `unaligned_50`, `aligned_50`) and `mmsa_sims`
(config `unaligned_39`). The pickle is read by `msa_jax.data.mmsa.load_source` with the dataset's
label range and vocabulary, so a build accepts exactly what `msa_jax.data.load` accepts and fails
with its one-line errors. When the OOD index file of `scripts/build_ood_splits.py`
(`<config>.pkl.ood.json`) lies beside the pickle, its four OOD splits replace any the pickle
carries, as `--config.data.ood` does for a pickle.

Records: one per sample, in split order, in array_record shards of `SHARD_ROWS` samples, with the
`Split` fields of the file (`text_bert`, `audio`, `vision`, lengths, `labels`, and `text`,
`labels_T/A/V`, `ids`, `raw_text`, `cue_signs` where the file has them; feature tensors stored as
raw bytes) and `index`, the sample's position in its split. Fields a file lacks hold a placeholder
and are left out of the list of fields in the dataset's metadata, which also holds the file's own
metadata. `tfds.data_source` reads array_record with random access and without TensorFlow.

`open_tfds_with_metadata` (and `msa_jax.data.load` with a data path `tfds:NAME[/CONFIG][:VERSION]`
or `tfds:DIR`) opens a built dataset as `Split`s: the small fields are read into memory once and
validated again as a converted directory's are; `audio`, `vision` and `text` stay in the record
files as `RecordColumn`s that the pipeline reads a batch at a time.

Needs the optional `tensorflow-datasets` package (`bash scripts/install.sh --tfds`), not
TensorFlow.
"""

from __future__ import annotations

import functools
import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow_datasets as tfds

from msa_jax.data import mmsa, ood, validate
from msa_jax.data.ondisk import checked_split, plain
from msa_jax.data.split import OOD_SPLITS, SPLITS, Split
from msa_jax.data.validate import DataFormatError

FILE_FORMAT = "array_record"
# Split fields stored per record: field -> (shape, dtype); None dimensions vary by file.
_TENSORS = {
  "text_bert": ((3, None), np.int32),
  "audio": ((None, None), np.float32),
  "vision": ((None, None), np.float32),
  "text": ((None, None), np.float32),
  "cue_signs": ((3,), np.int8),
}
_SCALARS = {
  "audio_lengths": np.int32,
  "vision_lengths": np.int32,
  "labels": np.float32,
  "labels_T": np.float32,
  "labels_A": np.float32,
  "labels_V": np.float32,
}
_STRINGS = ("ids", "raw_text")
# Fields a file may lack; a record then holds a placeholder (`_absent`) and the dataset's
# metadata leaves the field out of its list of fields.
_OPTIONAL = frozenset({"text", "cue_signs", "labels_T", "labels_A", "labels_V", *_STRINGS})
# The fields that stay in the record files when opened (nearly all of a split's bytes).
COLUMN_FIELDS = ("audio", "vision", "text")
# Records read per request while the small fields are loaded, and rows serialized per block.
_CHUNK = 256
# Samples per array_record shard (about 450 MB of MOSEI-shaped records).
SHARD_ROWS = 2048


def _features() -> tfds.features.FeaturesDict:
  spec: dict[str, Any] = {"index": tfds.features.Scalar(np.int32)}
  for name, (shape, dtype) in _TENSORS.items():
    spec[name] = tfds.features.Tensor(shape=shape, dtype=dtype, encoding="bytes")
  for name, dtype in _SCALARS.items():
    spec[name] = tfds.features.Tensor(shape=(), dtype=dtype)
  for name in _STRINGS:
    spec[name] = tfds.features.Tensor(shape=(), dtype=np.str_)
  return tfds.features.FeaturesDict(spec)


def _absent(name: str) -> Any:
  """The placeholder a record holds for a field its file lacks (a tensor of one element per free
  dimension: TFDS 4.9.10 cannot decode an empty tensor of several free dimensions)."""
  if name in _TENSORS:
    shape, dtype = _TENSORS[name]
    return np.zeros(tuple(1 if d is None else d for d in shape), dtype)
  return "" if name in _STRINGS else _SCALARS[name](0)


def _present(splits: dict[str, Split]) -> list[str]:
  """The optional fields every split of the file has (`check_consistent` makes them agree)."""
  return sorted(f for f in _OPTIONAL if getattr(splits["train"], f) is not None)


def _examples(split: Split, first: int, stop: int) -> Iterator[tuple[int, dict[str, Any]]]:
  """(key, record) for samples [first, stop) of `split`, feature rows read in chunks."""
  for start in range(first, stop, _CHUNK):
    rows = slice(start, min(stop, start + _CHUNK))
    block = {
      name: (None if getattr(split, name) is None else np.asarray(getattr(split, name)[rows]))
      for name in (*_TENSORS, *_SCALARS, *_STRINGS)
    }
    for j in range(rows.stop - rows.start):
      record: dict[str, Any] = {"index": np.int32(start + j)}
      for name, arr in block.items():
        if arr is None:
          record[name] = _absent(name)
        elif name in _TENSORS:
          record[name] = np.ascontiguousarray(arr[j], dtype=_TENSORS[name][1])
        elif name in _SCALARS:
          record[name] = _SCALARS[name](arr[j])
        else:
          value = arr[j]
          record[name] = value.decode("latin-1") if isinstance(value, bytes) else str(value)
      yield start + j, record


def _shards(split: Split) -> list[Callable[[], Iterator[tuple[int, dict[str, Any]]]]]:
  """One record generator per shard of `SHARD_ROWS` samples, in split order."""
  n = len(split)
  return [
    functools.partial(_examples, split, start, min(n, start + SHARD_ROWS))
    for start in range(0, max(n, 1), SHARD_ROWS)
  ]


class _MmsaBuilder(tfds.core.ShardBasedBuilder, skip_registration=True):
  """One MMSA data set from its feature pickle in the manual directory (module docstring).

  A `ShardBasedBuilder`: records are written in split order, shard by shard, as they are
  serialized (a `GeneratorBasedBuilder` passes them through TFDS's shuffler, which needs
  TensorFlow once a split exceeds 1 GB).
  """

  DATASET = ""
  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "MMSA features checked by msa_jax.data.load; optional OOD splits."}
  MANUAL_DOWNLOAD_INSTRUCTIONS = """
  Download the MMSA processed features (the `Processed/` folder of the data set on the MMSA
  project's page) and place the pickle in the manual directory under the config's name, e.g.
  `unaligned_50.pkl` (`unaligned_39.pkl` for SIMS). An OOD index file from
  scripts/build_ood_splits.py placed beside it as `unaligned_50.pkl.ood.json` adds its OOD splits.
  """

  def __init__(self, *, file_format: Any = None, **kwargs: Any):
    super().__init__(file_format=file_format or FILE_FORMAT, **kwargs)

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
      features=_features(),
      disable_shuffling=True,
      homepage="https://github.com/thuiar/MMSA",
      metadata=tfds.core.MetadataDict(),
    )

  def _source(self, dl_manager: Any) -> Path:
    return Path(dl_manager.manual_dir) / f"{self.builder_config.name}.pkl"

  def _shard_iterators_per_split(self, dl_manager: Any) -> dict[str, list]:
    source = self._source(dl_manager)
    if not source.is_file():
      raise DataFormatError(
        f"{source}: not found; place the MMSA feature pickle '{source.name}' in the manual "
        f"directory {source.parent}"
      )
    splits, metadata = mmsa.load_source(source, self.DATASET, None)
    ood_file = ood.default_ood_path(source)
    if ood_file.is_file():
      try:
        indices = ood.load_ood_json(ood_file, len(splits["test"]))
      except ValueError as e:
        raise DataFormatError(validate.one_line(str(e))) from None
      base = {k: v for k, v in splits.items() if k not in OOD_SPLITS}
      splits = ood.apply_ood(base, indices)
    self.info.metadata.update(
      {
        "source": str(source),
        "dataset": self.DATASET,
        "ood_file": str(ood_file) if ood_file.is_file() else None,
        "fields": _present(splits),
        "metadata": plain(metadata),
      }
    )
    return {name: _shards(split) for name, split in splits.items()}


class MmsaMosi(_MmsaBuilder):
  """CMU-MOSI's MMSA features (labels in [-3, 3], bert-base-uncased token ids)."""

  DATASET = "mosi"
  BUILDER_CONFIGS = [
    tfds.core.BuilderConfig(name="unaligned_50", description="MMSA unaligned_50.pkl"),
    tfds.core.BuilderConfig(name="aligned_50", description="MMSA aligned_50.pkl"),
  ]


class MmsaMosei(_MmsaBuilder):
  """CMU-MOSEI's MMSA features (labels in [-3, 3], bert-base-uncased token ids)."""

  DATASET = "mosei"
  BUILDER_CONFIGS = [
    tfds.core.BuilderConfig(name="unaligned_50", description="MMSA unaligned_50.pkl"),
    tfds.core.BuilderConfig(name="aligned_50", description="MMSA aligned_50.pkl"),
  ]


class MmsaSims(_MmsaBuilder):
  """CH-SIMS's MMSA features (labels in [-1, 1], unimodal labels, bert-base-chinese token ids)."""

  DATASET = "sims"
  BUILDER_CONFIGS = [
    tfds.core.BuilderConfig(name="unaligned_39", description="MMSA unaligned_39.pkl"),
  ]


BUILDERS = {"mosi": MmsaMosi, "mosei": MmsaMosei, "sims": MmsaSims}


def build(
  dataset: str,
  config: str,
  manual_dir: str | os.PathLike,
  data_dir: str | os.PathLike | None = None,
) -> Path:
  """Builds `mmsa_<dataset>/<config>` from `<manual_dir>/<config>.pkl` into `data_dir` (TFDS's
  default when None) as array_record; returns the built dataset's directory. An existing build
  of the same version is kept as it is."""
  if dataset not in BUILDERS:
    raise ValueError(f"unknown dataset {dataset!r}: expected one of {sorted(BUILDERS)}")
  names = [c.name for c in BUILDERS[dataset].BUILDER_CONFIGS]
  if config not in names:
    raise ValueError(f"unknown config {config!r} for {dataset}: expected one of {names}")
  builder = BUILDERS[dataset](config=config, data_dir=data_dir)
  builder.download_and_prepare(
    download_config=tfds.download.DownloadConfig(manual_dir=str(manual_dir))
  )
  return Path(builder.data_dir)


# ---------------------------------------------------------------------------------------------
# Reading.


class _Records:
  """A split's `tfds.data_source`, read a batch of records at a time; the last batch each thread
  read is kept, so that the columns of one batch decode its records once."""

  def __init__(self, source: Any):
    self.source = source
    self._last = threading.local()

  def __len__(self) -> int:
    return len(self.source)

  def get(self, indices: np.ndarray) -> list[dict[str, Any]]:
    key = np.asarray(indices, np.int64).tobytes()
    if getattr(self._last, "key", None) != key:
      self._last.records = self.source.__getitems__([int(i) for i in indices])
      self._last.key = key
    return self._last.records


class RecordColumn:
  """One feature field of a split's records, rows `rows` of it: an array read on demand.

  Indexing along the first axis, `read` or `np.asarray` decodes the records of those rows. Shape
  and dtype are those of the split (every record of a field has one shape, checked on open).
  """

  def __init__(
    self, records: _Records, field: str, row_shape: tuple[int, ...], rows: np.ndarray | None = None
  ):
    self.records = records
    self.field = field
    self.row_shape = tuple(row_shape)
    self.rows = np.arange(len(records), dtype=np.int64) if rows is None else rows

  @property
  def shape(self) -> tuple[int, ...]:
    return (len(self.rows),) + self.row_shape

  @property
  def dtype(self) -> np.dtype:
    return np.dtype(_TENSORS[self.field][1])

  @property
  def ndim(self) -> int:
    return 1 + len(self.row_shape)

  def __len__(self) -> int:
    return len(self.rows)

  def read(self, indices: np.ndarray) -> np.ndarray:
    """Rows `indices` of this column, as a new array."""
    out = np.empty((len(indices),) + self.row_shape, self.dtype)
    if len(out):
      records = self.records.get(self.rows[np.asarray(indices, dtype=np.int64)])
      for j, record in enumerate(records):
        out[j] = record[self.field]
    return out

  def subset(self, indices: np.ndarray) -> RecordColumn:
    """Rows `indices` of this column, still read on demand."""
    return RecordColumn(self.records, self.field, self.row_shape, self.rows[indices])

  def __getitem__(self, key: Any) -> np.ndarray:
    if isinstance(key, tuple):
      rows = self[key[0]]
      return (
        rows[key[1:]] if isinstance(key[0], (int, np.integer)) else rows[(slice(None),) + key[1:]]
      )
    if isinstance(key, (int, np.integer)):
      return self.read(np.array([key]))[0]
    return self.read(np.arange(len(self.rows))[key])

  def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
    out = self.read(np.arange(len(self.rows)))
    return out if dtype is None else out.astype(dtype)


def _read_small(
  records: _Records, fields: list[str], name: str
) -> tuple[dict[str, np.ndarray], dict[str, tuple[int, ...]]]:
  """Every record's small fields as arrays, and the one row shape of each column field."""
  small = [f for f in fields if f not in COLUMN_FIELDS]
  values: dict[str, list] = {f: [] for f in small}
  shapes: dict[str, set] = {f: set() for f in fields if f in COLUMN_FIELDS}
  n = len(records)
  for start in range(0, n, _CHUNK):
    idx = np.arange(start, min(n, start + _CHUNK))
    for i, record in zip(idx, records.get(idx)):
      if int(record["index"]) != i:
        raise DataFormatError(f"{name}: record {i} holds sample {int(record['index'])}")
      for f in small:
        values[f].append(record[f])
      for f in shapes:
        shapes[f].add(record[f].shape)
  arrays = {}
  for f, items in values.items():
    if f in _STRINGS:
      arrays[f] = np.array([x.decode("utf-8") if isinstance(x, bytes) else x for x in items])
    else:
      arrays[f] = np.stack(items) if items else np.zeros((0,), np.float32)
  row_shapes = {}
  for f, seen in shapes.items():
    if len(seen) != 1:
      raise DataFormatError(f"{name}: field '{f}' has rows of several shapes {sorted(seen)}")
    row_shapes[f] = seen.pop()
  return arrays, row_shapes


def _builder(name: str) -> tfds.core.DatasetBuilder:
  """The prepared builder of a built dataset's directory or of a registered name."""
  directory = Path(name).expanduser()
  if (directory / "dataset_info.json").is_file():
    return tfds.builder_from_directory(directory)
  try:
    builder = tfds.builder(name)
  except (tfds.core.registered.DatasetNotFoundError, ValueError) as e:
    raise DataFormatError(
      validate.one_line(f"{name}: not a TFDS dataset name or directory ({e})")
    ) from None
  if not builder.is_prepared():
    raise DataFormatError(
      f"{name}: not built in {builder.data_dir}; build it with scripts/build_tfds.py "
      "(or name the built dataset's directory: tfds:DIR)"
    )
  return builder


def built_directory(name: str) -> Path:
  """The directory holding the built files of `name` (a built dataset's directory or a
  registered `NAME[/CONFIG][:VERSION]`), for fingerprinting it without reading its records."""
  return Path(_builder(name).data_dir)


def open_tfds_with_metadata(
  name: str, dataset: str | None = None, vocab_size: int | None = None
) -> tuple[dict[str, Split], dict]:
  """Opens a built dataset -> (split name -> `Split`, the source file's metadata).

  `name`: `NAME[/CONFIG][:VERSION]` (e.g. `mmsa_mosi/unaligned_50`, in TFDS's data directory:
  `~/tensorflow_datasets`, or `TFDS_DATA_DIR` when TFDS is imported) or the directory of a built
  dataset (e.g. `DATA_DIR/mmsa_mosi/unaligned_50/1.0.0`); `msa_jax.data.load` passes what follows
  `tfds:` in a data path.

  Labels, token ids, lengths and shapes are validated with `dataset` / `vocab_size` as
  `msa_jax.data.load` does; errors are `DataFormatError`s naming the dataset.
  """
  limits = validate.dataset_limits(dataset, vocab_size)
  builder = _builder(name)
  sources = builder.as_data_source()
  where = f"{name} ({builder.data_dir})"
  fields = ["text_bert", "audio", "vision", "audio_lengths", "vision_lengths", "labels"]
  fields += list(builder.info.metadata.get("fields", []))
  splits: dict[str, Split] = {}
  files: dict[str, str] = {}
  for split_name in SPLITS:
    if split_name not in sources:
      continue
    records = _Records(sources[split_name])
    arrays, row_shapes = _read_small(records, fields, f"{where}: split '{split_name}'")
    for f, shape in row_shapes.items():
      arrays[f] = RecordColumn(records, f, shape)
    split_files = {f: where for f in arrays}
    splits[split_name] = checked_split(arrays, split_name, split_files, limits)
    files[split_name] = where
  validate.check_consistent(splits, files)
  return splits, dict(builder.info.metadata.get("metadata", {}))
