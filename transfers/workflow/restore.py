"""Put back what preparation removed when a transfer ends with the certificate at home.

Durable like execution: each step done is recorded on the row, so a restore that stopped
(throttling, the rate limiter, a lost task, a flushed broker, a dead worker) resumes where
it was. The sweep (beat) picks up every restore that is pending or partial and due, with
backoff; after TRANSFER_RESTORE_TRIES tries it needs attention: the page shows the steps
left and a person can try again.
"""

from __future__ import annotations

from datetime import timedelta

from django.db.models import Q
from django.utils import timezone

from transfers import aws, leases, permissions, queue
from transfers.models import Certificate, SweepFailure, Transfer
from transfers.workflow.errors import WORKER, TransferError
from transfers.workflow.events import aws_call, failed_try, lease_lost, record

# Backoff between tries: exponential with full jitter, from 10 s up to 30 minutes.
BACKOFF_BASE, BACKOFF_MAX = 10, 30 * 60
# A restore just enqueued is the task's; the sweep leaves it alone this long.
GRACE = timedelta(minutes=1)
REACTIVATE = "update_certificate:ACTIVE"  # the last step's key


def steps(transfer: Transfer) -> list[tuple[str, str, dict]]:
    """(key, operation, params) of every step that puts the certificate back, in order:
    policies, things, then ACTIVE (devices reconnect only once everything is back)."""
    arn = transfer.certificate_arn
    out = [
        (f"attach_policy:{name}", "attach_policy", {"policyName": name, "target": arn})
        for name in transfer.detached_policies
    ] + [
        (
            f"attach_thing_principal:{name}",
            "attach_thing_principal",
            thing_params(transfer, name, arn),
        )
        for name in transfer.detached_things
    ]
    if transfer.deactivated:
        out.append(
            (
                REACTIVATE,
                "update_certificate",
                {"certificateId": transfer.certificate_id, "newStatus": "ACTIVE"},
            )
        )
    return out


def thing_params(transfer: Transfer, name: str, principal: str) -> dict:
    """AttachThingPrincipal's parameters: exclusively when it was attached so."""
    params = {"thingName": name, "principal": principal}
    if name in transfer.exclusive_things:
        params["thingPrincipalType"] = aws.EXCLUSIVE_THING
    return params


def steps_left(transfer: Transfer) -> list[str]:
    """What is still to put back, for people: "Attach policy DevicePublish", ..."""
    labels = {
        "attach_policy": "Attach policy {}",
        "attach_thing_principal": "Attach thing {}",
        "update_certificate": "Set the certificate {}",
    }
    done = set(transfer.restored)
    return [
        labels[op].format(key.split(":", 1)[1])
        for key, op, _params in steps(transfer)
        if key not in done
    ]


def _claim(pk: int) -> str | None:
    """Take the row's lease for this restore: its token, or None when another worker holds
    it."""
    now, token = timezone.now(), leases.new_token()
    taken = (
        Transfer.objects.filter(pk=pk, restore_state__in=Transfer.Restore.OPEN)
        .filter(Q(lease_until__isnull=True) | Q(lease_until__lt=now))
        .update(lease_until=leases.until(), lease_token=token)
    )
    return token if taken else None


def restore(pk: int) -> str:
    """One try at putting everything back. Returns "done", "retry" (the sweep comes back
    after a backoff), "attention" (tries used up) or "skipped: ..."."""
    token = _claim(pk)
    if token is None:
        state = Transfer.objects.filter(pk=pk).values_list("restore_state", flat=True).first()
        return f"skipped: {state or 'nothing to restore'}"
    with leases.kept(pk, token):
        try:
            return _restore(pk, token)
        except leases.LeaseLost:
            return lease_lost(Transfer(pk=pk), "restore")


def _restore(pk: int, token: str) -> str:
    transfer = Transfer.objects.select_related("source").get(pk=pk)
    failures: list[str] = []
    try:
        iot = aws.client(transfer.source, transfer.region)
        for key, operation, params in steps(transfer):
            if key in transfer.restored:
                continue
            leases.confirm(pk, token)  # stop here if another worker took the row
            try:
                aws_call(transfer, WORKER, iot, operation, **params)
            except aws.AwsError as exc:
                if exc.retryable:
                    raise
                failures.append(f"{operation}: {exc.user_message}")
                continue
            transfer.restored = leases.append(pk, token, "restored", key)
            if key == REACTIVATE:
                # ACTIVE again at home: so is its inventory row, with its links' copies.
                Certificate.objects.filter(
                    account=transfer.source,
                    region=transfer.region,
                    certificate_id=transfer.certificate_id,
                ).set_status(params["newStatus"])
    except aws.AwsError as exc:
        # Throttled, AWS unavailable, no token from the rate limiter, role not assumable:
        # the remaining steps wait for the next try.
        failures.append(exc.user_message)
    return _after_try(transfer, failures, token)


def _after_try(transfer: Transfer, failures: list[str], token: str) -> str:
    now = timezone.now()
    if not failures:
        if not leases.release(
            transfer.pk,
            token,
            restore_state=Transfer.Restore.DONE,
            restore_next_at=None,
            restore_error="",
            updated=now,
        ):
            raise leases.LeaseLost(transfer.pk)
        record(transfer, "restore", WORKER, result="done", steps=transfer.restored)
        return "done"
    return failed_try(
        transfer, "restore", failures, steps_left(transfer), (BACKOFF_BASE, BACKOFF_MAX), token
    )


def due_restores(now=None) -> list[int]:
    """Restores the sweep should try now: pending or partial, due, not leased."""
    now = now or timezone.now()
    return list(
        Transfer.objects.filter(restore_state__in=Transfer.Restore.OPEN)
        .filter(
            Q(restore_next_at__lte=now) | Q(restore_next_at__isnull=True, updated__lt=now - GRACE)
        )
        .exclude(lease_until__gt=now)
        .order_by("restore_next_at", "pk")
        .values_list("pk", flat=True)[:500]
    )


def sweep_restores() -> int:
    """Beat: re-drive every restore that did not finish. Returns how many were sent."""
    sent = 0
    for pk in due_restores():
        try:
            queue.send_now("restore_transfer", pk)
        except Exception as exc:  # one restore's trouble never stops the sweep
            SweepFailure.note(SweepFailure.Sweep.RESTORES, f"transfer {pk}", exc)
        else:
            sent += 1
    return sent


def retry_restore(user, pk: int) -> Transfer:
    """A person's "try again" on a restore that needs attention."""
    transfer = Transfer.objects.select_related("source").get(pk=pk)
    if not permissions.can_operate(user, transfer.source):
        raise TransferError(
            "forbidden", "You may not restore certificates in this account.", status=403
        )
    changed = Transfer.objects.filter(
        pk=pk, restore_state__in=[Transfer.Restore.ATTENTION, Transfer.Restore.PARTIAL]
    ).update(
        restore_state=Transfer.Restore.PENDING,
        restore_attempts=0,
        restore_next_at=None,
        updated=timezone.now(),
    )
    if not changed:
        raise TransferError(
            "invalid_state", "Only a restore that did not finish can be tried again.", 409
        )
    record(transfer, "restore_retry", user, steps_left=steps_left(transfer))
    queue.enqueue("restore_transfer", pk)
    transfer.refresh_from_db()
    return transfer


def restored_by_hand(user, pk: int) -> Transfer:
    """A person put back the rest in AWS themselves (or it is to stay off): record it with
    the steps that were left, stop retrying. The way out of a restore that cannot finish,
    which otherwise keeps the certificate from being requested again."""
    transfer = Transfer.objects.select_related("source").get(pk=pk)
    if not permissions.can_operate(user, transfer.source):
        raise TransferError(
            "forbidden", "You may not restore certificates in this account.", status=403
        )
    left, now = steps_left(transfer), timezone.now()
    # Not while a worker holds the row; and a stalled one whose lease ran out finds it gone
    # (leases: no token), so it cannot write over the person's word.
    changed = (
        Transfer.objects.filter(
            pk=pk, restore_state__in=[Transfer.Restore.ATTENTION, Transfer.Restore.PARTIAL]
        )
        .filter(Q(lease_until__isnull=True) | Q(lease_until__lt=now))
        .update(
            restore_state=Transfer.Restore.DONE,
            restore_next_at=None,
            lease_until=None,
            lease_token="",
            updated=now,
        )
    )
    if not changed:
        raise TransferError(
            "invalid_state",
            "Only a restore that stopped or waits for its next try can be finished by hand.",
            409,
        )
    record(transfer, "restored_by_hand", user, steps_left=left)
    transfer.refresh_from_db()
    return transfer
