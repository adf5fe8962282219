"""LNLN, the Language-dominated Noise-resistant Learning Network, as a Flax linen module
(docs/methods.md §4).

`LNLN(config).apply({'params': params}, batch_masked, batch_complete=None, deterministic=True,
rngs={'dropout': key})` returns a dict of arrays: the prediction, and at training time (with the
complete batch) everything `lnln_loss` needs.
Batches are the canonical model batches (COMMON): `text_bert` (B, 3, L) int32, `audio` (B, Ta, Da),
`vision` (B, Tv, Dv); padded tokens and frames go through every TokenTransformer unmasked.

Build the parameters with the training form, `init_lnln(config, key, batch)`, so that the
training-only branches (reconstructors, discriminator) have parameters too.
"""

from __future__ import annotations

import dataclasses
import numbers
from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from msa_jax.models.bert import BertConfig, BertModel
from msa_jax.models.dropout import check_impl as check_dropout_impl
from msa_jax.models.layers import (
  COMPUTE_DTYPES,
  CrossTransformer,
  HyperLayer,
  TokenTransformer,
  compute_dtype,
  grad_reverse,
  torch_dense,
)

Batch = Mapping[str, jax.Array]
GRL_SCOPES = ("all", "adversarial")


@dataclasses.dataclass(frozen=True)
class LNLNConfig:
  """LNLN sizes (docs/methods.md §4), ablation switches and the text encoder's config.

  Frame counts are maxima: a batch may have fewer frames (the position embeddings are sliced, as
  in the reference). Ablations:
  - `use_dmc=False`: no dominant modality correction — no completeness check, proxy feature, GRL
    or effectiveness discriminator; h_d = h_l; no 'w' / 'disc_*' outputs (their loss terms are 0).
  - `use_reconstructor=False`: no reconstructors; no 'rec' output (its loss term is 0).
  - `use_adversarial=False`: no effectiveness discriminator and no GRL (h_p enters h_d with
    ordinary gradients); completeness check and proxy feature stay.
  `grl_scope`: which gradients the GRL on the proxy feature h_p reverses. "all" (the authors'
  code): every gradient reaching h_p, the sentiment loss's included, because the reversal sits
  on h_p before it enters h_d. "adversarial": only the
  discriminator's: the discriminator reads h_d mixed from the reversed h_p, the rest of the
  model reads h_d mixed from h_p itself (the same values; only gradients differ).
  `stop_grad_targets=True` stops gradients through the complete-input branch ('full' and the
  discriminator's full_l rows); the reference (default False) does not.
  Performance options (`layers` module docstring; none changes a parameter, and in float32 none
  changes a result beyond float rounding): `dtype` ("float32" or "bfloat16"/"float16": mixed
  precision of the linears, attention and BERT matmuls; parameters, LayerNorms, softmax, the small
  heads and the losses stay float32), `attention_chunk` (blocked attention in the TokenTransformers
  over audio and vision frames, samples per block; 0 = plain attention), `remat` (BERT layers
  recomputed in the backward pass: less memory, about one more BERT forward; dropout masks drawn
  from another stream, see `bert`).
  `dropout_impl`: how BERT's dropout masks are drawn, "hash" or "threefry"
  (`msa_jax.models.dropout`; LNLN's own blocks have no dropout).
  """

  text_frames: int
  audio_frames: int
  vision_frames: int
  audio_dim: int
  vision_dim: int
  bert: BertConfig
  dim: int = 128
  token_len: int = 8
  heads: int = 8
  dim_head: int = 64
  mlp_dim: int = 128
  depth: int = 2
  hyper_heads: int = 8
  hyper_dim_head: int = 16
  num_hyper_layers: int = 3
  fusion_depth: int = 2
  completeness_hidden: int = 64
  discriminator_hidden: int = 64
  use_dmc: bool = True
  use_reconstructor: bool = True
  use_adversarial: bool = True
  stop_grad_targets: bool = False
  grl_alpha: float = 1.0
  grl_scope: str = "all"
  dtype: str = "float32"
  attention_chunk: int = 1
  remat: bool = False
  dropout_impl: str = "hash"

  def __post_init__(self):
    check_dropout_impl(self.dropout_impl)
    positive = (
      "text_frames",
      "audio_frames",
      "vision_frames",
      "audio_dim",
      "vision_dim",
      "dim",
      "token_len",
      "heads",
      "dim_head",
      "mlp_dim",
      "depth",
      "hyper_heads",
      "hyper_dim_head",
      "num_hyper_layers",
      "fusion_depth",
      "completeness_hidden",
      "discriminator_hidden",
    )
    for name in positive:
      value = getattr(self, name)
      if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"LNLNConfig.{name}={value!r}, expected a positive int")
    if self.grl_scope not in GRL_SCOPES:
      raise ValueError(f"LNLNConfig.grl_scope={self.grl_scope!r}, expected one of {GRL_SCOPES}")
    if self.dtype not in COMPUTE_DTYPES:
      raise ValueError(f"LNLNConfig.dtype={self.dtype!r}, expected one of {COMPUTE_DTYPES}")
    chunk = self.attention_chunk
    if isinstance(chunk, bool) or not isinstance(chunk, numbers.Integral) or chunk < 0:
      raise ValueError(f"LNLNConfig.attention_chunk={chunk!r}, expected an int >= 0")
    if self.num_hyper_layers > self.depth + 1:
      raise ValueError(
        f"LNLNConfig.num_hyper_layers={self.num_hyper_layers} needs depth + 1 "
        f"language hidden states, but depth={self.depth}"
      )

  @property
  def compute_dtype(self):
    """The layers' computation dtype (None: plain float32)."""
    return compute_dtype(self.dtype)

  def token_transformer(
    self, num_frames: int, token_len: int | None, name: str, **kwargs: Any
  ) -> TokenTransformer:
    """A TokenTransformer with the shared sizes and performance options."""
    return TokenTransformer(
      num_frames,
      token_len,
      self.dim,
      self.depth,
      self.heads,
      self.dim_head,
      self.mlp_dim,
      dtype=self.compute_dtype,
      attention_chunk=self.attention_chunk,
      name=name,
      **kwargs,
    )

  @property
  def adversarial(self) -> bool:
    """Whether the effectiveness discriminator and the GRL are built (needs DMC)."""
    return self.use_dmc and self.use_adversarial

  @classmethod
  def mosi(cls, bert: BertConfig, **overrides: Any) -> LNLNConfig:
    """CMU-MOSI: frames (L 50, A 375, V 500), dims (A 5, V 20), fusion depth 2."""
    return cls(
      **{
        **dict(
          text_frames=50,
          audio_frames=375,
          vision_frames=500,
          audio_dim=5,
          vision_dim=20,
          bert=bert,
          fusion_depth=2,
        ),
        **overrides,
      }
    )

  @classmethod
  def mosei(cls, bert: BertConfig, **overrides: Any) -> LNLNConfig:
    """CMU-MOSEI: frames (L 50, A 500, V 500), dims (A 74, V 35), fusion depth 4."""
    return cls(
      **{
        **dict(
          text_frames=50,
          audio_frames=500,
          vision_frames=500,
          audio_dim=74,
          vision_dim=35,
          bert=bert,
          fusion_depth=4,
        ),
        **overrides,
      }
    )

  @classmethod
  def sims(cls, bert: BertConfig, **overrides: Any) -> LNLNConfig:
    """CH-SIMS: frames (L 39, A 400, V 55), dims (A 33, V 709), fusion depth 4."""
    return cls(
      **{
        **dict(
          text_frames=39,
          audio_frames=400,
          vision_frames=55,
          audio_dim=33,
          vision_dim=709,
          bert=bert,
          fusion_depth=4,
        ),
        **overrides,
      }
    )


def input_sizes(params: Mapping[str, Any]) -> dict[str, int]:
  """The `LNLNConfig` fields that come from the data (text / audio / vision frame counts, audio /
  vision feature sizes), read from a parameter tree of arrays or shape structs: the input sizes the
  parameters were built for."""
  token_len = params["proj_a"]["transformer"]["extra_token"].shape[1]
  frames = lambda m: int(params[m]["transformer"]["pos_embedding"].shape[1]) - int(token_len)
  return {
    "text_frames": frames("proj_l"),
    "audio_frames": frames("proj_a"),
    "vision_frames": frames("proj_v"),
    "audio_dim": int(params["proj_a"]["dense"]["kernel"].shape[0]),
    "vision_dim": int(params["proj_v"]["dense"]["kernel"].shape[0]),
  }


class ModalityEncoder(nn.Module):
  """Step-1 encoder: Dense(D -> dim) then TokenTransformer(num_frames, token_len), keeping the
  token_len extra-token outputs (docs/methods.md §4 step 1). x (B, N, D) -> (B, token_len, dim)."""

  config: LNLNConfig
  num_frames: int

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    cfg = self.config
    x = torch_dense(cfg.dim, name="dense", dtype=cfg.compute_dtype)(x)
    return cfg.token_transformer(self.num_frames, cfg.token_len, "transformer", keep=cfg.token_len)(
      x
    )


class CompletenessCheck(nn.Module):
  """Estimated language completeness w (docs/methods.md §4 step 2): h_l (B, T, dim) -> (B, 1) in
  (0, 1)."""

  config: LNLNConfig

  @nn.compact
  def __call__(self, h_l: jax.Array) -> jax.Array:
    cfg = self.config
    c = cfg.token_transformer(cfg.token_len, 1, "transformer", keep=1)(h_l)[:, 0]
    c = jax.nn.leaky_relu(torch_dense(cfg.completeness_hidden, name="dense_hidden")(c), 0.1)
    return jax.nn.sigmoid(torch_dense(1, name="dense_out")(c))


class Discriminator(nn.Module):
  """Effectiveness discriminator (docs/methods.md §4 step 6): (N, dim) -> logits (N, 2)."""

  config: LNLNConfig

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    x = torch_dense(self.config.discriminator_hidden, name="dense_hidden")(x)
    return torch_dense(2, name="dense_out")(jax.nn.leaky_relu(x, 0.1))


def _check_batch(batch: Batch, config: LNLNConfig, which: str) -> None:
  for key in ("text_bert", "audio", "vision"):
    if key not in batch:
      raise KeyError(f"LNLN {which}: missing key {key!r}, expected text_bert, audio, vision")
  text = batch["text_bert"].shape
  if len(text) != 3 or text[1] != 3 or text[2] > config.text_frames:
    raise ValueError(
      f"LNLN {which}: text_bert has shape {text}, expected (B, 3, L<={config.text_frames})"
    )
  for key, frames, dim in (
    ("audio", config.audio_frames, config.audio_dim),
    ("vision", config.vision_frames, config.vision_dim),
  ):
    shape = batch[key].shape
    if len(shape) != 3 or shape[1] > frames or shape[2] != dim:
      raise ValueError(f"LNLN {which}: {key} has shape {shape}, expected (B, T<={frames}, {dim})")


class LNLN(nn.Module):
  """The LNLN model (docs/methods.md §4 steps 1–6).

  `__call__(batch_masked, batch_complete=None, deterministic=True)` returns:
  - 'pred' (B,): the sentiment prediction;
  - 'w' (B, 1): the estimated language completeness (with DMC);
  and, when `batch_complete` is given (training):
  - 'rec' (B, 3T, dim): reconstructions [a, v, l] of the masked features (with the reconstructor);
  - 'full' (B, 3T, dim): the step-1 features [a, v, l] of the complete inputs (with the
    reconstructor or adversarial; without either, the complete inputs are not encoded);
  - 'disc_logits' (2·B·T, 2), 'disc_labels' (2·B·T,) int32: the discriminator's outputs on the
    rows of [h_d; full_l] and their labels (1 for h_d rows, 0 for full_l rows) (with adversarial).
  BERT (submodule `bert`) runs on the masked and, in training, the complete text; each call draws
  its own dropout masks from the 'dropout' stream.
  """

  config: LNLNConfig

  @nn.compact
  def __call__(
    self, batch_masked: Batch, batch_complete: Batch | None = None, deterministic: bool = True
  ) -> dict[str, jax.Array]:
    cfg = self.config
    _check_batch(batch_masked, cfg, "batch_masked")
    if batch_complete is not None:
      _check_batch(batch_complete, cfg, "batch_complete")
    bert = BertModel(
      dataclasses.replace(cfg.bert, dropout_impl=cfg.dropout_impl),
      dtype=cfg.compute_dtype,
      remat=cfg.remat,
      name="bert",
    )
    proj_l = ModalityEncoder(cfg, cfg.text_frames, name="proj_l")
    proj_a = ModalityEncoder(cfg, cfg.audio_frames, name="proj_a")
    proj_v = ModalityEncoder(cfg, cfg.vision_frames, name="proj_v")

    def encode(batch: Batch) -> tuple[jax.Array, jax.Array, jax.Array]:
      h_l = proj_l(bert(batch["text_bert"], deterministic=deterministic))
      return h_l, proj_a(batch["audio"]), proj_v(batch["vision"])

    h_l, h_a, h_v = encode(batch_masked)
    b, t = h_l.shape[0], cfg.token_len
    out = {}

    if cfg.use_dmc:
      w = CompletenessCheck(cfg, name="completeness_check")(h_l)
      h_p0 = self.param("h_p0", nn.initializers.ones, (1, t, cfg.dim))
      h_p = cfg.token_transformer(3 * t, t, "proxy_generator", keep=t)(
        jnp.concatenate([jnp.broadcast_to(h_p0, (b, t, cfg.dim)), h_a, h_v], axis=1)
      )
      mix = lambda p: w[:, :, None] * h_l + (1.0 - w[:, :, None]) * p
      if cfg.adversarial and cfg.grl_scope == "all":
        h_p = grad_reverse(h_p, cfg.grl_alpha)
      h_d = mix(h_p)
      h_d_disc = (
        mix(grad_reverse(h_p, cfg.grl_alpha))
        if cfg.adversarial and cfg.grl_scope == "adversarial"
        else h_d
      )
      out["w"] = w
    else:
      h_d = h_d_disc = h_l

    hs = cfg.token_transformer(t, None, "language_encoder", save_hidden=True)(h_d)
    h_hyper = self.param("h_hyper", nn.initializers.ones, (1, t, cfg.dim))
    h_hyper = jnp.broadcast_to(h_hyper, (b, t, cfg.dim))
    for i in range(cfg.num_hyper_layers):
      h_hyper = HyperLayer(
        cfg.dim, cfg.hyper_heads, cfg.hyper_dim_head, cfg.compute_dtype, name=f"hyper_{i}"
      )(hs[i], h_a, h_v, h_hyper)
    f = CrossTransformer(
      t,
      t,
      cfg.dim,
      cfg.fusion_depth,
      cfg.heads,
      cfg.dim_head,
      cfg.mlp_dim,
      cfg.compute_dtype,
      name="fusion",
    )(h_hyper, hs[-1])
    out["pred"] = torch_dense(1, name="regressor")(jnp.mean(f[:, 1:], axis=1))[:, 0]

    if batch_complete is None:
      return out
    if cfg.use_reconstructor:
      recs = []
      for m, h in (("a", h_a), ("v", h_v), ("l", h_l)):
        recs.append(cfg.token_transformer(t, None, f"reconstructor_{m}")(h))
      out["rec"] = jnp.concatenate(recs, axis=1)
    if cfg.use_reconstructor or cfg.adversarial:
      full_l, full_a, full_v = encode(batch_complete)
      full = jnp.concatenate([full_a, full_v, full_l], axis=1)
      if cfg.stop_grad_targets:
        full = jax.lax.stop_gradient(full)
      out["full"] = full
    if cfg.adversarial:
      rows = jnp.concatenate([h_d_disc, full[:, 2 * t :]], axis=0).reshape(2 * b * t, cfg.dim)
      out["disc_logits"] = Discriminator(cfg, name="discriminator")(rows)
      out["disc_labels"] = jnp.concatenate(
        [jnp.ones(b * t, jnp.int32), jnp.zeros(b * t, jnp.int32)]
      )
    return out


def init_lnln(config: LNLNConfig, key: jax.Array, batch: Batch) -> dict[str, Any]:
  """All LNLN parameters (training branches included), from the 'params' stream key and an example
  batch (only its shapes matter)."""
  return LNLN(config).init({"params": key}, batch, batch, deterministic=True)["params"]
