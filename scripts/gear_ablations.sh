#!/usr/bin/env bash
# The GEAR claim table (docs/results.md): full GEAR, the plain model and single-switch ablations on
# the synthetic benchmark, 3 seeds each.
#   bash scripts/gear_ablations.sh [RUN_ROOT]        (default runs/gear_ablations_synth-$VERSION)
#   VERSION=v1 bash scripts/gear_ablations.sh        (synth-v1; default v2)
#   python scripts/claim_table.py RUN_ROOT            (the table, per selection criterion)
# Each variant is the default config (configs/gear.py, no preset) with one switch changed, trained
# alone (gear.baseline=False). Every criterion the data allows keeps its own checkpoint in the same
# run, so one run gives the rows of each selection; early stopping is off (patience = max_epochs)
# so that every criterion sees the same epochs. The seeds train together (vmap_seeds).
set -euo pipefail
version="${VERSION:-v2}"
root="${1:-runs/gear_ablations_synth-$version}"
seeds="${SEEDS:-1003,1004,1005}"  # VARIANTS="full plain" to run a subset
case "$version" in
  v2) data="--config.data.synthetic_version=v2 --config.data.path=data/synthetic_mosi_v2_seed0.pkl" ;;
  v1) data="--config.data.synthetic_version=v1 --config.data.path=data/synthetic_mosi_seed0.pkl
            --config.gear.criterion=Acc_2_mean" ;;  # synth-v1 has no OOD validation splits
  *) echo "VERSION must be v1 or v2" >&2; exit 2 ;;
esac
declare -A variants=(
  [full]=""
  [plain]="--config.gear.ipw=none --config.gear.gmae=none --config.gear.use_swap=False"
  [ipw_none]="--config.gear.ipw=none"
  [gmae_none]="--config.gear.gmae=none"
  [no_swap]="--config.gear.use_swap=False"
  [q1]="--config.gear.q=1.0"
)
for name in ${VARIANTS:-full plain ipw_none gmae_none no_swap q1}; do
  # shellcheck disable=SC2086
  python train.py --config=configs/gear.py --config.seeds="$seeds" --config.vmap_seeds=True \
    --config.gear.baseline=False --config.gear.patience=12 --config.progress=False \
    --workdir="$root/$name" $data ${variants[$name]} ${EXTRA:-}
done
