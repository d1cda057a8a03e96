"""Enqueue background work by task name, after the current transaction commits.

Every task the portal sends goes through here (tests/test_layout.py checks that nothing else
calls ``apply_async``). Domain code never imports a tasks module: it names the task here and
Celery's registry finds it (zulip's ``queue_json_publish``, Celery's ``send_task``). So
imports run one way, views → workflow → models/aws, and tasks → workflow. A name without a
dot is one of ``transfers.tasks``; another app's task is named in full
(``policies.tasks.send_approval_mail``).
"""

from __future__ import annotations

from celery import current_app
from django.db import transaction


def _task(name: str):
    key = name if "." in name else f"transfers.tasks.{name}"
    if key not in current_app.tasks:
        # Outside a worker nothing has imported the task modules yet: the Celery app's own
        # autodiscovery (portal/celery.py) does it, once.
        current_app.loader.import_default_modules()
    return current_app.tasks[key]


def enqueue(name: str, *args, countdown: float | None = None) -> None:
    """Send the task ``name`` with ``args`` once the current transaction commits (at once
    outside one). A rolled-back transaction sends nothing."""
    transaction.on_commit(lambda: send_now(name, *args, countdown=countdown))


def send_now(name: str, *args, countdown: float | None = None) -> None:
    """Send without waiting for a commit: for beat tasks and the worker's own follow-ups
    (a batch feeder's next tick), which hold no transaction."""
    # apply_async, not app.send_task: it honours task_always_eager in the unit tests.
    _task(name).apply_async(args, countdown=countdown)


def send_later(name: str, *args, seconds: float) -> None:
    """A poll: look again in ``seconds`` at something that changes with time outside the
    portal (a device's job, a device coming back). Sent at once, outside any transaction.
    The unit tests' eager Celery would run it at once, over and over, so they collect these
    instead and run them when they choose (tests/conftest.py)."""
    _task(name).apply_async(args, countdown=seconds)
