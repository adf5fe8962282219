"""Writes the synthetic MSA benchmark as an MMSA-format pickle (docs/methods.md §7).

  python scripts/make_synthetic.py --preset mosi --seed 0 --out data/synthetic_mosi.pkl
  python scripts/make_synthetic.py --preset mosei --scale 0.1
  python scripts/make_synthetic.py --version v2 --preset mosi_small

`--version` picks the benchmark version: v1 (synth-v1, the default) or v2 (synth-v2: one shared
confound with label-scaled cues, OOD validation splits and stored cue signs; presets mosi and
mosi_small).
"""

from __future__ import annotations

import argparse
import pathlib
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from msa_jax import cli  # noqa: E402
from msa_jax.data import synthetic  # noqa: E402


def main(argv: list[str] | None = None) -> int:
  """Parses flags, writes the file, prints its path, size and generation time."""
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  presets = sorted({p for b in synthetic.BENCHMARKS.values() for p in b.presets})
  parser.add_argument(
    "--version",
    choices=sorted(synthetic.BENCHMARKS),
    default=synthetic.DEFAULT_VERSION,
    help="benchmark version",
  )
  parser.add_argument("--preset", choices=presets, default="mosi")
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument(
    "--scale", type=float, default=1.0, help="multiplies the split sizes, e.g. 0.1 for a small file"
  )
  parser.add_argument(
    "--out",
    type=pathlib.Path,
    default=None,
    help="output pickle (default data/synthetic_<preset>.pkl for v1, "
    "data/synthetic_<preset>_<version>.pkl otherwise)",
  )
  args = parser.parse_args(argv)
  if not args.scale > 0:
    parser.error(f"--scale must be positive, got {args.scale}")
  bench = synthetic.benchmark(args.version)
  if args.preset not in bench.presets:
    parser.error(
      f"--preset {args.preset} is not a preset of {bench.name}; expected one of "
      f"{sorted(bench.presets)}"
    )
  suffix = "" if args.version == synthetic.DEFAULT_VERSION else f"_{args.version}"
  out = args.out or pathlib.Path("data") / f"synthetic_{args.preset}{suffix}.pkl"
  start = time.perf_counter()
  path = synthetic.write_synthetic(
    out, args.preset, seed=args.seed, scale=args.scale, version=args.version
  )
  seconds = time.perf_counter() - start
  size_mb = path.stat().st_size / 2**20
  print(
    f"wrote {path} ({bench.name}, preset {args.preset}, seed {args.seed}, "
    f"scale {args.scale:g}): {size_mb:.1f} MiB in {seconds:.1f} s"
  )
  return 0


if __name__ == "__main__":
  sys.exit(cli.run_script(main))
