"""GEAR end to end through `msa_jax.train.run` on a reduced synthetic set (8 simulated devices)."""

import json
import os
import pathlib
import subprocess
import sys

import pytest

import msa_jax
from configs import gear as gear_config
from msa_jax import train
from msa_jax.data import is_tfds, synthetic
from msa_jax.data.split import OOD_VALID_SPLITS
from msa_jax.errors import RunConfigError
from msa_jax.report import compare

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _config(data_path):
  c = gear_config.get_config()
  c.data.path = str(data_path)
  c.data.synthetic_scale = 0.05  # 64 / 11 / 34 samples
  c.batch_size = 16
  c.eval_batch_size = 16
  c.max_epochs = 3
  c.gear.swap_epochs = 1
  c.model.fusion_ff = 32
  c.model.post_fusion_dim = 16
  c.progress = False
  c.tensorboard = False
  c.gear.baseline = False  # GEAR alone; test_main_job_* trains the pair
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
  root = tmp_path_factory.mktemp("gear")
  config = _config(root / "synthetic.pkl")
  summary = train.run(config, root / "run")
  return config, root, summary


def test_results_cover_iid_and_every_ood_split(finished_run):
  _, root, summary = finished_run
  on_disk = json.loads((root / "run" / "results.json").read_text())
  assert on_disk["seeds"] == [1003]
  table = on_disk["summary"]["Acc_2_mean"]
  assert set(table) == {"test", "ood_text", "ood_audio", "ood_vision", "ood_all", "ood_mean"}
  for split in table.values():
    assert set(split) >= {"Has0_acc_2", "Non0_acc_2", "MAE", "Corr"}
    assert 0.0 <= split["Has0_acc_2"]["mean"] <= 1.0
  md = (root / "run" / "results.md").read_text()
  assert "| ood_all |" in md and "| test |" in md


def test_swap_fires_after_swap_epochs(finished_run):
  _, root, _ = finished_run
  lines = [
    json.loads(l) for l in (root / "run" / "seed_1003" / "metrics.jsonl").read_text().splitlines()
  ]
  swap = {l["epoch"]: l["train/swap_active"] for l in lines}
  assert swap == {1: 0.0, 2: 1.0, 3: 1.0}
  assert lines[-1]["train/bias_swap_text"] > 0 and lines[0]["train/bias_swap_text"] == 0


def test_second_run_reports_complete_and_changed_config_is_refused(finished_run, capsys):
  config, root, summary = finished_run
  again = train.run(config, root / "run")
  assert "run complete" in capsys.readouterr().out
  assert again["summary"] == json.loads((root / "run" / "results.json").read_text())["summary"]
  other = _config(root / "synthetic.pkl")
  other.gear.ipw = "none"
  with pytest.raises(RunConfigError, match=r"different config \(gear.ipw: 'min' -> 'none'\)"):
    train.run(other, root / "run")


def test_bad_config_values_name_the_key(tmp_path):
  c = _config(tmp_path / "synthetic.pkl")
  c.gear.gmae = "huber"
  with pytest.raises(RunConfigError, match="config.gear.gmae='huber'"):
    train.run(c, tmp_path / "run")
  c = _config(tmp_path / "synthetic.pkl")
  c.data.path = str(tmp_path / "missing.pkl")
  c.data.synthetic = ""
  with pytest.raises(RunConfigError, match="missing.pkl.*does not exist"):
    train.run(c, tmp_path / "run2")


def test_ood_splits_from_a_builder_file_replace_the_planted_ones(tmp_path, finished_run):
  """`--config.data.ood=FILE.ood.json` from scripts/build_ood_splits.py: its index lists decide the
  OOD splits. ood_text is rewritten to the whole test split, so its metrics must equal test's
  exactly."""
  _, root, _ = finished_run
  data = root / "synthetic.pkl"
  cmd = [
    sys.executable,
    "scripts/build_ood_splits.py",
    "--data",
    str(data),
    "--steps",
    "2000",
    "--k",
    "4",
  ]
  proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
  # 34 test samples: the default 47% subset cannot keep the label shares; a one-line error says so
  assert proc.returncode == 1 and "cannot keep the zero label share" in proc.stderr
  assert "Traceback" not in proc.stderr
  # 11 valid samples cannot keep the label shares either: OOD test splits only (--no-valid)
  proc = subprocess.run(
    cmd + ["--fraction", "0.9", "--no-valid"], cwd=ROOT, capture_output=True, text=True, timeout=600
  )
  assert proc.returncode == 0, proc.stderr[-2000:]
  built = json.loads((root / "synthetic.pkl.ood.json").read_text())
  n_test = built["n_test"]
  built["splits"]["ood_text"]["indices"] = list(range(n_test))
  ood_file = tmp_path / "custom.ood.json"
  ood_file.write_text(json.dumps(built))
  c = _config(data)
  c.max_epochs = 1
  c.data.ood = str(ood_file)
  # The file decides the OOD splits, so the planted OOD validation splits are gone with it.
  c.gear.criterion = "Acc_2_mean"
  summary = train.run(c, tmp_path / "run")
  table = summary["summary"]["Acc_2_mean"]
  assert (
    summary["ood"] == str(ood_file)
    and f"index lists of {ood_file}" in (tmp_path / "run" / "results.md").read_text()
  )
  assert set(table) == {"test", "ood_text", "ood_audio", "ood_vision", "ood_all", "ood_mean"}
  for metric in ("Has0_acc_2", "Non0_acc_2", "MAE", "Corr"):
    assert table["ood_text"][metric]["mean"] == table["test"][metric]["mean"]
  # the builder's ood_audio subset, not the planted cue-reversed copy of the whole test split
  assert len(built["splits"]["ood_audio"]["indices"]) < n_test
  c.data.ood = str(tmp_path / "absent.ood.json")
  with pytest.raises(RunConfigError, match="config.data.ood=.*absent.ood.json.*not found"):
    train.run(c, tmp_path / "run2")


def test_adding_a_seed_trains_only_the_new_seed(finished_run, capsys):
  config, root, summary = finished_run
  before = json.loads((root / "run" / "results.json").read_text())
  more = _config(root / "synthetic.pkl")
  more.seeds = "1003,1004"
  after = train.run(more, root / "run")
  out = capsys.readouterr().out
  assert "seed 1003: resumed from step" in out and "seed 1003 epoch" not in out  # nothing retrained
  assert "seed 1004 epoch 3/3" in out
  assert after["seeds"] == [1003, 1004]
  assert after["per_seed"]["1003"] == before["per_seed"]["1003"]
  assert json.loads((root / "run" / "config.json").read_text())["seeds"] == "1003,1004"
  assert "run complete" in (train.run(more, root / "run") and capsys.readouterr().out)


def test_seeds_trained_together_match_separate_runs(finished_run, tmp_path, capsys):
  """`vmap_seeds`: seeds 1003 and 1004 in one program, on seed 1003's data order. Seed 1003 gives
  the separate run's per-epoch losses, validation metrics and final results to float tolerance."""
  config, root, _ = finished_run
  c = _config(root / "synthetic.pkl")
  c.seeds, c.vmap_seeds = "1003,1004", True
  together = train.run(c, tmp_path / "run")
  assert (
    "seeds 1003,1004 train together (vmap_seeds) on the data order of seed 1003"
    in capsys.readouterr().out
  )
  lines = lambda d: [json.loads(l) for l in (d / "metrics.jsonl").read_text().splitlines()]
  alone, joint = lines(root / "run" / "seed_1003"), lines(tmp_path / "run" / "seed_1003")
  assert [l["epoch"] for l in joint] == [l["epoch"] for l in alone] == [1, 2, 3]
  for a, b in zip(alone, joint):
    for k in ("train/loss", "train/fusion", "train/ipw_mean", "valid/MAE", "valid/Acc_2_mean"):
      assert b[k] == pytest.approx(a[k], rel=2e-4, abs=1e-5), (a["epoch"], k)
  separate = json.loads((root / "run" / "seed_1003" / "results.json").read_text())["results"]
  joint_res = json.loads((tmp_path / "run" / "seed_1003" / "results.json").read_text())["results"]
  other = json.loads((tmp_path / "run" / "seed_1004" / "results.json").read_text())["results"]
  for split in ("test", "ood_text", "ood_all"):
    for metric in ("MAE", "Corr", "Has0_acc_2"):
      want = separate["Acc_2_mean"][split][metric]
      assert joint_res["Acc_2_mean"][split][metric] == pytest.approx(want, rel=2e-4, abs=1e-5), (
        split,
        metric,
      )
  assert other["Acc_2_mean"]["test"]["MAE"] != joint_res["Acc_2_mean"]["test"]["MAE"]
  assert together["seeds"] == [1003, 1004]


def test_epoch_records_hold_the_ood_criterion_and_the_mechanism_diagnostics(finished_run):
  """On synth-v2 (cue signs stored), every epoch records the OOD-validation criterion (the mean of
  the OOD validation splits' Acc_2_mean in the same record), the IID − OOD gaps, the bias heads'
  cue following and the weighted cue agreement of the training samples."""
  _, root, _ = finished_run
  lines = [
    json.loads(l) for l in (root / "run" / "seed_1003" / "metrics.jsonl").read_text().splitlines()
  ]
  for line in lines:
    oods = [line[f"valid/{s}/Acc_2_mean"] for s in OOD_VALID_SPLITS]
    assert line["valid/ood_valid"] == pytest.approx(sum(oods) / len(oods), abs=1e-12)
    for s in OOD_VALID_SPLITS:
      gap = line["valid/Has0_acc_2"] - line[f"valid/{s}/Has0_acc_2"]
      assert line[f"valid/gap_{s}"] == pytest.approx(gap, abs=1e-12)
    for m in ("text", "audio", "vision"):
      assert 0.0 <= line[f"valid/bias_follows_cue_{m}"] <= 1.0
    share = line["train/cue_w_aligned"] / (
      line["train/cue_w_aligned"] + line["train/cue_w_conflict"]
    )
    assert line["train/weighted_cue_agreement"] == pytest.approx(share, rel=1e-6)
    assert line["train/cue_n_aligned"] > line["train/cue_n_conflict"] > 0


def test_main_job_trains_gear_and_the_plain_model_and_reports_the_gain(finished_run, tmp_path):
  _, root, _ = finished_run
  c = _config(root / "synthetic.pkl")
  c.gear.baseline = True
  c.max_epochs = 2
  out = train.run(c, tmp_path / "demo")
  plain_cfg = json.loads((tmp_path / "demo" / "plain" / "config.json").read_text())
  assert plain_cfg["gear"] | {"baseline": False} == plain_cfg["gear"]
  assert (plain_cfg["gear"]["gmae"], plain_cfg["gear"]["ipw"], plain_cfg["gear"]["use_swap"]) == (
    "none",
    "none",
    False,
  )
  sub = {
    name: json.loads((tmp_path / "demo" / name / "results.json").read_text())
    for name in ("gear", "plain")
  }
  on_disk = json.loads((tmp_path / "demo" / "results.json").read_text())
  assert on_disk["comparison"] == json.loads(json.dumps(out["comparison"]))
  for ev in ("test", "ood_mean"):
    row = on_disk["comparison"]["sets"][ev]
    g = sub["gear"]["per_seed"]["1003"]["ood_valid"][ev]["Has0_acc_2"]
    p = sub["plain"]["per_seed"]["1003"]["ood_valid"][ev]["Has0_acc_2"]
    assert row["gear"][0] == pytest.approx(g) and row["plain"][0] == pytest.approx(p)
    assert row["gain"][0] == pytest.approx(g - p)
  md = (tmp_path / "demo" / "results.md").read_text()
  assert "synthetic MOSI-shaped, synth-v2" in md and "| ood_mean |" in md
  assert "## GEAR on" in md and "## The plain model on" in md
  assert ("debiasing helped" in md) == (on_disk["comparison"]["sets"]["ood_mean"]["gain"][0] > 0)
  report = compare.build_report([tmp_path / "demo"], plots_enabled=False)["markdown"]
  assert "## GEAR on synthetic MOSI-shaped, synth-v2" in report
  assert "| gear |" in report and "| plain |" in report
  with pytest.raises(RunConfigError, match=r"side-by-side runs \(gear, plain\): restore one"):
    msa_jax.restore(tmp_path / "demo")
  assert msa_jax.restore(tmp_path / "demo" / "plain").method == "gear"
