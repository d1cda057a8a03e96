"""Certificate transfers between accounts, through boto3, in both stand-in modes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

REGION = "us-east-1"
SOURCE = "111111111111"
TARGET = "222222222222"
OTHER = "333333333333"


def describe(iot, cert_id):
    return iot.describe_certificate(certificateId=cert_id)["certificateDescription"]


def listed_ids(iot):
    return [c["certificateId"] for c in iot.list_certificates(pageSize=250)["certificates"]]


def start_transfer(aws, make_cert, message="for you"):
    """A certificate of SOURCE pending transfer to TARGET; ``make_cert`` is a cert fixture."""
    source = aws.iot(SOURCE)
    cert_id = make_cert(source)
    source.transfer_certificate(
        certificateId=cert_id, targetAwsAccount=TARGET, transferMessage=message
    )
    return cert_id


# --------------------------------------------------------------------------- transfer


def test_transfer_returns_target_arn_and_marks_certificate_pending(aws, new_cert):
    source = aws.iot(SOURCE)
    cert_id = new_cert(source)
    before = describe(source, cert_id)

    response = source.transfer_certificate(
        certificateId=cert_id, targetAwsAccount=TARGET, transferMessage="hello"
    )

    assert response["transferredCertificateArn"] == f"arn:aws:iot:{REGION}:{TARGET}:cert/{cert_id}"
    after = describe(source, cert_id)
    assert after["status"] == "PENDING_TRANSFER"
    assert after["ownedBy"] == SOURCE
    assert after["transferData"]["transferMessage"] == "hello"
    assert after["transferData"]["transferDate"] >= before["creationDate"]
    assert set(after["transferData"]) == {"transferMessage", "transferDate"}
    assert "previousOwnedBy" not in after


def test_source_lists_pending_transfer_as_outgoing(aws, registered_cert):
    cert_id = start_transfer(aws, registered_cert, message="outgoing")
    source = aws.iot(SOURCE)

    outgoing = source.list_outgoing_certificates()["outgoingCertificates"]

    assert len(outgoing) == 1
    entry = outgoing[0]
    assert entry["certificateId"] == cert_id
    assert entry["certificateArn"] == f"arn:aws:iot:{REGION}:{SOURCE}:cert/{cert_id}"
    assert entry["transferredTo"] == TARGET
    assert entry["transferMessage"] == "outgoing"
    assert entry["transferDate"] >= entry["creationDate"]
    assert aws.iot(TARGET).list_outgoing_certificates()["outgoingCertificates"] == []


def test_target_sees_pending_certificate_in_describe_and_list(aws, registered_cert):
    cert_id = start_transfer(aws, registered_cert)
    target = aws.iot(TARGET)

    seen = describe(target, cert_id)

    assert seen["status"] == "PENDING_TRANSFER"
    assert seen["ownedBy"] == SOURCE
    assert seen["transferData"]["transferMessage"] == "for you"
    listed = {c["certificateId"]: c for c in target.list_certificates()["certificates"]}
    assert listed[cert_id]["status"] == "PENDING_TRANSFER"
    assert cert_id in listed_ids(aws.iot(SOURCE))


def test_pending_transfer_is_invisible_to_other_accounts_and_regions(
    aws, registered_cert, expect_error
):
    cert_id = start_transfer(aws, registered_cert)

    with expect_error("ResourceNotFoundException", 404):
        describe(aws.iot(TARGET, "eu-west-1"), cert_id)
    with expect_error("ResourceNotFoundException", 404):
        describe(aws.iot(OTHER), cert_id)
    assert cert_id not in listed_ids(aws.iot(OTHER))
    with expect_error("ResourceNotFoundException", 404):
        aws.iot(OTHER).accept_certificate_transfer(certificateId=cert_id)


# --------------------------------------------------------------------------- accept


@pytest.mark.parametrize(("set_as_active", "status"), [(False, "INACTIVE"), (True, "ACTIVE")])
def test_accept_moves_certificate_to_target(aws, new_cert, set_as_active, status):
    cert_id = start_transfer(aws, new_cert)
    target = aws.iot(TARGET)
    pem = describe(target, cert_id)["certificatePem"]

    target.accept_certificate_transfer(certificateId=cert_id, setAsActive=set_as_active)

    accepted = describe(target, cert_id)
    assert accepted["status"] == status
    assert accepted["certificateArn"] == f"arn:aws:iot:{REGION}:{TARGET}:cert/{cert_id}"
    assert accepted["ownedBy"] == TARGET
    assert accepted["previousOwnedBy"] == SOURCE
    assert accepted["certificatePem"] == pem
    data = accepted["transferData"]
    assert set(data) == {"transferMessage", "transferDate", "acceptDate"}
    assert data["acceptDate"] >= data["transferDate"]
    assert cert_id in listed_ids(target)


def test_source_loses_certificate_after_accept(aws, registered_cert, expect_error):
    cert_id = start_transfer(aws, registered_cert)
    aws.iot(TARGET).accept_certificate_transfer(certificateId=cert_id)
    source = aws.iot(SOURCE)

    with expect_error("ResourceNotFoundException", 404):
        describe(source, cert_id)
    assert cert_id not in listed_ids(source)
    assert source.list_outgoing_certificates()["outgoingCertificates"] == []


def test_accepted_certificate_can_be_attached_and_transferred_back(aws, registered_cert):
    cert_id = start_transfer(aws, registered_cert)
    target = aws.iot(TARGET)
    target.accept_certificate_transfer(certificateId=cert_id, setAsActive=True)
    arn = describe(target, cert_id)["certificateArn"]
    target.create_policy(policyName="p", policyDocument='{"Version": "2012-10-17"}')
    target.attach_policy(policyName="p", target=arn)
    assert [p["policyName"] for p in target.list_attached_policies(target=arn)["policies"]] == ["p"]
    target.detach_policy(policyName="p", target=arn)
    target.update_certificate(certificateId=cert_id, newStatus="INACTIVE")

    target.transfer_certificate(certificateId=cert_id, targetAwsAccount=SOURCE)
    aws.iot(SOURCE).accept_certificate_transfer(certificateId=cert_id)

    back = describe(aws.iot(SOURCE), cert_id)
    assert back["ownedBy"] == SOURCE
    assert back["previousOwnedBy"] == TARGET
    assert "transferMessage" not in back["transferData"]


# --------------------------------------------------------------------------- reject / cancel


def test_reject_returns_certificate_to_source_with_reason(aws, new_cert, expect_error):
    cert_id = start_transfer(aws, new_cert)
    target = aws.iot(TARGET)

    target.reject_certificate_transfer(certificateId=cert_id, rejectReason="not ours")

    returned = describe(aws.iot(SOURCE), cert_id)
    assert returned["status"] == "INACTIVE"
    assert returned["ownedBy"] == SOURCE
    assert "previousOwnedBy" not in returned
    data = returned["transferData"]
    assert data["rejectReason"] == "not ours"
    assert data["rejectDate"] >= data["transferDate"]
    assert aws.iot(SOURCE).list_outgoing_certificates()["outgoingCertificates"] == []
    with expect_error("ResourceNotFoundException", 404):
        describe(target, cert_id)


def test_reject_refuses_reason_over_128_characters(aws, registered_cert, expect_error):
    cert_id = start_transfer(aws, registered_cert)

    with expect_error("InvalidRequestException", 400):
        aws.iot(TARGET).reject_certificate_transfer(certificateId=cert_id, rejectReason="x" * 129)

    assert describe(aws.iot(SOURCE), cert_id)["status"] == "PENDING_TRANSFER"
    aws.iot(TARGET).reject_certificate_transfer(certificateId=cert_id, rejectReason="y" * 128)
    assert describe(aws.iot(SOURCE), cert_id)["transferData"]["rejectReason"] == "y" * 128


def test_cancel_returns_certificate_to_source_as_inactive(aws, new_cert, expect_error):
    cert_id = start_transfer(aws, new_cert)
    source = aws.iot(SOURCE)

    source.cancel_certificate_transfer(certificateId=cert_id)

    cancelled = describe(source, cert_id)
    assert cancelled["status"] == "INACTIVE"
    assert cancelled["ownedBy"] == SOURCE
    assert "acceptDate" not in cancelled["transferData"]
    assert source.list_outgoing_certificates()["outgoingCertificates"] == []
    with expect_error("ResourceNotFoundException", 404):
        describe(aws.iot(TARGET), cert_id)


def test_cancel_is_impossible_after_accept(aws, registered_cert, expect_error):
    cert_id = start_transfer(aws, registered_cert)
    aws.iot(TARGET).accept_certificate_transfer(certificateId=cert_id)

    with expect_error("TransferAlreadyCompletedException", 410):
        aws.iot(SOURCE).cancel_certificate_transfer(certificateId=cert_id)

    assert describe(aws.iot(TARGET), cert_id)["ownedBy"] == TARGET


@pytest.mark.parametrize("ending", ["accept", "reject", "cancel"])
def test_ended_transfer_cannot_be_accepted_rejected_or_cancelled(
    aws, registered_cert, expect_error, ending
):
    cert_id = start_transfer(aws, registered_cert)
    source, target = aws.iot(SOURCE), aws.iot(TARGET)
    if ending == "accept":
        target.accept_certificate_transfer(certificateId=cert_id)
    elif ending == "reject":
        target.reject_certificate_transfer(certificateId=cert_id)
    else:
        source.cancel_certificate_transfer(certificateId=cert_id)
    owner = target if ending == "accept" else source
    state = describe(owner, cert_id)

    with expect_error("TransferAlreadyCompletedException", 410):
        target.accept_certificate_transfer(certificateId=cert_id)
    with expect_error("TransferAlreadyCompletedException", 410):
        target.reject_certificate_transfer(certificateId=cert_id)
    with expect_error("TransferAlreadyCompletedException", 410):
        source.cancel_certificate_transfer(certificateId=cert_id)

    assert describe(owner, cert_id) == state


def test_certificate_never_transferred_reports_transfer_already_completed(
    aws, registered_cert, expect_error
):
    source = aws.iot(SOURCE)
    cert_id = registered_cert(source)

    for call in (
        source.accept_certificate_transfer,
        source.reject_certificate_transfer,
        source.cancel_certificate_transfer,
    ):
        with expect_error("TransferAlreadyCompletedException", 410):
            call(certificateId=cert_id)
    assert describe(source, cert_id)["status"] == "INACTIVE"


def test_only_target_may_accept_or_reject_and_only_source_may_cancel(
    aws, registered_cert, expect_error
):
    cert_id = start_transfer(aws, registered_cert)
    source, target = aws.iot(SOURCE), aws.iot(TARGET)

    with expect_error("ResourceNotFoundException", 404):
        source.accept_certificate_transfer(certificateId=cert_id)
    with expect_error("ResourceNotFoundException", 404):
        source.reject_certificate_transfer(certificateId=cert_id)
    with expect_error("ResourceNotFoundException", 404):
        target.cancel_certificate_transfer(certificateId=cert_id)
    with expect_error("ResourceNotFoundException", 404):
        aws.iot(OTHER).reject_certificate_transfer(certificateId=cert_id)

    assert describe(source, cert_id)["status"] == "PENDING_TRANSFER"


def test_transfer_after_rejection_starts_fresh(aws, registered_cert):
    cert_id = start_transfer(aws, registered_cert, message="first")
    aws.iot(TARGET).reject_certificate_transfer(certificateId=cert_id, rejectReason="no")

    aws.iot(SOURCE).transfer_certificate(
        certificateId=cert_id, targetAwsAccount=OTHER, transferMessage="second"
    )
    aws.iot(OTHER).accept_certificate_transfer(certificateId=cert_id)

    data = describe(aws.iot(OTHER), cert_id)["transferData"]
    assert data["transferMessage"] == "second"
    assert "rejectReason" not in data
    assert "rejectDate" not in data


# --------------------------------------------------------------------------- refusals


def test_transfer_refuses_unknown_certificate(aws, expect_error):
    with expect_error("ResourceNotFoundException", 404):
        aws.iot(SOURCE).transfer_certificate(certificateId="a" * 64, targetAwsAccount=TARGET)


def test_transfer_refuses_active_certificate(aws, new_cert, expect_error):
    source = aws.iot(SOURCE)
    cert_id = new_cert(source, active=True)

    with expect_error("CertificateStateException", 406):
        source.transfer_certificate(certificateId=cert_id, targetAwsAccount=TARGET)

    assert describe(source, cert_id)["status"] == "ACTIVE"
    assert source.list_outgoing_certificates()["outgoingCertificates"] == []


def test_transfer_refuses_certificate_already_pending(aws, registered_cert, expect_error):
    cert_id = start_transfer(aws, registered_cert)

    with expect_error("CertificateStateException", 406):
        aws.iot(SOURCE).transfer_certificate(certificateId=cert_id, targetAwsAccount=OTHER)

    outgoing = aws.iot(SOURCE).list_outgoing_certificates()["outgoingCertificates"]
    assert [o["transferredTo"] for o in outgoing] == [TARGET]


def test_transfer_refuses_certificate_with_attached_policy(aws, registered_cert, expect_error):
    source = aws.iot(SOURCE)
    cert_id = registered_cert(source)
    arn = describe(source, cert_id)["certificateArn"]
    source.create_policy(policyName="device", policyDocument='{"Version": "2012-10-17"}')
    source.attach_policy(policyName="device", target=arn)

    with expect_error("TransferConflictException", 409):
        source.transfer_certificate(certificateId=cert_id, targetAwsAccount=TARGET)

    assert describe(source, cert_id)["status"] == "INACTIVE"
    source.detach_policy(policyName="device", target=arn)
    source.transfer_certificate(certificateId=cert_id, targetAwsAccount=TARGET)
    assert describe(source, cert_id)["status"] == "PENDING_TRANSFER"


def test_transfer_refuses_certificate_with_attached_thing(aws, registered_cert, expect_error):
    source = aws.iot(SOURCE)
    cert_id = registered_cert(source)
    arn = describe(source, cert_id)["certificateArn"]
    source.create_thing(thingName="sensor-1")
    source.attach_thing_principal(thingName="sensor-1", principal=arn)

    with expect_error("TransferConflictException", 409):
        source.transfer_certificate(certificateId=cert_id, targetAwsAccount=TARGET)

    assert describe(source, cert_id)["status"] == "INACTIVE"


@pytest.mark.parametrize("target", ["1234567890123", "12345678901a", SOURCE])
def test_transfer_refuses_invalid_or_own_target_account(aws, registered_cert, expect_error, target):
    source = aws.iot(SOURCE)
    cert_id = registered_cert(source)

    with expect_error("InvalidRequestException", 400):
        source.transfer_certificate(certificateId=cert_id, targetAwsAccount=target)

    assert describe(source, cert_id)["status"] == "INACTIVE"


def test_transfer_refuses_message_over_128_characters(aws, registered_cert, expect_error):
    source = aws.iot(SOURCE)
    cert_id = registered_cert(source)

    with expect_error("InvalidRequestException", 400):
        source.transfer_certificate(
            certificateId=cert_id, targetAwsAccount=TARGET, transferMessage="m" * 129
        )

    assert describe(source, cert_id)["status"] == "INACTIVE"
    source.transfer_certificate(
        certificateId=cert_id, targetAwsAccount=TARGET, transferMessage="m" * 128
    )
    assert describe(source, cert_id)["transferData"]["transferMessage"] == "m" * 128


# ------------------------------------------------------------- describe / update / delete


def test_describe_omits_transfer_fields_of_certificate_never_transferred(aws, new_cert):
    source = aws.iot(SOURCE)
    cert_id = new_cert(source, active=True)

    description = describe(source, cert_id)

    assert description["ownedBy"] == SOURCE
    assert description["status"] == "ACTIVE"
    assert "transferData" not in description
    assert "previousOwnedBy" not in description


def test_describe_reads_validity_from_the_certificate_pem(aws, make_pem, registered_cert):
    not_before = datetime(2021, 3, 4, 5, 6, 7, tzinfo=UTC)
    not_after = datetime(2031, 8, 9, 10, 11, 12, tzinfo=UTC)
    source = aws.iot(SOURCE)
    cert_id = registered_cert(source, make_pem(not_before, not_after))

    validity = describe(source, cert_id)["validity"]

    assert validity["notBefore"] == not_before
    assert validity["notAfter"] == not_after
    source.transfer_certificate(certificateId=cert_id, targetAwsAccount=TARGET)
    aws.iot(TARGET).accept_certificate_transfer(certificateId=cert_id)
    assert describe(aws.iot(TARGET), cert_id)["validity"] == validity


def test_describe_reads_validity_of_created_certificates(aws, new_cert):
    source = aws.iot(SOURCE)
    cert_id = new_cert(source)

    validity = describe(source, cert_id)["validity"]

    # moto signs CreateKeysAndCertificate certificates for a year; unpatched moto answers
    # now +- 1 day whatever the PEM says.
    lifetime = validity["notAfter"] - validity["notBefore"]
    assert timedelta(days=365) <= lifetime <= timedelta(days=365, seconds=1)


@pytest.mark.parametrize("status", ["PENDING_TRANSFER", "PENDING_ACTIVATION", "BOGUS"])
def test_update_certificate_refuses_internal_and_unknown_statuses(
    aws, registered_cert, expect_error, status
):
    source = aws.iot(SOURCE)
    cert_id = registered_cert(source)

    with expect_error("InvalidRequestException", 400):
        source.update_certificate(certificateId=cert_id, newStatus=status)

    assert describe(source, cert_id)["status"] == "INACTIVE"


@pytest.mark.parametrize("status", ["ACTIVE", "REVOKED", "INACTIVE"])
def test_update_certificate_accepts_valid_statuses(aws, registered_cert, status):
    source = aws.iot(SOURCE)
    cert_id = registered_cert(source, active=status != "ACTIVE")

    source.update_certificate(certificateId=cert_id, newStatus=status)

    assert describe(source, cert_id)["status"] == status


@pytest.mark.parametrize("account", [SOURCE, TARGET])
def test_update_certificate_refuses_certificate_pending_transfer(
    aws, registered_cert, expect_error, account
):
    cert_id = start_transfer(aws, registered_cert)

    with expect_error("CertificateStateException", 406):
        aws.iot(account).update_certificate(certificateId=cert_id, newStatus="ACTIVE")

    assert describe(aws.iot(SOURCE), cert_id)["status"] == "PENDING_TRANSFER"


@pytest.mark.parametrize("account", [SOURCE, TARGET])
def test_delete_certificate_refuses_certificate_pending_transfer(
    aws, registered_cert, expect_error, account
):
    cert_id = start_transfer(aws, registered_cert)

    with expect_error("CertificateStateException", 406):
        aws.iot(account).delete_certificate(certificateId=cert_id)

    assert describe(aws.iot(SOURCE), cert_id)["status"] == "PENDING_TRANSFER"


def test_force_delete_leaves_no_dangling_policy_attachment(aws, registered_cert, expect_error):
    source = aws.iot(SOURCE)
    doomed, other = registered_cert(source), registered_cert(source)
    source.create_policy(policyName="p", policyDocument='{"Version": "2012-10-17"}')
    source.attach_policy(policyName="p", target=describe(source, doomed)["certificateArn"])
    with expect_error("DeleteConflictException", 409):
        source.delete_certificate(certificateId=doomed)

    source.delete_certificate(certificateId=doomed, forceDelete=True)

    assert source.list_targets_for_policy(policyName="p")["targets"] == []
    source.delete_certificate(certificateId=other)
    assert listed_ids(source) == []
