"""Catching up with AWS: decide a pending transfer's state from what AWS says now."""

from __future__ import annotations

import logging
from datetime import timedelta

from django.conf import settings
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from transfers import aws, queue
from transfers.models import Transfer
from transfers.workflow.errors import RECONCILER, TransferError
from transfers.workflow.events import transition
from transfers.workflow.outcome import end, moved

log = logging.getLogger(__name__)


def reconcile_one(pk: int) -> str:
    transfer = Transfer.objects.select_related("source", "target").get(pk=pk)
    if transfer.status != Transfer.Status.PENDING_ACCEPTANCE:
        return f"skipped: {transfer.status}"
    iot = aws.client(transfer.source, transfer.region)
    return _reconcile(transfer, iot, outgoing=None)


def reconcile_pending() -> dict[str, int]:
    """Ask AWS about every pending transfer; catch up with what happened outside the portal."""
    outcomes: dict[str, int] = {}
    pending = Transfer.objects.filter(status=Transfer.Status.PENDING_ACCEPTANCE).select_related(
        "source", "target"
    )
    groups: dict[tuple[int, str], list[Transfer]] = {}
    for transfer in pending:
        groups.setdefault((transfer.source_id, transfer.region), []).append(transfer)
    for group in groups.values():
        first = group[0]
        try:
            iot = aws.client(first.source, first.region)
            outgoing = {
                item["certificateId"]: item
                for item in aws.pages(
                    iot, "list_outgoing_certificates", "outgoingCertificates", pageSize=250
                )
            }
        except aws.AwsError as exc:
            log.warning("reconcile: cannot list outgoing of %s: %s", first.source, exc)
            outcomes["unreachable"] = outcomes.get("unreachable", 0) + len(group)
            continue
        for transfer in group:
            try:
                outcome = _reconcile(transfer, iot, outgoing)
            except aws.AwsError as exc:
                log.warning("reconcile: %s: %s", transfer, exc)
                outcome = "error"
            outcomes[outcome] = outcomes.get(outcome, 0) + 1
    return outcomes


def _reconcile(transfer: Transfer, iot, outgoing: dict | None) -> str:
    if outgoing is None:
        outgoing = {
            item["certificateId"]: item
            for item in aws.pages(
                iot, "list_outgoing_certificates", "outgoingCertificates", pageSize=250
            )
        }
    item = outgoing.get(transfer.certificate_id)
    if item and item.get("transferredTo") == transfer.target_account_id:
        return "pending"
    try:
        desc = aws.call(iot, "describe_certificate", certificateId=transfer.certificate_id)[
            "certificateDescription"
        ]
    except aws.AwsError as exc:
        if exc.code != "ResourceNotFoundException":
            raise
        # Gone from the source: the target accepted it.
        accept_date = None
        if transfer.target and transfer.target.managed:
            accept_date = _target_accept_date(transfer)

        def fill(row: Transfer) -> None:
            row.accept_date = accept_date or timezone.now()

        try:
            transition(
                transfer.pk,
                "mark_accepted",
                RECONCILER,
                before=fill,
                refuse="It already ended.",
                seen="gone from the source account",
            )
        except TransferError:
            return "raced"
        moved(transfer)
        return "accepted"
    data = desc.get("transferData", {})
    if data.get("rejectDate"):
        try:
            end(
                transfer.pk,
                "mark_rejected",
                RECONCILER,
                reject_reason=data.get("rejectReason", "")[:128],
                reject_date=_as_datetime(data["rejectDate"]),
            )
        except TransferError:
            return "raced"
        return "rejected"
    try:
        end(transfer.pk, "cancel", RECONCILER)
    except TransferError:
        return "raced"
    return "cancelled"


def _target_accept_date(transfer: Transfer):
    try:
        iot = aws.client(transfer.target, transfer.region)
        desc = aws.call(iot, "describe_certificate", certificateId=transfer.certificate_id)[
            "certificateDescription"
        ]
    except aws.AwsError:
        return None
    return _as_datetime(desc.get("transferData", {}).get("acceptDate"))


def _as_datetime(value):
    if value is None or hasattr(value, "tzinfo"):
        return value
    return parse_datetime(str(value))


def requeue_stalled() -> int:
    """Approved or preparing transfers that made no progress (a lost message, a dead worker).
    A batch's transfers go back through its feeder, which keeps to the account's rate."""
    cutoff = timezone.now() - timedelta(minutes=settings.TRANSFER_STALL_MINUTES)
    stalled = list(
        Transfer.objects.filter(status__in=Transfer.Status.IN_FLIGHT, updated__lt=cutoff)
        .exclude(lease_until__gt=timezone.now())
        .values_list("pk", "batch_id", "status")
    )
    waiting = [(pk, b) for pk, b, status in stalled if b and status == Transfer.Status.APPROVED]
    for pk, batch_id, _status in stalled:
        if (pk, batch_id) not in waiting:
            queue.send_now("execute_transfer", pk)
    Transfer.objects.filter(pk__in=[pk for pk, _ in waiting]).update(queued_at=None)
    for batch_id in {b for _, b in waiting}:
        queue.send_now("feed_batch", batch_id)
    return len(stalled)
