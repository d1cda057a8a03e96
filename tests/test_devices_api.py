"""The API's part of issue 24: a request tells the devices (or says why it cannot), a batch
moves in waves inside windows, the transfer and batch resources say whether the devices are
back (under the target side's redaction), and release-devices, resume and stop do what the
pages do. Rows are made directly where AWS has nothing to say, so this stays fast."""

from __future__ import annotations

from datetime import datetime, timedelta
from types import SimpleNamespace

import pytest
from django.urls import reverse
from django.utils import timezone
from rest_framework.test import APIClient

from profiles.models import Profile
from tests.conftest import KNOWN, TARGET, api_token, make_account, make_user
from tests.test_api import make_cert, make_transfer
from transfers.models import Role, Transfer, TransferBatch, TransferEvent

ENDPOINT = "a1b2c3d4e5f6g7-ats.iot.us-east-1.amazonaws.com"
TOLD = [
    "t4rget0000000-ats.iot.us-east-1.amazonaws.com",
    "s0urce0000000-ats.iot.us-east-1.amazonaws.com",
]


def api_for(user) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {api_token(user)}")
    return client


def url(name: str, *args) -> str:
    return reverse(f"api:{name}", args=args)


def error(response) -> dict:
    return response.json()["error"]


@pytest.fixture
def world(source, target, other, requester, approver):
    """Two certificates with a thing, one without; a target the portal does not manage."""
    return SimpleNamespace(
        things=[make_cert(source, n, things=[f"sensor-{n}"]) for n in (1, 2)],
        bare=make_cert(source, 3),
        unmanaged=make_account(KNOWN, "Acme (not managed)", managed=False),
        requester=requester,
        approver=approver,
        outsider=make_user("outsider", (other, Role.ADMIN)),
        carol=make_user("carol", (target, Role.ADMIN)),
    )


def batch_body(world, **body) -> dict:
    return {
        "certificates": [c.pk for c in world.things],
        "target_account_id": KNOWN,
        "reason": "Fleet sold",
        **body,
    }


# ----------------------------------------------------------------------------- requests


@pytest.mark.parametrize("operation", ["batch-list", "batch-preflight"])
@pytest.mark.parametrize(
    ("extra", "code", "field"),
    [
        ({}, "endpoint_required", "device_endpoint"),
        ({"device_endpoint": "iot.example.com"}, "invalid_endpoint", "device_endpoint"),
        (
            {"device_endpoint": ENDPOINT.replace("us-east-1", "eu-west-1")},
            "invalid_endpoint",
            "device_endpoint",
        ),
        ({"device_endpoint": ENDPOINT, "waves": {"canary": 0}}, "invalid_waves", "waves"),
        ({"device_endpoint": ENDPOINT, "waves": {"threshold": 101}}, "invalid_waves", "waves"),
        (
            {
                "device_endpoint": ENDPOINT,
                "window": {"days": [1, 1], "start": "02:00", "minutes": 60},
            },
            "invalid_window",
            "window",
        ),
        (
            {"device_endpoint": ENDPOINT, "window": {"days": [1], "start": "25:00", "minutes": 60}},
            "invalid_window",
            "window",
        ),
        (
            {
                "device_endpoint": ENDPOINT,
                "window": {"days": [1], "start": "02:00", "minutes": 60, "time_zone": "Mars/Base"},
            },
            "invalid_window",
            "window",
        ),
    ],
)
def test_a_request_and_its_check_refuse_what_the_devices_and_waves_cannot_do(
    world, operation, extra, code, field
):
    """The batch's check applies every rule of the request (batches.check_request), the
    devices' and the waves' included: a 400 with the rule's code and the field, nothing made."""
    response = api_for(world.requester).post(
        url(operation), batch_body(world, **extra), format="json"
    )
    assert response.status_code == 400, response.content
    assert error(response)["code"] == code
    assert list(error(response)["fields"]) == [field]
    assert not TransferBatch.objects.exists()


def test_telling_the_devices_is_on_by_default_and_applies_only_to_certificates_with_a_thing(world):
    client = api_for(world.requester)
    # Without a thing there is nothing to tell: no endpoint asked for.
    bare = client.post(
        url("batch-preflight"), batch_body(world, certificates=[world.bare.pk]), format="json"
    )
    assert bare.status_code == 200, bare.content
    # Turned off, no endpoint either.
    off = client.post(url("batch-preflight"), batch_body(world, tell_devices=False), format="json")
    assert off.status_code == 200
    # With the typed endpoint: the batch keeps it, its transfers tell their things.
    created = client.post(
        url("batch-list"), batch_body(world, device_endpoint=ENDPOINT.upper()), format="json"
    )
    assert created.status_code == 201, created.content
    batch = TransferBatch.objects.get(pk=created.json()["id"])
    assert batch.tell_devices is True and batch.device_endpoints == {"typed": ENDPOINT}
    assert set(batch.transfers.values_list("tell_devices", flat=True)) == {True}
    assert created.json()["waves"]["enabled"] is True  # waves by default
    first = client.get(url("transfer-detail", batch.transfers.first().pk)).json()
    assert first["options"]["tell_devices"] is True


def test_a_batch_takes_its_waves_and_window_and_says_when_the_next_window_opens(world, target):
    body = batch_body(
        world,
        target_account_id=TARGET,
        waves={"canary": 1, "canary_percent": 0, "factor": 3, "threshold": 80},
        window={"days": [5, 6], "start": "02:30", "minutes": 90, "time_zone": "Europe/Paris"},
    )
    created = api_for(world.requester).post(url("batch-list"), body, format="json")
    assert created.status_code == 201, created.content
    batch = TransferBatch.objects.get(pk=created.json()["id"])
    assert (batch.waves, batch.wave_canary, batch.wave_factor, batch.wave_threshold) == (
        True,
        1,
        3,
        80,
    )
    assert batch.window_days == [5, 6] and batch.window_start.isoformat() == "02:30:00"
    shown = created.json()
    assert shown["waves"] | {"summary": None} == {
        "enabled": True,
        "canary": 1,
        "canary_percent": 0.0,
        "factor": 3.0,
        "threshold": 80.0,
        "current": 0,
        "paused_at": None,
        "pause_reason": "",
        "stopped_at": None,
        "stopped_by": None,
        "summary": None,
    }
    window = shown["window"]
    assert (window["days"], window["start"], window["minutes"], window["time_zone"]) == (
        [5, 6],
        "02:30",
        90,
        "Europe/Paris",
    )
    from transfers import waves

    opens = waves.next_window(batch)
    assert window["open_now"] is (opens is None)
    if opens is not None:
        assert datetime.fromisoformat(window["next_window"]) == opens

    # Without a time zone the window is in the requester's.
    Profile.objects.update_or_create(user=world.requester, defaults={"time_zone": "Asia/Tokyo"})
    body["window"] = {"days": [0], "start": "00:00", "minutes": 60}
    body["certificates"] = [world.bare.pk]
    again = api_for(world.requester).post(url("batch-list"), body, format="json")
    assert again.status_code == 201, again.content
    assert again.json()["window"]["time_zone"] == "Asia/Tokyo"


# ----------------------------------------------------------------------------- resources


@pytest.fixture
def moved(world, target):
    """A batch to the managed target: one transfer back, one not back, one held."""
    batch = TransferBatch.objects.create(
        source=world.things[0].account,
        target_account_id=TARGET,
        requester=world.requester,
        reason="Fleet sold",
        waves=True,
        wave=1,
        tell_devices=True,
        device_endpoints={"data": TOLD},
    )
    now = timezone.now()
    back = make_transfer(
        world.things[0],
        world.requester,
        Transfer.Status.ACCEPTED,
        target=target,
        batch=batch,
        wave=1,
        tell_devices=True,
        device_things=["sensor-1"],
        device_endpoints={"data": TOLD},
        device_job_id="portal-batch-1-wave-1-1",
        device_job_status="SUCCEEDED",
        device_check=Transfer.DeviceCheck.BACK,
        device_offline_at=now - timedelta(seconds=4),
        device_online_at=now,
    )
    lost = make_transfer(
        world.things[1],
        world.requester,
        Transfer.Status.ACCEPTED,
        target=target,
        batch=batch,
        wave=1,
        device_check=Transfer.DeviceCheck.NOT_BACK,
        device_reason="Not back 15 minutes after the landing (sensor-2); AWS says: AUTH_ERROR.",
    )
    held = make_transfer(
        world.bare,
        world.requester,
        Transfer.Status.APPROVED,
        target=target,
        batch=batch,
        wave=1,
        approver=world.approver,
        device_job_status="REJECTED",
        device_hold="The device's job execution ended REJECTED.",
    )
    return SimpleNamespace(batch=batch, back=back, lost=lost, held=held)


def test_a_transfer_says_what_its_devices_were_told_and_whether_they_are_back(world, moved):
    body = api_for(world.requester).get(url("transfer-detail", moved.back.pk)).json()
    devices = body["devices"]
    assert devices["told"] == TOLD  # in order: the target's first
    assert (devices["job_id"], devices["job_status"]) == ("portal-batch-1-wave-1-1", "SUCCEEDED")
    assert devices["check"] == "back" and devices["wave"] == 1
    assert devices["device_downtime_seconds"] == pytest.approx(4.0)
    assert devices["back_at"] and devices["offline_at"]
    lost = api_for(world.requester).get(url("transfer-detail", moved.lost.pk)).json()["devices"]
    assert lost["check"] == "not_back" and "AUTH_ERROR" in lost["reason"]
    held = api_for(world.requester).get(url("transfer-detail", moved.held.pk)).json()["devices"]
    assert held["held"].startswith("The device's job execution ended REJECTED")


def test_seen_only_from_the_target_a_hold_and_who_released_it_stay_with_the_source(world, moved):
    Transfer.objects.filter(pk=moved.held.pk).update(device_released_by=world.approver)
    carol = api_for(world.carol)
    held = carol.get(url("transfer-detail", moved.held.pk)).json()["devices"]
    assert held["held"] == "" and held["released_by"] is None
    back = carol.get(url("transfer-detail", moved.back.pk)).json()["devices"]
    assert back["told"] == TOLD and back["check"] == "back"  # these concern the target
    assert back["device_downtime_seconds"] == pytest.approx(4.0)
    listed = carol.get(url("transfer-list"), {"batch": moved.batch.pk}).json()["results"]
    assert {row["devices"]["held"] for row in listed} == {""}
    # The source's people see both.
    full = api_for(world.requester).get(url("transfer-detail", moved.held.pk)).json()["devices"]
    assert full["held"] and full["released_by"] == "approver"


def test_a_batch_says_how_many_devices_are_back_and_each_waves_outcome(world, moved):
    body = api_for(world.requester).get(url("batch-detail", moved.batch.pk)).json()
    devices = body["devices"]
    assert (devices["back"], devices["checked"], devices["not_back"], devices["held"]) == (
        1,
        2,
        1,
        1,
    )
    assert devices["told"] == TOLD
    assert devices["downtime"]["count"] == 1
    assert devices["downtime"]["max_seconds"] == pytest.approx(4.0)
    assert [b["count"] for b in devices["downtime"]["buckets"]] == [0, 1, 0, 0, 0]
    (wave,) = body["waves"]["summary"]
    assert (wave["wave"], wave["size"], wave["back"], wave["bad"]) == (1, 3, 1, 2)
    # The target side sees the figures, not who stopped it.
    TransferBatch.objects.filter(pk=moved.batch.pk).update(
        stopped_at=timezone.now(), stopped_by=world.approver
    )
    assert (
        api_for(world.requester)
        .get(url("batch-detail", moved.batch.pk))
        .json()["waves"]["stopped_by"]
        == "approver"
    )
    seen = api_for(world.carol).get(url("batch-detail", moved.batch.pk)).json()
    assert seen["devices"]["back"] == 1 and seen["waves"]["stopped_by"] is None


# ----------------------------------------------------------------------------- actions


def test_release_devices_moves_a_held_transfer_without_the_devices_confirmation(
    world, moved, django_capture_on_commit_callbacks
):
    pk = moved.held.pk
    assert api_for(world.outsider).post(url("transfer-release-devices", pk)).status_code == 404
    refused = api_for(world.requester).post(url("transfer-release-devices", pk), {}, format="json")
    assert refused.status_code == 403 and error(refused)["code"] == "forbidden"
    assert APIClient().post(url("transfer-release-devices", pk)).status_code == 401
    with django_capture_on_commit_callbacks(execute=False):  # the worker is not the point
        released = api_for(world.approver).post(
            url("transfer-release-devices", pk),
            {"comment": "Devices are offline anyway"},
            format="json",
        )
    assert released.status_code == 200, released.content
    devices = released.json()["devices"]
    assert devices["held"] == "" and devices["released_by"] == "approver"
    event = TransferEvent.objects.get(transfer_id=pk, action="devices_released")
    assert (
        event.actor == world.approver and event.details["comment"] == "Devices are offline anyway"
    )
    again = api_for(world.approver).post(url("transfer-release-devices", pk))
    assert again.status_code == 409 and error(again)["code"] == "invalid_state"


def test_stop_waiting_gives_up_on_a_transfer_waiting_for_its_devices(world, moved, target):
    waiting = make_transfer(
        make_cert(world.things[0].account, 7, things=["sensor-7"]),
        world.requester,
        Transfer.Status.APPROVED,
        target=target,
        approver=world.approver,
        tell_devices=True,
        device_things=["sensor-7"],
        device_job_status="QUEUED",
    )
    pk = waiting.pk
    assert api_for(world.outsider).post(url("transfer-stop-waiting", pk)).status_code == 404
    refused = api_for(world.carol).post(url("transfer-stop-waiting", pk))
    assert refused.status_code == 403 and error(refused)["code"] == "forbidden"
    stopped = api_for(world.requester).post(
        url("transfer-stop-waiting", pk), {"comment": "Not this week"}, format="json"
    )
    assert stopped.status_code == 200, stopped.content
    assert stopped.json()["status"] == "cancelled"
    assert stopped.json()["error_message"] == "Not this week"
    again = api_for(world.requester).post(url("transfer-stop-waiting", pk))
    assert again.status_code == 409 and error(again)["code"] == "invalid_state"
    # Accepted already: nothing to stop.
    late = api_for(world.approver).post(url("transfer-stop-waiting", moved.back.pk))
    assert late.status_code == 409


def test_resume_and_stop_a_paused_batch_as_the_batch_page_does(
    world, moved, django_capture_on_commit_callbacks
):
    pk = moved.batch.pk
    TransferBatch.objects.filter(pk=pk).update(
        paused_at=timezone.now(), pause_reason="Wave 1: 1 of 3"
    )
    assert api_for(world.outsider).post(url("batch-resume", pk)).status_code == 404
    refused = api_for(world.requester).post(url("batch-resume", pk))
    assert refused.status_code == 403 and error(refused)["code"] == "forbidden"
    assert api_for(world.carol).post(url("batch-stop", pk)).status_code == 403
    with django_capture_on_commit_callbacks(execute=False):
        resumed = api_for(world.approver).post(url("batch-resume", pk))
    assert resumed.status_code == 200, resumed.content
    assert resumed.json()["waves"]["paused_at"] is None
    not_paused = api_for(world.approver).post(url("batch-resume", pk))
    assert not_paused.status_code == 409 and error(not_paused)["code"] == "invalid_state"

    with django_capture_on_commit_callbacks(execute=True):
        stopped = api_for(world.approver).post(
            url("batch-stop", pk), {"comment": "Customer asked to wait"}, format="json"
        )
    assert stopped.status_code == 200, stopped.content
    waves = stopped.json()["waves"]
    assert waves["stopped_at"] and waves["stopped_by"] == "approver"
    held = Transfer.objects.get(pk=moved.held.pk)  # held, so it had not started: it stays
    assert held.status == Transfer.Status.CANCELLED
    assert held.error_message == "Customer asked to wait"
    again = api_for(world.approver).post(url("batch-stop", pk))
    assert again.status_code == 409 and error(again)["code"] == "invalid_state"


def test_the_new_operations_are_in_the_schema_with_their_statuses(world):
    schema = api_for(world.requester).get(url("schema"), {"format": "json"}).json()
    for path in (
        "/api/transfers/{id}/release-devices/",
        "/api/transfers/{id}/stop-waiting/",
        "/api/batches/{id}/resume/",
        "/api/batches/{id}/stop/",
    ):
        responses = schema["paths"][path]["post"]["responses"]
        assert {"200", "400", "401", "403", "404", "409", "429"} <= set(responses), path
        assert "Retry-After" in responses["429"]["headers"]
    create = schema["components"]["schemas"]["BatchCreate"]["properties"]
    assert {"tell_devices", "device_endpoint", "waves", "window"} <= set(create)
