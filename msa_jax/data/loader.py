"""One entry point for every data layout: an MMSA pickle, a GEAR split directory, a directory
converted by `msa_jax.data.ondisk` (MOSEI-sized data, memory-mapped), or a TFDS dataset built by
`msa_jax.data.tfds_mmsa` (named `tfds:...`)."""

from __future__ import annotations

import os
from pathlib import Path

from msa_jax.data import mmsa, ondisk
from msa_jax.data.split import Split

# A data path that starts with this names a built TFDS dataset (`msa_jax.data.tfds_mmsa`).
TFDS_PREFIX = "tfds:"


def is_tfds(path: str | os.PathLike) -> bool:
  """True for a data path naming a built TFDS dataset: `tfds:NAME[/CONFIG][:VERSION]` or
  `tfds:DIR`."""
  return str(path).startswith(TFDS_PREFIX)


def load_with_metadata(
  path: str | os.PathLike, dataset: str | None = None, vocab_size: int | None = None
) -> tuple[dict[str, Split], dict]:
  """Loads and validates an MMSA feature pickle, a GEAR split directory or a converted directory.

  Args:
    path: an MMSA pickle `{'train', 'valid', 'test'[, 'ood_*'][, 'metadata']}`, a directory
      holding GEAR's train.pkl, valid.pkl, test_iid.pkl and optionally test_nn_{text, audio,
      vision, tav}.pkl (loaded as splits test, ood_text, ood_audio, ood_vision, ood_all), or a
      directory written by `msa_jax.data.ondisk.convert` (recognised by its manifest.json;
      opened memory-mapped), or `tfds:NAME[/CONFIG][:VERSION]` / `tfds:DIR`, a dataset built by
      `msa_jax.data.tfds_mmsa` (needs tensorflow-datasets; frame arrays read on demand).
    dataset: 'mosi' / 'mosei' (labels in [-3, 3]), 'sims' (labels in [-1, 1]), case-insensitive,
      or None (labels finite with |y| <= 3).
    vocab_size: token ids must lie in [0, vocab_size); default: bert-base-uncased's size,
      bert-base-chinese's for 'sims' (`msa_jax.text`). Pass the text encoder's vocabulary size.

  Returns:
    (splits, metadata): split name -> `Split`, and the file's top-level 'metadata' dict ({} when
    absent, always {} for a GEAR directory).

  Raises:
    DataFormatError: the path does not exist, or a file is unsafe, unreadable or malformed.
    ValueError: unknown `dataset` or bad `vocab_size`.
  """
  if is_tfds(path):
    from msa_jax.data import tfds_mmsa

    return tfds_mmsa.open_tfds_with_metadata(str(path)[len(TFDS_PREFIX) :], dataset, vocab_size)
  path = Path(path)
  if ondisk.is_converted(path):
    return ondisk.open_ondisk_with_metadata(path, dataset, vocab_size)
  return mmsa.load_source(path, dataset, vocab_size)


def load(
  path: str | os.PathLike, dataset: str | None = None, vocab_size: int | None = None
) -> dict[str, Split]:
  """Loads and validates MMSA / GEAR / converted data; see `load_with_metadata`."""
  return load_with_metadata(path, dataset, vocab_size)[0]
