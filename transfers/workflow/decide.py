"""The source account's decisions: approve, decline, withdraw, retry."""

from __future__ import annotations

from django.db import IntegrityError, transaction

from transfers import permissions, queue
from transfers.models import Transfer
from transfers.workflow.errors import TransferError
from transfers.workflow.events import record, transition
from transfers.workflow.reconcile import newer_transfer, superseded


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


def landing_approver_refused() -> TransferError:
    """Nobody authorises both sides alone: whoever approved the landing in the target does
    not approve the move (the other way round is permissions.can_approve_landing's)."""
    return TransferError(
        "landing_approver",
        "You approved the landing in the target: another approver of the source account "
        "must approve the move, so that nobody authorises both sides alone.",
        status=403,
    )


def approve(user, pk: int, comment: str = "", *, enqueue: bool = True) -> Transfer:
    """One approval. Under the source's approval policy (policies/) a request may need
    several distinct approvers: until the last one it stays requested, each approval an
    Approval row and an "approval" event; the last approval approves it."""
    comment = _comment(comment)

    def check(transfer: Transfer) -> None:
        check_can_approve(user, transfer.source)
        if transfer.requester_id == user.pk:
            raise TransferError(
                "self_approval",
                "Nobody approves their own request: another approver must decide.",
                status=403,
            )
        if permissions.approved_the_landing(user, transfer):
            raise landing_approver_refused()
        transfer.approver = user
        transfer.decision_comment = comment.strip()

    with transaction.atomic():  # the row stays locked from the count to the transition
        waiting = _count_approval(user, pk, comment, check)
        if waiting is not None:
            return waiting
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


def _count_approval(user, pk: int, comment: str, check) -> Transfer | None:
    """Under a policy of several approvers, add this one; the transfer while more are
    needed, None when this approval is the last one (or only one is needed)."""
    from policies import mail, rules
    from policies.models import Approval

    # Only the transfer's row: FOR UPDATE alone would lock the joined account and requester
    # too, so the approvals of every batch from one account or one requester would queue
    # behind each other's chunks (bench/regions.py: 35 % of the workers' time).
    transfer = (
        Transfer.objects.select_for_update(of=("self",))
        .select_related("source", "requester")
        .get(pk=pk)
    )
    if transfer.status != Transfer.Status.REQUESTED:
        return None  # the transition refuses it, with its message
    needed = rules.required(transfer)
    if needed <= 1:
        return None
    check(transfer)
    if Approval.objects.filter(transfer=transfer, user=user).exists():
        raise TransferError(
            "already_approved",
            "You approved this already: another approver must add theirs.",
            status=409,
        )
    Approval.objects.create(transfer=transfer, user=user, comment=comment)
    have = Approval.objects.filter(transfer=transfer).count()
    if have >= needed:
        return None
    record(transfer, "approval", user, comment=comment, approvals=have, required=needed)
    if transfer.batch_id is None:
        mail.tell_approvers(transfer, have, needed)
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

    transfer = transition(
        pk,
        "decline",
        user,
        before=check,
        refuse="Only a requested transfer can be declined.",
        comment=comment.strip(),
    )
    from policies import mail

    mail.tell_declined(transfer)  # the requester, after commit
    return transfer


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
    detach), so it is an approver's decision, never the requester's own. Not once a newer
    transfer of the certificate exists: the retry would take that one's state in AWS for
    its own."""

    def check(transfer: Transfer) -> None:
        if not permissions.can_retry(user, transfer):
            raise TransferError(
                "forbidden",
                "Retrying runs the preparation again: an approver of this account other "
                "than the requester decides it (or make a new request).",
                status=403,
            )
        newer = newer_transfer(transfer)
        if newer is not None:
            raise superseded(newer)

    try:
        transfer = transition(
            pk, "retry", user, before=check, refuse="Only a failed transfer can be retried."
        )
    except IntegrityError:  # a newer transfer opened between the check and the write
        raise TransferError(
            "already_open", "This certificate already has an open transfer.", status=409
        ) from None
    if enqueue:
        queue.enqueue("execute_transfer", transfer.pk)
    return transfer
