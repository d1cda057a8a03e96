"""A worker renews the lease of the transfer it works on (transfers.leases): a long step
keeps its row, and a killed worker's rows are free one lease after it died."""

import importlib
from datetime import timedelta

import pytest
import time_machine
from django.utils import timezone

from tests.conftest import TARGET, add_certificate, iot_for
from transfers import inventory, leases, workflow
from transfers.models import Certificate, Transfer
from transfers.workflow import Options

execute = importlib.import_module("transfers.workflow.execute")  # the module, not the function
pytestmark = pytest.mark.django_db


@pytest.fixture
def approved(standin, source, target, requester, approver, django_capture_on_commit_callbacks):
    made = add_certificate(iot_for(source), "INACTIVE")
    inventory.sync_region(inventory.queue_sync(source, "us-east-1")[0].pk)
    cert = Certificate.objects.get(certificate_id=made["certificateId"])
    transfer = workflow.request_transfer(
        requester, cert, target_account_id=TARGET, message="m", reason="r", options=Options()
    )
    workflow.approve(approver, transfer.pk)  # its execution message is never sent
    return transfer


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
    with leases.kept(approved.pk):
        assert Transfer.objects.get(pk=approved.pk).lease_until is None
        assert leases.renew() == 0  # no lease taken: nothing to keep
    Transfer.objects.filter(pk=approved.pk).update(lease_until=timezone.now())
    assert leases.renew() == 0  # not held by this process


def test_a_lease_is_held_until_the_last_of_nested_holds_ends():
    with pytest.raises(RuntimeError), leases.kept(7):
        with leases.kept(7):
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
    with leases.kept(5), pytest.raises(Stop):
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
