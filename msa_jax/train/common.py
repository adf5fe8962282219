"""Pieces both method builders share: settings dataclasses from config sections, the text encoder
and shape checks against the data."""

from __future__ import annotations

import dataclasses
from typing import Any, TypeVar

import ml_collections

from msa_jax.data.split import Split
from msa_jax.errors import RunConfigError
from msa_jax.models import bert

T = TypeVar("T")


def from_config(cls: type[T], section: ml_collections.ConfigDict, name: str, **derived: Any) -> T:
  """`cls(**derived, **section)`: the settings dataclass `cls` from the config section
  `config.<name>`; `derived` are the fields that come from the data, not from the config.

  A key of the section that is not a field of `cls`, or that names a derived field, and a value
  that `cls` refuses raise a one-line `RunConfigError` naming the key.
  """
  fields = {f.name for f in dataclasses.fields(cls)} - set(derived)
  for key in section:
    if key in derived:
      raise RunConfigError(
        f"config.{name}.{key}: {cls.__name__}.{key} is set from the data, not the config"
      )
    if key not in fields:
      raise RunConfigError(
        f"config.{name}.{key}: not a setting of {cls.__name__} (expected one of {sorted(fields)})"
      )
  try:
    return cls(**derived, **section)
  except ValueError as e:
    raise RunConfigError(f"config.{name}: {e}") from None


def text_encoder(
  config: ml_collections.ConfigDict, splits: dict[str, Split]
) -> tuple[bert.BertConfig, Any]:
  """The encoder preset of `config.encoder` (docs/methods.md §8), checked against the data's token
  ids and length."""
  try:
    enc_cfg, enc_params = bert.encoder_from_preset(config.encoder)
  except (ValueError, FileNotFoundError) as e:
    raise RunConfigError(f"config.encoder={config.encoder!r}: {e}") from None
  for name, split in splits.items():
    top = int(split.text_bert[:, 0].max())
    if top >= enc_cfg.vocab_size:
      raise RunConfigError(
        f"split {name!r} has token id {top} but the encoder {config.encoder!r} has "
        f"vocab_size {enc_cfg.vocab_size} (ids must come from the encoder's vocabulary)"
      )
    if split.text_len > enc_cfg.max_position_embeddings:
      raise RunConfigError(
        f"split {name!r} has text length {split.text_len} > the encoder's "
        f"max_position_embeddings {enc_cfg.max_position_embeddings}"
      )
  return enc_cfg, enc_params


def place_encoder(params: Any, enc_params: Any, names: tuple[str, ...]) -> Any:
  """Copies pretrained encoder weights into each named top-level subtree (no-op for random init)."""
  if enc_params is None:
    return params
  for name in names:
    params = bert.merge_pretrained(params, enc_params, (name,))
  return params
