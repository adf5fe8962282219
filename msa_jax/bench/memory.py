"""The process's peak resident set: since it started, and per phase, with the standard library only.

scripts/reference/bench_reference.py loads this file by path in a virtualenv that has torch and
no jax, so it imports nothing but the standard library.
"""

from __future__ import annotations

import resource

_PEAK_SEEN = [0]


def max_rss_bytes() -> int:
  """The process's peak resident set size since it started (ru_maxrss, KiB on Linux)."""
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _status_bytes(field: str) -> int | None:
  """A `kB` field of /proc/self/status in bytes; None where there is no such file or field."""
  try:
    with open("/proc/self/status", encoding="ascii") as f:
      for line in f:
        if line.startswith(field + ":"):
          return int(line.split()[1]) * 1024
  except OSError:
    return None
  return None


def reset_peak_rss() -> bool:
  """Resets the kernel's peak-RSS mark (VmHWM) to the current RSS; False where not allowed."""
  try:
    with open("/proc/self/clear_refs", "w", encoding="ascii") as f:
      f.write("5")
    return True
  except OSError:
    return False


def phase_peak_rss() -> int | None:
  """VmHWM: the peak resident set since the last `reset_peak_rss` (or the process start)."""
  peak = _status_bytes("VmHWM")
  if peak is not None:
    _PEAK_SEEN[0] = max(_PEAK_SEEN[0], peak)
  return peak


def process_peak_rss() -> int:
  """The process's peak resident set: the largest phase peak and ru_maxrss (which a VmHWM reset
  lowers too, so neither alone is the peak once phases have been reset)."""
  phase_peak_rss()
  return max(_PEAK_SEEN[0], max_rss_bytes())
