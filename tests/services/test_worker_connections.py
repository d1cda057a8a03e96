"""A worker keeps its PostgreSQL connections between tasks (settings.CELERY_DB_REUSE_MAX and
portal/celery.py's close_old_connections): Celery's own fixup closed them after every task,
so each task paid PostgreSQL a new backend (bench/regions.py: 30 a second)."""

import time

import pytest
from django.db import connection

from tests.services.conftest import wait_until
from transfers import queue

pytestmark = pytest.mark.django_db(transaction=True)

TASKS = 40


def sessions() -> int:
    """Sessions PostgreSQL has opened on this database (its statistics, flushed within a
    second or so of the event)."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_stat_clear_snapshot()")
        cursor.execute("SELECT sessions FROM pg_stat_database WHERE datname = current_database()")
        return cursor.fetchone()[0]


def test_a_worker_reuses_its_database_connections_across_tasks(start_worker):
    worker = start_worker(concurrency=2)
    # A task that reads and writes the database and finds nothing: a batch that is not there.
    queue.send_now("feed_batch", 10**9)
    wait_until(lambda: "succeeded" in worker.log.read_text(), 60, lambda: worker.tail())
    time.sleep(2)  # the statistics of the worker's first connections are in
    before = sessions()
    for _ in range(TASKS):
        queue.send_now("feed_batch", 10**9)
    wait_until(
        lambda: worker.log.read_text().count("succeeded") >= TASKS + 1,
        60,
        lambda: worker.tail(),
    )
    time.sleep(2)
    opened = sessions() - before
    # Two threads, each with its connection kept; this test's own are counted too.
    assert opened < 10, f"{opened} new database sessions for {TASKS} tasks"
