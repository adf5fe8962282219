"""Prediction and MMSA metrics of a split, written against a prediction function.

Two kinds of prediction function appear here:
- a model's `(params, batch, key, rate) -> (B,)` (a method's `predict_fn`), which `make_predict`
  compiles once for every missing rate, sharded over the devices;
- a `BatchPredict`: one host batch -> its predictions as numpy, (R, B) or (S, R, B). `bind` makes
  one from a compiled program and its parameters; `predict_split` and `evaluate` take any.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from msa_jax import metrics as metrics_lib
from msa_jax import sharding, xla
from msa_jax.data import pipeline
from msa_jax.data.split import Split

# (params, batch, key, rate) -> (B,) predictions in evaluation mode.
ModelPredict = Callable[[Any, dict, jax.Array, jax.Array], jax.Array]
# A host batch (as `pipeline.eval_dataset` yields) -> numpy predictions, the batch on the last axis.
BatchPredict = Callable[[dict[str, np.ndarray]], np.ndarray]


def make_predict(
  predict_fn: ModelPredict, mesh, rates_per_pass: int | None = None, seeds_axis: bool = False
) -> Any:
  """One compiled program for `predict_fn` at every missing rate: (params, batch, key, rates) ->
  (R, B), or with `seeds_axis` (params stacked over seeds) -> (S, R, B).

  `rates_per_pass` rates are vmapped together and the passes run in sequence inside the program
  (`jax.lax.map(..., batch_size=rates_per_pass)`), which bounds the evaluation memory at large frame
  counts (MOSEI-shaped LNLN at batch 64: about 1.9 GiB per rate in flight, measured); None vmaps
  all rates at once.
  """

  def fn(params, batch, key, rates):
    one = lambda r: predict_fn(params, batch, key, r)
    if rates_per_pass is None:
      return jax.vmap(one)(rates)
    return jax.lax.map(one, rates, batch_size=rates_per_pass)

  repl = sharding.replicated(mesh)
  lead = (None, None) if seeds_axis else (None,)
  return jax.jit(
    jax.vmap(fn, in_axes=(0, None, None, None)) if seeds_axis else fn,
    in_shardings=(repl, sharding.batch_sharded(mesh), repl, repl),
    out_shardings=NamedSharding(mesh, P(*lead, sharding.DATA_AXIS)),
    compiler_options=xla.compiler_options(),
  )


def bind(predict: Any, params: Any, mesh, key: jax.Array, rates: list[float]) -> BatchPredict:
  """The `BatchPredict` of a `make_predict` program with `params`, `key` and `rates`: this process's
  rows of a global batch in, every row's predictions out (gathered from all processes)."""
  rates_arr = jnp.asarray(rates, jnp.float32)

  def fn(local: dict[str, np.ndarray]) -> np.ndarray:
    batch = sharding.put_batch(pipeline.device_arrays(local), mesh)
    return sharding.to_host(predict(params, batch, key, rates_arr))

  return fn


def predict_split(
  predict: BatchPredict,
  split: Split,
  batch_size: int,
  desc: str | None = None,
  batch_axis: int = -1,
) -> np.ndarray:
  """`predict` over every sample of `split`, in split order: (..., N) with the leading axes of
  `predict`'s output, or N on `batch_axis` (e.g. -2 for per-sample vectors (..., N, K)). `desc`:
  show a progress bar over the batches."""
  ds = pipeline.eval_dataset(
    split, batch_size, process_index=jax.process_index(), process_count=jax.process_count()
  )
  batches = pipeline.iterate(ds)
  if desc is not None:
    from tqdm.auto import tqdm

    batches = tqdm(batches, total=len(ds), desc=desc, leave=False)
  out = np.concatenate([predict(local) for local in batches], axis=batch_axis)
  return np.take(out, np.arange(len(split)), axis=batch_axis)


def evaluate(
  predict: BatchPredict, split: Split, batch_size: int, dataset: str, desc: str | None = None
) -> list:
  """MMSA metrics (with the derived ones, `metrics.with_derived`) of `split`: a list over the rows
  of an (R, N) prediction (one per missing rate), or from an (S, R, N) prediction a list over
  seeds of lists over rates."""
  preds = predict_split(predict, split, batch_size, desc)
  per_rate = lambda p: [
    metrics_lib.with_derived(metrics_lib.mmsa_metrics(r, split.labels, dataset)) for r in p
  ]
  return [per_rate(p) for p in preds] if preds.ndim == 3 else per_rate(preds)
