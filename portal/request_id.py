"""Request ids: one per HTTP request, on every log record, carried into the Celery tasks the
request enqueues.

The id comes from a valid ``X-Request-ID`` header (set by a proxy or a load balancer) or is a
new uuid4; it is echoed in the response header. ``before_task_publish`` copies it into the
task message's headers and ``task_prerun`` restores it in the worker, so a worker's log
lines can be matched to the request that caused them.
"""

from __future__ import annotations

import contextvars
import json
import logging
import re
import uuid
from collections.abc import Callable
from datetime import UTC, datetime

from celery.signals import before_task_publish, task_postrun, task_prerun
from django.http import HttpRequest, HttpResponse

HEADER = "X-Request-ID"
TASK_HEADER = "request_id"
# Letters, digits and a few separators: nothing that could forge a log line or a header.
_VALID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{7,127}")

_current: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)


def get() -> str | None:
    return _current.get()


def valid(value: object) -> bool:
    return isinstance(value, str) and _VALID.fullmatch(value) is not None


class RequestIdMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        incoming = request.headers.get(HEADER, "")
        request_id = incoming if valid(incoming) else str(uuid.uuid4())
        request.request_id = request_id  # type: ignore[attr-defined]
        token = _current.set(request_id)
        try:
            response = self.get_response(request)
        finally:
            _current.reset(token)
        response[HEADER] = request_id
        return response


class RequestIdFilter(logging.Filter):
    """Adds ``record.request_id`` ("-" outside a request or a task a request enqueued)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            record.request_id = _current.get() or "-"
        return True


def _record_id(record: logging.LogRecord) -> str | None:
    value = getattr(record, "request_id", None)
    return value if value and value != "-" else _current.get()


class JsonFormatter(logging.Formatter):
    """One JSON object a line (LOG_FORMAT=json), for log shippers."""

    def format(self, record: logging.LogRecord) -> str:
        data = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": _record_id(record),
            "process": record.process,
        }
        if record.exc_info:
            data["exception"] = self.formatException(record.exc_info)
        return json.dumps(data, default=str)


@before_task_publish.connect(dispatch_uid="portal.request_id.publish")
def _put_in_task_headers(headers: dict | None = None, **_: object) -> None:
    request_id = _current.get()
    if request_id and headers is not None:
        headers.setdefault(TASK_HEADER, request_id)


@task_prerun.connect(dispatch_uid="portal.request_id.prerun")
def _restore_in_worker(task=None, **_: object) -> None:
    request = task.request
    if request.is_eager:
        return  # run inline by the caller: its own context already holds the id
    request_id = getattr(request, TASK_HEADER, None) or (request.headers or {}).get(TASK_HEADER)
    _current.set(request_id if valid(request_id) else None)


@task_postrun.connect(dispatch_uid="portal.request_id.postrun")
def _clear_in_worker(task=None, **_: object) -> None:
    if not task.request.is_eager:
        _current.set(None)  # the next task on this worker process starts clean
