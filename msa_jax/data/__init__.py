"""Data: loading and validation, the synthetic benchmark, OOD splits, the pipeline, masking."""

from msa_jax.data.loader import load, load_with_metadata
from msa_jax.data.split import IID_SPLITS, OOD_SPLITS, OOD_VALID_SPLITS, SPLITS, Split
from msa_jax.data.validate import DataFormatError

__all__ = [
  "DataFormatError",
  "IID_SPLITS",
  "OOD_SPLITS",
  "OOD_VALID_SPLITS",
  "SPLITS",
  "Split",
  "load",
  "load_with_metadata",
]
