"""GEAR — General Debiasing for Multimodal Sentiment Analysis (ACM MM 2023), docs/methods.md §5.

Per modality a robust and a bias extractor of identical architecture (separate weights), heads
that keep the two feature sets disentangled with stop-gradients, swap augmentation of the bias
features across the batch, and a post-norm Transformer fusing the three robust features. The losses
(GMAE, inverse-probability weights) live in `msa_jax.losses`, the optimizer in
`msa_jax.train.optimizers`; the optimizer groups of the parameters are here.

Top-level submodules; their names decide the optimizer group (`param_group_labels`):

  bert_robust, bert_bias                  BertModel                        bert / bert_no_decay
  audio_robust, audio_bias                LSTM `lstm`, Dense `dense`       audio
  vision_robust, vision_bias              LSTM `lstm`, Dense `dense`       vision
  {text,audio,vision}_{robust,bias}_proj  Dense(-> swap_dim)               extractor_other
  {text,audio,vision}_heads               robust_feature, bias_feature,    extractor_other
                                          bias_final
  fusion                                  encoder (layers stacked),        fusion
                                          mlp_hidden, mlp_out

Dense layers (`layers.TorchDense`) use PyTorch's `nn.Linear` initialisation (weight and bias
U(±1/sqrt(fan_in))) and Flax layout (kernel = weight^T). The fusion encoder's layers are stacked on
a leading axis of length `fusion_layers` (`nn.scan`), all initialised from the same key: PyTorch
deep-copies one `TransformerEncoderLayer`, so its layers start identical.

Swap augmentation inside a jitted step: pass `swap_key` whenever the step may swap (training) and
give the loss a traced `swap_active` flag (`epoch > swap_epochs`); the swap outputs are always
computed and `msa_jax.losses.gear_loss` selects their terms with `jnp.where`, so one compiled
program serves every epoch. The swap branch reuses the extracted features (no second BERT/LSTM
pass): it costs one more evaluation of each modality's heads and one fusion pass. Without
`swap_key` (evaluation) it is skipped. Given permutations (`permutations=`, e.g. those recorded
from the reference for the parity test) replace the draw from `swap_key`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from msa_jax.modalities import MODALITIES
from msa_jax.models.bert import BertConfig, BertModel
from msa_jax.models.dropout import check_impl as check_dropout_impl
from msa_jax.models.dropout import dropout
from msa_jax.models.layers import COMPUTE_DTYPES, TorchDense, compute_dtype, torch_uniform_init
from msa_jax.models.lstm import TorchLSTM

ROLES = ("robust", "bias")
PARAM_GROUPS = ("bert", "bert_no_decay", "audio", "vision", "extractor_other", "fusion")


@dataclasses.dataclass(frozen=True)
class GEARConfig:
  """GEAR sizes and dropout rates (docs/methods.md §5; the authors' run.py values are the defaults).

  Attributes:
    text: the text encoder's BertConfig (its hidden size, `text_in`, is the [CLS] width).
    audio_in, vision_in: per-frame feature sizes of the audio / vision inputs.
    audio_hidden, vision_hidden: LSTM hidden sizes.
    audio_out, vision_out: width of the Dense right after each LSTM.
    swap_dim: s, the width of every extractor output z and robust feature h_c.
    fusion_layers, fusion_heads, fusion_ff: the fusion Transformer encoder.
    post_fusion_dim: the hidden width of the MLP after fusion.
    extractor_dropout: one rate for the post-LSTM, post-extractor and post-[CLS] dropouts
      (0.3 on MOSI, 0 on MOSEI).
    fusion_dropout: the Transformer's and fusion MLP's dropout.
    dtype: computation dtype of the two BERTs ("float32", or "bfloat16"/"float16" for mixed
      precision: parameters, LayerNorms and softmax stay float32); the LSTMs, heads, fusion and
      losses always run in float32 (they are small).
    remat: recompute the BERT layers in the backward pass (less memory, about one more BERT
      forward; dropout masks from another stream, see `msa_jax.models.bert`).
    dropout_impl: how every dropout mask (the BERTs' included) is drawn: "hash" or "threefry"
      (`msa_jax.models.dropout`).
    cls_only: the BERTs' last layer computes position 0 only, the [CLS] state GEAR reads (the
      same values up to float rounding and the same dropout masks; `BertModel.cls_only`).
  """

  text: BertConfig
  audio_in: int
  vision_in: int
  audio_hidden: int = 16
  vision_hidden: int = 32
  audio_out: int = 16
  vision_out: int = 32
  swap_dim: int = 32
  fusion_layers: int = 2
  fusion_heads: int = 4
  fusion_ff: int = 2048
  post_fusion_dim: int = 128
  extractor_dropout: float = 0.0
  fusion_dropout: float = 0.1
  dtype: str = "float32"
  remat: bool = False
  dropout_impl: str = "hash"
  cls_only: bool = True

  def __post_init__(self):
    check_dropout_impl(self.dropout_impl)
    if self.dtype not in COMPUTE_DTYPES:
      raise ValueError(f"GEARConfig: dtype={self.dtype!r}, expected one of {COMPUTE_DTYPES}")
    if self.swap_dim % self.fusion_heads:
      raise ValueError(
        f"GEARConfig: swap_dim={self.swap_dim} is not divisible by fusion_heads={self.fusion_heads}"
      )
    for name in ("extractor_dropout", "fusion_dropout"):
      rate = getattr(self, name)
      if not 0.0 <= rate < 1.0:
        raise ValueError(f"GEARConfig: {name}={rate}, expected a rate in [0, 1)")

  @property
  def text_in(self) -> int:
    """Width of the text encoder's [CLS] vector."""
    return self.text.hidden_size

  @classmethod
  def mosi(cls, text: BertConfig) -> GEARConfig:
    """MOSI: audio 5 / vision 20 features per frame, one dropout of 0.3 in the extractors."""
    return cls(text=text, audio_in=5, vision_in=20, extractor_dropout=0.3)

  @classmethod
  def mosei(cls, text: BertConfig) -> GEARConfig:
    """MOSEI: audio 74 / vision 35 features per frame, no extractor dropout."""
    return cls(text=text, audio_in=74, vision_in=35, extractor_dropout=0.0)

  @classmethod
  def tiny(cls, audio_in: int = 5, vision_in: int = 20) -> GEARConfig:
    """A small model for tests and CPU smoke runs (tiny BERT, small feed-forward)."""
    return cls(
      text=BertConfig.tiny(),
      audio_in=audio_in,
      vision_in=vision_in,
      fusion_ff=64,
      post_fusion_dim=16,
    )


def input_sizes(params: Mapping[str, Any]) -> dict[str, int]:
  """The `GEARConfig` fields that come from the data (`audio_in`, `vision_in`: per-frame feature
  sizes), read from a parameter tree of arrays or shape structs."""
  return {
    f"{m}_in": int(params[f"{m}_robust"]["lstm"]["weight_ih"].shape[1]) for m in ("audio", "vision")
  }


class _ZeroBiasDense(nn.Module):
  """A `TorchDense` whose bias starts at zero (PyTorch MHA out-projection): (..., D) -> (..., F)."""

  features: int

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    fan_in = x.shape[-1]
    kernel = self.param("kernel", torch_uniform_init(fan_in), (fan_in, self.features))
    return x @ kernel + self.param("bias", nn.initializers.zeros, (self.features,))


def swap_permutations(key: jax.Array, batch_size: int) -> dict[str, jax.Array]:
  """One independent permutation of range(batch_size) per modality (docs/methods.md §5 swap
  augmentation).

  Modality i (order text, audio, vision) uses `jax.random.fold_in(key, i)`.
  """
  return {
    m: jax.random.permutation(jax.random.fold_in(key, i), batch_size)
    for i, m in enumerate(MODALITIES)
  }


class SequenceEncoder(nn.Module):
  """The audio/vision sub-network: LSTM over valid frames -> Dropout -> Dense(hidden -> out).

  (B, T, D), lengths (B,) -> (B, out). Mirrors the reference's `AuViSubNet` (docs/methods.md §5).
  """

  hidden_size: int
  out_size: int
  dropout: float
  dropout_impl: str = "hash"

  @nn.compact
  def __call__(self, x: jax.Array, lengths: jax.Array, deterministic: bool) -> jax.Array:
    h = TorchLSTM(self.hidden_size, name="lstm")(x, lengths)
    h = dropout(self, h, self.dropout, deterministic, self.dropout_impl)
    return TorchDense(self.out_size, name="dense")(h)


class ModalityHeads(nn.Module):
  """The robust-feature head and the bias-prediction head of one modality (docs/methods.md §5).

  (z_c (B, s), z_b (B, s)) -> (h_c (B, s), ŷ_b (B,)) with
  h_c = ReLU(Dense_c([z_c, sg(z_b)])) and ŷ_b = Dense_b_out(ReLU(Dense_b([sg(z_c), z_b]))).
  """

  swap_dim: int

  @nn.compact
  def __call__(self, z_c: jax.Array, z_b: jax.Array) -> tuple[jax.Array, jax.Array]:
    sg = jax.lax.stop_gradient
    h_c = nn.relu(
      TorchDense(self.swap_dim, name="robust_feature")(jnp.concatenate([z_c, sg(z_b)], axis=-1))
    )
    h_b = nn.relu(
      TorchDense(self.swap_dim, name="bias_feature")(jnp.concatenate([sg(z_c), z_b], axis=-1))
    )
    return h_c, TorchDense(1, name="bias_final")(h_b)[:, 0]


class TorchEncoderLayer(nn.Module):
  """PyTorch's `nn.TransformerEncoderLayer` defaults: post-norm, ReLU, (B, L, d) -> (B, L, d).

  x = LN1(x + Drop(MHA(x))); x = LN2(x + Drop(W2 Drop(ReLU(W1 x)))). The attention in-projection
  (`in_proj`, kernel (d, 3d) = [q | k | v]) is Xavier-uniform over the whole matrix with zero
  bias; the out-projection bias is zero; LayerNorm eps 1e-5. Written for `nn.scan` over layers:
  `(x, _) -> (x, None)`.
  """

  num_heads: int
  ff_dim: int
  dropout: float
  deterministic: bool
  dropout_impl: str = "hash"

  @nn.compact
  def __call__(self, x: jax.Array, _: Any) -> tuple[jax.Array, None]:
    batch, length, d_model = x.shape
    head_dim = d_model // self.num_heads
    drop = lambda t: dropout(self, t, self.dropout, self.deterministic, self.dropout_impl)
    norm = lambda name: nn.LayerNorm(epsilon=1e-5, use_fast_variance=False, name=name)

    qkv = nn.Dense(
      3 * d_model,
      kernel_init=nn.initializers.xavier_uniform(),
      bias_init=nn.initializers.zeros,
      name="in_proj",
    )(x)
    q, k, v = (
      t.reshape(batch, length, self.num_heads, head_dim) for t in jnp.split(qkv, 3, axis=-1)
    )
    scores = jnp.einsum("bqhd,bkhd->bhqk", q, k) / jnp.sqrt(jnp.asarray(head_dim, x.dtype))
    probs = drop(jax.nn.softmax(scores, axis=-1))
    attended = jnp.einsum("bhqk,bkhd->bqhd", probs, v).reshape(batch, length, d_model)
    attended = _ZeroBiasDense(d_model, name="out_proj")(attended)
    x = norm("norm1")(x + drop(attended))

    ff = drop(nn.relu(TorchDense(self.ff_dim, name="linear1")(x)))
    ff = TorchDense(d_model, name="linear2")(ff)
    return norm("norm2")(x + drop(ff)), None


class FusionTransformer(nn.Module):
  """Fusion of the robust features (docs/methods.md §5): (B, 3, s) -> ŷ (B,).

  A stack of `num_layers` identical-at-init `TorchEncoderLayer`s over the length-3 sequence (text,
  audio, vision; no positional encoding), then flatten (3s) -> Dense(post_dim) -> Dropout -> ReLU
  -> Dense(1). Encoder parameters are stacked: `encoder/<leaf>` has a leading axis of num_layers.
  """

  num_layers: int
  num_heads: int
  ff_dim: int
  post_dim: int
  dropout: float
  dropout_impl: str = "hash"

  @nn.compact
  def __call__(self, h: jax.Array, deterministic: bool) -> jax.Array:
    layers = nn.scan(
      TorchEncoderLayer,
      variable_axes={"params": 0},
      split_rngs={"params": False, "dropout": True},
      length=self.num_layers,
    )
    x, _ = layers(
      self.num_heads, self.ff_dim, self.dropout, deterministic, self.dropout_impl, name="encoder"
    )(h, None)
    x = x.reshape(x.shape[0], -1)
    x = TorchDense(self.post_dim, name="mlp_hidden")(x)
    x = nn.relu(dropout(self, x, self.dropout, deterministic, self.dropout_impl))
    return TorchDense(1, name="mlp_out")(x)[:, 0]


def _check_batch(batch: Mapping[str, jax.Array], cfg: GEARConfig) -> None:
  """Raises a one-line ValueError when the batch lacks a key or has an unexpected shape."""
  required = ("text_bert", "audio", "vision", "audio_lengths", "vision_lengths")
  missing = [k for k in required if k not in batch]
  if missing:
    raise ValueError(f"GEAR: batch is missing keys {missing} (needs {list(required)})")
  size = batch["text_bert"].shape[0]
  for m, dim in (("audio", cfg.audio_in), ("vision", cfg.vision_in)):
    shape = batch[m].shape
    if len(shape) != 3 or shape[0] != size or shape[2] != dim:
      raise ValueError(
        f"GEAR: batch['{m}'] has shape {shape}, expected ({size}, T, {dim}) "
        f"(GEARConfig.{m}_in={dim})"
      )
    if batch[f"{m}_lengths"].shape != (size,):
      raise ValueError(
        f"GEAR: batch['{m}_lengths'] has shape {batch[f'{m}_lengths'].shape}, expected ({size},)"
      )


def _check_permutations(
  permutations: Mapping[str, jax.Array], batch_size: int
) -> dict[str, jax.Array]:
  """The given swap permutations as int32 arrays; a one-line ValueError for wrong keys or shapes.

  (Whether each is a permutation is not checked: the values may be traced.)
  """
  if set(permutations) != set(MODALITIES):
    raise ValueError(
      f"GEAR: permutations has keys {sorted(permutations)}, expected {sorted(MODALITIES)}"
    )
  perms = {m: jnp.asarray(permutations[m]) for m in MODALITIES}
  for m, p in perms.items():
    if p.shape != (batch_size,) or not jnp.issubdtype(p.dtype, jnp.integer):
      raise ValueError(
        f"GEAR: permutations['{m}'] has shape {p.shape} and dtype {p.dtype}, "
        f"expected ({batch_size},) integers"
      )
  return {m: p.astype(jnp.int32) for m, p in perms.items()}


class GEAR(nn.Module):
  """The GEAR model (docs/methods.md §5).

  `GEAR(cfg).apply(variables, batch, deterministic, swap_key, rngs={'dropout': k})` with the
  canonical batch (text_bert (B, 3, L), audio (B, Ta, Da), vision (B, Tv, Dv), audio_lengths (B,),
  vision_lengths (B,)) returns a dict:
    'pred': (B,) fused prediction ŷ from the robust features;
    'bias_preds': {modality: (B,)} bias predictions ŷ_b^m;
  and, when `swap_key` is given (one permutation per modality from `swap_permutations`) or
  `permutations` ({modality: (B,) int}, used as given instead of a draw; the two are exclusive):
    'pred_swap': (B,) ŷ_swap, fusion of h_c^m computed with the swapped bias features z_b^m[π_m];
    'bias_preds_swap': {modality: (B,)} bias predictions from [sg(z_c), z_b[π]] (target y[π]);
    'perms': {modality: (B,) int32} the permutations π_m.
  """

  config: GEARConfig

  @nn.compact
  def __call__(
    self,
    batch: Mapping[str, jax.Array],
    deterministic: bool = True,
    swap_key: jax.Array | None = None,
    permutations: Mapping[str, jax.Array] | None = None,
  ) -> dict[str, Any]:
    cfg = self.config
    _check_batch(batch, cfg)
    if swap_key is not None and permutations is not None:
      raise ValueError("GEAR: pass swap_key or permutations, not both")
    if permutations is not None:
      permutations = _check_permutations(permutations, batch["text_bert"].shape[0])
    s = cfg.swap_dim
    drop = lambda t: dropout(self, t, cfg.extractor_dropout, deterministic, cfg.dropout_impl)
    seq_sizes = {
      "audio": (cfg.audio_hidden, cfg.audio_out),
      "vision": (cfg.vision_hidden, cfg.vision_out),
    }

    text = dataclasses.replace(cfg.text, dropout_impl=cfg.dropout_impl)
    z = {m: {} for m in MODALITIES}
    for role in ROLES:
      hidden = BertModel(
        text,
        dtype=compute_dtype(cfg.dtype),
        remat=cfg.remat,
        cls_only=cfg.cls_only,
        name=f"bert_{role}",
      )(batch["text_bert"], deterministic=deterministic)
      z["text"][role] = nn.relu(TorchDense(s, name=f"text_{role}_proj")(drop(hidden[:, 0])))
      for m, (hid, out) in seq_sizes.items():
        h = SequenceEncoder(hid, out, cfg.extractor_dropout, cfg.dropout_impl, name=f"{m}_{role}")(
          batch[m], batch[f"{m}_lengths"], deterministic
        )
        z[m][role] = nn.relu(TorchDense(s, name=f"{m}_{role}_proj")(drop(h)))

    heads = {m: ModalityHeads(s, name=f"{m}_heads") for m in MODALITIES}
    fusion = FusionTransformer(
      cfg.fusion_layers,
      cfg.fusion_heads,
      cfg.fusion_ff,
      cfg.post_fusion_dim,
      cfg.fusion_dropout,
      cfg.dropout_impl,
      name="fusion",
    )

    feats, bias_preds = {}, {}
    for m in MODALITIES:
      feats[m], bias_preds[m] = heads[m](z[m]["robust"], z[m]["bias"])
    outputs = {
      "pred": fusion(jnp.stack([feats[m] for m in MODALITIES], axis=1), deterministic),
      "bias_preds": bias_preds,
    }
    if swap_key is None and permutations is None:
      return outputs

    perms = (
      permutations
      if permutations is not None
      else swap_permutations(swap_key, batch["text_bert"].shape[0])
    )
    feats_swap, bias_preds_swap = {}, {}
    for m in MODALITIES:
      feats_swap[m], bias_preds_swap[m] = heads[m](z[m]["robust"], z[m]["bias"][perms[m]])
    outputs["pred_swap"] = fusion(
      jnp.stack([feats_swap[m] for m in MODALITIES], axis=1), deterministic
    )
    outputs["bias_preds_swap"] = bias_preds_swap
    outputs["perms"] = perms
    return outputs


_TOP_LEVEL_GROUPS = {
  **{f"bert_{r}": "bert" for r in ROLES},
  **{f"audio_{r}": "audio" for r in ROLES},
  **{f"vision_{r}": "vision" for r in ROLES},
  **{f"{m}_{r}_proj": "extractor_other" for m in MODALITIES for r in ROLES},
  **{f"{m}_heads": "extractor_other" for m in MODALITIES},
  "fusion": "fusion",
}


def _leaf_group(path: tuple[Any, ...]) -> str:
  names = [str(getattr(p, "key", p)) for p in path]
  group = _TOP_LEVEL_GROUPS.get(names[0])
  if group is None:
    raise ValueError(
      f"param_group_labels: unknown top-level parameter {names[0]!r} "
      f"(expected one of {sorted(_TOP_LEVEL_GROUPS)})"
    )
  if group == "bert" and (names[-1] == "bias" or "LayerNorm" in names):
    return "bert_no_decay"
  return group


def param_group_labels(params: Mapping[str, Any]) -> Any:
  """Labels every parameter leaf with its optimizer group (docs/methods.md §5) (a pytree of str like
  `params`).

  Groups: 'bert' (both BERTs, weights), 'bert_no_decay' (BERT biases and LayerNorm parameters),
  'audio' / 'vision' (LSTM and the Dense right after it, both roles), 'extractor_other' (the
  projections to swap_dim and the per-modality heads), 'fusion' (Transformer and fusion MLP).
  Accepts the 'params' collection or a variables dict `{'params': ...}`.
  """
  if set(params) == {"params"}:
    return {"params": param_group_labels(params["params"])}
  return jax.tree_util.tree_map_with_path(lambda path, _: _leaf_group(path), params)
