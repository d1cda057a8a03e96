"""Hostile input: each gets a clear answer and changes nothing it should not.

These add to the refusals already tested with their features (tests/test_transfer_views.py,
tests/test_api.py, tests/test_inventory_views.py, tests/test_security.py, tests/test_scoping.py):
forged requests, other users' ids, script tags in every free-text field, replays, odd ids,
page numbers, search strings and filter values. Where AWS would be touched, the stand-in's
call counters show it was not.
"""

import json

import pytest
from django.test import Client
from django.urls import reverse
from rest_framework.test import APIClient

from tests.conftest import (
    TARGET,
    VerifiedClient,
    add_certificate,
    api_token,
    committed,
    iot_for,
    make_user,
)
from transfers import inventory, workflow
from transfers.models import (
    AccountGrant,
    AwsAccount,
    Certificate,
    Notice,
    Role,
    Transfer,
    TransferEvent,
)
from transfers.workflow import Options

SCRIPT = "<script>alert(1)</script>"
ESCAPED = "&lt;script&gt;alert(1)&lt;/script&gt;"
ARABIC_ID = "١١١١١١١١١١١٢"  # twelve Arabic-Indic digits: \d matches them, AWS does not
AWS_WRITES = (
    "TransferCertificate",
    "AcceptCertificateTransfer",
    "RejectCertificateTransfer",
    "CancelCertificateTransfer",
    "UpdateCertificate",
    "DetachPolicy",
    "DetachThingPrincipal",
)


@pytest.fixture
def cert(standin, source, target):
    made = add_certificate(iot_for(source), "ACTIVE", ["DevicePublish"], thing="sensor-1")
    inventory.sync_region(inventory.queue_sync(source, "us-east-1")[0].pk)
    return Certificate.objects.get(certificate_id=made["certificateId"])


@pytest.fixture
def row(source, target):
    """A certificate row only, for refusals that never reach AWS (no stand-in to fill)."""
    return Certificate.objects.create(
        account=source,
        region="us-east-1",
        certificate_id="a" * 64,
        arn=f"arn:aws:iot:us-east-1:{source.account_id}:cert/{'a' * 64}",
        status="ACTIVE",
    )


@pytest.fixture
def carol(target):
    return make_user("carol", (target, Role.ADMIN))


def requested(cert, requester, **fields) -> Transfer:
    fields = {"message": "m", "reason": "r"} | fields
    return workflow.request_transfer(
        requester, cert, target_account_id=TARGET, options=Options(), **fields
    )


def pending(cert, requester, approver) -> Transfer:
    transfer = requested(cert, requester)
    committed(workflow.approve, approver, transfer.pk)
    transfer.refresh_from_db()
    assert transfer.status == Transfer.Status.PENDING_ACCEPTANCE
    return transfer


def snapshot() -> list:
    return [
        list(Transfer.objects.order_by("pk").values()),
        TransferEvent.objects.count(),
        list(AwsAccount.objects.order_by("pk").values()),
    ]


def aws_writes(control) -> int:
    return sum(control.call_count(op) for op in AWS_WRITES)


def api_for(user) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {api_token(user)}")
    return client


def request_form(**overrides) -> dict:
    return {
        "target": TARGET,
        "message": "For Acme",
        "reason": "Sale",
        "deactivate": "on",
        "detach_policies": "on",
        "detach_things": "on",
        "restore": "on",
    } | overrides


# ----------------------------------------------------------------------------- forged requests


class TestForgedRequests:
    def test_a_forged_csrf_token_is_refused_before_anything_happens(
        self, requester, approver, cert, standin
    ):
        transfer = requested(cert, requester)
        strict = VerifiedClient(enforce_csrf_checks=True)
        strict.force_login(approver)
        strict.get(transfer.get_absolute_url())  # sets the real CSRF cookie
        before, writes = snapshot(), aws_writes(standin)
        response = strict.post(
            reverse("transfer_approve", args=[transfer.pk]),
            {"csrfmiddlewaretoken": "x" * 64},
            headers={"X-CSRFToken": "forged"},
        )
        assert response.status_code == 403 and "CSRF" in response.content.decode()
        assert snapshot() == before and aws_writes(standin) == writes

    def test_a_valid_token_from_another_origin_is_refused(self, requester, approver, cert):
        transfer = requested(cert, requester)
        strict = VerifiedClient(enforce_csrf_checks=True)
        strict.force_login(approver)
        strict.get(transfer.get_absolute_url())
        token = strict.cookies["csrftoken"].value
        before = snapshot()
        response = strict.post(
            reverse("transfer_approve", args=[transfer.pk]),
            {"csrfmiddlewaretoken": token},
            headers={"Origin": "https://evil.example"},
        )
        assert response.status_code == 403
        assert snapshot() == before

    def test_a_session_cookie_without_csrf_does_not_drive_the_api(self, requester, row):
        strict = APIClient(enforce_csrf_checks=True)
        strict.force_login(requester)
        body = {"certificate": row.pk, "target_account_id": TARGET, "reason": "Sale"}
        response = strict.post(reverse("api:transfer-list"), body, format="json")
        assert response.status_code == 403
        assert "CSRF" in response.json()["error"]["message"]
        assert not Transfer.objects.exists()

    def test_fields_the_api_does_not_take_are_ignored(self, requester, approver, cert):
        body = {
            "certificate": cert.pk,
            "target_account_id": TARGET,
            "reason": "Sale",
            "status": "accepted",
            "approver": "approver",
            "requester": "approver",
            "transferred_arn": "arn:aws:iot:us-east-1:222222222222:cert/x",
        }
        response = api_for(requester).post(reverse("api:transfer-list"), body, format="json")
        assert response.status_code == 201
        transfer = Transfer.objects.get()
        assert transfer.status == "requested" and transfer.requester == requester
        assert transfer.approver is None and not transfer.transferred_arn

    @pytest.mark.parametrize(
        ("body", "content_type", "status"),
        [
            ("[1, 2]", "application/json", 400),
            ('"approve"', "application/json", 400),
            ('{"certificate": ', "application/json", 400),
            ("<transfer/>", "application/xml", 415),
            ('{"reason": "\\ud800"}', "application/json", 400),
        ],
    )
    def test_a_body_that_is_not_a_json_object_is_a_clear_400(
        self, requester, row, body, content_type, status
    ):
        response = api_for(requester).generic(
            "POST", reverse("api:transfer-list"), body, content_type
        )
        assert response.status_code == status
        assert response.json()["error"]["message"]
        assert not Transfer.objects.exists()


# ----------------------------------------------------------------------------- other users' ids


class TestOtherUsersIds:
    def test_a_notice_of_another_transfer_cannot_be_resent_through_mine(
        self, requester, approver, cert, source, target, standin
    ):
        mine = pending(cert, requester, approver)
        other_cert = Certificate.objects.create(
            account=target, region="us-east-1", certificate_id="f" * 64, arn="arn", status="ACTIVE"
        )
        stranger = make_user("stranger", (target, Role.REQUESTER))
        theirs = Transfer.objects.create(
            source=target,
            region="us-east-1",
            cert=other_cert,
            certificate_id=other_cert.certificate_id,
            certificate_arn="arn",
            target_account_id="333333333333",
            requester=stranger,
            reason="theirs",
        )
        notice = Notice.objects.create(
            transfer=theirs, channel="email", recipient="x@partner.example", kind="new",
            status="sent",
        )  # fmt: skip
        client = VerifiedClient()
        client.force_login(requester)
        url = reverse("notice_resend", args=[mine.pk, notice.pk])
        assert client.post(url).status_code == 404
        assert Notice.objects.get(pk=notice.pk).status == "sent"

    def test_the_target_side_may_not_act_for_the_source(
        self, requester, approver, carol, cert, standin
    ):
        transfer = pending(cert, requester, approver)
        client = VerifiedClient()
        client.force_login(carol)
        before, writes = snapshot(), aws_writes(standin)
        for action in ("cancel", "withdraw", "retry", "approve", "decline", "reconcile"):
            response = client.post(reverse(f"transfer_{action}", args=[transfer.pk]), follow=True)
            refused = (
                response.status_code == 403 or '<li class="error">' in response.content.decode()
            )
            assert refused, action
        assert snapshot() == before and aws_writes(standin) == writes


# ----------------------------------------------------------------------------- free text


class TestScriptInEveryFreeTextField:
    def test_reason_and_message_are_stored_verbatim_and_shown_inert(
        self, client, requester, approver, cert
    ):
        transfer = requested(cert, requester, reason=SCRIPT, message=SCRIPT)
        client.force_login(approver)
        for url in (transfer.get_absolute_url(), reverse("approvals"), reverse("transfer_list")):
            page = client.get(url).content.decode()
            assert SCRIPT not in page, url
        assert ESCAPED in client.get(transfer.get_absolute_url()).content.decode()
        data = api_for(approver).get(reverse("api:transfer-detail", args=[transfer.pk])).json()
        assert data["reason"] == SCRIPT and data["message"] == SCRIPT  # JSON: data, not markup

    def test_a_decline_comment_is_shown_inert(self, client, requester, approver, cert):
        transfer = requested(cert, requester)
        client.force_login(approver)
        client.post(reverse("transfer_decline", args=[transfer.pk]), {"comment": SCRIPT})
        transfer.refresh_from_db()
        assert transfer.status == "declined" and transfer.decision_comment == SCRIPT
        client.force_login(requester)
        page = client.get(transfer.get_absolute_url()).content.decode()
        assert SCRIPT not in page and ESCAPED in page

    def test_an_account_name_is_shown_inert(self, client, portal_admin, source):
        source.name = SCRIPT
        source.save()
        AccountGrant.objects.create(account=source, user=portal_admin, role=Role.ADMIN)
        client.force_login(portal_admin)
        for url in (reverse("account_list"), source.get_absolute_url()):
            page = client.get(url).content.decode()
            assert SCRIPT not in page and ESCAPED in page, url

    @pytest.mark.parametrize(
        ("field", "value", "message"),
        [
            ("contact_emails", SCRIPT, "Not an email address"),
            ("contact_emails", "a@example.com\r\nBcc: x@evil.example", "Not an email address"),
            ("webhook_url", "javascript:alert(1)", "Enter a valid URL"),
            ("name", "x" * 101, "at most 100 characters"),
            ("name", "fleet\x00", "Null characters are not allowed"),
            ("account_id", ARABIC_ID, "exactly 12 digits"),
        ],
    )
    def test_the_account_form_refuses_and_saves_nothing(
        self, client, portal_admin, standin, field, value, message
    ):
        data = {
            "account_id": "555555555555",
            "name": "New one",
            "managed": "",
            "regions": "",
            "api_rate": "10",
            "contact_emails": "ops@example.com",
            "webhook_url": "",
            "expiry_days": "",
        } | {field: value}
        client.force_login(portal_admin)
        response = client.post(reverse("account_new"), data)
        assert response.status_code == 200 and message in response.content.decode()
        assert not AwsAccount.objects.exists()

    @pytest.mark.parametrize(
        ("field", "value", "message"),
        [
            ("reason", "x" * 2001, "at most 2000 characters"),
            ("reason", "sale\x00", "Null characters are not allowed"),
            ("message", SCRIPT + "\nsecond line", "Control characters"),
        ],
    )
    def test_the_request_form_refuses_and_creates_nothing(
        self, client, requester, row, standin, field, value, message
    ):
        client.force_login(requester)
        response = client.post(
            reverse("transfer_new", args=[row.pk]),
            request_form(action="submit", fingerprint="x", **{field: value}),
        )
        assert response.status_code == 200 and message in response.content.decode()
        assert not Transfer.objects.exists() and aws_writes(standin) == 0

    @pytest.mark.parametrize(
        ("comment", "message"),
        [("x" * 2001, "at most 2000 characters"), ("ok\x00", "Null characters are not allowed")],
    )
    def test_a_bad_decision_comment_is_refused(
        self, client, requester, approver, cert, standin, comment, message
    ):
        transfer = requested(cert, requester)
        client.force_login(approver)
        before = snapshot()
        for action in ("approve", "decline"):
            page = client.post(
                reverse(f"transfer_{action}", args=[transfer.pk]), {"comment": comment}, follow=True
            )
            assert message in page.content.decode(), action
        assert snapshot() == before and aws_writes(standin) == 0


# ----------------------------------------------------------------------------- account ids


class TestAccountIds:
    def test_other_scripts_digits_are_not_an_account_id(self, source, row, standin):
        admin = make_user("acct-admin", (source, Role.ADMIN))
        client = VerifiedClient()
        client.force_login(admin)
        page = client.post(
            reverse("transfer_new", args=[row.pk]),
            request_form(target="new", new_target_id=ARABIC_ID, action="preview"),
        )
        assert "exactly 12 digits" in page.content.decode()
        api = api_for(admin)
        for target in (ARABIC_ID, "２２２２２２２２２２２２", f"{TARGET}\n", f" {TARGET}"):
            body = {"certificate": row.pk, "target_account_id": target, "reason": "Sale"}
            response = api.post(reverse("api:transfer-list"), body, format="json")
            assert response.status_code == 400, repr(target)
            assert response.json()["error"]["code"] == "invalid_target"
            plan = api.post(
                reverse("api:certificate-plan", args=[row.pk]),
                {"target_account_id": target},
                format="json",
            )
            assert plan.status_code == 400, repr(target)
        assert not Transfer.objects.exists() and aws_writes(standin) == 0


# ----------------------------------------------------------------------------- replays


class TestReplays:
    def test_a_replayed_request_form_makes_one_transfer(self, client, requester, cert):
        client.force_login(requester)
        url = reverse("transfer_new", args=[cert.pk])
        fingerprint = client.post(url, request_form(action="preview")).context["plan"].fingerprint
        form = request_form(action="submit", fingerprint=fingerprint)
        assert client.post(url, form).status_code == 302
        again = client.post(url, form)
        assert again.status_code == 200
        assert "already has an open transfer" in again.content.decode()
        assert Transfer.objects.count() == 1

    def test_a_replayed_accept_calls_aws_once(
        self, client, requester, approver, carol, cert, standin
    ):
        transfer = pending(cert, requester, approver)
        client.force_login(carol)
        url = reverse("transfer_accept", args=[transfer.pk])
        with committed_callbacks():
            client.post(url, {"set_as_active": "on"})
        assert standin.call_count("AcceptCertificateTransfer") == 1
        before = snapshot()
        again = client.post(url, {"set_as_active": "on"}, follow=True)
        assert "pending" in again.content.decode().lower()  # the refusal explains the state
        assert snapshot() == before
        assert standin.call_count("AcceptCertificateTransfer") == 1

    def test_a_replayed_reject_calls_aws_once(
        self, client, requester, approver, carol, cert, standin
    ):
        transfer = pending(cert, requester, approver)
        client.force_login(carol)
        url = reverse("transfer_reject", args=[transfer.pk])
        with committed_callbacks():
            client.post(url, {"reason": "Not ours"})
        assert standin.call_count("RejectCertificateTransfer") == 1
        before = snapshot()
        client.post(url, {"reason": "Not ours"})
        assert snapshot() == before
        assert standin.call_count("RejectCertificateTransfer") == 1


def committed_callbacks():
    from django.test import TestCase

    return TestCase.captureOnCommitCallbacks(execute=True)


# ----------------------------------------------------------------------------- ids, pages, search


class TestIdsPagesAndSearch:
    @pytest.mark.parametrize(
        "path",
        [
            "/transfers/abc/",
            "/transfers/-1/",
            "/transfers/99999999999999999999999/",
            "/transfers/1%00/",
            "/certificates/../accounts/",
            "/accounts/99999999999999999999999/edit/",
        ],
    )
    def test_odd_ids_in_pages_are_404(self, client, portal_admin, path):
        client.force_login(portal_admin)
        assert client.get(path).status_code in (404, 301)
        assert client.post(path).status_code in (404, 301)

    @pytest.mark.parametrize(
        "path",
        [
            "/api/transfers/abc/",
            "/api/transfers/99999999999999999999999/",
            "/api/certificates/1e3/",
            "/api/transfers/0x10/approve/",
        ],
    )
    def test_odd_ids_in_the_api_are_a_json_404(self, requester, path):
        client = api_for(requester)
        for response in (client.get(path), client.post(path, {}, format="json")):
            assert response.status_code in (404, 405)
            assert response.json()["error"]["code"] in ("not_found", "method_not_allowed")

    @pytest.mark.parametrize("page", ["99999999999999999999999", "-1", "0", "abc", "1e9"])
    def test_any_page_number_in_the_pages_shows_a_page(self, client, viewer, row, page):
        client.force_login(viewer)
        for name in ("certificate_list", "transfer_list"):
            assert client.get(reverse(name), {"page": page}).status_code == 200

    @pytest.mark.parametrize(
        ("page", "status"),
        [("99999999999999999999999", 400), ("-1", 400), ("abc", 400), ("1000000", 404)],
    )
    def test_a_bad_page_number_in_the_api_is_a_clear_error(self, viewer, row, page, status):
        response = api_for(viewer).get(reverse("api:certificate-list"), {"page": page})
        assert response.status_code == status
        assert response.json()["error"]["message"]

    @pytest.mark.parametrize(
        "q",
        [
            "' OR '1'='1",
            "'; DROP TABLE transfers_transfer; --",
            "%",
            "_",
            "\\",
            "arn:%",
            "sensor-1' UNION SELECT password FROM auth_user --",
        ],
    )
    def test_sql_like_search_strings_find_nothing_and_break_nothing(self, client, viewer, row, q):
        client.force_login(viewer)
        page = client.get(reverse("certificate_list"), {"q": q})
        assert page.status_code == 200 and not page.context["page"].object_list
        listed = api_for(viewer).get(reverse("api:certificate-list"), {"q": q})
        assert listed.status_code == 200 and listed.json()["count"] == 0
        assert Transfer.objects.count() == 0 and Certificate.objects.count() == 1

    @pytest.mark.parametrize(
        "query",
        [
            {"region": "../../etc/passwd"},
            {"region": "us-east-1/../../"},
            {"account": "../../../"},
            {"region": "%"},
        ],
    )
    def test_path_like_filter_values_find_nothing(self, client, viewer, row, query):
        client.force_login(viewer)
        page = client.get(reverse("certificate_list"), query)
        assert page.status_code == 200 and not page.context["page"].object_list
        listed = api_for(viewer).get(reverse("api:certificate-list"), query)
        assert listed.status_code in (200, 400)
        assert listed.status_code == 400 or listed.json()["count"] == 0

    def test_an_unknown_status_is_reported_and_ignored(self, client, viewer, row):
        client.force_login(viewer)
        page = client.get(reverse("certificate_list"), {"status": "ACTIVE' OR 1=1"})
        assert "not understood" in page.content.decode()
        listed = api_for(viewer).get(reverse("api:certificate-list"), {"status": "ACTIVE' OR 1"})
        assert listed.status_code == 400 and "status" in listed.json()["error"]["fields"]

    def test_a_nul_character_in_a_filter_is_refused_clearly(self, client, viewer, row):
        client.force_login(viewer)
        page = client.get(reverse("certificate_list"), {"q": "sensor\x00"})
        assert "Null characters are not allowed" in page.content.decode()
        listed = api_for(viewer).get(reverse("api:transfer-list"), {"requester": "a\x00b"})
        assert listed.status_code == 400
        assert "Null characters" in json.dumps(listed.json())

    def test_login_never_redirects_off_site(self, requester):
        client = Client()
        response = client.post(
            reverse("login") + "?next=https://evil.example/",
            {"username": "requester", "password": "pw", "next": "https://evil.example/"},
        )
        assert response.status_code == 302 and "evil.example" not in response["Location"]
