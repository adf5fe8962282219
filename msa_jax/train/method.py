"""What the generic training loop needs from a method (LNLN, GEAR): the `Method` record."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import optax

from msa_jax.evaluate.sets import EvalSet


@dataclasses.dataclass(frozen=True)
class Method:
  """A method as pure functions, built from a config and the data shapes.

  Attributes:
    name: "lnln" or "gear".
    init_params: key, example batch -> params (pretrained encoder weights already placed).
    loss_fn: (params, batch, key, step) -> (loss, metrics); the train step's loss (masking, swap
      and dropout keys are derived from `key` inside).
    predict_fn: (params, batch, key, rate) -> (B,) predictions in evaluation mode; `rate` is the
      missing rate applied with key `key` (LNLN) or ignored (GEAR).
    optimizer: the optax transformation (schedules, groups and accumulation included).
    selection_metrics: validation metrics with one best checkpoint each (docs/methods.md §4, §5).
    valid_rate: missing rate applied to the validation split (None: no masking).
    final_evals: the evaluations run on each selected checkpoint after training.
    patience: early-stopping patience in epochs on `selection_metrics[0]`, or None.
    mask_seed: seed of the key every evaluation passes to `predict_fn` (LNLN: the missing-data
      masks; a method whose `predict_fn` ignores the key keeps 0).
    eval_rates_per_pass: missing rates vmapped together in one pass of the evaluation program, the
      passes running in sequence (bounds memory); None: every rate at once.
    valid_splits: the splits evaluated after every epoch, "valid" first; the metrics of every other
      one are recorded as `<split>/<metric>`.
    valid_summary: {split: metrics} of `valid_splits` -> more validation figures (e.g. an OOD
      selection criterion), or None.
    diagnostic_fn: (params, batch, key, rate) -> (B, K) per-sample outputs evaluated on the
      validation split after every epoch (e.g. bias-head predictions), or None.
    diagnostic_summary: (the (N, K) outputs of `diagnostic_fn`, the validation Split) -> figures
      added to the epoch's validation record.
  """

  name: str
  init_params: Callable[[jax.Array, dict], Any]
  loss_fn: Callable[[Any, dict, jax.Array, jax.Array], tuple[jax.Array, dict[str, jax.Array]]]
  predict_fn: Callable[[Any, dict, jax.Array, jax.Array], jax.Array]
  optimizer: optax.GradientTransformation
  selection_metrics: tuple[str, ...]
  valid_rate: float | None
  final_evals: tuple[EvalSet, ...]
  patience: int | None = None
  mask_seed: int = 0
  eval_rates_per_pass: int | None = None
  valid_splits: tuple[str, ...] = ("valid",)
  valid_summary: Callable[[dict[str, dict[str, float]]], dict[str, float]] | None = None
  diagnostic_fn: Callable[[Any, dict, jax.Array, jax.Array], jax.Array] | None = None
  diagnostic_summary: Callable[[Any, Any], dict[str, float]] | None = None
