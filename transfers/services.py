"""Transfer workflows: verb-named functions over the models, the AWS boundary and the queue.

Every state change happens on a locked row inside a transaction and writes a TransferEvent;
AWS calls stay outside transactions and each one writes an event too.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from django_fsm import can_proceed

from transfers import aws, notices
from transfers.models import (
    ACCOUNT_ID_RE,
    CAN_APPROVE,
    CAN_OPERATE,
    CAN_REQUEST,
    AwsAccount,
    Certificate,
    Role,
    Transfer,
    TransferEvent,
    validate_transfer_text,
)

log = logging.getLogger(__name__)
WORKER = "worker"
RECONCILER = "reconciler"
EXPIRY = "expiry"
EXPIRING_DAYS = 30


class TransferError(Exception):
    """A refusal with a stable code and a message for the person who asked."""

    def __init__(self, code: str, message: str, status: int = 400) -> None:
        self.code, self.message, self.status = code, message, status
        super().__init__(message)


class RetryLater(Exception):
    """A throttled or unavailable AWS: the task should try again after a backoff."""

    def __init__(self, error: aws.AwsError) -> None:
        self.error = error
        super().__init__(str(error))


# ----------------------------------------------------------------------------- events


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


def _aws(transfer: Transfer, by, aws_client, operation: str, **params) -> dict:
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


def _transition(pk: int, method: str, by, *, refuse: str, before=None, **details) -> Transfer:
    """Apply transition ``method`` on the locked row; TransferError if the state forbids it."""
    with transaction.atomic():
        transfer = Transfer.objects.select_for_update().get(pk=pk)
        bound = getattr(transfer, method)
        if not can_proceed(bound):
            raise TransferError(
                "invalid_state",
                f"{refuse} The transfer is {transfer.get_status_display().lower()}.",
                status=409,
            )
        if before is not None:
            before(transfer)
        old = transfer.status
        bound()
        transfer.updated = timezone.now()
        transfer.save()
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


def _enqueue(task_name: str, pk: int) -> None:
    """Send the task once the current transaction commits (at once outside one)."""
    from transfers import tasks

    task = getattr(tasks, task_name)
    transaction.on_commit(lambda: task.delay(pk))


# ----------------------------------------------------------------------------- plan


@dataclass
class Options:
    deactivate: bool = True
    detach_policies: bool = True
    detach_things: bool = True
    restore: bool = True


@dataclass
class Plan:
    status: str
    policies: list[str]
    things: list[str]
    not_after: str | None
    steps: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    blockers: list[str] = field(default_factory=list)

    @property
    def fingerprint(self) -> str:
        """Changes whenever what AWS says about the certificate changes."""
        state = json.dumps([self.status, sorted(self.policies), sorted(self.things)])
        return hashlib.sha256(state.encode()).hexdigest()[:16]

    def as_dict(self) -> dict:
        return {
            "status": self.status,
            "policies": self.policies,
            "things": self.things,
            "not_after": self.not_after,
            "steps": self.steps,
            "warnings": self.warnings,
            "blockers": self.blockers,
            "fingerprint": self.fingerprint,
        }


def read_certificate(account: AwsAccount, region: str, certificate_id: str) -> dict:
    """Fresh state of a certificate: status, validity, policies and things."""
    iot = aws.client(account, region)
    desc = aws.call(iot, "describe_certificate", certificateId=certificate_id)[
        "certificateDescription"
    ]
    arn = desc["certificateArn"]
    policies = [
        p["policyName"]
        for p in aws.pages(iot, "list_attached_policies", "policies", target=arn, pageSize=250)
    ]
    things = list(aws.pages(iot, "list_principal_things", "things", principal=arn, maxResults=250))
    return {"description": desc, "policies": policies, "things": things}


def make_plan(cert: Certificate, target_account_id: str, options: Options) -> Plan:
    try:
        fresh = read_certificate(cert.account, cert.region, cert.certificate_id)
    except aws.AwsError as exc:
        plan = Plan(status="UNKNOWN", policies=[], things=[], not_after=None)
        plan.blockers.append(f"Could not read the certificate from AWS: {exc.user_message}")
        return plan
    desc = fresh["description"]
    not_after = desc.get("validity", {}).get("notAfter")
    plan = Plan(
        status=desc["status"],
        policies=fresh["policies"],
        things=fresh["things"],
        not_after=not_after.isoformat() if not_after else None,
    )
    _plan_steps(plan, cert, target_account_id, options, not_after)
    return plan


def _plan_steps(plan: Plan, cert: Certificate, target_id: str, options: Options, not_after) -> None:
    source_id = cert.account.account_id
    if plan.status == "ACTIVE":
        if options.deactivate:
            plan.steps.append(
                "Deactivate the certificate (it is ACTIVE): its devices stop connecting with it."
            )
        else:
            plan.blockers.append(
                "The certificate is ACTIVE and you chose not to deactivate it; "
                "AWS only transfers inactive certificates."
            )
    elif plan.status == "PENDING_TRANSFER":
        plan.blockers.append("The certificate is already pending a transfer in AWS.")
    elif plan.status != "INACTIVE":
        plan.blockers.append(f"A {plan.status} certificate cannot be transferred.")
    for kind, names, allowed in (
        ("policies", plan.policies, options.detach_policies),
        ("things", plan.things, options.detach_things),
    ):
        if not names:
            continue
        if allowed:
            plan.steps.append(f"Detach {kind} ({len(names)}): {', '.join(names)}.")
        else:
            plan.blockers.append(
                f"The certificate has {kind} attachments ({', '.join(names)}) "
                f"and you chose not to detach them; AWS refuses the transfer."
            )
    plan.steps.append(
        f"Call TransferCertificate to account {target_id}; it stays pending until "
        "the target accepts or rejects it."
    )
    if options.restore and plan.steps[:-1]:
        plan.steps.append("If it is cancelled, rejected or expires, put back what was removed.")
    if target_id == source_id:
        plan.blockers.append("The target is the account that already owns the certificate.")
    if not ACCOUNT_ID_RE.match(target_id):
        plan.blockers.append("The target must be a 12-digit AWS account id.")
    if (
        Transfer.objects.open()
        .filter(source=cert.account, region=cert.region, certificate_id=cert.certificate_id)
        .exists()
    ):
        plan.blockers.append("This certificate already has an open transfer.")
    if not_after is not None:
        if not_after <= timezone.now():
            plan.warnings.append(f"The certificate expired on {not_after:%Y-%m-%d}.")
        elif not_after <= timezone.now() + timedelta(days=EXPIRING_DAYS):
            plan.warnings.append(
                f"The certificate expires on {not_after:%Y-%m-%d}, within {EXPIRING_DAYS} days."
            )
    target = AwsAccount.objects.filter(account_id=target_id).first()
    if target is None:
        plan.warnings.append(
            f"Account {target_id} is not known to the portal: nobody will be "
            "told the transfer is waiting unless you tell them."
        )
    elif not target.has_contacts:
        plan.warnings.append(
            f"{target.name} has no notice contacts: nobody will be told the transfer is waiting."
        )


# ----------------------------------------------------------------------------- request


def roles(user, account: AwsAccount | None) -> set[str]:
    return account.role_for(user) if account is not None else set()


def check_request(user, source: AwsAccount, target_account_id, message, reason):
    """The rules every request follows, single or bulk. Returns the cleaned values."""
    if not roles(user, source) & CAN_REQUEST:
        raise TransferError(
            "forbidden",
            "Your role does not allow requesting transfers from this account.",
            status=403,
        )
    target_account_id = (target_account_id or "").strip()
    message, reason = message or "", reason or ""
    if not ACCOUNT_ID_RE.match(target_account_id):
        raise TransferError("invalid_target", "The target must be a 12-digit AWS account id.")
    if target_account_id == source.account_id:
        raise TransferError(
            "invalid_target", "The target is the account that owns the certificate."
        )
    target = AwsAccount.objects.filter(account_id=target_account_id).first()
    if target is None and Role.ADMIN not in roles(user, source):
        raise TransferError(
            "unknown_target",
            "Only an admin of the source account may transfer "
            "to an account the portal does not know.",
            status=403,
        )
    try:
        validate_transfer_text(message)
    except ValidationError as exc:
        raise TransferError(
            "invalid_message", f"Transfer message: {' '.join(exc.messages)}"
        ) from None
    if not reason.strip():
        raise TransferError("invalid_reason", "Say why the certificate is being transferred.")
    if len(reason) > 2000:
        raise TransferError("invalid_reason", "The reason is limited to 2000 characters.")
    return target, target_account_id, message, reason.strip()


def request_transfer(
    user,
    cert: Certificate,
    *,
    target_account_id: str,
    message: str,
    reason: str,
    options: Options,
    fingerprint: str = "",
    batch=None,
) -> Transfer:
    target, target_account_id, message, reason = check_request(
        user, cert.account, target_account_id, message, reason
    )

    plan = make_plan(cert, target_account_id, options)
    if fingerprint and fingerprint != plan.fingerprint:
        raise TransferError(
            "stale_plan",
            "The certificate changed in AWS since the plan was "
            "shown. Review the new plan and submit again.",
            status=409,
        )
    if plan.blockers:
        raise TransferError("blocked", " ".join(plan.blockers), status=409)
    try:
        transfer = open_transfer(
            user,
            cert,
            target=target,
            target_account_id=target_account_id,
            message=message,
            reason=reason.strip(),
            options=options,
            plan=plan.as_dict(),
            batch=batch,
            event={"plan": plan.as_dict()},
        )
    except IntegrityError:
        raise TransferError(
            "already_open", "This certificate already has an open transfer.", status=409
        ) from None
    return transfer


def open_transfer(
    user,
    cert: Certificate,
    *,
    target,
    target_account_id,
    message,
    reason,
    options,
    plan,
    batch=None,
    event: dict,
) -> Transfer:
    """The Transfer row and its "requested" event, together. Raises IntegrityError when the
    certificate already has an open transfer (the partial unique index)."""
    with transaction.atomic():
        transfer = Transfer.objects.create(
            source=cert.account,
            region=cert.region,
            cert=cert,
            certificate_id=cert.certificate_id,
            certificate_arn=cert.arn,
            target_account_id=target_account_id,
            target=target,
            batch=batch,
            requester=user,
            reason=reason,
            message=message,
            deactivate=options.deactivate,
            detach_policies=options.detach_policies,
            detach_things=options.detach_things,
            restore=options.restore,
            plan=plan,
        )
        record(
            transfer,
            "requested",
            user,
            kind=TransferEvent.Kind.TRANSITION,
            to_status=transfer.status,
            **event,
        )
    return transfer


# ----------------------------------------------------------------------------- decisions


def _comment(comment: str | None) -> str:
    comment = (comment or "").strip()
    if len(comment) > 2000:
        raise TransferError("invalid_comment", "A comment is limited to 2000 characters.")
    return comment


def approve(user, pk: int, comment: str = "", *, enqueue: bool = True) -> Transfer:
    comment = _comment(comment)

    def check(transfer: Transfer) -> None:
        if not roles(user, transfer.source) & CAN_APPROVE:
            raise TransferError(
                "forbidden", "You may not approve transfers from this account.", status=403
            )
        if transfer.requester_id == user.pk:
            raise TransferError(
                "self_approval",
                "Nobody approves their own request: another approver must decide.",
                status=403,
            )
        transfer.approver = user
        transfer.decision_comment = comment.strip()

    transfer = _transition(
        pk,
        "approve",
        user,
        before=check,
        refuse="Only a requested transfer can be approved.",
        comment=comment.strip(),
    )
    if enqueue:
        _enqueue("execute_transfer", transfer.pk)
    return transfer


def decline(user, pk: int, comment: str = "") -> Transfer:
    comment = _comment(comment)

    def check(transfer: Transfer) -> None:
        if not roles(user, transfer.source) & CAN_APPROVE:
            raise TransferError(
                "forbidden", "You may not decline transfers from this account.", status=403
            )
        if not comment.strip():
            raise TransferError("comment_required", "Say why you decline it.")
        transfer.approver = user
        transfer.decision_comment = comment.strip()

    return _transition(
        pk,
        "decline",
        user,
        before=check,
        refuse="Only a requested transfer can be declined.",
        comment=comment.strip(),
    )


def withdraw(user, pk: int) -> Transfer:
    def check(transfer: Transfer) -> None:
        if transfer.requester_id != user.pk and Role.ADMIN not in roles(user, transfer.source):
            raise TransferError(
                "forbidden",
                "Only the requester (or an account admin) can withdraw a request.",
                status=403,
            )

    return _transition(
        pk,
        "withdraw",
        user,
        before=check,
        refuse="Only a request that is not yet approved can be withdrawn.",
    )


def retry(user, pk: int, *, enqueue: bool = True) -> Transfer:
    def check(transfer: Transfer) -> None:
        if not roles(user, transfer.source) & (CAN_APPROVE | CAN_OPERATE):
            raise TransferError(
                "forbidden", "You may not retry transfers from this account.", status=403
            )

    transfer = _transition(
        pk, "retry", user, before=check, refuse="Only a failed transfer can be retried."
    )
    if enqueue:
        _enqueue("execute_transfer", transfer.pk)
    return transfer


# ----------------------------------------------------------------------------- execution


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
    desc = _aws(
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
        _aws(
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
        _aws(transfer, WORKER, iot, "detach_policy", policyName=name, target=arn)

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
        _aws(transfer, WORKER, iot, "detach_thing_principal", thingName=name, principal=arn)

    try:
        answer = _aws(
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

    _transition(
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

    return _transition(
        pk, "fail", WORKER, before=fill, refuse="Cannot fail it.", error_code=code, error=message
    )


# ----------------------------------------------------------------------------- after AWS


def _act_in_aws(transfer: Transfer, user, account, operation: str, already: str, **params):
    """A person's accept, reject or cancel in AWS, as ``account``. When AWS says the transfer
    already ended, the portal catches up (reconcile) and says so."""
    iot = aws.client(account, transfer.region)
    try:
        _aws(transfer, user, iot, operation, certificateId=transfer.certificate_id, **params)
    except aws.AwsError as exc:
        if exc.code == "TransferAlreadyCompletedException":
            reconcile_one(transfer.pk)
            raise TransferError(
                "already_completed",
                f"{already}; the portal has caught up with AWS.",
                status=409,
            ) from None
        raise TransferError(exc.code, exc.user_message, status=502) from None


def cancel(user, pk: int) -> Transfer:
    transfer = Transfer.objects.select_related("source").get(pk=pk)
    if not roles(user, transfer.source) & CAN_OPERATE:
        raise TransferError(
            "forbidden", "You may not cancel transfers from this account.", status=403
        )
    if transfer.status == Transfer.Status.PENDING_ACCEPTANCE:
        _act_in_aws(
            transfer,
            user,
            transfer.source,
            "cancel_certificate_transfer",
            "The target account already accepted or rejected it",
        )
    elif transfer.status != Transfer.Status.FAILED:
        raise TransferError(
            "invalid_state",
            "Only a pending or failed transfer can be "
            f"cancelled; this one is {transfer.get_status_display().lower()}. "
            "A request not yet approved is withdrawn instead.",
            status=409,
        )
    return _end(pk, "cancel", user)


def _end(pk: int, method: str, by, **details) -> Transfer:
    """A transition that ends the transfer with the certificate back at the source."""

    def mark(row: Transfer) -> None:
        if row.needs_restore():
            row.restore_state = Transfer.Restore.PENDING
        for name, value in details.items():
            setattr(row, name, value)

    with transaction.atomic():
        transfer = _transition(
            pk,
            method,
            by,
            before=mark,
            refuse="It already ended.",
            **{k: str(v) for k, v in details.items()},
        )
        if transfer.restore_state == Transfer.Restore.PENDING:
            _enqueue("restore_transfer", transfer.pk)
    return transfer


def target_roles(user, transfer: Transfer) -> set[str]:
    target = transfer.target
    if target is None or not target.managed:
        return set()
    return roles(user, target)


def accept(user, pk: int, set_as_active: bool = False) -> Transfer:
    transfer = Transfer.objects.select_related("target").get(pk=pk)
    if not target_roles(user, transfer) & CAN_OPERATE:
        raise TransferError(
            "forbidden", "You may not accept transfers into this account.", status=403
        )
    if transfer.status != Transfer.Status.PENDING_ACCEPTANCE:
        raise TransferError("invalid_state", "Only a pending transfer can be accepted.", 409)
    _act_in_aws(
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

    transfer = _transition(
        pk,
        "mark_accepted",
        user,
        before=fill,
        refuse="It already ended.",
        set_as_active=set_as_active,
    )
    _moved(transfer)
    return transfer


def _moved(transfer: Transfer) -> None:
    """The certificate left the source: drop its row there, refresh the target's inventory."""
    from transfers import inventory

    Certificate.objects.filter(pk=transfer.cert_id).delete()
    target = transfer.target
    if target is not None and target.managed and transfer.region in target.regions:
        inventory.queue_sync(target, transfer.region)


def reject(user, pk: int, reason: str) -> Transfer:
    transfer = Transfer.objects.select_related("target").get(pk=pk)
    if not target_roles(user, transfer) & CAN_OPERATE:
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
    _act_in_aws(
        transfer,
        user,
        transfer.target,
        "reject_certificate_transfer",
        "It was already cancelled or accepted",
        rejectReason=reason,
    )
    return _end(pk, "mark_rejected", user, reject_reason=reason, reject_date=timezone.now())


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
            _aws(transfer, WORKER, iot, operation, **params)
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


# ----------------------------------------------------------------------------- expiry


def expire(pk: int) -> str:
    """Cancel in AWS a transfer nobody accepted in time; restore as the request chose."""
    transfer = Transfer.objects.select_related("source", "target").get(pk=pk)
    if transfer.status != Transfer.Status.PENDING_ACCEPTANCE:
        return f"skipped: {transfer.status}"
    iot = aws.client(transfer.source, transfer.region)
    try:
        _aws(
            transfer,
            EXPIRY,
            iot,
            "cancel_certificate_transfer",
            certificateId=transfer.certificate_id,
        )
    except aws.AwsError as exc:
        if exc.code == "TransferAlreadyCompletedException":
            return reconcile_one(pk)  # accepted or rejected at the last moment
        raise
    try:
        _end(pk, "expire", EXPIRY)
    except TransferError:
        return "raced"
    return "expired"


def due_for_expiry(now=None) -> list[int]:
    now = now or timezone.now()
    pending = Transfer.objects.filter(status=Transfer.Status.PENDING_ACCEPTANCE).select_related(
        "target"
    )
    return [t.pk for t in pending if t.expires_at and t.expires_at <= now]


def send_reminders(now=None) -> int:
    """Beat: remind the target once, a configured time before the transfer expires."""
    now = now or timezone.now()
    ahead = timedelta(hours=settings.TRANSFER_REMINDER_HOURS)
    sent = 0
    pending = Transfer.objects.filter(status=Transfer.Status.PENDING_ACCEPTANCE).select_related(
        "target", "source", "requester", "approver"
    )
    for transfer in pending:
        expires = transfer.expires_at
        if expires and expires - ahead <= now < expires:
            with transaction.atomic():
                sent += len(notices.create(transfer, notices.Kind.REMINDER))
    return sent


# ----------------------------------------------------------------------------- reconcile


def reconcile_one(pk: int) -> str:
    transfer = Transfer.objects.select_related("source", "target").get(pk=pk)
    if transfer.status != Transfer.Status.PENDING_ACCEPTANCE:
        return f"skipped: {transfer.status}"
    iot = aws.client(transfer.source, transfer.region)
    return _reconcile(transfer, iot, outgoing=None)


def reconcile_pending() -> dict[str, int]:
    """Ask AWS about every pending transfer; catch up with what happened outside the portal."""
    outcomes: dict[str, int] = {}
    pending = Transfer.objects.filter(status=Transfer.Status.PENDING_ACCEPTANCE).select_related(
        "source", "target"
    )
    groups: dict[tuple[int, str], list[Transfer]] = {}
    for transfer in pending:
        groups.setdefault((transfer.source_id, transfer.region), []).append(transfer)
    for group in groups.values():
        first = group[0]
        try:
            iot = aws.client(first.source, first.region)
            outgoing = {
                item["certificateId"]: item
                for item in aws.pages(
                    iot, "list_outgoing_certificates", "outgoingCertificates", pageSize=250
                )
            }
        except aws.AwsError as exc:
            log.warning("reconcile: cannot list outgoing of %s: %s", first.source, exc)
            outcomes["unreachable"] = outcomes.get("unreachable", 0) + len(group)
            continue
        for transfer in group:
            try:
                outcome = _reconcile(transfer, iot, outgoing)
            except aws.AwsError as exc:
                log.warning("reconcile: %s: %s", transfer, exc)
                outcome = "error"
            outcomes[outcome] = outcomes.get(outcome, 0) + 1
    return outcomes


def _reconcile(transfer: Transfer, iot, outgoing: dict | None) -> str:
    if outgoing is None:
        outgoing = {
            item["certificateId"]: item
            for item in aws.pages(
                iot, "list_outgoing_certificates", "outgoingCertificates", pageSize=250
            )
        }
    item = outgoing.get(transfer.certificate_id)
    if item and item.get("transferredTo") == transfer.target_account_id:
        return "pending"
    try:
        desc = aws.call(iot, "describe_certificate", certificateId=transfer.certificate_id)[
            "certificateDescription"
        ]
    except aws.AwsError as exc:
        if exc.code != "ResourceNotFoundException":
            raise
        # Gone from the source: the target accepted it.
        accept_date = None
        if transfer.target and transfer.target.managed:
            accept_date = _target_accept_date(transfer)

        def fill(row: Transfer) -> None:
            row.accept_date = accept_date or timezone.now()

        try:
            _transition(
                transfer.pk,
                "mark_accepted",
                RECONCILER,
                before=fill,
                refuse="It already ended.",
                seen="gone from the source account",
            )
        except TransferError:
            return "raced"
        _moved(transfer)
        return "accepted"
    data = desc.get("transferData", {})
    if data.get("rejectDate"):
        try:
            _end(
                transfer.pk,
                "mark_rejected",
                RECONCILER,
                reject_reason=data.get("rejectReason", "")[:128],
                reject_date=_as_datetime(data["rejectDate"]),
            )
        except TransferError:
            return "raced"
        return "rejected"
    try:
        _end(transfer.pk, "cancel", RECONCILER)
    except TransferError:
        return "raced"
    return "cancelled"


def _target_accept_date(transfer: Transfer):
    try:
        iot = aws.client(transfer.target, transfer.region)
        desc = aws.call(iot, "describe_certificate", certificateId=transfer.certificate_id)[
            "certificateDescription"
        ]
    except aws.AwsError:
        return None
    return _as_datetime(desc.get("transferData", {}).get("acceptDate"))


def _as_datetime(value):
    if value is None or hasattr(value, "tzinfo"):
        return value
    return parse_datetime(str(value))


def requeue_stalled() -> int:
    """Approved or preparing transfers that made no progress (a lost message, a dead worker).
    A batch's transfers go back through its feeder, which keeps to the account's rate."""
    cutoff = timezone.now() - timedelta(minutes=settings.TRANSFER_STALL_MINUTES)
    from transfers import tasks

    stalled = list(
        Transfer.objects.filter(status__in=Transfer.Status.IN_FLIGHT, updated__lt=cutoff)
        .exclude(lease_until__gt=timezone.now())
        .values_list("pk", "batch_id", "status")
    )
    waiting = [(pk, b) for pk, b, status in stalled if b and status == Transfer.Status.APPROVED]
    for pk, batch_id, _status in stalled:
        if (pk, batch_id) not in waiting:
            tasks.execute_transfer.delay(pk)
    Transfer.objects.filter(pk__in=[pk for pk, _ in waiting]).update(queued_at=None)
    for batch_id in {b for _, b in waiting}:
        tasks.feed_batch.delay(batch_id)
    return len(stalled)
