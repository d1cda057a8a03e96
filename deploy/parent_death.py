"""Run a program that ends when its parent ends, and note its pid.

    python deploy/parent_death.py [--pidfile var/beat.pid] PROGRAM [ARGS...]

`make run`'s supervisord starts each program in a process group of its own, so when
supervisord dies without stopping them (SIGKILL, or killed while the worker's warm
shutdown still runs) nothing tells them: they live on beside the next `make run` (two
beats, a worker with old code on the new run's broker). PR_SET_PDEATHSIG asks the kernel
to send SIGTERM when the parent dies, however it dies; the setting survives the exec
below, so the program itself receives it (a Celery prefork pool's children get SIGKILL
when the worker goes: Celery sets the same flag on them).

The pidfile (the program keeps this pid through the exec) lets the next `make run` find
what an earlier one left alive (deploy/stop_earlier_run.py). Linux only: elsewhere the
program runs without the flag.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def main(argv: list[str]) -> None:
    pidfile = None
    if len(argv) > 1 and argv[0] == "--pidfile":
        pidfile, argv = argv[1], argv[2:]
    if not argv:
        sys.exit("usage: parent_death.py [--pidfile PATH] PROGRAM [ARGS...]")
    if sys.platform.startswith("linux"):
        parent = os.getppid()
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
            sys.exit(f"prctl(PR_SET_PDEATHSIG): {os.strerror(ctypes.get_errno())}")
        # The parent may have died before the flag was set: then no signal comes.
        if os.getppid() != parent:
            sys.exit("parent_death.py: the parent is gone, not starting")
    if pidfile:
        with open(pidfile, "w") as file:
            file.write(f"{os.getpid()}\n")
    os.execvp(argv[0], argv)  # noqa: S606 - supervisord's command, as configured


if __name__ == "__main__":
    main(sys.argv[1:])
