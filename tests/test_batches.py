"""Bulk transfers: selection, preflight, one approval, feeding at the account's rate."""

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse
from django.utils import timezone

from tests.conftest import TARGET, add_certificate, committed, iot_for, make_user
from transfers import batches, inventory, workflow
from transfers.models import Certificate, Role, Transfer, TransferBatch
from transfers.workflow import Options, TransferError


@pytest.fixture
def fleet(standin, source, target):
    iot = iot_for(source)
    made = [add_certificate(iot, "ACTIVE", ["DevicePublish"], thing=f"s-{i}") for i in range(4)]
    made.append(add_certificate(iot, "REVOKED"))
    inventory.sync_region(inventory.queue_sync(source, "us-east-1")[0].pk)
    certs = list(Certificate.objects.filter(certificate_id__in=[m["certificateId"] for m in made]))
    return {
        "iot": iot,
        "ids": [m["certificateId"] for m in made],
        "certs": certs,
        "control": standin,
    }


def request(user, fleet, ids=None, **kw):
    certs, missing = batches.select(user, ids or fleet["ids"])
    params = {
        "target_account_id": TARGET,
        "message": "Bulk",
        "reason": "Sale",
        "options": Options(),
    }
    params.update(kw)
    return batches.request_batch(user, certs, missing, **params)


def test_parse_ids_takes_ids_arns_and_csv():
    a, b = "a" * 64, "b" * 64
    text = f'certificateId,name\n"{a}",x\narn:aws:iot:us-east-1:111111111111:cert/{b}\n{a.upper()}'
    ids, bad = batches.parse_ids(text)
    assert ids == [a, b]
    assert bad == ["name", "x"]


def test_a_batch_requests_what_can_go_and_lists_what_cannot(fleet, requester):
    batch = request(requester, fleet, ids=fleet["ids"] + ["c" * 64])
    assert batch.transfers.count() == 4
    reasons = {s["certificate_id"]: s["reason"] for s in batch.skipped}
    assert reasons[fleet["ids"][4]] == "REVOKED certificates cannot be transferred"
    assert "not in the inventory" in reasons["c" * 64]
    assert all(t.status == "requested" for t in batch.transfers.all())
    assert all(t.events.filter(action="requested").exists() for t in batch.transfers.all())


def test_the_same_rules_as_a_single_request(fleet, requester, viewer):
    with pytest.raises(TransferError) as refused:
        request(viewer, fleet)
    assert refused.value.status == 403
    for kw, code in [
        ({"target_account_id": "1234"}, "invalid_target"),
        ({"target_account_id": "111111111111"}, "invalid_target"),
        ({"message": "x" * 129}, "invalid_message"),
        ({"reason": ""}, "invalid_reason"),
    ]:
        with pytest.raises(TransferError) as refused:
            request(requester, fleet, **kw)
        assert refused.value.code == code
    assert not TransferBatch.objects.exists() and not Transfer.objects.exists()


def test_certificates_with_an_open_transfer_are_left_out(fleet, requester):
    first = request(requester, fleet, ids=fleet["ids"][:2])
    second = request(requester, fleet)
    assert first.transfers.count() == 2 and second.transfers.count() == 2
    assert sum(s["reason"] == "already has an open transfer" for s in second.skipped) == 2


def test_one_approval_runs_them_all_once(fleet, requester, approver):
    batch = request(requester, fleet)
    with pytest.raises(TransferError) as refused:
        batches.approve(requester, batch)
    assert refused.value.code == "self_approval"
    assert committed(batches.approve, approver, batch, "ok") == 4
    progress = batches.progress(batch)
    assert progress["pending"] == 4 and progress["waiting"] == 0 and not progress["live"]
    for t in batch.transfers.all():
        assert fleet["control"].call_count("TransferCertificate", t.certificate_id) == 1
        assert t.approver == approver


def test_the_feeder_hands_out_a_window_at_a_time(
    fleet, requester, approver, source, django_capture_on_commit_callbacks, monkeypatch
):
    source.api_rate = 1.0  # a window of two transfers (the calls in series left out)
    source.save()
    monkeypatch.setattr(batches, "SERIAL_CALLS", 0)
    batch = request(requester, fleet)
    with django_capture_on_commit_callbacks(execute=False):
        batches.approve(approver, batch)
        batches.approve_transfers(batch.pk, approver.pk)  # the background part, inline
    from transfers import queue

    sent = []
    monkeypatch.setattr(
        queue,
        "send_now",
        lambda name, pk, **kw: sent.append(pk) if name == "execute_transfer" else None,
    )
    waiting, lease = batches.feed(batch.pk)
    assert waiting == 4 and lease  # all still approved: the messages are in flight
    assert len(sent) == 2
    assert batches.feed(batch.pk) == (0, None)  # a second feeder finds the batch held
    waiting, lease = batches.feed(batch.pk, lease)  # the feeder's own next tick
    assert waiting == 4 and len(sent) == 2  # the window is full until those two are done
    # The window is set; the executions need not sleep in the limiter at 1 call a second.
    from transfers import aws
    from transfers.models import AwsAccount, RateBucket

    AwsAccount.objects.filter(pk=source.pk).update(api_rate=1000.0)
    RateBucket.objects.all().delete()
    aws.clear_cache()
    for pk in sent:
        workflow.execute(pk)
    AwsAccount.objects.filter(pk=source.pk).update(api_rate=1.0)  # the same window again
    aws.clear_cache()
    waiting, lease = batches.feed(batch.pk, lease)
    assert len(sent) == 4 and len(set(sent)) == 4
    AwsAccount.objects.filter(pk=source.pk).update(api_rate=1000.0)
    aws.clear_cache()
    for pk in sent[2:]:
        workflow.execute(pk)
    assert batches.feed(batch.pk, lease) == (0, None)  # done: the lease is given back
    batch.refresh_from_db()
    assert batch.feeder_until is None


def test_the_transfers_in_flight_follow_from_the_rate():
    # Two seconds of work, and enough for each serial call's wait at low rates.
    assert batches.in_flight(1) == 2 + batches.SERIAL_CALLS
    assert batches.in_flight(3) == 6 + batches.SERIAL_CALLS
    assert batches.in_flight(50) == 100 + batches.SERIAL_CALLS
    assert batches.in_flight(0.1) == 1 + batches.SERIAL_CALLS


def test_a_worker_done_with_a_transfer_hands_on_the_batchs_next_one(
    fleet, requester, approver, source, django_capture_on_commit_callbacks, monkeypatch
):
    """Issue 25 §2: the transfers in flight stay what the feeder made them without waiting
    for its next tick (which waits in the queue behind the work it handed out)."""
    from transfers import queue, tasks

    source.api_rate = 1000.0  # no wait in the limiter
    source.save()
    batch = request(requester, fleet)
    with django_capture_on_commit_callbacks(execute=False):
        batches.approve(approver, batch)
        batches.approve_transfers(batch.pk, approver.pk)
    sent = []
    monkeypatch.setattr(
        queue,
        "send_now",
        lambda name, pk, **kw: sent.append(pk) if name == "execute_transfer" else None,
    )
    batches.feed(batch.pk)
    first, second, third, fourth = batch.transfers.order_by("pk").values_list("pk", flat=True)
    sent.clear()  # the feeder's window (the whole batch at this rate): take back two of it
    Transfer.objects.filter(pk__in=[third, fourth]).update(queued_at=None)

    # A message for a transfer another worker holds or finished hands nothing on.
    Transfer.objects.filter(pk=first).update(status=Transfer.Status.PENDING_ACCEPTANCE)
    assert tasks.execute_transfer.run(first).startswith("skipped")
    assert sent == []
    Transfer.objects.filter(pk=first).update(status=Transfer.Status.APPROVED)

    # Done with the first: the next ready one (the second is still in flight) goes out, once.
    assert tasks.execute_transfer.run(first) == "pending_acceptance"
    assert sent == [third]
    assert batch.transfers.get(pk=third).queued_at is not None
    # Someone else took the fourth a moment ago (the feeder, another worker): not sent twice.
    Transfer.objects.filter(pk=fourth).update(queued_at=timezone.now())
    assert tasks.execute_transfer.run(second) == "pending_acceptance"
    assert sent == [third]
    # A paused batch hands nothing on: an approver resumes it.
    Transfer.objects.filter(pk=fourth).update(queued_at=None)
    TransferBatch.objects.filter(pk=batch.pk).update(paused_at=timezone.now())
    assert tasks.execute_transfer.run(third) == "pending_acceptance"
    assert sent == [third]
    TransferBatch.objects.filter(pk=batch.pk).update(paused_at=None)
    assert batches.hand_on(third) == fourth
    assert sent == [third, fourth]
    assert batches.hand_on(fourth) is None  # nothing left


def test_retry_failed_and_cancel_pending(fleet, requester, approver):
    batch = request(requester, fleet)
    iot = fleet["iot"]
    victim = batch.transfers.order_by("pk").first()
    iot.update_certificate(certificateId=victim.certificate_id, newStatus="REVOKED")
    committed(batches.approve, approver, batch)
    assert batches.progress(batch)["failed"] == 1
    iot.update_certificate(certificateId=victim.certificate_id, newStatus="INACTIVE")
    assert committed(batches.retry_failed, approver, batch) == 1
    assert batches.progress(batch)["pending"] == 4
    done, errors = committed(batches.cancel_pending, requester, batch)
    assert done == 4 and errors == []
    for t in batch.transfers.all():
        assert t.status == "cancelled" and t.restore_state == "done"


class TestPages:
    def test_select_in_the_list_preflight_and_submit(self, client, fleet, requester):
        client.force_login(requester)
        listing = client.get(reverse("certificate_list")).content.decode()
        assert 'form="bulk"' in listing
        page = client.get(reverse("batch_new"), {"cert": fleet["ids"][:2]})
        assert fleet["ids"][0] in page.content.decode()
        data = {
            "target": TARGET,
            "message": "m",
            "reason": "r",
            "ids": "\n".join(fleet["ids"]),
            "deactivate": "on",
            "detach_policies": "on",
            "detach_things": "on",
            "restore": "on",
        }
        preview = client.post(reverse("batch_new"), {**data, "action": "preview"})
        body = preview.content.decode()
        assert "<strong>4</strong> ready" in body and "REVOKED certificates" in body
        assert not TransferBatch.objects.exists()
        response = client.post(reverse("batch_new"), {**data, "action": "submit"})
        batch = TransferBatch.objects.get()
        assert response.status_code == 302 and response["Location"] == batch.get_absolute_url()

    def test_all_matching_the_filter(self, client, fleet, requester):
        client.force_login(requester)
        page = client.get(reverse("batch_new"), {"all": "1", "status": "REVOKED"})
        body = page.content.decode()
        assert fleet["ids"][4] in body and fleet["ids"][0] not in body

    def test_a_csv_upload(self, client, fleet, requester):
        client.force_login(requester)
        csv = SimpleUploadedFile(
            "ids.csv", ("certificateId\n" + "\n".join(fleet["ids"][:3])).encode()
        )
        page = client.post(
            reverse("batch_new"),
            {
                "target": TARGET,
                "message": "m",
                "reason": "r",
                "csv_file": csv,
                "deactivate": "on",
                "detach_policies": "on",
                "detach_things": "on",
                "action": "preview",
            },
        )
        assert "<strong>3</strong> ready" in page.content.decode()

    def test_a_viewer_may_not_and_an_outsider_sees_nothing(
        self, client, fleet, requester, viewer, outsider
    ):
        batch = request(requester, fleet)
        client.force_login(viewer)
        assert client.get(reverse("batch_new")).status_code == 403
        assert client.post(reverse("batch_approve", args=[batch.pk])).status_code == 403
        client.force_login(outsider)
        assert client.get(batch.get_absolute_url()).status_code == 404
        for action in ("approve", "decline", "withdraw", "retry", "cancel"):
            assert client.post(reverse(f"batch_{action}", args=[batch.pk])).status_code == 404
        assert batch.transfers.filter(status="requested").count() == 4

    def test_the_batch_page_shows_live_progress(
        self, client, fleet, requester, approver, django_capture_on_commit_callbacks
    ):
        batch = request(requester, fleet)
        client.force_login(approver)
        with django_capture_on_commit_callbacks(execute=False):
            client.post(reverse("batch_approve", args=[batch.pk]), {"comment": "go"})
        page = client.get(batch.get_absolute_url()).content.decode()
        assert 'hx-trigger="every 2s"' in page and "being approved" in page
        assert 'hx-trigger="every 5s" hx-select="#batch-transfers"' in page  # the table too
        fragment = client.get(
            batch.get_absolute_url(), headers={"HX-Request": "true", "HX-Target": "progress"}
        )
        assert fragment.content.decode().lstrip().startswith('<div id="progress"')

    def test_self_approval_through_the_page(self, client, fleet, source):
        both = make_user("both", (source, Role.REQUESTER), (source, Role.APPROVER))
        batch = request(both, fleet)
        client.force_login(both)
        assert client.post(reverse("batch_approve", args=[batch.pk])).status_code == 403
        assert batch.transfers.filter(status="requested").count() == 4

    def test_the_batch_page_lists_its_transfers_by_state_a_page_at_a_time(
        self, client, fleet, requester, approver, monkeypatch
    ):
        from transfers.views import batches as batch_views

        monkeypatch.setattr(batch_views, "TRANSFERS_PER_PAGE", 3)
        batch = request(requester, fleet)
        first = batch.transfers.order_by("pk").first()
        fleet["iot"].update_certificate(certificateId=first.certificate_id, newStatus="REVOKED")
        committed(batches.approve, approver, batch)
        client.force_login(requester)

        def listed(**params):
            response = client.get(batch.get_absolute_url(), params)
            return [t.pk for t in response.context["transfers"]]

        all_pks = list(batch.transfers.order_by("pk").values_list("pk", flat=True))
        assert listed() + listed(page=2) == all_pks
        assert listed(state="failed") == [first.pk]
        assert listed(state="pending_acceptance") == all_pks[1:4]  # the first page of three
        page = client.get(batch.get_absolute_url(), {"state": "failed"}).content.decode()
        assert "Transfers 1–1 of 1" not in page  # one page: no pager
        assert listed(state="<script>") == listed()  # unknown state: all, not an error
        assert listed(state="accepted") == []


def test_the_rate_counts_only_the_time_since_approval_in_the_first_minute(
    fleet, requester, approver, time_machine
):
    from datetime import timedelta

    from django.utils import timezone

    batch = request(requester, fleet)
    committed(batches.approve, approver, batch)  # all four reach pending at once here
    now = timezone.now()
    TransferBatch.objects.filter(pk=batch.pk).update(decided_at=now)
    batch.transfers.update(pending_since=now)
    batch.refresh_from_db()
    time_machine.move_to(now + timedelta(seconds=10))
    assert batches.progress(batch)["rate"] == pytest.approx(4 / 10, rel=0.01)  # not 4 / 60
    time_machine.move_to(now + timedelta(seconds=50))
    assert batches.progress(batch)["rate"] == pytest.approx(4 / 50, rel=0.01)
    time_machine.move_to(now + timedelta(seconds=90))
    assert batches.progress(batch)["rate"] == 0  # none in the last minute


def test_cancelling_a_batch_answers_at_once_and_cancels_in_the_background(
    client, fleet, requester, approver, django_capture_on_commit_callbacks
):
    batch = request(requester, fleet)
    committed(batches.approve, approver, batch)
    assert batches.progress(batch)["pending"] == 4
    fleet["control"].reset_counters()
    client.force_login(requester)
    with django_capture_on_commit_callbacks(execute=False) as queued:
        response = client.post(reverse("batch_cancel", args=[batch.pk]), follow=True)
    assert response.status_code == 200
    assert "Cancelling 4 pending transfers in AWS, in the background" in response.content.decode()
    assert fleet["control"].call_count("CancelCertificateTransfer") == 0  # not in the request
    batch.refresh_from_db()
    assert batch.cancel_requested_at is not None and batches.progress(batch)["cancelling"]
    for callback in queued:  # the worker
        callback()
    assert fleet["control"].call_count("CancelCertificateTransfer") == 4
    assert set(batch.transfers.values_list("status", flat=True)) == {"cancelled"}


def test_a_batch_is_approved_in_the_background_a_chunk_per_transaction(
    fleet, requester, approver, monkeypatch, django_capture_on_commit_callbacks
):
    batch = request(requester, fleet)
    with django_capture_on_commit_callbacks(execute=False):
        assert batches.approve(approver, batch, "ok") == 4
    assert batch.transfers.filter(status="requested").count() == 4  # nothing in the request
    monkeypatch.setattr(batches, "CHUNK", 2)
    real_approve = workflow.approve
    seen = []

    def approve_then_die_on_the_third(user, pk, comment="", **kw):
        seen.append(pk)
        if len(seen) == 3:
            raise RuntimeError("the worker died")
        return real_approve(user, pk, comment, **kw)

    monkeypatch.setattr(workflow, "approve", approve_then_die_on_the_third)
    with django_capture_on_commit_callbacks(execute=False), pytest.raises(RuntimeError):
        batches.approve_transfers(batch.pk, approver.pk, "ok")
    # The first chunk was committed on its own; the second rolled back whole.
    assert batch.transfers.filter(status="approved").count() == 2
    monkeypatch.setattr(workflow, "approve", real_approve)
    with django_capture_on_commit_callbacks(execute=False):
        assert batches.approve_transfers(batch.pk, approver.pk, "ok") == 2  # resumes
    assert batch.transfers.filter(status="approved").count() == 4


@pytest.fixture
def pending_batch(fleet, requester, approver):
    batch = request(requester, fleet)
    committed(batches.approve, approver, batch)
    assert batches.progress(batch)["pending"] == 4
    fleet["control"].reset_counters()
    return batch


def test_cancelling_a_batch_calls_aws_outside_any_transaction(
    pending_batch, requester, fleet, monkeypatch
):
    from django.db import connection

    from transfers import aws

    outside = len(connection.atomic_blocks)  # the test's own transaction
    depths, real_call = [], aws.call

    def call(aws_client, operation, **kwargs):
        if operation == "cancel_certificate_transfer":
            depths.append(len(connection.atomic_blocks))
        return real_call(aws_client, operation, **kwargs)

    monkeypatch.setattr(aws, "call", call)
    assert committed(batches.cancel_transfers, pending_batch.pk, requester.pk) == (4, [])
    assert depths == [outside] * 4
    assert set(pending_batch.transfers.values_list("status", flat=True)) == {"cancelled"}


def test_an_error_mid_batch_keeps_the_cancels_aws_already_did(
    pending_batch, requester, fleet, monkeypatch, django_capture_on_commit_callbacks
):
    real_cancel, seen = workflow.cancel, []

    def cancel_then_die_on_the_third(user, pk):
        seen.append(pk)
        if len(seen) == 3:
            raise RuntimeError("the worker died")
        return real_cancel(user, pk)

    monkeypatch.setattr(workflow, "cancel", cancel_then_die_on_the_third)
    with django_capture_on_commit_callbacks(execute=False), pytest.raises(RuntimeError):
        batches.cancel_transfers(pending_batch.pk, requester.pk)
    # AWS cancelled two: the portal still knows it, with the audit trail of each.
    assert fleet["control"].call_count("CancelCertificateTransfer") == 2
    cancelled = pending_batch.transfers.filter(status="cancelled")
    assert sorted(cancelled.values_list("pk", flat=True)) == seen[:2]
    for t in cancelled:
        assert t.events.filter(action="CancelCertificateTransfer", ok=True).exists()
        assert t.events.filter(action="cancel", to_status="cancelled").exists()
    monkeypatch.setattr(workflow, "cancel", real_cancel)
    with django_capture_on_commit_callbacks(execute=False):
        assert batches.cancel_transfers(pending_batch.pk, requester.pk) == (2, [])  # resumes
    assert fleet["control"].call_count("CancelCertificateTransfer") == 4  # none twice
    assert set(pending_batch.transfers.values_list("status", flat=True)) == {"cancelled"}


def test_declining_a_batch_commits_each_transfer_on_its_own(
    fleet, requester, approver, monkeypatch, django_capture_on_commit_callbacks
):
    from django.db import connection

    batch = request(requester, fleet)
    outside = len(connection.atomic_blocks)  # the test's own transaction
    real_decline, depths = workflow.decline, []

    def decline_then_die_on_the_third(user, pk, comment=""):
        depths.append(len(connection.atomic_blocks))
        if len(depths) == 3:
            raise RuntimeError("the web process died")
        return real_decline(user, pk, comment)

    monkeypatch.setattr(workflow, "decline", decline_then_die_on_the_third)
    with django_capture_on_commit_callbacks(execute=False), pytest.raises(RuntimeError):
        batches.decline(approver, batch, "Not now")
    assert depths == [outside] * 3  # no transaction around them: each commits its own
    # The decision and the two declines done before the error stay recorded.
    batch.refresh_from_db()
    assert batch.approver == approver and batch.decision_comment == "Not now"
    assert batch.transfers.filter(status="declined").count() == 2
    with pytest.raises(TransferError) as refused:  # the decision stands: no approval now
        batches.approve(approver, batch)
    assert refused.value.code == "already_decided"


def test_a_batch_cancel_whose_background_part_was_lost_is_sent_again_once_stalled(
    fleet, requester, approver, monkeypatch, django_capture_on_commit_callbacks, settings
):
    """No cancel is lost: its message lost, or AWS busy for some of its transfers, the
    sweep sends it again once nothing of the batch was cancelled for the stall time."""
    from datetime import timedelta

    from transfers import queue

    batch = request(requester, fleet)
    committed(batches.approve, approver, batch)
    assert batches.progress(batch)["pending"] == 4
    with django_capture_on_commit_callbacks(execute=False):  # its message never sent
        assert batches.cancel_pending(requester, batch)[0] == 4
    sent = []
    monkeypatch.setattr(queue, "send_now", lambda name, *args, **kw: sent.append((name, *args)))
    assert batches.resume_cancels() == 0  # just asked: the message may be on its way
    stalled = timezone.now() - timedelta(minutes=settings.TRANSFER_STALL_MINUTES, seconds=1)
    TransferBatch.objects.filter(pk=batch.pk).update(cancel_requested_at=stalled)
    assert batches.resume_cancels() == 1
    assert sent == [("cancel_batch", batch.pk, requester.pk)]

    # AWS throttles the last two: cancelled later, not forgotten.
    real_cancel = workflow.cancel

    def busy_after_two(user, pk):
        if batch.transfers.filter(status="cancelled").count() == 2:
            raise TransferError("ThrottlingException", "AWS is busy.", 503)
        return real_cancel(user, pk)

    monkeypatch.setattr(workflow, "cancel", busy_after_two)
    done, errors = batches.cancel_transfers(batch.pk, requester.pk)
    assert done == 2 and len(errors) == 2
    batch.refresh_from_db()
    assert batch.cancel_requested_at is not None and batches.progress(batch)["cancelling"]
    assert batches.resume_cancels() == 0  # two were cancelled just now
    batch.transfers.update(updated=stalled)
    assert batches.resume_cancels() == 1
    assert sent[-1] == ("cancel_batch", batch.pk, requester.pk)
    monkeypatch.setattr(workflow, "cancel", real_cancel)
    assert batches.cancel_transfers(batch.pk, requester.pk) == (2, [])
    batch.refresh_from_db()
    assert batch.cancel_requested_at is None
    assert set(batch.transfers.values_list("status", flat=True)) == {"cancelled"}
    assert batches.resume_cancels() == 0  # nothing left to cancel


def test_a_batch_approval_whose_background_part_was_lost_is_sent_again_once_stalled(
    fleet, requester, approver, monkeypatch, django_capture_on_commit_callbacks, settings
):
    from datetime import timedelta

    from django.utils import timezone

    from policies.models import BatchApproval
    from transfers import queue

    batch = request(requester, fleet)
    with django_capture_on_commit_callbacks(execute=False):  # its message never sent
        batches.approve(approver, batch, "ok")
    sent = []
    monkeypatch.setattr(queue, "send_now", lambda name, *args, **kw: sent.append((name, *args)))
    assert batches.resume_approvals() == 0  # just approved: the message may be on its way
    stalled = timezone.now() - timedelta(minutes=settings.TRANSFER_STALL_MINUTES, seconds=1)
    BatchApproval.objects.update(created=stalled)
    assert batches.resume_approvals() == 1
    assert sent == [("approve_batch", batch.pk, approver.pk, "ok")]

    # The worker that took it stops half-way: resumed too, once nothing moved for as long.
    monkeypatch.setattr(batches, "CHUNK", 2)
    real_approve = workflow.approve

    def approve_then_die_on_the_third(user, pk, comment="", **kw):
        if batch.transfers.filter(status="approved").count() == 2:
            raise RuntimeError("the worker died")
        return real_approve(user, pk, comment, **kw)

    monkeypatch.setattr(workflow, "approve", approve_then_die_on_the_third)
    with django_capture_on_commit_callbacks(execute=False), pytest.raises(RuntimeError):
        batches.approve_transfers(batch.pk, approver.pk, "ok")
    assert batches.resume_approvals() == 0  # its first chunk was approved just now
    batch.transfers.update(decided_at=stalled)
    assert batches.resume_approvals() == 1
    assert sent[-1] == ("approve_batch", batch.pk, approver.pk, "ok")
    monkeypatch.setattr(workflow, "approve", real_approve)
    with django_capture_on_commit_callbacks(execute=False):
        assert batches.approve_transfers(batch.pk, approver.pk, "ok") == 2
    assert batches.resume_approvals() == 0  # nothing left to approve


def test_a_batch_waiting_for_its_second_approver_is_not_sent_again(
    fleet, source, requester, approver, django_capture_on_commit_callbacks, settings
):
    from datetime import timedelta

    from django.utils import timezone

    from policies.models import Approval, ApprovalPolicy, BatchApproval

    ApprovalPolicy.objects.create(account=source, approvals=2)
    batch = request(requester, fleet)
    with django_capture_on_commit_callbacks(execute=False):
        batches.approve(approver, batch, "ok")
        batches.approve_transfers(batch.pk, approver.pk, "ok")  # every transfer: 1 of 2
    long_ago = timezone.now() - timedelta(minutes=settings.TRANSFER_STALL_MINUTES + 1)
    BatchApproval.objects.update(created=long_ago)
    Approval.objects.update(created=long_ago)
    assert set(batch.transfers.values_list("status", flat=True)) == {"requested"}
    assert batches.resume_approvals() == 0


def test_a_batchs_ready_transfers_are_read_in_order_from_its_status_index(db):
    """hand_on runs after every transfer and the feeder every tick: with the batch's
    foreign-key index alone, SQLite walked the batch's transfers in order past every one
    already handled, a cost that grew with the batch (near the end of a batch of 3,000,
    about 3,000 rows read to hand on one)."""
    from django.db import connection

    if connection.vendor != "sqlite":
        pytest.skip("reads SQLite's plan")
    sql, params = (
        batches._ready(TransferBatch(pk=1), timezone.now())
        .values_list("pk", flat=True)[: batches.HAND_ON_TRIES]
        .query.sql_with_params()
    )
    with connection.cursor() as cursor:
        cursor.execute("EXPLAIN QUERY PLAN " + sql, params)
        plan = " | ".join(str(row[-1]) for row in cursor.fetchall())
    assert "transfer_batch_status_idx (batch_id=? AND status=?)" in plan, plan
    assert "TEMP B-TREE" not in plan, plan
