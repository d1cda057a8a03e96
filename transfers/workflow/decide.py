"""The source account's decisions: approve, decline, withdraw, retry."""

from __future__ import annotations

from transfers import permissions, queue
from transfers.models import Transfer
from transfers.workflow.errors import TransferError
from transfers.workflow.events import transition


def _comment(comment: str | None) -> str:
    comment = (comment or "").strip()
    if len(comment) > 2000:
        raise TransferError("invalid_comment", "A comment is limited to 2000 characters.")
    return comment


def check_can_approve(user, account) -> None:
    if not permissions.can_approve(user, account):
        raise TransferError(
            "forbidden", "You may not approve transfers from this account.", status=403
        )


def approve(user, pk: int, comment: str = "", *, enqueue: bool = True) -> Transfer:
    comment = _comment(comment)

    def check(transfer: Transfer) -> None:
        check_can_approve(user, transfer.source)
        if transfer.requester_id == user.pk:
            raise TransferError(
                "self_approval",
                "Nobody approves their own request: another approver must decide.",
                status=403,
            )
        transfer.approver = user
        transfer.decision_comment = comment.strip()

    transfer = transition(
        pk,
        "approve",
        user,
        before=check,
        refuse="Only a requested transfer can be approved.",
        comment=comment.strip(),
    )
    if enqueue:
        queue.enqueue("execute_transfer", transfer.pk)
    return transfer


def decline(user, pk: int, comment: str = "") -> Transfer:
    comment = _comment(comment)

    def check(transfer: Transfer) -> None:
        if not permissions.can_approve(user, transfer.source):
            raise TransferError(
                "forbidden", "You may not decline transfers from this account.", status=403
            )
        if not comment.strip():
            raise TransferError("comment_required", "Say why you decline it.")
        transfer.approver = user
        transfer.decision_comment = comment.strip()

    return transition(
        pk,
        "decline",
        user,
        before=check,
        refuse="Only a requested transfer can be declined.",
        comment=comment.strip(),
    )


def withdraw(user, pk: int) -> Transfer:
    def check(transfer: Transfer) -> None:
        if not permissions.can_withdraw(user, transfer):
            raise TransferError(
                "forbidden",
                "Only the requester (or an account admin) can withdraw a request.",
                status=403,
            )

    return transition(
        pk,
        "withdraw",
        user,
        before=check,
        refuse="Only a request that is not yet approved can be withdrawn.",
    )


def retry(user, pk: int, *, enqueue: bool = True) -> Transfer:
    """Run a failed transfer again. It re-runs destructive preparation (deactivate,
    detach), so it is an approver's decision, never the requester's own."""

    def check(transfer: Transfer) -> None:
        if not permissions.can_retry(user, transfer):
            raise TransferError(
                "forbidden",
                "Retrying runs the preparation again: an approver of this account other "
                "than the requester decides it (or make a new request).",
                status=403,
            )

    transfer = transition(
        pk, "retry", user, before=check, refuse="Only a failed transfer can be retried."
    )
    if enqueue:
        queue.enqueue("execute_transfer", transfer.pk)
    return transfer
