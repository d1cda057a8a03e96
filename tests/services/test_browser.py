"""Browser tier: Playwright drives Debian's Chromium through the main flow, against the live
server, a real Celery worker and the stand-in server. Screenshots go to test-results/."""

import os
from pathlib import Path

import pytest

import demo
from standin.control import client_for_account
from tests.conftest import SOURCE, TARGET
from transfers import inventory
from transfers.models import AwsAccount

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]
SHOTS = Path(__file__).resolve().parents[2] / "test-results" / "browser"
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")


@pytest.fixture
def browser(monkeypatch):
    from playwright.sync_api import sync_playwright

    # Playwright's sync API keeps an event loop on this thread; the ORM calls the test makes
    # around it are still plain synchronous code.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    if not Path(CHROMIUM).exists():
        pytest.fail(f"Chromium is not at {CHROMIUM}: apt-get install -y chromium (.ci/run does).")
    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        launched = p.chromium.launch(
            executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"]
        )
        yield launched
        # ORM calls made while Playwright runs (demo.totp_code, the syncs) get a connection
        # of their own context: closed here, or it holds the test database at teardown.
        from django.db import connections

        connections.close_all()
        launched.close()


def log_in(browser, live_server, user: str):
    """A new browser context logged in as ``user``, on the overview."""
    page = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
    page.goto(f"{live_server.url}/login/")
    page.fill("input[name=username]", user)
    page.fill("input[name=password]", demo.PASSWORD)
    page.click("button[type=submit]")
    if user in demo.TOTP_USERS:  # approvers and admins: the second factor
        page.wait_for_url(f"{live_server.url}/login/verify/?next=%2F")
        page.fill("input[name=code]", demo.totp_code(user))
        page.screenshot(path=SHOTS / f"0-second-factor-{user}.png")
        page.click("button:has-text('Verify')")  # not the header's "Log out"
    page.wait_for_url(f"{live_server.url}/")  # the overview
    return page


@pytest.fixture
def demo_world(services_env, standin_url, start_worker):
    demo.seed_portal()
    iot = client_for_account(SOURCE, "us-east-1", standin_url)
    iot.create_policy(
        policyName="DevicePublish", policyDocument='{"Version":"2012-10-17","Statement":[]}'
    )
    from datetime import UTC, datetime, timedelta

    now = datetime.now(UTC)
    pem = demo.certificate_pem("browser-cert", now - timedelta(days=1), now + timedelta(days=400))
    made = iot.register_certificate_without_ca(certificatePem=pem, status="ACTIVE")
    iot.attach_policy(policyName="DevicePublish", target=made["certificateArn"])
    iot.create_thing(thingName="browser-sensor")
    iot.attach_thing_principal(thingName="browser-sensor", principal=made["certificateArn"])
    AwsAccount.objects.filter(account_id__in=[SOURCE, TARGET]).update(regions=["us-east-1"])
    for account in AwsAccount.objects.filter(managed=True):
        inventory.sync_region(inventory.queue_sync(account, "us-east-1")[0].pk)
    start_worker()
    return made["certificateId"]


def test_request_approve_watch_and_accept(browser, live_server, demo_world, standin_url):
    cert_id = demo_world

    def login(user: str):
        page = log_in(browser, live_server, user)
        page.goto(f"{live_server.url}/certificates/")
        return page

    alice = login("alice")
    alice.fill("input[name=q]", "browser-sensor")
    alice.wait_for_selector(f"a[title='{cert_id}']")
    assert alice.locator("table.certs tbody tr").count() == 1
    alice.screenshot(path=SHOTS / "1-search.png", full_page=True)
    alice.click(f"a[title='{cert_id}']")
    alice.click("text=Request a transfer")
    alice.select_option("select[name=target]", TARGET)
    alice.fill("input[name=message]", "Devices sold to Acme")
    alice.fill("textarea[name=reason]", "Contract 42")
    # On by default for a certificate with a thing; this stand-in has no simulated devices
    # to take the job (tests/services/test_devices_e2e.py moves devices that do).
    assert alice.is_checked("input[name=tell_devices]")
    alice.uncheck("input[name=tell_devices]")
    alice.click("button[value=preview]")
    alice.wait_for_selector("text=Plan, from AWS just now")
    assert "Detach policies (1): DevicePublish" in alice.content()
    alice.screenshot(path=SHOTS / "2-plan.png", full_page=True)
    alice.click("button[value=submit]")
    alice.wait_for_selector("text=Transfer #")
    transfer_url = alice.url
    alice.screenshot(path=SHOTS / "3-requested.png", full_page=True)

    bob = login("bob")
    bob.goto(f"{live_server.url}/approvals/")
    bob.click("table a")
    bob.click("button:has-text('Approve')")
    # No reload: htmx polls the row until the worker has made it pending.
    bob.wait_for_selector("#live .state-pending_acceptance", timeout=60_000)
    assert "Transferred in AWS" in bob.inner_text("#live")
    bob.screenshot(path=SHOTS / "4-pending.png", full_page=True)

    carol = login("carol")
    carol.goto(f"{live_server.url}/incoming/")
    assert carol.locator("table tbody a").count() == 1
    carol.screenshot(path=SHOTS / "5-incoming.png", full_page=True)
    carol.goto(transfer_url)
    carol.check("input[name=set_as_active]")
    carol.click("button:has-text('Accept')")
    carol.wait_for_selector("#live .state-accepted")
    carol.screenshot(path=SHOTS / "6-accepted.png", full_page=True)
    target_iot = client_for_account(TARGET, "us-east-1", standin_url)
    described = target_iot.describe_certificate(certificateId=cert_id)["certificateDescription"]
    assert described["status"] == "ACTIVE" and described["ownedBy"] == TARGET


@pytest.fixture
def fleet_world(services_env, standin_url, start_worker):
    """The demo's accounts and people, and six ACTIVE certificates with a thing each."""
    from datetime import UTC, datetime, timedelta

    demo.seed_portal()
    iot = client_for_account(SOURCE, "us-east-1", standin_url)
    now = datetime.now(UTC)
    for i in range(6):
        pem = demo.certificate_pem(f"batch-{i}", now - timedelta(days=1), now + timedelta(days=90))
        made = iot.register_certificate_without_ca(certificatePem=pem, status="ACTIVE")
        iot.create_thing(thingName=f"batch-sensor-{i}")
        iot.attach_thing_principal(thingName=f"batch-sensor-{i}", principal=made["certificateArn"])
    AwsAccount.objects.filter(account_id__in=[SOURCE, TARGET]).update(regions=["us-east-1"])
    source = AwsAccount.objects.get(account_id=SOURCE)
    inventory.sync_region(inventory.queue_sync(source, "us-east-1")[0].pk)
    # One call a second per API: the six take several seconds, long enough to watch.
    AwsAccount.objects.filter(pk=source.pk).update(api_rate=1.0)
    start_worker()


def test_a_batch_from_a_search_with_live_progress(browser, live_server, fleet_world):
    """Bulk: every certificate matching a search, one approval, progress without reloading."""
    alice = log_in(browser, live_server, "alice")
    alice.goto(f"{live_server.url}/certificates/?q=batch-sensor")
    assert alice.locator("table.certs tbody tr").count() == 6
    alice.click("button:has-text('Transfer all 6 matching')")
    alice.select_option("select[name=target]", TARGET)
    alice.fill("input[name=message]", "Batch to Acme")
    alice.fill("textarea[name=reason]", "Browser test")
    alice.uncheck("input[name=tell_devices]")  # no simulated devices here (see above)
    alice.click("button[value=preview]")
    alice.wait_for_selector("#preflight")
    assert "6 ready to go" in " ".join(alice.inner_text("#preflight").split())
    alice.screenshot(path=SHOTS / "7-batch-preflight.png", full_page=True)
    alice.click("button[value=submit]")
    alice.wait_for_selector("h1:has-text('Batch #')")
    batch_url = alice.url

    bob = log_in(browser, live_server, "bob")
    bob.goto(batch_url)
    bob.click("button:has-text('Approve all 6')")
    bob.wait_for_url(batch_url)
    bob.evaluate("window.stillTheSamePage = true")
    assert bob.locator("#progress progress").get_attribute("value") != "100"  # still going
    pending = bob.locator(".card:has-text('pending acceptance') strong")
    # The page's CSP allows no eval, so wait on the swapped-in markup, not a JS predicate.
    bob.wait_for_selector("#progress progress[value='100']", timeout=90_000)
    assert pending.inner_text() == "6"
    assert bob.evaluate("window.stillTheSamePage") is True  # htmx swapped, nothing reloaded
    bob.screenshot(path=SHOTS / "8-batch-done.png", full_page=True)
    assert "updating live" not in bob.inner_text("#progress")
    # The transfers table below follows too, a little later (every 5 s).
    # It stops refreshing once it was drawn with the batch done: then it is final.
    bob.wait_for_selector("#batch-transfers:not([hx-trigger])", timeout=20_000)
    assert bob.locator("#batch-transfers .state-pending_acceptance").count() == 6
    assert bob.evaluate("window.stillTheSamePage") is True
    bob.screenshot(path=SHOTS / "9-batch-table.png", full_page=True)
