"""`adaptive-lora doctor`: exit codes, one line per check, JSON, and a hub probe that never hangs."""

from __future__ import annotations

import json
import time

import pytest

from adaptive_lora import doctor
from adaptive_lora.cli import main as cli_main


def installed_except(monkeypatch, **versions):
    """Pretend these packages have these versions (None: not installed); the rest stay as they are."""
    real = doctor.installed_version
    monkeypatch.setattr(doctor, "installed_version", lambda name: versions[name] if name in versions else real(name))


def test_missing_optional_extra_only_warns(monkeypatch, capsys):
    installed_except(monkeypatch, ray=None)
    monkeypatch.setattr(doctor, "CHECKS", (doctor.check_packages, doctor.check_extras))
    assert cli_main(["doctor"]) == 0
    lines = capsys.readouterr().out.splitlines()
    ray = [line for line in lines if "extra ray" in line]
    assert len(ray) == 1 and ray[0].startswith("WARN") and "pip install 'adaptive-lora[ray]'" in ray[0]
    assert any(line.startswith("ok") and "torch" in line for line in lines)


def test_required_package_below_its_floor_fails(monkeypatch, capsys):
    installed_except(monkeypatch, peft="0.1.0")
    monkeypatch.setattr(doctor, "CHECKS", (doctor.check_packages,))
    assert cli_main(["doctor"]) == 1
    peft = [line for line in capsys.readouterr().out.splitlines() if " peft " in line]
    assert peft[0].startswith("FAIL") and "peft 0.1.0" in peft[0] and "pip install 'peft>=" in peft[0]


def test_unwritable_cache_fails(tmp_path, monkeypatch, capsys):
    # chmod does not stop root (CI runs as root): a path under a regular file can never be created.
    blocker = tmp_path / "file.txt"
    blocker.write_text("not a directory")
    monkeypatch.setenv("ADAPTIVE_LORA_CACHE", str(blocker / "cache"))
    monkeypatch.setattr(doctor, "CHECKS", (doctor.check_model_cache,))
    assert cli_main(["doctor"]) == 1
    out = capsys.readouterr().out
    assert out.startswith("FAIL") and str(blocker / "cache") in out and "ADAPTIVE_LORA_CACHE" in out


def test_cache_writability_check_is_injectable(tmp_path):
    denied = doctor.check_model_cache(tmp_path, writable=lambda path: "PermissionError: denied")
    assert [c.status for c in denied] == ["fail"]
    fresh = doctor.check_model_cache(tmp_path / "new-cache")  # created, probed, not converted yet
    assert [c.status for c in fresh] == ["ok", "ok"] and "not converted yet" in fresh[1].detail
    assert (tmp_path / "new-cache").is_dir() and not any((tmp_path / "new-cache").iterdir())  # the probe file is gone


def test_json_lists_every_check_and_its_exit_code_agrees(monkeypatch, capsys):
    monkeypatch.setattr(doctor, "hub_problem", lambda endpoint: "hub.example is not reachable (stub)")
    code = cli_main(["doctor", "--json"])
    report = json.loads(capsys.readouterr().out)
    names = {c["name"] for c in report["checks"]}
    assert {"python", "torch", "transformers", "peft", "device", "memory", "model cache", "embedded model", "hub"} <= names
    assert {c["status"] for c in report["checks"]} <= {"ok", "warn", "fail"}
    assert any(n.startswith("disk") for n in names) and {"extra ray", "extra tensorboard"} <= names
    assert report["ok"] == (code == 0) == all(c["status"] != "fail" for c in report["checks"])
    hub = next(c for c in report["checks"] if c["name"] == "hub")
    assert hub["status"] == "warn" and "stub" in hub["detail"]


def test_hub_probe_is_fast_and_offline_mode_is_respected(monkeypatch):
    start = time.perf_counter()
    problem = doctor.hub_problem("https://hub.invalid", timeout=0.5)  # .invalid never resolves (RFC 2606)
    assert problem and "hub.invalid" in problem
    assert time.perf_counter() - start < 3

    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    (check,) = doctor.check_hub(probe=lambda endpoint: pytest.fail("offline mode must not touch the network"))
    assert check.status == "warn" and "HF_HUB_OFFLINE" in check.detail


def test_a_crashing_check_is_a_failure_line_not_a_traceback():
    def check_broken():
        raise RuntimeError("boom")

    (check,) = doctor.run_checks((check_broken,))
    assert check.status == "fail" and check.name == "broken" and "boom" in check.detail
