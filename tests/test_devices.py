"""A move ends when the devices are back (issue 24): told the target's endpoint through a job
in the source before the certificate is touched, verified back in the target after the
landing, batches in gated waves. Against the stand-in's simulated devices, on its clock."""

from __future__ import annotations

import json
from datetime import UTC, datetime, time, timedelta

import pytest

from tests.conftest import TARGET, add_certificate, committed, iot_for, make_user
from transfers import batches, inventory, waves, workflow
from transfers.models import Certificate, Role, Transfer, TransferBatch
from transfers.workflow import LandingChoice, Options, TransferError

CONNECT = {
    "Version": "2012-10-17",
    "Statement": [{"Effect": "Allow", "Action": "iot:Connect", "Resource": "*"}],
}
INDEXED = {"thingIndexingMode": "REGISTRY", "thingConnectivityIndexingMode": "STATUS"}


@pytest.fixture
def clock(standin):
    from standin.devices import DEVICES

    now = [datetime.now(UTC).timestamp()]
    saved = DEVICES.clock
    DEVICES.clock = lambda: now[0]
    yield now
    DEVICES.clock = saved


@pytest.fixture
def world(standin, clock, source, target, requester, approver, settings):
    settings.DEVICE_JOB_WAIT_MINUTES = 30
    standin.configure_devices(
        enabled=True,
        drop_after_seconds=5,
        backoff_base_seconds=1,
        backoff_cap_seconds=2,
        jitter="none",
        job_answer_seconds=1,
    )
    iot, tiot = iot_for(source), iot_for(target)
    iot.create_policy(policyName="Connect", policyDocument=json.dumps(CONNECT))
    tiot.create_policy(policyName="Connect", policyDocument=json.dumps(CONNECT))
    tiot.update_indexing_configuration(thingIndexingConfiguration=INDEXED)
    iot.update_indexing_configuration(thingIndexingConfiguration=INDEXED)  # the source's view
    certs = []
    for n in range(3):
        made = add_certificate(iot, "ACTIVE", ["Connect"])
        iot.create_thing(thingName=f"sensor-{n}")
        iot.attach_thing_principal(thingName=f"sensor-{n}", principal=made["certificateArn"])
        certs.append(made)
    run, _ = inventory.queue_sync(source, "us-east-1")
    inventory.sync_region(run.pk)
    carol = make_user("carol", (target, Role.APPROVER))
    return {
        "iot": iot,
        "tiot": tiot,
        "certs": [Certificate.objects.get(certificate_id=c["certificateId"]) for c in certs],
        "carol": carol,
        "control": standin,
    }


def device(world, thing="sensor-0") -> dict:
    (one,) = world["control"].devices(thing)["devices"]
    return one


def request(world, user, n=0, tell_devices=True) -> Transfer:
    return workflow.request_transfer(
        user,
        world["certs"][n],
        target_account_id=TARGET,
        message="Devices sold to Acme",
        reason="Sale",
        options=Options(tell_devices=tell_devices),
        landing=LandingChoice(),
    )


def run_polls(later_polls, clock, seconds=1.0, rounds=40):
    """Run the polls the portal asked for, the stand-in's clock moving on between rounds."""
    from transfers import tasks

    far = datetime.now(UTC) + timedelta(days=1)  # every device check due
    for _ in range(rounds):
        waiting = Transfer.objects.filter(device_check=Transfer.DeviceCheck.WAITING).exists()
        if not later_polls and not waiting:
            return
        due, later_polls[:] = list(later_polls), []
        clock[0] += seconds
        workflow.sweep_device_checks(now=far)  # the beat's round: what landed before
        for name, args in due:
            getattr(tasks, name).apply(args=args).get()


# ----------------------------------------------------------------- before the move


def test_the_certificate_is_touched_only_after_its_device_took_the_job(
    world, requester, approver, later_polls, clock
):
    transfer = request(world, requester)
    committed(workflow.approve_landing, world["carol"], transfer.pk)
    committed(workflow.approve, approver, transfer.pk)

    transfer.refresh_from_db()
    assert transfer.status == Transfer.Status.APPROVED  # waiting for the device's job
    assert transfer.device_job_id == f"portal-transfer-{transfer.pk}"
    desc = world["iot"].describe_certificate(certificateId=transfer.certificate_id)
    assert desc["certificateDescription"]["status"] == "ACTIVE"  # untouched so far
    target_host = world["tiot"].describe_endpoint(endpointType="iot:Data-ATS")["endpointAddress"]
    source_host = world["iot"].describe_endpoint(endpointType="iot:Data-ATS")["endpointAddress"]
    assert transfer.device_endpoints["data"] == [target_host, source_host]  # target first

    run_polls(later_polls, clock)  # the device answers; the worker goes on; it lands

    transfer.refresh_from_db()
    assert transfer.device_job_status == "SUCCEEDED"
    assert transfer.status == Transfer.Status.ACCEPTED
    assert transfer.landing_state == Transfer.Landing.LANDED
    assert device(world)["endpoints"] == [target_host, source_host]
    job = world["iot"].describe_job(jobId=transfer.device_job_id)["job"]
    assert json.loads(world["iot"].get_job_document(jobId=job["jobId"])["document"])[
        "endpoints"
    ] == [target_host, source_host]


def test_the_device_is_verified_back_in_the_target_with_its_own_downtime(
    world, requester, approver, later_polls, clock
):
    transfer = request(world, requester)
    committed(workflow.approve_landing, world["carol"], transfer.pk)
    committed(workflow.approve, approver, transfer.pk)
    run_polls(later_polls, clock, rounds=2)  # the job, then the move and the landing
    transfer.refresh_from_db()
    assert transfer.device_check == Transfer.DeviceCheck.WAITING  # still on the source
    clock[0] += 6  # the source drops it (5 s after deactivation); it reconnects to the target
    run_polls(later_polls, clock, seconds=2)

    transfer.refresh_from_db()
    assert transfer.device_check == Transfer.DeviceCheck.BACK
    seen = device(world)
    assert seen["account"] == TARGET and seen["connected"] is True
    # From its disconnection in the source to its connection in the target: the backoff's
    # first step (1 s, no jitter), not the certificate's downtime.
    assert timedelta(0) < transfer.device_downtime <= timedelta(seconds=2)
    assert transfer.device_offline_at > transfer.unusable_since


def test_a_rejected_job_holds_the_certificate_untouched_until_an_approver_releases_it(
    world, requester, approver, later_polls, clock
):
    world["control"].configure_devices(
        enabled=True, job_answer_seconds=1, traits={"sensor-0": ["reject"]}
    )
    transfer = request(world, requester)
    committed(workflow.approve_landing, world["carol"], transfer.pk)
    committed(workflow.approve, approver, transfer.pk)
    run_polls(later_polls, clock)

    transfer.refresh_from_db()
    assert transfer.status == Transfer.Status.APPROVED
    assert transfer.device_job_status == "REJECTED"
    assert "REJECTED" in transfer.device_hold and "untouched" in transfer.device_hold
    iot, arn = world["iot"], world["certs"][0].arn
    assert (
        iot.describe_certificate(certificateId=transfer.certificate_id)["certificateDescription"][
            "status"
        ]
        == "ACTIVE"
    )
    assert [p["policyName"] for p in iot.list_attached_policies(target=arn)["policies"]] == [
        "Connect"
    ]
    assert workflow.execute(transfer.pk).startswith("held")  # a re-sent message changes nothing
    with pytest.raises(TransferError) as refused:
        workflow.release_devices(requester, transfer.pk)
    assert refused.value.status == 403

    committed(workflow.release_devices, approver, transfer.pk, "moving without them")
    transfer.refresh_from_db()
    assert transfer.status == Transfer.Status.ACCEPTED
    assert transfer.device_released_by == approver


def test_a_job_that_cannot_be_created_holds_the_transfer_with_aws_s_reason(
    world, requester, approver, later_polls, monkeypatch
):
    from transfers import aws

    real = aws.call

    def refuse_jobs(client, operation, **kwargs):
        if operation == "create_job":
            raise aws.AwsError("UnauthorizedException", "not allowed", "CreateJob")
        return real(client, operation, **kwargs)

    monkeypatch.setattr(aws, "call", refuse_jobs)
    transfer = request(world, requester)
    committed(workflow.approve, approver, transfer.pk)
    transfer.refresh_from_db()
    assert transfer.status == Transfer.Status.APPROVED
    assert transfer.device_hold.startswith("Could not tell the devices")
    assert later_polls == []


def test_an_unmanaged_target_needs_a_typed_endpoint_of_the_region(world, requester):
    from tests.conftest import KNOWN, make_account

    make_account(KNOWN, managed=False)

    def ask(endpoint):
        return workflow.request_transfer(
            requester,
            world["certs"][1],
            target_account_id=KNOWN,
            message="",
            reason="Sale",
            options=Options(tell_devices=True, device_endpoint=endpoint),
        )

    for bad, code in [
        ("", "endpoint_required"),
        ("example.com", "invalid_endpoint"),
        ("a1b2c3d4e5f6g7-ats.iot.eu-west-1.amazonaws.com", "invalid_endpoint"),  # region
    ]:
        with pytest.raises(TransferError) as refused:
            ask(bad)
        assert refused.value.code == code
    assert not Transfer.objects.exists()  # nothing requested
    transfer = ask(" A1B2C3D4E5F6G7-ats.iot.us-east-1.amazonaws.com ")
    assert transfer.device_endpoints == {"typed": "a1b2c3d4e5f6g7-ats.iot.us-east-1.amazonaws.com"}
    assert transfer.tell_devices and transfer.device_things == ["sensor-1"]


# ----------------------------------------------------------------- after the move


def test_without_connectivity_indexing_the_return_cannot_be_verified(
    world, requester, approver, later_polls, clock
):
    world["tiot"].update_indexing_configuration(
        thingIndexingConfiguration={"thingIndexingMode": "OFF"}
    )
    transfer = request(world, requester, tell_devices=False)
    committed(workflow.approve_landing, world["carol"], transfer.pk)
    committed(workflow.approve, approver, transfer.pk)
    transfer.refresh_from_db()
    assert transfer.landing_state == Transfer.Landing.LANDED
    assert transfer.device_check == Transfer.DeviceCheck.UNVERIFIABLE
    assert "indexing is off" in transfer.device_reason
    assert transfer.device_downtime is None


def test_a_device_not_back_in_time_says_what_aws_says(
    world, requester, approver, later_polls, clock, settings
):
    settings.DEVICE_BACK_WAIT_MINUTES = 1
    world["control"].configure_devices(
        enabled=True, drop_after_seconds=5, traits={"sensor-0": ["never_reconnect"]}
    )
    transfer = request(world, requester, tell_devices=False)
    committed(workflow.approve_landing, world["carol"], transfer.pk)
    committed(workflow.approve, approver, transfer.pk)
    Transfer.objects.filter(pk=transfer.pk).update(
        device_check_until=datetime.now(UTC) - timedelta(seconds=1)
    )
    run_polls(later_polls, clock)
    transfer.refresh_from_db()
    assert transfer.device_check == Transfer.DeviceCheck.NOT_BACK
    assert "sensor-0" in transfer.device_reason and "never connected" in transfer.device_reason


# ----------------------------------------------------------------- waves


@pytest.fixture
def fleet(world, source):
    """Sixteen certificates with a thing each, moved in a batch with waves of 2, 4, 8..."""
    iot = world["iot"]
    for n in range(3, 16):
        made = add_certificate(iot, "ACTIVE", ["Connect"])
        iot.create_thing(thingName=f"sensor-{n}")
        iot.attach_thing_principal(thingName=f"sensor-{n}", principal=made["certificateArn"])
    run, _ = inventory.queue_sync(source, "us-east-1")
    inventory.sync_region(run.pk)
    return world


def batch_of(fleet, requester, tell_devices=True, count=None, **choice) -> TransferBatch:
    certs = list(Certificate.objects.filter(status="ACTIVE").order_by("pk")[:count])
    return batches.request_batch(
        requester,
        certs,
        [],
        target_account_id=TARGET,
        message="",
        reason="Fleet sold",
        options=Options(tell_devices=tell_devices),
        landing=LandingChoice(),
        wave_choice=waves.WaveChoice(canary=2, canary_percent=0, factor=2, **choice),
    )


def test_waves_grow_and_a_wave_below_the_threshold_pauses_the_batch(
    fleet, requester, approver, later_polls, clock, settings
):
    settings.DEVICE_BACK_WAIT_MINUTES = 0  # a device not back at the first look is not back
    batch = batch_of(fleet, requester)
    # The second of wave 2's four devices (transfers 3 to 6 by id) never comes back.
    (lost,) = batch.transfers.order_by("pk")[3].device_things
    fleet["control"].configure_devices(
        enabled=True,
        drop_after_seconds=0,
        backoff_base_seconds=0.01,
        backoff_cap_seconds=0.01,
        jitter="none",
        job_answer_seconds=0.01,
        traits={lost: ["never_reconnect"]},
    )
    assert [waves.size(batch, n, 16) for n in (1, 2, 3, 4)] == [2, 4, 8, 16]
    committed(batches.approve_landing, fleet["carol"], batch)
    committed(batches.approve, approver, batch)
    batch.refresh_from_db()
    assert batch.wave == 1  # the canary, told first
    canary = batch.transfers.filter(wave=1)
    assert set(canary.values_list("status", "device_job_id")) == {
        ("approved", f"portal-batch-{batch.pk}-wave-1-{min(t.pk for t in canary)}")
    }
    assert batch.transfers.filter(wave__isnull=True, status="approved").count() == 14

    run_polls(later_polls, clock, rounds=20)  # checks and feeder ticks until it settles

    batch.refresh_from_db()
    assert waves.outcome(batch, 1) | {"share": 0} == {
        "wave": 1,
        "size": 2,
        "good": 2,
        "bad": 0,
        "open": 0,
        "back": 2,
        "verified": True,
        "share": 0,
    }
    # Wave 2 holds the device that never comes back: 75 % < 95 %.
    wave2 = waves.outcome(batch, 2)
    assert (wave2["size"], wave2["back"], wave2["bad"], wave2["share"]) == (4, 3, 1, 75.0)
    assert batch.wave == 2 and batch.paused_at is not None
    assert "75 %" in batch.pause_reason and "below" in batch.pause_reason
    assert later_polls == []  # a paused batch has no feeder ticking
    untouched = batch.transfers.filter(wave__isnull=True)
    assert untouched.count() == 10 and set(untouched.values_list("status", flat=True)) == {
        "approved"
    }
    for t in untouched:  # still ACTIVE in the source, with its policy
        desc = fleet["iot"].describe_certificate(certificateId=t.certificate_id)
        assert desc["certificateDescription"]["status"] == "ACTIVE"
    assert batches.feed(batch.pk) == (0, None)  # a feeder sent anyway starts nothing

    with pytest.raises(TransferError):
        waves.resume(requester, batch)  # only an approver
    committed(waves.resume, approver, batch)
    batch.refresh_from_db()
    assert batch.paused_at is None and batch.wave == 3
    run_polls(later_polls, clock, rounds=3)
    assert batch.transfers.filter(wave=3, status="accepted").count() == 8


def test_stopping_a_batch_leaves_what_did_not_start_in_the_source(
    fleet, requester, approver, later_polls, clock
):
    batch = batch_of(fleet, requester, tell_devices=False)
    committed(batches.approve_landing, fleet["carol"], batch)
    committed(batches.approve, approver, batch)
    stopped = committed(waves.stop, approver, batch, "customer asked to wait")
    assert stopped == 14
    batch.refresh_from_db()
    assert batch.stopped_at is not None and batch.stopped_by == approver
    assert batch.transfers.filter(status="cancelled").count() == 14
    assert batches.feed(batch.pk) == (0, None)
    for t in batch.transfers.filter(status="cancelled"):
        desc = fleet["iot"].describe_certificate(certificateId=t.certificate_id)
        assert desc["certificateDescription"]["status"] == "ACTIVE"
    with pytest.raises(TransferError):
        waves.stop(approver, batch)


def test_without_waves_a_batch_is_one_wave(fleet, requester, approver, later_polls, clock):
    # Eight are enough to be more than the canary (2) and its next wave (4).
    batch = batch_of(fleet, requester, tell_devices=False, count=8, waves=False)
    committed(batches.approve_landing, fleet["carol"], batch)
    committed(batches.approve, approver, batch)
    batch.refresh_from_db()
    assert batch.wave == 1
    assert batch.transfers.filter(wave=1, status="accepted").count() == 8


def test_the_wave_choice_refuses_nonsense():
    for bad in [
        {"canary": 0},
        {"factor": 0.5},
        {"threshold": 101},
        {"window_days": [7], "window_start": time(2), "window_minutes": 60},
        {"window_days": [1], "window_start": None, "window_minutes": 60},
        {"window_days": [1], "window_start": time(2), "window_minutes": 60, "window_tz": "Mars/X"},
    ]:
        with pytest.raises(TransferError):
            waves.WaveChoice(**bad).check()


def test_waves_start_only_inside_a_maintenance_window():
    batch = TransferBatch(
        window_days=[0, 2],  # Monday and Wednesday
        window_start=time(2, 0),
        window_minutes=120,
        window_tz="Europe/Paris",
    )
    # Wednesday 2026-12-02 01:30 UTC is 02:30 in Paris: inside.
    assert waves.in_window(batch, datetime(2026, 12, 2, 1, 30, tzinfo=UTC))
    # 04:30 UTC is 05:30 in Paris: outside; the next opens on Monday 7 December, 02:00 Paris.
    later = datetime(2026, 12, 2, 4, 30, tzinfo=UTC)
    assert not waves.in_window(batch, later)
    assert waves.next_window(batch, later) == datetime(2026, 12, 7, 1, 0, tzinfo=UTC)
    assert waves.in_window(TransferBatch(), later)  # no windows: any time


def test_the_device_figures_count_each_state_and_measure_the_devices_downtime(
    fleet, requester, approver
):
    from transfers import downtime

    batch = batch_of(fleet, requester, tell_devices=False, waves=False)
    now = datetime.now(UTC)
    rows = list(batch.transfers.order_by("pk"))
    for t, state, seconds in [
        (rows[0], "back", 1.0),
        (rows[1], "back", 3.0),
        (rows[2], "back", 9.0),
        (rows[3], "not_back", None),
        (rows[4], "unverifiable", None),
        (rows[5], "waiting", None),
    ]:
        Transfer.objects.filter(pk=t.pk).update(
            device_check=state,
            device_offline_at=now if seconds else None,
            device_online_at=now + timedelta(seconds=seconds) if seconds else None,
            unusable_since=now - timedelta(minutes=1),  # the certificate's figure is apart
            usable_at=now,
        )
    figures = downtime.devices(batch.transfers.all())
    assert (figures.back, figures.not_back, figures.unverifiable, figures.waiting) == (3, 1, 1, 1)
    assert figures.checked == 6
    assert figures.downtime.count == 3
    assert figures.downtime.p50 == timedelta(seconds=3)
    assert figures.downtime.longest == timedelta(seconds=9)
    assert dict(figures.downtime.buckets)["5–30 s"] == 1
    assert downtime.summarize(batch.transfers.all()).p50 == timedelta(minutes=1)


def test_a_transfer_waiting_for_its_device_can_be_stopped_and_its_job_is_cancelled(
    world, requester, approver, later_polls, viewer
):
    world["control"].configure_devices(
        enabled=True, job_answer_seconds=1, traits={"sensor-0": ["silent"]}
    )
    transfer = request(world, requester)
    committed(workflow.approve, approver, transfer.pk)
    transfer.refresh_from_db()
    assert transfer.status == Transfer.Status.APPROVED and transfer.device_job_id
    with pytest.raises(TransferError) as refused:
        workflow.stop_waiting_for_devices(viewer, transfer.pk)
    assert refused.value.status == 403

    stopped = workflow.stop_waiting_for_devices(requester, transfer.pk, "not this week")
    assert stopped.status == Transfer.Status.CANCELLED
    job = world["iot"].describe_job(jobId=transfer.device_job_id)["job"]
    assert job["status"] == "CANCELED"
    desc = world["iot"].describe_certificate(certificateId=transfer.certificate_id)
    assert desc["certificateDescription"]["status"] == "ACTIVE"
    assert workflow.execute(transfer.pk) == "skipped: cancelled"  # a late message does nothing
    with pytest.raises(TransferError):
        workflow.stop_waiting_for_devices(requester, transfer.pk)
