"""Celery tasks. They take primary keys, are enqueued after commit and are idempotent."""

from __future__ import annotations

from datetime import timedelta

from celery import shared_task
from django.utils import timezone

from transfers import inventory
from transfers.models import AwsAccount, SyncRun

STALE_SYNC = timedelta(minutes=30)


@shared_task(acks_late=True, reject_on_worker_lost=True)
def sync_inventory(run_id: int) -> None:
    inventory.sync_region(run_id)


@shared_task
def sync_all_accounts() -> int:
    """Beat: queue a sync of every managed account and region; fail syncs left running."""
    SyncRun.objects.filter(
        status__in=[SyncRun.Status.QUEUED, SyncRun.Status.RUNNING],
        created__lt=timezone.now() - STALE_SYNC,
    ).update(
        status=SyncRun.Status.FAILED,
        error="The sync did not finish (worker stopped?); a new one was queued.",
        finished=timezone.now(),
    )
    queued = 0
    for account in AwsAccount.objects.filter(managed=True):
        for region in account.regions:
            _, created = inventory.queue_sync(account, region)
            queued += created
    return queued
