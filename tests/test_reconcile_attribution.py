"""AWS's state of a certificate is credited to the transfer it belongs to, and only to it;
one transfer's failure in the reconciler or a sweep never stops the others (issue 22, 1)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib.auth.models import User
from django.core import mail
from django.db import IntegrityError
from django.test import TestCase
from django.urls import reverse
from django.utils import timezone

from tests.conftest import OTHER, TARGET, add_certificate, committed, iot_for, make_user
from transfers import batches, health, inventory, queue, tasks, workflow
from transfers.models import Certificate, Notice, Role, SweepFailure, Transfer
from transfers.workflow import Options, TransferError, reconcile


@pytest.fixture
def world(standin, source, target, requester, approver):
    iot = iot_for(source)
    made = add_certificate(iot, "ACTIVE", ["DevicePublish"], thing="sensor-1")
    run, _ = inventory.queue_sync(source, "us-east-1")
    inventory.sync_region(run.pk)
    cert = Certificate.objects.get(certificate_id=made["certificateId"])
    carol = make_user("carol", (target, Role.ADMIN))
    return {"iot": iot, "cert": cert, "carol": carol, "control": standin}


def request(world, requester) -> Transfer:
    return workflow.request_transfer(
        requester,
        world["cert"],
        target_account_id=TARGET,
        message="Devices sold to Acme",
        reason="Sale",
        options=Options(),
    )


def failed_after_its_call(world, requester, approver) -> Transfer:
    """Its TransferCertificate was throttled until the worker gave up: AWS never took it."""
    transfer = request(world, requester)
    with TestCase.captureOnCommitCallbacks(execute=False):
        workflow.approve(approver, transfer.pk)
    world["control"].set_faults(throttle_rate=1.0, operations=["TransferCertificate"])
    with pytest.raises(workflow.RetryLater):
        workflow.execute(transfer.pk)
    world["control"].clear_faults()
    workflow.fail(transfer.pk, "ThrottlingException", "Gave up after 10 retries.")
    transfer.refresh_from_db()
    assert transfer.status == Transfer.Status.FAILED and transfer.first_transfer_at
    return transfer


def newer_pending(world, requester, approver) -> Transfer:
    """The new request the failed transfer's page suggests, approved and pending in AWS."""
    transfer = request(world, requester)
    committed(workflow.approve, approver, transfer.pk)
    transfer.refresh_from_db()
    assert transfer.status == Transfer.Status.PENDING_ACCEPTANCE, transfer.error_message
    return transfer


@pytest.fixture
def failed(world, requester, approver) -> Transfer:
    return failed_after_its_call(world, requester, approver)


@pytest.fixture
def admin(source):
    """An admin of the source (not the requester): may retry, cancel and check with AWS."""
    return make_user("sam", (source, Role.ADMIN))


# ----------------------------------------------------------------------------- attribution


def test_a_newer_pending_transfer_leaves_the_failed_one_failed(world, requester, approver, failed):
    newer = newer_pending(world, requester, approver)

    outcomes = committed(workflow.reconcile_pending)

    failed.refresh_from_db()
    assert failed.status == Transfer.Status.FAILED
    assert failed.transfer_date is None
    assert Transfer.objects.get(pk=newer.pk).status == Transfer.Status.PENDING_ACCEPTANCE
    assert outcomes == {"pending": 1}  # the failed one is no longer watched


def test_the_newer_transfers_acceptance_is_not_credited_to_the_failed_one(
    world, requester, approver, failed
):
    newer = newer_pending(world, requester, approver)
    committed(workflow.accept, world["carol"], newer.pk)
    mail.outbox.clear()

    committed(workflow.reconcile_pending)

    failed.refresh_from_db()
    assert failed.status == Transfer.Status.FAILED and failed.accept_date is None
    assert not failed.notices.filter(kind=Notice.Kind.ACCEPTED).exists()
    assert not [m for m in mail.outbox if f"#{failed.pk} " in m.subject]
    assert Transfer.objects.get(pk=newer.pk).status == Transfer.Status.ACCEPTED


def test_a_failed_transfer_with_a_newer_one_cannot_be_retried(world, requester, approver, failed):
    """Retried, it would read the newer transfer's rejection in AWS as its own."""
    newer = newer_pending(world, requester, approver)
    committed(workflow.reject, world["carol"], newer.pk, "Wrong devices")

    with pytest.raises(TransferError) as refused:
        committed(workflow.retry, approver, failed.pk)

    assert refused.value.status == 409 and f"#{newer.pk}" in refused.value.message
    failed.refresh_from_db()
    assert failed.status == Transfer.Status.FAILED and failed.reject_reason == ""
    assert not failed.events.filter(action="retry").exists()


def test_a_transfer_pending_to_another_account_is_not_the_failed_ones(world, failed):
    """Someone transferred the certificate outside the portal after the portal's call failed:
    AWS lists it pending to an account that is not this transfer's target."""
    world["iot"].transfer_certificate(certificateId=failed.certificate_id, targetAwsAccount=OTHER)

    outcomes = committed(workflow.reconcile_pending)

    failed.refresh_from_db()
    assert failed.status == Transfer.Status.FAILED and outcomes == {"failed": 1}


# ----------------------------------------------------------------------------- the pages


@pytest.mark.parametrize("action", ["transfer_cancel", "transfer_reconcile", "transfer_retry"])
def test_acting_on_the_failed_one_explains_instead_of_failing(
    client, world, requester, approver, admin, failed, action
):
    newer = newer_pending(world, requester, approver)
    client.force_login(admin)

    response = client.post(reverse(action, args=[failed.pk]), follow=True)

    assert response.status_code == 200
    said = " ".join(str(m) for m in response.context["messages"])
    assert f"#{newer.pk}" in said, said
    failed.refresh_from_db()
    assert failed.status == Transfer.Status.FAILED and failed.restore_state == ""
    assert Transfer.objects.get(pk=newer.pk).status == Transfer.Status.PENDING_ACCEPTANCE
    assert world["control"].call_count("CancelCertificateTransfer") == 0


def test_the_failed_ones_page_says_why_it_is_not_retried(
    client, world, requester, approver, admin, failed
):
    newer = newer_pending(world, requester, approver)
    client.force_login(admin)

    page = client.get(reverse("transfer_detail", args=[failed.pk])).content.decode()

    assert f"#{newer.pk}</a> of this certificate was requested after this one failed" in page
    assert reverse("transfer_retry", args=[failed.pk]) not in page


def test_a_failed_one_is_given_up_once_the_newer_one_ended_at_home(
    world, requester, approver, failed
):
    """The newer one was rejected and its restore ran: what the failed one removed can be
    put back, without asking AWS about a transfer that is not its own."""
    newer = newer_pending(world, requester, approver)
    committed(workflow.reject, world["carol"], newer.pk, "Wrong devices")

    committed(workflow.cancel, requester, failed.pk)

    failed.refresh_from_db()
    assert failed.status == Transfer.Status.CANCELLED and failed.reject_reason == ""
    assert failed.restore_state == Transfer.Restore.DONE
    assert world["control"].call_count("CancelCertificateTransfer") == 0


# ----------------------------------------------------------------------------- isolation


def another_certificate(world, source) -> Certificate:
    made = add_certificate(world["iot"], "INACTIVE")
    run, _ = inventory.queue_sync(source, "us-east-1")
    inventory.sync_region(run.pk)
    return Certificate.objects.get(certificate_id=made["certificateId"])


@pytest.fixture
def two_pending(world, source, requester, approver) -> tuple[Transfer, Transfer]:
    first = newer_pending(world, requester, approver)
    world["cert"] = another_certificate(world, source)
    return first, newer_pending(world, requester, approver)


def failing_for(pk: int, real):
    def call(transfer, *args, **kwargs):
        if transfer.pk == pk:
            raise RuntimeError("disk on fire")
        return real(transfer, *args, **kwargs)

    return call


def test_one_transfer_the_reconciler_cannot_decide_does_not_stop_the_others(
    world, two_pending, monkeypatch
):
    bad, good = two_pending
    for transfer in two_pending:  # cancelled outside: both need a decision
        world["iot"].cancel_certificate_transfer(certificateId=transfer.certificate_id)
    monkeypatch.setattr(reconcile, "decide", failing_for(bad.pk, reconcile.decide))

    assert committed(workflow.reconcile_pending) == {"exception": 1, "cancelled": 1}
    assert committed(workflow.reconcile_pending) == {"exception": 1}

    assert Transfer.objects.get(pk=good.pk).status == Transfer.Status.CANCELLED
    assert Transfer.objects.get(pk=bad.pk).status == Transfer.Status.PENDING_ACCEPTANCE
    failure = SweepFailure.objects.get()
    assert (failure.sweep, failure.subject) == ("reconcile", f"transfer {bad.pk}")
    assert failure.error == "RuntimeError: disk on fire" and failure.count == 2


def stopped_rows(source, requester, **fields) -> list[Transfer]:
    """Two transfers a sweep picks up (rows only: the sweep's sending is what is tested)."""
    rows = []
    for n in range(2):
        cert_id = f"{n:064x}"
        rows.append(
            Transfer.objects.create(
                source=source,
                region="us-east-1",
                certificate_id=cert_id,
                certificate_arn=f"arn:aws:iot:us-east-1:{source.account_id}:cert/{cert_id}",
                target_account_id=TARGET,
                requester=requester,
                reason="Sale",
                updated=timezone.now() - timedelta(hours=1),
                **fields,
            )
        )
    return rows


SWEEPS = {
    "requeue": (
        lambda: reconcile.requeue_stalled(),
        {"status": Transfer.Status.APPROVED},
        "execute_transfer",
    ),
    "restores": (
        lambda: workflow.sweep_restores(),
        {"status": Transfer.Status.CANCELLED, "restore_state": Transfer.Restore.PARTIAL},
        "restore_transfer",
    ),
    "landings": (
        lambda: workflow.sweep_landings(),
        {
            "status": Transfer.Status.ACCEPTED,
            "landing_state": Transfer.Landing.PARTIAL,
            "landing_next_at": timezone.now() - timedelta(minutes=1),
        },
        "land_transfer",
    ),
}


@pytest.mark.parametrize("sweep", list(SWEEPS))
def test_one_row_a_sweep_cannot_send_does_not_stop_the_others(
    source, requester, monkeypatch, sweep
):
    run, fields, task = SWEEPS[sweep]
    bad, good = stopped_rows(source, requester, **fields)
    sent = []

    def send_now(name, pk, countdown=None):
        if pk == bad.pk:
            raise RuntimeError("disk on fire")
        sent.append((name, pk))

    monkeypatch.setattr(queue, "send_now", send_now)

    assert run() == 1

    assert sent == [(task, good.pk)]
    failure = SweepFailure.objects.get()
    assert (failure.sweep, failure.subject) == (sweep, f"transfer {bad.pk}")
    assert "disk on fire" in failure.error


def test_the_beat_task_runs_every_sweep_whatever_one_raises(db, monkeypatch):
    ran = []

    def broken():
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(workflow, "reconcile_pending", broken)
    for name in ("requeue_stalled", "sweep_restores", "sweep_landings"):
        monkeypatch.setattr(workflow, name, lambda name=name: ran.append(name) or 0)
    monkeypatch.setattr(batches, "resume_approvals", lambda: ran.append("resume_approvals") or 0)
    monkeypatch.setattr(batches, "resume_cancels", lambda: ran.append("resume_cancels") or 0)

    outcomes = tasks.reconcile()

    assert ran == [
        "requeue_stalled",
        "resume_approvals",
        "resume_cancels",
        "sweep_restores",
        "sweep_landings",
    ]
    assert outcomes == {
        "exception": 1,
        "requeued": 0,
        "approvals_resumed": 0,
        "cancels_resumed": 0,
        "restores": 0,
        "landings": 0,
    }
    assert SweepFailure.objects.get().sweep == "reconcile"


# ----------------------------------------------------------------------------- metrics, health


@pytest.fixture
def staff(db):
    return User.objects.create_user("ops", "ops@example.com", "pw", is_staff=True)


@pytest.fixture
def a_failure(db):
    for _ in range(3):
        SweepFailure.note("reconcile", "transfer 7", IntegrityError("UNIQUE constraint failed"))
    SweepFailure.note("landings", "transfer 8", RuntimeError("disk on fire"))


def test_sweep_failures_are_counted_in_the_metrics(client, staff, a_failure):
    client.force_login(staff)

    body = client.get(reverse("metrics")).content.decode()

    assert 'portal_sweep_failures_total{sweep="reconcile"} 3.0' in body
    assert 'portal_sweep_failures_total{sweep="landings"} 1.0' in body
    assert 'portal_sweep_failures_total{sweep="restores"} 0.0' in body


@pytest.fixture
def healthy(settings, tmp_path, standin):
    settings.VAR_DIR = tmp_path
    health.record_heartbeat()
    return settings


def test_staff_see_recent_sweep_failures_on_the_health_page(client, healthy, staff, a_failure):
    SweepFailure.objects.filter(subject="transfer 8").update(
        last_at=timezone.now() - timedelta(hours=2)  # long gone
    )
    client.force_login(staff)

    response = client.get(reverse("health"))

    assert response.status_code == 200  # one bad transfer does not make the portal unhealthy
    (shown,) = response.json()["sweep_failures"]
    assert shown["sweep"] == "reconcile" and shown["subject"] == "transfer 7"
    assert shown["count"] == 3 and "UNIQUE constraint failed" in shown["error"]


def test_others_see_no_sweep_failures_on_the_health_page(client, healthy, requester, a_failure):
    assert client.get(reverse("health")).json() == {"status": "ok"}
    client.force_login(requester)
    assert client.get(reverse("health")).json() == {"status": "ok"}
