"""The target account's people see what concerns them: the certificate, the transfer message,
dates, states and their own actions; not the source's reason, people, errors or notices."""

from __future__ import annotations

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from tests.conftest import api_token, make_user
from transfers.models import Notice, Role, Transfer, TransferEvent

SECRETS = [
    "Internal: customer 42 owes us money",  # the reason
    "Approved after the call with legal",  # the approver's comment
    "AccessDeniedException",  # a source-side AWS failure
    "connection refused by 10.9.8.7",  # a notice's error
    "requester",
    "approver",
]


@pytest.fixture
def incoming(source, target, requester, approver):
    transfer = Transfer.objects.create(
        source=source,
        region="us-east-1",
        certificate_id="ab" * 32,
        certificate_arn="arn:aws:iot:us-east-1:111111111111:cert/" + "ab" * 32,
        target_account_id=target.account_id,
        target=target,
        requester=requester,
        approver=approver,
        reason=SECRETS[0],
        decision_comment=SECRETS[1],
        message="Devices sold to Acme",
        status=Transfer.Status.PENDING_ACCEPTANCE,
        pending_since=timezone.now(),
        transfer_date=timezone.now(),
    )

    def event(action, by, kind=TransferEvent.Kind.TRANSITION, **fields):
        TransferEvent.objects.create(
            transfer=transfer, kind=kind, action=action, actor=by, actor_name=by.username, **fields
        )

    event("request", requester, to_status="requested")
    event(
        "approve",
        approver,
        from_status="requested",
        to_status="approved",
        details={"comment": SECRETS[1]},
    )
    event(
        "DetachPolicy",
        approver,
        kind=TransferEvent.Kind.AWS,
        ok=False,
        details={"error_code": SECRETS[2], "error": "denied"},
    )
    event("mark_pending", approver, from_status="preparing", to_status="pending_acceptance")
    Notice.objects.create(
        transfer=transfer,
        channel=Notice.Channel.WEBHOOK,
        recipient="https://hooks.example.com/in",
        kind=Notice.Kind.NEW,
        last_error=SECRETS[3],
    )
    return transfer


@pytest.fixture
def carol(target, incoming):
    """Operates the target account; no role on the source."""
    user = make_user("carol", (target, Role.REQUESTER))
    TransferEvent.objects.create(
        transfer=incoming,
        kind=TransferEvent.Kind.AWS,
        action="AcceptCertificateTransfer",
        actor=user,
        actor_name="carol",
        ok=False,
        details={"error_code": "Throttling", "error": "slow down"},
    )
    return user


class TestPage:
    def test_the_target_side_sees_what_concerns_it(self, client, carol, incoming):
        client.force_login(carol)
        page = client.get(incoming.get_absolute_url()).content.decode()
        for secret in SECRETS:
            assert secret not in page
        assert incoming.certificate_id in page and "Devices sold to Acme" in page
        assert "Pending acceptance" in page
        assert "preparing → pending_acceptance" in page  # states, without who or why
        assert "AcceptCertificateTransfer" in page and "slow down" in page  # its own actions
        assert "<h2>Notices</h2>" not in page and "Plan at request time" not in page
        assert "Accept</button>" in page  # and it can still act

    def test_the_source_side_sees_everything(self, client, requester, carol, incoming):
        client.force_login(requester)
        page = client.get(incoming.get_absolute_url()).content.decode()
        for secret in SECRETS:
            assert secret in page
        assert "<h2>Notices</h2>" in page

    def test_someone_on_both_sides_sees_the_source_side(self, client, source, carol, incoming):
        from transfers.models import AccountGrant

        AccountGrant.objects.create(account=source, user=carol, role=Role.VIEWER)
        client.force_login(carol)
        assert SECRETS[0] in client.get(incoming.get_absolute_url()).content.decode()

    def test_the_live_fragment_is_redacted_too(self, client, carol, incoming):
        client.force_login(carol)
        fragment = client.get(
            incoming.get_absolute_url(), HTTP_HX_REQUEST="true", HTTP_HX_TARGET="live"
        ).content.decode()
        assert "mark_pending" not in fragment and SECRETS[2] not in fragment
        assert "pending_acceptance" in fragment


def api_for(user) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {api_token(user)}")
    return client


class TestApi:
    def test_the_target_side_gets_a_redacted_transfer(self, carol, incoming):
        data = api_for(carol).get(f"/api/transfers/{incoming.pk}/").json()
        body = str(data)
        for secret in SECRETS[:4]:
            assert secret not in body
        assert data["reason"] == "" and data["requester"] == "" and data["approver"] is None
        assert data["message"] == "Devices sold to Acme"
        assert data["certificate_id"] == incoming.certificate_id
        assert [e["to_status"] for e in data["events"] if e["kind"] == "transition"] == [
            "requested",
            "approved",
            "pending_acceptance",
        ]
        own = [e for e in data["events"] if e["actor"]]
        assert [(e["action"], e["actor"]) for e in own] == [("AcceptCertificateTransfer", "carol")]

    def test_the_lists_are_redacted(self, carol, incoming):
        client = api_for(carol)
        for url in ("/api/transfers/", "/api/incoming/"):
            rows = client.get(url).json()["results"]
            assert [r["id"] for r in rows] == [incoming.pk]
            assert rows[0]["reason"] == "" and SECRETS[1] not in str(rows)

    def test_the_source_side_gets_everything(self, requester, carol, incoming):
        data = api_for(requester).get(f"/api/transfers/{incoming.pk}/").json()
        assert data["reason"] == SECRETS[0] and data["approver"] == "approver"
        assert len(data["events"]) == 5
