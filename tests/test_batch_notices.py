"""Notices at batch scale: each recipient hears once per batch (email with the ids as a CSV,
one webhook event with the ids, one Slack message), reminders and outcomes too; outcome
texts say "put back" only when something was. Real receivers on loopback."""

import csv
import io
import json
import threading
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest
import time_machine
from django.core import mail
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from tests.conftest import TARGET, add_certificate, committed, iot_for, make_user
from tests.services.conftest import free_port
from tests.test_notices import Inbox, Receiver
from transfers import batches, inventory, notices, workflow
from transfers.models import Certificate, Notice, Role, Transfer
from transfers.workflow import Options

N = 5


class SlackReceiver:
    """Stands in for hooks.slack.com on loopback: takes JSON, answers "ok" like Slack."""

    def __init__(self):
        self.posts, self.headers = [], []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                body = self.rfile.read(int(self.headers["content-length"]))
                receiver.headers.append(dict(self.headers))
                receiver.posts.append(json.loads(body))
                self.send_response(200)
                self.send_header("content-type", "text/plain")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args):
                pass

        self.server = HTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/services/T0/B0/x"
        threading.Thread(target=self.server.serve_forever, args=(0.01,), daemon=True).start()

    def close(self):
        self.server.shutdown()


@pytest.fixture
def slack(target, settings):
    settings.WEBHOOK_ALLOW_PRIVATE = True  # the receiver is on loopback
    hook = SlackReceiver()
    target.slack_webhook_url = hook.url
    target.save()
    yield hook
    hook.close()


@pytest.fixture
def smtp_inbox(settings):
    from aiosmtpd.controller import Controller

    inbox = Inbox()
    controller = Controller(inbox, hostname="127.0.0.1", port=free_port())
    controller.start()
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT = "127.0.0.1", controller.port
    yield inbox
    controller.stop()


@pytest.fixture
def webhook(target, settings):
    settings.WEBHOOK_ALLOW_PRIVATE = True  # the receiver is on loopback
    target.webhook_secret = notices.new_webhook_secret()
    hook = Receiver(target.webhook_secret)
    target.webhook_url = hook.url
    target.save()
    yield hook
    hook.close()


@pytest.fixture
def fleet(standin, source, target, requester, approver):
    requester.email, approver.email = "req@fleet.example", "app@fleet.example"
    requester.save()
    approver.save()
    target.contact_emails = "iot@acme.example\nsec@acme.example"
    target.save()
    iot = iot_for(source)
    made = [add_certificate(iot, "ACTIVE", ["DevicePublish"], thing=f"s-{i}") for i in range(N)]
    inventory.sync_region(inventory.queue_sync(source, "us-east-1")[0].pk)
    return {
        "iot": iot,
        "ids": sorted(m["certificateId"] for m in made),
        "carol": make_user("carol", (target, Role.ADMIN)),
    }


def pending_batch(fleet, requester, approver, message="Fleet <b>A</b> & co"):
    certs, missing = batches.select(requester, fleet["ids"])
    batch = batches.request_batch(
        requester,
        certs,
        missing,
        target_account_id=TARGET,
        message=message,
        reason="Sale",
        options=Options(),
    )
    assert committed(batches.approve, approver, batch, "ok") == N
    assert batches.progress(batch)["pending"] == N
    return batch


def ids_in_csv(text: str) -> list[str]:
    rows = list(csv.DictReader(io.StringIO(text)))
    return sorted(r["certificate_id"] for r in rows)


def test_each_recipient_gets_one_email_for_the_batch_with_the_ids_as_csv(
    fleet, requester, approver
):
    batch = pending_batch(fleet, requester, approver)
    assert sorted(m.to[0] for m in mail.outbox) == ["iot@acme.example", "sec@acme.example"]
    message = mail.outbox[0]
    assert message.subject == (
        f"{N} certificate transfers to account {TARGET} are waiting for you (batch #{batch.pk})"
    )
    body = message.body
    # The email gives the earliest expiry (the transfers may straddle a minute).
    first = min(batch.transfers.all(), key=lambda t: t.expires_at)
    for needed in (
        f"{N} AWS IoT certificates are being transferred",
        "111111111111 (Fleet production), region us-east-1",
        "Fleet <b>A</b> & co",
        f"{timezone.localtime(first.expires_at):%Y-%m-%d %H:%M} UTC",
        f"/batches/{batch.pk}/",  # the target is managed: its admins open the batch
        f"tail -n +2 batch-{batch.pk}-certificates.csv | cut -d, -f1 | while read -r id; do",
        'aws iot accept-certificate-transfer --certificate-id "$id" --set-as-active',
        'aws iot reject-certificate-transfer --certificate-id "$id" --reject-reason',
    ):
        assert needed in body, needed
    assert "requester" not in body and "approver" not in body  # the source's (access)
    html = message.alternatives[0][0]
    assert "Fleet &lt;b&gt;A&lt;/b&gt; &amp; co" in html and "<b>A</b>" not in html
    [(name, content, mimetype)] = message.attachments
    assert name == f"batch-{batch.pk}-certificates.csv" and mimetype == "text/csv"
    assert ids_in_csv(content) == fleet["ids"]
    # Every transfer's own notices were held and carried by the batch's two.
    carried = Notice.objects.filter(batch=batch, transfer__isnull=False)
    assert carried.count() == 2 * N
    assert set(carried.values_list("status", flat=True)) == {"batched"}
    sent = Notice.objects.filter(batch=batch, transfer__isnull=True)
    assert sorted(sent.values_list("status", flat=True)) == ["sent", "sent"]
    assert all(n.items.count() == N for n in sent)


def test_a_real_smtp_server_receives_the_csv_attachment(fleet, requester, approver, smtp_inbox):
    batch = pending_batch(fleet, requester, approver)
    assert len(smtp_inbox.messages) == 2
    received = smtp_inbox.messages[0]
    [attachment] = list(received.iter_attachments())
    assert attachment.get_filename() == f"batch-{batch.pk}-certificates.csv"
    assert ids_in_csv(attachment.get_content()) == fleet["ids"]
    assert f"/batches/{batch.pk}/" in received.get_body(("plain",)).get_content()


def test_the_webhook_gets_one_signed_event_with_the_ids(fleet, requester, approver, webhook):
    hook = webhook
    batch = pending_batch(fleet, requester, approver)
    assert len(hook.accepted) == 1 and hook.refused == []
    event = hook.accepted[0]
    assert event["type"] == "certificate_transfer_batch.new"
    assert event["batch"]["id"] == batch.pk and event["batch"]["count"] == N
    assert sorted(t["certificate_id"] for t in event["batch"]["transfers"]) == fleet["ids"]
    assert {t["id"] for t in event["batch"]["transfers"]} == set(
        batch.transfers.values_list("pk", flat=True)
    )


def test_a_receiver_may_ask_for_an_event_per_transfer(fleet, requester, approver, webhook, target):
    hook = webhook
    target.webhook_per_transfer = True
    target.save()
    pending_batch(fleet, requester, approver)
    assert len(hook.accepted) == N
    assert {e["type"] for e in hook.accepted} == {"certificate_transfer.new"}
    assert sorted(e["transfer"]["certificate_id"] for e in hook.accepted) == fleet["ids"]
    assert len(mail.outbox) == 2  # email still speaks per batch


def test_slack_gets_one_message_in_its_format(fleet, requester, approver, slack):
    batch = pending_batch(fleet, requester, approver)
    assert len(slack.posts) == 1
    post = slack.posts[0]
    assert post["text"].startswith(f"{N} certificate transfers to account {TARGET}")
    section, fields, link = post["blocks"]
    assert section["type"] == "section" and section["text"]["type"] == "mrkdwn"
    shown = {f["text"].split("\n")[0]: f["text"].split("\n")[1] for f in fields["fields"]}
    assert shown["*Certificates*"] == str(N)
    assert shown["*Message*"] == "Fleet &lt;b&gt;A&lt;/b&gt; &amp; co"  # Slack's escaping
    assert link["text"]["text"].endswith(f"/batches/{batch.pk}/|Open in the portal>")
    assert slack.headers[0]["content-type"] == "application/json"
    assert slack.headers[0]["webhook-id"].startswith("notice_")
    # Posted to the account's URL, kept encrypted there; the notice names whose channel.
    [sent] = Notice.objects.filter(channel=Notice.Channel.SLACK, batch=batch, transfer=None)
    assert sent.recipient == f"Slack channel of {TARGET}" and sent.status == "sent"
    assert not Notice.objects.filter(recipient__contains="/services/").exists()


def test_a_single_transfer_notice_stays_as_it_was(fleet, requester, approver, slack):
    cert = Certificate.objects.get(certificate_id=fleet["ids"][0])
    transfer = workflow.request_transfer(
        requester, cert, target_account_id=TARGET, message="m", reason="r", options=Options()
    )
    committed(workflow.approve, approver, transfer.pk)
    assert len(mail.outbox) == 2 and mail.outbox[0].attachments == []
    assert mail.outbox[0].subject == (
        f"A certificate transfer to account {TARGET} is waiting for you"
    )
    assert len(slack.posts) == 1 and cert.certificate_id in json.dumps(slack.posts[0])


def slack_notice(fleet, requester) -> Notice:
    """A batch's Slack notice, made and not sent yet."""
    batch = batches.request_batch(
        requester,
        *batches.select(requester, fleet["ids"][:1]),
        target_account_id=TARGET,
        message="m",
        reason="r",
        options=Options(),
    )
    return Notice.objects.create(
        batch=batch,
        channel=Notice.Channel.SLACK,
        recipient=notices.slack_recipient(TARGET),
        kind=Notice.Kind.NEW,
    )


def test_a_slack_notice_goes_to_the_url_the_account_has_when_it_is_sent(
    fleet, requester, slack, target
):
    notice = slack_notice(fleet, requester)
    moved = SlackReceiver()  # the channel's URL is replaced before the notice goes
    try:
        target.slack_webhook_url = moved.url
        target.save()
        assert notices.send(notice.pk) == "sent"
        assert slack.posts == [] and len(moved.posts) == 1
    finally:
        moved.close()


def test_a_slack_notice_fails_when_the_account_no_longer_has_a_url(fleet, requester, slack, target):
    notice = slack_notice(fleet, requester)
    target.slack_webhook_url = ""
    target.save()
    with pytest.raises(notices.DeliveryError, match="no Slack incoming webhook"):
        notices.send(notice.pk)
    assert slack.posts == []


def test_outcomes_are_one_per_batch_and_say_what_was_put_back(fleet, requester, approver):
    batch = pending_batch(fleet, requester, approver)
    mail.outbox.clear()
    done, errors = committed(batches.cancel_pending, requester, batch)
    assert done == N and errors == []
    told = sorted(m.to[0] for m in mail.outbox)
    assert told == sorted(
        ["iot@acme.example", "sec@acme.example", "req@fleet.example", "app@fleet.example"]
    )
    sent = {m.to[0]: m for m in mail.outbox}
    assert f"{N} transfers of batch #{batch.pk}" in sent["req@fleet.example"].subject
    body = sent["req@fleet.example"].body
    assert f"For {N} of them, what preparation removed is put back" in body
    assert "put back" not in sent["iot@acme.example"].body  # the source's (access)
    assert ids_in_csv(sent["iot@acme.example"].attachments[0][1]) == fleet["ids"]


def test_accepted_transfers_do_not_claim_anything_was_put_back(fleet, requester, approver):
    batch = pending_batch(fleet, requester, approver)
    mail.outbox.clear()
    for pk in batch.transfers.values_list("pk", flat=True):
        committed(workflow.accept, fleet["carol"], pk)
    assert sorted(m.to[0] for m in mail.outbox) == ["app@fleet.example", "req@fleet.example"]
    body = mail.outbox[0].body
    assert f"{N} transfers of batch #{batch.pk}" in body and "were accepted" in body
    assert "put back" not in body


def test_a_single_accepted_or_failed_transfer_says_nothing_was_put_back(fleet, requester, approver):
    cert = Certificate.objects.get(certificate_id=fleet["ids"][0])
    transfer = workflow.request_transfer(
        requester, cert, target_account_id=TARGET, message="m", reason="r", options=Options()
    )
    committed(workflow.approve, approver, transfer.pk)
    mail.outbox.clear()
    committed(workflow.accept, fleet["carol"], transfer.pk)
    assert {m.to[0] for m in mail.outbox} == {"req@fleet.example", "app@fleet.example"}
    assert all("put back" not in m.body for m in mail.outbox)
    # A failure before preparation removed anything: nothing to put back, and none claimed.
    other = Certificate.objects.get(certificate_id=fleet["ids"][1])
    failed = workflow.request_transfer(
        requester, other, target_account_id=TARGET, message="m", reason="r", options=Options()
    )
    fleet["iot"].update_certificate(certificateId=other.certificate_id, newStatus="REVOKED")
    mail.outbox.clear()
    committed(workflow.approve, approver, failed.pk)
    failed.refresh_from_db()
    assert failed.status == Transfer.Status.FAILED
    assert mail.outbox and all("put back" not in m.body for m in mail.outbox)


def test_a_rejected_transfer_says_it_was_put_back(fleet, requester, approver):
    cert = Certificate.objects.get(certificate_id=fleet["ids"][0])
    transfer = workflow.request_transfer(
        requester, cert, target_account_id=TARGET, message="m", reason="r", options=Options()
    )
    committed(workflow.approve, approver, transfer.pk)
    mail.outbox.clear()
    committed(workflow.reject, fleet["carol"], transfer.pk, "not ours")
    transfer.refresh_from_db()
    assert transfer.restore_state == Transfer.Restore.DONE
    bodies = [m.body for m in mail.outbox]
    # The notice goes out as the restore starts (both after the same commit).
    assert bodies and all(
        "What preparation removed is being put back" in b
        or "What preparation removed was put back" in b
        for b in bodies
    )


def test_reminders_wait_for_the_quiet_period_then_go_once_per_batch(
    fleet, requester, approver, settings
):
    settings.TRANSFER_REMINDER_HOURS = 48
    batch = pending_batch(fleet, requester, approver)
    expires = batch.transfers.order_by("pending_since").first().expires_at
    mail.outbox.clear()
    with time_machine.travel(expires - timedelta(hours=47)):
        committed(notices.send_reminders)
        assert mail.outbox == []  # held: the batch's other reminders may still come
        held = Notice.objects.filter(batch=batch, kind="reminder", status="held")
        assert held.count() == 2 * N
        assert committed(notices.flush_batches) == 0  # not quiet yet
    with time_machine.travel(expires - timedelta(hours=47) + notices.QUIET + timedelta(seconds=5)):
        assert committed(notices.flush_batches) == 2
        assert committed(notices.flush_batches) == 0  # nothing left held
        committed(notices.send_reminders)  # beat again: each transfer was reminded once
        assert committed(notices.flush_batches) == 0
    assert sorted(m.to[0] for m in mail.outbox) == ["iot@acme.example", "sec@acme.example"]
    assert mail.outbox[0].subject.startswith(f"Reminder: {N} certificate transfers")
    assert ids_in_csv(mail.outbox[0].attachments[0][1]) == fleet["ids"]


def test_the_beat_sends_held_notices_through_resend_stale(fleet, requester, approver, settings):
    settings.TRANSFER_REMINDER_HOURS = 48
    batch = pending_batch(fleet, requester, approver)
    expires = batch.transfers.first().expires_at
    mail.outbox.clear()
    with time_machine.travel(expires - timedelta(hours=47)):
        committed(notices.send_reminders)
    with time_machine.travel(expires - timedelta(hours=47) + notices.MAX_HOLD):
        committed(notices.resend_stale)
    assert len(mail.outbox) == 2


def test_two_flushes_at_once_send_each_held_notice_once(fleet, requester, approver):
    batch = pending_batch(fleet, requester, approver)
    first = batch.transfers.order_by("pk").first()
    Notice.objects.filter(batch=batch).delete()
    with time_machine.travel(timezone.now() + timedelta(seconds=1)):
        notices.create(first, Notice.Kind.REMINDER)
    later = timezone.now() + notices.QUIET + timedelta(seconds=5)
    a = notices.flush_batch(batch.pk, now=later)
    b = notices.flush_batch(batch.pk, now=later)
    assert len(a) == 2 and b == []
    assert Notice.objects.filter(batch=batch, transfer__isnull=True).count() == 2


def test_while_transfers_are_in_flight_the_check_after_each_reads_only_the_kind_s_oldest(
    fleet, requester, approver
):
    """The check after each transition must not aggregate every held notice of the kind it
    added (they grow with the batch): it reads that kind's oldest, for MAX_HOLD; the other
    kinds' groups still go out when quiet."""
    batch = pending_batch(fleet, requester, approver)
    Notice.objects.filter(batch=batch).delete()
    first, second, third = batch.transfers.order_by("pk")[:3]
    Transfer.objects.filter(pk=first.pk).update(status=Transfer.Status.APPROVED)  # in flight
    start = timezone.now()
    with time_machine.travel(start):
        notices.create(third, Notice.Kind.FAILED)  # held for the requester and the approver
    with time_machine.travel(start + notices.QUIET):
        notices.create(second, Notice.Kind.NEW)  # held for the target's two contacts
    quiet = start + notices.QUIET + timedelta(seconds=1)  # FAILED is quiet, NEW is not
    with CaptureQueriesContext(connection) as queries:
        made = notices.flush_batch(batch.pk, added=Notice.Kind.NEW, now=quiet)
    assert {n.kind for n in Notice.objects.filter(pk__in=made)} == {Notice.Kind.FAILED}
    assert len(made) == 2
    grouped = [q["sql"] for q in queries if "GROUP BY" in q["sql"]]
    assert len(grouped) == 1 and "'failed'" in grouped[0] and "'new'" not in grouped[0]
    oldest = [q["sql"] for q in queries if "MIN(" in q["sql"] and "GROUP BY" not in q["sql"]]
    assert len(oldest) == 1 and "'new'" in oldest[0]
    # At MAX_HOLD the kind goes out even though transfers may still add to it.
    held_at = start + notices.QUIET
    assert notices.flush_batch(batch.pk, added=Notice.Kind.NEW, now=held_at) == []
    made = notices.flush_batch(batch.pk, added=Notice.Kind.NEW, now=held_at + notices.MAX_HOLD)
    assert len(made) == 2
    assert {n.kind for n in Notice.objects.filter(pk__in=made)} == {Notice.Kind.NEW}


def test_the_slack_url_is_set_like_the_other_contacts(db, monkeypatch):
    import socket

    from transfers.forms import AccountForm

    # The form checks where the URL resolves to: a stubbed resolver, no DNS query.
    def resolve(host, port, *args, **kwargs):
        assert host == "hooks.slack.com"
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("52.1.2.3", port))]

    monkeypatch.setattr(socket, "getaddrinfo", resolve)

    data = {
        "account_id": "555555555555",
        "name": "Partner Ltd",
        "managed": "",
        "regions": "",
        "api_rate": "10",
        "contact_emails": "ops@partner.example",
        "slack_webhook_url": "https://hooks.slack.com/services/T0/B0/secret",
        "webhook_per_transfer": "on",
    }
    form = AccountForm(data)
    assert form.is_valid(), form.errors
    account = form.save()
    assert account.slack_webhook_url.startswith("https://hooks.slack.com/")
    assert account.webhook_per_transfer
    bad = AccountForm({**data, "account_id": "666666666666", "slack_webhook_url": "not a url"})
    assert not bad.is_valid() and "slack_webhook_url" in bad.errors
    # The URL is the secret: never over plain http.
    plain = "http://hooks.slack.com/services/T0/B0/secret"
    bad = AccountForm({**data, "account_id": "666666666666", "slack_webhook_url": plain})
    assert not bad.is_valid() and "https://" in bad.errors["slack_webhook_url"][0]


def test_when_the_last_one_fails_the_others_are_announced_at_once(fleet, requester, approver):
    certs, missing = batches.select(requester, fleet["ids"])
    batch = batches.request_batch(
        requester,
        certs,
        missing,
        target_account_id=TARGET,
        message="m",
        reason="Sale",
        options=Options(),
    )
    last = batch.transfers.order_by("pk").last()  # the feeder hands them out in pk order
    fleet["iot"].update_certificate(certificateId=last.certificate_id, newStatus="REVOKED")
    committed(batches.approve, approver, batch, "ok")
    last.refresh_from_db()
    assert last.status == Transfer.Status.FAILED
    waiting = [m for m in mail.outbox if "waiting for you" in m.subject]
    assert sorted(m.to[0] for m in waiting) == ["iot@acme.example", "sec@acme.example"]
    assert waiting[0].subject.startswith(f"{N - 1} certificate transfers")
    assert last.certificate_id not in waiting[0].attachments[0][1]
    failed = [m for m in mail.outbox if m.subject.endswith("failed")]
    assert sorted(m.to[0] for m in failed) == ["app@fleet.example", "req@fleet.example"]
    assert failed[0].subject.startswith(f"1 transfer of batch #{batch.pk} to account")
    assert last.certificate_id in failed[0].attachments[0][1]


def test_expiry_is_one_notice_per_recipient_for_the_batch(fleet, requester, approver):
    batch = pending_batch(fleet, requester, approver)
    latest = max(t.expires_at for t in batch.transfers.all())
    mail.outbox.clear()
    with time_machine.travel(latest + timedelta(minutes=1)):
        due = workflow.due_for_expiry()
        assert sorted(due) == sorted(batch.transfers.values_list("pk", flat=True))
        for pk in due:
            assert committed(workflow.expire, pk) == "expired"
    told = sorted(m.to[0] for m in mail.outbox)
    assert told == sorted(
        ["iot@acme.example", "sec@acme.example", "req@fleet.example", "app@fleet.example"]
    )
    message = mail.outbox[0]
    assert message.subject == (
        f"{N} transfers of batch #{batch.pk} to account {TARGET} expired and were cancelled"
    )
    assert "Nobody accepted them in time" in message.body
    assert ids_in_csv(message.attachments[0][1]) == fleet["ids"]
