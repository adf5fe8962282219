"""Predicts a split of a data file with a trained model and writes one CSV row per sample.

  python scripts/predict.py --workdir runs/lnln --data data/synthetic_mosi_small_seed0.pkl \
      --split test --out preds.csv [--selection MAE] [--seed 1111] [--missing-rate 0.5]

--workdir is a run directory of train.py or a model directory of scripts/export.py. The CSV has
the columns id, prediction and, when the data has labels, label; the MMSA metrics of the
predictions are then printed as JSON (docs/methods.md §11).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))


def main(argv: list[str] | None = None) -> int:
  """Parses flags, predicts, writes the CSV and prints the metrics; a user error exits with 1."""
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--workdir", required=True, help="run directory or exported model directory")
  parser.add_argument(
    "--data", type=pathlib.Path, required=True, help="MMSA data file or directory"
  )
  parser.add_argument("--split", default="test", help="the split to predict (default test)")
  parser.add_argument("--selection", default=None, help="selection metric (default: the run's)")
  parser.add_argument("--seed", type=int, default=None, help="training seed (default: the first)")
  parser.add_argument("--missing-rate", type=float, default=None, help="LNLN: missing rate")
  parser.add_argument("--out", type=pathlib.Path, required=True, help="CSV file to write")
  args = parser.parse_args(argv)

  from msa_jax import data, inference
  from msa_jax.errors import ModelInputError, RunConfigError
  from msa_jax.io import write_text_atomic

  try:
    predictor = inference.restore(args.workdir, args.selection, args.seed)
    splits = data.load(args.data, dataset=predictor.dataset, vocab_size=predictor.vocab_size)
    out = predictor.predict(splits, args.missing_rate, split=args.split)
  except (ModelInputError, RunConfigError, data.DataFormatError, FileNotFoundError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 1
  except ValueError as e:  # a missing rate out of range, or one given to GEAR
    print(f"error: {e}", file=sys.stderr)
    return 1
  text = io.StringIO()
  writer = csv.writer(text, lineterminator="\n")
  writer.writerow(["id", "prediction"] + ([] if out.labels is None else ["label"]))
  ids = out.ids if out.ids is not None else range(len(out.predictions))
  for i, (sample, pred) in enumerate(zip(ids, out.predictions)):
    row = [sample, f"{pred:.9g}"]
    writer.writerow(row if out.labels is None else row + [f"{out.labels[i]:.9g}"])
  write_text_atomic(args.out, text.getvalue())
  rate = "" if args.missing_rate is None else f" at missing rate {args.missing_rate}"
  print(
    f"wrote {len(out.predictions)} predictions of split {args.split!r}{rate} to {args.out} "
    f"({predictor.method}, checkpoint selected by {predictor.info.selection})"
  )
  if out.labels is not None:
    print(json.dumps(out.metrics(predictor.dataset), indent=2))
  return 0


if __name__ == "__main__":
  sys.exit(main())
