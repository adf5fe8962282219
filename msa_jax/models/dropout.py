"""Dropout with a choice of mask generator (`model.dropout_impl`).

- "hash" (the default): the keep mask of element i is `h(h(i + s0) ^ s1) < keep · 2³²`, where h is
  a 32-bit integer hash (Wellons' `lowbias32`: xor-shift / multiply rounds, a bijection of uint32)
  and the stream seeds (s0, s1) are two words drawn from the dropout key with `jax.random.bits`.
  Every element is a function of its flat index and the key only, so masks are deterministic per
  key, independent of sharding and of `vmap`, and the keep probability is exact to 2⁻³². It costs
  a few vectorised integer operations per element: measured on the project's 2-core CPU, 2.9 ns
  per element against 19.5 ns for `jax.random.bernoulli` with threefry, whose cost was ≈ 10% of a
  BERT-base training step.
- "threefry": Flax's `nn.Dropout` (`jax.random.bernoulli` with the key's PRNG implementation),
  the masks `nn.Dropout` itself draws.

Both keep each element with probability 1 − rate and scale the kept ones by 1 / (1 − rate); they
draw different masks from the same key.
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

DROPOUT_IMPLS = ("hash", "threefry")


def check_impl(impl: str) -> None:
  if impl not in DROPOUT_IMPLS:
    raise ValueError(f"dropout_impl={impl!r}: expected one of {DROPOUT_IMPLS}")


def _lowbias32(x: jax.Array) -> jax.Array:
  """A bijective avalanche hash of uint32 (C. Wellons, "Hash function prospector", lowbias32)."""
  x = x ^ (x >> 16)
  x = x * jnp.uint32(0x7FEB352D)
  x = x ^ (x >> 15)
  x = x * jnp.uint32(0x846CA68B)
  return x ^ (x >> 16)


def hash_keep_mask(key: jax.Array, shape: tuple[int, ...], keep: float) -> jax.Array:
  """A boolean mask of `shape`, each element True with probability `keep` (to 2⁻³²), from `key`."""
  size = math.prod(shape)
  if size >= 2**32:
    raise ValueError(f"hash dropout: {size} elements, at most 2**32 - 1 per call")
  seeds = jax.random.bits(key, (2,), jnp.uint32)
  index = jax.lax.iota(jnp.uint32, size).reshape(shape)
  bits = _lowbias32(_lowbias32(index + seeds[0]) ^ seeds[1])
  threshold = min(round(keep * 2.0**32), 2**32 - 1)
  return bits < jnp.uint32(threshold)


def _corner(shape: tuple[int, ...]) -> tuple[slice, ...]:
  return tuple(slice(0, n) for n in shape)


def _keep_scaled(mask: jax.Array, x: jax.Array, keep: float) -> jax.Array:
  """x / keep where `mask`, 0 elsewhere."""
  return jax.lax.select(mask, x / jnp.asarray(keep, x.dtype), jnp.zeros_like(x))


def hash_dropout(
  key: jax.Array, x: jax.Array, rate: float, full_shape: tuple[int, ...] | None = None
) -> jax.Array:
  """x with each element zeroed with probability `rate`, the others scaled by 1 / (1 − rate).

  `full_shape`: x is the leading corner of a tensor of this shape and gets that corner's mask."""
  keep = 1.0 - rate
  mask = hash_keep_mask(key, full_shape or x.shape, keep)[_corner(x.shape)]
  return _keep_scaled(mask, x, keep)


def dropout(
  module: nn.Module,
  x: jax.Array,
  rate: float,
  deterministic: bool,
  impl: str = "hash",
  full_shape: tuple[int, ...] | None = None,
) -> jax.Array:
  """Dropout inside `module`'s compact `__call__` (called as `dropout(self, x, ...)`), from its
  'dropout' RNG stream.

  "threefry" creates an `nn.Dropout` in `module`, so its masks are those of the plain
  `nn.Dropout(rate)(x, deterministic=...)` it replaces; "hash" draws one key from `module`'s
  'dropout' stream for the mask (`hash_dropout`).

  `full_shape`: `x` is the leading corner `t[:x.shape[0], :x.shape[1], ...]` of a tensor t of this
  shape, and gets exactly the mask (and the result) that dropout of t would give that corner, so
  a computation restricted to some rows (BERT's [CLS]-only last layer) keeps the random stream of
  the full one. The hash mask is computed for the corner's elements only.
  """
  check_impl(impl)
  full_shape = tuple(full_shape) if full_shape is not None else x.shape
  if full_shape != x.shape and (
    len(full_shape) != x.ndim or any(n > f for n, f in zip(x.shape, full_shape, strict=True))
  ):
    raise ValueError(f"dropout: x of shape {x.shape} is not a corner of full_shape {full_shape}")
  if impl == "threefry":
    layer = nn.Dropout(rate)
    if full_shape == x.shape:
      return layer(x, deterministic=deterministic)
    if deterministic or rate == 0.0:
      return x
    mask = layer(jnp.ones(full_shape, x.dtype), deterministic=False)[_corner(x.shape)] != 0
    return _keep_scaled(mask, x, 1.0 - rate)
  if deterministic or rate == 0.0:
    return x
  if rate == 1.0:
    return jnp.zeros_like(x)
  return hash_dropout(module.make_rng("dropout"), x, rate, full_shape)
