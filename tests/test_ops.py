"""Operations: overview, audit log and CSV export, health, metrics, request ids in logs."""

from __future__ import annotations

import contextvars
import csv
import io
import json
import logging
import runpy
import time
from datetime import timedelta
from pathlib import Path

import pytest
from django.contrib.auth.models import User
from django.core.exceptions import ImproperlyConfigured
from django.http import StreamingHttpResponse
from django.urls import reverse
from django.utils import timezone

from portal import request_id
from portal.celery import app as celery_app
from tests.conftest import OTHER, SOURCE, TARGET, make_user
from transfers import charts, health, inventory, tasks
from transfers.models import Certificate, Notice, Role, Transfer, TransferEvent

NOW = timezone.now()


def make_cert(account, n: int, status: str = "ACTIVE") -> Certificate:
    cert_id = f"{account.account_id}{n:052x}"
    return Certificate.objects.create(
        account=account,
        region="us-east-1",
        certificate_id=cert_id,
        arn=f"arn:aws:iot:us-east-1:{account.account_id}:cert/{cert_id}",
        status=status,
    )


def make_transfer(cert, requester, status, target_account_id=TARGET, **fields) -> Transfer:
    return Transfer.objects.create(
        source=cert.account,
        region=cert.region,
        cert=cert,
        certificate_id=cert.certificate_id,
        certificate_arn=cert.arn,
        target_account_id=target_account_id,
        requester=requester,
        reason="Sale",
        status=status,
        **fields,
    )


def event(transfer, action, actor="requester", **fields) -> TransferEvent:
    fields.setdefault("kind", TransferEvent.Kind.TRANSITION)
    return TransferEvent.objects.create(
        transfer=transfer, action=action, actor_name=actor, **fields
    )


@pytest.fixture
def world(source, target, other, requester, outsider):
    """Source -> target: one accepted after 1 h, one after 3 h, one pending for 2 days, one
    requested. Other -> elsewhere: one transfer only the outsider may see."""
    certs = [make_cert(source, n) for n in range(4)] + [make_cert(source, 9, "INACTIVE")]
    accepted_fast = make_transfer(
        certs[0],
        requester,
        Transfer.Status.ACCEPTED,
        target=target,
        created=NOW - timedelta(days=2, hours=1),
        finished_at=NOW - timedelta(days=2),
    )
    accepted_slow = make_transfer(
        certs[1],
        requester,
        Transfer.Status.ACCEPTED,
        target=target,
        created=NOW - timedelta(days=1, hours=3),
        finished_at=NOW - timedelta(days=1),
        accept_date=NOW - timedelta(days=1),
    )
    pending = make_transfer(
        certs[2],
        requester,
        Transfer.Status.PENDING_ACCEPTANCE,
        target=target,
        created=NOW - timedelta(days=3),
        pending_since=NOW - timedelta(days=2),
    )
    requested = make_transfer(
        certs[3], requester, Transfer.Status.REQUESTED, "666666666666", created=NOW
    )
    event(requested, "request", to_status="requested", created=NOW - timedelta(days=5))
    event(pending, "approve", actor="approver", from_status="requested", to_status="approved")
    event(
        pending,
        "TransferCertificate",
        actor="worker",
        kind=TransferEvent.Kind.AWS,
        details={"params": {"certificateId": certs[2].certificate_id}},
    )
    event(accepted_fast, "mark_accepted", actor="=HYPERLINK(1)", to_status="accepted")

    hidden_cert = make_cert(other, 1, "REVOKED")
    hidden = make_transfer(
        hidden_cert,
        outsider,
        Transfer.Status.PENDING_ACCEPTANCE,
        "555555555555",
        pending_since=NOW,
    )
    event(hidden, "secret-step", actor="mallory")
    return {
        "pending": pending,
        "requested": requested,
        "accepted": [accepted_fast, accepted_slow],
        "hidden": hidden,
    }


# ----------------------------------------------------------------------------- overview


class TestOverview:
    url = reverse("home")

    def test_anonymous_users_are_sent_to_log_in(self, client):
        response = client.get(self.url)
        assert response.status_code == 302 and response["Location"].startswith(reverse("login"))

    def test_it_shows_states_days_waits_pending_certificates_and_activity(
        self, client, requester, world
    ):
        client.force_login(requester)
        response = client.get(self.url)
        body = response.content.decode()
        assert response.status_code == 200
        assert body.count('<svg class="chart"') == 3 and body.count("<details>") == 3
        states = dict((label, n) for label, n, _ in response.context["states"])
        assert states == {
            **{label: 0 for _, label in Transfer.Status.choices},
            **{"Accepted": 2, "Pending acceptance": 1, "Requested": 1},
        }
        # Median of 1 h and 3 h, slowest 3 h.
        assert response.context["median_wait"] == "2 h 0 min"
        assert response.context["slowest_wait"] == "3 h 0 min"
        pending = world["pending"]
        assert response.context["pending"] == [pending]
        assert pending.expires_at.strftime("%Y-%m-%d %H:%M") in body
        day_values = {b.label: b.value for b in response.context["day_chart"].bars}
        assert len(day_values) == 30 and sum(day_values.values()) == 4
        assert response.context["cert_rows"] == [
            ("Fleet production", SOURCE, [("ACTIVE", 4), ("INACTIVE", 1)])
        ]
        assert "TransferCertificate" in body and 'aria-current="page">Overview' in body

    def test_an_outsider_sees_nothing_of_other_accounts(self, client, outsider, world):
        client.force_login(outsider)
        response = client.get(self.url)
        body = response.content.decode()
        assert SOURCE not in body and "Fleet production" not in body
        assert "TransferCertificate" not in body
        assert response.context["total"] == 1
        assert response.context["cert_rows"] == [
            ("Someone else's account", OTHER, [("REVOKED", 1)])
        ]
        assert [e.action for e in response.context["events"]] == ["secret-step"]

    def test_and_the_source_sees_nothing_of_the_outsider(self, client, requester, world):
        client.force_login(requester)
        body = client.get(self.url).content.decode()
        assert "secret-step" not in body and OTHER not in body and "555555555555" not in body

    def test_an_empty_portal_renders(self, client, viewer):
        client.force_login(viewer)
        response = client.get(self.url)
        assert response.status_code == 200
        assert response.context["median_wait"] == "—" and "No activity yet" in (
            response.content.decode()
        )

    def test_the_query_count_does_not_grow_with_the_data(
        self, client, requester, world, source, django_assert_max_num_queries
    ):
        client.force_login(requester)
        # Six for the overview (states, days, waits, pending, certificates, events), the rest
        # for the session, the user and the security middleware.
        with django_assert_max_num_queries(12) as few:
            client.get(self.url)
        for n in range(30):
            t = make_transfer(
                make_cert(source, 50 + n),
                requester,
                Transfer.Status.PENDING_ACCEPTANCE if n % 2 else Transfer.Status.ACCEPTED,
                created=NOW - timedelta(days=n % 20, hours=2),
                pending_since=NOW - timedelta(days=n % 20),
                finished_at=NOW - timedelta(days=n % 20),
            )
            event(t, "approve")
        with django_assert_max_num_queries(12) as many:
            client.get(self.url)
        assert len(few.captured_queries) == len(many.captured_queries)


def test_charts_scale_to_the_largest_value():
    chart = charts.hbars([("a", 10, "x"), ("b", 5, "y"), ("c", 0, "z")], width=400)
    widths = [b.width for b in chart.bars]
    assert widths[0] == 2 * widths[1] and widths[2] == 0
    day = NOW.date()
    columns = charts.columns({day: 4}, day - timedelta(days=2), 3)
    assert [b.value for b in columns.bars] == [0, 0, 4] and columns.bars[2].height > 0
    assert charts.duration(timedelta(days=3, hours=4, minutes=5)) == "3 d 4 h"
    assert charts.duration(timedelta(seconds=40)) == "40 s"


# ----------------------------------------------------------------------------- audit


class TestAuditLog:
    url = reverse("audit_log")

    def actions(self, response) -> list[str]:
        return [e.action for e in response.context["page"].object_list]

    def test_anonymous_users_are_sent_to_log_in(self, client):
        for url in (self.url, reverse("audit_export")):
            response = client.get(url)
            assert response.status_code == 302
            assert response["Location"].startswith(reverse("login"))

    def test_it_lists_the_events_of_visible_transfers_newest_first(self, client, requester, world):
        client.force_login(requester)
        response = client.get(self.url)
        assert response.status_code == 200
        assert self.actions(response) == [
            "mark_accepted",
            "TransferCertificate",
            "approve",
            "request",
        ]
        assert 'aria-current="page">Audit' in response.content.decode()

    @pytest.mark.parametrize(
        ("query", "expected"),
        [
            ({"user": "APPROVER"}, ["approve"]),
            ({"action": "transfercertificate"}, ["TransferCertificate"]),
            ({"kind": "aws"}, ["TransferCertificate"]),
            ({"account": TARGET}, ["mark_accepted", "TransferCertificate", "approve"]),
            ({"account": OTHER}, []),
            ({"until": (NOW - timedelta(days=4)).date().isoformat()}, ["request"]),
            (
                {"since": (NOW - timedelta(days=4)).date().isoformat(), "user": "worker"},
                ["TransferCertificate"],
            ),
        ],
    )
    def test_filters(self, client, requester, world, query, expected):
        client.force_login(requester)
        assert self.actions(client.get(self.url, query)) == expected

    def test_a_filter_it_does_not_understand_is_ignored_and_said(self, client, requester, world):
        client.force_login(requester)
        response = client.get(self.url, {"account": "12", "since": "yesterday"})
        assert len(self.actions(response)) == 4
        assert "not understood" in response.content.decode()

    def test_htmx_gets_only_the_rows(self, client, requester, world):
        client.force_login(requester)
        response = client.get(self.url, {"user": "worker"}, headers={"HX-Request": "true"})
        body = response.content.decode()
        assert body.lstrip().startswith('<div id="rows">') and "<html" not in body
        assert "TransferCertificate" in body

    def test_it_pages(self, client, requester, world):
        for n in range(60):
            event(world["requested"], f"note-{n}")
        client.force_login(requester)
        first, second = client.get(self.url), client.get(self.url, {"page": 2})
        assert len(self.actions(first)) == 50 and len(self.actions(second)) == 14
        assert self.actions(first)[0] == "note-59"

    def test_an_outsider_sees_only_their_own(self, client, outsider, world):
        client.force_login(outsider)
        assert self.actions(client.get(self.url)) == ["secret-step"]
        assert self.actions(client.get(self.url, {"account": SOURCE})) == []
        rows = read_csv(client.get(reverse("audit_export")))
        assert [r["action"] for r in rows] == ["secret-step"]
        assert SOURCE not in json.dumps(rows)


def read_csv(response) -> list[dict]:
    assert isinstance(response, StreamingHttpResponse)
    content = b"".join(response.streaming_content).decode()
    return list(csv.DictReader(io.StringIO(content)))


class TestAuditExport:
    url = reverse("audit_export")

    def test_it_streams_every_visible_event_as_csv(self, client, requester, world):
        client.force_login(requester)
        response = client.get(self.url)
        assert response.status_code == 200 and response.streaming
        assert response["Content-Type"] == "text/csv; charset=utf-8"
        assert response["Content-Disposition"].startswith('attachment; filename="audit-')
        rows = read_csv(response)
        assert [r["action"] for r in rows] == [
            "request",
            "approve",
            "TransferCertificate",
            "mark_accepted",
        ]
        aws_row = rows[2]
        pending = world["pending"]
        assert aws_row["source_account"] == SOURCE and aws_row["target_account"] == TARGET
        assert aws_row["transfer"] == str(pending.pk) and aws_row["kind"] == "aws"
        assert json.loads(aws_row["details"]) == {
            "params": {"certificateId": pending.certificate_id}
        }
        assert aws_row["ok"] == "True" and aws_row["time"].startswith(str(NOW.year))

    def test_it_applies_the_filters(self, client, requester, world):
        client.force_login(requester)
        rows = read_csv(client.get(self.url, {"user": "approver"}))
        assert [r["action"] for r in rows] == ["approve"]

    def test_a_cell_a_spreadsheet_would_run_is_quoted(self, client, requester, world):
        client.force_login(requester)
        rows = read_csv(client.get(self.url, {"action": "mark_accepted"}))
        assert rows[0]["actor"] == "'=HYPERLINK(1)"

    def test_it_comes_in_pieces_not_one_string(self, client, requester, world, monkeypatch):
        from transfers.views import audit

        monkeypatch.setattr(audit, "FLUSH", 200)
        for n in range(40):
            event(world["requested"], f"note-{n}")
        client.force_login(requester)
        pieces = list(client.get(self.url).streaming_content)
        assert len(pieces) > 5
        assert sum(1 for line in b"".join(pieces).splitlines()) == 45

    def test_wrong_method(self, client, requester):
        client.force_login(requester)
        assert client.post(self.url).status_code == 405


# ----------------------------------------------------------------------------- health


@pytest.fixture
def staff(db) -> User:
    return User.objects.create_user("ops", "ops@example.com", "pw", is_staff=True)


@pytest.fixture
def healthy(db, settings, tmp_path, standin):
    """Database, the in-memory broker of the unit tests, a fresh heartbeat, the stand-in."""
    settings.VAR_DIR = tmp_path
    health.record_heartbeat()
    return settings


class TestHealth:
    url = reverse("health")

    def test_healthy_anyone_gets_200_and_only_the_status(self, client, healthy):
        response = client.get(self.url)
        assert response.status_code == 200 and response.json() == {"status": "ok"}
        assert "no-cache" in response["Cache-Control"]

    def test_staff_see_each_check(self, client, healthy, staff):
        client.force_login(staff)
        checks = client.get(self.url).json()["checks"]
        assert set(checks) == {"database", "broker", "worker", "aws"}
        assert all(c["ok"] for c in checks.values()), checks
        assert checks["aws"]["detail"].startswith("account ")

    def test_the_metrics_token_shows_the_checks_too(self, client, healthy):
        healthy.METRICS_TOKEN = "t0ken"
        response = client.get(self.url, headers={"Authorization": "Bearer t0ken"})
        assert "checks" in response.json()

    def test_a_plain_user_sees_only_the_status(self, client, healthy, requester):
        client.force_login(requester)
        assert client.get(self.url).json() == {"status": "ok"}

    def test_unreachable_aws_is_503(self, client, healthy, staff):
        healthy.AWS_ENDPOINT_URL = "http://127.0.0.1:9"
        client.force_login(staff)
        response = client.get(self.url)
        body = response.json()
        assert response.status_code == 503 and body["status"] == "error"
        assert not body["checks"]["aws"]["ok"] and body["checks"]["database"]["ok"]
        client.logout()
        assert client.get(self.url).json() == {"status": "error"}

    def test_an_unreachable_redis_broker_is_503(self, client, healthy, staff):
        celery_app.conf.broker_url = "redis://127.0.0.1:9/0"  # restored by _eager_celery
        client.force_login(staff)
        response = client.get(self.url)
        assert response.status_code == 503
        assert not response.json()["checks"]["broker"]["ok"]

    def test_a_missing_filesystem_broker_folder_is_503(
        self, client, healthy, staff, tmp_path, monkeypatch
    ):
        celery_app.conf.broker_url = "filesystem://localhost//"
        monkeypatch.setitem(
            celery_app.conf,
            "broker_transport_options",
            {"data_folder_in": str(tmp_path / "gone"), "data_folder_out": str(tmp_path)},
        )
        client.force_login(staff)
        checks = client.get(self.url).json()["checks"]
        assert not checks["broker"]["ok"] and "data_folder_in" in checks["broker"]["detail"]

    def test_a_stale_or_missing_heartbeat_is_503(self, client, healthy, staff):
        client.force_login(staff)
        health.record_heartbeat(time.time() - healthy.HEARTBEAT_MAX_AGE - 5)
        response = client.get(self.url)
        assert response.status_code == 503
        assert "last heartbeat" in response.json()["checks"]["worker"]["detail"]
        (healthy.VAR_DIR / "heartbeat").unlink()
        assert "no heartbeat yet" in client.get(self.url).json()["checks"]["worker"]["detail"]

    def test_the_heartbeat_task_records_now(self, healthy):
        (healthy.VAR_DIR / "heartbeat").unlink()
        tasks.heartbeat.delay()
        assert time.time() - health.last_heartbeat() < 5

    def test_with_redis_the_heartbeat_is_a_shared_key(self, settings, monkeypatch):
        stored = {}

        class FakeRedis:
            def set(self, key, value, ex=None):
                stored[key] = value.encode()

            def get(self, key):
                return stored.get(key)

        settings.REDIS_URL = "redis://redis:6379/0"
        monkeypatch.setattr(health, "_redis", FakeRedis)
        health.record_heartbeat(1234.5)
        assert stored == {health.HEARTBEAT_KEY: b"1234.500"}
        assert health.last_heartbeat() == 1234.5

    def test_the_beat_schedule_sends_the_heartbeat(self, settings):
        entry = settings.CELERY_BEAT_SCHEDULE["heartbeat"]
        assert entry["task"] == tasks.heartbeat.name and entry["schedule"] == 30.0

    def test_probes_may_use_head_but_not_post(self, client, healthy):
        assert client.head(self.url).status_code == 200
        assert client.post(self.url).status_code == 405


# ----------------------------------------------------------------------------- metrics


class TestMetrics:
    url = reverse("metrics")

    def test_anonymous_gets_401(self, client, db):
        response = client.get(self.url)
        assert response.status_code == 401 and response["WWW-Authenticate"].startswith("Bearer")

    def test_a_wrong_or_unset_token_gets_401(self, client, settings, db):
        settings.METRICS_TOKEN = ""
        assert client.get(self.url, headers={"Authorization": "Bearer "}).status_code == 401
        settings.METRICS_TOKEN = "right"
        assert client.get(self.url, headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert client.get(self.url, headers={"Authorization": "Basic right"}).status_code == 401

    def test_a_user_who_is_not_staff_gets_403(self, client, requester):
        client.force_login(requester)
        assert client.get(self.url).status_code == 403

    def test_staff_see_gauges_by_state_and_the_request_metrics(self, client, staff, world):
        Notice.objects.create(
            transfer=world["pending"], channel="email", recipient="a@b.example", kind="new"
        )
        client.force_login(staff)
        response = client.get(self.url)
        body = response.content.decode()
        assert response.status_code == 200 and response["Content-Type"].startswith("text/plain")
        # Gauges count every account: metrics are for operators, not scoped to a user.
        assert 'portal_transfers{state="pending_acceptance"} 2.0' in body
        assert 'portal_transfers{state="accepted"} 2.0' in body
        assert 'portal_transfers{state="failed"} 0.0' in body
        assert 'portal_notices{state="pending"} 1.0' in body
        assert 'portal_certificates{status="ACTIVE"} 4.0' in body
        assert "django_http_requests_total_by_method_total" in body

    def test_the_bearer_token_lets_prometheus_in(self, client, settings, db):
        settings.METRICS_TOKEN = "s3cret-token"
        response = client.get(self.url, headers={"Authorization": "Bearer s3cret-token"})
        assert response.status_code == 200 and "portal_transfers" in response.content.decode()


# ----------------------------------------------------------------------------- request ids


class TestRequestId:
    def test_every_response_has_one(self, client, db):
        response = client.get(reverse("login"))
        assert request_id.valid(response["X-Request-ID"])

    def test_a_valid_incoming_id_is_kept_and_a_bad_one_replaced(self, client, db):
        kept = client.get(reverse("login"), headers={"X-Request-ID": "lb-1234abcd.5"})
        assert kept["X-Request-ID"] == "lb-1234abcd.5"
        for bad in ("short", "x" * 200, "abc def ghi", "id\r\nSet-Cookie: a=b"):
            replaced = client.get(reverse("login"), headers={"X-Request-ID": bad})
            assert replaced["X-Request-ID"] != bad and request_id.valid(replaced["X-Request-ID"])

    def test_json_logs_carry_it(self):
        record = logging.LogRecord("x", logging.INFO, __file__, 1, "hello %s", ("you",), None)
        record.request_id = "abcdef123456"
        line = json.loads(request_id.JsonFormatter().format(record))
        assert line["message"] == "hello you" and line["request_id"] == "abcdef123456"

    def test_log_format_is_strictly_parsed(self, monkeypatch):
        monkeypatch.setenv("LOG_FORMAT", "xml")
        with pytest.raises(ImproperlyConfigured, match="LOG_FORMAT must be plain or json"):
            runpy.run_path(str(Path(__file__).resolve().parents[1] / "portal" / "settings.py"))


@pytest.fixture
def failing_sync(monkeypatch):
    """A sync that fails inside the task, so the task itself writes a log record."""

    def boom(run, progress):
        raise RuntimeError("boom")

    monkeypatch.setattr(inventory, "_sync", boom)


@pytest.fixture
def captured(caplog):
    caplog.handler.addFilter(request_id.RequestIdFilter())
    caplog.set_level(logging.INFO)
    return caplog


def _task_records(caplog) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "transfers.inventory"]


@pytest.mark.django_db(transaction=True)  # on_commit runs inside the request, as in production
def test_a_task_run_inline_logs_with_the_request_id(client, failing_sync, captured):
    source = make_user_with_source()
    client.force_login(source["user"])
    response = client.post(reverse("account_sync", args=[source["account"].pk]))
    records = _task_records(captured)
    assert records and {r.request_id for r in records} == {response["X-Request-ID"]}


@pytest.mark.django_db(transaction=True)
def test_a_worker_restores_the_request_id_from_the_task_headers(client, failing_sync, captured):
    """The real path: the request publishes the task, the message carries the id in its
    headers, and a worker running it in a fresh context logs with that id."""
    from celery.worker.request import Request

    celery_app.conf.task_always_eager = False  # restored by _eager_celery
    with celery_app.connection_for_read() as conn:
        conn.SimpleQueue("celery").clear()  # the in-memory broker is shared by the process
    source = make_user_with_source()
    client.force_login(source["user"])
    response = client.post(
        reverse("account_sync", args=[source["account"].pk]),
        headers={"X-Request-ID": "req-from-the-balancer"},
    )
    assert response["X-Request-ID"] == "req-from-the-balancer"
    assert not _task_records(captured)  # not run yet: it is in the broker

    with celery_app.connection_for_read() as conn:
        message = conn.SimpleQueue("celery").get(timeout=1)
        assert message.headers["request_id"] == "req-from-the-balancer"
        task = celery_app.tasks[message.headers["task"]]
        # A worker shares nothing with the web process: run it in a fresh context.
        contextvars.Context().run(Request(message, app=celery_app, task=task).execute)

    records = _task_records(captured)
    assert records and {r.request_id for r in records} == {"req-from-the-balancer"}
    assert request_id.get() is None


def make_user_with_source() -> dict:
    from tests.conftest import make_account

    account = make_account(SOURCE, "Fleet production")
    return {"account": account, "user": make_user("syncer", (account, Role.REQUESTER))}


# ----------------------------------------------------------------------------- admin


class TestAdmin:
    @pytest.fixture
    def superuser(self, db) -> User:
        return User.objects.create_superuser("root", "root@example.com", "pw")

    def test_transfers_events_and_notices_are_read_only_pages(self, client, superuser, world):
        Notice.objects.create(
            transfer=world["pending"], channel="email", recipient="a@b.example", kind="new"
        )
        client.force_login(superuser)
        for model in ("transfer", "transferevent", "notice"):
            assert client.get(reverse(f"admin:transfers_{model}_changelist")).status_code == 200
            assert client.get(reverse(f"admin:transfers_{model}_add")).status_code == 403
        page = client.get(reverse("admin:transfers_transfer_change", args=[world["pending"].pk]))
        body = page.content.decode()
        assert page.status_code == 200 and "TransferCertificate" in body
        assert 'name="_save"' not in body  # nothing to save: it is a view
        events = client.get(reverse("admin:transfers_transferevent_changelist"), {"kind": "aws"})
        assert "TransferCertificate" in events.content.decode()

    def test_accounts_users_and_groups_show_the_roles(self, client, superuser, requester, source):
        client.force_login(superuser)
        account = client.get(reverse("admin:transfers_awsaccount_changelist")).content.decode()
        assert f"ops@{SOURCE}.example" in account  # the notice contacts column
        user = client.get(reverse("admin:auth_user_change", args=[requester.pk]))
        assert user.status_code == 200 and "Fleet production" in user.content.decode()
        assert client.get(reverse("admin:auth_group_changelist")).status_code == 200
