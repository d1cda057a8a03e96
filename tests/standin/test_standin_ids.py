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
