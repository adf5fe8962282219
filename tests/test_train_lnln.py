"""LNLN end to end through `msa_jax.train.run`: selection on validation, the robustness sweep."""

import json
import os

import numpy as np
import pytest

from configs import lnln as lnln_config
from msa_jax import train
from msa_jax.data import is_tfds, synthetic
from msa_jax.errors import RunConfigError

RATES = [f"{r / 10:.1f}" for r in range(10)]


def _config(data_path, **model):
  c = lnln_config.get_config()
  c.data.path = str(data_path)
  c.data.synthetic_scale = 0.1  # 38 / 12 / 25 samples, audio / vision 32 frames
  c.batch_size = 32
  c.eval_batch_size = 16
  c.max_epochs = 2
  c.model.dim = 32
  c.model.heads = 2
  c.model.dim_head = 16
  c.model.mlp_dim = 32
  c.model.hyper_heads = 2
  c.model.hyper_dim_head = 8
  c.model.update(model)
  c.progress = False
  c.tensorboard = False
  # train.py generates the benchmark only at the config's default path: write it here first
  # (unless the path holds data already, e.g. a converted directory or a built TFDS dataset).
  if not is_tfds(str(data_path)) and not os.path.exists(data_path):
    synthetic.write_synthetic(
      data_path,
      c.data.synthetic,
      seed=c.data.synthetic_seed,
      scale=c.data.synthetic_scale,
      version=c.data.synthetic_version,
    )
  return c


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
  root = tmp_path_factory.mktemp("lnln")
  config = _config(root / "synthetic.pkl")
  return config, root, train.run(config, root / "run")


def test_results_have_every_rate_and_metric_from_its_own_checkpoint(finished_run):
  config, root, summary = finished_run
  on_disk = json.loads((root / "run" / "results.json").read_text())
  assert on_disk["rates"] == [float(r) for r in RATES]
  table = on_disk["table"]
  assert list(table) == RATES + ["mean"]
  for row in table.values():
    assert set(row) == {
      "Mult_acc_7",
      "Mult_acc_5",
      "Non0_acc_2",
      "Has0_acc_2",
      "Non0_F1_score",
      "Has0_F1_score",
      "MAE",
      "Corr",
    }
  per = on_disk["per_seed"]["1111"]
  assert set(per) == {"Has0_acc_2", "Non0_acc_2", "Mult_acc_5", "Mult_acc_7", "MAE", "Corr"}
  seed_table = on_disk["per_seed_table"]["1111"]
  for r in RATES:
    assert seed_table[r]["MAE"] == pytest.approx(per["MAE"][f"test@{r}"]["MAE"])
    assert seed_table[r]["Has0_F1_score"] == pytest.approx(
      per["Has0_acc_2"][f"test@{r}"]["Has0_F1_score"]
    )
  maes = [seed_table[r]["MAE"] for r in RATES]
  assert seed_table["mean"]["MAE"] == pytest.approx(np.mean(maes))
  md = (root / "run" / "results.md").read_text()
  assert "| 0.9 |" in md and "| mean |" in md
  # The best validation epochs recorded for each selection metric are real epochs.
  best = on_disk["best_valid"]["1111"]
  assert all(b["epoch"] in (1, 2) for b in best.values())


def test_eval_mode_repeats_the_sweep_exactly(finished_run):
  config, root, summary = finished_run
  again = train.run(config, root / "run", mode="eval")
  assert again["per_seed_table"] == summary["per_seed_table"]


def test_ablation_and_bad_values(tmp_path, finished_run):
  _, root, _ = finished_run
  c = _config(root / "synthetic.pkl")
  c.lnln.sweep_rates = "0.0,1.5"
  with pytest.raises(RunConfigError, match="sweep_rates"):
    train.run(c, tmp_path / "bad")
  c = _config(root / "synthetic.pkl")
  c.encoder = "nonexistent"
  with pytest.raises(RunConfigError, match="config.encoder='nonexistent'"):
    train.run(c, tmp_path / "bad2")
