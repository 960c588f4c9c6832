"""Atomic writes (issue 9, item 8): durable (the directory is fsynced after the rename), ordinary
(mode 0o666 & ~umask, without ever touching the process umask), and all-or-nothing."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from adaptive_lora import io


@pytest.fixture
def umask():
    """Set the process umask for one test and restore it after (the code under test must not touch it)."""
    real_umask = os.umask  # captured before no_umask_calls replaces it
    saved = real_umask(0o022)
    real_umask(saved)
    yield real_umask
    real_umask(saved)


@pytest.fixture
def no_umask_calls(monkeypatch):
    def umask_called(mask):
        raise AssertionError("os.umask changes the mask of every thread in the process; it must not be called")

    monkeypatch.setattr(os, "umask", umask_called)


def test_the_directory_is_fsynced_after_the_rename(tmp_path, monkeypatch):
    events: list[tuple] = []
    opened: dict[int, str] = {}
    real_open, real_fsync, real_replace = os.open, os.fsync, os.replace

    def record_open(path, flags, *args, **kwargs):
        fd = real_open(path, flags, *args, **kwargs)
        opened[fd] = os.fspath(path)
        events.append(("open", os.fspath(path)))
        return fd

    def record_fsync(fd):
        events.append(("fsync", opened.get(fd, f"fd {fd}")))
        return real_fsync(fd)

    def record_replace(src, dst):
        events.append(("replace", os.fspath(dst)))
        return real_replace(src, dst)

    monkeypatch.setattr(os, "open", record_open)
    monkeypatch.setattr(os, "fsync", record_fsync)
    monkeypatch.setattr(os, "replace", record_replace)
    target = tmp_path / "result.json"
    io.write_json(target, {"status": "done"})
    renamed = events.index(("replace", str(target)))
    assert ("fsync", str(tmp_path)) in events[renamed + 1 :], events  # the rename itself is made durable
    temporary = next(path for kind, path in events[:renamed] if kind == "open")
    assert ("fsync", temporary) in events[:renamed], events  # and the data before it
    assert target.read_text() == '{\n  "status": "done"\n}\n'


@pytest.mark.parametrize("mask", [0o022, 0o077, 0o002], ids=oct)
def test_files_get_the_ordinary_mode_and_the_umask_is_never_changed(tmp_path, umask, no_umask_calls, mask):
    umask(mask)
    target = tmp_path / "report.md"
    io.atomic_write_text(target, "# report\n")
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~mask
    io.atomic_write_text(target, "# report, again\n")  # replacing keeps the rule
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~mask
    assert target.read_text() == "# report, again\n"


def _leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def test_a_failed_write_leaves_the_old_content_and_no_temporary_file(tmp_path, monkeypatch):
    target = tmp_path / "suite.yaml"
    io.atomic_write_text(target, "name: first\n")

    def disk_full(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(OSError, match="No space left"):
        io.atomic_write_text(target, "name: second\n")
    assert target.read_text() == "name: first\n"
    assert _leftovers(tmp_path) == ["suite.yaml"]


def test_an_interrupted_write_leaves_the_old_content_and_no_temporary_file(tmp_path, monkeypatch):
    target = tmp_path / "results.csv"
    io.atomic_write_text(target, "a,b\n1,2\n")

    def interrupted(src, dst):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        io.atomic_write_text(target, "a,b\n3,4\n")
    assert target.read_text() == "a,b\n1,2\n"
    assert _leftovers(tmp_path) == ["results.csv"]


def test_json_never_holds_nan(tmp_path):
    target = tmp_path / "result.json"
    io.write_json(target, {"loss": float("nan"), "curve": [1.0, float("inf")], "nested": {"x": float("-inf")}})
    assert io.read_json(target) == {"loss": None, "curve": [1.0, None], "nested": {"x": None}}
