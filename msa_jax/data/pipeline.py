"""The input pipeline on grain: random-access sources, shuffled training batches, padded eval batches.

The pipeline only moves and batches data (STYLE.md); missing-data masking happens on the device
(`msa_jax.data.masking`). Batches are dicts of numpy arrays with the model keys of
`Split.model_arrays()` plus `index` (int32, the sample's position in its split) and `valid`
(bool, False for filler rows of a padded evaluation batch).

Training: the sample order is a grain shuffle of the split that changes every epoch and depends
only on (seed, epoch); epochs are concatenated into one stream cut into full batches, so every batch
has the same shape and no sample is ever dropped (a batch at an epoch boundary holds the end of one
epoch and the start of the next). Evaluation: every sample exactly once, in order; the last batch is
padded with copies of sample 0 marked `valid = False`.

Several processes: every process builds the same global index stream and gathers only its own
contiguous block of rows of each global batch (`process_index`, `process_count`).
"""

from __future__ import annotations

import math
from typing import Any

import grain
import numpy as np

from msa_jax.data.split import Split


class SplitSource:
  """A grain random-access data source over a `Split` (one record = one sample's arrays)."""

  def __init__(self, split: Split):
    self._arrays = split.model_arrays()
    self._n = len(split)

  def __len__(self) -> int:
    return self._n

  def __getitem__(self, index: int) -> dict[str, np.ndarray]:
    record = {k: v[index] for k, v in self._arrays.items()}
    record["index"] = np.int32(index)
    return record

  def gather(self, indices: np.ndarray, valid: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """A batch of the samples at `indices` (vectorised; works on memory-mapped arrays)."""
    indices = np.asarray(indices, dtype=np.int64)
    batch = {k: np.asarray(v[indices]) for k, v in self._arrays.items()}
    batch["index"] = indices.astype(np.int32)
    batch["valid"] = np.ones(len(indices), bool) if valid is None else np.asarray(valid, bool)
    return batch


def _local_rows(global_batch_size: int, process_index: int, process_count: int) -> slice:
  if global_batch_size % process_count:
    raise ValueError(f"batch size {global_batch_size} is not divisible by the process count {process_count}")
  per = global_batch_size // process_count
  return slice(process_index * per, (process_index + 1) * per)


def steps_per_epoch(num_samples: int, batch_size: int) -> int:
  """Training steps that make one epoch: N // B (the stream is continuous across epochs)."""
  if batch_size > num_samples:
    raise ValueError(f"batch_size {batch_size} is larger than the training split ({num_samples} samples)")
  return num_samples // batch_size


def train_dataset(split: Split, batch_size: int, seed: int, *, process_index: int = 0,
                  process_count: int = 1) -> grain.MapDataset:
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
  indices = grain.MapDataset.range(len(source)).shuffle(seed=seed).repeat().batch(batch_size, drop_remainder=True)
  return indices.map(lambda idx: source.gather(np.asarray(idx)[rows]))


def num_eval_batches(num_samples: int, batch_size: int) -> int:
  return math.ceil(num_samples / batch_size)


def eval_dataset(split: Split, batch_size: int, *, process_index: int = 0,
                 process_count: int = 1) -> grain.MapDataset:
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


def restore_iterator(dataset: grain.MapDataset, state: dict[str, Any] | None):
  """A fresh iterator over `dataset`, moved to `state` when given."""
  it = iter(dataset.to_iter_dataset())
  if state:
    it.set_state(state)
  return it
