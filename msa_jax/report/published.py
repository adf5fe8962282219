"""The papers' published numbers (transcribed from the papers, see published_data/README.md).

The CSVs hold the numbers as printed: accuracies and F1 in %, MAE and Corr raw, LNLN's MOSI/MOSEI
"left / right" Acc-2 and F1 split into "(negative/positive)" = Non0 and "(negative/non-negative)" =
Has0 (docs/methods.md §3). The loader returns them under msa_jax's metric keys and in msa_jax's
units (accuracies and F1 as fractions, like results.json), so a published row can sit in the same
table as a run. GEAR's file is header-only: no numbers were available when it was compiled.
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import importlib.resources
import math
import pathlib

from msa_jax.metrics import MOSI_KEYS

# Published column -> msa_jax metric key. Non0 is the paper's negative/positive, Has0 its
# negative/non-negative (docs/methods.md §3); SIMS has single Acc-2 / F1 columns.
LNLN_COLUMNS = {
  "Acc-7": "Mult_acc_7",
  "Acc-5": "Mult_acc_5",
  "Acc-3": "Mult_acc_3",
  "Acc-2 (negative/positive)": "Non0_acc_2",
  "Acc-2 (negative/non-negative)": "Has0_acc_2",
  "Acc-2": "Mult_acc_2",
  "F1 (negative/positive)": "Non0_F1_score",
  "F1 (negative/non-negative)": "Has0_F1_score",
  "F1": "F1_score",
  "MAE": "MAE",
  "Corr": "Corr",
}
# GEAR's released code names its test sets after its data files; msa_jax's split names.
GEAR_TEST_SETS = {
  "test_iid": "test",
  "test_nn_text": "ood_text",
  "test_nn_audio": "ood_audio",
  "test_nn_vision": "ood_vision",
  "test_nn_tav": "ood_all",
}
GEAR_METRICS = MOSI_KEYS  # the GEAR paper reports MMSA's MOSI / MOSEI metrics
# Metrics printed raw; every other one is printed in %.
RAW_METRICS = frozenset({"MAE", "Corr"})
FILES = ("lnln_results.csv", "lnln_per_rate.csv", "gear_results.csv")


@dataclasses.dataclass(frozen=True)
class PublishedRow:
  """One published result.

  Attributes:
    dataset: "mosi", "mosei" or "sims".
    method: the method as the paper names it ("LNLN", "ALMT", "w/o DMC", ...).
    source: where it is printed ("Table 2", "README Corrigendum item 2 ...").
    setting: the CSV's `setting`, `missing_rate` or `test_set` column as printed.
    metrics: msa_jax metric key -> value (fractions for accuracies/F1; only metrics printed).
    note: caveats of the transcription (corrigenda, known errors), or "".
  """

  dataset: str
  method: str
  source: str
  setting: str
  metrics: dict[str, float]
  note: str = ""

  @property
  def label(self) -> str:
    return f"paper: {self.method} ({self.source})"


def data_dir() -> pathlib.Path:
  """The directory of the packaged CSVs."""
  return pathlib.Path(str(importlib.resources.files("msa_jax.report") / "published_data"))


def to_ours(metric: str, printed: str) -> float | None:
  """A printed cell in msa_jax units: % -> fraction except MAE/Corr; "" -> None."""
  printed = printed.strip()
  if not printed:
    return None
  v = float(printed)
  if math.isnan(v):
    return None
  return v if metric in RAW_METRICS else v / 100.0


@functools.cache
def _read(path: str) -> tuple[dict[str, str], ...]:
  with open(path, encoding="utf-8", newline="") as f:
    return tuple(csv.DictReader(f))


def _row(rec: dict[str, str], columns: dict[str, str], setting_key: str) -> PublishedRow:
  metrics = {}
  for col, key in columns.items():
    v = to_ours(key, rec.get(col) or "")
    if v is not None:
      metrics[key] = v
  return PublishedRow(
    dataset=rec["dataset"].strip().lower(),
    method=rec["method"].strip(),
    source=rec["source"].strip(),
    setting=rec[setting_key].strip(),
    metrics=metrics,
    note=(rec.get("note") or "").strip(),
  )


def load(name: str, directory: str | pathlib.Path | None = None) -> list[PublishedRow]:
  """Every row of one published CSV (`name` one of FILES) in msa_jax keys and units."""
  if name not in FILES:
    raise ValueError(f"unknown published table {name!r}: expected one of {FILES}")
  path = pathlib.Path(directory) if directory is not None else data_dir()
  recs = _read(str(path / name))
  if name == "gear_results.csv":
    return [
      dataclasses.replace(
        _row(r, {m: m for m in GEAR_METRICS}, "test_set"),
        setting=GEAR_TEST_SETS.get(r["test_set"].strip(), r["test_set"].strip()),
      )
      for r in recs
    ]
  return [
    _row(r, LNLN_COLUMNS, "missing_rate" if name == "lnln_per_rate.csv" else "setting")
    for r in recs
  ]


def lnln_average(
  dataset: str, method: str = "LNLN", directory: str | pathlib.Path | None = None
) -> list[PublishedRow]:
  """The LNLN paper's mean-over-missing-rates rows of `method` on `dataset` (Tables 2-7 and the
  README corrigenda), without repeats of identical numbers (the full model recurs in Tables 4-7)."""
  out: list[PublishedRow] = []
  for row in load("lnln_results.csv", directory):
    if (
      row.dataset == dataset and row.method == method and all(row.metrics != o.metrics for o in out)
    ):
      out.append(row)
  return out


def lnln_per_rate(
  dataset: str, method: str = "LNLN", directory: str | pathlib.Path | None = None
) -> dict[str, dict[str, float]]:
  """The LNLN appendix per-rate rows (Tables 9, 10): {"0.0": {metric: value}, ..., "mean": ...}
  (the mean over the printed rates, as the paper's Table 2/3 average); {} when not printed."""
  table = {
    f"{float(r.setting):.1f}": r.metrics
    for r in load("lnln_per_rate.csv", directory)
    if r.dataset == dataset and r.method == method
  }
  if table:
    keys = next(iter(table.values())).keys()
    table["mean"] = {k: sum(t[k] for t in table.values()) / len(table) for k in keys}
  return table


def gear_splits(
  dataset: str, method: str = "GEAR", directory: str | pathlib.Path | None = None
) -> dict[str, dict[str, float]]:
  """GEAR's published {split: {metric: value}} for `dataset` (msa_jax split names); {} if none."""
  return {
    r.setting: r.metrics
    for r in load("gear_results.csv", directory)
    if r.dataset == dataset and r.method == method
  }


def source_of_per_rate(dataset: str) -> str:
  """The appendix table that holds the per-rate numbers of `dataset`."""
  return "Table 10" if dataset == "sims" else "Table 9"
