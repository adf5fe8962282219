"""Exact resume after SIGKILL: a `train.py` process killed between two checkpoints and restarted
with the same command ends with parameters, optimizer state and data-iterator state bit-identical to
an uninterrupted run, and the same results."""

import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
TRAIN_SAMPLES, BATCH, EPOCHS = 76, 8, 3  # mosi_small at scale 0.2: 9 steps per epoch
STEPS_PER_EPOCH = TRAIN_SAMPLES // BATCH

TINY_LNLN = [
  "--config=configs/lnln.py",
  "--config.data.synthetic_scale=0.2",
  f"--config.batch_size={BATCH}",
  "--config.eval_batch_size=16",
  f"--config.max_epochs={EPOCHS}",
  "--config.model.dim=32",
  "--config.model.heads=2",
  "--config.model.dim_head=16",
  "--config.model.mlp_dim=32",
  "--config.model.hyper_heads=2",
  "--config.model.hyper_dim_head=8",
  "--config.lnln.sweep_rates=0.0,0.5",
  "--config.progress=False",
  "--config.tensorboard=False",
  "--config.log_every_steps=1",
]


def _env():
  env = dict(os.environ)
  env["XLA_FLAGS"] = "--xla_backend_optimization_level=0"
  env["JAX_PLATFORMS"] = "cpu"
  return env


def _cmd(workdir, data):
  return [
    sys.executable,
    "train.py",
    *TINY_LNLN,
    f"--config.data.path={data}",
    f"--workdir={workdir}",
  ]


def _latest_steps(seed_dir):
  return sorted(
    int(p.name) for p in (seed_dir / "checkpoints" / "latest").iterdir() if p.name.isdigit()
  )


def _final_state(seed_dir):
  step = _latest_steps(seed_dir)[-1]
  ckpt = seed_dir / "checkpoints" / "latest" / str(step)
  state = ocp.StandardCheckpointer().restore(ckpt / "state")
  data = (
    json.loads((ckpt / "data" / "metadata").read_text())
    if (ckpt / "data" / "metadata").exists()
    else None
  )
  return step, state, data


@pytest.fixture(scope="module")
def data(tmp_path_factory):
  from msa_jax.data import synthetic

  path = tmp_path_factory.mktemp("data") / "small.pkl"
  synthetic.write_synthetic(path, "mosi_small", seed=0, scale=0.2)
  return path


@pytest.fixture(scope="module")
def straight(tmp_path_factory, data):
  """The uninterrupted run's directory."""
  workdir = tmp_path_factory.mktemp("straight") / "run"
  proc = subprocess.run(
    _cmd(workdir, data), cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=900
  )
  assert proc.returncode == 0, proc.stderr[-3000:]
  return workdir


def test_sigkill_between_checkpoints_then_same_command_resumes_bit_identically(
  tmp_path, data, straight
):

  # The kill step: seeded, inside epoch 2, at least two steps away from either checkpoint; the kill
  # waits for epoch 1's checkpoint to be written (saves finish in the background).
  kill_at = int(
    np.random.default_rng(20261125).integers(STEPS_PER_EPOCH + 2, 2 * STEPS_PER_EPOCH - 2)
  )
  workdir = tmp_path / "killed"
  seed_dir = workdir / "seed_1111"
  proc = subprocess.Popen(
    _cmd(workdir, data),
    cwd=ROOT,
    env=_env(),
    stdout=subprocess.PIPE,
    stderr=subprocess.STDOUT,
    text=True,
  )
  steps_log = seed_dir / "steps.jsonl"
  deadline = time.monotonic() + 900
  logged = []
  while time.monotonic() < deadline and proc.poll() is None:
    if steps_log.exists():
      logged = [json.loads(l) for l in steps_log.read_text().splitlines() if l.strip()]
      if logged and logged[-1]["step"] >= kill_at and _latest_steps(seed_dir):
        break
    time.sleep(0.005)
  assert proc.poll() is None, "training finished before the kill step was logged"
  os.kill(proc.pid, signal.SIGKILL)
  proc.communicate(timeout=60)
  assert proc.returncode == -signal.SIGKILL
  logged = [json.loads(l) for l in steps_log.read_text().splitlines() if l.strip()]
  killed_after = logged[-1]["step"]
  saved = _latest_steps(seed_dir)
  # Killed after a written checkpoint: work since the last one is lost and must be redone (the
  # next checkpoint, if started, was not finished).
  assert saved and saved[-1] % STEPS_PER_EPOCH == 0
  assert saved[-1] < killed_after, (saved, killed_after)
  assert not (workdir / "results.json").exists()

  resumed = subprocess.run(
    _cmd(workdir, data), cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=900
  )
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  assert f"resumed from step {saved[-1]}" in resumed.stdout

  step_a, state_a, data_a = _final_state(straight / "seed_1111")
  step_b, state_b, data_b = _final_state(seed_dir)
  assert step_a == step_b == EPOCHS * STEPS_PER_EPOCH and data_a == data_b
  leaves_a = jax.tree_util.tree_flatten_with_path(state_a)[0]
  leaves_b = jax.tree_util.tree_flatten_with_path(state_b)[0]
  assert [k for k, _ in leaves_a] == [k for k, _ in leaves_b] and len(leaves_a) > 10
  for (path, x), (_, y) in zip(leaves_a, leaves_b):
    assert np.array_equal(np.asarray(x), np.asarray(y)), jax.tree_util.keystr(path)
  res_a = json.loads((straight / "results.json").read_text())
  res_b = json.loads((workdir / "results.json").read_text())
  assert res_a["table"] == res_b["table"]
  # The per-step log of the resumed run repeats the lost steps with the same losses.
  log_a = {
    l["step"]: l["train/loss"]
    for l in map(json.loads, (straight / "seed_1111" / "steps.jsonl").read_text().splitlines())
  }
  for l in map(json.loads, steps_log.read_text().splitlines()):
    assert l["train/loss"] == log_a[l["step"]]


def test_sigkill_during_the_final_evaluation_then_same_command_finishes_it(
  tmp_path, data, straight
):
  """Killed after the last epoch's checkpoint, while the selected checkpoints are evaluated: the
  same command trains nothing more and writes the results of the uninterrupted run."""
  workdir = tmp_path / "killed"
  seed_dir = workdir / "seed_1111"
  last = seed_dir / "checkpoints" / "latest" / str(EPOCHS * STEPS_PER_EPOCH)
  proc = subprocess.Popen(
    _cmd(workdir, data),
    cwd=ROOT,
    env=_env(),
    stdout=subprocess.PIPE,
    stderr=subprocess.STDOUT,
    text=True,
  )
  deadline = time.monotonic() + 900
  while time.monotonic() < deadline and proc.poll() is None and not last.exists():
    time.sleep(0.005)
  assert proc.poll() is None, "the run ended before its last checkpoint was seen"
  os.kill(proc.pid, signal.SIGKILL)
  proc.communicate(timeout=60)
  if (seed_dir / "results.json").exists():
    pytest.skip("the final evaluation finished before the kill landed")
  assert not (workdir / "results.json").exists()

  resumed = subprocess.run(
    _cmd(workdir, data), cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=900
  )
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  assert f"resumed from step {EPOCHS * STEPS_PER_EPOCH}" in resumed.stdout
  assert " epoch " not in resumed.stdout  # no epoch is trained again
  res_a = json.loads((straight / "results.json").read_text())
  res_b = json.loads((workdir / "results.json").read_text())
  assert res_a["table"] == res_b["table"]
