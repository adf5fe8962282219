"""Data: loading and validation (pickles, converted directories, TFDS datasets), the synthetic
benchmark, OOD splits, the pipeline, masking."""

from msa_jax.data.loader import is_tfds, load, load_with_metadata
from msa_jax.data.split import IID_SPLITS, OOD_SPLITS, OOD_VALID_SPLITS, SPLITS, Split
from msa_jax.data.validate import DataFormatError

__all__ = [
  "DataFormatError",
  "IID_SPLITS",
  "OOD_SPLITS",
  "OOD_VALID_SPLITS",
  "SPLITS",
  "Split",
  "is_tfds",
  "load",
  "load_with_metadata",
]
