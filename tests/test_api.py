"""The JSON API: the same permissions and rules as the pages, errors in one shape.

Flows run against the AWS stand-in; refusals that never reach AWS use rows made directly.
"""

import hashlib
from datetime import UTC, datetime

import pytest
from django.urls import reverse
from rest_framework.test import APIClient

from tests.conftest import OTHER, SOURCE, TARGET, add_certificate, api_token, iot_for, make_user
from transfers import inventory
from transfers.models import (
    Certificate,
    CertificatePolicy,
    CertificateThing,
    Role,
    Transfer,
    TransferEvent,
)

# ----------------------------------------------------------------------------- helpers


def api_for(user=None) -> APIClient:
    """A client authenticated the way automation is: with a token."""
    client = APIClient()
    if user is not None:
        client.credentials(HTTP_AUTHORIZATION=f"Token {api_token(user)}")
    return client


def url(name: str, *args) -> str:
    return reverse(f"api:{name}", args=args)


def post(client, name: str, *args, **data):
    return client.post(url(name, *args), data, format="json")


def error(response) -> dict:
    assert response["Content-Type"] == "application/json", response.content
    return response.json()["error"]


def status_of(pk: int) -> str:
    return Transfer.objects.get(pk=pk).status


def snapshot(pk: int) -> tuple:
    """What a refusal must leave untouched: the row and its audit trail."""
    row = Transfer.objects.filter(pk=pk).values().get()
    return row, TransferEvent.objects.filter(transfer_id=pk).count()


def describe(iot, cert_id: str) -> dict:
    return iot.describe_certificate(certificateId=cert_id)["certificateDescription"]


def cid(n: int) -> str:
    return hashlib.sha256(str(n).encode()).hexdigest()


def make_cert(account, n: int, status="ACTIVE", policies=(), things=(), region="us-east-1"):
    aws_id = cid(n)
    row = Certificate.objects.create(
        account=account,
        region=region,
        certificate_id=aws_id,
        arn=f"arn:aws:iot:{region}:{account.account_id}:cert/{aws_id}",
        status=status,
    )
    for name in policies:
        CertificatePolicy.objects.create(certificate=row, name=name)
    for name in things:
        CertificateThing.objects.create(certificate=row, name=name)
    return row


def make_transfer(cert, requester, status=Transfer.Status.REQUESTED, target=None, **fields):
    """A transfer row as the services leave it, without going through AWS."""
    fields.setdefault("target_account_id", target.account_id if target else TARGET)
    return Transfer.objects.create(
        source=cert.account,
        region=cert.region,
        cert=cert,
        certificate_id=cert.certificate_id,
        certificate_arn=cert.arn,
        target=target,
        requester=requester,
        reason="Sale",
        status=status,
        **fields,
    )


# ----------------------------------------------------------------------------- fixtures


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


@pytest.fixture
def cert(source):
    """A synced certificate row, for refusals that never reach AWS."""
    return make_cert(source, 1, policies=["DevicePublish"], things=["sensor-1"])


def request_transfer(world, user, **data) -> dict:
    # The stand-in's devices are off (they would never take the job): not told.
    body = {"certificate": world["cert"].pk, "target_account_id": TARGET, "tell_devices": False}
    body |= {"message": "Devices sold to Acme", "reason": "Sale"} | data
    response = api_for(user).post(url("transfer-list"), body, format="json")
    assert response.status_code == 201, response.content
    return response.json()


def to_pending(world, requester, approver, capture) -> dict:
    transfer = request_transfer(world, requester)
    with capture(execute=True):
        assert post(api_for(approver), "transfer-approve", transfer["id"]).status_code == 200
    body = api_for(requester).get(url("transfer-detail", transfer["id"])).json()
    assert body["status"] == "pending_acceptance", body["error_message"]
    return body


# ----------------------------------------------------------------------------- authentication


def test_a_token_authenticates_and_anonymous_gets_a_401_json_error(viewer, cert):
    response = api_for(viewer).get(url("certificate-list"))
    assert response.status_code == 200
    assert [c["certificate_id"] for c in response.json()["results"]] == [cert.certificate_id]

    anonymous = api_for().get(url("certificate-list"))
    assert anonymous.status_code == 401
    assert anonymous["WWW-Authenticate"] == "Token"
    assert error(anonymous)["code"] == "not_authenticated"

    forged = APIClient()
    forged.credentials(HTTP_AUTHORIZATION="Token not-a-real-token")
    response = forged.get(url("transfer-list"))
    assert response.status_code == 401
    assert error(response)["code"] == "authentication_failed"


def test_a_wrong_method_is_a_405_json_error(requester, cert):
    response = api_for(requester).delete(url("certificate-detail", cert.pk))
    assert response.status_code == 405
    assert error(response)["code"] == "method_not_allowed"
    assert Certificate.objects.filter(pk=cert.pk).exists()


def test_the_schema_endpoint_serves_the_openapi_document(viewer):
    assert api_for().get(url("schema")).status_code == 401
    response = api_for(viewer).get(url("schema"), {"format": "json"})
    assert response.status_code == 200
    schema = response.json()
    assert schema["openapi"].startswith("3.")
    assert "/api/transfers/{id}/approve/" in schema["paths"]


# ----------------------------------------------------------------------------- the flow


def test_request_approve_execute_and_accept_through_the_api(
    world, requester, approver, target, django_capture_on_commit_callbacks
):
    cert, iot = world["cert"], world["iot"]
    plan = post(api_for(requester), "certificate-plan", cert.pk, target_account_id=TARGET)
    assert plan.status_code == 200
    plan = plan.json()
    assert plan["status"] == "ACTIVE" and plan["blockers"] == []
    assert plan["policies"] == ["DevicePublish", "Telemetry"]

    created = api_for(requester).post(
        url("transfer-list"),
        {
            "certificate": cert.pk,
            "target_account_id": TARGET,
            "message": "Devices sold to Acme",
            "reason": "Sale",
            "plan_fingerprint": plan["fingerprint"],
            "tell_devices": False,  # the stand-in's devices are off: they would never answer
        },
        format="json",
    )
    assert created.status_code == 201
    transfer = created.json()
    assert created["Location"] == url("transfer-detail", transfer["id"])
    assert transfer["status"] == "requested"
    assert transfer["requester"] == "requester" and transfer["approver"] is None
    assert transfer["source_account_id"] == SOURCE and transfer["target_account_id"] == TARGET
    assert transfer["options"] == {
        "deactivate": True,
        "detach_policies": True,
        "detach_things": True,
        "restore": True,
        "tell_devices": False,
    }
    assert transfer["plan"]["fingerprint"] == plan["fingerprint"]
    assert [e["action"] for e in transfer["events"]] == ["requested"]

    with django_capture_on_commit_callbacks(execute=True):
        approved = post(api_for(approver), "transfer-approve", transfer["id"], comment="Checked")
    assert approved.status_code == 200
    assert approved.json()["status"] == "approved"
    assert approved.json()["approver"] == "approver"

    pending = api_for(requester).get(url("transfer-detail", transfer["id"])).json()
    assert pending["status"] == "pending_acceptance"
    assert pending["deactivated"] is True
    assert pending["detached_policies"] == ["DevicePublish", "Telemetry"]
    assert pending["detached_things"] == ["sensor-1"]
    assert pending["transferred_arn"].endswith(f":{TARGET}:cert/{cert.certificate_id}")
    assert pending["transfer_date"] and pending["expires_at"]
    assert describe(iot, cert.certificate_id)["status"] == "PENDING_TRANSFER"

    carol = world["carol"]
    incoming = api_for(carol).get(url("incoming")).json()
    assert [t["id"] for t in incoming["results"]] == [transfer["id"]]
    assert api_for(requester).get(url("incoming")).json()["count"] == 0

    accepted = post(api_for(carol), "transfer-accept", transfer["id"], set_as_active=True)
    assert accepted.status_code == 200
    body = accepted.json()
    assert body["status"] == "accepted" and body["set_as_active"] is True
    assert body["accept_date"] and body["certificate"] is None  # gone from the source
    assert describe(iot_for(target), cert.certificate_id)["status"] == "ACTIVE"
    # The target side sees states and its own actions, not the source's (access).
    actions = [e["action"] for e in body["events"]]
    assert "TransferCertificate" not in actions and actions[-1] == "mark_accepted"
    full = api_for(requester).get(url("transfer-detail", transfer["id"])).json()
    actions = [e["action"] for e in full["events"]]
    assert actions[:3] == ["requested", "approve", "start"]
    assert "TransferCertificate" in actions and actions[-1] == "mark_accepted"
    assert world["control"].call_count("TransferCertificate", cert.certificate_id) == 1


def test_decline_needs_a_comment_then_ends_the_request(world, requester, approver):
    transfer = request_transfer(world, requester)
    before = snapshot(transfer["id"])
    refused = post(api_for(approver), "transfer-decline", transfer["id"], comment="  ")
    assert refused.status_code == 400
    assert error(refused)["code"] == "comment_required"
    assert snapshot(transfer["id"]) == before

    declined = post(api_for(approver), "transfer-decline", transfer["id"], comment="Not now")
    assert declined.status_code == 200
    assert declined.json()["status"] == "declined"
    assert declined.json()["decision_comment"] == "Not now"
    assert describe(world["iot"], world["cert"].certificate_id)["status"] == "ACTIVE"


def test_only_the_requester_withdraws_a_request(world, requester, approver):
    transfer = request_transfer(world, requester)
    before = snapshot(transfer["id"])
    refused = post(api_for(approver), "transfer-withdraw", transfer["id"])
    assert refused.status_code == 403
    assert error(refused)["code"] == "forbidden"
    assert snapshot(transfer["id"]) == before

    withdrawn = post(api_for(requester), "transfer-withdraw", transfer["id"])
    assert withdrawn.status_code == 200
    assert withdrawn.json()["status"] == "cancelled"
    assert status_of(transfer["id"]) == Transfer.Status.CANCELLED


def test_cancel_of_a_pending_transfer_puts_everything_back(
    world, requester, approver, django_capture_on_commit_callbacks
):
    transfer = to_pending(world, requester, approver, django_capture_on_commit_callbacks)
    with django_capture_on_commit_callbacks(execute=True):
        cancelled = post(api_for(requester), "transfer-cancel", transfer["id"])
    assert cancelled.status_code == 200
    assert cancelled.json()["status"] == "cancelled"

    body = api_for(requester).get(url("transfer-detail", transfer["id"])).json()
    assert body["restore_state"] == "done"
    assert any(e["action"] == "restore" and e["ok"] for e in body["events"])
    iot, arn = world["iot"], transfer["certificate_arn"]
    assert describe(iot, transfer["certificate_id"])["status"] == "ACTIVE"
    policies = sorted(p["policyName"] for p in iot.list_attached_policies(target=arn)["policies"])
    assert policies == ["DevicePublish", "Telemetry"]
    assert iot.list_principal_things(principal=arn)["things"] == ["sensor-1"]


def test_the_target_rejects_with_a_reason_and_the_certificate_is_restored(
    world, requester, approver, django_capture_on_commit_callbacks
):
    transfer = to_pending(world, requester, approver, django_capture_on_commit_callbacks)
    carol = world["carol"]
    before = snapshot(transfer["id"])
    refused = post(api_for(carol), "transfer-reject", transfer["id"], reason="")
    assert refused.status_code == 400
    assert error(refused)["code"] == "invalid_reason"
    assert snapshot(transfer["id"]) == before

    with django_capture_on_commit_callbacks(execute=True):
        rejected = post(api_for(carol), "transfer-reject", transfer["id"], reason="Wrong devices")
    assert rejected.status_code == 200
    assert rejected.json()["status"] == "rejected"
    assert rejected.json()["reject_reason"] == "Wrong devices"
    assert Transfer.objects.get(pk=transfer["id"]).restore_state == Transfer.Restore.DONE
    assert describe(world["iot"], transfer["certificate_id"])["status"] == "ACTIVE"


# ----------------------------------------------------------------------------- refusals


def test_nobody_approves_their_own_request(world, source, django_capture_on_commit_callbacks):
    both = make_user("both", (source, Role.REQUESTER), (source, Role.APPROVER))
    transfer = request_transfer(world, both)
    before = snapshot(transfer["id"])
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        refused = post(api_for(both), "transfer-approve", transfer["id"])
    assert refused.status_code == 403
    assert error(refused)["code"] == "self_approval"
    assert "another approver" in error(refused)["message"]
    assert snapshot(transfer["id"]) == before
    assert callbacks == []  # nothing was queued for the worker


def test_a_viewer_may_not_approve(requester, viewer, cert):
    transfer = make_transfer(cert, requester)
    before = snapshot(transfer.pk)
    refused = post(api_for(viewer), "transfer-approve", transfer.pk, comment="ok")
    assert refused.status_code == 403
    assert error(refused)["code"] == "forbidden"
    assert snapshot(transfer.pk) == before


def test_an_action_in_the_wrong_state_is_a_409(requester, approver, cert):
    transfer = make_transfer(cert, requester, status=Transfer.Status.DECLINED)
    before = snapshot(transfer.pk)
    for action in ("transfer-approve", "transfer-retry", "transfer-withdraw"):
        refused = post(
            api_for(approver if action == "transfer-approve" else requester), action, transfer.pk
        )
        assert refused.status_code == 409, action
        assert error(refused)["code"] == "invalid_state"
    assert snapshot(transfer.pk) == before


def test_an_outsider_gets_the_same_404_as_for_a_missing_id(
    requester, outsider, source, target, cert
):
    transfer = make_transfer(
        cert, requester, status=Transfer.Status.PENDING_ACCEPTANCE, target=target
    )
    before = snapshot(transfer.pk)
    missing = transfer.pk + 1000
    client = api_for(outsider)

    def same_404(method, name, pk, **data):
        seen = getattr(client, method)(url(name, pk), data, format="json")
        absent = getattr(client, method)(url(name, missing), data, format="json")
        assert seen.status_code == absent.status_code == 404, name
        assert seen.json() == absent.json()
        assert error(seen)["code"] == "not_found"

    same_404("get", "transfer-detail", transfer.pk)
    for name in ("approve", "decline", "withdraw", "cancel", "retry", "accept", "reject"):
        same_404("post", f"transfer-{name}", transfer.pk, comment="x", reason="x")
    same_404("get", "certificate-detail", cert.pk)
    same_404("post", "certificate-plan", cert.pk, target_account_id=OTHER)
    assert snapshot(transfer.pk) == before

    # Naming the certificate in a request body leaks nothing either.
    body = {"target_account_id": OTHER, "reason": "mine now"}
    seen = client.post(url("transfer-list"), body | {"certificate": cert.pk}, format="json")
    absent = client.post(url("transfer-list"), body | {"certificate": missing}, format="json")
    assert seen.status_code == absent.status_code == 404
    assert seen.json() == absent.json()
    assert Transfer.objects.count() == 1

    listed = client.get(url("transfer-list")).json()
    assert listed["count"] == 0
    assert client.get(url("certificate-list")).json()["count"] == 0


@pytest.mark.parametrize(
    ("data", "code", "field"),
    [
        ({"target_account_id": "12345"}, "invalid_target", None),
        ({"target_account_id": "22222222222a"}, "invalid_target", None),
        ({"message": "x" * 129}, "invalid_message", None),
        ({"message": "line\nbreak"}, "invalid_message", None),
        ({"message": "tab\tinside"}, "invalid_message", None),
        ({"reason": "   "}, "invalid_reason", None),
        ({"reason": "x" * 2001}, "invalid_reason", None),
        ({"target_account_id": None}, "invalid", "target_account_id"),
        ({"certificate": "first"}, "invalid", "certificate"),
        ({"deactivate": "maybe"}, "invalid", "deactivate"),
    ],
)
def test_a_bad_request_is_a_400_and_creates_nothing(requester, target, cert, data, code, field):
    body = {"certificate": cert.pk, "target_account_id": TARGET, "reason": "Sale"} | data
    refused = api_for(requester).post(url("transfer-list"), body, format="json")
    assert refused.status_code == 400
    problem = error(refused)
    assert problem["code"] == code
    if field:
        assert field in problem["fields"]
    assert not Transfer.objects.exists()
    assert not TransferEvent.objects.exists()


def test_a_viewer_may_neither_plan_nor_request(viewer, cert):
    refused = post(api_for(viewer), "certificate-plan", cert.pk, target_account_id=TARGET)
    assert refused.status_code == 403
    assert error(refused)["code"] == "forbidden"
    body = {"certificate": cert.pk, "target_account_id": TARGET, "reason": "Sale"}
    refused = api_for(viewer).post(url("transfer-list"), body, format="json")
    assert refused.status_code == 403
    assert not Transfer.objects.exists()


def test_a_second_open_transfer_is_a_409(world, requester):
    first = request_transfer(world, requester)
    body = {"certificate": world["cert"].pk, "target_account_id": TARGET, "reason": "Again"}
    refused = api_for(requester).post(url("transfer-list"), body, format="json")
    assert refused.status_code == 409
    assert error(refused)["code"] == "blocked"
    assert "already has an open transfer" in error(refused)["message"]
    assert list(Transfer.objects.values_list("pk", flat=True)) == [first["id"]]


def test_a_stale_plan_fingerprint_is_a_409(world, requester):
    cert, iot = world["cert"], world["iot"]
    plan = post(api_for(requester), "certificate-plan", cert.pk, target_account_id=TARGET).json()
    iot.detach_policy(policyName="Telemetry", target=cert.arn)  # changed in AWS meanwhile
    body = {
        "certificate": cert.pk,
        "target_account_id": TARGET,
        "reason": "Sale",
        "plan_fingerprint": plan["fingerprint"],
    }
    refused = api_for(requester).post(url("transfer-list"), body, format="json")
    assert refused.status_code == 409
    assert error(refused)["code"] == "stale_plan"
    assert not Transfer.objects.exists()
    assert describe(iot, cert.certificate_id)["status"] == "ACTIVE"


def test_accept_needs_rights_on_the_target_account(requester, approver, target, cert):
    transfer = make_transfer(
        cert, requester, status=Transfer.Status.PENDING_ACCEPTANCE, target=target
    )
    target_viewer = make_user("watcher", (target, Role.VIEWER))
    before = snapshot(transfer.pk)
    for user in (requester, approver, target_viewer):
        refused = post(api_for(user), "transfer-accept", transfer.pk, set_as_active=True)
        assert refused.status_code == 403, user
        assert error(refused)["code"] == "forbidden"
    assert snapshot(transfer.pk) == before
    assert api_for(target_viewer).get(url("incoming")).json()["count"] == 0


# ----------------------------------------------------------------------------- lists


@pytest.fixture
def history(source, target, requester, approver):
    """Transfers on three different days, by two requesters, in three states."""
    day = lambda d: datetime(2025, 3, d, 12, tzinfo=UTC)  # noqa: E731
    certs = [make_cert(source, n) for n in range(1, 5)]
    return {
        "old": make_transfer(
            certs[0],
            requester,
            Transfer.Status.DECLINED,
            created=day(1),
            target_account_id="555555555555",
        ),
        "mid": make_transfer(certs[1], approver, Transfer.Status.CANCELLED, created=day(10)),
        "new": make_transfer(certs[2], requester, created=day(20)),
        "pending": make_transfer(
            certs[3], requester, Transfer.Status.PENDING_ACCEPTANCE, target, created=day(21)
        ),
    }


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ({}, ["pending", "new", "mid", "old"]),
        ({"status": "declined"}, ["old"]),
        ({"requester": "approver"}, ["mid"]),
        ({"account": SOURCE}, ["pending", "new", "mid", "old"]),
        ({"account": OTHER}, []),
        ({"since": "2025-03-10"}, ["pending", "new", "mid"]),
        ({"until": "2025-03-10"}, ["mid", "old"]),
        ({"since": "2025-03-02", "until": "2025-03-20", "requester": "requester"}, ["new"]),
    ],
)
def test_the_transfer_list_filters(requester, history, query, expected):
    response = api_for(requester).get(url("transfer-list"), query)
    assert response.status_code == 200
    ids = [t["id"] for t in response.json()["results"]]
    assert ids == [history[name].pk for name in expected]


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ({"since": "yesterday"}, "since"),
        ({"until": "2025-13-01"}, "until"),
        ({"since": "2025-03-20", "until": "2025-03-01"}, "until"),
        ({"status": "lost"}, "status"),
    ],
)
def test_a_bad_filter_value_is_a_400(requester, history, query, field):
    response = api_for(requester).get(url("transfer-list"), query)
    assert response.status_code == 400
    problem = error(response)
    assert problem["code"] == "invalid"
    assert list(problem["fields"]) == [field]


def test_the_target_side_sees_transfers_into_its_account(history, target):
    carol = make_user("carol", (target, Role.ADMIN))
    pending = history["pending"]
    listed = api_for(carol).get(url("transfer-list")).json()
    into_target = ["pending", "new", "mid"]  # not "old": it went to another account
    assert [t["id"] for t in listed["results"]] == [history[name].pk for name in into_target]
    incoming = api_for(carol).get(url("incoming")).json()
    assert [t["id"] for t in incoming["results"]] == [pending.pk]
    assert incoming["results"][0]["target_account_name"] == target.name


def test_the_transfer_list_runs_a_fixed_number_of_queries(
    requester, history, django_assert_max_num_queries
):
    client = api_for(requester)
    # token, count, page, the page's approvals and its sources' approval policies
    with django_assert_max_num_queries(5):
        response = client.get(url("transfer-list"))
    assert response.json()["count"] == 4


@pytest.fixture
def inventory_rows(source, other):
    return {
        "a1": make_cert(source, 0xA1, policies=["DevicePublish"], things=["sensor-1"]),
        "a2": make_cert(source, 0xA2, status="INACTIVE", policies=["Telemetry"]),
        "b3": make_cert(source, 0xB3, things=["gateway-9"], region="eu-west-1"),
        "theirs": make_cert(other, 0xC4, policies=["DevicePublish"]),
    }


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ({}, {"a1", "a2", "b3"}),
        ({"q": "Device"}, {"a1"}),
        ({"q": "gateway"}, {"b3"}),
        ({"q": cid(0xA2)[:12]}, {"a2"}),
        ({"q": f"arn:aws:iot:eu-west-1:{SOURCE}:"}, {"b3"}),
        ({"status": "INACTIVE"}, {"a2"}),
        ({"region": "eu-west-1"}, {"b3"}),
        ({"account": SOURCE, "q": "sensor"}, {"a1"}),
        ({"account": OTHER}, set()),
    ],
)
def test_the_certificate_list_searches_like_the_page(viewer, inventory_rows, query, expected):
    response = api_for(viewer).get(url("certificate-list"), query)
    assert response.status_code == 200
    found = {c["certificate_id"] for c in response.json()["results"]}
    assert found == {inventory_rows[name].certificate_id for name in expected}


def test_a_bad_certificate_filter_is_a_400(viewer, inventory_rows):
    response = api_for(viewer).get(url("certificate-list"), {"status": "SHINY"})
    assert response.status_code == 400
    assert list(error(response)["fields"]) == ["status"]


def test_a_certificate_shows_its_account_policies_and_things(viewer, inventory_rows):
    cert = inventory_rows["a1"]
    body = api_for(viewer).get(url("certificate-detail", cert.pk)).json()
    assert body["id"] == cert.pk and body["certificate_id"] == cert.certificate_id
    assert body["arn"] == cert.arn and body["status"] == "ACTIVE"
    assert (body["account_id"], body["account_name"]) == (SOURCE, "Fleet production")
    assert body["policies"] == ["DevicePublish"] and body["things"] == ["sensor-1"]
    assert set(body) >= {"region", "not_before", "not_after", "synced_at"}


def test_the_certificate_list_runs_a_fixed_number_of_queries(
    viewer, source, django_assert_max_num_queries
):
    for n in range(30):
        make_cert(source, 100 + n, policies=[f"p{n}", "shared"], things=[f"t{n}"])
    client = api_for(viewer)
    with django_assert_max_num_queries(5):  # token, count, page, policies, things
        response = client.get(url("certificate-list"))
    results = response.json()["results"]
    assert len(results) == 30
    assert all(len(c["policies"]) == 2 and len(c["things"]) == 1 for c in results)
