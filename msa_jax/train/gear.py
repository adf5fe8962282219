"""GEAR's training glue (docs/methods.md §5): model, loss with swap schedule, optimizer, selection,
OOD report."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections

from msa_jax import losses
from msa_jax.data import pipeline
from msa_jax.data.split import OOD_SPLITS, Split
from msa_jax.errors import RunConfigError
from msa_jax.evaluate.ood import add_ood_mean, ood_evals
from msa_jax.metrics import metric_keys
from msa_jax.models.gear import GEAR, GEARConfig
from msa_jax.report.tables import aggregate_seeds, split_table
from msa_jax.train import common, optimizers
from msa_jax.train.method import Method

CRITERIA = ("Acc_2_mean", "MAE")


def model_config(config: ml_collections.ConfigDict, splits: dict[str, Split], text) -> GEARConfig:
  """The GEAR sizes, rates and options of `config.model`; feature sizes from the training split,
  the text encoder's config `text`."""
  train = splits["train"]
  return common.from_config(
    GEARConfig,
    config.model,
    "model",
    text=text,
    audio_in=train.audio_shape[1],
    vision_in=train.vision_shape[1],
  )


def _check(config: ml_collections.ConfigDict) -> None:
  g = config.gear
  if g.gmae not in losses.GMAE_KINDS:
    raise RunConfigError(f"config.gear.gmae={g.gmae!r}: expected one of {losses.GMAE_KINDS}")
  if g.ipw not in losses.IPW_KINDS:
    raise RunConfigError(f"config.gear.ipw={g.ipw!r}: expected one of {losses.IPW_KINDS}")
  if g.criterion not in CRITERIA:
    raise RunConfigError(f"config.gear.criterion={g.criterion!r}: expected one of {CRITERIA}")
  if config.data.dataset == "sims":
    raise RunConfigError(
      "GEAR is defined for mosi/mosei (its selection criterion uses Has0/Non0 accuracy)"
    )


def build(config: ml_collections.ConfigDict, splits: dict[str, Split]) -> Method:
  """The GEAR `Method` for `config` and the data shapes of `splits`."""
  _check(config)
  g = config.gear
  enc_cfg, enc_params = common.text_encoder(config, splits)
  model = GEAR(model_config(config, splits, enc_cfg))
  spe = pipeline.steps_per_epoch(len(splits["train"]), config.batch_size)

  def init_params(key, batch):
    variables = model.init({"params": key, "dropout": key}, batch, deterministic=True)
    return common.place_encoder(variables["params"], enc_params, ("bert_robust", "bert_bias"))

  def loss_fn(params, batch, key, step):
    k_drop, k_swap = jax.random.split(key)
    epoch = step // spe + 1  # micro-batch epochs, counted from 1
    swap_active = jnp.logical_and(g.use_swap, epoch > g.swap_epochs)
    outputs = model.apply(
      {"params": params},
      batch,
      deterministic=False,
      swap_key=k_swap if g.use_swap else None,
      rngs={"dropout": k_drop},
    )
    loss, terms = losses.gear_loss(
      outputs,
      batch["labels"],
      gmae_kind=g.gmae,
      q=g.q,
      ipw_kind=g.ipw,
      lambda_dis=g.lambda_dis,
      lambda_swap=g.lambda_swap,
      swap_active=swap_active if g.use_swap else False,
    )
    return loss, {**terms, "swap_active": swap_active.astype(jnp.float32)}

  def predict_fn(params, batch, key, rate):
    del key, rate
    return model.apply({"params": params}, batch, deterministic=True)["pred"]

  opt = common.from_config(optimizers.GEAROptimizerConfig, config.optim, "optim")
  tx = optimizers.gear_optimizer(opt)
  return Method(
    name="gear",
    init_params=init_params,
    loss_fn=loss_fn,
    predict_fn=predict_fn,
    optimizer=tx,
    selection_metrics=(g.criterion,),
    valid_rate=None,
    final_evals=ood_evals(splits),
    patience=g.patience,
  )


def summarise(config, method: Method, per_seed: dict[str, dict]) -> dict:
  results = {s: add_ood_mean(r["results"]) for s, r in per_seed.items()}
  return {
    "method": "gear",
    "dataset": config.data.dataset,
    "data": config.data.path,
    "ood": config.data.ood or "planted",
    "seeds": [int(s) for s in per_seed],
    "selection": list(method.selection_metrics),
    "per_seed": results,
    "epochs": {s: r["epochs_trained"] for s, r in per_seed.items()},
    "best_valid": {s: r["best"] for s, r in per_seed.items()},
    "summary": aggregate_seeds(results),
  }


def _ood_source(ood: str) -> str:
  if ood == "none":
    return "none (data.ood=none: IID test split only)"
  return (
    "those of the data file (planted / released)" if ood == "planted" else f"index lists of {ood}"
  )


def markdown(config, method: Method, summary: dict) -> str:
  sel = method.selection_metrics[0]
  table = summary["summary"][sel]
  rows = [e for e in ["test", *OOD_SPLITS, "ood_mean"] if e in table]
  n = len(summary["seeds"])
  keys = metric_keys(config.data.dataset)
  head = (
    f"# GEAR on {summary['data']} ({config.data.dataset})\n\n"
    f"Seeds {summary['seeds']} (mean ± std over seeds; accuracies and F1 in %). Checkpoint "
    f"selected on the validation split by {sel}; `test` is the IID test split; OOD splits: "
    f"{_ood_source(summary['ood'])}.\n\n"
  )
  return head + split_table(table, keys, rows, n) + "\n"
