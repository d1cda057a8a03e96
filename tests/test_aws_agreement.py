"""The portal's record never disagrees with AWS under real timing (issue 13).

Every scenario runs through the stand-in with boto3 clients, with the timing real AWS
produces: a ListOutgoingCertificates that lags, an answer lost on the way back, a thing
detachment that takes seconds to propagate, a rate limiter with no token to give.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
import time_machine
from django.urls import path, reverse
from django.utils import timezone

from portal import urls as portal_urls
from standin.timing import TIMING
from tests.conftest import TARGET, add_certificate, api_token, committed, iot_for, make_user
from transfers import inventory, queue, ratelimit, workflow
from transfers.models import Certificate, Role, Transfer, TransferEvent
from transfers.workflow import Options, TransferError
from transfers.workflow.restore import _claim as claim_restore


@pytest.fixture
def world(standin, source, target, requester, approver):
    iot = iot_for(source)
    made = add_certificate(iot, "ACTIVE", ["DevicePublish", "Telemetry"], thing="sensor-1")
    run, _ = inventory.queue_sync(source, "us-east-1")
    inventory.sync_region(run.pk)
    cert = Certificate.objects.get(certificate_id=made["certificateId"])
    carol = make_user("carol", (target, Role.ADMIN))
    standin.reset_counters()  # count only what the portal does from here
    yield {"iot": iot, "tiot": iot_for(target), "cert": cert, "carol": carol, "control": standin}
    TIMING.clear()


def request(world, user) -> Transfer:
    return workflow.request_transfer(
        user,
        world["cert"],
        target_account_id=TARGET,
        message="Devices sold to Acme",
        reason="Sale",
        options=Options(),
    )


def approved(world, requester, approver, capture) -> Transfer:
    """Approved, its execution message held back (the test runs the worker)."""
    transfer = request(world, requester)
    with capture(execute=False):
        workflow.approve(approver, transfer.pk)
    return transfer


def to_pending(world, requester, approver) -> Transfer:
    transfer = request(world, requester)
    committed(workflow.approve, approver, transfer.pk, "ok")
    transfer.refresh_from_db()
    assert transfer.status == Transfer.Status.PENDING_ACCEPTANCE, transfer.error_message
    return transfer


def aws_status(iot, cert_id) -> str:
    return iot.describe_certificate(certificateId=cert_id)["certificateDescription"]["status"]


def transfers_sent(world, transfer) -> int:
    return world["control"].call_count("TransferCertificate", transfer.certificate_id)


# ----------------------------------------------------------------- 1. never by elimination


def test_a_lagging_listing_never_cancels_a_pending_transfer(world, requester, approver):
    TIMING.configure(outgoing_lag_seconds=3600)  # the listing omits everything recent
    transfer = to_pending(world, requester, approver)
    assert world["iot"].list_outgoing_certificates()["outgoingCertificates"] == []

    outcomes = committed(workflow.reconcile_pending)

    transfer.refresh_from_db()
    assert outcomes == {"pending": 1}
    assert transfer.status == Transfer.Status.PENDING_ACCEPTANCE
    assert transfer.restore_state == ""
    assert aws_status(world["iot"], transfer.certificate_id) == "PENDING_TRANSFER"
    assert world["control"].call_count("CancelCertificateTransfer") == 0
    assert world["control"].call_count("AttachPolicy") == 0  # nothing "restored"


@pytest.mark.parametrize("outside", ["reject", "cancel", "accept"])
def test_the_reconciler_decides_from_describe_certificate(world, requester, approver, outside):
    TIMING.configure(outgoing_lag_seconds=3600)
    transfer = to_pending(world, requester, approver)
    cert_id = transfer.certificate_id
    if outside == "reject":
        world["tiot"].reject_certificate_transfer(certificateId=cert_id, rejectReason="No")
    elif outside == "cancel":
        world["iot"].cancel_certificate_transfer(certificateId=cert_id)
    else:
        world["tiot"].accept_certificate_transfer(certificateId=cert_id)

    committed(workflow.reconcile_pending)

    transfer.refresh_from_db()
    expected = {"reject": "rejected", "cancel": "cancelled", "accept": "accepted"}[outside]
    assert transfer.status == expected
    if outside == "reject":
        assert transfer.reject_reason == "No"
    if outside == "accept":
        assert transfer.accept_date is not None
        assert aws_status(world["tiot"], cert_id) == "INACTIVE"
    else:  # back at the source: put back as the request chose
        assert transfer.restore_state == Transfer.Restore.DONE
        assert aws_status(world["iot"], cert_id) == "ACTIVE"


def test_gone_from_the_source_but_not_in_a_managed_target_is_not_called_accepted(
    world, requester, approver, monkeypatch
):
    transfer = to_pending(world, requester, approver)
    world["tiot"].accept_certificate_transfer(certificateId=transfer.certificate_id)
    # The target's answer lags (or the certificate went elsewhere): it does not have it.
    real_call = workflow.reconcile.aws.call

    def target_lags(client, operation, **kw):
        if operation == "describe_certificate" and client.portal_limit[0].startswith(TARGET):
            raise workflow.reconcile.aws.AwsError("ResourceNotFoundException", "no", operation)
        return real_call(client, operation, **kw)

    monkeypatch.setattr(workflow.reconcile.aws, "call", target_lags)
    assert workflow.reconcile_one(transfer.pk) == "unconfirmed"
    transfer.refresh_from_db()
    assert transfer.status == Transfer.Status.PENDING_ACCEPTANCE
    monkeypatch.setattr(workflow.reconcile.aws, "call", real_call)
    assert committed(workflow.reconcile_one, transfer.pk) == "accepted"


def lose_the_transfer_answer(world, requester, approver, capture) -> Transfer:
    """Approve and run the worker; AWS takes the TransferCertificate but its answer is lost."""
    transfer = approved(world, requester, approver, capture)
    TIMING.configure(lose_answers={"TransferCertificate": 1})
    with pytest.raises(workflow.RetryLater):
        workflow.execute(transfer.pk)
    transfer.refresh_from_db()
    assert transfer.status == Transfer.Status.PREPARING
    assert aws_status(world["iot"], transfer.certificate_id) == "PENDING_TRANSFER"
    return transfer


def test_cancelling_a_failed_transfer_that_is_pending_in_aws_cancels_it_there(
    world, requester, approver, django_capture_on_commit_callbacks
):
    transfer = lose_the_transfer_answer(
        world, requester, approver, django_capture_on_commit_callbacks
    )
    workflow.fail(transfer.pk, "ServiceUnavailableException", "Gave up after 10 retries.")

    committed(workflow.cancel, requester, transfer.pk)

    transfer.refresh_from_db()
    assert transfer.status == Transfer.Status.CANCELLED
    assert world["control"].call_count("CancelCertificateTransfer", transfer.certificate_id) == 1
    assert aws_status(world["iot"], transfer.certificate_id) == "ACTIVE"  # restored
    assert transfer.restore_state == Transfer.Restore.DONE


def test_cancelling_a_failed_transfer_the_target_accepted_says_so(
    world, requester, approver, django_capture_on_commit_callbacks
):
    transfer = lose_the_transfer_answer(
        world, requester, approver, django_capture_on_commit_callbacks
    )
    workflow.fail(transfer.pk, "ServiceUnavailableException", "Gave up after 10 retries.")
    world["tiot"].accept_certificate_transfer(certificateId=transfer.certificate_id)

    with pytest.raises(TransferError) as refused:
        committed(workflow.cancel, requester, transfer.pk)

    assert refused.value.code == "already_completed"
    transfer.refresh_from_db()
    assert transfer.status == Transfer.Status.ACCEPTED
    assert world["control"].call_count("CancelCertificateTransfer") == 0


def test_the_reconciler_finds_a_failed_transfer_pending_in_aws(
    world, requester, approver, django_capture_on_commit_callbacks
):
    transfer = lose_the_transfer_answer(
        world, requester, approver, django_capture_on_commit_callbacks
    )
    workflow.fail(transfer.pk, "ServiceUnavailableException", "Gave up after 10 retries.")

    assert committed(workflow.reconcile_pending) == {"pending": 1}

    transfer.refresh_from_db()
    assert transfer.status == Transfer.Status.PENDING_ACCEPTANCE
    assert transfer.finished_at is None and transfer.error_code == ""


# ----------------------------------------------------------------- 2. a lost answer


@pytest.mark.parametrize(
    ("meanwhile", "expected"),
    [("reject", "rejected"), ("accept", "accepted"), (None, "pending_acceptance")],
)
def test_a_lost_transfer_answer_is_never_sent_twice(
    world, requester, approver, django_capture_on_commit_callbacks, meanwhile, expected
):
    transfer = lose_the_transfer_answer(
        world, requester, approver, django_capture_on_commit_callbacks
    )
    cert_id = transfer.certificate_id
    if meanwhile == "reject":
        world["tiot"].reject_certificate_transfer(certificateId=cert_id, rejectReason="Not ours")
    elif meanwhile == "accept":
        world["tiot"].accept_certificate_transfer(certificateId=cert_id, setAsActive=True)

    committed(workflow.execute, transfer.pk)  # the task's retry

    transfer.refresh_from_db()
    assert transfer.status == expected
    assert transfers_sent(world, transfer) == 1
    if meanwhile == "reject":
        assert transfer.reject_reason == "Not ours"
        assert transfer.restore_state == Transfer.Restore.DONE
        assert aws_status(world["iot"], cert_id) == "ACTIVE"
    if meanwhile == "accept":
        assert aws_status(world["tiot"], cert_id) == "ACTIVE"
    events = list(transfer.events.values_list("action", flat=True))
    assert "earlier_attempt_found" in events


# ----------------------------------------------------------------- 3. restores


def to_rejected_without_restoring(world, requester, approver, capture) -> Transfer:
    transfer = to_pending(world, requester, approver)
    with capture(execute=False):  # the restore task is lost (a flushed broker, say)
        workflow.reject(world["carol"], transfer.pk, "Wrong devices")
    transfer.refresh_from_db()
    assert transfer.restore_state == Transfer.Restore.PENDING
    assert aws_status(world["iot"], transfer.certificate_id) == "INACTIVE"
    return transfer


def test_a_lost_restore_task_is_picked_up_by_the_sweep(
    world, requester, approver, django_capture_on_commit_callbacks
):
    transfer = to_rejected_without_restoring(
        world, requester, approver, django_capture_on_commit_callbacks
    )
    assert workflow.sweep_restores() == 0  # just ended: its own task may still come
    with time_machine.travel(timezone.now() + timedelta(minutes=2)):
        assert committed(workflow.sweep_restores) == 1
    transfer.refresh_from_db()
    assert transfer.restore_state == Transfer.Restore.DONE
    assert aws_status(world["iot"], transfer.certificate_id) == "ACTIVE"
    assert len(world["iot"].list_attached_policies(target=transfer.certificate_arn)["policies"])


def test_no_token_from_the_rate_limiter_leaves_the_restore_for_the_sweep(
    world, requester, approver, django_capture_on_commit_callbacks, monkeypatch
):
    transfer = to_rejected_without_restoring(
        world, requester, approver, django_capture_on_commit_callbacks
    )
    real_acquire = ratelimit.acquire
    given = []

    def starved(key, ceiling, max_wait=120.0):
        if key.endswith(":AttachThingPrincipal") and not given:
            given.append(key)
            raise ratelimit.RateLimitTimeout(f"{key}: no capacity within {max_wait} s", 3)
        return real_acquire(key, ceiling, max_wait)

    monkeypatch.setattr(ratelimit, "acquire", starved)
    assert workflow.restore(transfer.pk) == "retry"
    transfer.refresh_from_db()
    assert transfer.restore_state == Transfer.Restore.PARTIAL
    assert transfer.restored == ["attach_policy:DevicePublish", "attach_policy:Telemetry"]
    assert workflow.steps_left(transfer) == ["Attach thing sensor-1", "Set the certificate ACTIVE"]
    assert transfer.restore_next_at > timezone.now()

    with time_machine.travel(transfer.restore_next_at + timedelta(seconds=1)):
        assert committed(workflow.sweep_restores) == 1
    transfer.refresh_from_db()
    assert transfer.restore_state == Transfer.Restore.DONE
    assert aws_status(world["iot"], transfer.certificate_id) == "ACTIVE"
    # Each policy was attached once: the steps done were not repeated.
    assert world["control"].call_count("AttachPolicy") == 2


def test_a_restore_that_keeps_failing_needs_attention_and_a_person_can_retry(
    world, requester, approver, client, settings, django_capture_on_commit_callbacks
):
    settings.TRANSFER_RESTORE_TRIES = 3
    transfer = to_rejected_without_restoring(
        world, requester, approver, django_capture_on_commit_callbacks
    )
    world["control"].set_faults(throttle_rate=1.0, operations=["AttachPolicy"])
    outcomes = []
    for _ in range(3):
        Transfer.objects.filter(pk=transfer.pk).update(restore_next_at=timezone.now())
        outcomes.append(workflow.restore(transfer.pk))
    assert outcomes == ["retry", "retry", "attention"]
    transfer.refresh_from_db()
    assert transfer.restore_state == Transfer.Restore.ATTENTION
    assert workflow.sweep_restores() == 0  # the sweep leaves it to a person

    client.force_login(requester)
    page = client.get(transfer.get_absolute_url()).content.decode()
    assert "needs attention" in page
    for step in ("Attach policy DevicePublish", "Attach thing sensor-1", "ACTIVE"):
        assert step in page
    assert reverse("transfer_restore_retry", args=[transfer.pk]) in page

    world["control"].clear_faults()
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(reverse("transfer_restore_retry", args=[transfer.pk]))
    assert response.status_code == 302
    transfer.refresh_from_db()
    assert transfer.restore_state == Transfer.Restore.DONE
    assert aws_status(world["iot"], transfer.certificate_id) == "ACTIVE"
    assert transfer.events.filter(action="restore_retry", actor=requester).exists()


def test_a_viewer_cannot_retry_a_restore(
    world, requester, approver, viewer, client, django_capture_on_commit_callbacks
):
    transfer = to_rejected_without_restoring(
        world, requester, approver, django_capture_on_commit_callbacks
    )
    Transfer.objects.filter(pk=transfer.pk).update(restore_state=Transfer.Restore.ATTENTION)
    client.force_login(viewer)
    response = client.post(reverse("transfer_restore_retry", args=[transfer.pk]))
    assert response.status_code == 403
    transfer.refresh_from_db()
    assert transfer.restore_state == Transfer.Restore.ATTENTION


# ----------------------------------------------------------------- 6. things detach slowly


def test_the_worker_waits_for_a_thing_detachment_to_propagate(
    world, requester, approver, settings, django_capture_on_commit_callbacks
):
    settings.TRANSFER_THING_DETACH_WAIT_SECONDS = 5
    TIMING.configure(detach_propagation_seconds=0.3)
    transfer = approved(world, requester, approver, django_capture_on_commit_callbacks)
    world["control"].reset_counters()  # the request read the certificate once to plan
    assert committed(workflow.execute, transfer.pk) == "pending_acceptance"
    assert transfers_sent(world, transfer) == 1
    # It looked again from the thing's side: ListPrincipalThingsV2 once, whatever the wait.
    assert world["control"].call_count("ListThingPrincipals") >= 2
    assert world["control"].call_count("ListPrincipalThingsV2") == 1


def test_a_certificate_with_a_thing_calls_no_api_twice(
    world, requester, approver, django_capture_on_commit_callbacks
):
    """Each API has its own allowance: one that is called twice per certificate would hold a
    move of devices at half the rate (issue 25)."""
    transfer = approved(world, requester, approver, django_capture_on_commit_callbacks)
    world["control"].reset_counters()  # the request read the certificate once to plan
    assert committed(workflow.execute, transfer.pk) == "pending_acceptance"
    calls = world["control"].calls()["operations"]
    assert calls["ListPrincipalThingsV2"]["calls"] == 1
    assert calls["ListThingPrincipals"]["calls"] == 1
    twice = {op for op, entry in calls.items() if entry["calls"] > 1}
    assert twice <= {"DetachPolicy"}  # once for each of its two policies


def test_a_thing_detachment_that_does_not_propagate_fails_clearly(
    world, requester, approver, settings, django_capture_on_commit_callbacks
):
    settings.TRANSFER_THING_DETACH_WAIT_SECONDS = 1
    TIMING.configure(detach_propagation_seconds=30.0)
    transfer = approved(world, requester, approver, django_capture_on_commit_callbacks)
    world["control"].reset_counters()  # the request read the certificate once to plan
    assert committed(workflow.execute, transfer.pk) == "failed: ThingDetachNotPropagated"
    transfer.refresh_from_db()
    assert "still lists things attached (sensor-1)" in transfer.error_message
    assert transfers_sent(world, transfer) == 0
    assert world["control"].call_count("ListThingPrincipals") >= 2
    assert world["control"].call_count("ListPrincipalThingsV2") == 1


# ----------------------------------------------------------------- 5. web requests


def starve(monkeypatch, seen=None):
    def acquire(key, ceiling, max_wait=120.0):
        if seen is not None:
            seen.append(max_wait)
        raise ratelimit.RateLimitTimeout(f"{key}: no capacity within {max_wait} s", 7.2)

    monkeypatch.setattr(ratelimit, "acquire", acquire)


def test_a_page_waits_briefly_for_aws_and_says_it_is_busy(
    world, requester, approver, client, monkeypatch, settings
):
    settings.AWS_INTERACTIVE_WAIT_SECONDS = 4
    transfer = to_pending(world, requester, approver)
    seen: list[float] = []
    starve(monkeypatch, seen)
    client.force_login(world["carol"])
    response = client.post(reverse("transfer_accept", args=[transfer.pk]), follow=True)
    assert response.status_code == 200
    assert "AWS is busy for this account" in response.content.decode()
    assert "try again in 8 s" in response.content.decode()
    assert seen and set(seen) == {4}  # a page never waits the worker's 120 s
    transfer.refresh_from_db()
    assert transfer.status == Transfer.Status.PENDING_ACCEPTANCE  # nothing changed

    client.force_login(requester)
    response = client.post(reverse("transfer_reconcile", args=[transfer.pk]), follow=True)
    assert response.status_code == 200 and "AWS is busy" in response.content.decode()
    plan = client.post(
        reverse("transfer_new", args=[world["cert"].pk]),
        {"target": TARGET, "message": "m", "reason": "r", "action": "preview"},
    )
    assert plan.status_code == 200
    assert "AWS is busy for this account" in plan.content.decode()


def test_the_api_answers_503_with_retry_after_when_aws_is_busy(
    world, requester, approver, monkeypatch
):
    from rest_framework.test import APIClient

    transfer = to_pending(world, requester, approver)
    starve(monkeypatch)
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Token {api_token(world['carol'])}")
    response = api.post(f"/api/transfers/{transfer.pk}/accept/", {}, format="json")
    assert response.status_code == 503
    assert response["Retry-After"] == "8"
    assert response.json()["error"]["code"] == "RateLimited"
    transfer.refresh_from_db()
    assert transfer.status == Transfer.Status.PENDING_ACCEPTANCE


def test_a_refused_assume_role_is_a_clear_answer_not_a_500(
    world, requester, approver, client, monkeypatch
):
    transfer = to_pending(world, requester, approver)

    def refused(*args, **kwargs):
        raise workflow.reconcile.aws.AwsError("AccessDenied", "not trusted", "AssumeRole")

    monkeypatch.setattr(workflow.target.aws, "client", refused)
    client.force_login(world["carol"])
    response = client.post(reverse("transfer_accept", args=[transfer.pk]), follow=True)
    assert response.status_code == 200
    assert "may not assume the account" in response.content.decode()
    transfer.refresh_from_db()
    assert transfer.status == Transfer.Status.PENDING_ACCEPTANCE


def _aws_trouble(request):
    raise workflow.reconcile.aws.AwsError("ServiceUnavailableException", "down", retry_after=2)


urlpatterns = [
    path("aws-trouble/", _aws_trouble),
    path("api/aws-trouble/", _aws_trouble),
    *portal_urls.urlpatterns,
]


@pytest.mark.urls("tests.test_aws_agreement")
@pytest.mark.parametrize("where", ["/aws-trouble/", "/api/aws-trouble/"])
def test_aws_trouble_that_reaches_the_top_of_a_request_is_a_503_not_a_500(client, requester, where):
    client.force_login(requester)
    response = client.get(where)
    assert response.status_code == 503
    assert response["Retry-After"] == "2"
    if where.startswith("/api/"):
        assert response.json()["error"]["message"].startswith("AWS is busy for this account")
    else:
        assert "AWS is busy for this account: try again in 2 s." in response.content.decode()


# ----------------------------------------------------------------- the inbox rule


def test_the_inbox_the_api_inbox_and_accept_follow_one_rule(world, requester, approver, client):
    from rest_framework.test import APIClient

    transfer = to_pending(world, requester, approver)
    # The row names the target's account id but not the managed account (say the account
    # was added to the portal after the request): nobody may accept it in the portal.
    Transfer.objects.filter(pk=transfer.pk).update(target=None)
    client.force_login(world["carol"])
    assert f"/transfers/{transfer.pk}/" not in client.get(reverse("incoming")).content.decode()
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Token {api_token(world['carol'])}")
    assert api.get("/api/incoming/").json()["count"] == 0
    # And with the relation set, all three agree the other way.
    Transfer.objects.filter(pk=transfer.pk).update(target=transfer.target_id)
    assert f"/transfers/{transfer.pk}/" in client.get(reverse("incoming")).content.decode()
    assert api.get("/api/incoming/").json()["count"] == 1


# ----------------------------------------------------------------- 4. one feeder per batch


def test_the_reconciler_never_starts_a_second_feeder(
    standin, source, target, requester, approver, monkeypatch, settings
):
    from transfers import batches

    iot = iot_for(source)
    for _ in range(3):
        add_certificate(iot, "INACTIVE")
    run, _ = inventory.queue_sync(source, "us-east-1")
    inventory.sync_region(run.pk)
    certs = list(Certificate.objects.filter(account=source))
    batch = batches.request_batch(
        requester,
        certs,
        [],
        target_account_id=TARGET,
        message="m",
        reason="r",
        options=Options(),
    )
    sent: list[tuple] = []
    monkeypatch.setattr(queue, "send_now", lambda name, *a, **kw: sent.append((name, *a)))
    batches.approve(approver, batch)
    batches.approve_transfers(batch.pk, approver.pk)
    waiting, lease = batches.feed(batch.pk)
    assert waiting == 3 and lease

    later = timezone.now() + timedelta(minutes=settings.TRANSFER_STALL_MINUTES + 1)
    sent.clear()
    with time_machine.travel(later):
        # Long after the approval, the feeder still ticks (it renews its lease) and the
        # transfers wait their turn: nothing is stalled, nothing is sent again.
        Transfer.objects.filter(batch=batch).update(queued_at=None)
        waiting, lease = batches.feed(batch.pk, lease)
        sent.clear()
        workflow.requeue_stalled()
    assert [s for s in sent if s[0] in {"feed_batch", "execute_transfer"}] == []

    with time_machine.travel(later + timedelta(minutes=5)):  # the feeder's lease ran out
        workflow.requeue_stalled()
        workflow.requeue_stalled()  # a second tick before the new feeder ran
        assert [s for s in sent if s[0] == "feed_batch"] == [("feed_batch", batch.pk)] * 2
        # ... and only one of those two feeders gets the batch.
        assert batches.feed(batch.pk)[1] is not None
        assert batches.feed(batch.pk) == (0, None)
    assert TransferEvent.objects.filter(action="requeued").count() == 0


def test_a_restore_whose_worker_died_is_picked_up_when_its_lease_runs_out(
    world, requester, approver, settings, django_capture_on_commit_callbacks
):
    transfer = to_rejected_without_restoring(
        world, requester, approver, django_capture_on_commit_callbacks
    )
    assert claim_restore(transfer.pk)  # a worker took it, then died
    soon = timezone.now() + timedelta(seconds=settings.TRANSFER_LEASE_SECONDS - 10)
    with time_machine.travel(soon):
        assert workflow.sweep_restores() == 0  # its lease still holds
    later = timezone.now() + timedelta(seconds=settings.TRANSFER_LEASE_SECONDS + 60)
    with time_machine.travel(later):
        assert committed(workflow.sweep_restores) == 1
    transfer.refresh_from_db()
    assert transfer.restore_state == Transfer.Restore.DONE
