"""Exports a trained model as a self-contained directory that `msa_jax.restore(DIR)` loads.

  python scripts/export.py --workdir runs/lnln --out models/lnln [--selection MAE] [--seed 1111]

Writes params.safetensors, model.json, encoder/config.json, encoder/vocab.txt and a model card
README.md (docs/methods.md §11). An existing non-empty --out is refused.
"""

from __future__ import annotations

import argparse
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))


def main(argv: list[str] | None = None) -> int:
  """Parses flags and exports; a user error exits with 1."""
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--workdir", required=True, help="run directory of train.py")
  parser.add_argument("--out", type=pathlib.Path, required=True, help="directory to create")
  parser.add_argument("--selection", default=None, help="selection metric (default: the run's)")
  parser.add_argument("--seed", type=int, default=None, help="training seed (default: the first)")
  args = parser.parse_args(argv)

  from msa_jax import inference
  from msa_jax.errors import RunConfigError

  try:
    out = inference.export(args.workdir, args.out, args.selection, args.seed)
  except (RunConfigError, FileExistsError, FileNotFoundError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 1
  print(f"exported {args.workdir} to {out} (model card: {out / 'README.md'})")
  return 0


if __name__ == "__main__":
  sys.exit(main())
