"""Transfer workflows, one module per part of a transfer's life.

- plan: what a transfer will do, read fresh from AWS
- request: asking for one (single or in a batch)
- decide: the source's approve, decline, withdraw, retry
- execute: the worker prepares the certificate and transfers it
- target: the target accepts or rejects
- cancel: the source cancels while it is pending
- outcome: how a transfer ends (back at the source, or moved)
- restore: putting back what preparation removed
- landing_plan: what the target side will look like after acceptance (reads, never writes)
- landing: running that plan in the target
- devices: telling the devices the target's endpoint first; verifying they came back
- expiry: expiry when nobody accepted in time (the reminders before it: notices)
- reconcile: deciding a transfer's state from what AWS says now; re-sending lost work
- events: the audit trail and the one way a transfer changes state

Callers import from here: ``from transfers import workflow; workflow.approve(...)``.
"""

from transfers.workflow.cancel import cancel
from transfers.workflow.decide import approve, check_can_approve, decline, retry, withdraw
from transfers.workflow.devices import check as check_devices
from transfers.workflow.devices import check_due as sweep_device_checks
from transfers.workflow.devices import release as release_devices
from transfers.workflow.devices import stop_waiting as stop_waiting_for_devices
from transfers.workflow.errors import EXPIRY, RECONCILER, WORKER, RetryLater, TransferError
from transfers.workflow.events import record
from transfers.workflow.execute import execute, fail
from transfers.workflow.expiry import due_for_expiry, expire
from transfers.workflow.landing import (
    approve_landing,
    finished_by_hand,
    land,
    retry_landing,
    sweep_landings,
)
from transfers.workflow.landing_plan import LandingChoice
from transfers.workflow.plan import EXPIRING_DAYS, Options, Plan, make_plan, read_certificate
from transfers.workflow.reconcile import (
    newer_transfer,
    reconcile_one,
    reconcile_pending,
    requeue_stalled,
)
from transfers.workflow.request import (
    check_device_options,
    check_request,
    open_transfer,
    request_transfer,
)
from transfers.workflow.restore import (
    restore,
    restored_by_hand,
    retry_restore,
    steps_left,
    sweep_restores,
)
from transfers.workflow.target import accept, reject

__all__ = [
    "LandingChoice",
    "approve_landing",
    "finished_by_hand",
    "land",
    "retry_landing",
    "sweep_landings",
    "EXPIRING_DAYS",
    "EXPIRY",
    "RECONCILER",
    "WORKER",
    "Options",
    "Plan",
    "RetryLater",
    "TransferError",
    "accept",
    "approve",
    "cancel",
    "check_can_approve",
    "check_request",
    "check_device_options",
    "check_devices",
    "release_devices",
    "stop_waiting_for_devices",
    "sweep_device_checks",
    "decline",
    "due_for_expiry",
    "execute",
    "expire",
    "fail",
    "make_plan",
    "newer_transfer",
    "open_transfer",
    "read_certificate",
    "reconcile_one",
    "reconcile_pending",
    "record",
    "reject",
    "request_transfer",
    "requeue_stalled",
    "restore",
    "restored_by_hand",
    "retry",
    "retry_restore",
    "steps_left",
    "sweep_restores",
    "withdraw",
]
