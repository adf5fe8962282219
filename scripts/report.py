"""Tables and plots of finished runs, side by side, with the papers' numbers where they apply.

    python scripts/report.py runs/lnln_3seeds runs/lnln_ablation [--out DIR] [--metrics MAE Corr]

Reads each RUN_DIR's config.json and results.json (LNLN or GEAR, detected from config.json) and
writes DIR/report.md and PNG figures (LNLN: each metric against the missing rate, a line per run
with a ± std band over seeds; GEAR: IID / OOD bars with ± std error bars). DIR defaults to
RUN_DIR/report for one run and PARENT/report_A_vs_B… beside the first run for several. Files in DIR
that an earlier report did not write are never replaced unless --force is given.
"""

from __future__ import annotations

import argparse
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from msa_jax import cli  # noqa: E402
from msa_jax.report import compare  # noqa: E402


def _names(values: list[str] | None) -> list[str] | None:
  """`["a,b", "c"]` -> `["a", "b", "c"]`."""
  if not values:
    return None
  return [v.strip() for item in values for v in item.split(",") if v.strip()]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument(
    "runs", nargs="+", metavar="RUN_DIR", help="finished run directories (train.py --workdir)"
  )
  p.add_argument("--out", default=None, help="output directory (default: see above)")
  p.add_argument(
    "--metrics",
    nargs="+",
    default=None,
    help="metrics of the side-by-side tables and plots (default: the paper's columns for LNLN, "
    "Has0_acc_2 Non0_acc_2 MAE for GEAR)",
  )
  p.add_argument(
    "--published",
    nargs="+",
    default=[],
    metavar="METHOD",
    help="more rows of the LNLN paper's mean table beside ours, by its method name "
    '(e.g. ALMT "w/o DMC"); LNLN itself is always shown when the dataset matches',
  )
  p.add_argument("--no-plots", action="store_true", help="write report.md only")
  p.add_argument("--force", action="store_true", help="replace files in --out that no report wrote")
  p.add_argument("--quiet", action="store_true", help="print only the written paths")
  return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
  args = parse_args(argv)
  try:
    result = compare.build_report(
      args.runs,
      out=args.out,
      metrics=_names(args.metrics),
      published_methods=_names(args.published) or (),
      force=args.force,
      plots_enabled=not args.no_plots,
    )
  except compare.ReportError as e:
    print(f"error: {e}", file=sys.stderr)
    return 1
  if not args.quiet:
    print(result["markdown"].split("\n", 1)[1])
  for f in result["files"]:
    print(f"wrote {f}")
  return 0


if __name__ == "__main__":
  sys.exit(cli.run_script(main))
