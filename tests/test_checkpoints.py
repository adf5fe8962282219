"""Orbax checkpoints: latest composite state, best epochs shared across selection metrics."""

import shutil

import jax
import jax.numpy as jnp
import numpy as np

from msa_jax.train.checkpoints import Checkpoints, abstract
from msa_jax.train.state import TrainState


def _params(v):
  return {"w": jnp.full((3,), float(v)), "b": {"c": jnp.arange(2.0) + v}}


def test_latest_round_trip_with_iterator_state_and_meta(tmp_path):
  ck = Checkpoints(tmp_path, ("MAE",), keep=2)
  state = TrainState(step=jnp.int32(7), params=_params(1), opt_state=({"m": jnp.ones(3)},))
  ck.save_latest(
    7, state, {"next_index": 7}, {"epoch": 1, "best": {"MAE": {"value": 0.5, "epoch": 1}}}
  )
  got, data, meta = ck.restore_latest(abstract(state))
  assert int(got.step) == 7 and data == {"next_index": 7} and meta["best"]["MAE"]["epoch"] == 1
  np.testing.assert_array_equal(got.params["b"]["c"], state.params["b"]["c"])


def test_best_epochs_are_stored_once_and_unreferenced_ones_deleted(tmp_path):
  metrics = ("Has0_acc_2", "MAE", "Corr")
  ck = Checkpoints(tmp_path, metrics)
  ck.save_best(list(metrics), 1, _params(1), {"epoch": 1})
  ck.save_best(["MAE"], 2, _params(2), {"epoch": 2})
  ck.save_best(["Has0_acc_2", "Corr"], 3, _params(3), {"epoch": 3})
  assert sorted(ck.best.all_steps()) == [1, 2, 3]  # epoch 1 stays until epoch 3 is written
  ck.wait_until_finished()
  assert sorted(ck.best.all_steps()) == [2, 3]  # epoch 1 is nobody's best any more
  assert [ck.best_epoch(m) for m in metrics] == [3, 2, 3]
  params, meta = ck.restore_best("MAE", abstract(_params(0)))
  np.testing.assert_array_equal(params["w"], np.full(3, 2.0))
  assert meta["best_for"] == ["MAE"]
  ck.close()
  # A new manager over the same directory (a resumed run) finds the same best epochs.
  again = Checkpoints(tmp_path, metrics)
  assert [again.best_epoch(m) for m in metrics] == [3, 2, 3]
  again.save_best(["Corr"], 3, _params(30), {"epoch": 3})  # re-trained epoch after a resume
  params, meta = again.restore_best("Corr", abstract(_params(0)))
  np.testing.assert_array_equal(params["w"], np.full(3, 30.0))
  assert meta["best_for"] == ["Has0_acc_2", "Corr"]


def _state(step, v):
  return TrainState(step=jnp.int32(step), params=_params(v), opt_state=({"m": jnp.full(3, v)},))


def test_an_async_save_keeps_the_values_the_next_donating_step_overwrites(tmp_path):
  ck = Checkpoints(tmp_path, ("MAE",))
  state = _state(5, 1.5)
  expected = jax.tree.map(np.array, state)
  ck.save_best(["MAE"], 1, state.params, {"epoch": 1})
  ck.save_latest(5, state, {"next_index": 5}, {"epoch": 1})
  step = jax.jit(lambda s: jax.tree.map(lambda x: x * 0 - 7, s), donate_argnums=(0,))
  after = step(state)  # what the training step does right after a save
  np.testing.assert_array_equal(after.params["w"], np.full(3, -7.0))
  got, _, _ = ck.restore_latest(abstract(after))
  for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(expected)):
    np.testing.assert_array_equal(np.asarray(a), b)
  params, _ = ck.restore_best("MAE", abstract(after.params))
  np.testing.assert_array_equal(params["b"]["c"], expected.params["b"]["c"])
  ck.close()


def test_a_best_save_a_kill_left_unfinished_is_rewritten_from_the_latest_checkpoint(tmp_path):
  metrics = ("MAE", "Corr")
  ck = Checkpoints(tmp_path, metrics)
  ck.save_best(list(metrics), 1, _params(1), {"epoch": 1})
  ck.save_latest(1, _state(1, 1), {"next_index": 1}, {"epoch": 1})
  ck.wait_until_finished()
  shutil.copytree(tmp_path / "best", tmp_path / "best_after_epoch_1")
  ck.save_latest(2, _state(2, 2), {"next_index": 2}, {"epoch": 2})  # no best at epoch 2
  ck.save_best(["MAE"], 3, _params(3), {"epoch": 3})
  ck.save_latest(3, _state(3, 3), {"next_index": 3}, {"epoch": 3})
  ck.close()
  assert sorted(ck.best.all_steps()) == [1, 3] and ck.latest_step() == 3
  # A kill after latest checkpoint 3 was renamed into place but before best epoch 3 was.
  shutil.rmtree(tmp_path / "best")
  (tmp_path / "best_after_epoch_1").rename(tmp_path / "best")
  again = Checkpoints(tmp_path, metrics)
  assert [again.best_epoch(m) for m in metrics] == [1, 1]
  state, data, meta = again.restore_latest(abstract(_state(0, 0)))
  assert int(state.step) == 3 and data == {"next_index": 3} and meta == {"epoch": 3}
  assert [again.best_epoch(m) for m in metrics] == [3, 1]
  params, best_meta = again.restore_best("MAE", abstract(_params(0)))
  np.testing.assert_array_equal(params["w"], np.full(3, 3.0))
  assert best_meta == {"epoch": 3, "best_for": ["MAE"]}
  assert sorted(again.best.all_steps()) == [1, 3]
  # The checkpoint of an epoch without a best save rewrites nothing.
  again.restore_latest(abstract(_state(0, 0)), step=2)
  assert sorted(again.best.all_steps()) == [1, 3]
  again.close()


def test_an_unreferenced_best_epoch_is_deleted_once_the_new_best_is_written(tmp_path):
  ck = Checkpoints(tmp_path, ("MAE",), keep=1)
  for epoch in (1, 2, 3):
    ck.save_best(["MAE"], epoch, _params(epoch), {"epoch": epoch})
    ck.save_latest(epoch, _state(epoch, epoch), {}, {"epoch": epoch})
  ck.close()
  assert ck.best.all_steps() == [3] and ck.latest.all_steps() == [3]
  on_disk = sorted(p.name for p in (tmp_path / "best").iterdir() if p.name.isdigit())
  assert on_disk == ["3"]
  assert sorted(p.name for p in (tmp_path / "latest").iterdir()) == ["3"]
