"""The devices on the pages (issue 24): the request forms' choices (tell the devices, the
target's endpoint, waves and maintenance windows), the transfer page's Devices section and its
release, the batch page's waves, pause, resume and stop, the overview and /metrics/.

Rows are set directly where that is simpler than moving certificates; tests/test_devices.py
moves them for real against the stand-in."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, time, timedelta

import pytest
from django.contrib.auth.models import User
from django.urls import reverse
from django.utils import timezone

from profiles.models import Profile
from tests.conftest import KNOWN, TARGET, add_certificate, iot_for, make_account, make_user
from transfers import inventory
from transfers.models import (
    Certificate,
    CertificateThing,
    Role,
    Transfer,
    TransferBatch,
    TransferEvent,
)

TYPED = "a1b2c3d4e5f6g7-ats.iot.us-east-1.amazonaws.com"
TARGET_HOST, SOURCE_HOST = "t1t1t1t1t1t1-ats.iot.us-east-1.amazonaws.com", "s1s1s1s1s1-ats"
_ids = itertools.count(1)
DETACH = {"deactivate": "on", "detach_policies": "on", "detach_things": "on", "restore": "on"}


@pytest.fixture
def unmanaged(db):
    return make_account(KNOWN, "Buyer's own account", managed=False)


def certificate(source, thing: str | None = None) -> Certificate:
    cid = f"{next(_ids):064x}"
    cert = Certificate.objects.create(
        account=source,
        region="us-east-1",
        certificate_id=cid,
        arn=f"arn:aws:iot:us-east-1:{source.account_id}:cert/{cid}",
        status="ACTIVE",
    )
    if thing:
        CertificateThing.objects.create(certificate=cert, account=source, name=thing)
    return cert


def moved(source, target, requester, *, batch=None, **fields) -> Transfer:
    cid = f"{next(_ids):064x}"
    defaults = {
        "source": source,
        "region": "us-east-1",
        "certificate_id": cid,
        "certificate_arn": f"arn:aws:iot:us-east-1:{source.account_id}:cert/{cid}",
        "target": target,
        "target_account_id": TARGET,
        "requester": requester,
        "reason": "Sale",
        "status": Transfer.Status.ACCEPTED,
        "batch": batch,
    }
    return Transfer.objects.create(**(defaults | fields))


def told(**fields) -> dict:
    """A transfer whose devices were told, with its job."""
    return {
        "tell_devices": True,
        "device_things": ["sensor-1"],
        "device_endpoints": {"data": [TARGET_HOST, SOURCE_HOST], "credentials": []},
        "device_job_id": "portal-transfer-7",
        "device_job_status": "SUCCEEDED",
    } | fields


def page(client, user, url) -> str:
    client.force_login(user)
    response = client.get(url)
    assert response.status_code == 200
    return response.content.decode()


# ----------------------------------------------------------------- the request form


def test_the_request_form_tells_the_devices_by_default_only_when_there_is_a_thing(
    client, source, target, unmanaged, requester
):
    with_thing, without = certificate(source, "sensor-1"), certificate(source)
    html = page(client, requester, reverse("transfer_new", args=[with_thing.pk]))
    assert 'id="id_tell_devices" checked' in html
    assert "Tell the devices the target&#x27;s endpoint first" in html
    # The endpoint field is there, shown (CSS) only for the targets the portal does not manage.
    assert '<label class="unmanaged-only">Target&#x27;s data endpoint' in html
    assert f'<option value="{KNOWN}" data-unmanaged="">' in html
    assert f'<option value="{TARGET}">' in html  # managed: no endpoint to type
    html = page(client, requester, reverse("transfer_new", args=[without.pk]))
    assert 'id="id_tell_devices">' in html  # off: nothing to tell


@pytest.fixture
def cert(standin, source, target):
    made = add_certificate(iot_for(source), "ACTIVE", ["DevicePublish"], thing="sensor-1")
    inventory.sync_region(inventory.queue_sync(source, "us-east-1")[0].pk)
    return Certificate.objects.get(certificate_id=made["certificateId"])


def ask(client, cert, action="preview", **fields):
    data = {"target": TARGET, "message": "", "reason": "Sale", **DETACH}
    data.update(action=action, **fields)
    return client.post(reverse("transfer_new", args=[cert.pk]), data)


def test_an_unmanaged_target_s_endpoint_is_asked_for_and_its_errors_show_on_the_field(
    client, cert, unmanaged, requester
):
    client.force_login(requester)
    for typed, error in [
        ("", "cannot read its endpoint: type the target"),
        ("example.com", "example.com is not an AWS IoT data endpoint"),
        ("a1b2c3d4e5f6g7-ats.iot.eu-west-1.amazonaws.com", "is an endpoint of eu-west-1"),
    ]:
        response = ask(
            client,
            cert,
            "submit",
            target=KNOWN,
            tell_devices="on",
            device_endpoint=typed,
            fingerprint="0" * 16,
        )
        assert response.status_code == 200
        assert response.context["form"].errors["device_endpoint"][0].find(error) >= 0
        assert '<span class="error" id="id_device_endpoint-error">' in response.content.decode()
    assert not Transfer.objects.exists()  # bad input changes nothing

    preview = ask(client, cert, target=KNOWN, tell_devices="on", device_endpoint=TYPED.upper())
    assert not preview.context["form"].errors
    fingerprint = preview.context["form"].data["fingerprint"]
    response = ask(
        client,
        cert,
        "submit",
        target=KNOWN,
        tell_devices="on",
        device_endpoint=TYPED.upper(),
        fingerprint=fingerprint,
    )
    transfer = Transfer.objects.get()
    assert response.status_code == 302 and response["Location"] == transfer.get_absolute_url()
    assert transfer.tell_devices and transfer.device_things == ["sensor-1"]
    assert transfer.device_endpoints == {"typed": TYPED}


def test_a_managed_target_needs_no_endpoint_and_unticked_tells_nobody(
    client, cert, requester, target
):
    client.force_login(requester)
    fingerprint = ask(client, cert, tell_devices="on").context["form"].data["fingerprint"]
    ask(
        client,
        cert,
        "submit",
        tell_devices="on",
        device_endpoint="ignored",
        fingerprint=fingerprint,
    )
    first = Transfer.objects.get()
    assert first.tell_devices and first.device_endpoints == {}  # read from AWS at the job
    Transfer.objects.filter(pk=first.pk).update(status=Transfer.Status.CANCELLED)
    ask(client, cert, "submit", fingerprint=fingerprint)  # the box not ticked
    second = Transfer.objects.exclude(pk=first.pk).get()
    assert not second.tell_devices and second.device_things == []


def test_the_landing_may_turn_on_connectivity_indexing_shown_as_a_diff(client, cert, requester):
    client.force_login(requester)
    fields = {"land": "on", "create_policies": "on", "create_things": "on"}
    fields["enable_connectivity_indexing"] = "on"
    preview = ask(client, cert, **fields)
    html = preview.content.decode()
    assert '<details id="indexing-diff">' in html and "thingConnectivityIndexingMode" in html
    fingerprint = preview.context["form"].data["fingerprint"]
    ask(client, cert, "submit", fingerprint=fingerprint, **fields)
    transfer = Transfer.objects.get()
    assert transfer.landing["indexing"]["enable"] is True
    html = client.get(transfer.get_absolute_url()).content.decode()
    assert "Turn on thing connectivity indexing in the target" in html


# ----------------------------------------------------------------- the batch form


def batch_form(**fields):
    return {
        "target": TARGET,
        "message": "",
        "reason": "Fleet sold",
        **DETACH,
        "action": "submit",
    } | fields


def test_the_batch_form_s_defaults_are_waves_and_the_requester_s_time_zone(
    client, source, target, requester
):
    Profile.objects.create(user=requester, time_zone="Europe/Paris")
    html = page(client, requester, reverse("batch_new"))
    assert 'id="id_tell_devices" checked' in html
    assert 'id="id_waves" checked' in html
    for name, value in [
        ("wave_canary", "10"),
        ("wave_canary_percent", "1.0"),
        ("wave_factor", "2.0"),
        ("wave_threshold", "95.0"),
        ("window_tz", "Europe/Paris"),
    ]:
        assert f'name="{name}" value="{value}"' in html, name
    assert "<legend>Maintenance window: waves start only on these days</legend>" in html
    assert 'name="window_days" value="6"' in html  # Sunday


def test_bad_waves_or_windows_show_on_the_form_and_request_nothing(
    client, source, target, requester, unmanaged
):
    ids = "\n".join(certificate(source, f"s-{n}").certificate_id for n in range(3))
    client.force_login(requester)
    url = reverse("batch_new")
    for fields, error in [
        ({"waves": "on", "wave_canary": "0"}, "The canary holds 1 to 10,000 certificates."),
        ({"waves": "on", "wave_threshold": "120"}, "The threshold is 0 to 100 %."),
        ({"window_days": ["1"], "window_minutes": "60"}, "needs a start time and 1 to 1440"),
        (
            {
                "window_days": ["1"],
                "window_start": "02:00",
                "window_minutes": "60",
                "window_tz": "Mars/Olympus",
            },
            "Mars/Olympus is not a time zone.",
        ),
        ({"target": KNOWN, "tell_devices": "on"}, "cannot read its endpoint"),
    ]:
        response = client.post(url, batch_form(ids=ids, **fields))
        assert response.status_code == 200, fields
        assert error in response.content.decode(), fields
    assert not TransferBatch.objects.exists() and not Transfer.objects.exists()


def test_the_batch_form_requests_the_waves_and_window_it_was_given(
    client, source, target, requester, unmanaged
):
    ids = "\n".join(certificate(source, f"s-{n}").certificate_id for n in range(3))
    client.force_login(requester)
    response = client.post(
        reverse("batch_new"),
        batch_form(
            ids=ids,
            target=KNOWN,
            tell_devices="on",
            device_endpoint=TYPED,
            waves="on",
            wave_canary="2",
            wave_canary_percent="5",
            wave_factor="3",
            wave_threshold="90",
            window_days=["5", "0"],
            window_start="22:30",
            window_minutes="90",
            window_tz="Europe/Paris",
        ),
    )
    batch = TransferBatch.objects.get()
    assert response.status_code == 302 and response["Location"] == batch.get_absolute_url()
    assert batch.tell_devices and batch.device_endpoints == {"typed": TYPED}
    assert (batch.waves, batch.wave_canary, batch.wave_canary_percent) == (True, 2, 5.0)
    assert (batch.wave_factor, batch.wave_threshold) == (3.0, 90.0)
    assert (batch.window_days, batch.window_start) == ([0, 5], time(22, 30))
    assert (batch.window_minutes, batch.window_tz) == (90, "Europe/Paris")
    assert batch.transfers.filter(tell_devices=True).count() == 3


# ----------------------------------------------------------------- the transfer page


def test_the_transfer_page_shows_the_devices_back_with_their_own_downtime(
    client, source, target, requester
):
    now = timezone.now()
    transfer = moved(
        source,
        target,
        requester,
        **told(
            device_check="back",
            device_offline_at=now - timedelta(seconds=1.2),
            device_online_at=now,
            unusable_since=now - timedelta(seconds=40),
            usable_at=now - timedelta(seconds=2),
        ),
    )
    html = page(client, requester, transfer.get_absolute_url())
    assert '<h2 id="devices-title">Devices</h2>' in html
    assert "Back online</span> at" in html
    assert "device downtime 1.2 s</strong> (as the device saw it" in html
    assert "Certificate downtime: 38.0 s" in html  # the certificate's, beside it
    assert html.index(TARGET_HOST) < html.index(SOURCE_HOST)  # told in this order
    assert (
        "portal-transfer-7" in html
        and '<span class="mono" id="device-job-status">SUCCEEDED' in html
    )
    assert 'hx-trigger="every 2s"' not in html  # settled: no polling


def test_the_transfer_page_says_not_back_unverifiable_and_waiting(
    client, source, target, requester
):
    client.force_login(requester)
    not_back = moved(
        source,
        target,
        requester,
        **told(
            device_check="not_back",
            device_reason="Not back 15 minutes after the landing; AWS says: AUTH_ERROR.",
        ),
    )
    unverifiable = moved(
        source,
        target,
        requester,
        **told(
            device_check="unverifiable",
            device_reason="Thing connectivity indexing is off in the target",
        ),
    )
    until = datetime(2031, 5, 4, 3, 2, 1, tzinfo=UTC)
    waiting = moved(
        source, target, requester, **told(device_check="waiting", device_check_until=until)
    )
    html = client.get(not_back.get_absolute_url()).content.decode()
    assert "Not back</span> Not back 15 minutes after the landing; AWS says: AUTH_ERROR." in html
    html = client.get(unverifiable.get_absolute_url()).content.decode()
    assert "Cannot be verified</span> Thing connectivity indexing is off" in html
    html = client.get(waiting.get_absolute_url()).content.decode()
    assert "Waiting for the device</span> to connect in the target, up to" in html
    assert 'datetime="2031-05-04T03:02:01+00:00"' in html
    assert 'hx-trigger="every 2s"' in html  # refreshed while the device is waited for
    live = client.get(
        waiting.get_absolute_url(), headers={"HX-Request": "true", "HX-Target": "live"}
    )
    assert "Waiting for the device" in live.content.decode()


@pytest.fixture
def held(source, target, requester):
    return moved(
        source,
        target,
        requester,
        status=Transfer.Status.APPROVED,
        **told(
            device_job_status="REJECTED",
            device_hold="The device's job execution ended REJECTED: it was not told.",
        ),
    )


def test_a_held_transfer_offers_the_release_only_to_an_approver(
    client, held, requester, approver, viewer, target
):
    button = "Move without the devices' confirmation"
    html = page(client, approver, held.get_absolute_url())
    assert "Held in the source:</strong> The device&#x27;s job execution ended REJECTED" in html
    assert button in html and reverse("transfer_release_devices", args=[held.pk]) in html
    assert 'hx-trigger="every 2s"' not in html  # nothing moves until someone acts
    for user in (requester, viewer):
        html = page(client, user, held.get_absolute_url())
        assert "Held in the source" in html and button not in html
    carol = make_user("carol", (target, Role.ADMIN))  # the target's side: not its business
    html = page(client, carol, held.get_absolute_url())
    assert "Held in the source" not in html and "portal-transfer-7" not in html


def test_releasing_a_held_transfer(client, held, requester, approver, viewer, outsider):
    url = reverse("transfer_release_devices", args=[held.pk])
    for user, status in [(requester, 403), (viewer, 403), (outsider, 404)]:
        client.force_login(user)
        assert client.post(url, {"comment": "go"}).status_code == status
    held.refresh_from_db()
    assert held.device_hold and held.device_released_by is None
    assert not TransferEvent.objects.filter(action="devices_released").exists()

    client.force_login(approver)
    response = client.post(url, {"comment": "the devices are in a drawer"})
    assert response.status_code == 302 and response["Location"] == held.get_absolute_url()
    held.refresh_from_db()
    assert held.device_hold == "" and held.device_released_by == approver
    event = TransferEvent.objects.get(action="devices_released")
    assert event.details["comment"] == "the devices are in a drawer"
    html = client.get(held.get_absolute_url()).content.decode()
    assert f"Moved without the devices' confirmation, by {approver}" in html
    # Not held any more: a second release is refused with a message, and changes nothing.
    html = client.post(url, {"comment": "again"}, follow=True).content.decode()
    assert "Only a transfer held for its devices can be released." in html
    assert TransferEvent.objects.filter(action="devices_released").count() == 1


def test_a_transfer_waiting_for_its_devices_can_be_stopped_by_its_requester(
    client, source, target, requester, viewer
):
    waiting = moved(
        source,
        target,
        requester,
        status=Transfer.Status.APPROVED,
        **told(device_job_status="QUEUED", device_job_id="portal-batch-1-wave-1-1"),
    )
    url = reverse("transfer_stop_waiting", args=[waiting.pk])
    html = page(client, viewer, waiting.get_absolute_url())
    assert url not in html
    assert client.post(url).status_code == 403
    waiting.refresh_from_db()
    assert waiting.status == Transfer.Status.APPROVED
    html = page(client, requester, waiting.get_absolute_url())
    assert url in html and 'hx-trigger="every 2s"' in html  # waiting: live
    html = client.post(url, follow=True).content.decode()
    assert "Stopped: the certificate stays in the source, untouched." in html
    waiting.refresh_from_db()
    assert waiting.status == Transfer.Status.CANCELLED
    assert url not in html


# ----------------------------------------------------------------- the batch page


@pytest.fixture
def waved(source, target, requester):
    """A batch in waves: the canary of 2 came back; wave 2 of 4 has one device not back and
    one still moving; it paused."""
    batch = TransferBatch.objects.create(
        source=source,
        target_account_id=TARGET,
        requester=requester,
        reason="Fleet sold",
        waves=True,
        wave_canary=2,
        wave=2,
        tell_devices=True,
        paused_at=timezone.now(),
        pause_reason="Wave 2: 2 of 4 back online (50 %), below 95 %.",
    )
    now = timezone.now()
    for seconds in (1, 3):
        moved(
            source,
            target,
            requester,
            batch=batch,
            wave=1,
            device_check="back",
            device_offline_at=now - timedelta(seconds=seconds),
            device_online_at=now,
        )
    moved(
        source,
        target,
        requester,
        batch=batch,
        wave=2,
        device_check="back",
        device_offline_at=now - timedelta(seconds=9),
        device_online_at=now,
    )
    moved(
        source,
        target,
        requester,
        batch=batch,
        wave=2,
        device_check="back",
        device_offline_at=now - timedelta(seconds=2),
        device_online_at=now,
    )
    moved(source, target, requester, batch=batch, wave=2, device_check="not_back")
    moved(source, target, requester, batch=batch, wave=2, device_check="waiting")
    for _ in range(3):
        moved(source, target, requester, batch=batch, status=Transfer.Status.APPROVED)
    return batch


def test_the_batch_page_shows_its_waves_and_its_devices(client, waved, requester):
    html = page(client, requester, waved.get_absolute_url())
    table = html[html.index('<table id="waves">') :]
    table = table[: table.index("</table>")]
    rows = [r for r in table.split("<tr>")[2:]]
    cells = [[c.split(">", 1)[1].split("<")[0] for c in r.split("<t")[1:]] for r in rows]
    assert cells == [
        ["1 (canary)", "2", "2", "0", "0", "2", "100 %"],
        ["2", "4", "2", "1", "1", "2", "50 %"],
    ]
    assert '<div class="figure">4 of 6</div>back online' in html
    assert "Device downtime, as the devices saw it" in html
    assert "4 devices back online." in html
    assert '<div class="figure">9.0 s</div>longest' in html
    assert "<title>5–30 s: 1</title>" in html  # the devices' histogram
    assert "Certificate downtime" in html  # the certificate's figures, beside them
    assert 'hx-trigger="every 2s"' in html  # a device is still waited for
    assert '<td>2</td>\n      <td><span class="bad">not back</span></td>' in html  # its row


def test_a_paused_batch_offers_resume_and_stop_to_approvers_only(
    client, waved, requester, approver
):
    html = page(client, approver, waved.get_absolute_url())
    assert "<strong>Paused</strong>" in html and "Wave 2: 2 of 4 back online (50 %)" in html
    assert reverse("batch_resume", args=[waved.pk]) in html
    assert reverse("batch_stop", args=[waved.pk]) in html
    html = page(client, requester, waved.get_absolute_url())
    assert "<strong>Paused</strong>" in html
    assert reverse("batch_resume", args=[waved.pk]) not in html
    assert reverse("batch_stop", args=[waved.pk]) not in html


def test_resuming_a_paused_batch(client, waved, requester, outsider, approver):
    url = reverse("batch_resume", args=[waved.pk])
    for user, status in [(requester, 403), (outsider, 404)]:
        client.force_login(user)
        assert client.post(url).status_code == status
    waved.refresh_from_db()
    assert waved.paused_at is not None and waved.wave == 2
    client.force_login(approver)
    response = client.post(url, follow=True)
    waved.refresh_from_db()
    assert waved.paused_at is None and waved.pause_reason == ""
    assert waved.wave == 3 and waved.transfers.filter(wave=3).count() == 3
    assert "Resumed: wave 3 moves on." in response.content.decode()


def test_stopping_a_batch_needs_a_comment_and_a_confirmation(client, waved, requester, approver):
    url = reverse("batch_stop", args=[waved.pk])
    client.force_login(requester)
    assert client.post(url, {"comment": "no", "confirm": "on"}).status_code == 403
    client.force_login(approver)
    for data, error in [
        ({"comment": "customer asked to wait"}, "Tick the box to confirm"),
        ({"confirm": "on"}, "Say why you stop the batch."),
    ]:
        html = client.post(url, data, follow=True).content.decode()
        assert error in html
    waved.refresh_from_db()
    assert waved.stopped_at is None
    assert waved.transfers.filter(status=Transfer.Status.APPROVED).count() == 3

    html = client.post(
        url, {"comment": "customer asked to wait", "confirm": "on"}, follow=True
    ).content.decode()
    assert "Stopped: 3 transfers that had not started stay in the source, untouched." in html
    waved.refresh_from_db()
    assert waved.stopped_by == approver and waved.transfers.filter(status="cancelled").count() == 3
    assert f"<strong>Stopped</strong> by {approver} at" in html
    assert reverse("batch_resume", args=[waved.pk]) not in html


def test_the_batch_page_says_when_its_next_maintenance_window_opens(client, source, requester):
    now = timezone.now()
    batch = TransferBatch.objects.create(
        source=source,
        target_account_id=TARGET,
        requester=requester,
        reason="Fleet sold",
        waves=True,
        window_days=[(now + timedelta(days=2)).weekday()],
        window_start=time(3, 0),
        window_minutes=60,
        window_tz="UTC",
    )
    html = page(client, requester, batch.get_absolute_url())
    opens = datetime.combine((now + timedelta(days=2)).date(), time(3, 0), tzinfo=UTC)
    assert "outside it now; the next opens" in html
    assert f'datetime="{opens.isoformat()}"' in html
    batch.window_days = list(range(7))
    batch.window_start, batch.window_minutes = time(0, 0), 1440
    batch.save()
    html = page(client, requester, batch.get_absolute_url())
    assert "open now" in html and "the next opens" not in html


# ----------------------------------------------------------------- overview and /metrics/


def test_the_overview_shows_the_devices_beside_the_certificates_downtime(client, waved, requester):
    waved.transfers.update(usable_at=timezone.now())
    html = page(client, requester, reverse("home"))
    assert "Devices back online, last 30 days" in html
    assert '<div class="figure">4 of 6</div>back online' in html
    assert '<div class="figure">2.5 s</div>device downtime, median (p50)' in html
    assert "Certificate downtime, last 30 days" in html


def test_metrics_count_the_devices_and_their_downtime(client, waved):
    staff = User.objects.create_user("ops", "ops@example.com", "pw", is_staff=True)
    client.force_login(staff)
    body = client.get(reverse("metrics")).content.decode()
    assert 'portal_devices_total{state="back"} 4.0' in body
    assert 'portal_devices_total{state="not_back"} 1.0' in body
    assert 'portal_devices_total{state="unverifiable"} 0.0' in body
    assert 'portal_device_downtime_seconds_bucket{le="1.0"} 1.0' in body
    assert 'portal_device_downtime_seconds_bucket{le="5.0"} 3.0' in body
    assert 'portal_device_downtime_seconds_bucket{le="+Inf"} 4.0' in body
    assert "portal_device_downtime_seconds_count 4.0" in body
    assert "portal_device_downtime_seconds_sum 15.0" in body
