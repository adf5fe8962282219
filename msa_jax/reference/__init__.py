"""Converters from the authors' PyTorch state_dicts to msa_jax parameters."""

from __future__ import annotations

from msa_jax.models.bert import CheckpointMismatchError


class ReferenceConversionError(CheckpointMismatchError):
  """A reference state_dict does not fill the msa_jax parameters exactly.

  Attributes (from `CheckpointMismatchError`):
    missing: reference names the conversion needs that the state_dict lacks.
    unexpected: state_dict names that nothing consumes (and that are not listed as unused).
    mismatched: `(name, given shape, expected shape)` for tensors of the wrong shape, in the
      reference's own layout (PyTorch `Linear` weights as (out, in)).
  """
