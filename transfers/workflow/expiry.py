"""Expiry when nobody accepted a transfer in time (the reminders before it are notices:
notices.send_reminders)."""

from __future__ import annotations

from django.utils import timezone

from transfers import aws
from transfers.models import Transfer
from transfers.workflow.errors import EXPIRY, TransferError
from transfers.workflow.events import aws_call
from transfers.workflow.outcome import end
from transfers.workflow.reconcile import reconcile_one


def expire(pk: int) -> str:
    """Cancel in AWS a transfer nobody accepted in time; restore as the request chose."""
    transfer = Transfer.objects.select_related("source", "target").get(pk=pk)
    if transfer.status != Transfer.Status.PENDING_ACCEPTANCE:
        return f"skipped: {transfer.status}"
    iot = aws.client(transfer.source, transfer.region)
    try:
        aws_call(
            transfer,
            EXPIRY,
            iot,
            "cancel_certificate_transfer",
            certificateId=transfer.certificate_id,
        )
    except aws.AwsError as exc:
        if exc.code == "TransferAlreadyCompletedException":
            return reconcile_one(pk)  # accepted or rejected at the last moment
        raise
    try:
        end(pk, "expire", EXPIRY)
    except TransferError:
        return "raced"
    return "expired"


def due_for_expiry(now=None) -> list[int]:
    now = now or timezone.now()
    pending = Transfer.objects.filter(status=Transfer.Status.PENDING_ACCEPTANCE).select_related(
        "target"
    )
    return [t.pk for t in pending if t.expires_at and t.expires_at <= now]
