"""How a transfer ends: with the certificate back at the source, or moved to the target."""

from __future__ import annotations

from django.db import transaction

from transfers import inventory, queue
from transfers.models import Certificate, Transfer
from transfers.workflow.errors import RECONCILER
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


def moved(transfer: Transfer, by=RECONCILER) -> None:
    """The certificate left the source: drop its row there, refresh the target's inventory,
    and start the landing it plans. Every acceptance passes here, whoever saw it (``by``: the
    person who accepted, the worker, or the reconciler when the target accepted in AWS)."""
    # Imported here: landing accepts through this module too.
    from transfers.workflow.landing import after_acceptance

    Certificate.objects.filter(pk=transfer.cert_id).delete()
    target = transfer.target
    if target is not None and target.managed and transfer.region in target.regions:
        inventory.queue_sync(target, transfer.region)
    after_acceptance(transfer, by)
