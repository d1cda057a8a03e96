"""Health checks for /health/: database, broker, worker heartbeat, AWS; and, for staff, what
the periodic sweeps could not handle lately.

Written here rather than with django-health-check: its JSON answers 500 (not 503) and has
no public/staff split, and its Celery check pings workers over the broadcast channel and
needs a result backend, which this project does not run. A heartbeat is also the better
proof: beat sent it, the broker carried it and a worker ran it.

The heartbeat is a timestamp in a file under VAR_DIR without REDIS_URL (one machine, like
the filesystem broker) and a Redis key with it (shared by every machine).
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import boto3
from botocore.config import Config
from django.conf import settings
from django.db import connection
from django.utils import timezone

from portal.celery import app as celery_app
from transfers import aws
from transfers.models import SweepFailure

HEARTBEAT_KEY = "transfer-portal:heartbeat"
TIMEOUT = 2.0  # seconds, for every network check


@dataclass
class Result:
    name: str
    ok: bool
    detail: str
    ms: float

    def as_dict(self) -> dict:
        return {"ok": self.ok, "detail": self.detail, "ms": round(self.ms, 1)}


# ----------------------------------------------------------------------------- heartbeat


def _heartbeat_file() -> Path:
    return Path(settings.VAR_DIR) / "heartbeat"


def _redis():
    import redis

    return redis.Redis.from_url(
        settings.REDIS_URL, socket_timeout=TIMEOUT, socket_connect_timeout=TIMEOUT
    )


def record_heartbeat(now: float | None = None) -> None:
    stamp = f"{time.time() if now is None else now:.3f}"
    if settings.REDIS_URL:
        _redis().set(HEARTBEAT_KEY, stamp, ex=24 * 3600)
        return
    # Write then rename: a reader never sees half a timestamp.
    path = _heartbeat_file()
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".heartbeat-")
    with os.fdopen(fd, "w") as out:
        out.write(stamp)
    os.replace(tmp, path)


def last_heartbeat() -> float | None:
    if settings.REDIS_URL:
        value = _redis().get(HEARTBEAT_KEY)
    else:
        try:
            value = _heartbeat_file().read_text()
        except FileNotFoundError:
            value = None
    return float(value) if value else None


# ----------------------------------------------------------------------------- checks


def check_database() -> str:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()
    return connection.vendor


def check_broker() -> str:
    url = celery_app.conf.broker_url or ""
    if url.startswith("filesystem://"):
        # kombu's filesystem transport "connects" to anything: check its folders instead.
        options = celery_app.conf.broker_transport_options or {}
        for key in ("data_folder_in", "data_folder_out", "control_folder"):
            folder = options.get(key)
            if folder and not (os.path.isdir(folder) and os.access(folder, os.W_OK | os.X_OK)):
                raise RuntimeError(f"broker folder {key} is missing or not writable")
        return "filesystem"
    with celery_app.connection_for_write() as conn:
        conn.ensure_connection(max_retries=1, interval_start=0, timeout=TIMEOUT)
        return conn.as_uri()  # the password masked


def check_worker() -> str:
    last = last_heartbeat()
    if last is None:
        raise RuntimeError("no heartbeat yet: is a worker and beat running?")
    age = time.time() - last
    if age > settings.HEARTBEAT_MAX_AGE:
        raise RuntimeError(f"last heartbeat {age:.0f} s ago (limit {settings.HEARTBEAT_MAX_AGE})")
    return f"last heartbeat {age:.0f} s ago"


def check_aws() -> str:
    """The portal's own credentials reach STS (GetCallerIdentity needs no IAM permission).

    A new client each time (a few milliseconds): credentials and endpoint are read afresh."""
    sts = boto3.client(
        "sts",
        region_name="us-east-1",
        endpoint_url=settings.AWS_ENDPOINT_URL,
        config=Config(connect_timeout=TIMEOUT, read_timeout=TIMEOUT, retries={"max_attempts": 1}),
    )
    try:
        identity = aws.call(sts, "get_caller_identity")
    except aws.AwsError as exc:
        raise RuntimeError(exc.user_message) from None
    return f"account {identity['Account']}"


CHECKS: dict[str, Callable[[], str]] = {
    "database": check_database,
    "broker": check_broker,
    "worker": check_worker,
    "aws": check_aws,
}


def run_checks() -> list[Result]:
    results = []
    for name, check in CHECKS.items():
        start = time.perf_counter()
        try:
            detail, ok = check(), True
        except Exception as exc:  # a health check reports every failure, it never raises
            detail, ok = f"{type(exc).__name__}: {exc}", False
        results.append(Result(name, ok, detail, (time.perf_counter() - start) * 1000))
    return results


# ----------------------------------------------------------------------------- sweeps

RECENT_FAILURES = timedelta(hours=1)


def recent_sweep_failures(limit: int = 20) -> list[dict]:
    """What the periodic sweeps could not handle in the last hour, latest first: for staff
    (errors name transfers and accounts). Not a check: one bad transfer does not make the
    portal unhealthy, and the sweeps went on with the others."""
    since = timezone.now() - RECENT_FAILURES
    try:
        rows = list(SweepFailure.objects.filter(last_at__gte=since).order_by("-last_at")[:limit])
    except Exception as exc:  # the database check says why
        return [{"sweep": "", "subject": "", "error": f"cannot read: {type(exc).__name__}"}]
    return [
        {
            "sweep": row.sweep,
            "subject": row.subject,
            "error": row.error,
            "count": row.count,
            "last_at": row.last_at.isoformat(),
        }
        for row in rows
    ]
