"""The authors' PyTorch LNLN state_dict -> msa_jax `LNLN` parameters (docs/methods.md §4, §9).

The reference is github.com/Haoyu-ha/LNLN (`models/lnln.py`, `models/basic_layers.py`,
`models/bert.py`); its checkpoints hold `model.state_dict()` under 'state_dict'. `NAME_TABLE`
maps every reference parameter name to our Flax parameter path, `{i}` standing for a layer index
(the same in both names); PyTorch `Linear` weights (out, in) become Flax kernels (in, out)
('linear'), everything else is copied as is ('copy'). `UNUSED` lists the reference names that are
consumed but not needed (BERT's pooler and buffers). `convert` fills every one of our leaves from
exactly one reference tensor and consumes every reference tensor, or raises
`ReferenceConversionError` naming all missing, unexpected and mis-shaped names at once.
`config_from_state_dict` reads the `LNLNConfig` sizes the tensors imply.

Pure numpy (and our Flax modules for the expected shapes); torch is never imported.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from msa_jax.models.bert import BertConfig
from msa_jax.models.lnln import LNLNConfig, init_lnln
from msa_jax.reference import ReferenceConversionError

COPY, LINEAR = "copy", "linear"
Rule = tuple[str, str, str]  # (reference name, our '/'-joined param path, transform)


def _linear(ref: str, ours: str, bias: bool = True) -> tuple[Rule, ...]:
  """An `nn.Linear` -> a Dense: weight (out, in) -> kernel (in, out); bias copied."""
  rules: tuple[Rule, ...] = ((f"{ref}.weight", f"{ours}/kernel", LINEAR),)
  return rules + ((f"{ref}.bias", f"{ours}/bias", COPY),) if bias else rules


def _norm(ref: str, ours: str) -> tuple[Rule, ...]:
  """An `nn.LayerNorm` -> a Flax LayerNorm: weight -> scale, bias -> bias."""
  return ((f"{ref}.weight", f"{ours}/scale", COPY), (f"{ref}.bias", f"{ours}/bias", COPY))


def _under(ref_prefix: str, our_prefix: str, rules: tuple[Rule, ...]) -> tuple[Rule, ...]:
  """`rules` with both names prefixed."""
  return tuple((ref_prefix + r, our_prefix + o, t) for r, o, t in rules)


# One pre-norm encoder layer: basic_layers.TransformerEncoder / CrossTransformerEncoder
# `layers[i] = [PreNorm_qkv(Attention), PreNorm(FeedForward)]` -> layers.EncoderLayer.
ENCODER_LAYER: tuple[Rule, ...] = (
  *_norm("0.norm_q", "norm_q"),
  *_norm("0.norm_k", "norm_k"),
  *_norm("0.norm_v", "norm_v"),
  *_linear("0.fn.to_q", "attn/to_q", bias=False),
  *_linear("0.fn.to_k", "attn/to_k", bias=False),
  *_linear("0.fn.to_v", "attn/to_v", bias=False),
  *_linear("0.fn.to_out.0", "attn/to_out"),
  *_norm("1.norm", "norm_ff"),
  *_linear("1.fn.net.0", "ff/dense_in"),  # net = [Linear, GELU, Dropout, Linear, Dropout]
  *_linear("1.fn.net.3", "ff/dense_out"),
)

# basic_layers.Transformer -> layers.TokenTransformer (`extra_token` only when token_len is set).
TOKEN_TRANSFORMER: tuple[Rule, ...] = (
  ("pos_embedding", "pos_embedding", COPY),
  ("extra_token", "extra_token", COPY),
  *_under("encoder.layers.{i}.", "layer_{i}/", ENCODER_LAYER),
)

# basic_layers.CrossTransformer -> layers.CrossTransformer.
CROSS_TRANSFORMER: tuple[Rule, ...] = (
  ("pos_embedding_s", "pos_embedding_s", COPY),
  ("pos_embedding_t", "pos_embedding_t", COPY),
  ("extra_token", "extra_token", COPY),
  *_under("CrossTransformerEncoder.layers.{i}.", "layer_{i}/", ENCODER_LAYER),
)

# basic_layers.HhyperLearningEncoder `layers[i][0] = PreNorm_hyper(HhyperLearningLayer)` ->
# layers.HyperLayer (norm1..4 normalise h_dominate, h_a, h_v, h_hyper).
HYPER_LAYER: tuple[Rule, ...] = (
  *_norm("norm1", "norm_dom"),
  *_norm("norm2", "norm_a"),
  *_norm("norm3", "norm_v"),
  *_norm("norm4", "norm_hyper"),
  *_linear("fn.to_q", "to_q", bias=False),
  *_linear("fn.to_k_ta", "to_k_a", bias=False),
  *_linear("fn.to_k_tv", "to_k_v", bias=False),
  *_linear("fn.to_v_ta", "to_v_a", bias=False),
  *_linear("fn.to_v_tv", "to_v_v", bias=False),
  *_linear("fn.to_out.0", "to_out"),
)

# Hugging Face BertModel (the reference's `bertmodel.model`) -> models.bert.BertModel.
BERT_LAYER: tuple[Rule, ...] = (
  *_linear("attention.self.query", "attention/self/query"),
  *_linear("attention.self.key", "attention/self/key"),
  *_linear("attention.self.value", "attention/self/value"),
  *_linear("attention.output.dense", "attention/output/dense"),
  *_norm("attention.output.LayerNorm", "attention/output/LayerNorm"),
  *_linear("intermediate.dense", "intermediate/dense"),
  *_linear("output.dense", "output/dense"),
  *_norm("output.LayerNorm", "output/LayerNorm"),
)
BERT: tuple[Rule, ...] = (
  ("embeddings.word_embeddings.weight", "embeddings/word_embeddings/embedding", COPY),
  ("embeddings.position_embeddings.weight", "embeddings/position_embeddings/embedding", COPY),
  ("embeddings.token_type_embeddings.weight", "embeddings/token_type_embeddings/embedding", COPY),
  *_norm("embeddings.LayerNorm", "embeddings/LayerNorm"),
  *_under("encoder.layer.{i}.", "encoder/layer_{i}/", BERT_LAYER),
)

# The whole model: models/lnln.py `LNLN` -> models.lnln.LNLN.
NAME_TABLE: tuple[Rule, ...] = (
  ("h_p", "h_p0", COPY),
  ("h_hyper", "h_hyper", COPY),
  *_under("bertmodel.model.", "bert/", BERT),
  *_linear("proj_l.0", "proj_l/dense"),
  *_under("proj_l.1.", "proj_l/transformer/", TOKEN_TRANSFORMER),
  *_linear("proj_a.0", "proj_a/dense"),
  *_under("proj_a.1.", "proj_a/transformer/", TOKEN_TRANSFORMER),
  *_linear("proj_v.0", "proj_v/dense"),
  *_under("proj_v.1.", "proj_v/transformer/", TOKEN_TRANSFORMER),
  *_under("completeness_check.0.", "completeness_check/transformer/", TOKEN_TRANSFORMER),
  *_linear("completeness_check.1.0", "completeness_check/dense_hidden"),
  *_linear("completeness_check.1.2", "completeness_check/dense_out"),
  *_under("proxy_dominate_modality_generator.", "proxy_generator/", TOKEN_TRANSFORMER),
  *_linear("effective_discriminator.0", "discriminator/dense_hidden"),
  *_linear("effective_discriminator.2", "discriminator/dense_out"),
  *_under("reconstructor.0.", "reconstructor_a/", TOKEN_TRANSFORMER),
  *_under("reconstructor.1.", "reconstructor_v/", TOKEN_TRANSFORMER),
  *_under("reconstructor.2.", "reconstructor_l/", TOKEN_TRANSFORMER),
  *_under("dmml.0.", "language_encoder/", TOKEN_TRANSFORMER),
  *_under("dmml.1.layers.{i}.0.", "hyper_{i}/", HYPER_LAYER),
  *_under("dmml.2.", "fusion/", CROSS_TRANSFORMER),
  *_linear("dmml.3", "regressor"),
)

# Reference names that are consumed without being needed.
UNUSED: dict[str, str] = {
  "bertmodel.model.pooler.dense.weight": "BERT pooler; LNLN reads the last hidden states only",
  "bertmodel.model.pooler.dense.bias": "BERT pooler; LNLN reads the last hidden states only",
  "bertmodel.model.embeddings.position_ids": "buffer saved by older transformers versions",
  "bertmodel.model.embeddings.token_type_ids": "buffer saved by older transformers versions",
}

_SOURCE = "reference LNLN state_dict"


def _compile(pattern: str) -> re.Pattern[str]:
  return re.compile(re.escape(pattern).replace(r"\{i\}", r"(?P<i>\d+)"))


_BY_OURS = [(_compile(ours), ref, transform) for ref, ours, transform in NAME_TABLE]


def reference_name(path: str) -> tuple[str, str]:
  """Our '/'-joined param path -> (reference name, transform), by `NAME_TABLE`.

  Raises:
    KeyError: no rule covers `path` (our model has a parameter the table does not know).
  """
  for regex, ref, transform in _BY_OURS:
    match = regex.fullmatch(path)
    if match:
      return ref.replace("{i}", match.groupdict().get("i") or ""), transform
  raise KeyError(f"NAME_TABLE has no rule for our LNLN parameter {path!r}")


# ---- sizes ---------------------------------------------------------------------------------------


def _shape(state_dict: Mapping[str, Any], name: str) -> tuple[int, ...]:
  if name not in state_dict:
    raise ReferenceConversionError(_SOURCE + " (reading its sizes)", missing=[name])
  return tuple(np.shape(state_dict[name]))


def _num_layers(state_dict: Mapping[str, Any], prefix: str) -> int:
  """1 + the largest index i among the names `<prefix><i>.*` (0 if none)."""
  regex = re.compile(re.escape(prefix) + r"(\d+)\.")
  indices = [int(m.group(1)) for k in state_dict if (m := regex.match(k))]
  return max(indices) + 1 if indices else 0


def _divide(total: int, part: int, what: str) -> int:
  if part < 1 or total % part:
    raise ValueError(f"{_SOURCE}: {what}: {total} is not a multiple of {part}")
  return total // part


def bert_config_from_state_dict(
  state_dict: Mapping[str, Any], num_attention_heads: int | None = None
) -> BertConfig:
  """The BERT shapes from `bertmodel.model.*`. The head count is not in the shapes: pass it, or
  get hidden_size // 64 (every Google BERT: base 12, large 16, bert-base-chinese 12)."""
  p = "bertmodel.model."
  vocab, hidden = _shape(state_dict, p + "embeddings.word_embeddings.weight")
  layers = _num_layers(state_dict, p + "encoder.layer.")
  if layers == 0:
    raise ReferenceConversionError(_SOURCE, missing=[p + "encoder.layer.0.*"])
  heads = num_attention_heads or _divide(
    hidden, 64, "BERT hidden size / 64 heads (pass the BERT head count)"
  )
  return BertConfig(
    vocab_size=vocab,
    hidden_size=hidden,
    num_hidden_layers=layers,
    num_attention_heads=heads,
    intermediate_size=_shape(state_dict, p + "encoder.layer.0.intermediate.dense.weight")[0],
    max_position_embeddings=_shape(state_dict, p + "embeddings.position_embeddings.weight")[0],
    type_vocab_size=_shape(state_dict, p + "embeddings.token_type_embeddings.weight")[0],
  )


def config_from_state_dict(
  state_dict: Mapping[str, Any],
  *,
  bert_heads: int | None = None,
  hyper_heads: int = 8,
  dim_head: int = 64,
  **overrides: Any,
) -> LNLNConfig:
  """The `LNLNConfig` whose parameters have the reference tensors' shapes.

  Read from the shapes: d and the token count (`h_hyper`), the frame counts (position embeddings
  minus the tokens), the input dims, the BERT sizes, the depths (layer counts of `proj_l`, the
  fusion and the hyper layers), heads = inner width / `dim_head`, the MLP and head widths. Not in
  the shapes, so given: the BERT head count (`bert_heads`, default hidden // 64), the hyper-layer
  heads (`hyper_heads`, 8 in every reference config; their inner width is always d) and
  `dim_head` (64, fixed in the reference's `Transformer`). `overrides` replace any field (e.g.
  `fusion_depth`, BERT dropout via `bert=`); `convert` then checks every tensor's shape.

  Raises:
    ReferenceConversionError: a tensor needed to read the sizes is missing.
  """
  _, token_len, dim = _shape(state_dict, "h_hyper")

  def frames(m: str) -> int:
    return _shape(state_dict, f"proj_{m}.1.pos_embedding")[1] - token_len

  layer0 = "proj_l.1.encoder.layers.0."
  inner = _shape(state_dict, layer0 + "0.fn.to_q.weight")[0]
  fields = dict(
    text_frames=frames("l"),
    audio_frames=frames("a"),
    vision_frames=frames("v"),
    audio_dim=_shape(state_dict, "proj_a.0.weight")[1],
    vision_dim=_shape(state_dict, "proj_v.0.weight")[1],
    bert=bert_config_from_state_dict(state_dict, bert_heads),
    dim=dim,
    token_len=token_len,
    heads=_divide(inner, dim_head, "attention inner width"),
    dim_head=dim_head,
    mlp_dim=_shape(state_dict, layer0 + "1.fn.net.0.weight")[0],
    depth=_num_layers(state_dict, "proj_l.1.encoder.layers."),
    hyper_heads=hyper_heads,
    hyper_dim_head=_divide(dim, hyper_heads, "hyper-layer width"),
    num_hyper_layers=_num_layers(state_dict, "dmml.1.layers."),
    fusion_depth=_num_layers(state_dict, "dmml.2.CrossTransformerEncoder.layers."),
    completeness_hidden=_shape(state_dict, "completeness_check.1.0.weight")[0],
    discriminator_hidden=_shape(state_dict, "effective_discriminator.0.weight")[0],
  )
  return LNLNConfig(**{**fields, **overrides})


# ---- conversion ----------------------------------------------------------------------------------


def expected_shapes(config: LNLNConfig) -> dict[str, tuple[int, ...]]:
  """Our LNLN's parameters (training branches included) as {'/'-joined path: shape}."""
  return dict(_expected_shapes(config))


@functools.lru_cache(maxsize=8)
def _expected_shapes(config: LNLNConfig) -> tuple[tuple[str, tuple[int, ...]], ...]:
  batch = {
    "text_bert": jnp.zeros((1, 3, config.text_frames), jnp.int32),
    "audio": jnp.zeros((1, config.audio_frames, config.audio_dim), jnp.float32),
    "vision": jnp.zeros((1, config.vision_frames, config.vision_dim), jnp.float32),
  }
  tree = jax.eval_shape(lambda key: init_lnln(config, key, batch), jax.random.key(0))
  return tuple(
    ("/".join(str(k.key) for k in path), tuple(leaf.shape))
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]
  )


def _unflatten(flat: Mapping[str, np.ndarray]) -> dict[str, Any]:
  tree: dict[str, Any] = {}
  for path, leaf in flat.items():
    *parents, last = path.split("/")
    node = tree
    for p in parents:
      node = node.setdefault(p, {})
    node[last] = leaf
  return tree


def convert(
  state_dict: Mapping[str, Any],
  config: LNLNConfig | None = None,
  *,
  bert_heads: int | None = None,
  hyper_heads: int = 8,
  source: str = _SOURCE,
) -> tuple[dict[str, Any], LNLNConfig]:
  """The reference state_dict as our LNLN parameters, and the config they belong to.

  Args:
    state_dict: reference name -> array (numpy, or anything `np.asarray` takes), e.g.
      `safetensors.numpy.load_file(path)`.
    config: the `LNLNConfig` to fill; default `config_from_state_dict(state_dict, bert_heads=...,
      hyper_heads=...)`. Its training switches must build every branch (the reference has them all).
    source: how to name the state_dict in errors (e.g. its file).

  Returns:
    (params, config): params is the nested dict under 'params' for `LNLN(config).apply`, float32
    numpy leaves (`flax.serialization.msgpack_serialize(params)` writes it).

  Raises:
    ReferenceConversionError: some of our parameters have no reference tensor (`missing`, by
      reference name), some reference tensors are used by nothing (`unexpected`; `UNUSED` names
      are allowed), or shapes differ (`mismatched`, in the reference's layout).
  """
  if config is None:
    config = config_from_state_dict(state_dict, bert_heads=bert_heads, hyper_heads=hyper_heads)
  if not (config.use_dmc and config.use_reconstructor and config.use_adversarial):
    raise ValueError(
      "convert: the reference has every LNLN branch; pass a config with use_dmc, "
      "use_reconstructor and use_adversarial all True"
    )
  flat, used = {}, set()
  missing, mismatched = [], []
  for path, shape in expected_shapes(config).items():
    name, transform = reference_name(path)
    if name not in state_dict:
      missing.append(name)
      continue
    used.add(name)
    array = np.asarray(state_dict[name])
    want = shape[::-1] if transform == LINEAR else shape
    if array.shape != want:
      mismatched.append((name, tuple(array.shape), want))
      continue
    flat[path] = np.ascontiguousarray(array.T if transform == LINEAR else array, np.float32)
  unexpected = [k for k in state_dict if k not in used and k not in UNUSED]
  if missing or unexpected or mismatched:
    raise ReferenceConversionError(source, missing, unexpected, mismatched)
  return _unflatten(flat), config
