"""The generic training loop on a tiny linear method: non-finite stop, early stopping, exact resume."""

import dataclasses

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from msa_jax.data.split import Split
from msa_jax.train import checkpoints, loop, sharding
from msa_jax.train.method import EvalSet, Method


def _splits(n=40, seed=0):
  rng = np.random.default_rng(seed)
  out = {}
  for name, size in (("train", n), ("valid", 16), ("test", 16)):
    audio = rng.normal(size=(size, 4, 3)).astype(np.float32)
    labels = (audio.mean(1) @ np.array([1.0, -2.0, 0.5])).astype(np.float32)
    out[name] = Split(text_bert=np.ones((size, 3, 5), np.int32), audio=audio,
                      vision=np.zeros((size, 2, 2), np.float32), audio_lengths=np.full(size, 4, np.int32),
                      vision_lengths=np.full(size, 2, np.int32), labels=labels)
  return out


def _method(lr=0.1, nan_from_step=None, patience=None):
  def predict(params, batch, key, rate):
    return batch["audio"].mean(1) @ params["w"] + params["b"]

  def loss_fn(params, batch, key, step):
    noise = 1e-3 * jax.random.normal(key, ())  # the per-step key must be reproduced on resume
    loss = jnp.mean((predict(params, batch, key, 0.0) - batch["labels"]) ** 2) + noise
    if nan_from_step is not None:
      loss = jnp.where(step >= nan_from_step, jnp.nan, loss)
    return loss, {}

  return Method(name="linear", init_params=lambda k, b: {"w": jnp.zeros(3), "b": jnp.zeros(())},
                loss_fn=loss_fn, predict_fn=predict, optimizer=optax.adam(lr), selection_metrics=("MAE", "Corr"),
                valid_rate=None, final_evals=(EvalSet("test"),), patience=patience)


def _config(max_epochs):
  c = ml_collections.ConfigDict()
  c.data = ml_collections.ConfigDict({"dataset": "mosi"})
  c.batch_size, c.eval_batch_size, c.max_epochs = 8, 8, max_epochs
  c.checkpoint_keep, c.mask_seed, c.progress, c.tensorboard = 2, 0, False, False
  return c


def _latest(seed_dir, method):
  ck = checkpoints.Checkpoints(seed_dir / "checkpoints", method.selection_metrics)
  state = jax.jit(lambda: loop.create_state(method.init_params(None, None), method.optimizer))()
  restored, data, meta = ck.restore_latest(checkpoints.abstract(state))
  ck.close()
  return restored, data, meta


def test_resumed_run_is_bit_identical_to_an_uninterrupted_one(tmp_path):
  splits, mesh, method = _splits(), sharding.make_mesh(), _method()
  loop.train_seed(_config(4), method, splits, mesh, 7, tmp_path / "straight")
  loop.train_seed(_config(2), method, splits, mesh, 7, tmp_path / "resumed")
  record = loop.train_seed(_config(4), method, splits, mesh, 7, tmp_path / "resumed")
  assert record["epochs_trained"] == 4
  a, data_a, meta_a = _latest(tmp_path / "straight", method)
  b, data_b, meta_b = _latest(tmp_path / "resumed", method)
  assert int(a.step) == int(b.step) == 20 and data_a == data_b
  for x, y in zip(jax.tree.leaves((a.params, a.opt_state)), jax.tree.leaves((b.params, b.opt_state))):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
  assert meta_a["epochs"] == meta_b["epochs"]


def test_non_finite_loss_stops_naming_the_step_and_keeps_the_last_good_checkpoint(tmp_path):
  with pytest.raises(loop.NonFiniteLossError, match=r"non-finite loss nan at step 12 .*epoch 3.*last good "
                     r"checkpoint is step 10"):
    loop.train_seed(_config(5), _method(nan_from_step=12), _splits(), sharding.make_mesh(), 0, tmp_path)
  state, _, meta = _latest(tmp_path, _method())
  assert int(state.step) == 10 and meta["epoch"] == 2
  assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(state.params))


def test_early_stopping_counts_epochs_without_improvement(tmp_path):
  record = loop.train_seed(_config(10), _method(lr=0.0, patience=2), _splits(), sharding.make_mesh(), 0, tmp_path)
  # lr 0: epoch 1 sets the best MAE, epochs 2 and 3 do not improve it, patience 2 stops after epoch 3.
  assert record["epochs_trained"] == 3 and record["stopped_early"]
  assert record["best"]["MAE"]["epoch"] == 1
  # A constant prediction has Corr NaN at every epoch: the first epoch still serves as its checkpoint.
  assert record["best"]["Corr"]["epoch"] == 1 and set(record["results"]) == {"MAE", "Corr"}


def test_rates_in_sequential_passes_equal_all_rates_at_once():
  """`make_predict(rates_per_pass=k)` (lax.map over chunks of rates, bounded memory) gives the same
  (R, B) predictions as vmapping every rate at once, including a last, partial pass."""
  method = _method()
  rate_dependent = dataclasses.replace(method, predict_fn=lambda p, b, k, r: (
      b["audio"].mean(1) @ p["w"] + p["b"] + r * jnp.sin(b["audio"][:, 0, 0])))
  mesh = sharding.make_mesh()
  split = _splits()["test"]
  params = {"w": jnp.array([0.5, -1.0, 2.0]), "b": jnp.array(0.1)}
  rates = [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6]
  key = jax.random.key(0)
  together = loop.predict_split(loop.make_predict(rate_dependent, mesh), params, split, 8, mesh, key, rates)
  passes = loop.predict_split(loop.make_predict(rate_dependent, mesh, 3), params, split, 8, mesh, key, rates)
  assert together.shape == (7, 16)
  np.testing.assert_allclose(passes, together, rtol=1e-6, atol=1e-6)
  assert not np.allclose(together[0], together[-1])
