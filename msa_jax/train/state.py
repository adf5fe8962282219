"""The train state pytree and the generic jit-compiled train step (the nanodo pattern)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import flax
import jax
import jax.numpy as jnp
import optax

# loss_fn(params, batch, key, step) -> (scalar loss, dict of scalar metrics)
LossFn = Callable[[Any, dict, jax.Array, jax.Array], tuple[jax.Array, dict[str, jax.Array]]]


@flax.struct.dataclass
class TrainState:
  """Everything that changes during training: step counter, parameters, optimizer state.

  The per-step PRNG key is not stored: it is `fold_in(seed_key, step)`, so a restored step count
  reproduces the key stream exactly.
  """

  step: jax.Array
  params: Any
  opt_state: Any


def create_state(params: Any, tx: optax.GradientTransformation) -> TrainState:
  return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params))


def make_train_step(loss_fn: LossFn, tx: optax.GradientTransformation):
  """The pure train step `(state, batch, key) -> (state, metrics)`; `key` is the run's seed key."""

  def train_step(state: TrainState, batch: dict, key: jax.Array):
    step_key = jax.random.fold_in(key, state.step)
    (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(
      state.params, batch, step_key, state.step
    )
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics = {"loss": loss, "grad_norm": optax.tree.norm(grads), **aux}
    return TrainState(step=state.step + 1, params=params, opt_state=opt_state), metrics

  return train_step


def make_seeds_train_step(loss_fn: LossFn, tx: optax.GradientTransformation):
  """The train step over S seeds at once: `(states, batch, keys, active) -> (states, metrics)`.

  `states` and `keys` are stacked over a leading seed axis, the batch is shared, and each metric
  has shape (S,). Seed s computes exactly `make_train_step`'s update (`jax.vmap`); where
  `active[s]` is False its state is returned unchanged (a seed that stopped early stays frozen).
  """
  one = jax.vmap(make_train_step(loss_fn, tx), in_axes=(0, None, 0))

  def train_step(states: TrainState, batch: dict, keys: jax.Array, active: jax.Array):
    new, metrics = one(states, batch, keys)
    keep = lambda n, o: jnp.where(active.reshape(active.shape + (1,) * (n.ndim - 1)), n, o)
    return jax.tree.map(keep, new, states), metrics

  return train_step
