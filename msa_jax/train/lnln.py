"""LNLN's training glue (docs/methods.md §2, §4): masked training, per-metric selection, the
robustness sweep."""

from __future__ import annotations

import jax
import ml_collections

from msa_jax import losses
from msa_jax.data import masking, pipeline
from msa_jax.data.split import Split
from msa_jax.errors import RunConfigError
from msa_jax.evaluate.sweep import PAPER_COLUMNS, per_rate_table, sweep_evals
from msa_jax.models.lnln import LNLN, LNLNConfig
from msa_jax.report.tables import mean_std, rows_table
from msa_jax.train import common, optimizers
from msa_jax.train.method import Method

# Selection metrics (docs/methods.md §4): one checkpoint each; F1 is read from its accuracy's
# checkpoint.
SELECTION = {
  "mosi": ("Has0_acc_2", "Non0_acc_2", "Mult_acc_5", "Mult_acc_7", "MAE", "Corr"),
  "sims": ("Mult_acc_2", "Mult_acc_3", "Mult_acc_5", "MAE", "Corr"),
}
SELECTION["mosei"] = SELECTION["mosi"]


def sweep_rates(config: ml_collections.ConfigDict) -> list[float]:
  return [float(r) for r in str(config.lnln.sweep_rates).split(",")]


def model_config(config: ml_collections.ConfigDict, splits: dict[str, Split], text) -> LNLNConfig:
  """The LNLN sizes, switches and options of `config.model`; frame counts and feature sizes from
  the training split, the text encoder's config `text`."""
  train = splits["train"]
  return common.from_config(
    LNLNConfig,
    config.model,
    "model",
    text_frames=train.text_len,
    audio_frames=train.audio_shape[0],
    vision_frames=train.vision_shape[0],
    audio_dim=train.audio_shape[1],
    vision_dim=train.vision_shape[1],
    bert=text,
  )


def predict_fn(model: LNLN):
  """`model`'s `Method.predict_fn`: (params, batch, key, rate) -> (B,) predictions of the batch
  with the evaluation's missing-data masks at `rate` (docs/methods.md §2; each sample's mask drawn
  from `fold_in(key, batch["index"])`)."""

  def fn(params, batch, key, rate):
    masked, _ = masking.mask_eval(batch, key, rate, batch["index"])
    return model.apply({"params": params}, masked, None, deterministic=True)["pred"]

  return fn


def build(config: ml_collections.ConfigDict, splits: dict[str, Split]) -> Method:
  """The LNLN `Method` for `config` and the data shapes of `splits`."""
  try:
    rates = sweep_rates(config)
  except ValueError:
    raise RunConfigError(
      f"config.lnln.sweep_rates={config.lnln.sweep_rates!r}: expected comma-separated "
      "rates in [0, 1)"
    ) from None
  if not all(0.0 <= r < 1.0 for r in rates) or not 0.0 <= config.lnln.valid_missing_rate < 1.0:
    raise RunConfigError(
      "config.lnln.sweep_rates and config.lnln.valid_missing_rate must lie in [0, 1)"
    )
  enc_cfg, enc_params = common.text_encoder(config, splits)
  model = LNLN(model_config(config, splits, enc_cfg))
  weights = {k: float(config.lnln.loss_weights[k]) for k in ("alpha", "beta", "gamma", "sigma")}
  spe = pipeline.steps_per_epoch(len(splits["train"]), config.batch_size)
  opt = common.from_config(optimizers.LNLNOptimizerConfig, config.optim, "optim")
  schedule = optimizers.lnln_schedule(opt.lr, config.max_epochs * spe, spe, opt.lr_schedule)

  def init_params(key, batch):
    params = model.init({"params": key}, batch, batch, deterministic=True)["params"]
    return common.place_encoder(params, enc_params, ("bert",))

  def loss_fn(params, batch, key, step):
    k_mask, k_drop = jax.random.split(key)
    masked, text_rate = masking.mask_train(batch, k_mask)
    outputs = model.apply(
      {"params": params}, masked, batch, deterministic=False, rngs={"dropout": k_drop}
    )
    loss, terms = losses.lnln_loss(outputs, batch["labels"], text_rate, weights)
    return loss, {**terms, "lr": schedule(step)}

  return Method(
    name="lnln",
    init_params=init_params,
    loss_fn=loss_fn,
    predict_fn=predict_fn(model),
    optimizer=optimizers.lnln_optimizer(schedule, opt.weight_decay),
    selection_metrics=SELECTION[config.data.dataset],
    valid_rate=config.lnln.valid_missing_rate,
    final_evals=sweep_evals(rates),
    mask_seed=config.mask_seed,
    eval_rates_per_pass=config.eval_rates_per_pass,
  )


def summarise(config, method: Method, per_seed: dict[str, dict]) -> dict:
  rates = sweep_rates(config)
  dataset = config.data.dataset
  tables = {s: per_rate_table(r["results"], dataset, rates) for s, r in per_seed.items()}
  rows = list(next(iter(tables.values())))
  summary = {
    row: {
      m: dict(zip(("mean", "std"), mean_std([tables[s][row][m] for s in tables])))
      for m in PAPER_COLUMNS[dataset]
    }
    for row in rows
  }
  return {
    "method": "lnln",
    "dataset": dataset,
    "data": config.data.path,
    "seeds": [int(s) for s in per_seed],
    "selection": list(method.selection_metrics),
    "valid_missing_rate": config.lnln.valid_missing_rate,
    "rates": rates,
    "per_seed_table": tables,
    "table": summary,
    "per_seed": {s: r["results"] for s, r in per_seed.items()},
    "epochs": {s: r["epochs_trained"] for s, r in per_seed.items()},
    "best_valid": {s: r["best"] for s, r in per_seed.items()},
  }


def markdown(config, method: Method, summary: dict) -> str:
  dataset = config.data.dataset
  rows = [*(f"{r:.1f}" for r in summary["rates"]), "mean"]
  head = (
    f"# LNLN on {summary['data']} ({dataset})\n\n"
    f"Test split at each missing rate r (nested masks, mask seed {config.mask_seed}); seeds "
    f"{summary['seeds']} (mean ± std over seeds). Each metric is read from the checkpoint selected "
    f"for it on the validation split at r = {summary['valid_missing_rate']} (F1 from its "
    "accuracy's). Accuracies and F1 in %; Acc-2/F1 as Non0 (negative/positive) and Has0 "
    "(negative/non-negative).\n\n"
  )
  table = rows_table(summary["table"], PAPER_COLUMNS[dataset], rows, "r", len(summary["seeds"]))
  return head + table + "\n"
