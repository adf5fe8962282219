"""Every mistake a user can make on the command line is one line on stderr and a non-zero exit,
found before anything is compiled, and a refused start leaves the workdir as it was (or absent).

Each case runs `train.main(argv)` in this process (as `python train.py ARGS` would, without the
import cost of a subprocess) and checks the exit status, a fragment of the one error line, that no
traceback was printed, and, where the case says so, that the workdir is byte-for-byte unchanged.
"""

from __future__ import annotations

import errno
import json
import os
import pathlib
import pickle

import numpy as np
import pytest

import train
from msa_jax import cli
from msa_jax.data import load, synthetic
from msa_jax.errors import RunConfigError
from msa_jax.train import loop
from msa_jax.train import workdir as workdir_lib

ROOT = pathlib.Path(__file__).resolve().parents[1]
LNLN = f"--config={ROOT / 'configs' / 'lnln.py'}"
GEAR = f"--config={ROOT / 'configs' / 'gear.py'}"
SMALL = ["--config.progress=False", "--config.tensorboard=False", "--config.batch_size=8"]


@pytest.fixture(scope="module")
def raw(tmp_path_factory):
  """A tiny synthetic MMSA pickle (38 / 13 / 26 samples and four OOD splits) and its dict."""
  path = tmp_path_factory.mktemp("data") / "small.pkl"
  synthetic.write_synthetic(path, "mosi_small", scale=0.1)
  with open(path, "rb") as f:
    return path, pickle.load(f)


def _dump(path: pathlib.Path, obj) -> str:
  with open(path, "wb") as f:
    pickle.dump(obj, f, protocol=4)
  return str(path)


def _edited(raw, tmp, edit) -> str:
  """A copy of the data file with `edit(dict)` applied."""
  d = pickle.loads(pickle.dumps(raw[1]))
  edit(d)
  return _dump(tmp / "edited.pkl", d)


def _gear_dir(raw, tmp) -> str:
  """GEAR's directory layout without the test_nn_*.pkl files (no OOD splits)."""
  d = tmp / "gear_dir"
  d.mkdir()
  for name, file in (("train", "train.pkl"), ("valid", "valid.pkl"), ("test", "test_iid.pkl")):
    _dump(d / file, raw[1][name])
  return str(d)


class _Huge:
  def __reduce__(self):
    return (bytearray, (2**40,))


def _snapshot(path: pathlib.Path):
  """Every file's bytes and every directory under `path` (None when absent)."""
  if not path.exists():
    return None
  if path.is_file():
    return path.read_bytes()
  return {
    str(p.relative_to(path)): (p.read_bytes() if p.is_file() else "dir")
    for p in sorted(path.rglob("*"))
  }


def _write_run(work: pathlib.Path, argv: list[str], data: str | None = None) -> None:
  """A workdir as a start with `argv` leaves it: config.json (and the data fingerprint of `data`,
  and a selected checkpoint directory, when `data` is given)."""
  work.mkdir(parents=True, exist_ok=True)
  config = train._flags(["train.py", *argv, f"--workdir={work}"]).config
  (work / "config.json").write_text(json.dumps(loop._config_dict(config)))
  if data is not None:
    splits = load(data)
    fp = workdir_lib.data_fingerprint(data, splits)
    (work / workdir_lib.FINGERPRINT_FILE).write_text(json.dumps(fp))
    (work / "seed_1111" / "checkpoints" / "best" / "1").mkdir(parents=True)


# Each setup(tmp, raw, monkeypatch) prepares files and returns the arguments' substitutions.
def _none(tmp, raw, mp):
  return {}


def _data(tmp, raw, mp):
  return {"data": str(raw[0])}


def _no_cls(tmp, raw, mp):
  return {"data": _edited(raw, tmp, lambda d: d["valid"]["text_bert"].__setitem__((3, 0, 0), 7))}


def _empty_mask(tmp, raw, mp):
  return {"data": _edited(raw, tmp, lambda d: d["test"]["text_bert"].__setitem__((5, 1), 0))}


def _huge_alloc(tmp, raw, mp):
  return {"data": _dump(tmp / "huge.pkl", {"train": _Huge()})}


def _gear_no_ood(tmp, raw, mp):
  return {"data": _gear_dir(raw, tmp)}


def _workdir_file(tmp, raw, mp):
  (tmp / "work").write_text("not a directory")
  return {"data": str(raw[0])}


def _read_only(tmp, raw, mp):
  real = os.access
  mp.setattr(os, "access", lambda p, mode: False if str(p) == str(tmp) else real(p, mode))
  return {"data": str(raw[0])}


def _chdir(tmp, raw, mp):
  mp.chdir(tmp)
  return {}


def _config_json_truncated(tmp, raw, mp):
  (tmp / "work").mkdir()
  (tmp / "work" / "config.json").write_text('{"method": "lnln", "seeds": ')
  return {"data": str(raw[0])}


def _results_json_truncated(argv):
  def setup(tmp, raw, mp):
    _write_run(tmp / "work", [a.format(data=raw[0]) for a in argv])
    (tmp / "work" / "results.json").write_text('{"seeds": [11')
    return {"data": str(raw[0])}

  return setup


def _trained_on_other_data(argv):
  """A run trained on the original file, whose data file has since been replaced."""

  def setup(tmp, raw, mp):
    replaced = _edited(raw, tmp, lambda d: d["train"]["regression_labels"].__imul__(0.5))
    _write_run(tmp / "work", [a.format(data=replaced) for a in argv], data=str(raw[0]))
    return {"data": replaced}

  return setup


def _config_only(argv):
  def setup(tmp, raw, mp):
    _write_run(tmp / "work", [a.format(data=raw[0]) for a in argv])
    return {"data": str(raw[0])}

  return setup


def _raise_in(target: str, exc: BaseException, checkpoint: bool = False):
  """`loop.<target>` raises `exc` (optionally after a checkpoint directory was saved)."""

  def setup(tmp, raw, mp):
    def fail(*args, **kwargs):
      if checkpoint:
        (tmp / "work" / "seed_1111" / "checkpoints" / "latest" / "9").mkdir(parents=True)
      raise exc

    mp.setattr(loop, target, fail)
    return {"data": str(raw[0])}

  return setup


LNLN_DATA = [LNLN, "--config.data.path={data}", *SMALL]
# The fixture's file is synth-v1, which has no OOD validation splits.
GEAR_DATA = [
  GEAR,
  "--config.data.path={data}",
  "--config.data.synthetic_version=v1",
  "--config.gear.criterion=Acc_2_mean",
  *SMALL,
]
# id: (arguments, setup, exit status, message fragment, workdir unchanged)
CASES = {
  "negative_batch_size": (
    [*LNLN_DATA, "--config.batch_size=-32"],
    _data,
    1,
    "config.batch_size=-32: expected an integer >= 1",
    True,
  ),
  "zero_batch_size": ([*LNLN_DATA, "--config.batch_size=0"], _data, 1, "batch_size=0", True),
  "negative_checkpoint_keep": (
    [*LNLN_DATA, "--config.checkpoint_keep=-1"],
    _data,
    1,
    "config.checkpoint_keep=-1: expected an integer >= 1",
    True,
  ),
  "zero_eval_batch_size": (
    [*LNLN_DATA, "--config.eval_batch_size=0"],
    _data,
    1,
    "config.eval_batch_size=0: expected an integer >= 1",
    True,
  ),
  "zero_max_epochs": ([*LNLN_DATA, "--config.max_epochs=0"], _data, 1, "max_epochs=0", True),
  "negative_lr": (
    [*LNLN_DATA, "--config.optim.lr=-1e-3"],
    _data,
    1,
    "config.optim.lr=-0.001: expected a finite number >= 0",
    True,
  ),
  "nan_lr": ([*LNLN_DATA, "--config.optim.lr=nan"], _data, 1, "config.optim.lr=nan", True),
  "negative_gear_lr": (
    [*GEAR_DATA, "--config.optim.lr_bert=-5e-5"],
    _data,
    1,
    "config.optim.lr_bert=-5e-05: expected a finite number >= 0",
    True,
  ),
  "dropout_one": (
    [*GEAR_DATA, "--config.model.extractor_dropout=1.0"],
    _data,
    1,
    "config.model.extractor_dropout=1.0: expected a number in [0, 1)",
    True,
  ),
  "missing_rate_one": (
    [*LNLN_DATA, "--config.lnln.valid_missing_rate=1.0"],
    _data,
    1,
    "config.lnln.valid_missing_rate=1.0",
    True,
  ),
  "sweep_rate_above_one": (
    [*LNLN_DATA, "--config.lnln.sweep_rates=0.0,1.5"],
    _data,
    1,
    "config.lnln.sweep_rates='0.0,1.5': expected comma-separated rates in [0, 1)",
    True,
  ),
  "repeated_seeds": ([*LNLN_DATA, "--config.seeds=1,1"], _data, 1, "no repeats", True),
  "unknown_dataset": (
    [*LNLN_DATA, "--config.data.dataset=mosix"],
    _data,
    1,
    "config.data.dataset='mosix': expected one of 'mosi', 'mosei', 'sims'",
    True,
  ),
  "unknown_encoder": (
    [*LNLN_DATA, "--config.encoder=bert"],
    _data,
    1,
    "config.encoder='bert': expected one of tiny",
    True,
  ),
  "unknown_criterion": (
    [*GEAR_DATA, "--config.gear.criterion=F1"],
    _data,
    1,
    "config.gear.criterion='F1'",
    True,
  ),
  "unknown_synthetic_version": (
    [*LNLN_DATA, "--config.data.synthetic_version=v3"],
    _data,
    1,
    "config.data.synthetic_version='v3'",
    True,
  ),
  "gear_on_sims": (
    [*GEAR_DATA, "--config.data.dataset=sims"],
    _data,
    1,
    "config.data.dataset='sims' with config.method='gear'",
    True,
  ),
  "batch_larger_than_train_split": (
    [*LNLN_DATA, "--config.batch_size=64"],
    _data,
    1,
    "config: ",
    True,
  ),
  "unknown_key": ([*LNLN_DATA, "--config.foo=1"], _data, 1, "unknown config key 'foo'", True),
  "unknown_nested_key": (
    [*LNLN_DATA, "--config.model.dimm=1"],
    _data,
    1,
    "--config.model.dimm: unknown config key 'dimm' (not a key of the config file); did you mean",
    True,
  ),
  "unparsable_value": ([*LNLN_DATA, "--config.batch_size=abc"], _data, 1, "batch_size=abc", True),
  "unknown_flag": ([*LNLN_DATA, "--bogus=1"], _data, 1, "Unknown command line flag 'bogus'", True),
  "extra_argument": ([*LNLN_DATA, "extra"], _data, 1, "unexpected arguments: ['extra']", True),
  "unknown_preset": (
    [f"{LNLN}:foo", "--config.data.path={data}"],
    _data,
    1,
    "configs/lnln.py: unknown preset 'foo'; valid: (none), mosi, mosei, sims",
    True,
  ),
  "missing_config_file": (
    [f"--config={ROOT / 'configs' / 'nope.py'}"],
    _none,
    1,
    "no such config file",
    True,
  ),
  "mistyped_data_path_default_config": (
    [LNLN, "--config.data.path=data/synthetic_mosi_smal_seed0.pkl", *SMALL],
    _chdir,
    1,
    "config.data.path='data/synthetic_mosi_smal_seed0.pkl' does not exist",
    True,
  ),
  "missing_ood_file": (
    [*GEAR_DATA, "--config.data.ood=/nonexistent/x.ood.json"],
    _data,
    1,
    "config.data.ood='/nonexistent/x.ood.json'",
    True,
  ),
  "gear_directory_without_ood_splits": (
    GEAR_DATA,
    _gear_no_ood,
    1,
    "has no OOD test splits ood_text, ood_audio, ood_vision, ood_all",
    True,
  ),
  "text_bert_without_cls": (
    LNLN_DATA,
    _no_cls,
    1,
    "split 'valid', key 'text_bert': expected token id 101 ([CLS]) at position 0 of every "
    "sample, got 7 at sample 3",
    True,
  ),
  "all_zero_attention_mask": (
    LNLN_DATA,
    _empty_mask,
    1,
    "split 'test', key 'text_bert': expected at least one valid token (attention mask 1), got an "
    "all-zero mask at sample 5",
    True,
  ),
  "huge_allocation_in_pickle": (
    LNLN_DATA,
    _huge_alloc,
    1,
    "refused a bytearray of 1099511627776 bytes",
    True,
  ),
  "workdir_is_a_file": (LNLN_DATA, _workdir_file, 1, "is a file; expected a directory", True),
  "read_only_parent": (LNLN_DATA, _read_only, 1, "is not writable", True),
  "truncated_config_json": (
    LNLN_DATA,
    _config_json_truncated,
    1,
    "config.json: not valid JSON",
    True,
  ),
  "truncated_results_json": (
    LNLN_DATA,
    _results_json_truncated(LNLN_DATA),
    1,
    "results.json: not valid JSON",
    True,
  ),
  "eval_on_new_workdir": (
    [*LNLN_DATA, "--mode=eval"],
    _data,
    1,
    "holds no trained run (no config.json); train first",
    True,
  ),
  "eval_without_checkpoints": (
    [*LNLN_DATA, "--mode=eval"],
    _config_only(LNLN_DATA),
    1,
    "seed 1111 has no selected checkpoint",
    True,
  ),
  "eval_on_replaced_data": (
    [*LNLN_DATA, "--mode=eval"],
    _trained_on_other_data(LNLN_DATA),
    1,
    "the data differs from the data the run in",
    True,
  ),
  "resume_on_replaced_data": (
    LNLN_DATA,
    _trained_on_other_data(LNLN_DATA),
    1,
    "the data differs from the data the run in",
    True,
  ),
  "disk_full_in_orbax": (
    LNLN_DATA,
    _raise_in(
      "train_seeds",
      ValueError("Error writing local file: FAILED_PRECONDITION: No space left on device"),
    ),
    1,
    "disk full writing a file",
    True,
  ),
  "disk_full_writing_config": (
    LNLN_DATA,
    _raise_in("record_config", OSError(errno.ENOSPC, "No space left on device", "config.json")),
    1,
    "disk full writing config.json (No space left on device): free space",
    True,
  ),
  "permission_denied_writing": (
    LNLN_DATA,
    _raise_in("record_config", PermissionError(errno.EACCES, "Permission denied", "x.json")),
    1,
    "cannot write or read x.json: Permission denied",
    True,
  ),
  "ctrl_c_before_any_checkpoint": (
    LNLN_DATA,
    _raise_in("load_data", KeyboardInterrupt()),
    cli.EXIT_INTERRUPTED,
    "interrupted: no checkpoint was saved in",
    True,
  ),
  "ctrl_c_after_a_checkpoint": (
    LNLN_DATA,
    _raise_in("train_seeds", KeyboardInterrupt(), checkpoint=True),
    cli.EXIT_INTERRUPTED,
    "the same command resumes the run in",
    False,
  ),
}


@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
def test_user_error_is_one_line_and_leaves_the_workdir_unchanged(
  case, raw, tmp_path, monkeypatch, capsys
):
  args, setup, status, fragment, unchanged = CASES[case]
  monkeypatch.delenv(cli.DEBUG_ENV, raising=False)
  subs = setup(tmp_path, raw, monkeypatch)
  work = tmp_path / "work"
  argv = ["train.py", *[a.format(**subs) for a in args], f"--workdir={work}"]
  before = _snapshot(work)
  capsys.readouterr()
  assert train.main(argv) == status
  err = capsys.readouterr().err
  lines = [line for line in err.splitlines() if not line.startswith("[msa_jax] warning")]
  assert lines and fragment in lines[-1], err
  assert "Traceback" not in err
  assert lines[-1].startswith("error: " if status == 1 else "interrupted")
  if unchanged:
    assert _snapshot(work) == before
  if case == "mistyped_data_path_default_config":
    assert not (tmp_path / "data").exists()  # nothing generated at the mistyped path


def test_table_has_a_case_for_every_requirement():
  assert len(CASES) >= 30


def test_debug_flag_and_environment_show_the_traceback(raw, tmp_path, monkeypatch):
  argv = ["train.py", *[a.format(data=raw[0]) for a in LNLN_DATA], f"--workdir={tmp_path / 'w'}"]
  with pytest.raises(RunConfigError, match="batch_size=0"):
    train.main([*argv, "--config.batch_size=0", "--debug"])
  monkeypatch.setenv(cli.DEBUG_ENV, "1")
  with pytest.raises(RunConfigError, match="batch_size=0"):
    train.main([*argv, "--config.batch_size=0"])


def test_a_bug_keeps_its_traceback():
  def bug():
    raise ZeroDivisionError("a bug")

  with pytest.raises(ZeroDivisionError):
    cli.guard(bug)


def test_scripts_share_the_handler(tmp_path, capsys):
  """A script's main under `run_script`: a file-system error is one line and exit status 1."""

  def main(argv):
    assert argv == ["--x"]
    raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "out.pkl"))

  assert cli.run_script(main, ["--x"]) == 1
  err = capsys.readouterr().err
  assert err.count("\n") == 1 and "disk full writing" in err and "out.pkl" in err


def test_gear_directory_trains_without_ood_splits_only_when_told(raw, tmp_path):
  from configs import gear as gear_config

  config = gear_config.get_config()
  config.data.path = _gear_dir(raw, tmp_path)
  config.data.synthetic_version = "v1"  # the fixture's benchmark
  with pytest.raises(RunConfigError, match="--config.data.ood=none"):
    loop.load_data(config)
  config.data.ood = "none"
  assert set(loop.load_data(config)) == {"train", "valid", "test"}
  config.data.path = str(raw[0])  # a file with OOD splits: data.ood=none drops them
  assert set(loop.load_data(config)) == {"train", "valid", "test"}


def test_known_quirks_of_released_files_are_repaired_with_a_warning(raw, tmp_path, capsys):
  def quirks(d):
    n = len(d["train"]["regression_labels"])
    d["train"]["vision_lengths"] = np.append(d["train"]["vision_lengths"], 1)  # N + 1 entries
    d["valid"]["audio_length"] = d["valid"].pop("audio_lengths")
    d["test"]["audio_lengths_extra"] = np.zeros(3)
    assert len(d["train"]["vision_lengths"]) == n + 1

  path = _edited(raw, tmp_path, quirks)
  splits = load(path)
  err = capsys.readouterr().err.splitlines()
  assert len(err) == 3, err
  assert "key 'vision_lengths': 39 entries for 38 samples; using the first 38" in err[0]
  assert "split 'valid': key 'audio_length' read as 'audio_lengths'" in err[1]
  assert "split 'test': ignored unknown key(s) audio_lengths_extra" in err[2]
  np.testing.assert_array_equal(splits["train"].vision_lengths, raw[1]["train"]["vision_lengths"])
  np.testing.assert_array_equal(splits["valid"].audio_lengths, raw[1]["valid"]["audio_lengths"])


def test_fingerprint_follows_the_arrays_not_the_path(raw, tmp_path):
  copy = _edited(raw, tmp_path, lambda d: None)
  a = workdir_lib.data_fingerprint(raw[0], load(raw[0]))
  b = workdir_lib.data_fingerprint(copy, load(copy))
  assert a["blake2b"] == b["blake2b"] and a["path"] != b["path"]
  changed = _edited(raw, tmp_path, lambda d: d["test"]["audio"].__setitem__((0, 0, 0), 1.5))
  assert workdir_lib.data_fingerprint(changed, load(changed))["blake2b"] != a["blake2b"]


@pytest.mark.parametrize(
  "module,preset",
  [("lnln", p) for p in (None, "mosi", "mosei", "sims")] + [("gear", p) for p in (None, "mosi")],
)
def test_every_shipped_config_passes_validation(module, preset):
  import importlib

  from msa_jax.train import validate_config

  validate_config.validate(importlib.import_module(f"configs.{module}").get_config(preset))
