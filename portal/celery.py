"""The Celery app: configured from Django's settings (CELERY_*), and the only place that
loads the tasks modules (autodiscovery); everything else enqueues through transfers/queue.py."""

import os

from celery import Celery
from celery.signals import task_postrun, task_prerun

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")

app = Celery("portal")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@task_prerun.connect(dispatch_uid="portal.celery.connections.prerun")
@task_postrun.connect(dispatch_uid="portal.celery.connections.postrun")
def close_old_connections(task=None, **kwargs) -> None:
    """Around each task, what Django does around each request: close this thread's
    connections that are past CONN_MAX_AGE or broken, keep the others (settings.py:
    CELERY_DB_REUSE_MAX). Not for an eager task: it runs inside its caller's transaction."""
    if task is not None and getattr(task.request, "is_eager", False):
        return
    from django.db import close_old_connections as close

    close()


# Connects the signals that carry a request id from a request into its tasks.
from portal import request_id  # noqa: E402, F401
