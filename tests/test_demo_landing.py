"""The demo makes a pre-accepted move possible out of the box (issue 14): the README's
walk-through, through the service functions the pages call, on the demo's own data."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User

import demo
from tests.conftest import committed, iot_for
from transfers import inventory, permissions, workflow
from transfers.models import AwsAccount, Certificate, Transfer
from transfers.workflow import LandingChoice, Options


@pytest.fixture
def seeded(standin, monkeypatch, db):
    # The thousand-certificate bulk fleet has nothing to do with this and takes long.
    monkeypatch.setattr(demo, "FLEETS", [f for f in demo.FLEETS if f[1] != demo.BULK_REGION])
    demo.seed_portal()
    demo.seed_aws()
    AwsAccount.objects.update(api_rate=1000.0)  # tests call in bursts
    source = AwsAccount.objects.get(account_id=demo.SOURCE)
    run, _ = inventory.queue_sync(source, "us-east-1")
    inventory.sync_region(run.pk)
    return source


def test_the_demo_s_examples_move_to_acme_active_with_their_policies_and_things(seeded):
    for thing in demo.LANDING_EXAMPLES:
        move_one(seeded, thing)


def move_one(seeded, thing: str) -> None:
    alice, bob, carol = (User.objects.get(username=u) for u in ("alice", "bob", "carol"))
    cert = Certificate.objects.get(account=seeded, region="us-east-1", things__name=thing)
    policies = sorted(p.name for p in cert.policies.all())
    assert cert.status == "ACTIVE" and policies
    acme = AwsAccount.objects.get(account_id=demo.TARGET)
    tiot = iot_for(acme)
    acme_policies = {p["policyName"] for p in tiot.list_policies()["policies"]}
    assert set(policies) <= acme_policies  # same names: nothing to map or create

    transfer = workflow.request_transfer(
        alice,
        cert,
        target_account_id=demo.TARGET,
        message="Devices move to Acme",
        reason="Demo: a pre-accepted move",
        options=Options(),
        landing=LandingChoice(),
    )
    assert permissions.can_approve_landing(carol, transfer)
    committed(workflow.approve, bob, transfer.pk)
    transfer.refresh_from_db()
    assert transfer.status == Transfer.Status.PENDING_ACCEPTANCE  # waits for Acme's side
    committed(workflow.approve_landing, carol, transfer.pk)

    transfer.refresh_from_db()
    assert transfer.status == Transfer.Status.ACCEPTED
    assert transfer.landing_state == Transfer.Landing.LANDED
    desc = tiot.describe_certificate(certificateId=transfer.certificate_id)
    assert desc["certificateDescription"]["status"] == "ACTIVE"
    arn = transfer.transferred_arn
    attached = sorted(p["policyName"] for p in tiot.list_attached_policies(target=arn)["policies"])
    assert attached == policies
    assert tiot.list_principal_things(principal=arn)["things"] == [thing]
    assert transfer.downtime is not None


def test_bob_cannot_approve_acme_s_landing_of_his_own_approval(seeded):
    alice, bob = (User.objects.get(username=u) for u in ("alice", "bob"))
    cert = Certificate.objects.get(
        account=seeded, region="us-east-1", things__name=demo.LANDING_EXAMPLES[0]
    )
    transfer = workflow.request_transfer(
        alice,
        cert,
        target_account_id=demo.TARGET,
        message="",
        reason="Demo",
        options=Options(),
        landing=LandingChoice(),
    )
    assert not permissions.can_approve_landing(bob, transfer)  # no grant on Acme
    assert not permissions.can_approve_landing(alice, transfer)


def test_the_demo_s_devices_are_online_and_come_back_within_seconds(seeded):
    from standin import control
    from standin.devices import DEVICES

    clock = [DEVICES.now()]
    DEVICES.clock = lambda: clock[0]
    cert = Certificate.objects.get(
        account=seeded, region="us-east-1", things__name=demo.LANDING_EXAMPLES[0]
    )
    iot = iot_for(seeded)
    thing = demo.LANDING_EXAMPLES[0]
    assert iot.get_thing_connectivity_data(thingName=thing)["connected"] is True
    iot.update_certificate(certificateId=cert.certificate_id, newStatus="INACTIVE")
    clock[0] += 2.1
    assert iot.get_thing_connectivity_data(thingName=thing)["connected"] is False
    iot.update_certificate(certificateId=cert.certificate_id, newStatus="ACTIVE")
    clock[0] += 4.0  # the backoff's cap
    assert iot.get_thing_connectivity_data(thingName=thing)["connected"] is True
    (device,) = control.devices(thing)["devices"]
    assert device["account"] == demo.SOURCE
