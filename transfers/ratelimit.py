"""AWS API rates shared by every worker process on every machine.

One token bucket per account, region and API, kept in the database (the source of truth
the workers already share: SQLite on one machine, PostgreSQL when scaled out), so adding
workers never adds throttling. The rate adapts: a throttling answer halves it, each call
that goes through adds back a fiftieth of the configured rate, never above it.

Why not a library: pyrate-limiter and limits keep fixed rates per bucket and share state
only through Redis or a local file, while this needs a per-account configured rate that
adapts to throttling and holds across machines without Redis. botocore's "adaptive" retry
mode does the same adaptation, but per process; it stays available (AWS_RETRY_MODE).
"""

from __future__ import annotations

import time

from django.db import IntegrityError, transaction

from transfers.models import RateBucket

INCREASE = 0.02  # of the configured rate, per call that goes through
DECREASE = 0.5  # factor on a throttling answer
FLOOR = 0.05  # never below this fraction of the configured rate
EPSILON = 1e-6  # float slack, so a bucket a hair short of a token does not spin
MIN_WAIT = 0.001


class RateLimitTimeout(Exception):
    def __init__(self, message: str, retry_after: float) -> None:
        self.retry_after = retry_after  # seconds until the next token, as far as we know
        super().__init__(message)


def acquire(key: str, ceiling: float, max_wait: float = 120.0) -> float:
    """Take one token for ``key``, sleeping as needed. Returns the seconds waited."""
    waited = 0.0
    while True:
        wait = _take(key, ceiling)
        if wait <= 0:
            return waited
        if waited + wait > max_wait:
            raise RateLimitTimeout(f"{key}: no capacity within {max_wait:.0f} s", wait)
        time.sleep(wait)
        waited += wait


def _locked(key: str, ceiling: float) -> RateBucket:
    """The bucket, locked for this transaction; made on first use."""
    bucket = RateBucket.objects.select_for_update().filter(key=key).first()
    if bucket is not None:
        return bucket
    try:
        with transaction.atomic():
            RateBucket.objects.create(
                key=key, rate=ceiling, tokens=burst(ceiling), updated=time.time()
            )
    except IntegrityError:
        pass  # another worker made it first
    return RateBucket.objects.select_for_update().get(key=key)


def burst(rate: float) -> float:
    return max(1.0, rate)  # one second's worth


def _take(key: str, ceiling: float) -> float:
    """One token if there is one (returns 0), else the seconds until there will be."""
    with transaction.atomic():
        bucket = _locked(key, ceiling)
        now = time.time()
        rate = max(min(bucket.rate, ceiling), ceiling * FLOOR)
        tokens = min(burst(rate), bucket.tokens + max(0.0, now - bucket.updated) * rate)
        if tokens >= 1 - EPSILON:
            bucket.tokens = max(0.0, tokens - 1)
            bucket.rate = min(ceiling, rate + ceiling * INCREASE)
            wait = 0.0
        else:
            bucket.tokens = tokens
            bucket.rate = rate
            wait = max(MIN_WAIT, (1 - tokens) / rate)
        bucket.updated = now
        bucket.save(update_fields=["tokens", "rate", "updated"])
    return wait


def throttled(key: str, ceiling: float) -> None:
    """AWS said ThrottlingException: halve the rate for everyone using this bucket."""
    with transaction.atomic():
        bucket = _locked(key, ceiling)
        bucket.rate = max(ceiling * FLOOR, min(bucket.rate, ceiling) * DECREASE)
        bucket.tokens = min(bucket.tokens, 0.0)
        bucket.throttled += 1
        bucket.save(update_fields=["rate", "tokens", "throttled"])
