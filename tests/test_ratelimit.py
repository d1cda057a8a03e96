"""The shared AWS rate limiter, on a fake clock so nothing sleeps."""

import pytest

from transfers import ratelimit
from transfers.models import RateBucket


class FakeClock:
    def __init__(self):
        self.now = 1_000_000.0
        self.slept = 0.0

    def time(self):
        return self.now

    def sleep(self, seconds):
        self.now += seconds
        self.slept += seconds


@pytest.fixture
def clock(monkeypatch):
    fake = FakeClock()
    monkeypatch.setattr(ratelimit, "time", fake)
    return fake


def take(n, key="111111111111:us-east-1:TransferCertificate", rate=10.0, clock=None):
    start = clock.now
    for _ in range(n):
        ratelimit.acquire(key, rate)
    return clock.now - start


def test_a_burst_of_one_second_then_the_configured_rate(db, clock):
    assert take(10, clock=clock) == 0  # the first second's worth goes at once
    elapsed = take(100, clock=clock)
    assert 9.9 <= elapsed <= 10.1  # then 10 a second


def test_each_api_and_account_has_its_own_bucket(db, clock):
    take(10, key="a:us-east-1:DescribeCertificate", clock=clock)
    assert take(10, key="a:us-east-1:TransferCertificate", clock=clock) == 0
    assert take(10, key="b:us-east-1:DescribeCertificate", clock=clock) == 0
    assert RateBucket.objects.count() == 3


def test_throttling_halves_the_rate_and_calls_win_it_back(db, clock):
    key = "a:us-east-1:TransferCertificate"
    take(10, key=key, clock=clock)
    ratelimit.throttled(key, 10.0)
    bucket = RateBucket.objects.get(key=key)
    assert bucket.rate == 5.0 and bucket.throttled == 1
    slow = take(5, key=key, clock=clock)
    assert slow > 0.5  # slower than 10 a second right after throttling
    take(50, key=key, clock=clock)
    assert RateBucket.objects.get(key=key).rate == 10.0  # additive increase back to the ceiling


def test_the_rate_never_drops_to_nothing(db, clock):
    key = "a:us-east-1:X"
    for _ in range(20):
        ratelimit.throttled(key, 10.0)
    assert RateBucket.objects.get(key=key).rate == pytest.approx(0.5)


def test_a_lowered_account_rate_applies_at_once(db, clock):
    key = "a:us-east-1:X"
    take(10, key=key, rate=10.0, clock=clock)
    assert 9.9 <= take(20, key=key, rate=2.0, clock=clock) <= 10.1


def test_waiting_too_long_is_an_error(db, clock):
    key = "a:us-east-1:X"
    take(1, key=key, rate=0.1, clock=clock)
    with pytest.raises(ratelimit.RateLimitTimeout):
        ratelimit.acquire(key, 0.1, max_wait=5)


def test_aws_calls_go_through_the_limiter(standin, source, monkeypatch):
    from transfers import aws

    seen = []
    monkeypatch.setattr(ratelimit, "acquire", lambda key, rate, **kw: seen.append((key, rate)))
    aws.call(aws.client(source, "us-east-1"), "list_certificates", pageSize=1)
    assert seen == [("111111111111:us-east-1:ListCertificates", source.api_rate)]


def test_a_throttling_answer_slows_the_bucket(standin, source):
    from transfers import aws

    standin.set_faults(throttle_rate=1.0, operations=["ListCertificates"])
    with pytest.raises(aws.AwsError) as failed:
        aws.call(aws.client(source, "us-east-1"), "list_certificates", pageSize=1)
    assert failed.value.code == "ThrottlingException" and failed.value.retryable
    bucket = RateBucket.objects.get(key="111111111111:us-east-1:ListCertificates")
    assert bucket.throttled == 1 and bucket.rate == source.api_rate * ratelimit.DECREASE


def test_botocore_retries_take_tokens_and_slow_the_bucket(standin, source, settings):
    """botocore retries inside one call: each attempt is a request AWS counts, so each takes
    a token, and each throttling answer halves the rate."""
    from transfers import aws

    settings.AWS_MAX_ATTEMPTS = 3
    aws.clear_cache()
    standin.set_faults(throttle_rate=1.0, operations=["ListCertificates"])
    with pytest.raises(aws.AwsError) as failed:
        aws.call(aws.client(source, "us-east-1"), "list_certificates", pageSize=1)
    assert failed.value.code == "ThrottlingException"
    assert standin.call_count("ListCertificates", outcome="throttled") == 3
    bucket = RateBucket.objects.get(key="111111111111:us-east-1:ListCertificates")
    assert bucket.throttled == 3
    expected = source.api_rate
    for _ in range(3):  # each attempt took a token (rate up a little), then was throttled
        expected = (min(expected + source.api_rate * ratelimit.INCREASE, source.api_rate)) * 0.5
    assert ratelimit.DECREASE == 0.5 and bucket.rate == pytest.approx(expected)
