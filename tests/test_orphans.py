"""`make run` leaves no orphans: its programs end with supervisord, and a new run stops what
an earlier one of the same checkout left running (deploy/parent_death.py,
deploy/stop_earlier_run.py). The whole of `make run`: tests/services/test_make_run.py."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SLEEP = "import time; time.sleep(120)"


def alive(pid: int) -> bool:
    # An exited process that nobody has reaped yet has an empty command line.
    try:
        return bool(Path(f"/proc/{pid}/cmdline").read_bytes())
    except OSError:
        return False


def wait_dead(pid: int, timeout: float = 10) -> bool:
    deadline = time.monotonic() + timeout
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    return not alive(pid)


@pytest.fixture
def processes():
    """Start processes with given arguments; whatever is left is killed at the end."""
    started: list[subprocess.Popen] = []

    def start(*args: str) -> subprocess.Popen:
        started.append(subprocess.Popen([sys.executable, "-c", SLEEP, *args]))  # noqa: S603
        return started[-1]

    yield start
    for process in started:
        process.kill()
        process.wait()


def stop_earlier_run(var_dir: Path) -> list[str]:
    done = subprocess.run(  # noqa: S603
        [sys.executable, str(REPO / "deploy" / "stop_earlier_run.py")],
        env={**os.environ, "PORTAL_VAR_DIR": str(var_dir)},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return done.stdout.splitlines()


def test_it_stops_the_beat_and_worker_an_earlier_run_left_and_says_so(tmp_path, processes):
    beat = processes(f"{REPO}/.venv/bin/celery", "-A", "portal", "beat")
    worker = processes(f"{REPO}/.venv/bin/celery", "-A", "portal", "worker")
    (tmp_path / "beat.pid").write_text(f"{beat.pid}\n")
    (tmp_path / "worker.pid").write_text(f"{worker.pid}\n")

    said = stop_earlier_run(tmp_path)

    assert said == [
        f"make run: stopped beat (pid {beat.pid}), left running by an earlier make run",
        f"make run: stopped worker (pid {worker.pid}), left running by an earlier make run",
    ]
    assert beat.wait(5) == -signal.SIGTERM
    assert worker.wait(5) == -signal.SIGTERM
    assert not list(tmp_path.glob("*.pid"))


def test_it_stops_a_make_run_still_running_in_this_checkout(tmp_path, processes):
    supervisord = processes(f"{REPO}/.venv/bin/supervisord", "-c", "deploy/supervisord-dev.conf")
    (tmp_path / "supervisord.pid").write_text(f"{supervisord.pid}\n")

    said = stop_earlier_run(tmp_path)

    assert said == [
        "make run: stopped the earlier make run of this checkout "
        f"(supervisord, pid {supervisord.pid})"
    ]
    assert supervisord.wait(5) == -signal.SIGTERM


def test_it_never_signals_a_process_that_has_since_taken_the_pid(tmp_path, processes):
    elsewhere = subprocess.Popen(["sleep", "120"])  # noqa: S603, S607
    same_checkout = processes(f"{REPO}/manage.py", "shell")  # neither beat nor the worker
    try:
        (tmp_path / "beat.pid").write_text(f"{elsewhere.pid}\n")
        (tmp_path / "worker.pid").write_text(f"{same_checkout.pid}\n")
        (tmp_path / "web.pid").write_text("not a pid\n")

        assert stop_earlier_run(tmp_path) == []

        time.sleep(0.5)
        assert elsewhere.poll() is None
        assert same_checkout.poll() is None
        # The stale pidfiles are gone, so the next look does not trip over them.
        assert not (tmp_path / "beat.pid").exists()
        assert not (tmp_path / "worker.pid").exists()
    finally:
        elsewhere.kill()
        elsewhere.wait()


def test_it_says_nothing_when_no_earlier_run_is_left(tmp_path):
    assert stop_earlier_run(tmp_path / "var") == []


def test_a_program_ends_when_its_parent_is_killed(tmp_path):
    pidfile = tmp_path / "beat.pid"
    # A stand-in for supervisord: it starts the program through the wrapper, then waits.
    parent = subprocess.Popen(  # noqa: S603
        [
            sys.executable,
            "-c",
            f"import subprocess, sys, time; subprocess.Popen(sys.argv[1:]); {SLEEP}",
            sys.executable,
            str(REPO / "deploy" / "parent_death.py"),
            "--pidfile",
            str(pidfile),
            "sleep",
            "120",
        ]
    )
    try:
        deadline = time.monotonic() + 10
        while not pidfile.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        program = int(pidfile.read_text())
        # The pidfile is written just before the exec: give the exec its moment.
        cmdline = Path(f"/proc/{program}/cmdline")
        while cmdline.read_bytes() != b"sleep\x00120\x00" and time.monotonic() < deadline:
            time.sleep(0.05)
        assert cmdline.read_bytes() == b"sleep\x00120\x00"

        parent.kill()
        parent.wait()

        assert wait_dead(program), "the program outlived its parent"
    finally:
        parent.kill()
        parent.wait()
        if "program" in locals() and alive(program):
            os.kill(program, signal.SIGKILL)
