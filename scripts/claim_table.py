"""GEAR's claim table from the run directories of scripts/gear_ablations.sh, one table per
selection criterion, with the mechanism diagnostics at the selected epochs.

    python scripts/claim_table.py runs/gear_ablations_synth-v2 [--criteria ood_valid Acc_2_mean]
"""

from __future__ import annotations

import argparse
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from msa_jax.report import claim  # noqa: E402


def main(argv: list[str] | None = None) -> int:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("root", help="the directory holding one finished run per variant")
  p.add_argument("--criteria", nargs="+", default=["ood_valid", "Acc_2_mean"])
  p.add_argument("--metric", default="Has0_acc_2")
  args = p.parse_args(argv)
  root = pathlib.Path(args.root)
  runs = sorted(d for d in root.iterdir() if (d / "results.json").is_file())
  if not runs:
    print(f"error: {root}: no finished run directory (with results.json) inside", file=sys.stderr)
    return 1
  for criterion in args.criteria:
    rows = claim.claim_rows(runs, criterion, args.metric)
    if rows:
      print(claim.markdown(rows, criterion, args.metric))
  return 0


if __name__ == "__main__":
  sys.exit(main())
