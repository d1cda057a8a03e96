"""The devices of a move: told the target's endpoint before it, verified back after it.

Before: a job in the source (AWS IoT Jobs, ``CreateJob``) hands the certificate's things a
document naming the endpoints in order, the target's first and the source's as fallback, so
a device that switched early, or whose move was cancelled, still connects somewhere. The
certificate is deactivated only once its things' executions SUCCEEDED (``gate``); one that
failed, was rejected, timed out or never got picked up holds the transfer in the source,
untouched, until an approver releases it (``release``). A batch has one job per wave
(``batches.feed`` starts it, ``refresh_jobs`` reads its executions a page at a time); a
single transfer has its own.

After: once the landing made the certificate usable in the target, ``check`` asks the
target's ``GetThingConnectivityData`` (backing off) until each thing is connected with a
timestamp after the landing, up to DEVICE_BACK_WAIT_MINUTES. Device downtime is from the
device's disconnection in the source (the source's connectivity record, read then: AWS drops
a device minutes after deactivation, so a read right after it would still say connected;
the deactivation time when the source has no record) to its connection in the target.
Without thing connectivity indexing in the target, or for a target the portal does not
manage, it says that it cannot be verified instead of a figure.
"""

from __future__ import annotations

import json
import re
from datetime import datetime, timedelta

from django.conf import settings
from django.core.cache import cache
from django.db import transaction
from django.utils import timezone

from transfers import aws, permissions, queue
from transfers.models import AwsAccount, Transfer, TransferBatch
from transfers.workflow.errors import WORKER, TransferError
from transfers.workflow.events import record

DATA, CREDENTIALS = "iot:Data-ATS", "iot:CredentialProvider"
FIRST_LOOK_SECONDS = 3
SUCCEEDED = "SUCCEEDED"
FAILED_EXECUTION = {"FAILED", "REJECTED", "TIMED_OUT", "REMOVED", "CANCELED"}
WAITING_EXECUTION = {"QUEUED", "IN_PROGRESS", ""}
# An AWS IoT data endpoint: "<prefix>-ats.iot.<region>.amazonaws.com" (".cn" in China).
_HOST = re.compile(r"^[a-z0-9]{6,32}(-ats)?\.iot\.(?P<region>[a-z0-9-]+)\.amazonaws\.com(\.cn)?$")


# --------------------------------------------------------------------------- endpoints


def check_endpoint(host: str, region: str) -> str:
    """A typed endpoint for a target the portal does not manage: it must look like an AWS
    IoT data endpoint of the transfer's region. Returns it normalised; TransferError if not."""
    host = (host or "").strip().lower().rstrip(".")
    match = _HOST.match(host)
    if not match:
        raise TransferError(
            "invalid_endpoint",
            f"{host or 'An empty name'} is not an AWS IoT data endpoint: expected a host "
            f"like abc123example-ats.iot.{region}.amazonaws.com (the target's "
            "`aws iot describe-endpoint --endpoint-type iot:Data-ATS`).",
        )
    if match["region"] != region:
        raise TransferError(
            "invalid_endpoint",
            f"{host} is an endpoint of {match['region']}; the devices move within {region}.",
        )
    return host


def _endpoint(account: AwsAccount, region: str, kind: str) -> str:
    key = f"iot-endpoint:{account.account_id}:{region}:{kind}"
    host = cache.get(key)
    if host is None:
        iot = aws.client(account, region)
        host = aws.call(iot, "describe_endpoint", endpointType=kind)["endpointAddress"]
        cache.set(key, host, 3600)
    return host


def endpoints(source: AwsAccount, region: str, target: AwsAccount | None, typed: str = "") -> dict:
    """What the devices are told: ``{"data": [target, source], "credentials": [...]}``.
    A managed target's endpoints are read from AWS (DescribeEndpoint); an unmanaged target's
    data endpoint is the one the requester typed (no credential provider then)."""
    data = [_endpoint(target, region, DATA) if target and target.managed else typed]
    credentials = [_endpoint(target, region, CREDENTIALS)] if target and target.managed else []
    data.append(_endpoint(source, region, DATA))
    credentials.append(_endpoint(source, region, CREDENTIALS))
    return {"data": data, "credentials": credentials}


def document(told: dict) -> str:
    """The job document (docs/moving-a-fleet.md): the endpoints in the order to try them."""
    return json.dumps(
        {
            "operation": "change-endpoint",
            "endpoints": told["data"],
            "credentialProviderEndpoints": told.get("credentials", []),
        }
    )


# --------------------------------------------------------------------------- the job


def _thing_arn(transfer_or_arn, name: str) -> str:
    arn = getattr(transfer_or_arn, "certificate_arn", transfer_or_arn)
    head = arn.split(":cert/")[0]  # arn:aws:iot:region:account
    return f"{head}:thing/{name}"


def create_job(
    source: AwsAccount,
    region: str,
    job_id: str,
    things: list[str],
    told: dict,
    cert_arn: str,
    description: str,
) -> None:
    """One job in the source for ``things``; an earlier attempt's job of that id is this one."""
    iot = aws.client(source, region)
    try:
        aws.call(
            iot,
            "create_job",
            jobId=job_id,
            targets=[_thing_arn(cert_arn, name) for name in things],
            document=document(told),
            description=description[:2028],
            timeoutConfig={"inProgressTimeoutInMinutes": settings.DEVICE_JOB_TIMEOUT_MINUTES},
        )
    except aws.AwsError as exc:
        if exc.code != "ResourceAlreadyExistsException":
            raise


def cancel_job(source: AwsAccount, region: str, job_id: str, comment: str) -> bool:
    """Cancel a job's executions not yet done (those that SUCCEEDED stay: those devices
    hold the target's endpoint first and the source's as fallback)."""
    iot = aws.client(source, region)
    try:
        aws.call(iot, "cancel_job", jobId=job_id, comment=comment[:2028])
    except aws.AwsError as exc:
        if exc.code in {"ResourceNotFoundException", "InvalidRequestException"}:
            return False  # never created, or already completed
        raise
    return True


def _start_single(transfer: Transfer) -> None:
    told = endpoints(
        transfer.source,
        transfer.region,
        transfer.target,
        transfer.device_endpoints.get("typed", ""),
    )
    job_id = f"portal-transfer-{transfer.pk}"
    Transfer.objects.filter(pk=transfer.pk).update(
        device_job_id=job_id, device_endpoints={**transfer.device_endpoints, **told}
    )
    transfer.device_job_id, transfer.device_endpoints = (
        job_id,
        {**transfer.device_endpoints, **told},
    )
    create_job(
        transfer.source,
        transfer.region,
        job_id,
        transfer.device_things,
        told,
        transfer.certificate_arn,
        f"Certificate transfer portal: transfer #{transfer.pk} moves these devices to "
        f"{transfer.target_account_id}; connect to the endpoints in this order.",
    )
    record(transfer, "devices_told", WORKER, job=job_id, endpoints=told["data"])


def _worst(statuses: list[str]) -> str:
    for status in statuses:
        if status in FAILED_EXECUTION:
            return status
    for status in statuses:
        if status != SUCCEEDED:
            return status or "QUEUED"
    return SUCCEEDED


# The fields ready() reads.
READY_FIELDS = ("tell_devices", "device_things", "device_job_status", "device_released_by")


def ready(transfer: Transfer) -> bool:
    return (
        not transfer.tell_devices
        or not transfer.device_things
        or transfer.device_job_status == SUCCEEDED
        or transfer.device_released_by_id is not None
    )


def gate(transfer: Transfer) -> str | None:
    """Before the certificate is touched: None when its devices were told (or need not be),
    "waiting" while their job runs, "held" when it failed (the reason on the row)."""
    if ready(transfer):
        return None
    if transfer.device_hold:
        return "held"
    if not transfer.device_job_id:
        _start_single(transfer)
    iot = aws.client(transfer.source, transfer.region)
    statuses = []
    for name in transfer.device_things:
        try:
            answer = aws.call(
                iot, "describe_job_execution", jobId=transfer.device_job_id, thingName=name
            )
            statuses.append(answer["execution"]["status"])
        except aws.AwsError as exc:
            if exc.code != "ResourceNotFoundException":  # not yet dispatched to it
                raise
            statuses.append("QUEUED")
    return _settle(transfer, _worst(statuses))


def _settle(transfer: Transfer, status: str) -> str | None:
    started = _job_started(transfer)
    hold = ""
    if status in FAILED_EXECUTION:
        hold = (
            f"The device's job execution ended {status}: it was not told the target's "
            "endpoint, so the certificate stays in the source, untouched."
        )
    elif (
        status != SUCCEEDED
        and started
        and timezone.now() - started > timedelta(minutes=settings.DEVICE_JOB_WAIT_MINUTES)
    ):
        hold = (
            f"The device did not finish its job in {settings.DEVICE_JOB_WAIT_MINUTES} "
            f"minutes (execution {status}): the certificate stays in the source, untouched."
        )
    Transfer.objects.filter(pk=transfer.pk).update(device_job_status=status, device_hold=hold)
    transfer.device_job_status, transfer.device_hold = status, hold
    if hold:
        record(transfer, "devices_held", WORKER, ok=False, execution=status, reason=hold)
        return "held"
    if status == SUCCEEDED:
        record(transfer, "devices_ready", WORKER, execution=status)
        return None
    return "waiting"


def hold(transfer: Transfer, reason: str) -> None:
    Transfer.objects.filter(pk=transfer.pk).update(device_hold=reason)
    transfer.device_hold = reason
    record(transfer, "devices_held", WORKER, ok=False, reason=reason)


def _job_started(transfer: Transfer) -> datetime | None:
    event = transfer.events.filter(action="devices_told").order_by("created").first()
    if event is not None:
        return event.created
    return transfer.decided_at


def refresh_jobs(batch: TransferBatch, transfers) -> int:
    """The executions of the batch's started waves, a page at a time
    (ListJobExecutionsForJob), onto those of ``transfers`` still waiting. Returns how many
    changed."""
    by_thing: dict[tuple[str, str], list[Transfer]] = {}
    for t in transfers:
        for name in t.device_things:
            by_thing.setdefault((t.device_job_id, name), []).append(t)
    if not by_thing:
        return 0
    iot = aws.client(batch.source, batch.region)
    seen: dict[tuple[str, str], str] = {}
    for job_id in sorted({job for job, _name in by_thing}):
        for summary in aws.pages(
            iot, "list_job_executions_for_job", "executionSummaries", jobId=job_id, maxResults=250
        ):
            name = summary["thingArn"].rsplit("/", 1)[-1]
            seen[job_id, name] = summary["jobExecutionSummary"]["status"]
    changed = 0
    for t in {t.pk: t for ts in by_thing.values() for t in ts}.values():
        status = _worst([seen.get((t.device_job_id, n), "QUEUED") for n in t.device_things])
        if status != t.device_job_status:
            _settle(t, status)
            changed += 1
    return changed


def release(user, pk: int, comment: str = "") -> Transfer:
    """An approver moves a held transfer without its devices' confirmation."""
    with transaction.atomic():
        transfer = Transfer.objects.select_for_update().get(pk=pk)
        if not permissions.can_approve(user, transfer.source):
            raise TransferError("forbidden", "Only an approver of the source can release it.", 403)
        if not transfer.device_hold or transfer.status != Transfer.Status.APPROVED:
            raise TransferError(
                "invalid_state", "Only a transfer held for its devices can be released.", 409
            )
        transfer.device_released_by = user
        transfer.device_hold = ""
        transfer.queued_at = timezone.now()
        transfer.save(update_fields=["device_released_by", "device_hold", "queued_at"])
        record(transfer, "devices_released", user, comment=comment)
        queue.enqueue("execute_transfer", pk)
    return transfer


def stop_waiting(user, pk: int, comment: str = "") -> Transfer:
    """The requester or an approver gives up on a transfer still waiting for, or held by,
    its devices: it ends cancelled, the certificate untouched in the source, and its own
    job (not a batch wave's, which other devices share) is cancelled for its device."""
    from transfers.workflow.events import transition

    transfer = Transfer.objects.select_related("source").get(pk=pk)
    if not (transfer.requester_id == user.pk or permissions.can_approve(user, transfer.source)):
        raise TransferError("forbidden", "Only the requester or an approver can stop it.", 403)
    if transfer.status != Transfer.Status.APPROVED or not transfer.tell_devices:
        raise TransferError(
            "invalid_state", "Only a transfer waiting for its devices can be stopped.", 409
        )

    def fill(row: Transfer) -> None:
        if row.status != Transfer.Status.APPROVED or row.lease_until:
            raise TransferError("invalid_state", "A worker has started it.", 409)
        row.error_message = comment or "Stopped while it waited for its devices."

    stopped = transition(
        pk, "stop", user, refuse="It is no longer waiting.", before=fill, comment=comment
    )
    if stopped.device_job_id == f"portal-transfer-{pk}":
        try:
            cancel_job(stopped.source, stopped.region, stopped.device_job_id, "transfer stopped")
        except aws.AwsError as exc:
            record(stopped, "devices_job_not_cancelled", user, ok=False, error=exc.user_message)
    return stopped


# --------------------------------------------------------------------------- back online


def connectivity_indexed(account: AwsAccount, region: str) -> bool:
    """Thing connectivity indexing on (GetIndexingConfiguration: STATUS): without it AWS
    cannot say whether a device is connected."""
    key = f"iot-connectivity-indexed:{account.account_id}:{region}"
    known = cache.get(key)
    if known is None:
        iot = aws.client(account, region)
        answer = aws.call(iot, "get_indexing_configuration")
        mode = (answer.get("thingIndexingConfiguration") or {}).get(
            "thingConnectivityIndexingMode", "OFF"
        )
        known = mode == "STATUS"
        cache.set(key, known, 300)
    return known


def indexing_changed(account: AwsAccount, region: str) -> None:
    """The account's indexing configuration changed (a landing turned connectivity on):
    forget what ``connectivity_indexed`` remembered."""
    cache.delete(f"iot-connectivity-indexed:{account.account_id}:{region}")


def start_check(pk: int) -> str:
    """After the landing made the certificate usable in the target: verify its devices."""
    transfer = Transfer.objects.select_related("target", "source").get(pk=pk)
    things = transfer.detached_things or transfer.device_things
    if not things or transfer.device_check or transfer.usable_at is None:
        return "nothing to verify"
    why = ""
    if transfer.target is None or not transfer.target.managed:
        why = (
            "The portal does not manage the target, so it cannot ask whether the devices are back."
        )
    else:
        try:
            if not connectivity_indexed(transfer.target, transfer.region):
                why = (
                    "Thing connectivity indexing is off in the target, so AWS cannot say "
                    "whether the devices are back (turn it on with the landing, or "
                    "update-indexing-configuration)."
                )
        except aws.AwsError as exc:
            if exc.retryable:
                why = ""  # asked again by the first check
            else:
                why = f"Could not read the target's indexing configuration: {exc.user_message}"
    now = timezone.now()
    if why:
        Transfer.objects.filter(pk=pk).update(
            device_check=Transfer.DeviceCheck.UNVERIFIABLE, device_reason=why[:200]
        )
        record(transfer, "devices_unverifiable", WORKER, reason=why)
        return "unverifiable"
    Transfer.objects.filter(pk=pk).update(
        device_check=Transfer.DeviceCheck.WAITING,
        device_check_until=now + timedelta(minutes=settings.DEVICE_BACK_WAIT_MINUTES),
        device_next_check_at=now + timedelta(seconds=FIRST_LOOK_SECONDS),
        device_checks=0,
    )
    return "waiting"  # looked at by check_due, from device_next_check_at on


def _connectivity(account: AwsAccount, region: str, thing: str) -> dict:
    iot = aws.client(account, region)
    try:
        return aws.call(iot, "get_thing_connectivity_data", thingName=thing)
    except aws.AwsError as exc:
        if exc.code == "ResourceNotFoundException":
            return {"connected": False}
        raise


def check(pk: int) -> float | None:
    """One look at whether the transfer's devices are back in the target. Returns the
    seconds until the next look, or None when it is settled."""
    transfer = Transfer.objects.select_related("target", "source").get(pk=pk)
    if transfer.device_check != Transfer.DeviceCheck.WAITING:
        return None
    things = transfer.detached_things or transfer.device_things
    now = timezone.now()
    since = transfer.usable_at or now
    try:
        # A look waits briefly for the shared rate (RateLimited: the next look tries again):
        # checks never hold a worker that a move needs.
        with aws.waiting_at_most(1.0):
            answers = {
                name: _connectivity(transfer.target, transfer.region, name) for name in things
            }
    except aws.AwsError as exc:
        if not exc.retryable:
            why = f"AWS refused GetThingConnectivityData: {exc.user_message}"
            _finish(transfer, Transfer.DeviceCheck.UNVERIFIABLE, reason=why)
            return None
        answers = None
    if answers is not None:
        back = {
            name: a["timestamp"]
            for name, a in answers.items()
            if a.get("connected")
            and a.get("timestamp")
            and a["timestamp"] >= since - timedelta(seconds=1)
        }
        if len(back) == len(things):
            online = max(back.values())
            _finish(transfer, Transfer.DeviceCheck.BACK, online=online, offline=_offline(transfer))
            return None
        if now >= transfer.device_check_until:
            missing = [n for n in things if n not in back]
            reasons = sorted(
                {answers[n].get("disconnectReason") or "never connected" for n in missing}
            )
            why = (
                f"Not back {settings.DEVICE_BACK_WAIT_MINUTES} minutes after the landing "
                f"({', '.join(missing)}); AWS says: {', '.join(reasons)}."
            )
            if "AUTH_ERROR" in reasons:
                why += " An authorisation error usually means a policy is missing in the target."
            _finish(transfer, Transfer.DeviceCheck.NOT_BACK, reason=why)
            return None
    checks = transfer.device_checks + 1
    # 5, 10, 20, 30, 30 … s: AWS drops a device minutes after its deactivation, so it is
    # rarely back at once; its connection time is AWS's timestamp, however late one looks.
    delay = min(5.0 * 2 ** (checks - 1), 30.0)
    Transfer.objects.filter(pk=pk).update(
        device_checks=checks, device_next_check_at=now + timedelta(seconds=delay)
    )
    return delay


def _offline(transfer: Transfer) -> datetime | None:
    """When the device left the source: its disconnection there after the deactivation, or
    the deactivation when the source has no such record."""
    first = transfer.unusable_since
    try:
        times = []
        for name in transfer.detached_things or transfer.device_things:
            answer = _connectivity(transfer.source, transfer.region, name)
            when = answer.get("timestamp")
            if not answer.get("connected") and when and (first is None or when >= first):
                times.append(when)
        if times:
            return min(times)
    except aws.AwsError:
        pass  # the deactivation time it is
    return first


def _finish(transfer: Transfer, state: str, *, reason: str = "", online=None, offline=None):
    Transfer.objects.filter(pk=transfer.pk, device_check=Transfer.DeviceCheck.WAITING).update(
        device_check=state,
        device_reason=reason[:200],
        device_online_at=online,
        device_offline_at=offline,
        device_next_check_at=None,
    )
    details = {"reason": reason} if reason else {}
    if online is not None:
        details["online_at"] = online.isoformat()
        details["offline_at"] = offline.isoformat() if offline else None
    record(transfer, f"devices_{state}", WORKER, ok=state == Transfer.DeviceCheck.BACK, **details)


def check_due(now=None, limit: int | None = None) -> int:
    """Beat, every DEVICE_CHECK_SECONDS: one look at each transfer whose devices are due to
    be looked for, oldest first, at most DEVICE_CHECKS_PER_ROUND a round. One task a round,
    not a message per look: at a thousand devices the looks' own messages halved a move's
    rate (bench/migration.py --devices). The connection time recorded is AWS's, however
    late a look comes; only the wave gate waits for it. Returns how many were looked at."""
    from transfers.models import SweepFailure

    now = now or timezone.now()
    due = list(
        Transfer.objects.filter(
            device_check=Transfer.DeviceCheck.WAITING, device_next_check_at__lte=now
        )
        .order_by("device_next_check_at")
        .values_list("pk", flat=True)[: limit or settings.DEVICE_CHECKS_PER_ROUND]
    )
    for pk in due:
        try:
            check(pk)
        except Exception as exc:  # noqa: BLE001 - one row's trouble never stops the others
            SweepFailure.note(SweepFailure.Sweep.DEVICES, f"transfer {pk}", exc)
    return len(due)
