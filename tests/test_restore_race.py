"""A restore owns its certificate until it is done: no new transfer meanwhile, and no
restore started while a newer transfer is open (issue 22, point 9)."""

from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone
from rest_framework.test import APIClient

from tests.conftest import TARGET, add_certificate, api_token, committed, iot_for
from transfers import aws, batches, inventory, leases, workflow
from transfers.models import Certificate, Transfer
from transfers.workflow import Options, TransferError


@pytest.fixture
def world(standin, source, target, requester, approver):
    iot = iot_for(source)
    made = add_certificate(iot, "ACTIVE", ["DevicePublish", "Telemetry"], thing="sensor-1")
    run, _ = inventory.queue_sync(source, "us-east-1")
    inventory.sync_region(run.pk)
    cert = Certificate.objects.get(certificate_id=made["certificateId"])
    return {"iot": iot, "cert": cert, "control": standin}


def request(world, user) -> Transfer:
    return workflow.request_transfer(
        user, world["cert"], target_account_id=TARGET, message="m", reason="r", options=Options()
    )


def cancelled(world, requester, approver, capture, *, run_restore=True, meanwhile=None):
    """A transfer prepared (deactivated, detached), pending, then cancelled."""
    transfer = request(world, requester)
    committed(workflow.approve, approver, transfer.pk)
    if meanwhile:
        meanwhile()
    with capture(execute=run_restore):
        workflow.cancel(requester, transfer.pk)
    transfer.refresh_from_db()
    return transfer


@pytest.fixture
def unfinished(world, requester, approver, settings, django_capture_on_commit_callbacks):
    """Make the first transfer's restore stop in ``state``: pending (its task not run yet),
    partial (a policy gone, tries left) or attention (a policy gone, no tries left)."""

    def make(state: str) -> Transfer:
        settings.TRANSFER_RESTORE_TRIES = 1 if state == "attention" else 5
        transfer = cancelled(
            world,
            requester,
            approver,
            django_capture_on_commit_callbacks,
            run_restore=state != "pending",
            # While it is pending: putting the policy back then fails for good.
            meanwhile=None
            if state == "pending"
            else lambda: world["iot"].delete_policy(policyName="Telemetry"),
        )
        assert transfer.status == "cancelled" and transfer.restore_state == state
        return transfer

    return make


@pytest.mark.parametrize("state", ["pending", "partial", "attention"])
def test_a_certificate_whose_restore_has_not_finished_cannot_be_requested(
    world, requester, unfinished, state
):
    first = unfinished(state)
    plan = workflow.make_plan(world["cert"], TARGET, Options())
    assert plan.blockers == [
        f"Transfer #{first.pk} has not finished putting back what it removed from this "
        f"certificate ({first.get_restore_state_display().lower()}); a new transfer would "
        "prepare the certificate while that restore re-attaches and reactivates it. It can "
        f"be requested once the restore is done: on transfer #{first.pk}'s page, try again, "
        "or say you finished it by hand."
    ]
    with pytest.raises(TransferError) as refused:
        request(world, requester)
    assert refused.value.code == "blocked" and refused.value.status == 409
    assert f"Transfer #{first.pk} has not finished" in refused.value.message
    assert list(Transfer.objects.values_list("pk", flat=True)) == [first.pk]


def test_the_form_and_the_api_say_why(world, requester, unfinished, client):
    first = unfinished("attention")
    why = f"Transfer #{first.pk} has not finished putting back what it removed"
    client.force_login(requester)
    page = client.post(
        reverse("transfer_new", args=[world["cert"].pk]),
        {"target": TARGET, "message": "m", "reason": "r", "action": "preview", "restore": "on"}
        | {"deactivate": "on", "detach_policies": "on", "detach_things": "on"},
    ).content.decode()
    assert why in page and "Request this transfer" not in page

    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Token {api_token(requester)}")
    plan = api.post(
        reverse("api:certificate-plan", args=[world["cert"].pk]),
        {"target_account_id": TARGET},
        format="json",
    ).json()
    assert any(why in b for b in plan["blockers"])
    created = api.post(
        reverse("api:transfer-list"),
        {
            "certificate": world["cert"].pk,
            "target_account_id": TARGET,
            "message": "m",
            "reason": "r",
            "plan_fingerprint": plan["fingerprint"],
        },
        format="json",
    )
    assert created.status_code == 409 and why in created.json()["error"]["message"]
    assert Transfer.objects.count() == 1


def test_a_batch_leaves_out_a_certificate_whose_restore_has_not_finished(
    world, requester, unfinished
):
    first = unfinished("partial")
    other = add_certificate(world["iot"], "INACTIVE")
    inventory.sync_region(inventory.queue_sync(first.source, "us-east-1")[0].pk)
    certs, missing = batches.select(requester, [first.certificate_id, other["certificateId"]])
    batch = batches.request_batch(
        requester,
        certs,
        missing,
        target_account_id=TARGET,
        message="m",
        reason="r",
        options=Options(),
    )
    assert list(batch.transfers.values_list("certificate_id", flat=True)) == [
        other["certificateId"]
    ]
    assert batch.skipped == [
        {
            "certificate_id": first.certificate_id,
            "reason": f"transfer #{first.pk} has not finished putting back what it removed: "
            "its restore must be done first",
        }
    ]


def test_finished_by_hand_frees_the_certificate(world, requester, viewer, unfinished, client):
    first = unfinished("attention")
    client.force_login(requester)
    page = client.get(first.get_absolute_url()).content.decode()
    assert reverse("transfer_restored_by_hand", args=[first.pk]) in page

    client.force_login(viewer)  # may see it, may not say so
    response = client.post(reverse("transfer_restored_by_hand", args=[first.pk]))
    assert response.status_code == 403
    assert Transfer.objects.get(pk=first.pk).restore_state == "attention"

    client.force_login(requester)
    response = client.post(reverse("transfer_restored_by_hand", args=[first.pk]), follow=True)
    assert "finished by hand" in response.content.decode()
    first.refresh_from_db()
    assert first.restore_state == Transfer.Restore.DONE
    event = first.events.get(action="restored_by_hand")
    assert event.actor == requester and event.details["steps_left"] == ["Attach policy Telemetry"]
    with pytest.raises(TransferError) as refused:  # once is enough
        workflow.restored_by_hand(requester, first.pk)
    assert refused.value.code == "invalid_state"

    second = request(world, requester)
    assert second.status == "requested" and second.pk != first.pk


def test_a_restore_being_tried_is_not_finished_by_hand(world, requester, unfinished):
    first = unfinished("partial")
    Transfer.objects.filter(pk=first.pk).update(lease_until=leases.until())  # a worker has it
    with pytest.raises(TransferError) as refused:
        workflow.restored_by_hand(requester, first.pk)
    assert refused.value.code == "invalid_state"
    assert Transfer.objects.get(pk=first.pk).restore_state == "partial"

    # A worker that stalled past its lease: the person's word stands, the worker's is refused.
    Transfer.objects.filter(pk=first.pk).update(
        lease_until=timezone.now() - timedelta(seconds=1), lease_token="stalled"
    )
    workflow.restored_by_hand(requester, first.pk)
    assert not leases.release(first.pk, "stalled", restore_state="partial")
    assert Transfer.objects.get(pk=first.pk).restore_state == Transfer.Restore.DONE


def test_a_retried_restore_that_finishes_frees_the_certificate(
    world, requester, unfinished, django_capture_on_commit_callbacks
):
    first = unfinished("attention")
    with pytest.raises(TransferError):
        request(world, requester)
    world["iot"].create_policy(
        policyName="Telemetry", policyDocument='{"Version":"2012-10-17","Statement":[]}'
    )
    with django_capture_on_commit_callbacks(execute=True):
        workflow.retry_restore(requester, first.pk)
    assert Transfer.objects.get(pk=first.pk).restore_state == Transfer.Restore.DONE
    assert request(world, requester).status == "requested"


def test_a_failed_transfer_is_not_cancelled_into_a_restore_while_a_newer_one_is_open(
    world, requester, approver, monkeypatch
):
    """The other way round: a failed transfer left the certificate deactivated and bare, a
    newer transfer was requested; cancelling the failed one now would put everything back
    under the newer one."""
    real_call = aws.call

    def denied(aws_client, operation, **kwargs):
        if operation == "transfer_certificate":
            raise aws.AwsError("AccessDeniedException", "no", "TransferCertificate")
        return real_call(aws_client, operation, **kwargs)

    failed = request(world, requester)
    monkeypatch.setattr(aws, "call", denied)
    committed(workflow.approve, approver, failed.pk)
    monkeypatch.setattr(aws, "call", real_call)
    failed.refresh_from_db()
    assert failed.status == "failed" and failed.deactivated and failed.detached_policies

    newer = request(world, requester)
    world["control"].reset_counters()
    with pytest.raises(TransferError) as refused:
        committed(workflow.cancel, requester, failed.pk)
    assert refused.value.code == "newer_transfer_open" and refused.value.status == 409
    assert f"Transfer #{newer.pk} of this certificate is open" in refused.value.message
    failed.refresh_from_db()
    assert failed.status == "failed" and failed.restore_state == ""
    assert world["control"].call_count("AttachPolicy") == 0
    desc = world["iot"].describe_certificate(certificateId=failed.certificate_id)
    assert desc["certificateDescription"]["status"] == "INACTIVE"

    # Once the newer one has ended, the failed one is cancelled and put back as before.
    workflow.withdraw(requester, newer.pk)
    committed(workflow.cancel, requester, failed.pk)
    failed.refresh_from_db()
    assert failed.status == "cancelled" and failed.restore_state == Transfer.Restore.DONE
    desc = world["iot"].describe_certificate(certificateId=failed.certificate_id)
    assert desc["certificateDescription"]["status"] == "ACTIVE"
