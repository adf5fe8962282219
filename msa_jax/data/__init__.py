"""Data: MMSA loading and validation, the synthetic benchmark, the grain pipeline, masking."""

from msa_jax.data.mmsa import DataFormatError, load_mmsa, load_mmsa_with_metadata
from msa_jax.data.split import IID_SPLITS, MODALITIES, OOD_SPLITS, Split

__all__ = ["DataFormatError", "IID_SPLITS", "MODALITIES", "OOD_SPLITS", "Split", "load_mmsa",
           "load_mmsa_with_metadata"]
