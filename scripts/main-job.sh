#!/usr/bin/env bash
# Set up (if needed) and run the main job on the embedded default model and built-in data.
# Extra arguments go to `adaptive-lora run`.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
exec .venv/bin/adaptive-lora run "$@"
