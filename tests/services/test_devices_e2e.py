"""Fifty devices moved in waves, end to end (issue 24, "done when"): the stand-in server's
simulated devices (configured over its control endpoint, /_standin/devices), a real Celery
worker and beat on PostgreSQL and Redis.

A pre-accepted batch of 50 certificates, each with a thing whose device is told the target's
endpoint by a job in the source before its certificate is touched; waves of 5 (the canary),
10, 20 and 15 gated on 95 % of each wave's devices back online in the target. Two devices
of the second wave never reconnect: the wave settles at 80 %, the batch pauses, and nothing
outside the started waves is touched in AWS. An approver resumes through the API
(``POST /api/batches/{id}/resume/``, against the live server); the batch finishes with
every other device connected to the target and each one's downtime recorded.

Kept short: devices dropped 1 s after deactivation and back within a second, and
DEVICE_BACK_WAIT_MINUTES=1 (the shortest), the wait that decides the two lost devices.
"""

from __future__ import annotations

import json
import sys
import time
from datetime import UTC, datetime, timedelta

import pytest
import requests
from django.db import connections

from demo import certificate_pem
from standin.control import client_for_account
from tests.conftest import SOURCE, TARGET, api_token, make_account, make_user
from tests.services.conftest import wait_until
from transfers import batches, inventory, waves
from transfers.models import Role, Transfer, TransferBatch
from transfers.workflow import LandingChoice, Options

pytestmark = pytest.mark.django_db(transaction=True)

REGION = "us-east-1"
FLEET = 50
CONNECT = json.dumps(
    {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": "iot:Connect", "Resource": "*"}],
    }
)
INDEXED = {"thingIndexingMode": "REGISTRY", "thingConnectivityIndexingMode": "STATUS"}
DEVICES = {
    "enabled": True,
    "drop_after_seconds": 1.0,
    "backoff_base_seconds": 0.2,
    "backoff_cap_seconds": 1.0,
    "jitter": "none",
    "job_answer_seconds": 0.5,
}
STARTED = time.monotonic()


def note(what: str) -> None:
    print(f"{time.monotonic() - STARTED:7.1f} s  {what}", file=sys.stderr, flush=True)


@pytest.fixture
def fleet(services_env, standin_url, remote, settings):
    """Fifty ACTIVE certificates with the Connect policy and a thing each, their devices
    connected to the source; connectivity indexing in both accounts; the people."""
    settings.DEVICE_BACK_WAIT_MINUTES = 1
    source = make_account(SOURCE, "Fleet production")
    target = make_account(TARGET, "Acme devices")
    remote.configure_devices(**DEVICES)
    iot = client_for_account(SOURCE, REGION, standin_url)
    tiot = client_for_account(TARGET, REGION, standin_url)
    for client in (iot, tiot):
        client.create_policy(policyName="Connect", policyDocument=CONNECT)
        client.update_indexing_configuration(thingIndexingConfiguration=INDEXED)
    now = datetime.now(UTC)
    for i in range(FLEET):
        pem = certificate_pem(
            f"devices-e2e-{i}-{now.timestamp()}", now - timedelta(days=1), now + timedelta(days=365)
        )
        made = iot.register_certificate_without_ca(certificatePem=pem, status="ACTIVE")
        iot.attach_policy(policyName="Connect", target=made["certificateArn"])
        iot.create_thing(thingName=f"device-{i:02d}")
        iot.attach_thing_principal(thingName=f"device-{i:02d}", principal=made["certificateArn"])
    inventory.sync_region(inventory.queue_sync(source, REGION)[0].pk)
    seen = remote.devices()["devices"]
    assert len(seen) == FLEET and all(d["connected"] and d["account"] == SOURCE for d in seen)
    return {
        "iot": iot,
        "tiot": tiot,
        "requester": make_user("alice", (source, Role.REQUESTER)),
        "approver": make_user("bob", (source, Role.APPROVER)),
        "target_admin": make_user("carol", (target, Role.ADMIN)),
    }


def test_fifty_devices_move_in_waves_pause_on_lost_devices_and_finish_after_resume(
    fleet, remote, start_worker, start_beat, live_server, monkeypatch
):
    # The live server's request threads close their connections when the request ends.
    monkeypatch.setitem(connections.databases["default"], "CONN_MAX_AGE", 0)
    people = fleet
    certs, missing = batches.select(people["requester"], _all_certificate_ids())
    assert len(certs) == FLEET and not missing
    batch = batches.request_batch(
        people["requester"],
        certs,
        missing,
        target_account_id=TARGET,
        message="Devices move to Acme",
        reason="Fleet sold",
        options=Options(tell_devices=True),
        landing=LandingChoice(),
        wave_choice=waves.WaveChoice(canary=5, canary_percent=0, factor=2, threshold=95),
    )
    rows = list(batch.transfers.order_by("pk"))
    assert len(rows) == FLEET and all(t.tell_devices for t in rows)
    assert [waves.size(batch, n, FLEET) for n in (1, 2, 3)] == [5, 10, 20]
    # Two devices of the second wave (transfers 6 to 15 by id) never come back: 8 of 10.
    lost = {rows[7].device_things[0], rows[12].device_things[0]}
    remote.configure_devices(**DEVICES, traits={name: ["never_reconnect"] for name in lost})

    worker = start_worker("w1", concurrency=4, env=E2E_ENV)
    beat = start_beat(env=E2E_ENV)

    def logs() -> str:
        return f"worker:\n{worker.tail(60)}\nbeat:\n{beat.tail(20)}"

    batches.approve_landing(people["target_admin"], batch)
    batches.approve(people["approver"], batch)
    note("approved: the canary's job is out")

    # The canary and the second wave move; the second settles below the threshold.
    wait_until(
        lambda: TransferBatch.objects.filter(pk=batch.pk, paused_at__isnull=False).exists(),
        150,
        lambda: f"the pause ({waves.summary(_fresh(batch))})\n{logs()}",
    )
    batch = _fresh(batch)
    note(f"paused: {batch.pause_reason}")
    assert batch.wave == 2
    first, second = waves.outcome(batch, 1), waves.outcome(batch, 2)
    assert (first["size"], first["back"], first["bad"], first["open"]) == (5, 5, 0, 0)
    assert (second["size"], second["back"], second["bad"], second["open"]) == (10, 8, 2, 0)
    assert second["share"] == 80.0 and "80 %" in batch.pause_reason
    not_back = batch.transfers.filter(device_check=Transfer.DeviceCheck.NOT_BACK)
    assert {t.device_things[0] for t in not_back} == lost
    assert all("never connected" in t.device_reason for t in not_back)  # what AWS says

    # Nothing outside the started waves was touched in AWS: ACTIVE in the source with its
    # policy and thing, never deactivated nor transferred, its device still on the source.
    untouched = list(batch.transfers.filter(wave__isnull=True).order_by("pk"))
    assert len(untouched) == FLEET - 15
    assert {t.status for t in untouched} == {Transfer.Status.APPROVED}
    devices_now = {d["thing"]: d for d in remote.devices()["devices"]}
    for t in untouched:
        described = fleet["iot"].describe_certificate(certificateId=t.certificate_id)
        assert described["certificateDescription"]["status"] == "ACTIVE"
        assert fleet["iot"].list_attached_policies(target=t.certificate_arn)["policies"]
        for operation in ("UpdateCertificate", "TransferCertificate", "DetachPolicy"):
            assert remote.call_count(operation, t.certificate_id) == 0, (operation, t.pk)
        device = devices_now[t.device_things[0]]
        assert device["connected"] and device["account"] == SOURCE
    # Their devices were not even told yet: no job names them.
    assert not any(t.device_job_id for t in untouched)
    time.sleep(3)  # a paused batch stays paused: no feeder starts the next wave
    assert _fresh(batch).wave == 2

    def resume(user) -> requests.Response:
        return requests.post(
            f"{live_server.url}/api/batches/{batch.pk}/resume/",
            headers={"Authorization": f"Token {api_token(user)}"},
            timeout=60,
        )

    assert resume(people["requester"]).status_code == 403  # only an approver
    answer = resume(people["approver"])
    assert answer.status_code == 200, answer.text
    note("resumed through the API")
    wait_until(
        lambda: (
            not batch.transfers.filter(
                status__in=[Transfer.Status.APPROVED, Transfer.Status.PREPARING]
            ).exists()
            and not batch.transfers.filter(device_check=Transfer.DeviceCheck.WAITING).exists()
        ),
        120,
        lambda: f"the end of the batch ({waves.summary(_fresh(batch))})\n{logs()}",
    )
    batch = _fresh(batch)
    note(f"finished: {waves.summary(batch)}")
    assert batch.paused_at is None and batch.wave == 4
    assert [o["size"] for o in waves.summary(batch)] == [5, 10, 20, 15]
    assert [o["share"] for o in waves.summary(batch)] == [100.0, 80.0, 100.0, 100.0]

    rows = list(batch.transfers.order_by("pk"))
    assert {t.status for t in rows} == {Transfer.Status.ACCEPTED}
    assert {t.landing_state for t in rows} == {Transfer.Landing.LANDED}
    back = [t for t in rows if t.device_check == Transfer.DeviceCheck.BACK]
    assert len(back) == FLEET - len(lost)
    assert {t.device_things[0] for t in rows if t not in back} == lost
    for t in back:  # each device's own downtime: from the source's drop to the target
        assert t.device_offline_at is not None and t.device_online_at is not None
        assert timedelta(0) <= t.device_downtime < timedelta(seconds=30), (t.pk, t.device_downtime)
    devices_now = {d["thing"]: d for d in remote.devices()["devices"]}
    for name, device in devices_now.items():
        if name in lost:
            assert not device["connected"]
        else:
            assert device["connected"] and device["account"] == TARGET, device
            assert (
                device["endpoints"][0]
                == fleet["tiot"].describe_endpoint(endpointType="iot:Data-ATS")["endpointAddress"]
            )  # told the target's endpoint first
    # One TransferCertificate per certificate: nothing moved twice.
    for t in rows:
        assert remote.call_count("TransferCertificate", t.certificate_id, "ok") == 1


# The worker and beat's settings for a short run: the device checks give up after a minute,
# job polls every second.
E2E_ENV = {"DEVICE_BACK_WAIT_MINUTES": "1", "DEVICE_POLL_SECONDS": "1"}


def _fresh(batch: TransferBatch) -> TransferBatch:
    return TransferBatch.objects.get(pk=batch.pk)


def _all_certificate_ids() -> list[str]:
    from transfers.models import Certificate

    return list(Certificate.objects.order_by("pk").values_list("certificate_id", flat=True))
