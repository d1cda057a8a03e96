"""The transfer workflow through its services, against the stand-in: every path in DESIGN.md."""

import pytest
from django.db import IntegrityError, transaction
from django.utils import timezone

from tests.conftest import TARGET, add_certificate, committed, iot_for, make_user
from transfers import inventory, workflow
from transfers.models import Certificate, Role, Transfer, TransferEvent
from transfers.workflow import Options, TransferError


@pytest.fixture
def world(standin, source, target, requester, approver):
    """A certificate in the source with two policies and a thing, synced into the portal."""
    iot = iot_for(source)
    made = add_certificate(iot, "ACTIVE", ["DevicePublish", "Telemetry"], thing="sensor-1")
    run, _ = inventory.queue_sync(source, "us-east-1")
    inventory.sync_region(run.pk)
    cert = Certificate.objects.get(certificate_id=made["certificateId"])
    carol = make_user("carol", (target, Role.ADMIN))
    return {"iot": iot, "cert": cert, "carol": carol, "control": standin}


def request(world, user, **kw) -> Transfer:
    params = {
        "target_account_id": TARGET,
        "message": "Devices sold to Acme",
        "reason": "Sale",
        "options": Options(),
    }
    params.update(kw)
    return workflow.request_transfer(user, world["cert"], **params)


def describe(iot, cert_id):
    return iot.describe_certificate(certificateId=cert_id)["certificateDescription"]


def attachments(iot, arn):
    policies = sorted(p["policyName"] for p in iot.list_attached_policies(target=arn)["policies"])
    things = iot.list_principal_things(principal=arn)["things"]
    return policies, things


def to_pending(world, requester, approver) -> Transfer:
    transfer = request(world, requester)
    committed(workflow.approve, approver, transfer.pk, "ok")
    transfer.refresh_from_db()
    assert transfer.status == Transfer.Status.PENDING_ACCEPTANCE, transfer.error_message
    return transfer


def test_request_approve_execute_accept(world, requester, approver, target):
    cert, iot = world["cert"], world["iot"]
    transfer = request(world, requester)
    assert transfer.status == Transfer.Status.REQUESTED
    assert transfer.plan["status"] == "ACTIVE"
    assert transfer.plan["policies"] == ["DevicePublish", "Telemetry"]

    committed(
        workflow.approve, approver, transfer.pk, "Checked with Acme"
    )  # eager: the worker runs it
    transfer.refresh_from_db()
    assert transfer.status == Transfer.Status.PENDING_ACCEPTANCE
    assert transfer.approver == approver
    assert transfer.deactivated is True
    assert transfer.detached_policies == ["DevicePublish", "Telemetry"]
    assert transfer.detached_things == ["sensor-1"]
    assert transfer.transferred_arn.endswith(f":{TARGET}:cert/{cert.certificate_id}")
    assert describe(iot, cert.certificate_id)["status"] == "PENDING_TRANSFER"
    assert attachments(iot, cert.arn) == ([], [])
    assert world["control"].call_count("TransferCertificate", cert.certificate_id) == 1

    committed(workflow.accept, world["carol"], transfer.pk, set_as_active=True)
    transfer.refresh_from_db()
    assert transfer.status == Transfer.Status.ACCEPTED
    moved = Certificate.objects.get(certificate_id=cert.certificate_id)
    assert moved.account == target and moved.status == "ACTIVE"  # the target's inventory
    target_iot = iot_for(target)
    assert describe(target_iot, cert.certificate_id)["status"] == "ACTIVE"
    with pytest.raises(iot.exceptions.ResourceNotFoundException):
        describe(iot, cert.certificate_id)
    actions = list(transfer.events.values_list("action", flat=True))
    assert actions[:3] == ["requested", "approve", "start"]
    for api in (
        "DescribeCertificate",
        "UpdateCertificate",
        "DetachPolicy",
        "DetachThingPrincipal",
        "TransferCertificate",
        "mark_pending",
        "AcceptCertificateTransfer",
        "mark_accepted",
    ):
        assert api in actions


def test_nobody_approves_their_own_request(world, source):
    both = make_user("both", (source, Role.REQUESTER), (source, Role.APPROVER))
    transfer = request(world, both)
    with pytest.raises(TransferError) as refused:
        committed(workflow.approve, both, transfer.pk)
    assert refused.value.code == "self_approval"
    transfer.refresh_from_db()
    assert transfer.status == Transfer.Status.REQUESTED and transfer.approver is None
    assert transfer.events.count() == 1


def test_approving_needs_the_approver_role_on_that_account(world, requester, viewer):
    transfer = request(world, requester)
    with pytest.raises(TransferError) as refused:
        committed(workflow.approve, viewer, transfer.pk)
    assert refused.value.status == 403
    assert Transfer.objects.get(pk=transfer.pk).status == Transfer.Status.REQUESTED


def test_a_second_approval_is_refused(world, requester, approver, source):
    other_approver = make_user("approver2", (source, Role.APPROVER))
    transfer = to_pending(world, requester, approver)
    with pytest.raises(TransferError) as refused:
        committed(workflow.approve, other_approver, transfer.pk)
    assert refused.value.code == "invalid_state"
    assert transfer.events.filter(action="approve").count() == 1


def test_decline_needs_a_comment_and_ends_it(world, requester, approver):
    transfer = request(world, requester)
    with pytest.raises(TransferError):
        workflow.decline(approver, transfer.pk, "  ")
    workflow.decline(approver, transfer.pk, "Not this quarter")
    transfer.refresh_from_db()
    assert transfer.status == Transfer.Status.DECLINED
    assert transfer.decision_comment == "Not this quarter"
    assert describe(world["iot"], world["cert"].certificate_id)["status"] == "ACTIVE"


def test_the_requester_withdraws_before_execution(world, requester, approver):
    transfer = request(world, requester)
    with pytest.raises(TransferError) as refused:
        workflow.withdraw(approver, transfer.pk)
    assert refused.value.status == 403
    workflow.withdraw(requester, transfer.pk)
    assert Transfer.objects.get(pk=transfer.pk).status == Transfer.Status.CANCELLED


@pytest.mark.parametrize(
    ("kw", "code"),
    [
        ({"target_account_id": "111111111111"}, "invalid_target"),
        ({"target_account_id": "12345"}, "invalid_target"),
        ({"target_account_id": "999999999999"}, "unknown_target"),
        ({"message": "x" * 129}, "invalid_message"),
        ({"message": "line\nbreak"}, "invalid_message"),
        ({"reason": " "}, "invalid_reason"),
        ({"options": Options(deactivate=False)}, "blocked"),
        ({"options": Options(detach_policies=False)}, "blocked"),
        ({"fingerprint": "0000000000000000"}, "stale_plan"),
    ],
)
def test_bad_requests_change_nothing(world, requester, kw, code):
    with pytest.raises(TransferError) as refused:
        request(world, requester, **kw)
    assert refused.value.code == code
    assert not Transfer.objects.exists()
    assert describe(world["iot"], world["cert"].certificate_id)["status"] == "ACTIVE"


def test_a_viewer_may_not_request(world, viewer):
    with pytest.raises(TransferError) as refused:
        request(world, viewer)
    assert refused.value.status == 403


def test_an_admin_may_send_to_an_unknown_account(world, source):
    admin = make_user("acct-admin", (source, Role.ADMIN))
    transfer = request(world, admin, target_account_id="999999999999")
    assert transfer.target is None
    assert any("not known to the portal" in w for w in transfer.plan["warnings"])


def test_a_certificate_never_has_two_open_transfers(world, requester):
    first = request(world, requester)
    with pytest.raises(TransferError) as refused:
        request(world, requester)
    assert refused.value.code == "blocked"
    # And the database itself refuses it, whatever the race.
    with pytest.raises(IntegrityError), transaction.atomic():
        Transfer.objects.create(
            source=first.source,
            region=first.region,
            certificate_id=first.certificate_id,
            certificate_arn=first.certificate_arn,
            target_account_id=TARGET,
            requester=requester,
            reason="again",
        )
    assert Transfer.objects.count() == 1


def test_a_redelivered_task_transfers_once(world, requester, approver):
    transfer = to_pending(world, requester, approver)
    assert workflow.execute(transfer.pk) == "skipped: pending_acceptance"
    assert world["control"].call_count("TransferCertificate", transfer.certificate_id) == 1


def test_a_lost_answer_is_not_repeated(
    world, requester, approver, django_capture_on_commit_callbacks
):
    """The worker died after AWS took the transfer but before the row said so."""
    transfer = request(world, requester)
    with django_capture_on_commit_callbacks(execute=False):
        workflow.approve(approver, transfer.pk)
    iot = world["iot"]
    iot.update_certificate(certificateId=transfer.certificate_id, newStatus="INACTIVE")
    for name in ("DevicePublish", "Telemetry"):
        iot.detach_policy(policyName=name, target=transfer.certificate_arn)
    iot.detach_thing_principal(thingName="sensor-1", principal=transfer.certificate_arn)
    # The worker notes the time before it calls TransferCertificate.
    Transfer.objects.filter(pk=transfer.pk).update(first_transfer_at=timezone.now())
    iot.transfer_certificate(
        certificateId=transfer.certificate_id,
        targetAwsAccount=TARGET,
        transferMessage=transfer.message,
    )
    assert workflow.execute(transfer.pk) == "pending_acceptance"
    assert world["control"].call_count("TransferCertificate", transfer.certificate_id) == 1


def test_throttling_asks_for_a_retry_and_the_retry_finishes(
    world, requester, approver, django_capture_on_commit_callbacks
):
    transfer = request(world, requester)
    with django_capture_on_commit_callbacks(execute=False):
        workflow.approve(approver, transfer.pk)
    world["control"].set_faults(throttle_rate=1.0, operations=["TransferCertificate"])
    with pytest.raises(workflow.RetryLater) as retry:
        workflow.execute(transfer.pk)
    assert retry.value.error.code == "ThrottlingException"
    assert Transfer.objects.get(pk=transfer.pk).status == Transfer.Status.PREPARING
    world["control"].clear_faults()
    assert workflow.execute(transfer.pk) == "pending_acceptance"
    assert world["control"].call_count("TransferCertificate", transfer.certificate_id, "ok") == 1


def test_failure_then_retry(world, requester, approver, target, django_capture_on_commit_callbacks):
    transfer = request(world, requester)
    iot = world["iot"]
    # Someone moves it by hand to another account before the worker runs.
    iot.update_certificate(certificateId=transfer.certificate_id, newStatus="INACTIVE")
    for name in ("DevicePublish", "Telemetry"):
        iot.detach_policy(policyName=name, target=transfer.certificate_arn)
    iot.detach_thing_principal(thingName="sensor-1", principal=transfer.certificate_arn)
    iot.transfer_certificate(certificateId=transfer.certificate_id, targetAwsAccount="999999999999")
    committed(workflow.approve, approver, transfer.pk)
    transfer.refresh_from_db()
    assert transfer.status == Transfer.Status.FAILED
    assert "another account" in transfer.error_message
    iot.cancel_certificate_transfer(certificateId=transfer.certificate_id)
    committed(workflow.retry, approver, transfer.pk)
    transfer.refresh_from_db()
    assert transfer.status == Transfer.Status.PENDING_ACCEPTANCE


def test_a_retry_is_an_approvers_decision_not_the_requesters(world, requester, approver):
    """A retry runs destructive preparation again: never on the requester's word alone."""
    transfer = request(world, requester)
    world["iot"].update_certificate(certificateId=transfer.certificate_id, newStatus="REVOKED")
    committed(workflow.approve, approver, transfer.pk)
    transfer.refresh_from_db()
    assert transfer.status == Transfer.Status.FAILED
    both = make_user("both", (world["cert"].account, Role.APPROVER))
    transfer.requester = both
    transfer.save()
    for user in (requester, both):  # a requester; an approver who requested it
        with pytest.raises(TransferError) as refused:
            workflow.retry(user, transfer.pk)
        assert refused.value.status == 403
        transfer.refresh_from_db()
        assert transfer.status == Transfer.Status.FAILED and transfer.attempts == 1


def test_reject_restores_policies_things_and_active(world, requester, approver):
    transfer = to_pending(world, requester, approver)
    committed(workflow.reject, world["carol"], transfer.pk, "Wrong devices")
    transfer.refresh_from_db()
    assert transfer.status == Transfer.Status.REJECTED
    assert transfer.reject_reason == "Wrong devices"
    assert transfer.restore_state == Transfer.Restore.DONE
    iot = world["iot"]
    assert describe(iot, transfer.certificate_id)["status"] == "ACTIVE"
    assert attachments(iot, transfer.certificate_arn) == (
        ["DevicePublish", "Telemetry"],
        ["sensor-1"],
    )


def test_cancel_restores(world, requester, approver):
    transfer = to_pending(world, requester, approver)
    committed(workflow.cancel, requester, transfer.pk)
    transfer.refresh_from_db()
    assert transfer.status == Transfer.Status.CANCELLED
    assert transfer.restore_state == Transfer.Restore.DONE
    assert describe(world["iot"], transfer.certificate_id)["status"] == "ACTIVE"
    assert transfer.events.filter(action="restore", ok=True).exists()
    assert Certificate.objects.get(pk=transfer.cert_id).status == "ACTIVE"  # as the restore left it


def test_without_restore_nothing_is_put_back(world, requester, approver):
    transfer = request(world, requester, options=Options(restore=False))
    committed(workflow.approve, approver, transfer.pk)
    cert = Certificate.objects.get(pk=transfer.cert_id)
    assert cert.status == "PENDING_TRANSFER" and cert.policies.get(name="Telemetry").status == (
        "PENDING_TRANSFER"
    )
    committed(workflow.cancel, requester, transfer.pk)
    transfer.refresh_from_db()
    assert transfer.restore_state == Transfer.Restore.NONE
    assert describe(world["iot"], transfer.certificate_id)["status"] == "INACTIVE"
    # The inventory says so at once (and its search by status too), not at the next sync.
    cert.refresh_from_db()
    assert cert.status == "INACTIVE" and cert.policies.get(name="Telemetry").status == "INACTIVE"


def test_a_failed_restore_step_is_shown(world, requester, approver):
    transfer = to_pending(world, requester, approver)
    world["iot"].delete_policy(policyName="Telemetry")
    committed(workflow.cancel, requester, transfer.pk)
    transfer.refresh_from_db()
    assert transfer.restore_state == Transfer.Restore.PARTIAL
    event = transfer.events.get(action="restore")
    assert event.ok is False and "attach_policy" in event.details["failures"][0]
    assert describe(world["iot"], transfer.certificate_id)["status"] == "ACTIVE"


def test_accept_needs_rights_on_the_target(world, requester, approver):
    transfer = to_pending(world, requester, approver)
    for user in (requester, approver):
        with pytest.raises(TransferError) as refused:
            workflow.accept(user, transfer.pk)
        assert refused.value.status == 403
    assert Transfer.objects.get(pk=transfer.pk).status == Transfer.Status.PENDING_ACCEPTANCE


@pytest.mark.parametrize("outside", ["accept", "reject", "cancel"])
def test_the_reconciler_catches_what_happened_outside(world, requester, approver, target, outside):
    transfer = to_pending(world, requester, approver)
    if outside == "accept":
        iot_for(target).accept_certificate_transfer(certificateId=transfer.certificate_id)
    elif outside == "reject":
        iot_for(target).reject_certificate_transfer(
            certificateId=transfer.certificate_id, rejectReason="Not ours"
        )
    else:
        world["iot"].cancel_certificate_transfer(certificateId=transfer.certificate_id)
    outcomes = committed(workflow.reconcile_pending)
    transfer.refresh_from_db()
    expected = {"accept": "accepted", "reject": "rejected", "cancel": "cancelled"}[outside]
    assert transfer.status == expected
    assert outcomes == {expected: 1}
    assert transfer.events.filter(actor_name="reconciler").exists()
    if outside == "reject":
        assert transfer.reject_reason == "Not ours"
    if outside != "accept":
        assert transfer.restore_state == Transfer.Restore.DONE
        assert describe(world["iot"], transfer.certificate_id)["status"] == "ACTIVE"


def test_the_reconciler_leaves_pending_ones_alone(world, requester, approver):
    transfer = to_pending(world, requester, approver)
    assert workflow.reconcile_pending() == {"pending": 1}
    assert Transfer.objects.get(pk=transfer.pk).status == Transfer.Status.PENDING_ACCEPTANCE


def test_cancel_after_an_outside_accept_explains(world, requester, approver, target):
    transfer = to_pending(world, requester, approver)
    iot_for(target).accept_certificate_transfer(certificateId=transfer.certificate_id)
    with pytest.raises(TransferError) as refused:
        committed(workflow.cancel, requester, transfer.pk)
    assert refused.value.code == "already_completed"
    assert Transfer.objects.get(pk=transfer.pk).status == Transfer.Status.ACCEPTED


def test_stalled_work_is_requeued(world, requester, approver, django_capture_on_commit_callbacks):
    from datetime import timedelta

    from django.utils import timezone

    transfer = request(world, requester)
    with django_capture_on_commit_callbacks(execute=False):
        workflow.approve(approver, transfer.pk)  # the message is lost
    Transfer.objects.filter(pk=transfer.pk).update(updated=timezone.now() - timedelta(minutes=10))
    assert workflow.requeue_stalled() == 1
    assert Transfer.objects.get(pk=transfer.pk).status == Transfer.Status.PENDING_ACCEPTANCE


def test_every_aws_call_is_audited(world, requester, approver):
    transfer = to_pending(world, requester, approver)
    aws_events = transfer.events.filter(kind=TransferEvent.Kind.AWS)
    assert aws_events.filter(action="TransferCertificate", ok=True).count() == 1
    assert all(e.actor_name == "worker" for e in aws_events)
