"""GEAR's OOD evaluation: the IID test split, each OOD split of the data, and their mean."""

from __future__ import annotations

from collections.abc import Mapping

from msa_jax.data.split import OOD_SPLITS
from msa_jax.evaluate.sets import EvalSet


def ood_evals(splits: Mapping) -> tuple[EvalSet, ...]:
  """The final evaluation sets: `test`, then the OOD splits present in `splits`."""
  return (EvalSet("test"),) + tuple(EvalSet(s) for s in OOD_SPLITS if s in splits)


def add_ood_mean(results: dict) -> dict:
  """Adds `ood_mean`: the mean of the OOD splits' metrics (GEAR's headline figure, docs/methods.md
  §5)."""
  out = {}
  for sel, evals in results.items():
    oods = [evals[s] for s in OOD_SPLITS if s in evals]
    evals = dict(evals)
    if oods:
      evals["ood_mean"] = {m: sum(o[m] for o in oods) / len(oods) for m in oods[0]}
    out[sel] = evals
  return out
