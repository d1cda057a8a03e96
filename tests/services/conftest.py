"""The service tier: PostgreSQL, Redis, a real Celery worker process and the stand-in server.

`.ci/run` runs it with DATABASE_URL and REDIS_URL set. It fails, never skips, when they are
missing or the services do not answer.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from django.conf import settings as django_settings

REPO = Path(__file__).resolve().parents[2]


def pytest_collection_modifyitems(items):
    for item in items:
        if "tests/services/" in str(item.fspath):
            item.add_marker(pytest.mark.services)


@pytest.fixture(scope="session", autouse=True)
def _services_are_there(django_db_setup, django_db_blocker):
    missing = [name for name in ("DATABASE_URL", "REDIS_URL") if not os.environ.get(name)]
    if missing:
        pytest.fail(f"The service tier needs {' and '.join(missing)} (see .ci/run).")
    with django_db_blocker.unblock():
        from django.db import connection

        if connection.vendor != "postgresql":
            pytest.fail(f"DATABASE_URL must point at PostgreSQL, not {connection.vendor}.")
    import redis

    try:
        redis.Redis.from_url(os.environ["REDIS_URL"], socket_timeout=3).ping()
    except redis.RedisError as exc:
        pytest.fail(f"Redis at REDIS_URL does not answer: {exc}")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(
    check: Callable[[], object], timeout: float, what: str | Callable[[], str]
) -> object:
    """``what``: a message, or a function giving it when the time is up (logs then)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(0.25)
    raise AssertionError(
        f"timed out after {timeout:.0f} s waiting for {what() if callable(what) else what}"
    )


class Process:
    def __init__(self, name: str, args: list[str], env: dict, log: Path) -> None:
        self.name, self.log = name, log
        self.handle = subprocess.Popen(  # noqa: S603
            args,
            env=env,
            cwd=REPO,
            stdout=log.open("wb"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def stop(self) -> None:
        if self.handle.poll() is None:
            self.handle.terminate()
            try:
                self.handle.wait(10)
            except subprocess.TimeoutExpired:
                self.handle.kill()
                self.handle.wait(5)

    def kill(self) -> None:
        self.handle.kill()
        self.handle.wait(5)

    def kill_group(self) -> None:
        """SIGKILL to the process and every child (gunicorn's workers): a machine losing
        the process, with no chance to finish or clean up anything."""
        os.killpg(self.handle.pid, signal.SIGKILL)
        self.handle.wait(5)

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


@pytest.fixture(scope="session")
def standin_url(tmp_path_factory) -> Iterator[str]:
    port = free_port()
    env = {**os.environ, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
    server = Process(
        "standin",
        [sys.executable, "-m", "standin.server", "--host", "127.0.0.1", "--port", str(port)],
        env,
        tmp_path_factory.mktemp("standin") / "standin.log",
    )
    url = f"http://127.0.0.1:{port}"

    def up() -> bool:
        try:
            urllib.request.urlopen(f"{url}/_standin/health", timeout=1)  # noqa: S310
            return True
        except OSError:
            return server.handle.poll() is not None and pytest.fail(server.tail())

    wait_until(up, 30, "the stand-in server")
    yield url
    server.stop()


@pytest.fixture
def remote(standin_url):
    from standin.control import RemoteControl

    control = RemoteControl(standin_url)
    control.reset()
    return control


def _database_url() -> str:
    db = django_settings.DATABASES["default"]
    user = db.get("USER") or "postgres"
    password = f":{db['PASSWORD']}" if db.get("PASSWORD") else ""
    host, port = db.get("HOST") or "127.0.0.1", db.get("PORT") or 5432
    return f"postgres://{user}{password}@{host}:{port}/{db['NAME']}"


@pytest.fixture
def services_env(settings, standin_url, monkeypatch, tmp_path) -> dict:
    """This process and the workers it starts agree on database, broker and AWS."""
    import redis

    redis.Redis.from_url(os.environ["REDIS_URL"]).flushdb()
    settings.AWS_ENDPOINT_URL = standin_url
    settings.AWS_MAX_ATTEMPTS = 3
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    return {
        **os.environ,
        "DATABASE_URL": _database_url(),
        "AWS_ENDPOINT_URL": standin_url,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "PORTAL_VAR_DIR": str(tmp_path / "var"),
        # Workers decrypt what this process encrypted (webhook secrets): the same keys.
        "FIELD_ENCRYPTION_KEYS": ",".join(django_settings.FIELD_ENCRYPTION_KEYS),
        "TRANSFER_STALL_MINUTES": "1",
        # Leases renewed every 10 s while a worker works; a killed worker's free after 30 s.
        "TRANSFER_LEASE_SECONDS": "30",
    }


def worker_command(name: str, concurrency: int) -> list[str]:
    """``celery worker`` as production runs it, with a thread pool."""
    return [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "portal",
        "worker",
        "--loglevel",
        "INFO",
        "--concurrency",
        str(concurrency),
        "--pool",
        "threads",
        "--hostname",
        f"{name}@%h",
        "--without-heartbeat",
        "--without-gossip",
        "--without-mingle",
    ]


BEAT_COMMAND = [sys.executable, "-m", "celery", "-A", "portal", "beat", "--loglevel", "INFO"]


@pytest.fixture
def start_worker(services_env, tmp_path) -> Iterator[Callable[..., Process]]:
    started: list[Process] = []

    def start(name: str = "w1", concurrency: int = 2, env: dict | None = None) -> Process:
        process = Process(
            name,
            worker_command(name, concurrency),
            {**services_env, **(env or {})},
            tmp_path / f"{name}.log",
        )
        started.append(process)
        return process

    yield start
    for process in started:
        process.stop()


@pytest.fixture
def start_beat(services_env, tmp_path) -> Iterator[Callable[..., Process]]:
    """``celery beat`` as production runs it (exactly one), the reconciler every 5 s."""
    started: list[Process] = []

    def start(env: dict | None = None) -> Process:
        process = Process(
            "beat",
            BEAT_COMMAND,
            {**services_env, "RECONCILE_SECONDS": "5", **(env or {})},
            tmp_path / "beat.log",
        )
        started.append(process)
        return process

    yield start
    for process in started:
        process.stop()


# --------------------------------------------------------------------------- servers of our own
# The fault tests stop and start PostgreSQL and Redis. They do it to servers they start
# themselves on free loopback ports, never to the machine's (DATABASE_URL, REDIS_URL), which
# other tests and other checkouts share.


def _postgres_bin() -> Path:
    """PG_BIN, or the newest PostgreSQL Debian installed (/usr/lib/postgresql/N/bin)."""
    if os.environ.get("PG_BIN"):
        return Path(os.environ["PG_BIN"])
    found = [
        p.parent
        for p in Path("/usr/lib/postgresql").glob("*/bin/pg_ctl")
        if p.parent.parent.name.isdigit()
    ]
    if not found:
        pytest.fail("No PostgreSQL server binaries (initdb, pg_ctl): set PG_BIN to their folder.")
    return max(found, key=lambda p: int(p.parent.name))


class OwnPostgres:
    """A PostgreSQL server in a temporary folder (initdb), started and stopped with pg_ctl.
    initdb refuses to run as root: as root, the folder belongs to ``postgres`` and the
    server runs as that user."""

    TEMPLATE = "portal_template"

    def __init__(self, port: int) -> None:
        self.bin, self.port = _postgres_bin(), port
        # Not under pytest's tmp_path: that is private to root, and the server's user must
        # reach its folder.
        self.root = Path(tempfile.mkdtemp(prefix="faults-postgres-"))
        self.data, self.log = self.root / "data", self.root / "server.log"
        self.as_user: list[str] = []
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres", "postgres")
            self.as_user = ["runuser", "-u", "postgres", "--"]
        self._run("initdb", "-D", self.data, "-U", "postgres", "--auth=trust", "-E", "UTF8")
        with (self.data / "postgresql.conf").open("a") as conf:
            # Loopback only, its own port and socket folder; durability is not under test.
            conf.write(
                f"listen_addresses = '127.0.0.1'\nport = {port}\n"
                f"unix_socket_directories = '{self.root}'\n"
                "fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n"
            )
        self.migrated = False

    def _run(self, program: str, *args) -> None:
        command = [*self.as_user, str(self.bin / program), *map(str, args)]
        done = subprocess.run(command, capture_output=True, text=True, timeout=120)  # noqa: S603
        if done.returncode:
            log = self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""
            pytest.fail(f"{' '.join(command)}: {done.stdout}{done.stderr}\n{log}")

    def start(self) -> None:
        self._run("pg_ctl", "-D", self.data, "-l", self.log, "-w", "-t", "60", "start")

    def stop(self) -> None:
        """A clean, fast shutdown: every session is ended, open transactions roll back."""
        self._run("pg_ctl", "-D", self.data, "-m", "fast", "-w", "-t", "60", "stop")

    def url(self, name: str) -> str:
        return f"postgres://postgres@127.0.0.1:{self.port}/{name}"

    def execute(self, sql: str) -> None:
        import psycopg

        with psycopg.connect(self.url("postgres"), autocommit=True) as conn:
            conn.execute(sql)

    def new_database(self, name: str) -> str:
        """A migrated database ``name`` (a copy of a template migrated once); its URL."""
        if not self.migrated:
            self.execute(f'CREATE DATABASE "{self.TEMPLATE}"')
            env = {**os.environ, "DATABASE_URL": self.url(self.TEMPLATE)}
            env.pop("REDIS_URL", None)
            env["PORTAL_VAR_DIR"] = str(self.root / "migrate-var")  # removed with the server
            done = subprocess.run(  # noqa: S603
                [sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"],
                cwd=REPO,
                env=env,
                capture_output=True,
                text=True,
                timeout=600,
            )
            if done.returncode:
                pytest.fail(f"migrate: {done.stdout}{done.stderr}")
            self.migrated = True
        self.execute(f'CREATE DATABASE "{name}" TEMPLATE "{self.TEMPLATE}"')
        return self.url(name)

    def destroy(self) -> None:
        if (self.data / "postmaster.pid").exists():
            self.stop()
        shutil.rmtree(self.root, ignore_errors=True)


class OwnRedis:
    """redis-server on a free loopback port, keeping nothing on disk: stopped, it loses
    every queued message (the worst a restart can do)."""

    def __init__(self, port: int, folder: Path) -> None:
        self.port, self.folder = port, folder
        self.process: Process | None = None
        self.starts = 0

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def start(self) -> None:
        self.starts += 1
        self.process = Process(
            "redis",
            [
                shutil.which("redis-server") or "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.folder),
            ],
            dict(os.environ),
            self.folder / f"redis-{self.starts}.log",
        )
        import redis

        def up() -> bool:
            try:
                return bool(redis.Redis.from_url(self.url(), socket_timeout=1).ping())
            except redis.RedisError:
                return self.process.handle.poll() is not None and pytest.fail(self.process.tail())

        wait_until(up, 30, "our redis-server")

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()
            self.process = None


@pytest.fixture(scope="session")
def own_postgres() -> Iterator[OwnPostgres]:
    server = OwnPostgres(free_port())
    server.start()
    yield server
    server.destroy()


@pytest.fixture(scope="session")
def own_redis(tmp_path_factory) -> Iterator[OwnRedis]:
    if not shutil.which("redis-server"):
        pytest.fail("redis-server is not on the PATH (apt-get install redis-server).")
    server = OwnRedis(free_port(), tmp_path_factory.mktemp("own-redis"))
    server.start()
    yield server
    server.stop()
