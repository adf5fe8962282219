"""Metric writers: JSONL and TensorBoard files in the run directory, one console line per epoch."""

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
    if not self.enabled:
      return
    clean = {k: (None if isinstance(v, float) and math.isnan(v) else float(v)) for k, v in scalars.items()
             if v is not None}
    with open(self.directory / "metrics.jsonl", "a", encoding="utf-8") as f:
      f.write(json.dumps({"step": int(step), **extra, **clean}) + "\n")
    if self._tb is not None:
      for k, v in clean.items():
        if v is not None:
          self._tb.add_scalar(k, v, int(step))

  def close(self) -> None:
    if self._tb is not None:
      self._tb.close()
