"""GEAR's training glue (docs/methods.md §5): model, loss with swap schedule, optimizer, selection,
OOD report."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import ml_collections

from msa_jax import losses
from msa_jax.data import pipeline
from msa_jax.data.split import OOD_SPLITS, OOD_VALID_SPLITS, Split
from msa_jax.errors import RunConfigError
from msa_jax.evaluate import diagnostics
from msa_jax.evaluate.ood import add_ood_mean, ood_evals
from msa_jax.metrics import metric_keys
from msa_jax.modalities import MODALITIES
from msa_jax.models.gear import GEAR, GEARConfig
from msa_jax.report.tables import aggregate_seeds, mean_std, split_table
from msa_jax.train import common, optimizers
from msa_jax.train.method import Method

# Validation criteria: IID Acc-2 (the authors' choice), IID MAE, and the mean Acc-2 over the OOD
# validation splits (`ood_valid`, needs those splits). The config's criterion selects the reported
# checkpoint and drives early stopping; every available criterion keeps its own checkpoint.
CRITERIA = ("ood_valid", "Acc_2_mean", "MAE")


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


def selection_criteria(criterion: str, splits: dict[str, Split]) -> tuple[str, ...]:
  """`criterion` first, then every other criterion the data allows (`ood_valid` needs the OOD
  validation splits)."""
  have_ood_valid = all(s in splits for s in OOD_VALID_SPLITS)
  if criterion == "ood_valid" and not have_ood_valid:
    missing = [s for s in OOD_VALID_SPLITS if s not in splits]
    raise RunConfigError(
      "config.gear.criterion='ood_valid' needs the OOD validation splits, but the data lacks "
      f"{', '.join(missing)} (synth-v2 files carry them; for other data pass "
      "--config.data.ood=FILE.ood.json written by scripts/build_ood_splits.py); use "
      "--config.gear.criterion=Acc_2_mean to select on IID validation"
    )
  available = [c for c in CRITERIA if c != "ood_valid" or have_ood_valid]
  return (criterion, *[c for c in available if c != criterion])


def _cue_alignment(split: Split) -> jax.Array | None:
  """The split's per-sample cue alignment (`diagnostics.cue_alignment`), or None without cue
  signs."""
  if split.cue_signs is None:
    return None
  return jnp.asarray(diagnostics.cue_alignment(split.labels, split.cue_signs))


def predict_fn(model: GEAR):
  """`model`'s `Method.predict_fn`: (params, batch, key, rate) -> (B,) predictions in evaluation
  mode (GEAR ignores the key and the missing rate)."""

  def fn(params, batch, key, rate):
    del key, rate
    return model.apply({"params": params}, batch, deterministic=True)["pred"]

  return fn


def build(config: ml_collections.ConfigDict, splits: dict[str, Split]) -> Method:
  """The GEAR `Method` for `config` and the data shapes of `splits`."""
  _check(config)
  g = config.gear
  train_alignment = _cue_alignment(splits["train"])
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
    terms = {**terms, "swap_active": swap_active.astype(jnp.float32)}
    if train_alignment is not None:
      weights = losses.gear_sample_weights(
        outputs,
        batch["labels"],
        ipw_kind=g.ipw,
        lambda_swap=g.lambda_swap,
        swap_active=swap_active if g.use_swap else False,
      )
      terms.update(diagnostics.cue_weight_sums(weights, train_alignment[batch["index"]]))
    return loss, terms

  def bias_predict_fn(params, batch, key, rate):
    del key, rate
    preds = model.apply({"params": params}, batch, deterministic=True)["bias_preds"]
    return jnp.stack([preds[m] for m in MODALITIES], axis=-1)

  has_valid_cues = "valid" in splits and splits["valid"].cue_signs is not None

  opt = common.from_config(optimizers.GEAROptimizerConfig, config.optim, "optim")
  tx = optimizers.gear_optimizer(opt)
  criteria = selection_criteria(g.criterion, splits)
  return Method(
    name="gear",
    init_params=init_params,
    loss_fn=loss_fn,
    predict_fn=predict_fn(model),
    optimizer=tx,
    selection_metrics=criteria,
    valid_rate=None,
    final_evals=ood_evals(splits),
    patience=g.patience,
    valid_splits=("valid", *[s for s in OOD_VALID_SPLITS if s in splits]),
    valid_summary=functools.partial(diagnostics.ood_valid_summary, ood_splits=OOD_VALID_SPLITS),
    diagnostic_fn=bias_predict_fn if has_valid_cues else None,
    diagnostic_summary=lambda out, split: diagnostics.bias_follows_cue(
      out, split.labels, split.cue_signs
    ),
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


# The plain model of the comparison: the same network, data, seeds and selection with GMAE, IPW and
# swap off (what the ablations call "all three off").
PLAIN = {"gmae": "none", "ipw": "none", "use_swap": False}


def variants(config: ml_collections.ConfigDict) -> list[tuple[str, ml_collections.ConfigDict]]:
  """With `config.gear.baseline`: [("gear", the config), ("plain", the plain model's)], each with
  `baseline` off; else []."""
  if not config.gear.baseline:
    return []
  gear_cfg = ml_collections.ConfigDict(config.to_dict())
  gear_cfg.gear.baseline = False
  plain = ml_collections.ConfigDict(gear_cfg.to_dict())
  plain.gear.update(PLAIN)
  return [("gear", gear_cfg), ("plain", plain)]


def data_title(config: ml_collections.ConfigDict) -> str:
  """The data as a title names it: the synthetic benchmark by shape and version, else the path."""
  if config.data.synthetic:
    version = config.data.get("synthetic_version", "v1")
    return f"synthetic {config.data.dataset.upper()}-shaped, synth-{version}"
  return f"{config.data.path} ({config.data.dataset})"


def compare(summaries: dict[str, dict], metric: str = "Has0_acc_2") -> dict:
  """GEAR against the plain model, per seed (both train the same seeds) at each model's main
  criterion: `metric` on the IID test and the OOD mean, and GEAR's gain (GEAR − plain) with its
  mean ± std over seeds."""
  gear_s, plain_s = summaries["gear"], summaries["plain"]
  sel = gear_s["selection"][0]
  seeds = [str(s) for s in gear_s["seeds"]]
  out: dict = {"criterion": sel, "metric": metric, "seeds": gear_s["seeds"], "sets": {}}
  for ev in ("test", "ood_mean"):
    if ev not in gear_s["per_seed"][seeds[0]][sel]:
      continue
    g = [gear_s["per_seed"][s][sel][ev][metric] for s in seeds]
    p = [plain_s["per_seed"][s][sel][ev][metric] for s in seeds]
    gain = [a - b for a, b in zip(g, p)]
    out["sets"][ev] = {
      "gear": mean_std(g),
      "plain": mean_std(p),
      "gain": mean_std(gain),
      "gain_per_seed": dict(zip(seeds, gain)),
    }
  return out


def compare_markdown(config: ml_collections.ConfigDict, summaries: dict, comparison: dict) -> str:
  """results.md of a GEAR run with its plain model: the gain first, then both models' tables."""
  metric, n = comparison["metric"], len(comparison["seeds"])
  pm = lambda ms: f"{100 * ms[0]:.2f}" + (f" ± {100 * ms[1]:.2f}" if n > 1 else "")
  lines = [
    f"# GEAR and the plain model on {data_title(config)}",
    "",
    f"Seeds {comparison['seeds']}; checkpoints selected by {comparison['criterion']}; the plain "
    "model is the same network, data, seeds and selection with GMAE, IPW and swap off. "
    f"{metric} in % (mean ± std over seeds; the gain is GEAR − plain, per seed).",
    "",
    "| set | GEAR | plain | gain |",
    "|---|---|---|---|",
  ]
  for ev, row in comparison["sets"].items():
    sign = "+" if row["gain"][0] > 0 else ""
    lines.append(f"| {ev} | {pm(row['gear'])} | {pm(row['plain'])} | {sign}{pm(row['gain'])} |")
  if "ood_mean" in comparison["sets"]:
    gain = comparison["sets"]["ood_mean"]["gain"][0]
    verdict = "helped" if gain > 0 else "did not help"
    lines += [
      "",
      f"Out of distribution, debiasing {verdict} in this run: OOD mean {100 * gain:+.2f}.",
    ]
  parts = ["\n".join(lines)]
  for name, cfg in variants(config):
    table = markdown(cfg, None, summaries[name])
    title = "## GEAR on" if name == "gear" else "## The plain model on"
    parts.append(table.replace("# GEAR on", title, 1))
  return "\n\n".join(parts) + "\n"


def _ood_source(ood: str) -> str:
  if ood == "none":
    return "none (data.ood=none: IID test split only)"
  return (
    "those of the data file (planted / released)" if ood == "planted" else f"index lists of {ood}"
  )


def markdown(config, method: Method | None, summary: dict) -> str:
  """results.md of a GEAR run: every evaluation set at the main criterion's checkpoint."""
  del method  # the summary names its selection
  sel = summary["selection"][0]
  table = summary["summary"][sel]
  rows = [e for e in ["test", *OOD_SPLITS, "ood_mean"] if e in table]
  n = len(summary["seeds"])
  keys = metric_keys(config.data.dataset)
  head = (
    f"# GEAR on {data_title(config)}\n\n"
    f"Seeds {summary['seeds']} (mean ± std over seeds; accuracies and F1 in %). Checkpoint "
    f"selected on the validation split by {sel}; `test` is the IID test split; OOD splits: "
    f"{_ood_source(summary['ood'])}.\n\n"
  )
  return head + split_table(table, keys, rows, n) + "\n"
