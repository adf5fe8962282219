"""Trains and evaluates an msa_jax method.

  python train.py --config=configs/gear.py --workdir=runs/gear
  python train.py --config=configs/lnln.py:mosi \
      --config.data.path=/data/MOSI/Processed/unaligned_50.pkl \
      --config.encoder=path:/models/bert-base-uncased --config.seeds=1111,1112,1113 \
      --workdir=runs/lnln_mosi
  python train.py --config=configs/lnln.py --workdir=runs/lnln \
      --mode=eval   # evaluate saved checkpoints

Re-running a command resumes from the latest checkpoint in --workdir, or reports that the run is
complete and where its results are.
"""

import sys

from absl import app, flags, logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file(
  "config", None, "Config file, e.g. configs/gear.py or configs/lnln.py:mosi.", lock_config=True
)
_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory (checkpoints, metrics, results).")
_MODE = flags.DEFINE_enum(
  "mode", "train", ["train", "eval"], "train (resumes if possible) or eval (saved checkpoints)."
)
_COORDINATOR = flags.DEFINE_string(
  "coordinator_address", None, "host:port of process 0, for several processes."
)
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Number of processes (several hosts).")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "This process's index.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  logging.set_verbosity(logging.WARNING)  # orbax logs every save at INFO
  from msa_jax import sharding

  sharding.maybe_initialize_distributed(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
  from msa_jax import train
  from msa_jax.data import DataFormatError
  from msa_jax.errors import NonFiniteLossError, RunConfigError

  try:
    train.run(_CONFIG.value, _WORKDIR.value, _MODE.value)
  except (RunConfigError, DataFormatError, NonFiniteLossError, FileNotFoundError) as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(1)


if __name__ == "__main__":
  app.run(main)
