"""Every paged listing the portal reads follows AWS's own page token: each operation called
through aws.pages names its token as the botocore model does, so no listing stops at its
first page (ListJobExecutionsForJob once did: a wave of more than 250 devices waited for
ever on the 251st)."""

from __future__ import annotations

import re
from pathlib import Path

import boto3
from botocore.stub import Stubber

from transfers import aws

ROOT = Path(__file__).resolve().parent.parent
CALL = re.compile(r"aws\.pages\(\s*\w+,\s*\"(\w+)\"", re.S)


def paged_operations() -> set[str]:
    found = set()
    for path in (ROOT / "transfers").rglob("*.py"):
        found |= set(CALL.findall(path.read_text()))
    return found


def test_each_paged_operation_uses_the_token_names_of_the_botocore_model():
    model = boto3.client("iot", region_name="us-east-1").meta.service_model
    operations = paged_operations()
    assert {"list_job_executions_for_job", "list_certificates"} <= operations  # found them
    for method in sorted(operations):
        name = "".join(part.title() for part in method.split("_")).replace("V2", "V2")
        op = model.operation_model({o.lower(): o for o in model.operation_names}[name.lower()])
        marker_in, marker_out = aws._MARKERS.get(method, ("marker", "nextMarker"))
        assert marker_in in op.input_shape.members, (method, marker_in)
        assert marker_out in op.output_shape.members, (method, marker_out)


def test_the_job_executions_are_read_past_the_first_page():
    iot = boto3.client("iot", region_name="us-east-1")
    summary = {"status": "SUCCEEDED"}
    with Stubber(iot) as stub:
        stub.add_response(
            "list_job_executions_for_job",
            {
                "executionSummaries": [{"thingArn": "arn:t/a", "jobExecutionSummary": summary}],
                "nextToken": "page-2",
            },
            {"jobId": "j", "maxResults": 250},
        )
        stub.add_response(
            "list_job_executions_for_job",
            {"executionSummaries": [{"thingArn": "arn:t/b", "jobExecutionSummary": summary}]},
            {"jobId": "j", "maxResults": 250, "nextToken": "page-2"},
        )
        seen = list(
            aws.pages(
                iot, "list_job_executions_for_job", "executionSummaries", jobId="j", maxResults=250
            )
        )
        stub.assert_no_pending_responses()
    assert [s["thingArn"] for s in seen] == ["arn:t/a", "arn:t/b"]
