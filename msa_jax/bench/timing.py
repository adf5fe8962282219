"""Wall and CPU time of a call, and progress lines, with the standard library only.

scripts/reference/bench_reference.py loads this file by path in a virtualenv that has torch and
no jax, so it imports nothing but the standard library.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any

_START = time.perf_counter()


def log(message: str) -> None:
  """A progress line on stderr, with the seconds since this module was loaded."""
  print(f"[bench {time.perf_counter() - _START:7.1f}s] {message}", file=sys.stderr, flush=True)


def timed(
  fn: Callable[[], Any], block: Callable[[Any], Any] | None = None
) -> tuple[Any, float, float]:
  """(fn()'s result, wall seconds, CPU seconds of all this process's threads).

  `block` (e.g. `jax.block_until_ready`) is applied to the result inside the timed span, so that
  work dispatched asynchronously is counted. The CPU time is what the work costs whatever else
  runs on the machine."""
  cpu = time.process_time()
  start = time.perf_counter()
  out = fn() if block is None else block(fn())
  return out, time.perf_counter() - start, time.process_time() - cpu
