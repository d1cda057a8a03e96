"""The Celery app: configured from Django's settings (CELERY_*), and the only place that
loads the tasks modules (autodiscovery); everything else enqueues through transfers/queue.py."""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")

app = Celery("portal")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()

# Connects the signals that carry a request id from a request into its tasks.
from portal import request_id  # noqa: E402, F401
