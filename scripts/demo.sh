#!/usr/bin/env bash
# The main job on the embedded default: set up, start the extender on 127.0.0.1 on the bundled
# demo snapshot (no Kubernetes needed), drive it with the bundled workload over HTTP, and print
# what it placed where and why.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
exec .venv/bin/qosched demo "$@"
