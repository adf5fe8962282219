"""The training program: data, per-seed training with validation selection, final evaluation.

`run(config, workdir, mode)` is what `train.py` calls. For each seed of `config.seeds`:
1. build the method (model, loss, optimizer) from the config and the data shapes;
2. train with a jit-compiled step sharded over every device; after each epoch evaluate the
   validation split, keep one best checkpoint per selection metric (ties keep the earlier epoch),
   save the latest composite checkpoint (state + data iterator + history), stop early if the
   method asks for it;
3. evaluate every selected checkpoint on the method's final evaluation sets (test only; the test
   split is never used for selection, SPEC §9).
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
from jax.sharding import NamedSharding, PartitionSpec as P

from msa_jax import metrics as metrics_lib
from msa_jax.data import pipeline
from msa_jax.data.split import Split
from msa_jax.evaluate import reports
from msa_jax.train import checkpoints as ckpt_lib
from msa_jax.train import sharding
from msa_jax.train.logging import MetricWriter
from msa_jax.train.method import Method
from msa_jax.train.state import TrainState, create_state, make_train_step

# Config keys that may differ between a run and its resumption. `seeds` may change because every
# seed trains in its own seed_N directory: adding seeds to a finished run trains only the new ones
# and rewrites results.json (and config.json's seed list) for the new list.
_RESUMABLE_KEYS = frozenset({"progress", "log_every_steps", "seeds"})


class RunConfigError(ValueError):
  """A config or workdir problem a user can fix (bad value, a workdir holding another run)."""


class NonFiniteLossError(FloatingPointError):
  """Training produced a non-finite loss; the message names the step and the last good checkpoint."""


def parse_seeds(seeds: Any) -> tuple[int, ...]:
  """`"1111,1112,1113"`, an int, or a sequence of ints -> a tuple of distinct ints."""
  if isinstance(seeds, int):
    return (seeds,)
  if isinstance(seeds, str):
    parts = [p.strip() for p in seeds.split(",") if p.strip()]
  else:
    parts = list(seeds)
  try:
    out = tuple(int(p) for p in parts)
  except (TypeError, ValueError):
    raise RunConfigError(f"config.seeds={seeds!r}: expected comma-separated integers, e.g. '1111,1112,1113'")
  if not out or len(set(out)) != len(out):
    raise RunConfigError(f"config.seeds={seeds!r}: expected at least one seed and no repeats")
  return out


# ---- workdir ----------------------------------------------------------------------------------------

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
  with open(saved, encoding="utf-8") as f:
    previous = json.load(f)
  changes = _diff(previous, _config_dict(config))
  if changes:
    raise RunConfigError(
        f"workdir {workdir} holds a run with a different config ({'; '.join(changes[:8])}"
        f"{' ...' if len(changes) > 8 else ''}); nothing was changed there. Use a new --workdir, "
        "or the same config to resume it.")


def record_config(workdir: pathlib.Path, config: ml_collections.ConfigDict) -> None:
  """Creates `workdir` and writes its config.json (once; a resumed run keeps the original, except
  for a changed seed list)."""
  workdir.mkdir(parents=True, exist_ok=True)
  if jax.process_index() != 0:
    return
  path = workdir / "config.json"
  if path.exists():
    with open(path, encoding="utf-8") as f:
      saved = json.load(f)
    if parse_seeds(saved.get("seeds")) == parse_seeds(config.seeds):
      return
  reports.write_json_atomic(path, _config_dict(config))


# ---- data ---------------------------------------------------------------------------------------------

def load_data(config: ml_collections.ConfigDict) -> dict[str, Split]:
  """The splits named by `config.data`, generating the synthetic benchmark on first use."""
  from msa_jax.data import mmsa
  path = pathlib.Path(config.data.path).expanduser()
  if not path.exists():
    if config.data.get("synthetic"):
      from msa_jax.data import synthetic
      print(f"[msa_jax] generating the synthetic '{config.data.synthetic}' benchmark at {path} "
            f"(seed {config.data.synthetic_seed}, scale {config.data.synthetic_scale})", flush=True)
      synthetic.ensure_synthetic(path, config.data.synthetic, seed=config.data.synthetic_seed,
                                 scale=config.data.synthetic_scale)
    else:
      raise RunConfigError(f"config.data.path={str(path)!r} does not exist (an MMSA .pkl file, a GEAR "
                           "split directory or a directory from scripts/convert_data.py is expected)")
  # Every synthetic preset uses the bert-base-uncased vocabulary, SIMS-shaped ones included (SPEC §7).
  vocab_size = 30522 if config.data.get("synthetic") else None
  splits = mmsa.load_mmsa(path, dataset=config.data.dataset, vocab_size=vocab_size)
  ood = config.data.get("ood", "")
  if ood and ood != "planted":
    # The named file decides the OOD splits: splits the data file carries (planted synthetic ones,
    # a GEAR directory's released ones) are replaced, not mixed with the file's.
    from msa_jax.data.split import OOD_SPLITS
    from msa_jax.evaluate import ood as ood_lib
    try:
      indices = ood_lib.load_ood_json(pathlib.Path(ood).expanduser(), len(splits["test"]))
    except (ValueError, FileNotFoundError) as e:
      raise RunConfigError(f"config.data.ood={ood!r}: {e}") from None
    splits = ood_lib.apply_ood({k: v for k, v in splits.items() if k not in OOD_SPLITS}, indices)
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


# ---- evaluation ------------------------------------------------------------------------------------

def make_predict(method: Method, mesh, rates_per_pass: int | None = None) -> Any:
  """One compiled program for the method's prediction at every missing rate:
  (params, batch, key, rates) -> (R, B).

  `rates_per_pass` rates are vmapped together and the passes run in sequence inside the program
  (`jax.lax.map(..., batch_size=rates_per_pass)`), which bounds the evaluation memory at large frame
  counts (MOSEI-shaped LNLN at batch 64: about 1.9 GiB per rate in flight, measured); None vmaps
  all rates at once.
  """
  def fn(params, batch, key, rates):
    one = lambda r: method.predict_fn(params, batch, key, r)
    if rates_per_pass is None:
      return jax.vmap(one)(rates)
    return jax.lax.map(one, rates, batch_size=rates_per_pass)

  repl = sharding.replicated(mesh)
  return jax.jit(fn, in_shardings=(repl, sharding.batch_sharded(mesh), repl, repl),
                 out_shardings=NamedSharding(mesh, P(None, sharding.DATA_AXIS)))


def predict_split(predict, params: Any, split: Split, batch_size: int, mesh, key: jax.Array,
                  rates: list[float]) -> np.ndarray:
  """Predictions (R, N) for every sample of `split` at each missing rate, in split order."""
  ds = pipeline.eval_dataset(split, batch_size, process_index=jax.process_index(),
                             process_count=jax.process_count())
  rates_arr = jnp.asarray(rates, jnp.float32)
  out = []
  for local in pipeline.iterate(ds):
    batch = sharding.put_batch(local, mesh)
    out.append(sharding.to_host(predict(params, batch, key, rates_arr)))
  return np.concatenate(out, axis=1)[:, :len(split)]


def evaluate(predict, params, split: Split, batch_size: int, mesh, key, rates: list[float],
             dataset: str) -> list[dict[str, float]]:
  """MMSA metrics of `split` at each rate (one compiled program covers all rates)."""
  preds = predict_split(predict, params, split, batch_size, mesh, key, rates)
  return [with_derived(metrics_lib.mmsa_metrics(p, split.labels, dataset)) for p in preds]


def with_derived(m: dict[str, float]) -> dict[str, float]:
  """Adds `Acc_2_mean` = mean(Has0_acc_2, Non0_acc_2), GEAR's default selection criterion (SPEC §5)."""
  if "Has0_acc_2" in m:
    m = dict(m)
    m["Acc_2_mean"] = 0.5 * (m["Has0_acc_2"] + m["Non0_acc_2"])
  return m


# ---- one seed ------------------------------------------------------------------------------------

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
    return reports._jsonable(dataclasses.asdict(self))

  @classmethod
  def from_json(cls, d: dict) -> "History":
    d = dict(d)
    d["patience_best"] = float("nan") if d.get("patience_best") is None else d["patience_best"]
    for v in d.get("best", {}).values():
      v["value"] = float("nan") if v.get("value") is None else v["value"]
    return cls(**d)


def _improves_patience(metric: str, new: float, best: float, min_delta: float = 1e-6) -> bool:
  if math.isnan(new):
    return False
  if math.isnan(best):
    return True
  return new <= best - min_delta if metric in metrics_lib.LOWER_IS_BETTER else new >= best + min_delta


def train_seed(config: ml_collections.ConfigDict, method: Method, splits: dict[str, Split], mesh,
               seed: int, seed_dir: pathlib.Path, mode: str = "train") -> dict:
  """Trains (unless mode == "eval") and evaluates one seed; returns its results and writes them."""
  dataset = config.data.dataset
  key = jax.random.key(seed)
  k_init, k_train = jax.random.fold_in(key, 0), jax.random.fold_in(key, 1)
  k_eval = jax.random.key(config.get("mask_seed", 0))
  batch_size = config.batch_size
  train_ds = pipeline.train_dataset(splits["train"], batch_size, seed, process_index=jax.process_index(),
                                    process_count=jax.process_count())
  spe = pipeline.steps_per_epoch(len(splits["train"]), batch_size)
  example = sharding.put_batch(train_ds[0], mesh)
  init = jax.jit(lambda k, b: create_state(method.init_params(k, b), method.optimizer),
                 out_shardings=sharding.replicated(mesh))
  state = init(k_init, example)
  abstract_state = ckpt_lib.abstract(state)
  ckpts = ckpt_lib.Checkpoints(seed_dir / "checkpoints", method.selection_metrics, keep=config.checkpoint_keep)
  history = History(best={m: {"value": float("nan"), "epoch": None} for m in method.selection_metrics})
  data_state = None
  if ckpts.latest_step() is not None:
    state, data_state, meta = ckpts.restore_latest(abstract_state)
    history = History.from_json(meta)
    print(f"[msa_jax] seed {seed}: resumed from step {int(state.step)} (epoch {history.epoch}) in "
          f"{ckpts.directory}", flush=True)
  predict = make_predict(method, mesh, config.get("eval_rates_per_pass", None))
  writer = MetricWriter(seed_dir, tensorboard=config.get("tensorboard", True))
  try:
    if mode == "train":
      state, history = _train_epochs(config, method, splits, mesh, seed, state, history, train_ds,
                                     data_state, spe, ckpts, predict, writer, k_train, k_eval)
    results = _final_evaluation(config, method, splits, mesh, ckpts, abstract_state, predict, k_eval, dataset)
  finally:
    writer.close()
    ckpts.close()
  record = {"seed": seed, "epochs_trained": history.epoch, "stopped_early": history.stopped,
            "best": history.best, "results": results}
  if jax.process_index() == 0:
    reports.write_json_atomic(seed_dir / "results.json", record)
  return record


def _train_epochs(config, method, splits, mesh, seed, state, history, train_ds, data_state, spe,
                  ckpts, predict, writer, k_train, k_eval):
  from tqdm.auto import tqdm
  dataset = config.data.dataset
  repl, batch_sh = sharding.replicated(mesh), sharding.batch_sharded(mesh)
  step_fn = jax.jit(make_train_step(method.loss_fn, method.optimizer),
                    in_shardings=(repl, batch_sh, repl), out_shardings=(repl, repl), donate_argnums=(0,))
  it = pipeline.restore_iterator(train_ds, data_state)
  valid_rate = [0.0 if method.valid_rate is None else method.valid_rate]
  primary = method.selection_metrics[0]
  show = config.get("progress", True) and jax.process_index() == 0 and sys.stderr.isatty()
  log_every = int(config.get("log_every_steps", 0))
  while history.epoch < config.max_epochs and not history.stopped:
    epoch = history.epoch + 1
    t0 = time.perf_counter()
    losses, aux_sum = [], {}
    bar = tqdm(range(spe), desc=f"seed {seed} epoch {epoch}/{config.max_epochs}", leave=False, disable=not show)
    for _ in bar:
      step = int(state.step)
      batch = sharding.put_batch(next(it), mesh)
      state, m = step_fn(state, batch, k_train)
      loss = float(m["loss"])
      if not math.isfinite(loss):
        last = ckpts.latest_step()
        raise NonFiniteLossError(
            f"non-finite loss {loss} at step {step} (seed {seed}, epoch {epoch}); training stopped. The last "
            f"good checkpoint is {'step ' + str(last) if last is not None else 'none'} under {ckpts.directory}")
      losses.append(loss)
      for k, v in m.items():
        aux_sum[k] = aux_sum.get(k, 0.0) + float(v)
      if log_every and (step + 1) % log_every == 0:
        writer.write_step(step + 1, {f"train/{k}": float(v) for k, v in m.items()}, epoch=epoch, seed=seed)
      bar.set_postfix(loss=f"{loss:.4f}")
    train_time = time.perf_counter() - t0
    t1 = time.perf_counter()
    val = evaluate(predict, state.params, splits["valid"], config.eval_batch_size, mesh, k_eval, valid_rate,
                   dataset)[0]
    valid_time = time.perf_counter() - t1
    t2 = time.perf_counter()
    # The first epoch is every metric's best so far, even where the metric is NaN (e.g. Corr of a
    # constant prediction), so that each selection metric always has a checkpoint to evaluate.
    improved = [m for m in method.selection_metrics
                if history.best[m]["epoch"] is None or metrics_lib.is_better(m, val[m], history.best[m]["value"])]
    for metric in improved:
      history.best[metric] = {"value": val[metric], "epoch": epoch}
    ckpts.save_best(improved, epoch, state.params, {"epoch": epoch, "valid": reports._jsonable(val)})
    if method.patience is not None:
      if _improves_patience(primary, val[primary], history.patience_best):
        history.patience_best, history.bad_epochs = val[primary], 0
      else:
        history.bad_epochs += 1
        history.stopped = history.bad_epochs >= method.patience
    history.epoch = epoch
    train_means = {f"train/{k}": v / spe for k, v in aux_sum.items()}
    history.epochs.append({"epoch": epoch, "step": int(state.step), **train_means,
                           **{f"valid/{k}": v for k, v in val.items()}})
    ckpts.save_latest(int(state.step), state, pipeline.iterator_state(it), history.to_json())
    checkpoint_time = time.perf_counter() - t2
    writer.write(int(state.step), {**train_means, **{f"valid/{k}": v for k, v in val.items()},
                                   "time/train_epoch_s": train_time, "time/valid_s": valid_time,
                                   "time/checkpoint_s": checkpoint_time}, epoch=epoch, seed=seed)
    if jax.process_index() == 0:
      shown = " ".join(f"{k}={val[k]:.4f}" for k in method.selection_metrics[:3])
      print(f"[msa_jax] seed {seed} epoch {epoch}/{config.max_epochs} step {int(state.step)} "
            f"loss {np.mean(losses):.4f} | valid{'' if method.valid_rate is None else f'@{method.valid_rate}'} "
            f"{shown} | train {train_time:.1f}s valid {valid_time:.1f}s ckpt {checkpoint_time:.1f}s"
            f"{' | best: ' + ','.join(improved) if improved else ''}"
            f"{' | early stop' if history.stopped else ''}", flush=True)
  return state, history


def _final_evaluation(config, method, splits, mesh, ckpts, abstract_state, predict, k_eval, dataset) -> dict:
  """Every selected checkpoint on every final evaluation set: {selection: {eval: metrics}}.

  Selection metrics whose best epoch coincides share one checkpoint, so it is evaluated once.
  """
  groups: dict[str, list[float | None]] = {}
  for ev in method.final_evals:
    groups.setdefault(ev.split, []).append(ev.rate)
  for split_name in groups:
    if split_name not in splits:
      raise RunConfigError(f"evaluation split {split_name!r} is not in the data (have {sorted(splits)})")
  by_epoch: dict[int, dict] = {}
  results: dict[str, dict] = {}
  for metric in method.selection_metrics:
    epoch = ckpts.best_epoch(metric)
    if epoch is None:
      raise RunConfigError(f"no selected checkpoint for {metric!r} in {ckpts.directory}: train first "
                           "(--mode=train)")
    if epoch not in by_epoch:
      params, _ = ckpts.restore_best(metric, abstract_state.params)
      evals = {}
      for split_name, rates in groups.items():
        real = [0.0 if r is None else r for r in rates]
        for r, m in zip(rates, evaluate(predict, params, splits[split_name], config.eval_batch_size, mesh,
                                        k_eval, real, dataset)):
          evals[split_name if r is None else f"{split_name}@{r:.1f}"] = m
      by_epoch[epoch] = evals
    results[metric] = by_epoch[epoch]
  return results


# ---- the whole run -------------------------------------------------------------------------------

def _finished_seeds(results_path: pathlib.Path) -> tuple[int, ...]:
  with open(results_path, encoding="utf-8") as f:
    return tuple(int(s) for s in json.load(f).get("seeds", ()))


def run(config: ml_collections.ConfigDict, workdir: str | pathlib.Path, mode: str = "train") -> dict:
  """Trains and evaluates every seed of `config.seeds` in `workdir`; returns the summary dict."""
  from msa_jax.train import methods
  if mode not in ("train", "eval"):
    raise RunConfigError(f"--mode={mode!r}: expected 'train' or 'eval'")
  workdir = pathlib.Path(workdir).expanduser().absolute()
  seeds = parse_seeds(config.seeds)
  results_path = workdir / "results.json"
  check_workdir(workdir, config)
  if mode == "train" and results_path.exists() and _finished_seeds(results_path) == seeds:
    print(f"[msa_jax] run complete: results in {results_path} and {workdir / 'results.md'} "
          "(use a new --workdir to train again, or --mode=eval to re-evaluate)", flush=True)
    with open(results_path, encoding="utf-8") as f:
      return json.load(f)
  splits = load_data(config)
  mesh = sharding.make_mesh()
  check_batches(config, splits, mesh)
  if jax.process_index() == 0:
    print(f"[msa_jax] data parallel over {mesh.devices.size} {jax.default_backend()} devices in "
          f"{jax.process_count()} process(es); global batch {config.batch_size}", flush=True)
  method = methods.build(config, splits)
  record_config(workdir, config)
  per_seed = {}
  for seed in seeds:
    per_seed[str(seed)] = train_seed(config, method, splits, mesh, seed, workdir / f"seed_{seed}", mode)
  summary = methods.summarise(config, method, per_seed)
  if jax.process_index() == 0:
    reports.write_json_atomic(results_path, summary)
    reports.write_text_atomic(workdir / "results.md", methods.markdown(config, method, summary))
    print(f"[msa_jax] results: {results_path}\n" + methods.markdown(config, method, summary), flush=True)
  return summary
