"""The new-transfer notice to a target the portal does not manage carries the landing plan
as AWS CLI commands (issue 14): email (text and HTML) and the webhook payload."""

from __future__ import annotations

import pytest
from django.core import mail

from tests.conftest import (
    KNOWN,
    TARGET,
    add_certificate,
    committed,
    iot_for,
    make_account,
    make_user,
)
from transfers import inventory, messages, workflow
from transfers.models import Certificate, Notice, Role, Transfer
from transfers.workflow import LandingChoice, Options
from transfers.workflow.landing_plan import cli_commands


@pytest.fixture
def cert(standin, source):
    made = add_certificate(iot_for(source), "ACTIVE", ["DevicePublish"], thing="sensor-1")
    inventory.sync_region(inventory.queue_sync(source, "us-east-1")[0].pk)
    return Certificate.objects.get(certificate_id=made["certificateId"])


def pending(cert, target_id, approver, landing) -> Transfer:
    admin = make_user("sadmin", (cert.account, Role.ADMIN))
    transfer = workflow.request_transfer(
        admin,
        cert,
        target_account_id=target_id,
        message="Devices sold",
        reason="Sale",
        options=Options(),
        landing=landing,
    )
    committed(workflow.approve, approver, transfer.pk)
    transfer.refresh_from_db()
    assert transfer.status == Transfer.Status.PENDING_ACCEPTANCE
    return transfer


def test_an_unmanaged_target_s_notice_carries_the_landing_commands(cert, approver):
    make_account(KNOWN, "Partner Ltd", managed=False, contact_emails="iot@partner.example")
    transfer = pending(cert, KNOWN, approver, LandingChoice(activate=True))
    arn = f"arn:aws:iot:us-east-1:{KNOWN}:cert/{transfer.certificate_id}"
    commands = cli_commands(transfer)
    assert (
        f"aws iot attach-policy --policy-name DevicePublish --target {arn} --region us-east-1"
        in (commands)
    )
    [message] = mail.outbox
    assert message.to == ["iot@partner.example"]
    assert "The requester planned how the devices land in your account" in message.body
    for command in commands:
        assert f"  {command}\n" in message.body
    html = message.alternatives[0][0]
    assert "attach-thing-principal --thing-name sensor-1" in html

    notice = Notice.objects.get(transfer=transfer, channel="email")
    assert messages.payload(notice)["transfer"]["landing_commands"] == commands


def test_without_a_landing_the_notice_has_no_landing_commands(cert, approver):
    make_account(KNOWN, "Partner Ltd", managed=False, contact_emails="iot@partner.example")
    plain = pending(cert, KNOWN, approver, None)
    [message] = mail.outbox
    assert "planned how the devices land" not in message.body
    assert messages.payload(plain.notices.first())["transfer"]["landing_commands"] == []


def test_a_managed_target_lands_it_in_the_portal_not_by_commands(cert, approver, target):
    managed = pending(cert, TARGET, approver, LandingChoice(create_policies=True))
    assert mail.outbox, "the managed target's contacts are told too"
    assert all("planned how the devices land" not in m.body for m in mail.outbox)
    assert messages.landing_commands(managed) == []
