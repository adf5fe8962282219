"""scripts/report.py and msa_jax.report.{compare, published, plots}: tables, plots, paper rows,
errors.

Run directories are built with the training code's own `summarise` functions on random per-seed
results, so the results.json layout cannot drift from what train.py writes; every number in the
report is checked against an independent numpy mean / std of those inputs.
"""

import json
import pathlib
import subprocess
import sys
import types

import matplotlib.image
import ml_collections
import numpy as np
import pytest

from msa_jax.evaluate import sweep
from msa_jax.io import write_json_atomic, write_text_atomic
from msa_jax.metrics import metric_keys
from msa_jax.report import compare, published
from msa_jax.train import gear, lnln

ROOT = pathlib.Path(__file__).resolve().parents[1]
RATES = [round(0.1 * i, 1) for i in range(10)]
OOD = ("ood_text", "ood_audio", "ood_vision", "ood_all")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _value(rng: np.random.Generator, metric: str) -> float:
  if metric == "MAE":
    return float(rng.uniform(0.5, 1.5))
  return float(rng.uniform(0.2, 0.95))


def _write_run(
  path: pathlib.Path, config: ml_collections.ConfigDict, module, selection, per_seed
) -> None:
  """Writes config.json / results.json / results.md exactly as msa_jax.train.loop.run does."""
  method = types.SimpleNamespace(selection_metrics=tuple(selection))
  summary = module.summarise(config, method, per_seed)
  path.mkdir(parents=True)
  write_json_atomic(path / "config.json", json.loads(config.to_json_best_effort()))
  write_json_atomic(path / "results.json", summary)
  write_text_atomic(path / "results.md", module.markdown(config, method, summary))


def make_lnln_run(
  path: pathlib.Path,
  seed: int,
  dataset: str = "mosi",
  synthetic: str = "mosi_small",
  seeds=(1111, 1112, 1113),
  use_dmc: bool = True,
) -> dict:
  """An LNLN run directory with random results; returns {seed: {selection: {eval: {metric: v}}}}."""
  rng = np.random.default_rng(seed)
  keys = metric_keys(dataset)
  per_seed = {}
  for s in seeds:
    results = {
      sel: {f"test@{r:.1f}": {m: _value(rng, m) for m in keys} for r in RATES}
      for sel in lnln.SELECTION[dataset]
    }
    per_seed[str(s)] = {
      "results": results,
      "epochs_trained": 3,
      "best": {m: {"value": 0.5, "epoch": 2} for m in lnln.SELECTION[dataset]},
    }
  config = ml_collections.ConfigDict(
    {
      "method": "lnln",
      "seeds": ",".join(map(str, seeds)),
      "mask_seed": 0,
      "progress": False,
      "data": {
        "path": f"data/{dataset}.pkl",
        "dataset": dataset,
        "synthetic": synthetic,
        "ood": "",
      },
      "model": {"use_dmc": use_dmc},
      "lnln": {"valid_missing_rate": 0.5, "sweep_rates": ",".join(f"{r:.1f}" for r in RATES)},
    }
  )
  _write_run(path, config, lnln, lnln.SELECTION[dataset], per_seed)
  return {s: r["results"] for s, r in per_seed.items()}


def make_gear_run(
  path: pathlib.Path, seed: int, seeds=(1003, 1006, 1008), synthetic: str = "mosi", ipw: str = "min"
) -> dict:
  """A GEAR run directory with random results (IID test + 4 OOD splits)."""
  rng = np.random.default_rng(seed)
  keys = (*metric_keys("mosi"), "Acc_2_mean")
  per_seed = {}
  for s in seeds:
    results = {"Acc_2_mean": {ev: {m: _value(rng, m) for m in keys} for ev in ("test", *OOD)}}
    per_seed[str(s)] = {
      "results": results,
      "epochs_trained": 4,
      "best": {"Acc_2_mean": {"value": 0.5, "epoch": 3}},
    }
  config = ml_collections.ConfigDict(
    {
      "method": "gear",
      "seeds": ",".join(map(str, seeds)),
      "data": {
        "path": "data/mosi.pkl",
        "dataset": "mosi",
        "synthetic": synthetic,
        "ood": "planted",
      },
      "gear": {"criterion": "Acc_2_mean", "ipw": ipw},
    }
  )
  _write_run(path, config, gear, ("Acc_2_mean",), per_seed)
  return {s: r["results"] for s, r in per_seed.items()}


# ---- independent expectations and a markdown reader ----------------------------------------------

LNLN_READ_FROM = {
  "Non0_F1_score": "Non0_acc_2",
  "Has0_F1_score": "Has0_acc_2",
  "F1_score": "Mult_acc_2",
}


def lnln_expected(raw: dict, metric: str, rate: str = "mean") -> tuple[float, float]:
  """Mean and sample std over seeds of a metric at one rate (or of its mean over the rates)."""
  sel = LNLN_READ_FROM.get(metric, metric)
  rates = RATES if rate == "mean" else [float(rate)]
  vals = np.array([np.mean([raw[s][sel][f"test@{r:.1f}"][metric] for r in rates]) for s in raw])
  return float(vals.mean()), float(vals.std(ddof=1))


def gear_expected(raw: dict, metric: str, split: str) -> tuple[float, float]:
  splits = OOD if split == "ood_mean" else (split,)
  vals = np.array([np.mean([raw[s]["Acc_2_mean"][sp][metric] for sp in splits]) for s in raw])
  return float(vals.mean()), float(vals.std(ddof=1))


def table_after(markdown: str, heading: str) -> tuple[list[str], dict[str, list[str]]]:
  """The first markdown table after the line starting with `heading`: (header,
  {row label: cells})."""
  lines = markdown.splitlines()
  start = next(i for i, line in enumerate(lines) if line.startswith(heading))
  i = next(j for j in range(start + 1, len(lines)) if lines[j].startswith("|"))
  header = [c.strip() for c in lines[i].strip("|").split("|")]
  rows = {}
  for line in lines[i + 2 :]:
    if not line.startswith("|"):
      break
    cells = [c.strip() for c in line.strip().strip("|").split(" | ")]
    rows[cells[0]] = cells[1:]
  return header, rows


def check_cell(cell: str, metric: str, mean: float, std: float | None = None) -> None:
  """A `mean ± std` cell (accuracies in % with 2 decimals, MAE/Corr raw with 4) equals the
  expectation."""
  scale, tol = (1.0, 6e-5) if metric in ("MAE", "Corr") else (100.0, 6e-3)
  parts = [float(p) for p in cell.split(" ± ")]
  assert parts[0] == pytest.approx(scale * mean, abs=tol), (cell, metric)
  if std is None:
    assert len(parts) == 1, cell
  else:
    assert parts[1] == pytest.approx(scale * std, abs=tol), (cell, metric)


def check_png(path: pathlib.Path) -> None:
  assert path.read_bytes()[:8] == PNG_MAGIC
  img = matplotlib.image.imread(path)
  assert img.ndim == 3 and img.shape[0] > 100 and img.shape[1] > 100 and img.shape[2] in (3, 4)


# ---- tests ---------------------------------------------------------------------------------------


def test_lnln_tables_side_by_side_and_plot(tmp_path):
  raw_a = make_lnln_run(tmp_path / "lnln_full", seed=0)
  raw_b = make_lnln_run(tmp_path / "lnln_nodmc", seed=1, use_dmc=False)
  out = tmp_path / "out"
  result = compare.build_report([tmp_path / "lnln_full", tmp_path / "lnln_nodmc"], out=out)
  md = (out / "report.md").read_text()
  assert md == result["markdown"] and md.startswith(compare.MARKER)
  # Side by side: one row per run, the paper's column order (Non0 before Has0), mean over rates.
  header, rows = table_after(md, "### Mean over missing rates")
  assert header[1:] == list(sweep.PAPER_COLUMNS["mosi"])
  assert header.index("Non0_acc_2") < header.index("Has0_acc_2")
  for label, raw in (("lnln_full", raw_a), ("lnln_nodmc", raw_b)):
    for m, cell in zip(header[1:], rows[label]):
      check_cell(cell, m, *lnln_expected(raw, m))
  # Per-run per-rate table: r = 0.0 … 0.9 and mean.
  header, rows = table_after(md, "### lnln_nodmc: per missing rate")
  assert list(rows) == [f"{r:.1f}" for r in RATES] + ["mean"]
  for rate in ("0.0", "0.7", "mean"):
    for m, cell in zip(header[1:], rows[rate]):
      check_cell(cell, m, *lnln_expected(raw_b, m, rate))
  # The config keys that differ, synthetic runs get no paper rows (and say why).
  assert "| model.use_dmc | true | false |" in md
  assert "paper:" not in md and "Published numbers are not shown" in md and "synthetic" in md
  assert result["files"] == [out / "report.md", out / "lnln_mosi_rates.png"]
  check_png(out / "lnln_mosi_rates.png")


def test_gear_tables_and_bars(tmp_path):
  raw = {
    name: make_gear_run(tmp_path / name, seed=i, ipw=ipw)
    for i, (name, ipw) in enumerate((("full", "min"), ("ipw_none", "none")))
  }
  single = make_gear_run(tmp_path / "one_seed", seed=5, seeds=(1003,))
  out = tmp_path / "out"
  result = compare.build_report(
    [tmp_path / "full", tmp_path / "ipw_none", tmp_path / "one_seed"], out=out
  )
  md = result["markdown"]
  for metric in ("Has0_acc_2", "Non0_acc_2", "MAE"):
    header, rows = table_after(md, f"### {metric} ")
    assert header[1:] == ["test", *OOD, "ood_mean"]
    for name in raw:
      for split, cell in zip(header[1:], rows[name]):
        check_cell(cell, metric, *gear_expected(raw[name], metric, split))
    for split, cell in zip(header[1:], rows["one_seed"]):  # one seed: the value alone
      check_cell(cell, metric, gear_expected({**single, "x": single["1003"]}, metric, split)[0])
  header, rows = table_after(md, "### full: all metrics")
  assert header[1:] == list(metric_keys("mosi")) and list(rows) == ["test", *OOD, "ood_mean"]
  for m, cell in zip(header[1:], rows["ood_mean"]):
    check_cell(cell, m, *gear_expected(raw["full"], m, "ood_mean"))
  assert '| gear.ipw | "min" | "none" | "min" |' in md
  check_png(out / "gear_mosi_ood.png")


def test_published_rows_beside_a_real_data_run(tmp_path):
  make_lnln_run(tmp_path / "real", seed=2, synthetic="")
  out = tmp_path / "out"
  md = compare.build_report([tmp_path / "real"], out=out, published_methods=["ALMT"])["markdown"]
  header, rows = table_after(md, "### Mean over missing rates")
  assert header[3:5] == ["Non0_acc_2", "Has0_acc_2"]
  # lnln_results.csv, Table 2, MOSI, LNLN: Acc-7 34.26, Acc-5 38.27, Acc-2 72.55 / 70.94 (neg/pos =
  # Non0, then neg/non-neg = Has0), F1 72.73 / 71.25, MAE 1.046, Corr 0.527.
  assert rows["paper: LNLN (Table 2)"] == [
    "34.26",
    "38.27",
    "72.55",
    "70.94",
    "72.73",
    "71.25",
    "1.0460",
    "0.5270",
  ]
  # ALMT, Table 2, MOSI: 30.30, 33.42, 70.40 / 68.39, 72.57 / 71.80, 1.083, 0.498 (hand-copied).
  assert rows["paper: ALMT (Table 2)"] == [
    "30.30",
    "33.42",
    "70.40",
    "68.39",
    "72.57",
    "71.80",
    "1.0830",
    "0.4980",
  ]
  # Table 9, MOSI, LNLN, r = 0: 44.56, 49.76, 84.25 / 81.24, 84.61 / 81.79, 0.751, 0.778.
  _, rows = table_after(md, "### Paper: LNLN on MOSI per missing rate")
  assert rows["0.0"] == ["44.56", "49.76", "84.25", "81.24", "84.61", "81.79", "0.7510", "0.7780"]
  assert len(rows) == 11 and "Published numbers are not shown" not in md
  check_png(out / "lnln_mosi_rates.png")


def test_published_loader_units_and_sims():
  rows = published.lnln_average("sims")
  # Table 3 (as printed) and the README corrigendum's reader-reproduced row (corrected F1).
  assert [r.source for r in rows] == ["Table 3", "README Corrigendum item 2 (corrects Table 3)"]
  assert rows[0].metrics == pytest.approx(
    {
      "Mult_acc_5": 0.3464,
      "Mult_acc_3": 0.5714,
      "Mult_acc_2": 0.7273,
      "F1_score": 0.7943,
      "MAE": 0.514,
      "Corr": 0.397,
    }
  )
  assert set(rows[0].metrics) <= set(sweep.PAPER_COLUMNS["sims"])
  per_rate = published.lnln_per_rate("mosi")
  assert list(per_rate)[:10] == [f"{r:.1f}" for r in RATES]
  table2 = published.lnln_average("mosi")[0].metrics
  for m, v in per_rate["mean"].items():  # the appendix averages to the main table within rounding
    assert v == pytest.approx(table2[m], abs=6e-4 if m not in ("MAE", "Corr") else 6e-3)
  assert published.gear_splits("mosi") == {}
  assert published.data_dir().joinpath("lnln_results.csv").is_file()


def test_published_gear_loader_maps_splits(tmp_path):
  header = (published.data_dir() / "gear_results.csv").read_text().splitlines()[0]
  row = (
    "GEAR,2307.10511,Table 1,MOSI,test_nn_text,GEAR,80.10,80.00,82.00,81.50,45.0,40.0,0.800,0.700,"
  )
  (tmp_path / "gear_results.csv").write_text(header + "\n" + row + "\n")
  assert published.gear_splits("mosi", directory=tmp_path) == {
    "ood_text": pytest.approx(
      {
        "Has0_acc_2": 0.801,
        "Has0_F1_score": 0.80,
        "Non0_acc_2": 0.82,
        "Non0_F1_score": 0.815,
        "Mult_acc_5": 0.45,
        "Mult_acc_7": 0.40,
        "MAE": 0.8,
        "Corr": 0.7,
      }
    )
  }


def test_mixed_methods_labels_and_default_out(tmp_path):
  make_lnln_run(tmp_path / "a" / "run", seed=3, seeds=(1111,))
  make_gear_run(tmp_path / "b" / "run", seed=4, seeds=(1003,))
  paths = [tmp_path / "a" / "run", tmp_path / "b" / "run"]
  assert compare.unique_labels(paths) == ["a/run", "b/run"]
  assert compare.default_out(paths[:1]) == paths[0] / "report"
  assert compare.default_out(paths) == (tmp_path / "a" / "report_run_vs_run").resolve()
  result = compare.build_report(paths, metrics=["MAE", "Corr"], plots_enabled=False)
  md = result["markdown"]
  assert "## LNLN on synthetic MOSI-shaped, synth-v1" in md
  assert "## GEAR on synthetic MOSI-shaped, synth-v1" in md
  assert table_after(md, "### Mean over missing rates")[0][1:] == ["MAE", "Corr"]
  assert "### MAE " in md and "### Corr " in md and "### Has0_acc_2 " not in md
  assert result["files"] == [tmp_path / "a" / "report_run_vs_run" / "report.md"]


def test_bad_inputs_one_line_errors(tmp_path):
  make_lnln_run(tmp_path / "good", seed=6, seeds=(1111,))
  (tmp_path / "unfinished").mkdir()
  (tmp_path / "unfinished" / "config.json").write_text('{"method": "lnln"}')
  (tmp_path / "other").mkdir()
  (tmp_path / "other" / "config.json").write_text('{"method": "mult"}')
  (tmp_path / "other" / "results.json").write_text("{}")
  (tmp_path / "broken").mkdir()
  (tmp_path / "broken" / "config.json").write_text('{"method": "lnln"}')
  (tmp_path / "broken" / "results.json").write_text("{not json")
  (tmp_path / "old").mkdir()
  (tmp_path / "old" / "config.json").write_text('{"method": "gear", "data": {"dataset": "mosi"}}')
  (tmp_path / "old" / "results.json").write_text(
    json.dumps(
      {
        "method": "gear",
        "dataset": "mosi",
        "seeds": [1],
        "selection": ["MAE"],
        "summary": {"MAE": {"test": {}}},
      }
    )
  )
  cases = {
    (tmp_path / "missing",): "no such directory",
    (tmp_path / "old",): "unexpected layout",
    (tmp_path / "unfinished",): "no results.json",
    (tmp_path / "other",): "method 'mult' is not supported",
    (tmp_path / "broken",): "not valid JSON",
    (tmp_path / "good", tmp_path / "good"): "given twice",
  }
  for paths, message in cases.items():
    with pytest.raises(compare.ReportError, match=message):
      compare.build_report(paths, out=tmp_path / "o", plots_enabled=False)
  with pytest.raises(compare.ReportError, match="--metrics: Acc_9"):
    compare.build_report(
      [tmp_path / "good"], out=tmp_path / "o", metrics=["Acc_9"], plots_enabled=False
    )
  # A report.md that no report wrote is kept unless --force; our own is regenerated.
  foreign = tmp_path / "mine"
  foreign.mkdir()
  (foreign / "report.md").write_text("my notes\n")
  with pytest.raises(compare.ReportError, match="not written by scripts/report.py"):
    compare.build_report([tmp_path / "good"], out=foreign, plots_enabled=False)
  assert (foreign / "report.md").read_text() == "my notes\n"
  compare.build_report([tmp_path / "good"], out=foreign, plots_enabled=False, force=True)
  compare.build_report([tmp_path / "good"], out=foreign, plots_enabled=False)
  assert (foreign / "report.md").read_text().startswith(compare.MARKER)


def test_script_end_to_end_and_error_exit(tmp_path):
  raw = make_lnln_run(tmp_path / "x", seed=7)
  make_gear_run(tmp_path / "g", seed=8)
  out = tmp_path / "report"
  script = str(ROOT / "scripts" / "report.py")
  proc = subprocess.run(
    [
      sys.executable,
      script,
      str(tmp_path / "x"),
      str(tmp_path / "g"),
      "--out",
      str(out),
      "--metrics",
      "MAE,Corr",
    ],
    capture_output=True,
    text=True,
    cwd=tmp_path,
    timeout=120,
  )
  assert proc.returncode == 0, proc.stderr
  assert f"wrote {out / 'report.md'}" in proc.stdout
  _, rows = table_after(proc.stdout, "### Mean over missing rates")
  check_cell(rows["x"][-1], "Corr", *lnln_expected(raw, "Corr"))
  for name in ("lnln_mosi_rates.png", "gear_mosi_ood.png"):
    check_png(out / name)
  proc = subprocess.run(
    [sys.executable, script, str(tmp_path / "nope")],
    capture_output=True,
    text=True,
    cwd=tmp_path,
    timeout=120,
  )
  assert proc.returncode == 1 and "Traceback" not in proc.stderr
  assert proc.stderr.strip().splitlines() == [f"error: {tmp_path / 'nope'}: no such directory"]
