"""msa_jax.xla: the loop's compiler options and the release of freed host memory."""

import ctypes
import ctypes.util

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from msa_jax import xla
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
