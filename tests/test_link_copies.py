"""Policy and thing links carry copies of their certificate's account, region and status
(the search reads its filters from them, transfers.search): every path that changes a
status or makes links writes them, and ``manage.py check_link_copies`` finds any link that
disagrees."""

from __future__ import annotations

import io
from datetime import timedelta

import pytest
import time_machine
from django.core.management import CommandError, call_command

from standin.timing import TIMING
from tests.conftest import TARGET, add_certificate, committed, iot_for, make_user
from transfers import inventory, workflow
from transfers.models import Certificate, CertificatePolicy, CertificateThing, Role, Transfer
from transfers.workflow import LandingChoice, Options


def sync(account, region="us-east-1"):
    run, _ = inventory.queue_sync(account, region)
    return inventory.sync_region(run.pk)


def links_of(cert: Certificate) -> list[tuple[int, str, str]]:
    """(account pk, region, status) of each policy and thing link of ``cert``."""
    return [
        (link.account_id, link.region, link.status)
        for model in (CertificatePolicy, CertificateThing)
        for link in model.objects.filter(certificate=cert)
    ]


def assert_agree(cert: Certificate, status: str, links: int) -> None:
    """The row says ``status``, so do its ``links`` links, and no link anywhere disagrees."""
    cert.refresh_from_db()
    assert cert.status == status
    assert links_of(cert) == [(cert.account_id, cert.region, status)] * links
    call_command("check_link_copies", stdout=io.StringIO())  # raises when any disagree


# ----------------------------------------------------------------------------- the check


def test_the_check_passes_when_every_link_agrees(standin, source):
    iot = iot_for(source)
    add_certificate(iot, "ACTIVE", ["DevicePublish"], thing="sensor-1")
    sync(source)
    out = io.StringIO()
    call_command("check_link_copies", stdout=out)
    assert "Every link agrees with its certificate." in out.getvalue()


def test_the_check_finds_a_link_that_disagrees_exits_non_zero_and_fix_repairs_it(standin, source):
    iot = iot_for(source)
    made = add_certificate(iot, "ACTIVE", ["DevicePublish", "Telemetry"], thing="sensor-1")
    sync(source)
    cert = Certificate.objects.get(certificate_id=made["certificateId"])
    # What a write that skipped the copies would leave: the status on the certificate only,
    # and a link with another region.
    Certificate.objects.filter(pk=cert.pk).update(status="REVOKED")
    CertificateThing.objects.filter(certificate=cert).update(region="eu-west-1")

    out = io.StringIO()
    with pytest.raises(CommandError, match="3 links disagree"):
        call_command("check_link_copies", stdout=out)
    text = out.getvalue()
    assert "policy links that disagree with their certificate: 2" in text
    assert "thing links that disagree with their certificate: 1" in text
    assert (
        f"thing 'sensor-1' of certificate {cert.certificate_id}: the link says "
        f"{source.account_id} eu-west-1 ACTIVE, the certificate {source.account_id} "
        "us-east-1 REVOKED"
    ) in text

    out = io.StringIO()
    call_command("check_link_copies", "--fix", stdout=out)
    assert "repaired 2" in out.getvalue() and "repaired 1" in out.getvalue()
    assert_agree(cert, "REVOKED", links=3)


def test_run_from_the_command_line_a_disagreement_exits_with_status_1(standin, source):
    iot = iot_for(source)
    made = add_certificate(iot, "ACTIVE", ["DevicePublish"])
    sync(source)
    Certificate.objects.filter(certificate_id=made["certificateId"]).update(status="INACTIVE")
    with pytest.raises(SystemExit) as exited:
        call_command_line("check_link_copies")
    assert exited.value.code == 1


def call_command_line(*argv: str) -> None:
    """As ``manage.py ...`` runs it: a CommandError becomes exit status 1."""
    from django.core.management import ManagementUtility

    ManagementUtility(["manage.py", *argv]).execute()


# ------------------------------------------------------------------------- the sync


@pytest.mark.parametrize("spare_policies", [0, 6], ids=["per policy", "per certificate"])
def test_the_sync_writes_the_copies_on_new_links_and_on_a_status_change(
    standin, source, spare_policies
):
    """Links are made per name or, with more names than certificates, per certificate; a
    status AWS changed reaches the links with the certificate."""
    iot = iot_for(source)
    made = add_certificate(iot, "ACTIVE", ["DevicePublish", "Telemetry"], thing="sensor-1")
    add_certificate(iot, "INACTIVE", ["DevicePublish"])
    for n in range(spare_policies):  # attached to nothing
        iot.create_policy(policyName=f"Spare-{n}", policyDocument='{"Version":"2012-10-17"}')
    sync(source)
    cert = Certificate.objects.get(certificate_id=made["certificateId"])
    assert_agree(cert, "ACTIVE", links=3)

    iot.update_certificate(certificateId=cert.certificate_id, newStatus="INACTIVE")
    sync(source)
    assert_agree(cert, "INACTIVE", links=3)


# ------------------------------------------------------------- execution and after


@pytest.fixture
def world(standin, source, target, requester, approver):
    """A certificate in the source with two policies and a thing, synced into the portal."""
    iot = iot_for(source)
    made = add_certificate(iot, "ACTIVE", ["DevicePublish", "Telemetry"], thing="sensor-1")
    sync(source)
    cert = Certificate.objects.get(certificate_id=made["certificateId"])
    carol = make_user("carol", (target, Role.ADMIN))
    yield {"iot": iot, "tiot": iot_for(target), "cert": cert, "carol": carol, "control": standin}
    TIMING.clear()


def request(world, user, **kw) -> Transfer:
    return workflow.request_transfer(
        user,
        world["cert"],
        target_account_id=TARGET,
        message="Devices sold to Acme",
        reason="Sale",
        options=Options(),
        **kw,
    )


def to_pending(world, requester, approver) -> Transfer:
    transfer = request(world, requester)
    committed(workflow.approve, approver, transfer.pk, "ok")
    transfer.refresh_from_db()
    assert transfer.status == Transfer.Status.PENDING_ACCEPTANCE, transfer.error_message
    return transfer


def test_execution_writes_pending_transfer_on_the_links(world, requester, approver):
    to_pending(world, requester, approver)
    assert_agree(world["cert"], "PENDING_TRANSFER", links=3)


def test_the_reconciler_writes_pending_transfer_on_the_links(
    world, requester, approver, django_capture_on_commit_callbacks
):
    """A TransferCertificate whose answer was lost: the transfer failed in the portal, and
    the reconciler finds it pending in AWS."""
    transfer = request(world, requester)
    with django_capture_on_commit_callbacks(execute=False):
        workflow.approve(approver, transfer.pk)
    TIMING.configure(lose_answers={"TransferCertificate": 1})
    with pytest.raises(workflow.RetryLater):
        workflow.execute(transfer.pk)
    workflow.fail(transfer.pk, "ServiceUnavailableException", "Gave up after 10 retries.")
    assert_agree(world["cert"], "ACTIVE", links=3)  # the portal never saw it pending

    assert committed(workflow.reconcile_pending) == {"pending": 1}
    assert_agree(world["cert"], "PENDING_TRANSFER", links=3)


def test_the_restore_writes_active_on_the_links(world, requester, approver):
    transfer = to_pending(world, requester, approver)
    assert_agree(world["cert"], "PENDING_TRANSFER", links=3)
    committed(workflow.reject, world["carol"], transfer.pk, "Wrong devices")
    transfer.refresh_from_db()
    assert transfer.restore_state == Transfer.Restore.DONE
    assert_agree(world["cert"], "ACTIVE", links=3)


def test_the_landing_writes_active_on_the_targets_links(world, requester, approver, target):
    """Accepted inactive, the target's sync stores the certificate and its links; the
    landing's last step activates it, and its inventory row and links say so."""
    transfer = request(world, requester, landing=LandingChoice(create_policies=True))
    committed(workflow.approve_landing, world["carol"], transfer.pk)
    world["control"].set_faults(throttle_rate=1.0, operations=["AttachThingPrincipal"])
    committed(workflow.approve, approver, transfer.pk)
    transfer.refresh_from_db()
    assert transfer.landing_state == Transfer.Landing.PARTIAL  # the policies, not the thing
    sync(target)
    landed = Certificate.objects.get(account=target, certificate_id=transfer.certificate_id)
    assert_agree(landed, "INACTIVE", links=2)

    world["control"].clear_faults()
    with time_machine.travel(transfer.landing_next_at + timedelta(seconds=1)):
        assert committed(workflow.sweep_landings) == 1
    transfer.refresh_from_db()
    assert transfer.landing_state == Transfer.Landing.LANDED
    assert_agree(landed, "ACTIVE", links=2)  # the thing's link comes with the next sync


# ------------------------------------------------------------------------- the migration


@pytest.mark.django_db(transaction=True)
def test_the_migration_fills_the_copies_from_the_certificates(settings):
    settings.MIGRATION_MODULES = {}  # the project's own, which --nomigrations hides
    from django.db import connection
    from django.db.migrations.executor import MigrationExecutor

    before, after = (
        ("transfers", "0022_notice_kind_paused"),
        ("transfers", "0023_link_region_and_status"),
    )
    executor = MigrationExecutor(connection)
    executor.migrate([before])
    try:
        apps = executor.loader.project_state([before]).apps
        account = apps.get_model("transfers", "AwsAccount").objects.create(
            account_id="111111111111", name="Fleet", regions=["eu-west-1"]
        )
        cert = apps.get_model("transfers", "Certificate").objects.create(
            account=account,
            region="eu-west-1",
            certificate_id="ab" * 32,
            arn="arn",
            status="REVOKED",
        )
        for model in ("CertificatePolicy", "CertificateThing"):
            apps.get_model("transfers", model).objects.create(
                certificate=cert, account=account, name="Fleet-Publish"
            )
        executor = MigrationExecutor(connection)
        executor.migrate([after])
    finally:
        executor = MigrationExecutor(connection)
        executor.migrate(executor.loader.graph.leaf_nodes())
    row = Certificate.objects.get()
    assert links_of(row) == [(row.account_id, "eu-west-1", "REVOKED")] * 2
