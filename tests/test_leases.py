"""A worker renews the lease of the transfer it works on (transfers.leases): a long step
keeps its row, and a killed worker's rows are free one lease after it died. A lease has an
owner: a worker that stalled past its lease while another took the row stops, and leaves
the row and what the other recorded alone (issue 22, point 8)."""

import importlib
from datetime import timedelta

import pytest
import time_machine
from django.conf import settings
from django.utils import timezone

from tests.conftest import TARGET, add_certificate, committed, iot_for, make_user
from transfers import aws, inventory, leases, workflow
from transfers.models import Certificate, Role, Transfer, TransferEvent
from transfers.workflow import LandingChoice, Options

execute = importlib.import_module("transfers.workflow.execute")  # the module, not the function
restore = importlib.import_module("transfers.workflow.restore")
landing = importlib.import_module("transfers.workflow.landing")
pytestmark = pytest.mark.django_db


@pytest.fixture
def approve(standin, source, target, requester, approver, django_capture_on_commit_callbacks):
    """An approved transfer of a new INACTIVE certificate with ``policies`` attached; its
    execution message is never sent (each test runs the workers itself)."""

    def make(policies=(), landing=None) -> Transfer:
        made = add_certificate(iot_for(source), "INACTIVE", policies)
        inventory.sync_region(inventory.queue_sync(source, "us-east-1")[0].pk)
        cert = Certificate.objects.get(certificate_id=made["certificateId"])
        transfer = workflow.request_transfer(
            requester,
            cert,
            target_account_id=TARGET,
            message="m",
            reason="r",
            options=Options(),
            landing=landing,
        )
        workflow.approve(approver, transfer.pk)
        standin.reset_counters()
        return transfer

    return make


@pytest.fixture
def approved(approve):
    return approve()


def lease_left(pk: int) -> float:
    until = Transfer.objects.get(pk=pk).lease_until
    return (until - timezone.now()).total_seconds() if until else 0.0


def test_the_worker_renews_the_lease_of_the_transfer_it_executes(approved, settings, monkeypatch):
    seen = {}
    real = execute._prepare_and_transfer

    def slow_step(transfer):
        # A step that outlives most of the lease (a detachment slow to propagate).
        Transfer.objects.filter(pk=transfer.pk).update(
            lease_until=timezone.now() + timedelta(seconds=2)
        )
        seen["held"] = leases.held()
        seen["renewed"] = leases.renew()  # what the renewer thread does every lease / 3
        seen["left"] = lease_left(transfer.pk)
        return real(transfer)

    monkeypatch.setattr(execute, "_prepare_and_transfer", slow_step)
    assert execute.execute(approved.pk) == "pending_acceptance"
    assert seen["held"] == [approved.pk]
    assert seen["renewed"] == 1
    assert seen["left"] > settings.TRANSFER_LEASE_SECONDS - 5
    assert leases.held() == []  # and no longer held once done
    assert Transfer.objects.get(pk=approved.pk).lease_until is None


def test_a_released_lease_stays_released_and_other_rows_are_untouched(approved, requester):
    with leases.kept(approved.pk, leases.new_token()):
        assert Transfer.objects.get(pk=approved.pk).lease_until is None
        assert leases.renew() == 0  # no lease taken: nothing to keep
    Transfer.objects.filter(pk=approved.pk).update(lease_until=timezone.now())
    assert leases.renew() == 0  # not held by this process


def test_a_lease_is_held_until_the_last_of_nested_holds_ends():
    with pytest.raises(RuntimeError), leases.kept(7, "t"):
        with leases.kept(7, "t"):
            assert leases.held() == [7]
        assert leases.held() == [7]
        raise RuntimeError("the step failed")
    assert leases.held() == []


def test_the_renewer_thread_renews_every_third_of_the_lease(settings, monkeypatch):
    settings.TRANSFER_LEASE_SECONDS = 30
    naps, renewals = [], []

    class Stop(BaseException):
        pass

    def nap(seconds):
        naps.append(seconds)
        if len(naps) == 3:
            raise Stop

    monkeypatch.setattr(leases.time, "sleep", nap)
    monkeypatch.setattr(leases, "renew", lambda: renewals.append(1) or 1)
    monkeypatch.setattr(leases.connection, "close", lambda: None)
    # No background renewer beside the one driven here: it would share the patched sleep.
    monkeypatch.setattr(leases, "_start_renewer", lambda: None)
    with leases.kept(5, "t"), pytest.raises(Stop):
        leases._renew_forever()
    assert naps == [10, 10, 10]
    assert len(renewals) == 2


def test_a_killed_workers_transfer_is_taken_again_once_its_lease_runs_out(approved, settings):
    Transfer.objects.filter(pk=approved.pk).update(
        status=Transfer.Status.PREPARING, lease_until=leases.until()
    )  # a worker took it, then was killed: nobody renews the lease
    assert execute.execute(approved.pk) == "skipped: another worker holds it"
    later = timezone.now() + timedelta(seconds=settings.TRANSFER_LEASE_SECONDS + 1)
    with time_machine.travel(later):
        assert execute.execute(approved.pk) == "pending_acceptance"


# ----------------------------------------------------------------- a lease has an owner


def ran_out(pk: int) -> None:
    """The worker holding the row stalled (a paused process, a blocked write): its lease
    ran out and nobody renewed it."""
    Transfer.objects.filter(pk=pk).update(lease_until=timezone.now() - timedelta(seconds=1))


def taken_over(pk: int, monkeypatch) -> Transfer:
    """Another worker takes the row whose lease ran out and is still at work on it."""
    ran_out(pk)
    with monkeypatch.context() as patch:
        patch.setattr(execute, "_prepare_and_transfer", lambda transfer: "still at work")
        assert execute.execute(pk) == "still at work"
    return Transfer.objects.get(pk=pk)


def when_called(monkeypatch, module, operation: str, then) -> None:
    """At ``module``'s first AWS call of ``operation``, run ``then`` before the call goes
    out: what another worker does while this one is stalled in that call."""
    real, fired = module.aws_call, []

    def call(transfer, by, client, op, **params):
        if op == operation and not fired:
            fired.append(op)
            then()
        return real(transfer, by, client, op, **params)

    monkeypatch.setattr(module, "aws_call", call)


def stopped(pk: int) -> bool:
    return TransferEvent.objects.filter(transfer_id=pk, action="lease_lost").exists()


def test_the_renewer_leaves_alone_a_lease_another_worker_took_over(approved, monkeypatch):
    seen = {}

    def stalls(transfer):
        seen["theirs"] = taken_over(transfer.pk, monkeypatch).lease_until
        with time_machine.travel(timezone.now() + timedelta(seconds=10)):
            seen["renewed"] = leases.renew()  # this worker's renewer thread wakes up
        return "stalled"

    monkeypatch.setattr(execute, "_prepare_and_transfer", stalls)
    execute.execute(approved.pk)
    assert seen["renewed"] == 0
    assert Transfer.objects.get(pk=approved.pk).lease_until == seen["theirs"]


@pytest.mark.parametrize("code", ["ThrottlingException", "AccessDeniedException"])
def test_a_worker_that_lost_its_lease_leaves_the_new_holders_lease_when_it_stops(
    approved, monkeypatch, code
):
    seen = {}

    def stalls_then_errs(transfer):
        seen["theirs"] = taken_over(transfer.pk, monkeypatch)
        raise aws.AwsError(code, "after a long stall")

    monkeypatch.setattr(execute, "_prepare_and_transfer", stalls_then_errs)
    # Neither a retry (which would release the lease) nor a failure of the other's work.
    assert execute.execute(approved.pk) == "stopped: lease lost"
    row = Transfer.objects.get(pk=approved.pk)
    assert row.status == Transfer.Status.PREPARING
    assert row.error_code == ""
    assert row.lease_until == seen["theirs"].lease_until
    assert row.lease_token == seen["theirs"].lease_token
    assert stopped(approved.pk)


def test_a_worker_whose_lease_was_taken_over_makes_no_further_aws_call(
    approve, standin, monkeypatch
):
    transfer = approve(policies=("Publish", "Telemetry"))

    def another_worker_does_it_all():
        ran_out(transfer.pk)
        assert execute.execute(transfer.pk) == "pending_acceptance"

    # This worker stalls in its first DetachPolicy; another does the whole transfer.
    when_called(monkeypatch, execute, "detach_policy", another_worker_does_it_all)
    assert execute.execute(transfer.pk) == "stopped: lease lost"
    assert standin.call_count("TransferCertificate") == 1
    # The other worker's two, and this worker's one that was already under way: no more.
    assert standin.call_count("DetachPolicy") == 3
    row = Transfer.objects.get(pk=transfer.pk)
    assert row.status == Transfer.Status.PENDING_ACCEPTANCE
    assert sorted(row.detached_policies) == ["Publish", "Telemetry"]
    assert stopped(transfer.pk)


class Killed(Exception):
    """A worker process killed mid-step: it releases nothing."""


def detach_in_turn(approve, monkeypatch) -> Transfer:
    """Worker A stalls in its first call; worker B takes the transfer, detaches one policy
    and is killed; A wakes up and goes on; a redelivered message finishes the transfer."""
    transfer = approve(policies=("Publish", "Telemetry"))

    def b_detaches_one_and_dies():
        ran_out(transfer.pk)
        with monkeypatch.context() as patch:
            real = execute.aws_call

            def killed_after_detaching(transfer, by, client, op, **params):
                answer = real(transfer, by, client, op, **params)
                if op == "detach_policy":
                    raise Killed
                return answer

            patch.setattr(execute, "aws_call", killed_after_detaching)
            with pytest.raises(Killed):
                execute.execute(transfer.pk)

    with monkeypatch.context() as patch:
        when_called(patch, execute, "describe_certificate", b_detaches_one_and_dies)
        execute.execute(transfer.pk)  # worker A
    later = timezone.now() + timedelta(seconds=settings.TRANSFER_LEASE_SECONDS + 1)
    with time_machine.travel(later):
        execute.execute(transfer.pk)  # the redelivered message, once B's lease ran out
    transfer.refresh_from_db()
    assert transfer.status == Transfer.Status.PENDING_ACCEPTANCE
    return transfer


def test_two_workers_detaching_in_turn_leave_both_names_on_record(approve, monkeypatch):
    transfer = detach_in_turn(approve, monkeypatch)
    assert sorted(transfer.detached_policies) == ["Publish", "Telemetry"]


def test_a_restore_after_workers_detached_in_turn_reattaches_every_policy(
    approve, monkeypatch, target, source
):
    transfer = detach_in_turn(approve, monkeypatch)
    carol = make_user("carol", (target, Role.ADMIN))
    committed(workflow.reject, carol, transfer.pk, "Wrong devices")  # the restore runs
    transfer.refresh_from_db()
    assert transfer.restore_state == Transfer.Restore.DONE
    attached = iot_for(source).list_attached_policies(target=transfer.certificate_arn)
    assert sorted(p["policyName"] for p in attached["policies"]) == ["Publish", "Telemetry"]


def test_a_restore_worker_whose_lease_was_taken_over_stops(
    approve, standin, monkeypatch, target, django_capture_on_commit_callbacks
):
    transfer = approve(policies=("Publish", "Telemetry"))
    execute.execute(transfer.pk)
    carol = make_user("carol", (target, Role.ADMIN))
    with django_capture_on_commit_callbacks(execute=False):  # the restore task is ours
        workflow.reject(carol, transfer.pk, "Wrong devices")
    standin.reset_counters()
    seen = {}

    def another_worker_takes_the_restore():
        ran_out(transfer.pk)
        seen["theirs"] = restore._claim(transfer.pk)  # ... and is still at work on it
        seen["until"] = Transfer.objects.get(pk=transfer.pk).lease_until

    when_called(monkeypatch, restore, "attach_policy", another_worker_takes_the_restore)
    assert restore.restore(transfer.pk) == "stopped: lease lost"
    assert standin.call_count("AttachPolicy") == 1  # the one under way, no more
    row = Transfer.objects.get(pk=transfer.pk)
    assert row.restore_state == Transfer.Restore.PENDING  # not "done" over the other's work
    assert row.lease_until == seen["until"]
    assert stopped(transfer.pk)


def test_a_landing_worker_whose_lease_was_taken_over_stops(
    approve, standin, monkeypatch, target, django_capture_on_commit_callbacks
):
    iot_for(target).create_policy(policyName="Publish", policyDocument='{"Statement": []}')
    transfer = approve(policies=("Publish",), landing=LandingChoice())
    carol = make_user("carol", (target, Role.APPROVER))
    with django_capture_on_commit_callbacks(execute=False):
        workflow.approve_landing(carol, transfer.pk)
    monkeypatch.setattr(landing, "land", lambda pk: "the landing task is lost")
    assert execute.execute(transfer.pk).startswith("pending_acceptance")
    monkeypatch.undo()
    seen = {}

    def another_worker_takes_the_landing():
        ran_out(transfer.pk)
        seen["theirs"] = landing._claim(transfer.pk)
        seen["until"] = Transfer.objects.get(pk=transfer.pk).lease_until

    when_called(
        monkeypatch, landing, "accept_certificate_transfer", another_worker_takes_the_landing
    )
    assert landing.land(transfer.pk) == "stopped: lease lost"
    assert standin.call_count("AttachPolicy") == 0  # nothing after the accept under way
    row = Transfer.objects.get(pk=transfer.pk)
    assert row.landing_state == Transfer.Landing.LANDING
    assert row.lease_until == seen["until"]
    assert stopped(transfer.pk)
