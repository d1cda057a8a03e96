"""Bulk transfers: many certificates, one request, one approval, each its own transfer.

The preflight of a batch reads the inventory (a fresh read of a thousand certificates
would take minutes at AWS's rates); the worker reads each certificate fresh before acting.
Approved work is fed to the workers at the account's API rate: a feeder task hands out a
window at a time (batches.in_flight) instead of queueing the whole batch.
"""

from __future__ import annotations

import contextlib
import math
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Count, Exists, OuterRef, Q
from django.utils import timezone

from policies import mail, rules
from transfers import aws, permissions, queue, ratelimit, waves, workflow
from transfers.models import Certificate, Transfer, TransferBatch
from transfers.workflow import Options, TransferError
from transfers.workflow.decide import landing_approver_refused
from transfers.workflow.landing_plan import LandingChoice, TargetReader, plan_landing

CERT_ID_RE = re.compile(r"(?:cert/)?([0-9a-f]{64})$")
MAX_BATCH = 10_000
REQUEUE_AFTER = timedelta(minutes=2)
# The feeder holds the batch this long between its ticks; a feeder whose next tick was lost
# frees it by then, and the reconciler starts another.
FEEDER_LEASE = timedelta(seconds=30)
# Approving thousands of transfers: this many per transaction (on SQLite a long write
# transaction blocks every other writer, the rate limiter included).
CHUNK = 200
# The transfers in flight per batch (in_flight): seconds of work at the account's rate, and
# the AWS calls a transfer makes one after another (describe, deactivate, list and detach
# policies, list, detach and confirm things, transfer).
IN_FLIGHT_SECONDS = 2
SERIAL_CALLS = 8
# A worker handing on the batch's next transfer tries this many of the first ready ones (the
# others finishing at the same moment take some of them).
HAND_ON_TRIES = 8


def parse_ids(text: str) -> tuple[list[str], list[str]]:
    """Certificate ids or ARNs, one per line or separated by commas (a CSV column works).
    Returns (ids, what was not understood)."""
    ids, bad = [], []
    for raw in re.split(r"[\s,;]+", text or ""):
        token = raw.strip().strip('"').strip("'").lower()
        if not token or token in {"certificateid", "certificate_id", "id", "arn"}:
            continue
        found = CERT_ID_RE.search(token)
        if found:
            ids.append(found.group(1))
        else:
            bad.append(raw[:80])
    return list(dict.fromkeys(ids)), bad


@dataclass
class Preflight:
    ready: list[Certificate] = field(default_factory=list)
    deactivate: int = 0
    detach_policies: int = 0
    detach_things: int = 0
    blocked: list[tuple[str, str]] = field(default_factory=list)  # (certificate id, why)

    @property
    def summary(self) -> dict:
        return {
            "ready": len(self.ready),
            "deactivate": self.deactivate,
            "detach_policies": self.detach_policies,
            "detach_things": self.detach_things,
            "blocked": len(self.blocked),
        }


def preflight(
    certs: list[Certificate], missing: list[str], target_id: str, options: Options
) -> Preflight:
    """What would happen to each certificate, from the inventory."""
    result = Preflight(
        blocked=[
            (cid, "not in the inventory of an account you can request from") for cid in missing
        ]
    )
    open_ids = set(
        Transfer.objects.open()
        .filter(certificate_id__in=[c.certificate_id for c in certs])
        .values_list("certificate_id", flat=True)
    )
    # Earlier transfers still putting back what they removed (workflow.plan.unfinished_restore).
    restoring = {
        (source, region, cid): pk
        for source, region, cid, pk in Transfer.objects.filter(
            certificate_id__in=[c.certificate_id for c in certs],
            restore_state__in=Transfer.Restore.UNFINISHED,
        )
        .order_by("pk")
        .values_list("source_id", "region", "certificate_id", "pk")
    }
    for cert in certs:
        policies = [p.name for p in cert.policies.all()]
        things = [t.name for t in cert.things.all()]
        why = None
        if cert.certificate_id in open_ids:
            why = "already has an open transfer"
        elif earlier := restoring.get((cert.account_id, cert.region, cert.certificate_id)):
            why = (
                f"transfer #{earlier} has not finished putting back what it removed: "
                "its restore must be done first"
            )
        elif cert.account.account_id == target_id:
            why = "already belongs to the target account"
        elif cert.status == "ACTIVE" and not options.deactivate:
            why = "ACTIVE, and you chose not to deactivate"
        elif cert.status not in ("ACTIVE", "INACTIVE"):
            why = f"{cert.status} certificates cannot be transferred"
        elif policies and not options.detach_policies:
            why = "has policies, and you chose not to detach them"
        elif things and not options.detach_things:
            why = "has things, and you chose not to detach them"
        if why:
            result.blocked.append((cert.certificate_id, why))
            continue
        result.ready.append(cert)
        result.deactivate += cert.status == "ACTIVE"
        result.detach_policies += bool(policies)
        result.detach_things += bool(things)
    return result


def select(user, ids: list[str]) -> tuple[list[Certificate], list[str]]:
    """The inventory rows for ``ids`` that the user may see; and the ids not found."""
    certs = list(
        Certificate.objects.visible_to(user)
        .filter(certificate_id__in=ids)
        .select_related("account")
        .prefetch_related("policies", "things")
    )
    found = {c.certificate_id for c in certs}
    return certs, [cid for cid in ids if cid not in found]


def check_request(
    user,
    certs: list[Certificate],
    *,
    target_account_id: str,
    message: str,
    reason: str,
    options: Options,
    wave_choice: waves.WaveChoice | None = None,
):
    """Every rule a batch request must pass before anything is read from AWS or written,
    with its code: the waves and windows (invalid_waves, invalid_window), something to move
    (empty), not too much (too_many), one account and region (mixed_sources), the single
    request's rules (workflow.check_request: the target, the texts, the role) and the devices'
    (workflow.check_device_options: a typed endpoint for a target the portal does not
    manage). Telling the devices applies only to certificates with a thing: when none of
    ``certs`` has one, it is turned off (``options`` is changed in place). Both the request
    and its check (the batch page's, the API's preflight) call it. Returns (source, region,
    target, target_account_id, message, reason)."""
    if wave_choice is not None:
        wave_choice.check()
    if not certs:
        raise TransferError("empty", "None of these certificates can be requested.")
    if len(certs) > MAX_BATCH:
        raise TransferError("too_many", f"A batch holds at most {MAX_BATCH} certificates.")
    sources = {(c.account_id, c.region) for c in certs}
    if len(sources) > 1:
        raise TransferError(
            "mixed_sources",
            "A batch moves certificates of one account and "
            "region; select them separately per account and region.",
        )
    source, region = certs[0].account, certs[0].region
    target, target_account_id, message, reason = workflow.check_request(
        user, source, target_account_id, message, reason
    )
    if options.tell_devices and not any(cert.things.all() for cert in certs):
        options.tell_devices = False  # no thing, no device to tell
    workflow.check_device_options(options, target, region)
    return source, region, target, target_account_id, message, reason


def request_batch(
    user,
    certs: list[Certificate],
    missing: list[str],
    *,
    target_account_id: str,
    message: str,
    reason: str,
    options: Options,
    landing: LandingChoice | None = None,
    wave_choice: waves.WaveChoice | None = None,
) -> TransferBatch:
    wave_choice = wave_choice or waves.WaveChoice(waves=False)
    source, region, target, target_account_id, message, reason = check_request(
        user,
        certs,
        target_account_id=target_account_id,
        message=message,
        reason=reason,
        options=options,
        wave_choice=wave_choice,
    )
    check = preflight(certs, missing, target_account_id, options)
    landings: dict[str, dict] = {}
    if landing is not None:
        # One read of each account's policies and things for the whole batch.
        reader = TargetReader(source, target, region)
        try:
            reader.prefetch()
            for cert in list(check.ready):
                planned = plan_landing(
                    reader,
                    [p.name for p in cert.policies.all()],
                    [t.name for t in cert.things.all()],
                    landing,
                )
                if planned["blockers"]:
                    check.ready.remove(cert)
                    check.blocked.append((cert.certificate_id, " ".join(planned["blockers"])))
                else:
                    landings[cert.certificate_id] = planned
        except aws.AwsError as exc:
            raise TransferError(
                "landing_unreadable",
                f"Could not read the target for the landing: {exc.user_message}",
                status=503 if exc.retryable else 502,
            ) from None
    with transaction.atomic():
        batch = TransferBatch.objects.create(
            source=source,
            region=region,
            target_account_id=target_account_id,
            requester=user,
            reason=reason,
            message=message,
            skipped=[{"certificate_id": cid, "reason": why} for cid, why in check.blocked],
            tell_devices=options.tell_devices,
            device_endpoints={"typed": options.device_endpoint} if options.device_endpoint else {},
        )
        wave_choice.apply(batch)
        batch.save()
        mail.batch_requested(batch)  # its approvers, after commit
        for cert in check.ready:
            plan = {
                "source": "inventory",
                "status": cert.status,
                "policies": [p.name for p in cert.policies.all()],
                "things": [t.name for t in cert.things.all()],
                "steps": [],
                "warnings": [],
                "landing": landings.get(cert.certificate_id, {}),
            }
            try:
                workflow.open_transfer(
                    user,
                    cert,
                    target=target,
                    target_account_id=target_account_id,
                    message=message,
                    reason=reason,
                    options=options,
                    plan=plan,
                    batch=batch,
                    event={"batch": batch.pk},
                )
            except IntegrityError:  # opened by someone else a moment ago
                batch.skipped.append(
                    {
                        "certificate_id": cert.certificate_id,
                        "reason": "already has an open transfer",
                    }
                )
        batch.save(update_fields=["skipped"])
        if not batch.transfers.exists():
            raise TransferError(
                "empty",
                "None of these certificates can be requested: "
                + "; ".join(f"{cid[:12]}… {why}" for cid, why in check.blocked[:5]),
            )
    return batch


def _each(
    batch: TransferBatch, status: str, action, *, chunked: bool = True
) -> tuple[int, list[str]]:
    """Run ``action(pk)`` on each of the batch's transfers in ``status``: a chunk of them per
    transaction, or (``chunked=False``) each committing on its own. An action that calls AWS
    is never chunked: it would hold the write lock (SQLite) or its rows and the rate
    limiter's (PostgreSQL) through every call and wait, and an error would roll back the
    records of what AWS already did."""
    done, errors, after = 0, [], 0
    while True:
        pks = list(
            batch.transfers.filter(status=status, pk__gt=after)
            .order_by("pk")
            .values_list("pk", flat=True)[:CHUNK]
        )
        if not pks:
            return done, errors
        with transaction.atomic() if chunked else contextlib.nullcontext():
            for pk in pks:
                try:
                    action(pk)
                    done += 1
                except TransferError as exc:
                    if exc.code in {"self_approval", "forbidden"}:
                        raise
                    errors.append(f"#{pk}: {exc.message}")
        after = pks[-1]


def _decided(user, batch: TransferBatch, comment: str) -> None:
    """Record the batch's decision once: a second decision (or a decline racing an
    approval) is refused."""
    changed = TransferBatch.objects.filter(pk=batch.pk, approver__isnull=True).update(
        approver=user, decision_comment=comment.strip()[:2000], decided_at=timezone.now()
    )
    if not changed:
        raise TransferError("already_decided", "Someone already decided on this batch.", 409)


def approve(user, batch: TransferBatch, comment: str = "") -> int:
    """Approve the batch: recorded now, its transfers approved in the background a chunk at
    a time (the page shows the progress). Returns how many transfers it covers."""
    if not batch.transfers.filter(status=Transfer.Status.REQUESTED).exists():
        raise TransferError("invalid_state", "Nothing in this batch waits for approval.", 409)
    if batch.requester_id == user.pk:
        raise TransferError(
            "self_approval",
            "Nobody approves their own request: another approver must decide.",
            status=403,
        )
    workflow.check_can_approve(user, batch.source)
    if permissions.approved_a_landing_of(user, batch):
        raise landing_approver_refused()

    with transaction.atomic():
        # The source's approval policy may want several approvers: the batch is decided by
        # the last; each approval also approves (counts on) every transfer in the background.
        have, needed = rules.add_batch_approval(user, batch, comment)
        if have >= needed:
            _decided(user, batch, comment)
        else:
            mail.tell_approvers_of_batch(batch, have)
        queue.enqueue("approve_batch", batch.pk, user.pk, comment)
    return batch.transfers.filter(status=Transfer.Status.REQUESTED).count()


def approve_transfers(batch_pk: int, user_pk: int, comment: str = "") -> int:
    """The background part of approve: each requested transfer, a chunk per transaction,
    fed to the workers as soon as the first chunk is in. Safe to run twice."""
    from django.contrib.auth import get_user_model

    batch = TransferBatch.objects.get(pk=batch_pk)
    user = get_user_model().objects.get(pk=user_pk)
    done, fed = 0, False

    def one(pk: int) -> None:
        nonlocal done, fed
        try:
            workflow.approve(user, pk, comment, enqueue=False)
        except TransferError as exc:
            if exc.code == "landing_approver":
                # They approved this one's landing after approving the batch (a race with
                # the checks of both): it waits for another approver, and says why.
                workflow.record(Transfer(pk=pk), "approval_refused", user, reason=exc.message)
            raise
        done += 1
        if not fed:
            _feed_soon(batch.pk)
            fed = True

    _each(batch, Transfer.Status.REQUESTED, one)
    return done


def resume_approvals() -> int:
    """Beat (reconcile): send again the background part of a batch approval that stopped
    before reaching every transfer: its message lost (the web process died after the
    commit, the broker restarted empty) or its worker stopped mid-way (the database went
    away). Stalled: a requested transfer of the batch still lacks the approval, and nothing
    of the batch was approved for TRANSFER_STALL_MINUTES. A tick that comes before the
    resent task's first chunk commits sends it again: harmless, approve_transfers is safe to
    run twice (each transfer's approval is a locked transition). Returns how many it sent."""
    from policies.models import Approval, BatchApproval

    cutoff = timezone.now() - timedelta(minutes=settings.TRANSFER_STALL_MINUTES)
    # One approver per transfer writes no Approval row: then any requested transfer lacks it.
    lacking = Transfer.objects.filter(
        batch=OuterRef("batch"), status=Transfer.Status.REQUESTED
    ).exclude(
        Exists(Approval.objects.filter(transfer=OuterRef("pk"), user=OuterRef(OuterRef("user"))))
    )
    moving = Transfer.objects.filter(batch=OuterRef("batch")).filter(
        Q(decided_at__gte=cutoff) | Q(approvals__created__gte=cutoff)
    )
    stalled = list(
        BatchApproval.objects.filter(created__lt=cutoff)
        .filter(Exists(lacking))
        .exclude(Exists(moving))
        .values_list("batch_id", "user_id", "comment")
    )
    for batch_pk, user_pk, comment in stalled:
        queue.send_now("approve_batch", batch_pk, user_pk, comment)
    return len(stalled)


def approve_landing(user, batch: TransferBatch, comment: str = "") -> int:
    """The target side approves the landing of every transfer of the batch that plans one
    (each checked as a single one: another person than the requester and the source's
    approvers). Returns how many."""
    done, after = 0, 0
    while True:
        pks = list(
            batch.transfers.filter(
                pk__gt=after, landing_state=Transfer.Landing.PLANNED, target_approver__isnull=True
            )
            .exclude(status__in=Transfer.Status.TERMINAL)
            .order_by("pk")
            .values_list("pk", flat=True)[:CHUNK]
        )
        if not pks:
            return done
        with transaction.atomic():
            for pk in pks:
                try:
                    workflow.approve_landing(user, pk, comment)
                    done += 1
                except TransferError as exc:
                    if exc.status == 403:
                        raise
        after = pks[-1]


def decline(user, batch: TransferBatch, comment: str) -> int:
    if not comment.strip():
        raise TransferError("comment_required", "Say why you decline it.")
    workflow.check_can_approve(user, batch.source)
    # The decision first (it shuts out a racing approval), then each transfer's decline
    # committed on its own: thousands of them in one transaction held the write lock.
    _decided(user, batch, comment)
    done, _ = _each(
        batch,
        Transfer.Status.REQUESTED,
        lambda pk: workflow.decline(user, pk, comment),
        chunked=False,
    )
    return done


def withdraw(user, batch: TransferBatch) -> int:
    return _each(batch, Transfer.Status.REQUESTED, lambda pk: workflow.withdraw(user, pk))[0]


def retry_failed(user, batch: TransferBatch) -> int:
    done, _ = _each(
        batch, Transfer.Status.FAILED, lambda pk: workflow.retry(user, pk, enqueue=False)
    )
    if done:
        _feed_soon(batch.pk)
    return done


def cancel_pending(user, batch: TransferBatch) -> tuple[int, list[str]]:
    """Cancel, in AWS, every transfer of the batch still pending acceptance: in the
    background (thousands of AWS calls at the account's rate); the page shows the progress.
    Returns how many are to be cancelled."""
    count = batch.transfers.filter(status=Transfer.Status.PENDING_ACCEPTANCE).count()
    if count:
        with transaction.atomic():
            TransferBatch.objects.filter(pk=batch.pk).update(
                cancel_requested_at=timezone.now(), cancel_requested_by=user
            )
            queue.enqueue("cancel_batch", batch.pk, user.pk)
    return count, []


def cancel_transfers(batch_pk: int, user_pk: int) -> tuple[int, list[str]]:
    """The background part of cancel_pending. Safe to run twice."""
    from django.contrib.auth import get_user_model

    batch = TransferBatch.objects.get(pk=batch_pk)
    user = get_user_model().objects.get(pk=user_pk)
    busy = []  # AWS throttled or unavailable: still pending, for resume_cancels

    def one(pk: int) -> None:
        try:
            workflow.cancel(user, pk)
        except TransferError as exc:
            if exc.status == 503:
                busy.append(pk)
            raise

    # Not chunked: an AWS call each.
    done, errors = _each(batch, Transfer.Status.PENDING_ACCEPTANCE, one, chunked=False)
    if not busy:
        TransferBatch.objects.filter(pk=batch_pk).update(cancel_requested_at=None)
    return done, errors


def resume_cancels() -> int:
    """Beat (reconcile): send again the background part of a batch cancel that did not
    reach every pending transfer: its message lost (the web process died after the commit,
    the broker restarted empty), its worker stopped mid-way, or AWS was throttling or
    unavailable for some (cancel_transfers then keeps the request). Stalled: the request is
    older than TRANSFER_STALL_MINUTES, a transfer of the batch is still pending, and none of
    the batch was cancelled for as long. Sent again while the first still runs, it is
    harmless: each cancel is checked against AWS. Returns how many it sent."""
    cutoff = timezone.now() - timedelta(minutes=settings.TRANSFER_STALL_MINUTES)
    pending = Transfer.objects.filter(
        batch=OuterRef("pk"), status=Transfer.Status.PENDING_ACCEPTANCE
    )
    moving = Transfer.objects.filter(
        batch=OuterRef("pk"), status=Transfer.Status.CANCELLED, updated__gte=cutoff
    )
    stalled = list(
        TransferBatch.objects.filter(
            cancel_requested_at__lt=cutoff, cancel_requested_by__isnull=False
        )
        .filter(Exists(pending))
        .exclude(Exists(moving))
        .values_list("pk", "cancel_requested_by")
    )
    for batch_pk, user_pk in stalled:
        queue.send_now("cancel_batch", batch_pk, user_pk)
    return len(stalled)


def _feed_soon(batch_pk: int) -> None:
    queue.enqueue("feed_batch", batch_pk)


def _hold_feeder(batch_pk: int, lease: str | None):
    """Take (lease=None) or renew (the lease this feeder holds) the batch's feeder lease.
    Returns the new lease, or None when another feeder holds the batch."""
    now = timezone.now()
    rows = TransferBatch.objects.filter(pk=batch_pk)
    if lease is None:
        rows = rows.filter(Q(feeder_until__isnull=True) | Q(feeder_until__lt=now))
    else:
        rows = rows.filter(feeder_until=datetime.fromisoformat(lease))
    held = now + FEEDER_LEASE
    return held if rows.update(feeder_until=held) else None


def feed(batch_pk: int, lease: str | None = None) -> tuple[int, str | None]:
    """Hand the next window of approved transfers to the workers. One feeder per batch:
    returns how many still wait and the lease to pass to the next tick (None: stop, because
    nothing waits or another feeder holds the batch)."""
    held = _hold_feeder(batch_pk, lease)
    if held is None:
        return 0, None
    batch = TransferBatch.objects.select_related("source").get(pk=batch_pk)
    if waves.advance(batch) == "paused":
        # An approver resumes (which starts the feeder again) or stops it.
        TransferBatch.objects.filter(pk=batch_pk, feeder_until=held).update(feeder_until=None)
        return 0, None
    waves.refresh(batch)
    now = timezone.now()
    rate = ratelimit.allowances(batch.source, batch.region).of("TransferCertificate")
    window = in_flight(rate)
    transfers = batch.transfers.all()
    busy = transfers.filter(
        Q(status=Transfer.Status.PREPARING)
        | Q(status=Transfer.Status.APPROVED, queued_at__gte=now - REQUEUE_AFTER)
    ).count()
    ready = list(_ready(batch, now).values_list("pk", flat=True)[: max(0, window - busy)])
    if ready:
        Transfer.objects.filter(pk__in=ready).update(queued_at=now)
        for pk in ready:
            queue.send_now("execute_transfer", pk)
    # Held for their devices: they wait for an approver (who sends them), not for a tick.
    held_for_devices = Q(device_hold__gt="") & Q(device_released_by__isnull=True)
    waiting = transfers.filter(status=Transfer.Status.APPROVED).exclude(held_for_devices).count()
    if not waiting:
        TransferBatch.objects.filter(pk=batch_pk, feeder_until=held).update(feeder_until=None)
        return 0, None
    return waiting, held.isoformat()


def in_flight(rate: float) -> int:
    """How many of a batch's transfers the workers have at once, at ``rate`` transfers a
    second: two seconds of work, plus one per AWS call a transfer makes in series. Each of
    those calls may wait up to 1/rate for its API's next token, so at low rates a transfer
    takes about SERIAL_CALLS/rate seconds and about SERIAL_CALLS of them must be under way
    to keep every API busy (bench/rate_sweep.py: at 1 a second, two in flight reached 0.69
    of the rate)."""
    return math.ceil(rate * IN_FLIGHT_SECONDS) + SERIAL_CALLS


def _ready(batch: TransferBatch, now: datetime):
    """The batch's transfers a worker may take now: approved, of a started wave with its
    devices told, and not handed out in the last REQUEUE_AFTER."""
    return (
        batch.transfers.filter(status=Transfer.Status.APPROVED)
        .filter(waves.ready())
        .filter(Q(queued_at__isnull=True) | Q(queued_at__lt=now - REQUEUE_AFTER))
        .order_by("pk")
    )


def hand_on(transfer_pk: int) -> int | None:
    """A worker that has finished with a batch's transfer hands the batch's next ready one
    to the workers, so the transfers in flight stay what the feeder made them however late
    its next tick comes: a tick waits in the queue behind the work it handed out, and
    behind executions that wait for the rate limiter in every worker process. Returns the
    transfer handed on, if any.

    Taking it is a compare-and-set on ``queued_at`` (the feeder and other workers finishing
    at the same moment may pick the same row): a row someone else took is skipped."""
    batch = (
        TransferBatch.objects.filter(
            transfers=transfer_pk, paused_at__isnull=True, stopped_at__isnull=True
        )
        .only("pk")
        .first()
    )
    if batch is None:
        return None
    now = timezone.now()
    stale = Q(queued_at__isnull=True) | Q(queued_at__lt=now - REQUEUE_AFTER)
    for pk in _ready(batch, now).values_list("pk", flat=True)[:HAND_ON_TRIES]:
        if Transfer.objects.filter(stale, pk=pk).update(queued_at=now):
            queue.send_now("execute_transfer", pk)
            return pk
    return None


def progress(batch: TransferBatch) -> dict:
    out = _progress(batch)
    out["live"] = out["live"] or out["approving"] or out["cancelling"]
    return out


def _progress(batch: TransferBatch) -> dict:
    counts = dict(
        batch.transfers.values_list("status").annotate(n=Count("pk")).values_list("status", "n")
    )
    total = sum(counts.values())
    waiting = counts.get("approved", 0) + counts.get("preparing", 0)
    now = timezone.now()
    # The rate over the last minute, or since the approval when that was less than a minute
    # ago (dividing the first seconds' work by 60 made the first estimates ten times long).
    since = max(now - timedelta(minutes=1), batch.decided_at or now - timedelta(minutes=1))
    recent = batch.transfers.filter(pending_since__gte=since).count()
    window = max((now - since).total_seconds(), 1.0)
    rate = recent / window
    started = batch.transfers.exclude(pending_since=None).order_by("pending_since")
    first = started.values_list("pending_since", flat=True).first()
    overall = None
    if first:
        elapsed = (now - first).total_seconds()
        reached = started.count()
        overall = reached / elapsed if elapsed > 1 else None
    eta = waiting / rate if rate and waiting else None
    return {
        "total": total,
        "counts": counts,
        "requested": counts.get("requested", 0),
        "waiting": waiting,
        "pending": counts.get("pending_acceptance", 0),
        "accepted": counts.get("accepted", 0),
        "failed": counts.get("failed", 0),
        "ended": sum(counts.get(s, 0) for s in Transfer.Status.TERMINAL),
        "rate": rate,
        "overall_rate": overall,
        "eta_seconds": eta,
        "done_percent": round(100 * (total - waiting - counts.get("requested", 0)) / total)
        if total
        else 0,
        # Approved, its transfers still being approved in the background.
        "approving": bool(
            batch.approver_id
            and counts.get("requested", 0)
            and batch.decided_at
            and not counts.get("declined", 0)
        ),
        "cancelling": bool(batch.cancel_requested_at and counts.get("pending_acceptance", 0)),
        "live": waiting > 0,
    }
