"""Orbax checkpoints: the latest k composite checkpoints plus one best checkpoint per selection
metric.

Layout under a seed's directory:
  checkpoints/latest/<step>/   state (params, optimizer state, step), data iterator state, meta
  checkpoints/best/<epoch>/    params and meta of every epoch that is currently the best for at
                               least one selection metric; `meta["best_for"]` lists those metrics.
Several selection metrics often peak at the same epoch (LNLN has six), so a best epoch is stored
once and an epoch no metric points to any more is deleted.

Orbax writes each checkpoint to a temporary directory and renames it when complete, so a killed
run never leaves a half-written checkpoint behind; `latest_step` only sees finished ones.
"""

from __future__ import annotations

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
      max_to_keep=keep, create=True, enable_async_checkpointing=False
    )
    self.latest = ocp.CheckpointManager(self.directory / "latest", options=opts)
    best_opts = ocp.CheckpointManagerOptions(create=True, enable_async_checkpointing=False)
    self.best = ocp.CheckpointManager(self.directory / "best", options=best_opts)
    kept = best_epochs(self.best)
    self._best_epoch = {m: kept.get(m) for m in self.selection_metrics}

  def latest_step(self) -> int | None:
    return self.latest.latest_step()

  def save_latest(self, step: int, state: Any, data_state: dict, meta: dict) -> None:
    self.latest.save(
      step,
      args=ocp.args.Composite(
        state=ocp.args.StandardSave(state),
        data=ocp.args.JsonSave(data_state),
        meta=ocp.args.JsonSave(meta),
      ),
    )
    self.latest.wait_until_finished()

  def restore_latest(self, abstract_state: Any, step: int | None = None) -> tuple[Any, dict, dict]:
    """(state, data iterator state, meta) of the latest checkpoint, or of the kept one of `step`."""
    step = self.latest.latest_step() if step is None else step
    if step is None:
      raise FileNotFoundError(f"no checkpoint under {self.directory / 'latest'}")
    out = self.latest.restore(
      step,
      args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract_state),
        data=ocp.args.JsonRestore(),
        meta=ocp.args.JsonRestore(),
      ),
    )
    return out["state"], dict(out["data"]), dict(out["meta"])

  def save_best(self, metrics: list[str], epoch: int, params: Any, meta: dict) -> None:
    """Stores `params` of `epoch` as the new best for each of `metrics` (once), then deletes best
    epochs that no metric points to any more."""
    if not metrics:
      return
    for m in metrics:
      self._best_epoch[m] = epoch
    if epoch in self.best.all_steps():  # re-trained after a resume: replace the earlier save
      self.best.delete(epoch)
    self.best.save(
      epoch,
      args=ocp.args.Composite(
        params=ocp.args.StandardSave(params),
        meta=ocp.args.JsonSave(
          {**meta, "best_for": [m for m, e in self._best_epoch.items() if e == epoch]}
        ),
      ),
      force=True,
    )
    self.best.wait_until_finished()
    referenced = set(self._best_epoch.values())
    for old in self.best.all_steps():
      if old not in referenced:
        self.best.delete(old)

  def restore_best(self, metric: str, abstract_params: Any) -> tuple[Any, dict]:
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
