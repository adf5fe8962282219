"""Using a trained model: restore, predict, export (msa_jax.inference, scripts/predict.py,
scripts/export.py).

Two tiny runs are shared by the tests: LNLN trained here on one device, GEAR trained by train.py in
a subprocess on 8 simulated devices. The predictions of a restored model are checked against the
run's own final evaluation (results.json, computed by the training program on its devices) and
against restores in other processes with another device count.
"""

import csv
import dataclasses
import json
import os
import pathlib
import pickle
import shutil
import subprocess
import sys

import jax
import numpy as np
import pytest

from msa_jax import data, inference, train
from msa_jax import metrics as metrics_lib
from msa_jax.errors import ModelInputError, RunConfigError
from msa_jax.models import bert
from msa_jax.models import gear as gear_model
from msa_jax.models import lnln as lnln_model
from tests.test_train_gear import _config as tiny_gear_config
from tests.test_train_lnln import _config as train_lnln_config

ROOT = pathlib.Path(__file__).resolve().parents[1]
RATES = (0.0, 0.5)

TINY_GEAR = [
  "--config=configs/gear.py",
  "--config.data.synthetic_scale=0.05",
  "--config.batch_size=16",
  "--config.eval_batch_size=16",
  "--config.max_epochs=1",
  "--config.model.fusion_ff=32",
  "--config.model.post_fusion_dim=16",
  "--config.progress=False",
  "--config.tensorboard=False",
  "--config.gear.baseline=False",
]


def _env(devices: int) -> dict:
  env = dict(os.environ)
  env["XLA_FLAGS"] = (
    f"--xla_force_host_platform_device_count={devices} --xla_backend_optimization_level=0"
  )
  env["JAX_PLATFORMS"] = "cpu"
  env["PYTHONPATH"] = str(ROOT)
  return env


def _python(code: str, devices: int, cwd: pathlib.Path) -> subprocess.CompletedProcess:
  proc = subprocess.run(
    [sys.executable, "-c", code],
    cwd=cwd,
    env=_env(devices),
    capture_output=True,
    text=True,
    timeout=900,
  )
  assert proc.returncode == 0, proc.stderr[-3000:]
  return proc


def _lnln_config(data_path):
  """test_train_lnln's tiny LNLN config (its data written), swept at `RATES` only."""
  c = train_lnln_config(data_path)
  c.lnln.sweep_rates = ",".join(str(r) for r in RATES)
  return c


@pytest.fixture(scope="module")
def lnln_run(tmp_path_factory):
  """(workdir, data file, results.json) of a tiny LNLN run trained on one device."""
  root = tmp_path_factory.mktemp("lnln")
  config = _lnln_config(root / "synthetic.pkl")
  train.run(config, root / "run")
  return root / "run", root / "synthetic.pkl", json.loads((root / "run/results.json").read_text())


@pytest.fixture(scope="module")
def gear_run8(tmp_path_factory):
  """(workdir, data file, results.json) of a tiny GEAR run trained on 8 simulated devices."""
  root = tmp_path_factory.mktemp("gear")
  tiny_gear_config(root / "synthetic.pkl")  # writes the data of TINY_GEAR's scale, 0.05
  proc = subprocess.run(
    [
      sys.executable,
      "train.py",
      *TINY_GEAR,
      f"--config.data.path={root / 'synthetic.pkl'}",
      f"--workdir={root / 'run'}",
    ],
    cwd=ROOT,
    env=_env(8),
    capture_output=True,
    text=True,
    timeout=900,
  )
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "data parallel over 8 cpu devices" in proc.stdout
  return root / "run", root / "synthetic.pkl", json.loads((root / "run/results.json").read_text())


def _assert_metrics_equal(got: dict, want: dict) -> None:
  for key in metrics_lib.MOSI_KEYS:
    assert got[key] == pytest.approx(want[key], rel=1e-5, abs=1e-5), key


def test_restore_on_one_device_of_a_run_trained_on_eight(gear_run8):
  workdir, path, results = gear_run8
  assert jax.device_count() == 1
  predictor = inference.restore(workdir)
  selection = results["selection"][0]
  assert predictor.info.selection == selection and predictor.method == "gear"
  splits = data.load(path)
  evaluated = results["per_seed"][str(results["seeds"][0])][selection]
  for name in ("test", "ood_text", "ood_audio", "ood_vision", "ood_all"):
    out = predictor.predict(splits, split=name)
    assert out.predictions.shape == (len(splits[name]),)
    np.testing.assert_array_equal(out.ids, splits[name].ids)
    _assert_metrics_equal(
      metrics_lib.mmsa_metrics(out.predictions, out.labels, "mosi"), evaluated[name]
    )


# Restores `path` for each selection and saves the test predictions at each rate: (S, R, N).
_PREDICT_AT_RATES = """
import jax, numpy as np, msa_jax
from msa_jax import data
split = data.load({data!r})["test"]
out = []
for selection in {selections!r}:
  p = msa_jax.restore({path!r}, selection=selection)
  out.append([p.predict(split, missing_rate=r).predictions for r in {rates!r}])
np.save({out!r}, np.asarray(out))
devices = len(jax.tree.leaves(p.params)[0].sharding.device_set)
print("devices", jax.device_count(), "params on", devices)
"""


def test_restore_on_eight_devices_of_a_run_trained_on_one(lnln_run, tmp_path):
  workdir, path, results = lnln_run
  selections = [None, "MAE"]
  out = tmp_path / "preds.npy"
  code = _PREDICT_AT_RATES.format(
    path=str(workdir), selections=selections, data=str(path), rates=RATES, out=str(out)
  )
  proc = _python(code, 8, tmp_path)
  assert "devices 8 params on 8" in proc.stdout
  split = data.load(path)["test"]
  for selection, eight in zip(selections, np.load(out)):
    chosen = selection or results["selection"][0]
    evaluated = results["per_seed"]["1111"][chosen]
    here = inference.restore(workdir, selection=selection)
    assert here.info.selection == chosen
    assert here.info.epoch == results["best_valid"]["1111"][chosen]["epoch"]
    for r, preds in zip(RATES, eight):
      # The run's own sweep at this rate, and this process's restore on one device.
      _assert_metrics_equal(
        metrics_lib.mmsa_metrics(preds, split.labels, "mosi"), evaluated[f"test@{r:.1f}"]
      )
      np.testing.assert_allclose(preds, here.predict(split, missing_rate=r).predictions, atol=1e-5)
    # The masks bite: rate 0.5 changes the predictions.
    assert np.abs(eight[0] - eight[1]).max() > 1e-4


def test_data_that_does_not_fit_the_model_is_a_one_line_error(lnln_run, tmp_path):
  workdir, path, _ = lnln_run
  predictor = inference.restore(workdir)
  with open(path, "rb") as f:
    raw = pickle.load(f)
  for name in data.SPLITS:
    if name in raw:
      raw[name]["audio"] = raw[name]["audio"][..., :4]
  narrow = tmp_path / "narrow.pkl"
  with open(narrow, "wb") as f:
    pickle.dump(raw, f)
  with pytest.raises(ModelInputError) as e:
    predictor.predict(data.load(narrow))
  assert str(e.value) == "audio: the data has feature size 4 per frame, the model was trained on 5"
  split = data.load(path)["test"]
  ids = split.text_bert.copy()
  ids[0, 0, 1] = predictor.vocab_size + 5
  with pytest.raises(
    ModelInputError,
    match=r"^text_bert: the data has token id 30527, the model's vocabulary has 30522 ids",
  ):
    predictor.predict(dataclasses.replace(split, text_bert=ids))
  with pytest.raises(ModelInputError, match=r"^split 'nope' is not in the data \(it has \["):
    predictor.predict(data.load(path), split="nope")
  with pytest.raises(ValueError, match="missing_rate=1.0: expected a rate in"):
    predictor.predict(split, missing_rate=1.0)
  with pytest.raises(RunConfigError, match=r"selection 'F1': the run kept no checkpoint for it"):
    inference.restore(workdir, selection="F1")


def test_plain_arrays_without_labels_are_predicted_like_the_split(lnln_run):
  workdir, path, _ = lnln_run
  predictor = inference.restore(workdir)
  split = data.load(path)["test"]
  arrays = {
    "text_bert": split.text_bert,
    "audio": split.audio,
    "vision": split.vision,
    "audio_lengths": split.audio_lengths,
    "vision_lengths": split.vision_lengths,
  }
  out = predictor.predict(arrays, missing_rate=0.5)
  assert out.labels is None and out.ids is None
  np.testing.assert_array_equal(
    out.predictions, predictor.predict(split, missing_rate=0.5).predictions
  )


def test_export_then_restore_in_a_fresh_process(lnln_run, tmp_path):
  workdir, path, results = lnln_run
  # Export from a copy of the run that is gone when the model is restored.
  copy = tmp_path / "copy"
  shutil.copytree(workdir, copy)
  model_dir = inference.export(copy, tmp_path / "model", selection="MAE")
  shutil.rmtree(copy)
  assert sorted(p.name for p in model_dir.iterdir()) == [
    "README.md",
    "encoder",
    "model.json",
    "params.safetensors",
  ]
  card = (model_dir / "README.md").read_text()
  assert "best on the validation split by MAE" in card
  assert "| test@0.5 | " in card and "msa_jax 0.1.0" in card
  code = _PREDICT_AT_RATES.format(
    path=str(model_dir), selections=[None], data=str(path), rates=RATES, out=str(tmp_path / "p.npy")
  )
  _python(code, 1, tmp_path)
  here = inference.restore(workdir, selection="MAE")
  split = data.load(path)["test"]
  for r, preds in zip(RATES, np.load(tmp_path / "p.npy")[0]):
    np.testing.assert_allclose(preds, here.predict(split, missing_rate=r).predictions, atol=1e-6)
  with pytest.raises(FileExistsError, match=r"model exists and is not empty: export writes a new"):
    inference.export(workdir, model_dir)


def test_predict_script_writes_the_csv_and_its_metrics(lnln_run, tmp_path):
  workdir, path, _ = lnln_run
  out = tmp_path / "preds.csv"
  cmd = [sys.executable, "scripts/predict.py", "--workdir", str(workdir), "--data", str(path)]
  proc = subprocess.run(
    [*cmd, "--selection", "MAE", "--missing-rate", "0.5", "--out", str(out)],
    cwd=ROOT,
    env=_env(1),
    capture_output=True,
    text=True,
    timeout=900,
  )
  assert proc.returncode == 0, proc.stderr[-3000:]
  printed = json.loads(proc.stdout[proc.stdout.index("{") :])
  with open(out, newline="") as f:
    rows = list(csv.DictReader(f))
  split = data.load(path)["test"]
  assert [r["id"] for r in rows] == list(split.ids)
  preds = np.asarray([float(r["prediction"]) for r in rows], np.float32)
  labels = np.asarray([float(r["label"]) for r in rows], np.float32)
  np.testing.assert_array_equal(labels, split.labels)
  assert printed == pytest.approx(metrics_lib.mmsa_metrics(preds, labels, "mosi"), abs=1e-12)
  here = inference.restore(workdir, selection="MAE").predict(split, missing_rate=0.5)
  np.testing.assert_allclose(preds, here.predictions, atol=1e-6)
  # A split the file lacks: one line naming it.
  proc = subprocess.run(
    [*cmd, "--split", "nope", "--out", str(tmp_path / "x.csv")],
    cwd=ROOT,
    env=_env(1),
    capture_output=True,
    text=True,
    timeout=900,
  )
  assert proc.returncode == 1
  assert proc.stderr.strip().splitlines()[-1].startswith("error: split 'nope' is not in the data")
  assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("method", ["lnln", "gear"])
def test_input_sizes_are_read_back_from_the_parameters(method):
  enc = bert.BertConfig(
    vocab_size=30, hidden_size=8, num_hidden_layers=1, num_attention_heads=2, intermediate_size=8
  )
  b = {
    "text_bert": np.ones((2, 3, 7), np.int32),
    "audio": np.zeros((2, 11, 3), np.float32),
    "vision": np.zeros((2, 13, 6), np.float32),
    "audio_lengths": np.full(2, 11, np.int32),
    "vision_lengths": np.full(2, 13, np.int32),
  }
  key = jax.random.key(0)
  if method == "lnln":
    sizes = {
      "text_frames": 7,
      "audio_frames": 11,
      "vision_frames": 13,
      "audio_dim": 3,
      "vision_dim": 6,
    }
    cfg = lnln_model.LNLNConfig(
      bert=enc,
      dim=8,
      token_len=2,
      heads=2,
      dim_head=4,
      mlp_dim=8,
      hyper_heads=2,
      hyper_dim_head=4,
      **sizes,
    )
    model = lnln_model.LNLN(cfg)
    shapes = jax.eval_shape(lambda: model.init({"params": key}, b, b)["params"])
    assert lnln_model.input_sizes(shapes) == sizes
  else:
    cfg = gear_model.GEARConfig(text=enc, audio_in=3, vision_in=6, fusion_ff=8, post_fusion_dim=4)
    model = gear_model.GEAR(cfg)
    shapes = jax.eval_shape(lambda: model.init({"params": key, "dropout": key}, b)["params"])
    assert gear_model.input_sizes(shapes) == {"audio_in": 3, "vision_in": 6}
