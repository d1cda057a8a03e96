"""The audit trail and the one way a transfer changes state.

Every state change happens on a locked row inside a transaction and writes a TransferEvent;
AWS calls stay outside transactions and each one writes an event too.
"""

from __future__ import annotations

import copy
import logging
from datetime import timedelta
from typing import Any

from celery.utils.time import get_exponential_backoff_interval
from django.conf import settings
from django.db import transaction
from django.utils import timezone
from django_fsm import can_proceed

from transfers import aws, leases, notices
from transfers.models import Transfer, TransferEvent
from transfers.workflow.errors import WORKER, TransferError

log = logging.getLogger(__name__)


def _actor(user) -> tuple[Any, str]:
    if isinstance(user, str):
        return None, user
    return user, user.get_username()


def record(
    transfer: Transfer,
    action: str,
    by,
    *,
    kind=TransferEvent.Kind.NOTE,
    ok=True,
    from_status="",
    to_status="",
    **details,
) -> TransferEvent:
    actor, name = _actor(by)
    return TransferEvent.objects.create(
        transfer=transfer,
        kind=kind,
        action=action,
        actor=actor,
        actor_name=name,
        ok=ok,
        from_status=from_status,
        to_status=to_status,
        details=details,
    )


def aws_call(transfer: Transfer, by, aws_client, operation: str, **params) -> dict:
    """One AWS call on behalf of a transfer, written to its audit trail either way."""
    api = aws_client.meta.method_to_api_mapping.get(operation, operation)
    try:
        answer = aws.call(aws_client, operation, **params)
    except aws.AwsError as exc:
        record(
            transfer,
            api,
            by,
            kind=TransferEvent.Kind.AWS,
            ok=False,
            params=params,
            error_code=exc.code,
            error=exc.aws_message,
        )
        raise
    record(transfer, api, by, kind=TransferEvent.Kind.AWS, params=params)
    return answer


def columns(transfer: Transfer) -> dict[str, Any]:
    """The row's column values by field name, lists and dicts copied (a step may change
    one in place): what :func:`save_changes` compares with."""
    return {
        f.name: copy.deepcopy(v)
        if isinstance(v := getattr(transfer, f.attname), list | dict)
        else v
        for f in transfer._meta.concrete_fields
        if not f.primary_key
    }


def save_changes(transfer: Transfer, was: dict[str, Any]) -> None:
    """Save the columns changed since ``columns(transfer)`` gave ``was``, and only those: the
    whole row is some 60 columns, and a field another process writes without the row lock
    (batches.hand_on's queued_at, on SQLite) is left alone."""
    transfer.save(update_fields=[k for k, v in columns(transfer).items() if was[k] != v])


def transition(pk: int, method: str, by, *, refuse: str, before=None, **details) -> Transfer:
    """Apply transition ``method`` on the locked row; TransferError if the state forbids it."""
    with transaction.atomic():
        # The people and the target its notices go to (notices.on_transition), in the same
        # query; only the transfer's row is locked.
        transfer = (
            Transfer.objects.select_for_update(of=("self",))
            .select_related("target", "requester", "approver")
            .get(pk=pk)
        )
        bound = getattr(transfer, method)
        if not can_proceed(bound):
            raise TransferError(
                "invalid_state",
                f"{refuse} The transfer is {transfer.get_status_display().lower()}.",
                status=409,
            )
        was = columns(transfer)
        if before is not None:
            before(transfer)
        old = transfer.status
        bound()
        transfer.updated = timezone.now()
        save_changes(transfer, was)
        record(
            transfer,
            method,
            by,
            kind=TransferEvent.Kind.TRANSITION,
            from_status=old,
            to_status=transfer.status,
            **details,
        )
        notices.on_transition(transfer)
    return transfer


def failed_try(
    transfer: Transfer,
    part: str,
    failures: list[str],
    steps_left: list[str],
    backoff: tuple[int, int],
    token: str,
) -> str:
    """Record a try of a retried step list (``part``: "restore" or "landing", the prefix of
    its ``*_state``, ``*_attempts``, ``*_next_at`` and ``*_error`` fields) that left
    ``failures``: the sweep comes back after an exponential backoff with jitter (``backoff``:
    base and cap in seconds), or, once TRANSFER_RESTORE_TRIES are used up, the row needs a
    person. Releases the row's lease (``token``; LeaseLost when another worker holds it).
    Returns "retry" or "attention"."""
    now = timezone.now()
    tries = getattr(transfer, f"{part}_attempts") + 1
    # Transfer.Restore and Transfer.Landing share these two values.
    if tries >= settings.TRANSFER_RESTORE_TRIES:
        state, next_at, outcome = "attention", None, "attention"
    else:
        state, outcome = "partial", "retry"
        base, cap = backoff
        delay = get_exponential_backoff_interval(base, tries, cap, True)
        next_at = now + timedelta(seconds=max(delay, 1))
    released = leases.release(
        transfer.pk,
        token,
        **{
            f"{part}_state": state,
            f"{part}_attempts": tries,
            f"{part}_next_at": next_at,
            f"{part}_error": "; ".join(failures)[:2000],
        },
        updated=now,
    )
    if not released:
        raise leases.LeaseLost(transfer.pk)
    record(
        transfer,
        part,
        WORKER,
        ok=False,
        result=state,
        tries=tries,
        failures=failures,
        steps_left=steps_left,
        next_try=next_at.isoformat() if next_at else None,
    )
    return outcome


def lease_lost(transfer: Transfer, work: str) -> str:
    """A worker found its lease on the row taken by another (it stalled past the lease): it
    stops here, with no further AWS call, and leaves the row to the worker that holds it."""
    log.warning("Transfer %s: %s stopped, another worker took its lease", transfer.pk, work)
    record(
        transfer,
        "lease_lost",
        WORKER,
        ok=False,
        work=work,
        reason="this worker's lease ran out and another worker took the transfer: it stopped",
    )
    return "stopped: lease lost"
