"""Pieces both method builders share: the text encoder and shape checks against the data."""

from __future__ import annotations

from typing import Any

import ml_collections

from msa_jax.data.split import Split
from msa_jax.errors import RunConfigError
from msa_jax.models import bert


def text_encoder(config: ml_collections.ConfigDict, splits: dict[str, Split]) -> tuple[bert.BertConfig, Any]:
  """The encoder preset of `config.encoder` (SPEC §8), checked against the data's token ids and length."""
  try:
    enc_cfg, enc_params = bert.encoder_from_preset(config.encoder)
  except (ValueError, FileNotFoundError) as e:
    raise RunConfigError(f"config.encoder={config.encoder!r}: {e}") from None
  for name, split in splits.items():
    top = int(split.text_bert[:, 0].max())
    if top >= enc_cfg.vocab_size:
      raise RunConfigError(f"split {name!r} has token id {top} but the encoder {config.encoder!r} has "
                           f"vocab_size {enc_cfg.vocab_size} (ids must come from the encoder's vocabulary)")
    if split.text_len > enc_cfg.max_position_embeddings:
      raise RunConfigError(f"split {name!r} has text length {split.text_len} > the encoder's "
                           f"max_position_embeddings {enc_cfg.max_position_embeddings}")
  return enc_cfg, enc_params


def place_encoder(params: Any, enc_params: Any, names: tuple[str, ...]) -> Any:
  """Copies pretrained encoder weights into each named top-level subtree (no-op for random init)."""
  if enc_params is None:
    return params
  for name in names:
    params = bert.merge_pretrained(params, enc_params, (name,))
  return params
