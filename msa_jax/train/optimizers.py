"""Optimizers and learning-rate schedules of both methods (docs/methods.md §4, §5), built from optax parts."""

from __future__ import annotations

import jax.numpy as jnp
import optax


def lnln_schedule(base_lr: float, total_steps: int, steps_per_epoch: int, kind: str = "per_step",
                  warmup_fraction: float = 0.1) -> optax.Schedule:
  """LNLN's learning rate (docs/methods.md §4).

  kind="per_step" (default): linear warm-up from 0 over the first `warmup_fraction` of the steps,
  then cosine decay to 0 at `total_steps`.
  kind="reference": the reference code's per-epoch schedule, as measured — epoch 1 at lr 0,
  epochs 2..21 at (e − 1)/20 · base, epoch 22 at base, then cosine annealing with T_max = 180
  epochs (epoch e ≥ 22 at base · (1 + cos(π (e − 22) / 180)) / 2), constant within an epoch.
  """
  if kind == "per_step":
    warmup = max(1, int(round(warmup_fraction * total_steps)))
    return optax.warmup_cosine_decay_schedule(0.0, base_lr, warmup, max(total_steps, warmup + 1), 0.0)
  if kind == "reference":
    def schedule(step):
      epoch = step // steps_per_epoch + 1
      warm = (epoch - 1) / 20.0
      cos = 0.5 * (1.0 + jnp.cos(jnp.pi * (epoch - 22) / 180.0))
      factor = jnp.where(epoch <= 21, warm, cos)
      return base_lr * factor
    return schedule
  raise ValueError(f"lr_schedule={kind!r}: expected 'per_step' or 'reference'")


def lnln_optimizer(schedule: optax.Schedule, weight_decay: float = 1e-4) -> optax.GradientTransformation:
  """AdamW with decoupled, lr-scaled weight decay on every parameter (PyTorch AdamW; docs/methods.md §4)."""
  return optax.adamw(schedule, b1=0.9, b2=0.999, eps=1e-8, weight_decay=weight_decay)
