import hashlib

from cryptography import x509
from cryptography.hazmat.primitives import serialization


def test_certificate_id_is_the_sha256_of_the_der_certificate(aws, make_pem):
    """As in AWS; moto's default hashes the PEM text instead."""
    iot = aws.iot("111111111111")
    pem = make_pem()
    made = iot.register_certificate_without_ca(certificatePem=pem, status="INACTIVE")
    der = x509.load_pem_x509_certificate(pem.encode()).public_bytes(serialization.Encoding.DER)
    assert made["certificateId"] == hashlib.sha256(der).hexdigest()


def test_each_request_is_routed_once_and_answered_as_its_own_operation(make_pem):
    """The stand-in keeps a request's operation on moto's per-request object (moto worked it
    out five times, routing the URL each time): one routing per request, and two requests
    of different operations on the same class still get their own answers."""
    from unittest import mock

    import boto3
    from moto import mock_aws
    from moto.core.responses import BaseResponse

    import standin

    standin.install()
    routed = mock.patch.object(
        BaseResponse,
        "_get_action_from_method_and_request_uri",
        autospec=True,
        side_effect=BaseResponse._get_action_from_method_and_request_uri,
    )
    with mock_aws():
        iot = boto3.client("iot", region_name="us-east-1")
        made = iot.register_certificate_without_ca(certificatePem=make_pem(), status="ACTIVE")
        iot.create_policy(policyName="p", policyDocument='{"Version":"2012-10-17"}')
        iot.attach_policy(policyName="p", target=made["certificateArn"])
        with routed as route:
            described = iot.describe_certificate(certificateId=made["certificateId"])
            assert route.call_count == 1
            policies = iot.list_attached_policies(target=made["certificateArn"])
            assert route.call_count == 2
    assert described["certificateDescription"]["certificateId"] == made["certificateId"]
    assert [p["policyName"] for p in policies["policies"]] == ["p"]
