"""Data parallelism: the same run on 1 device, on 8 simulated CPU devices, and on 2 processes x 4
devices (jax.distributed over 127.0.0.1, gloo collectives) gives the same losses.

Each run is a subprocess of `train.py` with its own `--xla_force_host_platform_device_count`, so the
rest of the suite keeps one device.
"""

import json
import os
import pathlib
import socket
import subprocess
import sys

import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]

TINY_LNLN = [
  "--config=configs/lnln.py",
  "--config.data.synthetic_scale=0.1",
  "--config.batch_size=32",
  "--config.eval_batch_size=16",
  "--config.max_epochs=2",
  "--config.model.dim=32",
  "--config.model.heads=2",
  "--config.model.dim_head=16",
  "--config.model.mlp_dim=32",
  "--config.model.hyper_heads=2",
  "--config.model.hyper_dim_head=8",
  "--config.lnln.sweep_rates=0.0,0.5",
  "--config.progress=False",
  "--config.tensorboard=False",
]


def _env(devices):
  env = dict(os.environ)
  env["XLA_FLAGS"] = (
    f"--xla_force_host_platform_device_count={devices} --xla_backend_optimization_level=0"
  )
  env["JAX_PLATFORMS"] = "cpu"
  return env


def _cmd(workdir, data, extra=()):
  return [
    sys.executable,
    "train.py",
    *TINY_LNLN,
    f"--config.data.path={data}",
    f"--workdir={workdir}",
    *extra,
  ]


def _train(workdir, data, devices, extra=()):
  return subprocess.run(
    _cmd(workdir, data, extra),
    cwd=ROOT,
    env=_env(devices),
    capture_output=True,
    text=True,
    timeout=900,
  )


def _losses_and_results(workdir):
  lines = [
    json.loads(l) for l in (workdir / "seed_1111" / "metrics.jsonl").read_text().splitlines()
  ]
  return lines, json.loads((workdir / "results.json").read_text())


def _assert_same_run(a, b):
  (l1, r1), (l2, r2) = a, b
  assert [l["step"] for l in l1] == [l["step"] for l in l2]
  for x, y in zip(l1, l2):
    np.testing.assert_allclose(x["train/loss"], y["train/loss"], rtol=2e-4)
    np.testing.assert_allclose(x["valid/MAE"], y["valid/MAE"], rtol=2e-4)
  for r in ("0.0", "0.5"):
    np.testing.assert_allclose(
      r1["table"][r]["MAE"]["mean"], r2["table"][r]["MAE"]["mean"], rtol=2e-4
    )


@pytest.fixture(scope="module")
def data(tmp_path_factory):
  from msa_jax.data import synthetic

  path = tmp_path_factory.mktemp("data") / "small.pkl"
  synthetic.write_synthetic(path, "mosi_small", seed=0, scale=0.1)
  return path


@pytest.fixture(scope="module")
def one_device(tmp_path_factory, data):
  workdir = tmp_path_factory.mktemp("d1") / "run"
  proc = _train(workdir, data, 1)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return _losses_and_results(workdir)


def test_one_and_eight_devices_agree(tmp_path, data, one_device):
  proc = _train(tmp_path / "d8", data, 8)
  assert proc.returncode == 0, proc.stderr[-3000:]
  _assert_same_run(one_device, _losses_and_results(tmp_path / "d8"))


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def test_two_processes_of_four_devices_agree_with_one_device(tmp_path, data, one_device):
  port = _free_port()
  procs = [
    subprocess.Popen(
      _cmd(
        tmp_path / "p2",
        data,
        [f"--coordinator_address=127.0.0.1:{port}", "--num_processes=2", f"--process_id={i}"],
      ),
      cwd=ROOT,
      env=_env(4),
      stdout=subprocess.PIPE,
      stderr=subprocess.PIPE,
      text=True,
    )
    for i in range(2)
  ]
  outs = [p.communicate(timeout=900) for p in procs]
  for p, (_, err) in zip(procs, outs):
    assert p.returncode == 0, err[-3000:]
  assert "data parallel over 8 cpu devices in 2 process(es)" in outs[0][0]
  _assert_same_run(one_device, _losses_and_results(tmp_path / "p2"))


def test_batch_not_divisible_by_devices_is_a_clear_error(tmp_path, data):
  proc = _train(tmp_path / "bad", data, 8, ["--config.batch_size=12"])
  assert proc.returncode == 1
  assert "batch_size=12 is not divisible by the number of devices (8)" in proc.stderr
  assert "Traceback" not in proc.stderr
