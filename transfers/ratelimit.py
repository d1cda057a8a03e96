"""AWS API rates shared by every worker process on every machine.

One token bucket per account, region and API, kept in the database (the source of truth
the workers already share: SQLite on one machine, PostgreSQL when scaled out), so adding
workers never adds throttling. The rate adapts: a throttling answer halves it, each call
that goes through adds back a fiftieth of the configured rate, never above it.

Each API's ceiling is its allowance in that account and region (:func:`allowances`): AWS's
default for the API, or what Service Quotas says for the adjustable ones, unless the account
sets a rate for every API (``api_rate``) or for one API, in every region or in one
(``api_rates``).

Why not a library: pyrate-limiter and limits keep fixed rates per bucket and share state
only through Redis or a local file, while this needs a per-account configured rate that
adapts to throttling and holds across machines without Redis. botocore's "adaptive" retry
mode does the same adaptation, but per process; it stays available (AWS_RETRY_MODE).
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass, field

from django.conf import settings
from django.db import IntegrityError, connection, transaction

from transfers.models import QuotaRead, RateBucket

# AWS IoT's default allowance per API and per account and region, in requests per second
# (the AWS IoT Core limits table, DESIGN.md "AWS facts"). The stand-in's ceilings are the
# same table (standin/quotas.py; tests/test_ratelimit.py keeps the two equal). An API not
# listed here is held at AWS_DEFAULT_API_RATE.
AWS_DEFAULTS = {
    **dict.fromkeys(
        [
            "TransferCertificate",
            "AcceptCertificateTransfer",
            "RejectCertificateTransfer",
            "CancelCertificateTransfer",
            "ListCertificates",
            "ListOutgoingCertificates",
            "DescribeCertificate",
            "UpdateCertificate",
            "ListTargetsForPolicy",
            "ListThingPrincipals",
            "ListPrincipalThings",
        ],
        10.0,
    ),
    **dict.fromkeys(["AttachPolicy", "DetachPolicy", "ListAttachedPolicies"], 15.0),
    # 15 in AWS's older limits table, 100 in the newer quota listings.
    **dict.fromkeys(["AttachThingPrincipal", "DetachThingPrincipal"], 100.0),
    # Devices (DESIGN.md "Devices"): connectivity at about 350 a second; the Jobs calls the
    # portal makes and DescribeEndpoint at AWS IoT's usual 10.
    "GetThingConnectivityData": 350.0,
    **dict.fromkeys(
        [
            "CreateJob",
            "CancelJob",
            "DescribeJobExecution",
            "ListJobExecutionsForJob",
            "DescribeEndpoint",
            "GetIndexingConfiguration",
            "UpdateIndexingConfiguration",
        ],
        10.0,
    ),
}

# The adjustable ones: their Service Quotas codes (service code "iotcore").
SERVICE_QUOTAS_CODE = "iotcore"
QUOTA_CODES = {
    "L-9A4156D0": "TransferCertificate",
    "L-136C6B71": "AcceptCertificateTransfer",
    "L-14E3C32E": "CancelCertificateTransfer",
}

MIN_RATE, MAX_RATE = 0.1, 1000.0  # what an account may set, requests per second


@dataclass(frozen=True)
class Allowances:
    """Each API's allowance in one account and region, and where it comes from."""

    region: str
    api_rate: float | None = None  # the account's rate for every API
    api_rates: dict[str, float] = field(default_factory=dict)  # "API" / "region:API" -> rate
    quotas: dict[str, float] = field(default_factory=dict)  # API -> Service Quotas' value

    def of(self, api: str) -> float:
        return self.explain(api)[0]

    def explain(self, api: str) -> tuple[float, str]:
        """(requests per second, where that comes from)."""
        for key, source in ((f"{self.region}:{api}", "account, this region"), (api, "account")):
            if key in self.api_rates:
                return float(self.api_rates[key]), source
        if self.api_rate is not None:
            return float(self.api_rate), "account, every API"
        if api in self.quotas:
            return float(self.quotas[api]), "Service Quotas"
        if api in AWS_DEFAULTS:
            return AWS_DEFAULTS[api], "AWS default"
        return float(settings.AWS_DEFAULT_API_RATE), "AWS_DEFAULT_API_RATE"


def allowances(account, region: str, quotas: dict[str, float] | None = None) -> Allowances:
    """``account``'s allowances in ``region``. ``quotas``: Service Quotas' values as just read;
    by default the last read stored (QuotaRead; aws.client reads them again when stale)."""
    if quotas is None:
        quotas = {}
        if account.api_rate is None and account.pk is not None:
            read = QuotaRead.objects.filter(account=account, region=region).first()
            quotas = read.rates if read is not None else {}
    return Allowances(region, account.api_rate, dict(account.api_rates or {}), quotas)


def table(account) -> list[tuple[str, list[tuple[float, str]]]]:
    """For the account page: each API AWS's table lists or the account sets, with its
    allowance and where it comes from in each of the account's regions."""
    each = [allowances(account, region) for region in account.regions or []]
    named = {key.rpartition(":")[2] for key in account.api_rates or {}}
    return [(api, [a.explain(api) for a in each]) for api in sorted({*AWS_DEFAULTS, *named})]


@functools.cache
def iot_apis() -> frozenset[str]:
    """Every AWS IoT API name (botocore's service model): what an account may set a rate for."""
    import botocore.session

    return frozenset(botocore.session.get_session().get_service_model("iot").operation_names)


INCREASE = 0.02  # of the configured rate, per call that goes through
DECREASE = 0.5  # factor on a throttling answer
FLOOR = 0.05  # never below this fraction of the configured rate
EPSILON = 1e-6  # float slack, so a bucket a hair short of a token does not spin
MIN_WAIT = 0.001
# Each bucket runs this much under its allowance. AWS counts a call when it arrives, the
# portal when it leaves, and at a low allowance both buckets hold a single token: at exactly
# 1 call a second, a call a few milliseconds of network jitter early is throttled, the rate
# halves and takes 25 calls to win back (bench/rate_sweep.py at R = 1: 0.62-0.69 of R).
# 2 % leaves 20 ms of jitter at 1 a second and costs 2 % at every rate.
HEADROOM = 0.02


def held(ceiling: float) -> float:
    """The rate a bucket keeps to for an allowance of ``ceiling``."""
    return ceiling * (1 - HEADROOM)


class RateLimitTimeout(Exception):
    def __init__(self, message: str, retry_after: float) -> None:
        self.retry_after = retry_after  # seconds until the next token, as far as we know
        super().__init__(message)


def acquire(key: str, ceiling: float, max_wait: float = 120.0) -> float:
    """Take one token for ``key`` (an API's allowance of ``ceiling`` a second), sleeping as
    needed. Returns the seconds waited."""
    ceiling = held(ceiling)
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
    _create(key, ceiling)
    return RateBucket.objects.select_for_update().get(key=key)


def _create(key: str, ceiling: float) -> None:
    """Make the bucket, full, unless another worker just did."""
    try:
        with transaction.atomic():
            RateBucket.objects.create(
                key=key, rate=ceiling, tokens=burst(ceiling), updated=time.time()
            )
    except IntegrityError:
        pass  # another worker made it first


def burst(rate: float) -> float:
    return max(1.0, rate)  # one second's worth


# _take's statements, in plain SQL: the ORM's query building cost more CPU than the
# database did, on every AWS call of every transfer (RateBucket's table).
_READ = 'SELECT tokens, rate, updated FROM "transfers_ratebucket" WHERE "key" = %s'


@functools.cache
def _take_sql(vendor: str) -> str:
    """One statement that takes a token if the bucket has one: the arithmetic of
    :func:`_refill`, in SQL (SET sees the row as it was, as _refill's arguments)."""
    least, greatest = ("least", "greatest") if vendor == "postgresql" else ("min", "max")
    rate = f"{greatest}({least}(rate, %(ceiling)s), %(floor)s)"
    now = f"{greatest}(%(now)s, updated)"
    tokens = f"{least}({greatest}(1.0, {rate}), tokens + ({now} - updated) * {rate})"
    # Built from the two function names above; every value is a parameter.
    return (
        f'UPDATE "transfers_ratebucket" SET tokens = {greatest}(0.0, {tokens} - 1), '  # noqa: S608
        f"rate = {least}(%(ceiling)s, {rate} + %(step)s), updated = {now} "
        f'WHERE "key" = %(key)s AND {tokens} >= %(one)s'
    )


def _refill(tokens: float, rate: float, updated: float, now: float, ceiling: float):
    """(tokens, rate) at ``now`` of a bucket read as (tokens, rate, updated)."""
    rate = max(min(rate, ceiling), ceiling * FLOOR)
    return min(burst(rate), tokens + (max(now, updated) - updated) * rate), rate


def _take(key: str, ceiling: float) -> float:
    """One token if there is one (returns 0), else the seconds until there will be.

    One UPDATE takes the token when the bucket has one, in the database, so two workers
    taking at the same moment both count. Only without a token is the bucket read, to say
    how long to wait (nothing is written then: a bucket's state follows from the time).
    Never a locked read in a transaction: that held the row, which every worker's calls to
    that API share, while Python computed, and in a threaded worker while it waited for
    the GIL."""
    params = {
        "key": key,
        "now": time.time(),
        "ceiling": ceiling,
        "floor": ceiling * FLOOR,
        "step": ceiling * INCREASE,
        "one": 1 - EPSILON,
    }
    with connection.cursor() as cursor:
        cursor.execute(_take_sql(connection.vendor), params)
        if cursor.rowcount:
            return 0.0
        cursor.execute(_READ, [key])
        row = cursor.fetchone()
    if row is None:
        _create(key, ceiling)  # full: the next take has its token
        return _take(key, ceiling)
    # A token that came between the two statements waits MIN_WAIT, then is taken.
    tokens, rate = _refill(*row, params["now"], ceiling)
    return max(MIN_WAIT, (1 - tokens) / rate)


def throttled(key: str, ceiling: float) -> None:
    """AWS said ThrottlingException: halve the rate for everyone using this bucket."""
    ceiling = held(ceiling)
    with transaction.atomic():
        bucket = _locked(key, ceiling)
        bucket.rate = max(ceiling * FLOOR, min(bucket.rate, ceiling) * DECREASE)
        bucket.tokens = min(bucket.tokens, 0.0)
        bucket.throttled += 1
        bucket.save(update_fields=["rate", "tokens", "throttled"])
