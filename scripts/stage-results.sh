#!/usr/bin/env bash
# Stage what a study under results/ has finished, for a commit: every run directory that holds a
# result.json (finished, diverged or failed with its reason), the suite, and the report, regenerated first.
# Unfinished and interrupted run directories stay out (`adaptive-lora run` resumes them); stop the sweep
# and remove them before staging, so that the report is of exactly the staged runs. Adapter weights,
# locks and per-sweep caches are ignored by .gitignore.
# Usage: scripts/stage-results.sh [results/<suite> ...]   (default: every study under results/)
set -euo pipefail
cd "$(dirname "$0")/.."
studies=("$@")
[ ${#studies[@]} -gt 0 ] || studies=(results/*/)
for study in "${studies[@]}"; do
  study="${study%/}"
  [ -d "$study/runs" ] || { echo "skip $study: no runs/"; continue; }
  .venv/bin/adaptive-lora report "$study" >/dev/null
  staged=0
  for run in "$study"/runs/*/; do
    [ -f "$run/result.json" ] || continue
    grep -q '"status": "interrupted"' "$run/result.json" && continue  # runs again on resume
    git add "$run"
    staged=$((staged + 1))
  done
  for name in suite.yaml .adaptive-lora-sweep report.md report.html summary.csv stats.csv results.csv row_stats.csv search.json figures; do
    [ -e "$study/$name" ] && git add "$study/$name"
  done
  echo "$study: $staged run directories staged"
done
[ -f results/README.md ] && git add results/README.md
