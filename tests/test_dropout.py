"""Dropout mask generators (msa_jax.models.dropout): distribution, independence, determinism,
gradients, the threefry option's equality with nn.Dropout, and the config checks."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from msa_jax.models import dropout as dropout_lib
from msa_jax.models.bert import BertConfig
from msa_jax.models.gear import GEARConfig


def _mask(seed: int, shape=(1000, 1000), keep=0.9) -> np.ndarray:
  return np.asarray(dropout_lib.hash_keep_mask(jax.random.key(seed), shape, keep))


def test_keep_fraction_is_binomial():
  n = 10**6
  for keep in (0.9, 0.5, 0.1):
    m = _mask(1, keep=keep)
    z = (m.mean() - keep) / np.sqrt(keep * (1 - keep) / n)
    assert abs(z) < 5, (keep, m.mean())


def test_masks_are_deterministic_per_key_and_independent_across_keys():
  a, b, c = _mask(3), _mask(3), _mask(4)
  np.testing.assert_array_equal(a, b)
  assert not np.array_equal(a, c)
  # Independent Bernoulli(0.9) masks agree on 0.9² + 0.1² = 0.82 of the elements.
  agree = (a == c).mean()
  assert abs(agree - 0.82) < 5 * np.sqrt(0.82 * 0.18 / a.size)
  # Keys one fold_in apart, as a module's successive make_rng calls give.
  base = jax.random.key(7)
  m0 = np.asarray(dropout_lib.hash_keep_mask(jax.random.fold_in(base, 0), (10**6,), 0.9))
  m1 = np.asarray(dropout_lib.hash_keep_mask(jax.random.fold_in(base, 1), (10**6,), 0.9))
  assert abs(np.corrcoef(m0, m1)[0, 1]) < 5e-3


def test_neighbouring_elements_are_independent():
  m = _mask(5).reshape(-1)
  for lag in (1, 2, 1000):  # along a row, and down a column
    both = (m[:-lag] & m[lag:]).mean()
    assert abs(both - 0.81) < 5 * np.sqrt(0.81 * 0.19 / m.size), lag


def test_hash_bits_are_uniform():
  """The hashed words, bucketed on their top and their bottom 8 bits, pass a chi-square test."""
  seeds = jax.random.bits(jax.random.key(11), (2,), jnp.uint32)
  index = jnp.arange(2**20, dtype=jnp.uint32)
  words = np.asarray(dropout_lib._lowbias32(dropout_lib._lowbias32(index + seeds[0]) ^ seeds[1]))
  assert len(np.unique(words)) > 2**20 - 300  # a bijection of distinct inputs (birthday-free)
  for buckets in (words >> 24, words & 0xFF):
    counts = np.bincount(buckets.astype(np.int64), minlength=256)
    assert stats.chisquare(counts).pvalue > 1e-4


def test_hash_dropout_values_and_gradient():
  x = jax.random.normal(jax.random.key(0), (64, 50, 32))
  key = jax.random.key(9)
  y = dropout_lib.hash_dropout(key, x, 0.25)
  mask = np.asarray(dropout_lib.hash_keep_mask(key, x.shape, 0.75))
  np.testing.assert_allclose(np.asarray(y), np.where(mask, np.asarray(x) / 0.75, 0.0), rtol=1e-6)
  grad = jax.grad(lambda t: jnp.sum(dropout_lib.hash_dropout(key, t, 0.25) * 2.0))(x)
  np.testing.assert_allclose(np.asarray(grad), np.where(mask, 2.0 / 0.75, 0.0), rtol=1e-6)


def test_vmap_over_keys_equals_one_key_at_a_time():
  keys = jax.random.split(jax.random.key(2), 3)
  x = jnp.ones((4, 5, 6))
  together = jax.jit(jax.vmap(lambda k: dropout_lib.hash_dropout(k, x, 0.5)))(keys)
  for i in range(3):
    np.testing.assert_array_equal(
      np.asarray(together[i]), np.asarray(dropout_lib.hash_dropout(keys[i], x, 0.5))
    )


class _Block(nn.Module):
  impl: str | None  # None: plain nn.Dropout

  @nn.compact
  def __call__(self, x, deterministic):
    x = nn.Dense(8)(x)
    if self.impl is None:
      x = nn.Dropout(0.3)(x, deterministic=deterministic)
      return nn.Dropout(0.3)(x * 2.0, deterministic=deterministic)
    x = dropout_lib.dropout(self, x, 0.3, deterministic, self.impl)
    return dropout_lib.dropout(self, x * 2.0, 0.3, deterministic, self.impl)


def test_module_dropout_threefry_equals_plain_nn_dropout_and_hash_differs():
  x = jax.random.normal(jax.random.key(0), (16, 8))
  params = _Block(None).init(jax.random.key(1), x, True)
  rngs = {"dropout": jax.random.key(2)}
  plain = _Block(None).apply(params, x, False, rngs=rngs)
  threefry = _Block("threefry").apply(params, x, False, rngs=rngs)
  hashed = _Block("hash").apply(params, x, False, rngs=rngs)
  np.testing.assert_array_equal(np.asarray(plain), np.asarray(threefry))
  assert not np.array_equal(np.asarray(plain == 0), np.asarray(hashed == 0))
  # Both keep 70% in expectation and are identity when deterministic.
  for impl in (None, "threefry", "hash"):
    np.testing.assert_array_equal(
      np.asarray(_Block(impl).apply(params, x, True)),
      np.asarray(_Block(None).apply(params, x, True)),
    )
  # Two calls in one module draw different masks (the 'dropout' stream advances).
  h = _Block("hash").bind(params, rngs=rngs)
  first = dropout_lib.dropout(h, jnp.ones((1000,)), 0.5, False)
  second = dropout_lib.dropout(h, jnp.ones((1000,)), 0.5, False)
  assert not np.array_equal(np.asarray(first), np.asarray(second))


def test_rate_edges_and_bad_impl():
  x = jnp.ones((3, 4))
  params = _Block("hash").init(jax.random.key(1), x, True)
  bound = _Block("hash").bind(params, rngs={"dropout": jax.random.key(0)})
  np.testing.assert_array_equal(
    np.asarray(dropout_lib.dropout(bound, x, 0.0, False)), np.ones((3, 4))
  )
  np.testing.assert_array_equal(
    np.asarray(dropout_lib.dropout(bound, x, 1.0, False)), np.zeros((3, 4))
  )
  with pytest.raises(
    ValueError, match=r"dropout_impl='philox': expected one of \('hash', 'threefry'\)"
  ):
    dropout_lib.dropout(bound, x, 0.1, False, "philox")
  with pytest.raises(ValueError, match="dropout_impl='fast'"):
    BertConfig.tiny().__class__(
      vocab_size=10,
      hidden_size=4,
      num_hidden_layers=1,
      num_attention_heads=1,
      intermediate_size=4,
      dropout_impl="fast",
    )
  with pytest.raises(ValueError, match="dropout_impl='fast'"):
    GEARConfig(text=BertConfig.tiny(), audio_in=5, vision_in=20, dropout_impl="fast")
