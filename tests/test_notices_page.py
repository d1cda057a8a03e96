"""The staff page of notices sent: the list, and each email as it was rendered."""

import pytest
from django.urls import reverse

from tests.test_batch_notices import N, fleet, pending_batch  # noqa: F401 (fixture)
from transfers.models import Notice


@pytest.fixture
def staff(django_user_model):
    return django_user_model.objects.create_user("staffer", "s@example.com", "pw", is_staff=True)


def test_staff_read_the_batch_email_with_its_csv(client, fleet, requester, approver, staff):  # noqa: F811
    batch = pending_batch(fleet, requester, approver)
    client.force_login(staff)
    listing = client.get(reverse("notice_list"), {"channel": "email", "kind": "new"})
    assert listing.status_code == 200
    sent = Notice.objects.filter(batch=batch, transfer__isnull=True).order_by("pk")
    page = listing.content.decode()
    for notice in sent:
        assert reverse("notice_detail", args=[notice.pk]) in page
    detail = client.get(reverse("notice_detail", args=[sent[0].pk])).content.decode()
    assert f"{N} certificate transfers to account" in detail  # the subject
    assert f"batch-{batch.pk}-certificates.csv" in detail
    assert fleet["ids"][0] in detail  # the attachment's rows
    assert "Fleet &lt;b&gt;A&lt;/b&gt;" in detail and "<b>A</b>" not in detail  # escaped


def test_the_filters_narrow_and_bad_ones_are_reported(client, fleet, requester, approver, staff):  # noqa: F811
    pending_batch(fleet, requester, approver)
    client.force_login(staff)
    page = client.get(reverse("notice_list"), {"status": "held"}).content.decode()
    assert "0 notices" in page
    page = client.get(reverse("notice_list"), {"status": "batched"}).content.decode()
    assert f"{2 * N} notices" in page
    page = client.get(reverse("notice_list"), {"kind": "nonsense"}).content.decode()
    assert "were not understood" in page


def test_only_staff_see_notices(client, fleet, requester, approver):  # noqa: F811
    pending_batch(fleet, requester, approver)
    notice = Notice.objects.first()
    client.force_login(approver)
    assert client.get(reverse("notice_list")).status_code == 404
    assert client.get(reverse("notice_detail", args=[notice.pk])).status_code == 404
    assert client.get(reverse("notice_detail", args=[987654])).status_code == 404
    client.logout()
    assert client.get(reverse("notice_list")).status_code == 302
    assert client.post(reverse("notice_list")).status_code in (302, 405)
