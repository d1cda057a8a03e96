"""The worker's part: prepare the certificate in the source and transfer it.

Resumable at every step: what was done is recorded on the row before the call, so a
redelivered task continues instead of repeating an AWS call.
"""

from __future__ import annotations

import time

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from transfers import aws, leases, queue
from transfers.models import Certificate, Transfer, TransferEvent
from transfers.workflow import devices, landing
from transfers.workflow.errors import WORKER, RetryLater
from transfers.workflow.events import (
    aws_call,
    columns,
    lease_lost,
    record,
    save_changes,
    transition,
)
from transfers.workflow.reconcile import as_datetime, decide, is_ours, newer_transfer


def execute(pk: int) -> str:
    """Prepare the certificate and transfer it; resumable at every step.

    Returns what happened. Raises RetryLater for throttling and outages."""
    waiting = _devices_first(pk)
    if waiting is not None:
        return waiting
    now = timezone.now()
    with transaction.atomic():
        transfer = (
            Transfer.objects.select_for_update(of=("self",)).select_related("source").get(pk=pk)
        )
        was = columns(transfer)
        if transfer.status == Transfer.Status.APPROVED:
            transfer.start()
            record(
                transfer,
                "start",
                WORKER,
                kind=TransferEvent.Kind.TRANSITION,
                from_status=Transfer.Status.APPROVED,
                to_status=Transfer.Status.PREPARING,
            )
        elif transfer.status != Transfer.Status.PREPARING:
            return f"skipped: {transfer.status}"
        elif transfer.lease_until and transfer.lease_until > now:
            return "skipped: another worker holds it"
        transfer.lease_until = leases.until()
        # This worker's lease: its progress writes match it (the instance is not refreshed
        # while it works, so transfer.lease_token stays the one taken here).
        transfer.lease_token = leases.new_token()
        transfer.attempts += 1
        transfer.updated = now
        save_changes(transfer, was)
    try:
        with leases.kept(transfer.pk, transfer.lease_token):
            outcome = _prepare_and_transfer(transfer)
    except leases.LeaseLost:
        return lease_lost(transfer, "execute")
    except aws.AwsError as exc:
        if exc.retryable:
            if not leases.release(transfer.pk, transfer.lease_token):
                return lease_lost(transfer, "execute")
            raise RetryLater(exc) from exc
        return _fail(transfer, exc.code, exc.user_message)
    except _Refused as exc:
        return _fail(transfer, exc.code, exc.message)
    pre_accepted = Transfer.objects.filter(
        pk=transfer.pk, landing_state=Transfer.Landing.PLANNED, target_approved_at__isnull=False
    ).exists()
    if outcome == "pending_acceptance" and pre_accepted:
        # Pre-accepted: accept and land in the target now, back to back.
        landed = landing.land(transfer.pk)
        return f"pending_acceptance; landing: {landed}"
    return outcome


def _devices_first(pk: int) -> str | None:
    """Before the certificate is touched, its devices are told the target's endpoint
    (workflow.devices): None to go on, else why the transfer stays approved for now."""
    # What devices.ready reads, first: the whole row with both accounts only when the
    # devices are still to be told (most transfers have nothing to tell).
    fields = ("status", *devices.READY_FIELDS)
    glance = Transfer.objects.only(*fields).get(pk=pk)
    if glance.status != Transfer.Status.APPROVED or devices.ready(glance):
        return None
    transfer = Transfer.objects.select_related("source", "target").get(pk=pk)
    try:
        state = devices.gate(transfer)
    except aws.AwsError as exc:
        if exc.retryable:
            raise RetryLater(exc) from exc
        # The job could not be created or read (a role without the Jobs actions, …): held,
        # with AWS's reason, for an approver to release or the requester to withdraw.
        devices.hold(transfer, f"Could not tell the devices: {exc.user_message}")
        return "held: the devices could not be told"
    if state == "waiting":
        Transfer.objects.filter(pk=pk).update(queued_at=timezone.now())
        queue.send_later("execute_transfer", pk, seconds=settings.DEVICE_POLL_SECONDS)
        return "waiting for the devices' job"
    if state == "held":
        return "held: the devices did not take the job"
    return None


class _Refused(Exception):
    def __init__(self, code: str, message: str) -> None:
        self.code, self.message = code, message
        super().__init__(message)


def _fail(transfer: Transfer, code: str, message: str) -> str:
    try:
        # A transfer another worker took is theirs (the error may be their work showing).
        leases.confirm(transfer.pk, transfer.lease_token)
        fail(transfer.pk, code, message, token=transfer.lease_token)
    except leases.LeaseLost:
        return lease_lost(transfer, "execute")
    return f"failed: {code}"


def _save_progress(transfer: Transfer, *fields: str) -> None:
    """Save steps done, only while this worker holds the lease (LeaseLost otherwise)."""
    transfer.updated = timezone.now()
    leases.write(
        transfer.pk,
        transfer.lease_token,
        updated=transfer.updated,
        **{f: getattr(transfer, f) for f in fields},
    )


def _prepare_and_transfer(transfer: Transfer) -> str:
    """Returns the state the transfer reached (pending, or what became of an earlier attempt
    whose answer was lost)."""
    iot = aws.client(transfer.source, transfer.region)
    try:
        desc = aws_call(
            transfer, WORKER, iot, "describe_certificate", certificateId=transfer.certificate_id
        )["certificateDescription"]
    except aws.AwsError as exc:
        if (
            exc.code == "ResourceNotFoundException"
            and transfer.first_transfer_at
            and newer_transfer(transfer) is None
        ):
            # Gone since our first TransferCertificate: the target accepted it.
            return _earlier_attempt_landed(transfer, iot)
        raise
    if _ours(transfer, desc, iot):
        # A TransferCertificate was sent before and AWS dates a transfer after it: that
        # was this transfer's, whatever became of it. Never a second one.
        return _earlier_attempt_landed(transfer, iot, desc)
    status = desc["status"]
    if status == "PENDING_TRANSFER":
        raise _Refused(
            "CertificateStateException",
            "The certificate is pending a transfer to "
            "another account, started outside this request.",
        )
    if status == "ACTIVE":
        if not transfer.deactivate:
            raise _Refused(
                "CertificateStateException",
                "The certificate is ACTIVE and the request did not allow deactivating it.",
            )
        transfer.deactivated = True  # recorded before the call: restoring ACTIVE is harmless
        # Devices lose the certificate from here: downtime starts (kept from a first try).
        transfer.unusable_since = transfer.unusable_since or timezone.now()
        _save_progress(transfer, "deactivated", "unusable_since")
        aws_call(
            transfer,
            WORKER,
            iot,
            "update_certificate",
            certificateId=transfer.certificate_id,
            newStatus="INACTIVE",
        )
    elif status != "INACTIVE":
        raise _Refused(
            "CertificateStateException", f"A {status} certificate cannot be transferred."
        )
    elif transfer.unusable_since is None:
        # Already inactive: no device could use it since the request, at the latest.
        transfer.unusable_since = transfer.created
        _save_progress(transfer, "unusable_since")

    arn = desc["certificateArn"]
    policies = [
        p["policyName"]
        for p in aws.pages(iot, "list_attached_policies", "policies", target=arn, pageSize=250)
    ]
    if policies and not transfer.detach_policies:
        raise _Refused(
            "TransferConflictException",
            "Policies are attached and the request did "
            f"not allow detaching them: {', '.join(policies)}.",
        )
    # Each name is appended to the row's list before its detach (never the list written
    # whole, which could erase a name another worker recorded), under this worker's lease.
    for name in policies:
        transfer.detached_policies = leases.append(
            transfer.pk, transfer.lease_token, "detached_policies", name
        )
        aws_call(transfer, WORKER, iot, "detach_policy", policyName=name, target=arn)

    things = _attached_things(iot, arn)
    if things and not transfer.detach_things:
        raise _Refused(
            "TransferConflictException",
            "Things are attached and the request did "
            f"not allow detaching them: {', '.join(things)}.",
        )
    for name, kind in things.items():
        transfer.detached_things = leases.append(
            transfer.pk, transfer.lease_token, "detached_things", name
        )
        if kind == aws.EXCLUSIVE_THING:
            transfer.exclusive_things = leases.append(
                transfer.pk, transfer.lease_token, "exclusive_things", name
            )
        try:
            aws_call(transfer, WORKER, iot, "detach_thing_principal", thingName=name, principal=arn)
        except aws.AwsError as exc:
            # Already detached: an earlier attempt's detachment still propagating.
            if exc.code != "ResourceNotFoundException" or name not in transfer.detached_things:
                raise
    if things:
        _wait_for_things_detached(iot, arn, list(things))

    if transfer.first_transfer_at is None:
        transfer.first_transfer_at = timezone.now()
        _save_progress(transfer, "first_transfer_at")
    else:
        leases.confirm(transfer.pk, transfer.lease_token)  # never a second worker's call
    try:
        answer = aws_call(
            transfer,
            WORKER,
            iot,
            "transfer_certificate",
            certificateId=transfer.certificate_id,
            targetAwsAccount=transfer.target_account_id,
            transferMessage=transfer.message,
        )
    except aws.AwsError as exc:
        # An earlier attempt whose answer was lost already did it: that is success.
        if exc.code in {"TransferConflictException", "CertificateStateException"}:
            again = aws.call(iot, "describe_certificate", certificateId=transfer.certificate_id)
            if _ours(transfer, again["certificateDescription"], iot):
                return _earlier_attempt_landed(transfer, iot, again["certificateDescription"])
        raise
    _mark_pending(transfer, answer.get("transferredCertificateArn"))
    return "pending_acceptance"


def _attached_things(iot, arn: str) -> dict[str, str]:
    return aws.principal_things(iot, arn)


def _wait_for_things_detached(iot, arn: str, things: list[str]) -> None:
    """DetachThingPrincipal is asynchronous (AWS: it can take several seconds to
    propagate): confirm nothing is attached before TransferCertificate, for a bounded time."""
    deadline = time.monotonic() + settings.TRANSFER_THING_DETACH_WAIT_SECONDS
    delay = 0.25
    while True:
        things = _still_attached(iot, arn, things)
        if not things:
            return
        if time.monotonic() + delay > deadline:
            raise _Refused(
                "ThingDetachNotPropagated",
                f"AWS still lists things attached ({', '.join(things)}) "
                f"{settings.TRANSFER_THING_DETACH_WAIT_SECONDS} s after detaching them, so the "
                "transfer was not sent. Retry the transfer once AWS shows them detached.",
            )
        time.sleep(delay)
        delay = min(delay * 2, 4.0)


def _still_attached(iot, arn: str, things: list[str]) -> list[str]:
    """Those of ``things`` AWS still lists ``arn`` on, asked from each thing's side
    (ListThingPrincipals): ListPrincipalThingsV2 was already called for this certificate, and
    each API has its own allowance, so confirming does not halve the rate of a move."""
    left = []
    for name in things:
        try:
            pages = aws.pages(
                iot, "list_thing_principals", "principals", thingName=name, maxResults=250
            )
            principals = list(pages)
        except aws.AwsError as exc:
            if exc.code != "ResourceNotFoundException":
                raise
            continue  # the thing was deleted: nothing is attached to it
        if arn in principals:
            left.append(name)
    return left


def _ours(transfer: Transfer, desc: dict, iot) -> bool:
    """The transfer AWS describes is this one's, from an earlier TransferCertificate call
    (reconcile.is_ours: dated after our first call, to our target, no newer transfer)."""
    return transfer.first_transfer_at is not None and is_ours(transfer, desc, iot)


def _earlier_attempt_landed(transfer: Transfer, iot, desc: dict | None = None) -> str:
    """Our earlier TransferCertificate went through though its answer was lost: record it
    as pending, then let the reconciler decide what became of it since (still pending,
    accepted, rejected or cancelled), from DescribeCertificate."""
    if desc is not None:
        when = as_datetime((desc.get("transferData") or {}).get("transferDate"))
        transfer.transfer_date = when or transfer.transfer_date
    record(
        transfer,
        "earlier_attempt_found",
        WORKER,
        reason="an earlier TransferCertificate went through though its answer was lost",
        aws_status=desc["status"] if desc else "gone from the source",
    )
    _mark_pending(transfer, None)
    transfer.refresh_from_db()
    if desc is not None and desc["status"] == "PENDING_TRANSFER":
        return "pending_acceptance"
    return decide(transfer, iot)


def _mark_pending(transfer: Transfer, arn: str | None) -> None:
    partition_arn = arn or transfer.certificate_arn.replace(
        f":{transfer.source.account_id}:", f":{transfer.target_account_id}:"
    )
    # Checked before the transition too: a worker whose lease was taken stops here, whatever
    # state the new holder has brought the transfer to.
    leases.confirm(transfer.pk, transfer.lease_token)

    def fill(row: Transfer) -> None:
        leases.check(row, transfer.lease_token)
        row.transferred_arn = partition_arn
        row.transfer_date = transfer.transfer_date or timezone.now()
        row.lease_until, row.lease_token = None, ""

    transition(
        transfer.pk,
        "mark_pending",
        WORKER,
        before=fill,
        refuse="Only a transfer being prepared can become pending.",
        transferred_arn=partition_arn,
    )
    Certificate.objects.filter(pk=transfer.cert_id).set_status("PENDING_TRANSFER")


def fail(pk: int, code: str, message: str, token: str | None = None) -> Transfer:
    """``token``: a worker fails the transfer only while it holds its lease (LeaseLost)."""

    def fill(row: Transfer) -> None:
        if token is not None:
            leases.check(row, token)
        row.error_code, row.error_message = code, message
        row.lease_until, row.lease_token = None, ""

    return transition(
        pk, "fail", WORKER, before=fill, refuse="Cannot fail it.", error_code=code, error=message
    )
