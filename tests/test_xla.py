"""msa_jax.xla: the loop's compiler options and the release of freed host memory."""

import ctypes
import ctypes.util
import os
import pathlib
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from msa_jax import allocator, xla
from msa_jax.models.bert import BertConfig, BertModel


def test_cpu_gets_the_memory_optimised_scheduler_unless_xla_flags_name_one(monkeypatch):
  assert jax.default_backend() == "cpu"
  monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=1")
  assert xla.compiler_options() == {"xla_cpu_scheduler_type": "CPU_SCHEDULER_TYPE_MEMORY_OPTIMIZED"}
  monkeypatch.setenv("XLA_FLAGS", "--xla_cpu_scheduler_type=CPU_SCHEDULER_TYPE_DEFAULT")
  assert xla.compiler_options() == {}


def test_the_options_change_the_schedule_not_the_results():
  """A BERT's gradient compiled with the options equals the default compile bit for bit, with no
  more temporaries."""
  cfg = BertConfig(
    vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64
  )
  ids = jax.random.randint(jax.random.key(0), (8, 12), 1, 100)
  text = jnp.stack([ids, jnp.ones_like(ids), jnp.zeros_like(ids)], axis=1)
  model = BertModel(cfg)
  params = model.init(jax.random.key(1), text, deterministic=True)

  def loss(p, key):
    return jnp.mean(model.apply(p, text, deterministic=False, rngs={"dropout": key}) ** 2)

  key = jax.random.key(2)
  plain = jax.jit(jax.grad(loss)).lower(params, key).compile()
  tuned = (
    jax.jit(jax.grad(loss), compiler_options=xla.compiler_options()).lower(params, key).compile()
  )
  for a, b in zip(jax.tree.leaves(plain(params, key)), jax.tree.leaves(tuned(params, key))):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  assert tuned.memory_analysis().temp_size_in_bytes <= plain.memory_analysis().temp_size_in_bytes


def test_release_host_memory_returns_freed_heap_pages():
  libc_name = ctypes.util.find_library("c")
  if xla._malloc_trim() is None:
    pytest.skip("not glibc: malloc_trim does not exist")
  libc = ctypes.CDLL(libc_name)
  libc.malloc.restype = ctypes.c_void_p
  libc.free.argtypes = [ctypes.c_void_p]
  # 64 MB of small blocks, all freed but the last: the heap's top cannot shrink, so only
  # malloc_trim hands the free pages in the middle back.
  blocks = [libc.malloc(4096) for _ in range(16384)]
  for b in blocks[:-1]:
    libc.free(b)
  assert xla.release_host_memory() is True
  libc.free(blocks[-1])


_MIMALLOC_PROBE = """
import ctypes
from msa_jax import xla
def rss_mb():
  with open("/proc/self/status") as f:
    return next(int(l.split()[1]) // 1024 for l in f if l.startswith("VmRSS"))
lib = ctypes.CDLL(None)
lib.malloc.restype, lib.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
lib.free.argtypes = [ctypes.c_void_p]
blocks = [lib.malloc(4096) for _ in range(16384)]  # 64 MB, touched
for b in blocks:
  ctypes.memset(b, 1, 4096)
for b in blocks[:-1]:
  lib.free(b)
before = rss_mb()
print(xla.release_host_memory(), before, rss_mb())
"""


def test_release_host_memory_returns_mimallocs_freed_pages():
  """Under mimalloc (the programs' allocator, msa_jax.allocator) freed pages stay resident until
  `mi_collect`: release_host_memory hands them back."""
  library = allocator.mimalloc_library()
  if library is None:
    pytest.skip("mimalloc is not installed (not Linux)")
  env = {**os.environ, allocator.PRELOAD: str(library)}
  out = subprocess.run(
    [sys.executable, "-c", _MIMALLOC_PROBE], env=env, check=True, capture_output=True, text=True
  ).stdout.split()
  assert out[0] == "True"
  assert int(out[1]) - int(out[2]) >= 48, out  # of the 64 MB freed


_CACHE_PROBE = """
import sys
import jax, jax.numpy as jnp
from msa_jax import xla
hits = []
jax.monitoring.register_event_listener(
  lambda event, **kw: hits.append(event) if event == "/jax/compilation_cache/cache_hits" else None)
print(xla.enable_compilation_cache(sys.argv[1]))
print(float(jax.jit(lambda x: jnp.tanh(x @ x.T).sum())(jnp.ones((64, 64)))), len(hits))
"""


def test_compilation_cache_is_filled_and_used_by_a_second_process(tmp_path):
  env = {k: v for k, v in os.environ.items() if k != "JAX_COMPILATION_CACHE_DIR"}
  env["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"  # cache even this small program
  cache = tmp_path / "cache"

  def run() -> list[str]:
    out = subprocess.run(
      [sys.executable, "-c", _CACHE_PROBE, str(cache)],
      env=env,
      check=True,
      capture_output=True,
      text=True,
    ).stdout.split()
    return out

  first = run()
  assert first[0] == str(cache) and first[2] == "0"  # compiled, nothing to load yet
  assert any(cache.iterdir())
  second = run()
  assert second[1] == first[1] and int(second[2]) >= 1  # the second process loads it


def test_compilation_cache_off_with_an_empty_path_and_the_environment_wins(monkeypatch, tmp_path):
  monkeypatch.delenv("JAX_COMPILATION_CACHE_DIR", raising=False)
  assert xla.enable_compilation_cache("") is None
  monkeypatch.setenv("JAX_COMPILATION_CACHE_DIR", str(tmp_path))
  assert xla.enable_compilation_cache("~/elsewhere") == tmp_path
  assert not (pathlib.Path("~/elsewhere").expanduser()).exists()
