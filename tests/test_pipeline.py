"""The grain input pipeline: shuffling, fixed shapes, exactly-once evaluation, iterator state."""

import numpy as np
import pytest

from msa_jax import metrics
from msa_jax.data import pipeline
from msa_jax.data.split import Split


def _split(n=23, L=6, Ta=5, Tv=4):
  rng = np.random.default_rng(0)
  return Split(
    text_bert=np.tile(np.arange(L, dtype=np.int32), (n, 3, 1)),
    audio=rng.normal(size=(n, Ta, 3)).astype(np.float32),
    vision=rng.normal(size=(n, Tv, 2)).astype(np.float32),
    audio_lengths=rng.integers(1, Ta + 1, n).astype(np.int32),
    vision_lengths=rng.integers(1, Tv + 1, n).astype(np.int32),
    labels=rng.uniform(-3, 3, n).astype(np.float32),
  )


def test_train_batches_fixed_shape_each_epoch_a_permutation_reshuffled():
  split = _split()
  ds = pipeline.train_dataset(split, batch_size=4, seed=7)
  it = pipeline.restore_iterator(ds, None)
  stream = np.concatenate([next(it)["index"] for _ in range(23)])  # 92 = 4 epochs of 23
  epochs = stream.reshape(4, 23)
  for e in epochs:
    np.testing.assert_array_equal(np.sort(e), np.arange(23))
  assert not np.array_equal(epochs[0], epochs[1])
  b = ds[0]
  assert b["audio"].shape == (4, 5, 3) and b["text_bert"].dtype == np.int32 and b["valid"].all()
  np.testing.assert_array_equal(b["labels"], split.labels[b["index"]])
  # Same seed, same order; another seed, another order.
  np.testing.assert_array_equal(pipeline.train_dataset(split, 4, 7)[3]["index"], ds[3]["index"])
  assert not np.array_equal(pipeline.train_dataset(split, 4, 8)[0]["index"], ds[0]["index"])


def test_iterator_state_restores_mid_epoch():
  split = _split()
  ds = pipeline.train_dataset(split, batch_size=4, seed=1)
  it = pipeline.restore_iterator(ds, None)
  for _ in range(3):
    next(it)
  state = pipeline.iterator_state(it)
  rest = [next(it)["index"] for _ in range(10)]
  it2 = pipeline.restore_iterator(pipeline.train_dataset(split, 4, 1), state)
  for want in rest:
    np.testing.assert_array_equal(next(it2)["index"], want)


def test_eval_visits_every_sample_once_and_metrics_honour_valid():
  split = _split(n=23)
  batches = list(pipeline.eval_dataset(split, batch_size=8))
  assert len(batches) == 3 and all(b["labels"].shape == (8,) for b in batches)
  idx = np.concatenate([b["index"] for b in batches])
  valid = np.concatenate([b["valid"] for b in batches])
  assert valid.sum() == 23
  np.testing.assert_array_equal(np.sort(idx[valid]), np.arange(23))
  preds = np.concatenate([b["labels"] * 0.5 + 0.1 for b in batches])
  labels = np.concatenate([b["labels"] for b in batches])
  want = metrics.mmsa_metrics(split.labels * 0.5 + 0.1, split.labels, "mosi")
  got = metrics.mmsa_metrics(preds, labels, "mosi", valid=valid)
  for k in want:
    np.testing.assert_allclose(got[k], want[k], rtol=1e-6)


def test_process_blocks_partition_the_global_batch():
  split = _split()
  full = pipeline.train_dataset(split, 8, seed=3)[2]
  parts = [
    pipeline.train_dataset(split, 8, seed=3, process_index=p, process_count=2)[2] for p in range(2)
  ]
  np.testing.assert_array_equal(np.concatenate([p["index"] for p in parts]), full["index"])
  ev = [pipeline.eval_dataset(split, 8, process_index=p, process_count=2)[2] for p in range(2)]
  np.testing.assert_array_equal(
    np.concatenate([e["valid"] for e in ev]), pipeline.eval_dataset(split, 8)[2]["valid"]
  )


def test_bad_batch_sizes():
  with pytest.raises(ValueError, match="larger than the training split"):
    pipeline.train_dataset(_split(n=5), 8, 0)
  with pytest.raises(ValueError, match="not divisible by the process count"):
    pipeline.train_dataset(_split(), 6, 0, process_index=0, process_count=4)
