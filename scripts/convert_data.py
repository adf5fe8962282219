"""Converts an MMSA feature pickle (or GEAR's split directory) into a memory-mapped directory.

  python scripts/convert_data.py --data MOSEI/Processed/unaligned_50.pkl \
      --out MOSEI/Processed/unaligned_50 --dataset mosei
  python train.py --config=configs/gear.py:mosei --config.data.path=MOSEI/Processed/unaligned_50 ...

A one-time step for MOSEI-sized files (msa_jax/data/ondisk.py): training then reads only the rows it
uses. Prints the sizes, the wall time and this process's peak resident memory.
"""

from __future__ import annotations

import argparse
import pathlib
import resource
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from msa_jax import cli  # noqa: E402
from msa_jax.data import DataFormatError, ondisk  # noqa: E402
from msa_jax.text import BERT_CHINESE_VOCAB_SIZE, BERT_UNCASED_VOCAB_SIZE  # noqa: E402


def _size(path: pathlib.Path) -> int:
  if path.is_dir():
    return sum(f.stat().st_size for f in path.iterdir() if f.is_file())
  return path.stat().st_size


def main(argv: list[str] | None = None) -> int:
  """Parses flags, converts, prints what was written; a data or target problem exits with 1."""
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument(
    "--data", type=pathlib.Path, required=True, help="MMSA .pkl file or GEAR split directory"
  )
  parser.add_argument(
    "--out",
    type=pathlib.Path,
    required=True,
    help="directory to create (must not exist or be empty)",
  )
  parser.add_argument(
    "--dataset",
    choices=["mosi", "mosei", "sims"],
    default=None,
    help="label range to validate against (default: |label| <= 3)",
  )
  parser.add_argument(
    "--vocab-size",
    type=int,
    default=None,
    help=f"token ids must be below this (default {BERT_UNCASED_VOCAB_SIZE}; "
    f"{BERT_CHINESE_VOCAB_SIZE} for sims)",
  )
  args = parser.parse_args(argv)
  start = time.perf_counter()
  try:
    out = ondisk.convert(args.data, args.out, dataset=args.dataset, vocab_size=args.vocab_size)
  except (DataFormatError, FileExistsError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 1
  seconds = time.perf_counter() - start
  peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
  source_size = _size(args.data)
  print(
    f"converted {args.data} ({source_size / 2**20:.1f} MiB) -> {out} "
    f"({_size(out) / 2**20:.1f} MiB) in {seconds:.1f} s; peak RSS {peak / 2**20:.1f} MiB "
    f"({peak / source_size:.2f}x the source)"
  )
  return 0


if __name__ == "__main__":
  sys.exit(cli.run_script(main))
