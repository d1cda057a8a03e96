"""The shared rate limiter on PostgreSQL under many threads at once (transfers.ratelimit):
the compare-and-set never hands out more than the burst and the rate, and still reaches it."""

import threading
import time

import pytest
from django.db import connection

from transfers import ratelimit

pytestmark = pytest.mark.django_db(transaction=True)


def test_sixteen_threads_take_no_more_than_the_rate_and_reach_it():
    key, rate, seconds = "111111111111:us-east-1:TransferCertificate", 20.0, 2.0
    taken: list[float] = []
    errors: list[BaseException] = []
    start = time.monotonic()

    def worker() -> None:
        try:
            while time.monotonic() < start + seconds:
                ratelimit.acquire(key, rate)
                taken.append(time.monotonic())
        except BaseException as exc:  # shown below, not lost in the thread
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=worker) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    elapsed = max(taken) - start
    # A full bucket (one second's worth) at the start, then the rate; one token of slack
    # for the thread that started its take just before the end.
    assert len(taken) <= ratelimit.burst(rate) + rate * elapsed + 1
    assert len(taken) >= 0.9 * (ratelimit.burst(rate) + rate * elapsed)
