#!/usr/bin/env bash
# Run llama.cpp's own server test suite (tools/server/tests/unit) against `codegemma serve`.
#   scripts/llamacpp_suite/run.sh LLAMA_CPP_DIR [pytest args, e.g. unit/test_infill.py -k infill]
# LLAMA_CPP_DIR: a llama.cpp source tree (e.g. the one vendored in the llama-cpp-python sdist).
# Their tests start `llama-server`; LLAMA_SERVER_BIN_PATH points them at ./llama-server, which runs
# codegemma serve with the equivalent options. Needs their test requirements (pytest, requests,
# openai, filelock, wget). Their tests that assert the exact text of their tiny test model fail here
# by design; docs/serving.md lists the results.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
llama="${1:?usage: run.sh LLAMA_CPP_DIR [pytest args]}"
shift
cd "$llama/tools/server/tests"
export LLAMA_SERVER_BIN_PATH="$here/llama-server" PYTHONPATH="$repo${PYTHONPATH:+:$PYTHONPATH}" OMP_NUM_THREADS=1
export CODEGEMMA_SUITE_STATE="$(mktemp -d)"
stop_daemons() {  # the servers llama-server left running (one per port)
  for f in "$CODEGEMMA_SUITE_STATE"/*.json; do
    [ -e "$f" ] && kill "$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["pid"])' "$f")" 2>/dev/null || true
  done
}
trap stop_daemons EXIT
python3 -m pytest -p no:cacheprovider -o addopts="" --timeout=600 -q "${@:-unit}"
