"""Per-account scoping, for every URL of the site that names an object.

The test walks the URL configuration: every pattern that takes an id must be listed in
ENDPOINTS, or the suite fails, so a new endpoint cannot ship without this check. For each,
an outsider (admin of an unrelated account) asks for another account's object and must get
exactly what a missing id gets: 404 for the methods the view serves (405 for the others),
with nothing changed in the database and no call to AWS.
"""

from __future__ import annotations

import pytest
from django.urls import URLPattern, URLResolver, get_resolver, reverse
from rest_framework.test import APIClient

from tests.conftest import TARGET, api_token
from transfers.models import (
    AwsAccount,
    Certificate,
    Notice,
    SyncRun,
    Transfer,
    TransferBatch,
    TransferEvent,
)

TRANSFER_ACTIONS = ["approve", "decline", "withdraw", "cancel", "retry", "accept", "reject"]
BATCH_ACTIONS = ["approve", "decline", "withdraw", "retry", "cancel"]

# URL name -> (the object its ids name, the methods the view serves; pages without a method
# decorator answer POST like GET).
ENDPOINTS: dict[str, tuple[str, set[str]]] = {
    "certificate_detail": ("certificate", {"GET", "POST"}),
    "transfer_new": ("certificate", {"GET", "POST"}),
    "account_detail": ("account", {"GET", "POST"}),
    "account_edit": ("account", {"GET", "POST"}),
    "account_sync": ("account", {"POST"}),
    "account_webhook_secret": ("account", {"POST"}),
    "policies:edit": ("account", {"GET", "POST"}),
    "batch_detail": ("batch", {"GET", "POST"}),
    **{f"batch_{a}": ("batch", {"POST"}) for a in BATCH_ACTIONS},
    # A paused batch's resume and stop (transfers.waves), pages only.
    **{f"batch_{a}": ("batch", {"POST"}) for a in ["resume", "stop"]},
    "transfer_detail": ("transfer", {"GET", "POST"}),
    **{
        f"transfer_{a}": ("transfer", {"POST"})
        for a in [
            *TRANSFER_ACTIONS,
            "reconcile",
            "restore_retry",
            "restored_by_hand",
            "approve_landing",
            "retry_landing",
            "landed_by_hand",
            "release_devices",
            "stop_waiting",
        ]
    },
    "notice_resend": ("notice", {"POST"}),
    "notice_detail": ("notice_page", {"GET"}),  # staff only: 404 for everyone else
    "api:certificate-detail": ("certificate", {"GET"}),
    "api:certificate-plan": ("certificate", {"POST"}),
    "api:transfer-detail": ("transfer", {"GET"}),
    **{
        f"api:transfer-{a}": ("transfer", {"POST"})
        for a in [
            *TRANSFER_ACTIONS,
            "reconcile",
            "approve-landing",
            "retry-landing",
            "landed-by-hand",
            "retry-restore",
            "restored-by-hand",
            "release-devices",
            "stop-waiting",
        ]
    },
    "api:notice-send-again": ("notice_page", {"POST"}),
    "api:account-detail": ("account", {"GET"}),
    "api:account-sync": ("account", {"POST"}),
    "api:batch-detail": ("batch", {"GET"}),
    **{
        f"api:batch-{a}": ("batch", {"POST"})
        for a in [*BATCH_ACTIONS, "approve-landing", "resume", "stop"]
    },
}
# The Django admin is for portal staff only, across every account by design; an outsider
# (not staff) is sent to its login page whatever the id (checked below).
# So are the single sign-on group mappings ("sso"): portal admins only (tests/test_sso.py).
GLOBAL_NAMESPACES = {"admin", "sso"}
MISSING = 987654321

# Plausible bodies, so that a refusal cannot come from a form error instead of scoping.
BODY = {
    "comment": "fine",
    "reason": "mine now",
    "target": TARGET,
    "target_account_id": TARGET,
    "message": "hello",
    "action": "submit",
    "set_as_active": "on",
    "name": "Taken over",
}


def patterns_with_ids(patterns=None, prefix: str = "", namespace: str = ""):
    """(URL name, parameter names) of every pattern that takes parameters."""
    for p in get_resolver().url_patterns if patterns is None else patterns:
        if isinstance(p, URLResolver):
            ns = f"{namespace}{p.namespace}:" if p.namespace else namespace
            yield from patterns_with_ids(p.url_patterns, prefix + str(p.pattern), ns)
        elif isinstance(p, URLPattern) and p.pattern.regex.groupindex:
            yield f"{namespace}{p.name}", list(p.pattern.regex.groupindex)


def test_every_endpoint_with_an_id_is_checked_here():
    found = {
        name: params
        for name, params in patterns_with_ids()
        if name.partition(":")[0] not in GLOBAL_NAMESPACES
    }
    unknown = sorted(set(found) - set(ENDPOINTS))
    assert not unknown, (
        f"New endpoints take an id: {unknown}. Add each to ENDPOINTS in {__name__} with the "
        "object it names and the methods it serves, so that scoping is tested."
    )
    stale = sorted(set(ENDPOINTS) - set(found))
    assert not stale, f"ENDPOINTS lists URLs that no longer exist: {stale}"


@pytest.fixture
def theirs(standin, source, target, requester):
    """Objects of the source account (with a target account): nothing to do with OTHER."""
    cert = Certificate.objects.create(
        account=source,
        region="us-east-1",
        certificate_id="c" * 64,
        arn=f"arn:aws:iot:us-east-1:{source.account_id}:cert/{'c' * 64}",
        status="ACTIVE",
    )
    batch = TransferBatch.objects.create(
        source=source, target_account_id=TARGET, requester=requester, reason="Sale"
    )
    transfer = Transfer.objects.create(
        source=source,
        region="us-east-1",
        cert=cert,
        certificate_id=cert.certificate_id,
        certificate_arn=cert.arn,
        target=target,
        target_account_id=TARGET,
        requester=requester,
        reason="Sale",
        status=Transfer.Status.PENDING_ACCEPTANCE,
        batch=batch,
    )
    notice = Notice.objects.create(
        transfer=transfer, channel="email", recipient="ops@acme.example", kind="new"
    )
    return {
        "certificate": {"pk": cert.pk, "cert_pk": cert.pk},
        "account": {"pk": source.pk},
        "batch": {"pk": batch.pk},
        "transfer": {"pk": transfer.pk},
        "notice": {"pk": transfer.pk, "notice_pk": notice.pk},
        "notice_page": {"pk": notice.pk},
    }


def state() -> list:
    """Everything an outsider's request could change."""
    return [
        list(model.objects.order_by("pk").values())
        for model in (AwsAccount, Certificate, Transfer, TransferBatch, TransferEvent, Notice)
    ] + [SyncRun.objects.count()]


def ask(client, method: str, url: str, api: bool):
    if method == "GET":
        return client.get(url)
    if api:
        return client.post(url, BODY, format="json")
    return client.post(url, BODY)


@pytest.mark.parametrize("name", sorted(ENDPOINTS))
def test_an_outsider_gets_404_for_another_accounts_object(name, theirs, outsider, client):
    kind, methods = ENDPOINTS[name]
    params = dict(patterns_with_ids())[name]
    api = name.startswith("api:")
    if api:
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Token {api_token(outsider)}")
    else:
        client.force_login(outsider)
    seen_url = reverse(name, kwargs={p: theirs[kind][p] for p in params})
    missing_url = reverse(name, kwargs=dict.fromkeys(params, MISSING))
    before = state()
    from standin import control

    for method in ("GET", "POST"):
        seen = ask(client, method, seen_url, api)
        missing = ask(client, method, missing_url, api)
        expected = 404 if method in methods else 405
        assert seen.status_code == missing.status_code == expected, (method, seen_url)
        if api:
            assert seen.json() == missing.json()
            if expected == 404:
                assert seen.json()["error"]["code"] == "not_found"
    assert state() == before
    assert control.calls()["operations"] == {}


def test_the_admin_sends_an_outsider_to_its_login_whatever_the_id(theirs, outsider, client):
    client.force_login(outsider)
    pk = theirs["account"]["pk"]
    for pk_ in (pk, MISSING):
        response = client.get(reverse("admin:transfers_awsaccount_change", args=[pk_]))
        assert response.status_code == 302
        assert response["Location"].startswith(reverse("admin:login"))
