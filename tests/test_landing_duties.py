"""Landing separation of duties and landings after any acceptance (issue 22, points 3, 4).

Nobody authorises both sides alone, whatever the order of the clicks (single transfers and
batches); accepting a transfer that plans a landing needs the right to approve the landing;
and a transfer accepted outside the portal still lands (or says it needs attention).
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from django.test import TestCase
from django.urls import reverse
from django.utils import timezone

from policies.models import ApprovalPolicy, BatchApproval
from tests.conftest import TARGET, add_certificate, committed, iot_for, make_user
from transfers import batches, downtime, inventory, workflow
from transfers.models import Certificate, Role, Transfer, TransferEvent
from transfers.workflow import LandingChoice, Options, TransferError
from transfers.workflow.landing_plan import steps_left
from transfers.workflow.outcome import NOT_APPROVED

POLICY = '{"Version":"2012-10-17","Statement":[]}'


@pytest.fixture
def world(standin, source, target, requester, approver):
    iot, tiot = iot_for(source), iot_for(target)
    certs = [add_certificate(iot, "ACTIVE", ["Telemetry"], thing="sensor-1")]
    certs += [add_certificate(iot, "INACTIVE", ["Telemetry"]) for _ in range(2)]
    tiot.create_policy(policyName="Telemetry", policyDocument=POLICY)
    run, _ = inventory.queue_sync(source, "us-east-1")
    inventory.sync_region(run.pk)
    return SimpleNamespace(
        iot=iot,
        tiot=tiot,
        cert=Certificate.objects.get(certificate_id=certs[0]["certificateId"]),
        others=list(Certificate.objects.exclude(certificate_id=certs[0]["certificateId"])),
        # Approver on both accounts: may approve either side, never both.
        both=make_user("both", (source, Role.APPROVER), (target, Role.APPROVER)),
        # Admin of the target: may accept, and may approve landings.
        carol=make_user("carol", (target, Role.ADMIN)),
    )


def request(world, user) -> Transfer:
    return workflow.request_transfer(
        user,
        world.cert,
        target_account_id=TARGET,
        message="Devices sold to Acme",
        reason="Sale",
        options=Options(),
        landing=LandingChoice(),
    )


def request_batch(world, user):
    return batches.request_batch(
        user,
        world.others,
        [],
        target_account_id=TARGET,
        message="m",
        reason="r",
        options=Options(),
        landing=LandingChoice(),
    )


def pending(world, requester, approver) -> Transfer:
    """Approved by the source and pending in AWS; the landing not approved yet."""
    transfer = request(world, requester)
    committed(workflow.approve, approver, transfer.pk)
    transfer.refresh_from_db()
    assert transfer.status == Transfer.Status.PENDING_ACCEPTANCE
    return transfer


def run(callbacks) -> None:
    """Run what was enqueued after a commit, as the worker would (and what that enqueues)."""
    with TestCase.captureOnCommitCallbacks(execute=True):
        for callback in callbacks:
            callback()


def attached(tiot, arn):
    policies = sorted(p["policyName"] for p in tiot.list_attached_policies(target=arn)["policies"])
    return policies, tiot.list_principal_things(principal=arn)["things"]


def status_in_target(world, transfer) -> str:
    desc = world.tiot.describe_certificate(certificateId=transfer.certificate_id)
    return desc["certificateDescription"]["status"]


def assert_landed(world, transfer) -> None:
    transfer.refresh_from_db()
    assert transfer.status == Transfer.Status.ACCEPTED
    assert transfer.landing_state == Transfer.Landing.LANDED
    assert attached(world.tiot, transfer.transferred_arn) == (["Telemetry"], ["sensor-1"])
    assert status_in_target(world, transfer) == "ACTIVE"
    # The downtime closes: it shows on the page and in the figures.
    assert transfer.usable_at is not None and transfer.downtime is not None
    assert downtime.summarize(Transfer.objects.filter(pk=transfer.pk)).count == 1


# ----------------------------------------------------------------- one person, both sides


@pytest.mark.parametrize("approvals", [1, 2])
def test_who_approved_the_landing_may_not_approve_the_move(
    world, requester, approver, source, approvals
):
    ApprovalPolicy.objects.create(account=source, approvals=approvals)
    transfer = request(world, requester)
    committed(workflow.approve_landing, world.both, transfer.pk)
    with pytest.raises(TransferError) as refused:
        committed(workflow.approve, world.both, transfer.pk)
    assert refused.value.status == 403 and "landing" in refused.value.message
    transfer.refresh_from_db()
    assert transfer.status == Transfer.Status.REQUESTED
    assert transfer.approver is None and not transfer.approvals.exists()


@pytest.mark.parametrize("approvals", [1, 2])
def test_who_approved_the_move_may_not_approve_the_landing(
    world, requester, approver, source, approvals
):
    ApprovalPolicy.objects.create(account=source, approvals=approvals)
    transfer = request(world, requester)
    committed(workflow.approve, world.both, transfer.pk)
    with pytest.raises(TransferError) as refused:
        workflow.approve_landing(world.both, transfer.pk)
    assert refused.value.status == 403
    transfer.refresh_from_db()
    assert transfer.target_approver is None


def test_who_approved_a_batchs_landing_may_not_approve_the_batch(world, requester):
    batch = request_batch(world, requester)
    assert committed(batches.approve_landing, world.both, batch) == 2
    with pytest.raises(TransferError) as refused:
        committed(batches.approve, world.both, batch)
    assert refused.value.status == 403
    batch.refresh_from_db()
    assert batch.approver is None and not BatchApproval.objects.filter(batch=batch).exists()
    assert {t.status for t in batch.transfers.all()} == {Transfer.Status.REQUESTED}


def test_who_approved_a_batch_may_not_approve_its_landing_before_the_approvals_are_written(
    world, requester, django_capture_on_commit_callbacks
):
    batch = request_batch(world, requester)
    with django_capture_on_commit_callbacks() as background:
        batches.approve(world.both, batch)
    # The transfers' own approvals are not written yet: the batch's approval counts.
    assert {t.approver_id for t in batch.transfers.all()} == {None}
    with pytest.raises(TransferError) as refused:
        batches.approve_landing(world.both, batch)
    assert refused.value.status == 403
    assert not batch.transfers.filter(target_approver__isnull=False).exists()

    run(background)  # the transfers are approved (by them) and wait for the target
    assert {t.status for t in batch.transfers.all()} == {Transfer.Status.PENDING_ACCEPTANCE}
    with pytest.raises(TransferError):
        batches.approve_landing(world.both, batch)


def test_a_landing_approved_while_the_batch_is_approved_in_the_background_holds_that_transfer(
    world, requester, django_capture_on_commit_callbacks
):
    batch = request_batch(world, requester)
    with django_capture_on_commit_callbacks() as background:
        batches.approve(world.both, batch)
    # Their landing approval of one transfer commits between the batch's check and the
    # background approval of that transfer.
    raced, other = batch.transfers.order_by("pk")
    Transfer.objects.filter(pk=raced.pk).update(
        target_approver=world.both, target_approved_at=timezone.now()
    )
    run(background)
    raced.refresh_from_db()
    other.refresh_from_db()
    assert raced.status == Transfer.Status.REQUESTED and raced.approver is None
    assert raced.events.filter(action="approval_refused").exists()
    assert other.status == Transfer.Status.PENDING_ACCEPTANCE


# ----------------------------------------------------------------- accepting in the inbox


@pytest.mark.parametrize("role", [Role.REQUESTER, Role.ADMIN])
def test_accepting_without_the_landing_right_accepts_without_landing_and_says_so(
    world, requester, approver, target, client, role
):
    from transfers.models import AccountGrant

    # The requester is an operator of the target too (as admin, also an approver there).
    AccountGrant.objects.create(account=target, user=requester, role=role)
    transfer = pending(world, requester, approver)
    client.force_login(requester)
    page = committed(
        client.post,
        reverse("transfer_accept", args=[transfer.pk]),
        {"set_as_active": "on"},
        follow=True,
    ).content.decode()
    assert "Accepted without the landing" in page
    assert "The landing in the target was not run" in page

    transfer.refresh_from_db()
    assert transfer.status == Transfer.Status.ACCEPTED
    assert transfer.landing_state == Transfer.Landing.ATTENTION
    assert transfer.target_approver is None and transfer.usable_at is None
    assert attached(world.tiot, transfer.transferred_arn) == ([], [])
    assert steps_left(transfer) == [
        "Attach policy Telemetry",
        "Create thing sensor-1",
        "Attach thing sensor-1",
    ]
    # Nor does "Try landing again" run it for them.
    response = client.post(reverse("transfer_retry_landing", args=[transfer.pk]))
    assert response.status_code == 403
    transfer.refresh_from_db()
    assert transfer.landing_state == Transfer.Landing.ATTENTION


def test_accepting_with_the_landing_right_lands_as_planned(world, requester, approver, client):
    transfer = pending(world, requester, approver)
    client.force_login(world.carol)
    page = committed(
        client.post, reverse("transfer_accept", args=[transfer.pk]), {}, follow=True
    ).content.decode()
    assert "lands as planned" in page
    assert_landed(world, transfer)  # activated as the plan says, the box unticked
    assert transfer.target_approver == world.carol


# ----------------------------------------------------------------- accepted outside the portal


def test_an_acceptance_the_reconciler_sees_runs_the_approved_landing(
    world, requester, approver, django_capture_on_commit_callbacks
):
    transfer = pending(world, requester, approver)
    with django_capture_on_commit_callbacks():  # the worker never gets to it
        workflow.approve_landing(world.carol, transfer.pk)
    # The target runs the notice's CLI command (no --set-as-active).
    world.tiot.accept_certificate_transfer(certificateId=transfer.certificate_id)

    with django_capture_on_commit_callbacks() as after:
        assert workflow.reconcile_pending() == {"accepted": 1}
    transfer.refresh_from_db()
    assert transfer.status == Transfer.Status.ACCEPTED
    assert transfer.landing_state == Transfer.Landing.LANDING  # sent to a worker on commit
    assert after and attached(world.tiot, transfer.transferred_arn) == ([], [])
    run(after)
    assert_landed(world, transfer)


def test_a_worker_that_finds_the_target_accepted_first_lands_and_closes_the_downtime(
    world, requester, approver, django_capture_on_commit_callbacks
):
    transfer = pending(world, requester, approver)
    with django_capture_on_commit_callbacks() as land:
        workflow.approve_landing(world.carol, transfer.pk)
    world.tiot.accept_certificate_transfer(certificateId=transfer.certificate_id)
    run(land)  # AcceptCertificateTransfer: already completed; AWS says it was accepted
    assert_landed(world, transfer)


def test_an_acceptance_the_reconciler_sees_without_an_approved_landing_needs_attention(
    world, requester, approver, target, client
):
    transfer = pending(world, requester, approver)
    world.tiot.accept_certificate_transfer(certificateId=transfer.certificate_id)
    assert committed(workflow.reconcile_pending) == {"accepted": 1}

    transfer.refresh_from_db()
    assert transfer.status == Transfer.Status.ACCEPTED
    assert transfer.landing_state == Transfer.Landing.ATTENTION
    assert transfer.landing_error == NOT_APPROVED
    left = [
        "Attach policy Telemetry",
        "Create thing sensor-1",
        "Attach thing sensor-1",
        "Set the certificate ACTIVE",
    ]
    assert steps_left(transfer) == left
    event = transfer.events.get(action="landing")
    assert event.kind == TransferEvent.Kind.NOTE and event.details["steps_left"] == left
    assert attached(world.tiot, transfer.transferred_arn) == ([], [])  # nothing ran
    client.force_login(world.carol)
    page = client.get(transfer.get_absolute_url()).content.decode()
    assert "Set the certificate ACTIVE" in page

    # Someone who may approve the landing runs it, and is recorded as its approver.
    operator = make_user("tops", (target, Role.REQUESTER))
    with pytest.raises(TransferError):
        workflow.retry_landing(operator, transfer.pk)
    committed(workflow.retry_landing, world.carol, transfer.pk)
    assert_landed(world, transfer)
    assert transfer.target_approver == world.carol
