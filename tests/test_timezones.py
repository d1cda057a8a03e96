"""Times in each user's time zone (a profile setting, default UTC), the zone named next to
each time, in pages and in the emails the portal sends its users."""

import zoneinfo

import pytest
from django.core import mail
from django.urls import reverse
from django.utils import timezone

from profiles.models import Profile
from tests.conftest import TARGET, add_certificate, committed, iot_for
from transfers import inventory, workflow
from transfers.models import Certificate
from transfers.workflow import Options

TOKYO = zoneinfo.ZoneInfo("Asia/Tokyo")


@pytest.fixture
def transfer(standin, source, target, requester):
    iot = iot_for(source)
    made = add_certificate(iot, "INACTIVE")
    inventory.sync_region(inventory.queue_sync(source, "us-east-1")[0].pk)
    cert = Certificate.objects.get(certificate_id=made["certificateId"])
    return workflow.request_transfer(
        requester, cert, target_account_id=TARGET, message="m", reason="r", options=Options()
    )


def shown(value, zone) -> str:
    return f"{timezone.localtime(value, zone):%Y-%m-%d %H:%M}"


def test_times_are_in_utc_by_default_with_the_zone_named(client, requester, transfer):
    client.force_login(requester)
    page = client.get(transfer.get_absolute_url()).content.decode()
    utc = zoneinfo.ZoneInfo("UTC")
    assert f'{shown(transfer.created, utc)} <small class="tz">UTC</small>' in page


def test_a_user_chooses_a_zone_and_every_page_follows(client, requester, transfer):
    client.force_login(requester)
    page = client.get(reverse("profile")).content.decode()
    assert 'value="Asia/Tokyo"' in page
    response = client.post(reverse("profile"), {"time_zone": "Asia/Tokyo"})
    assert response.status_code == 302
    assert Profile.objects.get(user=requester).time_zone == "Asia/Tokyo"
    detail = client.get(transfer.get_absolute_url()).content.decode()
    assert f'{shown(transfer.created, TOKYO)} <small class="tz">Asia/Tokyo</small>' in detail
    listing = client.get(reverse("transfer_list")).content.decode()
    assert f"{shown(transfer.created, TOKYO)} <small" in listing
    audit = client.get(reverse("audit_log")).content.decode()
    assert '<small class="tz">Asia/Tokyo</small>' in audit
    certificates = client.get(reverse("certificate_list")).content.decode()
    assert 'Expires <small class="tz">Asia/Tokyo</small>' in certificates
    expires = Certificate.objects.get().not_after
    assert f"{timezone.localtime(expires, TOKYO):%Y-%m-%d}</span>" in certificates


def test_the_zone_is_remembered_at_the_next_login(client, requester, transfer):
    Profile.objects.create(user=requester, time_zone="Asia/Tokyo")
    client.force_login(requester)  # login reads it once into the session
    page = client.get(transfer.get_absolute_url()).content.decode()
    assert f"{shown(transfer.created, TOKYO)} <small" in page


def test_a_zone_that_does_not_exist_is_refused_and_changes_nothing(client, requester):
    client.force_login(requester)
    client.post(reverse("profile"), {"time_zone": "Asia/Tokyo"})
    response = client.post(reverse("profile"), {"time_zone": "Mars/Olympus_Mons"})
    assert response.status_code == 200
    assert "Select a valid choice" in response.content.decode()
    assert Profile.objects.get(user=requester).time_zone == "Asia/Tokyo"


def test_anonymous_users_log_in_first(client, db):
    assert client.get(reverse("profile")).status_code == 302
    assert client.post(reverse("profile"), {"time_zone": "UTC"}).status_code == 302
    assert not Profile.objects.exists()


def test_emails_to_a_user_use_their_zone_and_others_utc(
    target, requester, approver, transfer, django_user_model
):
    target.contact_emails = "iot@acme.example\nsec@acme.example"
    target.save()
    tokyo_user = django_user_model.objects.create_user("kenji", "iot@acme.example", "pw")
    Profile.objects.create(user=tokyo_user, time_zone="Asia/Tokyo")
    committed(workflow.approve, approver, transfer.pk)
    transfer.refresh_from_db()
    bodies = {m.to[0]: m.body for m in mail.outbox}
    expires = transfer.expires_at
    assert f"Expires:          {shown(expires, TOKYO)} Asia/Tokyo" in bodies["iot@acme.example"]
    utc = zoneinfo.ZoneInfo("UTC")
    assert f"Expires:          {shown(expires, utc)} UTC" in bodies["sec@acme.example"]


def test_the_zone_ends_with_the_request(client, requester, transfer):
    """A user's zone is the request's, not the thread's: what runs next on the same thread
    (another request, an email sent by a task) is in the default zone again."""
    client.force_login(requester)
    client.post(reverse("profile"), {"time_zone": "Asia/Tokyo"})
    page = client.get(transfer.get_absolute_url()).content.decode()
    assert '<small class="tz">Asia/Tokyo</small>' in page
    assert timezone.get_current_timezone_name() == "UTC"
