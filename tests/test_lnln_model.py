"""Tests for LNLN's building blocks, the LNLN model and its loss (docs/methods.md §4)."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.flatten_util import ravel_pytree
from scipy.special import erf

from msa_jax.losses import LNLN_LOSS_WEIGHTS, LNLN_LOSS_WEIGHTS_SIMS, lnln_loss
from msa_jax.models.bert import BertConfig, BertModel
from msa_jax.models.layers import (
  CrossTransformer,
  HyperLayer,
  LayerNorm,
  TokenTransformer,
  TorchDense,
  grad_reverse,
)
from msa_jax.models.lnln import LNLN, LNLNConfig, init_lnln

B, L, TA, TV, DA, DV = 2, 12, 10, 9, 5, 7
# Programs compile at XLA's lowest optimisation level: compile time dominates these tests.
FAST_COMPILE = {
  "xla_backend_optimization_level": 0,
  "xla_llvm_disable_expensive_passes": True,
  "xla_cpu_use_fusion_emitters": False,
}

# A reduced LNLN for the end-to-end tests: every block present, small sizes, depth 1.
SMALL = LNLNConfig(
  text_frames=L,
  audio_frames=TA,
  vision_frames=TV,
  audio_dim=DA,
  vision_dim=DV,
  bert=dataclasses.replace(BertConfig.tiny(), num_hidden_layers=1, vocab_size=512),
  dim=16,
  token_len=4,
  heads=2,
  dim_head=8,
  mlp_dim=16,
  depth=1,
  num_hyper_layers=2,
  fusion_depth=1,
  hyper_heads=2,
  hyper_dim_head=8,
  completeness_hidden=8,
  discriminator_hidden=8,
)
# LNLN's real widths (docs/methods.md §4) with tiny frame counts and the tiny BERT.
REAL = LNLNConfig(
  text_frames=L,
  audio_frames=TA,
  vision_frames=TV,
  audio_dim=DA,
  vision_dim=DV,
  bert=BertConfig.tiny(),
)


def make_batch(seed: int, vocab: int = 512) -> dict[str, jax.Array]:
  rng = np.random.default_rng(seed)
  ids = rng.integers(103, vocab, (B, L))
  ids[:, 0], ids[:, -1] = 101, 102
  mask = np.ones((B, L))
  mask[1, 9:] = 0
  text = np.stack([ids, mask, np.zeros((B, L))], axis=1).astype(np.int32)
  return {
    "text_bert": jnp.asarray(text),
    "audio": jnp.asarray(rng.normal(size=(B, TA, DA)), jnp.float32),
    "vision": jnp.asarray(rng.normal(size=(B, TV, DV)), jnp.float32),
  }


def mask_batch(batch: dict[str, jax.Array], seed: int) -> dict[str, jax.Array]:
  rng = np.random.default_rng(seed)
  text = np.array(batch["text_bert"])
  drop = rng.uniform(size=(B, L)) < 0.5
  drop[:, 0] = drop[:, -1] = False
  text[:, 0][drop] = 100
  audio = np.array(batch["audio"]) * (rng.uniform(size=(B, TA, 1)) > 0.5)
  vision = np.array(batch["vision"]) * (rng.uniform(size=(B, TV, 1)) > 0.5)
  return {
    "text_bert": jnp.asarray(text),
    "audio": jnp.asarray(audio, jnp.float32),
    "vision": jnp.asarray(vision, jnp.float32),
  }


# ---- numpy reference of the blocks ---------------------------------------------------------------


def np_params(params):
  return jax.tree.map(lambda x: np.asarray(x, np.float64), params)


def np_dense(p, x):
  return x @ p["kernel"] + p.get("bias", 0.0)


def np_ln(p, x, eps=1e-5):
  mean = x.mean(-1, keepdims=True)
  var = ((x - mean) ** 2).mean(-1, keepdims=True)
  return (x - mean) / np.sqrt(var + eps) * p["scale"] + p["bias"]


def np_attend(q, k, v, heads):
  def split(t):
    b, n, inner = t.shape
    return t.reshape(b, n, heads, inner // heads).transpose(0, 2, 1, 3)

  q, k, v = split(q), split(k), split(v)
  dots = q @ k.transpose(0, 1, 3, 2) / np.sqrt(q.shape[-1])
  attn = np.exp(dots - dots.max(-1, keepdims=True))
  attn /= attn.sum(-1, keepdims=True)
  out = attn @ v
  b, h, n, dh = out.shape
  return out.transpose(0, 2, 1, 3).reshape(b, n, h * dh)


def np_layer(p, x, ctx, heads):
  a = p["attn"]
  q = np_dense(a["to_q"], np_ln(p["norm_q"], x))
  k = np_dense(a["to_k"], np_ln(p["norm_k"], ctx))
  v = np_dense(a["to_v"], np_ln(p["norm_v"], ctx))
  x = np_dense(a["to_out"], np_attend(q, k, v, heads)) + x
  h = np_dense(p["ff"]["dense_in"], np_ln(p["norm_ff"], x))
  h = 0.5 * h * (1.0 + erf(h / np.sqrt(2.0)))
  return np_dense(p["ff"]["dense_out"], h) + x


def np_token_transformer(p, x, token_len, depth, heads):
  b = x.shape[0]
  if token_len is not None:
    x = np.concatenate([np.repeat(p["extra_token"], b, 0), x], 1)
  x = x + p["pos_embedding"][:, : x.shape[1]]
  hidden = [x]
  for i in range(depth):
    x = np_layer(p[f"layer_{i}"], x, x, heads)
    hidden.append(x)
  return hidden


def np_hyper(p, h_dom, h_a, h_v, h_hyper, heads):
  h_dom, h_a = np_ln(p["norm_dom"], h_dom), np_ln(p["norm_a"], h_a)
  h_v, h_hyper = np_ln(p["norm_v"], h_v), np_ln(p["norm_hyper"], h_hyper)
  q = np_dense(p["to_q"], h_dom)
  attn_a = np_attend(q, np_dense(p["to_k_a"], h_a), np_dense(p["to_v_a"], h_a), heads)
  attn_v = np_attend(q, np_dense(p["to_k_v"], h_v), np_dense(p["to_v_v"], h_v), heads)
  return h_hyper + np_dense(p["to_out"], attn_a + attn_v)


def walk(tree, path=()):
  """(path, dict) for every dict node of a parameter tree."""
  if isinstance(tree, dict):
    yield path, tree
    for k, v in tree.items():
      yield from walk(v, path + (k,))


def init_apply(module, *args):
  """(params, output) of a freshly initialised `module` on `args`, as one compiled program."""

  def run(key):
    params = module.init(key, *args)["params"]
    return params, module.apply({"params": params}, *args)

  return jax.jit(run, compiler_options=FAST_COMPILE)(jax.random.key(1))


def count(tree) -> int:
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))


# ---- blocks --------------------------------------------------------------------------------------


def test_torch_dense_init_bounds_and_value():
  x = jax.random.normal(jax.random.key(0), (3, 50))
  params, got = init_apply(TorchDense(40), x)
  bound = 1.0 / np.sqrt(50)
  for name in ("kernel", "bias"):
    values = np.asarray(params[name])
    assert np.abs(values).max() <= bound
    assert np.abs(values).max() > 0.9 * bound
  assert np.asarray(params["kernel"]).std() == pytest.approx(bound / np.sqrt(3), rel=0.05)
  np.testing.assert_allclose(got, np_dense(np_params(params), np.asarray(x, np.float64)), atol=1e-5)
  assert set(TorchDense(4, use_bias=False).init(jax.random.key(1), x)["params"]) == {"kernel"}


def test_layer_norm_has_pytorch_eps():
  x = 1e-3 * jax.random.normal(jax.random.key(0), (4, 16))
  params, got = init_apply(LayerNorm(), x)
  got = np.asarray(got)
  np_x = np.asarray(x, np.float64)
  np.testing.assert_allclose(got, np_ln(np_params(params), np_x, 1e-5), atol=1e-5)
  assert np.abs(got - np_ln(np_params(params), np_x, 1e-6)).max() > 0.1


@pytest.mark.parametrize("token_len,depth", [(3, 2), (None, 1)])
def test_token_transformer_matches_numpy(token_len, depth):
  x = jax.random.normal(jax.random.key(0), (2, 5, 16))
  module = TokenTransformer(
    num_frames=7,
    token_len=token_len,
    dim=16,
    depth=depth,
    heads=2,
    dim_head=8,
    mlp_dim=12,
    save_hidden=True,
  )
  params, hidden = init_apply(module, x)
  n = 5 + (token_len or 0)
  assert len(hidden) == depth + 1 and all(h.shape == (2, n, 16) for h in hidden)
  assert params["pos_embedding"].shape == (1, 7 + (token_len or 0), 16)
  assert ("extra_token" in params) == (token_len is not None)
  want = np_token_transformer(np_params(params), np.asarray(x, np.float64), token_len, depth, 2)
  for got, ref in zip(hidden, want):
    np.testing.assert_allclose(got, ref, atol=2e-5, rtol=1e-5)
  if token_len is not None:
    _, last = init_apply(dataclasses.replace(module, save_hidden=False), x)
    np.testing.assert_array_equal(last, hidden[-1])


def test_token_transformer_rejects_too_many_frames():
  module = TokenTransformer(
    num_frames=4, token_len=2, dim=8, depth=1, heads=2, dim_head=4, mlp_dim=8
  )
  with pytest.raises(ValueError, match="5 frames, more than its num_frames=4"):
    module.init(jax.random.key(0), jnp.zeros((1, 5, 8)))


def test_cross_transformer_matches_numpy():
  key_s, key_t = jax.random.split(jax.random.key(0))
  source = jax.random.normal(key_s, (2, 5, 16))
  target = jax.random.normal(key_t, (2, 4, 16))
  module = CrossTransformer(
    source_len=5, target_len=4, dim=16, depth=2, heads=2, dim_head=8, mlp_dim=12
  )
  params, got = init_apply(module, source, target)
  assert params["extra_token"].shape == (1, 1, 16)
  assert params["pos_embedding_s"].shape == (1, 6, 16)
  assert params["pos_embedding_t"].shape == (1, 5, 16)
  assert got.shape == (2, 5, 16)
  p = np_params(params)
  token = np.repeat(p["extra_token"], 2, 0)
  s = np.concatenate([token, np.asarray(source, np.float64)], 1) + p["pos_embedding_s"]
  t = np.concatenate([token, np.asarray(target, np.float64)], 1) + p["pos_embedding_t"]
  for i in range(2):
    t = np_layer(p[f"layer_{i}"], t, s, 2)
  np.testing.assert_allclose(got, t, atol=2e-5, rtol=1e-5)


def test_hyper_layer_matches_numpy():
  keys = jax.random.split(jax.random.key(0), 4)
  h_dom, h_hyper = (jax.random.normal(k, (2, 4, 16)) for k in keys[:2])
  h_a = jax.random.normal(keys[2], (2, 3, 16))
  h_v = jax.random.normal(keys[3], (2, 5, 16))
  module = HyperLayer(dim=16, heads=2, dim_head=4)
  params, got = init_apply(module, h_dom, h_a, h_v, h_hyper)
  assert set(params) == {
    "norm_dom",
    "norm_a",
    "norm_v",
    "norm_hyper",
    "to_q",
    "to_k_a",
    "to_k_v",
    "to_v_a",
    "to_v_v",
    "to_out",
  }
  for name in ("to_q", "to_k_a", "to_k_v", "to_v_a", "to_v_v"):
    assert set(params[name]) == {"kernel"} and params[name]["kernel"].shape == (16, 8)
  assert params["to_out"]["kernel"].shape == (8, 16) and params["to_out"]["bias"].shape == (16,)
  want = np_hyper(
    np_params(params), *(np.asarray(t, np.float64) for t in (h_dom, h_a, h_v, h_hyper)), 2
  )
  assert got.shape == (2, 4, 16)
  np.testing.assert_allclose(got, want, atol=1e-5)


@pytest.mark.parametrize("alpha", [1.0, 0.5])
def test_grad_reverse_negates_and_scales_gradient(alpha):
  x = jnp.arange(6.0).reshape(2, 3)
  c = jnp.array([[1.0, -2.0, 3.0], [0.5, 0.0, -1.5]])
  np.testing.assert_array_equal(grad_reverse(x, alpha), x)
  grad = jax.grad(lambda t: jnp.sum(grad_reverse(t, alpha) * c))(x)
  np.testing.assert_allclose(grad, -alpha * c)
  grad_jit = jax.jit(jax.grad(lambda t: jnp.sum(grad_reverse(t, alpha) * c)))(x)
  np.testing.assert_allclose(grad_jit, -alpha * c)


def check_torch_init(params, skip=("bert",)):
  """Dense kernels/biases uniform within ±1/sqrt(fan_in), LayerNorms 1/0, extra tokens 0."""
  n_dense = 0
  for path, node in walk(params):
    if path[:1] and path[0] in skip:
      continue
    if "kernel" in node:
      bound = 1.0 / np.sqrt(node["kernel"].shape[0])
      for name in ("kernel", "bias"):
        if name in node:
          assert np.abs(np.asarray(node[name])).max() <= bound, (path, name)
      n_dense += 1
    if "scale" in node:
      np.testing.assert_array_equal(node["scale"], 1.0)
      np.testing.assert_array_equal(node["bias"], 0.0)
    if "extra_token" in node:
      np.testing.assert_array_equal(node["extra_token"], 0.0)
  return n_dense


def test_real_size_blocks_initialise_like_pytorch():
  x = jnp.zeros((1, 24, 128))
  tt, _ = init_apply(TokenTransformer(num_frames=24, token_len=8), x)
  pos = np.asarray(tt["pos_embedding"])
  assert pos.shape == (1, 32, 128)
  assert abs(pos.std() - 1.0) < 0.05 and abs(pos.mean()) < 0.06
  assert tt["extra_token"].shape == (1, 8, 128)
  attn = tt["layer_0"]["attn"]
  assert attn["to_q"]["kernel"].shape == (128, 512) and "bias" not in attn["to_q"]
  assert attn["to_out"]["kernel"].shape == (512, 128) and attn["to_out"]["bias"].shape == (128,)
  kernel = np.asarray(tt["layer_1"]["ff"]["dense_in"]["kernel"])
  assert kernel.std() == pytest.approx(1.0 / np.sqrt(3 * 128), rel=0.05)
  assert check_torch_init(tt) == 2 * (4 + 2)
  hyper, _ = init_apply(HyperLayer(), *(jnp.zeros((1, 8, 128)),) * 4)
  assert hyper["to_q"]["kernel"].shape == (128, 128)
  assert check_torch_init(hyper) == 6


# ---- LNLN ----------------------------------------------------------------------------------------


def expected_counts(cfg: LNLNConfig, bert_hidden: int) -> dict[str, int]:
  """Parameter counts per top-level module, written out from docs/methods.md §4."""
  d, t = cfg.dim, cfg.token_len
  inner, hyper_inner = cfg.heads * cfg.dim_head, cfg.hyper_heads * cfg.hyper_dim_head

  def dense(i, o, bias=True):
    return i * o + (o if bias else 0)

  layer = (
    4 * 2 * d
    + 3 * dense(d, inner, False)
    + dense(inner, d)
    + dense(d, cfg.mlp_dim)
    + dense(cfg.mlp_dim, d)
  )

  def tt(n, tokens, depth=cfg.depth):
    return (n + (tokens or 0)) * d + (tokens or 0) * d + depth * layer

  hyper = 4 * 2 * d + 5 * dense(d, hyper_inner, False) + dense(hyper_inner, d)
  counts = {
    "proj_l": dense(bert_hidden, d) + tt(cfg.text_frames, t),
    "proj_a": dense(cfg.audio_dim, d) + tt(cfg.audio_frames, t),
    "proj_v": dense(cfg.vision_dim, d) + tt(cfg.vision_frames, t),
    "completeness_check": tt(t, 1)
    + dense(d, cfg.completeness_hidden)
    + dense(cfg.completeness_hidden, 1),
    "h_p0": t * d,
    "proxy_generator": tt(3 * t, t),
    "language_encoder": tt(t, None),
    "h_hyper": t * d,
    "fusion": 2 * (t + 1) * d + d + cfg.fusion_depth * layer,
    "regressor": dense(d, 1),
    "discriminator": dense(d, cfg.discriminator_hidden) + dense(cfg.discriminator_hidden, 2),
  }
  counts.update({f"hyper_{i}": hyper for i in range(cfg.num_hyper_layers)})
  counts.update({f"reconstructor_{m}": tt(t, None) for m in "avl"})
  return counts


def shapes_of(cfg: LNLNConfig, batch, complete: bool = True):
  """Parameter and output shapes of LNLN (training form unless `complete=False`)."""

  def init(key):
    out, variables = LNLN(cfg).init_with_output(key, batch, batch if complete else None)
    return variables["params"], out

  return jax.eval_shape(init, jax.random.key(0))


def test_lnln_param_tree_and_counts_at_real_widths():
  batch = make_batch(0, vocab=30522)
  shapes, out = shapes_of(REAL, batch)
  want = expected_counts(REAL, bert_hidden=64)
  assert set(shapes) == set(want) | {"bert"}
  assert {k: count(shapes[k]) for k in want} == want
  assert shapes["h_p0"].shape == shapes["h_hyper"].shape == (1, 8, 128)
  assert shapes["proxy_generator"]["pos_embedding"].shape == (1, 32, 128)
  assert shapes["fusion"]["pos_embedding_s"].shape == (1, 9, 128)
  assert shapes["hyper_0"]["to_q"]["kernel"].shape == (128, 128)
  assert shapes["proj_l"]["dense"]["kernel"].shape == (64, 128)
  assert {k: v.shape for k, v in out.items()} == {
    "pred": (B,),
    "w": (B, 1),
    "rec": (B, 24, 128),
    "full": (B, 24, 128),
    "disc_logits": (2 * B * 8, 2),
    "disc_labels": (2 * B * 8,),
  }
  bert = jax.eval_shape(
    lambda k: BertModel(REAL.bert).init(k, batch["text_bert"], deterministic=True),
    jax.random.key(0),
  )["params"]
  assert jax.tree.map(lambda s: s.shape, shapes["bert"]) == jax.tree.map(lambda s: s.shape, bert)


@pytest.fixture(scope="module")
def small_shapes():
  return shapes_of(SMALL, make_batch(0))


@pytest.mark.parametrize(
  "switch,absent,gone",
  [
    (
      "use_dmc",
      {"completeness_check", "h_p0", "proxy_generator", "discriminator"},
      {"w", "disc_logits", "disc_labels"},
    ),
    ("use_reconstructor", {"reconstructor_a", "reconstructor_v", "reconstructor_l"}, {"rec"}),
    ("use_adversarial", {"discriminator"}, {"disc_logits", "disc_labels"}),
  ],
)
def test_ablation_switches_drop_params_and_outputs(small_shapes, switch, absent, gone):
  params, out = shapes_of(dataclasses.replace(SMALL, **{switch: False}), make_batch(0))
  assert set(small_shapes[0]) - set(params) == absent
  assert set(small_shapes[1]) - set(out) == gone and set(out) <= set(small_shapes[1])


def test_eval_form_needs_only_masked_inputs():
  _, out = shapes_of(SMALL, make_batch(0), complete=False)
  assert set(out) == {"pred", "w"} and out["pred"].shape == (B,)


def test_config_and_batch_errors():
  with pytest.raises(ValueError, match="num_hyper_layers=3 needs depth"):
    dataclasses.replace(SMALL, num_hyper_layers=3)
  with pytest.raises(ValueError, match="LNLNConfig.dim=0"):
    dataclasses.replace(SMALL, dim=0)
  batch = make_batch(0)
  bad = {**batch, "audio": batch["audio"][..., :3]}
  with pytest.raises(ValueError, match=r"audio has shape \(2, 10, 3\), expected \(B, T<=10, 5\)"):
    shapes_of(SMALL, bad)
  with pytest.raises(KeyError, match="missing key 'vision'"):
    shapes_of(SMALL, {k: v for k, v in batch.items() if k != "vision"})


def fill_params(shapes, seed: int = 0):
  """Parameters with LNLN's initial distributions, drawn in numpy (compiling the model's
  initialiser would dominate this file's run time; it is tested on its own above)."""
  rng = np.random.default_rng(seed)

  def fill(name, node):
    if isinstance(node, dict):
      if "kernel" in node:
        bound = 1.0 / np.sqrt(node["kernel"].shape[0])
        return {k: rng.uniform(-bound, bound, v.shape).astype(np.float32) for k, v in node.items()}
      if "scale" in node:
        return {
          "scale": np.ones(node["scale"].shape, np.float32),
          "bias": np.zeros(node["bias"].shape, np.float32),
        }
      return {k: fill(k, v) for k, v in node.items()}
    if name in ("h_p0", "h_hyper"):
      return np.ones(node.shape, np.float32)
    if name == "extra_token":
      return np.zeros(node.shape, np.float32)
    std = 0.02 if name == "embedding" else 1.0
    return (std * rng.normal(size=node.shape)).astype(np.float32)

  return jax.tree.map(jnp.asarray, fill("", shapes))


@pytest.fixture(scope="module")
def small():
  """Parameters for SMALL and one compiled AdamW training step."""
  batch = make_batch(0)
  params = fill_params(jax.eval_shape(lambda k: init_lnln(SMALL, k, batch), jax.random.key(0)))
  model = LNLN(SMALL)
  opt = optax.adamw(1e-3)
  capture = lambda mdl, method: method == "__call__" and mdl.name in ("proj_l", "proj_a")
  labels = jnp.array([1.5, -2.0])
  rate = jnp.array([0.4, 0.0])

  def step(params, masked, complete, key):
    def loss_fn(p):
      out, state = model.apply(
        {"params": p},
        masked,
        complete,
        deterministic=False,
        rngs={"dropout": key},
        capture_intermediates=capture,
        mutable=["intermediates"],
      )
      total, terms = lnln_loss(out, labels, rate)
      return total, (terms, out, state["intermediates"])

    (total, (terms, out, inter)), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    # AdamW is elementwise: one flat vector is the same update and a much smaller program.
    flat, unravel = ravel_pytree(params)
    flat_grads = ravel_pytree(grads)[0]
    updates, _ = opt.update(flat_grads, opt.init(flat), flat)
    return {
      "loss": total,
      "terms": terms,
      "out": out,
      "inter": inter,
      "grads": grads,
      "updated": unravel(optax.apply_updates(flat, updates)),
    }

  step = jax.jit(step, compiler_options=FAST_COMPILE)
  return {
    "params": params,
    "batch": batch,
    "masked": mask_batch(batch, 1),
    "labels": labels,
    "rate": rate,
    "run": lambda p, masked, complete: step(p, masked, complete, jax.random.key(7)),
  }


def test_lnln_initial_values():
  # Only LNLN's own parameters and dense layers are returned, so the program initialises only
  # them (the transformers' initialisation is tested above).
  batch = make_batch(0)

  def init(key):
    params = init_lnln(SMALL, key, batch)
    picked = {n: params[n] for n in ("h_p0", "h_hyper", "regressor", "discriminator")}
    picked["completeness_check"] = {
      n: params["completeness_check"][n] for n in ("dense_hidden", "dense_out")
    }
    return picked | {f"proj_{m}": params[f"proj_{m}"]["dense"] for m in "lav"}

  params = jax.jit(init, compiler_options=FAST_COMPILE)(jax.random.key(0))
  np.testing.assert_array_equal(params["h_p0"], 1.0)
  np.testing.assert_array_equal(params["h_hyper"], 1.0)
  assert params["h_p0"].shape == params["h_hyper"].shape == (1, SMALL.token_len, SMALL.dim)
  assert check_torch_init(params) == 8
  assert params["proj_l"]["kernel"].shape == (SMALL.bert.hidden_size, SMALL.dim)


def test_lnln_training_outputs_and_loss(small):
  res = small["run"](small["params"], small["masked"], small["batch"])
  out, t, d = res["out"], SMALL.token_len, SMALL.dim
  assert out["pred"].shape == (B,)
  assert out["w"].shape == (B, 1) and np.all((out["w"] > 0) & (out["w"] < 1))
  assert out["rec"].shape == out["full"].shape == (B, 3 * t, d)
  assert out["disc_logits"].shape == (2 * B * t, 2)
  np.testing.assert_array_equal(out["disc_labels"], [1] * (B * t) + [0] * (B * t))
  want, _ = np_loss(
    jax.tree.map(np.asarray, out),
    np.asarray(small["labels"]),
    np.asarray(small["rate"]),
    LNLN_LOSS_WEIGHTS,
  )
  np.testing.assert_allclose(res["loss"], want, rtol=1e-5)
  assert all(np.isfinite(v) and v > 0 for v in res["terms"].values())


def test_bert_runs_twice_with_independent_dropout(small):
  batch = small["batch"]
  inter = small["run"](small["params"], batch, batch)["inter"]
  l_masked, l_complete = inter["proj_l"]["__call__"]
  a_masked, a_complete = inter["proj_a"]["__call__"]
  np.testing.assert_array_equal(a_masked, a_complete)
  assert np.abs(np.asarray(l_masked - l_complete)).max() > 1e-3


def test_adamw_step_decreases_loss(small):
  params, masked, batch = small["params"], small["masked"], small["batch"]
  first = small["run"](params, masked, batch)
  assert small["run"](first["updated"], masked, batch)["loss"] < first["loss"]


def test_grl_reverses_every_gradient_through_the_proxy(small):
  """Every path from h_p0 to the loss passes the GRL: autodiff is minus the true derivative."""
  params, masked, batch = small["params"], small["masked"], small["batch"]
  grad = small["run"](params, masked, batch)["grads"]["h_p0"]
  direction = grad / jnp.linalg.norm(grad)
  eps = 1e-2

  def loss_at(step):
    shifted = {**params, "h_p0": params["h_p0"] + step * direction}
    return float(small["run"](shifted, masked, batch)["loss"])

  finite_diff = (loss_at(eps) - loss_at(-eps)) / (2 * eps)
  autodiff = float(jnp.sum(grad * direction))
  assert autodiff > 1e-4
  assert finite_diff == pytest.approx(-autodiff, rel=0.05)


def test_grl_scope_reverses_all_or_only_the_adversarial_gradient(small):
  """Against plain gradients (grl_alpha = -1 makes the reversal an identity in the backward pass)
  of the task terms (β = 0) and of the adversarial term alone: the proxy feature's own parameters
  get −task − adv with scope "all" (the authors' code) and task − adv with "adversarial";
  parameters off the proxy path (regressor, discriminator, completeness check) get the plain
  gradient with both; the forward pass is the same."""
  params, masked, batch, labels, rate = (
    small[k] for k in ("params", "masked", "batch", "labels", "rate")
  )
  task = {**LNLN_LOSS_WEIGHTS, "beta": 0.0}
  adv = {"alpha": 0.0, "beta": LNLN_LOSS_WEIGHTS["beta"], "gamma": 0.0, "sigma": 0.0}

  def grads(cfg, weights):
    def loss(p):
      out = LNLN(cfg).apply({"params": p}, masked, batch, deterministic=True)
      return lnln_loss(out, labels, rate, weights)[0], out["pred"]

    return jax.grad(loss, has_aux=True)(params)

  def program():
    plain = dataclasses.replace(SMALL, grl_alpha=-1.0)
    return {
      "task": grads(plain, task),
      "adv": grads(plain, adv),
      "all": grads(dataclasses.replace(SMALL, grl_scope="all"), LNLN_LOSS_WEIGHTS),
      "adversarial": grads(dataclasses.replace(SMALL, grl_scope="adversarial"), LNLN_LOSS_WEIGHTS),
    }

  res = jax.tree.map(np.asarray, jax.jit(program, compiler_options=FAST_COMPILE)())
  g = {k: v[0] for k, v in res.items()}
  np.testing.assert_array_equal(res["all"][1], res["adversarial"][1])
  for name in ("h_p0", "proxy_generator"):
    task_g, adv_g = g["task"][name], g["adv"][name]
    assert max(np.abs(x).max() for x in jax.tree.leaves(task_g)) > 1e-6
    assert max(np.abs(x).max() for x in jax.tree.leaves(adv_g)) > 1e-6
    jax.tree.map(
      lambda got, t, a: np.testing.assert_allclose(got, -t - a, rtol=1e-4, atol=1e-8),
      g["all"][name],
      task_g,
      adv_g,
    )
    jax.tree.map(
      lambda got, t, a: np.testing.assert_allclose(got, t - a, rtol=1e-4, atol=1e-8),
      g["adversarial"][name],
      task_g,
      adv_g,
    )
  for name in ("regressor", "discriminator", "completeness_check"):
    for scope in ("all", "adversarial"):
      jax.tree.map(
        lambda got, t, a: np.testing.assert_allclose(got, t + a, rtol=1e-4, atol=1e-8),
        g[scope][name],
        g["task"][name],
        g["adv"][name],
      )
  with pytest.raises(ValueError, match="grl_scope='both'"):
    dataclasses.replace(SMALL, grl_scope="both")


def test_stop_grad_targets_cuts_the_complete_branch(small):
  """With the flag, the complete-input features are constants: d sum(full) / d params = 0."""
  cfg = dataclasses.replace(SMALL, stop_grad_targets=True)
  batch = small["batch"]

  def full_sum(p):
    return jnp.sum(LNLN(cfg).apply({"params": p}, small["masked"], batch)["full"])

  audio_grads = jax.jit(lambda p: jax.grad(full_sum)(p)["proj_a"], compiler_options=FAST_COMPILE)(
    small["params"]
  )
  largest = max(float(jnp.abs(g).max()) for g in jax.tree.leaves(audio_grads))
  assert largest == 0.0


# ---- loss ----------------------------------------------------------------------------------------


def np_loss(out, labels, rate, w):
  cc = np.mean((out["w"][:, 0] - (1 - rate)) ** 2)
  logits = out["disc_logits"]
  logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
  adv = -np.mean(logp[np.arange(len(logits)), out["disc_labels"]])
  rec = np.mean((out["rec"] - out["full"]) ** 2)
  sp = np.mean((out["pred"] - labels) ** 2)
  return w["alpha"] * cc + w["beta"] * adv + w["gamma"] * rec + w["sigma"] * sp, (cc, adv, rec, sp)


def random_outputs(seed: int):
  rng = np.random.default_rng(seed)
  return {
    "pred": rng.normal(size=3),
    "w": rng.uniform(size=(3, 1)),
    "rec": rng.normal(size=(3, 6, 4)),
    "full": rng.normal(size=(3, 6, 4)),
    "disc_logits": 3 * rng.normal(size=(12, 2)),
    "disc_labels": np.array([1] * 6 + [0] * 6),
  }


@pytest.mark.parametrize(
  "weights", [None, LNLN_LOSS_WEIGHTS_SIMS, {"alpha": 0.3, "beta": 0.0, "gamma": 2.0, "sigma": 0.5}]
)
def test_lnln_loss_matches_numpy(weights):
  out = random_outputs(0)
  labels, rate = np.array([0.5, -1.0, 2.0]), np.array([0.0, 0.3, 0.9])
  want, want_terms = np_loss(out, labels, rate, weights or LNLN_LOSS_WEIGHTS)
  jax_out = {k: jnp.asarray(v) for k, v in out.items()}
  total, terms = jax.jit(lnln_loss)(jax_out, jnp.asarray(labels), jnp.asarray(rate), weights)
  np.testing.assert_allclose(total, want, rtol=1e-5)
  np.testing.assert_allclose(
    [terms[k] for k in ("l_cc", "l_adv", "l_rec", "l_sp")], want_terms, rtol=1e-5
  )
  assert LNLN_LOSS_WEIGHTS_SIMS["beta"] == 0.6 and LNLN_LOSS_WEIGHTS["beta"] == 0.8


def test_lnln_loss_zeroes_absent_terms():
  out = {k: jnp.asarray(v) for k, v in random_outputs(1).items()}
  labels, rate = jnp.array([0.5, -1.0, 2.0]), jnp.array([0.0, 0.3, 0.9])
  full_total, full_terms = lnln_loss(out, labels, rate)
  ablated = {k: v for k, v in out.items() if k not in ("w", "disc_logits", "disc_labels", "rec")}
  total, terms = lnln_loss(ablated, labels, rate)
  assert float(terms["l_cc"]) == float(terms["l_adv"]) == float(terms["l_rec"]) == 0.0
  np.testing.assert_allclose(total, full_terms["l_sp"], rtol=1e-6)
  assert float(full_total) > float(total)
  with pytest.raises(ValueError, match="weights keys"):
    lnln_loss(out, labels, rate, {"alpha": 1.0})
