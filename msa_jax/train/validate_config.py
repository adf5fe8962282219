"""The one validation pass over a run's config, before anything is created on disk.

`validate(config)` checks every key it knows: its type, its range and its consistency with other
keys (known method, dataset, encoder, criterion and synthetic preset names; batch sizes, epochs and
`checkpoint_keep` >= 1; learning rates and weight decays finite and >= 0; dropout and missing rates
in [0, 1)). The first failure raises a one-line `RunConfigError` naming the key, the value and what
is allowed. Keys the config file defines and no rule here knows are left to the code that reads
them. Checks that need the data or the devices (a batch larger than the training split, a batch
that the devices do not divide) run in `msa_jax.train.loop.check_batches`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any

import ml_collections

from msa_jax import losses
from msa_jax.data import synthetic
from msa_jax.data.validate import DATASET_LIMITS
from msa_jax.errors import RunConfigError
from msa_jax.models.bert import PRESETS as ENCODER_PRESETS
from msa_jax.models.gear import GEARConfig
from msa_jax.models.lnln import LNLNConfig
from msa_jax.train import gear as gear_train
from msa_jax.train.optimizers import LNLN_SCHEDULES

METHODS = ("lnln", "gear")
SYNTHETIC_VERSIONS = ("v1", "v2")
MODEL_DTYPES = ("float32", "bfloat16")
DROPOUT_IMPLS = ("hash", "threefry")
GRL_SCOPES = ("all", "adversarial")
# data.ood: the OOD splits the data carries, none (train and report IID only), or an index file.
OOD_BUILTIN = ("planted", "none")


def _fail(key: str, value: Any, allowed: str) -> RunConfigError:
  return RunConfigError(f"config.{key}={value!r}: expected {allowed}")


def parse_seeds(seeds: Any) -> tuple[int, ...]:
  """`"1111,1112,1113"`, an int, or a sequence of ints -> a tuple of distinct ints."""
  if isinstance(seeds, int) and not isinstance(seeds, bool):
    return (seeds,)
  if isinstance(seeds, str):
    parts = [p.strip() for p in seeds.split(",") if p.strip()]
  elif isinstance(seeds, (list, tuple)):
    parts = list(seeds)
  else:
    parts = [None]
  try:
    out = tuple(int(p) for p in parts)
  except (TypeError, ValueError):
    raise RunConfigError(
      f"config.seeds={seeds!r}: expected comma-separated integers, e.g. '1111,1112,1113'"
    ) from None
  if not out or len(set(out)) != len(out):
    raise RunConfigError(f"config.seeds={seeds!r}: expected at least one seed and no repeats")
  return out


def parse_rates(key: str, value: Any) -> list[float]:
  """Comma-separated missing rates, each in [0, 1)."""
  try:
    rates = [float(r) for r in str(value).split(",")]
  except ValueError:
    rates = []
  if not rates or not all(0.0 <= r < 1.0 for r in rates):
    raise _fail(key, value, "comma-separated rates in [0, 1), e.g. '0.0,0.5'")
  return rates


# ---- one rule per kind of value ---------------------------------------------------------------


def _int(low: int | None = None) -> Callable[[str, Any], None]:
  def check(key: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
      raise _fail(key, value, "an integer" + ("" if low is None else f" >= {low}"))
    if low is not None and value < low:
      raise _fail(key, value, f"an integer >= {low}")

  return check


def _float(low: float, high: float | None = None, high_open: bool = True) -> Callable:
  bracket = ")" if high_open else "]"
  allowed = f"a finite number >= {low:g}" if high is None else f"a number in [{low:g}, {high:g}"
  allowed += "" if high is None else bracket

  def check(key: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
      raise _fail(key, value, allowed)
    v = float(value)
    ok = math.isfinite(v) and v >= low
    if high is not None:
      ok = ok and (v < high if high_open else v <= high)
    if not ok:
      raise _fail(key, value, allowed)

  return check


def _positive_float(key: str, value: Any) -> None:
  if (
    isinstance(value, bool)
    or not isinstance(value, (int, float))
    or not (math.isfinite(float(value)) and float(value) > 0)
  ):
    raise _fail(key, value, "a finite number > 0")


def _finite(key: str, value: Any) -> None:
  if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
    raise _fail(key, value, "a finite number")


def _bool(key: str, value: Any) -> None:
  if not isinstance(value, bool):
    raise _fail(key, value, "True or False")


def _str(key: str, value: Any) -> None:
  if not isinstance(value, str):
    raise _fail(key, value, "a string")


def _one_of(*names: str) -> Callable[[str, Any], None]:
  def check(key: str, value: Any) -> None:
    if value not in names:
      raise _fail(key, value, f"one of {', '.join(repr(n) for n in names)}")

  return check


def _nonempty_str(key: str, value: Any) -> None:
  if not isinstance(value, str) or not value.strip():
    raise _fail(key, value, "a non-empty path")


def _encoder(key: str, value: Any) -> None:
  named = tuple(p for p in ENCODER_PRESETS if not p.startswith("path"))
  if isinstance(value, str) and (value in named or (value.startswith("path:") and value[5:])):
    return
  raise _fail(key, value, f"one of {', '.join(named)} or path:DIR_OR_NAME")


def _ood(key: str, value: Any) -> None:
  if not isinstance(value, str) or not value.strip():
    raise _fail(key, value, "'planted', 'none' or the path of a FILE.ood.json")


def _seeds(key: str, value: Any) -> None:
  parse_seeds(value)


def _rates(key: str, value: Any) -> None:
  parse_rates(key, value)


# The rules of the keys both methods share, by dotted key.
COMMON_RULES: dict[str, Callable[[str, Any], None]] = {
  "method": _one_of(*METHODS),
  "seeds": _seeds,
  "vmap_seeds": _bool,
  "data_seed": _int(-1),
  "encoder": _encoder,
  "data.synthetic": _one_of("", *synthetic.PRESETS),
  "data.synthetic_version": _one_of(*SYNTHETIC_VERSIONS),
  "data.synthetic_seed": _int(0),
  "data.synthetic_scale": _positive_float,
  "data.path": _nonempty_str,
  "data.dataset": _one_of(*DATASET_LIMITS),
  "data.ood": _ood,
  "batch_size": _int(1),
  "eval_batch_size": _int(1),
  "max_epochs": _int(1),
  "checkpoint_keep": _int(1),
  "progress": _bool,
  "log_every_steps": _int(0),
  "tensorboard": _bool,
  "compile_cache": _str,
  "model.dtype": _one_of(*MODEL_DTYPES),
  "model.remat": _bool,
  "model.cls_only": _bool,
  "model.dropout_impl": _one_of(*DROPOUT_IMPLS),
}

LNLN_RULES: dict[str, Callable[[str, Any], None]] = {
  "eval_rates_per_pass": _int(1),
  "mask_seed": _int(0),
  "model.grl_alpha": _finite,
  "model.grl_scope": _one_of(*GRL_SCOPES),
  "model.attention_chunk": _int(0),
  "lnln.valid_missing_rate": _float(0.0, 1.0),
  "lnln.sweep_rates": _rates,
  "optim.lr": _float(0.0),
  "optim.weight_decay": _float(0.0),
  "optim.lr_schedule": _one_of(*LNLN_SCHEDULES),
}

GEAR_RULES: dict[str, Callable[[str, Any], None]] = {
  "gear.gmae": _one_of(*losses.GMAE_KINDS),
  "gear.q": _float(0.0, 1.0, high_open=False),
  "gear.ipw": _one_of(*losses.IPW_KINDS),
  "gear.use_swap": _bool,
  "gear.swap_epochs": _int(0),
  "gear.lambda_dis": _float(0.0),
  "gear.lambda_swap": _float(0.0),
  "gear.criterion": lambda key, value: _one_of(*gear_train.CRITERIA)(key, value),
  "gear.patience": _int(1),
  "optim.accumulate_steps": _int(1),
}


def _model_rules(model_cls: type) -> dict[str, Callable[[str, Any], None]]:
  """Rules from the model's settings dataclass: integer sizes >= 1, dropout rates in [0, 1),
  switches True or False (the fields with a default; the others come from the data)."""
  rules = {}
  for f in dataclasses.fields(model_cls):
    if f.default is dataclasses.MISSING:
      continue
    key = f"model.{f.name}"
    if isinstance(f.default, bool):
      rules[key] = _bool
    elif isinstance(f.default, int):
      rules[key] = _int(1)
    elif isinstance(f.default, float) and "dropout" in f.name:
      rules[key] = _float(0.0, 1.0)
  return rules


def _flat(config: ml_collections.ConfigDict, prefix: str = "") -> dict[str, Any]:
  out = {}
  for key, value in config.items():
    if isinstance(value, ml_collections.ConfigDict):
      out.update(_flat(value, f"{prefix}{key}."))
    else:
      out[f"{prefix}{key}"] = value
  return out


def rules_for(method: str) -> dict[str, Callable[[str, Any], None]]:
  """Every rule of `method`'s config keys."""
  if method == "lnln":
    return {**COMMON_RULES, **_model_rules(LNLNConfig), **LNLN_RULES}
  return {**COMMON_RULES, **_model_rules(GEARConfig), **GEAR_RULES}


def validate(config: ml_collections.ConfigDict) -> None:
  """Checks every known key of `config` (see the module docstring); raises `RunConfigError`."""
  if "method" not in config:
    raise RunConfigError("config.method: missing; expected one of " + ", ".join(METHODS))
  COMMON_RULES["method"]("method", config.method)
  flat = _flat(config)
  rules = rules_for(config.method)
  for key, value in flat.items():
    if key in rules:
      rules[key](key, value)
    elif key.startswith("optim.lr") or key.startswith("optim.wd"):
      _float(0.0)(key, value)  # GEAR's per-group learning rates and weight decays
    elif key.startswith("lnln.loss_weights."):
      _float(0.0)(key, value)
  _check_cross_keys(config, flat)


def _check_cross_keys(config: ml_collections.ConfigDict, flat: dict[str, Any]) -> None:
  """Consistency between keys."""
  if config.method == "gear" and flat.get("data.dataset") == "sims":
    raise RunConfigError(
      "config.data.dataset='sims' with config.method='gear': expected 'mosi' or 'mosei' (GEAR's "
      "selection criterion uses Has0/Non0 accuracy)"
    )
  version, preset = flat.get("data.synthetic_version"), flat.get("data.synthetic")
  if preset and version == "v2" and preset not in synthetic.PRESETS_V2:
    raise RunConfigError(
      f"config.data.synthetic={preset!r} with config.data.synthetic_version='v2': expected one "
      f"of {', '.join(repr(p) for p in synthetic.PRESETS_V2)}"
    )
