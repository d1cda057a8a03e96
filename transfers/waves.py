"""A batch moves in waves: a canary, then waves that grow, each started only when the one
before it settled with enough of its devices back.

The batch's feeder (``batches.feed``) calls ``advance`` on every tick. A wave is a set of the
batch's transfers numbered ``Transfer.wave``; the feeder hands out only transfers of started
waves (and, where the devices are told the target's endpoint first, only those whose job
execution SUCCEEDED). A wave settles when each of its transfers is done one way or the
other (``outcome``); its share of good outcomes against ``wave_threshold`` decides: the next
wave, or a pause that waits for an approver to resume or stop. A batch without waves is one
wave. Waves start only inside the batch's maintenance windows, when it has any.

As AWS IoT Jobs' rollout and abort configuration: the canary and ``wave_factor`` are an
exponential rate (``baseRatePerMinute``, ``incrementFactor``), here per wave rather than per
minute; ``wave_threshold`` is a success threshold where Jobs' ``abortConfig`` has a failure
threshold (``thresholdPercentage``), and the canary plays ``minNumberOfExecutedThings``; Jobs
cancels on abort where the portal pauses for a person (docs/moving-a-fleet.md).
"""

from __future__ import annotations

import contextlib
import math
import zoneinfo
from dataclasses import dataclass, field
from datetime import datetime, time, timedelta

from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from transfers import aws, notices, permissions, queue
from transfers.models import Transfer, TransferBatch
from transfers.workflow import devices
from transfers.workflow.errors import WORKER, TransferError
from transfers.workflow.events import record

Status, Landing, Check = Transfer.Status, Transfer.Landing, Transfer.DeviceCheck
FAILED_STATES = ["failed", "rejected", "cancelled", "declined", "expired"]


# --------------------------------------------------------------------------- choices


@dataclass
class WaveChoice:
    """What a requester chooses for a batch's waves and windows (checked by ``check``)."""

    waves: bool = True
    canary: int = 10
    canary_percent: float = 1.0
    factor: float = 2.0
    threshold: float = 95.0
    window_days: list[int] = field(default_factory=list)
    window_start: time | None = None
    window_minutes: int = 0
    window_tz: str = ""

    def check(self) -> WaveChoice:
        if not 1 <= self.canary <= 10_000:
            raise TransferError("invalid_waves", "The canary holds 1 to 10,000 certificates.")
        if not 0 <= self.canary_percent <= 100:
            raise TransferError("invalid_waves", "The canary's share is 0 to 100 %.")
        if not 1 <= self.factor <= 10:
            raise TransferError("invalid_waves", "Each wave is 1 to 10 times the one before.")
        if not 0 <= self.threshold <= 100:
            raise TransferError("invalid_waves", "The threshold is 0 to 100 %.")
        if sorted(set(self.window_days)) != sorted(self.window_days) or not all(
            isinstance(d, int) and 0 <= d <= 6 for d in self.window_days
        ):
            raise TransferError("invalid_window", "Days are 0 (Monday) to 6 (Sunday), once each.")
        if self.window_days and (self.window_start is None or not 1 <= self.window_minutes <= 1440):
            raise TransferError(
                "invalid_window", "A maintenance window needs a start time and 1 to 1440 minutes."
            )
        if self.window_tz:
            try:
                zoneinfo.ZoneInfo(self.window_tz)
            except (zoneinfo.ZoneInfoNotFoundError, ValueError):
                raise TransferError(
                    "invalid_window", f"{self.window_tz} is not a time zone."
                ) from None
        return self

    def apply(self, batch: TransferBatch) -> None:
        batch.waves = self.waves
        batch.wave_canary, batch.wave_canary_percent = self.canary, self.canary_percent
        batch.wave_factor, batch.wave_threshold = self.factor, self.threshold
        batch.window_days, batch.window_start = list(self.window_days), self.window_start
        batch.window_minutes, batch.window_tz = self.window_minutes, self.window_tz


# --------------------------------------------------------------------------- sizes, windows


def first_size(batch: TransferBatch, total: int) -> int:
    return max(batch.wave_canary, math.ceil(total * batch.wave_canary_percent / 100), 1)


def size(batch: TransferBatch, number: int, total: int) -> int:
    """How many transfers wave ``number`` (1 = the canary) holds."""
    if not batch.waves:
        return total
    return math.ceil(first_size(batch, total) * batch.wave_factor ** (number - 1))


def _zone(batch: TransferBatch):
    try:
        return zoneinfo.ZoneInfo(batch.window_tz or "UTC")
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return zoneinfo.ZoneInfo("UTC")


def _openings(batch: TransferBatch, now: datetime):
    """(start, end) of the windows around ``now``, in order, from yesterday on."""
    zone = _zone(batch)
    local = now.astimezone(zone)
    for offset in range(-1, 8):
        day = (local + timedelta(days=offset)).date()
        if day.weekday() in batch.window_days:
            start = datetime.combine(day, batch.window_start, tzinfo=zone)
            yield start, start + timedelta(minutes=batch.window_minutes)


def in_window(batch: TransferBatch, now: datetime | None = None) -> bool:
    if not batch.window_days or batch.window_start is None:
        return True
    now = now or timezone.now()
    return any(start <= now < end for start, end in _openings(batch, now))


def next_window(batch: TransferBatch, now: datetime | None = None) -> datetime | None:
    """When the next window opens (None: no windows, or one is open now)."""
    now = now or timezone.now()
    if in_window(batch, now):
        return None
    return min((start for start, _end in _openings(batch, now) if start > now), default=None)


# --------------------------------------------------------------------------- outcomes


def _bad() -> Q:
    return (
        Q(status__in=FAILED_STATES)
        | Q(landing_state=Landing.ATTENTION)
        | Q(device_check=Check.NOT_BACK)
        | (Q(status=Status.APPROVED, device_hold__gt="") & Q(device_released_by__isnull=True))
    )


def _open() -> Q:
    """Not done yet: still in the source's hands, landing, or its devices being waited for.
    A landing nobody approved in advance waits for the target's people: the source's part
    is done then."""
    landing = Q(landing_state__in=[Landing.LANDING, Landing.PARTIAL]) | Q(
        landing_state=Landing.PLANNED,
        target_approved_at__isnull=False,
        status=Status.PENDING_ACCEPTANCE,
    )
    return (
        (Q(status__in=[Status.REQUESTED, Status.APPROVED, Status.PREPARING]) & ~_bad())
        | landing
        | Q(device_check=Check.WAITING)
    )


def outcome(batch: TransferBatch, number: int) -> dict:
    """Wave ``number``: its size, how many are done well, badly, or not yet, and whether
    its devices' return could be verified."""
    rows = batch.transfers.filter(wave=number)
    total = rows.count()
    bad = rows.filter(_bad()).count()
    still = rows.filter(_open()).exclude(_bad()).count()
    back = rows.filter(device_check=Check.BACK).count()
    verifiable = rows.filter(device_check__in=[Check.BACK, Check.NOT_BACK, Check.WAITING]).count()
    return {
        "wave": number,
        "size": total,
        "good": total - bad - still,
        "bad": bad,
        "open": still,
        "back": back,
        "verified": verifiable > 0,
        "share": round(100 * (total - bad - still) / total, 1) if total else 100.0,
    }


def summary(batch: TransferBatch) -> list[dict]:
    return [outcome(batch, n) for n in range(1, batch.wave + 1)]


# --------------------------------------------------------------------------- the feeder's part


def advance(batch: TransferBatch) -> str:
    """On each feeder tick: start the first or the next wave when it is due. Returns what
    the batch is doing ("moving", "settling", "paused", "outside its window", "done")."""
    if batch.stopped_at or batch.paused_at:
        return "paused"
    unstarted = batch.transfers.filter(status=Status.APPROVED, wave__isnull=True)
    if not batch.waves:
        # One wave, ungated: whatever was approved since the last tick joins it.
        if unstarted.exists() and in_window(batch):
            _start(batch, 1, join=True)
        return "moving"
    if batch.wave == 0:
        if not unstarted.exists():
            return "done"
        return _start(batch, 1) if in_window(batch) else "outside its window"
    current = outcome(batch, batch.wave)
    if current["open"]:
        return "moving"
    if not unstarted.exists():
        return "done"
    if current["share"] < batch.wave_threshold:
        _pause(batch, current)
        return "paused"
    if not in_window(batch):
        return "outside its window"
    return _start(batch, batch.wave + 1)


def _start(batch: TransferBatch, number: int, join: bool = False) -> str:
    """Start wave ``number`` (``join``: add the approved transfers not in a wave to it)."""
    total = batch.transfers.count()
    with transaction.atomic():
        locked = TransferBatch.objects.select_for_update().get(pk=batch.pk)
        if locked.paused_at or locked.stopped_at:
            return "paused"
        if locked.wave >= number and not join:
            return "moving"  # another tick started it
        count = size(batch, number, total)
        pks = list(
            batch.transfers.filter(status=Status.APPROVED, wave__isnull=True)
            .order_by("pk")
            .values_list("pk", flat=True)[:count]
        )
        Transfer.objects.filter(pk__in=pks).update(wave=number)
        locked.wave = batch.wave = number
        locked.save(update_fields=["wave"])
    _tell_devices(batch, number, pks)
    return "moving"


def _tell_devices(batch: TransferBatch, number: int, pks: list[int]) -> None:
    """One job in the source for the wave's things; each transfer remembers it. A job that
    cannot be created holds the wave's transfers with AWS's reason."""
    told = batch.transfers.filter(pk__in=pks, tell_devices=True).exclude(device_things=[])
    rows = list(told.values("pk", "device_things", "certificate_arn"))
    if not rows:
        return
    job_id = f"portal-batch-{batch.pk}-wave-{number}-{min(pks)}"
    things = sorted({name for t in rows for name in t["device_things"]})
    try:
        endpoints = batch.device_endpoints
        if not endpoints.get("data"):
            endpoints = devices.endpoints(
                batch.source, batch.region, _target(batch), endpoints.get("typed", "")
            )
            endpoints = {**batch.device_endpoints, **endpoints}
            TransferBatch.objects.filter(pk=batch.pk).update(device_endpoints=endpoints)
            batch.device_endpoints = endpoints
        told.update(device_job_id=job_id, device_endpoints=endpoints)
        devices.create_job(
            batch.source,
            batch.region,
            job_id,
            things,
            endpoints,
            rows[0]["certificate_arn"],
            f"Certificate transfer portal: batch #{batch.pk}, wave {number}, moves these "
            f"devices to {batch.target_account_id}; connect to the endpoints in this order.",
        )
    except aws.AwsError as exc:
        if exc.retryable:
            # The next tick tries again: the wave is started, its job not yet made.
            told.update(device_job_id="")
            Transfer.objects.filter(pk__in=pks).update(wave=None)
            TransferBatch.objects.filter(pk=batch.pk, wave=number).update(wave=number - 1)
            batch.wave = number - 1
            return
        reason = f"Could not tell the devices: {exc.user_message}"
        told.update(device_hold=reason)
        for t in rows:
            record(Transfer(pk=t["pk"]), "devices_held", WORKER, ok=False, reason=reason)
        return
    for t in rows:
        record(
            Transfer(pk=t["pk"]),
            "devices_told",
            WORKER,
            job=job_id,
            endpoints=endpoints["data"],
            wave=number,
        )


def _target(batch: TransferBatch):
    first = batch.transfers.select_related("target").first()
    return first.target if first else None


def refresh(batch: TransferBatch) -> None:
    """The started waves' job executions, onto the transfers still waiting for them."""
    waiting = list(
        batch.transfers.filter(
            status=Status.APPROVED, wave__isnull=False, tell_devices=True, device_hold=""
        )
        .exclude(device_things=[])
        .exclude(device_job_id="")
        .exclude(device_job_status=devices.SUCCEEDED)
        .filter(device_released_by__isnull=True)
    )
    if waiting:
        # Throttled or unavailable: the next tick reads them.
        with contextlib.suppress(aws.AwsError):
            devices.refresh_jobs(batch, waiting)


def ready() -> Q:
    """Transfers the feeder may hand out: of a started wave, their devices told."""
    return Q(wave__isnull=False) & (
        Q(tell_devices=False)
        | Q(device_things=[])
        | Q(device_job_status=devices.SUCCEEDED)
        | Q(device_released_by__isnull=False)
    )


def _pause(batch: TransferBatch, current: dict) -> None:
    reason = (
        f"Wave {current['wave']}: {current['good']} of {current['size']} "
        f"{'back online' if current['verified'] else 'landed'} ({current['share']:g} %), "
        f"below the batch's threshold of {batch.wave_threshold:g} %; {current['bad']} "
        "failed, were held, or did not come back. An approver resumes or stops the batch."
    )
    changed = TransferBatch.objects.filter(
        pk=batch.pk, paused_at__isnull=True, stopped_at__isnull=True
    ).update(paused_at=timezone.now(), pause_reason=reason)
    if changed:
        batch.paused_at, batch.pause_reason = timezone.now(), reason
        for t in batch.transfers.filter(wave=current["wave"]).order_by("pk")[:1]:
            record(t, "batch_paused", WORKER, batch=batch.pk, reason=reason)
        notices.batch_paused(batch)  # its requester and the source's approvers


# --------------------------------------------------------------------------- people


def resume(user, batch: TransferBatch) -> TransferBatch:
    """An approver lets a paused batch go on: the next wave starts at the next tick."""
    _check_approver(user, batch)
    with transaction.atomic():
        locked = TransferBatch.objects.select_for_update().get(pk=batch.pk)
        if locked.paused_at is None or locked.stopped_at:
            raise TransferError("invalid_state", "Only a paused batch can be resumed.", 409)
        locked.paused_at, locked.pause_reason = None, ""
        locked.save(update_fields=["paused_at", "pause_reason"])
        for t in locked.transfers.filter(wave=locked.wave)[:1]:
            record(t, "batch_resumed", user, batch=locked.pk, wave=locked.wave)
        unstarted = locked.transfers.filter(status=Status.APPROVED, wave__isnull=True)
        if unstarted.exists():
            number = locked.wave + 1
            pks = list(
                unstarted.order_by("pk").values_list("pk", flat=True)[
                    : size(locked, number, locked.transfers.count())
                ]
            )
            Transfer.objects.filter(pk__in=pks).update(wave=number)
            locked.wave = number
            locked.save(update_fields=["wave"])
            transaction.on_commit(lambda: _tell_devices(locked, number, pks))
        queue.enqueue("feed_batch", locked.pk)
    return locked


def stop(user, batch: TransferBatch, comment: str = "") -> int:
    """An approver stops a batch: what has not started stays in the source, untouched
    (those transfers end cancelled), and the waves' jobs are cancelled for the devices that
    have not moved. Returns how many transfers were stopped."""
    _check_approver(user, batch)
    with transaction.atomic():
        locked = TransferBatch.objects.select_for_update().get(pk=batch.pk)
        if locked.stopped_at:
            raise TransferError("invalid_state", "The batch is already stopped.", 409)
        untouched = locked.transfers.filter(status=Status.APPROVED).filter(
            Q(wave__isnull=True)
            | Q(device_job_status__in=["", "QUEUED", "IN_PROGRESS"])
            | ~Q(device_hold="")
        )
        if not untouched.exists() and locked.paused_at is None:
            raise TransferError("invalid_state", "Nothing in this batch is left to stop.", 409)
        locked.stopped_at, locked.stopped_by = timezone.now(), user
        locked.save(update_fields=["stopped_at", "stopped_by"])
        pks = list(untouched.values_list("pk", flat=True))
    from transfers.workflow.events import transition

    def fill(row: Transfer) -> None:
        row.error_message = comment or "Stopped with its batch before it started."

    stopped = 0
    for pk in pks:
        try:
            transition(
                pk,
                "stop",
                user,
                refuse="Only an approved transfer can be stopped.",
                before=fill,
                batch=batch.pk,
                comment=comment,
            )
            stopped += 1
        except TransferError:
            continue  # a worker started it meanwhile: it finishes
    jobs = set(batch.transfers.exclude(device_job_id="").values_list("device_job_id", flat=True))
    for job_id in sorted(jobs):
        # If not, the executions time out on their own; the devices keep the fallback.
        with contextlib.suppress(aws.AwsError):
            devices.cancel_job(batch.source, batch.region, job_id, f"batch #{batch.pk} stopped")
    return stopped


def _check_approver(user, batch: TransferBatch) -> None:
    if not permissions.can_decide_batch(user, batch):
        raise TransferError("forbidden", "Only an approver of the source can do this.", 403)
