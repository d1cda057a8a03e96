"""`make run` itself: its programs end with supervisord however it ends, and a new run in the
same checkout leaves one beat and its two workers (issue 22, point 12; two worker processes
since issue 25 §2).

Each run has its own PORTAL_VAR_DIR (SQLite and the file broker, as a newcomer's) and free
ports, so the checkout's own `make run`, if one is going, is neither seen nor touched. In the
service tier because each start takes a while; it needs no service.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.services.conftest import REPO, free_port, wait_until

START_TIMEOUT = 240
WORKERS = 2  # deploy/supervisord-dev.conf: [program:worker] numprocs


@dataclass
class Running:
    pid: int
    ppid: int
    argv: list[str]


def processes_of(var_dir: Path) -> list[Running]:
    """Every process of this checkout started for VAR_DIR (orphans included)."""
    mark = f"PORTAL_VAR_DIR={var_dir}".encode()
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            argv = [a.decode() for a in (proc / "cmdline").read_bytes().split(b"\0") if a]
            environ = (proc / "environ").read_bytes().split(b"\0")
            ppid = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if mark in environ and any(f"{REPO}/" in arg for arg in argv):
            found.append(Running(int(proc.name), ppid, argv))
    return found


def beats_and_workers(var_dir: Path) -> tuple[list[int], list[int]]:
    """Pids of the beats, and of the workers' main processes (not their pool's)."""
    running = processes_of(var_dir)
    beats = [p.pid for p in running if "celery" in p.argv[1] and "beat" in p.argv]
    workers = {p.pid: p.ppid for p in running if "celery" in p.argv[1] and "worker" in p.argv}
    return beats, [pid for pid, ppid in workers.items() if ppid not in workers]


class MakeRun:
    def __init__(self, env: dict, log: Path) -> None:
        self.env, self.log = env, log
        self.handle = subprocess.Popen(  # noqa: S603
            ["make", "run"],  # noqa: S607
            cwd=REPO,
            env=env,
            stdout=log.open("wb"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_ready(self, web: bool = False) -> None:
        """Until the worker and beat have started (and the login page answers, if WEB)."""
        login = f"http://127.0.0.1:{self.env['WEB_PORT']}/login/"

        def ready() -> bool:
            if self.handle.poll() is not None:
                pytest.fail(f"make run exited:\n{self.output()[-3000:]}")
            text = self.output()
            workers_ready = sum(f"worker{n}@" in text for n in range(WORKERS))
            if workers_ready < WORKERS or text.count(" ready.") < WORKERS:
                return False
            if "beat: Starting" not in text:
                return False
            if not web:
                return True
            try:
                return urllib.request.urlopen(login, timeout=2).status == 200  # noqa: S310
            except OSError:
                return False

        wait_until(ready, START_TIMEOUT, "make run's worker and beat")

    def supervisord(self) -> int:
        return int((Path(self.env["PORTAL_VAR_DIR"]) / "supervisord.pid").read_text())

    def ctrl_c(self) -> None:
        # What the terminal does: SIGINT to make's process group (make and supervisord).
        os.killpg(self.handle.pid, signal.SIGINT)
        self.handle.wait(90)


@pytest.fixture
def make_run(tmp_path):
    var_dir = tmp_path / "var"
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("DATABASE_URL", "REDIS_URL", "MAKEFLAGS", "MAKELEVEL", "MFLAGS")
    }
    env.update(
        PORTAL_VAR_DIR=str(var_dir),
        WEB_PORT=str(free_port()),
        AWS_STANDIN_PORT=str(free_port()),
    )
    started: list[MakeRun] = []

    def start() -> MakeRun:
        started.append(MakeRun(env, tmp_path / f"make-run-{len(started) + 1}.log"))
        return started[-1]

    start.var_dir = var_dir
    yield start
    for run in started:
        if run.handle.poll() is None:
            os.killpg(run.handle.pid, signal.SIGKILL)
            run.handle.wait()
    for process in processes_of(var_dir):
        with contextlib.suppress(ProcessLookupError):
            os.kill(process.pid, signal.SIGKILL)


def test_make_run_leaves_one_beat_and_its_workers_whatever_an_earlier_run_left(make_run):
    def pids() -> set[int]:
        return {p.pid for p in processes_of(make_run.var_dir)}

    def one_beat_and_one_worker() -> None:
        beats, workers = beats_and_workers(make_run.var_dir)
        assert (len(beats), len(workers)) == (1, WORKERS), processes_of(make_run.var_dir)

    first = make_run()
    first.wait_ready()
    one_beat_and_one_worker()
    killed = pids()

    # supervisord killed: web, stand-in, beat, the worker and its pool end without it.
    os.kill(first.supervisord(), signal.SIGKILL)
    first.handle.wait(10)
    wait_until(lambda: not killed & pids(), 90, "the killed run's programs to end")

    second = make_run()
    second.wait_ready()
    one_beat_and_one_worker()

    # A run started beside a live one (another terminal) stops it first, and says so.
    running = second.supervisord()
    third = make_run()
    third.wait_ready(web=True)
    assert (
        f"make run: stopped the earlier make run of this checkout (supervisord, pid {running})"
        in third.output()
    )
    second.handle.wait(10)
    one_beat_and_one_worker()

    # Ctrl-C stops everything.
    third.ctrl_c()
    assert processes_of(make_run.var_dir) == []
