"""Put back what preparation removed when a transfer ends with the certificate at home."""

from __future__ import annotations

from django.db import transaction
from django.utils import timezone

from transfers import aws
from transfers.models import Transfer
from transfers.workflow.errors import WORKER, RetryLater
from transfers.workflow.events import aws_call, record


def restore(pk: int) -> str:
    """Put back what preparation removed, step by step; a failed step is recorded and shown."""
    with transaction.atomic():
        transfer = Transfer.objects.select_for_update().select_related("source").get(pk=pk)
        if transfer.restore_state != Transfer.Restore.PENDING:
            return f"skipped: {transfer.restore_state or 'nothing to restore'}"
    iot = aws.client(transfer.source, transfer.region)
    arn = transfer.certificate_arn
    failures = []
    steps: list[tuple[str, dict]] = [
        ("attach_policy", {"policyName": name, "target": arn})
        for name in transfer.detached_policies
    ] + [
        ("attach_thing_principal", {"thingName": name, "principal": arn})
        for name in transfer.detached_things
    ]
    if transfer.deactivated:
        steps.append(
            (
                "update_certificate",
                {"certificateId": transfer.certificate_id, "newStatus": "ACTIVE"},
            )
        )
    for operation, params in steps:
        try:
            aws_call(transfer, WORKER, iot, operation, **params)
        except aws.AwsError as exc:
            if exc.retryable:
                raise RetryLater(exc) from exc
            failures.append(f"{operation}: {exc.user_message}")
    state = Transfer.Restore.PARTIAL if failures else Transfer.Restore.DONE
    Transfer.objects.filter(pk=pk).update(restore_state=state, updated=timezone.now())
    record(transfer, "restore", WORKER, ok=not failures, result=state, failures=failures)
    return state


def give_up_restore(pk: int, message: str) -> None:
    transfer = Transfer.objects.get(pk=pk)
    Transfer.objects.filter(pk=pk, restore_state=Transfer.Restore.PENDING).update(
        restore_state=Transfer.Restore.PARTIAL, updated=timezone.now()
    )
    record(transfer, "restore", WORKER, ok=False, result="partial", failures=[message])
