#!/usr/bin/env bash
# The GEAR claim table (docs/results.md): full GEAR and its ablations on the synthetic benchmark, 3 seeds.
#   bash scripts/gear_ablations.sh [RUN_ROOT]      (default runs/gear_ablations)
#   python scripts/report.py RUN_ROOT/*            (the side-by-side IID/OOD table)
# Each variant is the default config (configs/gear.py, no preset) with one switch changed.
set -euo pipefail
root="${1:-runs/gear_ablations}"
seeds="${SEEDS:-1003,1004,1005}"  # VARIANTS="full all_off" to run a subset
# EXTRA="--config.model.dropout_impl=threefry": more flags for every variant (this one draws the
# dropout masks of the rows in docs/results.md)
declare -A variants=(
  [full]=""
  [ipw_none]="--config.gear.ipw=none"
  [gmae_none]="--config.gear.gmae=none"
  [no_swap]="--config.gear.use_swap=False"
  [all_off]="--config.gear.ipw=none --config.gear.gmae=none --config.gear.use_swap=False"
)
for name in ${VARIANTS:-full all_off no_swap ipw_none gmae_none}; do
  # shellcheck disable=SC2086
  python train.py --config=configs/gear.py --config.seeds="$seeds" --config.progress=False \
    --workdir="$root/$name" ${variants[$name]} ${EXTRA:-}
done
