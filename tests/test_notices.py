"""Notices to the target account and the people concerned: email, signed webhooks,
reminders and expiry. A real SMTP server and a real HTTP receiver on loopback."""

import email
import json
import threading
from datetime import timedelta
from email import policy
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest
import time_machine
from aiosmtpd.controller import Controller
from django.core import mail
from django.urls import reverse
from django.utils import timezone
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from tests.conftest import TARGET, add_certificate, committed, iot_for, make_user
from tests.services.conftest import free_port
from transfers import inventory, messages, notices, workflow
from transfers.models import Certificate, Notice, Role, Transfer
from transfers.workflow import Options


@pytest.fixture
def world(standin, source, target, requester, approver):
    requester.email, approver.email = "req@fleet.example", "app@fleet.example"
    requester.save()
    approver.save()
    target.contact_emails = "iot@acme.example\nsec@acme.example"
    target.save()
    iot = iot_for(source)
    made = add_certificate(iot, "ACTIVE", ["DevicePublish"], thing="sensor-1")
    inventory.sync_region(inventory.queue_sync(source, "us-east-1")[0].pk)
    cert = Certificate.objects.get(certificate_id=made["certificateId"])
    return {"iot": iot, "cert": cert, "carol": make_user("carol", (target, Role.ADMIN))}


def pending(world, requester, approver, message="For <b>Acme</b>") -> Transfer:
    transfer = workflow.request_transfer(
        requester,
        world["cert"],
        target_account_id=TARGET,
        message=message,
        reason="r",
        options=Options(),
    )
    committed(workflow.approve, approver, transfer.pk)
    transfer.refresh_from_db()
    assert transfer.status == Transfer.Status.PENDING_ACCEPTANCE
    return transfer


def test_the_target_is_told_with_everything_it_needs(world, requester, approver):
    transfer = pending(world, requester, approver)
    assert sorted(m.to[0] for m in mail.outbox) == ["iot@acme.example", "sec@acme.example"]
    message = mail.outbox[0]
    body = message.body
    for needed in (
        transfer.certificate_id,
        transfer.certificate_arn,
        "111111111111",
        "us-east-1",
        "For <b>Acme</b>",
        f"accept-certificate-transfer --certificate-id {transfer.certificate_id} "
        "--region us-east-1",
        "--set-as-active",
        "reject-certificate-transfer",
        f"{transfer.expires_at:%Y-%m-%d %H:%M}",
        f"/transfers/{transfer.pk}/",
    ):
        assert needed in body, needed
    assert "requester" not in body and "approver" not in body  # the source's (access)
    html = message.alternatives[0][0]
    assert "For &lt;b&gt;Acme&lt;/b&gt;" in html and "<b>Acme</b>" not in html
    assert set(transfer.notices.values_list("status", flat=True)) == {"sent"}


def test_nobody_is_told_twice(world, requester, approver):
    transfer = pending(world, requester, approver)
    sent = len(mail.outbox)
    for notice in transfer.notices.all():
        assert notices.send(notice.pk) == "skipped"  # a redelivered task
    with committed_ctx():
        notices.create(transfer, Notice.Kind.NEW)  # a repeated transition
    assert len(mail.outbox) == sent
    assert transfer.notices.count() == 2


def committed_ctx():
    from django.test import TestCase

    return TestCase.captureOnCommitCallbacks(execute=True)


def test_requester_and_approver_hear_how_it_ended(world, requester, approver):
    transfer = pending(world, requester, approver)
    mail.outbox.clear()
    committed(workflow.reject, world["carol"], transfer.pk, "Not our devices")
    to = sorted(m.to[0] for m in mail.outbox)
    assert to == ["app@fleet.example", "req@fleet.example"]
    assert "Not our devices" in mail.outbox[0].body
    assert "rejected" in mail.outbox[0].subject


def test_a_withdrawn_request_tells_nobody(world, requester, approver):
    transfer = workflow.request_transfer(
        requester,
        world["cert"],
        target_account_id=TARGET,
        message="m",
        reason="r",
        options=Options(),
    )
    committed(workflow.withdraw, requester, transfer.pk)
    assert mail.outbox == [] and not transfer.notices.exists()


def test_a_failing_notice_never_touches_the_transfer(world, requester, approver, settings):
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT, settings.EMAIL_TIMEOUT = "127.0.0.1", 9, 2
    transfer = workflow.request_transfer(
        requester,
        world["cert"],
        target_account_id=TARGET,
        message="m",
        reason="r",
        options=Options(),
    )
    workflow.approve(approver, transfer.pk)  # inside the test transaction: nothing sent yet
    workflow.execute(transfer.pk)
    transfer.refresh_from_db()
    assert transfer.status == Transfer.Status.PENDING_ACCEPTANCE
    for notice in transfer.notices.all():
        for _ in range(3):  # the task's retries
            with pytest.raises(notices.DeliveryError):
                notices.send(notice.pk)
        notice.refresh_from_db()
        assert notice.status == Notice.Status.PENDING and notice.attempts == 3
        assert "Connection refused" in notice.last_error
        notices.give_up(notice.pk)  # retries exhausted
        assert Notice.objects.get(pk=notice.pk).status == Notice.Status.FAILED
    transfer.refresh_from_db()
    assert transfer.status == Transfer.Status.PENDING_ACCEPTANCE
    assert not transfer.events.filter(ok=False).exists()


class Inbox:
    def __init__(self):
        self.messages = []

    async def handle_DATA(self, server, session, envelope):  # noqa: N802 (aiosmtpd's name)
        self.messages.append(email.message_from_bytes(envelope.content, policy=policy.default))
        return "250 OK"


@pytest.fixture
def smtp(settings):
    inbox = Inbox()
    controller = Controller(inbox, hostname="127.0.0.1", port=free_port())
    controller.start()
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT = "127.0.0.1", controller.port
    yield inbox
    controller.stop()


def test_a_real_smtp_server_receives_text_and_html(world, requester, approver, smtp):
    transfer = pending(world, requester, approver)
    assert len(smtp.messages) == 2
    received = smtp.messages[0]
    assert (
        received["Subject"] == "A certificate transfer to account 222222222222 is waiting for you"
    )
    assert received["X-Transfer-Notice"]
    text = received.get_body(("plain",)).get_content()
    html = received.get_body(("html",)).get_content()
    assert transfer.certificate_id in text and transfer.certificate_id in html
    assert "<b>Acme</b>" in text and "&lt;b&gt;Acme&lt;/b&gt;" in html


class Receiver:
    """A webhook receiver on loopback that verifies signatures like a real one would."""

    def __init__(self, secret: str, fail_first: int = 0):
        self.secret, self.fail_first = secret, fail_first
        self.accepted, self.refused, self.seen_ids = [], [], []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                body = self.rfile.read(int(self.headers["content-length"]))
                receiver.seen_ids.append(self.headers["webhook-id"])
                if receiver.fail_first > 0:
                    receiver.fail_first -= 1
                    self.send_response(503)
                    self.end_headers()
                    return
                try:
                    payload = Webhook(receiver.secret).verify(body, dict(self.headers))
                except WebhookVerificationError:
                    receiver.refused.append(body)
                    self.send_response(400)
                    self.end_headers()
                    return
                receiver.accepted.append(payload)
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = HTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"
        threading.Thread(target=self.server.serve_forever, args=(0.01,), daemon=True).start()

    def close(self):
        self.server.shutdown()


@pytest.fixture
def receiver(target, settings):
    settings.WEBHOOK_ALLOW_PRIVATE = True  # the receivers are on loopback
    made = []

    def make(fail_first=0):
        target.webhook_secret = notices.new_webhook_secret()
        hook = Receiver(target.webhook_secret, fail_first)
        target.webhook_url = hook.url
        target.save()
        made.append(hook)
        return hook

    yield make
    for hook in made:
        hook.close()


def test_the_webhook_is_signed_and_verifies(world, requester, approver, receiver):
    hook = receiver()
    transfer = pending(world, requester, approver)
    assert len(hook.accepted) == 1
    payload = hook.accepted[0]
    assert payload["type"] == "certificate_transfer.new"
    assert payload["transfer"]["certificate_id"] == transfer.certificate_id
    assert hook.seen_ids == [f"notice_{payload['notice_id']}"]


def test_a_tampered_body_is_refused_by_the_verifier(world, requester, approver, receiver):
    import requests

    hook = receiver()
    transfer = pending(world, requester, approver)
    notice = transfer.notices.get(channel="webhook")
    body = json.dumps(messages.payload(notice), separators=(",", ":"))
    now = timezone.now()
    signature = Webhook(transfer.target.webhook_secret).sign("notice_x", now, body)
    headers = {
        "content-type": "application/json",
        "webhook-id": "notice_x",
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": signature,
    }
    tampered = body.replace("222222222222", "999999999999")
    assert requests.post(hook.url, data=tampered, headers=headers, timeout=5).status_code == 400
    assert requests.post(hook.url, data=body, headers=headers, timeout=5).status_code == 204
    assert hook.refused == [tampered.encode()]
    assert len(hook.accepted) == 2  # the portal's delivery and the genuine replay above


def test_a_receiver_failing_twice_gets_exactly_one_delivery(world, requester, approver, receiver):
    hook = receiver(fail_first=2)
    transfer = workflow.request_transfer(
        requester,
        world["cert"],
        target_account_id=TARGET,
        message="m",
        reason="r",
        options=Options(),
    )
    workflow.approve(approver, transfer.pk)
    workflow.execute(transfer.pk)
    notice = transfer.notices.get(channel="webhook")
    for _ in range(2):
        with pytest.raises(notices.DeliveryError, match="HTTP 503"):
            notices.send(notice.pk)
    assert notices.send(notice.pk) == "sent"
    assert notices.send(notice.pk) == "skipped"  # a redelivered task
    notice.refresh_from_db()
    assert notice.status == Notice.Status.SENT and notice.attempts == 3
    assert len(hook.accepted) == 1
    assert len(set(hook.seen_ids)) == 1  # the same webhook-id on every attempt


def test_send_again_sends_it_again(client, world, requester, approver):
    transfer = pending(world, requester, approver)
    notice = transfer.notices.first()
    before = len(mail.outbox)
    client.force_login(requester)
    with committed_ctx():
        response = client.post(reverse("notice_resend", args=[transfer.pk, notice.pk]))
    assert response.status_code == 302
    assert len(mail.outbox) == before + 1
    page = client.get(transfer.get_absolute_url()).content.decode()
    assert "Send again" in page and notice.recipient in page


def test_send_again_is_scoped(client, world, requester, approver, viewer, outsider):
    transfer = pending(world, requester, approver)
    notice = transfer.notices.first()
    url = reverse("notice_resend", args=[transfer.pk, notice.pk])
    client.force_login(viewer)
    assert client.post(url).status_code == 403
    client.force_login(outsider)
    assert client.post(url).status_code == 404
    assert Notice.objects.get(pk=notice.pk).attempts == 1


def test_reminder_once_before_expiry_then_expiry_restores(world, requester, approver, settings):
    settings.TRANSFER_REMINDER_HOURS = 48
    transfer = pending(world, requester, approver)
    expires = transfer.expires_at
    mail.outbox.clear()
    with time_machine.travel(expires - timedelta(hours=47)):
        assert committed(notices.send_reminders) == 2
        assert committed(notices.send_reminders) == 0  # beat ran twice: one reminder each
        assert workflow.due_for_expiry() == []
    assert sorted(m.to[0] for m in mail.outbox) == ["iot@acme.example", "sec@acme.example"]
    assert "Reminder" in mail.outbox[0].body
    mail.outbox.clear()
    with time_machine.travel(expires + timedelta(minutes=1)):
        assert workflow.due_for_expiry() == [transfer.pk]
        assert committed(workflow.expire, transfer.pk) == "expired"
        assert workflow.expire(transfer.pk) == "skipped: expired"
    transfer.refresh_from_db()
    assert transfer.status == Transfer.Status.EXPIRED
    assert transfer.restore_state == Transfer.Restore.DONE
    described = world["iot"].describe_certificate(certificateId=transfer.certificate_id)
    assert described["certificateDescription"]["status"] == "ACTIVE"
    told = sorted(m.to[0] for m in mail.outbox)
    assert told == [
        "app@fleet.example",
        "iot@acme.example",
        "req@fleet.example",
        "sec@acme.example",
    ]


def test_an_account_expiry_overrides_the_default(world, requester, approver, target, settings):
    settings.TRANSFER_EXPIRY_DAYS = 14
    target.expiry_days = 2
    target.save()
    transfer = pending(world, requester, approver)
    assert transfer.expires_at - transfer.pending_since == timedelta(days=2)


class TestWebhookSecret:
    def test_an_account_admin_sees_it_once(self, client, target, world):
        client.force_login(world["carol"])
        response = client.post(reverse("account_webhook_secret", args=[target.pk]))
        target.refresh_from_db()
        assert target.webhook_secret.startswith("whsec_")
        assert target.webhook_secret in response.content.decode()
        again = client.get(target.get_absolute_url()).content.decode()
        assert target.webhook_secret not in again

    def test_others_may_not(self, client, target, viewer, outsider, db):
        from transfers.models import AccountGrant

        AccountGrant.objects.create(account=target, user=viewer, role=Role.VIEWER)
        client.force_login(viewer)
        assert client.post(reverse("account_webhook_secret", args=[target.pk])).status_code == 403
        client.force_login(outsider)
        assert client.post(reverse("account_webhook_secret", args=[target.pk])).status_code == 404
        target.refresh_from_db()
        assert target.webhook_secret == ""
