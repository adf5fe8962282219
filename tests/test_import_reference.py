"""scripts/import_reference.py on the committed reference fixtures: msgpack + JSON outputs,
refusals."""

import json
import pathlib
import subprocess
import sys

import flax.serialization
import jax
import numpy as np
from safetensors.numpy import load_file, save_file

from scripts import import_reference

ROOT = pathlib.Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures"


def _same_tree(a, b):
  la, lb = jax.tree_util.tree_flatten_with_path(a)[0], jax.tree_util.tree_flatten_with_path(b)[0]
  assert [k for k, _ in la] == [k for k, _ in lb]
  for (_, x), (_, y) in zip(la, lb):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_lnln_and_gear_write_params_and_config(tmp_path, capsys):
  for method, heads in (("lnln", ["--bert-heads", "2"]), ("gear", ["--text-heads", "2"])):
    weights = FIXTURES / f"{method}_reference.safetensors"
    out = tmp_path / method
    assert (
      import_reference.main(
        ["--method", method, "--weights", str(weights), "--out", str(out), *heads]
      )
      == 0
    )
    params = flax.serialization.msgpack_restore((tmp_path / f"{method}.msgpack").read_bytes())
    expected, _ = import_reference.convert_file(method, weights, bert_heads=2, text_heads=2)
    _same_tree(params, expected)
    meta = json.loads((tmp_path / f"{method}.json").read_text())
    assert meta["method"] == method and meta["parameter_count"] == sum(
      v.size for v in jax.tree.leaves(expected)
    )
    # every tensor of the state_dict is used or listed as unused: counts match the parameters
    assert len(meta["parameters"]) == len(jax.tree.leaves(expected))
  assert "wrote" in capsys.readouterr().out
  assert meta["config"]["text"]["num_attention_heads"] == 2


def test_existing_output_is_kept_and_bad_weights_are_one_line_errors(tmp_path):
  weights = FIXTURES / "gear_reference.safetensors"
  out = tmp_path / "gear"
  (tmp_path / "gear.msgpack").write_bytes(b"users file")
  cmd = [
    sys.executable,
    "scripts/import_reference.py",
    "--method",
    "gear",
    "--weights",
    str(weights),
    "--out",
    str(out),
    "--text-heads",
    "2",
  ]
  proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
  assert proc.returncode == 1 and "gear.msgpack exist(s); pass --overwrite" in proc.stderr
  assert (tmp_path / "gear.msgpack").read_bytes() == b"users file"
  state = load_file(str(weights))
  name = "fusion_model.fusion.fusion_layer_1.bias"
  del state[name]
  broken = tmp_path / "broken.safetensors"
  save_file(state, str(broken))
  code = import_reference.main(
    [
      "--method",
      "gear",
      "--weights",
      str(broken),
      "--out",
      str(tmp_path / "b"),
      "--text-heads",
      "2",
    ]
  )
  assert code == 1 and not (tmp_path / "b.msgpack").exists()
  proc = subprocess.run(
    cmd[:5] + [str(broken), "--out", str(tmp_path / "c"), "--text-heads", "2"],
    cwd=ROOT,
    capture_output=True,
    text=True,
  )
  assert proc.returncode == 1 and name in proc.stderr and "Traceback" not in proc.stderr


def test_non_safetensors_and_non_finite_weights_are_one_line_errors(tmp_path):
  not_safetensors = tmp_path / "model.pth"
  not_safetensors.write_bytes(b"PK\x03\x04 a torch zip, not safetensors")
  state = load_file(str(FIXTURES / "gear_reference.safetensors"))
  name = "fusion_model.fusion.fusion_layer_1.bias"
  state[name] = state[name].copy()
  state[name][[0, 2]] = [np.nan, np.inf]
  with_nan = tmp_path / "nan.safetensors"
  save_file(state, str(with_nan))
  for weights, message in (
    (not_safetensors, f"{not_safetensors}: not a safetensors file"),
    (with_nan, f"{with_nan}: tensor '{name}' holds 2 non-finite values (NaN or inf)"),
  ):
    out = tmp_path / weights.stem
    cmd = [sys.executable, "scripts/import_reference.py", "--method", "gear", "--weights"]
    proc = subprocess.run(
      [*cmd, str(weights), "--out", str(out), "--text-heads", "2"],
      cwd=ROOT,
      capture_output=True,
      text=True,
    )
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {message}")
    assert not out.with_name(out.name + ".msgpack").exists()
