"""The API's operations for the rest of the pages' actions: a batch's check before it is
requested, a restore finished by hand, the landings to approve, notices and "Send again",
accounts and "Sync now", the audit log, and one's own time zone.

Each: what the page's action changes, someone without the role (403, or 404 where the page
answers as for a missing object), and bad input that changes nothing.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from django.core.cache import caches
from django.urls import reverse
from rest_framework.test import APIClient

from profiles.models import Profile
from tests.conftest import TARGET, add_certificate, api_token, iot_for, make_account, make_user
from transfers import inventory, workflow
from transfers.models import (
    Certificate,
    Notice,
    Role,
    SyncRun,
    Transfer,
    TransferBatch,
    TransferEvent,
)

POLICY = '{"Version":"2012-10-17","Statement":[]}'


def api_for(user=None) -> APIClient:
    client = APIClient()
    if user is not None:
        client.credentials(HTTP_AUTHORIZATION=f"Token {api_token(user)}")
    return client


def url(name: str, *args) -> str:
    return reverse(f"api:{name}", args=args)


def error(response) -> dict:
    assert response["Content-Type"] == "application/json", response.content
    return response.json()["error"]


def snapshot() -> tuple:
    return (
        list(TransferBatch.objects.order_by("pk").values()),
        list(Transfer.objects.order_by("pk").values()),
        list(Notice.objects.order_by("pk").values()),
        list(SyncRun.objects.order_by("pk").values()),
        TransferEvent.objects.count(),
    )


@pytest.fixture
def world(standin, source, target, other, requester, approver, viewer):
    """Three certificates that can move, one REVOKED that cannot; carol administers the
    target only; an outsider administers another account."""
    iot, tiot = iot_for(source), iot_for(target)
    movable = [add_certificate(iot, "ACTIVE", ["Telemetry"], thing="sensor-1")]
    movable += [add_certificate(iot, "INACTIVE", ["Telemetry"]) for _ in range(2)]
    revoked = add_certificate(iot, "REVOKED")
    tiot.create_policy(policyName="Telemetry", policyDocument=POLICY)
    inventory.sync_region(inventory.queue_sync(source, "us-east-1")[0].pk)
    by_id = {c.certificate_id: c for c in Certificate.objects.all()}
    return SimpleNamespace(
        source=source,
        target=target,
        certs=[by_id[m["certificateId"]] for m in movable],
        revoked=by_id[revoked["certificateId"]],
        requester=requester,
        approver=approver,
        viewer=viewer,
        outsider=make_user("outsider", (other, Role.ADMIN)),
        carol=make_user("carol", (target, Role.ADMIN)),
    )


def batch_body(world, **extra) -> dict:
    body = {
        "certificates": [c.pk for c in world.certs] + [world.revoked.pk],
        "target_account_id": TARGET,
        "reason": "Sale to Acme",
        **extra,
    }
    return {key: value for key, value in body.items() if value is not None}


# ----------------------------------------------------------------------------- batch check


def test_the_batch_check_says_what_the_request_would_do_and_changes_nothing(world):
    before = snapshot()
    body = batch_body(world)
    checked = api_for(world.requester).post(url("batch-preflight"), body, format="json")
    assert checked.status_code == 200, checked.content
    check = checked.json()
    assert sorted(r["id"] for r in check["ready"]) == sorted(c.pk for c in world.certs)
    assert check["deactivate"] == 1  # the ACTIVE one
    assert check["detach_policies"] == 3 and check["detach_things"] == 1
    assert check["skipped"] == [
        {
            "certificate_id": world.revoked.certificate_id,
            "reason": "REVOKED certificates cannot be transferred",
        }
    ]
    assert snapshot() == before
    # The request itself does what the check said.
    created = api_for(world.requester).post(url("batch-list"), body, format="json")
    assert created.status_code == 201, created.content
    batch = TransferBatch.objects.get(pk=created.json()["id"])
    assert sorted(batch.transfers.values_list("cert_id", flat=True)) == sorted(
        r["id"] for r in check["ready"]
    )
    assert batch.skipped == check["skipped"]
    # Now they have an open transfer: the check says so.
    again = api_for(world.requester).post(url("batch-preflight"), body, format="json")
    reasons = {s["certificate_id"]: s["reason"] for s in again.json()["skipped"]}
    assert again.json()["ready"] == []
    assert reasons[world.certs[0].certificate_id] == "already has an open transfer"


def test_the_batch_check_follows_the_requests_rules(world):
    before = snapshot()
    api = api_for(world.requester)
    own = api.post(
        url("batch-preflight"),
        batch_body(world, target_account_id=world.source.account_id),
        format="json",
    )
    assert own.status_code == 400 and error(own)["code"] == "invalid_target"
    no_reason = api.post(url("batch-preflight"), batch_body(world, reason=None), format="json")
    assert no_reason.status_code == 400 and error(no_reason)["code"] == "invalid"
    blank = api.post(url("batch-preflight"), batch_body(world, reason="  "), format="json")
    assert blank.status_code == 400 and error(blank)["code"] == "invalid_reason"
    nothing = batch_body(world, certificates=None, filter={"q": "f" * 64})
    nothing = api.post(url("batch-preflight"), nothing, format="json")
    assert nothing.status_code == 400 and error(nothing)["code"] == "empty"
    # Options the certificates need, refused: each is left out with the reason.
    kept = api.post(url("batch-preflight"), batch_body(world, detach_policies=False), format="json")
    assert kept.json()["ready"] == [] and len(kept.json()["skipped"]) == 4
    assert snapshot() == before


def test_the_batch_check_asks_the_requesters_role(world):
    before = snapshot()
    body = batch_body(world)
    viewer = api_for(world.viewer).post(url("batch-preflight"), body, format="json")
    assert viewer.status_code == 403 and error(viewer)["code"] == "forbidden"
    outsider = api_for(world.outsider).post(url("batch-preflight"), body, format="json")
    assert outsider.status_code == 404  # as for a certificate that does not exist
    assert api_for().post(url("batch-preflight"), body, format="json").status_code == 401
    assert snapshot() == before


# ----------------------------------------------------------------------------- transfers


def a_transfer(world, n: int = 1, **fields) -> Transfer:
    """An open transfer of the n-th certificate (at most one is open per certificate)."""
    cert = world.certs[n]
    return Transfer.objects.create(
        source=world.source,
        region=cert.region,
        cert=cert,
        certificate_id=cert.certificate_id,
        certificate_arn=cert.arn,
        target=world.target,
        target_account_id=TARGET,
        requester=world.requester,
        reason="Sale",
        **fields,
    )


def test_a_restore_finished_by_hand_is_recorded_as_on_the_page(world):
    transfer = a_transfer(
        world, status=Transfer.Status.CANCELLED, restore_state=Transfer.Restore.ATTENTION
    )
    before = snapshot()
    for user, code in ((world.viewer, 403), (world.outsider, 404), (world.carol, 403)):
        refused = api_for(user).post(url("transfer-restored-by-hand", transfer.pk))
        assert refused.status_code == code, (user, refused.content)
    assert snapshot() == before
    done = api_for(world.requester).post(url("transfer-restored-by-hand", transfer.pk))
    assert done.status_code == 200, done.content
    assert done.json()["restore_state"] == Transfer.Restore.DONE
    transfer.refresh_from_db()
    assert transfer.restore_state == Transfer.Restore.DONE
    assert transfer.events.filter(action="restored_by_hand").exists()
    twice = api_for(world.requester).post(url("transfer-restored-by-hand", transfer.pk))
    assert twice.status_code == 409 and error(twice)["code"] == "invalid_state"


def test_the_landings_waiting_for_the_target_are_found_as_the_approvals_page_lists_them(
    world, django_capture_on_commit_callbacks
):
    landing = {"activate": True, "managed": True, "policies": [], "things": []}
    waiting = [
        a_transfer(world, n, landing=landing, landing_state=Transfer.Landing.PLANNED)
        for n in range(2)
    ]
    a_transfer(world, 2, status=Transfer.Status.ACCEPTED, landing_state=Transfer.Landing.LANDED)
    with django_capture_on_commit_callbacks(execute=True):
        workflow.approve_landing(world.carol, waiting[1].pk)

    def ids(user, **query) -> list[int]:
        response = api_for(user).get(url("transfer-list"), query)
        assert response.status_code == 200, response.content
        return sorted(row["id"] for row in response.json()["results"])

    planned = {"landing_state": "planned"}
    assert ids(world.requester, **planned) == [t.pk for t in waiting]
    assert ids(world.requester, **planned, target_approved="false") == [waiting[0].pk]
    assert ids(world.requester, **planned, target_approved="true") == [waiting[1].pk]
    # A batch's transfers, as its page lists them.
    batch = TransferBatch.objects.create(
        source=world.source, target_account_id=TARGET, requester=world.requester, reason="Sale"
    )
    Transfer.objects.filter(pk=waiting[0].pk).update(batch=batch)
    assert ids(world.requester, batch=batch.pk, status="requested") == [waiting[0].pk]
    # The approvals page's list: the target's approvers only, not the requester.
    another = make_user("another", (world.target, Role.APPROVER))
    assert ids(another, landing_to_approve="true") == [waiting[0].pk]
    assert ids(world.requester, landing_to_approve="true") == []
    bad = api_for(world.requester).get(url("transfer-list"), {"landing_state": "soon"})
    assert bad.status_code == 400 and error(bad)["code"] == "invalid"


# ----------------------------------------------------------------------------- notices


@pytest.fixture
def noticed(world):
    transfer = a_transfer(world, status=Transfer.Status.PENDING_ACCEPTANCE)
    failed = Notice.objects.create(
        transfer=transfer,
        channel=Notice.Channel.EMAIL,
        recipient="ops@acme.example",
        kind=Notice.Kind.NEW,
        status=Notice.Status.FAILED,
        attempts=5,
        last_error="SMTP down",
    )
    held = Notice.objects.create(
        transfer=transfer,
        channel=Notice.Channel.EMAIL,
        recipient="ops@acme.example",
        kind=Notice.Kind.REMINDER,
        status=Notice.Status.HELD,
    )
    return SimpleNamespace(transfer=transfer, failed=failed, held=held)


def test_staff_list_every_notice_with_the_pages_filters(world, noticed):
    staff = make_user("staffer")
    staff.is_staff = True
    staff.save()
    every = api_for(staff).get(url("notice-list"))
    assert every.status_code == 200
    assert [n["id"] for n in every.json()["results"]] == [noticed.held.pk, noticed.failed.pk]
    failed = api_for(staff).get(url("notice-list"), {"status": "failed", "recipient": "ACME"})
    assert [n["id"] for n in failed.json()["results"]] == [noticed.failed.pk]
    assert failed.json()["results"][0]["last_error"] == "SMTP down"
    bad = api_for(staff).get(url("notice-list"), {"channel": "pigeon"})
    assert bad.status_code == 400 and error(bad)["code"] == "invalid"


def test_a_transfers_notices_are_its_sources_as_on_its_page(world, noticed):
    # Not staff: the notices page does not exist for them, a transfer's notices do.
    assert api_for(world.requester).get(url("notice-list")).status_code == 404
    mine = api_for(world.requester).get(url("notice-list"), {"transfer": noticed.transfer.pk})
    assert mine.status_code == 200
    assert {n["id"] for n in mine.json()["results"]} == {noticed.failed.pk, noticed.held.pk}
    # Seen only through the target: its page shows no notices.
    target_side = api_for(world.carol).get(url("notice-list"), {"transfer": noticed.transfer.pk})
    assert target_side.status_code == 403
    unseen = api_for(world.outsider).get(url("notice-list"), {"transfer": noticed.transfer.pk})
    assert unseen.status_code == 404


def test_send_again_puts_the_notice_back_for_the_worker(
    world, noticed, django_capture_on_commit_callbacks, monkeypatch
):
    sent = []
    monkeypatch.setattr("transfers.notices.queue.enqueue", lambda name, pk: sent.append(pk))
    with django_capture_on_commit_callbacks(execute=True):
        response = api_for(world.approver).post(url("notice-send-again", noticed.failed.pk))
    assert response.status_code == 200, response.content
    assert response.json()["status"] == "pending"
    noticed.failed.refresh_from_db()
    assert noticed.failed.status == Notice.Status.PENDING and noticed.failed.last_error == ""
    assert sent == [noticed.failed.pk]


def test_send_again_asks_the_pages_rules(world, noticed, monkeypatch):
    sent = []
    monkeypatch.setattr("transfers.notices.queue.enqueue", lambda name, pk: sent.append(pk))
    before = snapshot()
    for user, code in (
        (world.viewer, 403),  # sees it, may not
        (world.carol, 403),  # the target's admin: not the source's notices
        (world.outsider, 404),
    ):
        response = api_for(user).post(url("notice-send-again", noticed.failed.pk))
        assert response.status_code == code, (user, response.content)
    held = api_for(world.approver).post(url("notice-send-again", noticed.held.pk))
    assert held.status_code == 409 and error(held)["code"] == "invalid_state"
    missing = api_for(world.approver).post(url("notice-send-again", 10**9))
    assert missing.status_code == 404
    assert api_for().post(url("notice-send-again", noticed.failed.pk)).status_code == 401
    assert snapshot() == before and sent == []


# ----------------------------------------------------------------------------- accounts


def test_accounts_are_those_one_holds_a_role_on(world):
    listed = api_for(world.requester).get(url("account-list"))
    assert listed.status_code == 200
    assert [(a["account_id"], a["roles"]) for a in listed.json()["results"]] == [
        (world.source.account_id, ["requester"])
    ]
    detail = api_for(world.requester).get(url("account-detail", world.source.pk))
    assert detail.status_code == 200
    body = detail.json()
    assert body["certificate_count"] == 4 and body["regions"] == ["us-east-1", "eu-west-1"]
    assert body["sync_runs"][0]["status"] == "done" and body["syncing"] is False
    assert "webhook_secret" not in body and "external_id" not in body
    # As on the page: where devices connect, each API's allowance in each region.
    assert [e["region"] for e in body["data_endpoints"]] == ["us-east-1", "eu-west-1"]
    assert all(e["address"].endswith("amazonaws.com") for e in body["data_endpoints"])
    allowances = {a["api"]: a["regions"] for a in body["allowances"]}
    assert allowances["ListCertificates"][0]["region"] == "us-east-1"
    unseen = api_for(world.outsider).get(url("account-detail", world.source.pk))
    assert unseen.status_code == 404 and error(unseen)["code"] == "not_found"


def test_sync_now_queues_a_sync_in_each_region_once(world, monkeypatch):
    monkeypatch.setattr("transfers.queue.enqueue", lambda *args, **kwargs: None)
    runs = SyncRun.objects.count()
    first = api_for(world.requester).post(url("account-sync", world.source.pk))
    assert first.status_code == 202, first.content
    assert first.json()["queued"] == 2 and first.json()["account"]["syncing"] is True
    assert SyncRun.objects.count() == runs + 2
    again = api_for(world.requester).post(url("account-sync", world.source.pk))
    assert again.status_code == 202 and again.json()["queued"] == 0
    assert SyncRun.objects.count() == runs + 2


def test_sync_now_asks_the_pages_rules(world, monkeypatch):
    monkeypatch.setattr("transfers.queue.enqueue", lambda *args, **kwargs: None)
    known = make_account("555555555555", "Known only", managed=False)
    admin = make_user("known-admin", (known, Role.ADMIN))
    before = snapshot()
    approver = api_for(world.approver).post(url("account-sync", world.source.pk))
    assert approver.status_code == 403  # approvers do not operate
    assert api_for(world.outsider).post(url("account-sync", world.source.pk)).status_code == 404
    unmanaged = api_for(admin).post(url("account-sync", known.pk))
    assert unmanaged.status_code == 409 and error(unmanaged)["code"] == "invalid_state"
    assert snapshot() == before


# ----------------------------------------------------------------------------- audit log


def test_the_audit_log_redacts_the_source_side_for_the_target(
    world, django_capture_on_commit_callbacks
):
    transfer = a_transfer(world, status=Transfer.Status.REQUESTED)
    with django_capture_on_commit_callbacks(execute=True):
        workflow.withdraw(world.requester, transfer.pk)
    mine = api_for(world.requester).get(url("audit"), {"transfer": transfer.pk})
    assert mine.status_code == 200
    rows = mine.json()["results"]
    assert [(r["action"], r["actor"]) for r in rows] == [("withdraw", "requester")]
    assert rows[0]["certificate_id"] == transfer.certificate_id
    theirs = api_for(world.carol).get(url("audit"), {"transfer": transfer.pk})
    assert [(r["action"], r["actor"], r["details"]) for r in theirs.json()["results"]] == [
        ("state_change", "", None)
    ]
    # The filters match what is shown: the target does not find the requester's actions.
    by_name = api_for(world.carol).get(url("audit"), {"user": "requester"})
    assert by_name.json()["results"] == []
    assert api_for(world.outsider).get(url("audit")).json()["results"] == []


@pytest.mark.parametrize(
    "query",
    [
        {"account": "12345"},
        {"certificate": "xyz"},
        {"since": "2026-02-02", "until": "2026-02-01"},
        {"kind": "gossip"},
        {"page": "0"},
    ],
)
def test_the_audit_logs_filters_refuse_what_they_do_not_understand(world, query):
    response = api_for(world.requester).get(url("audit"), query)
    assert response.status_code == 400 and error(response)["code"] == "invalid"


# ----------------------------------------------------------------------------- you


def test_ones_time_zone_is_read_and_changed_as_on_the_profile_page(requester):
    api = api_for(requester)
    assert api.get(url("me")).json() == {"username": "requester", "time_zone": "UTC"}
    changed = api.patch(url("me"), {"time_zone": "Europe/Paris"}, format="json")
    assert changed.status_code == 200 and changed.json()["time_zone"] == "Europe/Paris"
    assert Profile.objects.get(user=requester).time_zone == "Europe/Paris"
    bad = api.patch(url("me"), {"time_zone": "Mars/Olympus"}, format="json")
    assert bad.status_code == 400 and "time_zone" in error(bad)["fields"]
    assert Profile.objects.get(user=requester).time_zone == "Europe/Paris"
    assert api_for().get(url("me")).status_code == 401


def test_the_new_operations_count_against_the_tokens_rate(world, settings, monkeypatch):
    """Throttled like the others: past the rate, 429 with Retry-After, and nothing queued."""
    monkeypatch.setattr("transfers.queue.enqueue", lambda *args, **kwargs: None)
    settings.API_THROTTLE_RATE = "2/minute"
    caches["throttle"].clear()
    api = api_for(world.requester)
    try:
        assert api.get(url("me")).status_code == 200
        assert api.get(url("audit")).status_code == 200
        runs = SyncRun.objects.count()
        refused = api.post(url("account-sync", world.source.pk))
        assert refused.status_code == 429 and error(refused)["code"] == "throttled"
        assert int(refused["Retry-After"]) > 0
        assert SyncRun.objects.count() == runs
    finally:
        caches["throttle"].clear()
