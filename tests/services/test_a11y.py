"""Browser tier: every page, as each demo role, at desktop and phone widths, checked with
axe-core (npm, tests/a11y/) injected by Playwright into Chromium: no serious or critical
violation. Keyboard only: every action on the main pages is reached with Tab and shows where
the focus is. On a phone-sized window an approver reads a bulk request and approves it
without scrolling sideways. Screenshots at 375 px go to test-results/browser/a11y/."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

import demo
from standin.control import client_for_account
from tests.conftest import SOURCE, TARGET
from tests.services.test_browser import CHROMIUM, SHOTS
from transfers import batches, inventory, workflow
from transfers.models import AwsAccount, Certificate, Notice, Transfer
from transfers.workflow import Options

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]
AXE = Path(__file__).resolve().parents[1] / "a11y" / "node_modules" / "axe-core" / "axe.min.js"
PHONE = {"width": 375, "height": 812}
DESKTOP = {"width": 1280, "height": 900}
A11Y_SHOTS = SHOTS / "a11y"
ROLES = ["alice", "bob", "carol", "victor", "admin"]
FOCUSABLE = (
    "a[href], button:not([disabled]), input:not([type=hidden]):not([disabled]), "
    "select:not([disabled]), textarea:not([disabled]), summary, [tabindex]:not([tabindex='-1'])"
)


@pytest.fixture
def world(services_env, standin_url, remote):
    """The demo's people and accounts; a bulk request and a single one waiting for approval,
    a batch pending acceptance (with its notices), so every page has rows to show."""
    demo.seed_portal()
    iot = client_for_account(SOURCE, "us-east-1", standin_url)
    now = datetime.now(UTC)
    for i in range(8):
        pem = demo.certificate_pem(f"a11y-{i}", now - timedelta(days=1), now + timedelta(days=90))
        iot.register_certificate_without_ca(certificatePem=pem, status="INACTIVE")
    AwsAccount.objects.filter(account_id__in=[SOURCE, TARGET]).update(regions=["us-east-1"])
    source = AwsAccount.objects.get(account_id=SOURCE)
    inventory.sync_region(inventory.queue_sync(source, "us-east-1")[0].pk)
    from django.contrib.auth.models import User

    alice, bob = User.objects.get(username="alice"), User.objects.get(username="bob")
    certs = list(Certificate.objects.filter(account=source).order_by("certificate_id"))
    assert len(certs) >= 8

    def bulk(chosen):
        return batches.request_batch(
            alice,
            chosen,
            [],
            target_account_id=TARGET,
            message="To Acme",
            reason="Fleet sale",
            options=Options(),
        )

    waiting = bulk(certs[:3])
    single = workflow.request_transfer(
        alice, certs[3], target_account_id=TARGET, message="m", reason="r", options=Options()
    )
    moving = bulk(certs[4:6])
    for t in moving.transfers.all():  # as a worker would, in this process
        workflow.approve(bob, t.pk, "ok", enqueue=False)
        workflow.execute(t.pk)
    pending = moving.transfers.first()
    assert Transfer.objects.get(pk=pending.pk).status == Transfer.Status.PENDING_ACCEPTANCE
    yield {
        "waiting": waiting,
        "single": single,
        "moving": moving,
        "pending": pending,
        "cert": certs[6],
        "source": source,
        "notice": Notice.objects.order_by("pk").first(),
    }
    remote.reset()  # the stand-in server is shared by the session: leave it empty


@pytest.fixture
def chromium(monkeypatch):
    from playwright.sync_api import sync_playwright

    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")  # ORM calls around Playwright
    if not Path(CHROMIUM).exists():
        pytest.fail(f"Chromium is not at {CHROMIUM}: apt-get install -y chromium (.ci/run does).")
    if not AXE.exists():
        pytest.fail(f"axe-core is not at {AXE}: npm ci --prefix tests/a11y (.ci/run does).")
    with sync_playwright() as p:
        launched = p.chromium.launch(
            executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"]
        )
        yield launched
        from django.db import connections

        connections.close_all()
        launched.close()


def pages_for(role: str, w: dict) -> list[str]:
    common = [
        "/",
        "/certificates/",
        f"/certificates/{w['cert'].pk}/",
        "/transfers/",
        f"/transfers/{w['pending'].pk}/",
        f"/transfers/{w['single'].pk}/",
        "/batches/",
        f"/batches/{w['moving'].pk}/",
        f"/batches/{w['waiting'].pk}/",
        "/approvals/",
        "/incoming/",
        "/accounts/",
        f"/accounts/{w['source'].pk}/",
        "/audit/",
        "/profile/",
    ]
    extra = {
        "alice": ["/batches/new/", f"/certificates/{w['cert'].pk}/transfer/"],
        "admin": [
            "/notices/",
            f"/notices/{w['notice'].pk}/",
            "/accounts/new/",
            f"/accounts/{w['source'].pk}/edit/",
        ],
    }
    return common + extra.get(role, [])


def log_in(chromium, live_server, user: str):
    # bypass_csp: the check injects axe-core as a script tag, which the portal's CSP forbids.
    context = chromium.new_context(viewport=DESKTOP, bypass_csp=True)
    page = context.new_page()
    page.goto(f"{live_server.url}/login/")
    page.fill("input[name=username]", user)
    page.fill("input[name=password]", demo.PASSWORD)
    page.click("button[type=submit]")
    if user in demo.TOTP_USERS:
        page.wait_for_url("**/login/verify/**")
        page.fill("input[name=code]", demo.totp_code(user))
        page.click("button:has-text('Verify')")
    page.wait_for_url(f"{live_server.url}/")
    return page


def axe_violations(page) -> list[dict]:
    if not page.evaluate("() => typeof window.axe !== 'undefined'"):
        page.add_script_tag(path=str(AXE))
    result = page.evaluate(
        """async () => {
            const r = await axe.run(document, {resultTypes: ["violations"]});
            return r.violations.map(v => ({
                id: v.id, impact: v.impact, help: v.help,
                nodes: v.nodes.slice(0, 3).map(n => n.target.join(" ")),
            }));
        }"""
    )
    return [v for v in result if v["impact"] in ("serious", "critical")]


def check_every_page(page, live_server, role, world) -> list[str]:
    problems = []
    for path in pages_for(role, world):
        for name, size in (("desktop", DESKTOP), ("phone", PHONE)):
            page.set_viewport_size(size)
            response = page.goto(f"{live_server.url}{path}")
            if response.status in (403, 404):
                continue  # not this role's page: nothing to check
            assert response.status == 200, f"{role} {path}: HTTP {response.status}"
            for v in axe_violations(page):
                problems.append(
                    f"{role} {name} {path}: {v['impact']} {v['id']} ({v['help']}) at {v['nodes']}"
                )
            if name == "phone":
                slug = path.strip("/").replace("/", "-") or "overview"
                page.screenshot(path=A11Y_SHOTS / f"{role}-{slug}.png", full_page=True)
    return problems


@pytest.mark.parametrize("role", ROLES)
def test_no_serious_or_critical_violation_on_any_page(chromium, live_server, world, role):
    A11Y_SHOTS.mkdir(parents=True, exist_ok=True)
    page = log_in(chromium, live_server, role)
    problems = check_every_page(page, live_server, role, world)
    assert problems == [], "\n".join(problems)


def test_the_login_page_passes_too(chromium, live_server, world):
    page = chromium.new_context(viewport=PHONE, bypass_csp=True).new_page()
    page.goto(f"{live_server.url}/login/")
    assert axe_violations(page) == []
    page.set_viewport_size(DESKTOP)
    assert axe_violations(page) == []


def tab_through(page) -> tuple[set[int], list[str]]:
    """Press Tab until the focus comes back round; which focusable elements it reached, and
    those that showed no focus indicator."""
    count = page.evaluate(
        """(selector) => {
            const visible = el => el.getClientRects().length > 0
                && getComputedStyle(el).visibility !== "hidden";
            const all = [...document.querySelectorAll(selector)].filter(visible);
            all.forEach((el, i) => el.setAttribute("data-focus-index", i));
            return all.length;
        }""",
        FOCUSABLE,
    )
    reached, unmarked, previous = set(), [], None
    page.evaluate("() => document.activeElement && document.activeElement.blur()")
    for _ in range(3 * count + 10):  # a date input takes a Tab per part (day, month, year)
        page.keyboard.press("Tab")
        seen = page.evaluate(
            """() => {
                const el = document.activeElement;
                if (!el || el === document.body) return null;
                const s = getComputedStyle(el);
                const ring = (s.outlineStyle !== "none" && parseFloat(s.outlineWidth) > 0)
                    || s.boxShadow !== "none";
                return {index: el.getAttribute("data-focus-index"), ring,
                        what: el.outerHTML.slice(0, 120)};
            }"""
        )
        if seen is None:
            continue
        index = seen["index"]
        if index is not None and index != previous:
            if int(index) in reached:
                break  # round again
            reached.add(int(index))
            if not seen["ring"]:
                unmarked.append(seen["what"])
        previous = index
    missed = [
        page.evaluate(
            "(i) => document.querySelector(`[data-focus-index='${i}']`).outerHTML.slice(0, 120)",
            i,
        )
        for i in range(count)
        if i not in reached
    ]
    return reached, unmarked + [f"never reached: {m}" for m in missed]


@pytest.mark.parametrize(
    ("role", "which"),
    [
        ("bob", "/approvals/"),
        ("bob", "batch"),
        ("bob", "single"),
        ("carol", "pending"),
        ("alice", "/batches/"),
        ("admin", "/audit/"),
    ],
)
def test_keyboard_only_reaches_every_action_with_visible_focus(
    chromium,
    live_server,
    world,
    role,
    which,
):
    paths = {
        "batch": f"/batches/{world['waiting'].pk}/",
        "single": f"/transfers/{world['single'].pk}/",
        "pending": f"/transfers/{world['pending'].pk}/",
    }
    page = log_in(chromium, live_server, role)
    page.goto(f"{live_server.url}{paths.get(which, which)}")
    reached, problems = tab_through(page)
    assert reached, "Tab reached nothing"
    assert problems == [], "\n".join(problems)


def test_an_approver_on_a_phone_reads_and_approves_a_bulk_request(
    chromium,
    live_server,
    world,
):
    A11Y_SHOTS.mkdir(parents=True, exist_ok=True)
    page = log_in(chromium, live_server, "bob")
    page.set_viewport_size(PHONE)
    page.goto(f"{live_server.url}/approvals/")
    batch = world["waiting"]
    row = page.locator(f"li.request:has(a[href='/batches/{batch.pk}/'])")
    assert "3 certificates" in " ".join(row.inner_text().split())
    assert "Fleet sale" in row.inner_text()
    # The decision part fits the window: nothing to scroll sideways.
    fits = row.evaluate(
        """el => {
            const box = el.getBoundingClientRect();
            const wide = [...el.querySelectorAll("*")].filter(
                c => c.getBoundingClientRect().right > window.innerWidth + 0.5);
            return {right: box.right, width: window.innerWidth, wide: wide.map(c => c.tagName),
                    scroll: el.scrollWidth <= el.clientWidth};
        }"""
    )
    assert fits["right"] <= fits["width"] and fits["wide"] == [] and fits["scroll"], fits
    page.screenshot(path=A11Y_SHOTS / "phone-approvals-before.png", full_page=True)
    row.locator("textarea").fill("Checked on my phone")
    row.locator("button:has-text('Approve all 3')").click()
    page.wait_for_url(f"{live_server.url}/approvals/")
    assert "Approv" in page.inner_text(".messages")
    page.screenshot(path=A11Y_SHOTS / "phone-approvals-after.png", full_page=True)
    batch.refresh_from_db()
    assert batch.approver.username == "bob" and batch.decision_comment == "Checked on my phone"
    assert page.locator(f"li.request:has(a[href='/batches/{batch.pk}/'])").count() == 0
