"""The host memory allocator of the command-line programs.

XLA:CPU allocates every execution's temporaries and outputs afresh (GBs per train step at the
papers' shapes). glibc serves large requests with fresh memory mappings and unmaps them on free, so
every step page-faults its buffers in again. mimalloc keeps and reuses more of the freed memory.
Measured on the project's 2-core CPU, train step on glibc / on mimalloc, separate processes
(docs/benchmarks.md "The host allocator"): GEAR bert-base 1.12×, GEAR MiniLM 1.08×, LNLN bert-base
1.07×, LNLN MiniLM 0.92× (slower), with 3–7% higher peak resident memory. Results are unchanged:
the allocator only decides where buffers live.

`train.py` and `scripts/bench.py` call `reexec()` first: on Linux, where the `cmeel-mimalloc`
package (a dependency of msa_jax on Linux) provides the library, the program executes itself again
once with the library in `LD_PRELOAD`, which is the only way to replace the allocator of a process
(it must be loaded before anything allocates). `MSA_JAX_MALLOC` chooses:
- unset or `mimalloc`: mimalloc when installed, else the C library's allocator;
- `system`: the C library's allocator (no re-execution);
- a path to a shared library: that allocator (e.g. jemalloc's `libjemalloc.so.2`).
A library already in `LD_PRELOAD` is left as it is. `active()` names the allocator in use, which the
benchmarks record.
"""

from __future__ import annotations

import importlib.metadata
import os
import pathlib
import sys
from collections.abc import Mapping

ENV = "MSA_JAX_MALLOC"
PRELOAD = "LD_PRELOAD"
_MIMALLOC_DIST = "cmeel-mimalloc"
_MIMALLOC_FILE = "libmimalloc.so"


def mimalloc_library() -> pathlib.Path | None:
  """The mimalloc shared library installed by the `cmeel-mimalloc` package, or None."""
  try:
    files = importlib.metadata.distribution(_MIMALLOC_DIST).files or []
  except importlib.metadata.PackageNotFoundError:
    return None
  for f in files:
    if f.name.startswith(_MIMALLOC_FILE) and f.parent.name == "lib":
      path = pathlib.Path(str(f.locate())).resolve()
      if path.is_file():
        return path
  return None


def chosen_library(env: Mapping[str, str]) -> pathlib.Path | None:
  """The library `MSA_JAX_MALLOC` in `env` asks to preload (see the module docstring), or None for
  the C library's allocator. A path that is not a file raises ValueError naming it."""
  choice = env.get(ENV, "").strip()
  if choice == "system":
    return None
  if choice in ("", "mimalloc"):
    return mimalloc_library()
  path = pathlib.Path(choice).expanduser()
  if not path.is_file():
    raise ValueError(
      f"{ENV}={choice!r}: expected 'mimalloc', 'system' or the path of an allocator's shared "
      "library, and no such file exists"
    )
  return path.resolve()


def _preloaded(env: Mapping[str, str]) -> list[str]:
  return [p for p in env.get(PRELOAD, "").replace(":", " ").split() if p]


def reexec_env(env: Mapping[str, str], platform: str = sys.platform) -> dict[str, str] | None:
  """The environment to execute the program again with, or None where nothing is to be done: not
  Linux, the C library's allocator chosen or nothing to preload, or a library already preloaded."""
  if not platform.startswith("linux") or _preloaded(env):
    return None
  library = chosen_library(env)
  if library is None:
    return None
  return {**env, PRELOAD: str(library)}


def reexec() -> None:
  """Executes this program again, same interpreter and arguments, with the chosen allocator
  preloaded (see the module docstring); returns where there is nothing to do. A bad
  `MSA_JAX_MALLOC` is one line on stderr and exit status 1."""
  try:
    env = reexec_env(os.environ)
  except ValueError as e:
    sys.exit(f"error: {e}")
  if env is None or not sys.executable:
    return
  sys.stdout.flush()
  sys.stderr.flush()
  os.execve(sys.executable, sys.orig_argv, env)


def active(env: Mapping[str, str] | None = None) -> str:
  """The allocator of this process: the file name of the preloaded library (e.g.
  "libmimalloc.so.3"), or "system" (the C library's)."""
  preloaded = _preloaded(os.environ if env is None else env)
  return ",".join(pathlib.Path(p).name for p in preloaded) or "system"


def without_preload(env: Mapping[str, str]) -> dict[str, str]:
  """`env` for a child program that should run on the C library's allocator (the authors' code as
  its users run it): no `LD_PRELOAD`, and `MSA_JAX_MALLOC=system` for any msa_jax program below."""
  child = {k: v for k, v in env.items() if k != PRELOAD}
  child[ENV] = "system"
  return child
