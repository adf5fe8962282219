"""Optimizers and learning-rate schedules of both methods (docs/methods.md §4, §5), built from optax
parts."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax

from msa_jax.models.gear import param_group_labels

LNLN_SCHEDULES = ("per_step", "reference")


@dataclasses.dataclass(frozen=True)
class LNLNOptimizerConfig:
  """LNLN's AdamW settings: the peak learning rate, the decoupled weight decay and the schedule's
  kind (`lnln_schedule`)."""

  lr: float
  weight_decay: float
  lr_schedule: str

  def __post_init__(self):
    if self.lr_schedule not in LNLN_SCHEDULES:
      raise ValueError(
        f"LNLNOptimizerConfig.lr_schedule={self.lr_schedule!r}, expected one of {LNLN_SCHEDULES}"
      )


def lnln_schedule(
  base_lr: float, total_steps: int, steps_per_epoch: int, kind: str, warmup_fraction: float = 0.1
) -> optax.Schedule:
  """LNLN's learning rate (docs/methods.md §4).

  kind="per_step": linear warm-up from 0 over the first `warmup_fraction` of the steps,
  then cosine decay to 0 at `total_steps`.
  kind="reference": the reference code's per-epoch schedule, as measured — epoch 1 at lr 0,
  epochs 2..21 at (e − 1)/20 · base, epoch 22 at base, then cosine annealing with T_max = 180
  epochs (epoch e ≥ 22 at base · (1 + cos(π (e − 22) / 180)) / 2), constant within an epoch.
  """
  if kind == "per_step":
    warmup = max(1, int(round(warmup_fraction * total_steps)))
    return optax.warmup_cosine_decay_schedule(
      0.0, base_lr, warmup, max(total_steps, warmup + 1), 0.0
    )
  if kind == "reference":

    def schedule(step):
      epoch = step // steps_per_epoch + 1
      warm = (epoch - 1) / 20.0
      cos = 0.5 * (1.0 + jnp.cos(jnp.pi * (epoch - 22) / 180.0))
      factor = jnp.where(epoch <= 21, warm, cos)
      return base_lr * factor

    return schedule
  raise ValueError(f"lr_schedule={kind!r}: expected 'per_step' or 'reference'")


def lnln_optimizer(schedule: optax.Schedule, weight_decay: float) -> optax.GradientTransformation:
  """AdamW with decoupled, lr-scaled weight decay on every parameter (PyTorch AdamW; docs/methods.md
  §4)."""
  return optax.adamw(schedule, b1=0.9, b2=0.999, eps=1e-8, weight_decay=weight_decay)


@dataclasses.dataclass(frozen=True)
class GEAROptimizerConfig:
  """Learning rates and PyTorch-style L2 weight decays of the five groups (docs/methods.md §5).

  Defaults are run.py's (MOSEI); `mosi()` zeroes every weight decay as run.py does for MOSI.
  Rates may be optax schedules. `accumulate_steps` micro-batch gradients are summed per update.
  """

  lr_bert: float | optax.Schedule = 5e-5
  wd_bert: float = 1e-3
  lr_audio: float | optax.Schedule = 5e-3
  wd_audio: float = 0.0
  lr_vision: float | optax.Schedule = 1e-4
  wd_vision: float = 0.0
  lr_other: float | optax.Schedule = 1e-3
  wd_other: float = 1e-2
  lr_fusion: float | optax.Schedule = 1e-3
  wd_fusion: float = 0.0
  accumulate_steps: int = 2

  def __post_init__(self):
    if self.accumulate_steps < 1:
      raise ValueError(
        f"GEAROptimizerConfig: accumulate_steps={self.accumulate_steps}, expected >= 1"
      )

  @classmethod
  def mosi(cls) -> GEAROptimizerConfig:
    return cls(wd_bert=0.0, wd_other=0.0)

  @classmethod
  def mosei(cls) -> GEAROptimizerConfig:
    return cls()


def _adam_l2(lr: float | optax.Schedule, wd: float) -> optax.GradientTransformation:
  """PyTorch `Adam(lr, weight_decay=wd)`: L2 added to the gradient, then Adam."""
  if wd == 0.0:
    return optax.adam(lr)
  return optax.chain(optax.add_decayed_weights(wd), optax.adam(lr))


def gear_optimizer(
  cfg: GEAROptimizerConfig = GEAROptimizerConfig(),
  labels: Callable[[Any], Any] | Any = param_group_labels,
) -> optax.GradientTransformation:
  """GEAR's optimizer (docs/methods.md §5): per-group Adam with L2, gradients summed over
  micro-batches.

  `optax.multi_transform` over the `param_group_labels` groups, wrapped in `summed_micro_batches`
  (optax.MultiSteps' sum of `cfg.accumulate_steps` micro-batch gradients; with accumulate_steps=1
  the plain multi_transform). Updates are zero on the accumulating micro-steps; the L2 term is
  added once to the summed gradient.
  """
  transforms = {
    "bert": _adam_l2(cfg.lr_bert, cfg.wd_bert),
    "bert_no_decay": _adam_l2(cfg.lr_bert, 0.0),
    "audio": _adam_l2(cfg.lr_audio, cfg.wd_audio),
    "vision": _adam_l2(cfg.lr_vision, cfg.wd_vision),
    "extractor_other": _adam_l2(cfg.lr_other, cfg.wd_other),
    "fusion": _adam_l2(cfg.lr_fusion, cfg.wd_fusion),
  }
  tx = optax.multi_transform(transforms, labels)
  if cfg.accumulate_steps == 1:
    return tx
  return summed_micro_batches(tx, cfg.accumulate_steps)


def summed_micro_batches(
  inner: optax.GradientTransformation, k: int
) -> optax.GradientTransformation:
  """`optax.MultiSteps(inner, every_k_schedule=k, use_grad_mean=False)` with a branch instead of
  selects: the same state (`optax.MultiStepsState`, so checkpoints of either restore into the
  other), and for finite gradients the same updates and states, bit for bit.

  Each micro-step adds its gradient to the float32 accumulator. On the k-th, `inner` updates from
  the sum, the accumulator is zeroed and the gradient step counted; on the others the updates are
  zero and the inner state is kept. `optax.MultiSteps` computes the inner update on every
  micro-step and then selects (keeping the old inner state, zeroing the updates by a product): full
  passes over the Adam moments on every micro-step (0.73 s of traced op time in a profiled 15.6 s
  GEAR bert-base micro-step on a 2-core CPU). Under `jax.vmap` the branch becomes a select, as in
  MultiSteps.
  """
  if k < 2:
    raise ValueError(f"summed_micro_batches: k={k}, expected >= 2 micro-batches per update")

  def init(params: Any) -> optax.MultiStepsState:
    return optax.MultiStepsState(
      mini_step=jnp.zeros([], jnp.int32),
      gradient_step=jnp.zeros([], jnp.int32),
      inner_opt_state=inner.init(params),
      acc_grads=optax.tree.zeros_like(params, dtype=jnp.float32),
      skip_state=(),
    )

  def update(updates: Any, state: optax.MultiStepsState, params: Any = None):
    acc = jax.tree.map(lambda g, a: (g + a).astype(jnp.float32), updates, state.acc_grads)

    def emit(_):
      new_updates, inner_state = inner.update(
        optax.tree.cast_like(acc, updates), state.inner_opt_state, params
      )
      step = state.gradient_step
      return new_updates, optax.MultiStepsState(
        mini_step=jnp.zeros_like(state.mini_step),
        gradient_step=jnp.where(step < jnp.iinfo(step.dtype).max, step + 1, step),
        inner_opt_state=inner_state,
        acc_grads=optax.tree.zeros_like(acc),
        skip_state=(),
      )

    def accumulate(_):
      return optax.tree.zeros_like(updates), state._replace(
        mini_step=state.mini_step + 1, acc_grads=acc
      )

    return jax.lax.cond(state.mini_step == k - 1, emit, accumulate, None)

  return optax.GradientTransformation(init, update)
