"""Around each task the worker closes its database connections as Django does around a
request (portal/celery.py): past CONN_MAX_AGE or broken, never a young one, and never inside
an eager task (its caller's transaction). The PostgreSQL side: tests/services/
test_worker_connections.py."""

import time

import pytest
from celery.signals import task_postrun, task_prerun
from django.db import connection

from transfers.tasks import heartbeat as task

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def closes(monkeypatch) -> list[int]:
    connection.ensure_connection()
    closed: list[int] = []
    monkeypatch.setattr(connection, "close", lambda: closed.append(1))
    return closed


def run_signals(task) -> None:
    task_prerun.send(sender=task, task_id="t", task=task, args=(), kwargs={})
    task_postrun.send(sender=task, task_id="t", task=task, args=(), kwargs={}, retval=None)


def test_a_young_connection_is_kept_and_an_old_one_closed(closes):
    connection.close_at = time.monotonic() + 60
    run_signals(task)
    assert closes == []
    connection.close_at = time.monotonic() - 1
    run_signals(task)
    assert closes  # closed at its age


def test_an_eager_task_never_closes_its_callers_connection(closes):
    connection.close_at = time.monotonic() - 1
    task.push_request(is_eager=True)
    try:
        run_signals(task)
    finally:
        task.pop_request()
    assert closes == []
