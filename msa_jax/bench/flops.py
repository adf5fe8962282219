"""FLOPs and temporaries of compiled programs, from XLA's cost and memory analyses."""

from __future__ import annotations

from typing import Any

import jax
import ml_collections

from msa_jax import sharding
from msa_jax.data.split import Split
from msa_jax.train import methods
from msa_jax.train.method import Method
from msa_jax.train.state import make_train_step


def flops_of(compiled: Any) -> float | None:
  """FLOPs of a lowered or compiled program from XLA's cost analysis (None where unavailable).

  XLA counts a while loop's body once, whatever its trip count: for programs with loops (blocked
  attention, scans) use `model_flops`."""
  try:
    cost = compiled.cost_analysis()
  except Exception:
    return None
  if isinstance(cost, (list, tuple)):
    cost = cost[0] if cost else {}
  value = (cost or {}).get("flops")
  return None if value is None or value < 0 else float(value)


def xla_temp_bytes(compiled: Any) -> int | None:
  """Bytes of temporaries XLA's buffer assignment gives a compiled program (None if unknown)."""
  try:
    return int(compiled.memory_analysis().temp_size_in_bytes)
  except Exception:
    return None


def plain_method(config: ml_collections.ConfigDict, splits: dict[str, Split]) -> Method:
  """The method built with plain attention and no rematerialisation: the model's math without
  loops (XLA's cost analysis counts a loop body once) and without recomputation."""
  plain = ml_collections.ConfigDict(config.to_dict())
  if "attention_chunk" in plain.model:
    plain.model.attention_chunk = 0
  plain.model.remat = False
  return methods.build(plain, splits)


def model_flops(
  config: ml_collections.ConfigDict, splits: dict[str, Split], mesh, state, batch, key: jax.Array
) -> float | None:
  """FLOPs of one train step of the model's math: XLA's cost analysis of the step lowered with
  plain attention (no loops to undercount, no recomputation counted). GEAR's LSTM scans still
  count one time step (negligible: hidden 16 / 32)."""
  method = plain_method(config, splits)
  repl, batch_sh = sharding.replicated(mesh), sharding.batch_sharded(mesh)
  step = jax.jit(
    make_train_step(method.loss_fn, method.optimizer),
    in_shardings=(repl, batch_sh, repl),
    out_shardings=(repl, repl),
  )
  return flops_of(step.lower(state, batch, key))
