"""Tagged figures ({"value", "unit", "kind"}) and the statistics of measured durations."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import Any

import numpy as np

Figure = dict[str, Any]
KINDS = ("measured", "extrapolated", "quoted")


def fig(value: float | int | None, unit: str, kind: str, note: str | None = None) -> Figure:
  """One tagged figure: {"value", "unit", "kind"} (+ "note")."""
  assert kind in KINDS, kind
  out = {"value": None if value is None else float(value), "unit": unit, "kind": kind}
  if note:
    out["note"] = note
  return out


def time_stats(times: Sequence[float]) -> dict[str, Figure]:
  """Median, min, max, quartiles and mean of measured durations (seconds)."""
  arr = np.asarray(times, float)
  q1, q3 = np.percentile(arr, [25, 75])
  out = {
    name: fig(v, "s", "measured")
    for name, v in (
      ("median", np.median(arr)),
      ("min", arr.min()),
      ("max", arr.max()),
      ("q1", q1),
      ("q3", q3),
      ("mean", arr.mean()),
    )
  }
  out["n"] = int(arr.size)
  out["all_s"] = [round(float(t), 6) for t in arr]
  return out


def round_ratio(times: Sequence[float], base: Sequence[float]) -> Figure:
  """The median over rounds of `times[i] / base[i]` (steps timed in the same round)."""
  return fig(
    statistics.median(t / b for t, b in zip(times, base)),
    "",
    "measured",
    "median over rounds of this step / the first variant's step in the same round",
  )
