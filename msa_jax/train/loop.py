"""The training program: data, per-seed training with validation selection, final evaluation.

`run(config, workdir, mode)` is what `train.py` calls. For each seed of `config.seeds`:
1. build the method (model, loss, optimizer) from the config and the data shapes;
2. train with a jit-compiled step sharded over every device; after each epoch evaluate the
   validation split, keep one best checkpoint per selection metric (ties keep the earlier epoch),
   save the latest composite checkpoint (state + data iterator + history), stop early if the
   method asks for it;
3. evaluate every selected checkpoint on the method's final evaluation sets (test only; the test
   split is never used for selection, docs/methods.md §9) with `msa_jax.evaluate`.
Then results of all seeds and their mean ± std are written to `results.json` / `results.md`.

Re-running the same command resumes from the latest checkpoint, or reports that the run is
complete. A workdir that holds a different config is refused.
"""

from __future__ import annotations

import dataclasses
import json
import math
import pathlib
import sys
import time
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from msa_jax import data, sharding, xla
from msa_jax import metrics as metrics_lib
from msa_jax.data import ood as ood_lib
from msa_jax.data import pipeline
from msa_jax.data.split import IID_SPLITS, OOD_SPLITS, OOD_VALID_SPLITS, Split
from msa_jax.errors import NonFiniteLossError, RunConfigError
from msa_jax.evaluate.diagnostics import cue_weight_summary
from msa_jax.evaluate.final import final_evaluation
from msa_jax.evaluate.predict import bind, evaluate, make_predict, predict_split
from msa_jax.io import read_json, to_jsonable, write_json_atomic, write_text_atomic
from msa_jax.text import BERT_UNCASED_VOCAB_SIZE
from msa_jax.train import checkpoints as ckpt_lib
from msa_jax.train import methods, validate_config
from msa_jax.train import workdir as workdir_lib
from msa_jax.train.logging import MetricWriter
from msa_jax.train.method import Method
from msa_jax.train.state import TrainState, create_state, make_seeds_train_step, make_train_step
from msa_jax.train.validate_config import parse_seeds

# Config keys that may differ between a run and its resumption. `seeds` may change because every
# seed trains in its own seed_N directory: adding seeds to a finished run trains only the new ones
# and rewrites results.json (and config.json's seed list) for the new list.
_RESUMABLE_KEYS = frozenset({"progress", "log_every_steps", "seeds", "compile_cache"})


# ---- workdir -------------------------------------------------------------------------------------


def _config_dict(config: ml_collections.ConfigDict) -> dict:
  return json.loads(config.to_json_best_effort())


def _diff(a: Any, b: Any, prefix: str = "") -> list[str]:
  if isinstance(a, dict) and isinstance(b, dict):
    out = []
    for k in sorted(set(a) | set(b)):
      if not prefix and k in _RESUMABLE_KEYS:
        continue
      out += _diff(a.get(k), b.get(k), f"{prefix}{k}.")
    return out
  return [] if a == b else [f"{prefix[:-1]}: {a!r} -> {b!r}"]


def check_workdir(workdir: pathlib.Path, config: ml_collections.ConfigDict) -> None:
  """Refuses a workdir that holds a run with a different config (nothing there is touched)."""
  saved = workdir / "config.json"
  if not saved.exists():
    return
  previous = read_json(saved)
  changes = _diff(previous, _config_dict(config))
  if changes:
    raise RunConfigError(
      f"workdir {workdir} holds a run with a different config ({'; '.join(changes[:8])}"
      f"{' ...' if len(changes) > 8 else ''}); nothing was changed there. Use a new --workdir, "
      "or the same config to resume it."
    )


def record_config(workdir: pathlib.Path, config: ml_collections.ConfigDict) -> None:
  """Creates `workdir` and writes its config.json (once; a resumed run keeps the original, except
  for a changed seed list)."""
  workdir.mkdir(parents=True, exist_ok=True)
  if jax.process_index() != 0:
    return
  path = workdir / "config.json"
  if path.exists():
    saved = read_json(path)
    if parse_seeds(saved.get("seeds")) == parse_seeds(config.seeds):
      return
  write_json_atomic(path, _config_dict(config))


# ---- data ----------------------------------------------------------------------------------------


def load_data(config: ml_collections.ConfigDict) -> dict[str, Split]:
  """The splits named by `config.data`, generating the synthetic benchmark on first use."""
  path = pathlib.Path(config.data.path).expanduser()
  default = synthetic_default_path(config)
  if not path.exists() and not data.is_tfds(config.data.path):
    if default is not None and path.absolute() == default.absolute():
      from msa_jax.data import synthetic

      print(
        f"[msa_jax] generating the synthetic '{config.data.synthetic}' benchmark "
        f"(synth-{config.data.synthetic_version}) at {path} (seed {config.data.synthetic_seed}, "
        f"scale {config.data.synthetic_scale})",
        flush=True,
      )
      synthetic.ensure_synthetic(
        path,
        config.data.synthetic,
        seed=config.data.synthetic_seed,
        scale=config.data.synthetic_scale,
        version=config.data.synthetic_version,
      )
    else:
      raise RunConfigError(
        f"config.data.path={str(path)!r} does not exist (an MMSA .pkl file, a GEAR "
        "split directory or a directory from scripts/convert_data.py is expected"
        + (f"; the synthetic benchmark is generated only at {str(default)!r}" if default else "")
        + ")"
      )
  # Every synthetic preset uses the bert-base-uncased vocabulary, SIMS-shaped ones included
  # (docs/methods.md §7).
  vocab_size = BERT_UNCASED_VOCAB_SIZE if config.data.synthetic else None
  splits, metadata = data.load_with_metadata(
    path, dataset=config.data.dataset, vocab_size=vocab_size
  )
  want = f"synth-{config.data.synthetic_version}"
  if config.data.synthetic and metadata.get("benchmark_version", want) != want:
    raise RunConfigError(
      f"config.data.path={str(path)!r} holds {metadata['benchmark_version']}, "
      f"but config.data.synthetic_version={config.data.synthetic_version!r}: "
      "give each version its own data.path"
    )
  # Only the configs of methods that evaluate OOD splits (GEAR) have `data.ood`.
  ood = config.data.ood if "ood" in config.data else ""
  if ood and ood not in ("planted", "none"):
    # The named file decides the OOD test and validation splits: splits the data file carries
    # (planted synthetic ones, a GEAR directory's released ones) are replaced, not mixed with the
    # file's. Its cue signs fill the IID splits that carry none (docs/methods.md §6).
    sizes = {k: len(splits[k]) for k in IID_SPLITS if k in splits}
    try:
      found = ood_lib.read_ood_file(pathlib.Path(ood).expanduser(), sizes)
    except (ValueError, FileNotFoundError) as e:
      raise RunConfigError(f"config.data.ood={ood!r}: {e}") from None
    base = {k: v for k, v in splits.items() if k not in OOD_SPLITS + OOD_VALID_SPLITS}
    splits = ood_lib.apply_ood(base, found.indices, cue_signs=found.cue_signs)
  return _check_ood(config, path, splits)


def synthetic_default_path(config: ml_collections.ConfigDict) -> pathlib.Path | None:
  """Where the synthetic benchmark of `config.data` is generated on first use (the config's
  default `data.path`), or None when the config names no synthetic preset."""
  if not config.data.synthetic:
    return None
  from msa_jax.data import synthetic

  return pathlib.Path(
    synthetic.default_path(
      config.data.synthetic, config.data.synthetic_seed, config.data.synthetic_version
    )
  )


def _check_ood(config: ml_collections.ConfigDict, path: pathlib.Path, splits: dict) -> dict:
  """`data.ood=none` drops the OOD test splits (OOD validation splits stay for selection); a
  method that evaluates OOD splits (a config with `data.ood`) refuses data without them unless
  told so."""
  if "ood" not in config.data:
    return splits
  if config.data.ood == "none":
    return {k: v for k, v in splits.items() if k not in OOD_SPLITS}
  missing = [k for k in OOD_SPLITS if k not in splits]
  if missing:
    raise RunConfigError(
      f"config.data.path={str(path)!r} has no OOD test splits {', '.join(missing)} (a GEAR "
      "directory's test_nn_*.pkl files, or ood_* splits of a pickle): pass "
      "--config.data.ood=FILE.ood.json from scripts/build_ood_splits.py, or --config.data.ood=none "
      "to train and report the IID test split only"
    )
  return splits


def check_batches(config: ml_collections.ConfigDict, splits: dict[str, Split], mesh) -> None:
  """Batch sizes that fit the devices, the processes and the training split, or a clear error."""
  try:
    sharding.check_batch_size(config.batch_size, mesh)
    sharding.check_batch_size(config.eval_batch_size, mesh, "eval_batch_size")
    pipeline.steps_per_epoch(len(splits["train"]), config.batch_size)
  except ValueError as e:
    raise RunConfigError(f"config: {e}") from None
  if config.max_epochs < 1:
    raise RunConfigError(f"config.max_epochs={config.max_epochs}: expected >= 1")


# ---- training: one seed, or several in one program (config.vmap_seeds) ------------------------


@dataclasses.dataclass
class History:
  """Per-epoch validation record and selection state, saved in every latest checkpoint."""

  epoch: int = 0
  best: dict = dataclasses.field(default_factory=dict)  # metric -> {"value", "epoch"}
  patience_best: float = float("nan")
  bad_epochs: int = 0
  stopped: bool = False
  epochs: list = dataclasses.field(default_factory=list)

  def to_json(self) -> dict:
    return to_jsonable(dataclasses.asdict(self))

  @classmethod
  def from_json(cls, d: dict) -> History:
    d = dict(d)
    d["patience_best"] = float("nan") if d.get("patience_best") is None else d["patience_best"]
    for v in d.get("best", {}).values():
      v["value"] = float("nan") if v.get("value") is None else v["value"]
    return cls(**d)

  def active(self, max_epochs: int) -> bool:
    """Whether this seed still trains: not stopped early and below `max_epochs`."""
    return self.epoch < max_epochs and not self.stopped


def update_best(best: dict[str, dict], val: dict[str, float], epoch: int) -> list[str]:
  """Model selection after one epoch: each metric of `best` ({metric: {"value", "epoch"}}) whose
  validation value in `val` improves on its best so far (or that has none yet, even where the value
  is NaN, so that every metric has a checkpoint) takes this epoch. Changes `best`; returns the
  metrics that improved. Ties keep the earlier epoch."""
  improved = [
    m
    for m in best
    if best[m]["epoch"] is None or metrics_lib.is_better(m, val[m], best[m]["value"])
  ]
  for metric in improved:
    best[metric] = {"value": val[metric], "epoch": epoch}
  return improved


def _improves_patience(metric: str, new: float, best: float, min_delta: float = 1e-6) -> bool:
  if math.isnan(new):
    return False
  if math.isnan(best):
    return True
  return (
    new <= best - min_delta if metric in metrics_lib.LOWER_IS_BETTER else new >= best + min_delta
  )


def data_order_seed(config: ml_collections.ConfigDict, seed: int) -> int:
  """The shuffle seed of `seed`'s training batches: `config.data_seed` when >= 0; else, with
  `config.vmap_seeds` (the seeds share one data order), the first of `config.seeds`; else `seed`."""
  fixed = int(config.data_seed)
  if fixed >= 0:
    return fixed
  return parse_seeds(config.seeds)[0] if config.vmap_seeds else seed


@dataclasses.dataclass
class SeedRun:
  """One seed's keys, checkpoints, metric writer and validation history."""

  seed: int
  directory: pathlib.Path
  ckpts: ckpt_lib.Checkpoints
  writer: MetricWriter
  history: History
  k_init: jax.Array
  k_train: jax.Array

  @classmethod
  def open(
    cls, config: ml_collections.ConfigDict, method: Method, seed: int, directory: pathlib.Path
  ) -> SeedRun:
    key = jax.random.key(seed)
    ckpts = ckpt_lib.Checkpoints(
      directory / "checkpoints", method.selection_metrics, keep=config.checkpoint_keep
    )
    history = History(
      best={m: {"value": float("nan"), "epoch": None} for m in method.selection_metrics}
    )
    writer = MetricWriter(directory, tensorboard=config.tensorboard)
    return cls(
      seed,
      directory,
      ckpts,
      writer,
      history,
      jax.random.fold_in(key, 0),
      jax.random.fold_in(key, 1),
    )

  def close(self) -> None:
    self.writer.close()
    self.ckpts.close()


def init_state_fn(method: Method, mesh):
  """The jit-compiled `(key, example batch) -> fresh TrainState` (one compile for every seed)."""
  return jax.jit(
    lambda k, b: create_state(method.init_params(k, b), method.optimizer),
    out_shardings=sharding.replicated(mesh),
    compiler_options=xla.compiler_options(),
  )


def train_step_fn(method: Method, mesh, seeds_axis: bool = False):
  """The jit of the training step: (state, batch, key) -> (state, metrics), the state donated;
  with `seeds_axis`, the vmapped step of `train_seeds_together` (+ an `active` mask)."""
  repl, batch_sh = sharding.replicated(mesh), sharding.batch_sharded(mesh)
  if seeds_axis:
    step, in_shardings = (
      make_seeds_train_step(method.loss_fn, method.optimizer),
      (repl, batch_sh, repl, repl),
    )
  else:
    step, in_shardings = make_train_step(method.loss_fn, method.optimizer), (repl, batch_sh, repl)
  return jax.jit(
    step,
    in_shardings=in_shardings,
    out_shardings=(repl, repl),
    donate_argnums=(0,),
    compiler_options=xla.compiler_options(),
  )


def train_seeds(
  config: ml_collections.ConfigDict,
  method: Method,
  splits: dict[str, Split],
  mesh,
  seeds: tuple[int, ...],
  workdir: pathlib.Path,
  mode: str = "train",
) -> dict[str, dict]:
  """Trains (unless mode == "eval") and evaluates every seed in its `workdir/seed_N` directory;
  returns {seed: record}. With `config.vmap_seeds` the seeds train together in one program on one
  shared data order (`data_order_seed`); otherwise, and to evaluate, one after another."""
  if mode == "train" and len(seeds) > 1 and config.vmap_seeds:
    print(
      f"[msa_jax] seeds {','.join(map(str, seeds))} train together (vmap_seeds) on the data order "
      f"of seed {data_order_seed(config, seeds[0])}",
      flush=True,
    )
    groups = [seeds]
  else:
    groups = [(seed,) for seed in seeds]
  records = {}
  for group in groups:
    records.update(_train_group(config, method, splits, mesh, group, workdir, mode))
  return records


def _train_group(
  config: ml_collections.ConfigDict,
  method: Method,
  splits: dict[str, Split],
  mesh,
  seeds: tuple[int, ...],
  workdir: pathlib.Path,
  mode: str,
) -> dict[str, dict]:
  """Trains (unless mode == "eval") and evaluates `seeds` in one program; returns {seed: record}.

  One seed trains on its own state. Several train as one stack (`jax.vmap` over parameters,
  optimizer state and keys; the batches are shared) and each keeps its own `seed_N` directory
  exactly as a separate run would: validation history, best checkpoints per selection metric,
  latest checkpoints (its slice of the stacked state), metrics and results. A seed that stops early
  is frozen (its updates are masked out) while the others go on; results equal separate runs with
  the same data order up to float rounding.
  """
  k_eval = jax.random.key(method.mask_seed)
  train_ds = pipeline.train_dataset(
    splits["train"],
    config.batch_size,
    data_order_seed(config, seeds[0]),
    process_index=jax.process_index(),
    process_count=jax.process_count(),
  )
  example = sharding.put_batch(pipeline.device_arrays(train_ds[0]), mesh)
  runs = [SeedRun.open(config, method, s, workdir / f"seed_{s}") for s in seeds]
  try:
    init = init_state_fn(method, mesh)
    abstract_state = ckpt_lib.abstract(jax.eval_shape(init, runs[0].k_init, example))
    restored, data_state = _restore(runs, abstract_state, config.max_epochs)
    predict = make_predict(method.predict_fn, mesh, method.eval_rates_per_pass)
    if mode == "train" and any(run.history.active(config.max_epochs) for run in runs):
      states = [s if s is not None else init(run.k_init, example) for run, s in zip(runs, restored)]
      state = states[0] if len(runs) == 1 else _stack(mesh, states)
      _train_epochs(
        config, method, splits, mesh, runs, state, train_ds, data_state, predict, k_eval
      )
      for run in runs:  # the last saves are written before anything is evaluated
        run.ckpts.wait_until_finished()
    return {
      str(run.seed): _finish_seed(
        config, method, splits, mesh, run, abstract_state, predict, k_eval
      )
      for run in runs
    }
  finally:
    for run in runs:
      run.close()


def _restore(runs: list[SeedRun], abstract_state, max_epochs: int) -> tuple[list, dict | None]:
  """Each seed's latest state (None: none saved) and the data-iterator state they share.

  The seeds that still train must resume from one step: if a kill fell between the seeds' saves of
  an epoch, the seeds ahead go back to the common step (its checkpoint is still kept)."""
  states, data_states = [], []
  for run in runs:
    if run.ckpts.latest_step() is None:
      states.append(None)
      data_states.append(None)
      continue
    state, data_state, meta = run.ckpts.restore_latest(abstract_state)
    run.history = History.from_json(meta)
    states.append(state)
    data_states.append(data_state)
  training = [i for i, run in enumerate(runs) if run.history.active(max_epochs)]
  steps = {0 if states[i] is None else int(states[i].step) for i in training}
  if len(steps) > 1:
    common = min(steps)
    for i in training:
      if states[i] is not None and int(states[i].step) != common:
        if common not in runs[i].ckpts.latest.all_steps():
          raise RunConfigError(
            f"seed {runs[i].seed}: cannot resume the seeds together at step {common}: "
            f"its checkpoint of that step is gone (under {runs[i].ckpts.directory})"
          )
        states[i], data_states[i], meta = runs[i].ckpts.restore_latest(abstract_state, step=common)
        runs[i].history = History.from_json(meta)
  # The training seeds are at one step now, so any of their iterator states is the shared one.
  common_data = next((data_states[i] for i in training if states[i] is not None), None)
  for run, state in zip(runs, states):
    if state is not None:
      _print_resumed(run, int(state.step))
  return states, common_data


def _print_resumed(run: SeedRun, step: int) -> None:
  print(
    f"[msa_jax] seed {run.seed}: resumed from step {step} (epoch {run.history.epoch}) in "
    f"{run.ckpts.directory}",
    flush=True,
  )


def _finish_seed(
  config, method, splits, mesh, run: SeedRun, abstract_state, predict, k_eval
) -> dict:
  """Evaluates the seed's selected checkpoints and writes its results.json; returns the record."""
  results = final_evaluation(
    method.final_evals,
    method.selection_metrics,
    splits,
    run.ckpts,
    abstract_state.params,
    lambda params, rates: bind(predict, params, mesh, k_eval, rates),
    config.eval_batch_size,
    config.data.dataset,
    _show_progress(config),
  )
  record = {
    "seed": run.seed,
    "epochs_trained": run.history.epoch,
    "stopped_early": run.history.stopped,
    "best": run.history.best,
    "results": results,
  }
  if jax.process_index() == 0:
    write_json_atomic(run.directory / "results.json", record)
  return record


def _check_finite(run: SeedRun, loss: float, step: int, epoch: int) -> None:
  if not math.isfinite(loss):
    last = run.ckpts.latest_step()
    raise NonFiniteLossError(
      f"non-finite loss {loss} at step {step} (seed {run.seed}, epoch {epoch}); training stopped. "
      f"The last good checkpoint is {'step ' + str(last) if last is not None else 'none'} under "
      f"{run.ckpts.directory}"
    )


def _show_progress(config) -> bool:
  return bool(config.progress) and jax.process_index() == 0 and sys.stderr.isatty()


def _progress(config, desc: str, total: int):
  from tqdm.auto import tqdm

  return tqdm(range(total), desc=desc, leave=False, disable=not _show_progress(config))


def _train_epochs(
  config, method, splits, mesh, runs: list[SeedRun], state, train_ds, data_state, predict, k_eval
) -> None:
  """Trains the seeds of `runs` epoch by epoch until none is active: one seed on its own `state`,
  several on their stack (every leaf with a leading seed axis; each metric of shape (S,); a seed
  that stopped early frozen by the step's `active` mask). `predict` (a one-seed `make_predict`
  program) validates one seed; a stack gets its vmapped program.

  The host dispatches step N+1 before it reads step N's metrics, so the device does not wait for
  the host between steps. A non-finite loss is found when its step is read; every step of an
  epoch is read before that epoch's checkpoint is saved, so the last checkpoint stays a good one.
  """
  stacked = len(runs) > 1
  step_fn = train_step_fn(method, mesh, seeds_axis=stacked)
  if stacked:
    predict = make_predict(method.predict_fn, mesh, method.eval_rates_per_pass, seeds_axis=True)
  diagnose = (
    None
    if method.diagnostic_fn is None
    else make_predict(method.diagnostic_fn, mesh, None, seeds_axis=stacked)
  )
  it = pipeline.restore_iterator(train_ds, data_state)
  spe = pipeline.steps_per_epoch(len(splits["train"]), config.batch_size)
  keys = _stack(mesh, [run.k_train for run in runs]) if stacked else runs[0].k_train
  take = _take_fn(mesh) if stacked else None
  names = f"seed{'s' if stacked else ''} {','.join(str(run.seed) for run in runs)}"
  while True:
    training = [i for i, run in enumerate(runs) if run.history.active(config.max_epochs)]
    if not training:
      return
    step_args = (
      (keys, jnp.asarray([i in training for i in range(len(runs))])) if stacked else (keys,)
    )
    epoch = runs[training[0]].history.epoch + 1
    t0 = time.perf_counter()
    # Each seed's step at the epoch's start, counted on the host from here on (a frozen seed does
    # not step, but it is not read either).
    metrics = _EpochMetrics(
      runs, training, epoch, int(config.log_every_steps), np.atleast_1d(np.asarray(state.step))
    )
    pending = None
    bar = _progress(config, f"{names} epoch {epoch}/{config.max_epochs}", spe)
    for j in bar:
      batch = sharding.put_batch(pipeline.device_arrays(next(it)), mesh)
      state, m = step_fn(state, batch, *step_args)
      if j == 0:
        xla.release_host_memory()  # what the first step's compile freed
      if pending is not None:
        bar.set_postfix(loss=" ".join(f"{loss:.4f}" for loss in metrics.read(pending)))
      pending = m
    metrics.read(pending)
    train_time = time.perf_counter() - t0
    t1 = time.perf_counter()
    vals = _validate(
      config, method, splits, mesh, state.params, predict, diagnose, k_eval, len(runs)
    )
    xla.release_host_memory()
    valid_time = time.perf_counter() - t1
    data_state = pipeline.iterator_state(it)
    for i in training:
      _end_epoch(
        method,
        runs[i],
        epoch,
        vals[i],
        take(state, i) if stacked else state,
        data_state,
        metrics.means(i),
        metrics.mean_loss(i),
        train_time,
        valid_time,
        config.max_epochs,
      )


def _validate(
  config, method: Method, splits: dict[str, Split], mesh, params, predict, diagnose, k_eval, n: int
) -> list[dict[str, float]]:
  """The validation record of each of the `n` seeds of `params` (a stack when n > 1): the metrics
  of "valid", those of the method's other validation splits as `<split>/<metric>`, the method's
  `valid_summary` and `diagnostic_summary` figures."""
  rate = [_valid_rate(method)]
  per_split: dict[str, list[dict]] = {}
  for name in method.valid_splits:
    out = evaluate(
      bind(predict, params, mesh, k_eval, rate),
      splits[name],
      config.eval_batch_size,
      config.data.dataset,
    )
    per_split[name] = [o[0] for o in out] if n > 1 else [out[0]]
  vals = []
  for i in range(n):
    val = dict(per_split["valid"][i])
    for name in method.valid_splits[1:]:
      val.update({f"{name}/{k}": v for k, v in per_split[name][i].items()})
    if method.valid_summary is not None:
      val.update(method.valid_summary({name: per_split[name][i] for name in per_split}))
    vals.append(val)
  if diagnose is not None:
    outputs = predict_split(
      bind(diagnose, params, mesh, k_eval, rate),
      splits["valid"],
      config.eval_batch_size,
      batch_axis=-2,
    )  # (R, N, K), or (S, R, N, K) for a stack
    for i in range(n):
      seed_out = outputs[i, 0] if n > 1 else outputs[0]
      vals[i].update(method.diagnostic_summary(seed_out, splits["valid"]))
  return vals


@dataclasses.dataclass
class _EpochMetrics:
  """One epoch's training metrics of the training seeds, read from the device step by step."""

  runs: list[SeedRun]
  training: list[int]  # indices into `runs` of the seeds that train this epoch
  epoch: int
  log_every: int
  first_steps: np.ndarray  # (S,): each seed's step at the epoch's start
  count: int = 0
  losses: list = dataclasses.field(default_factory=list)
  sums: dict = dataclasses.field(default_factory=dict)

  def read(self, metrics: dict[str, jax.Array]) -> list[float]:
    """Reads the next step's metrics (shape () for one seed, (S,) for a stack): stops on a
    non-finite loss, writes the per-step record every `log_every` steps and adds to the epoch's
    sums; returns the training seeds' losses."""
    m = {k: np.atleast_1d(np.asarray(v)) for k, v in metrics.items()}
    for i in self.training:
      run, step = self.runs[i], int(self.first_steps[i]) + self.count
      _check_finite(run, float(m["loss"][i]), step, self.epoch)
      if self.log_every and (step + 1) % self.log_every == 0:
        run.writer.write_step(
          step + 1,
          {f"train/{k}": float(v[i]) for k, v in m.items()},
          epoch=self.epoch,
          seed=run.seed,
        )
    self.count += 1
    self.losses.append(m["loss"].astype(np.float64))
    for k, v in m.items():
      self.sums[k] = self.sums.get(k, 0.0) + v.astype(np.float64)
    return [float(m["loss"][i]) for i in self.training]

  def means(self, i: int) -> dict[str, float]:
    """Seed `i`'s mean of every metric over the steps read."""
    return {k: float(v[i]) / self.count for k, v in self.sums.items()}

  def mean_loss(self, i: int) -> float:
    return float(np.mean(np.stack(self.losses)[:, i]))


def _valid_rate(method: Method) -> float:
  return 0.0 if method.valid_rate is None else method.valid_rate


def _end_epoch(
  method: Method,
  run: SeedRun,
  epoch: int,
  val: dict[str, float],
  state: TrainState,
  data_state: dict,
  train_means: dict[str, float],
  mean_loss: float,
  train_time: float,
  valid_time: float,
  max_epochs: int,
) -> None:
  """A seed's end of epoch: model selection on `val`, early stopping, the best and latest
  checkpoints, the metric records and the console line."""
  history, primary = run.history, method.selection_metrics[0]
  t2 = time.perf_counter()
  train_means = {**train_means, **cue_weight_summary(train_means)}
  improved = update_best(history.best, val, epoch)
  run.ckpts.save_best(improved, epoch, state.params, {"epoch": epoch, "valid": to_jsonable(val)})
  if method.patience is not None:
    if _improves_patience(primary, val[primary], history.patience_best):
      history.patience_best, history.bad_epochs = val[primary], 0
    else:
      history.bad_epochs += 1
      history.stopped = history.bad_epochs >= method.patience
  history.epoch = epoch
  train_means = {f"train/{k}": v for k, v in train_means.items()}
  history.epochs.append(
    {
      "epoch": epoch,
      "step": int(state.step),
      **train_means,
      **{f"valid/{k}": v for k, v in val.items()},
    }
  )
  run.ckpts.save_latest(int(state.step), state, data_state, history.to_json())
  checkpoint_time = time.perf_counter() - t2
  run.writer.write(
    int(state.step),
    {
      **train_means,
      **{f"valid/{k}": v for k, v in val.items()},
      "time/train_epoch_s": train_time,
      "time/valid_s": valid_time,
      "time/checkpoint_s": checkpoint_time,
    },
    epoch=epoch,
    seed=run.seed,
  )
  if jax.process_index() == 0:
    shown = " ".join(f"{k}={val[k]:.4f}" for k in method.selection_metrics[:3])
    print(
      f"[msa_jax] seed {run.seed} epoch {epoch}/{max_epochs} step {int(state.step)} "
      f"loss {mean_loss:.4f} | valid{'' if method.valid_rate is None else f'@{method.valid_rate}'} "
      f"{shown} | train {train_time:.1f}s valid {valid_time:.1f}s ckpt {checkpoint_time:.1f}s"
      f"{' | best: ' + ','.join(improved) if improved else ''}"
      f"{' | early stop' if history.stopped else ''}",
      flush=True,
    )


# ---- the seed stack (config.vmap_seeds) ------------------------------------------------------


def _stack(mesh, trees: list) -> Any:
  return jax.jit(
    lambda *t: jax.tree.map(lambda *x: jnp.stack(x), *t), out_shardings=sharding.replicated(mesh)
  )(*trees)


def _take_fn(mesh):
  """The jit-compiled `(stacked tree, i) -> seed i's slice` (one compile for every seed and
  epoch)."""
  return jax.jit(
    lambda t, i: jax.tree.map(lambda x: x[i], t), out_shardings=sharding.replicated(mesh)
  )


# ---- the whole run -------------------------------------------------------------------------------


def _finished_seeds(results_path: pathlib.Path) -> tuple[int, ...]:
  return tuple(int(s) for s in read_json(results_path).get("seeds", ()))


def run(
  config: ml_collections.ConfigDict, workdir: str | pathlib.Path, mode: str = "train"
) -> dict:
  """Trains and evaluates every seed of `config.seeds` in `workdir`; returns the summary dict.

  A config with side-by-side variants (`methods.variants`: GEAR with `gear.baseline`) runs each in
  `workdir/<variant>` as a run of its own (resumable, refused if its config differs), then writes
  the comparison to `workdir/results.json` and `results.md`."""
  if mode not in ("train", "eval"):
    raise RunConfigError(f"--mode={mode!r}: expected 'train' or 'eval'")
  validate_config.validate(config)
  workdir = pathlib.Path(workdir).expanduser().absolute()
  workdir_lib.check_writable(workdir)
  pairs = methods.variants(config)
  if pairs:
    check_workdir(workdir, config)
    summaries = {name: _run_one(cfg, workdir / name, mode) for name, cfg in pairs}
    comparison, text = methods.compare(config, summaries)
    record_config(workdir, config)
    if jax.process_index() == 0:
      write_json_atomic(
        workdir / "results.json", {"variants": list(summaries), "comparison": comparison}
      )
      write_text_atomic(workdir / "results.md", text)
      print(f"[msa_jax] comparison: {workdir / 'results.md'}\n{text}", flush=True)
    return {"variants": summaries, "comparison": comparison}
  return _run_one(config, workdir, mode)


def _run_one(config: ml_collections.ConfigDict, workdir: pathlib.Path, mode: str) -> dict:
  """`run` of a config without variants; a failure before the first checkpoint is undone."""
  with workdir_lib.undo_failed_start(workdir):
    return _run(config, workdir, mode)


def _run(config: ml_collections.ConfigDict, workdir: pathlib.Path, mode: str) -> dict:
  """`_run_one` inside its undo block."""
  seeds = parse_seeds(config.seeds)
  results_path = workdir / "results.json"
  check_workdir(workdir, config)
  if mode == "train" and results_path.exists() and _finished_seeds(results_path) == seeds:
    print(
      f"[msa_jax] run complete: results in {results_path} and {workdir / 'results.md'} "
      "(use a new --workdir to train again, or --mode=eval to re-evaluate)",
      flush=True,
    )
    return read_json(results_path)
  if mode == "eval":
    workdir_lib.check_trained(workdir, seeds)
  xla.enable_compilation_cache(config.compile_cache)
  splits = load_data(config)
  fingerprint = workdir_lib.data_fingerprint(config.data.path, splits)
  workdir_lib.check_fingerprint(workdir, fingerprint)
  mesh = sharding.make_mesh()
  check_batches(config, splits, mesh)
  if jax.process_index() == 0:
    print(
      f"[msa_jax] data parallel over {mesh.devices.size} {jax.default_backend()} devices in "
      f"{jax.process_count()} process(es); global batch {config.batch_size}",
      flush=True,
    )
  method = methods.build(config, splits)
  record_config(workdir, config)
  if jax.process_index() == 0:
    workdir_lib.record_fingerprint(workdir, fingerprint)
  per_seed = train_seeds(config, method, splits, mesh, seeds, workdir, mode)
  summary = methods.summarise(config, method, per_seed)
  if jax.process_index() == 0:
    write_json_atomic(results_path, summary)
    write_text_atomic(workdir / "results.md", methods.markdown(config, method, summary))
    print(
      f"[msa_jax] results: {results_path}\n" + methods.markdown(config, method, summary), flush=True
    )
  return summary
