"""Rewrite the run directories under a folder in the current compact formats (docs/run-format.md):
allocation.json's modules as a table by role, predictions.jsonl with each data row's prompt,
reference and task written once. Readers take both forms, so this only saves space.

Only directories this project made (holding .adaptive-lora-run) and finished (result.json) are
touched; a file is replaced, atomically, only when its contents read back the same.

    .venv/bin/python scripts/compact-runs.py results/study-builtin [more folders]
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from adaptive_lora.errors import UserError
from adaptive_lora.schema import (
    ALLOCATION_FILE,
    PREDICTIONS_FILE,
    RESULT_FILE,
    RUN_MARKER,
    read_allocation,
    read_predictions,
    write_allocation,
    write_predictions,
)


def compact_run(run_dir: Path, scratch: Path) -> int:
    """Bytes saved in one run directory. Each file is written to `scratch` first and replaced only when
    that copy reads back the same."""
    files = [run_dir / ALLOCATION_FILE, run_dir / PREDICTIONS_FILE]
    before = sum(f.stat().st_size for f in files if f.is_file())
    if files[0].is_file():
        record = read_allocation(run_dir)
        write_allocation(scratch, record)
        if read_allocation(scratch).to_dict() == record.to_dict():
            write_allocation(run_dir, record)
    if files[1].is_file():
        rows = read_predictions(run_dir)
        write_predictions(scratch, rows)
        if read_predictions(scratch) == rows:
            write_predictions(run_dir, rows)
    return before - sum(f.stat().st_size for f in files if f.is_file())


def main(folders: list[str]) -> int:
    if not folders:
        print(__doc__.strip().splitlines()[-1].strip(), file=sys.stderr)
        return 2
    runs = sorted(m.parent for folder in folders for m in Path(folder).rglob(RUN_MARKER) if (m.parent / RESULT_FILE).is_file())
    try:
        with tempfile.TemporaryDirectory() as scratch:
            saved = sum(compact_run(run, Path(scratch)) for run in runs)
    except UserError as exc:  # a run file that does not parse: say which, and leave it as it is
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"{len(runs)} run directories rewritten, {saved / 2**20:.2f} MiB saved")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
