"""Builds the TFDS dataset of an MMSA feature pickle (msa_jax/data/tfds_mmsa.py), no TensorFlow.

  python scripts/build_tfds.py --dataset mosi --config unaligned_50 --manual_dir MOSI/Processed
  python train.py --config=configs/lnln.py:mosi --config.data.path=tfds:mmsa_mosi/unaligned_50

The pickle `<manual_dir>/<config>.pkl` is read and checked as `msa_jax.data.load` does, with the
OOD splits of `<config>.pkl.ood.json` when that file lies beside it. Prints the built directory
(usable as `--config.data.path=tfds:DIR`), its size and the wall time. Needs the `tfds` extra.
"""

from __future__ import annotations

import argparse
import pathlib
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from msa_jax.data import DataFormatError  # noqa: E402


def main(argv: list[str] | None = None) -> int:
  """Parses flags, builds, prints what was written; a data problem exits with 1."""
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--dataset", choices=["mosi", "mosei", "sims"], required=True)
  parser.add_argument(
    "--config",
    default=None,
    help="builder config and pickle name: unaligned_50 (default) or aligned_50; sims: unaligned_39",
  )
  parser.add_argument(
    "--manual_dir", type=pathlib.Path, required=True, help="directory holding <config>.pkl"
  )
  parser.add_argument(
    "--data_dir",
    type=pathlib.Path,
    default=None,
    help="TFDS data directory (default: TFDS_DATA_DIR or ~/tensorflow_datasets)",
  )
  args = parser.parse_args(argv)
  try:
    from msa_jax.data import tfds_mmsa
  except ImportError as e:
    print(f"error: {e}; install the tfds extra: bash scripts/install.sh --tfds", file=sys.stderr)
    return 1
  config = args.config or ("unaligned_39" if args.dataset == "sims" else "unaligned_50")
  start = time.perf_counter()
  try:
    out = tfds_mmsa.build(args.dataset, config, args.manual_dir, args.data_dir)
  except (DataFormatError, ValueError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 1
  size = sum(f.stat().st_size for f in out.iterdir() if f.is_file())
  print(
    f"built mmsa_{args.dataset}/{config} in {out} ({size / 2**20:.1f} MiB) in "
    f"{time.perf_counter() - start:.1f} s; train with --config.data.path=tfds:{out}"
  )
  return 0


if __name__ == "__main__":
  sys.exit(main())
