"""Tests of the BERT text encoder and Hugging Face checkpoint loading (docs/methods.md §8)."""

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from safetensors.numpy import load_file, save_file
from scipy.special import erf

from msa_jax.models import bert
from msa_jax.models.bert import BertConfig, BertModel, CheckpointMismatchError
from msa_jax.text import minilm_dir

SENTENCES = [
  "A wonderful movie!",
  "The plot was thin, but the acting saved it.",
  "I would not watch this again.",
  "An ordinary afternoon in a quiet town.",
]

# (anchor, paraphrase with few shared words, unrelated sentence sharing the anchor's words)
TRIPLES = [
  (
    "The movie was absolutely wonderful.",
    "I really loved this film.",
    "The weather was absolutely terrible.",
  ),
  (
    "A man is playing a guitar on stage.",
    "Someone performs music with a string instrument.",
    "A man is eating a sandwich on the bus.",
  ),
  (
    "The stock market fell sharply today.",
    "Share prices dropped a lot this afternoon.",
    "The children fell asleep quickly today.",
  ),
  (
    "How do I bake bread at home?",
    "What is a good recipe for homemade loaves?",
    "How do I fix my car at home?",
  ),
  (
    "She is very happy with her new job.",
    "Her recent employment makes her glad.",
    "She is very tired of her old car.",
  ),
]

SMALL = BertConfig(
  vocab_size=40,
  hidden_size=8,
  num_hidden_layers=2,
  num_attention_heads=2,
  intermediate_size=16,
  max_position_embeddings=16,
)
TEXT_LEN = 20


def _hf_style_random_params(params, rng):
  """Same shapes, BERT's initial distribution: N(0, 0.02) weights, zero biases, unit LayerNorm
  scales."""

  def draw(path, leaf):
    name = str(path[-1].key)
    if name == "scale":
      return np.ones(leaf.shape, np.float32)
    if name == "bias":
      return np.zeros(leaf.shape, np.float32)
    return rng.normal(0.0, 0.02, leaf.shape).astype(np.float32)

  return jax.tree_util.tree_map_with_path(draw, params)


@pytest.fixture(scope="module")
def minilm():
  """MiniLM's config, params, tokenizer, one compiled forward and the tokenized test sentences."""
  config, params = bert.load_hf_bert(minilm_dir(), add_pooler=True)
  tok = bert.load_tokenizer(minilm_dir())
  text_bert = bert.tokenize_to_text_bert(tok, SENTENCES + [s for t in TRIPLES for s in t], TEXT_LEN)
  forward = jax.jit(lambda p: BertModel(config).apply({"params": p}, text_bert, deterministic=True))
  return config, params, tok, forward, text_bert


def _layer_norm(x, weight, bias, eps):
  mean = x.mean(-1, keepdims=True)
  var = ((x - mean) ** 2).mean(-1, keepdims=True)
  return (x - mean) / np.sqrt(var + eps) * weight + bias


def _numpy_bert(w, ids, mask, segments, heads, eps):
  """BERT forward from its equations, float64, on raw HF tensors (Linear: y = x W^T + b)."""
  g = lambda name: w[name].astype(np.float64)
  lin = lambda x, name: (
    (x.reshape(-1, x.shape[-1]) @ g(name + ".weight").T).reshape(*x.shape[:-1], -1)
    + g(name + ".bias")
  )
  batch, length = ids.shape
  x = (
    w["embeddings.word_embeddings.weight"][ids].astype(np.float64)
    + g("embeddings.position_embeddings.weight")[np.arange(length)][None]
    + g("embeddings.token_type_embeddings.weight")[segments]
  )
  x = _layer_norm(x, g("embeddings.LayerNorm.weight"), g("embeddings.LayerNorm.bias"), eps)
  hidden = x.shape[-1]
  d = hidden // heads
  bias = np.where(mask[:, None, None, :] > 0, 0.0, -1e30)
  n_layers = len({k.split(".")[2] for k in w if k.startswith("encoder.layer.")})
  for i in range(n_layers):
    p = f"encoder.layer.{i}."
    heads_of = lambda t: t.reshape(batch, length, heads, d).transpose(0, 2, 1, 3)
    q = heads_of(lin(x, p + "attention.self.query"))
    k = heads_of(lin(x, p + "attention.self.key"))
    v = heads_of(lin(x, p + "attention.self.value"))
    s = q @ k.transpose(0, 1, 3, 2) / np.sqrt(d) + bias
    s = np.exp(s - s.max(-1, keepdims=True))
    a = (s / s.sum(-1, keepdims=True)) @ v
    a = a.transpose(0, 2, 1, 3).reshape(batch, length, hidden)
    x = _layer_norm(
      lin(a, p + "attention.output.dense") + x,
      g(p + "attention.output.LayerNorm.weight"),
      g(p + "attention.output.LayerNorm.bias"),
      eps,
    )
    h = lin(x, p + "intermediate.dense")
    h = 0.5 * h * (1.0 + erf(h / np.sqrt(2.0)))
    x = _layer_norm(
      lin(h, p + "output.dense") + x,
      g(p + "output.LayerNorm.weight"),
      g(p + "output.LayerNorm.bias"),
      eps,
    )
  return x


def test_tokenizer_known_answer(minilm):
  tok = minilm[2]
  text_bert = bert.tokenize_to_text_bert(tok, ["A wonderful movie!"], 8)
  assert text_bert.dtype == np.int32 and text_bert.shape == (1, 3, 8)
  np.testing.assert_array_equal(text_bert[0, 0], [101, 1037, 6919, 3185, 999, 102, 0, 0])
  np.testing.assert_array_equal(text_bert[0, 1], [1, 1, 1, 1, 1, 1, 0, 0])
  np.testing.assert_array_equal(text_bert[0, 2], 0)


def test_minilm_matches_numpy_bert(minilm):
  config, params, _, forward, text_bert = minilm
  ours = np.asarray(forward({k: v for k, v in params.items() if k != "pooler"}))
  w = load_file(minilm_dir() / "model.safetensors")
  ref = _numpy_bert(
    w,
    text_bert[:, 0],
    text_bert[:, 1],
    text_bert[:, 2],
    config.num_attention_heads,
    config.layer_norm_eps,
  )
  valid = text_bert[:, 1].astype(bool)
  assert valid.sum() > 100 and (~valid).sum() > 50
  assert np.abs(ours - ref).max() < 1e-4
  pooled = bert.BertPooler(config).apply(
    {"params": params["pooler"]}, jnp.asarray(ref[:, :1], jnp.float32)
  )
  ref_pooled = np.tanh(ref[:, 0] @ w["pooler.dense.weight"].T + w["pooler.dense.bias"])
  np.testing.assert_allclose(pooled, ref_pooled, atol=1e-5)


def _triple_margins(forward, params, text_bert):
  """cos(anchor, paraphrase) - cos(anchor, unrelated) of mask-mean-pooled embeddings, per triple."""
  h = np.asarray(forward(params), np.float64)[len(SENTENCES) :]
  m = text_bert[len(SENTENCES) :, 1, :, None].astype(np.float64)
  e = (h * m).sum(1) / m.sum(1)
  e = (e / np.linalg.norm(e, axis=1, keepdims=True)).reshape(len(TRIPLES), 3, -1)
  return np.einsum("td,td->t", e[:, 0], e[:, 1]) - np.einsum("td,td->t", e[:, 0], e[:, 2])


def test_pretrained_weights_rank_paraphrases_random_weights_do_not(minilm):
  config, params, _, forward, text_bert = minilm
  params = {k: v for k, v in params.items() if k != "pooler"}
  pretrained = _triple_margins(forward, params, text_bert)
  random = _triple_margins(
    forward, _hf_style_random_params(params, np.random.default_rng(0)), text_bert
  )
  assert (pretrained > 0).all(), pretrained
  assert (random <= 0).any(), random
  assert pretrained.mean() > random.mean() + 0.1


def _small_checkpoint(rng, prefixed=False, legacy_norm=False, extras=True):
  """A tiny random BERT in Hugging Face tensor names, written independently of the loader."""
  c, w = SMALL, {}
  ln_w, ln_b = ("gamma", "beta") if legacy_norm else ("weight", "bias")
  normal = lambda *shape: rng.normal(0, 0.02, shape).astype(np.float32)
  w["embeddings.word_embeddings.weight"] = normal(c.vocab_size, c.hidden_size)
  w["embeddings.position_embeddings.weight"] = normal(c.max_position_embeddings, c.hidden_size)
  w["embeddings.token_type_embeddings.weight"] = normal(c.type_vocab_size, c.hidden_size)
  norms = ["embeddings.LayerNorm"]
  for i in range(c.num_hidden_layers):
    p = f"encoder.layer.{i}."
    for name, out, inp in [
      ("attention.self.query", c.hidden_size, c.hidden_size),
      ("attention.self.key", c.hidden_size, c.hidden_size),
      ("attention.self.value", c.hidden_size, c.hidden_size),
      ("attention.output.dense", c.hidden_size, c.hidden_size),
      ("intermediate.dense", c.intermediate_size, c.hidden_size),
      ("output.dense", c.hidden_size, c.intermediate_size),
    ]:
      w[p + name + ".weight"], w[p + name + ".bias"] = normal(out, inp), normal(out)
    norms += [p + "attention.output.LayerNorm", p + "output.LayerNorm"]
  for n in norms:
    w[f"{n}.{ln_w}"], w[f"{n}.{ln_b}"] = 1 + normal(c.hidden_size), normal(c.hidden_size)
  if extras:
    w["pooler.dense.weight"], w["pooler.dense.bias"] = (
      normal(c.hidden_size, c.hidden_size),
      normal(c.hidden_size),
    )
    w["embeddings.position_ids"] = np.arange(c.max_position_embeddings, dtype=np.int64)[None]
  if prefixed:
    w = {"bert." + k: v for k, v in w.items()}
    if extras:
      w["cls.predictions.bias"] = normal(c.vocab_size)
  return w


def _write(tmp_path, tensors, config=SMALL):
  tmp_path.mkdir(parents=True, exist_ok=True)
  cfg = {f.name: getattr(config, f.name) for f in config.__dataclass_fields__.values()}
  (tmp_path / "config.json").write_text(
    json.dumps({"model_type": "bert", "hidden_act": "gelu", **cfg})
  )
  save_file(tensors, str(tmp_path / "model.safetensors"))
  return tmp_path


@pytest.mark.parametrize("prefixed,legacy_norm", [(False, False), (True, True)])
def test_load_small_checkpoint_maps_every_tensor(tmp_path, prefixed, legacy_norm):
  w = _small_checkpoint(np.random.default_rng(0), prefixed, legacy_norm)
  config, params = bert.load_hf_bert(_write(tmp_path, w))
  assert config == SMALL
  pre = "bert." if prefixed else ""
  gamma = "gamma" if legacy_norm else "weight"
  layer = params["encoder"]["layer_1"]
  np.testing.assert_array_equal(
    layer["intermediate"]["dense"]["kernel"], w[pre + "encoder.layer.1.intermediate.dense.weight"].T
  )
  np.testing.assert_array_equal(
    layer["output"]["LayerNorm"]["scale"], w[pre + f"encoder.layer.1.output.LayerNorm.{gamma}"]
  )
  np.testing.assert_array_equal(
    params["embeddings"]["word_embeddings"]["embedding"],
    w[pre + "embeddings.word_embeddings.weight"],
  )
  assert "pooler" not in params
  _, with_pooler = bert.load_hf_bert(tmp_path, add_pooler=True)
  np.testing.assert_array_equal(
    with_pooler["pooler"]["dense"]["kernel"], w[pre + "pooler.dense.weight"].T
  )


def test_checkpoint_errors_name_missing_unexpected_misshaped(tmp_path):
  w = _small_checkpoint(np.random.default_rng(1))
  w["encoder.layer.0.attention.self.kee.weight"] = w.pop(
    "encoder.layer.0.attention.self.key.weight"
  )
  del w["embeddings.LayerNorm.bias"]
  w["encoder.layer.1.output.dense.weight"] = w["encoder.layer.1.output.dense.weight"][:, :5]
  with pytest.raises(CheckpointMismatchError) as err:
    bert.load_hf_bert(_write(tmp_path, w))
  msg = str(err.value)
  assert "encoder.layer.0.attention.self.key.weight" in err.value.missing
  assert "embeddings.LayerNorm.bias" in err.value.missing
  assert err.value.unexpected == ["encoder.layer.0.attention.self.kee.weight"]
  assert [m[0] for m in err.value.mismatched] == ["encoder.layer.1.output.dense.weight"]
  for name in [
    "encoder.layer.0.attention.self.key.weight",
    "embeddings.LayerNorm.bias",
    "encoder.layer.0.attention.self.kee.weight",
    "encoder.layer.1.output.dense.weight",
    "got (8, 5), expected (8, 16)",
    str(tmp_path),
  ]:
    assert name in msg


def test_missing_pooler_is_an_error_only_when_used(tmp_path):
  w = _small_checkpoint(np.random.default_rng(2), extras=False)
  path = _write(tmp_path, w)
  bert.load_hf_bert(path)
  with pytest.raises(CheckpointMismatchError, match="pooler.dense.weight"):
    bert.load_hf_bert(path, add_pooler=True)


def test_unknown_model_name_fails_without_network(tmp_path, monkeypatch):
  monkeypatch.setenv("HF_HUB_OFFLINE", "1")
  with pytest.raises(FileNotFoundError, match="never downloads"):
    bert.load_hf_bert("no-such-org/no-such-bert-model")
  with pytest.raises(FileNotFoundError, match="does not exist"):
    bert.load_hf_bert(tmp_path / "absent")


def _tiny_batch():
  rng = np.random.default_rng(0)
  text_bert = np.zeros((2, 3, 50), np.int32)
  text_bert[:, 0] = rng.integers(1000, 30000, (2, 50))
  text_bert[0, 1, :50], text_bert[1, 1, :23] = 1, 1
  text_bert[:, 2, 30:] = 1
  return text_bert


@pytest.fixture(scope="module")
def tiny():
  """Tiny-config params and one compiled forward `(params, text_bert, key, deterministic)`."""
  config = BertConfig.tiny()
  forward = jax.jit(
    lambda p, x, k, deterministic: BertModel(config).apply(
      {"params": p}, x, deterministic=deterministic, rngs={"dropout": k}
    ),
    static_argnums=3,
  )
  return _hf_style_random_params(bert.param_shapes(config), np.random.default_rng(0)), forward


def test_tiny_jit_grad_and_dropout_keys(tiny):
  params, forward = tiny
  text_bert = _tiny_batch()
  key = jax.random.key

  def loss(p, k):
    hidden = forward(p, text_bert, k, False)
    return jnp.mean(hidden**2), hidden

  step = jax.jit(jax.value_and_grad(loss, has_aux=True))
  (_, a), grads = step(params, key(1))
  (_, b), _ = step(params, key(1))
  (_, c), _ = step(params, key(2))
  assert a.shape == (2, 50, 64)
  np.testing.assert_array_equal(a, b)
  assert np.abs(np.asarray(a) - np.asarray(c)).max() > 1e-3
  assert jax.tree_util.tree_structure(grads) == jax.tree_util.tree_structure(params)
  assert all(np.isfinite(g).all() for g in jax.tree_util.tree_leaves(grads))
  assert np.abs(grads["encoder"]["layer_0"]["attention"]["self"]["query"]["kernel"]).max() > 0
  np.testing.assert_array_equal(
    forward(params, text_bert, key(1), True), forward(params, text_bert, key(2), True)
  )
  assert np.abs(np.asarray(forward(params, text_bert, key(1), True)) - np.asarray(a)).max() > 1e-3


def test_text_bert_accepts_float_rows_and_checks_shape():
  ids, mask, segments = bert.split_text_bert(_tiny_batch().astype(np.float32))
  assert ids.dtype == mask.dtype == segments.dtype == jnp.int32
  np.testing.assert_array_equal(ids, _tiny_batch()[:, 0])
  with pytest.raises(ValueError, match=r"\(2, 50\), expected \(B, 3, L\)"):
    bert.split_text_bert(np.zeros((2, 50), np.int32))


def test_padded_positions_do_not_affect_valid_ones(tiny):
  params, forward = tiny
  text_bert = _tiny_batch()
  changed = text_bert.copy()
  changed[1, 0, 23:] = 7
  a = np.asarray(forward(params, text_bert, jax.random.key(0), True))
  b = np.asarray(forward(params, changed, jax.random.key(0), True))
  np.testing.assert_allclose(a[1, :23], b[1, :23], atol=1e-6)
  np.testing.assert_array_equal(a[0], b[0])
  assert np.abs(a[1, 23:] - b[1, 23:]).max() > 1e-3


def test_presets_shapes_and_bad_name(tmp_path):
  config, params = bert.encoder_from_preset("tiny")
  assert (config, params) == (BertConfig.tiny(), None)
  config, params = bert.encoder_from_preset("bert-base")
  assert params is None and (config.hidden_size, config.num_hidden_layers) == (768, 12)
  shapes = bert.param_shapes(config)
  assert shapes["encoder"]["layer_11"]["intermediate"]["dense"]["kernel"].shape == (768, 3072)
  assert sum(np.prod(s.shape) for s in jax.tree_util.tree_leaves(shapes)) == 108_891_648
  config, params = bert.encoder_from_preset("minilm")
  assert (config.hidden_size, config.num_hidden_layers, config.num_attention_heads) == (384, 6, 12)
  assert params["encoder"]["layer_5"]["output"]["dense"]["kernel"].shape == (1536, 384)
  path = _write(tmp_path, _small_checkpoint(np.random.default_rng(3)))
  config, params = bert.encoder_from_preset(f"path:{path}")
  assert config == SMALL and params["embeddings"]["word_embeddings"]["embedding"].shape == (40, 8)
  with pytest.raises(ValueError, match="'bert-large'.*tiny, minilm, bert-base, path:<dir>"):
    bert.encoder_from_preset("bert-large")


def test_merge_pretrained_places_subtree_and_checks_shapes(tmp_path):
  config, enc = bert.load_hf_bert(_write(tmp_path, _small_checkpoint(np.random.default_rng(5))))
  fresh = _hf_style_random_params(bert.param_shapes(config), np.random.default_rng(6))
  params = {"text_encoder": fresh, "head": {"kernel": jnp.zeros((8, 1))}}
  merged = bert.merge_pretrained(params, enc, ("text_encoder",))
  assert merged["head"] is params["head"]
  for x, y in zip(
    jax.tree_util.tree_leaves(merged["text_encoder"]), jax.tree_util.tree_leaves(enc)
  ):
    np.testing.assert_array_equal(x, y)
  assert not np.array_equal(
    params["text_encoder"]["encoder"]["layer_0"]["output"]["dense"]["kernel"],
    enc["encoder"]["layer_0"]["output"]["dense"]["kernel"],
  )
  with pytest.raises(KeyError, match="'text'.*text_encoder"):
    bert.merge_pretrained(params, enc, ("text",))
  wrong = bert.param_shapes(BertConfig.tiny())
  with pytest.raises(CheckpointMismatchError, match="embeddings/word_embeddings/embedding: got"):
    bert.merge_pretrained(params, wrong, ("text_encoder",))
  pooled = bert.param_shapes(config, add_pooler=True)
  with pytest.raises(CheckpointMismatchError, match="unexpected.*pooler/dense/kernel"):
    bert.merge_pretrained(params, pooled, ("text_encoder",))


def test_padding_row_gets_no_gradient_and_other_rows_the_plain_one():
  """As PyTorch's `nn.Embedding(padding_idx=...)`: with [PAD] tokens read by the loss, row
  `pad_token_id` of the word embeddings gets exactly zero gradient, and every other row gets the
  gradient of a plain lookup: the per-position gradients of the embedded words, summed per id
  (numpy scatter-add). The per-position gradients come from a second model whose table holds one
  row per position (ids 0..B·L-1, no [PAD]), filled with the same embedded words."""
  rng = np.random.default_rng(3)
  batch, length = 2, 12
  text_bert = np.zeros((batch, 3, length), np.int32)
  text_bert[:, 0] = rng.integers(1, SMALL.vocab_size, (batch, length))
  text_bert[0, 0, 9:], text_bert[1, 0, 5:] = 0, 0  # [PAD] = 0 after the valid tokens
  text_bert[0, 1, :9], text_bert[1, 1, :5] = 1, 1
  ids = text_bert[:, 0]
  params = _hf_style_random_params(bert.param_shapes(SMALL), rng)
  weights = jnp.asarray(rng.normal(size=(batch, length, SMALL.hidden_size)), jnp.float32)

  def grad_of_table(config, p, x):
    loss = lambda q: jnp.sum(
      BertModel(config).apply({"params": q}, x, deterministic=True) * weights
    )
    return np.asarray(jax.grad(loss)(p)["embeddings"]["word_embeddings"]["embedding"], np.float64)

  ours = grad_of_table(SMALL, params, text_bert)
  plain = grad_of_table(dataclasses.replace(SMALL, pad_token_id=None), params, text_bert)

  table = np.asarray(params["embeddings"]["word_embeddings"]["embedding"])
  per_position = dataclasses.replace(SMALL, vocab_size=batch * length, pad_token_id=None)
  spread = {
    **params,
    "embeddings": {
      **params["embeddings"],
      "word_embeddings": {"embedding": jnp.asarray(table[ids.reshape(-1)])},
    },
  }
  spread_text = text_bert.copy()
  spread_text[:, 0] = np.arange(batch * length).reshape(batch, length)
  upstream = grad_of_table(per_position, spread, spread_text)  # (B·L, H): d loss / d embedded word
  want = np.zeros_like(ours)
  np.add.at(want, ids.reshape(-1), upstream)

  assert (ids == 0).sum() == 10 and np.abs(want[0]).max() > 1e-3  # [PAD] positions reach the loss
  np.testing.assert_array_equal(ours[0], 0.0)
  np.testing.assert_allclose(ours[1:], want[1:], rtol=1e-5, atol=1e-7)
  np.testing.assert_allclose(plain, want, rtol=1e-5, atol=1e-7)  # the plain lookup, row 0 included
  np.testing.assert_array_equal(  # the forward pass is unchanged
    BertModel(SMALL).apply({"params": params}, text_bert, deterministic=True),
    BertModel(dataclasses.replace(SMALL, pad_token_id=None)).apply(
      {"params": params}, text_bert, deterministic=True
    ),
  )


def test_pad_token_id_is_read_from_config_json_and_checked(tmp_path):
  raw = {
    "vocab_size": 40,
    "hidden_size": 8,
    "num_hidden_layers": 1,
    "num_attention_heads": 2,
    "intermediate_size": 16,
    "pad_token_id": 3,
  }
  (tmp_path / "config.json").write_text(json.dumps(raw))
  assert BertConfig.from_hf_json(tmp_path).pad_token_id == 3
  del raw["pad_token_id"]
  (tmp_path / "config.json").write_text(json.dumps(raw))
  assert BertConfig.from_hf_json(tmp_path).pad_token_id == 0
  with pytest.raises(ValueError, match=r"pad_token_id=40, expected None or an id in \[0, 40\)"):
    dataclasses.replace(SMALL, pad_token_id=40)
