"""Inventory sync against the stand-in: what lands in the database and what it costs."""

from datetime import timedelta

import pytest
from django.utils import timezone

from tests.conftest import add_certificate, iot_for
from transfers import aws, inventory
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


REAL_CALL = aws.call


class Killed(BaseException):
    """A worker killed mid-call: nothing in the sync catches it, nothing is cleaned up."""


def calls_seen(monkeypatch, kill_at=None) -> list[str]:
    """Every AWS operation the sync calls, in order; with ``kill_at``, the worker dies
    before that DescribeCertificate."""
    from transfers import aws

    seen, real = [], REAL_CALL

    def call(client, operation, **kwargs):
        dying = kill_at is not None and seen.count("describe_certificate") + 1 == kill_at
        if operation == "describe_certificate" and dying:
            raise Killed
        seen.append(operation)
        return real(client, operation, **kwargs)

    monkeypatch.setattr(aws, "call", call)
    return seen


@pytest.fixture
def things_fleet(standin, source):
    iot = iot_for(source)
    made = [add_certificate(iot, "ACTIVE", ["Connect"], thing=f"device-{i:02d}") for i in range(24)]
    return iot, made


def test_the_phases_run_side_by_side_one_call_of_each_in_turn(things_fleet, source, monkeypatch):
    seen = calls_seen(monkeypatch)
    run = sync(source)
    assert run.status == SyncRun.Status.DONE, run.error
    after_listing = seen[seen.index("describe_certificate") :]
    # One after another, the 24 describes would come first; side by side they take turns
    # with the thing principals (and the policy phase's two calls).
    first_30 = after_listing[:30]
    assert 10 <= first_30.count("describe_certificate") <= 16
    assert first_30.count("list_thing_principals") >= 10
    assert {op for op in seen[: seen.index("describe_certificate")]} == {"list_certificates"}
    assert CertificateThing.objects.count() == 24 and CertificatePolicy.objects.count() == 24


def test_a_sync_killed_halfway_resumes_where_it_was(things_fleet, source, monkeypatch):
    monkeypatch.setattr(inventory, "FLUSH_ITEMS", 5)
    calls_seen(monkeypatch, kill_at=13)
    run, _ = inventory.queue_sync(source, "us-east-1")
    with pytest.raises(Killed):
        inventory.sync_region(run.pk)
    run.refresh_from_db()
    assert run.status == SyncRun.Status.RUNNING
    described_before = run.described
    things_cursor = run.checkpoint["things"]["after"]
    assert 5 <= described_before < 24 and things_cursor.startswith("device-")
    assert Certificate.objects.filter(described=False).count() == 24 - described_before

    # Its heartbeat is recent: another delivery of the task leaves it alone.
    seen = calls_seen(monkeypatch)
    assert inventory.sync_region(run.pk).status == SyncRun.Status.RUNNING
    assert seen == []
    assert inventory.resume_stale() == (0, 0)

    # No progress saved for STALE: the beat sends it again, and it resumes.
    SyncRun.objects.filter(pk=run.pk).update(
        heartbeat=timezone.now() - inventory.STALE - timedelta(seconds=1)
    )
    calls_before = run.api_calls
    assert inventory.resume_stale() == (1, 0)  # eager in tests: it ran to the end
    run.refresh_from_db()
    assert run.status == SyncRun.Status.DONE, run.error
    assert run.resumes == 1
    assert seen.count("describe_certificate") == 24 - described_before
    assert seen.count("list_thing_principals") == sum(
        1 for i in range(24) if f"device-{i:02d}" > things_cursor
    )
    assert run.api_calls == calls_before + len(seen)
    assert Certificate.objects.filter(described=True).count() == 24
    assert Certificate.objects.filter(not_after__isnull=False).count() == 24
    assert CertificateThing.objects.count() == 24 and CertificatePolicy.objects.count() == 24


def test_a_sync_making_progress_is_never_declared_stale_however_long_it_runs(
    fleet, source, monkeypatch
):
    from transfers import tasks

    run, _ = inventory.queue_sync(source, "us-east-1")
    hours_ago = timezone.now() - timedelta(hours=2)
    SyncRun.objects.filter(pk=run.pk).update(
        status=SyncRun.Status.RUNNING,
        created=hours_ago,
        started=hours_ago,
        heartbeat=timezone.now(),
        owner="the-other-worker",
    )
    tasks.sync_all_accounts()
    run.refresh_from_db()
    assert (run.status, run.owner) == (SyncRun.Status.RUNNING, "the-other-worker")
    assert SyncRun.objects.filter(account=source).count() == 2  # eu-west-1 queued and run
    assert SyncRun.objects.filter(region="us-east-1").count() == 1
    assert inventory.sync_region(run.pk).owner == "the-other-worker"


def test_a_sync_taken_over_stops_without_saving_anything(fleet, source, monkeypatch):
    from transfers import aws

    run, _ = inventory.queue_sync(source, "us-east-1")
    real = aws.call

    def call(client, operation, **kwargs):
        if operation == "describe_certificate":  # another worker presumed this one dead
            SyncRun.objects.filter(pk=run.pk).update(owner="the-new-worker")
        return real(client, operation, **kwargs)

    monkeypatch.setattr(aws, "call", call)
    after = inventory.sync_region(run.pk)
    assert (after.status, after.owner) == (SyncRun.Status.RUNNING, "the-new-worker")
    assert not Certificate.objects.filter(described=True).exists()


def test_a_sync_that_keeps_dying_is_failed_and_the_next_one_starts_afresh(source):
    run, _ = inventory.queue_sync(source, "us-east-1")
    SyncRun.objects.filter(pk=run.pk).update(
        status=SyncRun.Status.RUNNING,
        heartbeat=timezone.now() - inventory.STALE - timedelta(seconds=1),
        resumes=inventory.MAX_RESUMES,
    )
    assert inventory.resume_stale() == (0, 1)
    run.refresh_from_db()
    assert run.status == SyncRun.Status.FAILED
    assert "stopped 4 times" in run.error
    _, created = inventory.queue_sync(source, "us-east-1")
    assert created
