"""Performance options give the plain layers' results.

Blocked attention (`attention_chunk`), the last-layer `keep` of TokenTransformer, BERT's `remat`,
BERT's [CLS]-only last layer (`cls_only`), and the mixed-precision `dtype` of LNLN / BERT / GEAR:
values and gradients against the plain modules.
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from msa_jax.models import bert
from msa_jax.models.gear import GEAR, GEARConfig
from msa_jax.models.layers import (
  CHUNK_MIN_KEYS,
  Attention,
  TokenTransformer,
  attention,
  blocked_attention,
  compute_dtype,
  multi_head_attend,
)
from msa_jax.models.lnln import LNLN, LNLNConfig

TOL = dict(rtol=2e-5, atol=2e-5)


def _close(a, b, **tol):
  for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
    np.testing.assert_allclose(np.asarray(x, np.float32), np.asarray(y, np.float32), **(tol or TOL))


def _inputs(key, b, nq, nk, dim, inner, dim_out):
  ks = jax.random.split(key, 8)
  x = (
    jax.random.normal(ks[0], (b, nq, dim)),
    jax.random.normal(ks[1], (b, nk, dim)),
    jax.random.normal(ks[2], (b, nk, dim)),
  )
  w = (
    0.3 * jax.random.normal(ks[3], (dim, inner)),
    0.3 * jax.random.normal(ks[4], (dim, inner)),
    0.3 * jax.random.normal(ks[5], (dim, inner)),
    0.3 * jax.random.normal(ks[6], (inner, dim_out)),
    jax.random.normal(ks[7], (dim_out,)),
  )
  return x, w


def _numpy_attention(q, k, v, heads):
  """softmax(q kᵀ / sqrt(Dh)) v per head in float64 numpy, the textbook form."""
  b, nq, inner = q.shape
  dh = inner // heads
  split = lambda t: np.asarray(t, np.float64).reshape(b, -1, heads, dh).transpose(0, 2, 1, 3)
  q, k, v = split(q), split(k), split(v)
  s = q @ k.transpose(0, 1, 3, 2) / np.sqrt(dh)
  p = np.exp(s - s.max(-1, keepdims=True))
  p /= p.sum(-1, keepdims=True)
  return (p @ v).transpose(0, 2, 1, 3).reshape(b, nq, inner)


@pytest.mark.parametrize("dh", [4, 6])  # scale 1/2 (exact) and 1/sqrt(6)
def test_multi_head_attend_is_softmax_attention(dh):
  ks = jax.random.split(jax.random.key(7), 4)
  heads = 3
  q = 4.0 * jax.random.normal(ks[0], (2, 5, heads * dh))  # large scores: the max shift matters
  k, v = (jax.random.normal(kk, (2, 9, heads * dh)) for kk in ks[1:3])
  np.testing.assert_allclose(
    multi_head_attend(q, k, v, heads), _numpy_attention(q, k, v, heads), rtol=1e-5, atol=1e-5
  )

  # Gradients: against the textbook softmax form differentiated by JAX.
  def softmax_form(q, k, v):
    split = lambda t: t.reshape(2, -1, heads, dh).transpose(0, 2, 1, 3)
    p = jax.nn.softmax(split(q) @ split(k).transpose(0, 1, 3, 2) / np.sqrt(dh), axis=-1)
    return (p @ split(v)).transpose(0, 2, 1, 3).reshape(2, -1, heads * dh)

  ct = jax.random.normal(ks[3], (2, 5, heads * dh))
  grad = lambda f: jax.grad(lambda *a: jnp.sum(f(*a) * ct), argnums=(0, 1, 2))(q, k, v)
  _close(
    grad(lambda q, k, v: multi_head_attend(q, k, v, heads)),
    grad(softmax_form),
    rtol=1e-5,
    atol=1e-5,
  )


@pytest.mark.parametrize("chunk", [1, 2, 4, 9])
def test_blocked_attention_matches_plain_values_and_gradients(chunk):
  x, w = _inputs(jax.random.key(0), 5, 11, 13, 6, 8, 7)  # 5 samples: padded for chunk 2, 4, 9
  np.testing.assert_allclose(blocked_attention(*x, w, 2, chunk), attention(*x, w, 2), **TOL)
  ct = jax.random.normal(jax.random.key(1), (5, 11, 7))
  loss = lambda f: lambda x, w: jnp.sum(f(x, w) * ct)
  plain = jax.grad(loss(lambda x, w: attention(*x, w, 2)), argnums=(0, 1))(x, w)
  blocked = jax.grad(loss(lambda x, w: blocked_attention(*x, w, 2, chunk)), argnums=(0, 1))(x, w)
  _close(blocked, plain)


def test_attention_module_blocks_only_long_key_sequences_and_keeps_its_parameters():
  dim, n = 8, CHUNK_MIN_KEYS
  x = jax.random.normal(jax.random.key(2), (3, n, dim))
  plain = Attention(dim, heads=2, dim_head=4)
  blocked = Attention(dim, heads=2, dim_head=4, chunk=2)
  params = plain.init(jax.random.key(3), x, x, x)
  assert jax.tree_util.tree_map(
    jnp.shape, blocked.init(jax.random.key(3), x, x, x)
  ) == jax.tree_util.tree_map(jnp.shape, params)
  _close(blocked.init(jax.random.key(3), x, x, x), params, rtol=0, atol=0)  # same initial values
  np.testing.assert_allclose(blocked.apply(params, x, x, x), plain.apply(params, x, x, x), **TOL)
  loops = lambda jaxpr: "scan[" in str(jaxpr) or "while[" in str(jaxpr)
  assert loops(jax.make_jaxpr(lambda p: blocked.apply(p, x, x, x))(params))
  short = x[:, : n - 1]
  assert not loops(jax.make_jaxpr(lambda p: blocked.apply(p, short, short, short))(params))


def _token_transformer(**kw):
  return TokenTransformer(
    num_frames=140, token_len=8, dim=16, depth=2, heads=2, dim_head=8, mlp_dim=32, **kw
  )


@pytest.mark.parametrize(
  "options", [dict(keep=8), dict(attention_chunk=2), dict(attention_chunk=1, keep=8)]
)
def test_token_transformer_options_match_plain(options):
  x = jax.random.normal(jax.random.key(4), (3, 130, 16))  # 138 positions >= CHUNK_MIN_KEYS
  plain = _token_transformer()
  params = plain.init(jax.random.key(5), x)
  fast = _token_transformer(**options)
  keep = options.get("keep")
  ref = lambda p: plain.apply(p, x)[:, :keep] if keep else plain.apply(p, x)
  np.testing.assert_allclose(fast.apply(params, x), ref(params), **TOL)
  loss = lambda f: lambda p: jnp.sum(jnp.sin(f(p)))
  _close(jax.grad(loss(lambda p: fast.apply(p, x)))(params), jax.grad(loss(ref))(params))


def _lnln_batch(key, b=2, frames=(20, 130)):
  ka, kv = jax.random.split(key)
  ids = jnp.concatenate(
    [
      jnp.full((b, 1), 101),
      jnp.full((b, 8), 2000),
      jnp.full((b, 1), 102),
      jnp.zeros((b, 2), jnp.int32),
    ],
    axis=1,
  ).astype(jnp.int32)
  mask = (ids > 0).astype(jnp.int32)
  return {
    "text_bert": jnp.stack([ids, mask, jnp.zeros_like(ids)], axis=1),
    "audio": jax.random.normal(ka, (b, frames[0], 5)),
    "vision": jax.random.normal(kv, (b, frames[1], 20)),
  }


def _lnln_config(**kw):
  return LNLNConfig(
    text_frames=12,
    audio_frames=20,
    vision_frames=130,
    audio_dim=5,
    vision_dim=20,
    bert=bert.BertConfig.tiny(),
    dim=16,
    heads=2,
    dim_head=8,
    mlp_dim=16,
    depth=1,
    num_hyper_layers=2,
    fusion_depth=1,
    **kw,
  )


def test_lnln_blocked_attention_and_bfloat16():
  """Blocked attention gives the plain model's outputs and gradients; bfloat16 keeps float32
  parameters and outputs and stays close to float32."""
  batch = _lnln_batch(jax.random.key(6))
  plain = LNLN(_lnln_config(attention_chunk=0))
  params = plain.init({"params": jax.random.key(7)}, batch, batch)["params"]

  def loss(model):
    def f(p):
      out = model.apply({"params": p}, batch, batch, deterministic=True)
      total = (
        jnp.sum(out["pred"] ** 2) + jnp.sum(out["rec"] ** 2) + jnp.sum(out["disc_logits"] ** 2)
      )
      return total, out

    return jax.jit(jax.value_and_grad(f, has_aux=True))(params)

  (want, ref), want_grads = loss(plain)
  (got, _), got_grads = loss(LNLN(_lnln_config(attention_chunk=1)))
  np.testing.assert_allclose(got, want, rtol=1e-5)
  _close(got_grads, want_grads, rtol=1e-4, atol=1e-5)

  (mixed_loss, out), mixed_grads = loss(LNLN(_lnln_config(dtype="bfloat16", attention_chunk=1)))
  for name in ("pred", "w", "rec", "full", "disc_logits"):
    assert out[name].dtype == jnp.float32, name
    scale = float(jnp.max(jnp.abs(ref[name]))) + 1e-3
    np.testing.assert_allclose(out[name], ref[name], atol=0.05 * scale, rtol=0.05, err_msg=name)
  assert np.isfinite(float(mixed_loss))
  assert all(g.dtype == jnp.float32 for g in jax.tree_util.tree_leaves(mixed_grads))


def test_compute_dtype_names():
  assert compute_dtype("float32") is None and compute_dtype(None) is None
  assert compute_dtype("bfloat16") == jnp.bfloat16
  with pytest.raises(ValueError):
    compute_dtype("int8")
  with pytest.raises(ValueError):
    _lnln_config(dtype="float64")
  with pytest.raises(ValueError):
    _lnln_config(attention_chunk=-1)
  with pytest.raises(ValueError):
    dataclasses.replace(GEARConfig.tiny(), dtype="half")


def test_bert_bfloat16_is_close_to_float32():
  cfg = bert.BertConfig.tiny()
  params = bert.init_params(cfg, jax.random.key(8))
  text = _lnln_batch(jax.random.key(9))["text_bert"]
  want = bert.BertModel(cfg).apply({"params": params}, text, deterministic=True)
  got = bert.BertModel(cfg, dtype=jnp.bfloat16).apply({"params": params}, text, deterministic=True)
  assert got.dtype == jnp.float32
  np.testing.assert_allclose(got, want, atol=0.1, rtol=0.05)


def test_bert_remat_matches_plain():
  cfg = bert.BertConfig.tiny()
  params = bert.init_params(cfg, jax.random.key(12))
  text = _lnln_batch(jax.random.key(13))["text_bert"]
  plain, remat = bert.BertModel(cfg), bert.BertModel(cfg, remat=True)
  assert jax.tree_util.tree_structure(
    remat.init(jax.random.key(12), text, deterministic=True)
  ) == jax.tree_util.tree_structure({"params": params})

  def loss(model, deterministic):
    rngs = {} if deterministic else {"rngs": {"dropout": jax.random.key(0)}}
    return jax.jit(
      jax.value_and_grad(
        lambda p: jnp.sum(
          jnp.sin(model.apply({"params": p}, text, deterministic=deterministic, **rngs))
        )
      )
    )(params)

  _close(loss(remat, True), loss(plain, True), rtol=1e-5, atol=1e-5)
  value, grads = loss(remat, False)  # dropout: other masks, same shapes, finite
  assert np.isfinite(float(value))
  assert jax.tree_util.tree_map(jnp.shape, grads) == jax.tree_util.tree_map(jnp.shape, params)


@pytest.mark.parametrize(
  "remat,impl", [(False, "hash"), (True, "hash"), (False, "threefry"), (True, "threefry")]
)
def test_bert_cls_only_is_the_full_encoders_cls_row(remat, impl):
  """`cls_only` gives the [CLS] row of the full encoder and the same gradients, also with dropout
  on: the masks of the rows it computes are the full layer's."""
  cfg = dataclasses.replace(bert.BertConfig.tiny(), num_hidden_layers=3, dropout_impl=impl)
  params = bert.init_params(cfg, jax.random.key(12))
  text = _lnln_batch(jax.random.key(13))["text_bert"]
  full, cls = bert.BertModel(cfg, remat=remat), bert.BertModel(cfg, remat=remat, cls_only=True)
  assert jax.tree_util.tree_structure(
    cls.init(jax.random.key(12), text, deterministic=True)
  ) == jax.tree_util.tree_structure({"params": params})

  def run(model, rows, deterministic):
    rngs = {} if deterministic else {"rngs": {"dropout": jax.random.key(3)}}
    head = jnp.linspace(-1.0, 1.0, cfg.hidden_size)

    def f(p):
      hidden = model.apply({"params": p}, text, deterministic=deterministic, **rngs)[:, rows]
      return jnp.sum(jnp.sin(hidden @ head)), hidden

    return jax.jit(jax.value_and_grad(f, has_aux=True))(params)

  for deterministic in (True, False):
    (value, hidden), grads = run(cls, 0, deterministic)
    (want_value, want_hidden), want_grads = run(full, 0, deterministic)
    assert hidden.shape == want_hidden.shape == (text.shape[0], cfg.hidden_size)
    _close((value, hidden, grads), (want_value, want_hidden, want_grads), rtol=1e-5, atol=1e-6)
  # with dropout, the row differs from a deterministic pass: the masks were applied, not skipped
  assert np.abs(np.asarray(run(cls, 0, False)[0][1] - run(cls, 0, True)[0][1])).max() > 1e-3


def test_gear_bfloat16_runs_in_mixed_precision():
  batch = _lnln_batch(jax.random.key(10), b=4, frames=(6, 7))
  batch.update(audio_lengths=jnp.array([6, 3, 1, 5]), vision_lengths=jnp.array([7, 2, 4, 1]))
  base = GEARConfig.tiny()
  params = GEAR(base).init({"params": jax.random.key(11)}, batch)["params"]
  want = GEAR(base).apply({"params": params}, batch)["pred"]
  got = GEAR(dataclasses.replace(base, dtype="bfloat16")).apply({"params": params}, batch)["pred"]
  assert got.dtype == jnp.float32
  np.testing.assert_allclose(
    got, want, atol=0.05 * (float(jnp.max(jnp.abs(want))) + 1e-3), rtol=0.05
  )
