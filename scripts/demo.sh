#!/usr/bin/env bash
# README command 1: set up, build the sign cache of the embedded default model, print a summary.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. "${BAGOFDIMS_VENV:-.venv}/bin/activate"
bagofdims capture --model "${1:-smollm2}" --sites 'resid.*' final --out "runs/${1:-smollm2}/cache"
