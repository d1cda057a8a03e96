"""Faults the production stack must survive: PostgreSQL restarted, Redis restarted, the web
process killed while a person approves, each during a 1,000-certificate batch at R = 10
TransferCertificate calls a second.

The stack is production's: gunicorn (two workers), two Celery workers, beat, a PostgreSQL
and a Redis, and the stand-in playing AWS with the account's ceiling of R. The PostgreSQL
and the redis-server are the test's own (tests/services/conftest.py: initdb and pg_ctl,
redis-server on free loopback ports), so stopping them stops nothing anyone else uses.
People act through the web: the requester asks for a batch, the approver approves it
(password and second factor), both keep the batch page open.

One stack serves the three scenarios, one after the other, each with its own batch of
1,000 certificates (the stand-in holds 3,000; the inventory is synced once): starting it
costs a minute or more, each batch at least N / R = 100 s.

Each scenario ends with: every transfer of its batch pending acceptance, each certificate's
TransferCertificate answered "ok" exactly once by the stand-in (nothing lost, nothing done
twice); beat still sweeping (the reconciler ran after the services were back, /health/ says
ok); and no 5xx on any page or API call once the services were back.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from datetime import datetime
from pathlib import Path

import dj_database_url
import pytest
import requests
from django.conf import settings as django_settings
from django.contrib.auth.hashers import PBKDF2PasswordHasher
from django.contrib.auth.models import User
from django.db import DatabaseError, connections
from django.db.models import Count
from django_otp.oath import TOTP

from standin.control import RemoteControl
from tests.conftest import SOURCE, TARGET, make_account
from tests.services.conftest import (
    BEAT_COMMAND,
    OwnPostgres,
    OwnRedis,
    Process,
    free_port,
    wait_until,
    worker_command,
)
from transfers import aws, inventory
from transfers.models import (
    AccountGrant,
    AuthenticatorApp,
    AwsAccount,
    RateBucket,
    Role,
    SyncRun,
    Transfer,
    TransferBatch,
)

BENCH = Path(__file__).resolve().parents[2] / "bench"
sys.path.insert(0, str(BENCH))

from _support import standin_process  # noqa: E402 - after the path

N = 1000  # certificates in each batch
R = 10.0  # TransferCertificate calls a second the account may make (the stand-in's ceiling)
SCENARIOS = 3
REGION = "us-east-1"
PASSWORD = "correct horse battery staple"
DOWN_SECONDS = 20
STARTED = time.monotonic()


def note(what: str) -> None:
    """A progress line: pytest shows them with a failure (or with -s)."""
    print(f"{time.monotonic() - STARTED:7.1f} s  {what}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- the database


@contextmanager
def database_at(url: str) -> Iterator[None]:
    """This process's ORM on another database for a while (Django's test runner swaps in
    its test database in the same way)."""
    connection = connections["default"]
    saved = dict(connection.settings_dict)
    parsed = dj_database_url.parse(url)
    connection.close()
    connection.settings_dict.update({k: parsed[k] for k in ("NAME", "USER", "HOST", "PORT")})
    connection.settings_dict["PASSWORD"] = parsed.get("PASSWORD", "")
    try:
        yield
    finally:
        connection.close()
        connection.settings_dict.clear()
        connection.settings_dict.update(saved)


def db_read(query, default=None):
    """``query()``, or ``default`` while the database is away (the connection is dropped so
    the next read opens a new one)."""
    try:
        return query()
    except DatabaseError:
        connections["default"].close()
        return default


# --------------------------------------------------------------------------- people


class Person:
    """Someone at a browser: a session with the web process; every answer's status is kept
    with the time it came."""

    def __init__(self, base: str, username: str) -> None:
        self.base, self.username = base, username
        self.http = requests.Session()
        self.seen: list[tuple[float, str, int]] = []

    def get(self, path: str) -> requests.Response:
        answer = self.http.get(self.base + path, timeout=60)
        self.seen.append((time.time(), path, answer.status_code))
        return answer

    def post(self, path: str, data: dict) -> requests.Response:
        if "csrftoken" not in self.http.cookies:
            self.get("/login/")
        form = {"csrfmiddlewaretoken": self.http.cookies.get("csrftoken", ""), **data}
        answer = self.http.post(self.base + path, data=form, timeout=120)
        self.seen.append((time.time(), f"POST {path}", answer.status_code))
        return answer

    def log_in(self, device: AuthenticatorApp | None = None) -> None:
        answer = self.post("/login/", {"username": self.username, "password": PASSWORD})
        if device is not None:
            totp = TOTP(device.bin_key, device.step, device.t0, device.digits, device.drift)
            code = f"{totp.token():0{device.digits}d}"
            answer = self.post("/login/verify/", {"code": code, "next": "/"})
        assert answer.url == f"{self.base}/", (answer.url, answer.text[:500])

    def failures_since(self, since: float) -> list[tuple[str, int]]:
        return [(p, status) for when, p, status in self.seen if when > since and status >= 500]


def person(account: AwsAccount, username: str, role: str) -> User:
    user = User.objects.create_user(username, f"{username}@example.com")
    # The web process checks passwords with production's hashers, not the tests' MD5.
    user.password = PBKDF2PasswordHasher().encode(PASSWORD, secrets.token_hex(8))
    user.save(update_fields=["password"])
    AccountGrant.objects.create(account=account, user=user, role=role)
    return user


# --------------------------------------------------------------------------- the stack


class Stack:
    """Web, two workers and beat on our own PostgreSQL and Redis, the stand-in, and the
    two people."""

    def __init__(self, tmp: Path, postgres: OwnPostgres, redis: OwnRedis, db: str, aws: str):
        self.tmp, self.postgres, self.redis, self.db_url, self.aws = tmp, postgres, redis, db, aws
        self.web_url = f"http://127.0.0.1:{free_port()}"
        self.env = {
            **os.environ,
            "DATABASE_URL": db,
            "REDIS_URL": redis.url(),
            "AWS_ENDPOINT_URL": aws,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": REGION,
            "PORTAL_VAR_DIR": str(tmp / "var"),
            "FIELD_ENCRYPTION_KEYS": ",".join(django_settings.FIELD_ENCRYPTION_KEYS),
            # As in production: every process the same (sessions outlive a web restart).
            "SECRET_KEY": secrets.token_urlsafe(50),
            "DEBUG": "false",
            # The sweeps, quicker than production's defaults (the shortest allowed stall).
            "TRANSFER_STALL_MINUTES": "1",
            "TRANSFER_LEASE_SECONDS": "30",
            "RECONCILE_SECONDS": "10",
            "HEARTBEAT_SECONDS": "5",
            "HEARTBEAT_MAX_AGE": "30",
        }
        self.web: Process | None = None
        self.processes: list[Process] = []
        self.batches = 0

    # processes

    def start_web(self) -> None:
        port = self.web_url.rsplit(":", 1)[1]
        self.web = self._start(
            f"web-{sum(p.name.startswith('web') for p in self.processes) + 1}",
            [
                sys.executable,
                "-m",
                "gunicorn",
                "portal.wsgi",
                "--bind",
                f"127.0.0.1:{port}",
                "--workers",
                "2",
                "--threads",
                "4",
                "--timeout",
                "120",
                "--access-logfile",
                "-",
            ],
        )

        def up() -> bool:
            try:
                requests.get(f"{self.web_url}/login/", timeout=10)
                return True
            except requests.RequestException:
                return self.web.handle.poll() is not None and pytest.fail(self.web.tail())

        wait_until(up, 60, "the web process")

    def start_celery(self) -> None:
        for name in ("w1", "w2"):
            self._start(name, worker_command(name, 4))
        self._start("beat", BEAT_COMMAND)

    def _start(self, name: str, command: list[str]) -> Process:
        process = Process(name, command, self.env, self.tmp / f"{name}.log")
        self.processes.append(process)
        return process

    def heal(self) -> None:
        """Whatever an earlier scenario left stopped (it failed half-way), started again."""
        if not (self.postgres.data / "postmaster.pid").exists():
            self.postgres.start()
        if self.redis.process is None:
            self.redis.start()
        if self.web.handle.poll() is not None:
            self.start_web()

    def stop(self) -> None:
        running = [p for p in self.processes if p.handle.poll() is None]
        for process in running:  # all at once: the workers' warm shutdowns overlap
            process.handle.terminate()
        for process in running:
            process.stop()

    def logs(self) -> str:
        running = [p for p in self.processes if p.handle.poll() is None]
        return "\n".join(f"--- {p.name}\n{p.tail(15)}" for p in running)

    def reconciled_since(self, since: datetime) -> int:
        """Reconciler runs (beat's "reconcile" task) the workers finished after ``since``."""
        done = 0
        for process in self.processes:
            if process.name in ("w1", "w2"):
                for stamp in re.findall(
                    r"^(\S+ \S+) INFO celery\.app\.trace .*Task transfers\.tasks\.reconcile\["
                    r"[^\]]+\] succeeded",
                    process.log.read_text(errors="replace"),
                    re.MULTILINE,
                ):
                    done += datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S,%f") > since
        return done

    # the world

    def set_up(self) -> None:
        source = make_account(SOURCE, "Fleet production")
        make_account(TARGET, "Acme devices")
        person(source, "requester", Role.REQUESTER)
        approver = person(source, "approver", Role.APPROVER)
        device = AuthenticatorApp.objects.create(
            user=approver, name="phone", key=secrets.token_hex(20), confirmed=True
        )
        # The inventory sync is set-up: at the account's rate of 1000, then R from here on.
        note("syncing the inventory")
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(django_settings, "AWS_ENDPOINT_URL", self.aws)
            patch.setattr(django_settings, "AWS_MAX_ATTEMPTS", 3)
            for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
                patch.setenv(name, "testing")
            aws.clear_cache()
            run = inventory.sync_region(SyncRun.objects.create(account=source, region=REGION).pk)
        aws.clear_cache()
        assert run.status == SyncRun.Status.DONE, run.error
        AwsAccount.objects.filter(pk=source.pk).update(api_rate=R)
        RateBucket.objects.all().delete()
        self.ids = sorted(source.certificates.values_list("certificate_id", flat=True))
        assert len(self.ids) == SCENARIOS * N
        note("synced; starting workers, beat and web")
        self.start_celery()
        self.start_web()
        self.requester = Person(self.web_url, "requester")
        self.requester.log_in()
        self.approver = Person(self.web_url, "approver")
        self.approver.log_in(device)
        note("web up, people logged in")

    def request_batch(self) -> Batch:
        """The requester asks for a batch of the next N certificates, on the web."""
        ids = self.ids[self.batches * N : (self.batches + 1) * N]
        self.batches += 1
        answer = self.requester.post(
            "/batches/new/",
            {
                "target": TARGET,
                "message": "Fleet sold to Acme",
                "reason": "contract 22",
                "deactivate": "on",
                "detach_policies": "on",
                "detach_things": "on",
                "restore": "on",
                "ids": "\n".join(ids),
                "action": "submit",
            },
        )
        found = re.search(r"/batches/(\d+)/$", answer.url)
        assert answer.status_code == 200 and found, (answer.status_code, answer.url)
        batch = Batch(self, TransferBatch.objects.get(pk=int(found.group(1))), ids)
        assert batch.counts() == {Transfer.Status.REQUESTED: N}
        note(f"batch #{batch.row.pk} requested")
        return batch


class Batch:
    def __init__(self, stack: Stack, row: TransferBatch, ids: list[str]) -> None:
        self.stack, self.row, self.ids = stack, row, ids
        self.page = f"/batches/{row.pk}/"

    def approve(self) -> requests.Response:
        """The approver opens the batch and approves it."""
        self.stack.approver.get(self.page)
        return self.stack.approver.post(f"{self.page}approve/", {"comment": "ok"})

    def counts(self) -> dict[str, int]:
        return dict(
            self.row.transfers.values_list("status")
            .annotate(n=Count("pk"))
            .values_list("status", "n")
        )

    def pending(self) -> int:
        return db_read(lambda: self.counts().get(Transfer.Status.PENDING_ACCEPTANCE, 0), 0)


@pytest.fixture(scope="module")
def stack(own_postgres, own_redis, tmp_path_factory, django_db_blocker) -> Iterator[Stack]:
    import redis

    redis.Redis.from_url(own_redis.url()).flushall()
    db_url = own_postgres.new_database(f"faults_{secrets.token_hex(4)}")
    fleet = {
        "account": SOURCE,
        "region": REGION,
        "certificates": SCENARIOS * N,
        "policies": 1,  # one policy attached to each: detached, then transferred
        "thing_share": 0.0,
        "things_without_certificate": 0,
        "seed": 22,
    }
    seeded = [sys.executable, str(BENCH / "_seeded_standin.py"), "--fleet", json.dumps(fleet)]
    note("starting the stand-in")
    # The scenarios read this process's ORM on our own database, outside pytest-django's
    # per-test database (which it flushes after each test).
    with standin_process(seeded) as aws_url, django_db_blocker.unblock(), database_at(db_url):
        RemoteControl(aws_url).set_faults(rps_per_account=R, operations=["TransferCertificate"])
        running = Stack(tmp_path_factory.mktemp("stack"), own_postgres, own_redis, db_url, aws_url)
        try:
            running.set_up()
            yield running
        finally:
            running.stop()


@pytest.fixture
def batch(stack) -> Batch:
    stack.heal()
    return stack.request_batch()


# --------------------------------------------------------------------------- the checks


MAIN_PAGES = [
    "/",
    "/certificates/",
    "/transfers/",
    "/batches/",
    "/approvals/",
    "/incoming/",
    "/audit/",
    "/notices/",
    "/api/transfers/",
    "/api/certificates/",
    "/api/incoming/",
]


def finishes_intact(batch: Batch, back: float) -> None:
    """Wait for the batch while both people watch its page; then every check of the module
    docstring. ``back``: when the services were all back (time.time())."""
    stack = batch.stack
    people = (stack.requester, stack.approver)
    note(f"services back; {db_read(batch.counts)}")

    def done() -> bool:
        for someone in people:
            someone.get(batch.page)
        counts = db_read(batch.counts, {})
        unfinished = ("requested", *Transfer.Status.IN_FLIGHT)
        return bool(counts) and not any(counts.get(s) for s in unfinished)

    wait_until(done, 600, lambda: f"the batch to finish; {db_read(batch.counts)}\n{stack.logs()}")
    counts = batch.counts()
    note(f"batch finished: {counts}")
    assert counts == {Transfer.Status.PENDING_ACCEPTANCE: N}, [
        (t.pk, t.status, t.error_code, t.error_message)
        for t in batch.row.transfers.exclude(status=Transfer.Status.PENDING_ACCEPTANCE)[:5]
    ]
    per_cert = RemoteControl(stack.aws).calls()["certificates"].get("TransferCertificate", {})
    ok = {cid: per_cert.get(cid, {}).get("ok", 0) for cid in batch.ids}
    assert {cid: n for cid, n in ok.items() if n != 1} == {}, "not exactly once"

    # Beat still sweeps: the reconciler ran since, and /health/ (database, broker, a
    # heartbeat a worker ran lately, AWS) says ok.
    since = datetime.fromtimestamp(back)
    wait_until(lambda: stack.reconciled_since(since) >= 2, 60, lambda: f"a sweep\n{stack.logs()}")
    wait_until(
        lambda: stack.approver.get("/health/").status_code == 200,
        60,
        lambda: f"/health/ ok: {stack.approver.get('/health/').text}",
    )
    some = batch.row.transfers.order_by("?").first().pk
    for path in [*MAIN_PAGES, f"/transfers/{some}/", f"/api/transfers/{some}/"]:
        for someone in people:
            someone.get(path)
    failures = [f for someone in people for f in someone.failures_since(back)]
    assert failures == [], f"5xx after the services were back: {failures}"
    for someone in people:  # still logged in, shown the batch
        page = someone.get(batch.page)
        assert page.status_code == 200 and page.url.endswith(batch.page), page.url


def mid_batch(batch: Batch) -> None:
    """Approved, and a fifth of the batch pending: the rest is queued, in a worker, or (on
    a slow machine) still being approved."""
    answer = batch.approve()
    assert answer.status_code == 200, answer.status_code
    wait_until(
        lambda: batch.pending() >= N // 5,
        240,
        lambda: f"{N // 5} pending; {db_read(batch.counts)}\n{batch.stack.logs()}",
    )
    note(f"mid-batch: {batch.counts()}")
    assert batch.pending() < N // 2, batch.counts()


def watch_while_down(batch: Batch, seconds: float) -> None:
    """The people keep the batch page open while a service is away (what they see then is
    not judged: the web may well answer 500 without its database)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for someone in (batch.stack.requester, batch.stack.approver):
            with suppress(requests.RequestException):
                someone.get(batch.page)
        time.sleep(2)


# --------------------------------------------------------------------------- scenarios


def test_postgresql_restarted_mid_batch_loses_and_repeats_nothing(stack, batch):
    mid_batch(batch)
    stack.postgres.stop()
    watch_while_down(batch, DOWN_SECONDS)
    stack.postgres.start()
    finishes_intact(batch, back=time.time())


def test_redis_restarted_mid_batch_loses_and_repeats_nothing(stack, batch):
    mid_batch(batch)
    stack.redis.stop()  # it keeps nothing on disk: every queued message is gone
    watch_while_down(batch, DOWN_SECONDS)
    stack.redis.start()
    finishes_intact(batch, back=time.time())


def test_the_web_killed_while_a_person_approves_loses_and_repeats_nothing(stack, batch):
    import psycopg
    import redis

    approving: list[object] = []

    def approve() -> None:
        try:
            approving.append(batch.approve())
        except requests.ConnectionError as exc:
            approving.append(exc)

    # 1. Killed before the approval commits: the request waits for the batch's row lock,
    # held here, when the web process dies.
    with psycopg.connect(stack.db_url) as conn:
        conn.execute(
            "SELECT 1 FROM transfers_transferbatch WHERE id = %s FOR UPDATE", [batch.row.pk]
        )
        person_at_work = threading.Thread(target=approve)
        person_at_work.start()

        def web_waits_for_the_lock() -> bool:
            with psycopg.connect(stack.db_url, autocommit=True) as look:
                return bool(
                    look.execute(
                        "SELECT count(*) FROM pg_stat_activity"
                        " WHERE wait_event_type = 'Lock' AND datname = current_database()"
                    ).fetchone()[0]
                )

        wait_until(web_waits_for_the_lock, 30, lambda: f"the approval to wait\n{stack.logs()}")
        stack.web.kill_group()
    person_at_work.join(30)
    assert isinstance(approving.pop(), requests.ConnectionError)
    stack.start_web()
    page = stack.approver.get(batch.page)
    assert page.status_code == 200 and "awaiting approval" in page.text
    assert batch.counts() == {Transfer.Status.REQUESTED: N}
    assert not batch.row.approvals.exists()
    note("killed before the commit: nothing approved")

    # 2. Killed after the approval commits, before its background work is sent: Redis
    # holds writes for a moment, so the web's after-commit send waits when it dies.
    broker = redis.Redis.from_url(stack.redis.url())
    broker.execute_command("CLIENT", "PAUSE", "60000", "WRITE")
    try:
        person_at_work = threading.Thread(target=approve)
        person_at_work.start()
        wait_until(
            lambda: batch.row.approvals.exists(), 30, lambda: f"the approval\n{stack.logs()}"
        )
        time.sleep(1)  # past the commit, into the send
        stack.web.kill_group()
    finally:
        broker.execute_command("CLIENT", "UNPAUSE")
    person_at_work.join(30)
    assert isinstance(approving.pop(), requests.ConnectionError)
    stack.start_web()
    back = time.time()
    page = stack.approver.get(batch.page)
    assert page.status_code == 200 and "being approved" in page.text
    note("killed after the commit: approved, its background work never sent")
    finishes_intact(batch, back=back)
