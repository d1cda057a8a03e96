"""The schema generates a working client: openapi-python-client (pinned in pyproject.toml's
dev extras) writes a Python package from /api/schema/ at test time, and a pre-accepted batch
moves end to end through that package alone, with three API tokens (the requester's, a source
approver's and a target approver's): create, approve the landing, approve, watch the progress
to the end, read the downtime. No page is opened. Against the live server, a real Celery
worker, the stand-in server, PostgreSQL and Redis."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
import time
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from django.db import connections

from demo import certificate_pem
from standin.control import client_for_account
from tests.conftest import SOURCE, TARGET, api_token, make_account, make_user
from transfers import inventory
from transfers.models import Role

pytestmark = pytest.mark.django_db(transaction=True)

POLICY = '{"Version":"2012-10-17","Statement":[]}'
FLEET = 4


@pytest.fixture
def fleet(services_env, standin_url, start_worker):
    """Four ACTIVE certificates with a policy and a thing each; the policy exists in the
    target too. The requester, a source approver and carol (approver of the target)."""
    source = make_account(SOURCE, "Fleet production")
    target = make_account(TARGET, "Acme devices")
    iot = client_for_account(SOURCE, "us-east-1", standin_url)
    tiot = client_for_account(TARGET, "us-east-1", standin_url)
    for client in (iot, tiot):
        client.create_policy(policyName="Telemetry", policyDocument=POLICY)
    now = datetime.now(UTC)
    for i in range(FLEET):
        pem = certificate_pem(
            f"api-{i}-{now.timestamp()}", now - timedelta(days=1), now + timedelta(days=365)
        )
        made = iot.register_certificate_without_ca(certificatePem=pem, status="ACTIVE")
        iot.attach_policy(policyName="Telemetry", target=made["certificateArn"])
        iot.create_thing(thingName=f"api-sensor-{i}")
        iot.attach_thing_principal(thingName=f"api-sensor-{i}", principal=made["certificateArn"])
    inventory.sync_region(inventory.queue_sync(source, "us-east-1")[0].pk)
    worker = start_worker()
    return {
        "tiot": tiot,
        "worker": worker,
        "requester": api_token(make_user("alice", (source, Role.REQUESTER))),
        "approver": api_token(make_user("bob", (source, Role.APPROVER))),
        "target_approver": api_token(make_user("carol", (target, Role.APPROVER))),
    }


@pytest.fixture
def generated(live_server, fleet, tmp_path, monkeypatch):
    """The client package generated from the schema the live server serves."""
    # Each of the live server's request threads opens its own connection: closed when its
    # request ends (kept for a minute, they would hold the test database at teardown).
    monkeypatch.setitem(connections.databases["default"], "CONN_MAX_AGE", 0)
    request = urllib.request.Request(  # noqa: S310 (the live server, on loopback)
        f"{live_server.url}/api/schema/?format=json",
        headers={"Authorization": f"Token {fleet['requester']}"},
    )
    with urllib.request.urlopen(request, timeout=30) as answer:  # noqa: S310
        schema = json.load(answer)
    (tmp_path / "schema.json").write_text(json.dumps(schema))
    (tmp_path / "config.yaml").write_text("post_hooks: []\n")  # no formatter run needed
    generator = Path(sys.executable).with_name("openapi-python-client")
    made = subprocess.run(  # noqa: S603
        [
            str(generator),
            "generate",
            "--path",
            str(tmp_path / "schema.json"),
            "--meta",
            "none",
            "--output-path",
            str(tmp_path / "portal_client"),
            "--config",
            str(tmp_path / "config.yaml"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert made.returncode == 0, made.stdout + made.stderr
    # A schema the generator could not read whole still "succeeds", with pieces missing.
    assert "Warning" not in made.stdout + made.stderr, made.stdout + made.stderr
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.invalidate_caches()
    yield importlib.import_module("portal_client")
    for name in [m for m in sys.modules if m == "portal_client" or m.startswith("portal_client.")]:
        del sys.modules[name]


def test_a_pre_accepted_batch_moves_end_to_end_through_the_generated_client(
    generated, live_server, fleet
):
    from portal_client.api.batches import (
        batches_approve_create,
        batches_approve_landing_create,
        batches_create,
        batches_retrieve,
    )
    from portal_client.api.transfers import transfers_list
    from portal_client.models import BatchCreate, BatchDetail, CertificateFilter, Comment, Landing

    def as_(who: str):
        return generated.AuthenticatedClient(
            base_url=live_server.url, token=fleet[who], prefix="Token", timeout=30
        )

    created = batches_create.sync_detailed(
        client=as_("requester"),
        body=BatchCreate(
            target_account_id=TARGET,
            reason="Fleet sold to Acme",
            message="Welcome to Acme",
            filter_=CertificateFilter(q="api-sensor-"),
            landing=Landing(activate=True),
            tell_devices=False,  # the stand-in's devices are off here: they would never answer
        ),
    )
    assert created.status_code == 201, created.content
    batch = created.parsed
    assert isinstance(batch, BatchDetail)
    assert batch.progress.total == FLEET and batch.progress.requested == FLEET
    assert batch.landing.waiting_for_target_approval == FLEET

    landing = batches_approve_landing_create.sync_detailed(
        id=batch.id, client=as_("target_approver"), body=Comment(comment="Acme is ready")
    )
    assert landing.status_code == 200, landing.content
    assert landing.parsed.landing.target_approvers == ["carol"]

    approved = batches_approve_create.sync_detailed(
        id=batch.id, client=as_("approver"), body=Comment(comment="Sale signed")
    )
    assert approved.status_code == 200, approved.content

    # Watching the progress, as a pipeline would, until nothing moves any more.
    deadline = time.monotonic() + 120
    while True:
        seen = batches_retrieve.sync(id=batch.id, client=as_("requester"))
        assert isinstance(seen, BatchDetail), seen
        if not seen.progress.live and seen.landing.by_state.additional_properties == {
            "landed": FLEET
        }:
            break
        assert time.monotonic() < deadline, (
            f"the batch did not finish: {seen.to_dict()}\nworker log:\n{fleet['worker'].tail()}"
        )
        time.sleep(1)
    assert seen.counts.additional_properties == {"accepted": FLEET}
    assert seen.approvals.by == ["bob"] and seen.approvals.received == seen.approvals.required
    assert seen.downtime.count == FLEET
    assert seen.downtime.max_seconds >= seen.downtime.p95_seconds >= seen.downtime.p50_seconds
    assert seen.downtime.first_unusable_since <= seen.downtime.last_usable_at

    rows = transfers_list.sync(client=as_("requester")).results
    assert len(rows) == FLEET
    for row in rows:
        assert row.batch == batch.id and row.status.value == "accepted"
        assert row.landing_state.value == "landed" and row.target_approver == "carol"
        assert row.downtime_seconds is not None and row.downtime_seconds >= 0
        described = fleet["tiot"].describe_certificate(certificateId=row.certificate_id)
        assert described["certificateDescription"]["status"] == "ACTIVE"
        assert fleet["tiot"].list_attached_policies(target=row.transferred_arn)["policies"]
