"""msa_jax.allocator: the programs run themselves again once, with mimalloc preloaded."""

import json
import os
import pathlib
import subprocess
import sys
import textwrap

import pytest

from msa_jax import allocator

ROOT = pathlib.Path(__file__).resolve().parents[1]

# Re-executes itself like train.py, then reports its arguments, its allocator and whether the
# mimalloc library is mapped into the process.
PROGRAM = textwrap.dedent(
  """
  import json, os, sys
  from msa_jax import allocator
  allocator.reexec()
  maps = open("/proc/self/maps").read()
  print(json.dumps({"argv": sys.argv[1:], "active": allocator.active(),
                    "mapped": "libmimalloc" in maps, "flag_O": sys.flags.optimize}))
  """
)


def _run(tmp_path, env_update, *args):
  script = tmp_path / "program.py"
  script.write_text(PROGRAM)
  env = {k: v for k, v in os.environ.items() if k not in (allocator.ENV, allocator.PRELOAD)}
  env.update(env_update)
  env["PYTHONPATH"] = str(ROOT)
  return subprocess.run(
    [sys.executable, "-O", str(script), *args],
    capture_output=True,
    text=True,
    env=env,
    timeout=120,
  )


def test_mimalloc_is_installed_on_linux():
  if not sys.platform.startswith("linux"):
    pytest.skip("mimalloc is a dependency on Linux only")
  library = allocator.mimalloc_library()
  assert library is not None and library.is_file() and library.name.startswith("libmimalloc.so")


def test_the_program_runs_again_with_mimalloc_mapped_and_its_arguments_kept(tmp_path):
  proc = _run(tmp_path, {}, "--config=x.py", "two words")
  assert proc.returncode == 0, proc.stderr
  out = json.loads(proc.stdout.strip().splitlines()[-1])
  assert out["argv"] == ["--config=x.py", "two words"]
  assert out["flag_O"] == 1  # interpreter options survive the re-execution
  assert out["mapped"] is True
  assert out["active"] == allocator.mimalloc_library().name


def test_system_keeps_the_c_librarys_allocator(tmp_path):
  proc = _run(tmp_path, {allocator.ENV: "system"}, "a")
  assert proc.returncode == 0, proc.stderr
  out = json.loads(proc.stdout.strip().splitlines()[-1])
  assert out == {"argv": ["a"], "active": "system", "mapped": False, "flag_O": 1}


def test_a_bad_choice_is_one_line_and_exit_status_1(tmp_path):
  proc = _run(tmp_path, {allocator.ENV: str(tmp_path / "nope.so")})
  assert proc.returncode == 1
  lines = proc.stderr.strip().splitlines()
  assert len(lines) == 1
  assert lines[0].startswith(f"error: {allocator.ENV}='{tmp_path / 'nope.so'}': expected")


def test_reexec_env_decisions(tmp_path):
  library = tmp_path / "libother.so"
  library.write_bytes(b"")
  base = {"HOME": "/root"}
  # another library by path
  assert allocator.reexec_env({**base, allocator.ENV: str(library)}, "linux") == {
    **base,
    allocator.ENV: str(library),
    allocator.PRELOAD: str(library.resolve()),
  }
  # nothing to do: the C library's allocator, a library already preloaded, not Linux
  assert allocator.reexec_env({**base, allocator.ENV: "system"}, "linux") is None
  assert allocator.reexec_env({**base, allocator.PRELOAD: "/x/liby.so"}, "linux") is None
  assert allocator.reexec_env(base, "darwin") is None
  # the default is mimalloc where it is installed
  default = allocator.reexec_env(base, "linux")
  mimalloc = allocator.mimalloc_library()
  assert default == (None if mimalloc is None else {**base, allocator.PRELOAD: str(mimalloc)})
  named = allocator.reexec_env({**base, allocator.ENV: "mimalloc"}, "linux")
  assert named == (None if default is None else {**default, allocator.ENV: "mimalloc"})
  with pytest.raises(ValueError, match="MSA_JAX_MALLOC='/no/such.so': expected 'mimalloc'"):
    allocator.reexec_env({allocator.ENV: "/no/such.so"}, "linux")


def test_active_and_a_child_on_the_system_allocator():
  env = {allocator.PRELOAD: "/a/libmimalloc.so.3:/b/libextra.so", "X": "1"}
  assert allocator.active(env) == "libmimalloc.so.3,libextra.so"
  assert allocator.active({"X": "1"}) == "system"
  child = allocator.without_preload(env)
  assert child == {"X": "1", allocator.ENV: "system"}
  assert allocator.reexec_env(child, "linux") is None
