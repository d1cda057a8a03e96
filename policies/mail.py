"""Who is told what about approvals: approvers that a request waits for them (when it is
made, and while more approvals are needed), the requester when it is declined.

Called where each happens (the request, the approval, the decline), never from a model
signal; the mail is sent by a worker after commit (policies.tasks, through transfers.queue)."""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.db import transaction
from django.db.models import Q

from policies import rules
from transfers import messages, queue
from transfers.models import CAN_APPROVE, Transfer, TransferBatch, TransferEvent


def _send(subject: str, body: str, recipients: list[str]) -> None:
    """One message per recipient, each its own task: approvers never see who else approves
    for the account, and a retry reaches only the address that failed."""
    for recipient in sorted(set(recipients)):
        queue.enqueue("policies.tasks.send_approval_mail", subject, body, [recipient])


def approver_emails(account_pk: int, exclude: set[int]) -> list[str]:
    """People holding an approving role on the account (directly or through a group)."""
    grants = Q(grants__account_id=account_pk, grants__role__in=CAN_APPROVE) | Q(
        groups__grants__account_id=account_pk, groups__grants__role__in=CAN_APPROVE
    )
    users = get_user_model().objects.filter(grants, is_active=True).exclude(pk__in=exclude)
    return [e for e in users.exclude(email="").values_list("email", flat=True).distinct()]


def tell_approvers(transfer: Transfer, have: int = 0, needed: int | None = None) -> None:
    needed = needed or rules.required(transfer)
    done = set(transfer.approvals.values_list("user_id", flat=True))
    _send(
        *messages.approval_request(transfer, have, needed),
        approver_emails(transfer.source_id, {transfer.requester_id, *done}),
    )


def tell_approvers_of_batch(batch: TransferBatch, have: int = 0) -> None:
    size = rules.batch_size(batch.pk)
    needed = rules.required_for_batch(batch, size)
    done = set(batch.approvals.values_list("user_id", flat=True))
    _send(
        *messages.batch_approval_request(batch, size, have, needed),
        approver_emails(batch.source_id, {batch.requester_id, *done}),
    )


def tell_declined(transfer: Transfer) -> None:
    """The requester, once per single request and once per batch."""
    email = transfer.requester.email
    if not email:
        return
    if transfer.batch_id is not None:
        earlier = TransferEvent.objects.filter(
            transfer__batch_id=transfer.batch_id, action="decline"
        ).exclude(transfer=transfer)
        if earlier.exists():
            return
    _send(*messages.declined(transfer), [email])


def requested(transfer: Transfer) -> None:
    """A single request was made: once it commits, its approvers are told (a transfer of a
    batch is told with its batch: batch_requested)."""
    if transfer.batch_id is None:
        pk = transfer.pk
        transaction.on_commit(lambda: _tell_new(pk))


def _tell_new(pk: int) -> None:
    transfer = Transfer.objects.select_related("source", "requester").filter(pk=pk).first()
    if transfer is not None and transfer.status == Transfer.Status.REQUESTED:
        tell_approvers(transfer)


def batch_requested(batch: TransferBatch) -> None:
    """A batch was requested: once it commits, its approvers are told."""
    pk = batch.pk
    transaction.on_commit(lambda: _tell_new_batch(pk))


def _tell_new_batch(pk: int) -> None:
    batch = TransferBatch.objects.select_related("source", "requester").filter(pk=pk).first()
    if batch is not None and batch.transfers.filter(status=Transfer.Status.REQUESTED).exists():
        tell_approvers_of_batch(batch)
