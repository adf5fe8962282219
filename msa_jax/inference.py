"""Using a trained model: restore it, predict with it, export it (docs/methods.md §11).

`restore(path)` reads either a run directory of train.py (config.json, results.json and the best
checkpoint the run selected for a metric) or a model directory written by `export` (model.json,
params.safetensors, encoder/), and returns a `Predictor` whose parameters are replicated on every
device of this process, whatever the number of devices that trained them. `Predictor.predict` runs
the method's evaluation program (`msa_jax.evaluate.predict`, jit-compiled, batched and sharded over
the devices) over a split; for LNLN a missing rate applies the masks of the evaluation sweep (the
run's mask seed, one mask per sample index).

This module reads what a run wrote; it does not import the training loop.
"""

from __future__ import annotations

import dataclasses
import json
import math
import pathlib
from collections.abc import Callable, Mapping
from typing import Any

import jax
import ml_collections
import numpy as np

from msa_jax import metrics as metrics_lib
from msa_jax import sharding
from msa_jax.data.split import Split
from msa_jax.data.validate import Where, dataset_limits, split_from_dict
from msa_jax.errors import ModelInputError, RunConfigError
from msa_jax.evaluate.predict import bind, make_predict, predict_split
from msa_jax.io import atomic_file, write_json_atomic, write_text_atomic
from msa_jax.models import bert
from msa_jax.models import gear as gear_model
from msa_jax.models import lnln as lnln_model
from msa_jax.train import checkpoints as ckpt_lib
from msa_jax.train import common
from msa_jax.train import gear as gear_train
from msa_jax.train import lnln as lnln_train
from msa_jax.version import __version__

# An exported model directory.
MODEL_FILE = "model.json"
PARAMS_FILE = "params.safetensors"
ENCODER_DIR = "encoder"
FORMAT = "msa_jax-model-1"


@dataclasses.dataclass(frozen=True)
class _MethodParts:
  """What restoring needs of a method: its model and settings classes, the settings field holding
  the text encoder's config, the data-derived sizes read from parameters, its `predict_fn`."""

  model: type
  settings: type
  encoder_field: str
  input_sizes: Callable[[Any], dict[str, int]]
  predict_fn: Callable[[Any], Callable]


_METHODS = {
  "lnln": _MethodParts(
    lnln_model.LNLN, lnln_model.LNLNConfig, "bert", lnln_model.input_sizes, lnln_train.predict_fn
  ),
  "gear": _MethodParts(
    gear_model.GEAR, gear_model.GEARConfig, "text", gear_model.input_sizes, gear_train.predict_fn
  ),
}


@dataclasses.dataclass(frozen=True)
class ModelInfo:
  """What a restored model is and where it comes from.

  Attributes:
    method: "lnln" or "gear".
    dataset: the metric set of its data ("mosi", "mosei", "sims").
    model_config: the `LNLNConfig` / `GEARConfig` it was built with.
    selection: the validation metric its checkpoint was selected by.
    seed, epoch: the training seed and the epoch of the checkpoint.
    mask_seed: the seed of the evaluation's missing-data masks (LNLN).
    batch_size: the run's evaluation batch size.
    metrics: the run's final evaluation of this checkpoint, {evaluation set: {metric: value}} ({}
      when the run has no results.json).
    run_config: the run's config.json.
    source: the run or model directory it was restored from.
  """

  method: str
  dataset: str
  model_config: Any
  selection: str
  seed: int | None
  epoch: int | None
  mask_seed: int
  batch_size: int
  metrics: dict
  run_config: dict
  source: str

  @property
  def encoder(self) -> bert.BertConfig:
    return getattr(self.model_config, _METHODS[self.method].encoder_field)


@dataclasses.dataclass(frozen=True)
class Predictions:
  """A model's predictions of N samples, in the data's order.

  Attributes:
    predictions: (N,) float32 sentiment scores.
    ids: (N,) sample ids, or None when the data has none.
    labels: (N,) float32 labels, or None when the data has none.
    missing_rate: the missing rate applied (LNLN), or None.
  """

  predictions: np.ndarray
  ids: np.ndarray | None
  labels: np.ndarray | None
  missing_rate: float | None

  def metrics(self, dataset: str) -> dict[str, float]:
    """The MMSA metrics (`msa_jax.metrics.mmsa_metrics`) of the predictions against the labels."""
    if self.labels is None:
      raise ValueError("the data has no labels: no metrics")
    return metrics_lib.mmsa_metrics(self.predictions, self.labels, dataset)


class Predictor:
  """A restored model on this process's devices; `predict` gives its predictions of data."""

  def __init__(self, info: ModelInfo, params: Any, mesh):
    self.info, self.params, self.mesh = info, params, mesh
    parts = _METHODS[info.method]
    self._program = make_predict(parts.predict_fn(parts.model(info.model_config)), mesh)
    self._key = jax.random.key(info.mask_seed)
    # Batches split evenly over the devices and processes (the batch size changes no prediction:
    # LNLN's masks are drawn per sample index).
    step = math.lcm(mesh.devices.size, jax.process_count())
    self.batch_size = step * math.ceil(info.batch_size / step)

  @property
  def method(self) -> str:
    return self.info.method

  @property
  def dataset(self) -> str:
    return self.info.dataset

  @property
  def vocab_size(self) -> int:
    return self.info.encoder.vocab_size

  def predict(
    self, data: Any, missing_rate: float | None = None, split: str = "test"
  ) -> Predictions:
    """Predictions of every sample of `data`.

    Args:
      data: a `Split`; a loaded data file ({split name: Split}, as `msa_jax.data.load` returns),
        of which `split` is predicted; or plain arrays in the MMSA layout of one split
        (docs/methods.md §1: `text_bert`, `audio`, `vision`, optional `audio_lengths`,
        `vision_lengths`, `regression_labels`, `id`).
      missing_rate: LNLN only: drop this fraction of tokens and frames with the evaluation's masks
        (the masks of the run's sweep at that rate). None: the data as given.
      split: the split of a loaded data file.

    Raises:
      ModelInputError: the data does not fit the model (feature size, frame count, text length,
        token ids) or lacks `split`; the message names the key and both sizes.
    """
    s, labelled = self._as_split(data, split)
    check_fits(self.info, s)
    if missing_rate is not None and self.method != "lnln":
      raise ValueError(f"missing_rate={missing_rate}: only LNLN predicts at a missing rate")
    rate = 0.0 if missing_rate is None else float(missing_rate)
    if not 0.0 <= rate < 1.0:
      raise ValueError(f"missing_rate={missing_rate}: expected a rate in [0, 1)")
    fn = bind(self._program, self.params, self.mesh, self._key, [rate])
    preds = predict_split(fn, s, self.batch_size)[0].astype(np.float32)
    return Predictions(preds, s.ids, s.labels if labelled else None, missing_rate)

  def _as_split(self, data: Any, split: str) -> tuple[Split, bool]:
    """(the split to predict, whether it has labels)."""
    if isinstance(data, Split):
      return data, True
    if isinstance(data, Mapping) and data and all(isinstance(v, Split) for v in data.values()):
      if split not in data:
        raise ModelInputError(f"split {split!r} is not in the data (it has {sorted(data)})")
      return data[split], True
    if isinstance(data, Mapping) and "text_bert" in data:
      raw = dict(data)
      labelled = "regression_labels" in raw
      if not labelled:
        raw["regression_labels"] = np.zeros(len(raw["text_bert"]), np.float32)
      limits = dataset_limits(self.dataset, self.vocab_size)
      return split_from_dict(raw, Where("arrays", split), limits), labelled
    raise TypeError(
      f"cannot predict a {type(data).__name__}: expected a Split, a loaded data file or a dict of "
      "arrays in the MMSA layout"
    )


def _input_limits(info: ModelInfo) -> dict[str, tuple[int | None, int | None]]:
  """Key -> (most frames or tokens the model takes or None, feature size or None)."""
  cfg = info.model_config
  if info.method == "lnln":
    return {
      "text_bert": (cfg.text_frames, None),
      "audio": (cfg.audio_frames, cfg.audio_dim),
      "vision": (cfg.vision_frames, cfg.vision_dim),
    }
  return {
    "text_bert": (cfg.text.max_position_embeddings, None),
    "audio": (None, cfg.audio_in),
    "vision": (None, cfg.vision_in),
  }


def check_fits(info: ModelInfo, split: Split) -> None:
  """Raises a one-line `ModelInputError` naming the key and both sizes when `split` does not fit
  the model: another feature size, more frames or tokens than it takes, token ids outside its
  vocabulary."""
  shapes = {
    "text_bert": (split.text_len, None),
    "audio": split.audio_shape,
    "vision": split.vision_shape,
  }
  for key, (most, dim) in _input_limits(info).items():
    length, size = shapes[key]
    if dim is not None and size != dim:
      raise ModelInputError(
        f"{key}: the data has feature size {size} per frame, the model was trained on {dim}"
      )
    if most is not None and length > most:
      what = "tokens" if key == "text_bert" else "frames"
      raise ModelInputError(
        f"{key}: the data has {length} {what} per sample, the model takes at most {most}"
      )
  top = int(np.max(split.text_bert[:, 0])) if len(split) else 0
  if top >= info.encoder.vocab_size:
    raise ModelInputError(
      f"text_bert: the data has token id {top}, the model's vocabulary has "
      f"{info.encoder.vocab_size} ids (tokenized with another vocabulary?)"
    )


# ---- restoring -----------------------------------------------------------------------------------


def restore(
  path: str | pathlib.Path, selection: str | None = None, seed: int | None = None
) -> Predictor:
  """The model of a run directory or an exported model directory, on this process's devices.

  Args:
    path: a run directory of train.py, or a directory written by `export`.
    selection: the validation metric whose selected checkpoint to restore; default: the run's main
      criterion (GEAR's `gear.criterion`; LNLN's first selection metric, Has0_acc_2 for
      MOSI/MOSEI). Any metric the run kept a checkpoint for (LNLN keeps one per metric).
    seed: the training seed (default: the run's first).

  Raises:
    RunConfigError: no run or model there, or no checkpoint for `selection` / `seed`.
  """
  path = pathlib.Path(path).expanduser().absolute()
  variants = sorted(p.parent.name for p in path.glob("*/config.json"))
  if variants and (path / "config.json").is_file() and not any(path.glob("seed_*")):
    raise RunConfigError(
      f"{path} holds side-by-side runs ({', '.join(variants)}): restore one of them, e.g. "
      f"{path / variants[0]}"
    )
  mesh = sharding.make_mesh()
  if (path / MODEL_FILE).is_file():
    info, params = _read_export(path, selection, seed, mesh)
  elif (path / "config.json").is_file():
    info, params = _read_run(path, selection, seed, mesh)
  else:
    raise RunConfigError(
      f"{path}: neither a run directory (config.json) nor an exported model ({MODEL_FILE})"
    )
  return Predictor(info, params, mesh)


def _read_json(path: pathlib.Path) -> dict:
  with open(path, encoding="utf-8") as f:
    return json.load(f)


def _method_parts(method: Any, where: pathlib.Path) -> _MethodParts:
  if method not in _METHODS:
    raise RunConfigError(f"{where}: method={method!r}, expected one of {tuple(_METHODS)}")
  return _METHODS[method]


def _run_seeds(workdir: pathlib.Path, results: dict) -> list[int]:
  """The run's seeds: those of results.json, else the seed_N directories."""
  if results.get("seeds"):
    return [int(s) for s in results["seeds"]]
  names = (p.name.removeprefix("seed_") for p in workdir.glob("seed_*") if p.is_dir())
  return sorted(int(n) for n in names if n.isdigit())


def _read_run(
  workdir: pathlib.Path, selection: str | None, seed: int | None, mesh
) -> tuple[ModelInfo, Any]:
  config = _read_json(workdir / "config.json")
  parts = _method_parts(config.get("method"), workdir / "config.json")
  results = _read_json(workdir / "results.json") if (workdir / "results.json").is_file() else {}
  seeds = _run_seeds(workdir, results)
  seed = seeds[0] if seed is None and seeds else seed
  if seed is None or int(seed) not in seeds:
    raise RunConfigError(f"{workdir}: no trained seed {seed} (the run has seeds {seeds})")
  seed = int(seed)
  directory = workdir / f"seed_{seed}" / "checkpoints"
  best = ckpt_lib.open_best(directory)
  try:
    epochs = ckpt_lib.best_epochs(best)
    if selection is None:
      if not results.get("selection"):
        raise RunConfigError(
          f"{workdir} has no results.json (the run has not finished): pass a selection metric, "
          f"one of {sorted(epochs)}"
        )
      selection = results["selection"][0]
    if selection not in epochs:
      raise RunConfigError(
        f"selection {selection!r}: the run kept no checkpoint for it in {directory / 'best'} "
        f"(it has {sorted(epochs)})"
      )
    params, _ = ckpt_lib.restore_params(best, epochs[selection], sharding.replicated(mesh))
  finally:
    best.close()
  try:
    encoder = bert.preset_config(config["encoder"])
  except (ValueError, FileNotFoundError) as e:
    raise RunConfigError(f"config.encoder={config['encoder']!r}: {e}") from None
  model_config = common.from_config(
    parts.settings,
    ml_collections.ConfigDict(config["model"]),
    "model",
    **{parts.encoder_field: encoder},
    **parts.input_sizes(params),
  )
  info = ModelInfo(
    method=config["method"],
    dataset=config["data"]["dataset"],
    model_config=model_config,
    selection=selection,
    seed=seed,
    epoch=epochs[selection],
    mask_seed=int(config.get("mask_seed", 0)),
    batch_size=int(config["eval_batch_size"]),
    metrics=results.get("per_seed", {}).get(str(seed), {}).get(selection, {}),
    run_config=config,
    source=str(workdir),
  )
  return info, params


def _read_export(
  directory: pathlib.Path, selection: str | None, seed: int | None, mesh
) -> tuple[ModelInfo, Any]:
  from safetensors.numpy import load_file

  model = _read_json(directory / MODEL_FILE)
  if model.get("format") != FORMAT:
    raise RunConfigError(
      f"{directory / MODEL_FILE}: format={model.get('format')!r}, expected {FORMAT!r}"
    )
  parts = _method_parts(model["method"], directory / MODEL_FILE)
  for key, asked in (("selection", selection), ("seed", seed)):
    if asked is not None and asked != model[key]:
      raise RunConfigError(
        f"{directory} holds the model of {key} {model[key]!r}, not {asked!r} (export the run "
        "again for another)"
      )
  encoder = bert.BertConfig.from_hf_json(directory / ENCODER_DIR / "config.json")
  model_config = parts.settings(**model["model"], **{parts.encoder_field: encoder})
  params = _place(_unflatten(load_file(directory / PARAMS_FILE)), sharding.replicated(mesh))
  info = ModelInfo(
    method=model["method"],
    dataset=model["dataset"],
    model_config=model_config,
    selection=model["selection"],
    seed=model["seed"],
    epoch=model["epoch"],
    mask_seed=int(model["mask_seed"]),
    batch_size=int(model["batch_size"]),
    metrics=model["metrics"],
    run_config=model["run_config"],
    source=str(directory),
  )
  return info, params


def _place(tree: Any, sharding_: Any) -> Any:
  """Host arrays -> global arrays with `sharding_` (each process fills its own devices)."""
  return jax.tree.map(
    lambda a: jax.make_array_from_callback(a.shape, sharding_, lambda idx: a[idx]), tree
  )


# ---- exporting -----------------------------------------------------------------------------------

# A parameter's safetensors name: its path in the parameter tree joined by "/".
_SEP = "/"


def _flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, np.ndarray]:
  out = {}
  for k, v in tree.items():
    name = f"{prefix}{k}"
    if isinstance(v, Mapping):
      out.update(_flatten(v, name + _SEP))
    else:
      out[name] = np.ascontiguousarray(sharding.to_host(v))
  return out


def _unflatten(flat: Mapping[str, np.ndarray]) -> dict[str, Any]:
  tree: dict[str, Any] = {}
  for name, value in flat.items():
    *parents, leaf = name.split(_SEP)
    node = tree
    for p in parents:
      node = node.setdefault(p, {})
    node[leaf] = value
  return tree


def _vocab_file(info: ModelInfo) -> pathlib.Path:
  source = pathlib.Path(info.source)
  if (source / MODEL_FILE).is_file():
    return source / ENCODER_DIR / "vocab.txt"
  return bert.preset_vocab_file(info.run_config["encoder"])


def export(
  source: str | pathlib.Path,
  out: str | pathlib.Path,
  selection: str | None = None,
  seed: int | None = None,
) -> pathlib.Path:
  """Writes the model `restore(source, selection, seed)` gives as a self-contained directory `out`
  (which must not exist or be empty): params.safetensors, model.json (method, model config,
  selection, the run's metrics and config), encoder/config.json and encoder/vocab.txt (the text
  encoder's), README.md (a model card). `restore(out)` needs nothing else. Every file is written
  atomically. Returns `out`.

  Raises:
    FileExistsError: `out` exists and is not an empty directory.
  """
  out = pathlib.Path(out).expanduser().absolute()
  if out.exists() and (not out.is_dir() or any(out.iterdir())):
    raise FileExistsError(f"{out} exists and is not empty: export writes a new directory")
  predictor = restore(source, selection, seed)
  info = predictor.info
  vocab = _vocab_file(info)
  flat = _flatten(predictor.params)
  if jax.process_index() != 0:
    return out
  from safetensors.numpy import save

  settings = dataclasses.asdict(info.model_config)
  settings.pop(_METHODS[info.method].encoder_field)
  write_json_atomic(out / ENCODER_DIR / "config.json", bert.hf_config_dict(info.encoder))
  with atomic_file(out / ENCODER_DIR / "vocab.txt", "wb") as f:
    f.write(vocab.read_bytes())
  with atomic_file(out / PARAMS_FILE, "wb") as f:
    f.write(save(flat, metadata={"format": FORMAT}))
  model = {
    "format": FORMAT,
    "msa_jax_version": __version__,
    "method": info.method,
    "dataset": info.dataset,
    "model": settings,
    "selection": info.selection,
    "seed": info.seed,
    "epoch": info.epoch,
    "mask_seed": info.mask_seed,
    "batch_size": info.batch_size,
    "metrics": info.metrics,
    "run_config": info.run_config,
  }
  write_json_atomic(out / MODEL_FILE, model)
  write_text_atomic(out / "README.md", model_card(info, sum(a.size for a in flat.values())))
  return out


def _number(x: Any) -> str:
  return "n/a" if x is None else f"{x:.4f}"


def model_card(info: ModelInfo, num_params: int) -> str:
  """The README.md of an exported model: what it is, where it comes from, its metrics at export."""
  data = info.run_config.get("data", {})
  enc = info.encoder
  head = (
    f"# {info.method.upper()} sentiment model ({info.dataset})\n\n"
    f"Exported with msa_jax {__version__}.\n\n"
    f"- method: {info.method} ({num_params:,} parameters)\n"
    f"- data: {data.get('path')} (dataset {info.dataset})\n"
    f"- text encoder: {info.run_config.get('encoder')} ({enc.num_hidden_layers} layers, hidden "
    f"{enc.hidden_size}, vocabulary of {enc.vocab_size} ids in encoder/vocab.txt)\n"
    f"- selection: the checkpoint of epoch {info.epoch} (seed {info.seed}), best on the "
    f"validation split by {info.selection}\n\n"
  )
  keys = metrics_lib.metric_keys(info.dataset)
  if info.metrics:
    rows = [
      f"| {name} | " + " | ".join(_number(m.get(k)) for k in keys) + " |"
      for name, m in info.metrics.items()
    ]
    table = (
      "## Metrics at export\n\n"
      "The run's own evaluation of this checkpoint (accuracies and F1 as fractions).\n\n"
      f"| evaluation | {' | '.join(keys)} |\n|---|{'---|' * len(keys)}\n" + "\n".join(rows) + "\n\n"
    )
  else:
    table = "## Metrics at export\n\nNone: the run had not finished its evaluation.\n\n"
  use = (
    "## Use\n\n"
    "    import msa_jax\n"
    "    from msa_jax import data\n"
    "    predictor = msa_jax.restore('THIS_DIRECTORY')\n"
    "    out = predictor.predict(data.load('FILE.pkl')['test'])   # out.predictions, out.ids\n\n"
    "or `python scripts/predict.py --workdir THIS_DIRECTORY --data FILE.pkl --out preds.csv`.\n\n"
    f"Files: `{MODEL_FILE}` (method, model config, selection, metrics, the run's config), "
    f"`{PARAMS_FILE}` (one tensor per parameter, named by its path joined with '/'), "
    f"`{ENCODER_DIR}/config.json` and `{ENCODER_DIR}/vocab.txt` (the text encoder).\n"
  )
  return head + table + use
