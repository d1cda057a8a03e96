"""Single sign-on in Chromium against a real OpenID provider process on 127.0.0.1: panva's
OpenID-certified oidc-provider under Node (tests/oidc/, installed by `npm ci`, .ci/run)."""

from __future__ import annotations

import json
import os
import shutil
import urllib.request
from pathlib import Path

import pytest

from sso.models import AccessEvent, GroupMapping
from tests.conftest import SOURCE, TARGET, make_account
from tests.services import test_browser
from tests.services.conftest import REPO, Process, free_port, wait_until
from transfers.models import AccountGrant, Role

SHOTS = test_browser.SHOTS
browser = test_browser.browser  # Chromium, as the rest of the browser tier drives it
pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]
PROVIDER_DIR = REPO / "tests" / "oidc"
CLIENT_ID, CLIENT_SECRET = "transfer-portal", "test-secret-for-loopback-only"


class Provider:
    def __init__(self, url: str, users: Path, fault: Path) -> None:
        self.url, self.users_file, self.fault_file = url, users, fault

    def people(self, **people: dict) -> None:
        self.users_file.write_text(json.dumps(people))

    def spoil_tokens(self, kind: str) -> None:
        self.fault_file.write_text(kind)


@pytest.fixture(scope="session")
def oidc_provider(live_server, tmp_path_factory):
    node = shutil.which("node")
    if node is None or not (PROVIDER_DIR / "node_modules" / "oidc-provider").is_dir():
        pytest.fail("The OpenID provider needs Node and `npm ci` in tests/oidc (.ci/run does).")
    folder = tmp_path_factory.mktemp("oidc")
    users, fault = folder / "users.json", folder / "fault"
    users.write_text("{}")
    fault.write_text("")
    port = free_port()
    process = Process(
        "oidc-provider",
        [node, str(PROVIDER_DIR / "provider.mjs")],
        {
            "PATH": os.environ.get("PATH", ""),
            "OIDC_PORT": str(port),
            "OIDC_CLIENT_ID": CLIENT_ID,
            "OIDC_CLIENT_SECRET": CLIENT_SECRET,
            "OIDC_REDIRECT_URIS": f"{live_server.url}/oidc/callback/",
            "OIDC_USERS_FILE": str(users),
            "OIDC_FAULT_FILE": str(fault),
        },
        folder / "provider.log",
    )
    url = f"http://127.0.0.1:{port}"

    def up() -> bool:
        try:
            urllib.request.urlopen(f"{url}/.well-known/openid-configuration", timeout=1)  # noqa: S310
            return True
        except OSError:
            return process.handle.poll() is not None and pytest.fail(process.tail())

    wait_until(up, 30, "the OpenID provider")
    yield Provider(url, users, fault)
    process.stop()


@pytest.fixture
def provider(oidc_provider, settings):
    settings.OIDC_ISSUER = oidc_provider.url
    settings.OIDC_DISCOVERY_URL = f"{oidc_provider.url}/.well-known/openid-configuration"
    settings.OIDC_RP_CLIENT_ID = CLIENT_ID
    settings.OIDC_RP_CLIENT_SECRET = CLIENT_SECRET
    settings.OIDC_PROVIDER_NAME = "the test provider"
    settings.OIDC_MFA_AMR = ["mfa"]
    settings.OIDC_RP_SCOPES = "openid email profile groups"
    oidc_provider.spoil_tokens("")
    oidc_provider.people(
        dana={
            "password": "pw",
            "email": "dana@example.com",
            "groups": ["fleet-ops", "security"],
            "amr": ["pwd", "mfa"],
        },
        erin={
            "password": "pw",
            "email": "erin@example.com",
            "groups": ["security"],
            "amr": ["pwd"],
        },
    )
    make_account(SOURCE, "Fleet production")
    make_account(TARGET, "Acme devices")
    GroupMapping.objects.create(provider_group="fleet-ops", account=None, role=Role.VIEWER)
    GroupMapping.objects.create(provider_group="security", account=None, role=Role.APPROVER)
    yield oidc_provider
    oidc_provider.spoil_tokens("")


def sign_in(browser, live_server, login: str, shot: str = ""):
    """A new browser context through the portal's login page and the provider's."""
    page = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
    page.goto(f"{live_server.url}/login/")
    page.click("text=Sign in with the test provider")
    page.wait_for_selector("text=Test identity provider")  # the provider's own page
    if shot:
        page.screenshot(path=SHOTS / f"sso-{shot}-provider.png")
    page.fill("input[name=login]", login)
    page.fill("input[name=password]", "pw")
    page.click("button:has-text('Sign in at the provider')")
    page.wait_for_load_state()
    return page


def grants(username: str) -> set[tuple[str, str]]:
    return set(
        AccountGrant.objects.filter(user__username=username).values_list(
            "account__account_id", "role"
        )
    )


def test_groups_become_grants_and_a_removed_group_removes_its_role(
    browser,
    live_server,
    provider,
):
    page = sign_in(browser, live_server, "dana", shot="1")
    # The provider checked a second factor (amr "mfa"): no TOTP page although she approves.
    page.wait_for_url(f"{live_server.url}/")
    assert "dana" in page.inner_text("header")
    page.screenshot(path=SHOTS / "sso-2-signed-in.png", full_page=True)
    assert grants("dana") == {
        (SOURCE, "viewer"),
        (TARGET, "viewer"),
        (SOURCE, "approver"),
        (TARGET, "approver"),
    }
    page.goto(f"{live_server.url}/approvals/")
    assert page.url == f"{live_server.url}/approvals/"  # an approver's page, no second factor

    # Out of "security" at the provider: the approver role goes at the next sign-in.
    provider.people(
        dana={
            "password": "pw",
            "email": "dana@example.com",
            "groups": ["fleet-ops"],
            "amr": ["pwd", "mfa"],
        }
    )
    page = sign_in(browser, live_server, "dana")
    page.wait_for_url(f"{live_server.url}/")
    assert grants("dana") == {(SOURCE, "viewer"), (TARGET, "viewer")}
    changes = AccessEvent.objects.filter(kind="signed_in").first().details["changes"]
    assert sorted(changes) == [f"removed approver on {SOURCE}", f"removed approver on {TARGET}"]

    # Unknown to the provider now: it refuses her, and the portal never sees her.
    provider.people()
    page = sign_in(browser, live_server, "dana")
    assert "Unknown login or wrong password" in page.content()
    page.goto(f"{live_server.url}/")
    assert page.url.startswith(f"{live_server.url}/login/")


def test_without_a_second_factor_at_the_provider_the_portal_asks_for_its_own(
    browser,
    live_server,
    provider,
):
    page = sign_in(browser, live_server, "erin")
    page.wait_for_url(f"{live_server.url}/login/enrol/**")  # an approver's TOTP, as today
    assert "Authenticator" in page.content() or "authenticator" in page.content()
    page.screenshot(path=SHOTS / "sso-3-totp-still-asked.png", full_page=True)


@pytest.mark.parametrize(
    ("fault", "words"),
    [
        ("wrong_audience", "issued for another application, not this portal"),
        ("expired", "token has expired"),
        ("tampered", "failed its signature check"),
    ],
)
def test_a_bad_token_refuses_the_sign_in_with_a_clear_page(
    browser,
    live_server,
    provider,
    fault,
    words,
):
    provider.spoil_tokens(fault)
    page = sign_in(browser, live_server, "dana")
    page.wait_for_selector("h1:has-text('Sign-in refused')")
    assert words in page.inner_text("main")
    page.screenshot(path=SHOTS / f"sso-4-refused-{fault}.png", full_page=True)
    assert grants("dana") == set()
    page.goto(f"{live_server.url}/")
    assert page.url.startswith(f"{live_server.url}/login/")


def test_a_bad_state_refuses_the_sign_in_with_a_clear_page(browser, live_server, provider):
    # A provider's answer (code and state) meant for one browser, replayed in another that
    # started its own sign-in: the state is not the one its session holds.
    seen: list[str] = []
    first = browser.new_context().new_page()
    first.on("request", lambda r: "/oidc/callback/" in r.url and seen.append(r.url))
    first.goto(f"{live_server.url}/login/")
    first.click("text=Sign in with the test provider")
    first.fill("input[name=login]", "dana")
    first.fill("input[name=password]", "pw")
    first.click("button:has-text('Sign in at the provider')")
    first.wait_for_url(f"{live_server.url}/")
    assert len(seen) == 1 and "state=" in seen[0]

    other = browser.new_context().new_page()
    other.goto(f"{live_server.url}/login/")
    other.click("text=Sign in with the test provider")
    other.wait_for_selector("text=Test identity provider")
    other.goto(seen[0])
    assert "does not match one started in this browser" in other.inner_text("main")
    other.screenshot(path=SHOTS / "sso-5-refused-state.png", full_page=True)
    other.goto(f"{live_server.url}/")
    assert other.url.startswith(f"{live_server.url}/login/")  # not signed in

    # Replayed where it was used: the state was spent.
    first.goto(seen[0])
    assert "does not match one started in this browser" in first.inner_text("main")
