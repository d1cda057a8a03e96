"""The notices AWS never sends: email and signed webhooks about a transfer.

Notices are rows created in the same transaction as the state change that causes them and
sent by a Celery task after commit. Sending claims the row first (pending -> sending), so a
redelivered task never sends the same notice twice; a failure goes back to pending with the
error, and after the retry limit the notice is marked failed. A notice never blocks, changes
or rolls back its transfer.
"""

from __future__ import annotations

import base64
import json
import logging
import secrets
from datetime import timedelta

import requests
from django.conf import settings
from django.core.mail import EmailMultiAlternatives, get_connection
from django.db.models import F
from django.template.loader import render_to_string
from django.utils import timezone
from standardwebhooks.webhooks import Webhook

from transfers import queue
from transfers.models import Notice, Transfer

log = logging.getLogger(__name__)
Kind, Channel, Status = Notice.Kind, Notice.Channel, Notice.Status

# Which state change tells whom.
_TARGET_KINDS = {Kind.NEW, Kind.REMINDER, Kind.CANCELLED, Kind.EXPIRED}
_PEOPLE_KINDS = {Kind.ACCEPTED, Kind.REJECTED, Kind.CANCELLED, Kind.EXPIRED, Kind.FAILED}
_KIND_FOR_STATUS = {
    Transfer.Status.PENDING_ACCEPTANCE: Kind.NEW,
    Transfer.Status.ACCEPTED: Kind.ACCEPTED,
    Transfer.Status.REJECTED: Kind.REJECTED,
    Transfer.Status.CANCELLED: Kind.CANCELLED,
    Transfer.Status.EXPIRED: Kind.EXPIRED,
    Transfer.Status.FAILED: Kind.FAILED,
}
SUBJECTS = {
    Kind.NEW: "A certificate transfer to account {target} is waiting for you",
    Kind.REMINDER: "Reminder: a certificate transfer to account {target} expires {expires}",
    Kind.ACCEPTED: "Transfer #{pk} was accepted by account {target}",
    Kind.REJECTED: "Transfer #{pk} was rejected by account {target}",
    Kind.CANCELLED: "Transfer #{pk} to account {target} was cancelled",
    Kind.EXPIRED: "Transfer #{pk} to account {target} expired and was cancelled",
    Kind.FAILED: "Transfer #{pk} to account {target} failed",
}
STALE_SENDING = timedelta(minutes=10)


class DeliveryError(Exception):
    pass


def new_webhook_secret() -> str:
    """A Standard Webhooks secret: whsec_ and 32 random bytes in base64."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


def on_transition(transfer: Transfer) -> list[int]:
    """Inside the state change's transaction: create the notices it calls for."""
    kind = _KIND_FOR_STATUS.get(transfer.status)
    if kind is None:
        return []
    if kind == Kind.CANCELLED and transfer.pending_since is None and transfer.approver is None:
        return []  # a request withdrawn before anyone acted on it
    return create(transfer, kind)


def create(transfer: Transfer, kind: str) -> list[int]:
    rows = []
    target = transfer.target
    told_target = kind in _TARGET_KINDS and (kind != Kind.CANCELLED or transfer.pending_since)
    if told_target and target is not None:
        rows += [
            Notice(transfer=transfer, channel=Channel.EMAIL, recipient=e, kind=kind)
            for e in target.emails
        ]
        if target.webhook_url and target.webhook_secret:
            rows.append(
                Notice(
                    transfer=transfer,
                    channel=Channel.WEBHOOK,
                    recipient=target.webhook_url,
                    kind=kind,
                )
            )
    if kind in _PEOPLE_KINDS:
        people = {u.email for u in (transfer.requester, transfer.approver) if u and u.email}
        rows += [
            Notice(transfer=transfer, channel=Channel.EMAIL, recipient=e, kind=kind)
            for e in sorted(people)
        ]
    # The unique constraint makes a repeated transition or beat run create nothing new.
    Notice.objects.bulk_create(rows, ignore_conflicts=True)
    pks = list(
        Notice.objects.filter(transfer=transfer, kind=kind, status=Status.PENDING).values_list(
            "pk", flat=True
        )
    )
    _enqueue(pks)
    return pks


def _enqueue(pks: list[int]) -> None:
    for pk in pks:
        queue.enqueue("send_notice", pk)


def resend(notice: Notice) -> None:
    """A person's "send again": back to pending, sent by the worker."""
    Notice.objects.filter(pk=notice.pk).exclude(status=Status.SENDING).update(
        status=Status.PENDING, last_error=""
    )
    _enqueue([notice.pk])


def send(pk: int) -> str:
    """Deliver one notice. Raises DeliveryError when it should be tried again."""
    claimed = Notice.objects.filter(pk=pk, status=Status.PENDING).update(
        status=Status.SENDING, attempts=F("attempts") + 1
    )
    if not claimed:
        return "skipped"
    notice = Notice.objects.select_related(
        "transfer",
        "transfer__source",
        "transfer__target",
        "transfer__requester",
        "transfer__approver",
    ).get(pk=pk)
    try:
        if notice.channel == Channel.EMAIL:
            _send_email(notice)
        else:
            _send_webhook(notice)
    except Exception as exc:
        Notice.objects.filter(pk=pk).update(
            status=Status.PENDING, last_error=f"{type(exc).__name__}: {exc}"[:2000]
        )
        raise DeliveryError(str(exc)) from exc
    Notice.objects.filter(pk=pk).update(status=Status.SENT, sent_at=timezone.now(), last_error="")
    return "sent"


def give_up(pk: int) -> None:
    Notice.objects.filter(pk=pk).exclude(status=Status.SENT).update(status=Status.FAILED)


def resend_stale() -> int:
    """Beat: notices a dead worker or a lost message left behind go out again."""
    cutoff = timezone.now() - STALE_SENDING
    Notice.objects.filter(status=Status.SENDING, created__lt=cutoff).update(status=Status.PENDING)
    stale = list(
        Notice.objects.filter(status=Status.PENDING, created__lt=cutoff).values_list(
            "pk", flat=True
        )[:500]
    )
    _enqueue(stale)
    return len(stale)


def context(notice: Notice) -> dict:
    transfer = notice.transfer
    inbox = None
    if transfer.target is not None and transfer.target.managed:
        inbox = f"{settings.SITE_URL}{transfer.get_absolute_url()}"
    return {
        "notice": notice,
        "t": transfer,
        "kind": notice.kind,
        "expires_at": transfer.expires_at,
        "inbox_url": inbox,
        "transfer_url": f"{settings.SITE_URL}{transfer.get_absolute_url()}",
        "region": transfer.region,
    }


def _subject(notice: Notice) -> str:
    t = notice.transfer
    expires = f"on {t.expires_at:%Y-%m-%d %H:%M} UTC" if t.expires_at else "soon"
    return SUBJECTS[notice.kind].format(pk=t.pk, target=t.target_account_id, expires=expires)


def _send_email(notice: Notice) -> None:
    ctx = context(notice)
    text = render_to_string("emails/notice.txt", ctx)
    html = render_to_string("emails/notice.html", ctx)
    connection = get_connection(timeout=settings.EMAIL_TIMEOUT) if _smtp() else get_connection()
    message = EmailMultiAlternatives(
        _subject(notice),
        text,
        settings.DEFAULT_FROM_EMAIL,
        [notice.recipient],
        connection=connection,
        headers={"X-Transfer-Notice": str(notice.pk)},
    )
    message.attach_alternative(html, "text/html")
    message.send()


def _smtp() -> bool:
    return settings.EMAIL_BACKEND.endswith("smtp.EmailBackend")


def payload(notice: Notice) -> dict:
    t = notice.transfer
    return {
        "type": f"certificate_transfer.{notice.kind}",
        "notice_id": notice.pk,
        "transfer": {
            "id": t.pk,
            "status": t.status,
            "certificate_id": t.certificate_id,
            "certificate_arn": t.certificate_arn,
            "transferred_certificate_arn": t.transferred_arn,
            "source_account_id": t.source.account_id,
            "target_account_id": t.target_account_id,
            "region": t.region,
            "transfer_message": t.message,
            "requested_by": t.requester.get_username(),
            "approved_by": t.approver.get_username() if t.approver else None,
            "expires_at": t.expires_at.isoformat() if t.expires_at else None,
            "url": f"{settings.SITE_URL}{t.get_absolute_url()}",
        },
    }


def _send_webhook(notice: Notice) -> None:
    secret = notice.transfer.target.webhook_secret if notice.transfer.target else ""
    if not secret:
        raise DeliveryError("the account has no webhook secret")
    body = json.dumps(payload(notice), separators=(",", ":"))
    msg_id = f"notice_{notice.pk}"  # the same id on every attempt: receivers drop repeats
    now = timezone.now()
    signature = Webhook(secret).sign(msg_id, now, body)
    response = requests.post(
        notice.recipient,
        data=body.encode(),
        headers={
            "content-type": "application/json",
            "webhook-id": msg_id,
            "webhook-timestamp": str(int(now.timestamp())),
            "webhook-signature": signature,
        },
        timeout=(5, 10),
        allow_redirects=False,
    )
    if not 200 <= response.status_code < 300:
        raise DeliveryError(f"the receiver answered HTTP {response.status_code}")
