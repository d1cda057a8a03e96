"""Fault injection, the per-account rate ceiling and call counters."""

from __future__ import annotations

import threading

import pytest
from botocore.exceptions import ClientError

from standin.faults import FaultConfig, FaultInjector

SOURCE = "111111111111"
TARGET = "222222222222"


def outcome(call, **kwargs):
    try:
        call(**kwargs)
    except ClientError as error:
        return error.response["Error"]["Code"]
    return "ok"


def status_of(iot, cert_id):
    return iot.describe_certificate(certificateId=cert_id)["certificateDescription"]["status"]


def test_no_faults_are_injected_by_default(aws):
    iot = aws.iot(SOURCE)

    results = [outcome(iot.list_certificates) for _ in range(20)]

    assert results == ["ok"] * 20
    assert aws.control.faults()["throttle_rate"] == 0.0
    assert aws.control.call_count("ListCertificates", outcome="ok") == 20
    assert aws.control.call_count("ListCertificates", outcome="throttled") == 0


def test_throttled_transfer_changes_nothing_and_is_counted_apart(aws, new_cert, expect_error):
    iot = aws.iot(SOURCE)
    cert_id = new_cert(iot)
    aws.control.set_faults(throttle_rate=1.0, operations=["TransferCertificate"])

    with expect_error("ThrottlingException", 400):
        iot.transfer_certificate(certificateId=cert_id, targetAwsAccount=TARGET)

    assert status_of(iot, cert_id) == "INACTIVE"
    assert iot.list_outgoing_certificates()["outgoingCertificates"] == []
    assert aws.control.call_count("TransferCertificate") == 0
    assert aws.control.call_count("TransferCertificate", outcome="throttled") == 1
    assert aws.control.calls()["faulted"] == {"TransferCertificate": {"ThrottlingException": 1}}
    aws.control.clear_faults()
    iot.transfer_certificate(certificateId=cert_id, targetAwsAccount=TARGET)
    assert aws.control.call_count("TransferCertificate", cert_id, "ok") == 1


def test_unavailable_rate_answers_service_unavailable_and_changes_nothing(
    aws, registered_cert, expect_error
):
    source, target = aws.iot(SOURCE), aws.iot(TARGET)
    cert_id = registered_cert(source)
    source.transfer_certificate(certificateId=cert_id, targetAwsAccount=TARGET)
    aws.control.set_faults(unavailable_rate=1.0, operations=["accept_certificate_transfer"])

    with expect_error("ServiceUnavailableException", 503):
        target.accept_certificate_transfer(certificateId=cert_id)

    assert status_of(target, cert_id) == "PENDING_TRANSFER"
    assert aws.control.call_count("AcceptCertificateTransfer") == 0
    assert aws.control.calls()["faulted"]["AcceptCertificateTransfer"] == {
        "ServiceUnavailableException": 1
    }


def test_faults_only_hit_the_listed_operations(aws, registered_cert, expect_error):
    iot = aws.iot(SOURCE)
    cert_id = registered_cert(iot)
    aws.control.set_faults(throttle_rate=1.0, operations=["DescribeCertificate"])

    assert outcome(iot.list_certificates) == "ok"
    with expect_error("ThrottlingException"):
        iot.describe_certificate(certificateId=cert_id)


def test_seeded_faults_repeat_the_same_sequence(aws, registered_cert):
    iot = aws.iot(SOURCE)
    cert_id = registered_cert(iot)

    runs = []
    for _ in range(2):
        aws.control.set_faults(throttle_rate=0.3, unavailable_rate=0.3, seed=7)
        runs.append([outcome(iot.describe_certificate, certificateId=cert_id) for _ in range(30)])

    assert runs[0] == runs[1]
    assert set(runs[0]) == {"ok", "ThrottlingException", "ServiceUnavailableException"}
    throttled = runs[0].count("ThrottlingException") + runs[1].count("ThrottlingException")
    faulted = aws.control.calls()["faulted"]["DescribeCertificate"]
    assert faulted["ThrottlingException"] == throttled


def test_rate_ceiling_throttles_an_account_above_its_requests_per_second(aws):
    source, target = aws.iot(SOURCE), aws.iot(TARGET)
    aws.control.set_faults(rps_per_account=3)

    burst = [outcome(source.list_certificates) for _ in range(3)]
    after = [outcome(source.list_certificates) for _ in range(6)]

    assert burst == ["ok"] * 3
    assert "ThrottlingException" in after
    assert outcome(target.list_certificates) == "ok"  # every account has its own bucket
    assert aws.control.call_count("ListCertificates", outcome="throttled") == after.count(
        "ThrottlingException"
    )


def test_rate_ceiling_per_operation_gives_each_api_its_own_budget(aws):
    source, target = aws.iot(SOURCE), aws.iot(TARGET)
    aws.control.set_faults(rps_per_operation=3)

    listed = [outcome(source.list_certificates) for _ in range(6)]
    # Another API of the same account has a budget of its own, as in AWS.
    things = [outcome(source.list_things) for _ in range(3)]

    assert listed[:3] == ["ok"] * 3
    assert "ThrottlingException" in listed[3:]
    assert things == ["ok"] * 3
    assert outcome(target.list_certificates) == "ok"  # and so has every account
    assert aws.control.faults()["rps_per_operation"] == 3
    assert aws.control.call_count("ListCertificates", outcome="throttled") == listed.count(
        "ThrottlingException"
    )
    assert aws.control.call_count("ListThings", outcome="throttled") == 0


def test_rate_ceilings_are_kept_per_account_and_region(aws):
    """AWS keeps its quotas per account and region: a second region of the same account has
    its own allowance of every API, and its own account-wide ceiling."""
    east, west = aws.iot(SOURCE, "us-east-1"), aws.iot(SOURCE, "eu-west-1")
    aws.control.set_faults(rps_per_operation=3, rps_per_account=5)

    east_calls = [outcome(east.list_certificates) for _ in range(6)]
    west_calls = [outcome(west.list_certificates) for _ in range(3)]

    assert east_calls[:3] == ["ok"] * 3
    assert "ThrottlingException" in east_calls[3:]
    assert west_calls == ["ok"] * 3


def test_counters_prove_a_certificate_was_transferred_exactly_once(aws, registered_cert):
    iot = aws.iot(SOURCE)
    first, second = registered_cert(iot), registered_cert(iot)
    aws.control.reset_counters()

    iot.transfer_certificate(certificateId=first, targetAwsAccount=TARGET)
    assert outcome(iot.transfer_certificate, certificateId=first, targetAwsAccount=TARGET) == (
        "CertificateStateException"
    )
    iot.transfer_certificate(certificateId=second, targetAwsAccount=TARGET)

    count = aws.control.call_count
    assert count("TransferCertificate", first, "ok") == 1
    assert count("TransferCertificate", first, "error") == 1
    assert count("TransferCertificate", first, "CertificateStateException") == 1
    assert count("TransferCertificate", second) == 1
    assert count("TransferCertificate") == 3
    assert count("TransferCertificate", outcome="ok") == 2


def test_reset_counters_forgets_every_call(aws):
    iot = aws.iot(SOURCE)
    iot.list_certificates()

    aws.control.reset_counters()

    assert aws.control.calls() == {
        "operations": {},
        "certificates": {},
        "faulted": {},
        "throttled": {},
    }


@pytest.mark.parametrize(
    "fault_settings",
    [
        {"throttle_rate": 1.5},
        {"throttle_rate": 0.6, "unavailable_rate": 0.6},
        {"rps_per_account": -1},
        {"rps_per_operation": 0},
        {"rps_per_operation": True},
    ],
)
def test_invalid_fault_settings_are_refused_and_leave_faults_unchanged(aws, fault_settings):
    aws.control.set_faults(throttle_rate=0.25, seed=1)

    with pytest.raises((ValueError, RuntimeError)):
        aws.control.set_faults(**fault_settings)

    assert aws.control.faults()["throttle_rate"] == 0.25


def test_concurrent_accepts_of_one_transfer_succeed_exactly_once(aws, new_cert):
    source = aws.iot(SOURCE)
    cert_id = new_cert(source)
    source.transfer_certificate(certificateId=cert_id, targetAwsAccount=TARGET)
    target = aws.iot(TARGET)  # boto3 clients may be shared between threads
    results: list[str] = []
    start = threading.Barrier(8)

    def accept():
        start.wait()
        results.append(outcome(target.accept_certificate_transfer, certificateId=cert_id))

    threads = [threading.Thread(target=accept) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sorted(results) == ["TransferAlreadyCompletedException"] * 7 + ["ok"]
    assert aws.control.call_count("AcceptCertificateTransfer", cert_id) == 8
    assert aws.control.call_count("AcceptCertificateTransfer", cert_id, "ok") == 1


# --------------------------------------------------------------------------- units


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_token_bucket_refills_at_the_configured_rate_per_account():
    clock = FakeClock()
    injector = FaultInjector(clock=clock)
    injector.configure(rps_per_account=2)

    burst = [injector.decide("ListCertificates", SOURCE) for _ in range(3)]
    clock.now += 0.5
    refilled = [injector.decide("ListCertificates", SOURCE) for _ in range(2)]

    assert burst == [None, None, "ThrottlingException"]
    assert refilled == [None, "ThrottlingException"]
    assert injector.decide("ListCertificates", TARGET) is None


def test_token_bucket_per_operation_refills_at_the_configured_rate():
    clock = FakeClock()
    injector = FaultInjector(clock=clock)
    injector.configure(rps_per_operation=2)

    describe = [injector.decide("DescribeCertificate", SOURCE) for _ in range(3)]
    other_api = [injector.decide("ListThingPrincipals", SOURCE) for _ in range(2)]
    clock.now += 0.5
    refilled = [injector.decide("DescribeCertificate", SOURCE) for _ in range(2)]

    assert describe == [None, None, "ThrottlingException"]
    assert other_api == [None, None]
    assert refilled == [None, "ThrottlingException"]


def test_token_buckets_are_kept_per_region():
    clock = FakeClock()
    injector = FaultInjector(clock=clock)
    injector.configure(rps_per_account=2, rps_per_operation=2)

    east = [injector.decide("DescribeCertificate", SOURCE, "us-east-1") for _ in range(3)]
    west = [injector.decide("DescribeCertificate", SOURCE, "eu-west-1") for _ in range(3)]

    assert east == [None, None, "ThrottlingException"]
    assert west == [None, None, "ThrottlingException"]


def test_a_call_refused_by_one_ceiling_uses_no_token_of_the_other():
    clock = FakeClock()
    injector = FaultInjector(clock=clock)
    injector.configure(rps_per_account=3, rps_per_operation=1)

    first = injector.decide("DescribeCertificate", SOURCE)
    refused = [injector.decide("DescribeCertificate", SOURCE) for _ in range(5)]
    # The account's bucket lost one token, not six: two more calls of other APIs pass.
    others = [injector.decide(op, SOURCE) for op in ("ListThings", "ListPolicies", "ListThings")]

    assert first is None
    assert refused == ["ThrottlingException"] * 5
    assert others == [None, None, "ThrottlingException"]


def test_fault_config_accepts_snake_case_operations_and_round_trips():
    config = FaultConfig.from_dict(
        {"throttle_rate": 0.2, "operations": ["transfer_certificate", "ListCertificates"]}
    )

    assert config.operations == frozenset({"TransferCertificate", "ListCertificates"})
    assert FaultConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ValueError, match="unknown"):
        FaultConfig.from_dict({"throttle": 1})


# ----------------------------------------------------------------- AWS's per-API allowances


def burst(injector, operation, n):
    return [injector.decide(operation, SOURCE) for _ in range(n)].count("ThrottlingException")


def test_aws_allowances_hold_each_api_at_its_own_rate():
    """rps_per_operation="aws": one second's worth of each API goes through, then throttling:
    10 for TransferCertificate, 15 for AttachPolicy, 100 for DetachThingPrincipal."""
    injector = FaultInjector(clock=FakeClock())
    injector.configure(rps_per_operation="aws")

    assert burst(injector, "TransferCertificate", 11) == 1
    assert burst(injector, "AttachPolicy", 16) == 1
    assert burst(injector, "DetachThingPrincipal", 101) == 1
    assert burst(injector, "CreateThing", 200) == 0  # no allowance known: no ceiling


def test_aws_allowances_follow_the_standin_s_service_quotas():
    from standin.quotas import QUOTAS

    QUOTAS.configure({"TransferCertificate": 2.0})
    try:
        injector = FaultInjector(clock=FakeClock())
        injector.configure(rps_per_operation="aws")
        assert burst(injector, "TransferCertificate", 4) == 2
    finally:
        QUOTAS.clear()
    with pytest.raises(ValueError, match="not adjustable"):
        QUOTAS.configure({"AttachPolicy": 30.0})


def test_aws_allowances_are_a_setting_over_http_too(aws):
    assert aws.control.set_faults(rps_per_operation="aws")["rps_per_operation"] == "aws"
    assert outcome(aws.iot(SOURCE).list_certificates) == "ok"
    with pytest.raises((ValueError, RuntimeError), match="positive number"):
        aws.control.set_faults(rps_per_operation="fast")


def test_the_standin_lists_aws_iot_s_adjustable_allowances(aws):
    quotas = aws.client("service-quotas").list_service_quotas(ServiceCode="iotcore")["Quotas"]
    values = {q["QuotaCode"]: q["Value"] for q in quotas}
    assert values == {"L-9A4156D0": 10.0, "L-136C6B71": 10.0, "L-14E3C32E": 10.0}


def test_the_standin_s_service_quotas_can_refuse_to_be_read(expect_error):
    """In process only: the values and the refusal are set by tests and benchmarks."""
    from moto import mock_aws

    import standin
    from standin import control
    from standin.control import client_for_account
    from standin.quotas import QUOTAS

    standin.install()
    with mock_aws():
        control.set_service_quotas({"TransferCertificate": 20.0})
        quotas = client_for_account(SOURCE, "us-east-1", None, "service-quotas")
        listed = quotas.list_service_quotas(ServiceCode="iotcore")["Quotas"]
        assert {q["QuotaCode"]: q["Value"] for q in listed}["L-9A4156D0"] == 20.0
        control.set_service_quotas(readable=False)
        with expect_error("AccessDeniedException"):
            quotas.list_service_quotas(ServiceCode="iotcore")
    with mock_aws():  # moto's reset clears them
        assert QUOTAS.readable and QUOTAS.applied == {}
