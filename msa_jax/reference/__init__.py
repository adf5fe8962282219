"""Converters from the authors' PyTorch state_dicts to msa_jax parameters."""

from __future__ import annotations

from collections.abc import Sequence


class ReferenceConversionError(ValueError):
  """A reference state_dict does not fill the msa_jax parameters exactly.

  Attributes:
    missing: reference names the conversion needs that the state_dict lacks.
    unexpected: state_dict names that nothing consumes (and that are not listed as unused).
    mismatched: `(name, given shape, expected shape)` for tensors of the wrong shape, in the
      reference's own layout (PyTorch `Linear` weights as (out, in)).
  """

  def __init__(self, source: str, missing: Sequence[str] = (), unexpected: Sequence[str] = (),
               mismatched: Sequence[tuple[str, tuple[int, ...], tuple[int, ...]]] = ()):
    self.missing = sorted(missing)
    self.unexpected = sorted(unexpected)
    self.mismatched = sorted(mismatched)
    parts = []
    if self.missing:
      parts.append(f"missing {self.missing}")
    if self.unexpected:
      parts.append(f"unexpected {self.unexpected}")
    if self.mismatched:
      parts.append("mis-shaped " + ", ".join(f"{n}: got {g}, expected {e}"
                                            for n, g, e in self.mismatched))
    super().__init__(f"{source} does not convert: " + "; ".join(parts))
