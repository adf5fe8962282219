"""The authors' GEAR (`IFL_ES`, github.com/Teng-Sun/GEAR) state_dict -> `msa_jax.models.gear.GEAR`.

Pure numpy on the tensors (no torch): pass a state_dict as a mapping of name -> array, e.g. read
with `safetensors.numpy.load_file`, or `{k: v.numpy() for k, v in torch_state_dict.items()}`.

The name table below is the whole correspondence (docs/methods.md §5). Reference roles `model_c` /
`model_b` are our `robust` / `bias`; reference sub-models `text_model` / `audio_model` /
`video_model` are our text / audio / vision. Conventions:
- `nn.Linear` weight (out, in) -> Flax kernel (in, out): transposed (LINEAR); biases copied;
- `nn.LSTM` (one layer): `weight_ih_l0` (4H, D), `weight_hh_l0` (4H, H), `bias_ih_l0`,
  `bias_hh_l0` are copied as they are: `msa_jax.models.lstm.TorchLSTM` keeps PyTorch's layout,
  gate order (i, f, g, o) and both biases;
- `nn.TransformerEncoderLayer` i of the fusion encoder -> index i of our stacked (`nn.scan`)
  leaves `fusion/encoder/*`: `self_attn.in_proj_weight` (3d, d) = [W_q; W_k; W_v] transposes to
  our `in_proj/kernel` (d, 3d) = [q | k | v]; LayerNorm `weight` -> `scale`;
- the two Hugging Face BERTs -> `bert_robust` / `bert_bias`, named as `msa_jax.models.bert` maps
  Hugging Face checkpoints.

Unused reference tensors, dropped by name (`UNUSED_TEMPLATES`): each robust sub-model's `final`
layer (the reference forward never calls `model_c.final`) and each BERT's pooler (computed by
`BertModel` but never read: GEAR uses the [CLS] hidden state), plus the `position_ids` buffer
that older transformers versions saved. Anything else left over, anything missing or any
tensor of the wrong shape raises `ReferenceConversionError` naming every such key.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from msa_jax.models.bert import BertConfig, _hf_name, _unflatten
from msa_jax.models.gear import GEAR, GEARConfig
from msa_jax.reference import ReferenceConversionError

LINEAR, COPY = "linear", "copy"

# Reference role -> our role.
ROLES = {"c": "robust", "b": "bias"}
# Our modality -> (reference sub-model, its extractor attribute, its post-extractor Linear).
MODALITIES = {
  "text": ("text_model", "model_text", "post_text_layer_1"),
  "audio": ("audio_model", "model_audio", "post_audio_layer_1"),
  "vision": ("video_model", "model_video", "post_video_layer_1"),
}

# Per modality {m} (reference sub-model {M}) and role {r} (ours {role}); {seq} and {post} are the
# reference attribute names of MODALITIES. Reference name, our path under `params`, conversion.
EXTRACTOR_TABLE = (
  ("{M}.model_{r}.{post}.weight", "{m}_{role}_proj/kernel", LINEAR),
  ("{M}.model_{r}.{post}.bias", "{m}_{role}_proj/bias", COPY),
)
SEQUENCE_TABLE = (  # audio and vision only: AuViSubNet = LSTM -> Dropout -> linear_1
  ("{M}.model_{r}.{seq}.rnn.weight_ih_l0", "{m}_{role}/lstm/weight_ih", COPY),
  ("{M}.model_{r}.{seq}.rnn.weight_hh_l0", "{m}_{role}/lstm/weight_hh", COPY),
  ("{M}.model_{r}.{seq}.rnn.bias_ih_l0", "{m}_{role}/lstm/bias_ih", COPY),
  ("{M}.model_{r}.{seq}.rnn.bias_hh_l0", "{m}_{role}/lstm/bias_hh", COPY),
  ("{M}.model_{r}.{seq}.linear_1.weight", "{m}_{role}/dense/kernel", LINEAR),
  ("{M}.model_{r}.{seq}.linear_1.bias", "{m}_{role}/dense/bias", COPY),
)
BERT_PREFIX = "text_model.model_{r}.model_text.model."  # + Hugging Face name -> bert_{role}/...
HEADS_TABLE = (  # per modality; `feature` is Sequential(Linear, ReLU)
  ("{M}.model_c.feature.0.weight", "{m}_heads/robust_feature/kernel", LINEAR),
  ("{M}.model_c.feature.0.bias", "{m}_heads/robust_feature/bias", COPY),
  ("{M}.model_b.feature.0.weight", "{m}_heads/bias_feature/kernel", LINEAR),
  ("{M}.model_b.feature.0.bias", "{m}_heads/bias_feature/bias", COPY),
  ("{M}.model_b.final.weight", "{m}_heads/bias_final/kernel", LINEAR),
  ("{M}.model_b.final.bias", "{m}_heads/bias_final/bias", COPY),
)
FUSION_LAYER_PREFIX = "fusion_model.transformer_encoder.layers.{i}."  # -> fusion/encoder/...[i]
FUSION_LAYER_TABLE = (
  ("self_attn.in_proj_weight", "in_proj/kernel", LINEAR),
  ("self_attn.in_proj_bias", "in_proj/bias", COPY),
  ("self_attn.out_proj.weight", "out_proj/kernel", LINEAR),
  ("self_attn.out_proj.bias", "out_proj/bias", COPY),
  ("linear1.weight", "linear1/kernel", LINEAR),
  ("linear1.bias", "linear1/bias", COPY),
  ("linear2.weight", "linear2/kernel", LINEAR),
  ("linear2.bias", "linear2/bias", COPY),
  ("norm1.weight", "norm1/scale", COPY),
  ("norm1.bias", "norm1/bias", COPY),
  ("norm2.weight", "norm2/scale", COPY),
  ("norm2.bias", "norm2/bias", COPY),
)
FUSION_TABLE = (  # fusion MLP: fusion_layer_1 -> Dropout -> ReLU -> fusion_layer_3
  ("fusion_model.fusion.fusion_layer_1.weight", "fusion/mlp_hidden/kernel", LINEAR),
  ("fusion_model.fusion.fusion_layer_1.bias", "fusion/mlp_hidden/bias", COPY),
  ("fusion_model.fusion.fusion_layer_3.weight", "fusion/mlp_out/kernel", LINEAR),
  ("fusion_model.fusion.fusion_layer_3.bias", "fusion/mlp_out/bias", COPY),
)
# Reference tensors the forward never reads; dropped when present ({M} every modality, {r} c/b).
UNUSED_TEMPLATES = (
  "{M}.model_c.final.weight",  # the robust branch's `final` Linear is never called
  "{M}.model_c.final.bias",
  "text_model.model_{r}.model_text.model.pooler.dense.weight",  # BERT pooler output unused
  "text_model.model_{r}.model_text.model.pooler.dense.bias",
  "text_model.model_{r}.model_text.model.embeddings.position_ids",  # buffer (old transformers)
)


@dataclasses.dataclass(frozen=True)
class Entry:
  """One reference tensor -> one of our leaves (`layer`: index into a stacked leaf, or None)."""

  reference: str
  ours: tuple[str, ...]
  how: str
  layer: int | None = None


def unused_names() -> frozenset[str]:
  """Every reference name that `convert` drops on purpose (see `UNUSED_TEMPLATES`)."""
  names = set()
  for template in UNUSED_TEMPLATES:
    for ref_m, _, _ in MODALITIES.values():
      for r in ROLES:
        names.add(template.format(M=ref_m, r=r))
  return frozenset(names)


def _bert_entries(expected: Mapping[tuple[str, ...], Any]) -> list[Entry]:
  entries = []
  for path in expected:
    if path[0].startswith("bert_"):
      role = path[0][len("bert_") :]
      r = {v: k for k, v in ROLES.items()}[role]
      how = LINEAR if path[-1] == "kernel" else COPY
      entries.append(Entry(BERT_PREFIX.format(r=r) + _hf_name(path[1:]), path, how))
  return entries


def name_table(
  config: GEARConfig, expected: Mapping[tuple[str, ...], Any] | None = None
) -> list[Entry]:
  """Every reference tensor `convert` reads for a model of `config`, with its destination.

  `expected` is `GEAR(config)`'s parameter leaves (computed when not given).
  """
  entries = _bert_entries(_expected_shapes(config) if expected is None else expected)
  for m, (ref_m, seq, post) in MODALITIES.items():
    tables = EXTRACTOR_TABLE + (SEQUENCE_TABLE if m != "text" else ())
    for r, role in ROLES.items():
      for ref, ours, how in tables:
        fmt = dict(M=ref_m, m=m, r=r, role=role, seq=seq, post=post)
        entries.append(Entry(ref.format(**fmt), tuple(ours.format(**fmt).split("/")), how))
    for ref, ours, how in HEADS_TABLE:
      entries.append(Entry(ref.format(M=ref_m), tuple(ours.format(m=m).split("/")), how))
  for i in range(config.fusion_layers):
    for ref, ours, how in FUSION_LAYER_TABLE:
      entries.append(
        Entry(
          FUSION_LAYER_PREFIX.format(i=i) + ref,
          ("fusion", "encoder") + tuple(ours.split("/")),
          how,
          layer=i,
        )
      )
  for ref, ours, how in FUSION_TABLE:
    entries.append(Entry(ref, tuple(ours.split("/")), how))
  return entries


def _dummy_batch(config: GEARConfig) -> dict[str, jax.Array]:
  return {
    "text_bert": jnp.zeros((1, 3, 2), jnp.int32),
    "audio": jnp.zeros((1, 2, config.audio_in)),
    "vision": jnp.zeros((1, 2, config.vision_in)),
    "audio_lengths": jnp.ones((1,), jnp.int32),
    "vision_lengths": jnp.ones((1,), jnp.int32),
  }


def _expected_shapes(config: GEARConfig) -> dict[tuple[str, ...], jax.ShapeDtypeStruct]:
  """Our parameter leaves (path under `params` -> shape/dtype), without allocating them."""
  tree = jax.eval_shape(
    lambda k: GEAR(config).init(k, _dummy_batch(config))["params"], jax.random.key(0)
  )
  return {
    tuple(str(k.key) for k in path): leaf
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]
  }


def _reference_shape(entry: Entry, shape: tuple[int, ...]) -> tuple[int, ...]:
  """The reference tensor shape that gives our leaf `shape` (one layer of a stacked leaf)."""
  if entry.layer is not None:
    shape = shape[1:]
  return tuple(shape[::-1]) if entry.how == LINEAR else tuple(shape)


def convert(
  state_dict: Mapping[str, Any],
  config: GEARConfig | None = None,
  source: str = "GEAR reference state_dict",
) -> dict[str, Any]:
  """The reference `IFL_ES` state_dict as our GEAR parameters (the tree under `'params'`).

  Args:
    state_dict: reference name -> array (numpy, or anything `np.asarray` reads).
    config: the GEARConfig to fill; by default `config_from_state_dict(state_dict)` (its head
      counts do not affect parameter shapes).
    source: how errors name the state_dict.

  Returns:
    A nested dict of float32 numpy arrays, every leaf of `GEAR(config)`'s parameters filled.

  Raises:
    ReferenceConversionError: listing every missing, unexpected (neither converted nor in
      `UNUSED_TEMPLATES`) and mis-shaped reference name at once.
  """
  if config is None:
    config = config_from_state_dict(state_dict, text_heads=1, fusion_heads=1, source=source)
  expected = _expected_shapes(config)
  entries = name_table(config, expected)
  covered = {e.ours for e in entries}
  uncovered = [p for p in expected if p not in covered]
  if uncovered:  # a GEAR parameter the table does not know: a bug here, not in the state_dict
    raise AssertionError(f"convert: name table misses GEAR parameters {uncovered}")

  missing, mismatched, layers = [], [], {}
  for e in entries:
    if e.reference not in state_dict:
      missing.append(e.reference)
      continue
    array = np.asarray(state_dict[e.reference], dtype=np.float32)
    want = _reference_shape(e, tuple(expected[e.ours].shape))
    if array.shape != want:
      mismatched.append((e.reference, tuple(array.shape), want))
      continue
    layers.setdefault(e.ours, {})[e.layer] = array.T if e.how == LINEAR else array
  used = {e.reference for e in entries}
  unused = unused_names()
  unexpected = [k for k in state_dict if k not in used and k not in unused]
  if missing or unexpected or mismatched:
    raise ReferenceConversionError(source, missing, unexpected, mismatched)

  flat = {}
  for path, by_layer in layers.items():
    if None in by_layer:
      flat[path] = by_layer[None]
    else:
      flat[path] = np.stack([by_layer[i] for i in range(config.fusion_layers)])
  return _unflatten(flat)


def _shape(state_dict: Mapping[str, Any], name: str, source: str) -> tuple[int, ...]:
  """The shape of a tensor needed to read a size; ReferenceConversionError if it is absent."""
  if name not in state_dict:
    raise ReferenceConversionError(source, missing=[name])
  return tuple(np.shape(state_dict[name]))


def _count(state_dict: Mapping[str, Any], pattern: str) -> int:
  """The number of distinct indices i in names matching `pattern` (a regex with one group)."""
  return len({m.group(1) for k in state_dict if (m := re.match(pattern, k))})


def config_from_state_dict(
  state_dict: Mapping[str, Any],
  *,
  text_heads: int,
  fusion_heads: int = 4,
  layer_norm_eps: float = 1e-12,
  source: str = "GEAR reference state_dict",
  **overrides: Any,
) -> GEARConfig:
  """The GEARConfig whose parameter shapes the reference state_dict implies.

  Head counts (BERT `text_heads`, fusion `fusion_heads`, run.py's default 4) and BERT's LayerNorm
  eps are not visible in the weights and must be given; `overrides` go to GEARConfig (e.g.
  `extractor_dropout`, `fusion_dropout`). Sizes are read from the robust branch.

  Raises:
    ReferenceConversionError: a tensor that determines a size is missing.
  """
  bert = BERT_PREFIX.format(r="c")
  vocab, hidden = _shape(state_dict, bert + "embeddings.word_embeddings.weight", source)
  positions, _ = _shape(state_dict, bert + "embeddings.position_embeddings.weight", source)
  types, _ = _shape(state_dict, bert + "embeddings.token_type_embeddings.weight", source)
  intermediate, _ = _shape(state_dict, bert + "encoder.layer.0.intermediate.dense.weight", source)
  layers = _count(state_dict, re.escape(bert) + r"encoder\.layer\.(\d+)\.")
  text = BertConfig(
    vocab_size=vocab,
    hidden_size=hidden,
    num_hidden_layers=layers,
    num_attention_heads=text_heads,
    intermediate_size=intermediate,
    max_position_embeddings=positions,
    type_vocab_size=types,
    layer_norm_eps=layer_norm_eps,
  )
  sizes = {}
  for m in ("audio", "vision"):
    ref_m, seq, _ = MODALITIES[m]
    prefix = f"{ref_m}.model_c.{seq}."
    gates, sizes[f"{m}_in"] = _shape(state_dict, prefix + "rnn.weight_ih_l0", source)
    sizes[f"{m}_hidden"] = gates // 4
    sizes[f"{m}_out"], _ = _shape(state_dict, prefix + "linear_1.weight", source)
  swap_dim, _ = _shape(state_dict, "text_model.model_c.post_text_layer_1.weight", source)
  layer0 = FUSION_LAYER_PREFIX.format(i=0)
  fusion_ff, _ = _shape(state_dict, layer0 + "linear1.weight", source)
  post_fusion_dim, _ = _shape(state_dict, "fusion_model.fusion.fusion_layer_1.weight", source)
  fusion_layers = _count(state_dict, r"fusion_model\.transformer_encoder\.layers\.(\d+)\.")
  return GEARConfig(
    text=text,
    swap_dim=swap_dim,
    fusion_layers=fusion_layers,
    fusion_heads=fusion_heads,
    fusion_ff=fusion_ff,
    post_fusion_dim=post_fusion_dim,
    **sizes,
    **overrides,
  )
