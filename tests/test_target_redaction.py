"""Every page, partial, export and email that shows a transfer goes through transfers.access: a
user whose only role is on the target account sees what concerns the target, never the
source's reason, comments, errors, people or timeline. Each check is made twice: as the
target-only user (the secret is absent) and as the source's requester (it is there)."""

from __future__ import annotations

import csv
import io

import pytest
from django.core import mail
from django.urls import reverse
from django.utils import timezone

from tests.conftest import make_user
from transfers import messages, notices
from transfers.models import Notice, Role, Transfer, TransferBatch, TransferEvent

REASON = "Internal: customer 42 owes us money"
COMMENT = "Approved after the call with legal"
ERROR = "AccessDeniedException: not authorized on policy Secret-Fleet-Policy"
STEP_ERROR = "ThrottlingException-from-DetachPolicy"
SKIPPED_ID = "5c" * 32
SECRETS = [REASON, COMMENT, ERROR, STEP_ERROR]


@pytest.fixture
def batch(source, requester, approver):
    return TransferBatch.objects.create(
        source=source,
        region="us-east-1",
        target_account_id="222222222222",
        requester=requester,
        reason=REASON,
        message="Devices sold to Acme",
        approver=approver,
        decision_comment=COMMENT,
        decided_at=timezone.now(),
        skipped=[{"certificate_id": SKIPPED_ID, "reason": "not in the inventory"}],
    )


def _transfer(batch, target, n, **fields) -> Transfer:
    cert = f"{n:02x}" * 32
    return Transfer.objects.create(
        batch=batch,
        source=batch.source,
        region="us-east-1",
        certificate_id=cert,
        certificate_arn=f"arn:aws:iot:us-east-1:111111111111:cert/{cert}",
        target_account_id=target.account_id,
        target=target,
        requester=batch.requester,
        approver=batch.approver,
        reason=REASON,
        decision_comment=COMMENT,
        message="Devices sold to Acme",
        **fields,
    )


def _event(transfer, action, by, kind=TransferEvent.Kind.TRANSITION, **fields):
    TransferEvent.objects.create(
        transfer=transfer,
        kind=kind,
        action=action,
        actor=by,
        actor_name=by.username if by else "worker",
        **fields,
    )


@pytest.fixture
def pending(batch, target, requester, approver):
    """Waiting in the target's inbox, with the source's whole story in its timeline."""
    transfer = _transfer(
        batch,
        target,
        1,
        status=Transfer.Status.PENDING_ACCEPTANCE,
        pending_since=timezone.now(),
        transfer_date=timezone.now(),
        restore_state=Transfer.Restore.PARTIAL,
    )
    _event(transfer, "request", requester, to_status="requested", details={"reason": REASON})
    _event(
        transfer,
        "approve",
        approver,
        from_status="requested",
        to_status="approved",
        details={"comment": COMMENT},
    )
    _event(
        transfer,
        "DetachPolicy",
        None,
        kind=TransferEvent.Kind.AWS,
        ok=False,
        details={"error_code": STEP_ERROR, "error": "slow down"},
    )
    _event(transfer, "mark_pending", None, from_status="preparing", to_status="pending_acceptance")
    return transfer


@pytest.fixture
def failed(batch, target, approver):
    transfer = _transfer(
        batch,
        target,
        2,
        status=Transfer.Status.FAILED,
        error_code="AccessDeniedException",
        error_message=ERROR,
    )
    _event(
        transfer,
        "fail",
        None,
        from_status="preparing",
        to_status="failed",
        ok=False,
        details={"error": ERROR},
    )
    return transfer


@pytest.fixture
def carol(target, pending, failed):
    """Operates the target account; no role on the source. Her own action is hers to see."""
    user = make_user("carol", (target, Role.REQUESTER))
    _event(
        pending,
        "AcceptCertificateTransfer",
        user,
        kind=TransferEvent.Kind.AWS,
        ok=False,
        details={"error_code": "Throttling", "error": "carol-was-throttled"},
    )
    return user


def page(client, user, url, **params) -> str:
    client.force_login(user)
    response = client.get(url, params)
    assert response.status_code == 200
    return response.content.decode()


def partial(client, user, url) -> str:
    client.force_login(user)
    response = client.get(url, HTTP_HX_REQUEST="true")
    assert response.status_code == 200
    return response.content.decode()


def csv_export(client, user, **params) -> str:
    client.force_login(user)
    response = client.get(reverse("audit_export"), params)
    return b"".join(response.streaming_content).decode()


class TestAuditLog:
    @pytest.mark.parametrize("htmx", [False, True], ids=["page", "partial"])
    def test_the_target_side_sees_state_changes_and_its_own_actions(
        self, client, carol, pending, htmx
    ):
        url = reverse("audit_log")
        text = partial(client, carol, url) if htmx else page(client, carol, url)
        for secret in SECRETS:
            assert secret not in text
        assert "<td>approver</td>" not in text and "<td>requester</td>" not in text
        assert "DetachPolicy" not in text  # the source's AWS calls
        assert "preparing → pending_acceptance" in text  # states, without who or why
        assert "carol-was-throttled" in text  # its own action, whole

    def test_the_source_side_sees_everything(self, client, requester, carol):
        text = page(client, requester, reverse("audit_log"))
        for secret in SECRETS:
            assert secret in text
        assert "<td>approver</td>" in text and "DetachPolicy" in text

    def test_filters_find_nothing_the_target_side_may_not_see(self, client, carol, requester):
        for params in ({"user": "approver"}, {"action": "approve"}, {"action": "DetachPolicy"}):
            client.force_login(carol)
            assert client.get(reverse("audit_log"), params).context["page"].paginator.count == 0
            client.force_login(requester)
            assert client.get(reverse("audit_log"), params).context["page"].paginator.count == 1

    def test_the_csv_export_is_redacted_for_the_target_side(self, client, carol, pending):
        text = csv_export(client, carol)
        for secret in SECRETS:
            assert secret not in text
        rows = list(csv.DictReader(io.StringIO(text)))
        assert "approver" not in {r["actor"] for r in rows}
        assert "DetachPolicy" not in {r["action"] for r in rows}
        assert ("preparing", "pending_acceptance") in {
            (r["from_status"], r["to_status"]) for r in rows
        }
        assert "carol-was-throttled" in text

    def test_the_csv_export_is_whole_for_the_source_side(self, client, requester, carol):
        text = csv_export(client, requester)
        for secret in SECRETS:
            assert secret in text


class TestBatch:
    def test_the_target_side_sees_no_reason_comment_error_or_skipped_ids(
        self, client, carol, batch
    ):
        text = page(client, carol, batch.get_absolute_url())
        for secret in [*SECRETS, SKIPPED_ID, "by requester", "by approver"]:
            assert secret not in text
        assert "Devices sold to Acme" in text and "Pending acceptance" in text

    def test_the_source_side_sees_them(self, client, requester, carol, batch):
        text = page(client, requester, batch.get_absolute_url())
        for secret in [REASON, COMMENT, ERROR, SKIPPED_ID, "by requester", "by approver"]:
            assert secret in text

    def test_the_batch_list_hides_the_requester_from_the_target_side(
        self, client, carol, requester, batch
    ):
        assert "by requester" not in page(client, carol, reverse("batch_list"))
        assert "by requester" not in partial(client, carol, reverse("batch_list"))
        assert "by requester" in page(client, requester, reverse("batch_list"))
        client.force_login(carol)
        assert (
            client.get(reverse("batch_list"), {"requester": "requester"})
            .context["page"]
            .paginator.count
            == 0
        )


class TestLists:
    @pytest.mark.parametrize("name", ["transfer_list", "incoming"])
    @pytest.mark.parametrize("htmx", [False, True], ids=["page", "partial"])
    def test_the_target_side_sees_no_source_people_or_restore(
        self, client, carol, requester, pending, name, htmx
    ):
        url = reverse(name)
        text = partial(client, carol, url) if htmx else page(client, carol, url)
        assert f"#{pending.pk}</a>" in text
        for secret in ("by requester", "<td>approver</td>", "Restore incomplete"):
            assert secret not in text
        whole = partial(client, requester, url) if htmx else page(client, requester, url)
        if name == "transfer_list":  # the requester has no inbox on the target
            assert "by requester" in whole and "<td>approver</td>" in whole

    def test_the_requester_filter_finds_nothing_for_the_target_side(self, client, carol, requester):
        client.force_login(carol)
        found = client.get(reverse("transfer_list"), {"requester": "requester"}).context["page"]
        assert found.paginator.count == 0
        client.force_login(requester)
        found = client.get(reverse("transfer_list"), {"requester": "requester"}).context["page"]
        assert found.paginator.count == 2


class TestApprovals:
    def test_a_landing_to_approve_names_no_requester_to_the_target_side(
        self, client, source, target, pending
    ):
        Transfer.objects.filter(pk=pending.pk).update(landing_state=Transfer.Landing.PLANNED)
        tina = make_user("tina", (target, Role.APPROVER))
        text = page(client, tina, reverse("approvals"))
        assert f"#{pending.pk} " in text and "<td>requester</td>" not in text
        both = make_user("bo", (target, Role.APPROVER), (source, Role.VIEWER))
        assert "<td>requester</td>" in page(client, both, reverse("approvals"))


class TestOverview:
    def test_recent_activity_shows_the_target_side_states_and_its_own(
        self, client, carol, requester
    ):
        text = page(client, carol, reverse("home"))
        for secret in ("<td>approver</td>", "<td>requester</td>", "DetachPolicy", ">approve<"):
            assert secret not in text
        assert "AcceptCertificateTransfer" in text and "→ pending_acceptance" in text
        whole = page(client, requester, reverse("home"))
        assert "<td>approver</td>" in whole and "DetachPolicy" in whole


class TestEmails:
    """The target's contacts get new, reminder, cancelled and expired notices; the source's
    requester and approver get the outcomes (and the failure, with its error)."""

    @pytest.fixture
    def single(self, target, pending):
        pending.batch = None
        pending.save(update_fields=["batch"])
        return pending

    def rendered(self, transfer, kind, recipient) -> str:
        notice = Notice.objects.create(
            transfer=transfer, channel=Notice.Channel.EMAIL, recipient=recipient, kind=kind
        )
        out = messages.render(notice)
        return out["subject"] + out["text"] + out["html"]

    @pytest.mark.parametrize("kind", [Notice.Kind.NEW, Notice.Kind.REMINDER])
    def test_the_target_is_not_told_who_asked_or_approved(self, single, kind):
        text = self.rendered(single, kind, "ops@222222222222.example")
        for secret in [*SECRETS, "requester", "approver"]:
            assert secret not in text
        assert single.certificate_id in text and "Devices sold to Acme" in text
        # The same email addressed to the requester names them.
        assert "Requested by" in self.rendered(single, kind, "requester@example.com")

    @pytest.mark.parametrize("kind", [Notice.Kind.CANCELLED, Notice.Kind.EXPIRED])
    def test_the_target_is_not_told_about_the_source_restore(self, single, kind):
        Transfer.objects.filter(pk=single.pk).update(status=Transfer.Status.CANCELLED)
        single.refresh_from_db()
        to_target = self.rendered(single, kind, "ops@222222222222.example")
        assert "put back" not in to_target and "preparation" not in to_target
        to_requester = self.rendered(single, kind, "requester@example.com")
        assert "could only partly be put back" in to_requester

    def test_the_failure_with_its_error_goes_to_the_source_only(
        self, failed, django_capture_on_commit_callbacks
    ):
        failed.batch = None
        failed.save(update_fields=["batch"])
        with django_capture_on_commit_callbacks(execute=True):
            notices.create(failed, Notice.Kind.FAILED)
        told = {m.to[0]: m.body for m in mail.outbox}
        assert "ops@222222222222.example" not in told
        assert ERROR in told["requester@example.com"]

    def test_the_batch_email_to_the_target_names_no_source_people(self, pending, failed, batch):
        Notice.objects.create(
            transfer=pending,
            batch=batch,
            channel=Notice.Channel.EMAIL,
            recipient="ops@222222222222.example",
            kind=Notice.Kind.NEW,
            status=Notice.Status.HELD,
        )
        [pk] = notices.flush_batch(batch.pk, now=timezone.now() + notices.MAX_HOLD)
        out = messages.render(Notice.objects.get(pk=pk))
        text = out["subject"] + out["text"] + out["html"]
        for secret in [*SECRETS, "requester", "approver", SKIPPED_ID]:
            assert secret not in text
        assert "Devices sold to Acme" in text

    @pytest.mark.parametrize("channel", [Notice.Channel.WEBHOOK, Notice.Channel.SLACK])
    def test_the_targets_webhook_and_slack_name_no_source_people(
        self, single, pending, batch, channel
    ):
        """What the target's webhook and Slack channel get, one transfer or a batch: the
        message to the target, never who asked or approved in the source."""
        one = Notice.objects.create(
            transfer=single, channel=channel, recipient="https://hooks.example/t", kind="new"
        )
        Notice.objects.create(
            transfer=pending,
            batch=batch,
            channel=channel,
            recipient="https://hooks.example/batch",
            kind=Notice.Kind.NEW,
            status=Notice.Status.HELD,
        )
        [pk] = notices.flush_batch(batch.pk, now=timezone.now() + notices.MAX_HOLD)
        for notice in (one, Notice.objects.get(pk=pk)):
            text = messages.body_json(notice)
            for secret in [*SECRETS, "requester", "approver", SKIPPED_ID]:
                assert secret not in text
            assert "Devices sold to Acme" in text

    def test_the_batch_outcome_to_the_target_says_nothing_of_the_source_restore(
        self, pending, batch
    ):
        def outcome(recipient):
            notice = Notice.objects.create(
                batch=batch,
                channel=Notice.Channel.EMAIL,
                recipient=recipient,
                kind=Notice.Kind.CANCELLED,
            )
            Notice.objects.create(
                transfer=pending,
                batch=batch,
                channel=Notice.Channel.EMAIL,
                recipient=recipient,
                kind=Notice.Kind.CANCELLED,
                status=Notice.Status.BATCHED,
                digest=notice,
            )
            out = messages.render(notice)
            return out["text"] + out["html"]

        assert "put back" not in outcome("ops@222222222222.example")
        assert "put back in the source account" in outcome("requester@example.com")
