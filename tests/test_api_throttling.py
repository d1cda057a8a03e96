"""The API is throttled per token: past API_THROTTLE_RATE, 429 with Retry-After."""

from __future__ import annotations

import pytest
import time_machine
from django.core.cache import caches
from rest_framework.test import APIClient

from tests.conftest import api_token, make_user


@pytest.fixture(autouse=True)
def _fresh_counts(settings):
    settings.API_THROTTLE_RATE = "3/minute"
    caches["throttle"].clear()
    yield
    caches["throttle"].clear()


def api_for(user) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {api_token(user)}")
    return client


def test_a_token_past_its_rate_gets_429_with_retry_after(requester, target):
    client = api_for(requester)
    with time_machine.travel("2026-01-01 10:00:00Z", tick=False):
        assert [client.get("/api/transfers/").status_code for _ in range(3)] == [200] * 3
        refused = client.get("/api/transfers/")
        assert refused.status_code == 429
        assert refused.json()["error"]["code"] == "throttled"
        assert int(refused["Retry-After"]) == 60
    with time_machine.travel("2026-01-01 10:00:30Z", tick=False):
        assert int(client.get("/api/transfers/")["Retry-After"]) == 30
    with time_machine.travel("2026-01-01 10:01:01Z", tick=False):
        assert client.get("/api/transfers/").status_code == 200


def test_each_token_has_its_own_budget(requester, approver):
    first, second = api_for(requester), api_for(approver)
    for _ in range(3):
        first.get("/api/transfers/")
    assert first.get("/api/transfers/").status_code == 429
    assert second.get("/api/transfers/").status_code == 200


def test_two_tokens_of_one_user_have_a_budget_each(requester):
    first, second = api_for(requester), api_for(requester)
    for _ in range(3):
        first.get("/api/transfers/")
    assert first.get("/api/transfers/").status_code == 429
    assert second.get("/api/transfers/").status_code == 200


def test_a_throttled_action_changes_nothing(requester, source):
    client = api_for(make_user("busy", (source, "approver")))
    for _ in range(3):
        client.get("/api/transfers/")
    refused = client.post("/api/transfers/", {"certificate": 1}, format="json")
    assert refused.status_code == 429
    from transfers.models import Transfer

    assert not Transfer.objects.exists()
