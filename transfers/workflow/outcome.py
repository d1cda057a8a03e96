"""How a transfer ends: with the certificate back at the source, or moved to the target
(and then its planned landing starts, or waits for a person)."""

from __future__ import annotations

from django.db import transaction
from django.utils import timezone

from transfers import inventory, queue
from transfers.models import Certificate, Transfer
from transfers.workflow.errors import RECONCILER
from transfers.workflow.events import record, transition
from transfers.workflow.landing_plan import steps_left


def end(pk: int, method: str, by, **details) -> Transfer:
    """A transition that ends the transfer with the certificate back at the source. One
    that was pending in AWS came back INACTIVE (AWS: a rejected or cancelled transfer
    leaves the certificate so): the inventory says it now, not at the next sync, and a
    restore that re-activates it says ACTIVE when it has."""
    was = []

    def mark(row: Transfer) -> None:
        was.append(row.status)
        if row.needs_restore():
            row.restore_state = Transfer.Restore.PENDING
        for name, value in details.items():
            setattr(row, name, value)

    with transaction.atomic():
        transfer = transition(
            pk,
            method,
            by,
            before=mark,
            refuse="It already ended.",
            **{k: str(v) for k, v in details.items()},
        )
        if was[-1] == Transfer.Status.PENDING_ACCEPTANCE:
            Certificate.objects.filter(pk=transfer.cert_id, status="PENDING_TRANSFER").set_status(
                Certificate.Status.INACTIVE
            )
        if transfer.restore_state == Transfer.Restore.PENDING:
            queue.enqueue("restore_transfer", transfer.pk)
    return transfer


def moved(transfer: Transfer, by=RECONCILER) -> None:
    """The certificate left the source: drop its row there, refresh the target's inventory,
    and start the landing it plans. Every acceptance passes here, whoever saw it (``by``: the
    person who accepted, the worker, or the reconciler when the target accepted in AWS)."""
    Certificate.objects.filter(pk=transfer.cert_id).delete()
    target = transfer.target
    if target is not None and target.managed and transfer.region in target.regions:
        inventory.queue_sync(target, transfer.region)
    after_acceptance(transfer, by)


NOT_APPROVED = (
    "Accepted without the landing: nobody approved it. An approver of the target account "
    "(not the requester nor anyone who approved the move) can run it with “Try landing "
    "again”, or the steps below can be done by hand."
)


def after_acceptance(transfer: Transfer, by) -> None:
    """Every acceptance comes here (moved): in the portal's inbox, by the worker of a
    pre-accepted move, or seen by the reconciler when the target accepted in AWS itself. A
    planned landing that was approved starts (in the background, after commit); one nobody
    approved needs a person, with its steps."""
    target = transfer.target
    if target is None or not target.managed:
        return  # the portal cannot act there: the notice's CLI commands are the landing
    now = timezone.now()
    planned = Transfer.objects.filter(
        pk=transfer.pk, status=Transfer.Status.ACCEPTED, landing_state=Transfer.Landing.PLANNED
    )
    if planned.filter(target_approved_at__isnull=False).update(
        landing_state=Transfer.Landing.LANDING, updated=now
    ):
        queue.enqueue("land_transfer", transfer.pk)
    elif planned.update(
        landing_state=Transfer.Landing.ATTENTION, landing_error=NOT_APPROVED, updated=now
    ):
        fresh = Transfer.objects.get(pk=transfer.pk)
        record(
            fresh,
            "landing",
            by,
            ok=False,
            result="attention",
            reason="not approved",
            steps_left=steps_left(fresh),
        )
