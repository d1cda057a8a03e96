"""The API's batches, landings, restores and figures: what the pages do, with tokens alone.

Each operation: the happy path, anonymous (401), an outsider (404, as a missing id), a
read-only user (403), a refusal that changes nothing, and what a user who sees it only
through the target account is shown (transfers.access).
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from django.urls import reverse
from rest_framework.test import APIClient

from policies.models import ApprovalPolicy
from tests.conftest import TARGET, add_certificate, api_token, iot_for, make_user
from transfers import inventory
from transfers.models import (
    AccountGrant,
    Certificate,
    Role,
    Transfer,
    TransferBatch,
    TransferEvent,
)

POLICY = '{"Version":"2012-10-17","Statement":[]}'
LANDING = {"activate": True}


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
    """What a refusal must leave untouched: every batch, transfer and audit row."""
    return (
        list(TransferBatch.objects.order_by("pk").values()),
        list(Transfer.objects.order_by("pk").values()),
        TransferEvent.objects.count(),
    )


@pytest.fixture
def world(standin, source, target, other, requester, approver, viewer):
    """Three certificates that can move (one ACTIVE with a thing), one REVOKED that cannot;
    the target has their policy. carol administers the target only; tina views it only."""
    iot, tiot = iot_for(source), iot_for(target)
    movable = [add_certificate(iot, "ACTIVE", ["Telemetry"], thing="sensor-1")]
    movable += [add_certificate(iot, "INACTIVE", ["Telemetry"]) for _ in range(2)]
    revoked = add_certificate(iot, "REVOKED")
    tiot.create_policy(policyName="Telemetry", policyDocument=POLICY)
    inventory.sync_region(inventory.queue_sync(source, "us-east-1")[0].pk)
    by_id = {c.certificate_id: c for c in Certificate.objects.all()}
    return SimpleNamespace(
        iot=iot,
        tiot=tiot,
        control=standin,
        certs=[by_id[m["certificateId"]] for m in movable],
        revoked=by_id[revoked["certificateId"]],
        requester=requester,
        approver=approver,
        viewer=viewer,
        outsider=make_user("outsider", (other, Role.ADMIN)),
        carol=make_user("carol", (target, Role.ADMIN)),
        tina=make_user("tina", (target, Role.VIEWER)),
    )


def create(world, user=None, **body):
    data = {
        "certificates": [c.pk for c in world.certs],
        "target_account_id": TARGET,
        "message": "Devices sold to Acme",
        "reason": "Sale to Acme",
        "tell_devices": False,  # the stand-in's devices are off: they would never answer
        **body,
    }
    data = {key: value for key, value in data.items() if value is not None}
    return api_for(user or world.requester).post(url("batch-list"), data, format="json")


def a_batch(world, **body) -> TransferBatch:
    response = create(world, **body)
    assert response.status_code == 201, response.content
    return TransferBatch.objects.get(pk=response.json()["id"])


def post(user, name: str, pk: int, django_capture_on_commit_callbacks, **data):
    with django_capture_on_commit_callbacks(execute=True):
        return api_for(user).post(url(name, pk), data, format="json")


# ----------------------------------------------------------------------------- end to end


def test_a_pre_accepted_batch_moves_end_to_end_with_api_tokens_alone(
    world, django_capture_on_commit_callbacks
):
    requester, approver = api_for(world.requester), api_for(world.approver)
    created = requester.post(
        url("batch-list"),
        {
            "certificates": [c.pk for c in world.certs] + [world.revoked.pk],
            "target_account_id": TARGET,
            "message": "Devices sold to Acme",
            "reason": "Sale to Acme",
            "landing": LANDING,
            "tell_devices": False,  # the stand-in's devices are off: they would never answer
        },
        format="json",
    )
    assert created.status_code == 201, created.content
    batch = created.json()
    assert created["Location"] == url("batch-detail", batch["id"])
    assert batch["counts"] == {"requested": 3}
    assert batch["landing"]["transfers"] == 3
    assert batch["landing"]["waiting_for_target_approval"] == 3
    assert batch["skipped"] == [
        {
            "certificate_id": world.revoked.certificate_id,
            "reason": "REVOKED certificates cannot be transferred",
        }
    ]
    assert batch["approvals"] == {"received": 0, "required": 1, "by": []}

    carol = api_for(world.carol)
    with django_capture_on_commit_callbacks(execute=True):
        landing = carol.post(url("batch-approve-landing", batch["id"]), {}, format="json")
    assert landing.status_code == 200, landing.content
    assert landing.json()["landing"]["target_approvers"] == ["carol"]
    assert landing.json()["landing"]["waiting_for_target_approval"] == 0

    with django_capture_on_commit_callbacks(execute=True):
        approved = approver.post(url("batch-approve", batch["id"]), {"comment": "ok"}, "json")
    assert approved.status_code == 200, approved.content

    # Watching the progress to the end: every transfer moved and landed.
    done = requester.get(url("batch-detail", batch["id"])).json()
    assert done["counts"] == {"accepted": 3}
    assert done["progress"]["accepted"] == 3 and not done["progress"]["live"]
    assert done["landing"]["by_state"] == {"landed": 3}
    assert done["approvals"] == {"received": 1, "required": 1, "by": ["approver"]}
    assert done["downtime"]["count"] == 3
    assert done["downtime"]["max_seconds"] >= done["downtime"]["p50_seconds"] >= 0
    assert sum(b["count"] for b in done["downtime"]["buckets"]) == 3
    assert done["downtime"]["first_unusable_since"] and done["downtime"]["last_usable_at"]
    # Each transfer says the same, and its certificate is ACTIVE in the target.
    rows = requester.get(url("transfer-list"), {"status": "accepted"}).json()["results"]
    assert len(rows) == 3
    for row in rows:
        assert row["batch"] == batch["id"]
        assert row["landing_state"] == "landed" and row["landing_steps_left"] == []
        assert row["target_approver"] == "carol"
        assert row["approvals"] == {"received": 1, "required": 1, "by": ["approver"]}
        assert row["downtime_seconds"] is not None and row["usable_at"]
        described = world.tiot.describe_certificate(certificateId=row["certificate_id"])
        assert described["certificateDescription"]["status"] == "ACTIVE"


# ----------------------------------------------------------------------------- create


def test_a_batch_of_every_certificate_a_filter_finds(world):
    both = create(world, filter={"q": "sensor-1"})
    assert both.status_code == 400  # certificates or filter, not both
    assert error(both)["fields"]["certificates"] == ["Give either certificates or filter."]
    response = create(world, certificates=None, filter={"q": "sensor-1"})
    assert response.status_code == 201, response.content
    batch = TransferBatch.objects.get(pk=response.json()["id"])
    assert [t.certificate_id for t in batch.transfers.all()] == [world.certs[0].certificate_id]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"certificates": []}, "certificates"),
        ({"certificates": [0]}, "certificates"),
        ({"filter": {"status": "SOMETIMES"}}, "filter"),
        ({"target_account_id": "12345"}, None),
    ],
)
def test_a_bad_batch_request_is_a_400_and_creates_nothing(world, body, field):
    before = snapshot()
    if "filter" in body:
        body = {**body, "certificates": None}
    response = create(world, **body)
    assert response.status_code == 400, response.content
    if field:
        assert field in error(response)["fields"]
    assert snapshot() == before


def test_anonymous_read_only_and_outsiders_create_no_batch(world):
    before = snapshot()
    anonymous = APIClient().post(url("batch-list"), {}, format="json")
    assert anonymous.status_code == 401 and error(anonymous)["code"] == "not_authenticated"
    viewer = create(world, world.viewer)  # no account to request from
    assert viewer.status_code == 403 and error(viewer)["code"] == "forbidden"
    # An outsider names certificates it cannot see: the same answer as for missing ids.
    theirs = create(world, world.outsider, certificates=[world.certs[0].pk])
    missing = create(world, world.outsider, certificates=[987654321])
    assert theirs.status_code == missing.status_code == 404
    assert error(theirs)["code"] == error(missing)["code"] == "not_found"
    assert error(theirs)["message"] == error(missing)["message"].replace(
        "987654321", str(world.certs[0].pk)
    )
    assert snapshot() == before


def test_certificates_of_an_account_one_may_only_view_are_left_out_with_the_reason(
    world, source, other
):
    both = make_user("both", (source, Role.VIEWER), (other, Role.REQUESTER))
    response = create(world, both)
    assert response.status_code == 400  # none could be requested
    assert error(response)["code"] == "empty"
    assert not TransferBatch.objects.exists()


def test_a_batch_whose_target_cannot_be_read_is_a_503_with_retry_after(world):
    world.control.set_faults(unavailable_rate=1.0, operations=["ListPolicies"])
    before = snapshot()
    response = create(world, landing=LANDING)
    assert response.status_code == 503, response.content
    assert error(response)["code"] == "landing_unreadable"
    assert int(response["Retry-After"]) >= 1
    assert snapshot() == before


# ----------------------------------------------------------------------------- read


def test_the_batch_list_filters_like_the_batch_page(world, django_capture_on_commit_callbacks):
    first = a_batch(world, certificates=[world.certs[0].pk])
    second = a_batch(world, certificates=[world.certs[1].pk])
    post(world.approver, "batch-approve", second.pk, django_capture_on_commit_callbacks)
    client = api_for(world.requester)

    def ids(**query):
        response = client.get(url("batch-list"), query)
        assert response.status_code == 200, response.content
        return [row["id"] for row in response.json()["results"]]

    assert ids() == [second.pk, first.pk]
    assert ids(status="requested") == [first.pk]
    assert ids(status="pending_acceptance") == [second.pk]
    assert ids(account=TARGET) == [second.pk, first.pk]  # the target matches too
    assert ids(requester="requester") == [second.pk, first.pk]
    assert ids(requester="nobody") == []
    rows = client.get(url("batch-list")).json()["results"]
    assert rows[0]["counts"] == {"pending_acceptance": 1}
    assert client.get(url("batch-list"), {"status": "nope"}).status_code == 400
    assert APIClient().get(url("batch-list")).status_code == 401
    assert api_for(world.outsider).get(url("batch-list")).json()["count"] == 0


def test_the_batch_list_runs_a_fixed_number_of_queries(world, django_assert_max_num_queries):
    for cert in world.certs:
        a_batch(world, certificates=[cert.pk])
    client = api_for(world.requester)
    with django_assert_max_num_queries(4):  # token, count, page, the page's counts
        response = client.get(url("batch-list"))
    assert response.json()["count"] == 3


def test_a_batch_seen_only_from_the_target_shows_what_concerns_the_target(world):
    batch = a_batch(world, certificates=[c.pk for c in world.certs] + [world.revoked.pk])
    whole = api_for(world.requester).get(url("batch-detail", batch.pk)).json()
    assert whole["requester"] == "requester" and whole["reason"] == "Sale to Acme"
    assert whole["skipped"] and whole["approvals"] is not None
    seen = api_for(world.carol).get(url("batch-detail", batch.pk)).json()
    assert seen["requester"] == "" and seen["reason"] == "" and seen["skipped"] == []
    assert seen["approvals"] is None and seen["approver"] is None
    assert seen["counts"] == whole["counts"] and seen["progress"] == whole["progress"]
    assert seen["message"] == "Devices sold to Acme"
    row = api_for(world.carol).get(url("batch-list")).json()["results"][0]
    assert row["requester"] == "" and row["reason"] == ""
    # The requester filter skips what the target side sees (it shows no requester).
    assert (
        api_for(world.carol).get(url("batch-list"), {"requester": "requester"}).json()["count"] == 0
    )


def test_a_batch_is_a_404_for_an_outsider_as_for_a_missing_id_and_401_anonymous(world):
    batch = a_batch(world)
    outsider = api_for(world.outsider)
    theirs, missing = (
        outsider.get(url("batch-detail", batch.pk)),
        outsider.get(url("batch-detail", 987654321)),
    )
    assert theirs.status_code == missing.status_code == 404
    assert theirs.json() == missing.json()
    assert APIClient().get(url("batch-detail", batch.pk)).status_code == 401


# ----------------------------------------------------------------------------- batch actions


def approved(world, callbacks, batch) -> TransferBatch:
    assert post(world.approver, "batch-approve", batch.pk, callbacks).status_code == 200
    return batch


def failed_one(world, callbacks) -> TransferBatch:
    batch = a_batch(world)
    victim = batch.transfers.order_by("pk").first()
    world.iot.update_certificate(certificateId=victim.certificate_id, newStatus="REVOKED")
    approved(world, callbacks, batch)
    world.iot.update_certificate(certificateId=victim.certificate_id, newStatus="INACTIVE")
    assert batch.transfers.filter(status="failed").count() == 1
    return batch


# name -> (who may, who may only read, how to make the batch, the body, the states after)
BATCH_ACTIONS = {
    "approve": (
        "approver",
        "viewer",
        lambda w, cb: a_batch(w),
        {"comment": "ok"},
        {"pending_acceptance": 3},
    ),
    "decline": (
        "approver",
        "viewer",
        lambda w, cb: a_batch(w),
        {"comment": "not now"},
        {"declined": 3},
    ),
    "withdraw": ("requester", "viewer", lambda w, cb: a_batch(w), {}, {"cancelled": 3}),
    "cancel": (
        "requester",
        "viewer",
        lambda w, cb: approved(w, cb, a_batch(w)),
        {},
        {"cancelled": 3},
    ),
    "retry": ("approver", "viewer", failed_one, {}, {"pending_acceptance": 3}),
    "approve-landing": (
        "carol",
        "tina",
        lambda w, cb: a_batch(w, landing=LANDING),
        {},
        {"requested": 3},
    ),
}


@pytest.mark.parametrize("action", sorted(BATCH_ACTIONS))
def test_each_batch_action_does_what_the_page_does(
    world, action, django_capture_on_commit_callbacks
):
    actor, _, make, body, after = BATCH_ACTIONS[action]
    batch = make(world, django_capture_on_commit_callbacks)
    response = post(
        getattr(world, actor),
        f"batch-{action}",
        batch.pk,
        django_capture_on_commit_callbacks,
        **body,
    )
    assert response.status_code == 200, response.content
    assert response.json()["id"] == batch.pk
    # What the page's action does, once its background part has run.
    shown = api_for(world.requester).get(url("batch-detail", batch.pk)).json()
    assert shown["counts"] == after
    if action == "approve-landing":
        assert set(batch.transfers.values_list("target_approver__username", flat=True)) == {"carol"}


@pytest.mark.parametrize("action", sorted(BATCH_ACTIONS))
def test_each_batch_action_refuses_anonymous_outsiders_and_read_only_changing_nothing(
    world, action, django_capture_on_commit_callbacks
):
    _, reader, make, body, _ = BATCH_ACTIONS[action]
    batch = make(world, django_capture_on_commit_callbacks)
    before = snapshot()
    anonymous = APIClient().post(url(f"batch-{action}", batch.pk), body, format="json")
    assert anonymous.status_code == 401
    theirs = post(world.outsider, f"batch-{action}", batch.pk, django_capture_on_commit_callbacks)
    missing = post(world.outsider, f"batch-{action}", 987654321, django_capture_on_commit_callbacks)
    assert theirs.status_code == missing.status_code == 404
    assert theirs.json() == missing.json()
    read_only = post(
        getattr(world, reader),
        f"batch-{action}",
        batch.pk,
        django_capture_on_commit_callbacks,
        **body,
    )
    assert read_only.status_code == 403 and error(read_only)["code"] == "forbidden"
    assert snapshot() == before


@pytest.mark.parametrize("action", sorted(BATCH_ACTIONS))
def test_a_batch_action_with_nothing_to_act_on_is_a_409_and_changes_nothing(
    world, action, django_capture_on_commit_callbacks
):
    actor, _, _, body, _ = BATCH_ACTIONS[action]
    batch = a_batch(world)  # requested, without a landing
    if action in {"approve", "decline", "withdraw"}:
        post(world.requester, "batch-withdraw", batch.pk, django_capture_on_commit_callbacks)
    before = snapshot()
    response = post(
        getattr(world, actor),
        f"batch-{action}",
        batch.pk,
        django_capture_on_commit_callbacks,
        **body,
    )
    assert response.status_code == 409, response.content
    assert error(response)["code"] == "invalid_state"
    assert snapshot() == before


def test_nobody_approves_their_own_batch_and_a_decline_needs_a_comment(
    world, source, django_capture_on_commit_callbacks
):
    both = make_user("both", (source, Role.REQUESTER), (source, Role.APPROVER))
    own = TransferBatch.objects.get(pk=create(world, both).json()["id"])
    before = snapshot()
    mine = post(both, "batch-approve", own.pk, django_capture_on_commit_callbacks)
    assert mine.status_code == 403 and error(mine)["code"] == "self_approval"
    blank = post(
        world.approver, "batch-decline", own.pk, django_capture_on_commit_callbacks, comment=" "
    )
    assert blank.status_code == 400 and error(blank)["code"] == "comment_required"
    assert snapshot() == before


def test_the_batch_approval_counts_under_the_sources_policy(
    world, source, django_capture_on_commit_callbacks
):
    ApprovalPolicy.objects.create(account=source, approvals=2)
    second = make_user("second-approver", (source, Role.APPROVER))
    batch = a_batch(world)
    first = post(world.approver, "batch-approve", batch.pk, django_capture_on_commit_callbacks)
    assert first.json()["approvals"] == {"received": 1, "required": 2, "by": ["approver"]}
    assert api_for(world.requester).get(url("batch-detail", batch.pk)).json()["counts"] == {
        "requested": 3
    }
    again = post(world.approver, "batch-approve", batch.pk, django_capture_on_commit_callbacks)
    assert again.status_code == 409 and error(again)["code"] == "already_approved"
    last = post(second, "batch-approve", batch.pk, django_capture_on_commit_callbacks)
    assert last.json()["approvals"]["by"] == ["approver", "second-approver"]
    shown = api_for(world.requester).get(url("batch-detail", batch.pk)).json()
    assert shown["counts"] == {"pending_acceptance": 3}
    row = api_for(world.requester).get(url("transfer-list")).json()["results"][0]
    assert row["approvals"] == {
        "received": 2,
        "required": 2,
        "by": ["approver", "second-approver"],
    }


# ----------------------------------------------------------------------------- transfers


def single(world, landing=True) -> Transfer:
    body = {
        "certificate": world.certs[0].pk,
        "target_account_id": TARGET,
        "reason": "Sale",
        "tell_devices": False,
        **({"landing": LANDING} if landing else {}),
    }
    response = api_for(world.requester).post(url("transfer-list"), body, format="json")
    assert response.status_code == 201, response.content
    return Transfer.objects.get(pk=response.json()["id"])


def pending(world, callbacks, landing=True) -> Transfer:
    transfer = single(world, landing)
    assert post(world.approver, "transfer-approve", transfer.pk, callbacks).status_code == 200
    transfer.refresh_from_db()
    assert transfer.status == "pending_acceptance"
    return transfer


def landing_stopped(world, callbacks) -> Transfer:
    """Accepted by carol without the landing approved by anyone: it needs attention."""
    transfer = pending(world, callbacks)
    reader = make_user("acme-operator", (transfer.target, Role.REQUESTER))
    assert post(reader, "transfer-accept", transfer.pk, callbacks).status_code == 200
    transfer.refresh_from_db()
    assert transfer.landing_state == "attention"
    return transfer


def restore_stopped(world, callbacks) -> Transfer:
    """Cancelled, and the restore said to need attention with nothing put back yet."""
    transfer = pending(world, callbacks, landing=False)
    assert post(world.requester, "transfer-cancel", transfer.pk, callbacks).status_code == 200
    Transfer.objects.filter(pk=transfer.pk).update(restore_state="attention", restored=[])
    return transfer


# name -> (who may, who may only read, how to make the transfer, the body, what follows)
TRANSFER_ACTIONS = {
    "approve-landing": (
        "carol",
        "tina",
        lambda w, cb: single(w),
        {"comment": "fine by Acme"},
        {"target_approver": "carol", "landing_state": "planned"},
    ),
    "retry-landing": (
        "carol",
        "tina",
        landing_stopped,
        {},
        {"target_approver": "carol", "landing_state": "landed"},
    ),
    "landed-by-hand": ("carol", "tina", landing_stopped, {}, {"landing_state": "landed"}),
    "retry-restore": ("requester", "viewer", restore_stopped, {}, {"restore_state": "done"}),
    "reconcile": (
        "requester",
        "viewer",
        lambda w, cb: pending(w, cb, landing=False),
        {},
        {"status": "pending_acceptance"},
    ),
}


@pytest.mark.parametrize("action", sorted(TRANSFER_ACTIONS))
def test_each_transfer_action_does_what_the_page_does(
    world, action, django_capture_on_commit_callbacks
):
    actor, _, make, body, after = TRANSFER_ACTIONS[action]
    transfer = make(world, django_capture_on_commit_callbacks)
    response = post(
        getattr(world, actor),
        f"transfer-{action}",
        transfer.pk,
        django_capture_on_commit_callbacks,
        **body,
    )
    assert response.status_code == 200, response.content
    assert response.json()["id"] == transfer.pk
    shown = api_for(world.requester).get(url("transfer-detail", transfer.pk)).json()
    assert {key: shown[key] for key in after} == after


@pytest.mark.parametrize("action", sorted(TRANSFER_ACTIONS))
def test_each_transfer_action_refuses_anonymous_outsiders_and_read_only_changing_nothing(
    world, action, django_capture_on_commit_callbacks
):
    _, reader, make, body, _ = TRANSFER_ACTIONS[action]
    transfer = make(world, django_capture_on_commit_callbacks)
    before = snapshot()
    name = f"transfer-{action}"
    assert APIClient().post(url(name, transfer.pk), body, format="json").status_code == 401
    theirs = post(world.outsider, name, transfer.pk, django_capture_on_commit_callbacks)
    missing = post(world.outsider, name, 987654321, django_capture_on_commit_callbacks)
    assert theirs.status_code == missing.status_code == 404
    assert theirs.json() == missing.json()
    read_only = post(
        getattr(world, reader), name, transfer.pk, django_capture_on_commit_callbacks, **body
    )
    assert read_only.status_code == 403 and error(read_only)["code"] == "forbidden"
    assert snapshot() == before


@pytest.mark.parametrize("action", ["approve-landing", "retry-landing", "landed-by-hand"])
def test_a_landing_action_in_the_wrong_state_is_a_409_and_changes_nothing(
    world, action, django_capture_on_commit_callbacks
):
    transfer = single(world, landing=action != "approve-landing")
    before = snapshot()
    response = post(
        world.carol, f"transfer-{action}", transfer.pk, django_capture_on_commit_callbacks
    )
    assert response.status_code == 409 and error(response)["code"] == "invalid_state"
    assert snapshot() == before


def test_the_requester_may_not_approve_the_landing_of_their_own_move(
    world, target, django_capture_on_commit_callbacks
):
    transfer = single(world)
    both = world.requester
    AccountGrant.objects.create(account=target, user=both, role=Role.APPROVER)
    before = snapshot()
    response = post(
        both, "transfer-approve-landing", transfer.pk, django_capture_on_commit_callbacks
    )
    assert response.status_code == 403 and error(response)["code"] == "forbidden"
    assert snapshot() == before


def test_a_restore_retry_of_a_finished_restore_is_a_409(world, django_capture_on_commit_callbacks):
    transfer = restore_stopped(world, django_capture_on_commit_callbacks)
    Transfer.objects.filter(pk=transfer.pk).update(restore_state="done")
    before = snapshot()
    response = post(
        world.requester, "transfer-retry-restore", transfer.pk, django_capture_on_commit_callbacks
    )
    assert response.status_code == 409 and error(response)["code"] == "invalid_state"
    assert snapshot() == before


def test_a_transfer_shows_its_landing_approvals_restore_and_downtime(
    world, source, django_capture_on_commit_callbacks
):
    ApprovalPolicy.objects.create(account=source, approvals=2)
    transfer = single(world)
    client = api_for(world.requester)
    shown = client.get(url("transfer-detail", transfer.pk)).json()
    assert shown["landing"]["activate"] is True
    assert [p["name"] for p in shown["landing"]["policies"]] == ["Telemetry"]
    assert shown["landing_state"] == "planned" and shown["landing_commands"] == []
    assert shown["target_approver"] is None
    assert shown["approvals"] == {"received": 0, "required": 2, "by": []}
    assert shown["unusable_since"] is None and shown["downtime_seconds"] is None
    post(world.approver, "transfer-approve", transfer.pk, django_capture_on_commit_callbacks)
    shown = client.get(url("transfer-detail", transfer.pk)).json()
    assert shown["approvals"] == {"received": 1, "required": 2, "by": ["approver"]}


def test_a_transfer_seen_only_from_the_target_hides_the_sources_side_of_the_new_fields(
    world, source, django_capture_on_commit_callbacks
):
    ApprovalPolicy.objects.create(account=source, approvals=2)
    transfer = single(world)
    post(world.approver, "transfer-approve", transfer.pk, django_capture_on_commit_callbacks)
    post(world.carol, "transfer-approve-landing", transfer.pk, django_capture_on_commit_callbacks)
    Transfer.objects.filter(pk=transfer.pk).update(
        restore_state="attention", detached_policies=["Telemetry"]
    )
    whole = api_for(world.requester).get(url("transfer-detail", transfer.pk)).json()
    assert whole["approvals"]["by"] == ["approver"] and whole["restore_steps_left"]
    for user in (world.carol, world.tina):
        seen = api_for(user).get(url("transfer-detail", transfer.pk)).json()
        assert seen["approvals"] is None
        assert seen["restore_state"] == "" and seen["restore_steps_left"] == []
        # What concerns the target stays: the landing, who approved it, the downtime.
        assert seen["landing"] == whole["landing"]
        assert seen["target_approver"] == "carol"
        assert seen["landing_state"] == whole["landing_state"]
        assert seen["unusable_since"] == whole["unusable_since"]


# ----------------------------------------------------------------------------- schema


def test_every_operation_documents_429_and_each_429_and_503_its_retry_after(viewer):
    schema = api_for(viewer).get(url("schema"), {"format": "json"}).json()
    aws = {
        ("post", "/api/certificates/{id}/plan/"),
        ("post", "/api/transfers/"),
        ("post", "/api/transfers/{id}/cancel/"),
        ("post", "/api/transfers/{id}/accept/"),
        ("post", "/api/transfers/{id}/reject/"),
        ("post", "/api/transfers/{id}/reconcile/"),
        ("post", "/api/batches/"),
    }
    seen = set()
    for path, item in schema["paths"].items():
        for method, operation in item.items():
            codes = set(operation["responses"])
            assert {"401", "403", "429"} <= codes, (method, path)
            if (method, path) in aws:
                assert {"502", "503"} <= codes, (method, path)
                seen.add((method, path))
            for code in {"429", "503"} & codes:
                headers = operation["responses"][code]["headers"]
                assert headers["Retry-After"]["required"] is True, (method, path, code)
    assert seen == aws
    new = {
        "/api/batches/",
        "/api/batches/{id}/",
        *(f"/api/batches/{{id}}/{a}/" for a in BATCH_ACTIONS),
        *(f"/api/transfers/{{id}}/{a}/" for a in TRANSFER_ACTIONS),
    }
    assert new <= set(schema["paths"])
