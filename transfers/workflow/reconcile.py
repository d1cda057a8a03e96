"""Catching up with AWS: decide a transfer's state from what DescribeCertificate says now.

Never by elimination from a listing: ListOutgoingCertificates lags and pages can miss
items. The listing is only used to skip the DescribeCertificate of transfers it still shows
pending to their target (nothing to decide); everything else is described and decided:

| AWS says (DescribeCertificate in the source)           | the transfer is          |
|--------------------------------------------------------|--------------------------|
| PENDING_TRANSFER                                       | pending acceptance       |
| back at the source, rejectDate after our transfer      | rejected                 |
| back at the source, no reject date after our transfer  | cancelled                |
| ResourceNotFound                                       | accepted (confirmed in a |
|                                                        | managed target)          |

AWS's state is a transfer's only while no newer transfer of the certificate exists: a new
request can follow a failed one, and from then on what AWS shows is the newer one's. A
failed transfer is caught up (its TransferCertificate answer was lost) only from a pending
transfer dated after its first call and not listed as pending to another account.

One transfer's failure here never stops the others: it is logged and counted
(SweepFailure: /metrics/, and /health/ for staff), and the sweep goes on.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from django.conf import settings
from django.db import IntegrityError
from django.db.models import Exists, OuterRef, Q
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from transfers import aws, queue
from transfers.models import Certificate, SweepFailure, Transfer, TransferBatch
from transfers.workflow.errors import RECONCILER, TransferError
from transfers.workflow.events import record, transition
from transfers.workflow.outcome import end, moved

log = logging.getLogger(__name__)

# AWS's clock and the portal's differ a little: a transfer AWS dates up to this long before
# the portal's first TransferCertificate call is still that call's.
CLOCK_SKEW = timedelta(seconds=60)

# Failed transfers that did call TransferCertificate are checked too (a lost answer can
# leave one pending in AWS) for this long after they failed.
FAILED_WATCH = timedelta(days=14)


def newer_transfer(transfer: Transfer) -> Transfer | None:
    """The latest transfer of the same certificate requested after this one, if any. A new
    request needs the certificate out of any transfer in AWS (the plan refuses a pending
    one), so whatever AWS shows from then on is never this transfer's."""
    return (
        Transfer.objects.filter(
            source_id=transfer.source_id,
            region=transfer.region,
            certificate_id=transfer.certificate_id,
            pk__gt=transfer.pk,
        )
        .order_by("-pk")
        .first()
    )


def superseded(newer: Transfer) -> TransferError:
    """The refusal for a failed transfer that a newer transfer of its certificate followed."""
    return TransferError(
        "superseded",
        f"Transfer #{newer.pk} of this certificate was requested after this one: what AWS "
        "shows now is that transfer's, so this one is no longer checked with AWS or retried. "
        f"Act on #{newer.pk}, or make a new request.",
        status=409,
    )


def reconcile_one(pk: int) -> str:
    transfer = Transfer.objects.select_related("source", "target").get(pk=pk)
    if transfer.status not in (Transfer.Status.PENDING_ACCEPTANCE, Transfer.Status.FAILED):
        return f"skipped: {transfer.status}"
    newer = newer_transfer(transfer)
    if newer is not None:
        raise superseded(newer)
    iot = aws.client(transfer.source, transfer.region)
    return decide(transfer, iot)


def _watched() -> list[Transfer]:
    newer = Transfer.objects.filter(
        source=OuterRef("source"),
        region=OuterRef("region"),
        certificate_id=OuterRef("certificate_id"),
        pk__gt=OuterRef("pk"),
    )
    return list(
        Transfer.objects.filter(
            Q(status=Transfer.Status.PENDING_ACCEPTANCE)
            | Q(
                status=Transfer.Status.FAILED,
                first_transfer_at__isnull=False,
                finished_at__gte=timezone.now() - FAILED_WATCH,
            )
        )
        .exclude(Exists(newer))  # a failed transfer a newer one followed: never its state
        .select_related("source", "target")
    )


def outgoing(iot) -> dict[str, str | None]:
    """What ListOutgoingCertificates shows pending: certificate id -> the account it goes to.
    It can lag: a certificate missing from it proves nothing."""
    return {
        item["certificateId"]: item.get("transferredTo")
        for item in aws.pages(
            iot, "list_outgoing_certificates", "outgoingCertificates", pageSize=250
        )
    }


def reconcile_pending() -> dict[str, int]:
    """Ask AWS about every pending transfer (and every failed one that may have reached
    AWS); catch up with what happened outside the portal."""
    outcomes: dict[str, int] = {}
    groups: dict[tuple[int, str], list[Transfer]] = {}
    for transfer in _watched():
        groups.setdefault((transfer.source_id, transfer.region), []).append(transfer)
    for group in groups.values():
        first = group[0]
        try:
            iot = aws.client(first.source, first.region)
            listed = outgoing(iot)
        except aws.AwsError as exc:
            log.warning("reconcile: cannot list outgoing of %s: %s", first.source, exc)
            outcomes["unreachable"] = outcomes.get("unreachable", 0) + len(group)
            continue
        except Exception as exc:  # one account's trouble never stops the others
            subject = f"account {first.source.account_id} {first.region}"
            SweepFailure.note(SweepFailure.Sweep.RECONCILE, subject, exc)
            outcomes["exception"] = outcomes.get("exception", 0) + len(group)
            continue
        for transfer in group:
            if (
                transfer.status == Transfer.Status.PENDING_ACCEPTANCE
                and listed.get(transfer.certificate_id) == transfer.target_account_id
            ):
                outcome = "pending"  # listed as pending to its target: nothing to decide
            else:
                try:
                    outcome = decide(transfer, iot, listed)
                except aws.AwsError as exc:
                    log.warning("reconcile: %s: %s", transfer, exc)
                    outcome = "error"
                except Exception as exc:  # one transfer's trouble never stops the others
                    SweepFailure.note(SweepFailure.Sweep.RECONCILE, f"transfer {transfer.pk}", exc)
                    outcome = "exception"
            outcomes[outcome] = outcomes.get(outcome, 0) + 1
    return outcomes


def _since(transfer: Transfer) -> datetime:
    """The earliest moment AWS may date this transfer's TransferCertificate."""
    start = transfer.first_transfer_at or transfer.transfer_date or transfer.pending_since
    return (start or transfer.created) - CLOCK_SKEW


def is_ours(transfer: Transfer, desc: dict, iot, listed: dict | None = None) -> bool:
    """Is the transfer AWS describes (``desc``, the certificate in the source) this one's?
    Dated after this transfer's first call, no newer transfer of the certificate, and, when
    pending, not listed as pending to another account (``listed``: what ``outgoing`` read,
    read here when not given)."""
    when = as_datetime((desc.get("transferData") or {}).get("transferDate"))
    if when is None or when < _since(transfer) or newer_transfer(transfer) is not None:
        return False
    if desc["status"] != "PENDING_TRANSFER":
        return True
    to = (listed if listed is not None else outgoing(iot)).get(transfer.certificate_id)
    return to is None or to == transfer.target_account_id


def decide(transfer: Transfer, iot, listed: dict | None = None) -> str:
    """Read the certificate in the source now and move the transfer to what AWS says.
    ``listed``: ListOutgoingCertificates as ``outgoing`` read it, when the caller has it."""
    if newer_transfer(transfer) is not None:
        return "superseded"  # what AWS shows is the newer transfer's
    try:
        desc = aws.call(iot, "describe_certificate", certificateId=transfer.certificate_id)[
            "certificateDescription"
        ]
    except aws.AwsError as exc:
        if exc.code != "ResourceNotFoundException":
            raise
        return _gone(transfer)
    data = desc.get("transferData") or {}
    if transfer.status == Transfer.Status.FAILED:
        # Failed in the portal: caught up only from a pending transfer that is its own.
        if desc["status"] == "PENDING_TRANSFER" and is_ours(transfer, desc, iot, listed):
            return _caught_pending(transfer, as_datetime(data.get("transferDate")))
        return "failed"
    if desc["status"] == "PENDING_TRANSFER":
        return "pending"
    reject_date = as_datetime(data.get("rejectDate"))
    if reject_date is not None and reject_date >= _since(transfer):
        try:
            end(
                transfer.pk,
                "mark_rejected",
                RECONCILER,
                reject_reason=(data.get("rejectReason") or "")[:128],
                reject_date=reject_date,
            )
        except TransferError:
            return "raced"
        return "rejected"
    try:
        end(transfer.pk, "cancel", RECONCILER, seen=f"{desc['status']} in the source account")
    except TransferError:
        return "raced"
    return "cancelled"


def _caught_pending(transfer: Transfer, transfer_date) -> str:
    """A failed transfer that AWS says is pending: the call's answer was lost. Pending."""

    def fill(row: Transfer) -> None:
        row.transfer_date = transfer_date
        row.transferred_arn = row.transferred_arn or row.certificate_arn.replace(
            f":{row.source.account_id}:", f":{row.target_account_id}:"
        )

    try:
        transition(
            transfer.pk,
            "mark_pending",
            RECONCILER,
            before=fill,
            refuse="It changed meanwhile.",
            seen="PENDING_TRANSFER in AWS: the TransferCertificate answer was lost",
        )
    except TransferError:
        return "raced"
    except IntegrityError:
        return "superseded"  # a newer transfer of the certificate opened meanwhile
    Certificate.objects.filter(pk=transfer.cert_id).set_status("PENDING_TRANSFER")
    return "pending"


def _gone(transfer: Transfer) -> str:
    """Gone from the source: the target accepted it. Confirmed in the target when the portal
    manages it; a managed target that does not have it (yet) leaves the decision for later."""
    accept_date = None
    target = transfer.target
    if target is not None and target.managed:
        try:
            tiot = aws.client(target, transfer.region)
            desc = aws.call(tiot, "describe_certificate", certificateId=transfer.certificate_id)[
                "certificateDescription"
            ]
        except aws.AwsError as exc:
            if exc.code == "ResourceNotFoundException":
                log.warning("reconcile: %s gone from the source, not in the target", transfer)
                return "unconfirmed"
            # The target cannot be asked; the source alone says the transfer completed.
        else:
            accept_date = as_datetime((desc.get("transferData") or {}).get("acceptDate"))
    if transfer.status == Transfer.Status.FAILED:
        outcome = _caught_pending(transfer, transfer.transfer_date or transfer.first_transfer_at)
        if outcome != "pending":
            return outcome

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


def as_datetime(value):
    if value is None or hasattr(value, "tzinfo"):
        return value
    return parse_datetime(str(value))


def requeue_stalled() -> int:
    """Re-send work a lost message or a dead worker left behind. Returns how many.

    - A transfer handed to a worker (``queued_at``) that has not started within the stall
      time, or one being prepared whose worker's lease ran out: sent again. ``execute``
      takes a lease, so a message that was only slow makes no second execution.
    - A batch's transfers that wait their turn are the feeder's: only a batch with work and
      no live feeder gets a feeder again (one per batch; it holds a lease)."""
    now = timezone.now()
    cutoff = now - timedelta(minutes=settings.TRANSFER_STALL_MINUTES)
    stalled = list(
        Transfer.objects.filter(
            Q(status=Transfer.Status.APPROVED, batch__isnull=True, queued_at__lt=cutoff)
            | Q(status=Transfer.Status.APPROVED, batch__isnull=True, queued_at__isnull=True)
            | Q(status=Transfer.Status.PREPARING, updated__lt=cutoff)
        )
        .exclude(updated__gte=cutoff, status=Transfer.Status.APPROVED, queued_at__isnull=True)
        .exclude(lease_until__gt=now)
        # Held for its devices: waits for an approver, not for a worker.
        .exclude(status=Transfer.Status.APPROVED, device_hold__gt="")
        .values_list("pk", flat=True)
    )
    if stalled:
        Transfer.objects.filter(pk__in=stalled, status=Transfer.Status.APPROVED).update(
            queued_at=now
        )
    sent = [pk for pk in stalled if _send("execute_transfer", pk, f"transfer {pk}")]
    batches = list(
        TransferBatch.objects.filter(transfers__status=Transfer.Status.APPROVED)
        .filter(Q(feeder_until__isnull=True) | Q(feeder_until__lt=now))
        .filter(paused_at__isnull=True, stopped_at__isnull=True)  # waits for an approver
        .values_list("pk", flat=True)
        .distinct()
    )
    fed = [pk for pk in batches if _send("feed_batch", pk, f"batch {pk}")]
    for pk in sent:
        record(Transfer(pk=pk), "requeued", RECONCILER, reason="no progress: sent again")
    return len(sent) + len(fed)


def _send(task: str, pk: int, subject: str) -> bool:
    try:
        queue.send_now(task, pk)
    except Exception as exc:  # one row's trouble never stops the sweep
        SweepFailure.note(SweepFailure.Sweep.REQUEUE, subject, exc)
        return False
    return True
