"""Data parallelism: the same run on 1 and on 8 simulated CPU devices gives the same losses.

Each run is a subprocess of `train.py` with its own `--xla_force_host_platform_device_count`, so the
rest of the suite keeps one device.
"""

import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]

TINY_LNLN = [
    "--config=configs/lnln.py", "--config.data.synthetic_scale=0.1", "--config.batch_size=32",
    "--config.eval_batch_size=16", "--config.max_epochs=2", "--config.model.dim=32", "--config.model.heads=2",
    "--config.model.dim_head=16", "--config.model.mlp_dim=32", "--config.model.hyper_heads=2",
    "--config.model.hyper_dim_head=8", "--config.lnln.sweep_rates=0.0,0.5", "--config.progress=False",
    "--config.tensorboard=False",
]


def _train(workdir, data, devices, extra=()):
  env = dict(os.environ)
  env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices} --xla_backend_optimization_level=0"
  env["JAX_PLATFORMS"] = "cpu"
  cmd = [sys.executable, "train.py", *TINY_LNLN, f"--config.data.path={data}", f"--workdir={workdir}", *extra]
  return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
  from msa_jax.data import synthetic
  path = tmp_path_factory.mktemp("data") / "small.pkl"
  synthetic.write_synthetic(path, "mosi_small", seed=0, scale=0.1)
  return path


def test_one_and_eight_devices_agree(tmp_path, data):
  runs = {}
  for n in (1, 8):
    proc = _train(tmp_path / f"d{n}", data, n)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [json.loads(l) for l in (tmp_path / f"d{n}" / "seed_1111" / "metrics.jsonl").read_text().splitlines()]
    runs[n] = (lines, json.loads((tmp_path / f"d{n}" / "results.json").read_text()))
  (l1, r1), (l8, r8) = runs[1], runs[8]
  for a, b in zip(l1, l8):
    np.testing.assert_allclose(a["train/loss"], b["train/loss"], rtol=2e-4)
    np.testing.assert_allclose(a["valid/MAE"], b["valid/MAE"], rtol=2e-4)
  for r in ("0.0", "0.5"):
    np.testing.assert_allclose(r1["table"][r]["MAE"]["mean"], r8["table"][r]["MAE"]["mean"], rtol=2e-4)


def test_batch_not_divisible_by_devices_is_a_clear_error(tmp_path, data):
  proc = _train(tmp_path / "bad", data, 8, ["--config.batch_size=12"])
  assert proc.returncode == 1
  assert "batch_size=12 is not divisible by the number of devices (8)" in proc.stderr
  assert "Traceback" not in proc.stderr
