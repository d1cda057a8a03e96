"""schemathesis against the API's own OpenAPI schema: generated requests, valid and not, sent
in process through the WSGI application with a token, must never get a 5xx and every
answer must match the schema (status code, content type, body, headers).

The schema is the one /api/schema/ serves (drf-spectacular, as `manage.py spectacular`
writes it). Calls that reach AWS go to the in-process stand-in.
"""

import pytest
import schemathesis
from django.core.handlers.wsgi import WSGIHandler
from drf_spectacular.generators import SchemaGenerator
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.specs.openapi.checks import positive_data_acceptance

from tests.conftest import TARGET, add_certificate, api_token, iot_for, make_user
from transfers import inventory
from transfers.models import Certificate, Notice, Role, Transfer, TransferBatch

# Rules across fields or rows that the schema does not state, so a request valid field by
# field may be refused with a 400 and a message: "until" before "since"; a batch names its
# certificates or a filter (exactly one: a oneOf of required fields would state it, but
# generated clients then lose the request's model), and it is refused when none of them can
# be requested (each one's reason is in the message).
# The same goes for a batch's check, the audit log's dates, and a time zone (any IANA name,
# not stated as an enum of some 600 names in the schema).
EXCLUDED = {
    "GET /api/transfers/": [positive_data_acceptance],
    "GET /api/batches/": [positive_data_acceptance],
    "POST /api/batches/": [positive_data_acceptance],
    "POST /api/batches/preflight/": [positive_data_acceptance],
    "GET /api/audit/": [positive_data_acceptance],
    "PATCH /api/me/": [positive_data_acceptance],
}
EXAMPLES = 5  # per operation, valid and invalid requests (46 operations): about 6 s in all


@pytest.fixture
def api_world(standin, source, target):
    """A user with every role on the source account, a few certificates and transfers, so
    generated small ids find real objects as well as missing ones."""
    iot = iot_for(source)
    for n in range(3):
        add_certificate(iot, "ACTIVE", ["DevicePublish"], thing=f"fuzz-{n}")
    inventory.sync_region(inventory.queue_sync(source, "us-east-1")[0].pk)
    user = make_user(
        "fuzzer", (source, Role.REQUESTER), (source, Role.APPROVER), (target, Role.ADMIN)
    )
    other = make_user("other-requester", (source, Role.REQUESTER))
    # One batch of them, so generated ids find a batch too; the first plans a landing, the
    # second's landing stopped and its restore needs attention (the retry operations' states).
    batch = TransferBatch.objects.create(
        source=source, target_account_id=TARGET, requester=other, reason="Sale"
    )
    landing = {"activate": True, "managed": True, "policies": [], "things": []}
    for cert, status, extra in zip(
        Certificate.objects.order_by("pk"),
        [Transfer.Status.REQUESTED, Transfer.Status.PENDING_ACCEPTANCE, Transfer.Status.FAILED],
        [
            {"landing": landing, "landing_state": Transfer.Landing.PLANNED},
            {
                "landing": landing,
                "landing_state": Transfer.Landing.ATTENTION,
                "restore_state": Transfer.Restore.ATTENTION,
            },
            {},
        ],
        strict=True,
    ):
        transfer = Transfer.objects.create(
            batch=batch,
            **extra,
            source=source,
            region=cert.region,
            cert=cert,
            certificate_id=cert.certificate_id,
            certificate_arn=cert.arn,
            target=target,
            target_account_id=TARGET,
            requester=other,
            reason="Sale",
            status=status,
        )
        # A notice of each, so generated ids find one to send again.
        Notice.objects.create(
            transfer=transfer,
            channel=Notice.Channel.EMAIL,
            recipient="ops@acme.example",
            kind=Notice.Kind.NEW,
            status=Notice.Status.FAILED,
        )
    return api_token(user)


def load_schema():
    schema = schemathesis.openapi.from_dict(SchemaGenerator().get_schema(request=None, public=True))
    schema.app = WSGIHandler()  # in process, through every middleware
    return schema


# pytest-django has set Django up by collection time: one test per operation.
OPERATIONS = {op.label: op for op in (r.ok() for r in load_schema().get_all_operations())}


@pytest.mark.parametrize("label", sorted(OPERATIONS))
def test_the_api_answers_every_request_as_its_schema_says(label, api_world):
    operation = OPERATIONS[label]
    cases = st.one_of(
        operation.as_strategy(GenerationMode.POSITIVE),
        operation.as_strategy(GenerationMode.NEGATIVE),
    )

    @given(cases)
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        derandomize=True,  # the same requests on every run: a failure reproduces
        suppress_health_check=list(HealthCheck),
        database=None,
    )
    def check(case):
        case.call_and_validate(
            headers={"Authorization": f"Token {api_world}"},
            excluded_checks=EXCLUDED.get(label, []),
        )

    check()
