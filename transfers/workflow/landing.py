"""Landing: running a landing plan (workflow/landing_plan.py) in the target after acceptance,
so devices work there, not just a certificate that moved.

A pre-accepted move (both accounts managed; an approver of the target approved the landing
in advance, never the requester nor the source's approver) runs back to back in the worker:
deactivate, detach, transfer, accept, attach. Each landing step is recorded on the row, so a
dead worker resumes; a landing that stops is retried by the sweep with backoff, then needs
attention, and a person can try again. For a target the portal does not manage, the plan
becomes AWS CLI commands in the notice.
"""

from __future__ import annotations

from datetime import timedelta

from django.db import transaction
from django.db.models import Q, Value
from django.db.models.functions import Coalesce
from django.utils import timezone

from transfers import aws, leases, permissions, queue
from transfers.models import Certificate, SweepFailure, Transfer, TransferEvent
from transfers.workflow import devices
from transfers.workflow.errors import WORKER, TransferError
from transfers.workflow.events import aws_call, failed_try, lease_lost, record, transition
from transfers.workflow.landing_plan import (
    ACTIVATE,
    CONNECTIVITY,
    INDEXING,
    steps,
    steps_left,
    with_connectivity,
)
from transfers.workflow.outcome import moved
from transfers.workflow.reconcile import decide

BACKOFF_BASE, BACKOFF_MAX = 5, 15 * 60


# ----------------------------------------------------------------------------- approval


def approve_landing(user, pk: int, comment: str = "") -> Transfer:
    """The target side approves the landing in advance: with it the worker accepts and
    lands right after the transfer, with no human wait between the two accounts."""
    open_states = [
        Transfer.Status.REQUESTED,
        Transfer.Status.APPROVED,
        Transfer.Status.PREPARING,
        Transfer.Status.PENDING_ACCEPTANCE,
    ]
    with transaction.atomic():
        # Checked on the locked row: approving the move locks it too, so the two never pass
        # their checks against each other's old state.
        transfer = Transfer.objects.select_for_update().get(pk=pk)
        if not permissions.can_approve_landing(user, transfer):
            raise TransferError(
                "forbidden",
                "Only an approver or admin of the managed target account approves a landing, "
                "and never the requester or anyone who approved the move.",
                status=403,
            )
        if not transfer.landing or transfer.landing_state != Transfer.Landing.PLANNED:
            raise TransferError("invalid_state", "There is no planned landing to approve.", 409)
        if transfer.status not in open_states or transfer.target_approver_id is not None:
            raise TransferError(
                "invalid_state", "The landing was already decided or it ended.", 409
            )
        Transfer.objects.filter(pk=pk).update(
            target_approver=user, target_approved_at=timezone.now()
        )
        record(transfer, "landing_approved", user, comment=(comment or "").strip()[:2000])
        if transfer.status == Transfer.Status.PENDING_ACCEPTANCE:
            queue.enqueue("land_transfer", pk)
    transfer.refresh_from_db()
    return transfer


# ----------------------------------------------------------------------------- landing


def _claim(pk: int) -> str | None:
    """Take the row's lease for landing: its token, or None when there is nothing to land
    or another worker holds it."""
    now, token = timezone.now(), leases.new_token()
    taken = (
        Transfer.objects.filter(pk=pk)
        .filter(
            Q(landing_state__in=Transfer.Landing.OPEN)
            | Q(
                landing_state=Transfer.Landing.PLANNED,
                target_approved_at__isnull=False,
                status=Transfer.Status.PENDING_ACCEPTANCE,
            )
        )
        .filter(Q(lease_until__isnull=True) | Q(lease_until__lt=now))
        .update(
            lease_until=leases.until(),
            lease_token=token,
            landing_state=Transfer.Landing.LANDING,
        )
    )
    return token if taken else None


def land(pk: int) -> str:
    """Accept (if still pending, for a pre-accepted move) and run every landing step not
    done yet. Returns "landed", "retry", "attention" or "skipped: ...". Never raises for
    AWS trouble: it is recorded and the sweep comes back."""
    token = _claim(pk)
    if token is None:
        return "skipped: nothing to land"
    with leases.kept(pk, token):
        try:
            return _land(pk, token)
        except leases.LeaseLost:
            return lease_lost(Transfer(pk=pk), "landing")


def _land(pk: int, token: str) -> str:
    transfer = Transfer.objects.select_related("source", "target", "target_approver").get(pk=pk)
    failures: list[str] = []
    try:
        tiot = aws.client(transfer.target, transfer.region)
        if transfer.status == Transfer.Status.PENDING_ACCEPTANCE:
            leases.confirm(pk, token)  # stop here if another worker took the row
            outcome = _accept(transfer, tiot)
            if outcome != "accepted":
                _release(pk, token, Transfer.Landing.PLANNED if outcome == "pending" else "")
                return f"skipped: {outcome}"
            transfer.refresh_from_db()
        for key, operation, params in steps(transfer):
            if key in transfer.landed:
                continue
            if key == ACTIVATE and failures:
                break  # activated only once everything before it is in place
            leases.confirm(pk, token)
            try:
                if key == INDEXING:
                    enable_connectivity(transfer, tiot)
                else:
                    aws_call(transfer, WORKER, tiot, operation, **params)
            except aws.AwsError as exc:
                if exc.retryable:
                    raise
                if not (
                    operation in ("create_policy", "create_thing")
                    and exc.code == "ResourceAlreadyExistsException"
                ):
                    failures.append(f"{operation}: {exc.user_message}")
                    continue
            transfer.landed = leases.append(pk, token, "landed", key)
            if key == ACTIVATE:
                # The target's inventory row, if its sync stored it already (inactive, as
                # accepted): ACTIVE now, with its links' copies.
                Certificate.objects.filter(
                    account=transfer.target,
                    region=transfer.region,
                    certificate_id=transfer.certificate_id,
                ).set_status(Certificate.Status.ACTIVE)
    except aws.AwsError as exc:
        failures.append(exc.user_message)
    return _after_try(transfer, failures, token)


def enable_connectivity(transfer: Transfer, tiot) -> None:
    """The landing's indexing step: read the target's thing indexing configuration now (it
    may have changed since the plan), turn thing connectivity indexing on with the rest kept
    (landing_plan.with_connectivity) and write it back; nothing is written when it is on
    already (another transfer of the batch did it)."""
    answer = aws_call(transfer, WORKER, tiot, "get_indexing_configuration")
    current = answer.get("thingIndexingConfiguration") or {}
    if current.get("thingConnectivityIndexingMode") != CONNECTIVITY:
        aws_call(
            transfer,
            WORKER,
            tiot,
            "update_indexing_configuration",
            thingIndexingConfiguration=with_connectivity(current),
        )
    devices.indexing_changed(transfer.target, transfer.region)


def _accept(transfer: Transfer, tiot) -> str:
    # Accepted inactive: the plan's activation is its last step, once the policies and
    # things are attached, so a device's first connection finds everything in place.
    try:
        aws_call(
            transfer,
            WORKER,
            tiot,
            "accept_certificate_transfer",
            certificateId=transfer.certificate_id,
            setAsActive=False,
        )
    except aws.AwsError as exc:
        if exc.code != "TransferAlreadyCompletedException":
            raise
        # Accepted, rejected or cancelled meanwhile: AWS decides.
        outcome = decide(transfer, aws.client(transfer.source, transfer.region))
        return "accepted" if outcome == "accepted" else outcome

    def fill(row: Transfer) -> None:
        row.accept_date = timezone.now()
        row.set_as_active = False

    transition(
        transfer.pk,
        "mark_accepted",
        WORKER,
        before=fill,
        refuse="It already ended.",
        set_as_active=False,
        pre_accepted_by=transfer.target_approver.get_username() if transfer.target_approver else "",
    )
    moved(transfer, WORKER)
    return "accepted"


def _release(pk: int, token: str, state: str) -> None:
    if not leases.release(pk, token, landing_state=state):
        raise leases.LeaseLost(pk)


def _after_try(transfer: Transfer, failures: list[str], token: str) -> str:
    now = timezone.now()
    transfer.refresh_from_db()
    if not failures:
        active = transfer.set_as_active or ACTIVATE in transfer.landed
        usable = now if active else None
        if not leases.release(
            transfer.pk,
            token,
            landing_state=Transfer.Landing.LANDED,
            landing_next_at=None,
            landing_error="",
            usable_at=usable,
            updated=now,
        ):
            raise leases.LeaseLost(transfer.pk)
        record(transfer, "landed", WORKER, steps=transfer.landed, active=active)
        if active:
            devices.start_check(transfer.pk)  # a move ends when its devices are back
        return "landed"
    return failed_try(
        transfer, "landing", failures, steps_left(transfer), (BACKOFF_BASE, BACKOFF_MAX), token
    )


def due_landings(now=None) -> list[int]:
    now = now or timezone.now()
    grace = now - timedelta(minutes=1)
    return list(
        Transfer.objects.filter(
            Q(landing_state=Transfer.Landing.PARTIAL, landing_next_at__lte=now)
            # A worker died mid-landing: its lease ran out.
            | Q(landing_state=Transfer.Landing.LANDING, updated__lt=grace)
            # Pre-accepted, pending, never landed (the task was lost).
            | Q(
                landing_state=Transfer.Landing.PLANNED,
                target_approved_at__isnull=False,
                status=Transfer.Status.PENDING_ACCEPTANCE,
                updated__lt=grace,
            )
        )
        .exclude(lease_until__gt=now)
        .values_list("pk", flat=True)[:500]
    )


def sweep_landings() -> int:
    sent = 0
    for pk in due_landings():
        try:
            queue.send_now("land_transfer", pk)
        except Exception as exc:  # one landing's trouble never stops the sweep
            SweepFailure.note(SweepFailure.Sweep.LANDINGS, f"transfer {pk}", exc)
        else:
            sent += 1
    return sent


def retry_landing(user, pk: int) -> Transfer:
    """Try a stopped landing again. One nobody approved (the target accepted without it) is
    run only by someone who may approve it, and that person is recorded as its approver."""
    transfer = Transfer.objects.select_related("target").get(pk=pk)
    approving = transfer.target_approver_id is None
    if approving and not permissions.can_approve_landing(user, transfer):
        raise TransferError(
            "forbidden",
            "Nobody approved this landing: only an approver or admin of the target account, "
            "never the requester or anyone who approved the move, runs it.",
            status=403,
        )
    if not approving and not permissions.can_act_as_target(user, transfer):
        raise TransferError(
            "forbidden", "Only an operator of the target account can land it.", status=403
        )
    now = timezone.now()
    rows = Transfer.objects.filter(
        pk=pk,
        landing_state__in=[Transfer.Landing.ATTENTION, Transfer.Landing.PARTIAL],
        target_approver__isnull=approving,
    )
    approval = {"target_approver": user, "target_approved_at": now} if approving else {}
    with transaction.atomic():
        changed = rows.update(
            landing_state=Transfer.Landing.PARTIAL,
            landing_attempts=0,
            landing_next_at=now,
            updated=now,
            **approval,
        )
        if not changed:
            raise TransferError(
                "invalid_state", "Only a landing that stopped can be tried again.", 409
            )
        if approving:
            record(transfer, "landing_approved", user, on_retry=True)
        record(transfer, "landing_retry", user, steps_left=steps_left(transfer))
        queue.enqueue("land_transfer", pk)
    transfer.refresh_from_db()
    return transfer


def finished_by_hand(user, pk: int) -> Transfer:
    """A person finished the landing in AWS themselves: record it, stop retrying."""
    transfer = Transfer.objects.select_related("target").get(pk=pk)
    if not permissions.can_act_as_target(user, transfer):
        raise TransferError(
            "forbidden", "Only an operator of the target account can say so.", status=403
        )
    with transaction.atomic():
        changed = Transfer.objects.filter(
            pk=pk, landing_state__in=[Transfer.Landing.ATTENTION, Transfer.Landing.PARTIAL]
        ).update(
            landing_state=Transfer.Landing.LANDED,
            landing_next_at=None,
            lease_until=None,
            # Usable from now at the latest (the person finished it before saying so).
            usable_at=Coalesce("usable_at", Value(timezone.now())),
        )
        if not changed:
            raise TransferError("invalid_state", "The landing is not stopped.", 409)
        record(
            transfer,
            "landed_by_hand",
            user,
            kind=TransferEvent.Kind.NOTE,
            steps_left=steps_left(transfer),
        )
    transfer.refresh_from_db()
    devices.start_check(transfer.pk)
    return transfer
