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
"""

from __future__ import annotations

import logging
from collections import defaultdict
from datetime import datetime

from django.db import connection, transaction
from django.utils import timezone

from transfers import aws
from transfers.models import Certificate, CertificatePolicy, CertificateThing, SyncRun

log = logging.getLogger(__name__)
PAGE = 250


class _Progress:
    """Counts API calls and shows the current stage on the sync run row."""

    def __init__(self, run: SyncRun) -> None:
        self.run = run
        self.calls = [0]

    def stage(self, text: str) -> None:
        self.run.stage = text
        self.run.api_calls = self.calls[0]
        self.run.save(update_fields=["stage", "api_calls"])


def sync_region(run_id: int) -> SyncRun:
    """Run one queued sync. Safe to call twice: a run that is not queued is left alone."""
    claimed = SyncRun.objects.filter(pk=run_id, status=SyncRun.Status.QUEUED).update(
        status=SyncRun.Status.RUNNING, started=timezone.now()
    )
    run = SyncRun.objects.select_related("account").get(pk=run_id)
    if not claimed:
        return run
    progress = _Progress(run)
    try:
        _sync(run, progress)
    except aws.AwsError as exc:
        run.status = SyncRun.Status.FAILED
        run.error = exc.user_message
        run.account.last_error = f"{run.region}: {exc.user_message}"
        run.account.save(update_fields=["last_error"])
    except Exception as exc:
        log.exception("inventory sync %s failed", run_id)
        run.status = SyncRun.Status.FAILED
        run.error = f"Unexpected error: {type(exc).__name__}: {exc}"
    else:
        run.status = SyncRun.Status.DONE
        run.stage = "Done"
        if run.account.last_error:
            run.account.last_error = ""
            run.account.save(update_fields=["last_error"])
    run.api_calls = progress.calls[0]
    run.finished = timezone.now()
    run.save()
    return run


def _sync(run: SyncRun, progress: _Progress) -> None:
    account, region = run.account, run.region
    client = aws.client(account, region)
    calls = progress.calls

    progress.stage("Listing certificates")
    listed = {
        c["certificateId"]: c
        for c in aws.pages(client, "list_certificates", "certificates", calls, pageSize=PAGE)
    }
    existing = {
        c.certificate_id: c for c in Certificate.objects.filter(account=account, region=region)
    }

    new_ids = [cid for cid in listed if cid not in existing]
    described: dict[str, dict] = {}
    for i, cid in enumerate(new_ids):
        if i % 50 == 0:
            progress.stage(f"Describing new certificates ({i}/{len(new_ids)})")
        try:
            described[cid] = aws.call(client, "describe_certificate", certificateId=cid)[
                "certificateDescription"
            ]
        except aws.AwsError as exc:
            if exc.code != "ResourceNotFoundException":
                raise
            listed.pop(cid)  # deleted or moved between the listing and now
        finally:
            calls[0] += 1
    run.described = len(described)

    arn_to_id = {c["certificateArn"]: cid for cid, c in listed.items()}
    progress.stage("Listing policies")
    policies = _policies_by_certificate(client, arn_to_id, calls)
    progress.stage("Listing things")
    things = _things_by_certificate(client, arn_to_id, calls)

    progress.stage("Saving")
    with transaction.atomic():
        run.removed = _save(run, listed, existing, described, policies, things)
    run.certificates = len(listed)
    if len(new_ids) + run.removed >= max(100, len(listed) // 10) or not _has_statistics():
        refresh_statistics()


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


def _policies_by_certificate(client, arn_to_id: dict[str, str], calls) -> dict[str, set[str]]:
    result: dict[str, set[str]] = defaultdict(set)
    names = [
        p["policyName"]
        for p in aws.pages(client, "list_policies", "policies", calls, pageSize=PAGE)
    ]
    if len(names) <= len(arn_to_id):
        for name in names:
            for target in aws.pages(
                client, "list_targets_for_policy", "targets", calls, policyName=name, pageSize=PAGE
            ):
                if target in arn_to_id:
                    result[arn_to_id[target]].add(name)
    else:
        for arn, cid in arn_to_id.items():
            for policy in aws.pages(
                client, "list_attached_policies", "policies", calls, target=arn, pageSize=PAGE
            ):
                result[cid].add(policy["policyName"])
    return result


def _things_by_certificate(client, arn_to_id: dict[str, str], calls) -> dict[str, set[str]]:
    result: dict[str, set[str]] = defaultdict(set)
    names = [
        t["thingName"] for t in aws.pages(client, "list_things", "things", calls, maxResults=PAGE)
    ]
    if len(names) <= len(arn_to_id):
        for name in names:
            for principal in aws.pages(
                client,
                "list_thing_principals",
                "principals",
                calls,
                thingName=name,
                maxResults=PAGE,
            ):
                if principal in arn_to_id:
                    result[arn_to_id[principal]].add(name)
    else:
        for arn, cid in arn_to_id.items():
            for name in aws.pages(
                client, "list_principal_things", "things", calls, principal=arn, maxResults=PAGE
            ):
                result[cid].add(name)
    return result


def _aware(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value if timezone.is_aware(value) else timezone.make_aware(value, timezone.utc)


def _save(run, listed, existing, described, policies, things) -> int:
    account, region, now = run.account, run.region, timezone.now()
    to_create, to_update = [], []
    for cid, item in listed.items():
        row = existing.get(cid)
        if row is None:
            desc = described.get(cid, {})
            validity = desc.get("validity", {})
            row = Certificate(
                account=account,
                region=region,
                certificate_id=cid,
                ca_certificate_id=desc.get("caCertificateId", ""),
                owned_by=desc.get("ownedBy", ""),
                last_modified_date=_aware(desc.get("lastModifiedDate")),
                not_before=_aware(validity.get("notBefore")),
                not_after=_aware(validity.get("notAfter")),
            )
            to_create.append(row)
        else:
            to_update.append(row)
            if row.status != item["status"]:
                row.last_modified_date = now
        row.arn = item["certificateArn"]
        row.status = item["status"]
        row.creation_date = _aware(item.get("creationDate"))
        row.synced_at = now
    Certificate.objects.bulk_create(to_create, batch_size=500)
    Certificate.objects.bulk_update(
        to_update,
        ["arn", "status", "creation_date", "last_modified_date", "synced_at"],
        batch_size=500,
    )
    gone = [row.pk for cid, row in existing.items() if cid not in listed]
    Certificate.objects.filter(pk__in=gone).delete()

    pks = {
        cid: pk
        for cid, pk in Certificate.objects.filter(account=account, region=region).values_list(
            "certificate_id", "pk"
        )
    }
    _replace_links(CertificatePolicy, account, pks, policies)
    _replace_links(CertificateThing, account, pks, things)
    return len(gone)


def _replace_links(model, account, pks: dict[str, int], wanted_by_cid: dict[str, set[str]]) -> None:
    wanted = {(pks[cid], name) for cid, names in wanted_by_cid.items() for name in names}
    have = {
        (cert, name): pk
        for pk, cert, name in model.objects.filter(certificate_id__in=pks.values()).values_list(
            "pk", "certificate_id", "name"
        )
    }
    stale = [pk for key, pk in have.items() if key not in wanted]
    for start in range(0, len(stale), 500):
        model.objects.filter(pk__in=stale[start : start + 500]).delete()
    model.objects.bulk_create(
        [
            model(account=account, certificate_id=cert, name=name)
            for cert, name in wanted
            if (cert, name) not in have
        ],
        batch_size=500,
    )


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
