"""The source cancels a transfer the target has not decided on."""

from __future__ import annotations

from transfers import aws, permissions
from transfers.models import Transfer
from transfers.workflow.errors import TransferError
from transfers.workflow.outcome import end
from transfers.workflow.reconcile import decide, newer_transfer
from transfers.workflow.target import act_in_aws


def cancel(user, pk: int) -> Transfer:
    transfer = Transfer.objects.select_related("source", "target").get(pk=pk)
    if not permissions.can_operate(user, transfer.source):
        raise TransferError(
            "forbidden", "You may not cancel transfers from this account.", status=403
        )
    if transfer.status == Transfer.Status.FAILED and transfer.needs_restore():
        _no_newer_open_transfer(transfer)
    newer = newer_transfer(transfer) if transfer.status == Transfer.Status.FAILED else None
    if newer is not None:
        # AWS's state is the newer transfer's: nothing of this one's to catch up.
        if transfer.needs_restore():
            _check_newer_is_done(newer)
    elif transfer.status == Transfer.Status.FAILED and transfer.first_transfer_at:
        _catch_up_first(transfer)
        transfer.refresh_from_db()
    if transfer.status == Transfer.Status.PENDING_ACCEPTANCE:
        act_in_aws(
            transfer,
            user,
            transfer.source,
            "cancel_certificate_transfer",
            "The target account already accepted or rejected it",
        )
    elif transfer.status != Transfer.Status.FAILED:
        raise TransferError(
            "invalid_state",
            "Only a pending or failed transfer can be "
            f"cancelled; this one is {transfer.get_status_display().lower()}. "
            "A request not yet approved is withdrawn instead.",
            status=409,
        )
    return end(pk, "cancel", user)


# A newer transfer that ended in one of these left the certificate in the source with
# nothing under way in AWS: an older failed one can then be given up (and what it removed
# put back).
_ENDED_AT_HOME = {
    Transfer.Status.DECLINED,
    Transfer.Status.CANCELLED,
    Transfer.Status.REJECTED,
    Transfer.Status.EXPIRED,
}


def _check_newer_is_done(newer: Transfer) -> None:
    if newer.status in _ENDED_AT_HOME or (
        newer.status == Transfer.Status.FAILED and newer.first_transfer_at is None
    ):
        return
    raise TransferError(
        "superseded",
        f"Transfer #{newer.pk} of this certificate was requested after this one and is "
        f"{newer.get_status_display().lower()}: giving up on this one now would put back "
        f"what it removed while #{newer.pk} has the certificate. Act on #{newer.pk} instead.",
        status=409,
    )


def _catch_up_first(transfer: Transfer) -> None:
    """A failed transfer that did call TransferCertificate may still be pending in AWS (its
    answer was lost), or even accepted since: read AWS before cancelling it."""
    try:
        outcome = decide(transfer, aws.client(transfer.source, transfer.region))
    except aws.AwsError as exc:
        raise TransferError(
            exc.code,
            f"Could not check the certificate in AWS before cancelling: {exc.user_message}",
            status=503 if exc.retryable else 502,
        ) from None
    if outcome == "accepted":
        raise TransferError(
            "already_completed",
            "AWS says the target account already accepted it; the portal has caught up.",
            status=409,
        )


def _no_newer_open_transfer(transfer: Transfer) -> None:
    """Cancelling a failed transfer puts back what it removed; while a newer transfer of the
    certificate is open that restore would undo its preparation (the rule of
    workflow.plan.unfinished_restore, from the other side)."""
    newer = (
        Transfer.objects.open()
        .filter(
            source_id=transfer.source_id,
            region=transfer.region,
            certificate_id=transfer.certificate_id,
        )
        .exclude(pk=transfer.pk)
        .first()
    )
    if newer is not None:
        raise TransferError(
            "newer_transfer_open",
            f"Transfer #{newer.pk} of this certificate is open: cancelling this one would put "
            f"back what it removed while #{newer.pk} prepares the certificate. Cancel this "
            f"one once #{newer.pk} has ended.",
            status=409,
        )
