"""Real PostgreSQL, Redis, Celery worker processes and the stand-in server."""

import threading

import pytest
from django.db import connection

from demo import certificate_pem
from standin.control import client_for_account
from tests.conftest import SOURCE, TARGET, make_account, make_user
from tests.services.conftest import wait_until
from transfers import inventory, workflow
from transfers.models import Certificate, Role, SyncRun, Transfer

pytestmark = pytest.mark.django_db(transaction=True)


def seed_certificates(standin_url, count: int, policies=("DevicePublish",)) -> list[str]:
    from datetime import UTC, datetime, timedelta

    iot = client_for_account(SOURCE, "us-east-1", standin_url)
    for policy in policies:
        iot.create_policy(
            policyName=policy, policyDocument='{"Version":"2012-10-17","Statement":[]}'
        )
    now, ids = datetime.now(UTC), []
    for i in range(count):
        pem = certificate_pem(
            f"svc-{i}-{now.timestamp()}", now - timedelta(days=1), now + timedelta(days=365)
        )
        made = iot.register_certificate_without_ca(certificatePem=pem, status="ACTIVE")
        for policy in policies:
            iot.attach_policy(policyName=policy, target=made["certificateArn"])
        ids.append(made["certificateId"])
    return ids


@pytest.fixture
def accounts(services_env):
    source = make_account(SOURCE, "Fleet production")
    target = make_account(TARGET, "Acme devices")
    return source, target


def test_the_tier_runs_on_postgresql():
    assert connection.vendor == "postgresql"


def test_a_worker_process_syncs_the_inventory(accounts, start_worker, standin_url, remote):
    source, _ = accounts
    ids = seed_certificates(standin_url, 30)
    worker = start_worker()
    run, created = inventory.queue_sync(source, "us-east-1")
    assert created
    wait_until(
        lambda: SyncRun.objects.get(pk=run.pk).status in ("done", "failed"),
        60,
        f"the sync; worker log:\n{worker.tail()}",
    )
    run.refresh_from_db()
    assert run.status == "done", run.error
    assert set(Certificate.objects.values_list("certificate_id", flat=True)) == set(ids)
    assert remote.call_count("ListCertificates") == 1  # 30 fit one page of 250


def test_an_approved_transfer_is_executed_once_by_the_worker(
    accounts, start_worker, standin_url, remote
):
    source, _ = accounts
    seed_certificates(standin_url, 1)
    inventory.sync_region(inventory.queue_sync(source, "us-east-1")[0].pk)
    cert = Certificate.objects.get()
    requester = make_user("req", (source, Role.REQUESTER))
    approver = make_user("app", (source, Role.APPROVER))
    transfer = workflow.request_transfer(
        requester,
        cert,
        target_account_id=TARGET,
        message="m",
        reason="r",
        options=workflow.Options(),
    )
    worker = start_worker()
    workflow.approve(approver, transfer.pk)
    wait_until(
        lambda: Transfer.objects.get(pk=transfer.pk).status not in Transfer.Status.IN_FLIGHT,
        60,
        f"the worker; log:\n{worker.tail()}",
    )
    transfer.refresh_from_db()
    assert transfer.status == Transfer.Status.PENDING_ACCEPTANCE, transfer.error_message
    assert remote.call_count("TransferCertificate", cert.certificate_id) == 1


def test_two_approvers_at_the_same_moment_give_one_approval(
    accounts, start_worker, standin_url, remote
):
    source, _ = accounts
    seed_certificates(standin_url, 1)
    inventory.sync_region(inventory.queue_sync(source, "us-east-1")[0].pk)
    cert = Certificate.objects.get()
    requester = make_user("req", (source, Role.REQUESTER))
    approvers = [make_user(f"app{i}", (source, Role.APPROVER)) for i in range(2)]
    transfer = workflow.request_transfer(
        requester,
        cert,
        target_account_id=TARGET,
        message="m",
        reason="r",
        options=workflow.Options(),
    )
    barrier = threading.Barrier(2)
    outcomes: list[str] = []

    def approve(user):
        from django.db import connections

        barrier.wait()
        try:
            workflow.approve(user, transfer.pk)
            outcomes.append("approved")
        except workflow.TransferError as exc:
            outcomes.append(exc.code)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=approve, args=(u,)) for u in approvers]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(outcomes) == ["approved", "invalid_state"]
    start_worker()
    wait_until(
        lambda: Transfer.objects.get(pk=transfer.pk).status == "pending_acceptance",
        60,
        "the execution",
    )
    assert transfer.events.filter(action="approve").count() == 1
    assert remote.call_count("TransferCertificate", cert.certificate_id) == 1
