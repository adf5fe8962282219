"""The BERT text encoder in Flax linen, and loading of Hugging Face BERT checkpoints
(docs/methods.md §8).

The module tree mirrors Hugging Face's `BertModel` names (`embeddings`, `encoder/layer_N/attention/
self/query`, ...), and every `nn.Dense` has the PyTorch `Linear` shapes transposed, so a checkpoint
maps onto the parameters one tensor per leaf (`load_hf_bert`). Numerics follow HF BERT: post-norm
layers, exact-erf GELU, LayerNorm with the config's eps, the attention mask as an additive
large-negative bias, dropout on the embeddings, attention probabilities and sub-layer outputs
(masks drawn as `BertConfig.dropout_impl` says: `msa_jax.models.dropout`).

Mixed precision (`BertModel(dtype=...)`; no parameter changes, float32 results unchanged): the
Dense layers and attention matmuls compute in that dtype; parameters, embeddings, LayerNorms, the
attention softmax and the hidden-state stream stay float32.

Rematerialisation (`BertModel(remat=True)`, for memory): the encoder layers run as a `lax.scan`
over their parameters (stacked on the fly; the parameter tree is unchanged) with a
`jax.checkpoint`-ed body, so the backward pass recomputes one layer at a time and only each
layer's input is kept (a Python loop of `nn.remat` layers does not save memory on XLA:CPU, whose
scheduler moves the recomputation forward). Costs about one more forward pass of the encoder.
Deterministic results are those of the plain encoder; dropout masks are drawn from a different
stream (`fold_in(dropout key, layer)`), with the same distribution.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
from collections.abc import Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from msa_jax.models.dropout import check_impl as check_dropout_impl
from msa_jax.models.dropout import dropout
from msa_jax.text import BERT_UNCASED_VOCAB_SIZE, bert_uncased_vocab_file, minilm_dir

Params = Mapping[str, Any]

_INIT_STD = 0.02


@dataclasses.dataclass(frozen=True)
class BertConfig:
  """Shape and regularisation hyper-parameters of a BERT encoder (HF `config.json` names)."""

  vocab_size: int
  hidden_size: int
  num_hidden_layers: int
  num_attention_heads: int
  intermediate_size: int
  max_position_embeddings: int = 512
  type_vocab_size: int = 2
  layer_norm_eps: float = 1e-12
  hidden_dropout_prob: float = 0.1
  attention_probs_dropout_prob: float = 0.1
  # The [PAD] token's id: its word-embedding row gets no gradient, as in PyTorch's
  # `nn.Embedding(padding_idx=pad_token_id)` that Hugging Face BERT uses. None: every row learns.
  pad_token_id: int | None = 0
  # How dropout masks are drawn (not a HF key): "hash" or "threefry", see msa_jax.models.dropout.
  dropout_impl: str = "hash"

  def __post_init__(self):
    check_dropout_impl(self.dropout_impl)
    pad = self.pad_token_id
    if pad is not None and not (isinstance(pad, int) and 0 <= pad < self.vocab_size):
      raise ValueError(
        f"BertConfig: pad_token_id={pad!r}, expected None or an id in [0, {self.vocab_size})"
      )
    if self.hidden_size % self.num_attention_heads:
      raise ValueError(
        f"BertConfig: hidden_size={self.hidden_size} is not divisible by "
        f"num_attention_heads={self.num_attention_heads}"
      )

  @classmethod
  def tiny(cls) -> BertConfig:
    """A small randomly initialised encoder for fast CPU runs and tests (bert-base-uncased
    vocab)."""
    return cls(
      vocab_size=BERT_UNCASED_VOCAB_SIZE,
      hidden_size=64,
      num_hidden_layers=2,
      num_attention_heads=2,
      intermediate_size=128,
    )

  @classmethod
  def bert_base(cls) -> BertConfig:
    """The bert-base shapes (12 layers, hidden 768, 12 heads, intermediate 3072)."""
    return cls(
      vocab_size=BERT_UNCASED_VOCAB_SIZE,
      hidden_size=768,
      num_hidden_layers=12,
      num_attention_heads=12,
      intermediate_size=3072,
    )

  @classmethod
  def from_hf_json(cls, path: str | os.PathLike) -> BertConfig:
    """Reads a Hugging Face BERT `config.json` (a file, or the directory holding one)."""
    path = pathlib.Path(path)
    if path.is_dir():
      path = path / "config.json"
    with open(path, encoding="utf-8") as f:
      raw = json.load(f)
    model_type = raw.get("model_type", "bert")
    if model_type != "bert":
      raise ValueError(f"{path}: model_type={model_type!r}, expected 'bert'")
    act = raw.get("hidden_act", "gelu")
    if act != "gelu":
      raise ValueError(f"{path}: hidden_act={act!r}, expected 'gelu' (exact erf GELU)")
    pos_type = raw.get("position_embedding_type", "absolute")
    if pos_type != "absolute":
      raise ValueError(f"{path}: position_embedding_type={pos_type!r}, expected 'absolute'")
    names = [f.name for f in dataclasses.fields(cls)]
    required = [f.name for f in dataclasses.fields(cls) if f.default is dataclasses.MISSING]
    missing = [n for n in required if n not in raw]
    if missing:
      raise ValueError(f"{path}: missing keys {missing} (a BERT config.json needs {required})")
    return cls(**{n: raw[n] for n in names if n in raw})


def _dense(features: int, name: str, dtype: Any = None) -> nn.Dense:
  return nn.Dense(features, kernel_init=nn.initializers.normal(_INIT_STD), dtype=dtype, name=name)


def _layer_norm(config: BertConfig, name: str) -> nn.LayerNorm:
  return nn.LayerNorm(epsilon=config.layer_norm_eps, name=name)


def _padding_row_frozen(embedded: jax.Array, ids: jax.Array, pad_id: int | None) -> jax.Array:
  """The embedded ids with the gradient stopped at every [PAD] position: the same values, and the
  embedding row `pad_id` receives no gradient (PyTorch's `padding_idx`), while every other row gets
  exactly the gradient of a plain lookup. (B, L, H), (B, L) -> (B, L, H)."""
  if pad_id is None:
    return embedded
  return jnp.where((ids == pad_id)[..., None], jax.lax.stop_gradient(embedded), embedded)


class BertEmbeddings(nn.Module):
  """Word + position + token-type embeddings, LayerNorm, dropout: (B, L) ids -> (B, L, H)."""

  config: BertConfig

  @nn.compact
  def __call__(
    self, input_ids: jax.Array, token_type_ids: jax.Array, deterministic: bool
  ) -> jax.Array:
    cfg = self.config
    length = input_ids.shape[-1]
    if length > cfg.max_position_embeddings:
      raise ValueError(
        f"text length {length} exceeds max_position_embeddings={cfg.max_position_embeddings}"
      )
    init = nn.initializers.normal(_INIT_STD)
    words = nn.Embed(cfg.vocab_size, cfg.hidden_size, embedding_init=init, name="word_embeddings")
    positions = nn.Embed(
      cfg.max_position_embeddings, cfg.hidden_size, embedding_init=init, name="position_embeddings"
    )
    types = nn.Embed(
      cfg.type_vocab_size, cfg.hidden_size, embedding_init=init, name="token_type_embeddings"
    )
    x = (
      _padding_row_frozen(words(input_ids), input_ids, cfg.pad_token_id)
      + positions(jnp.arange(length)[None, :])
      + types(token_type_ids)
    )
    x = _layer_norm(cfg, "LayerNorm")(x)
    return dropout(self, x, cfg.hidden_dropout_prob, deterministic, cfg.dropout_impl)


class BertSelfAttention(nn.Module):
  """Multi-head scaled dot-product self-attention: (B, L, H), bias (B, 1, 1, L) -> (B, R, H).

  With `dtype`, projections and matmuls run in it; scores, bias and softmax in float32. With
  `query_rows` R, only the first R positions query (keys and values are every position's): the
  first R rows of the full attention, with the same dropout masks."""

  config: BertConfig
  dtype: Any = None
  query_rows: int | None = None

  @nn.compact
  def __call__(self, x: jax.Array, bias: jax.Array, deterministic: bool) -> jax.Array:
    cfg = self.config
    batch, length, hidden = x.shape
    heads = cfg.num_attention_heads
    head_dim = hidden // heads
    rows = length if self.query_rows is None else self.query_rows

    def split(t: jax.Array) -> jax.Array:
      return t.reshape(batch, t.shape[1], heads, head_dim).transpose(0, 2, 1, 3)

    q = split(_dense(hidden, "query", self.dtype)(x[:, :rows]))
    k = split(_dense(hidden, "key", self.dtype)(x))
    v = split(_dense(hidden, "value", self.dtype)(x))
    if self.dtype is None:
      scores = jnp.einsum("bhqd,bhkd->bhqk", q, k) / jnp.sqrt(jnp.asarray(head_dim, x.dtype)) + bias
    else:
      scores = jnp.einsum("bhqd,bhkd->bhqk", q, k, preferred_element_type=jnp.float32)
      scores = scores / jnp.sqrt(jnp.asarray(head_dim, jnp.float32)) + bias.astype(jnp.float32)
    probs = jax.nn.softmax(scores, axis=-1)
    probs = dropout(
      self,
      probs,
      cfg.attention_probs_dropout_prob,
      deterministic,
      cfg.dropout_impl,
      full_shape=(batch, heads, length, length),
    )
    if self.dtype is not None:
      probs = probs.astype(self.dtype)
    out = jnp.einsum("bhqk,bhkd->bhqd", probs, v)
    return out.transpose(0, 2, 1, 3).reshape(batch, rows, hidden)


class BertResidualOutput(nn.Module):
  """Dense, dropout, then LayerNorm(x + residual): the post-norm sub-layer output (in the
  residual's dtype). `length`: the sequence length of the full layer when x holds its first rows
  only (the dropout masks are those rows' of the full layer)."""

  config: BertConfig
  dtype: Any = None
  length: int | None = None

  @nn.compact
  def __call__(self, x: jax.Array, residual: jax.Array, deterministic: bool) -> jax.Array:
    cfg = self.config
    x = _dense(cfg.hidden_size, "dense", self.dtype)(x)
    full = None if self.length is None else (x.shape[0], self.length, cfg.hidden_size)
    x = dropout(self, x, cfg.hidden_dropout_prob, deterministic, cfg.dropout_impl, full)
    if self.dtype is not None:
      x = x.astype(residual.dtype)
    return _layer_norm(cfg, "LayerNorm")(x + residual)


class BertAttention(nn.Module):
  """Self-attention followed by its residual output block (for the first `query_rows` positions
  only, if given)."""

  config: BertConfig
  dtype: Any = None
  query_rows: int | None = None

  @nn.compact
  def __call__(self, x: jax.Array, bias: jax.Array, deterministic: bool) -> jax.Array:
    rows = self.query_rows
    attended = BertSelfAttention(self.config, self.dtype, rows, name="self")(x, bias, deterministic)
    length = None if rows is None else x.shape[1]
    output = BertResidualOutput(self.config, self.dtype, length, name="output")
    return output(attended, x if rows is None else x[:, :rows], deterministic)


class BertIntermediate(nn.Module):
  """The feed-forward expansion with exact-erf GELU: (B, L, H) -> (B, L, I)."""

  config: BertConfig
  dtype: Any = None

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    return nn.gelu(_dense(self.config.intermediate_size, "dense", self.dtype)(x), approximate=False)


class BertLayer(nn.Module):
  """One post-norm encoder layer: attention block, then feed-forward block.

  `query_rows` R: the layer's output for the first R positions only, (B, L, H) -> (B, R, H), the
  same values and dropout masks as those rows of the full layer's output (an encoder's last layer
  when only [CLS] is read: keys and values still come from every position)."""

  config: BertConfig
  dtype: Any = None
  query_rows: int | None = None

  @nn.compact
  def __call__(self, x: jax.Array, bias: jax.Array, deterministic: bool) -> jax.Array:
    length = None if self.query_rows is None else x.shape[1]
    attention = BertAttention(self.config, self.dtype, self.query_rows, name="attention")
    x = attention(x, bias, deterministic)
    h = BertIntermediate(self.config, self.dtype, name="intermediate")(x)
    return BertResidualOutput(self.config, self.dtype, length, name="output")(h, x, deterministic)


class BertEncoder(nn.Module):
  """The stack of `num_hidden_layers` encoder layers, named `layer_0`, `layer_1`, ...

  With `remat` (and outside initialisation), the layers are applied by `remat_layers`. With
  `cls_only`, the last layer computes position 0 only ((B, L, H) -> (B, 1, H); see `BertLayer`)."""

  config: BertConfig
  dtype: Any = None
  remat: bool = False
  cls_only: bool = False

  @nn.compact
  def __call__(self, x: jax.Array, bias: jax.Array, deterministic: bool) -> jax.Array:
    n = self.config.num_hidden_layers
    last_rows = 1 if self.cls_only else None
    if self.remat and not self.is_initializing():
      layers = [self.variables["params"][f"layer_{i}"] for i in range(n)]
      key = None if deterministic else self.make_rng("dropout")
      return remat_layers(self.config, self.dtype, layers, x, bias, key, last_rows)
    for i in range(n):
      rows = last_rows if i == n - 1 else None
      x = BertLayer(self.config, self.dtype, rows, name=f"layer_{i}")(x, bias, deterministic)
    return x


def remat_layers(
  config: BertConfig,
  dtype: Any,
  layers: Sequence[Params],
  x: jax.Array,
  bias: jax.Array,
  dropout_key: jax.Array | None,
  last_rows: int | None = None,
) -> jax.Array:
  """The encoder layers as a `lax.scan` with a rematerialised body (module docstring).

  layers: each layer's parameters, in order; dropout_key None: deterministic (no dropout), else
  layer i draws its masks from `fold_in(dropout_key, i)`. last_rows: the last layer computes
  only its first `last_rows` positions (`BertLayer.query_rows`), rematerialised on its own.
  """

  def apply(params: Params, h: jax.Array, i: jax.Array | int, rows: int | None) -> jax.Array:
    layer = BertLayer(config, dtype, rows, parent=None)
    if dropout_key is None:
      return layer.apply({"params": params}, h, bias, True)
    rngs = {"dropout": jax.random.fold_in(dropout_key, i)}
    return layer.apply({"params": params}, h, bias, False, rngs=rngs)

  def body(h: jax.Array, inputs: tuple[Params, jax.Array]) -> tuple[jax.Array, None]:
    params, i = inputs
    return apply(params, h, i, None), None

  scanned = list(layers) if last_rows is None else list(layers)[:-1]
  if scanned:
    stacked = jax.tree_util.tree_map(lambda *leaves: jnp.stack(leaves), *scanned)
    x, _ = jax.lax.scan(jax.checkpoint(body), x, (stacked, jnp.arange(len(scanned))))
  if last_rows is not None:
    last = len(layers) - 1
    x = jax.checkpoint(lambda p, h: apply(p, h, last, last_rows))(layers[-1], x)
  return x


class BertPooler(nn.Module):
  """tanh(Dense(h[:, 0])): the [CLS] summary, (B, L, H) -> (B, H)."""

  config: BertConfig

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    return jnp.tanh(_dense(self.config.hidden_size, "dense")(x[:, 0]))


def split_text_bert(text_bert: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
  """(B, 3, L) int or float -> (ids, attention mask, segment ids), each (B, L) int32."""
  if text_bert.ndim != 3 or text_bert.shape[1] != 3:
    raise ValueError(
      f"text_bert has shape {text_bert.shape}, expected (B, 3, L) "
      "[ids, attention mask, segment ids]"
    )
  text_bert = jnp.asarray(text_bert).astype(jnp.int32)
  return text_bert[:, 0], text_bert[:, 1], text_bert[:, 2]


def attention_bias(mask: jax.Array, dtype: jnp.dtype = jnp.float32) -> jax.Array:
  """(B, L) 0/1 mask -> (B, 1, 1, L) additive bias: 0 where attended, dtype-min where padded."""
  return jnp.where(mask[:, None, None, :] > 0, 0.0, jnp.finfo(dtype).min).astype(dtype)


class BertModel(nn.Module):
  """The BERT encoder (docs/methods.md §8).

  `BertModel(cfg).apply(params, text_bert, deterministic=..., rngs={'dropout': key})` maps
  text_bert (B, 3, L) [ids, attention mask, segment ids] to the last hidden states (B, L, H); with
  `add_pooler=True` it returns `(hidden (B, L, H), pooled (B, H))`. `dtype`: the computation dtype
  (None = float32) and `remat`: see the module docstring; hidden states are float32 either way.
  `cls_only`: for a caller that reads only [CLS], the hidden states are (B, 1, H), position 0's,
  and the last layer computes its query, attention output and feed-forward for position 0 only
  (about 1/12 fewer FLOPs for bert-base). Values are those of the full encoder up to float
  rounding, with the same dropout masks, and the parameters are the same.
  """

  config: BertConfig
  add_pooler: bool = False
  dtype: Any = None
  remat: bool = False
  cls_only: bool = False

  @nn.compact
  def __call__(
    self, text_bert: jax.Array, deterministic: bool
  ) -> jax.Array | tuple[jax.Array, jax.Array]:
    ids, mask, segments = split_text_bert(text_bert)
    x = BertEmbeddings(self.config, name="embeddings")(ids, segments, deterministic)
    x = BertEncoder(self.config, self.dtype, self.remat, self.cls_only, name="encoder")(
      x, attention_bias(mask, x.dtype), deterministic
    )
    if not self.add_pooler:
      return x
    return x, BertPooler(self.config, name="pooler")(x)


# --------------------------------------------------------------------------------------------------
# Hugging Face checkpoints (docs/methods.md §8): offline resolution, strict name mapping, presets,
# tokenizer.

_IGNORED_BUFFERS = ("embeddings.position_ids",)
_PRETRAINING_HEAD_PREFIXES = ("cls.",)
_LEAF_TO_HF = {"kernel": "weight", "scale": "weight", "embedding": "weight", "bias": "bias"}
_LEGACY_LAYER_NORM = {"LayerNorm.gamma": "LayerNorm.weight", "LayerNorm.beta": "LayerNorm.bias"}


class CheckpointMismatchError(ValueError):
  """A checkpoint (or a pretrained subtree) does not fill the model's parameters exactly.

  Attributes:
    missing: names the model needs that the checkpoint lacks.
    unexpected: names in the checkpoint that the model does not use.
    mismatched: `(name, given shape, expected shape)` for tensors of the wrong shape (in the
      checkpoint's own layout, e.g. PyTorch `Linear` weights as (out, in)).
  """

  def __init__(
    self,
    source: str,
    missing: Sequence[str] = (),
    unexpected: Sequence[str] = (),
    mismatched: Sequence[tuple[str, tuple[int, ...], tuple[int, ...]]] = (),
  ):
    self.missing = sorted(missing)
    self.unexpected = sorted(unexpected)
    self.mismatched = sorted(mismatched)
    parts = []
    if self.missing:
      parts.append(f"missing {self.missing}")
    if self.unexpected:
      parts.append(f"unexpected {self.unexpected}")
    if self.mismatched:
      parts.append(
        "mis-shaped " + ", ".join(f"{n}: got {g}, expected {e}" for n, g, e in self.mismatched)
      )
    super().__init__(f"{source} does not match the model: " + "; ".join(parts))


def init_params(
  config: BertConfig, key: jax.Array, add_pooler: bool = False, length: int = 8
) -> dict[str, Any]:
  """Randomly initialised encoder parameters (the tree under `'params'` of a `BertModel`)."""
  text_bert = jnp.zeros((1, 3, length), jnp.int32)
  return BertModel(config, add_pooler).init({"params": key}, text_bert, deterministic=True)[
    "params"
  ]


def param_shapes(config: BertConfig, add_pooler: bool = False) -> dict[str, Any]:
  """The encoder's parameter tree as `jax.ShapeDtypeStruct` leaves, without allocating it."""
  return jax.eval_shape(lambda k: init_params(config, k, add_pooler), jax.random.key(0))


def _hf_name(path: tuple[str, ...]) -> str:
  """Flax parameter path -> Hugging Face tensor name (without any `bert.` prefix)."""
  parts = []
  for p in path[:-1]:
    parts.extend(p.split("_", 1) if p.startswith("layer_") else [p])
  return ".".join(parts + [_LEAF_TO_HF[path[-1]]])


def _flat(tree: Params) -> dict[tuple[str, ...], Any]:
  flat = {}
  for key_path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
    flat[tuple(str(k.key) for k in key_path)] = leaf
  return flat


def _unflatten(flat: Mapping[tuple[str, ...], Any]) -> dict[str, Any]:
  tree: dict[str, Any] = {}
  for path, leaf in flat.items():
    node = tree
    for p in path[:-1]:
      node = node.setdefault(p, {})
    node[path[-1]] = leaf
  return tree


def resolve_model_dir(path_or_name: str | os.PathLike) -> pathlib.Path:
  """A local directory, or a model name found in the local Hugging Face cache (never downloads).

  Raises:
    FileNotFoundError: neither a directory nor a cached model of that name holds `config.json`.
  """
  path = pathlib.Path(path_or_name).expanduser()
  if path.is_dir():
    return path
  name = str(path_or_name)
  if path.is_absolute() or name.startswith((".", "~")) or name.count("/") > 1:
    raise FileNotFoundError(f"model directory {name} does not exist")
  import huggingface_hub

  candidates = [name] if "/" in name else [name, f"google-bert/{name}"]
  for repo_id in candidates:
    hit = huggingface_hub.try_to_load_from_cache(repo_id, "config.json")
    if isinstance(hit, str):
      return pathlib.Path(hit).parent
  raise FileNotFoundError(
    f"model {name!r} is neither a local directory nor in the local Hugging Face cache "
    f"({huggingface_hub.constants.HF_HUB_CACHE}); msa_jax never downloads: fetch it on a "
    f"networked machine (`hf download {candidates[-1]}`) or pass a directory with config.json "
    "and model.safetensors"
  )


def _read_safetensors(model_dir: pathlib.Path) -> dict[str, np.ndarray]:
  """All tensors of `model.safetensors` (or of the shards its index lists) as numpy arrays."""
  from safetensors.numpy import load_file

  single = model_dir / "model.safetensors"
  if single.is_file():
    return load_file(single)
  index = model_dir / "model.safetensors.index.json"
  if index.is_file():
    with open(index, encoding="utf-8") as f:
      shards = sorted(set(json.load(f)["weight_map"].values()))
    tensors: dict[str, np.ndarray] = {}
    for shard in shards:
      tensors.update(load_file(model_dir / shard))
    return tensors
  raise FileNotFoundError(
    f"{single} not found (msa_jax reads safetensors only; PyTorch .bin checkpoints need converting)"
  )


def _normalise_names(tensors: Mapping[str, np.ndarray]) -> tuple[dict[str, str], list[str]]:
  """Checkpoint names -> (canonical bare name -> original name, ignored originals).

  Canonical names drop a `bert.` prefix and map legacy `LayerNorm.gamma/beta` to `weight/bias`.
  Buffers (`embeddings.position_ids`) and pre-training heads (`cls.*`) are ignored on purpose.
  """
  prefixed = any(k.startswith("bert.") for k in tensors)
  canonical, ignored = {}, []
  for original in tensors:
    name = original
    if prefixed and name.startswith("bert."):
      name = name[len("bert.") :]
    elif prefixed and name.startswith(_PRETRAINING_HEAD_PREFIXES):
      ignored.append(original)
      continue
    for old, new in _LEGACY_LAYER_NORM.items():
      if name.endswith(old):
        name = name[: -len(old)] + new
    if name in _IGNORED_BUFFERS:
      ignored.append(original)
      continue
    canonical[name] = original
  return canonical, ignored


def params_from_hf_tensors(
  config: BertConfig,
  tensors: Mapping[str, np.ndarray],
  add_pooler: bool = False,
  source: str = "checkpoint",
) -> dict[str, Any]:
  """Maps Hugging Face BERT tensors onto the `BertModel` parameter tree, strictly.

  Every model parameter must be filled by a tensor of the right shape (PyTorch `Linear` weights
  are transposed into Flax kernels), and every checkpoint tensor must be used, except the
  position-id buffer, pre-training heads (`cls.*`) and, when `add_pooler` is False, the pooler.

  Raises:
    CheckpointMismatchError: listing all missing, unexpected and mis-shaped names at once.
  """
  canonical, _ = _normalise_names(tensors)
  expected = _flat(param_shapes(config, add_pooler))
  prefix = "bert." if any(k.startswith("bert.") for k in tensors) else ""
  flat, missing, mismatched, used = {}, [], [], set()
  for path, spec in expected.items():
    name = _hf_name(path)
    if name not in canonical:
      missing.append(prefix + name)
      continue
    original = canonical[name]
    used.add(name)
    array = np.asarray(tensors[original])
    transpose = path[-1] == "kernel"
    want = tuple(spec.shape[::-1]) if transpose else tuple(spec.shape)
    if array.shape != want:
      mismatched.append((original, tuple(array.shape), want))
      continue
    flat[path] = jnp.asarray(array.T if transpose else array, dtype=spec.dtype)
  optional = {n for n in canonical if n.startswith("pooler.")} if not add_pooler else set()
  unexpected = [canonical[n] for n in canonical if n not in used and n not in optional]
  if missing or unexpected or mismatched:
    raise CheckpointMismatchError(source, missing, unexpected, mismatched)
  return _unflatten(flat)


def load_hf_bert(
  path_or_name: str | os.PathLike, add_pooler: bool = False
) -> tuple[BertConfig, dict[str, Any]]:
  """Loads a Hugging Face BERT checkpoint (config.json + safetensors) offline (docs/methods.md §8).

  `path_or_name` is a directory or a model name already in the local Hugging Face cache (e.g.
  `bert-base-uncased`, `bert-base-chinese`); nothing is downloaded. Returns the config and the
  parameter tree for `BertModel(config, add_pooler).apply({'params': params}, ...)`. A pooler in
  the checkpoint is simply not used when `add_pooler` is False.

  Raises:
    FileNotFoundError: no such directory or cached model, or no safetensors in it.
    CheckpointMismatchError: the tensors do not fill the parameters exactly (all names listed).
  """
  model_dir = resolve_model_dir(path_or_name)
  config = BertConfig.from_hf_json(model_dir / "config.json")
  tensors = _read_safetensors(model_dir)
  return config, params_from_hf_tensors(config, tensors, add_pooler, source=str(model_dir))


PRESETS = ("tiny", "minilm", "bert-base", "path:<dir>")


def encoder_from_preset(
  name: str, add_pooler: bool = False
) -> tuple[BertConfig, dict[str, Any] | None]:
  """A named text encoder (docs/methods.md §8): its config and pretrained params, or None for random
  init.

  `tiny` (random, fast CPU runs), `minilm` (all-MiniLM-L6-v2 from the installed package),
  `bert-base` (random, bert-base shapes), `path:<dir>` (any local Hugging Face BERT checkpoint).
  """
  model_dir = _preset_dir(name)
  if model_dir is None:
    return preset_config(name), None
  return load_hf_bert(model_dir, add_pooler)


def _preset_dir(name: str) -> pathlib.Path | None:
  """The model directory of a pretrained preset (`minilm`, `path:<dir>`); None for `tiny` and
  `bert-base`, which are randomly initialised."""
  if name in ("tiny", "bert-base"):
    return None
  if name == "minilm":
    return minilm_dir()
  if name.startswith("path:") and len(name) > len("path:"):
    return resolve_model_dir(name[len("path:") :])
  raise ValueError(f"unknown text encoder preset {name!r}; valid: {', '.join(PRESETS)}")


def preset_config(name: str) -> BertConfig:
  """The `BertConfig` of the encoder preset `name` (as `encoder_from_preset`), without reading its
  weights."""
  model_dir = _preset_dir(name)
  if model_dir is None:
    return BertConfig.tiny() if name == "tiny" else BertConfig.bert_base()
  return BertConfig.from_hf_json(model_dir / "config.json")


def preset_vocab_file(name: str) -> pathlib.Path:
  """The `vocab.txt` of the encoder preset `name`: the model directory's own, or for the random
  `tiny` and `bert-base` the bert-base-uncased vocabulary their ids come from.

  Raises:
    FileNotFoundError: the model directory has no vocab.txt.
  """
  model_dir = _preset_dir(name)
  path = bert_uncased_vocab_file() if model_dir is None else model_dir / "vocab.txt"
  if not path.is_file():
    raise FileNotFoundError(f"text encoder {name!r}: {path} does not exist")
  return path


def hf_config_dict(config: BertConfig) -> dict[str, Any]:
  """`config` as a Hugging Face BERT `config.json` dict, which `BertConfig.from_hf_json` reads
  back."""
  return {"model_type": "bert", "hidden_act": "gelu", **dataclasses.asdict(config)}


def load_tokenizer(model_dir: str | os.PathLike):
  """The model's own tokenizer via `AutoTokenizer` (docs/methods.md §8 pitfall:
  `BertTokenizer(vocab_file=)` silently maps every token to [UNK]). Accepts a directory or a locally
  cached model name."""
  from transformers import AutoTokenizer

  return AutoTokenizer.from_pretrained(str(resolve_model_dir(model_dir)), local_files_only=True)


def tokenize_to_text_bert(tokenizer, sentences: Sequence[str], max_len: int) -> np.ndarray:
  """Sentences -> text_bert (N, 3, max_len) int32 [ids, attention mask, segment ids], padded and
  truncated to `max_len` (the canonical batch layout)."""
  enc = tokenizer(
    list(sentences), padding="max_length", truncation=True, max_length=max_len, return_tensors="np"
  )
  ids = enc["input_ids"]
  segments = enc.get("token_type_ids", np.zeros_like(ids))
  return np.stack([ids, enc["attention_mask"], segments], axis=1).astype(np.int32)


def merge_pretrained(params: Params, encoder_params: Params, path: Sequence[str]) -> dict[str, Any]:
  """Returns `params` with the subtree at `path` replaced by `encoder_params`.

  The subtree and `encoder_params` must have exactly the same names and shapes (e.g. a parent model
  whose `BertModel` is named 'text_encoder': `merge_pretrained(variables['params'], pretrained,
  ('text_encoder',))`). `params` is not modified.

  Raises:
    KeyError: `path` does not lead to a subtree of `params`.
    CheckpointMismatchError: names or shapes differ (all listed).
  """
  from flax.core import unfreeze

  params = unfreeze(params) if not isinstance(params, dict) else params
  encoder_params = (
    unfreeze(encoder_params) if not isinstance(encoder_params, dict) else encoder_params
  )
  path = tuple(path)
  if not path:
    raise KeyError("merge_pretrained: path must name a subtree, got ()")
  node: Any = params
  for depth, key in enumerate(path):
    if not isinstance(node, Mapping) or key not in node:
      where = "/".join(path[:depth]) or "<root>"
      keys = sorted(node) if isinstance(node, Mapping) else []
      raise KeyError(f"merge_pretrained: no key {key!r} under {where}; available {keys}")
    node = node[key]
  current, given = _flat(node), _flat(encoder_params)
  join = "/".join
  missing = [join(p) for p in current if p not in given]
  unexpected = [join(p) for p in given if p not in current]
  mismatched = [
    (join(p), tuple(np.shape(given[p])), tuple(np.shape(current[p])))
    for p in current
    if p in given and np.shape(given[p]) != np.shape(current[p])
  ]
  if missing or unexpected or mismatched:
    raise CheckpointMismatchError(
      f"pretrained params for {join(path)}", missing, unexpected, mismatched
    )

  def replace(tree: Mapping[str, Any], depth: int) -> dict[str, Any]:
    out = dict(tree)
    out[path[depth]] = (
      encoder_params if depth == len(path) - 1 else replace(tree[path[depth]], depth + 1)
    )
    return out

  return replace(params, 0)
