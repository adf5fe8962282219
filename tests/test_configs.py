"""The config files as the one source of settings: the shared base, the methods' keys, and
loading a config file by path as train.py does."""

import pathlib
import subprocess
import sys

import pytest

from configs import common
from configs import gear as gear_config
from configs import lnln as lnln_config
from msa_jax.train import loop

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _flat(config) -> dict:
  out = {}
  for key, value in config.items():
    if hasattr(value, "items"):
      out.update({f"{key}.{k}": v for k, v in _flat(value).items()})
    else:
      out[key] = value
  return out


def test_both_methods_start_from_the_common_keys_and_keep_only_keys_with_an_effect():
  varying = {"method", "seeds", "data.synthetic", "data.path", "batch_size", "max_epochs"}
  base = _flat(common.get_config(method="m", seeds="1", synthetic="mosi", batch_size=1,
                                 max_epochs=1))
  for module in (lnln_config, gear_config):
    flat = _flat(module.get_config())
    assert set(base) <= set(flat)
    for key in set(base) - varying:
      assert flat[key] == base[key], key
  assert lnln_config.get_config().data.path == "data/synthetic_mosi_small_seed0.pkl"
  assert gear_config.get_config().data.path == "data/synthetic_mosi_seed0.pkl"
  gear_flat, lnln_flat = _flat(gear_config.get_config()), _flat(lnln_config.get_config())
  assert not {"mask_seed", "eval_rates_per_pass"} & set(gear_flat)
  assert "data.ood" not in lnln_flat and "data.ood" in gear_flat


def test_a_missing_key_fails_naming_it():
  c = lnln_config.get_config()
  del c["data_seed"]
  with pytest.raises(AttributeError, match="data_seed"):
    loop.data_order_seed(c, 1111)


def test_train_py_loads_a_config_file_by_path():
  """`--config=configs/gear.py:mosei` (the file imports `configs.common`) from another directory;
  a removed key is refused by the flag parser."""
  cmd = [sys.executable, str(ROOT / "train.py"), f"--config={ROOT / 'configs' / 'gear.py'}:mosei",
         "--config.data.path=/nonexistent/mosei.pkl", "--workdir=/nonexistent/run"]
  proc = subprocess.run(cmd, cwd=ROOT.parent, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 1, proc.stderr
  assert "config.data.path='/nonexistent/mosei.pkl' does not exist" in proc.stderr, proc.stderr
  proc = subprocess.run(cmd + ["--config.mask_seed=1"], cwd=ROOT.parent, capture_output=True,
                        text=True, timeout=300)
  assert proc.returncode != 0 and "mask_seed" in proc.stderr
