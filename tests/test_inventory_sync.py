"""Inventory sync against the stand-in: what lands in the database and what it costs."""

import pytest

from tests.conftest import add_certificate, iot_for
from transfers import inventory
from transfers.models import Certificate, CertificatePolicy, CertificateThing, SyncRun


def sync(account, region="us-east-1") -> SyncRun:
    run, _ = inventory.queue_sync(account, region)
    return inventory.sync_region(run.pk)


@pytest.fixture
def fleet(standin, source):
    iot = iot_for(source)
    made = [
        add_certificate(iot, "ACTIVE", ["DevicePublish", "Telemetry"], thing="sensor-1"),
        add_certificate(iot, "INACTIVE", ["DevicePublish"]),
        add_certificate(iot, "ACTIVE", thing="sensor-3"),
    ]
    return iot, made


def test_sync_stores_certificates_with_their_policies_and_things(fleet, source):
    _, made = fleet
    run = sync(source)
    assert run.status == SyncRun.Status.DONE, run.error
    assert run.certificates == 3
    first = Certificate.objects.get(certificate_id=made[0]["certificateId"])
    assert first.arn == made[0]["certificateArn"]
    assert first.status == "ACTIVE"
    assert sorted(p.name for p in first.policies.all()) == ["DevicePublish", "Telemetry"]
    assert [t.name for t in first.things.all()] == ["sensor-1"]
    assert first.not_before is not None and first.not_after > first.not_before
    second = Certificate.objects.get(certificate_id=made[1]["certificateId"])
    assert second.status == "INACTIVE"
    assert list(second.things.all()) == []
    # Links carry their certificate's account: the search counts matches from them.
    links = [*CertificatePolicy.objects.all(), *CertificateThing.objects.all()]
    assert len(links) == 5
    assert {link.account_id for link in links} == {source.pk}


def test_sync_twice_changes_nothing_and_describes_nothing_new(fleet, source):
    sync(source)
    before = sorted(Certificate.objects.values_list("certificate_id", "status"))
    again = sync(source)
    assert again.described == 0
    assert sorted(Certificate.objects.values_list("certificate_id", "status")) == before
    assert Certificate.objects.count() == 3


def test_sync_follows_changes_and_removes_what_is_gone(fleet, source):
    iot, made = fleet
    sync(source)
    iot.detach_policy(policyName="Telemetry", target=made[0]["certificateArn"])
    iot.update_certificate(certificateId=made[2]["certificateId"], newStatus="INACTIVE")
    iot.detach_thing_principal(thingName="sensor-3", principal=made[2]["certificateArn"])
    iot.update_certificate(certificateId=made[1]["certificateId"], newStatus="INACTIVE")
    iot.detach_policy(policyName="DevicePublish", target=made[1]["certificateArn"])
    iot.delete_certificate(certificateId=made[1]["certificateId"])
    run = sync(source)
    assert run.removed == 1
    assert not Certificate.objects.filter(certificate_id=made[1]["certificateId"]).exists()
    first = Certificate.objects.get(certificate_id=made[0]["certificateId"])
    assert [p.name for p in first.policies.all()] == ["DevicePublish"]
    third = Certificate.objects.get(certificate_id=made[2]["certificateId"])
    assert third.status == "INACTIVE"
    assert list(third.things.all()) == []


def test_sync_counts_the_fewest_calls(standin, source):
    """N certificates, P policies, T things: pages of 250, plus one describe per new cert."""
    iot = iot_for(source)
    n = 260
    for i in range(n):
        add_certificate(iot, "ACTIVE", ["P1"] if i % 2 else [], thing=f"t-{i}" if i < 10 else None)
    run = sync(source)
    assert run.certificates == n
    list_certs = 2  # 260 in pages of 250
    describes = n
    policies = 1 + 1  # ListPolicies, ListTargetsForPolicy (130 targets fit one page)
    things = 1 + 10  # ListThings, ListThingPrincipals per thing
    assert run.api_calls == list_certs + describes + policies + things
    again = sync(source)
    assert again.api_calls == list_certs + policies + things


def test_a_failing_account_records_a_clear_error(standin, source, settings):
    settings.AWS_ENDPOINT_URL = "http://127.0.0.1:9"  # nothing listens on the discard port
    run = sync(source)
    assert run.status == SyncRun.Status.FAILED
    assert "could not be reached" in run.error
    source.refresh_from_db()
    assert "could not be reached" in source.last_error


def test_queueing_twice_gives_one_open_run(standin, source):
    first, created = inventory.queue_sync(source, "eu-west-1")
    second, created_again = inventory.queue_sync(source, "eu-west-1")
    assert created and not created_again
    assert first.pk == second.pk


def test_a_run_already_taken_is_not_run_again(fleet, source):
    run = sync(source)
    calls = run.api_calls
    again = inventory.sync_region(run.pk)
    assert again.api_calls == calls
    assert SyncRun.objects.count() == 1
