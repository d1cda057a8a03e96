"""Fault scenarios on real services: PostgreSQL, Redis, Celery worker and beat processes and
the stand-in server. Each one is bounded in time (every wait has a timeout) and stops by
itself; the outcomes are read from the database and the stand-in's call counters.

* a worker killed with SIGKILL in the middle of a 200-certificate batch, then restarted;
* Redis flushed in the middle of a batch;
* 20% Throttling / ServiceUnavailable on every IoT operation;
* the SMTP server down while transfers go pending, back afterwards.
"""

from __future__ import annotations

import concurrent.futures
import os
import re
import threading
import time
from datetime import UTC, datetime, timedelta
from email import message_from_bytes

import pytest
from django.db.models import Count
from django.utils import timezone

from demo import certificate_pem
from standin.control import client_for_account
from tests.conftest import SOURCE, TARGET, make_account, make_user
from tests.services.conftest import free_port, wait_until
from transfers import batches, inventory, workflow
from transfers.models import AwsAccount, Notice, Role, SyncRun, Transfer, TransferBatch

pytestmark = pytest.mark.django_db(transaction=True)

REGION = "us-east-1"
POLICY = "FaultsDevicePublish"


# --------------------------------------------------------------------------- set-up


def fleet(standin_url: str, count: int) -> list[str]:
    """``count`` ACTIVE certificates in the source account, each with a policy and a thing,
    so each transfer deactivates and detaches before TransferCertificate (7 calls)."""
    stamp, now = f"{time.time():.6f}", datetime.now(UTC)
    local = threading.local()

    def iot():
        if not hasattr(local, "client"):
            local.client = client_for_account(SOURCE, REGION, standin_url)
        return local.client

    iot().create_policy(policyName=POLICY, policyDocument='{"Version":"2012-10-17","Statement":[]}')

    def one(i: int) -> str:
        client = iot()
        pem = certificate_pem(
            f"faults-{stamp}-{i}", now - timedelta(days=1), now + timedelta(days=90)
        )
        made = client.register_certificate_without_ca(certificatePem=pem, status="ACTIVE")
        client.attach_policy(policyName=POLICY, target=made["certificateArn"])
        client.create_thing(thingName=f"faults-device-{i}")
        client.attach_thing_principal(
            thingName=f"faults-device-{i}", principal=made["certificateArn"]
        )
        return made["certificateId"]

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        return list(pool.map(one, range(count)))


@pytest.fixture
def accounts(services_env):
    return make_account(SOURCE, "Fleet production"), make_account(TARGET, "Acme devices")


@pytest.fixture
def people(accounts):
    source, _ = accounts
    return (
        make_user("requester", (source, Role.REQUESTER)),
        make_user("approver", (source, Role.APPROVER)),
    )


def requested_batch(source: AwsAccount, requester, ids: list[str], api_rate: float):
    """Sync the inventory in this process (set-up), then request one batch of ``ids``; the
    account's API rate is ``api_rate`` from then on (the feeder's window is 2 s of it)."""
    run = inventory.sync_region(SyncRun.objects.create(account=source, region=REGION).pk)
    assert run.status == SyncRun.Status.DONE, run.error
    AwsAccount.objects.filter(pk=source.pk).update(api_rate=api_rate)
    certs, missing = batches.select(requester, ids)
    assert not missing
    batch = batches.request_batch(
        requester,
        certs,
        missing,
        target_account_id=TARGET,
        message="fleet moves",
        reason="fault test",
        options=workflow.Options(),
    )
    assert batch.transfers.count() == len(ids)
    return batch


def counts(batch: TransferBatch) -> dict[str, int]:
    return dict(
        batch.transfers.values_list("status").annotate(n=Count("pk")).values_list("status", "n")
    )


def waiting(batch: TransferBatch) -> int:
    return batch.transfers.filter(status__in=Transfer.Status.IN_FLIGHT).count()


def pending(batch: TransferBatch) -> int:
    return batch.transfers.filter(status=Transfer.Status.PENDING_ACCEPTANCE).count()


def working(batch: TransferBatch):
    """Transfers a worker is in the middle of: it holds their lease."""
    return batch.transfers.filter(status=Transfer.Status.PREPARING, lease_until__gt=timezone.now())


def assert_all_pending_each_transferred_once(batch: TransferBatch, remote, ids: list[str]):
    assert counts(batch) == {Transfer.Status.PENDING_ACCEPTANCE: len(ids)}, [
        (t.pk, t.status, t.error_code, t.error_message)
        for t in batch.transfers.exclude(status=Transfer.Status.PENDING_ACCEPTANCE)[:5]
    ]
    per_cert = remote.calls()["certificates"].get("TransferCertificate", {})
    ok = {cid: per_cert.get(cid, {}).get("ok", 0) for cid in ids}
    assert {cid: n for cid, n in ok.items() if n > 1} == {}, "transferred twice"
    assert {cid: n for cid, n in ok.items() if n != 1} == {}, "not exactly once"
    assert remote.call_count("TransferCertificate", outcome="ok") == len(ids)


def logs(*processes) -> str:
    return "\n".join(f"--- {p.name}\n{p.tail(25)}" for p in processes)


def requeued(process) -> int:
    """How many transfers the reconciler re-sent, from the worker's task log."""
    return sum(int(n) for n in re.findall(r"'requeued': (\d+)", process.log.read_text()))


# --------------------------------------------------------------------------- scenarios


def test_a_worker_killed_mid_batch_then_restarted_loses_and_duplicates_nothing(
    accounts, people, start_worker, start_beat, standin_url, remote
):
    source, _ = accounts
    requester, approver = people
    ids = fleet(standin_url, 200)
    batch = requested_batch(source, requester, ids, api_rate=20)
    first = start_worker("w1", concurrency=4)
    beat = start_beat()

    batches.approve(approver, batch)
    wait_until(
        lambda: pending(batch) >= 40 and working(batch).count() >= 2,
        90,
        f"40 pending and the worker busy; logs:\n{logs(first, beat)}",
    )
    first.kill()  # SIGKILL: no warm shutdown; its running and reserved tasks are gone
    before = counts(batch)
    assert waiting(batch) >= 50, f"killed too late to be mid-batch: {before}"

    # What the dead worker was in the middle of keeps its lease (no second worker takes a
    # transfer a live one is working on) until it runs out: nobody renews it any more
    # (transfers.leases), so TRANSFER_LEASE_SECONDS (30 here) after the kill at the most.
    held = working(batch).count()
    assert 1 <= held <= 4, before  # killed mid-transfer, at most one per thread

    second = start_worker("w2", concurrency=4)
    # The reconciler (beat, every 5 s) re-sends what made no progress for
    # TRANSFER_STALL_MINUTES (1): the messages the dead worker had taken, and the feeder.
    wait_until(
        lambda: waiting(batch) == 0, 150, f"the batch to finish; logs:\n{logs(second, beat)}"
    )
    assert_all_pending_each_transferred_once(batch, remote, ids)
    assert requeued(second) > 0, "the reconciler was expected to re-send stalled work"


def test_redis_flushed_mid_batch_loses_nothing(
    accounts, people, start_worker, start_beat, standin_url, remote
):
    import redis

    source, _ = accounts
    requester, approver = people
    ids = fleet(standin_url, 100)
    batch = requested_batch(source, requester, ids, api_rate=10)
    worker = start_worker("w1", concurrency=4)
    beat = start_beat()

    batches.approve(approver, batch)
    wait_until(lambda: pending(batch) >= 15, 60, f"15 pending; logs:\n{logs(worker, beat)}")
    # The worker stops first (warm: what it had reserved goes back to Redis). A live worker
    # keeps the messages it has already taken in memory, so a flush under it may lose
    # nothing, and the reconciler would have nothing to prove.
    worker.stop()
    redis.Redis.from_url(os.environ["REDIS_URL"]).flushdb()  # every queued message is gone
    before = counts(batch)
    assert waiting(batch) >= 50, f"flushed too late to be mid-batch: {before}"
    working(batch).update(lease_until=timezone.now())  # had stop() to kill it mid-transfer

    second = start_worker("w2", concurrency=4)
    wait_until(
        lambda: waiting(batch) == 0, 150, f"the batch to finish; logs:\n{logs(second, beat)}"
    )
    assert_all_pending_each_transferred_once(batch, remote, ids)
    assert requeued(second) > 0, "the reconciler was expected to re-send lost work"


def test_throttling_and_outages_on_every_operation_delay_but_do_not_break_a_batch(
    accounts, people, start_worker, standin_url, remote
):
    source, _ = accounts
    requester, approver = people
    ids = fleet(standin_url, 50)
    batch = requested_batch(source, requester, ids, api_rate=1000)
    remote.reset_counters()
    remote.set_faults(throttle_rate=0.1, unavailable_rate=0.1, seed=7)
    worker = start_worker("w1", concurrency=4)

    batches.approve(approver, batch)
    # Approval runs in the background: "none in flight" holds before it starts.
    wait_until(lambda: pending(batch) == len(ids), 150, f"the batch; log:\n{worker.tail()}")

    snapshot = remote.calls()
    injected = {op: codes for op, codes in snapshot["faulted"].items()}
    reached = sum(e["calls"] for e in snapshot["operations"].values())
    total_faults = sum(sum(codes.values()) for codes in injected.values())
    # About a fifth of all calls were answered by an injected fault, of both kinds.
    assert total_faults >= 0.1 * (reached + total_faults), injected
    assert any("ThrottlingException" in c for c in injected.values()), injected
    assert any("ServiceUnavailableException" in c for c in injected.values()), injected
    assert snapshot["throttled"].get("TransferCertificate", 0) > 0
    assert_all_pending_each_transferred_once(batch, remote, ids)


class _Inbox:
    """An aiosmtpd handler keeping every message it accepts."""

    def __init__(self) -> None:
        self.messages: list = []

    async def handle_DATA(self, server, session, envelope):  # noqa: N802 - aiosmtpd's name
        self.messages.append(message_from_bytes(envelope.content))
        return "250 Message accepted for delivery"


def test_notices_wait_for_the_smtp_server_and_are_sent_once_it_is_back(
    accounts, people, start_worker, standin_url, remote
):
    from aiosmtpd.controller import Controller

    source, _ = accounts
    requester, approver = people
    ids = fleet(standin_url, 10)
    batch = requested_batch(source, requester, ids, api_rate=1000)
    port = free_port()  # nothing listens there yet: the SMTP server is down
    worker = start_worker(
        "w1",
        concurrency=4,
        env={
            "EMAIL_BACKEND": "django.core.mail.backends.smtp.EmailBackend",
            "EMAIL_HOST": "127.0.0.1",
            "EMAIL_PORT": str(port),
            "EMAIL_TIMEOUT": "5",
        },
    )

    batches.approve(approver, batch)
    # Approval runs in the background: wait for every transfer to be pending, not held up.
    wait_until(
        lambda: counts(batch) == {Transfer.Status.PENDING_ACCEPTANCE: len(ids)},
        60,
        f"the batch; log:\n{worker.tail()}",
    )
    # The batch's one "waiting for you" to the target's contact carries every transfer's.
    notices = Notice.objects.filter(batch=batch, transfer__isnull=True)
    wait_until(lambda: notices.count() == 1, 30, f"the batch's notice; log:\n{worker.tail()}")
    assert Notice.objects.filter(digest__in=notices).count() == len(ids)
    wait_until(
        lambda: all(n.attempts >= 1 and n.last_error for n in notices.all()),
        30,
        f"a first delivery attempt of every notice; log:\n{worker.tail()}",
    )
    # None sent, none given up: each is waiting for its next try (or in the middle of it).
    assert not notices.exclude(status__in=[Notice.Status.PENDING, Notice.Status.SENDING]).exists()

    inbox = _Inbox()
    smtp = Controller(inbox, hostname="127.0.0.1", port=port)
    smtp.start()
    try:
        # The send task's own retries (exponential backoff with full jitter) deliver them.
        wait_until(
            lambda: notices.filter(status=Notice.Status.SENT).count() == 1,
            60,
            f"the notices to be sent; log:\n{worker.tail()}",
        )
        time.sleep(1)  # nothing arrives twice, even a moment later
    finally:
        smtp.stop()
    # The notices (approvers are also told by mail that the batch waits: policies/).
    notice_mails = [m for m in inbox.messages if m["X-Transfer-Notice"]]
    assert len(notice_mails) == 1
    attached = [p for p in notice_mails[0].walk() if p.get_filename()]
    assert [p.get_filename() for p in attached] == [f"batch-{batch.pk}-certificates.csv"]
    listed = attached[0].get_payload(decode=True).decode()
    assert all(cid in listed for cid in ids)
    headers = sorted(int(m["X-Transfer-Notice"]) for m in notice_mails)
    assert headers == sorted(notices.values_list("pk", flat=True))
    assert {m["To"] for m in notice_mails} == {f"ops@{TARGET}.example"}
    assert remote.call_count("TransferCertificate", outcome="ok") == len(ids)
