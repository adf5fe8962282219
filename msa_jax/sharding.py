"""Data parallelism over every device: one mesh axis ("data",), batch sharded, params replicated.

The same code runs on one CPU, 8 simulated CPU devices, a multi-GPU host, a TPU slice and several
hosts (`jax.distributed`): each process hands in its own rows of the global batch and
`jax.make_array_from_process_local_data` assembles the global array (docs/methods.md §10).
"""

from __future__ import annotations

import os

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

DATA_AXIS = "data"


def maybe_initialize_distributed(
  coordinator_address: str | None = None,
  num_processes: int | None = None,
  process_id: int | None = None,
) -> None:
  """Starts `jax.distributed` when several processes are asked for (flags or environment).

  Environment variables read when an argument is None: MSA_JAX_COORDINATOR, MSA_JAX_NUM_PROCESSES,
  MSA_JAX_PROCESS_ID. On CPU the gloo collectives are selected (docs/methods.md §10).
  """
  coordinator_address = coordinator_address or os.environ.get("MSA_JAX_COORDINATOR")
  num_processes = num_processes or int(os.environ.get("MSA_JAX_NUM_PROCESSES", "1"))
  if process_id is None and "MSA_JAX_PROCESS_ID" in os.environ:
    process_id = int(os.environ["MSA_JAX_PROCESS_ID"])
  if num_processes <= 1:
    return
  if coordinator_address is None or process_id is None:
    raise ValueError(
      "several processes need a coordinator address and a process id "
      "(--coordinator_address / --process_id or MSA_JAX_COORDINATOR / MSA_JAX_PROCESS_ID)"
    )
  if jax.config.jax_platforms in (None, "", "cpu"):
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
  jax.distributed.initialize(
    coordinator_address=coordinator_address, num_processes=num_processes, process_id=process_id
  )


def make_mesh(devices=None) -> Mesh:
  """A 1-D mesh named ("data",) over `devices` (default: every device of every process)."""
  devices = jax.devices() if devices is None else devices
  return Mesh(np.asarray(devices), (DATA_AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def batch_sharded(mesh: Mesh) -> NamedSharding:
  """Shards the leading (batch) dimension over the data axis."""
  return NamedSharding(mesh, P(DATA_AXIS))


def check_batch_size(batch_size: int, mesh: Mesh, what: str = "batch_size") -> None:
  """A global batch must split evenly over devices and processes; otherwise a clear error."""
  n = mesh.devices.size
  if batch_size % n:
    raise ValueError(
      f"{what}={batch_size} is not divisible by the number of devices ({n}); "
      f"choose a multiple of {n}, e.g. {max(n, batch_size - batch_size % n)}"
    )
  if batch_size % jax.process_count():
    raise ValueError(
      f"{what}={batch_size} is not divisible by the process count {jax.process_count()}"
    )


def put_batch(local_batch: dict[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
  """This process's rows of the global batch -> global arrays sharded over the data axis."""
  sharding = batch_sharded(mesh)
  return {
    k: jax.make_array_from_process_local_data(sharding, np.asarray(v))
    for k, v in local_batch.items()
  }


def to_host(x: jax.Array) -> np.ndarray:
  """A fully addressable numpy copy of a (possibly multi-process) global array."""
  if jax.process_count() > 1 and not x.is_fully_addressable:
    from jax.experimental import multihost_utils

    return np.asarray(multihost_utils.process_allgather(x, tiled=True))
  return np.asarray(x)
