"""The account page shows where devices connect: the account's data endpoint per region
(DescribeEndpoint, iot:Data-ATS), cached for a day; "unknown" when AWS does not answer."""

from __future__ import annotations

from django.urls import reverse

from tests.conftest import KNOWN, make_account, make_user
from transfers.models import Role


def test_the_page_shows_the_data_endpoint_and_asks_aws_once_a_day(client, standin, source, viewer):
    client.force_login(viewer)
    url = reverse("account_detail", args=[source.pk])
    page = client.get(url).content.decode()
    assert "Device data endpoint" in page
    assert "-ats.iot.us-east-1.amazonaws.com" in page
    first = page.split("-ats.iot.us-east-1.amazonaws.com")[0].rsplit(">", 1)[1]
    again = client.get(url).content.decode()
    assert f"{first}-ats.iot.us-east-1.amazonaws.com" in again  # the same, from the cache
    assert "-ats.iot.eu-west-1.amazonaws.com" in again
    assert standin.call_count("DescribeEndpoint") == 2  # once per region, not per page


def test_an_aws_error_shows_unknown_not_an_error_page(client, standin, source, viewer):
    standin.set_faults(unavailable_rate=1.0, operations=["DescribeEndpoint"])
    client.force_login(viewer)
    response = client.get(reverse("account_detail", args=[source.pk]))
    assert response.status_code == 200
    page = response.content.decode()
    assert 'us-east-1: <span class="muted">unknown' in page
    assert "amazonaws.com" not in page


def test_the_polled_fragment_does_not_ask_aws(client, standin, source, viewer):
    client.force_login(viewer)
    response = client.get(
        reverse("account_detail", args=[source.pk]),
        headers={"HX-Request": "true", "HX-Target": "sync-runs"},
    )
    assert response.status_code == 200
    assert standin.call_count("DescribeEndpoint") == 0


def test_a_known_account_has_no_endpoint_to_show(client, standin, db):
    known = make_account(KNOWN, "Partner", managed=False)
    admin = make_user("kadmin", (known, Role.ADMIN))
    client.force_login(admin)
    page = client.get(reverse("account_detail", args=[known.pk])).content.decode()
    assert "Device data endpoint" not in page
    assert standin.call_count("DescribeEndpoint") == 0


def test_an_outsider_gets_a_404_and_no_aws_call(client, standin, source, outsider):
    client.force_login(outsider)
    assert client.get(reverse("account_detail", args=[source.pk])).status_code == 404
    assert standin.call_count("DescribeEndpoint") == 0
