"""The generic training loop on a tiny linear method: non-finite stop, early stopping, exact
resume."""

import dataclasses
import json

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from configs import lnln as lnln_config
from msa_jax import errors, sharding
from msa_jax.data import synthetic
from msa_jax.data.split import Split
from msa_jax.evaluate import predict as predict_lib
from msa_jax.evaluate.sets import EvalSet
from msa_jax.train import checkpoints, loop
from msa_jax.train.method import Method


def _splits(n=40, seed=0):
  rng = np.random.default_rng(seed)
  out = {}
  for name, size in (("train", n), ("valid", 16), ("test", 16)):
    audio = rng.normal(size=(size, 4, 3)).astype(np.float32)
    labels = (audio.mean(1) @ np.array([1.0, -2.0, 0.5])).astype(np.float32)
    out[name] = Split(
      text_bert=np.ones((size, 3, 5), np.int32),
      audio=audio,
      vision=np.zeros((size, 2, 2), np.float32),
      audio_lengths=np.full(size, 4, np.int32),
      vision_lengths=np.full(size, 2, np.int32),
      labels=labels,
    )
  return out


def _method(lr=0.1, nan_from_step=None, patience=None, grad_noise=0.0, random_init=False):
  def predict(params, batch, key, rate):
    return batch["audio"].mean(1) @ params["w"] + params["b"]

  def loss_fn(params, batch, key, step):
    noise = 1e-3 * jax.random.normal(key, ())  # the per-step key must be reproduced on resume
    k_grad = jax.random.fold_in(key, 1)  # key-dependent gradients: seeds learn differently
    noise = noise + grad_noise * jnp.dot(params["w"], jax.random.normal(k_grad, (3,)))
    loss = jnp.mean((predict(params, batch, key, 0.0) - batch["labels"]) ** 2) + noise
    if nan_from_step is not None:
      loss = jnp.where(step >= nan_from_step, jnp.nan, loss)
    return loss, {}

  def init(key, batch):
    return {"w": jax.random.normal(key, (3,)) if random_init else jnp.zeros(3), "b": jnp.zeros(())}

  return Method(
    name="linear",
    init_params=init,
    loss_fn=loss_fn,
    predict_fn=predict,
    optimizer=optax.adam(lr),
    selection_metrics=("MAE", "Corr"),
    valid_rate=None,
    final_evals=(EvalSet("test"),),
    patience=patience,
  )


def _config(max_epochs, seeds="0"):
  c = ml_collections.ConfigDict()
  c.seeds, c.vmap_seeds, c.data_seed = seeds, False, -1
  c.data = ml_collections.ConfigDict({"dataset": "mosi"})
  c.batch_size, c.eval_batch_size, c.max_epochs = 8, 8, max_epochs
  c.checkpoint_keep, c.progress, c.log_every_steps, c.tensorboard = 2, False, 0, False
  return c


def _latest(seed_dir, method):
  ck = checkpoints.Checkpoints(seed_dir / "checkpoints", method.selection_metrics)
  state = jax.jit(
    lambda: loop.create_state(method.init_params(jax.random.key(0), None), method.optimizer)
  )()
  restored, data, meta = ck.restore_latest(checkpoints.abstract(state))
  ck.close()
  return restored, data, meta


def test_resumed_run_is_bit_identical_to_an_uninterrupted_one(tmp_path):
  splits, mesh, method = _splits(), sharding.make_mesh(), _method()
  loop.train_seeds(_config(4), method, splits, mesh, (7,), tmp_path / "straight")
  loop.train_seeds(_config(2), method, splits, mesh, (7,), tmp_path / "resumed")
  record = loop.train_seeds(_config(4), method, splits, mesh, (7,), tmp_path / "resumed")["7"]
  assert record["epochs_trained"] == 4
  a, data_a, meta_a = _latest(tmp_path / "straight" / "seed_7", method)
  b, data_b, meta_b = _latest(tmp_path / "resumed" / "seed_7", method)
  assert int(a.step) == int(b.step) == 20 and data_a == data_b
  for x, y in zip(
    jax.tree.leaves((a.params, a.opt_state)), jax.tree.leaves((b.params, b.opt_state))
  ):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
  assert meta_a["epochs"] == meta_b["epochs"]


def test_non_finite_loss_stops_naming_the_step_and_keeps_the_last_good_checkpoint(tmp_path):
  with pytest.raises(
    errors.NonFiniteLossError,
    match=r"non-finite loss nan at step 12 .*epoch 3.*last good "
    r"checkpoint is step 10",
  ):
    loop.train_seeds(
      _config(5), _method(nan_from_step=12), _splits(), sharding.make_mesh(), (0,), tmp_path
    )
  state, _, meta = _latest(tmp_path / "seed_0", _method())
  assert int(state.step) == 10 and meta["epoch"] == 2
  assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(state.params))


def test_early_stopping_counts_epochs_without_improvement(tmp_path):
  record = loop.train_seeds(
    _config(10), _method(lr=0.0, patience=2), _splits(), sharding.make_mesh(), (0,), tmp_path
  )["0"]
  # lr 0: epoch 1 sets the best MAE, epochs 2 and 3 do not improve it, patience 2 stops after
  # epoch 3.
  assert record["epochs_trained"] == 3 and record["stopped_early"]
  assert record["best"]["MAE"]["epoch"] == 1
  # A constant prediction has Corr NaN at every epoch: the first epoch still serves as its
  # checkpoint.
  assert record["best"]["Corr"]["epoch"] == 1 and set(record["results"]) == {"MAE", "Corr"}


def test_rates_in_sequential_passes_equal_all_rates_at_once():
  """`make_predict(rates_per_pass=k)` (lax.map over chunks of rates, bounded memory) gives the same
  (R, B) predictions as vmapping every rate at once, including a last, partial pass."""
  method = _method()
  rate_dependent = dataclasses.replace(
    method,
    predict_fn=lambda p, b, k, r: (
      b["audio"].mean(1) @ p["w"] + p["b"] + r * jnp.sin(b["audio"][:, 0, 0])
    ),
  )
  mesh = sharding.make_mesh()
  split = _splits()["test"]
  params = {"w": jnp.array([0.5, -1.0, 2.0]), "b": jnp.array(0.1)}
  rates = [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6]
  key = jax.random.key(0)
  all_rates = predict_lib.make_predict(rate_dependent.predict_fn, mesh)
  three_rates = predict_lib.make_predict(rate_dependent.predict_fn, mesh, 3)
  together = predict_lib.predict_split(
    predict_lib.bind(all_rates, params, mesh, key, rates), split, 8
  )
  passes = predict_lib.predict_split(
    predict_lib.bind(three_rates, params, mesh, key, rates), split, 8, desc="sweep"
  )  # with a progress bar over the batches
  assert together.shape == (7, 16)
  np.testing.assert_allclose(passes, together, rtol=1e-6, atol=1e-6)
  assert not np.allclose(together[0], together[-1])


def _epochs(seed_dir):
  return [json.loads(line) for line in (seed_dir / "metrics.jsonl").read_text().splitlines()]


def _assert_same_seed_runs(a_dir, b_dir, method, exact):
  """Two seed directories: same validation history, selections, results and latest state."""
  a, b = (
    json.loads((a_dir / "results.json").read_text()),
    json.loads((b_dir / "results.json").read_text()),
  )
  assert (a["epochs_trained"], a["stopped_early"]) == (b["epochs_trained"], b["stopped_early"])
  assert {m: v["epoch"] for m, v in a["best"].items()} == {
    m: v["epoch"] for m, v in b["best"].items()
  }
  close = (
    np.testing.assert_array_equal
    if exact
    else (lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6))
  )
  for ea, eb in zip(_epochs(a_dir), _epochs(b_dir), strict=True):
    assert ea["step"] == eb["step"]
    close(
      np.array([ea["train/loss"], ea["valid/MAE"]]), np.array([eb["train/loss"], eb["valid/MAE"]])
    )
  for m in a["results"]:
    close(np.array(a["results"][m]["test"]["MAE"]), np.array(b["results"][m]["test"]["MAE"]))
  sa, da, ma = _latest(a_dir, method)
  sb, db, mb = _latest(b_dir, method)
  assert int(sa.step) == int(sb.step) and da == db and ma["epoch"] == mb["epoch"]
  for x, y in zip(
    jax.tree.leaves((sa.params, sa.opt_state)), jax.tree.leaves((sb.params, sb.opt_state))
  ):
    close(np.asarray(x), np.asarray(y))


SEEDS = (3, 5, 8)


@pytest.fixture(scope="module")
def together_and_separate(tmp_path_factory):
  """Seeds 3, 5, 8 trained together (vmap_seeds) and one after another on the same data order.
  Gradient noise and patience 1 make the seeds stop early at different epochs."""
  root = tmp_path_factory.mktemp("seeds")
  splits, mesh = _splits(), sharding.make_mesh()
  method = _method(lr=0.05, patience=1, grad_noise=2.0, random_init=True)
  config = _config(12, ",".join(map(str, SEEDS)))
  config.vmap_seeds = True
  together = loop.train_seeds(config, method, splits, mesh, SEEDS, root / "together")
  separate = {}
  for seed in SEEDS:
    c = _config(12, str(seed))
    c.data_seed = SEEDS[0]
    separate[seed] = loop.train_seeds(c, method, splits, mesh, (seed,), root / "separate")[
      str(seed)
    ]
  return root, method, splits, together, separate


def test_seeds_trained_together_equal_separate_runs_on_the_same_data_order(together_and_separate):
  root, method, _, together, separate = together_and_separate
  stops = [together[str(s)]["epochs_trained"] for s in SEEDS]
  assert len(set(stops)) > 1 and min(stops) < 12, stops  # a frozen seed while others train on
  for seed in SEEDS:
    assert together[str(seed)]["epochs_trained"] == separate[seed]["epochs_trained"]
    _assert_same_seed_runs(
      root / "together" / f"seed_{seed}", root / "separate" / f"seed_{seed}", method, exact=False
    )
  # The seeds differ (initialisation and keys), and the data order is the first seed's.
  finals = [together[str(s)]["results"]["MAE"]["test"]["MAE"] for s in SEEDS]
  assert len(set(finals)) == len(SEEDS)
  assert loop.data_order_seed(_config(1, "5,8"), 8) == 8
  vm = _config(1, "5,8")
  vm.vmap_seeds = True
  assert loop.data_order_seed(vm, 8) == 5


def test_seeds_trained_together_resume_exactly_even_after_a_kill_between_seed_saves(
  together_and_separate,
):
  root, method, splits, _, _ = together_and_separate
  mesh = sharding.make_mesh()
  config = _config(12, ",".join(map(str, SEEDS)))
  config.vmap_seeds = True
  work = root / "resumed"
  short = _config(2, config.seeds)
  short.vmap_seeds = True
  loop.train_seeds(short, method, splits, mesh, SEEDS, work)
  # A kill after seed 3 saved epoch 2 but before seeds 5 and 8 did: their latest is epoch 1.
  for seed in SEEDS[1:]:
    ck = checkpoints.Checkpoints(work / f"seed_{seed}" / "checkpoints", method.selection_metrics)
    ck.latest.delete(ck.latest_step())
    ck.close()
    lines = (work / f"seed_{seed}" / "metrics.jsonl").read_text().splitlines()
    (work / f"seed_{seed}" / "metrics.jsonl").write_text(lines[0] + "\n")
  loop.train_seeds(config, method, splits, mesh, SEEDS, work)
  for seed in SEEDS:
    history = _latest(work / f"seed_{seed}", method)[2]
    straight = _latest(root / "together" / f"seed_{seed}", method)[2]
    assert history["epochs"] == straight["epochs"]
    a, _, _ = _latest(work / f"seed_{seed}", method)
    b, _, _ = _latest(root / "together" / f"seed_{seed}", method)
    for x, y in zip(
      jax.tree.leaves((a.params, a.opt_state)), jax.tree.leaves((b.params, b.opt_state))
    ):
      np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_workdir_whose_config_lacks_a_key_is_refused(tmp_path):
  config = _config(2)
  config.model = ml_collections.ConfigDict({"remat": False, "dim": 4})
  saved = json.loads(config.to_json_best_effort())
  (tmp_path / "config.json").write_text(json.dumps(saved))
  loop.check_workdir(tmp_path, config)  # the same config: accepted
  del saved["model"]["remat"]
  (tmp_path / "config.json").write_text(json.dumps(saved))
  with pytest.raises(
    errors.RunConfigError, match=r"different config \(model.remat: None -> False\)"
  ):
    loop.check_workdir(tmp_path, config)


def test_load_data_generates_the_configured_synthetic_version_and_refuses_another(
  tmp_path, monkeypatch
):
  monkeypatch.chdir(tmp_path)  # generated only at the config's default path, data/...
  config = lnln_config.get_config()
  config.data.synthetic_scale = 0.1
  config.data.synthetic_version = "v2"
  config.data.path = synthetic.default_path(config.data.synthetic, 0, "v2")
  splits = loop.load_data(config)
  assert "ood_valid_all" in splits and splits["train"].cue_signs is not None
  config.data.synthetic_version = "v1"  # the file at data.path holds synth-v2: refused
  with pytest.raises(
    errors.RunConfigError,
    match=r"holds synth-v2, but "
    r"config.data.synthetic_version='v1': give each version its own data.path",
  ):
    loop.load_data(config)
