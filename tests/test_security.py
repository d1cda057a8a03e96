"""Login throttling, the second factor, session lifetime, CSP and the deployment check."""

import os
import re
import runpy
import secrets
import subprocess
import sys
import time
from io import StringIO
from pathlib import Path

import pytest
import time_machine
from django.contrib.auth.models import Group
from django.core.management import call_command
from django.test import Client
from django.urls import get_resolver, reverse
from django_otp.oath import TOTP

import demo
from sso.middleware import SESSION_STARTED, needs_second_factor
from tests.conftest import api_token, make_user
from transfers.models import AccountGrant, AuthenticatorApp, BackupCodes, Role

REPO = Path(__file__).resolve().parents[1]


def code_for(device: AuthenticatorApp, steps_ahead: int = 0) -> str:
    totp = TOTP(device.bin_key, device.step, device.t0, device.digits, device.drift)
    totp.time = time.time() + steps_ahead * device.step
    return f"{totp.token():06d}"


def log_in(client: Client, username: str, password: str = "pw"):
    return client.post(reverse("login"), {"username": username, "password": password})


# ----------------------------------------------------------------------------- throttling


class TestLoginThrottling:
    def test_five_wrong_passwords_lock_that_username_from_that_address(self, requester):
        client = Client()
        for _ in range(4):
            page = log_in(client, "requester", "wrong")
            assert (
                page.status_code == 200
                and "Please enter a correct username" in page.content.decode()
            )
        locked = log_in(client, "requester", "wrong")
        assert locked.status_code == 429
        assert "Too many failed logins" in locked.content.decode()
        # Locked: even the right password is refused, and no session is opened.
        refused = log_in(client, "requester", "pw")
        assert refused.status_code == 429 and "_auth_user_id" not in client.session

    def test_the_lock_is_per_username_and_address(self, requester, viewer):
        client = Client()
        for _ in range(5):
            log_in(client, "requester", "wrong")
        assert log_in(client, "viewer", "pw").status_code == 302  # another user: fine
        elsewhere = Client(REMOTE_ADDR="10.9.8.7")
        assert log_in(elsewhere, "requester", "pw").status_code == 302  # another address

    def test_a_successful_login_clears_the_failures(self, requester):
        client = Client()
        for _ in range(4):
            log_in(client, "requester", "wrong")
        assert log_in(client, "requester", "pw").status_code == 302
        client.post(reverse("logout"))
        for _ in range(4):
            assert log_in(client, "requester", "wrong").status_code == 200
        assert log_in(client, "requester", "pw").status_code == 302

    def test_behind_a_proxy_the_forwarded_address_counts(self, requester, settings):
        settings.TRUSTED_PROXY_COUNT = 1
        proxy = "10.0.0.1"
        first = Client(REMOTE_ADDR=proxy, HTTP_X_FORWARDED_FOR="1.1.1.1")
        for _ in range(5):
            log_in(first, "requester", "wrong")
        assert log_in(first, "requester", "pw").status_code == 429
        # A forged left-hand entry does not change the address the proxy saw.
        forged = Client(REMOTE_ADDR=proxy, HTTP_X_FORWARDED_FOR="9.9.9.9, 1.1.1.1")
        assert log_in(forged, "requester", "pw").status_code == 429
        other = Client(REMOTE_ADDR=proxy, HTTP_X_FORWARDED_FOR="2.2.2.2")
        assert log_in(other, "requester", "pw").status_code == 302


# ----------------------------------------------------------------------------- second factor


class TestWhoNeedsTheSecondFactor:
    def test_approvers_and_admins_do_requesters_and_viewers_do_not(
        self, requester, approver, viewer, outsider, source
    ):
        assert needs_second_factor(approver) and needs_second_factor(outsider)
        assert not needs_second_factor(requester) and not needs_second_factor(viewer)

    def test_through_a_group_grant_a_group_name_staff_or_superuser(self, source, db):
        ops = Group.objects.create(name="ops")
        AccountGrant.objects.create(account=source, group=ops, role=Role.APPROVER)
        by_grant = make_user("by-grant")
        by_grant.groups.add(ops)
        by_name = make_user("by-name")
        by_name.groups.add(Group.objects.get_or_create(name="admin")[0])
        staff = make_user("staff")
        staff.is_staff = True
        staff.save()
        for user in (by_grant, by_name, staff):
            assert needs_second_factor(user), user


@pytest.fixture
def bob(source):
    """An approver with a confirmed authenticator."""
    user = make_user("bob", (source, Role.APPROVER))
    AuthenticatorApp.objects.create(user=user, name="phone", confirmed=True)
    return user


def password_only(username: str) -> Client:
    client = Client()
    response = log_in(client, username)
    assert response.status_code == 302
    return client


class TestSecondFactor:
    def test_after_the_password_every_page_asks_for_the_code(self, bob):
        client = password_only("bob")
        for name in ("certificate_list", "transfer_list", "approvals", "account_list"):
            response = client.get(reverse(name))
            assert response.status_code == 302, name
            assert response["Location"].startswith(reverse("second_factor") + "?next=")
        admin = client.get("/admin/")
        assert admin.status_code == 302 and admin["Location"].startswith(reverse("second_factor"))

    def test_htmx_requests_are_sent_to_the_code_page_too(self, bob):
        client = password_only("bob")
        response = client.get(reverse("certificate_list"), headers={"HX-Request": "true"})
        assert response["HX-Redirect"].startswith(reverse("second_factor"))

    def test_the_right_code_opens_the_portal_and_goes_where_asked(self, bob):
        client = password_only("bob")
        device = AuthenticatorApp.objects.get(user=bob)
        response = client.post(
            reverse("second_factor"), {"code": code_for(device), "next": "/transfers/"}
        )
        assert response.status_code == 302 and response["Location"] == "/transfers/"
        assert client.get(reverse("approvals")).status_code == 200

    def test_the_session_id_changes_when_the_code_is_accepted(self, bob):
        client = password_only("bob")
        before = client.cookies["sessionid"].value
        client.post(reverse("second_factor"), {"code": code_for(AuthenticatorApp.objects.get())})
        assert client.cookies["sessionid"].value != before

    def test_a_code_is_accepted_once(self, bob):
        device = AuthenticatorApp.objects.get(user=bob)
        code = code_for(device)
        first = password_only("bob")
        assert first.post(reverse("second_factor"), {"code": code}).status_code == 302
        replay = password_only("bob")
        page = replay.post(reverse("second_factor"), {"code": code})
        assert page.status_code == 200 and "already used" in page.content.decode()
        assert replay.get(reverse("approvals")).status_code == 302

    @pytest.mark.parametrize(
        ("code", "message"),
        [
            ("", "This field is required"),
            ("12345", "Enter the 6-digit code"),
            ("12345678901234567890", "Enter the 6-digit code"),
            ("<script>alert(1)</script>", "Enter the 6-digit code"),
            ("' OR 1=1 --", "Enter the 6-digit code"),
        ],
    )
    def test_a_malformed_code_is_explained(self, bob, code, message):
        client = password_only("bob")
        page = client.post(reverse("second_factor"), {"code": code})
        assert page.status_code == 200 and message in page.content.decode()
        assert "<script>alert" not in page.content.decode()
        assert client.get(reverse("approvals")).status_code == 302

    def test_wrong_codes_are_throttled(self, bob, settings):
        settings.OTP_TOTP_THROTTLE_FACTOR = 60  # the first wait: a minute, not a second
        client = password_only("bob")
        device = AuthenticatorApp.objects.get(user=bob)
        wrong = f"{(int(code_for(device)) + 500_000) % 1_000_000:06d}"
        assert (
            "Wrong code" in client.post(reverse("second_factor"), {"code": wrong}).content.decode()
        )
        page = client.post(reverse("second_factor"), {"code": code_for(device)})
        assert "Too many wrong codes" in page.content.decode()  # even the right one, for now
        assert client.get(reverse("approvals")).status_code == 302

    def test_a_backup_code_works_once(self, bob):
        BackupCodes.objects.create(user=bob, name="backup", codes="abcdefgh")
        client = password_only("bob")
        assert client.post(reverse("second_factor"), {"code": "abcd efgh"}).status_code == 302
        again = password_only("bob")
        assert (
            "already used"
            in again.post(reverse("second_factor"), {"code": "abcdefgh"}).content.decode()
        )

    def test_a_session_cannot_borrow_another_users_device(self, bob, source):
        mallory = make_user("mallory", (source, Role.APPROVER))
        AuthenticatorApp.objects.create(user=mallory, name="phone")
        bobs = AuthenticatorApp.objects.get(user=bob)
        client = password_only("mallory")
        session = client.session
        session["otp_device_id"] = bobs.persistent_id
        session.save()
        assert client.get(reverse("approvals")).status_code == 302
        page = client.post(reverse("second_factor"), {"code": code_for(bobs)})
        assert "Wrong code" in page.content.decode()
        assert client.get(reverse("approvals")).status_code == 302

    def test_a_requester_is_not_asked(self, requester):
        client = password_only("requester")
        assert client.get(reverse("certificate_list")).status_code == 200

    def test_an_unverified_session_may_not_use_the_api_but_a_token_may(self, bob):
        client = password_only("bob")
        refused = client.post(reverse("api:transfer-approve", args=[1]), {})
        assert refused.status_code == 403
        assert refused.json()["error"]["code"] == "second_factor_required"
        assert client.get(reverse("api:transfer-list")).status_code == 403
        automation = Client(HTTP_AUTHORIZATION=f"Token {api_token(bob)}")
        assert automation.get(reverse("api:transfer-list")).status_code == 200

    def test_no_url_trades_a_password_for_a_token(self):
        from knox.views import LoginView
        from rest_framework.authtoken.views import ObtainAuthToken

        def views(patterns):
            for p in patterns:
                if hasattr(p, "url_patterns"):
                    yield from views(p.url_patterns)
                else:
                    yield getattr(p.callback, "cls", None) or getattr(
                        p.callback, "view_class", None
                    )

        assert not any(
            isinstance(v, type) and issubclass(v, ObtainAuthToken | LoginView)
            for v in views(get_resolver().url_patterns)
        )

    def test_logging_out_still_works_before_the_code(self, bob):
        client = password_only("bob")
        assert client.post(reverse("logout")).status_code == 302
        assert "_auth_user_id" not in client.session


class TestEnrolment:
    def test_without_a_device_the_approver_enrols_and_gets_backup_codes(self, approver):
        client = password_only("approver")
        verify = client.get(reverse("second_factor") + "?next=/approvals/")
        assert verify.status_code == 302 and verify["Location"].startswith(
            reverse("second_factor_enrol")
        )
        page = client.get(verify["Location"])
        body = page.content.decode()
        assert "otpauth://totp/Certificate%20transfer%20portal%3Aapprover?secret=" in body
        assert "<svg" in body and "<script" not in body.split("</head>", 1)[1]
        device = AuthenticatorApp.objects.get(user=approver, confirmed=False)
        assert client.get(reverse("approvals")).status_code == 302  # not yet
        wrong = client.post(reverse("second_factor_enrol"), {"code": "000000"})
        assert "Wrong code" in wrong.content.decode() or "Too many" in wrong.content.decode()
        device.throttle_reset()
        done = client.post(
            reverse("second_factor_enrol"), {"code": code_for(device), "next": "/approvals/"}
        )
        assert done.status_code == 200 and "Authenticator set up" in done.content.decode()
        assert len(done.context["codes"]) == 10
        assert len(BackupCodes.objects.get(user=approver).codes.split()) == 10
        assert AuthenticatorApp.objects.get(pk=device.pk).confirmed
        assert client.get(reverse("approvals")).status_code == 200

    def test_an_enrolled_user_cannot_enrol_another_device_with_the_password_alone(self, bob):
        client = password_only("bob")
        response = client.get(reverse("second_factor_enrol"))
        assert response.status_code == 302 and response["Location"].startswith(
            reverse("second_factor")
        )
        assert client.post(reverse("second_factor_enrol"), {"code": "123456"}).status_code == 302
        assert AuthenticatorApp.objects.filter(user=bob).count() == 1

    def test_next_never_leaves_the_site(self, bob):
        client = password_only("bob")
        response = client.post(
            reverse("second_factor"),
            {"code": code_for(AuthenticatorApp.objects.get()), "next": "https://evil.example/"},
        )
        assert response["Location"] == reverse("home")

    def test_anonymous_is_sent_to_login(self, db):
        for name in ("second_factor", "second_factor_enrol"):
            response = Client().get(reverse(name))
            assert response.status_code == 302 and response["Location"].startswith(reverse("login"))


# ----------------------------------------------------------------------------- sessions


class TestSessions:
    def test_a_session_idle_longer_than_the_timeout_has_ended(self, requester, settings):
        assert settings.SESSION_COOKIE_AGE == settings.SESSION_IDLE_SECONDS == 30 * 60
        assert settings.SESSION_EXPIRE_AT_BROWSER_CLOSE and settings.SESSION_COOKIE_HTTPONLY
        client = password_only("requester")
        with time_machine.travel(time.time() + 29 * 60, tick=False):
            assert client.get(reverse("certificate_list")).status_code == 200  # renews it
        with time_machine.travel(time.time() + 58 * 60, tick=False):
            assert client.get(reverse("certificate_list")).status_code == 200
        with time_machine.travel(time.time() + 89 * 60, tick=False):
            response = client.get(reverse("certificate_list"))
            assert response.status_code == 302
            assert response["Location"].startswith(reverse("login"))

    def test_a_session_ends_after_its_maximum_age_whatever_the_activity(self, requester, settings):
        client = password_only("requester")
        assert client.get(reverse("certificate_list")).status_code == 200
        session = client.session
        session[SESSION_STARTED] -= settings.SESSION_MAX_SECONDS + 1
        session.save()
        response = client.get(reverse("certificate_list"))
        assert response.status_code == 302 and response["Location"].startswith(reverse("login"))
        assert "_auth_user_id" not in client.session
        api = client.get(reverse("api:transfer-list"))
        assert api.status_code in (401, 403)  # logged out: DRF's own answer


# ----------------------------------------------------------------------------- headers


class TestHeaders:
    def test_every_page_has_a_csp_without_inline_script_or_style(self, client, requester):
        client.force_login(requester)
        for url in (reverse("login"), reverse("certificate_list"), "/admin/login/"):
            policy = client.get(url)["Content-Security-Policy"]
            assert "default-src 'self'" in policy and "script-src 'self'" in policy
            assert "style-src 'self'" in policy and "unsafe" not in policy
            assert "frame-ancestors 'none'" in policy

    def test_no_template_has_inline_script_style_or_event_handlers(self):
        # E-mail templates are not served by the site (mail clients need inline styles).
        bad = re.compile(r"<script(?![^>]*\bsrc=)[^>]*>|<style|\sstyle=|\son[a-z]+=", re.I)
        found = [
            f"{path.relative_to(REPO)}: {match.group(0)}"
            for path in (REPO / "templates").rglob("*.html")
            if "emails" not in path.parts
            for match in bad.finditer(path.read_text())
        ]
        assert not found

    def test_production_settings_secure_cookies_and_hsts(self, monkeypatch):
        for name, value in PRODUCTION.items():
            monkeypatch.setenv(name, value)
        prod = runpy.run_path(str(REPO / "portal" / "settings.py"))
        assert prod["SESSION_COOKIE_SECURE"] and prod["CSRF_COOKIE_SECURE"]
        assert prod["SECURE_SSL_REDIRECT"] and prod["SECURE_HSTS_SECONDS"] == 31536000
        assert prod["SECURE_HSTS_INCLUDE_SUBDOMAINS"] and prod["SECURE_HSTS_PRELOAD"]
        assert prod["SECURE_PROXY_SSL_HEADER"] == ("HTTP_X_FORWARDED_PROTO", "https")
        assert prod["SESSION_COOKIE_HTTPONLY"] and not prod["DEBUG"]


PRODUCTION = {
    "DEBUG": "false",
    "HTTPS": "true",
    "SECRET_KEY": secrets.token_urlsafe(64),
    "ALLOWED_HOSTS": "portal.example.com",
    "LOG_LEVEL": "WARNING",
}


def _manage(args: list[str]) -> subprocess.CompletedProcess:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("DATABASE_URL", "REDIS_URL", "DJANGO_SETTINGS_MODULE"))
    }
    env |= PRODUCTION
    return subprocess.run(  # noqa: S603
        [sys.executable, "manage.py", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_check_deploy_with_production_settings_finds_no_issues():
    result = _manage(["check", "--deploy", "--fail-level", "WARNING"])
    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues" in result.stdout


# ----------------------------------------------------------------------------- the demo


def test_the_demo_gives_bob_carol_and_admin_a_known_authenticator(db, capsys):
    demo.seed_portal()
    demo.seed_portal()  # twice: still one device each
    for username in demo.TOTP_USERS:
        device = AuthenticatorApp.objects.get(user__username=username)
        assert device.confirmed and device.bin_key == demo.TOTP_SECRET
    out = StringIO()
    call_command("demo_totp", "bob", stdout=out)
    code = out.getvalue().strip()
    assert re.fullmatch(r"\d{6}", code)
    client = Client()
    log_in(client, "bob", demo.PASSWORD)
    assert client.post(reverse("second_factor"), {"code": code}).status_code == 302
    assert client.get(reverse("approvals")).status_code == 200


def test_demo_totp_never_prints_a_real_users_code(source, db):
    user = make_user("bob", (source, Role.APPROVER))
    AuthenticatorApp.objects.create(user=user, name=demo.DEMO_DEVICE)  # a random, real secret
    from django.core.management.base import CommandError

    with pytest.raises(CommandError, match="no demo authenticator"):
        call_command("demo_totp", "bob", stdout=StringIO())
