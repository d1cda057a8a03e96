"""The service tier: PostgreSQL, Redis, a real Celery worker process and the stand-in server.

`.ci/run` runs it with DATABASE_URL and REDIS_URL set. It fails, never skips, when they are
missing or the services do not answer.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
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


def wait_until(check: Callable[[], object], timeout: float, what: str) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(0.25)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


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


@pytest.fixture
def start_worker(services_env, tmp_path) -> Iterator[Callable[..., Process]]:
    started: list[Process] = []

    def start(name: str = "w1", concurrency: int = 2, env: dict | None = None) -> Process:
        process = Process(
            name,
            [
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
            ],
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
            [sys.executable, "-m", "celery", "-A", "portal", "beat", "--loglevel", "INFO"],
            {**services_env, "RECONCILE_SECONDS": "5", **(env or {})},
            tmp_path / "beat.log",
        )
        started.append(process)
        return process

    yield start
    for process in started:
        process.stop()
