"""Enqueue background work by task name, after the current transaction commits.

Domain code never imports the tasks module: it names the task here and Celery's registry
finds it (zulip's ``queue_json_publish``, Celery's ``send_task``). So imports run one way,
views → workflow → models/aws, and tasks → workflow.
"""

from __future__ import annotations

from celery import current_app
from django.db import transaction


def _task(name: str):
    key = f"transfers.tasks.{name}"
    if key not in current_app.tasks:
        # Outside a worker nothing has imported the task modules yet: the Celery app's own
        # autodiscovery (portal/celery.py) does it, once.
        current_app.loader.import_default_modules()
    return current_app.tasks[key]


def enqueue(name: str, *args, countdown: float | None = None) -> None:
    """Send ``transfers.tasks.<name>(*args)`` once the current transaction commits (at once
    outside one). A rolled-back transaction sends nothing."""
    transaction.on_commit(lambda: send_now(name, *args, countdown=countdown))


def send_now(name: str, *args, countdown: float | None = None) -> None:
    """Send without waiting for a commit: for beat tasks and the worker's own follow-ups,
    which hold no transaction."""
    # apply_async, not app.send_task: it honours task_always_eager in the unit tests.
    _task(name).apply_async(args, countdown=countdown)
