"""`adaptive-lora doctor`: check Python, packages, device, memory, disk, model cache, extras and hub."""

from __future__ import annotations

import json

_MARK = {"ok": "ok  ", "warn": "WARN", "fail": "FAIL"}


def add_parsers(commands) -> None:
    parser = commands.add_parser("doctor", help="check that this machine can run the embedded main job")
    parser.add_argument("--json", action="store_true", help="print the checks as JSON")
    parser.set_defaults(func=cmd_doctor)


def cmd_doctor(args) -> int:
    from ..doctor import exit_code, run_checks

    checks = run_checks()
    code = exit_code(checks)
    if args.json:
        print(json.dumps({"ok": code == 0, "checks": [c.to_dict() for c in checks]}, indent=2))
        return code
    width = max(len(c.name) for c in checks)
    for c in checks:
        print(f"{_MARK[c.status]}  {c.name:{width}s}  {c.detail}")
    counts = {s: sum(c.status == s for c in checks) for s in _MARK}
    verdict = "ready" if code == 0 else "not ready: fix the FAIL lines"
    print(f"{counts['ok']} ok, {counts['warn']} warnings, {counts['fail']} failed: {verdict}")
    return code
