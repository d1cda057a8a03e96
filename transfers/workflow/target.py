"""The target account's side: accept or reject an incoming transfer."""

from __future__ import annotations

import contextlib

from django.core.exceptions import ValidationError
from django.utils import timezone

from transfers import aws, permissions
from transfers.models import Transfer, validate_transfer_text
from transfers.workflow.errors import TransferError
from transfers.workflow.events import aws_call, record, transition
from transfers.workflow.outcome import end, moved
from transfers.workflow.reconcile import reconcile_one


def act_in_aws(transfer: Transfer, user, account, operation: str, already: str, **params):
    """A person's accept, reject or cancel in AWS, as ``account``. When AWS says the transfer
    already ended, the portal catches up (reconcile) and says so."""
    try:
        iot = aws.client(account, transfer.region)
        aws_call(transfer, user, iot, operation, certificateId=transfer.certificate_id, **params)
    except aws.AwsError as exc:
        if exc.code == "TransferAlreadyCompletedException":
            with contextlib.suppress(aws.AwsError):  # else the reconciler catches up
                reconcile_one(transfer.pk)
            raise TransferError(
                "already_completed",
                f"{already}; the portal has caught up with AWS.",
                status=409,
            ) from None
        raise TransferError.from_aws(exc) from None


def accept(user, pk: int, set_as_active: bool = False) -> Transfer:
    """Accept in AWS as the target. A planned landing (creating and attaching in the target)
    runs only when it was approved, or when the person accepting may approve it (and so
    does, by accepting); otherwise the transfer is accepted without it and the landing
    needs attention, with its steps (outcome.after_acceptance)."""
    transfer = Transfer.objects.select_related("target").get(pk=pk)
    if not permissions.can_act_as_target(user, transfer):
        raise TransferError(
            "forbidden", "You may not accept transfers into this account.", status=403
        )
    if transfer.status != Transfer.Status.PENDING_ACCEPTANCE:
        raise TransferError("invalid_state", "Only a pending transfer can be accepted.", 409)
    planned = transfer.landing_state == Transfer.Landing.PLANNED
    approves = (
        planned
        and transfer.target_approver_id is None
        and permissions.can_approve_landing(user, transfer)
    )
    lands = planned and (transfer.target_approver_id is not None or approves)
    if lands:
        # Accepted inactive: the approved plan activates it last, once its policies and
        # things are attached (landing_plan.steps).
        set_as_active = False
    act_in_aws(
        transfer,
        user,
        transfer.target,
        "accept_certificate_transfer",
        "It was already cancelled or rejected",
        setAsActive=set_as_active,
    )

    def fill(row: Transfer) -> None:
        row.accept_date = timezone.now()
        row.set_as_active = set_as_active
        if approves and row.target_approver_id is None:
            row.target_approver, row.target_approved_at = user, row.accept_date

    transfer = transition(
        pk,
        "mark_accepted",
        user,
        before=fill,
        refuse="It already ended.",
        set_as_active=set_as_active,
    )
    if approves:
        record(transfer, "landing_approved", user, on_accept=True)
    moved(transfer, user)  # starts the landing, or marks it as needing attention
    if set_as_active and not transfer.landing:
        # No landing planned: usable once ACTIVE (nothing else was planned for it).
        Transfer.objects.filter(pk=pk).update(usable_at=transfer.accept_date)
    transfer.refresh_from_db()
    return transfer


def reject(user, pk: int, reason: str) -> Transfer:
    transfer = Transfer.objects.select_related("target").get(pk=pk)
    if not permissions.can_act_as_target(user, transfer):
        raise TransferError(
            "forbidden", "You may not reject transfers into this account.", status=403
        )
    reason = (reason or "").strip()
    try:
        validate_transfer_text(reason)
    except ValidationError as exc:
        raise TransferError("invalid_reason", f"Reason: {' '.join(exc.messages)}") from None
    if not reason:
        raise TransferError("invalid_reason", "Say why you reject it; the source account sees it.")
    if transfer.status != Transfer.Status.PENDING_ACCEPTANCE:
        raise TransferError("invalid_state", "Only a pending transfer can be rejected.", 409)
    act_in_aws(
        transfer,
        user,
        transfer.target,
        "reject_certificate_transfer",
        "It was already cancelled or accepted",
        rejectReason=reason,
    )
    return end(pk, "mark_rejected", user, reject_reason=reason, reject_date=timezone.now())
