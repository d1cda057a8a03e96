"""Landing in the target account and pre-accepted moves, through the stand-in (issue 14)."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
import time_machine
from django.urls import reverse
from django.utils import timezone

from tests.conftest import (
    KNOWN,
    TARGET,
    add_certificate,
    api_token,
    committed,
    iot_for,
    make_account,
    make_user,
)
from transfers import inventory, workflow
from transfers.models import Certificate, Role, Transfer
from transfers.workflow import LandingChoice, Options, TransferError
from transfers.workflow.landing import due_landings
from transfers.workflow.landing_plan import cli_commands, rewrite_document

DOC = {
    "Version": "2012-10-17",
    "Statement": [
        {
            "Effect": "Allow",
            "Action": "iot:Publish",
            "Resource": "arn:aws:iot:us-east-1:111111111111:topic/devices/*",
        }
    ],
}


@pytest.fixture
def world(standin, source, target, requester, approver):
    iot, tiot = iot_for(source), iot_for(target)
    iot.create_thing_type(thingTypeName="Sensor")
    iot.create_policy(policyName="DevicePublish", policyDocument=json.dumps(DOC))
    made = add_certificate(iot, "ACTIVE", ["DevicePublish", "Telemetry"])
    iot.create_thing(
        thingName="sensor-1",
        thingTypeName="Sensor",
        attributePayload={"attributes": {"site": "north"}},
    )
    iot.attach_thing_principal(thingName="sensor-1", principal=made["certificateArn"])
    # The target already has Telemetry; DevicePublish and the thing are missing there.
    tiot.create_policy(policyName="Telemetry", policyDocument=json.dumps(DOC))
    run, _ = inventory.queue_sync(source, "us-east-1")
    inventory.sync_region(run.pk)
    cert = Certificate.objects.get(certificate_id=made["certificateId"])
    carol = make_user("carol", (target, Role.APPROVER))
    standin.reset_counters()
    return {"iot": iot, "tiot": tiot, "cert": cert, "carol": carol, "control": standin}


def request(world, user, choice: LandingChoice | None = None, **kw) -> Transfer:
    return workflow.request_transfer(
        user,
        world["cert"],
        target_account_id=kw.pop("target_account_id", TARGET),
        message="Devices sold to Acme",
        reason="Sale",
        options=Options(),
        landing=choice or LandingChoice(create_policies=True),
        **kw,
    )


def plan(world, choice: LandingChoice, target_id: str = TARGET):
    return workflow.make_plan(world["cert"], target_id, Options(), choice)


def attached(tiot, arn):
    policies = sorted(p["policyName"] for p in tiot.list_attached_policies(target=arn)["policies"])
    return policies, tiot.list_principal_things(principal=arn)["things"]


# ----------------------------------------------------------------- the plan


def test_a_missing_policy_blocks_unless_the_plan_creates_it(world):
    blocked = plan(world, LandingChoice())
    assert any("DevicePublish does not exist in the target" in b for b in blocked.blockers)
    created = plan(world, LandingChoice(create_policies=True))
    assert created.blockers == []
    entry = {p["name"]: p for p in created.landing["policies"]}
    assert entry["Telemetry"]["create"] is False
    assert entry["DevicePublish"]["create"] is True
    assert ":222222222222:topic/devices/*" in entry["DevicePublish"]["document"]
    assert "-" in entry["DevicePublish"]["diff"] and "+" in entry["DevicePublish"]["diff"]
    assert "Create and attach policy DevicePublish in the target." in created.steps


def test_a_policy_can_be_mapped_to_another_target_policy(world):
    mapped = plan(world, LandingChoice(policy_map={"DevicePublish": "Telemetry"}))
    assert mapped.blockers == []
    assert [(p["source"], p["name"]) for p in mapped.landing["policies"]] == [
        ("DevicePublish", "Telemetry"),
        ("Telemetry", "Telemetry"),
    ]
    missing = plan(world, LandingChoice(policy_map={"DevicePublish": "Nowhere"}))
    assert any("Nowhere (mapped from DevicePublish)" in b for b in missing.blockers)


def test_a_document_naming_another_account_cannot_be_copied():
    doc = json.dumps(
        {
            "Statement": [
                {"Resource": "arn:aws:iot:us-east-1:111111111111:topic/a"},
                {"Resource": "arn:aws:iot:us-east-1:999999999999:topic/b"},
            ]
        }
    )
    rewritten, problems = rewrite_document(doc, "111111111111", "222222222222")
    assert problems == ["it names account 999999999999, which the rewrite cannot map"]
    assert ":222222222222:topic/a" in rewritten
    cond = json.dumps({"Condition": {"StringEquals": {"aws:SourceAccount": "111111111111"}}})
    assert "outside an ARN" in rewrite_document(cond, "111111111111", "222222222222")[1][0]


def test_things_are_created_with_their_type_when_the_target_has_it_or_skipped(world):
    world["tiot"].create_thing_type(thingTypeName="Sensor")
    things = plan(world, LandingChoice(create_policies=True)).landing["things"]
    assert things == [
        {"name": "sensor-1", "create": True, "type": "Sensor", "attributes": {"site": "north"}}
    ]
    refused = plan(world, LandingChoice(create_policies=True, create_things=False))
    assert any("Thing sensor-1 does not exist in the target" in b for b in refused.blockers)
    skipped = plan(world, LandingChoice(create_policies=True, skip_things=True))
    assert skipped.landing["things"] == [] and skipped.blockers == []


def test_the_fingerprint_covers_the_landing(world):
    before = plan(world, LandingChoice(create_policies=True)).fingerprint
    world["tiot"].create_policy(policyName="DevicePublish", policyDocument=json.dumps(DOC))
    after = plan(world, LandingChoice(create_policies=True))
    assert after.fingerprint != before
    assert {p["name"]: p["create"] for p in after.landing["policies"]} == {
        "DevicePublish": False,
        "Telemetry": False,
    }


# ----------------------------------------------------------------- pre-accepted moves


def test_a_pre_accepted_move_lands_active_with_its_policies_and_things(world, requester, approver):
    transfer = request(world, requester)
    committed(workflow.approve_landing, world["carol"], transfer.pk)  # target side first
    committed(workflow.approve, approver, transfer.pk)  # the worker runs it all

    transfer.refresh_from_db()
    assert transfer.status == Transfer.Status.ACCEPTED
    assert transfer.landing_state == Transfer.Landing.LANDED
    tiot, arn = world["tiot"], transfer.transferred_arn
    desc = tiot.describe_certificate(certificateId=transfer.certificate_id)
    assert desc["certificateDescription"]["status"] == "ACTIVE"
    assert attached(tiot, arn) == (["DevicePublish", "Telemetry"], ["sensor-1"])
    thing = tiot.describe_thing(thingName="sensor-1")
    assert thing["attributes"] == {"site": "north"}
    assert transfer.unusable_since is not None and transfer.usable_at is not None
    assert timedelta(0) <= transfer.downtime < timedelta(minutes=1)
    assert world["control"].call_count("AcceptCertificateTransfer") == 1


def target_calls(target) -> list[tuple[str, dict]]:
    """Every call the portal makes in the target from now on, in order."""
    seen: list[tuple[str, dict]] = []

    def record(model, params, **_):
        seen.append((model.name, params))

    iot_for(target).meta.events.register("before-parameter-build.iot", record)
    return seen


def assert_activated_last(seen: list[tuple[str, dict]]) -> None:
    """Accepted inactive; ACTIVE only once every policy and thing is attached."""
    names = [name for name, _ in seen]
    accept = seen[names.index("AcceptCertificateTransfer")][1]
    assert accept["setAsActive"] is False
    attaches = [i for i, n in enumerate(names) if n in ("AttachPolicy", "AttachThingPrincipal")]
    activations = [
        i
        for i, (n, params) in enumerate(seen)
        if n == "UpdateCertificate" and params["newStatus"] == "ACTIVE"
    ]
    assert len(attaches) == 3 and len(activations) == 1
    assert activations[0] > max(attaches)


def test_a_pre_accepted_move_activates_only_once_everything_is_attached(
    world, requester, approver, target
):
    seen = target_calls(target)
    transfer = request(world, requester)
    committed(workflow.approve_landing, world["carol"], transfer.pk)
    committed(workflow.approve, approver, transfer.pk)
    transfer.refresh_from_db()
    assert transfer.landing_state == Transfer.Landing.LANDED, transfer.landing_error
    assert_activated_last(seen)
    desc = world["tiot"].describe_certificate(certificateId=transfer.certificate_id)
    assert desc["certificateDescription"]["status"] == "ACTIVE"
    assert transfer.usable_at is not None


def test_accepting_in_the_inbox_with_a_landing_activates_last_too(
    world, requester, approver, target
):
    transfer = request(world, requester)
    committed(workflow.approve, approver, transfer.pk)
    seen = target_calls(target)
    operator = make_user("tops", (transfer.target, Role.ADMIN))
    committed(workflow.accept, operator, transfer.pk, set_as_active=True)
    transfer.refresh_from_db()
    assert transfer.landing_state == Transfer.Landing.LANDED, transfer.landing_error
    assert_activated_last(seen)


def test_a_landing_that_cannot_attach_a_policy_leaves_the_certificate_inactive(
    world, requester, approver
):
    transfer = request(world, requester)
    committed(workflow.approve_landing, world["carol"], transfer.pk)
    world["tiot"].delete_policy(policyName="Telemetry")  # planned as there, gone since
    committed(workflow.approve, approver, transfer.pk)
    transfer.refresh_from_db()
    assert transfer.landing_state == Transfer.Landing.PARTIAL
    assert workflow.landing_plan.steps_left(transfer) == [
        "Attach policy Telemetry",
        "Set the certificate ACTIVE",
    ]
    desc = world["tiot"].describe_certificate(certificateId=transfer.certificate_id)
    assert desc["certificateDescription"]["status"] == "INACTIVE"
    assert transfer.usable_at is None


def test_the_plan_says_the_certificate_is_activated_after_its_attachments(world):
    steps = plan(world, LandingChoice(create_policies=True)).steps
    accept = steps.index("Accept in the target, inactive.")
    activate = steps.index("Activate it in the target, once its policies and things are attached.")
    assert accept < steps.index("Attach policy Telemetry in the target.") < activate
    assert activate == len(steps) - 1


def test_the_target_side_approval_is_a_separate_person(world, requester, approver, source):
    transfer = request(world, requester)
    both = make_user("both", (source, Role.APPROVER))
    for user in (requester, approver, both):
        if user is both:
            from transfers.models import AccountGrant

            AccountGrant.objects.create(account=transfer.target, user=both, role=Role.APPROVER)
            committed(workflow.approve, both, transfer.pk)
        with pytest.raises(TransferError) as refused:
            workflow.approve_landing(user, transfer.pk)
        assert refused.value.status == 403
    viewer = make_user("tviewer", (transfer.target, Role.VIEWER))
    with pytest.raises(TransferError):
        workflow.approve_landing(viewer, transfer.pk)
    transfer.refresh_from_db()
    assert transfer.target_approver is None


def test_without_the_target_approval_it_waits_then_accepting_runs_the_landing(
    world, requester, approver
):
    transfer = request(world, requester)
    committed(workflow.approve, approver, transfer.pk)
    transfer.refresh_from_db()
    assert transfer.status == Transfer.Status.PENDING_ACCEPTANCE  # waits in the inbox
    assert world["control"].call_count("AcceptCertificateTransfer") == 0
    operator = make_user("tops", (transfer.target, Role.ADMIN))
    committed(workflow.accept, operator, transfer.pk, set_as_active=True)
    transfer.refresh_from_db()
    assert transfer.landing_state == Transfer.Landing.LANDED
    assert attached(world["tiot"], transfer.transferred_arn) == (
        ["DevicePublish", "Telemetry"],
        ["sensor-1"],
    )


def test_a_landing_failure_is_shown_retried_and_finished(
    world, requester, approver, client, settings
):
    transfer = request(world, requester)
    committed(workflow.approve_landing, world["carol"], transfer.pk)
    world["control"].set_faults(throttle_rate=1.0, operations=["AttachThingPrincipal"])
    committed(workflow.approve, approver, transfer.pk)
    transfer.refresh_from_db()
    assert transfer.status == Transfer.Status.ACCEPTED
    assert transfer.landing_state == Transfer.Landing.PARTIAL
    assert workflow.landing_plan.steps_left(transfer) == [
        "Attach thing sensor-1",
        "Set the certificate ACTIVE",
    ]
    assert transfer.usable_at is None  # not landed: no end to the downtime yet

    client.force_login(world["carol"])
    page = client.get(transfer.get_absolute_url()).content.decode()
    assert "Landed partially" in page and "Attach thing sensor-1" in page

    world["control"].clear_faults()
    with time_machine.travel(transfer.landing_next_at + timedelta(seconds=1)):
        assert committed(workflow.sweep_landings) == 1
    transfer.refresh_from_db()
    assert transfer.landing_state == Transfer.Landing.LANDED
    assert world["control"].call_count("AcceptCertificateTransfer") == 1  # not again


def test_a_worker_killed_between_accept_and_landing_resumes(world, requester, approver):
    transfer = request(world, requester)
    committed(workflow.approve, approver, transfer.pk)
    Transfer.objects.filter(pk=transfer.pk).update(
        target_approver=world["carol"], target_approved_at=timezone.now()
    )
    transfer.refresh_from_db()
    # The worker accepted, then died before any attach: its lease is still on the row.
    workflow.landing._claim(transfer.pk)
    workflow.landing._accept(transfer, iot_for(transfer.target))
    assert due_landings() == []  # its lease holds
    later = timezone.now() + timedelta(seconds=transfer_lease() + 60)
    with time_machine.travel(later):
        assert due_landings() == [transfer.pk]
        assert committed(workflow.sweep_landings) == 1
    transfer.refresh_from_db()
    assert transfer.landing_state == Transfer.Landing.LANDED
    assert world["control"].call_count("AcceptCertificateTransfer") == 1


def transfer_lease() -> int:
    from django.conf import settings

    return settings.TRANSFER_LEASE_SECONDS


# ----------------------------------------------------------------- unmanaged targets


def test_an_unmanaged_target_gets_the_landing_as_cli_commands(world):
    make_account(KNOWN, "Partner Ltd", managed=False)
    admin = make_user("sadmin", (world["cert"].account, Role.ADMIN))
    transfer = request(world, admin, LandingChoice(activate=True), target_account_id=KNOWN)
    commands = cli_commands(transfer)
    arn = f"arn:aws:iot:us-east-1:{KNOWN}:cert/{transfer.certificate_id}"
    assert commands[0] == (
        f"aws iot accept-certificate-transfer --certificate-id {transfer.certificate_id} "
        "--region us-east-1"
    )
    attach = f"aws iot attach-policy --policy-name DevicePublish --target {arn} --region us-east-1"
    assert attach in commands
    assert any("attach-thing-principal --thing-name sensor-1" in c for c in commands)
    # Activated last, once its policies and thing are attached.
    assert commands[-1] == (
        f"aws iot update-certificate --certificate-id {transfer.certificate_id} "
        "--new-status ACTIVE --region us-east-1"
    )


def test_the_transfer_page_shows_the_landing_and_the_target_approves_it(
    world, requester, approver, client
):
    transfer = request(world, requester)
    client.force_login(world["carol"])
    page = client.get(transfer.get_absolute_url()).content.decode()
    assert "Approve the landing" in page
    response = client.post(reverse("transfer_approve_landing", args=[transfer.pk]))
    assert response.status_code == 302
    transfer.refresh_from_db()
    assert transfer.target_approver == world["carol"]
    client.force_login(requester)
    response = client.post(reverse("transfer_approve_landing", args=[transfer.pk]))
    assert response.status_code == 403


# ----------------------------------------------------------------- the forms and the API


def test_the_request_form_takes_a_landing_plan(world, requester, client):
    client.force_login(requester)
    url = reverse("transfer_new", args=[world["cert"].pk])
    form = {
        "target": TARGET,
        "message": "For Acme",
        "reason": "Sale",
        "deactivate": "on",
        "detach_policies": "on",
        "detach_things": "on",
        "restore": "on",
        "land": "on",
        "activate": "on",
        "create_policies": "on",
        "create_things": "on",
    }
    page = client.post(url, {**form, "action": "preview"}).content.decode()
    assert "Create and attach policy DevicePublish in the target." in page
    assert "rewritten for the target" in page
    fingerprint = page.split('name="fingerprint" value="')[1].split('"')[0]
    response = client.post(url, {**form, "action": "submit", "fingerprint": fingerprint})
    assert response.status_code == 302
    transfer = Transfer.objects.get()
    assert transfer.landing_state == Transfer.Landing.PLANNED
    assert [p["name"] for p in transfer.landing["policies"]] == ["DevicePublish", "Telemetry"]

    bad = client.post(url, {**form, "policy_map": "no equals sign", "action": "preview"})
    assert "write SourceName=TargetName" in bad.content.decode()


def test_the_api_takes_a_landing_plan(world, requester):
    from rest_framework.test import APIClient

    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Token {api_token(requester)}")
    body = {
        "certificate": world["cert"].pk,
        "target_account_id": TARGET,
        "reason": "Sale",
        "landing": {"policy_map": [{"source": "DevicePublish", "target": "Telemetry"}]},
    }
    plan = api.post(f"/api/certificates/{world['cert'].pk}/plan/", body, format="json").json()
    assert plan["blockers"] == []
    assert [(p["source"], p["name"]) for p in plan["landing"]["policies"]] == [
        ("DevicePublish", "Telemetry"),
        ("Telemetry", "Telemetry"),
    ]
    created = api.post("/api/transfers/", body, format="json")
    assert created.status_code == 201, created.json()
    transfer = Transfer.objects.get()
    assert transfer.landing["activate"] is True
    refused = api.post(
        "/api/transfers/",
        {**body, "landing": {"policy_map": [{"source": "", "target": "x"}]}},
        format="json",
    )
    assert refused.status_code == 400
    assert Transfer.objects.count() == 1


def test_a_batch_takes_a_landing_plan_and_skips_what_it_cannot_land(world, requester, source):
    from transfers import batches

    other = add_certificate(world["iot"], "INACTIVE", ["OnlyInTheSource"])
    fine = add_certificate(world["iot"], "INACTIVE", ["Telemetry"])
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
        landing=LandingChoice(),  # no creating: DevicePublish and OnlyInTheSource block
    )
    assert {s["certificate_id"] for s in batch.skipped} == {
        world["cert"].certificate_id,
        other["certificateId"],
    }
    (transfer,) = batch.transfers.all()
    assert transfer.certificate_id == fine["certificateId"]
    assert transfer.landing_state == Transfer.Landing.PLANNED
    assert [p["name"] for p in transfer.landing["policies"]] == ["Telemetry"]


def test_the_approvals_queue_lists_landings_for_the_target_side(world, requester, approver, client):
    transfer = request(world, requester)
    client.force_login(world["carol"])
    page = client.get(reverse("approvals")).content.decode()
    assert "Landings to approve for your accounts" in page
    assert reverse("transfer_approve_landing", args=[transfer.pk]) in page
    client.force_login(approver)  # the source's approver: nothing to approve for the target
    assert "Landings to approve" not in client.get(reverse("approvals")).content.decode()


def test_the_target_side_approves_a_whole_batchs_landing(world, requester, approver, source):
    from transfers import batches

    for _ in range(2):
        add_certificate(world["iot"], "INACTIVE", ["Telemetry"])
    run, _ = inventory.queue_sync(source, "us-east-1")
    inventory.sync_region(run.pk)
    certs = list(Certificate.objects.filter(account=source).exclude(pk=world["cert"].pk))
    batch = batches.request_batch(
        requester,
        certs,
        [],
        target_account_id=TARGET,
        message="m",
        reason="r",
        options=Options(),
        landing=LandingChoice(),
    )
    with pytest.raises(TransferError):
        batches.approve_landing(requester, batch)
    assert committed(batches.approve_landing, world["carol"], batch) == 2
    committed(batches.approve, approver, batch)
    for t in batch.transfers.all():
        assert t.status == Transfer.Status.ACCEPTED
        assert t.landing_state == Transfer.Landing.LANDED
        assert attached(world["tiot"], t.transferred_arn) == (["Telemetry"], [])
