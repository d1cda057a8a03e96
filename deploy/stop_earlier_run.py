"""Stop what an earlier `make run` of this checkout left running, and say so.

    python deploy/stop_earlier_run.py      (the Makefile's `run` does, before starting)

One checkout runs one beat and one worker: a second beat runs every periodic task twice,
and a worker left from an earlier run takes the new run's tasks with old code. Each
process is found by its pidfile under PORTAL_VAR_DIR (default ./var: supervisord writes
its own, deploy/parent_death.py the programs'), and is signalled only while
/proc/PID/cmdline still names this checkout and the program: a pid the system has since
given to an unrelated process is never touched. Linux only (it reads /proc): elsewhere it
finds nothing.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path

CHECKOUT = Path(__file__).resolve().parents[1]

# pidfile name -> a word of the process's command line (or a path ending in it).
SUPERVISOR = ("supervisord", "supervisord")
PROGRAMS = [
    ("web", "gunicorn"),
    ("standin", "standin.server"),
    ("beat", "beat"),
    ("worker0", "worker"),  # two worker processes (deploy/supervisord-dev.conf)
    ("worker1", "worker"),
    ("worker", "worker"),  # a run from before there were two
]

# supervisord gives the worker's warm shutdown up to 30 s (deploy/supervisord-dev.conf).
SUPERVISOR_WAIT = 45.0
PROGRAM_WAIT = 35.0


def argv_of(pid: int) -> list[str]:
    """The process's arguments; empty when it is gone (or a zombie)."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [arg.decode(errors="replace") for arg in raw.split(b"\0") if arg]


def is_ours(argv: list[str], word: str) -> bool:
    prefix = f"{CHECKOUT}/"
    # Words, not substrings: a checkout in /home/beatrice holds no "beat". Split, so that
    # web's `sh -c "seed_demo && exec gunicorn ..."` counts as well.
    words = [w for arg in argv for w in arg.split()]
    return any(w.startswith(prefix) for w in words) and any(
        w == word or w.endswith(f"/{word}") for w in words
    )


def find(var_dir: Path, name: str, word: str) -> int | None:
    """The pid in NAME.pid if that process is still this checkout's program; a pidfile
    that names anything else is stale and removed."""
    path = var_dir / f"{name}.pid"
    try:
        pid = int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    if pid > 1 and is_ours(argv_of(pid), word):
        return pid
    path.unlink(missing_ok=True)
    return None


def wait_gone(pids: list[int], timeout: float) -> list[int]:
    """The pids still alive after up to TIMEOUT seconds."""
    deadline = time.monotonic() + timeout
    while True:
        alive = [pid for pid in pids if argv_of(pid)]
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.2)


def kill_group(pid: int) -> None:
    # supervisord puts each program in a process group of its own (its pid): the group
    # takes the program's children (gunicorn's workers, the pool) along.
    with contextlib.suppress(ProcessLookupError):
        if os.getpgid(pid) == pid:
            os.killpg(pid, signal.SIGKILL)
        else:
            os.kill(pid, signal.SIGKILL)


def terminate(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)


def stop_earlier_run(var_dir: Path) -> list[str]:
    """Stop the earlier run's processes; one line for each, saying what was stopped."""
    said = []
    supervisor = find(var_dir, *SUPERVISOR)
    if supervisor:
        # A live supervisord stops its own programs on SIGTERM (the worker's warm shutdown
        # included); one that does not in time is killed, and its programs are found below.
        terminate(supervisor)
        if wait_gone([supervisor], SUPERVISOR_WAIT):
            kill_group(supervisor)
            wait_gone([supervisor], 5)
        (var_dir / "supervisord.pid").unlink(missing_ok=True)
        said.append(
            f"stopped the earlier make run of this checkout (supervisord, pid {supervisor})"
        )
    found = {name: pid for name, word in PROGRAMS if (pid := find(var_dir, name, word))}
    for pid in found.values():
        terminate(pid)
    for pid in wait_gone(list(found.values()), PROGRAM_WAIT):
        kill_group(pid)
    wait_gone(list(found.values()), 5)
    for name, pid in found.items():
        (var_dir / f"{name}.pid").unlink(missing_ok=True)
        said.append(f"stopped {name} (pid {pid}), left running by an earlier make run")
    return said


def main() -> None:
    var_dir = Path(os.environ.get("PORTAL_VAR_DIR") or CHECKOUT / "var")
    for line in stop_earlier_run(var_dir):
        print(f"make run: {line}", flush=True)


if __name__ == "__main__":
    main()
