#!/usr/bin/env bash
# Set up and run the whole test suite (what CI runs). Installs Prometheus from Debian when it is
# missing (the QoE-controller tests start a real one on 127.0.0.1).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
if ! command -v prometheus >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prometheus) >/dev/null 2>&1 \
      || echo "warning: could not install prometheus; its tests will be skipped" >&2
  fi
fi
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/lint-imports
.venv/bin/mypy -p qosched.policies -p qosched.extender -p qosched.profiles
exec .venv/bin/python -m pytest -q "$@"
