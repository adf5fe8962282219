"""Tests of the GEAR model, its LSTM, the parameter groups and the optimizer
(docs/methods.md §5)."""

from __future__ import annotations

import collections
import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from msa_jax import losses
from msa_jax.models import gear
from msa_jax.models.bert import BertConfig
from msa_jax.models.lstm import TorchLSTM
from msa_jax.train import optimizers

# Tests compile with LLVM's cheap settings: the 2-core test machine spends most time compiling.
_jit = functools.partial(
  jax.jit,
  compiler_options={"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True},
)

MODALITIES = ("text", "audio", "vision")
ROBUST_TOP = (
  "bert_robust",
  "text_robust_proj",
  "audio_robust",
  "audio_robust_proj",
  "vision_robust",
  "vision_robust_proj",
  "fusion",
)
BIAS_TOP = (
  "bert_bias",
  "text_bias_proj",
  "audio_bias",
  "audio_bias_proj",
  "vision_bias",
  "vision_bias_proj",
)


def _sigmoid(x):
  return 1.0 / (1.0 + np.exp(-x))


def _numpy_lstm_final(x, length, w_ih, w_hh, b_ih, b_hh):
  """PyTorch's LSTM equations, one step at a time over the first `length` frames of x (T, D)."""
  hidden = w_hh.shape[1]
  h, c = np.zeros(hidden), np.zeros(hidden)
  for t in range(length):
    gates = w_ih @ x[t] + b_ih + w_hh @ h + b_hh
    i, f, g, o = np.split(gates, 4)
    c = _sigmoid(f) * c + _sigmoid(i) * np.tanh(g)
    h = _sigmoid(o) * np.tanh(c)
  return h


def test_lstm_final_state_matches_numpy_at_each_length():
  hidden, dim = 3, 4
  lengths = np.array([5, 2, 1, 3])
  x = np.random.default_rng(0).normal(size=(4, 5, dim)).astype(np.float32)
  lstm = TorchLSTM(hidden)
  params = _jit(lstm.init)(jax.random.key(0), jnp.asarray(x), jnp.asarray(lengths))["params"]
  assert {k: v.shape for k, v in params.items()} == {
    "weight_ih": (4 * hidden, dim),
    "weight_hh": (4 * hidden, hidden),
    "bias_ih": (4 * hidden,),
    "bias_hh": (4 * hidden,),
  }
  bound = 1 / np.sqrt(hidden)
  assert all(np.all(np.abs(np.asarray(v)) <= bound) for v in params.values())

  garbage = x.copy()
  for b, n in enumerate(lengths):
    garbage[b, n:] = np.nan if b % 2 else 1e4
  run = lambda pr, xs: lstm.apply({"params": pr}, xs, jnp.asarray(lengths))
  got = _jit(run)(params, jnp.asarray(garbage))
  p = {k: np.asarray(v, np.float64) for k, v in params.items()}
  want = np.stack(
    [
      _numpy_lstm_final(x[b], n, p["weight_ih"], p["weight_hh"], p["bias_ih"], p["bias_hh"])
      for b, n in enumerate(lengths)
    ]
  )
  np.testing.assert_allclose(np.asarray(got), want, atol=1e-5)

  grads = _jit(jax.grad(lambda pr, xs: run(pr, xs).sum()))(params, jnp.asarray(garbage))
  assert all(np.all(np.isfinite(np.asarray(g))) for g in jax.tree_util.tree_leaves(grads))


def test_heads_stop_gradients():
  s = 4
  rng = np.random.default_rng(1)
  z_c, z_b = (jnp.asarray(rng.normal(size=(3, s)), jnp.float32) for _ in range(2))
  heads = gear.ModalityHeads(s)
  params = _jit(heads.init)(jax.random.key(0), z_c, z_b)["params"]

  def h_c_sum(pr, zc, zb):
    return heads.apply({"params": pr}, zc, zb)[0].sum()

  def y_b_sum(pr, zc, zb):
    return heads.apply({"params": pr}, zc, zb)[1].sum()

  g_pr, g_zc, g_zb = _jit(jax.grad(h_c_sum, argnums=(0, 1, 2)))(params, z_c, z_b)
  assert np.all(np.asarray(g_zb) == 0) and np.any(np.asarray(g_zc) != 0)
  for name in ("bias_feature", "bias_final"):
    assert all(np.all(np.asarray(g) == 0) for g in jax.tree_util.tree_leaves(g_pr[name]))

  g_pr, g_zc, g_zb = _jit(jax.grad(y_b_sum, argnums=(0, 1, 2)))(params, z_c, z_b)
  assert np.all(np.asarray(g_zc) == 0) and np.any(np.asarray(g_zb) != 0)
  assert all(np.all(np.asarray(g) == 0) for g in jax.tree_util.tree_leaves(g_pr["robust_feature"]))


def _numpy_layer_norm(x, scale, bias):
  mean = x.mean(-1, keepdims=True)
  var = ((x - mean) ** 2).mean(-1, keepdims=True)
  return (x - mean) / np.sqrt(var + 1e-5) * scale + bias


def _numpy_fusion(h, p, heads):
  """PyTorch TransformerEncoder (post-norm) + fusion MLP in numpy, layers stacked on axis 0."""
  enc = p["encoder"]
  x = h.astype(np.float64)
  batch, length, d = x.shape
  hd = d // heads
  for n in range(enc["in_proj"]["kernel"].shape[0]):
    lp = jax.tree_util.tree_map(lambda a, n=n: np.asarray(a, np.float64)[n], enc)
    qkv = x @ lp["in_proj"]["kernel"] + lp["in_proj"]["bias"]
    q, k, v = (qkv[..., i * d : (i + 1) * d].reshape(batch, length, heads, hd) for i in range(3))
    scores = np.einsum("bqhd,bkhd->bhqk", q, k) / np.sqrt(hd)
    probs = np.exp(scores - scores.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    att = np.einsum("bhqk,bkhd->bqhd", probs, v).reshape(batch, length, d)
    att = att @ lp["out_proj"]["kernel"] + lp["out_proj"]["bias"]
    x = _numpy_layer_norm(x + att, lp["norm1"]["scale"], lp["norm1"]["bias"])
    ff = np.maximum(x @ lp["linear1"]["kernel"] + lp["linear1"]["bias"], 0)
    ff = ff @ lp["linear2"]["kernel"] + lp["linear2"]["bias"]
    x = _numpy_layer_norm(x + ff, lp["norm2"]["scale"], lp["norm2"]["bias"])
  x = x.reshape(batch, -1)
  x = np.maximum(x @ np.asarray(p["mlp_hidden"]["kernel"]) + np.asarray(p["mlp_hidden"]["bias"]), 0)
  return (x @ np.asarray(p["mlp_out"]["kernel"]) + np.asarray(p["mlp_out"]["bias"]))[:, 0]


def test_fusion_init_and_forward_match_pytorch_encoder():
  d, heads, ff = 8, 4, 16
  fusion = gear.FusionTransformer(num_layers=2, num_heads=heads, ff_dim=ff, post_dim=5, dropout=0.1)
  h = jnp.asarray(np.random.default_rng(2).normal(size=(3, 3, d)), jnp.float32)
  params = _jit(lambda k, x: fusion.init(k, x, True))(jax.random.key(0), h)["params"]
  enc = params["encoder"]
  for path, leaf in jax.tree_util.tree_leaves_with_path(enc):
    assert leaf.shape[0] == 2, path
    np.testing.assert_array_equal(leaf[0], leaf[1], err_msg=str(path))
  assert np.all(np.asarray(enc["in_proj"]["bias"]) == 0)
  assert np.all(np.asarray(enc["out_proj"]["bias"]) == 0)
  assert np.all(np.abs(np.asarray(enc["in_proj"]["kernel"])) <= np.sqrt(6 / (d + 3 * d)))
  assert np.all(np.abs(np.asarray(enc["linear2"]["kernel"])) <= 1 / np.sqrt(ff))
  assert np.all(np.asarray(enc["norm1"]["scale"]) == 1)

  # Distinct layers and non-zero biases, so the numpy check sees every parameter in its place.
  rng = np.random.default_rng(5)
  params = jax.tree_util.tree_map(
    lambda l: np.asarray(l) + 0.1 * rng.normal(size=l.shape).astype(np.float32), params
  )
  got = _jit(lambda p, x: fusion.apply({"params": p}, x, True))(params, h)
  np.testing.assert_allclose(
    np.asarray(got), _numpy_fusion(np.asarray(h), params, heads), atol=1e-5
  )


# ---- the whole model: one init and one jitted train step serve every test below ---------------

B = 6


def _batch():
  rng = np.random.default_rng(3)
  length = 7
  ids = rng.integers(1000, 2000, size=(B, length))
  mask = np.ones((B, length))
  mask[1, 5:] = 0
  text = np.stack([ids * mask, mask, np.zeros_like(mask)], axis=1).astype(np.int32)
  return {
    "text_bert": jnp.asarray(text),
    "audio": jnp.asarray(rng.normal(size=(B, 8, 5)), jnp.float32),
    "vision": jnp.asarray(rng.normal(size=(B, 6, 20)), jnp.float32),
    "audio_lengths": jnp.asarray([8, 3, 1, 5, 8, 2], jnp.int32),
    "vision_lengths": jnp.asarray([6, 1, 4, 2, 6, 3], jnp.int32),
    "labels": jnp.asarray(rng.uniform(-3, 3, size=B), jnp.float32),
  }


@pytest.fixture(scope="module")
def setup():
  text = dataclasses.replace(BertConfig.tiny(), num_hidden_layers=1, vocab_size=2048)
  cfg = dataclasses.replace(gear.GEARConfig.tiny(), text=text)
  model = gear.GEAR(cfg)
  batch = _batch()
  params = _jit(model.init)(jax.random.key(0), batch)["params"]
  tx = optimizers.gear_optimizer(optimizers.GEAROptimizerConfig.mosei())

  def loss_parts(params, batch, key, swap_active):
    out, state = model.apply(
      {"params": params},
      batch,
      deterministic=True,
      swap_key=key,
      capture_intermediates=True,
      mutable=["intermediates"],
    )
    total, terms = losses.gear_loss(
      out, batch["labels"], gmae_kind="tanh", q=0.7, ipw_kind="min", swap_active=swap_active
    )
    bias_total = total - terms["fusion_weighted"]
    return jnp.stack([bias_total, terms["fusion_weighted"]]), (total, terms, out, state)

  @_jit
  def step(params, opt_state, batch, key, swap_active):
    """Gradients of [bias losses, weighted fusion loss] (rows of `jac`) and one optimizer step."""
    jac, (total, terms, out, state) = jax.jacrev(loss_parts, has_aux=True)(
      params, batch, key, swap_active
    )
    grads = jax.tree_util.tree_map(lambda g: g[0] + g[1], jac)
    updates, opt_state = tx.update(grads, opt_state, params)
    return dict(
      jac=jac,
      total=total,
      terms=terms,
      out=out,
      inter=state["intermediates"],
      params=optax.apply_updates(params, updates),
      opt_state=opt_state,
      updates=updates,
    )

  opt_state = _jit(tx.init)(params)
  key = jax.random.key(7)
  first = step(params, opt_state, batch, key, True)
  return dict(
    cfg=cfg,
    model=model,
    batch=batch,
    params=params,
    step=step,
    key=key,
    opt_state=opt_state,
    first=first,
  )


def test_outputs_and_swap_permutations(setup):
  out, inter = setup["first"]["out"], setup["first"]["inter"]
  assert out["pred"].shape == (B,)
  for name in ("bias_preds", "bias_preds_swap", "perms"):
    assert sorted(out[name]) == sorted(MODALITIES)
  perms = {m: np.asarray(p) for m, p in out["perms"].items()}
  for m, p in perms.items():
    np.testing.assert_array_equal(np.sort(p), np.arange(B))
    np.testing.assert_array_equal(p, np.asarray(gear.swap_permutations(setup["key"], B)[m]))
  assert len({tuple(p) for p in perms.values()}) == 3

  # The swapped bias head sees z_c of sample i with z_b of sample π(i).
  heads = gear.ModalityHeads(setup["cfg"].swap_dim)
  apply_heads = _jit(heads.apply)
  for m in MODALITIES:
    z_c = jax.nn.relu(inter[f"{m}_robust_proj"]["__call__"][0])
    z_b = jax.nn.relu(inter[f"{m}_bias_proj"]["__call__"][0])
    hp = {"params": setup["params"][f"{m}_heads"]}
    _, y_b = apply_heads(hp, z_c, z_b)
    _, y_b_swap = apply_heads(hp, z_c, z_b[perms[m]])
    np.testing.assert_allclose(out["bias_preds"][m], y_b, atol=1e-5)
    np.testing.assert_allclose(out["bias_preds_swap"][m], y_b_swap, atol=1e-5)
    assert not np.allclose(y_b, y_b_swap)

  no_swap = jax.eval_shape(
    lambda p, b: setup["model"].apply({"params": p}, b), setup["params"], setup["batch"]
  )
  assert sorted(no_swap) == ["bias_preds", "pred"]


def test_robust_and_bias_extractors_have_separate_weights(setup):
  p = setup["params"]
  for top in ("bert_robust", "audio_robust", "vision_robust", "text_robust_proj"):
    other = top.replace("robust", "bias")
    a, b = jax.tree_util.tree_leaves(p[top]), jax.tree_util.tree_leaves(p[other])
    assert len(a) == len(b) and all(x.shape == y.shape for x, y in zip(a, b))
    assert any(not np.array_equal(x, y) for x, y in zip(a, b))


def _zero(tree):
  return all(np.all(np.asarray(g) == 0) for g in jax.tree_util.tree_leaves(tree))


def test_loss_gradients_respect_stop_gradients(setup):
  jac, terms = setup["first"]["jac"], setup["first"]["terms"]
  bias_grad = jax.tree_util.tree_map(lambda g: g[0], jac)
  fusion_grad = jax.tree_util.tree_map(lambda g: g[1], jac)
  for m in MODALITIES:
    assert float(terms[f"bias_swap_{m}"]) > 0
  # Bias losses (plain and swapped) train only the bias extractors and the bias heads.
  for top in ROBUST_TOP:
    assert _zero(bias_grad[top]), top
  for m in MODALITIES:
    assert _zero(bias_grad[f"{m}_heads"]["robust_feature"]), m
    assert not _zero(bias_grad[f"{m}_heads"]["bias_final"]), m
  for top in BIAS_TOP:
    assert not _zero(bias_grad[top]), top
  # The IPW-weighted fusion loss (plain and swapped) trains only the robust side.
  for top in BIAS_TOP:
    assert _zero(fusion_grad[top]), top
  for m in MODALITIES:
    assert _zero(fusion_grad[f"{m}_heads"]["bias_feature"]), m
    assert _zero(fusion_grad[f"{m}_heads"]["bias_final"]), m
    assert not _zero(fusion_grad[f"{m}_heads"]["robust_feature"]), m
  for top in ROBUST_TOP:
    assert not _zero(fusion_grad[top]), top


def test_traced_swap_flag_selects_swap_terms(setup):
  s = setup
  out = s["first"]["out"]
  labels = s["batch"]["labels"]
  plain = {k: out[k] for k in ("pred", "bias_preds")}
  want_off, _ = losses.gear_loss(plain, labels, gmae_kind="tanh", q=0.7, ipw_kind="min")
  want_on, _ = losses.gear_loss(
    out, labels, gmae_kind="tanh", q=0.7, ipw_kind="min", swap_active=True
  )
  off = s["step"](s["params"], s["opt_state"], s["batch"], s["key"], False)
  np.testing.assert_allclose(off["total"], want_off, rtol=1e-5)
  np.testing.assert_allclose(s["first"]["total"], want_on, rtol=1e-5)
  assert float(want_on) > float(want_off)
  assert all(float(off["terms"][f"bias_swap_{m}"]) == 0 for m in MODALITIES)


def test_param_group_labels(setup):
  params = setup["params"]
  labels = gear.param_group_labels(params)
  assert jax.tree_util.tree_structure(labels) == jax.tree_util.tree_structure(params)
  counts = collections.Counter(jax.tree_util.tree_leaves(labels))
  assert set(counts) == set(gear.PARAM_GROUPS)
  expected = {
    ("bert_robust", "encoder", "layer_0", "attention", "self", "query", "kernel"): "bert",
    ("bert_bias", "embeddings", "word_embeddings", "embedding"): "bert",
    ("bert_robust", "encoder", "layer_0", "output", "dense", "bias"): "bert_no_decay",
    ("bert_bias", "embeddings", "LayerNorm", "scale"): "bert_no_decay",
    ("audio_robust", "lstm", "weight_ih"): "audio",
    ("audio_bias", "dense", "kernel"): "audio",
    ("vision_bias", "lstm", "bias_hh"): "vision",
    ("vision_robust", "dense", "bias"): "vision",
    ("text_robust_proj", "kernel"): "extractor_other",
    ("audio_bias_proj", "bias"): "extractor_other",
    ("vision_heads", "bias_final", "bias"): "extractor_other",
    ("text_heads", "robust_feature", "kernel"): "extractor_other",
    ("fusion", "encoder", "in_proj", "kernel"): "fusion",
    ("fusion", "mlp_out", "bias"): "fusion",
  }
  for path, group in expected.items():
    node = labels
    for k in path:
      node = node[k]
    assert node == group, path
  wrapped = gear.param_group_labels({"params": params})
  assert wrapped["params"]["fusion"]["mlp_out"]["bias"] == "fusion"
  with pytest.raises(ValueError, match="unknown top-level parameter 'extra'"):
    gear.param_group_labels({"extra": {"w": jnp.zeros(2)}})


def test_train_steps_decrease_loss(setup):
  s = setup
  result = s["first"]
  assert _zero(result["updates"])
  for _ in range(3):
    result = s["step"](result["params"], result["opt_state"], s["batch"], s["key"], True)
  # Two micro-batches per update: steps 1 and 3 accumulate, steps 2 and 4 update.
  assert not _zero(result["params"]["fusion"])
  after = s["step"](result["params"], result["opt_state"], s["batch"], s["key"], True)
  assert float(after["total"]) < float(s["first"]["total"])


# ---- the optimizer on a small tree with GEAR's top-level names ----------------------------------


def _fake_params():
  full = lambda shape: np.full(shape, 0.5, np.float32)
  return {
    "bert_robust": {"dense": {"kernel": full((2, 2)), "bias": full((2,))}},
    "audio_robust": {"lstm": {"weight_ih": full((4, 1))}},
    "vision_bias": {"dense": {"kernel": full((2,))}},
    "text_heads": {"bias_final": {"kernel": full((3,))}},
    "fusion": {"mlp_out": {"kernel": full((2,))}},
  }


def test_optimizer_group_learning_rates():
  cfg = optimizers.GEAROptimizerConfig(
    lr_bert=1e-1,
    lr_audio=1e-2,
    lr_vision=1e-3,
    lr_other=1e-4,
    lr_fusion=1e-5,
    wd_bert=0.0,
    wd_other=0.0,
    accumulate_steps=1,
  )
  params = _fake_params()
  tx = optimizers.gear_optimizer(cfg)
  grads = jax.tree_util.tree_map(np.ones_like, params)
  updates, _ = _jit(tx.update)(grads, _jit(tx.init)(params), params)
  lrs = {
    "bert_robust": 1e-1,
    "audio_robust": 1e-2,
    "vision_bias": 1e-3,
    "text_heads": 1e-4,
    "fusion": 1e-5,
  }
  for top, lr in lrs.items():
    for u in jax.tree_util.tree_leaves(updates[top]):
      np.testing.assert_allclose(u, -lr, rtol=1e-4)


def test_multisteps_sums_two_micro_batches_and_adds_l2_once():
  cfg = optimizers.GEAROptimizerConfig(wd_bert=0.3, wd_other=0.2, accumulate_steps=2)
  single = optimizers.gear_optimizer(
    optimizers.GEAROptimizerConfig(wd_bert=0.3, wd_other=0.2, accumulate_steps=1)
  )
  params = _fake_params()
  rng = np.random.default_rng(0)
  g1, g2 = (
    jax.tree_util.tree_map(lambda l: rng.normal(size=l.shape).astype(np.float32), params)
    for _ in range(2)
  )

  tx = optimizers.gear_optimizer(cfg)
  update, single_update = _jit(tx.update), _jit(single.update)
  single_state = _jit(single.init)(params)
  state = _jit(tx.init)(params)
  u1, state = update(g1, state, params)
  assert _zero(u1)
  u2, _ = update(g2, state, params)
  summed = jax.tree_util.tree_map(np.add, g1, g2)
  want, _ = single_update(summed, single_state, params)
  for a, b in zip(jax.tree_util.tree_leaves(u2), jax.tree_util.tree_leaves(want)):
    np.testing.assert_allclose(a, b, rtol=1e-6)
  # The L2 term matters (bert kernel decays, its bias does not): a zero gradient still moves
  # the decayed bert kernel by -lr·sign(p), and leaves the no-decay bias alone.
  zeros = jax.tree_util.tree_map(np.zeros_like, params)
  z, _ = single_update(zeros, single_state, params)
  np.testing.assert_allclose(z["bert_robust"]["dense"]["kernel"], -5e-5, rtol=1e-4)
  assert _zero(z["bert_robust"]["dense"]["bias"])


@pytest.mark.parametrize("k", [2, 3])
def test_summed_micro_batches_equals_optax_multisteps_bit_for_bit(k):
  """GEAR's accumulation computes what optax.MultiSteps (sum of k micro-batch gradients) computes,
  update for update and state for state, in the same state layout (checkpoints interchange)."""
  inner = optimizers.gear_optimizer(
    optimizers.GEAROptimizerConfig(wd_bert=0.3, wd_other=0.2, accumulate_steps=1)
  )
  ours = optimizers.summed_micro_batches(inner, k)
  theirs = optax.MultiSteps(inner, every_k_schedule=k, use_grad_mean=False)
  params = jax.tree_util.tree_map(lambda l: l * np.float32(1.5), _fake_params())
  rng = np.random.default_rng(k)
  state_ours, state_theirs = _jit(ours.init)(params), _jit(theirs.init)(params)
  assert jax.tree_util.tree_structure(state_ours) == jax.tree_util.tree_structure(state_theirs)
  update_ours, update_theirs = _jit(ours.update), _jit(theirs.update)
  for step in range(3 * k + 1):
    grads = jax.tree_util.tree_map(
      lambda l: rng.normal(scale=10.0 ** rng.integers(-3, 3), size=l.shape).astype(np.float32),
      params,
    )
    u_ours, state_ours = update_ours(grads, state_ours, params)
    u_theirs, state_theirs = update_theirs(grads, state_theirs, params)
    assert _zero(u_ours) == ((step + 1) % k != 0)
    for a, b in zip(jax.tree_util.tree_leaves(u_ours), jax.tree_util.tree_leaves(u_theirs)):
      np.testing.assert_array_equal(np.asarray(a) + 0.0, np.asarray(b) + 0.0)  # -0.0 == 0.0
    for a, b in zip(jax.tree_util.tree_leaves(state_ours), jax.tree_util.tree_leaves(state_theirs)):
      assert a.dtype == b.dtype
      np.testing.assert_array_equal(a, b)
    params = optax.apply_updates(params, u_ours)
  assert int(state_ours.gradient_step) == 3 and int(state_ours.mini_step) == 1
  with pytest.raises(ValueError, match="k=1, expected >= 2"):
    optimizers.summed_micro_batches(inner, 1)


def test_config_and_batch_errors():
  with pytest.raises(ValueError, match="swap_dim=30 is not divisible by fusion_heads=4"):
    gear.GEARConfig.tiny().__class__(
      text=gear.BertConfig.tiny(), audio_in=5, vision_in=20, swap_dim=30
    )
  cfg = gear.GEARConfig.tiny()
  batch = _batch()
  batch["audio"] = batch["audio"][..., :4]
  with pytest.raises(ValueError, match=r"batch\['audio'\] has shape \(6, 8, 4\), expected"):
    gear.GEAR(cfg).init(jax.random.key(0), batch)
  del batch["vision_lengths"]
  with pytest.raises(ValueError, match="missing keys \\['vision_lengths'\\]"):
    gear.GEAR(cfg).init(jax.random.key(0), batch)
