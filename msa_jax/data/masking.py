"""Token- and frame-level missing-data simulation (docs/methods.md §2), as pure jittable functions.

A keep-mask is `keep[j] = (u_j > r) & valid[j]` with u_j ~ U(0, 1) i.i.d. per position:
- text: [CLS] (position 0) and the last valid position ([SEP]) are always kept; a dropped token's id
  becomes [UNK] = 100; the attention mask and segment ids are untouched, and so is padding;
- audio / vision: a dropped valid frame becomes all zeros; frames past the length are untouched.

Training draws a fresh rate per sample and modality each step (`training_rates`); evaluation uses
one fixed rate and a fixed key whose uniforms are drawn per sample from
`fold_in(key, sample_index)`, so a sample's mask depends neither on the batch it lands in nor on the
device count, and masks are nested across rates (a token missing at r = 0.3 is also missing at
r = 0.5).
"""

from __future__ import annotations

from collections.abc import Mapping

import jax
import jax.numpy as jnp

UNK_ID = 100
MODALITY_KEYS = {"text": "text_bert", "audio": "audio", "vision": "vision"}

Batch = Mapping[str, jax.Array]


def text_keep_mask(u: jax.Array, attention_mask: jax.Array, rate: jax.Array) -> jax.Array:
  """Which tokens survive: (B, L) bool.

  Args:
    u: (B, L) uniforms in [0, 1).
    attention_mask: (B, L) 1 for valid tokens, 0 for padding.
    rate: (B,) missing rate per sample.
  """
  valid = attention_mask > 0
  keep = (u > rate[:, None]) & valid
  positions = jnp.arange(valid.shape[1])[None, :]
  last_valid = jnp.sum(valid, axis=1, keepdims=True) - 1
  return keep | (valid & ((positions == 0) | (positions == last_valid)))


def frame_keep_mask(u: jax.Array, lengths: jax.Array, rate: jax.Array) -> jax.Array:
  """Which frames survive: (B, T) bool; `valid[j] = j < length`. u (B, T), lengths (B,), rate
  (B,)."""
  valid = jnp.arange(u.shape[1])[None, :] < lengths[:, None]
  return (u > rate[:, None]) & valid


def apply_text_mask(text_bert: jax.Array, keep: jax.Array) -> jax.Array:
  """Replaces dropped valid token ids by [UNK]; text_bert (B, 3, L), keep (B, L)."""
  ids = text_bert[:, 0]
  dropped = (text_bert[:, 1] > 0) & ~keep
  new_ids = jnp.where(dropped, jnp.asarray(UNK_ID, ids.dtype), ids)
  return text_bert.at[:, 0].set(new_ids)


def apply_frame_mask(frames: jax.Array, keep: jax.Array, lengths: jax.Array) -> jax.Array:
  """Zeroes dropped valid frames; frames (B, T, D), keep (B, T); padding frames are left as they
  are."""
  valid = jnp.arange(frames.shape[1])[None, :] < lengths[:, None]
  zero = valid & ~keep
  return jnp.where(zero[..., None], jnp.zeros((), frames.dtype), frames)


def _uniforms(batch: Batch, key: jax.Array) -> dict[str, jax.Array]:
  """Per-modality uniforms of shape (B, T) from one key."""
  b = batch["labels"].shape[0]
  shapes = {
    "text": batch["text_bert"].shape[2],
    "audio": batch["audio"].shape[1],
    "vision": batch["vision"].shape[1],
  }
  return {
    m: jax.random.uniform(jax.random.fold_in(key, i), (b, t))
    for i, (m, t) in enumerate(shapes.items())
  }


def per_sample_uniforms(
  batch: Batch, key: jax.Array, sample_index: jax.Array
) -> dict[str, jax.Array]:
  """Uniforms for each sample drawn from `fold_in(key, sample_index[i])` (batch-independent)."""
  shapes = {
    "text": batch["text_bert"].shape[2],
    "audio": batch["audio"].shape[1],
    "vision": batch["vision"].shape[1],
  }

  def one(idx):
    k = jax.random.fold_in(key, idx)
    return {
      m: jax.random.uniform(jax.random.fold_in(k, i), (t,))
      for i, (m, t) in enumerate(shapes.items())
    }

  return jax.vmap(one)(sample_index)


def mask_with_uniforms(
  batch: Batch, uniforms: Mapping[str, jax.Array], rates: Mapping[str, jax.Array]
) -> dict[str, jax.Array]:
  """The batch with tokens/frames dropped where `uniforms <= rates` (docs/methods.md §2).

  Args:
    batch: a model batch (text_bert, audio, vision, audio_lengths, vision_lengths, labels, ...).
    uniforms: per modality (B, T) uniforms.
    rates: per modality (B,) missing rates.

  Returns:
    A new batch dict; keys other than the three modalities are passed through.
  """
  out = dict(batch)
  keep_t = text_keep_mask(uniforms["text"], batch["text_bert"][:, 1], rates["text"])
  out["text_bert"] = apply_text_mask(batch["text_bert"], keep_t)
  for m in ("audio", "vision"):
    lengths = batch[f"{m}_lengths"]
    keep = frame_keep_mask(uniforms[m], lengths, rates[m])
    out[m] = apply_frame_mask(batch[m], keep, lengths)
  return out


def training_rates(key: jax.Array, batch_size: int) -> dict[str, jax.Array]:
  """Per-sample, per-modality rates: r ~ U(0, 1), then r = 0 for a random half (floor(B/2)) of the
  samples, independently per modality (docs/methods.md §2; the reference zeroes `int(N/2)`
  samples)."""
  out = {}
  for i, m in enumerate(MODALITY_KEYS):
    k_rate, k_half = jax.random.split(jax.random.fold_in(key, i))
    rate = jax.random.uniform(k_rate, (batch_size,))
    zeroed = jax.random.permutation(k_half, batch_size) < batch_size // 2
    out[m] = jnp.where(zeroed, 0.0, rate)
  return out


def mask_train(batch: Batch, key: jax.Array) -> tuple[dict[str, jax.Array], jax.Array]:
  """Training-mode masking: fresh rates and masks from `key`.

  Returns:
    (masked batch, nominal text missing rate r_l of shape (B,)) — the completeness target of LNLN
    is 1 − r_l (docs/methods.md §2).
  """
  b = batch["labels"].shape[0]
  k_rates, k_u = jax.random.split(key)
  rates = training_rates(k_rates, b)
  return mask_with_uniforms(batch, _uniforms(batch, k_u), rates), rates["text"]


def mask_eval(
  batch: Batch, key: jax.Array, rate: jax.Array | float, sample_index: jax.Array
) -> tuple[dict[str, jax.Array], jax.Array]:
  """Evaluation-mode masking: one rate for every sample and modality, uniforms from
  `fold_in(key, sample_index)`; the same key gives nested masks across rates.

  Returns:
    (masked batch, text missing rate (B,) filled with `rate`).
  """
  b = batch["labels"].shape[0]
  r = jnp.full((b,), rate, dtype=jnp.float32)
  u = per_sample_uniforms(batch, key, sample_index)
  return mask_with_uniforms(batch, u, {m: r for m in MODALITY_KEYS}), r
