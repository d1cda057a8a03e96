"""The worker's part: prepare the certificate in the source and transfer it.

Resumable at every step: what was done is recorded on the row before the call, so a
redelivered task continues instead of repeating an AWS call.
"""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from transfers import aws
from transfers.models import Certificate, Transfer, TransferEvent
from transfers.workflow.errors import WORKER, RetryLater
from transfers.workflow.events import aws_call, record, transition


def execute(pk: int) -> str:
    """Prepare the certificate and transfer it; resumable at every step.

    Returns what happened. Raises RetryLater for throttling and outages."""
    now = timezone.now()
    with transaction.atomic():
        transfer = Transfer.objects.select_for_update().get(pk=pk)
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
        transfer.lease_until = now + timedelta(seconds=settings.TRANSFER_LEASE_SECONDS)
        transfer.attempts += 1
        transfer.updated = now
        transfer.save()
    try:
        _prepare_and_transfer(transfer)
    except aws.AwsError as exc:
        _release(transfer.pk)
        if exc.retryable:
            raise RetryLater(exc) from exc
        fail(transfer.pk, exc.code, exc.user_message)
        return f"failed: {exc.code}"
    except _Refused as exc:
        _release(transfer.pk)
        fail(transfer.pk, exc.code, exc.message)
        return f"failed: {exc.code}"
    return "pending_acceptance"


class _Refused(Exception):
    def __init__(self, code: str, message: str) -> None:
        self.code, self.message = code, message
        super().__init__(message)


def _release(pk: int) -> None:
    Transfer.objects.filter(pk=pk).update(lease_until=None)


def _save_progress(transfer: Transfer, *fields: str) -> None:
    transfer.updated = timezone.now()
    Transfer.objects.filter(pk=transfer.pk).update(
        updated=transfer.updated, **{f: getattr(transfer, f) for f in fields}
    )


def _prepare_and_transfer(transfer: Transfer) -> None:
    iot = aws.client(transfer.source, transfer.region)
    desc = aws_call(
        transfer, WORKER, iot, "describe_certificate", certificateId=transfer.certificate_id
    )["certificateDescription"]
    status = desc["status"]
    if status == "PENDING_TRANSFER":
        if _pending_to_target(transfer, iot):
            _mark_pending(transfer, None)
            return
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
        _save_progress(transfer, "deactivated")
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
    for name in policies:
        if name not in transfer.detached_policies:
            transfer.detached_policies.append(name)
            _save_progress(transfer, "detached_policies")
        aws_call(transfer, WORKER, iot, "detach_policy", policyName=name, target=arn)

    things = list(aws.pages(iot, "list_principal_things", "things", principal=arn, maxResults=250))
    if things and not transfer.detach_things:
        raise _Refused(
            "TransferConflictException",
            "Things are attached and the request did "
            f"not allow detaching them: {', '.join(things)}.",
        )
    for name in things:
        if name not in transfer.detached_things:
            transfer.detached_things.append(name)
            _save_progress(transfer, "detached_things")
        aws_call(transfer, WORKER, iot, "detach_thing_principal", thingName=name, principal=arn)

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
        if exc.code in {
            "TransferConflictException",
            "CertificateStateException",
        } and _pending_to_target(transfer, iot):
            _mark_pending(transfer, None)
            return
        raise
    _mark_pending(transfer, answer.get("transferredCertificateArn"))


def _pending_to_target(transfer: Transfer, iot) -> bool:
    for item in aws.pages(iot, "list_outgoing_certificates", "outgoingCertificates", pageSize=250):
        if item["certificateId"] == transfer.certificate_id:
            if item.get("transferDate"):
                transfer.transfer_date = item["transferDate"]
            return item.get("transferredTo") == transfer.target_account_id
    return False


def _mark_pending(transfer: Transfer, arn: str | None) -> None:
    partition_arn = arn or transfer.certificate_arn.replace(
        f":{transfer.source.account_id}:", f":{transfer.target_account_id}:"
    )

    def fill(row: Transfer) -> None:
        row.transferred_arn = partition_arn
        row.transfer_date = transfer.transfer_date or timezone.now()
        row.lease_until = None

    transition(
        transfer.pk,
        "mark_pending",
        WORKER,
        before=fill,
        refuse="Only a transfer being prepared can become pending.",
        transferred_arn=partition_arn,
    )
    Certificate.objects.filter(pk=transfer.cert_id).update(status="PENDING_TRANSFER")


def fail(pk: int, code: str, message: str) -> Transfer:
    def fill(row: Transfer) -> None:
        row.error_code, row.error_message = code, message
        row.lease_until = None

    return transition(
        pk, "fail", WORKER, before=fill, refuse="Cannot fail it.", error_code=code, error=message
    )
