"""Documented page sizes and stable markers for the list operations the portal pages through."""

from __future__ import annotations

import math

import pytest

SOURCE = "111111111111"
TARGET = "222222222222"
POLICY_DOCUMENT = '{"Version": "2012-10-17", "Statement": []}'


def cert_arn(iot, cert_id):
    return iot.describe_certificate(certificateId=cert_id)["certificateDescription"][
        "certificateArn"
    ]


def walk(iot, operation, page_size, **kwargs):
    """All pages of ``operation`` through boto3's own paginator (markers / tokens)."""
    paginator = iot.get_paginator(operation)
    return list(paginator.paginate(PaginationConfig={"PageSize": page_size}, **kwargs))


def test_list_certificates_answers_pages_of_25_by_default(aws, registered_cert):
    iot = aws.iot(SOURCE)
    created = {registered_cert(iot) for _ in range(30)}

    first = iot.list_certificates()
    second = iot.list_certificates(marker=first["nextMarker"])

    assert len(first["certificates"]) == 25
    assert len(second["certificates"]) == 5
    assert "nextMarker" not in second
    ids = [c["certificateId"] for c in first["certificates"] + second["certificates"]]
    assert sorted(ids) == sorted(created)


def test_list_certificates_orders_by_creation_date_newest_first_unless_ascending(
    aws, registered_cert
):
    iot = aws.iot(SOURCE)
    created = [registered_cert(iot) for _ in range(5)]

    descending = [p["certificates"] for p in walk(iot, "list_certificates", 2)]
    ascending = [p["certificates"] for p in walk(iot, "list_certificates", 2, ascendingOrder=True)]

    assert [len(page) for page in descending] == [2, 2, 1]
    assert [c["certificateId"] for page in descending for c in page] == created[::-1]
    assert [c["certificateId"] for page in ascending for c in page] == created


def test_list_certificates_paging_neither_skips_nor_repeats_while_certificates_change(
    aws, registered_cert
):
    iot = aws.iot(SOURCE)
    created = [registered_cert(iot) for _ in range(6)]
    first = iot.list_certificates(pageSize=2, ascendingOrder=True)
    seen = [c["certificateId"] for c in first["certificates"]]

    iot.delete_certificate(certificateId=seen[0])  # shifts every later offset by one
    registered_cert(iot)  # newer than everything: lands after the last page
    rest = iot.list_certificates(pageSize=2, ascendingOrder=True, marker=first["nextMarker"])
    seen += [c["certificateId"] for c in rest["certificates"]]
    while "nextMarker" in rest:
        rest = iot.list_certificates(pageSize=2, ascendingOrder=True, marker=rest["nextMarker"])
        seen += [c["certificateId"] for c in rest["certificates"]]

    assert len(seen) == len(set(seen))
    assert seen[:6] == created


def test_list_certificates_refuses_a_marker_it_did_not_issue(aws, expect_error):
    with expect_error("InvalidRequestException", 400):
        aws.iot(SOURCE).list_certificates(marker="bm90LWEtbWFya2Vy")


@pytest.mark.parametrize(
    ("operation", "kwargs", "limit"),
    [
        ("list_certificates", {}, "pageSize"),
        ("list_outgoing_certificates", {}, "pageSize"),
        ("list_policies", {}, "pageSize"),
        ("list_targets_for_policy", {"policyName": "p"}, "pageSize"),
        ("list_attached_policies", {"target": "ARN"}, "pageSize"),
        ("list_principal_things", {"principal": "ARN"}, "maxResults"),
        ("list_things", {}, "maxResults"),
    ],
)
def test_list_operations_refuse_page_size_above_250(
    aws, registered_cert, expect_error, operation, kwargs, limit
):
    iot = aws.iot(SOURCE)
    iot.create_policy(policyName="p", policyDocument=POLICY_DOCUMENT)
    arn = cert_arn(iot, registered_cert(iot))
    kwargs = {k: arn if v == "ARN" else v for k, v in kwargs.items()}

    with expect_error("InvalidRequestException", 400):
        getattr(iot, operation)(**kwargs, **{limit: 251})

    assert (
        getattr(iot, operation)(**kwargs, **{limit: 250})["ResponseMetadata"]["HTTPStatusCode"]
        == 200
    )


def test_list_outgoing_certificates_pages_through_pending_transfers(aws, registered_cert):
    iot = aws.iot(SOURCE)
    pending = set()
    for _ in range(5):
        cert_id = registered_cert(iot)
        iot.transfer_certificate(certificateId=cert_id, targetAwsAccount=TARGET)
        pending.add(cert_id)
    registered_cert(iot)  # not transferred: not outgoing

    pages = walk(iot, "list_outgoing_certificates", 2)

    assert [len(p["outgoingCertificates"]) for p in pages] == [2, 2, 1]
    assert {c["certificateId"] for p in pages for c in p["outgoingCertificates"]} == pending


def test_list_policies_pages_by_name(aws):
    iot = aws.iot(SOURCE)
    names = [f"policy-{i:02d}" for i in range(7)]
    for name in reversed(names):
        iot.create_policy(policyName=name, policyDocument=POLICY_DOCUMENT)

    pages = walk(iot, "list_policies", 3)

    assert [len(p["policies"]) for p in pages] == [3, 3, 1]
    assert [p["policyName"] for page in pages for p in page["policies"]] == names


def test_list_targets_for_policy_pages(aws, registered_cert):
    iot = aws.iot(SOURCE)
    iot.create_policy(policyName="shared", policyDocument=POLICY_DOCUMENT)
    arns = [cert_arn(iot, registered_cert(iot)) for _ in range(5)]
    for arn in arns:
        iot.attach_policy(policyName="shared", target=arn)

    pages = walk(iot, "list_targets_for_policy", 2, policyName="shared")

    assert len(pages) == math.ceil(len(arns) / 2)
    assert sorted(t for p in pages for t in p["targets"]) == sorted(arns)


def test_list_attached_policies_pages(aws, registered_cert):
    iot = aws.iot(SOURCE)
    arn = cert_arn(iot, registered_cert(iot))
    names = [f"policy-{i}" for i in range(5)]
    for name in names:
        iot.create_policy(policyName=name, policyDocument=POLICY_DOCUMENT)
        iot.attach_policy(policyName=name, target=arn)

    pages = walk(iot, "list_attached_policies", 2, target=arn)

    assert [len(p["policies"]) for p in pages] == [2, 2, 1]
    assert [p["policyName"] for page in pages for p in page["policies"]] == names


def test_list_principal_things_pages(aws, registered_cert):
    iot = aws.iot(SOURCE)
    arn = cert_arn(iot, registered_cert(iot))
    names = [f"thing-{i}" for i in range(5)]
    for name in names:
        iot.create_thing(thingName=name)
        iot.attach_thing_principal(thingName=name, principal=arn)

    pages = walk(iot, "list_principal_things", 2, principal=arn)

    assert [len(p["things"]) for p in pages] == [2, 2, 1]
    assert [t for p in pages for t in p["things"]] == names


def test_list_things_answers_pages_of_25_by_default_and_honours_max_results(aws):
    iot = aws.iot(SOURCE)
    names = sorted(f"thing-{i:02d}" for i in range(27))
    for name in names:
        iot.create_thing(thingName=name)

    first = iot.list_things()
    pages = walk(iot, "list_things", 10)

    assert len(first["things"]) == 25
    assert "nextToken" in first
    assert [len(p["things"]) for p in pages] == [10, 10, 7]
    assert [t["thingName"] for p in pages for t in p["things"]] == names
