"""The source cancels a transfer the target has not decided on."""

from __future__ import annotations

from transfers import permissions
from transfers.models import Transfer
from transfers.workflow.errors import TransferError
from transfers.workflow.outcome import end
from transfers.workflow.target import act_in_aws


def cancel(user, pk: int) -> Transfer:
    transfer = Transfer.objects.select_related("source").get(pk=pk)
    if not permissions.can_operate(user, transfer.source):
        raise TransferError(
            "forbidden", "You may not cancel transfers from this account.", status=403
        )
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
