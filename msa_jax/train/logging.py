"""Metric writers: JSONL (`metrics.jsonl` per epoch, `steps.jsonl` per logged step) and TensorBoard
files in the run directory."""

from __future__ import annotations

import json
import math
import pathlib
from typing import Any

import jax


class MetricWriter:
  """Appends metric records to `metrics.jsonl` and TensorBoard events (process 0 only)."""

  def __init__(self, directory: str | pathlib.Path, tensorboard: bool = True):
    self.directory = pathlib.Path(directory)
    self.enabled = jax.process_index() == 0
    self._tb = None
    if self.enabled:
      self.directory.mkdir(parents=True, exist_ok=True)
      if tensorboard:
        from tensorboardX import SummaryWriter

        self._tb = SummaryWriter(str(self.directory / "tensorboard"))

  def write(self, step: int, scalars: dict[str, Any], **extra: Any) -> None:
    """One per-epoch record: a line of `metrics.jsonl` and TensorBoard scalars."""
    self._write("metrics.jsonl", step, scalars, extra)

  def write_step(self, step: int, scalars: dict[str, Any], **extra: Any) -> None:
    """One per-step record (config.log_every_steps): a line of `steps.jsonl`, flushed at once so
    that progress is visible (and, in tests, observable) while training runs; TensorBoard too."""
    self._write("steps.jsonl", step, scalars, extra)

  def _write(self, name: str, step: int, scalars: dict[str, Any], extra: dict[str, Any]) -> None:
    if not self.enabled:
      return
    clean = {
      k: (None if isinstance(v, float) and math.isnan(v) else float(v))
      for k, v in scalars.items()
      if v is not None
    }
    with open(self.directory / name, "a", encoding="utf-8") as f:
      f.write(json.dumps({"step": int(step), **extra, **clean}) + "\n")
    if self._tb is not None:
      for k, v in clean.items():
        if v is not None:
          self._tb.add_scalar(k, v, int(step))

  def close(self) -> None:
    if self._tb is not None:
      self._tb.close()
