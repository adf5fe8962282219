"""Times a BERT layer's matmul products one by one, in jax (XLA:CPU, as msa_jax runs them) or in
torch (as the authors' code runs them), so that the two libraries' kernel rates can be set side by
side on one machine (docs/benchmarks.md, "Matmul kernels").

  python scripts/bench_kernels.py                                   # jax, msa_jax's environment
  /tmp/torchvenv/bin/python scripts/bench_kernels.py --torch        # torch, the reference's
  python scripts/bench_kernels.py --batch 32 --length 40 --json k.json

Products, float32, at batch × length rows (the paper's 64 × 50 = 3200 by default), hidden 768,
feed-forward 3072, 12 heads of 64:
  - `sgemm`: a square `--sgemm-n` matmul (the rate bench.py reports beside every step);
  - the dense layers (feed-forward in and out, one of the four 768 × 768 projections), each as its
    forward `x·W + b`, its input gradient `dy·Wᵀ` and its weight gradient `xᵀ·dy`;
  - the attention core's batched products (batch × heads small matrices): the scores `q·kᵀ`, the
    values `p·v`, the key gradient `dsᵀ·q`, and the softmax over the scores.
Each is called once to warm up (jax: compiled), then timed as the median of `--runs` calls. The
last line sums one layer's dense work, forward and backward (the four projections counted four
times). Nothing here imports msa_jax, so the script runs in the reference's virtualenv as well.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from collections.abc import Callable

HIDDEN, FEED_FORWARD, HEADS = 768, 3072, 12
# The dense products of a layer: (inputs, outputs); each is timed in three passes.
DENSE = {
  "ff_in": (HIDDEN, FEED_FORWARD),
  "ff_out": (FEED_FORWARD, HIDDEN),
  "proj": (HIDDEN, HIDDEN),
}
PASSES = ("fwd", "dx", "dw")


def products(rows: int, batch: int, length: int, sgemm_n: int) -> dict[str, float]:
  """Every timed product's FLOP count (2 per multiply-add; the softmax counts none), by name."""
  head = HIDDEN // HEADS
  attention = 2.0 * batch * HEADS * length * length * head
  flops = {"sgemm": 2.0 * sgemm_n**3}
  for name, (n_in, n_out) in DENSE.items():
    for p in PASSES:
      flops[f"{name}_{p}"] = 2.0 * rows * n_in * n_out
  flops |= {"scores": attention, "values": attention, "key_grad": attention, "softmax": 0.0}
  return flops


def median_seconds(
  call: Callable[[], object], block: Callable[[object], object], runs: int
) -> float:
  """The median wall time of `runs` calls of `call` (its result passed to `block`), after one."""
  block(call())
  times = []
  for _ in range(runs):
    start = time.perf_counter()
    block(call())
    times.append(time.perf_counter() - start)
  return statistics.median(times)


def jax_calls(batch: int, length: int, sgemm_n: int) -> tuple[dict[str, Callable], Callable]:
  import jax
  import jax.numpy as jnp

  keys = iter(jax.random.split(jax.random.key(0), 32))

  def rand(*shape):
    return jax.random.normal(next(keys), shape, jnp.float32)

  rows, head = batch * length, HIDDEN // HEADS
  a, b = rand(sgemm_n, sgemm_n), rand(sgemm_n, sgemm_n)
  matmul = jax.jit(jnp.matmul)
  calls = {"sgemm": lambda: matmul(a, b)}
  fwd = jax.jit(lambda x, w, bias: x @ w + bias)
  dx = jax.jit(lambda dy, w: dy @ w.T)
  dw = jax.jit(lambda x, dy: jax.lax.dot_general(x, dy, (((0,), (0,)), ((), ()))))
  for name, (n_in, n_out) in DENSE.items():
    x, w, bias, dy = rand(rows, n_in), rand(n_in, n_out), rand(n_out), rand(rows, n_out)
    calls[f"{name}_fwd"] = lambda x=x, w=w, bias=bias: fwd(x, w, bias)
    calls[f"{name}_dx"] = lambda dy=dy, w=w: dx(dy, w)
    calls[f"{name}_dw"] = lambda x=x, dy=dy: dw(x, dy)
  q, k = rand(batch, HEADS, length, head), rand(batch, HEADS, length, head)
  s = rand(batch, HEADS, length, length)
  scores = jax.jit(lambda q, k: jnp.einsum("bhqd,bhkd->bhqk", q, k))
  values = jax.jit(lambda p, v: jnp.einsum("bhqk,bhkd->bhqd", p, v))
  key_grad = jax.jit(lambda ds, q: jnp.einsum("bhqk,bhqd->bhkd", ds, q))
  softmax = jax.jit(lambda s: jax.nn.softmax(s, axis=-1))
  calls |= {
    "scores": lambda: scores(q, k),
    "values": lambda: values(s, k),
    "key_grad": lambda: key_grad(s, q),
    "softmax": lambda: softmax(s),
  }
  return calls, jax.block_until_ready


def torch_calls(batch: int, length: int, sgemm_n: int) -> tuple[dict[str, Callable], Callable]:
  import torch

  rows, head = batch * length, HIDDEN // HEADS
  a, b = torch.randn(sgemm_n, sgemm_n), torch.randn(sgemm_n, sgemm_n)
  calls = {"sgemm": lambda: a @ b}
  for name, (n_in, n_out) in DENSE.items():
    # torch's Linear keeps W as (out, in): forward x·Wᵀ + b, input gradient dy·W, weight dyᵀ·x.
    x, w, bias = torch.randn(rows, n_in), torch.randn(n_out, n_in), torch.randn(n_out)
    dy = torch.randn(rows, n_out)
    calls[f"{name}_fwd"] = lambda x=x, w=w, bias=bias: torch.nn.functional.linear(x, w, bias)
    calls[f"{name}_dx"] = lambda dy=dy, w=w: dy @ w
    calls[f"{name}_dw"] = lambda x=x, dy=dy: dy.t() @ x
  q, k = torch.randn(batch, HEADS, length, head), torch.randn(batch, HEADS, length, head)
  s = torch.randn(batch, HEADS, length, length)
  calls |= {
    "scores": lambda: q @ k.transpose(-1, -2),
    "values": lambda: s @ k,
    "key_grad": lambda: s.transpose(-1, -2) @ q,
    "softmax": lambda: torch.softmax(s, dim=-1),
  }
  return calls, lambda out: out


def layer_dense_seconds(seconds: dict[str, float]) -> float:
  """One layer's dense work, forward and backward: both feed-forward products and four
  projections, each in its three passes."""
  per = {name: sum(seconds[f"{name}_{p}"] for p in PASSES) for name in DENSE}
  return per["ff_in"] + per["ff_out"] + 4 * per["proj"]


def main(argv: list[str] | None = None) -> None:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--torch", action="store_true", help="time torch's kernels instead of jax's")
  p.add_argument("--batch", type=int, default=64)
  p.add_argument("--length", type=int, default=50)
  p.add_argument("--sgemm-n", type=int, default=2048)
  p.add_argument("--runs", type=int, default=9)
  p.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch's threads")
  p.add_argument("--json", help="write the results here")
  args = p.parse_args(argv)
  if min(args.batch, args.length, args.sgemm_n, args.runs) < 1:
    p.error("--batch, --length, --sgemm-n and --runs: expected counts >= 1")
  if args.torch:
    import torch

    torch.set_num_threads(args.threads)
    library = f"torch {torch.__version__} ({torch.get_num_threads()} threads)"
    calls, block = torch_calls(args.batch, args.length, args.sgemm_n)
  else:
    import jax

    library = f"jax {jax.__version__} ({jax.default_backend()})"
    calls, block = jax_calls(args.batch, args.length, args.sgemm_n)
  flops = products(args.batch * args.length, args.batch, args.length, args.sgemm_n)
  seconds = {name: median_seconds(call, block, args.runs) for name, call in calls.items()}
  rows = {
    name: {"ms": 1e3 * t, "gflops_per_s": flops[name] / t / 1e9 if flops[name] else None}
    for name, t in seconds.items()
  }
  layer_ms = 1e3 * layer_dense_seconds(seconds)
  print(f"{library}: batch {args.batch} x length {args.length}, median of {args.runs} calls")
  for name, r in rows.items():
    rate = "" if r["gflops_per_s"] is None else f"{r['gflops_per_s']:8.0f} GFLOP/s"
    print(f"  {name:<10} {r['ms']:9.2f} ms {rate}")
  print(f"  one layer's dense work, forward + backward: {layer_ms:.1f} ms")
  if args.json:
    result = {
      "library": library,
      "config": {k: getattr(args, k) for k in ("batch", "length", "sgemm_n", "runs")},
      "products": rows,
      "layer_dense_ms": layer_ms,
      "note": "measured: median wall time of each product called alone, after a warm-up call",
    }
    with open(args.json, "w", encoding="utf-8") as f:
      json.dump(result, f, indent=1)


if __name__ == "__main__":
  main()
