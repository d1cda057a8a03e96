"""Inventory sync: one account and region from AWS into the database.

Calls per sync of N certificates, P policies and T things (pages hold 250):
  ListCertificates           ceil(N/250)
  DescribeCertificate        one per certificate new to the portal (validity and CA id never
                             change for a certificate id, so known ones are not described again)
  ListPolicies               ceil(P/250), then ListTargetsForPolicy once per policy (and page)
                             or, when there are more policies than certificates,
                             ListAttachedPolicies once per certificate
  ListThings                 ceil(T/250), then ListThingPrincipals once per thing
                             or, when there are more things than certificates,
                             ListPrincipalThings once per certificate

AWS gives each API its own rate budget (per account and region), and the portal's limiter
keys by API too (transfers/ratelimit.py). So after the listing, the three phases that need
it (describing new certificates, policy targets, thing principals) run side by side, one
call of each in turn: each waits only for its own API's tokens, and a first sync takes about
as long as its longest phase instead of the sum of all three (docs/benchmarks.md). They take
turns in one thread, so every database write stays in this thread: a turn of three calls
keeps up with three APIs at R requests a second while a call takes under 1/(3R) seconds.

Progress is saved as it goes (every FLUSH_ITEMS results or FLUSH_SECONDS): new certificates
are stored from the listing and marked described one by one, links are replaced policy by
policy (thing by thing, certificate by certificate) with the phase's cursor in
``SyncRun.checkpoint``, and each save is a heartbeat. A sync whose worker stopped resumes from
there (:func:`resume_stale`), and one that is saving progress is never taken over: every
save checks that this attempt still owns the run.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta

from django.core.cache import cache
from django.db import connection, transaction
from django.db.models import F, Q
from django.utils import timezone

from transfers import aws
from transfers.models import Certificate, CertificatePolicy, CertificateThing, SyncRun

log = logging.getLogger(__name__)
PAGE = 250
FLUSH_ITEMS = 100  # results a phase holds before saving them
FLUSH_SECONDS = 10.0  # ... or this long since the last save, whichever comes first
# No saved progress for this long: the worker is gone. A save comes at least every
# FLUSH_SECONDS while calls go through; one call waits at most 120 s for the rate.
STALE = timedelta(minutes=5)
MAX_RESUMES = 3  # a sync that keeps dying is failed, and the next one starts afresh


class LeaseLost(Exception):
    """Another worker took this sync over (this one was presumed dead): stop, save nothing."""


class _Progress:
    """Counts API calls, saves progress with a heartbeat, and keeps the lease."""

    def __init__(self, run: SyncRun, owner: str) -> None:
        self.run = run
        self.owner = owner
        self.calls = [0]
        self.counters = [self.calls]  # the phases add theirs
        self.before = run.api_calls  # calls of earlier attempts of a resumed sync
        self.saved_at = time.monotonic()

    @property
    def total(self) -> int:
        return self.before + sum(counter[0] for counter in self.counters)

    def save(self, **fields) -> None:
        """Save ``fields`` with a heartbeat, if this attempt still owns the run."""
        fields.update(heartbeat=timezone.now(), api_calls=self.total)
        updated = SyncRun.objects.filter(
            pk=self.run.pk, owner=self.owner, status=SyncRun.Status.RUNNING
        ).update(**fields)
        if not updated:
            raise LeaseLost(f"sync {self.run.pk} was taken over")
        self.saved_at = time.monotonic()

    def stage(self, text: str) -> None:
        self.run.stage = text
        self.save(stage=text)

    def due(self) -> bool:
        return time.monotonic() - self.saved_at >= FLUSH_SECONDS


def _claim(run_id: int, owner: str) -> bool:
    """Take a queued run, or a running one nobody has saved progress of for STALE."""
    now = timezone.now()
    claimed = SyncRun.objects.filter(pk=run_id, status=SyncRun.Status.QUEUED).update(
        status=SyncRun.Status.RUNNING, started=now, heartbeat=now, owner=owner
    )
    if claimed:
        return True
    return bool(
        SyncRun.objects.filter(pk=run_id, status=SyncRun.Status.RUNNING)
        .filter(Q(heartbeat__lt=now - STALE) | Q(heartbeat__isnull=True))
        .update(heartbeat=now, owner=owner, resumes=F("resumes") + 1)
    )


def sync_region(run_id: int) -> SyncRun:
    """Run one queued sync, or resume one whose worker stopped. Safe to call twice: a run
    that is finished, or running with recent progress, is left alone."""
    owner = uuid.uuid4().hex
    claimed = _claim(run_id, owner)
    run = SyncRun.objects.select_related("account").get(pk=run_id)
    if not claimed:
        return run
    progress = _Progress(run, owner)
    outcome: dict = {}
    try:
        _sync(run, progress)
    except LeaseLost:
        log.warning("inventory sync %s: taken over by another worker; stopping", run_id)
        return SyncRun.objects.select_related("account").get(pk=run_id)
    except aws.AwsError as exc:
        outcome = {"status": SyncRun.Status.FAILED, "error": exc.user_message}
        run.account.last_error = f"{run.region}: {exc.user_message}"
        run.account.save(update_fields=["last_error"])
    except Exception as exc:
        log.exception("inventory sync %s failed", run_id)
        outcome = {
            "status": SyncRun.Status.FAILED,
            "error": f"Unexpected error: {type(exc).__name__}: {exc}",
        }
    else:
        outcome = {
            "status": SyncRun.Status.DONE,
            "stage": "Done",
            "certificates": run.certificates,
            "removed": run.removed,
        }
        if run.account.last_error:
            run.account.last_error = ""
            run.account.save(update_fields=["last_error"])
    try:
        progress.save(finished=timezone.now(), **outcome)
    except LeaseLost:
        log.warning("inventory sync %s: taken over before it could finish", run_id)
    return SyncRun.objects.select_related("account").get(pk=run_id)


def resume_stale() -> tuple[int, int]:
    """Beat: send again every open sync nobody has saved progress of for STALE (its worker
    stopped, or its message was lost); fail the ones resumed MAX_RESUMES times already.
    A sync that is saving progress is never touched. Returns (resumed, failed)."""
    from transfers import queue

    cutoff = timezone.now() - STALE
    stale = SyncRun.objects.filter(
        Q(status=SyncRun.Status.RUNNING, heartbeat__lt=cutoff)
        | Q(status=SyncRun.Status.RUNNING, heartbeat__isnull=True, created__lt=cutoff)
        | Q(status=SyncRun.Status.QUEUED, created__lt=cutoff)
    )
    failed = stale.filter(resumes__gte=MAX_RESUMES).update(
        status=SyncRun.Status.FAILED,
        error=f"The sync stopped {MAX_RESUMES + 1} times without finishing; a new one starts "
        "from the beginning.",
        finished=timezone.now(),
    )
    resumed = 0
    for pk in stale.filter(resumes__lt=MAX_RESUMES).values_list("pk", flat=True):
        queue.send_now("sync_inventory", pk)
        resumed += 1
    return resumed, failed


def _sync(run: SyncRun, progress: _Progress) -> None:
    account, region = run.account, run.region
    client = aws.client(account, region)
    calls = progress.calls

    progress.stage("Listing certificates")
    listed = {
        c["certificateId"]: c
        for c in aws.pages(client, "list_certificates", "certificates", calls, pageSize=PAGE)
    }
    with transaction.atomic():
        pks, new = _store_listing(run, listed)
        progress.save()
    arn_to_pk = {c["certificateArn"]: pks[cid] for cid, c in listed.items()}
    todo = [
        (pk, cid)
        for pk, cid in Certificate.objects.filter(account=account, region=region, described=False)
        .order_by("pk")
        .values_list("pk", "certificate_id")
        if cid in listed  # one an earlier attempt stored and AWS no longer lists: removed
    ]
    checkpoint = dict(run.checkpoint)
    phases = [
        _Describe(run, client, todo),
        _Links(
            "policies",
            CertificatePolicy,
            run,
            client,
            arn_to_pk,
            checkpoint.get("policies"),
            listing=("list_policies", "policies", "policyName", "pageSize"),
            per_name=("list_targets_for_policy", "targets", "policyName", "pageSize"),
            per_cert=("list_attached_policies", "policies", "target", "pageSize"),
        ),
        _Links(
            "things",
            CertificateThing,
            run,
            client,
            arn_to_pk,
            checkpoint.get("things"),
            listing=("list_things", "things", "thingName", "maxResults"),
            per_name=("list_thing_principals", "principals", "thingName", "maxResults"),
            per_cert=("list_principal_things", "things", "principal", "maxResults"),
        ),
    ]
    _side_by_side(phases, progress, checkpoint)

    progress.stage("Saving")
    vanished = phases[0].vanished
    keep = {pk for cid, pk in pks.items() if cid not in vanished}
    with transaction.atomic():
        gone_ids = [
            pk
            for pk in Certificate.objects.filter(account=account, region=region).values_list(
                "pk", flat=True
            )
            if pk not in keep
        ]
        for start in range(0, len(gone_ids), 500):
            Certificate.objects.filter(pk__in=gone_ids[start : start + 500]).delete()
        for phase in phases[1:]:
            phase.remove_unlisted_names()
        run.removed = len(gone_ids)
        run.certificates = len(listed) - len(vanished)
        progress.save(removed=run.removed, certificates=run.certificates)
    if new + run.removed >= max(100, len(listed) // 10) or not _has_statistics():
        refresh_statistics()


def _store_listing(run: SyncRun, listed: dict[str, dict]) -> tuple[dict[str, int], int]:
    """Store what the listing says: new certificates as rows not described yet (validity
    comes from DescribeCertificate), the status, ARN and creation date of known ones.
    Returns the primary keys of the listed certificates and how many were new."""
    account, region, now = run.account, run.region, timezone.now()
    existing = {
        c.certificate_id: c
        for c in Certificate.objects.filter(account=account, region=region).only(
            "pk", "certificate_id", "arn", "status", "creation_date", "last_modified_date"
        )
    }
    to_create, to_update = [], []
    new_status: dict[str, list[int]] = {}
    for cid, item in listed.items():
        row = existing.get(cid)
        created = _aware(item.get("creationDate"))
        if row is None:
            to_create.append(
                Certificate(
                    account=account,
                    region=region,
                    certificate_id=cid,
                    arn=item["certificateArn"],
                    status=item["status"],
                    creation_date=created,
                    synced_at=now,
                    described=False,
                )
            )
            continue
        if row.status != item["status"]:
            row.last_modified_date = now
            new_status.setdefault(item["status"], []).append(row.pk)
        changed = (row.arn, row.status, row.creation_date) != (
            item["certificateArn"],
            item["status"],
            created,
        )
        row.arn, row.creation_date = item["certificateArn"], created
        row.synced_at = now
        if changed:
            to_update.append(row)
    Certificate.objects.bulk_create(to_create, batch_size=500)
    Certificate.objects.bulk_update(
        to_update, ["arn", "creation_date", "last_modified_date"], batch_size=500
    )
    # A status changes with its copies on the links (Certificate.objects.set_status).
    for status, changed_pks in new_status.items():
        for start in range(0, len(changed_pks), 500):
            Certificate.objects.filter(pk__in=changed_pks[start : start + 500]).set_status(status)
    Certificate.objects.filter(account=account, region=region).update(synced_at=now)
    pks = dict(
        Certificate.objects.filter(account=account, region=region).values_list(
            "certificate_id", "pk"
        )
    )
    return {cid: pks[cid] for cid in listed}, len(to_create)


def _side_by_side(phases: list, progress: _Progress, checkpoint: dict) -> None:
    """Run the phases in turn, one API call each per turn, saving as they go."""
    progress.counters.extend(phase.calls for phase in phases)
    active = list(phases)
    while active:
        for phase in list(active):
            if not phase.step():
                active.remove(phase)
        if not active or progress.due() or any(p.full() for p in phases):
            with transaction.atomic():
                for phase in phases:
                    checkpoint.update(phase.flush())
                progress.run.described = phases[0].described_total
                progress.save(
                    checkpoint=checkpoint,
                    described=progress.run.described,
                    stage="; ".join(p.describe() for p in phases),
                )


class _Phase:
    """One phase as a generator that makes at most one API call per step."""

    def __init__(self, run: SyncRun, client) -> None:
        self.run, self.client = run, client
        self.calls = [0]
        self._work: Iterator[None] | None = None

    def step(self) -> bool:
        """Make the next call; False once the phase has nothing left to do."""
        if self._work is None:
            self._work = self.work()
        try:
            next(self._work)
        except StopIteration:
            return False
        return True

    def work(self) -> Iterator[None]:
        raise NotImplementedError

    def each_call(self, items: Iterator) -> Iterator:
        """The items of a paged listing with a ``None`` after each page's call, where the
        phase yields its turn: one call per turn, however many items a page holds."""
        seen = self.calls[0]
        for item in items:
            if self.calls[0] != seen:
                seen = self.calls[0]
                yield None
            yield item
        if self.calls[0] != seen:
            yield None


class _Describe(_Phase):
    name = "describe"

    def __init__(self, run: SyncRun, client, todo: list[tuple[int, str]]) -> None:
        super().__init__(run, client)
        self.todo = todo
        self.done = 0
        self.described_total = run.described
        self.vanished: set[str] = set()
        self.pending: list[tuple[int, str, dict | None]] = []

    def work(self) -> Iterator[None]:
        for pk, cid in self.todo:
            try:
                desc = aws.call(self.client, "describe_certificate", certificateId=cid)
                self.pending.append((pk, cid, desc["certificateDescription"]))
            except aws.AwsError as exc:
                if exc.code != "ResourceNotFoundException":
                    raise
                self.pending.append((pk, cid, None))  # deleted or moved since the listing
            finally:
                self.calls[0] += 1
            yield

    def full(self) -> bool:
        return len(self.pending) >= FLUSH_ITEMS

    def flush(self) -> dict:
        rows = []
        for pk, cid, desc in self.pending:
            if desc is None:
                self.vanished.add(cid)
                continue
            validity = desc.get("validity", {})
            rows.append(
                Certificate(
                    pk=pk,
                    ca_certificate_id=desc.get("caCertificateId", ""),
                    owned_by=desc.get("ownedBy", ""),
                    last_modified_date=_aware(desc.get("lastModifiedDate")),
                    not_before=_aware(validity.get("notBefore")),
                    not_after=_aware(validity.get("notAfter")),
                    described=True,
                )
            )
        Certificate.objects.bulk_update(
            rows,
            [
                "ca_certificate_id",
                "owned_by",
                "last_modified_date",
                "not_before",
                "not_after",
                "described",
            ],
            batch_size=500,
        )
        self.done += len(self.pending)
        self.described_total += len(rows)
        self.pending = []
        return {}

    def describe(self) -> str:
        return f"described {self.done + len(self.pending):,}/{len(self.todo):,} new"


class _Links(_Phase):
    """Which policies (or things) each certificate has: per name (ListTargetsForPolicy,
    ListThingPrincipals) when there are no more names than certificates, else per
    certificate (ListAttachedPolicies, ListPrincipalThings). Links are replaced name by name
    (certificate by certificate) as results are saved, with the cursor in the checkpoint."""

    def __init__(self, kind, model, run, client, arn_to_pk, saved, listing, per_name, per_cert):
        super().__init__(run, client)
        self.kind, self.model, self.arn_to_pk = kind, model, arn_to_pk
        self.saved = saved or {}
        self.listing, self.per_name, self.per_cert = listing, per_name, per_cert
        self.names: list[str] = []
        self.mode = ""
        self.cursor = None
        self.done = 0
        self.total = 0
        self.pending: dict = {}

    def pages(self, spec, **kwargs) -> Iterator:
        operation, key, _, page_param = spec
        kwargs[page_param] = PAGE
        return self.each_call(aws.pages(self.client, operation, key, self.calls, **kwargs))

    def work(self) -> Iterator[None]:
        name_field = self.listing[2]
        for item in self.pages(self.listing):
            if item is None:
                yield
            else:
                self.names.append(item[name_field])
        self.names.sort()
        if len(self.names) <= len(self.arn_to_pk):
            yield from self.by_name()
        else:
            yield from self.by_certificate()

    def resume_after(self, mode: str):
        self.mode = mode
        return self.saved.get("after") if self.saved.get("by") == mode else None

    def by_name(self) -> Iterator[None]:
        after = self.resume_after("name")
        todo = [name for name in self.names if after is None or name > after]
        self.total, self.done = len(self.names), len(self.names) - len(todo)
        arg = self.per_name[2]
        for name in todo:
            found = set()
            for target in self.pages(self.per_name, **{arg: name}):
                if target is None:
                    yield
                elif target in self.arn_to_pk:
                    found.add(self.arn_to_pk[target])
            self.pending[name] = found
            self.cursor = name

    def by_certificate(self) -> Iterator[None]:
        after = self.resume_after("certificate")
        todo = sorted(
            (pk, arn) for arn, pk in self.arn_to_pk.items() if after is None or pk > after
        )
        self.total, self.done = len(self.arn_to_pk), len(self.arn_to_pk) - len(todo)
        arg = self.per_cert[2]
        for pk, arn in todo:
            found = set()
            for item in self.pages(self.per_cert, **{arg: arn}):
                if item is None:
                    yield
                else:
                    found.add(item["policyName"] if isinstance(item, dict) else item)
            self.pending[pk] = found
            self.cursor = pk

    def full(self) -> bool:
        return len(self.pending) >= FLUSH_ITEMS

    def flush(self) -> dict:
        if not self.pending:
            return {}
        if self.mode == "name":
            _replace_by_name(self.model, self.run, self.pending)
        else:
            _replace_by_certificate(self.model, self.pending)
        self.done += len(self.pending)
        self.pending = {}
        return {self.kind: {"by": self.mode, "after": self.cursor}}

    def remove_unlisted_names(self) -> None:
        """Per name, links of names that no longer exist were never looked at: drop them."""
        if self.mode != "name":
            return
        links = self.model.objects.filter(
            account=self.run.account, certificate__region=self.run.region
        )
        listed = set(self.names)
        unlisted = [n for n in links.values_list("name", flat=True).distinct() if n not in listed]
        for start in range(0, len(unlisted), 500):
            links.filter(name__in=unlisted[start : start + 500]).delete()

    def describe(self) -> str:
        if not self.mode:
            return f"listing {self.kind}"
        unit = self.kind if self.mode == "name" else "certificates"
        return f"{self.kind}: {self.done + len(self.pending):,}/{self.total:,} {unit}"


def _replace_by_name(model, run: SyncRun, wanted: dict[str, set[int]]) -> None:
    """Make the links of these names in the run's account and region exactly ``wanted``."""
    have = {
        (cert, name): pk
        for pk, cert, name in model.objects.filter(
            account=run.account, certificate__region=run.region, name__in=list(wanted)
        ).values_list("pk", "certificate_id", "name")
    }
    stale = [pk for (cert, name), pk in have.items() if cert not in wanted[name]]
    _delete(model, stale)
    model.objects.create_for(
        (cert, name)
        for name, certs in wanted.items()
        for cert in sorted(certs)
        if (cert, name) not in have
    )


def _replace_by_certificate(model, wanted: dict[int, set[str]]) -> None:
    """Make the links of these certificates exactly ``wanted``."""
    have = {
        (cert, name): pk
        for pk, cert, name in model.objects.filter(certificate_id__in=list(wanted)).values_list(
            "pk", "certificate_id", "name"
        )
    }
    stale = [pk for (cert, name), pk in have.items() if name not in wanted[cert]]
    _delete(model, stale)
    model.objects.create_for(
        (cert, name)
        for cert, names in sorted(wanted.items())
        for name in sorted(names)
        if (cert, name) not in have
    )


def _delete(model, pks: list[int]) -> None:
    for start in range(0, len(pks), 500):
        model.objects.filter(pk__in=pks[start : start + 500]).delete()


def _has_statistics() -> bool:
    if connection.vendor != "sqlite":
        return True
    with connection.cursor() as cursor:
        cursor.execute("SELECT name FROM sqlite_master WHERE name = 'sqlite_stat1'")
        if cursor.fetchone() is None:
            return False
        cursor.execute(
            "SELECT 1 FROM sqlite_stat1 WHERE tbl = %s LIMIT 1", [Certificate._meta.db_table]
        )
        return cursor.fetchone() is not None


def refresh_statistics() -> None:
    """Refresh SQLite's query-planner statistics of the inventory tables.

    SQLite never gathers them by itself (PostgreSQL's autovacuum does). Without them it
    reads the certificates of the visible accounts through the account index and sorts them
    all for every list page (0.1-0.2 s at 100,000 rows) instead of walking the order index;
    with them a page takes well under a millisecond (docs/benchmarks.md). A full ANALYZE of
    100,000 certificates takes about 0.25 s; a sampled one (analysis_limit) misleads the
    planner, so it runs after syncs that add or remove many rows, not after every sync.
    """
    if connection.vendor != "sqlite":
        return
    with connection.cursor() as cursor:
        for model in (Certificate, CertificatePolicy, CertificateThing):
            cursor.execute(f'ANALYZE "{model._meta.db_table}"')


def _aware(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value if timezone.is_aware(value) else timezone.make_aware(value, timezone.utc)


def queue_sync(account, region: str, user=None) -> tuple[SyncRun, bool]:
    """Queue a sync unless one is already queued or running. Returns (run, created)."""
    from django.db import IntegrityError

    from transfers import queue

    open_run = SyncRun.objects.filter(
        account=account, region=region, status__in=[SyncRun.Status.QUEUED, SyncRun.Status.RUNNING]
    ).first()
    if open_run:
        return open_run, False
    try:
        with transaction.atomic():
            run = SyncRun.objects.create(account=account, region=region, requested_by=user)
    except IntegrityError:  # another request queued it a moment ago
        return SyncRun.objects.get(
            account=account,
            region=region,
            status__in=[SyncRun.Status.QUEUED, SyncRun.Status.RUNNING],
        ), False
    queue.enqueue("sync_inventory", run.pk)
    return run, True


def sync_now(account, user=None) -> int:
    """A person's "Sync now" (the account page, the API): a sync queued in each of the
    account's regions, unless one is queued or running there already; how many were queued."""
    return sum(created for _, created in (queue_sync(account, r, user) for r in account.regions))


ENDPOINT_CACHE_SECONDS = 24 * 3600  # an account's data endpoint does not change
ENDPOINT_RETRY_SECONDS = 5 * 60  # after an AWS error, ask again this much later
UNKNOWN = "unknown"


def data_endpoints(account) -> list[tuple[str, str]]:
    """(region, the account's device data endpoint there) for a managed account: where its
    devices connect (DescribeEndpoint, iot:Data-ATS), cached per account and region for a
    day; "unknown" when AWS does not answer (the account page and the API never fail on it)."""
    if not account.managed:
        return []
    out = []
    for region in account.regions:
        key = f"iot-data-endpoint:{account.account_id}:{region}"
        address = cache.get(key)
        if address is None:
            try:
                with aws.waiting_at_most(2):
                    answer = aws.call(
                        aws.client(account, region),
                        "describe_endpoint",
                        endpointType="iot:Data-ATS",
                    )
                address = answer["endpointAddress"]
                cache.set(key, address, ENDPOINT_CACHE_SECONDS)
            except aws.AwsError:
                address = UNKNOWN
                cache.set(key, address, ENDPOINT_RETRY_SECONDS)
        out.append((region, address))
    return out
