"""Benchmarks the training step and the evaluation sweep of LNLN and GEAR.

  python scripts/bench.py                                   # LNLN, tiny encoder, default config
  python scripts/bench.py --method all --encoder minilm,bert-base --shape paper --json bench.json
  python scripts/bench.py --method lnln --encoder minilm --shape paper --batch 16 \
      --profile /tmp/prof
  python scripts/bench.py --method gear --encoder minilm --shape paper --steps 6 \
      --compare "" "model.dropout_impl=threefry"
  python scripts/bench.py --method gear --encoder bert-base --shape paper --steps 4 \
      --compare "" --alternate 2 --reference-python /tmp/torchvenv/bin/python \
      --reference-repo /tmp/gear_ref

The method's default config (configs/lnln.py, configs/gear.py) with the encoder, batch sizes,
dtype and attention options given here; random data of the chosen shapes (`paper`: MOSI;
`default`: the config's synthetic preset). Several configurations run one subprocess each. Every
figure in the JSON is tagged measured / extrapolated / quoted. msa_jax/bench/__init__.py says what
is measured and how; docs/benchmarks.md has the tables and how to reproduce them.

`--compare VARIANT [VARIANT ...]`: an A/B mode for one configuration; each VARIANT is a
comma-separated list of KEY=VALUE config overrides on top of `--set` ("" for none); the variants'
train steps are interleaved round by round in one process (msa_jax/bench/compare.py).
`--reference-python PY --reference-repo DIR` (with `--compare`, `--shape paper`, `--encoder minilm`
or `bert-base`) adds the authors' PyTorch train step as one more variant:
scripts/reference/bench_reference.py run by PY (a Python with torch, transformers, pyyaml, einops,
scikit-learn, tqdm) on the authors' checkout DIR of the method, in a process that stays alive
(with `--alternate`, a process per round).
`--alternate ROUNDS` (with `--compare`): each variant, and the reference, runs in a fresh process of
its own, one at a time, ROUNDS times (msa_jax/bench/alternate.py): on a machine whose memory a
second large process crowds, the figure a user running one program sees.
`--profile DIR` traces two more train steps into DIR and attributes the op time to model parts.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import sys
from collections.abc import Sequence

ROOT = pathlib.Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
  sys.path.insert(0, str(ROOT))

from msa_jax import allocator  # noqa: E402

if __name__ == "__main__":
  allocator.reexec()  # before the imports below load jax, which the new process would load again

from configs import gear, lnln  # noqa: E402
from msa_jax import cli  # noqa: E402
from msa_jax.bench import output  # noqa: E402
from msa_jax.bench.alternate import alternate_variants  # noqa: E402
from msa_jax.bench.compare import compare_variants  # noqa: E402
from msa_jax.bench.configuration import (  # noqa: E402
  DTYPES,
  ENCODERS,
  METHODS,
  SHAPES,
  timed_step_count,
)
from msa_jax.bench.reference import REFERENCE_REPOS, REFERENCE_WARMUP  # noqa: E402
from msa_jax.bench.run import run_children, run_one  # noqa: E402

CONFIGS = {"lnln": lnln.get_config, "gear": gear.get_config}


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
  p = argparse.ArgumentParser(
    description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
  )
  p.add_argument("--method", default="lnln", choices=(*METHODS, "all"))
  p.add_argument("--encoder", default="tiny", help=f"comma-separated, of {ENCODERS}")
  p.add_argument("--shape", default="default", help=f"comma-separated, of {SHAPES}")
  p.add_argument("--batch", type=int, default=None, help="train batch (paper: 64; default: config)")
  p.add_argument(
    "--eval-batch", type=int, default=None, help="eval batch (paper: 64; default: config)"
  )
  p.add_argument(
    "--steps", type=int, default=5, help="timed train steps (GEAR: rounded up to even)"
  )
  p.add_argument("--warmup", type=int, default=1, help="untimed train steps after compiling")
  p.add_argument(
    "--dtype",
    default="float32",
    choices=DTYPES,
    help="compute dtype (parameters stay float32); sets config.model.dtype",
  )
  p.add_argument(
    "--attention-chunk",
    type=int,
    default=None,
    help="LNLN: config.model.attention_chunk (0: plain attention)",
  )
  p.add_argument(
    "--remat",
    action=argparse.BooleanOptionalAction,
    default=None,
    help="config.model.remat: recompute the BERT layers in the backward pass",
  )
  p.add_argument(
    "--set",
    action="append",
    default=[],
    metavar="KEY=VALUE",
    help="config override, e.g. --set model.depth=1 (repeatable)",
  )
  p.add_argument(
    "--sweep-samples",
    type=int,
    default=64,
    help="test samples timed in the evaluation (0: skip evaluation)",
  )
  p.add_argument("--sgemm-n", type=int, default=2048, help="size of the reference matmul")
  p.add_argument("--json", default=None, help="write the results here")
  p.add_argument("--profile", default=None, help="jax.profiler trace directory")
  p.add_argument(
    "--compare",
    nargs="+",
    default=None,
    metavar="VARIANT",
    help="A/B mode: comma-separated KEY=VALUE overrides per variant ('' for none), "
    "train steps interleaved in one process (one method/encoder/shape)",
  )
  p.add_argument(
    "--alternate",
    type=int,
    default=None,
    metavar="ROUNDS",
    help="with --compare: run each variant (and the reference) in a fresh process of its own, "
    "one at a time, ROUNDS times, instead of interleaving steps in one process "
    "(msa_jax/bench/alternate.py)",
  )
  p.add_argument(
    "--reference-python",
    default=None,
    metavar="PY",
    help="with --compare: a Python with torch that runs the authors' train step "
    "(scripts/reference/bench_reference.py) interleaved with ours",
  )
  p.add_argument(
    "--reference-repo",
    default=None,
    metavar="DIR",
    help="the authors' checkout of --method (LNLN or GEAR), for --reference-python",
  )
  p.add_argument(
    "--reference-warmup",
    type=int,
    default=REFERENCE_WARMUP,
    metavar="N",
    help="untimed steps of the reference before the interleaved rounds: its step time falls "
    "over the first steps of a process (docs/benchmarks.md), ours does not "
    f"(default {REFERENCE_WARMUP})",
  )
  p.add_argument(
    "--reference-malloc",
    choices=("system", "same"),
    default="system",
    help="the reference's host allocator: the C library's, as the authors' users run it "
    "(default), or the same as ours (msa_jax/allocator.py), to compare the code alone",
  )
  p.add_argument("--quiet", action="store_true", help="no table (used by the parent process)")
  args = p.parse_args(argv)
  for name, valid in (("encoder", ENCODERS), ("shape", SHAPES)):
    for item in getattr(args, name).split(","):
      if item not in valid:
        p.error(f"--{name}: {item!r} is not one of {valid}")
  if args.alternate is not None:
    if args.compare is None:
      p.error("--alternate needs --compare (the variants to run, '' for ours as configured)")
    if args.alternate < 1:
      p.error(f"--alternate {args.alternate}: expected a round count >= 1")
  check_reference_args(p, args)
  return args


def check_reference_args(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
  """--reference-python / --reference-repo: both or neither, with --compare, for a configuration
  the reference worker runs (LNLN or GEAR, paper shapes, minilm or bert-base), on paths that
  exist."""
  if (args.reference_python is None) != (args.reference_repo is None):
    p.error("--reference-python and --reference-repo go together")
  if args.reference_python is None:
    return
  if args.reference_warmup < 0:
    p.error(f"--reference-warmup {args.reference_warmup}: expected a count >= 0")
  if args.compare is None:
    p.error(
      "--reference-python needs --compare (the reference's steps are interleaved with the "
      'variants\'; give --compare "" for ours as configured)'
    )
  if (
    args.method not in METHODS
    or args.shape != "paper"
    or args.encoder not in ("minilm", "bert-base")
  ):
    p.error(
      f"--reference-python: the reference worker runs one --method (lnln or gear) at --shape "
      f"paper with --encoder minilm or bert-base, not {args.method} / {args.shape} / "
      f"{args.encoder}"
    )
  if not os.access(args.reference_python, os.X_OK):
    p.error(f"--reference-python {args.reference_python}: not an executable file")
  marker, repo = REFERENCE_REPOS[args.method]
  if not (pathlib.Path(args.reference_repo) / marker).is_file():
    p.error(
      f"--reference-repo {args.reference_repo}: no {marker} there; expected a checkout of {repo}"
    )


def main(argv: Sequence[str] | None = None) -> None:
  args = parse_args(argv)
  methods = METHODS if args.method == "all" else (args.method,)
  combos = [
    (m, e, s) for m in methods for e in args.encoder.split(",") for s in args.shape.split(",")
  ]
  if args.compare is not None:
    if len(combos) != 1:
      sys.exit("bench.py: --compare takes one --method, --encoder and --shape")
    args.method, args.encoder, args.shape = combos[0]
    try:
      if args.alternate:
        script = pathlib.Path(__file__).resolve()
        result = alternate_variants(args, script, timed_step_count(args))
      else:
        result = compare_variants(args, CONFIGS[args.method])
    except (ValueError, RuntimeError) as e:
      sys.exit(f"bench.py: {e}")
    output.write_json(args.json, result)
    print(output.format_compare(result))
    return
  if len(combos) == 1:
    args.method, args.encoder, args.shape = combos[0]
    results = [run_one(args, CONFIGS[args.method])]
  else:
    results = run_children(args, combos, pathlib.Path(__file__).resolve())
  output.write_json(args.json, results[0] if len(combos) == 1 else {"runs": results})
  if not args.quiet:
    print(output.format_table(results))
    print(output.legend(results))
    profiles = output.format_profiles(results)
    if profiles:
      print(profiles)
  if any("error" in r for r in results):
    sys.exit(1)


if __name__ == "__main__":
  sys.exit(cli.run_script(main))
