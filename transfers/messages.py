"""Every message the portal sends, by name, and how each is built, whichever channel
carries it (not django.contrib.messages, which shows a line on the next page).

Transfer notices (one per transfer; the subject lines are SUBJECTS):
- new: a transfer waits for the target's acceptance (the target's contacts, webhook, Slack);
- reminder: it expires soon (the same);
- outcome: accepted, rejected, cancelled, expired or failed (the requester and approver;
  cancelled and expired also the target's side).
Each is built for its channel: ``render`` (the email: subject, text, HTML, attachments),
``payload`` (the signed webhook's JSON), ``slack_payload`` (Slack's Block Kit).
Batch digest: the same kinds for a batch's held notices, one message carrying them all
(BATCH_SUBJECTS; the email attaches the certificate ids as a CSV), by the same functions.
The closing one (accepted) says how many devices are back in the target, N of M, and the CSV
says of each whether its devices are back, and why not.
Batch paused: a batch's own notice, to its source's people and channels (``Kind.PAUSED``):
a wave ended below the threshold, why, and where an approver resumes or stops it.
Where the devices were told the target's endpoint first, the notice to the target says which
endpoints, in order; for a target the portal does not manage it asks the target to confirm
the devices are back (the portal cannot ask that account).

Approval mail (email only, built here, sent by policies/mail.py):
- ``approval_request``: a single request waits for an approver's decision;
- ``batch_approval_request``: a batch waits for one;
- ``declined``: the requester's request (or batch) was declined.

Who gets which message and when is decided elsewhere: transfers/notices.py for notices (and
their delivery, retries and batching), policies/mail.py for approval mail. What the target's
side may read of a transfer is decided by transfers/access.py (``source_side``).
"""

from __future__ import annotations

import csv
import io
import json

from django.conf import settings
from django.db.models import Count
from django.template.loader import render_to_string
from django.utils import timezone

from transfers import access
from transfers.models import AwsAccount, Notice, Transfer, TransferBatch
from transfers.workflow.landing_plan import cli_commands

Kind, Channel = Notice.Kind, Notice.Channel

# ----------------------------------------------------------------------------- notices


SUBJECTS = {
    Kind.NEW: "A certificate transfer to account {target} is waiting for you",
    Kind.REMINDER: "Reminder: a certificate transfer to account {target} expires {expires}",
    Kind.ACCEPTED: "Transfer #{pk} was accepted by account {target}",
    Kind.REJECTED: "Transfer #{pk} was rejected by account {target}",
    Kind.CANCELLED: "Transfer #{pk} to account {target} was cancelled",
    Kind.EXPIRED: "Transfer #{pk} to account {target} expired and was cancelled",
    Kind.FAILED: "Transfer #{pk} to account {target} failed",
}
BATCH_SUBJECTS = {
    Kind.NEW: "{n} certificate transfer{s} to account {target} {are} waiting for you (batch #{pk})",
    Kind.REMINDER: "Reminder: {n} certificate transfer{s} to account {target} expire{one_s} "
    "{expires}",
    Kind.ACCEPTED: "{n} transfer{s} of batch #{pk} {were} accepted by account {target}",
    Kind.REJECTED: "{n} transfer{s} of batch #{pk} {were} rejected by account {target}",
    Kind.CANCELLED: "{n} transfer{s} of batch #{pk} to account {target} {were} cancelled",
    Kind.EXPIRED: "{n} transfer{s} of batch #{pk} to account {target} expired and {were} cancelled",
    Kind.FAILED: "{n} transfer{s} of batch #{pk} to account {target} failed",
    Kind.PAUSED: "Batch #{pk} to account {target} paused at wave {wave}: resume or stop it",
}


def carried(notice: Notice) -> list[Transfer]:
    """The transfers a batch notice is about, in id order."""
    return list(
        Transfer.objects.filter(notices__digest=notice).select_related("target").order_by("pk")
    )


def target_account(notice: Notice):
    if notice.transfer is not None:
        return notice.transfer.target
    return AwsAccount.objects.filter(account_id=notice.batch.target_account_id).first()


def channel_account(notice: Notice):
    """Whose webhook and Slack channel carry the notice: the target's, but the source's for
    a batch's pause (its people decide what happens next)."""
    if notice.kind == Kind.PAUSED:
        return notice.batch.source
    return target_account(notice)


def told_endpoints(subject: Transfer | TransferBatch) -> list[str]:
    """The data endpoints the devices were told before the move, in order (the target's
    first, the source's as fallback); empty when they were not told."""
    return list((subject.device_endpoints or {}).get("data") or [])


def confirm_devices(subject: Transfer | TransferBatch, target) -> bool:
    """A target the portal does not manage, whose devices were told: only it can say
    whether they are back."""
    return bool(told_endpoints(subject)) and not (target is not None and target.managed)


def device_figures(transfers: list[Transfer]) -> dict:
    """Whether the devices of ``transfers`` are back: back N of M (M: those looked for) and
    those not back, with why."""
    looked = [t for t in transfers if t.device_check]
    return {
        "back": sum(t.device_check == Transfer.DeviceCheck.BACK for t in looked),
        "checked": len(looked),
        "not_back": [t for t in looked if t.device_check == Transfer.DeviceCheck.NOT_BACK],
        "unverifiable": sum(t.device_check == Transfer.DeviceCheck.UNVERIFIABLE for t in looked),
        "waiting": sum(t.device_check == Transfer.DeviceCheck.WAITING for t in looked),
    }


def batch_context(notice: Notice) -> dict:
    batch: TransferBatch = notice.batch
    transfers = carried(notice)
    target = target_account(notice)
    expiries = [t.expires_at for t in transfers if t.expires_at]
    restoring = Count("pk")
    restored = dict(
        Transfer.objects.filter(notices__digest=notice)
        .exclude(restore_state="")
        .order_by()
        .values_list("restore_state")
        .annotate(n=restoring)
    )
    return {
        "notice": notice,
        "b": batch,
        "kind": notice.kind,
        "transfers": transfers,
        "count": len(transfers),
        "region": batch.region,
        "target": target,
        "expires_at": min(expiries) if expiries else None,
        "latest_expiry": max(expiries) if expiries else None,
        "restored": restored,
        "restored_count": sum(restored.values()),
        "batch_url": f"{settings.SITE_URL}{batch.get_absolute_url()}",
        "csv_name": f"batch-{batch.pk}-certificates.csv",
        "source_side": access.notice_to_source_side(notice),
        "devices": device_figures(transfers),
        "told": told_endpoints(batch),
        "confirm_devices": confirm_devices(batch, target),
    }


def context(notice: Notice) -> dict:
    if notice.transfer is None:
        return batch_context(notice)
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
        "landing_commands": landing_commands(transfer),
        "told": told_endpoints(transfer),
        "confirm_devices": confirm_devices(transfer, transfer.target),
        # The target's contacts read what concerns the target (access).
        "source_side": access.notice_to_source_side(notice),
    }


def landing_commands(transfer: Transfer) -> list[str]:
    """The landing plan as AWS CLI commands, for a target the portal does not manage."""
    if not transfer.landing or (transfer.target is not None and transfer.target.managed):
        return []
    return cli_commands(transfer)


def _when(value) -> str:
    if not value:
        return "soon"
    local = timezone.localtime(value)
    return f"on {local:%Y-%m-%d %H:%M} {timezone.get_current_timezone_name()}"


def subject(notice: Notice, ctx: dict | None = None) -> str:
    if notice.transfer is None:
        ctx = ctx or batch_context(notice)
        one = ctx["count"] == 1
        return BATCH_SUBJECTS[notice.kind].format(
            n=ctx["count"],
            s="" if one else "s",
            one_s="s" if one else "",
            are="is" if one else "are",
            were="was" if one else "were",
            pk=notice.batch_id,
            target=notice.batch.target_account_id,
            expires=_when(ctx["expires_at"]),
            wave=notice.batch.wave,
        )
    t = notice.transfer
    return SUBJECTS[notice.kind].format(
        pk=t.pk, target=t.target_account_id, expires=_when(t.expires_at)
    )


def certificate_csv(transfers: list[Transfer]) -> str:
    """The attachment of a batch email: a row per certificate. When their devices were
    looked for in the target, whether they are back (back, not_back, waiting,
    unverifiable) and why not."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    devices = any(t.device_check for t in transfers)
    head = ["certificate_id", "certificate_arn", "transfer", "status"]
    writer.writerow(head + (["devices", "devices_reason"] if devices else []))
    for t in transfers:
        row = [t.certificate_id, t.certificate_arn, t.pk, t.status]
        writer.writerow(row + ([t.device_check, t.device_reason] if devices else []))
    return out.getvalue()


def _zone_for(notice: Notice) -> str:
    from profiles.models import DEFAULT_ZONE, zones_by_email

    if notice.channel != Channel.EMAIL:
        return DEFAULT_ZONE
    return zones_by_email([notice.recipient]).get(notice.recipient, DEFAULT_ZONE)


def render(notice: Notice) -> dict:
    """The email as it is sent: subject, text, HTML and attachments, in the time zone of
    the recipient when they are a user of the portal (UTC otherwise)."""
    import zoneinfo

    with timezone.override(zoneinfo.ZoneInfo(_zone_for(notice))):
        ctx = context(notice)
        attachments = []
        if notice.transfer is None and notice.kind != Kind.PAUSED:
            attachments.append((ctx["csv_name"], certificate_csv(ctx["transfers"]), "text/csv"))
        return {
            "subject": subject(notice, ctx),
            "text": render_to_string("emails/notice.txt", ctx),
            "html": render_to_string("emails/notice.html", ctx),
            "attachments": attachments,
        }


def paused_payload(notice: Notice) -> dict:
    b = notice.batch
    return {
        "type": "certificate_transfer_batch.paused",
        "notice_id": notice.pk,
        "batch": {
            "id": b.pk,
            "source_account_id": b.source.account_id,
            "target_account_id": b.target_account_id,
            "region": b.region,
            "requested_by": b.requester.get_username(),
            "wave": b.wave,
            "threshold": b.wave_threshold,
            "paused_at": b.paused_at.isoformat() if b.paused_at else None,
            "pause_reason": b.pause_reason,
            "url": f"{settings.SITE_URL}{b.get_absolute_url()}",
        },
    }


def batch_payload(notice: Notice) -> dict:
    if notice.kind == Kind.PAUSED:
        return paused_payload(notice)
    ctx = batch_context(notice)
    b = notice.batch
    figures = ctx["devices"]
    return {
        "type": f"certificate_transfer_batch.{notice.kind}",
        "notice_id": notice.pk,
        "batch": {
            "id": b.pk,
            "count": ctx["count"],
            "source_account_id": b.source.account_id,
            "target_account_id": b.target_account_id,
            "region": b.region,
            "transfer_message": b.message,
            # Nobody of the source's by name: this goes to the target's webhook
            # (access.notice_to_source_side).
            "expires_at": ctx["expires_at"].isoformat() if ctx["expires_at"] else None,
            "url": ctx["batch_url"],
            "transfers": [
                {
                    "id": t.pk,
                    "certificate_id": t.certificate_id,
                    "status": t.status,
                    "devices": t.device_check,
                    "devices_reason": t.device_reason,
                }
                for t in ctx["transfers"]
            ],
            "devices": {
                "told": ctx["told"],
                "confirm": ctx["confirm_devices"],
                "back": figures["back"],
                "checked": figures["checked"],
                "not_back": len(figures["not_back"]),
            },
        },
    }


def payload(notice: Notice) -> dict:
    if notice.transfer is None:
        return batch_payload(notice)
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
            # Nobody of the source's by name: this goes to the target's webhook.
            "expires_at": t.expires_at.isoformat() if t.expires_at else None,
            "url": f"{settings.SITE_URL}{t.get_absolute_url()}",
            "landing_commands": landing_commands(t),
            "devices": {
                "told": told_endpoints(t),
                "confirm": confirm_devices(t, t.target),
                "check": t.device_check,
                "reason": t.device_reason,
            },
        },
    }


def _mrkdwn(text: str) -> str:
    """Slack's escaping: only &, < and > are control characters in its mrkdwn."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def slack_payload(notice: Notice) -> dict:
    """Slack's incoming-webhook format: a fallback ``text`` and Block Kit sections."""
    import zoneinfo

    with timezone.override(zoneinfo.ZoneInfo("UTC")):
        ctx = context(notice)
        title = subject(notice, ctx if notice.transfer is None else None)
    if notice.kind == Kind.PAUSED:
        b = notice.batch
        url = ctx["batch_url"]
        fields = [
            ("Wave", str(b.wave)),
            ("From", f"{b.source.account_id} ({b.source.name}), {b.region}"),
            ("Why", b.pause_reason or "-"),
        ]
    elif notice.transfer is None:
        b = notice.batch
        url = ctx["batch_url"]
        fields = [
            ("Certificates", str(ctx["count"])),
            ("From", f"{b.source.account_id} ({b.source.name}), {b.region}"),
            ("Message", b.message or "(none)"),
            ("Expires", _when(ctx["expires_at"]) if ctx["expires_at"] else "-"),
        ]
        figures = ctx["devices"]
        if figures["checked"]:
            fields.append(("Devices back", f"{figures['back']} of {figures['checked']}"))
        if ctx["told"]:
            fields.append(("Devices told", ", ".join(ctx["told"])))
    else:
        t = notice.transfer
        url = ctx["transfer_url"]
        fields = [
            ("Certificate", t.certificate_id),
            ("From", f"{t.source.account_id} ({t.source.name}), {t.region}"),
            ("Message", t.message or "(none)"),
            ("Expires", _when(t.expires_at) if t.expires_at else "-"),
        ]
        if ctx["told"]:
            fields.append(("Devices told", ", ".join(ctx["told"])))
    return {
        "text": title,
        "blocks": [
            {"type": "section", "text": {"type": "mrkdwn", "text": f"*{_mrkdwn(title)}*"}},
            {
                "type": "section",
                "fields": [
                    {"type": "mrkdwn", "text": f"*{name}*\n{_mrkdwn(value)}"}
                    for name, value in fields
                ],
            },
            {"type": "section", "text": {"type": "mrkdwn", "text": f"<{url}|Open in the portal>"}},
        ],
    }


def body_json(notice: Notice) -> str:
    """What a webhook or Slack notice posts (the notices page shows it)."""
    data = slack_payload(notice) if notice.channel == Channel.SLACK else payload(notice)
    return json.dumps(data, indent=2)


# ----------------------------------------------------------------------------- approval mail


def approval_request(transfer: Transfer, have: int, needed: int) -> tuple[str, str]:
    """Subject and body: a single request waits for an approver's decision."""
    url = f"{settings.SITE_URL}{transfer.get_absolute_url()}"
    return (
        f"Transfer #{transfer.pk} from {transfer.source.name} waits for your approval "
        f"({have} of {needed})",
        f"{transfer.requester} asks to transfer certificate {transfer.certificate_id} from "
        f"account {transfer.source.account_id} ({transfer.region}) to account "
        f"{transfer.target_account_id}.\n\nReason: {transfer.reason}\n\n"
        f"Approvals: {have} of {needed}. Decide here: {url}\n",
    )


def batch_approval_request(
    batch: TransferBatch, size: int, have: int, needed: int
) -> tuple[str, str]:
    """Subject and body: a batch of ``size`` transfers waits for an approver's decision."""
    url = f"{settings.SITE_URL}{batch.get_absolute_url()}"
    return (
        f"Batch #{batch.pk} of {size} transfers from {batch.source.name} waits for your "
        f"approval ({have} of {needed})",
        f"{batch.requester} asks to transfer {size} certificates from account "
        f"{batch.source.account_id} to account {batch.target_account_id}.\n\n"
        f"Reason: {batch.reason}\n\nApprovals: {have} of {needed}. Decide here: {url}\n",
    )


def declined(transfer: Transfer) -> tuple[str, str]:
    """Subject and body: the request was declined (told once for a batch: its first
    declined transfer stands for the batch)."""
    if transfer.batch_id is not None:
        what, url = f"Batch #{transfer.batch_id}", transfer.batch.get_absolute_url()
    else:
        what, url = f"Transfer #{transfer.pk}", transfer.get_absolute_url()
    return (
        f"{what} was declined by {transfer.approver}",
        f"{what} from account {transfer.source.account_id} to account "
        f"{transfer.target_account_id} was declined by {transfer.approver}: "
        f"{transfer.decision_comment}\n\nNothing happened in AWS. {settings.SITE_URL}{url}\n",
    )
