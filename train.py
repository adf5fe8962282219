"""Trains and evaluates an msa_jax method.

  python train.py --config=configs/gear.py --workdir=runs/gear
  python train.py --config=configs/lnln.py:mosi \
      --config.data.path=/data/MOSI/Processed/unaligned_50.pkl \
      --config.encoder=path:/models/bert-base-uncased --config.seeds=1111,1112,1113 \
      --workdir=runs/lnln_mosi
  python train.py --config=configs/lnln.py --workdir=runs/lnln \
      --mode=eval   # evaluate saved checkpoints

Re-running a command resumes from the latest checkpoint in --workdir, or reports that the run is
complete and where its results are. A mistake (a bad config value, bad data, a file-system error)
is one line on stderr and exit status 1, Ctrl-C exit status 130; `--debug` (or MSA_JAX_DEBUG=1)
shows the full traceback.
"""

import sys

from absl import flags, logging
from ml_collections import config_flags

from msa_jax import allocator, cli


def _define(argv: list[str]) -> flags.FlagValues:
  """This command's flags (a fresh set per call, so that `main` can run again in one process)."""
  fv = flags.FlagValues()
  config_flags.DEFINE_config_file(
    "config",
    None,
    "Config file, e.g. configs/gear.py or configs/lnln.py:mosi.",
    flag_values=fv,
    lock_config=True,
    sys_argv=argv,
  )
  flags.DEFINE_string(
    "workdir", None, "Run directory (checkpoints, metrics, results).", flag_values=fv
  )
  flags.DEFINE_enum(
    "mode",
    "train",
    ["train", "eval"],
    "train (resumes if possible) or eval (saved checkpoints).",
    flag_values=fv,
  )
  flags.DEFINE_string(
    "coordinator_address", None, "host:port of process 0, for several processes.", flag_values=fv
  )
  flags.DEFINE_integer(
    "num_processes", None, "Number of processes (several hosts).", flag_values=fv
  )
  flags.DEFINE_integer("process_id", None, "This process's index.", flag_values=fv)
  return fv


def _flags(argv: list[str]) -> flags.FlagValues:
  """This command's flags parsed from `argv`; a bad flag or config key raises `cli.UsageError`."""
  fv = _define(argv)
  error = cli.check_config_file(argv)
  if error:
    raise cli.UsageError(error)
  try:
    rest = fv(argv)
  except Exception as e:
    line = cli.describe_flags_error(e, argv)
    if line is None:
      raise
    raise cli.UsageError(line) from e
  if len(rest) > 1:
    raise cli.UsageError(f"unexpected arguments: {rest[1:]}")
  for name in ("config", "workdir"):
    if fv[name].value is None:
      raise cli.UsageError(f"--{name} is required (e.g. --config=configs/gear.py --workdir=runs/x)")
  return fv


def main(argv: list[str] | None = None) -> int:
  """The command line: `argv` as sys.argv (program name first); returns the exit status."""
  argv, debug = cli.split_debug(sys.argv if argv is None else argv)
  if any(a in ("-h", "--help", "--helpshort", "--helpfull") for a in argv[1:]):
    print(f"{__doc__}\nFlags (and --debug: full tracebacks):\n{_define(argv).get_help()}")
    return 0
  workdir: list[str] = []

  def run() -> None:
    fv = _flags(argv)
    workdir.append(fv.workdir)
    logging.set_verbosity(logging.WARNING)  # orbax logs every save at INFO
    from msa_jax import sharding

    sharding.maybe_initialize_distributed(fv.coordinator_address, fv.num_processes, fv.process_id)
    from msa_jax import train

    train.run(fv.config, fv.workdir, fv.mode)

  def interrupted() -> str:
    if not workdir:
      return ""
    import pathlib

    from msa_jax.train.workdir import resume_note

    return resume_note(pathlib.Path(workdir[0]).expanduser().absolute())

  return cli.guard(run, debug=debug, interrupted=interrupted)


if __name__ == "__main__":
  allocator.reexec()
  sys.exit(main())
