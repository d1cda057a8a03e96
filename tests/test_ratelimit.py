"""The shared AWS rate limiter, on a fake clock so nothing sleeps, and each API's allowance."""

import contextlib

import pytest
from django.urls import reverse

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


HEADROOM = ratelimit.HEADROOM  # as the workers run


@pytest.fixture(autouse=True)
def no_headroom(monkeypatch):
    """The bucket's arithmetic at the allowance itself; the headroom has a test of its own."""
    monkeypatch.setattr(ratelimit, "HEADROOM", 0.0)


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


def test_buckets_keep_2_percent_under_the_allowance_for_the_networks_jitter(db, clock, monkeypatch):
    """AWS's bucket at 1 call a second holds one token too: calls sent exactly 1 s apart are
    throttled whenever the network delays one more than the next. 2 % under leaves 20 ms."""
    assert HEADROOM == 0.02
    monkeypatch.setattr(ratelimit, "HEADROOM", HEADROOM)
    slow = "111111111111:us-east-1:AcceptCertificateTransfer"
    take(1, key=slow, rate=1.0, clock=clock)
    gaps = [take(1, key=slow, rate=1.0, clock=clock) for _ in range(5)]
    assert gaps == [pytest.approx(1 / 0.98)] * 5 and min(gaps) - 1.0 > 0.02
    take(9, clock=clock)  # at 10: a burst of 9.8, then 9.8 a second
    assert take(98, clock=clock) == pytest.approx((98 - 0.8) / 9.8)
    ratelimit.throttled("111111111111:us-east-1:TransferCertificate", 10.0)
    bucket = RateBucket.objects.get(key="111111111111:us-east-1:TransferCertificate")
    assert bucket.rate == pytest.approx(4.9)  # half of what it keeps to


def test_a_token_taken_by_another_worker_meanwhile_is_not_lost(db, clock, monkeypatch):
    """Two workers take at the same moment: the take is one UPDATE computed from the row as
    it is in the database, so both tokens are counted (a read, then a plain write of what
    was computed from it, would count one)."""
    key, rate = "111111111111:us-east-1:TransferCertificate", 10.0
    ratelimit.acquire(key, rate)  # the bucket exists: 9 tokens left
    real_time, others, calls = clock.time, [], []

    def time_with_another_worker():
        calls.append(1)
        if len(calls) == 1:  # between this worker's read and its write
            others.append(ratelimit._take(key, rate))
        return real_time()

    monkeypatch.setattr(clock, "time", time_with_another_worker)
    assert ratelimit._take(key, rate) == 0 and others == [0]
    assert RateBucket.objects.get(key=key).tokens == pytest.approx(7.0)


def test_a_token_is_taken_in_one_statement_and_a_wait_writes_nothing(db, clock):
    """Every AWS call of every transfer takes a token: with one there, one UPDATE; without,
    that UPDATE changes nothing and one read says how long to wait."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    key, rate = "111111111111:us-east-1:TransferCertificate", 10.0
    take(10, key=key, rate=rate, clock=clock)  # made, and its burst spent
    clock.now += 0.1  # one token
    with CaptureQueriesContext(connection) as taking:
        assert ratelimit._take(key, rate) == 0
    before = RateBucket.objects.values("tokens", "rate", "updated").get(key=key)
    with CaptureQueriesContext(connection) as waiting:
        assert ratelimit._take(key, rate) == pytest.approx(0.1)
    assert [q["sql"].split()[0] for q in taking.captured_queries] == ["UPDATE"]
    assert [q["sql"].split()[0] for q in waiting.captured_queries] == ["UPDATE", "SELECT"]
    assert RateBucket.objects.values("tokens", "rate", "updated").get(key=key) == before


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


def test_botocore_retries_take_tokens_and_slow_the_bucket(standin, source, settings, monkeypatch):
    """botocore retries inside one call: each attempt is a request AWS counts, so each takes
    a token, and each throttling answer halves the rate."""
    from transfers import aws

    settings.AWS_MAX_ATTEMPTS = 3
    aws.clear_cache()
    standin.set_faults(throttle_rate=1.0, operations=["ListCertificates"])
    # botocore's backoff between its attempts is not what this is about: no sleeping.
    import time
    import types

    import botocore.endpoint

    fast = {k: getattr(time, k) for k in dir(time) if not k.startswith("_")}
    monkeypatch.setattr(
        botocore.endpoint, "time", types.SimpleNamespace(**{**fast, "sleep": lambda s: None})
    )
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


# ----------------------------------------------------------------- each API at its allowance


def ceilings(monkeypatch, account, *calls, region="us-east-1"):
    """The ceiling each call asked the limiter for: {API: requests per second}."""
    from transfers import aws

    seen = {}
    iot = aws.client(account, region)
    monkeypatch.setattr(
        ratelimit, "acquire", lambda key, rate, **kw: seen.__setitem__(key.rsplit(":", 1)[1], rate)
    )
    for operation, kwargs in calls:
        with contextlib.suppress(aws.AwsError):  # the limiter was asked before AWS answered
            aws.call(iot, operation, **kwargs)
    monkeypatch.undo()
    return seen


CALLS = [
    ("list_certificates", {"pageSize": 1}),
    ("list_attached_policies", {"target": "arn:aws:iot:us-east-1:1:cert/x"}),
    ("detach_thing_principal", {"thingName": "t", "principal": "arn:aws:iot:us-east-1:1:cert/x"}),
    ("transfer_certificate", {"certificateId": "0" * 64, "targetAwsAccount": "222222222222"}),
]


@pytest.fixture
def account_admin(portal_admin, source):
    from transfers.models import AccountGrant, Role

    AccountGrant.objects.create(account=source, user=portal_admin, role=Role.ADMIN)
    return portal_admin


@pytest.fixture
def aws_defaults(source):
    """The source account without a rate of its own: each API at AWS's allowance."""
    source.api_rate = None
    source.save(update_fields=["api_rate"])
    return source


def test_each_api_is_held_at_its_own_aws_allowance(standin, aws_defaults, monkeypatch):
    assert ceilings(monkeypatch, aws_defaults, *CALLS) == {
        "ListCertificates": 10.0,
        "ListAttachedPolicies": 15.0,
        "DetachThingPrincipal": 100.0,
        "TransferCertificate": 10.0,
    }


def test_an_account_sets_a_rate_for_one_api_in_every_region_or_in_one(
    standin, aws_defaults, monkeypatch
):
    aws_defaults.api_rates = {"ListAttachedPolicies": 40.0, "eu-west-1:TransferCertificate": 4.0}
    aws_defaults.save(update_fields=["api_rates"])
    here = ceilings(monkeypatch, aws_defaults, *CALLS)
    there = ceilings(monkeypatch, aws_defaults, *CALLS, region="eu-west-1")
    assert here["ListAttachedPolicies"] == there["ListAttachedPolicies"] == 40.0
    assert (here["TransferCertificate"], there["TransferCertificate"]) == (10.0, 4.0)
    assert here["ListCertificates"] == 10.0  # the others keep AWS's allowance


def test_an_account_rate_holds_every_api_and_its_api_rates_go_over_it(standin, source, monkeypatch):
    source.api_rate = 3.0
    source.api_rates = {"DetachThingPrincipal": 50.0}
    source.save(update_fields=["api_rate", "api_rates"])
    seen = ceilings(monkeypatch, source, *CALLS)
    assert seen == {
        "ListCertificates": 3.0,
        "ListAttachedPolicies": 3.0,
        "DetachThingPrincipal": 50.0,
        "TransferCertificate": 3.0,
    }


def test_adjusted_quotas_are_read_from_service_quotas(standin, aws_defaults, monkeypatch):
    from transfers.models import QuotaRead

    standin.set_service_quotas({"TransferCertificate": 25.0, "AcceptCertificateTransfer": 12.0})
    seen = ceilings(monkeypatch, aws_defaults, *CALLS)
    assert seen["TransferCertificate"] == 25.0
    assert seen["ListCertificates"] == 10.0  # not adjustable: AWS's default
    read = QuotaRead.objects.get(account=aws_defaults, region="us-east-1")
    assert read.rates == {
        "TransferCertificate": 25.0,
        "AcceptCertificateTransfer": 12.0,
        "CancelCertificateTransfer": 10.0,
    }
    assert read.error == ""


def test_service_quotas_are_read_once_an_hour_for_every_process(standin, aws_defaults, monkeypatch):
    import time_machine

    from transfers import aws

    reads = []
    real = aws._read_quotas
    monkeypatch.setattr(aws, "_read_quotas", lambda *a: reads.append(1) or real(*a))
    with time_machine.travel("2026-06-01 12:00", tick=False):
        aws.client(aws_defaults, "us-east-1")
        aws.clear_cache()  # as another process would: nothing kept in memory
        standin.set_service_quotas({"TransferCertificate": 25.0})
        assert aws.client(aws_defaults, "us-east-1").portal_limit[1].of("TransferCertificate") == 10
    with time_machine.travel("2026-06-01 13:01", tick=False):
        assert aws.client(aws_defaults, "us-east-1").portal_limit[1].of("TransferCertificate") == 25
    assert len(reads) == 2


def test_without_permission_to_read_quotas_aws_defaults_apply_and_the_page_says_why(
    standin, aws_defaults, account_admin, client, monkeypatch
):
    from transfers.models import QuotaRead

    standin.set_service_quotas({"TransferCertificate": 25.0}, readable=False)
    seen = ceilings(monkeypatch, aws_defaults, *CALLS)
    assert seen["TransferCertificate"] == 10.0  # AWS's default, not the unreadable 25
    read = QuotaRead.objects.get(account=aws_defaults, region="us-east-1")
    assert "not allowed" in read.error and read.rates == {}
    client.force_login(account_admin)
    page = client.get(reverse("account_detail", args=[aws_defaults.pk])).content.decode()
    assert "not readable" in page and "AWS's default allowances apply" in page
    assert "servicequotas:ListServiceQuotas" in page


def test_a_failed_read_keeps_the_values_read_before(standin, aws_defaults, monkeypatch):
    from datetime import timedelta

    from django.utils import timezone

    from transfers import aws
    from transfers.models import QuotaRead

    standin.set_service_quotas({"TransferCertificate": 25.0})
    aws.client(aws_defaults, "us-east-1")
    QuotaRead.objects.update(read_at=timezone.now() - timedelta(hours=2))
    standin.set_service_quotas(readable=False)
    assert aws.client(aws_defaults, "us-east-1").portal_limit[1].of("TransferCertificate") == 25
    assert QuotaRead.objects.get().error


def test_the_standin_plays_the_same_allowances_as_the_portal_expects():
    from standin import quotas

    assert quotas.AWS_DEFAULTS == ratelimit.AWS_DEFAULTS
    assert quotas.QUOTA_CODES == ratelimit.QUOTA_CODES
    assert quotas.SERVICE_CODE == ratelimit.SERVICE_QUOTAS_CODE


class TestRatesPerApiOnTheAccountForm:
    def post(self, client, account, **fields):
        data = {
            "account_id": account.account_id,
            "name": account.name,
            "managed": "on",
            "regions": ", ".join(account.regions),
            "role_arn": account.role_arn,
            "api_rate": "",
            "api_rates": "",
            "contact_emails": account.contact_emails,
        }
        data.update(fields)
        return client.post(reverse("account_edit", args=[account.pk]), data)

    def test_an_admin_sets_rates_per_api_and_region(self, client, account_admin, source, standin):
        client.force_login(account_admin)
        response = self.post(
            client, source, api_rates="AttachPolicy = 20\n\neu-west-1 TransferCertificate = 5"
        )
        assert response.status_code == 302, response.context["form"].errors
        source.refresh_from_db()
        assert source.api_rate is None  # empty: AWS's allowance for each API
        assert source.api_rates == {"AttachPolicy": 20.0, "eu-west-1:TransferCertificate": 5.0}
        form = client.get(reverse("account_edit", args=[source.pk])).content.decode()
        assert "AttachPolicy = 20\neu-west-1 TransferCertificate = 5" in form

    @pytest.mark.parametrize(
        ("text", "message"),
        [
            ("AttachPolicies = 20", "AttachPolicies is not an AWS IoT API"),
            ("mars-1 AttachPolicy = 20", "not an AWS region name: mars-1"),
            ("AttachPolicy = 0", "a rate between 0.1 and 1000"),
            ("AttachPolicy = fast", "a rate between 0.1 and 1000"),
            ("AttachPolicy 20", "write API = rate"),
        ],
    )
    def test_a_bad_rate_is_refused_clearly_and_changes_nothing(
        self, client, account_admin, source, text, message
    ):
        client.force_login(account_admin)
        response = self.post(client, source, api_rates=f"DetachPolicy = 30\n{text}")
        assert response.status_code == 200
        assert message in response.content.decode()
        source.refresh_from_db()
        assert source.api_rates == {} and source.api_rate == 1000.0


def test_accounts_at_the_old_default_rate_get_aws_s_allowance_for_each_api(db):
    """Migration 0019: 10 for every API was the default, not a choice; 3 was a choice."""
    import importlib

    from django.apps import apps

    from tests.conftest import make_account

    migration = importlib.import_module("transfers.migrations.0019_per_api_allowances")
    default, chosen = make_account("555555555555", api_rate=10.0), make_account("666666666666")
    chosen.api_rate = 3.0
    chosen.save()
    migration.old_default_to_aws_defaults(apps, None)
    default.refresh_from_db()
    chosen.refresh_from_db()
    assert (default.api_rate, chosen.api_rate) == (None, 3.0)


def test_the_admin_shows_and_keeps_the_rates_per_api(client, source, standin):
    """The admin saves with the portal's form: a rate per API it did not show would be saved
    empty by every edit there."""
    from django.contrib.auth.models import User

    source.api_rates = {"AttachPolicy": 20.0}
    source.save(update_fields=["api_rates"])
    client.force_login(User.objects.create_superuser("root", "root@example.com", "pw"))
    url = reverse("admin:transfers_awsaccount_change", args=[source.pk])
    assert "AttachPolicy = 20" in client.get(url).content.decode()
    data = {
        "account_id": source.account_id,
        "name": "Renamed",
        "managed": "on",
        "regions": ", ".join(source.regions),
        "role_arn": source.role_arn,
        "api_rate": "",
        "api_rates": "AttachPolicy = 20",
        "contact_emails": source.contact_emails,
        "grants-TOTAL_FORMS": "0",
        "grants-INITIAL_FORMS": "0",
    }
    response = client.post(url, data)
    assert response.status_code == 302, response.context["adminform"].form.errors
    source.refresh_from_db()
    assert source.name == "Renamed" and source.api_rates == {"AttachPolicy": 20.0}
