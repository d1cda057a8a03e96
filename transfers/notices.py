"""The notices AWS never sends: email, signed webhooks and Slack about a transfer or a batch:
who is told what and when, and the delivery. What each message says is built in messages.py.

Notices are rows created in the same transaction as the state change that causes them and
sent by a Celery task after commit. Sending claims the row first (pending -> sending), so a
redelivered task never sends the same notice twice; a failure goes back to pending with the
error, and after the retry limit the notice is marked failed. A notice never blocks, changes
or rolls back its transfer.

A transfer of a batch does not notify on its own. Its notices are created "held", one per
transfer, channel, recipient and kind as for any transfer (so the unique constraint still
makes a repeated transition notify once), and a batch notice per channel, recipient and kind
later carries all the held ones of the batch: one email with the certificate ids as a CSV,
one webhook event with the ids, one Slack message. When a batch's held notices go out
(``flush_batch``):
- at once when no transfer of the batch can still add to them: a new-transfer notice when
  no transfer of the batch is in flight (approved or preparing), a failure notice likewise,
  an outcome (accepted, rejected, cancelled, expired) when none is open any more (checked
  after each transition of the batch commits);
- otherwise after a quiet period (QUIET with nothing new), or at the latest MAX_HOLD after
  the first one was held; the beat task that re-sends stale notices checks every batch with
  held notices (every 5 minutes).
An account whose webhook receiver wants an event per transfer sets webhook_per_transfer.
An outcome that lands certificates (accepted) also waits while the batch's devices are being
looked for in the target (workflow.devices), up to MAX_HOLD, so the closing notice says how
many came back (the beat sends it once they settle).

A batch's own notice, not carried from its transfers: paused (``batch_paused``), when a wave
ended below the batch's threshold (transfers.waves). Its requester and the source's approvers
get an email each, the source's webhook and Slack channel one message each, once per pause.
"""

from __future__ import annotations

import base64
import json
import logging
import secrets
from datetime import timedelta
from urllib.parse import urlsplit

import requests
from django.conf import settings
from django.core.mail import EmailMultiAlternatives, get_connection
from django.db import models, transaction
from django.db.models import F, Max, Min
from django.utils import timezone
from standardwebhooks.webhooks import Webhook

# The module, not its function: policies.mail imports messages, which imports the workflow
# package, which imports this module (a name imported from a half-loaded module fails).
from policies import mail as approval_mail
from transfers import messages, outbound, queue
from transfers.models import Notice, Transfer, TransferBatch

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
STALE_SENDING = timedelta(minutes=10)
QUIET = timedelta(minutes=2)
MAX_HOLD = timedelta(minutes=30)
# Transfers of a batch in these states may still add to a held notice of the kind.
_STILL_COMING = {
    Kind.NEW: Transfer.Status.IN_FLIGHT,
    Kind.FAILED: Transfer.Status.IN_FLIGHT,
    Kind.ACCEPTED: Transfer.Status.OPEN,
    Kind.REJECTED: Transfer.Status.OPEN,
    Kind.CANCELLED: Transfer.Status.OPEN,
    Kind.EXPIRED: Transfer.Status.OPEN,
}


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
    """The notices of ``transfer`` for ``kind``: the pks of those to be sent now (a transfer
    of a batch holds its notices for the batch's; see the module docstring)."""
    batch = transfer.batch_id
    rows = []

    def row(channel: str, recipient: str, *, each: bool = False) -> Notice:
        held = batch is not None and not each
        return Notice(
            transfer=transfer,
            batch_id=batch,
            channel=channel,
            recipient=recipient,
            kind=kind,
            status=Status.HELD if held else Status.PENDING,
        )

    target = transfer.target
    told_target = kind in _TARGET_KINDS and (kind != Kind.CANCELLED or transfer.pending_since)
    if told_target and target is not None:
        rows += [row(Channel.EMAIL, e) for e in target.emails]
        if target.webhook_url and target.webhook_secret:
            rows.append(row(Channel.WEBHOOK, target.webhook_url, each=target.webhook_per_transfer))
        if target.slack_webhook_url:
            rows.append(row(Channel.SLACK, slack_recipient(target.account_id)))
    if kind in _PEOPLE_KINDS:
        people = {u.email for u in (transfer.requester, transfer.approver) if u and u.email}
        rows += [row(Channel.EMAIL, e) for e in sorted(people)]
    # The unique constraint makes a repeated transition or beat run create nothing new.
    Notice.objects.bulk_create(rows, ignore_conflicts=True)
    pks = []
    if any(r.status == Status.PENDING for r in rows):  # a batch's are all held, most often
        pks = list(
            Notice.objects.filter(transfer=transfer, kind=kind, status=Status.PENDING).values_list(
                "pk", flat=True
            )
        )
    _enqueue(pks)
    if batch is not None and kind in _STILL_COMING:
        # Checked after the commit: then every transfer's state is what the others see too,
        # so of two workers ending a batch's last two transfers at once, the later sees
        # nothing left in flight (checked inside the transaction, both could miss it).
        # Every kind: the transfer that fails last also ends the batch's "waiting for you".
        transaction.on_commit(lambda: flush_batch(batch, added=kind))
    return pks


def send_reminders(now=None) -> int:
    """Beat: remind the target once, a configured time before the transfer expires."""
    now = now or timezone.now()
    ahead = timedelta(hours=settings.TRANSFER_REMINDER_HOURS)
    sent = 0
    pending = Transfer.objects.filter(status=Transfer.Status.PENDING_ACCEPTANCE).select_related(
        "target", "source", "requester", "approver"
    )
    for transfer in pending:
        expires = transfer.expires_at
        if expires and expires - ahead <= now < expires:
            with transaction.atomic():
                sent += len(create(transfer, Kind.REMINDER))
    return sent


def _due(batch_pk: int, kind: str, newest, oldest, now, still_coming) -> bool:
    if now - oldest >= MAX_HOLD:
        return True
    if kind == Kind.ACCEPTED and _devices_coming(batch_pk):
        return False  # the closing notice says how many devices came back
    if now - newest >= QUIET:
        return True
    if kind not in _STILL_COMING:  # reminders: only the quiet period tells
        return False
    return not still_coming(kind)


def _coming(batch_pk: int):
    """``still_coming(kind)``: some transfer of the batch may still add a held notice of
    ``kind`` (asked once per set of states: NEW and FAILED share theirs, as the outcomes do)."""
    known: dict[tuple, bool] = {}

    def still_coming(kind: str) -> bool:
        states = tuple(_STILL_COMING[kind])
        if states not in known:
            rows = Transfer.objects.filter(batch_id=batch_pk, status__in=states)
            known[states] = rows.exists()
        return known[states]

    return still_coming


def _devices_coming(batch_pk: int) -> bool:
    """Some landed (or landing) transfer of the batch has devices still looked for in the
    target (workflow.devices): their figures are not known yet."""
    Landing, Check = Transfer.Landing, Transfer.DeviceCheck
    landing = models.Q(
        status=Transfer.Status.ACCEPTED,
        device_check=Check.NONE,
        landing_state__in=[Landing.PLANNED, Landing.LANDING, Landing.PARTIAL],
    ) & ~models.Q(detached_things=[])
    rows = Transfer.objects.filter(batch_id=batch_pk)
    return rows.filter(models.Q(device_check=Check.WAITING) | landing).exists()


def flush_batch(batch_pk: int, *, kinds=None, now=None, added: str | None = None) -> list[int]:
    """Send the batch's held notices that are due (see the module docstring): one batch
    notice per kind, channel and recipient carries them. Returns the new notices' pks.

    ``added``: the kind a transition of the batch has just held a notice of (the check after
    each transition commits). While transfers of the batch may still add to that kind, its
    newest is now and only MAX_HOLD can make it due: its oldest is read alone (the first
    entry of an index) instead of aggregating every held row of the kind, which grows with
    the batch (9,000 transfers and three recipients: 27,000 rows read after each transfer)."""
    now = now or timezone.now()
    held = Notice.objects.filter(batch_id=batch_pk, status=Status.HELD)
    if kinds is not None:
        held = held.filter(kind__in=kinds)
    due, grouped, still_coming = [], held, _coming(batch_pk)
    if added is not None and still_coming(added):
        oldest = held.filter(kind=added).aggregate(oldest=Min("created"))["oldest"]
        if oldest is not None and now - oldest >= MAX_HOLD:
            due.append(added)
        grouped = held.filter(kind__in=[k for k in Kind.values if k != added])
    groups = grouped.order_by().values("kind")
    groups = groups.annotate(newest=Max("created"), oldest=Min("created"))
    for group in groups:
        if _due(batch_pk, group["kind"], group["newest"], group["oldest"], now, still_coming):
            due.append(group["kind"])
    made = []
    for kind in due:
        with transaction.atomic():
            for channel, recipient in (
                held.filter(kind=kind).order_by().values_list("channel", "recipient").distinct()
            ):
                digest = Notice.objects.create(
                    batch_id=batch_pk, channel=channel, recipient=recipient, kind=kind
                )
                # Claims each held row once: a second flusher at the same moment finds
                # none left and drops its empty notice.
                claimed = Notice.objects.filter(
                    batch_id=batch_pk,
                    status=Status.HELD,
                    kind=kind,
                    channel=channel,
                    recipient=recipient,
                ).update(status=Status.BATCHED, digest=digest)
                if claimed:
                    made.append(digest.pk)
                else:
                    digest.delete()
    _enqueue(made)
    return made


def flush_batches(now=None) -> int:
    """Beat: every batch with held notices; returns how many batch notices went out."""
    batches = (
        Notice.objects.filter(status=Status.HELD)
        .order_by()
        .values_list("batch_id", flat=True)
        .distinct()
    )
    return sum(len(flush_batch(pk, now=now)) for pk in list(batches))


def batch_paused(batch: TransferBatch) -> list[int]:
    """The batch paused below its wave threshold: its requester and the source's approvers
    (an email each), the source's webhook and Slack channel (when it has them) are told why,
    with a link to the batch page where an approver resumes or stops it. Returns the new
    notices' pks (sent after commit)."""
    source = batch.source
    emails = {batch.requester.email} if batch.requester.email else set()
    emails |= set(approval_mail.approver_emails(source.pk, exclude=set()))
    rows = [
        Notice(batch=batch, channel=Channel.EMAIL, recipient=e, kind=Kind.PAUSED)
        for e in sorted(emails)
    ]
    if source.webhook_url and source.webhook_secret:
        rows.append(
            Notice(
                batch=batch, channel=Channel.WEBHOOK, recipient=source.webhook_url, kind=Kind.PAUSED
            )
        )
    if source.slack_webhook_url:
        rows.append(
            Notice(
                batch=batch,
                channel=Channel.SLACK,
                recipient=slack_recipient(source.account_id),
                kind=Kind.PAUSED,
            )
        )
    made = [row.pk for row in Notice.objects.bulk_create(rows)]
    _enqueue(made)
    return made


def _enqueue(pks: list[int]) -> None:
    for pk in pks:
        queue.enqueue("send_notice", pk)


def resend(notice: Notice) -> None:
    """A person's "send again": back to pending, sent by the worker."""
    Notice.objects.filter(pk=notice.pk).exclude(
        status__in=[Status.SENDING, Status.HELD, Status.BATCHED]
    ).update(status=Status.PENDING, last_error="")
    _enqueue([notice.pk])


def send(pk: int) -> str:
    """Deliver one notice. Raises DeliveryError when it should be tried again."""
    claimed = Notice.objects.filter(pk=pk, status=Status.PENDING).update(
        status=Status.SENDING, attempts=F("attempts") + 1, picked_up=timezone.now()
    )
    if not claimed:
        return "skipped"
    notice = _load(pk)
    try:
        if notice.channel == Channel.EMAIL:
            _send_email(notice)
        elif notice.channel == Channel.SLACK:
            _send_slack(notice)
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
    """Beat: notices a dead worker or a lost message left behind go out again; held batch
    notices whose quiet period ended go out."""
    flush_batches()
    cutoff = timezone.now() - STALE_SENDING
    # Stale by when a worker took it, not by when it was made: an old notice sent again is
    # being sent right now, and going out twice is what this must not cause.
    Notice.objects.filter(status=Status.SENDING, picked_up__lt=cutoff).update(status=Status.PENDING)
    stale = list(
        Notice.objects.filter(status=Status.PENDING, created__lt=cutoff).values_list(
            "pk", flat=True
        )[:500]
    )
    _enqueue(stale)
    return len(stale)


def _load(pk: int) -> Notice:
    return Notice.objects.select_related(
        "transfer",
        "transfer__source",
        "transfer__target",
        "transfer__requester",
        "transfer__approver",
        "batch",
        "batch__source",
        "batch__requester",
        "batch__approver",
    ).get(pk=pk)


def _send_email(notice: Notice) -> None:
    rendered = messages.render(notice)
    connection = get_connection(timeout=settings.EMAIL_TIMEOUT) if _smtp() else get_connection()
    message = EmailMultiAlternatives(
        rendered["subject"],
        rendered["text"],
        settings.DEFAULT_FROM_EMAIL,
        [notice.recipient],
        connection=connection,
        headers={"X-Transfer-Notice": str(notice.pk)},
    )
    message.attach_alternative(rendered["html"], "text/html")
    for name, content, mimetype in rendered["attachments"]:
        message.attach(name, content, mimetype)
    message.send()


def _smtp() -> bool:
    return settings.EMAIL_BACKEND.endswith("smtp.EmailBackend")


def slack_recipient(account_id: str) -> str:
    """A Slack notice's recipient: whose channel, not the URL. The URL is Slack's secret and
    stays on the account, encrypted; the notice is posted to the account's URL when it goes."""
    return f"Slack channel of {account_id}"


def _send_slack(notice: Notice) -> None:
    target = messages.channel_account(notice)
    if target is None or not target.slack_webhook_url:
        raise DeliveryError("the account has no Slack incoming webhook any more")
    body = json.dumps(messages.slack_payload(notice), separators=(",", ":"))
    # Slack does not check signatures; the URL is its secret. Signed all the same when the
    # account has a webhook secret, by the same delivery as any webhook.
    deliver(notice, body, target.webhook_secret, url=target.slack_webhook_url)


def _send_webhook(notice: Notice) -> None:
    target = messages.channel_account(notice)
    if target is None or not target.webhook_url:
        raise DeliveryError("the account has no webhook URL any more")
    if not target.webhook_secret:
        raise DeliveryError("the account has no webhook secret")
    # The account's URL now, like its secret now: sent again after the receiver moved, the
    # notice goes to the receiver that holds that secret (the recipient is what it was).
    body = json.dumps(messages.payload(notice), separators=(",", ":"))
    deliver(notice, body, target.webhook_secret, url=target.webhook_url)


def deliver(notice: Notice, body: str, secret: str, url: str) -> None:
    """POST ``body`` to ``url`` (the account's, as it is now): Standard Webhooks headers
    (signed when there is a secret), short timeouts, no redirects; anything but 2xx is a
    DeliveryError."""
    msg_id = f"notice_{notice.pk}"  # the same id on every attempt: receivers drop repeats
    now = timezone.now()
    headers = {
        "content-type": "application/json",
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(now.timestamp())),
    }
    if secret:
        headers["webhook-signature"] = Webhook(secret).sign(msg_id, now, body)
    # Public addresses only, checked again now, no redirects (transfers.outbound). The page
    # shows a generic error; what exactly failed goes to the log only, or the transfer page
    # would tell whoever set the URL what answers where (a port scanner).
    try:
        response = outbound.post(url, data=body.encode(), headers=headers)
    except outbound.UnsafeDestination as exc:
        log.warning("notice %s: refused destination: %s", notice.pk, exc.detail)
        raise DeliveryError(f"refused destination: {exc}") from None
    except requests.RequestException as exc:
        detail = repr(exc)
        if notice.channel == Channel.SLACK:  # the URL is Slack's secret: its path stays out
            detail = detail.replace(urlsplit(url).path, "/…")
        log.warning("notice %s: delivery failed: %s", notice.pk, detail)
        raise DeliveryError("the receiver could not be reached (details in the log)") from None
    if not 200 <= response.status_code < 300:
        raise DeliveryError(f"the receiver answered HTTP {response.status_code}")
