"""What a final evaluation runs: a split at a missing rate (`EvalSet`)."""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class EvalSet:
  """One evaluation of the final report: a split, and the missing rate applied to it (None:
  none)."""

  split: str
  rate: float | None = None

  @property
  def name(self) -> str:
    return self.split if self.rate is None else f"{self.split}@{self.rate:.1f}"
