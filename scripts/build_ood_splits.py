"""Build GEAR's OOD test and validation splits (K-means + simulated annealing, docs/methods.md §6)
for one data set.

    python scripts/build_ood_splits.py --data MOSI/Processed/unaligned_50.pkl --dataset mosi

Reads an MMSA feature pickle or a GEAR split directory (its train, valid and test splits) and writes
the index lists of ood_text / ood_audio / ood_vision / ood_all into the test split and of
ood_valid_text / ood_valid_audio / ood_valid_vision / ood_valid_all into the valid split (not with
--no-valid), with the objectives, label shares and seed, and every sample's cluster-bias cue sign
per modality, to FILE.ood.json next to a pickle (e.g. unaligned_50.pkl.ood.json) or DIR/ood.json
inside a directory. An existing output is kept unless --overwrite is given.
"""

from __future__ import annotations

import argparse
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from msa_jax import cli  # noqa: E402
from msa_jax.data import DataFormatError, load, ood  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--data", required=True, help="MMSA feature pickle or GEAR split directory")
  p.add_argument(
    "--dataset",
    choices=("mosi", "mosei", "sims"),
    default=None,
    help="label range / vocabulary checks on load (default: labels within [-3, 3])",
  )
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--k", type=int, default=10, help="K-means clusters per modality")
  p.add_argument("--fraction", type=float, default=0.47, help="OOD subset size / test split size")
  p.add_argument("--steps", type=int, default=100_000, help="simulated-annealing moves per split")
  p.add_argument(
    "--no-valid",
    action="store_true",
    help="build the OOD test splits only (no ood_valid_* splits of the valid split)",
  )
  p.add_argument("--overwrite", action="store_true", help="replace an existing output file")
  return p.parse_args(argv)


def summary(result: dict) -> str:
  """A plain-text table of objectives and label shares per OOD split ('obj source' is the objective
  on the whole source split: test, or valid for ood_valid_*)."""
  sources = [s for s in ("train", "valid", "test") if f"corr_{s}" in result]
  lines = [
    "corr(b, y) per modality:  "
    + "  ".join(
      f"{m}: " + " ".join(f"{s} {result[f'corr_{s}'][m]:+.3f}" for s in sources)
      for m in result["corr_train"]
    )
  ]
  head = (
    f"{'split':<17}{'size':>6}{'obj source':>12}{'obj start':>11}{'obj OOD':>9}"
    "   shares -/0/+ source -> OOD"
  )
  lines += [head, "-" * len(head)]
  families = [("test", result["splits"]), ("valid", result.get("valid_splits", {}))]
  for source, family in families:
    for name, s in family.items():
      shares = "/".join(f"{s[f'label_shares_{source}'][c]:.3f}" for c in ood.LABEL_CLASSES)
      split_shares = "/".join(f"{s['label_shares_split'][c]:.3f}" for c in ood.LABEL_CLASSES)
      lines.append(
        f"{name:<17}{s['size']:>6}{s['objective_before']:>+12.3f}"
        f"{s['objective_start']:>+11.3f}{s['objective_after']:>+9.3f}   {shares} -> {split_shares}"
      )
  return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
  args = parse_args(argv)
  out = ood.default_ood_path(args.data)
  if out.exists() and not args.overwrite:
    print(f"error: {out} already exists; pass --overwrite to replace it", file=sys.stderr)
    return 1
  try:
    splits = load(args.data, args.dataset)
    result = ood.build_ood_splits(
      splits,
      seed=args.seed,
      k=args.k,
      fraction=args.fraction,
      steps=args.steps,
      with_valid=not args.no_valid,
    )
  except (DataFormatError, ValueError, OSError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 1
  result["data"] = pathlib.Path(args.data).name
  ood.write_ood_json(result, out)
  print(summary(result))
  print(f"wrote {out}")
  return 0


if __name__ == "__main__":
  sys.exit(cli.run_script(main))
