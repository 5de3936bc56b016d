#!/usr/bin/env bash
# Runs the test suite (arguments go to pytest), setting up .venv first if needed.
set -euo pipefail
cd "$(dirname "$0")"
bash scripts/setup_env.sh
exec .venv/bin/python -m pytest "$@"
