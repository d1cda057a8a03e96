"""Shared by the benchmarks: a throwaway database, the stand-in in a subprocess, percentiles.

Nothing here touches ./var or a real database: SQLite goes to a temporary directory, and
with ``DATABASE_URL`` set to PostgreSQL a dedicated database (``bench_<label>_<random>``;
``BENCH_DATABASE_PREFIX`` replaces ``bench`` where several checkouts share one server) is
created on that server and dropped at the end. Import this before anything Django.
"""

from __future__ import annotations

import atexit
import contextlib
import math
import os
import platform
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
from collections.abc import Iterator, Sequence
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# The stand-in plays AWS for every client the portal makes; these keys only exist there.
STANDIN_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


# --------------------------------------------------------------------------- statistics


def percentile(values: Sequence[float], p: float) -> float:
    """Linear interpolation between closest ranks (numpy's default)."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = (len(ordered) - 1) * p / 100
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def ms(seconds: float) -> str:
    return f"{seconds * 1000:,.1f}"


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A plain-text table, first column left-aligned, the others right-aligned."""
    cells = [[str(h) for h in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]

    def line(row: Sequence[str]) -> str:
        return "  ".join(
            c.ljust(w) if i == 0 else c.rjust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=True))
        ).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(cells[0]), rule, *(line(r) for r in cells[1:])])


def machine() -> str:
    return (
        f"{platform.system()} {platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}"
    )


def load() -> str:
    """The 1-minute load average: other work on the machine skews every figure."""
    return f"{os.getloadavg()[0]:.1f}"


# --------------------------------------------------------------------------- database


class Database:
    """A throwaway database for Django, chosen from ``DATABASE_URL`` (SQLite when unset)."""

    def __init__(self, label: str, keep: bool = False, reuse: str | None = None) -> None:
        """keep: leave the database in place at the end (its URL is printed) for a later
        run with reuse=that URL, which measures it again without loading it again."""
        self.tmp = Path(tempfile.mkdtemp(prefix=f"bench-{label}-"))
        self.pg_admin_url: str | None = None
        self.pg_name: str | None = None
        self.keep = keep or bool(reuse)
        self.reused = bool(reuse)
        given = reuse or os.environ.get("DATABASE_URL", "")
        if reuse:
            self.url = reuse
            self.vendor = "postgresql" if reuse.startswith("postgres") else "sqlite"
            if self.vendor == "sqlite":
                self.tmp = Path(reuse.removeprefix("sqlite:///")).parent
        elif given.startswith(("postgres://", "postgresql://")):
            parts = urllib.parse.urlsplit(given)
            prefix = os.environ.get("BENCH_DATABASE_PREFIX", "bench")
            self.pg_name = f"{prefix}_{label}_{secrets.token_hex(3)}"
            self.pg_admin_url = urllib.parse.urlunsplit(parts._replace(path="/postgres"))
            self.url = urllib.parse.urlunsplit(parts._replace(path=f"/{self.pg_name}"))
            self.vendor = "postgresql"
        elif given and not given.startswith("sqlite"):
            raise SystemExit(f"DATABASE_URL: only sqlite and postgres are supported: {given}")
        else:
            self.url = f"sqlite:///{self.tmp / 'bench.sqlite3'}"
            self.vendor = "sqlite"
        self._cleaned = False
        atexit.register(self.cleanup)

    def describe(self) -> str:
        if self.reused:
            return f"{'PostgreSQL' if self.vendor == 'postgresql' else 'SQLite (WAL)'}, {self.url}"
        if self.vendor == "postgresql":
            return f"PostgreSQL, throwaway database {self.pg_name}"
        return "SQLite (WAL), throwaway file in a temporary directory"

    def setup_django(self) -> None:
        """Create the database, point Django at it, migrate."""
        if self.pg_name and not self.reused:
            self._pg_admin(f'CREATE DATABASE "{self.pg_name}"')
        os.environ["DATABASE_URL"] = self.url
        os.environ["PORTAL_VAR_DIR"] = str(self.tmp / "var")
        os.environ["DJANGO_SETTINGS_MODULE"] = "portal.settings"
        os.environ.pop("REDIS_URL", None)
        import django
        from django.core.management import call_command

        django.setup()
        call_command("migrate", verbosity=0, interactive=False)

    def server_version(self) -> str:
        from django.db import connection

        with connection.cursor() as cursor:
            if self.vendor == "postgresql":
                cursor.execute("SHOW server_version")
                return "PostgreSQL " + cursor.fetchone()[0]
            cursor.execute("select sqlite_version()")
            return "SQLite " + cursor.fetchone()[0]

    def _pg_admin(self, sql: str) -> None:
        import psycopg

        with psycopg.connect(self.pg_admin_url, autocommit=True) as conn:
            conn.execute(sql)

    def cleanup(self) -> None:
        if self._cleaned:
            return
        self._cleaned = True
        if self.keep:
            print(f"Database kept: --reuse {self.url}", file=sys.stderr)
            return
        if self.pg_name:
            with contextlib.suppress(Exception):
                from django.db import connections

                connections.close_all()
            try:
                self._pg_admin(f'DROP DATABASE IF EXISTS "{self.pg_name}" WITH (FORCE)')
            except Exception as exc:  # noqa: BLE001 - report, never hide a leftover
                print(f"warning: could not drop database {self.pg_name}: {exc}", file=sys.stderr)
        shutil.rmtree(self.tmp, ignore_errors=True)


# --------------------------------------------------------------------------- stand-in


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


STANDIN_PIDS: dict[str, int] = {}  # the running stand-ins' process ids, by URL


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) of a process and its live descendants (a prefork pool's
    children), from /proc; 0 for a process that is gone."""
    tick = os.sysconf("SC_CLK_TCK")
    children: dict[int, list[int]] = {}
    times: dict[int, float] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # ended meanwhile
        # After the name: state, ppid, …; utime and stime are the 14th and 15th fields.
        children.setdefault(int(fields[1]), []).append(int(entry.name))
        times[int(entry.name)] = (int(fields[11]) + int(fields[12])) / tick
    total, todo = 0.0, [pid]
    while todo:
        current = todo.pop()
        total += times.get(current, 0.0)
        todo.extend(children.get(current, []))
    return total


@contextlib.contextmanager
def standin_process(command: Sequence[str] | None = None, timeout: float = 120) -> Iterator[str]:
    """Run the stand-in server in a subprocess on a free port; yields its URL.

    ``command`` (without the port) defaults to ``python -m standin.server``; it gets
    ``--port N`` appended. The werkzeug request log goes to /dev/null.
    """
    from standin.control import RemoteControl

    port = free_port()
    argv = list(command or [sys.executable, "-m", "standin.server"]) + ["--port", str(port)]
    env = {**os.environ, **STANDIN_ENV}
    proc = subprocess.Popen(  # noqa: S603 - our own interpreter and module
        argv,
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    STANDIN_PIDS[url] = proc.pid
    try:
        control = RemoteControl(url, timeout=5)
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"the stand-in exited with {proc.returncode}: {argv}")
            try:
                control.health()
                break
            except (OSError, RuntimeError):
                if time.monotonic() > deadline:
                    raise RuntimeError("the stand-in did not answer in time") from None
                time.sleep(0.2)
        yield url
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def ec_certificate_pem(name: str, not_before: datetime, not_after: datetime) -> str:
    """A self-signed certificate with a fresh P-256 key: well under a millisecond."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM).decode()


# --------------------------------------------------------------------------- processes

# The worker as production runs it: docs/deploy.md ("Processes") and deploy/entrypoint.sh,
# `celery -A portal worker --loglevel INFO --pool threads --concurrency 8`, one per core.
# The one place the benchmarks that measure "the documented worker settings" read it from:
# change it here when the documented settings change.
DOCUMENTED_WORKER_ARGS = ("--pool", "threads", "--concurrency", "8")


def documented_worker_args() -> list[str]:
    """The worker's arguments after ``celery -A portal worker`` as docs/deploy.md runs it;
    ``WORKER_CONCURRENCY`` sets the threads per worker, as in the container
    (deploy/entrypoint.sh)."""
    args = list(DOCUMENTED_WORKER_ARGS)
    if os.environ.get("WORKER_CONCURRENCY"):
        args[args.index("--concurrency") + 1] = os.environ["WORKER_CONCURRENCY"]
    return args


def describe_worker_args(args: Sequence[str]) -> str:
    """``threads pool, concurrency 8`` for ``--pool threads --concurrency 8`` (Celery's
    defaults, prefork and one per core, for what is not given)."""
    given = dict(zip(args[::2], args[1::2], strict=False))
    pool = given.get("--pool", given.get("-P", "prefork"))
    concurrency = given.get("--concurrency", given.get("-c", "one per core"))
    return f"{pool} pool, concurrency {concurrency}"


def pid_cpu(pid: int) -> float | None:
    """CPU seconds of one process alone (utime + stime), None when it is gone: cheaper than
    cpu_seconds (one file, not the whole of /proc) for many processes at a time."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Workers:
    """Celery worker processes, each in its own session (Ctrl-C reaches only us; we stop
    them). Logs go to the temporary directory and are shown when something goes wrong."""

    def __init__(self, env: dict, logs: Path) -> None:
        self.env, self.logs = env, logs
        self.procs: list[tuple[subprocess.Popen, Path]] = []

    def start(self, count: int, concurrency: int) -> None:
        for i in range(count):
            log = self.logs / f"worker{i + 1}.log"
            proc = subprocess.Popen(  # noqa: S603 - our interpreter, celery's module
                [
                    sys.executable,
                    "-m",
                    "celery",
                    "-A",
                    "portal",
                    "worker",
                    "--pool",
                    "threads",
                    "--concurrency",
                    str(concurrency),
                    "--loglevel",
                    "INFO",
                    "--hostname",
                    f"bench{i + 1}@%h",
                    "--without-heartbeat",
                    "--without-gossip",
                    "--without-mingle",
                ],
                cwd=ROOT,
                env=self.env,
                stdout=log.open("wb"),
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            self.procs.append((proc, log))

    def start_args(self, args: Sequence[str]) -> None:
        """One worker started with ``args`` after ``celery`` (``-A portal worker …``)."""
        log = self.logs / f"worker{len(self.worker_logs()) + 1}.log"
        proc = subprocess.Popen(  # noqa: S603 - our interpreter, celery's module
            [sys.executable, "-m", "celery", *args],
            cwd=ROOT,
            env=self.env,
            stdout=log.open("wb"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.procs.append((proc, log))

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        for proc, log in self.procs:
            while "ready." not in log.read_text(errors="replace"):
                if proc.poll() is not None:
                    raise RuntimeError(f"a worker exited with {proc.returncode}:\n{tail(log)}")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"a worker did not start in time:\n{tail(log)}")
                time.sleep(0.2)

    def start_beat(self) -> None:
        """celery beat, as production runs it: the reconciler (re-sends stalled work,
        restarts a feeder that died) every RECONCILE_SECONDS, the sync and expiry sweeps."""
        log = self.logs / "beat.log"
        proc = subprocess.Popen(  # noqa: S603 - our interpreter, celery's module
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "portal",
                "beat",
                "--loglevel",
                "INFO",
                "--schedule",
                str(self.logs / "celerybeat-schedule"),
            ],
            cwd=ROOT,
            env=self.env,
            stdout=log.open("wb"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.procs.append((proc, log))

    def worker_logs(self) -> list[Path]:
        return [log for _, log in self.procs if log.name.startswith("worker")]

    def alive(self) -> bool:
        return all(proc.poll() is None for proc, _ in self.procs)

    def tails(self) -> str:
        return "\n".join(f"--- {log.name}\n{tail(log)}" for _, log in self.procs)

    def stop(self) -> None:
        for proc, _ in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 10
        for proc, _ in self.procs:
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.procs.clear()


def terminate(signum, frame):  # noqa: ARG001 - signal handler signature
    """SIGTERM as Ctrl-C, so a benchmark stopped either way stops its workers."""
    raise KeyboardInterrupt


def tail(log: Path, lines: int = 30) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def _terminate(signum, frame):  # noqa: ARG001 - signal handler signature
    raise KeyboardInterrupt


def setup_django(db: Database, standin_url: str) -> None:
    """Point Django (and, through the environment, the workers) at the throwaway database,
    the broker and the stand-in; migrate."""
    if db.pg_name:
        db._pg_admin(f'CREATE DATABASE "{db.pg_name}"')  # noqa: SLF001 - our own helper
    os.environ.update(STANDIN_ENV)
    os.environ.pop("AWS_PROFILE", None)
    os.environ.pop("AWS_SESSION_TOKEN", None)
    os.environ["AWS_ENDPOINT_URL"] = standin_url
    os.environ["DATABASE_URL"] = db.url
    os.environ["PORTAL_VAR_DIR"] = str(db.tmp / "var")
    os.environ["DJANGO_SETTINGS_MODULE"] = "portal.settings"
    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", verbosity=0, interactive=False)
