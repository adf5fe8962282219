"""The final evaluation of a run: every selected checkpoint on every final evaluation set.

Training keeps one best checkpoint per selection metric (validation split only; the test split
is never used for selection). After training, each of them is evaluated on the method's
`EvalSet`s: LNLN's test split at every missing rate (`msa_jax.evaluate.sweep`), GEAR's IID test and
OOD splits (`msa_jax.evaluate.ood`).
"""

from __future__ import annotations

import pathlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

from msa_jax.data.split import Split
from msa_jax.errors import RunConfigError
from msa_jax.evaluate.predict import BatchPredict, evaluate
from msa_jax.evaluate.sets import EvalSet


class SelectedCheckpoints(Protocol):
  """The best checkpoints of one seed, one per selection metric (`msa_jax.train.checkpoints`)."""

  directory: pathlib.Path

  def best_epoch(self, metric: str) -> int | None: ...

  def restore_best(self, metric: str, abstract_params: Any) -> tuple[Any, dict]: ...


def final_evaluation(
  evals: Sequence[EvalSet],
  selection_metrics: Sequence[str],
  splits: Mapping[str, Split],
  ckpts: SelectedCheckpoints,
  abstract_params: Any,
  predictor: Callable[[Any, list[float]], BatchPredict],
  batch_size: int,
  dataset: str,
  progress: bool = False,
) -> dict:
  """Every selected checkpoint on every set of `evals`: {selection metric: {eval name: metrics}}.

  Args:
    evals: the evaluation sets; the rates of one split are evaluated in one pass.
    selection_metrics: the metrics with a selected checkpoint each.
    splits: the data.
    ckpts: the seed's selected checkpoints, restored into `abstract_params`' layout.
    predictor: (params, rates) -> the `BatchPredict` of those parameters at those rates.
    batch_size, dataset: the evaluation batch size and the metric set ("mosi", "mosei", "sims").
    progress: show a progress bar per split and checkpoint.

  Selection metrics whose best epoch coincides share one checkpoint, so it is evaluated once.
  """
  groups: dict[str, list[float | None]] = {}
  for ev in evals:
    groups.setdefault(ev.split, []).append(ev.rate)
  for split_name in groups:
    if split_name not in splits:
      raise RunConfigError(
        f"evaluation split {split_name!r} is not in the data (have {sorted(splits)})"
      )
  by_epoch: dict[int, dict] = {}
  results: dict[str, dict] = {}
  for metric in selection_metrics:
    epoch = ckpts.best_epoch(metric)
    if epoch is None:
      raise RunConfigError(
        f"no selected checkpoint for {metric!r} in {ckpts.directory}: train first (--mode=train)"
      )
    if epoch not in by_epoch:
      params, _ = ckpts.restore_best(metric, abstract_params)
      out = {}
      for split_name, rates in groups.items():
        real = [0.0 if r is None else r for r in rates]
        desc = (
          (
            f"{ckpts.directory.parent.name} {split_name} ({len(real)} rates), "
            f"checkpoint of epoch {epoch}"
          )
          if progress
          else None
        )
        metrics = evaluate(predictor(params, real), splits[split_name], batch_size, dataset, desc)
        for r, m in zip(rates, metrics):
          out[split_name if r is None else f"{split_name}@{r:.1f}"] = m
      by_epoch[epoch] = out
    results[metric] = by_epoch[epoch]
  return results
