#!/usr/bin/env bash
# Set up a fresh machine for qosched: a virtualenv in .venv with the package (editable), the
# test tools and the profiler extra, pinned by constraints.txt. Idempotent; quiet when done.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip setuptools wheel
# torch first, pinned: `torch==2.13.0` resolves to the CPU wheel available locally; an
# unpinned `torch` would pull several GB of CUDA packages.
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
  .venv/bin/python -m pip install -q "torch==2.13.0"
fi
.venv/bin/python -m pip install -q -c constraints.txt -e ".[dev,profiler]"
