"""The config files as the one source of settings: the shared base, the methods' keys, the
settings dataclasses built from them, and loading a config file by path as train.py does."""

import dataclasses
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from configs import common
from configs import gear as gear_config
from configs import lnln as lnln_config
from msa_jax import errors
from msa_jax.data.split import Split
from msa_jax.models.bert import BertConfig
from msa_jax.models.gear import GEARConfig
from msa_jax.models.lnln import LNLNConfig
from msa_jax.train import gear, lnln, loop, methods, optimizers

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _flat(config) -> dict:
  out = {}
  for key, value in config.items():
    if hasattr(value, "items"):
      out.update({f"{key}.{k}": v for k, v in _flat(value).items()})
    else:
      out[key] = value
  return out


def _defaults(cls) -> dict:
  fields = dataclasses.fields(cls)
  return {f.name: f.default for f in fields if f.default is not dataclasses.MISSING}


def _splits(frames=(32, 32), dims=(5, 20), text_len=50) -> dict[str, Split]:
  n = 8
  text = np.zeros((n, 3, text_len), np.int32)
  text[:, 0, 0], text[:, 1] = 101, 1
  return {
    "train": Split(
      text_bert=text,
      audio=np.zeros((n, frames[0], dims[0]), np.float32),
      vision=np.zeros((n, frames[1], dims[1]), np.float32),
      audio_lengths=np.full(n, frames[0], np.int32),
      vision_lengths=np.full(n, frames[1], np.int32),
      labels=np.zeros(n, np.float32),
    )
  }


def test_both_methods_start_from_the_common_keys_and_keep_only_keys_with_an_effect():
  varying = {
    "method",
    "seeds",
    "data.synthetic",
    "data.synthetic_version",
    "data.path",
    "batch_size",
    "max_epochs",
  }
  base = _flat(
    common.get_config(method="m", seeds="1", synthetic="mosi", batch_size=1, max_epochs=1)
  )
  for module in (lnln_config, gear_config):
    flat = _flat(module.get_config())
    assert set(base) <= set(flat)
    for key in set(base) - varying:
      assert flat[key] == base[key], key
  assert lnln_config.get_config().data.path == "data/synthetic_mosi_small_seed0.pkl"
  assert gear_config.get_config().data.path == "data/synthetic_mosi_v2_seed0.pkl"
  gear_flat, lnln_flat = _flat(gear_config.get_config()), _flat(lnln_config.get_config())
  assert not {"mask_seed", "eval_rates_per_pass"} & set(gear_flat)
  assert "data.ood" not in lnln_flat and "data.ood" in gear_flat


def test_dataclass_defaults_equal_the_config_files():
  """The model and optimizer dataclasses' defaults (the reference architecture) are the configs'
  values: LNLN's default config, GEAR's MOSEI preset (the authors' run.py defaults) and MOSI."""
  model = lnln_config.get_config().model
  shared = {k: v for k, v in _defaults(LNLNConfig).items() if k in model}
  assert shared == {k: model[k] for k in shared} and len(shared) == len(model)
  mosei = gear_config.get_config("mosei")
  shared = {k: v for k, v in _defaults(GEARConfig).items() if k in mosei.model}
  assert shared == {k: mosei.model[k] for k in shared} and len(shared) == len(mosei.model)
  assert dataclasses.asdict(optimizers.GEAROptimizerConfig()) == mosei.optim.to_dict()
  mosi = gear_config.get_config("mosi")
  assert dataclasses.asdict(optimizers.GEAROptimizerConfig.mosi()) == mosi.optim.to_dict()


def test_settings_dataclasses_come_from_the_config_sections():
  splits = _splits()
  cfg = lnln.model_config(lnln_config.get_config(), splits, BertConfig.tiny())
  shapes = (cfg.audio_frames, cfg.vision_frames, cfg.audio_dim, cfg.vision_dim, cfg.text_frames)
  assert shapes == (32, 32, 5, 20, 50)
  assert cfg.attention_chunk == 1 and cfg.dim == 128
  c = gear_config.get_config()
  cfg = gear.model_config(c, splits, BertConfig.tiny())
  assert (cfg.audio_in, cfg.vision_in, cfg.extractor_dropout) == (5, 20, 0.3)
  opt = optimizers.LNLNOptimizerConfig(**lnln_config.get_config().optim)
  assert (opt.lr, opt.weight_decay, opt.lr_schedule) == (1e-3, 1e-4, "per_step")


@pytest.mark.parametrize(
  "module, key, value, message",
  [
    (
      lnln_config,
      "model.dims",
      64,
      r"^config.model.dims: not a setting of LNLNConfig \(expected one of",
    ),
    (
      lnln_config,
      "model.audio_dim",
      5,
      r"^config.model.audio_dim: LNLNConfig.audio_dim is set from the data",
    ),
    (lnln_config, "model.dim", 0, r"^config.model: LNLNConfig.dim=0, expected a positive int$"),
    (
      lnln_config,
      "optim.lr_schedule",
      "cosine",
      r"^config.optim: LNLNOptimizerConfig.lr_schedule='cosine'",
    ),
    (gear_config, "model.swap_dim", 30, r"^config.model: GEARConfig: swap_dim=30 is not divisible"),
    (
      gear_config,
      "optim.lr_text",
      1e-3,
      r"^config.optim.lr_text: not a setting of GEAROptimizerConfig",
    ),
  ],
)
def test_unknown_derived_and_refused_settings_name_the_key(module, key, value, message):
  c = module.get_config()
  c.batch_size = 8
  section, name = key.split(".")
  c[section][name] = value
  with pytest.raises(errors.RunConfigError, match=message):
    methods.build(c, _splits())


def test_a_missing_key_fails_naming_it():
  c = lnln_config.get_config()
  del c["data_seed"]
  with pytest.raises(AttributeError, match="data_seed"):
    loop.data_order_seed(c, 1111)


def test_train_py_loads_a_config_file_by_path():
  """`--config=configs/gear.py:mosei` (the file imports `configs.common`) from another directory;
  a removed key is refused by the flag parser."""
  cmd = [
    sys.executable,
    str(ROOT / "train.py"),
    f"--config={ROOT / 'configs' / 'gear.py'}:mosei",
    "--config.data.path=/nonexistent/mosei.pkl",
    "--workdir=/nonexistent/run",
  ]
  proc = subprocess.run(cmd, cwd=ROOT.parent, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 1, proc.stderr
  assert "config.data.path='/nonexistent/mosei.pkl' does not exist" in proc.stderr, proc.stderr
  proc = subprocess.run(
    cmd + ["--config.mask_seed=1"], cwd=ROOT.parent, capture_output=True, text=True, timeout=300
  )
  assert proc.returncode != 0 and "mask_seed" in proc.stderr


@pytest.mark.parametrize("preset", [None, "mosi", "mosei"])
def test_gear_presets_train_long_enough_for_swap_and_patience(preset):
  """Early stopping cannot end a run before swap has had `patience` epochs to show on the
  selection criterion."""
  c = gear_config.get_config(preset)
  assert c.max_epochs >= c.gear.swap_epochs + c.gear.patience
  assert c.gear.criterion == ("ood_valid" if preset is None else "Acc_2_mean")
  assert c.gear.baseline == (preset is None)
