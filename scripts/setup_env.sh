#!/usr/bin/env bash
# Creates ./.venv with the pinned stack, once; later calls return at once while
# requirements.txt is unchanged. torch goes first so that the CPU or CUDA build this
# machine's registry offers is the one every other package sees.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python3}"
stamp=.venv/.requirements.sha256
wanted=$(sha256sum requirements.txt | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$wanted" ]; then
    exit 0
fi

"$PYTHON" -m venv .venv
torch_pin=$(grep -E '^torch==' requirements.txt)
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet "$torch_pin"
echo "$torch_pin" > .venv/constraints.txt
.venv/bin/python -m pip install --quiet -r requirements.txt -c .venv/constraints.txt
echo "$wanted" > "$stamp"
echo "environment ready in .venv"
