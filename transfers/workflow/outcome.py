"""How a transfer ends: with the certificate back at the source, or moved to the target."""

from __future__ import annotations

from django.db import transaction

from transfers import inventory, queue
from transfers.models import Certificate, Transfer
from transfers.workflow.events import transition


def end(pk: int, method: str, by, **details) -> Transfer:
    """A transition that ends the transfer with the certificate back at the source."""

    def mark(row: Transfer) -> None:
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
        if transfer.restore_state == Transfer.Restore.PENDING:
            queue.enqueue("restore_transfer", transfer.pk)
    return transfer


def moved(transfer: Transfer) -> None:
    """The certificate left the source: drop its row there, refresh the target's inventory."""
    Certificate.objects.filter(pk=transfer.cert_id).delete()
    target = transfer.target
    if target is not None and target.managed and transfer.region in target.regions:
        inventory.queue_sync(target, transfer.region)
