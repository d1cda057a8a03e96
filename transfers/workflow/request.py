"""Asking for a transfer: the rules every request follows, single or bulk."""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction

from policies import mail
from transfers import permissions
from transfers.models import (
    ACCOUNT_ID_RE,
    AwsAccount,
    Certificate,
    Transfer,
    TransferEvent,
    validate_transfer_text,
)
from transfers.workflow.devices import check_endpoint
from transfers.workflow.errors import TransferError
from transfers.workflow.events import record
from transfers.workflow.landing_plan import LandingChoice
from transfers.workflow.plan import Options, make_plan


def check_request(user, source: AwsAccount, target_account_id, message, reason):
    """The rules every request follows, single or bulk. Returns the cleaned values."""
    if not permissions.can_request(user, source):
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
    if target is None and not permissions.can_request_to_unknown(user, source):
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


def check_device_options(options: Options, target, region: str) -> None:
    """Telling the devices needs the target's endpoint: read from a managed target, typed
    for another (and checked to look like one of the region's); TransferError if not."""
    if not options.tell_devices:
        options.device_endpoint = ""
        return
    if target is not None and target.managed:
        options.device_endpoint = ""  # read from AWS when the job is made
        return
    if not options.device_endpoint.strip():
        raise TransferError(
            "endpoint_required",
            "The portal does not manage the target, so it cannot read its endpoint: type the "
            "target's iot:Data-ATS endpoint, or turn off telling the devices.",
        )
    options.device_endpoint = check_endpoint(options.device_endpoint, region)


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
    landing: LandingChoice | None = None,
) -> Transfer:
    target, target_account_id, message, reason = check_request(
        user, cert.account, target_account_id, message, reason
    )

    check_device_options(options, target, cert.region)
    plan = make_plan(cert, target_account_id, options, landing)
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
            landing=plan.get("landing") or {},
            landing_state=Transfer.Landing.PLANNED if plan.get("landing") else "",
            tell_devices=options.tell_devices and bool(plan.get("things")),
            device_things=list(plan.get("things") or []) if options.tell_devices else [],
            device_endpoints={"typed": options.device_endpoint} if options.device_endpoint else {},
        )
        record(
            transfer,
            "requested",
            user,
            kind=TransferEvent.Kind.TRANSITION,
            to_status=transfer.status,
            **event,
        )
        mail.requested(transfer)  # its approvers, after commit (a batch's: with the batch)
    return transfer
