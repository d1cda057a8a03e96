"""Celery tasks. They take primary keys, are enqueued after commit and are idempotent."""

from __future__ import annotations

import logging

from celery import shared_task
from celery.utils.time import get_exponential_backoff_interval

from transfers import batches, health, inventory, notices, queue, workflow
from transfers.models import AwsAccount, SweepFailure

# A sync is stale after inventory.STALE without saved progress, however long it runs.
STALE_SYNC = inventory.STALE
logger = logging.getLogger(__name__)


@shared_task(acks_late=True, reject_on_worker_lost=True)
def sync_inventory(run_id: int) -> None:
    inventory.sync_region(run_id)


@shared_task
def sync_all_accounts() -> int:
    """Beat: queue a sync of every managed account and region; resume syncs whose worker
    stopped (no progress saved for inventory.STALE), from where they were."""
    inventory.resume_stale()
    queued = 0
    for account in AwsAccount.objects.filter(managed=True):
        for region in account.regions:
            _, created = inventory.queue_sync(account, region)
            queued += created
    return queued


# Throttling and outages: exponential backoff with full jitter, then a person decides.
RETRY_BASE, RETRY_MAX_DELAY, RETRY_LIMIT = 2, 300, 10


def _backoff(retries: int) -> int:
    return get_exponential_backoff_interval(RETRY_BASE, retries, RETRY_MAX_DELAY, full_jitter=True)


@shared_task(bind=True, acks_late=True, reject_on_worker_lost=True, max_retries=RETRY_LIMIT)
def execute_transfer(self, pk: int) -> str:
    try:
        outcome = workflow.execute(pk)
    except workflow.RetryLater as exc:
        if self.request.retries >= self.max_retries:
            workflow.fail(
                pk,
                exc.error.code,
                f"{exc.error.user_message} Gave up after "
                f"{self.max_retries} retries; retry it when AWS is healthy.",
            )
            return "failed: retries exhausted"
        raise self.retry(countdown=_backoff(self.request.retries)) from exc
    if not outcome.startswith(("waiting", "skipped", "stopped")):
        batches.hand_on(pk)  # done with it: the batch's next one, if it has one
    return outcome


@shared_task(acks_late=True, reject_on_worker_lost=True)
def land_transfer(pk: int) -> str:
    """One try at landing in the target; the sweep (reconcile) brings back any that stop."""
    return workflow.land(pk)


@shared_task
def check_devices_due() -> int:
    """Beat, every DEVICE_CHECK_SECONDS: are the devices of landed transfers back yet?"""
    return workflow.sweep_device_checks()


@shared_task(acks_late=True, reject_on_worker_lost=True)
def restore_transfer(pk: int) -> str:
    """One try at a restore; the sweep (reconcile) brings back any that did not finish."""
    return workflow.restore(pk)


@shared_task
def reconcile() -> dict:
    """Beat: catch up with AWS for pending transfers; re-send work a lost message left.
    Each part runs whatever became of the others (each also isolates its rows)."""
    Sweep = SweepFailure.Sweep
    outcomes = _isolated(Sweep.RECONCILE, workflow.reconcile_pending) or {"exception": 1}
    outcomes["requeued"] = _isolated(Sweep.REQUEUE, workflow.requeue_stalled)
    outcomes["approvals_resumed"] = _isolated(Sweep.REQUEUE, batches.resume_approvals)
    outcomes["cancels_resumed"] = _isolated(Sweep.REQUEUE, batches.resume_cancels)
    outcomes["restores"] = _isolated(Sweep.RESTORES, workflow.sweep_restores)
    outcomes["landings"] = _isolated(Sweep.LANDINGS, workflow.sweep_landings)
    return outcomes


def _isolated(sweep: str, part):
    try:
        return part()
    except Exception as exc:  # counted and shown (/metrics/, /health/); the others still run
        SweepFailure.note(sweep, "the sweep", exc)
        return None


@shared_task(bind=True, acks_late=True, reject_on_worker_lost=True, max_retries=6)
def send_notice(self, pk: int) -> str:
    try:
        return notices.send(pk)
    except notices.DeliveryError as exc:
        if self.request.retries >= self.max_retries:
            notices.give_up(pk)
            return "failed: retries exhausted"
        raise self.retry(countdown=_backoff(self.request.retries)) from exc


@shared_task
def expire_and_remind() -> dict:
    """Beat: remind targets before expiry, then expire what nobody accepted in time."""
    reminded = notices.send_reminders()
    outcomes: dict[str, int] = {"reminders": reminded}
    for pk in workflow.due_for_expiry():
        try:
            outcome = workflow.expire(pk)
        except Exception:  # one transfer's AWS trouble must not stop the others
            logger.exception("expiring transfer %s failed", pk)
            outcome = "error"
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
    outcomes["notices_resent"] = notices.resend_stale()
    return outcomes


@shared_task(acks_late=True, reject_on_worker_lost=True)
def feed_batch(batch_pk: int, lease: str | None = None) -> int:
    """Feed a batch's approved transfers to the workers a window at a time. One feeder per
    batch: each tick passes its lease to the next; a second feeder finds the batch held."""
    waiting, lease = batches.feed(batch_pk, lease)
    if lease is not None:
        queue.send_later("feed_batch", batch_pk, lease, seconds=1)
    return waiting


@shared_task(acks_late=True, reject_on_worker_lost=True)
def approve_batch(batch_pk: int, user_pk: int, comment: str = "") -> int:
    return batches.approve_transfers(batch_pk, user_pk, comment)


@shared_task(acks_late=True, reject_on_worker_lost=True)
def cancel_batch(batch_pk: int, user_pk: int) -> int:
    return batches.cancel_transfers(batch_pk, user_pk)[0]


@shared_task(ignore_result=True)
def heartbeat() -> None:
    """Beat, every HEARTBEAT_SECONDS: a worker says it is alive (health.check_worker)."""
    health.record_heartbeat()
