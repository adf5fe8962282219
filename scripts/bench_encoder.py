"""Times the BERT text encoder (docs/methods.md §8) on the local default JAX device.

  python scripts/bench_encoder.py                      # MiniLM and bert-base, batch 64, L=50
  python scripts/bench_encoder.py --models tiny,minilm --batch 32 --length 40 --runs 5

For each encoder preset it measures, with jit, after one warm-up call, the median of `--runs` calls:
  forward:          eval mode (`deterministic=True`), last hidden states;
  forward+backward: train mode (dropout on), `jax.grad` of the mean squared hidden state w.r.t. all
                    encoder parameters (what fine-tuning pays per step, without the optimizer).
Random presets (`bert-base`, `tiny`) are timed with freshly initialised parameters.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from msa_jax import cli
from msa_jax.models import bert


def _text_bert(batch: int, length: int, vocab_size: int, seed: int) -> np.ndarray:
  """A random (B, 3, L) int32 batch with per-row valid lengths between L/2 and L."""
  rng = np.random.default_rng(seed)
  lengths = rng.integers(length // 2, length + 1, batch)
  valid = np.arange(length)[None, :] < lengths[:, None]
  ids = np.where(valid, rng.integers(1000, vocab_size, (batch, length)), 0)
  return np.stack([ids, valid, np.zeros_like(ids)], axis=1).astype(np.int32)


def _median_seconds(fn, runs: int) -> tuple[float, float]:
  """(first-call seconds incl. compilation, median seconds of `runs` further calls)."""
  start = time.perf_counter()
  jax.block_until_ready(fn())
  first = time.perf_counter() - start
  times = []
  for _ in range(runs):
    start = time.perf_counter()
    jax.block_until_ready(fn())
    times.append(time.perf_counter() - start)
  return first, statistics.median(times)


def bench(preset: str, batch: int, length: int, runs: int, seed: int) -> dict[str, float]:
  """Times forward and forward+backward of one encoder preset."""
  config, params = bert.encoder_from_preset(preset)
  if params is None:
    params = jax.jit(bert.init_params, static_argnums=(0, 2))(config, jax.random.key(seed), False)
  model = bert.BertModel(config)
  text_bert = jnp.asarray(_text_bert(batch, length, config.vocab_size, seed))
  key = jax.random.key(seed + 1)

  forward = jax.jit(lambda p, x: model.apply({"params": p}, x, deterministic=True))

  def loss(p, x, k):
    hidden = model.apply({"params": p}, x, deterministic=False, rngs={"dropout": k})
    return jnp.mean(hidden**2)

  grad = jax.jit(jax.grad(loss))
  n_params = sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(params))
  fwd_first, fwd = _median_seconds(lambda: forward(params, text_bert), runs)
  bwd_first, bwd = _median_seconds(lambda: grad(params, text_bert, key), runs)
  return {
    "params_m": n_params / 1e6,
    "fwd_s": fwd,
    "fwd_bwd_s": bwd,
    "fwd_first_s": fwd_first,
    "fwd_bwd_first_s": bwd_first,
  }


def main(argv: list[str] | None = None) -> None:
  parser = argparse.ArgumentParser(
    description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
  )
  parser.add_argument(
    "--models", default="minilm,bert-base", help="comma-separated encoder presets"
  )
  parser.add_argument("--batch", type=int, default=64)
  parser.add_argument("--length", type=int, default=50)
  parser.add_argument("--runs", type=int, default=3, help="timed calls after the warm-up")
  parser.add_argument("--seed", type=int, default=0)
  args = parser.parse_args(argv)

  device = jax.devices()[0]
  print(
    f"device: {device.platform} {device.device_kind}, jax {jax.__version__}, batch {args.batch}, "
    f"L={args.length}, median of {args.runs} runs after 1 warm-up"
  )
  header = (
    f"{'encoder':<10} {'params(M)':>9} {'fwd s':>8} {'fwd+bwd s':>10} {'fwd tok/s':>10} "
    f"{'1st fwd s':>10} {'1st f+b s':>10}"
  )
  print(header)
  print("-" * len(header))
  tokens = args.batch * args.length
  for preset in args.models.split(","):
    r = bench(preset, args.batch, args.length, args.runs, args.seed)
    print(
      f"{preset:<10} {r['params_m']:>9.1f} {r['fwd_s']:>8.3f} {r['fwd_bwd_s']:>10.3f} "
      f"{tokens / r['fwd_s']:>10.0f} {r['fwd_first_s']:>10.2f} {r['fwd_bwd_first_s']:>10.2f}",
      flush=True,
    )


if __name__ == "__main__":
  sys.exit(cli.run_script(main))
