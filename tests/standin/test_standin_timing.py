"""The stand-in's real-AWS timing switches (standin.timing): in process, under mock_aws."""

from __future__ import annotations

import time
from types import SimpleNamespace

import pytest
from botocore.config import Config
from botocore.exceptions import ClientError
from moto import mock_aws

import standin
from standin import control
from standin.control import client_for_account
from standin.timing import TIMING

ONE_ATTEMPT = Config(retries={"mode": "standard", "total_max_attempts": 1})
SOURCE = "111111111111"
TARGET = "222222222222"


@pytest.fixture
def mock():
    """In process only: the switches are set by tests and benchmarks, not over HTTP."""
    standin.install()
    with mock_aws():
        control.reset_counters()
        yield SimpleNamespace(
            iot=lambda account: client_for_account(
                account, "us-east-1", None, "iot", config=ONE_ATTEMPT
            ),
            control=control,
        )
    TIMING.clear()


def test_a_lagging_listing_omits_recent_transfers_but_describe_tells_the_truth(
    mock, registered_cert
):
    iot = mock.iot(SOURCE)
    cert_id = registered_cert(iot)
    iot.transfer_certificate(certificateId=cert_id, targetAwsAccount=TARGET)
    TIMING.configure(outgoing_lag_seconds=60)
    assert iot.list_outgoing_certificates()["outgoingCertificates"] == []
    desc = iot.describe_certificate(certificateId=cert_id)["certificateDescription"]
    assert desc["status"] == "PENDING_TRANSFER"
    TIMING.configure(outgoing_lag_seconds=0)
    listed = iot.list_outgoing_certificates()["outgoingCertificates"]
    assert [c["certificateId"] for c in listed] == [cert_id]


def test_a_detached_thing_stays_attached_until_the_detachment_propagates(mock, registered_cert):
    iot = mock.iot(SOURCE)
    cert_id = registered_cert(iot)
    arn = iot.describe_certificate(certificateId=cert_id)["certificateDescription"][
        "certificateArn"
    ]
    iot.create_thing(thingName="sensor-1")
    iot.attach_thing_principal(thingName="sensor-1", principal=arn)
    TIMING.configure(detach_propagation_seconds=0.5)
    iot.detach_thing_principal(thingName="sensor-1", principal=arn)
    assert iot.list_principal_things(principal=arn)["things"] == ["sensor-1"]
    with pytest.raises(ClientError) as refused:
        iot.transfer_certificate(certificateId=cert_id, targetAwsAccount=TARGET)
    assert refused.value.response["Error"]["Code"] == "TransferConflictException"
    time.sleep(0.6)
    assert iot.list_principal_things(principal=arn)["things"] == []
    iot.transfer_certificate(certificateId=cert_id, targetAwsAccount=TARGET)


def test_the_thing_lists_the_certificate_until_the_detachment_propagates(mock, registered_cert):
    iot = mock.iot(SOURCE)
    cert_id = registered_cert(iot)
    arn = iot.describe_certificate(certificateId=cert_id)["certificateDescription"][
        "certificateArn"
    ]
    iot.create_thing(thingName="sensor-1")
    iot.attach_thing_principal(thingName="sensor-1", principal=arn)
    TIMING.configure(detach_propagation_seconds=0.5)
    iot.detach_thing_principal(thingName="sensor-1", principal=arn)
    assert iot.list_thing_principals(thingName="sensor-1")["principals"] == [arn]
    time.sleep(0.6)
    assert iot.list_thing_principals(thingName="sensor-1")["principals"] == []


def test_a_lost_answer_is_carried_out_and_answered_as_unavailable(mock, registered_cert):
    iot = mock.iot(SOURCE)
    cert_id = registered_cert(iot)
    TIMING.configure(lose_answers={"TransferCertificate": 1})
    with pytest.raises(ClientError) as lost:
        iot.transfer_certificate(certificateId=cert_id, targetAwsAccount=TARGET)
    assert lost.value.response["Error"]["Code"] == "ServiceUnavailableException"
    desc = iot.describe_certificate(certificateId=cert_id)["certificateDescription"]
    assert desc["status"] == "PENDING_TRANSFER"  # AWS did it
    assert mock.control.call_count("TransferCertificate", cert_id, "ok") == 1
    assert TIMING.lose_answers == {"TransferCertificate": 0}  # only the one


def test_bad_timing_values_are_refused():
    with pytest.raises(ValueError, match="outgoing_lag_seconds"):
        TIMING.configure(outgoing_lag_seconds=-1)
