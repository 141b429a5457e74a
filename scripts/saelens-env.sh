#!/usr/bin/env bash
# Make a separate environment with SAELens 6 (it needs transformers 5, which radsteer's radgraph
# backend cannot use), for the test that loads radsteer's SAE folders with SAELens itself and for
# regenerating tests/data/sae_formats/saelens with tests/fixtures/make_saelens_saes.py.
#   bash scripts/saelens-env.sh [VENV_DIR]        # default .venvs/saelens (scripts/test.sh finds it)
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${1:-.venvs/saelens}"
python3 -m venv "$venv"
"$venv/bin/pip" install -q torch==2.13.0     # first and pinned: the CPU build from local disk
"$venv/bin/pip" install -q sae-lens
"$venv/bin/python" -c "import sae_lens; print('sae-lens', sae_lens.__version__, 'in', '$venv')"
