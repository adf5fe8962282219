"""The input pipeline on grain: random-access sources, shuffled training batches, padded eval
batches.

The pipeline only moves and batches data; missing-data masking happens on the device
(`msa_jax.data.masking`). Batches are dicts of numpy arrays with the model keys of
`Split.model_arrays()` plus `index` (int32, the sample's position in its split) and `valid`
(bool, False for filler rows of a padded evaluation batch). `valid` is for the host: no program
reads it, so `device_arrays` leaves it out of what is sent to the devices.

Training: the sample order is a grain shuffle of the split that changes every epoch and depends
only on (seed, epoch); epochs are concatenated into one stream cut into full batches, so every batch
has the same shape and no sample is ever dropped (a batch at an epoch boundary holds the end of one
epoch and the start of the next). Evaluation: every sample exactly once, in order; the last batch is
padded with copies of sample 0 marked `valid = False`.

Several processes: every process builds the same global index stream and gathers only its own
contiguous block of rows of each global batch (`process_index`, `process_count`).

Memory: arrays memory-mapped from a converted directory (`msa_jax.data.ondisk`) are read row by
row with `pread`, and iteration reads at most `READ_OPTIONS.prefetch_buffer_size` batches ahead, so
a MOSEI-sized split costs the process a few batches, not the split.
"""

from __future__ import annotations

import dataclasses
import math
import os
from typing import Any, Protocol, runtime_checkable

import grain
import numpy as np

from msa_jax.data.split import Split


def _file_backed(arr: np.ndarray) -> bool:
  """True for a whole C-ordered `np.memmap` of a file (as `ondisk.open_ondisk` returns)."""
  if not isinstance(arr, np.memmap) or not arr.filename or not arr.flags.c_contiguous:
    return False
  try:
    return arr.offset + arr.nbytes == os.path.getsize(arr.filename)
  except OSError:
    return False


def read_rows(arr: np.memmap, indices: np.ndarray) -> np.ndarray:
  """`arr[indices]` for a file-backed memmap, read with `pread` into a new array.

  Touching the mapping instead would keep every row ever read resident in this process (file
  pages count towards its RSS until the kernel needs the memory); `pread` leaves them in the page
  cache only, so a pass over a MOSEI-sized split keeps the process's memory at one batch.
  """
  out = np.empty((len(indices),) + arr.shape[1:], dtype=arr.dtype)
  if not len(indices):
    return out
  rows = out.reshape(len(indices), -1)
  row_bytes = rows.shape[1] * out.itemsize
  fd = os.open(arr.filename, os.O_RDONLY)
  try:
    for j, i in enumerate(indices):
      if (
        os.preadv(fd, [memoryview(rows[j]).cast("B")], arr.offset + int(i) * row_bytes) != row_bytes
      ):
        raise OSError(f"{arr.filename}: short read at row {int(i)} (file truncated?)")
  finally:
    os.close(fd)
  return out


class RowSubset:
  """Rows `rows` of a file-backed memmap, read on demand: a lazy `base[rows]`.

  An OOD split is a subset of the test split (docs/methods.md §6); taken eagerly from MOSEI's
  memory-mapped test frames, the four subsets would copy about 2 GB into memory. `take_rows` keeps
  them as RowSubsets instead, which `SplitSource` reads row by row with `read_rows` like the test
  split itself. Indexing along the first axis, or `np.asarray`, reads the rows into a new array.
  """

  def __init__(self, base: np.memmap, rows: np.ndarray):
    if not _file_backed(base):
      raise TypeError("RowSubset needs a whole, C-ordered, file-backed np.memmap")
    self.base = base
    self.rows = np.asarray(rows, dtype=np.int64)
    if self.rows.ndim != 1 or (
      self.rows.size and (self.rows.min() < 0 or self.rows.max() >= len(base))
    ):
      raise IndexError(f"rows must be a 1-D array of indices into {len(base)} rows")

  @property
  def shape(self) -> tuple[int, ...]:
    return (len(self.rows),) + self.base.shape[1:]

  @property
  def dtype(self) -> np.dtype:
    return self.base.dtype

  @property
  def ndim(self) -> int:
    return self.base.ndim

  def __len__(self) -> int:
    return len(self.rows)

  def read(self, indices: np.ndarray) -> np.ndarray:
    """Rows `indices` of this subset, as a new array."""
    return read_rows(self.base, self.rows[np.asarray(indices, dtype=np.int64)])

  def subset(self, indices: np.ndarray) -> RowSubset:
    """Rows `indices` of this subset, still on disk."""
    return RowSubset(self.base, self.rows[indices])

  def __getitem__(self, key: Any) -> np.ndarray:
    if isinstance(key, tuple):  # rows first, then the rest of the key on what was read
      if not key:
        return np.asarray(self)
      rows = self[key[0]]
      return (
        rows[key[1:]] if isinstance(key[0], (int, np.integer)) else rows[(slice(None),) + key[1:]]
      )
    if isinstance(key, (int, np.integer)):
      return self.read(np.array([key]))[0]
    return read_rows(self.base, self.rows[key])

  def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
    out = read_rows(self.base, self.rows)
    return out if dtype is None else out.astype(dtype)


@runtime_checkable
class LazyRows(Protocol):
  """A column read on demand: `RowSubset`, or a TFDS record column (`msa_jax.data.tfds_mmsa`)."""

  shape: tuple[int, ...]

  def read(self, indices: np.ndarray) -> np.ndarray: ...

  def subset(self, indices: np.ndarray) -> LazyRows: ...


# The per-sample frame arrays, which hold nearly all of a split's bytes: the only ones `take_rows`
# leaves on disk (labels, lengths and token ids are small and used directly with numpy).
LAZY_FIELDS = frozenset({"audio", "vision", "text"})


def take_rows(split: Split, indices: np.ndarray) -> Split:
  """`split.take(indices)`, except that file-backed frame arrays (`LAZY_FIELDS`, and RowSubsets)
  stay on disk as `RowSubset`s (and `LazyRows` stay lazy) instead of being copied into memory."""
  idx = np.asarray(indices, dtype=np.int64)
  if idx.ndim != 1 or (idx.size and (idx.min() < 0 or idx.max() >= len(split))):
    raise IndexError(f"indices must be a 1-D array of indices into {len(split)} samples")

  def one(name: str, arr: Any) -> Any:
    if arr is None:
      return None
    if isinstance(arr, LazyRows):
      return arr.subset(idx) if name in LAZY_FIELDS else arr.read(idx)
    if name in LAZY_FIELDS and _file_backed(arr):
      return RowSubset(arr, idx)
    return np.asarray(arr[idx])

  return Split(**{f.name: one(f.name, getattr(split, f.name)) for f in dataclasses.fields(split)})


class SplitSource:
  """A grain random-access data source over a `Split` (one record = one sample's arrays).

  Arrays memory-mapped from a converted directory are read row by row with `read_rows`, `LazyRows`
  with their `read`; in-memory arrays are indexed.
  """

  def __init__(self, split: Split):
    self._arrays = split.model_arrays()
    self._from_file = {
      k for k, v in self._arrays.items() if _file_backed(v) or isinstance(v, LazyRows)
    }
    self._n = len(split)

  def __len__(self) -> int:
    return self._n

  def _take(self, key: str, indices: np.ndarray) -> np.ndarray:
    arr = self._arrays[key]
    if isinstance(arr, LazyRows):
      return arr.read(indices)
    if key in self._from_file:
      return read_rows(arr, indices)
    return np.asarray(arr[indices])

  def __getitem__(self, index: int) -> dict[str, np.ndarray]:
    index = int(index)
    if not -self._n <= index < self._n:
      raise IndexError(f"index {index} out of range for a split of {self._n} samples")
    index %= self._n
    record = {k: self._take(k, np.array([index]))[0] for k in self._arrays}
    record["index"] = np.int32(index)
    return record

  def gather(self, indices: np.ndarray, valid: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """A batch of the samples at `indices` (vectorised; memory-mapped arrays read with pread)."""
    indices = np.asarray(indices, dtype=np.int64)
    if indices.size and (indices.min() < 0 or indices.max() >= self._n):
      raise IndexError(f"indices out of range for a split of {self._n} samples")
    batch = {k: self._take(k, indices) for k in self._arrays}
    batch["index"] = indices.astype(np.int32)
    batch["valid"] = np.ones(len(indices), bool) if valid is None else np.asarray(valid, bool)
    return batch


# Batch keys for the host only (see the module docstring).
HOST_KEYS = frozenset({"valid"})


def device_arrays(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
  """The arrays of `batch` that a program on the devices reads: every key but `HOST_KEYS`."""
  return {k: v for k, v in batch.items() if k not in HOST_KEYS}


def _local_rows(global_batch_size: int, process_index: int, process_count: int) -> slice:
  if global_batch_size % process_count:
    raise ValueError(
      f"batch size {global_batch_size} is not divisible by the process count {process_count}"
    )
  per = global_batch_size // process_count
  return slice(process_index * per, (process_index + 1) * per)


def steps_per_epoch(num_samples: int, batch_size: int) -> int:
  """Training steps that make one epoch: N // B (the stream is continuous across epochs)."""
  if batch_size > num_samples:
    raise ValueError(
      f"batch_size {batch_size} is larger than the training split ({num_samples} samples)"
    )
  return num_samples // batch_size


def train_dataset(
  split: Split, batch_size: int, seed: int, *, process_index: int = 0, process_count: int = 1
) -> grain.MapDataset:
  """An infinite dataset of training batches; element s is the batch of step s.

  Args:
    split: the training split.
    batch_size: the global batch size.
    seed: shuffle seed; the order of epoch e is a function of (seed, e) only.
    process_index, process_count: this process's block of rows of every global batch.
  """
  steps_per_epoch(len(split), batch_size)
  source = SplitSource(split)
  rows = _local_rows(batch_size, process_index, process_count)
  indices = (
    grain.MapDataset.range(len(source))
    .shuffle(seed=seed)
    .repeat()
    .batch(batch_size, drop_remainder=True)
  )
  return indices.map(lambda idx: source.gather(np.asarray(idx)[rows]))


def num_eval_batches(num_samples: int, batch_size: int) -> int:
  return math.ceil(num_samples / batch_size)


def eval_dataset(
  split: Split, batch_size: int, *, process_index: int = 0, process_count: int = 1
) -> grain.MapDataset:
  """A finite dataset of evaluation batches visiting every sample exactly once, in order.

  The last batch is filled up to `batch_size` with sample 0 marked `valid = False`; metrics and
  prediction collection must honour `valid`.
  """
  if batch_size < 1:
    raise ValueError(f"batch_size must be >= 1, got {batch_size}")
  source = SplitSource(split)
  n = len(source)
  rows = _local_rows(batch_size, process_index, process_count)

  def make(b: int) -> dict[str, np.ndarray]:
    idx = np.arange(b * batch_size, (b + 1) * batch_size)
    valid = idx < n
    return source.gather(np.where(valid, idx, 0)[rows], valid[rows])

  return grain.MapDataset.range(num_eval_batches(n, batch_size)).map(make)


def iterator_state(it: Any) -> dict[str, Any]:
  """A JSON-able snapshot of a grain iterator's position (saved in checkpoints)."""
  return dict(it.get_state())


# How far grain reads ahead. Its default (16 threads, 500 elements) holds up to 500 batches: 3.5 GB
# of MOSEI-shaped training batches of 32, more for evaluation batches. A few batches ahead keep
# the device fed; reading a batch takes milliseconds against a step's tenths of a second.
READ_OPTIONS = grain.ReadOptions(num_threads=2, prefetch_buffer_size=8)


def iterate(dataset: grain.MapDataset):
  """An iterator over `dataset` that reads at most `READ_OPTIONS.prefetch_buffer_size` ahead."""
  return iter(dataset.to_iter_dataset(READ_OPTIONS))


def restore_iterator(dataset: grain.MapDataset, state: dict[str, Any] | None):
  """A fresh iterator over `dataset` (see `iterate`), moved to `state` when given."""
  it = iterate(dataset)
  if state:
    it.set_state(state)
  return it
