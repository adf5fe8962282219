"""Orbax checkpoints: the latest k composite checkpoints plus one best checkpoint per selection
metric.

Layout under a seed's directory:
  checkpoints/latest/<step>/   state (params, optimizer state, step), data iterator state, meta
  checkpoints/best/<epoch>/    params and meta of every epoch that is currently the best for at
                               least one selection metric; `meta["best_for"]` lists those metrics.
Several selection metrics often peak at the same epoch (LNLN has six), so a best epoch is stored
once and an epoch no metric points to any more is deleted.

Orbax writes each checkpoint to a temporary directory and renames it when complete, so a killed
run never leaves a half-written checkpoint behind: only finished checkpoints are found on disk.

Saves are asynchronous (Orbax async checkpointing): `save_best` and `save_latest` return once every
array is in host memory (Orbax 0.12 copies the device arrays with `np.asarray` before `save`
returns; on the CPU backend that is a view that keeps its buffer, which XLA then does not donate),
so the next training step may donate and overwrite the state; the files are written and renamed
in a background thread. Every read (`restore_latest`, `restore_best`) and `close` first waits for
the pending saves, and a failed background write raises there or at the next save.

Ordering across the two managers, so that a kill at any moment resumes exactly:
- a best epoch that no metric points to any more is deleted only after the new best checkpoint is
  finished (the disk never holds fewer bests than the latest checkpoint's history names);
- a latest checkpoint starts only after every best save of earlier epochs has finished, and it
  records the best save of its own epoch (`best_save`). The two run concurrently; if the latest
  finishes and the run is killed before the best does, the next run rewrites that best checkpoint
  from the latest checkpoint's parameters (the same arrays) when it restores it.
"""

from __future__ import annotations

import copy
import pathlib
from typing import Any

import jax
import orbax.checkpoint as ocp


class Checkpoints:
  """The checkpoint managers of one training run (one seed)."""

  def __init__(
    self, directory: str | pathlib.Path, selection_metrics: tuple[str, ...], keep: int = 2
  ):
    self.directory = pathlib.Path(directory).absolute()
    self.selection_metrics = tuple(selection_metrics)
    opts = ocp.CheckpointManagerOptions(
      max_to_keep=keep, create=True, enable_async_checkpointing=True
    )
    self.latest = ocp.CheckpointManager(self.directory / "latest", options=opts)
    best_opts = ocp.CheckpointManagerOptions(create=True, enable_async_checkpointing=True)
    self.best = ocp.CheckpointManager(self.directory / "best", options=best_opts)
    kept = best_epochs(self.best)
    self._best_epoch = {m: kept.get(m) for m in self.selection_metrics}
    self._best_save: dict | None = None  # the best save since the last `save_latest`

  def latest_step(self) -> int | None:
    """The newest latest checkpoint, including one whose save is still being written."""
    return self.latest.latest_step()

  def save_latest(self, step: int, state: Any, data_state: dict, meta: dict) -> None:
    """Starts saving the composite checkpoint of `step`; returns once `state` is in host memory."""
    if self._best_save is None:  # a best save of an earlier epoch must finish first
      self._finish_best()
    best_save, self._best_save = self._best_save or {}, None
    self.latest.save(
      step,
      args=ocp.args.Composite(
        state=ocp.args.StandardSave(state),
        data=ocp.args.JsonSave(copy.deepcopy(data_state)),
        meta=ocp.args.JsonSave(copy.deepcopy(meta)),
        best_save=ocp.args.JsonSave(best_save),
      ),
    )

  def restore_latest(self, abstract_state: Any, step: int | None = None) -> tuple[Any, dict, dict]:
    """(state, data iterator state, meta) of the latest checkpoint, or of the kept one of `step`.

    A best checkpoint the restored checkpoint's epoch saved that a kill left unfinished is
    rewritten from the restored parameters."""
    self.wait_until_finished()
    step = self.latest.latest_step() if step is None else step
    if step is None:
      raise FileNotFoundError(f"no checkpoint under {self.directory / 'latest'}")
    items = {
      "state": ocp.args.StandardRestore(abstract_state),
      "data": ocp.args.JsonRestore(),
      "meta": ocp.args.JsonRestore(),
    }
    if (self.latest.directory / str(step) / "best_save").exists():  # absent before async saves
      items["best_save"] = ocp.args.JsonRestore()
    out = self.latest.restore(step, args=ocp.args.Composite(**items))
    best_save = dict(out["best_save"]) if "best_save" in items else {}
    if best_save and best_save["epoch"] not in self.best.all_steps():
      self._write_best(best_save["epoch"], out["state"].params, best_save["meta"])
      for m in best_save["meta"]["best_for"]:
        self._best_epoch[m] = best_save["epoch"]
      self._finish_best()
    return out["state"], dict(out["data"]), dict(out["meta"])

  def save_best(self, metrics: list[str], epoch: int, params: Any, meta: dict) -> None:
    """Starts saving `params` of `epoch` as the new best for each of `metrics` (once); best epochs
    that no metric points to any more are deleted once this save has finished."""
    if not metrics:
      return
    self._finish_best()
    for m in metrics:
      self._best_epoch[m] = epoch
    if epoch in self.best.all_steps():  # re-trained after a resume: replace the earlier save
      self.best.delete(epoch)
    meta = {**meta, "best_for": [m for m, e in self._best_epoch.items() if e == epoch]}
    self._write_best(epoch, params, meta)
    self._best_save = {"epoch": epoch, "meta": meta}

  def _write_best(self, epoch: int, params: Any, meta: dict) -> None:
    self.best.save(
      epoch,
      args=ocp.args.Composite(
        params=ocp.args.StandardSave(params), meta=ocp.args.JsonSave(copy.deepcopy(meta))
      ),
      force=True,
    )

  def _finish_best(self) -> None:
    """Waits for the pending best save, then deletes the best epochs no metric points to."""
    self.best.wait_until_finished()
    referenced = set(self._best_epoch.values())
    for old in self.best.all_steps():
      if old not in referenced:
        self.best.delete(old)

  def wait_until_finished(self) -> None:
    """Blocks until every pending save is written (raises if a background write failed)."""
    self._finish_best()
    self.latest.wait_until_finished()

  def restore_best(self, metric: str, abstract_params: Any) -> tuple[Any, dict]:
    self._finish_best()
    epoch = self._best_epoch.get(metric)
    if epoch is None:
      raise FileNotFoundError(f"no best checkpoint for {metric!r} under {self.best.directory}")
    out = self.best.restore(
      epoch,
      args=ocp.args.Composite(
        params=ocp.args.StandardRestore(abstract_params), meta=ocp.args.JsonRestore()
      ),
    )
    return out["params"], dict(out["meta"])

  def best_epoch(self, metric: str) -> int | None:
    """The epoch of the best checkpoint kept for `metric` (None before the first save)."""
    return self._best_epoch.get(metric)

  def close(self) -> None:
    """Waits for the pending saves, then closes both managers."""
    try:
      self.wait_until_finished()
    finally:
      self.latest.close()
      self.best.close()


def best_epochs(best: ocp.CheckpointManager) -> dict[str, int]:
  """Selection metric -> the epoch of its best checkpoint, read from the `best_for` lists of the
  checkpoints `best` holds (a metric several name: the latest epoch)."""
  out: dict[str, int] = {}
  for epoch in best.all_steps():
    meta = best.restore(epoch, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
    for m in meta.get("best_for", []):
      out[m] = max(epoch, out.get(m, epoch))
  return out


def open_best(directory: str | pathlib.Path) -> ocp.CheckpointManager:
  """The best checkpoints under a seed's `checkpoints/` directory, opened for reading (nothing is
  created)."""
  opts = ocp.CheckpointManagerOptions(create=False, enable_async_checkpointing=False)
  return ocp.CheckpointManager(pathlib.Path(directory).absolute() / "best", options=opts)


def restore_params(best: ocp.CheckpointManager, epoch: int, sharding: Any) -> tuple[Any, dict]:
  """(params, meta) of the best checkpoint of `epoch`, every array placed with `sharding` whatever
  the devices it was saved from (the shapes and dtypes come from the checkpoint itself)."""
  saved = ocp.StandardCheckpointHandler().metadata(best.directory / str(epoch) / "params")
  target = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=sharding), saved)
  out = best.restore(
    epoch,
    args=ocp.args.Composite(params=ocp.args.StandardRestore(target), meta=ocp.args.JsonRestore()),
  )
  return out["params"], dict(out["meta"])


def abstract(tree: Any) -> Any:
  """Shape/dtype/sharding skeleton of a pytree of arrays, for restoring into the same layout."""
  return jax.tree.map(ocp.utils.to_shape_dtype_struct, tree)
