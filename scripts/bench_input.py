"""Input pipeline speed: memory-mapped .npy against a TFDS array_record build of the same data.

  python scripts/bench_input.py --workdir DIR --preset mosei --scale 1.0 --json out.json

Writes the synthetic pickle, converts it (scripts/convert_data.py) and builds it as TFDS
(scripts/build_tfds.py) under --workdir (reused when present), then times the training pipeline
over both in interleaved rounds in this process (msa_jax/bench/data_formats.py). Needs the tfds
extra.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from msa_jax.bench import data_formats  # noqa: E402
from msa_jax.bench.machine import load_average  # noqa: E402


def main(argv: list[str] | None = None) -> int:
  """Parses flags, prepares both forms, compares them, prints and optionally saves the JSON."""
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--workdir", type=pathlib.Path, required=True)
  parser.add_argument("--preset", default="mosei", help="synthetic preset (default mosei)")
  parser.add_argument("--scale", type=float, default=1.0, help="multiplies the split sizes")
  parser.add_argument("--batch_size", type=int, default=32)
  parser.add_argument("--rounds", type=int, default=6)
  parser.add_argument("--batches", type=int, default=100, help="batches per form and round")
  parser.add_argument("--json", type=pathlib.Path, default=None)
  args = parser.parse_args(argv)
  result: dict = {"load_average_start": load_average()}
  result["prepare"] = data_formats.prepare(args.workdir, args.preset, args.scale)
  print(json.dumps(result["prepare"], indent=1), flush=True)
  result["compare"] = data_formats.compare(
    result["prepare"]["paths"], args.batch_size, args.rounds, args.batches
  )
  result["load_average_end"] = load_average()
  result["args"] = {k: str(v) for k, v in vars(args).items()}
  print(json.dumps(result["compare"], indent=1))
  if args.json:
    args.json.write_text(json.dumps(result, indent=1) + "\n")
  return 0


if __name__ == "__main__":
  sys.exit(main())
