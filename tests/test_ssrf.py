"""Webhook destinations: public addresses only, when saved and when sent.

Every refusal is checked with a stubbed resolver, before any connection: no test here sends
a packet anywhere but loopback (the one receiver below, with WEBHOOK_ALLOW_PRIVATE on)."""

from __future__ import annotations

import ipaddress
import socket
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from tests.conftest import TARGET, make_account
from transfers import notices, outbound
from transfers.models import AccountGrant, AwsAccount, Notice, Role, Transfer

PUBLIC = "93.184.215.14"


@pytest.fixture
def resolver(monkeypatch):
    """Names resolve to what the test says (a list per call, the last one repeating), and
    any attempt to open a connection fails the test."""
    answers: dict[str, list[list[str]]] = {}
    calls: list[str] = []

    def getaddrinfo(host, port, family=0, type=0, proto=0, flags=0):  # noqa: A002
        calls.append(host)
        if host in answers:
            chosen = answers[host][0] if len(answers[host]) == 1 else answers[host].pop(0)
        else:
            try:
                chosen = [str(ipaddress.ip_address(host))]
            except ValueError:
                raise socket.gaierror(socket.EAI_NONAME, "Name or service not known") from None
        return [
            (
                socket.AF_INET6 if ":" in a else socket.AF_INET,
                socket.SOCK_STREAM,
                6,
                "",
                (a, port, 0, 0) if ":" in a else (a, port),
            )
            for a in chosen
        ]

    connects: list[tuple] = []

    def connect(self, address):
        connects.append(address)
        raise ConnectionRefusedError("tests never connect off loopback")

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    monkeypatch.setattr(socket.socket, "connect", connect)

    class Resolver:
        def set(self, host: str, *addresses: str, then: tuple[str, ...] = ()) -> None:
            answers[host] = [list(addresses)] + ([list(then)] if then else [])

    made = Resolver()
    made.calls, made.connects = calls, connects
    return made


REFUSED = [
    "169.254.169.254",  # the cloud metadata service
    "127.0.0.1",
    "10.0.0.5",
    "172.16.3.4",
    "192.168.1.1",
    "100.64.0.1",  # carrier-grade NAT
    "0.0.0.0",  # noqa: S104
    "::1",
    "fd00::1",
    "fe80::1",
    "::ffff:10.0.0.1",  # IPv4-mapped
]


class TestCheck:
    @pytest.mark.parametrize("address", REFUSED)
    def test_a_name_resolving_to_a_private_address_is_refused(self, resolver, address):
        resolver.set("hooks.example.com", address)
        with pytest.raises(outbound.UnsafeDestination, match="only calls public"):
            outbound.check("https://hooks.example.com/in")
        assert resolver.connects == []

    def test_every_address_counts_not_just_the_first(self, resolver):
        resolver.set("hooks.example.com", PUBLIC, "169.254.169.254")
        with pytest.raises(outbound.UnsafeDestination) as refused:
            outbound.check("https://hooks.example.com/in")
        assert "169.254.169.254" in refused.value.detail

    @pytest.mark.parametrize(
        "url", ["http://169.254.169.254/latest/meta-data/", "http://[::1]:8000/", "http://10.1.1.1"]
    )
    def test_a_literal_private_address_is_refused(self, resolver, url):
        with pytest.raises(outbound.UnsafeDestination):
            outbound.check(url)

    def test_a_public_address_passes(self, resolver):
        resolver.set("hooks.example.com", PUBLIC, "2606:2800:21f:cb07:6820:80da:af6b:8b2c")
        outbound.check("https://hooks.example.com/in")

    @pytest.mark.parametrize("url", ["ftp://hooks.example.com/", "file:///etc/passwd", "http://"])
    def test_other_schemes_are_refused(self, resolver, url):
        with pytest.raises(outbound.UnsafeDestination, match="Only http"):
            outbound.check(url)

    def test_an_unknown_name_is_refused(self, resolver):
        with pytest.raises(outbound.UnsafeDestination, match="does not resolve"):
            outbound.check("https://nowhere.invalid/")

    def test_the_setting_allows_private_destinations(self, resolver, settings):
        settings.WEBHOOK_ALLOW_PRIVATE = True
        resolver.set("hooks.internal", "10.0.0.5")
        outbound.check("https://hooks.internal/in")


class TestSending:
    def test_it_connects_only_to_the_address_it_checked(self, resolver):
        resolver.set("hooks.example.com", PUBLIC)
        with pytest.raises(Exception):  # noqa: B017  (the stubbed connect refuses)
            outbound.post("http://hooks.example.com/in", data=b"{}")
        assert [c[0] for c in resolver.connects] == [PUBLIC]

    def test_a_name_that_changes_to_a_private_address_after_the_check_is_refused(self, resolver):
        # DNS rebinding: public when checked, the metadata service when connecting.
        resolver.set("rebind.example.com", PUBLIC, then=("169.254.169.254",))
        with pytest.raises(outbound.UnsafeDestination) as refused:
            outbound.post("http://rebind.example.com/in", data=b"{}")
        assert "169.254.169.254" in refused.value.detail
        assert resolver.connects == []


@pytest.fixture
def webhook_notice(source, target, requester):
    AwsAccount.objects.filter(pk=target.pk).update(
        webhook_url="https://hooks.example.com/in", webhook_secret=notices.new_webhook_secret()
    )
    transfer = Transfer.objects.create(
        source=source,
        region="us-east-1",
        certificate_id="c" * 64,
        certificate_arn="arn:aws:iot:us-east-1:111111111111:cert/" + "c" * 64,
        target_account_id=target.account_id,
        target=target,
        requester=requester,
        reason="test",
    )
    return Notice.objects.create(
        transfer=transfer,
        channel=Notice.Channel.WEBHOOK,
        recipient="https://hooks.example.com/in",
        kind=Notice.Kind.NEW,
    )


class TestNotices:
    def test_a_private_destination_is_refused_when_sent_and_the_page_shows_no_detail(
        self, resolver, webhook_notice, caplog
    ):
        resolver.set("hooks.example.com", "169.254.169.254")
        with pytest.raises(notices.DeliveryError):
            notices.send(webhook_notice.pk)
        webhook_notice.refresh_from_db()
        assert webhook_notice.status == "pending"
        assert "169.254" not in webhook_notice.last_error
        assert "refused destination" in webhook_notice.last_error
        assert "169.254.169.254" in caplog.text  # the detail, in the log only
        assert resolver.connects == []

    def test_a_connection_error_shows_a_generic_message(self, resolver, webhook_notice, caplog):
        resolver.set("hooks.example.com", PUBLIC)
        with pytest.raises(notices.DeliveryError):
            notices.send(webhook_notice.pk)
        webhook_notice.refresh_from_db()
        assert webhook_notice.last_error.endswith(
            "the receiver could not be reached (details in the log)"
        )
        assert "Connection refused" not in webhook_notice.last_error
        assert "tests never connect off loopback" in caplog.text

    def test_a_redirect_is_not_followed(self, settings, webhook_notice):
        settings.WEBHOOK_ALLOW_PRIVATE = True  # a receiver on loopback
        hits: list[str] = []

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                hits.append(self.path)
                self.send_response(307)
                self.send_header("Location", "http://127.0.0.1:9/elsewhere")
                self.end_headers()

            def log_message(self, *args):
                pass

        server = HTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=server.serve_forever, args=(0.01,), daemon=True).start()
        try:
            url = f"http://127.0.0.1:{server.server_port}/in"
            AwsAccount.objects.filter(account_id=TARGET).update(webhook_url=url)
            with pytest.raises(notices.DeliveryError, match="HTTP 307"):
                notices.send(webhook_notice.pk)
        finally:
            server.shutdown()
        assert hits == ["/in"]

    def test_loopback_is_refused_without_the_setting(self, webhook_notice):
        # A real loopback address, refused before any connection (nothing listens there).
        AwsAccount.objects.filter(account_id=TARGET).update(webhook_url="http://127.0.0.1:9/in")
        with pytest.raises(notices.DeliveryError, match="refused destination"):
            notices.send(webhook_notice.pk)


def account_form(**changes) -> dict:
    data = {
        "account_id": "555555555555",
        "name": "Partner",
        "managed": "",
        "regions": "",
        "role_arn": "",
        "external_id": "",
        "api_rate": "10",
        "contact_emails": "",
        "webhook_url": "",
        "expiry_days": "",
    }
    data.update(changes)
    return data


class TestAccountForm:
    def test_a_private_webhook_url_is_refused_and_nothing_is_saved(
        self, client, portal_admin, resolver
    ):
        resolver.set("hooks.example.com", "169.254.169.254")
        client.force_login(portal_admin)
        page = client.post("/accounts/new/", account_form(webhook_url="https://hooks.example.com/"))
        assert page.status_code == 200
        assert "only calls public internet addresses" in page.content.decode()
        assert not AwsAccount.objects.filter(account_id="555555555555").exists()

    def test_a_public_webhook_url_is_saved(self, client, portal_admin, resolver):
        resolver.set("hooks.example.com", PUBLIC)
        client.force_login(portal_admin)
        page = client.post("/accounts/new/", account_form(webhook_url="https://hooks.example.com/"))
        assert page.status_code == 302
        saved = AwsAccount.objects.get(account_id="555555555555")
        assert saved.webhook_url == "https://hooks.example.com/"
        assert resolver.connects == []  # checked, never called

    def test_editing_refuses_a_private_url_too(self, client, portal_admin, resolver, db):
        account = make_account("555555555555", managed=False, contact_emails="")
        AccountGrant.objects.create(account=account, user=portal_admin, role=Role.ADMIN)
        resolver.set("internal.example.com", "10.0.0.8")
        client.force_login(portal_admin)
        page = client.post(
            f"/accounts/{account.pk}/edit/",
            account_form(webhook_url="https://internal.example.com/"),
        )
        assert "only calls public internet addresses" in page.content.decode()
        account.refresh_from_db()
        assert account.webhook_url == ""
