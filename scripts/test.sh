#!/usr/bin/env bash
# The README's test command: install (CPU torch first, so pip never pulls a CUDA build), then pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install -q torch==2.13.0
python3 -m pip install -q -e ".[test]"
export CODEGEMMA_DATA_DIR="${CODEGEMMA_DATA_DIR:-$(cd .. && pwd)/shared/benchmarks}"
python3 -m pytest -q -x --durations=15 "$@"
