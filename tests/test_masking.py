"""Missing-data masking (docs/methods.md §2): statistics, invariants, determinism, jit and vmap."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from msa_jax.data import masking


def _batch(b=64, L=40, Ta=60, Tv=50, seed=0):
  rng = np.random.default_rng(seed)
  text_len = rng.integers(3, L + 1, b)
  ids = rng.integers(1000, 30000, (b, L))
  attn = (np.arange(L)[None] < text_len[:, None]).astype(np.int32)
  ids = np.where(attn > 0, ids, 0)
  ids[:, 0] = 101
  ids[np.arange(b), text_len - 1] = 102
  text_bert = np.stack([ids, attn, np.zeros_like(ids)], 1).astype(np.int32)
  a_len, v_len = rng.integers(1, Ta + 1, b), rng.integers(1, Tv + 1, b)
  audio = rng.normal(size=(b, Ta, 5)).astype(np.float32) + 3.0  # nonzero everywhere
  vision = rng.normal(size=(b, Tv, 7)).astype(np.float32) + 3.0
  audio[np.arange(Ta)[None] >= a_len[:, None]] = 0.0
  vision[np.arange(Tv)[None] >= v_len[:, None]] = 7.0  # non-zero padding: must stay untouched
  return {
    "text_bert": jnp.asarray(text_bert),
    "audio": jnp.asarray(audio),
    "vision": jnp.asarray(vision),
    "audio_lengths": jnp.asarray(a_len, jnp.int32),
    "vision_lengths": jnp.asarray(v_len, jnp.int32),
    "labels": jnp.zeros(b),
    "index": jnp.arange(b, dtype=jnp.int32),
  }


def _kept_fractions(batch, out):
  tb, tb2 = np.asarray(batch["text_bert"]), np.asarray(out["text_bert"])
  attn = tb[:, 1] > 0
  pos = np.arange(attn.shape[1])[None]
  inner = attn & (pos > 0) & (pos < attn.sum(1, keepdims=True) - 1)
  text = (tb2[:, 0][inner] != 100).mean(), inner.sum()
  res = {"text": text}
  for m in ("audio", "vision"):
    valid = np.arange(batch[m].shape[1])[None] < np.asarray(batch[f"{m}_lengths"])[:, None]
    kept = np.any(np.asarray(out[m]) != 0, axis=-1)[valid]
    res[m] = kept.mean(), valid.sum()
  return res


@pytest.mark.parametrize("rate", [0.0, 0.3, 0.7, 0.9])
def test_eval_kept_fraction_within_binomial_bound(rate):
  batch = _batch(b=128)
  out, r_text = masking.mask_eval(batch, jax.random.key(3), rate, batch["index"])
  np.testing.assert_allclose(r_text, rate)
  for m, (frac, n) in _kept_fractions(batch, out).items():
    bound = 5 * np.sqrt(rate * (1 - rate) / n) + 1e-9  # 5 sigma
    assert abs(frac - (1 - rate)) <= bound, (m, frac, n)


def test_invariants_cls_sep_padding_unk_and_zero_frames():
  batch = _batch()
  out, _ = masking.mask_eval(batch, jax.random.key(0), 0.95, batch["index"])
  tb, tb2 = np.asarray(batch["text_bert"]), np.asarray(out["text_bert"])
  n_valid = tb[:, 1].sum(1)
  rows = np.arange(tb.shape[0])
  assert np.all(tb2[:, 0, 0] == 101) and np.all(tb2[rows, 0, n_valid - 1] == 102)
  np.testing.assert_array_equal(tb2[:, 1:], tb[:, 1:])  # attention mask and segments untouched
  pad = tb[:, 1] == 0
  np.testing.assert_array_equal(tb2[:, 0][pad], tb[:, 0][pad])  # padding untouched
  changed = tb2[:, 0] != tb[:, 0]
  assert changed.any() and np.all(tb2[:, 0][changed] == masking.UNK_ID)
  for m in ("audio", "vision"):
    x, y = np.asarray(batch[m]), np.asarray(out[m])
    valid = np.arange(x.shape[1])[None] < np.asarray(batch[f"{m}_lengths"])[:, None]
    np.testing.assert_array_equal(y[~valid], x[~valid])  # padding untouched (vision pads with 7s)
    dropped = valid & np.any(y != x, axis=-1)
    assert dropped.any() and np.all(y[dropped] == 0.0)  # a dropped frame is all zeros
    kept = valid & ~dropped
    np.testing.assert_array_equal(y[kept], x[kept])


def test_same_key_same_mask_different_key_different_mask():
  batch = _batch()
  a, _ = masking.mask_eval(batch, jax.random.key(1), 0.5, batch["index"])
  b, _ = masking.mask_eval(batch, jax.random.key(1), 0.5, batch["index"])
  c, _ = masking.mask_eval(batch, jax.random.key(2), 0.5, batch["index"])
  for k in ("text_bert", "audio", "vision"):
    np.testing.assert_array_equal(a[k], b[k])
  assert not np.array_equal(a["audio"], c["audio"])


def test_eval_masks_are_nested_across_rates_and_batch_independent():
  batch = _batch()
  key = jax.random.key(4)
  lo, _ = masking.mask_eval(batch, key, 0.3, batch["index"])
  hi, _ = masking.mask_eval(batch, key, 0.5, batch["index"])
  missing_lo = np.asarray(lo["text_bert"][:, 0]) == 100
  missing_hi = np.asarray(hi["text_bert"][:, 0]) == 100
  assert np.all(missing_hi[missing_lo]) and missing_hi.sum() > missing_lo.sum()
  # Sample i gets the same mask when evaluated alone in a batch of its own.
  sub = jax.tree.map(lambda x: x[5:6], batch)
  alone, _ = masking.mask_eval(sub, key, 0.5, sub["index"])
  np.testing.assert_array_equal(alone["audio"][0], hi["audio"][5])


def test_training_rates_half_zero_per_modality_and_uniform():
  rates = masking.training_rates(jax.random.key(0), 1000)
  zs = []
  for m in ("text", "audio", "vision"):
    r = np.asarray(rates[m])
    assert (r == 0).sum() == 500
    nz = r[r > 0]
    assert abs(nz.mean() - 0.5) < 0.05 and nz.max() < 1.0
    zs.append(r == 0)
  assert not np.array_equal(zs[0], zs[1])  # independent per modality


def test_mask_train_returns_nominal_text_rate_and_is_jittable_and_vmappable():
  batch = _batch(b=32)
  f = jax.jit(masking.mask_train)
  out, r_text = f(batch, jax.random.key(9))
  out2, r_text2 = masking.mask_train(batch, jax.random.key(9))
  np.testing.assert_array_equal(r_text, r_text2)
  np.testing.assert_array_equal(out["text_bert"], out2["text_bert"])
  assert r_text.shape == (32,)
  # Samples with nominal rate 0 keep everything.
  zero = np.asarray(r_text) == 0
  np.testing.assert_array_equal(
    np.asarray(out["text_bert"])[zero], np.asarray(batch["text_bert"])[zero]
  )
  # vmap over keys gives independent masks, equal to the per-key calls.
  keys = jax.random.split(jax.random.key(0), 3)
  vout, vrates = jax.vmap(masking.mask_train, in_axes=(None, 0))(batch, keys)
  single, _ = masking.mask_train(batch, keys[1])
  np.testing.assert_array_equal(vout["audio"][1], single["audio"])
  # vmap over rates (one compiled sweep) matches separate calls.
  rates = jnp.array([0.0, 0.4, 0.8])
  sweep, _ = jax.jit(jax.vmap(masking.mask_eval, in_axes=(None, None, 0, None)))(
    batch, jax.random.key(2), rates, batch["index"]
  )
  one, _ = masking.mask_eval(batch, jax.random.key(2), 0.4, batch["index"])
  np.testing.assert_array_equal(sweep["vision"][1], one["vision"])
  np.testing.assert_array_equal(sweep["text_bert"][0], batch["text_bert"])  # r = 0 drops nothing
