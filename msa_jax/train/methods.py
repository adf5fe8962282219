"""Dispatch from `config.method` to the method's builder, result summary and markdown report."""

from __future__ import annotations

import ml_collections

from msa_jax.data.split import Split
from msa_jax.errors import RunConfigError
from msa_jax.train import gear, lnln
from msa_jax.train.method import Method

METHODS = {"lnln": lnln, "gear": gear}


def _module(config: ml_collections.ConfigDict):
  name = config.method
  if name not in METHODS:
    raise RunConfigError(f"config.method={name!r}: expected one of {tuple(METHODS)}")
  return METHODS[name]


def build(config: ml_collections.ConfigDict, splits: dict[str, Split]) -> Method:
  return _module(config).build(config, splits)


def summarise(config: ml_collections.ConfigDict, method: Method, per_seed: dict[str, dict]) -> dict:
  return _module(config).summarise(config, method, per_seed)


def markdown(config: ml_collections.ConfigDict, method: Method, summary: dict) -> str:
  return _module(config).markdown(config, method, summary)


def variants(config: ml_collections.ConfigDict) -> list[tuple[str, ml_collections.ConfigDict]]:
  """The runs that one command trains side by side (GEAR with `gear.baseline`: GEAR and the plain
  model), as (sub-directory, config); [] for a single run."""
  module = _module(config)
  return module.variants(config) if hasattr(module, "variants") else []


def compare(config: ml_collections.ConfigDict, summaries: dict[str, dict]) -> tuple[dict, str]:
  """The side-by-side summary of `variants`' results and its markdown."""
  module = _module(config)
  comparison = module.compare(summaries)
  return comparison, module.compare_markdown(config, summaries, comparison)
