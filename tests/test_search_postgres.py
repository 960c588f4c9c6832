"""A search shared through a real PostgreSQL server that this test starts (Debian's postgresql package, run as
the `postgres` user in a temporary directory, on a unix socket only): two worker processes work one study,
every trial runs exactly once, and the study ends with --trials trials."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import optuna
import pytest

from adaptive_lora.search.study import counted

BINARIES = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
TRIALS = 12


def _as_postgres(command: list[str], **kwargs) -> subprocess.CompletedProcess:
    """PostgreSQL refuses to run as root: run its tools as the `postgres` user when we are root."""
    if os.geteuid() == 0:
        command = ["runuser", "-u", "postgres", "--", *command]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, **kwargs)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed: {done.stderr.strip() or done.stdout.strip()}")
    return done


@pytest.fixture(scope="module")
def postgres():
    if not BINARIES:
        pytest.skip("PostgreSQL server binaries are not installed (Debian: apt-get install postgresql); .ci/run installs them")
    if os.geteuid() == 0 and shutil.which("runuser") is None:
        pytest.skip("running as root without runuser: cannot start PostgreSQL as another user")
    try:
        import psycopg  # noqa: F401 - SQLAlchemy 2.1 reads postgresql:// with psycopg 3
    except ImportError:
        pytest.skip("the PostgreSQL driver is not installed: pip install 'adaptive-lora[postgres]'")
    bin_dir = Path(BINARIES[-1]).parent
    # not under pytest's tmp_path: its parents are private to root, and the server runs as `postgres`
    root = Path(tempfile.mkdtemp(prefix="adaptive-lora-postgres-"))
    data, sockets = root / "data", root / "sockets"
    sockets.mkdir()
    if os.geteuid() == 0:
        shutil.chown(root, "postgres")
        shutil.chown(sockets, "postgres")
    _as_postgres([str(bin_dir / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres"])
    options = f"-c listen_addresses='' -k {sockets} -p 5433"  # a unix socket only: no port can clash
    _as_postgres([str(bin_dir / "pg_ctl"), "-D", str(data), "-o", options, "-l", str(root / "server.log"), "-w", "start"])
    try:
        _as_postgres([str(bin_dir / "createdb"), "-h", str(sockets), "-p", "5433", "-U", "postgres", "search"])
        yield f"postgresql://postgres@/search?host={sockets}&port=5433"
    finally:
        _as_postgres([str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"])
        shutil.rmtree(root, ignore_errors=True)


def test_two_workers_share_one_study_and_no_trial_runs_twice(postgres, tmp_path):
    here = Path(__file__).parent
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(here), *sys.path])}
    ran = [tmp_path / f"worker{i}.txt" for i in range(2)]
    workers = [
        subprocess.Popen(
            [sys.executable, str(here / "search_synthetic.py"), postgres, "shared", str(TRIALS), str(path), str(i)],
            env=env,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i, path in enumerate(ran)
    ]
    for worker in workers:
        _, err = worker.communicate(timeout=300)
        assert worker.returncode == 0, err
    numbers = [[int(line) for line in path.read_text().split()] if path.exists() else [] for path in ran]
    together = numbers[0] + numbers[1]
    assert len(together) == len(set(together))  # no trial ran twice
    assert numbers[0] and numbers[1]  # both workers took trials from the one study
    study = optuna.load_study(study_name="shared", storage=postgres)
    trials = study.get_trials()
    assert sorted(together) == sorted(t.number for t in trials)  # every trial of the study ran in exactly one worker
    assert TRIALS <= counted(trials) <= TRIALS + 1  # at most workers - 1 over, as with Optuna's MaxTrialsCallback
    assert {t.user_attrs["worker"] for t in trials} == {t.user_attrs["worker"] for t in trials if t.number in numbers[0]} | {
        t.user_attrs["worker"] for t in trials if t.number in numbers[1]
    }
    assert len({t.user_attrs["worker"] for t in trials}) == 2
    assert [t.user_attrs.get("kind") for t in trials[:3]] == ["uniform"] * 3  # enqueued once, by the worker that created it
    assert sum(t.user_attrs.get("kind") == "uniform" for t in trials) == 3
