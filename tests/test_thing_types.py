"""A thing attached exclusively (EXCLUSIVE_THING) comes back exclusively: in the plan, the
landing in the target and the restore in the source (issue 24, point 4)."""

from __future__ import annotations

import json

import pytest

from tests.conftest import (
    KNOWN,
    TARGET,
    add_certificate,
    committed,
    iot_for,
    make_account,
    make_user,
)
from transfers import inventory, workflow
from transfers.models import Certificate, Role, Transfer
from transfers.workflow import LandingChoice, Options
from transfers.workflow.landing_plan import cli_commands

OPEN = json.dumps({"Version": "2012-10-17", "Statement": []})


@pytest.fixture
def world(standin, source, target, requester, approver):
    """Two certificates with the same policy: one attached to its thing exclusively, one not."""
    iot, tiot = iot_for(source), iot_for(target)
    iot.create_policy(policyName="Telemetry", policyDocument=OPEN)
    tiot.create_policy(policyName="Telemetry", policyDocument=OPEN)
    only = add_certificate(iot, "ACTIVE", ["Telemetry"])
    iot.create_thing(thingName="meter-1")
    iot.attach_thing_principal(
        thingName="meter-1", principal=only["certificateArn"], thingPrincipalType="EXCLUSIVE_THING"
    )
    shared = add_certificate(iot, "ACTIVE", ["Telemetry"], thing="meter-2")
    run, _ = inventory.queue_sync(source, "us-east-1")
    inventory.sync_region(run.pk)
    carol = make_user("carol", (target, Role.APPROVER))
    return {
        "iot": iot,
        "tiot": tiot,
        "exclusive": Certificate.objects.get(certificate_id=only["certificateId"]),
        "shared": Certificate.objects.get(certificate_id=shared["certificateId"]),
        "carol": carol,
    }


def request(user, cert, landing=None, target_account_id=TARGET) -> Transfer:
    return workflow.request_transfer(
        user,
        cert,
        target_account_id=target_account_id,
        message="Devices sold to Acme",
        reason="Sale",
        options=Options(),
        landing=landing,
    )


def types(iot, arn) -> list[tuple[str, str]]:
    listed = iot.list_principal_things_v2(principal=arn)["principalThingObjects"]
    return [(t["thingName"], t["thingPrincipalType"]) for t in listed]


def test_the_plan_says_which_things_are_attached_exclusively(world):
    exclusive = workflow.make_plan(world["exclusive"], TARGET, Options(), LandingChoice())
    assert exclusive.things == ["meter-1"]
    assert exclusive.as_dict()["exclusive_things"] == ["meter-1"]
    assert "Detach things (1): meter-1 (exclusive)." in exclusive.steps
    assert exclusive.landing["things"][0]["exclusive"] is True
    assert "Create and attach thing meter-1 exclusively in the target." in exclusive.steps
    shared = workflow.make_plan(world["shared"], TARGET, Options(), LandingChoice())
    assert shared.as_dict()["exclusive_things"] == []
    assert "exclusive" not in shared.landing["things"][0]


def test_the_detached_things_keep_their_type_on_the_transfer(world, requester, approver):
    transfer = request(requester, world["exclusive"])
    committed(workflow.approve, approver, transfer.pk)
    transfer.refresh_from_db()
    assert transfer.status == Transfer.Status.PENDING_ACCEPTANCE, transfer.error_message
    assert transfer.detached_things == ["meter-1"]
    assert transfer.exclusive_things == ["meter-1"]


def test_a_pre_accepted_move_attaches_an_exclusive_thing_exclusively(world, requester, approver):
    transfer = request(requester, world["exclusive"], LandingChoice())
    committed(workflow.approve_landing, world["carol"], transfer.pk)
    committed(workflow.approve, approver, transfer.pk)
    transfer.refresh_from_db()
    assert transfer.landing_state == Transfer.Landing.LANDED, transfer.landing_error
    assert types(world["tiot"], transfer.transferred_arn) == [("meter-1", "EXCLUSIVE_THING")]


def test_a_non_exclusive_thing_lands_non_exclusive(world, requester, approver):
    transfer = request(requester, world["shared"], LandingChoice())
    committed(workflow.approve_landing, world["carol"], transfer.pk)
    committed(workflow.approve, approver, transfer.pk)
    transfer.refresh_from_db()
    assert transfer.landing_state == Transfer.Landing.LANDED, transfer.landing_error
    assert types(world["tiot"], transfer.transferred_arn) == [("meter-2", "NON_EXCLUSIVE_THING")]


def test_a_restore_puts_an_exclusive_thing_back_exclusively(world, requester, approver):
    transfer = request(requester, world["exclusive"])
    committed(workflow.approve, approver, transfer.pk)
    committed(workflow.cancel, requester, transfer.pk)
    transfer.refresh_from_db()
    assert transfer.restore_state == Transfer.Restore.DONE, transfer.restore_error
    assert types(world["iot"], transfer.certificate_arn) == [("meter-1", "EXCLUSIVE_THING")]


def test_the_cli_commands_attach_an_exclusive_thing_exclusively(world):
    make_account(KNOWN, "Partner Ltd", managed=False)
    admin = make_user("sadmin", (world["exclusive"].account, Role.ADMIN))
    transfer = request(admin, world["exclusive"], LandingChoice(), target_account_id=KNOWN)
    (attach,) = [c for c in cli_commands(transfer) if "attach-thing-principal" in c]
    assert "--thing-name meter-1" in attach
    assert "--thing-principal-type EXCLUSIVE_THING" in attach
