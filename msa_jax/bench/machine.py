"""The machine a benchmark runs on: device, CPU, load, a reference matmul rate, device memory."""

from __future__ import annotations

import os
import platform
import re
import statistics
from typing import Any

import jax
import jax.numpy as jnp

from msa_jax import allocator
from msa_jax.bench.figures import Figure, fig
from msa_jax.bench.timing import timed


def load_average() -> list[float]:
  """The 1, 5 and 15 minute load averages (empty where the system has none)."""
  try:
    return [round(x, 2) for x in os.getloadavg()]
  except OSError:
    return []


def machine_info() -> dict[str, Any]:
  """Backend, device, CPU model and SIMD flags, core count, jax / Python versions, XLA_FLAGS, the
  host memory allocator (`msa_jax.allocator.active`)."""
  dev = jax.devices()[0]
  cpu = platform.processor()
  try:
    with open("/proc/cpuinfo", encoding="utf-8") as f:
      text = f.read()
    names = re.findall(r"^model name\s*:\s*(.*)$", text, re.M)
    flags = (
      set(re.findall(r"^flags\s*:\s*(.*)$", text, re.M)[0].split()) if "flags" in text else set()
    )
    cpu = names[0] if names else cpu
    simd = sorted(f for f in flags if f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "fma"))
  except (OSError, IndexError):
    simd = []
  return {
    "backend": jax.default_backend(),
    "device": f"{dev.platform} {dev.device_kind}",
    "devices": jax.device_count(),
    "cpu": cpu,
    "cpu_flags": simd,
    "cpus": os.cpu_count(),
    "jax": jax.__version__,
    "python": platform.python_version(),
    "xla_flags": os.environ.get("XLA_FLAGS", ""),
    "malloc": allocator.active(),
  }


def sgemm_rate(n: int = 2048, runs: int = 5) -> Figure:
  """A jitted (n, n) @ (n, n) float32 matmul's rate, median of `runs` calls after a warm-up."""
  key_a, key_b = jax.random.split(jax.random.key(0))
  a = jax.random.normal(key_a, (n, n), jnp.float32)
  b = jax.random.normal(key_b, (n, n), jnp.float32)
  mm = jax.jit(jnp.matmul)
  jax.block_until_ready(mm(a, b))
  times = [timed(lambda: mm(a, b), jax.block_until_ready)[1] for _ in range(runs)]
  return fig(
    2.0 * n**3 / statistics.median(times) / 1e9,
    "GFLOP/s",
    "measured",
    f"jit f32 matmul {n}x{n}, median of {runs}",
  )


def device_memory() -> dict[str, Figure]:
  """Peak / current bytes in use on the first device, where the backend reports them (GPU, TPU)."""
  try:
    stats = jax.devices()[0].memory_stats() or {}
  except Exception:  # CPU backends may not implement memory_stats
    stats = {}
  out = {}
  for key in ("peak_bytes_in_use", "bytes_in_use", "bytes_limit"):
    if key in stats:
      out[key.replace("bytes", "gb")] = fig(stats[key] / 1e9, "GB", "measured")
  return out
