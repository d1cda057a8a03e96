"""The landing and the target's fleet indexing (issue 24, part 2): without thing connectivity
indexing the plan says that reconnection cannot be verified; a landing approved by the
target's side may turn it on (its other indexing settings kept) as a step of its own, shown
with its diff, run before the activation, recorded and resumed like the other steps.
Through the stand-in, which validates UpdateIndexingConfiguration as AWS does."""

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
from transfers import aws, batches, inventory, workflow
from transfers.models import Certificate, Role, Transfer
from transfers.workflow import LandingChoice, Options, devices
from transfers.workflow.landing_plan import INDEXING, cli_commands, steps, steps_left

CONNECT = json.dumps(
    {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": "iot:Connect", "Resource": "*"}],
    }
)
# What the target indexes already: shadows, Device Defender violations, a custom field.
RICH = {
    "thingIndexingMode": "REGISTRY_AND_SHADOW",
    "deviceDefenderIndexingMode": "VIOLATIONS",
    "customFields": [{"name": "attributes.site", "type": "String"}],
}
CHOSEN = LandingChoice(enable_connectivity_indexing=True)


@pytest.fixture
def world(standin, source, target, requester, approver):
    iot, tiot = iot_for(source), iot_for(target)
    for client in (iot, tiot):
        client.create_policy(policyName="Connect", policyDocument=CONNECT)
    for n in range(3):
        add_certificate(iot, "ACTIVE", ["Connect"], thing=f"sensor-{n}")
    add_certificate(iot, "ACTIVE", ["Connect"])  # no thing: no device to wait for
    run, _ = inventory.queue_sync(source, "us-east-1")
    inventory.sync_region(run.pk)
    certs = list(Certificate.objects.filter(things__isnull=False).order_by("pk"))
    bare = Certificate.objects.get(things__isnull=True)
    carol = make_user("carol", (target, Role.ADMIN))
    standin.reset_counters()
    return {"iot": iot, "tiot": tiot, "certs": certs, "bare": bare, "carol": carol}


def request(world, user, choice: LandingChoice, cert=None, target_id=TARGET) -> Transfer:
    return workflow.request_transfer(
        user,
        cert or world["certs"][0],
        target_account_id=target_id,
        message="Devices sold to Acme",
        reason="Sale",
        options=Options(),
        landing=choice,
    )


def moved(world, approver, transfer: Transfer) -> Transfer:
    """The target's side approves the landing in advance, the source's the move: the worker
    moves it and lands it back to back."""
    committed(workflow.approve_landing, world["carol"], transfer.pk)
    committed(workflow.approve, approver, transfer.pk)
    transfer.refresh_from_db()
    return transfer


def indexing(tiot) -> dict:
    return tiot.get_indexing_configuration()["thingIndexingConfiguration"]


def aws_actions(transfer: Transfer) -> list[str]:
    return list(
        transfer.events.filter(kind="aws", ok=True).order_by("pk").values_list("action", flat=True)
    )


# ----------------------------------------------------------------- the plan


def test_without_connectivity_indexing_the_plan_says_reconnection_cannot_be_verified(
    world, requester, approver
):
    transfer = request(world, requester, LandingChoice())
    landing = transfer.plan["landing"]
    assert landing["connectivity"] == "off"
    assert "indexing" not in landing
    assert any("reconnection cannot be verified" in w for w in transfer.plan["warnings"])
    assert INDEXING not in [key for key, _op, _params in steps(transfer)]

    transfer = moved(world, approver, transfer)
    assert transfer.landing_state == Transfer.Landing.LANDED
    assert indexing(world["tiot"])["thingConnectivityIndexingMode"] == "OFF"  # not chosen
    assert "UpdateIndexingConfiguration" not in aws_actions(transfer)
    assert transfer.device_check == Transfer.DeviceCheck.UNVERIFIABLE


def test_the_chosen_step_shows_its_diff_and_keeps_the_target_s_other_settings(
    world, requester, approver
):
    world["tiot"].update_indexing_configuration(thingIndexingConfiguration=RICH)
    transfer = request(world, requester, CHOSEN)
    landing = transfer.plan["landing"]
    assert landing["connectivity"] == "turned on"
    step = landing["indexing"]
    assert step["before"]["thingConnectivityIndexingMode"] == "OFF"
    assert step["after"] == {
        **step["before"],
        "thingConnectivityIndexingMode": "STATUS",
    }
    assert '-  "thingConnectivityIndexingMode": "OFF",' in step["diff"]
    assert '+  "thingConnectivityIndexingMode": "STATUS",' in step["diff"]
    changed = [line for line in step["diff"].splitlines() if line[:1] in "+-"][2:]
    assert len(changed) == 2  # only connectivity: the thing index mode and the rest stay
    assert not any("cannot be verified" in w for w in transfer.plan["warnings"])
    assert any("connectivity indexing" in s for s in transfer.plan["steps"])
    # Its own step, before the policies, the things and the activation.
    assert [key for key, _op, _params in steps(transfer)][0] == INDEXING
    assert steps_left(transfer)[0] == "Turn on thing connectivity indexing"

    # Someone adds a field in the target between the plan and the landing: the landing reads
    # the configuration again and keeps it.
    world["tiot"].update_indexing_configuration(
        thingIndexingConfiguration={
            **RICH,
            "customFields": [*RICH["customFields"], {"name": "attributes.model", "type": "String"}],
        }
    )
    # The portal asked before (nothing indexed then) and remembers the answer for a while.
    assert devices.connectivity_indexed(transfer.target, "us-east-1") is False

    transfer = moved(world, approver, transfer)
    assert transfer.landing_state == Transfer.Landing.LANDED
    assert INDEXING in transfer.landed
    after = indexing(world["tiot"])
    assert after["thingConnectivityIndexingMode"] == "STATUS"
    assert after["thingIndexingMode"] == "REGISTRY_AND_SHADOW"
    assert after["deviceDefenderIndexingMode"] == "VIOLATIONS"
    assert {f["name"] for f in after["customFields"]} == {"attributes.site", "attributes.model"}
    actions = aws_actions(transfer)
    activation = len(actions) - 1 - actions[::-1].index("UpdateCertificate")  # in the target
    assert (
        actions.index("AcceptCertificateTransfer")
        < actions.index("UpdateIndexingConfiguration")
        < activation
    )
    # The devices' return is verified, not "cannot be verified": the remembered answer was
    # forgotten when the landing turned indexing on.
    assert transfer.device_check == Transfer.DeviceCheck.WAITING


def test_a_thing_index_that_was_off_becomes_registry(world, requester, approver):
    transfer = moved(world, approver, request(world, requester, CHOSEN))
    assert transfer.plan["landing"]["indexing"]["after"]["thingIndexingMode"] == "REGISTRY"
    after = indexing(world["tiot"])
    assert (after["thingIndexingMode"], after["thingConnectivityIndexingMode"]) == (
        "REGISTRY",
        "STATUS",
    )


def test_nothing_to_turn_on_when_it_is_on_or_there_is_no_device(world, requester):
    world["tiot"].update_indexing_configuration(
        thingIndexingConfiguration={
            "thingIndexingMode": "REGISTRY",
            "thingConnectivityIndexingMode": "STATUS",
        }
    )
    on = workflow.make_plan(world["certs"][0], TARGET, Options(), CHOSEN)
    assert on.landing["connectivity"] == "on" and "indexing" not in on.landing
    assert on.warnings == []
    world["tiot"].update_indexing_configuration(
        thingIndexingConfiguration={"thingIndexingMode": "OFF"}
    )
    bare = workflow.make_plan(world["bare"], TARGET, Options(), CHOSEN)
    assert "indexing" not in bare.landing and "connectivity" not in bare.landing
    assert not any("cannot be verified" in w for w in bare.warnings)


def test_an_unreadable_configuration_warns_and_does_not_block(world, monkeypatch):
    real = aws.call

    def denied(client, operation, **kwargs):
        if operation == "get_indexing_configuration":
            raise aws.AwsError("AccessDeniedException", "not allowed", "GetIndexingConfiguration")
        return real(client, operation, **kwargs)

    monkeypatch.setattr(aws, "call", denied)
    planned = workflow.make_plan(world["certs"][0], TARGET, Options(), CHOSEN)
    assert planned.blockers == []
    assert planned.landing["connectivity"] == "unknown" and "indexing" not in planned.landing
    assert any("fleet indexing configuration" in w for w in planned.warnings)


# ----------------------------------------------------------------- running it


def test_a_refused_indexing_step_holds_the_activation_and_resumes_where_it_stopped(
    world, requester, approver, monkeypatch
):
    real = aws.call
    refuse = [True]

    def refusing(client, operation, **kwargs):
        if operation == "update_indexing_configuration" and refuse[0]:
            raise aws.AwsError(
                "AccessDeniedException", "not allowed", "UpdateIndexingConfiguration"
            )
        return real(client, operation, **kwargs)

    monkeypatch.setattr(aws, "call", refusing)
    transfer = moved(world, approver, request(world, requester, CHOSEN))
    assert transfer.landing_state in (Transfer.Landing.PARTIAL, Transfer.Landing.ATTENTION)
    assert INDEXING not in transfer.landed
    assert "attach_policy:Connect" in transfer.landed  # the other steps ran
    desc = world["tiot"].describe_certificate(certificateId=transfer.certificate_id)
    assert desc["certificateDescription"]["status"] == "INACTIVE"  # never activated
    assert steps_left(transfer) == [
        "Turn on thing connectivity indexing",
        "Set the certificate ACTIVE",
    ]

    refuse[0] = False
    committed(workflow.retry_landing, world["carol"], transfer.pk)
    transfer.refresh_from_db()
    assert transfer.landing_state == Transfer.Landing.LANDED
    assert steps_left(transfer) == []
    assert indexing(world["tiot"])["thingConnectivityIndexingMode"] == "STATUS"
    desc = world["tiot"].describe_certificate(certificateId=transfer.certificate_id)
    assert desc["certificateDescription"]["status"] == "ACTIVE"
    # Resumed, not started again: the policy was attached once.
    assert aws_actions(transfer).count("AttachPolicy") == 1


def test_a_batch_turns_it_on_once(world, requester, approver, standin):
    certs, missing = batches.select(requester, [c.certificate_id for c in world["certs"]])
    batch = batches.request_batch(
        requester,
        certs,
        missing,
        target_account_id=TARGET,
        message="",
        reason="Fleet sold",
        options=Options(),
        landing=CHOSEN,
    )
    committed(batches.approve_landing, world["carol"], batch)
    committed(batches.approve, approver, batch)
    rows = list(batch.transfers.all())
    assert len(rows) == 3
    assert all(t.landing_state == Transfer.Landing.LANDED and INDEXING in t.landed for t in rows)
    assert indexing(world["tiot"])["thingConnectivityIndexingMode"] == "STATUS"
    # Each transfer read the configuration; only the first found it off and wrote it.
    assert standin.call_count("UpdateIndexingConfiguration", outcome="ok") == 1


# ----------------------------------------------------------------- unmanaged targets


def test_an_unmanaged_target_gets_the_command_before_the_activation(world):
    make_account(KNOWN, "Partner Ltd", managed=False)
    admin = make_user("sadmin", (world["certs"][0].account, Role.ADMIN))
    chosen = request(world, admin, CHOSEN, target_id=KNOWN)
    commands = cli_commands(chosen)
    (command,) = [c for c in commands if "update-indexing-configuration" in c]
    assert '"thingConnectivityIndexingMode": "STATUS"' in command
    assert '"thingIndexingMode": "REGISTRY"' in command
    assert command.endswith("--region us-east-1")
    assert commands.index(command) < len(commands) - 1
    assert "--new-status ACTIVE" in commands[-1]
    assert any("get-indexing-configuration" in w for w in chosen.plan["warnings"])

    plain = request(world, admin, LandingChoice(), cert=world["certs"][1], target_id=KNOWN)
    assert not [c for c in cli_commands(plain) if "indexing" in c]


def test_the_api_takes_the_choice():
    from transfers.api.inputs import PlanRequestSerializer

    asked = PlanRequestSerializer(
        data={"target_account_id": TARGET, "landing": {"enable_connectivity_indexing": True}}
    )
    assert asked.is_valid(), asked.errors
    assert asked.landing_choice().enable_connectivity_indexing is True
    default = PlanRequestSerializer(data={"target_account_id": TARGET, "landing": {}})
    assert default.is_valid(), default.errors
    assert default.landing_choice().enable_connectivity_indexing is False
