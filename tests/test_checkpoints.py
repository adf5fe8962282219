"""Orbax checkpoints: latest composite state, best epochs shared across selection metrics."""

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
