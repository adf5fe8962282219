"""The benchmarked configuration: the method's config with the benchmark's options, random data of
its shapes, the real `Method`, and a fresh train state with device batches."""

from __future__ import annotations

import argparse
import ast
from collections.abc import Callable, Sequence
from typing import Any

import jax
import ml_collections
import numpy as np

from msa_jax import sharding
from msa_jax.bench.timing import timed
from msa_jax.data import pipeline, synthetic
from msa_jax.data.split import Split
from msa_jax.train import loop, methods
from msa_jax.train.method import Method

METHODS = ("lnln", "gear")
ENCODERS = ("tiny", "minilm", "bert-base")
SHAPES = ("paper", "default")
DTYPES = ("float32", "bfloat16")

GetConfig = Callable[[], ml_collections.ConfigDict]  # a fresh default config of the method


def apply_overrides(config: ml_collections.ConfigDict, overrides: Sequence[str]) -> None:
  """`key.sub=value` assignments (values parsed as Python literals where possible)."""
  for item in overrides:
    key, sep, raw = item.partition("=")
    if not sep:
      raise SystemExit(f"--set {item!r}: expected key=value")
    try:
      value = ast.literal_eval(raw)
    except (ValueError, SyntaxError):
      value = raw
    node, parts = config, key.split(".")
    for part in parts[:-1]:
      node = node[part]
    node[parts[-1]] = value


def make_config(
  config: ml_collections.ConfigDict,
  method: str,
  encoder: str,
  shape: str,
  batch: int | None,
  eval_batch: int | None,
  dtype: str,
  attention_chunk: int | None,
  remat: bool | None = None,
  overrides: Sequence[str] = (),
) -> ml_collections.ConfigDict:
  """`config` (the method's default config, changed in place and returned) with the benchmark's
  encoder, batch sizes, dtype and attention.

  `paper` shapes default to batch 64 (the reference's LNLN batch, and the batch of the quoted GEAR
  figures) and eval batch 64 (configs/lnln.py:mosi); `default` keeps the config's sizes.
  `overrides` (`--set key=value`) come last.
  """
  c = config
  c.encoder = encoder
  if shape == "paper":
    c.batch_size, c.eval_batch_size = 64, 64
  if batch:
    c.batch_size = batch
  if eval_batch:
    c.eval_batch_size = eval_batch
  c.model.dtype = dtype
  if attention_chunk is not None:
    if method != "lnln":
      raise SystemExit("--attention-chunk applies to LNLN only")
    c.model.attention_chunk = attention_chunk
  if remat is not None:
    c.model.remat = remat
  if method == "gear":
    # The benchmark's random splits have no OOD validation splits: GEAR's default criterion
    # (ood_valid) needs them. The criterion changes validation only, not the train step.
    c.gear.criterion = "Acc_2_mean"
  apply_overrides(c, overrides)
  return c


def data_preset(config: ml_collections.ConfigDict, shape: str) -> synthetic.SyntheticConfig:
  """The synthetic preset whose shapes and split sizes the benchmark data take."""
  return synthetic.PRESETS["mosi" if shape == "paper" else config.data.synthetic]


def random_split(
  n: int, text_len: int, audio: tuple[int, int], vision: tuple[int, int], rng: np.random.Generator
) -> Split:
  """A `Split` of n random samples (token ids from the bert-base-uncased vocabulary)."""
  text_lengths = rng.integers(max(3, text_len // 4), text_len + 1, n)
  valid = np.arange(text_len)[None, :] < text_lengths[:, None]
  ids = np.where(valid, rng.integers(1000, 30000, (n, text_len)), 0)
  ids[:, 0] = 101
  ids[np.arange(n), text_lengths - 1] = 102
  text_bert = np.stack([ids, valid, np.zeros_like(ids)], axis=1).astype(np.int32)

  def frames(shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    lengths = rng.integers(max(1, shape[0] // 4), shape[0] + 1, n).astype(np.int32)
    x = rng.standard_normal((n, *shape), dtype=np.float32)
    x *= (np.arange(shape[0])[None, :] < lengths[:, None])[..., None]
    return x, lengths

  (a, a_len), (v, v_len) = frames(audio), frames(vision)
  labels = rng.uniform(-3.0, 3.0, n).astype(np.float32)
  return Split(
    text_bert=text_bert, audio=a, vision=v, audio_lengths=a_len, vision_lengths=v_len, labels=labels
  )


def random_splits(preset: synthetic.SyntheticConfig, seed: int = 0) -> dict[str, Split]:
  """train / valid / test splits of random data with the preset's shapes and sizes."""
  rng = np.random.default_rng(seed)
  shapes = (
    preset.text_len,
    (preset.audio_frames, preset.audio_dim),
    (preset.vision_frames, preset.vision_dim),
  )
  return {
    name: random_split(n, *shapes, rng)
    for name, n in (("train", preset.n_train), ("valid", preset.n_valid), ("test", preset.n_test))
  }


def build_configuration(
  args: argparse.Namespace, overrides: Sequence[str], get_config: GetConfig
) -> tuple[ml_collections.ConfigDict, dict[str, Split], Method]:
  """(config, random splits of its shapes, the real Method) for the command line's method,
  encoder, shape, batch sizes, dtype and attention options (scripts/bench.py), plus `overrides`."""
  config = make_config(
    get_config(),
    args.method,
    args.encoder,
    args.shape,
    args.batch,
    args.eval_batch,
    args.dtype,
    args.attention_chunk,
    args.remat,
    overrides,
  )
  splits = random_splits(data_preset(config, args.shape))
  return config, splits, methods.build(config, splits)


def timed_step_count(args: argparse.Namespace) -> int:
  """`--steps`, rounded up to even for GEAR (a step is half an update)."""
  return args.steps + (args.steps % 2 if args.method == "gear" else 0)


def train_inputs(
  method: Method, config: ml_collections.ConfigDict, splits: dict[str, Split], mesh
) -> tuple[Any, list, jax.Array, float]:
  """A fresh train state from the loop's init jit, two device batches of the train split and the
  step key: (state, batches, key, init seconds incl. compile)."""
  train_ds = pipeline.train_dataset(splits["train"], config.batch_size, seed=0)
  batches = [sharding.put_batch(pipeline.device_arrays(train_ds[i]), mesh) for i in range(2)]
  key = jax.random.key(0)
  init = loop.init_state_fn(method, mesh)
  state, init_s, _ = timed(
    lambda: init(jax.random.fold_in(key, 0), batches[0]), jax.block_until_ready
  )
  return state, batches, jax.random.fold_in(key, 1), init_s
