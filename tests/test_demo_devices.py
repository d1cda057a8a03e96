"""The README's pre-accepted move, devices included (issue 24): on the demo's own data, the
device of sensor-002 is told Acme's endpoint, its certificate moves, and the transfer says
it is back online within seconds, with the device's own downtime. The stand-in's clock is
the test's, so the seconds pass at once."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from django.contrib.auth.models import User
from django.utils import timezone

import demo
from tests.conftest import committed
from transfers import inventory, tasks, workflow
from transfers.models import AwsAccount, Certificate, Transfer
from transfers.workflow import LandingChoice, Options


@pytest.fixture
def seeded(standin, monkeypatch, db):
    from standin.devices import DEVICES

    monkeypatch.setattr(demo, "FLEETS", [f for f in demo.FLEETS if f[1] != demo.BULK_REGION])
    clock = [datetime.now(UTC).timestamp()]
    monkeypatch.setattr(DEVICES, "clock", lambda: clock[0])
    demo.seed_portal()
    demo.seed_aws()
    AwsAccount.objects.update(api_rate=1000.0)
    source = AwsAccount.objects.get(account_id=demo.SOURCE)
    run, _ = inventory.queue_sync(source, "us-east-1")
    inventory.sync_region(run.pk)
    return source, clock


def test_the_walk_through_ends_with_the_device_back_online_in_acme(seeded, later_polls):
    from standin import control

    source, clock = seeded
    thing = demo.LANDING_EXAMPLES[1]  # sensor-002, as in the README
    alice, bob, carol = (User.objects.get(username=u) for u in ("alice", "bob", "carol"))
    cert = Certificate.objects.get(account=source, region="us-east-1", things__name=thing)
    transfer = workflow.request_transfer(
        alice,
        cert,
        target_account_id=demo.TARGET,
        message="Devices move to Acme",
        reason="Demo: a pre-accepted move",
        options=Options(tell_devices=True),
        landing=LandingChoice(),
    )
    # Acme indexes connectivity (demo.INDEXING): nothing to turn on, nothing unverifiable.
    assert transfer.plan["landing"]["connectivity"] == "on"
    assert transfer.plan["warnings"] == []
    committed(workflow.approve_landing, carol, transfer.pk)
    committed(workflow.approve, bob, transfer.pk)

    # The polls the worker would run and the beat's rounds of device checks, a second apart
    # on the device clock.
    far = timezone.now() + timedelta(days=1)
    for _ in range(30):
        waiting = Transfer.objects.filter(device_check=Transfer.DeviceCheck.WAITING).exists()
        if not later_polls and not waiting:
            break
        due, later_polls[:] = list(later_polls), []
        clock[0] += 1.0
        workflow.sweep_device_checks(now=far)
        for name, args in due:
            getattr(tasks, name).apply(args=args).get()

    transfer.refresh_from_db()
    assert transfer.landing_state == Transfer.Landing.LANDED
    assert transfer.device_check == Transfer.DeviceCheck.BACK
    # Dropped 2 s after the deactivation, back after at most the backoff's cap (4 s).
    assert timedelta(0) < transfer.device_downtime <= timedelta(seconds=5)
    (device,) = control.devices(thing)["devices"]
    assert device["connected"] and device["account"] == demo.TARGET
