"""Approvals on PostgreSQL lock only the transfer they decide: a batch's background
approval holds a chunk of rows for the chunk's transaction, and an approval of another
transfer from the same account and requester must not wait for it (bench/regions.py: the
four batches' approvals queued behind each other's chunks, 35 % of the workers' time)."""

import threading

import pytest
from django.db import OperationalError, connection, transaction

from tests.conftest import TARGET, add_certificate, iot_for
from transfers import inventory, workflow
from transfers.models import Certificate, Transfer

pytestmark = pytest.mark.django_db(transaction=True)


def test_an_approval_does_not_wait_for_another_transfers_open_approval(
    standin, source, target, requester, approver
):
    iot = iot_for(source)
    for _ in range(2):
        add_certificate(iot, "ACTIVE", ["DevicePublish"])
    inventory.sync_region(inventory.queue_sync(source, "us-east-1")[0].pk)
    first, second = (
        workflow.request_transfer(
            requester,
            cert,
            target_account_id=TARGET,
            message="m",
            reason="r",
            options=workflow.Options(),
        )
        for cert in Certificate.objects.order_by("pk")
    )
    holding, release = threading.Event(), threading.Event()
    errors: list[BaseException] = []

    def open_approval() -> None:
        # As approve_transfers' chunk: approved, the transaction still open.
        try:
            with transaction.atomic():
                workflow.approve(approver, first.pk, "chunk", enqueue=False)
                holding.set()
                release.wait(30)
        except BaseException as exc:  # shown below, not lost in the thread
            errors.append(exc)
            holding.set()
        finally:
            connection.close()

    thread = threading.Thread(target=open_approval)
    thread.start()
    try:
        assert holding.wait(30)
        with connection.cursor() as cursor:
            cursor.execute("SET lock_timeout = '3s'")
        try:
            workflow.approve(approver, second.pk, "alone", enqueue=False)
        except OperationalError as exc:
            pytest.fail(f"the second approval waited for the first one's locks: {exc}")
        finally:
            with connection.cursor() as cursor:
                cursor.execute("RESET lock_timeout")
    finally:
        release.set()
        thread.join()
    assert not errors, errors
    assert set(Transfer.objects.values_list("status", flat=True)) == {Transfer.Status.APPROVED}
