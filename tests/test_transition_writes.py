"""workflow.events.transition writes only the columns the transition changed."""

from django.utils import timezone

from tests.test_api import make_cert, make_transfer
from transfers.models import Transfer
from transfers.workflow.errors import WORKER
from transfers.workflow.events import transition


def test_a_transition_leaves_a_column_written_meanwhile_and_saves_lists_changed_in_place(
    source, requester
):
    transfer = make_transfer(make_cert(source, 1), requester, status=Transfer.Status.PREPARING)
    queued = timezone.now()

    def fill(row: Transfer) -> None:
        # Another process hands the row out (batches.hand_on: an update without the lock)
        # after this one read it...
        Transfer.objects.filter(pk=row.pk).update(queued_at=queued)
        # ...and this step changes a list in place.
        row.detached_policies.append("DevicePublish")
        row.error_code = "Boom"

    done = transition(transfer.pk, "fail", WORKER, before=fill, refuse="No.")
    row = Transfer.objects.get(pk=transfer.pk)
    assert row.status == Transfer.Status.FAILED == done.status
    assert row.finished_at is not None and row.error_code == "Boom"  # the transition's own
    assert row.detached_policies == ["DevicePublish"]
    assert row.queued_at == queued  # a full save wrote back the stale None
    assert row.events.get(action="fail").to_status == Transfer.Status.FAILED


def test_the_devices_glance_reads_only_what_devices_ready_needs(
    source, requester, django_assert_num_queries
):
    from transfers.workflow import devices

    transfer = make_transfer(
        make_cert(source, 2),
        requester,
        status=Transfer.Status.APPROVED,
        tell_devices=True,
        device_things=["sensor-1"],
    )
    glance = Transfer.objects.only("status", *devices.READY_FIELDS).get(pk=transfer.pk)
    with django_assert_num_queries(0):  # a field left out would be loaded by a query here
        assert not devices.ready(glance)  # every field read: the job has not succeeded


def test_a_transition_reads_the_notices_people_with_the_row(
    source, target, requester, approver, django_assert_num_queries
):
    transfer = make_transfer(
        make_cert(source, 3), requester, status=Transfer.Status.PREPARING, target=target
    )
    Transfer.objects.filter(pk=transfer.pk).update(approver=approver)
    # The locked read (with target, requester, approver), the update, the event, the
    # notices inserted and read back, in a savepoint: no query per person or account.
    with django_assert_num_queries(7):
        transition(transfer.pk, "fail", WORKER, refuse="No.")
