"""Notices of issue 24: a batch paused below its wave threshold tells its requester and the
source's approvers (email, and the source's webhook and Slack); the batch's closing notice
says how many devices are back and which are not (CSV, with why); the target's notice says
which endpoints the devices were told and, for a target the portal does not manage, asks it
to confirm they are back. Rows are made directly; receivers on loopback."""

from __future__ import annotations

import csv
import io
from datetime import timedelta
from html import escape
from types import SimpleNamespace

import pytest
from django.core import mail
from django.utils import timezone

from tests.conftest import KNOWN, TARGET, committed, make_account, make_user
from tests.test_api import make_cert, make_transfer
from tests.test_batch_notices import SlackReceiver
from tests.test_notices import Receiver
from transfers import messages, notices, waves
from transfers.models import Notice, Role, Transfer, TransferBatch

TOLD = [
    "t4rget0000000-ats.iot.us-east-1.amazonaws.com",
    "s0urce0000000-ats.iot.us-east-1.amazonaws.com",
]
Kind, Channel = Notice.Kind, Notice.Channel


@pytest.fixture
def world(source, target, requester, approver):
    approver2 = make_user("approver2", (source, Role.ADMIN))
    make_user("carol", (target, Role.ADMIN))  # the target's people hear nothing of a pause
    certs = [make_cert(source, n, things=[f"sensor-{n}"]) for n in range(1, 5)]
    return SimpleNamespace(
        source=source,
        target=target,
        requester=requester,
        approver=approver,
        approver2=approver2,
        certs=certs,
    )


def batch_of(world, **fields) -> TransferBatch:
    return TransferBatch.objects.create(
        source=world.source,
        region="us-east-1",
        target_account_id=fields.pop("target_account_id", TARGET),
        requester=world.requester,
        approver=world.approver,
        reason="Fleet sold",
        **fields,
    )


@pytest.fixture
def source_hooks(world, settings):
    settings.WEBHOOK_ALLOW_PRIVATE = True  # the receivers are on loopback
    secret = notices.new_webhook_secret()
    hook, slack = Receiver(secret), SlackReceiver()
    world.source.webhook_url, world.source.webhook_secret = hook.url, secret
    world.source.slack_webhook_url = slack.url
    world.source.save()
    yield SimpleNamespace(hook=hook, slack=slack)
    hook.close()
    slack.close()


# ----------------------------------------------------------------------------- paused


def test_a_batch_paused_below_its_threshold_tells_its_requester_and_the_sources_approvers(
    world, source_hooks
):
    batch = batch_of(world, waves=True, wave=1, wave_threshold=95)
    good, bad, unstarted, _ = world.certs
    kw = {"target": world.target, "batch": batch}
    make_transfer(good, world.requester, Transfer.Status.ACCEPTED, wave=1, **kw)
    make_transfer(bad, world.requester, Transfer.Status.FAILED, wave=1, **kw)
    make_transfer(unstarted, world.requester, Transfer.Status.APPROVED, **kw)

    assert committed(waves.advance, batch) == "paused"

    batch.refresh_from_db()
    assert f"from account {world.source.account_id} (us-east-1)" in " ".join(
        mail.outbox[0].body.split()
    )
    assert "1 of 2" in batch.pause_reason and "50 %" in batch.pause_reason
    sent = Notice.objects.filter(batch=batch, kind=Kind.PAUSED)
    assert sorted(sent.values_list("channel", "status")) == [
        ("email", "sent"),
        ("email", "sent"),
        ("email", "sent"),
        ("slack", "sent"),
        ("webhook", "sent"),
    ]
    # One email each: the requester and every approver of the source, nobody of the target.
    assert sorted(m.to[0] for m in mail.outbox) == [
        "approver2@example.com",
        "approver@example.com",
        "requester@example.com",
    ]
    email = mail.outbox[0]
    assert (
        email.subject
        == f"Batch #{batch.pk} to account {TARGET} paused at wave 1: resume or stop it"
    )
    assert batch.pause_reason in email.body
    assert f"/batches/{batch.pk}/" in email.body and "resumes the batch" in email.body
    html = email.alternatives[0][0]
    assert "paused" in html and escape(batch.pause_reason) in html
    assert email.attachments == []  # nothing carried: no CSV
    # The source's webhook and Slack channel (not the target's), once each.
    (event,) = source_hooks.hook.accepted
    assert event["type"] == "certificate_transfer_batch.paused"
    assert event["batch"]["pause_reason"] == batch.pause_reason and event["batch"]["wave"] == 1
    (post,) = source_hooks.slack.posts
    assert "paused at wave 1" in post["text"]

    # A tick of a paused batch tells nobody again.
    assert committed(waves.advance, batch) == "paused"
    assert sent.count() == 5 and len(mail.outbox) == 3


# ----------------------------------------------------------------------------- closing


def landed(world, batch, cert, check, reason="", **fields) -> Transfer:
    transfer = make_transfer(
        cert,
        world.requester,
        Transfer.Status.ACCEPTED,
        target=world.target,
        batch=batch,
        approver=world.approver,
        landing_state=Transfer.Landing.LANDED,
        detached_things=list(cert.things.values_list("name", flat=True)),
        device_check=check,
        device_reason=reason,
        **fields,
    )
    return transfer


def test_the_batchs_closing_notice_says_how_many_devices_are_back_and_lists_those_not(world):
    batch = batch_of(world)
    back = [landed(world, batch, c, "back") for c in world.certs[:3]]
    why = "Not back 15 minutes after the landing (sensor-4); AWS says: AUTH_ERROR."
    lost = landed(world, batch, world.certs[3], "not_back", why)

    def closing():
        for t in [*back, lost]:
            notices.create(t, Kind.ACCEPTED)

    committed(closing)

    by_recipient = {m.to[0]: m for m in mail.outbox}
    assert sorted(by_recipient) == ["approver@example.com", "requester@example.com"]
    email = by_recipient["requester@example.com"]
    assert "Devices back online in the target: 3 of 4." in email.body
    assert f"{lost.certificate_id}: {why}" in email.body
    assert "3 of 4" in email.alternatives[0][0] and why in email.alternatives[0][0]
    ((name, content, mimetype),) = email.attachments
    rows = {r["transfer"]: r for r in csv.DictReader(io.StringIO(content))}
    assert rows[str(lost.pk)]["devices"] == "not_back"
    assert rows[str(lost.pk)]["devices_reason"] == why
    assert {rows[str(t.pk)]["devices"] for t in back} == {"back"}
    digest = Notice.objects.get(
        batch=batch, transfer=None, channel=Channel.EMAIL, recipient="requester@example.com"
    )
    assert messages.batch_payload(digest)["batch"]["devices"] | {"told": None} == {
        "told": None,
        "confirm": False,
        "back": 3,
        "checked": 4,
        "not_back": 1,
    }


def test_the_closing_notice_waits_while_the_devices_are_looked_for(world):
    batch = batch_of(world)
    landed(world, batch, world.certs[0], "back")
    waiting = landed(world, batch, world.certs[1], "waiting")
    with committed_flushes_off():
        for t in batch.transfers.all():
            notices.create(t, Kind.ACCEPTED)
    later = timezone.now() + notices.QUIET + timedelta(seconds=1)
    assert notices.flush_batch(batch.pk, now=later) == []  # quiet, but devices still coming
    Transfer.objects.filter(pk=waiting.pk).update(device_check="back")
    assert len(notices.flush_batch(batch.pk, now=later)) == 2  # requester, approver

    # Devices that never settle do not hold it past MAX_HOLD.
    other = batch_of(world)
    cert = make_cert(world.source, 9, things=["sensor-9"])
    stuck = landed(world, other, cert, "waiting")
    with committed_flushes_off():
        notices.create(stuck, Kind.ACCEPTED)
    assert notices.flush_batch(other.pk, now=later) == []
    assert len(notices.flush_batch(other.pk, now=later + notices.MAX_HOLD)) == 2


class committed_flushes_off:  # noqa: N801
    """Create held notices without the flush their commit would trigger (the test flushes
    at chosen times)."""

    def __enter__(self):
        self.saved = notices.transaction.on_commit
        notices.transaction.on_commit = lambda fn: None

    def __exit__(self, *exc):
        notices.transaction.on_commit = self.saved


# ----------------------------------------------------------------------------- the target


@pytest.mark.parametrize("managed", [True, False])
def test_the_target_hears_which_endpoints_the_devices_were_told(world, managed):
    target = world.target if managed else make_account(KNOWN, "Acme (not managed)", managed=False)
    transfer = make_transfer(
        world.certs[0],
        world.requester,
        Transfer.Status.PENDING_ACCEPTANCE,
        target=target,
        pending_since=timezone.now(),
        tell_devices=True,
        device_endpoints={"data": TOLD, "typed": "" if managed else TOLD[0]},
    )
    notices.create(transfer, Kind.NEW)
    notice = Notice.objects.get(transfer=transfer, channel=Channel.EMAIL, kind=Kind.NEW)
    assert notice.recipient == target.emails[0]
    email = messages.render(notice)
    text = " ".join(email["text"].split())
    assert f"1. {TOLD[0]} (your account) 2. {TOLD[1]}" in text
    assert TOLD[0] in email["html"] and TOLD[1] in email["html"]
    asks = "please check that they connect to" in text and "confirm" in text
    assert asks is (not managed)  # only the target can say, when the portal cannot ask
    payload = messages.payload(notice)["transfer"]["devices"]
    assert payload["told"] == TOLD and payload["confirm"] is (not managed)

    # Not told: nothing said about it.
    quiet = make_transfer(
        world.certs[1],
        world.requester,
        Transfer.Status.PENDING_ACCEPTANCE,
        target=target,
        pending_since=timezone.now(),
    )
    notices.create(quiet, Kind.NEW)
    plain = Notice.objects.get(transfer=quiet, channel=Channel.EMAIL, kind=Kind.NEW)
    assert "devices were told" not in messages.render(plain)["text"]


def test_a_batchs_notice_to_an_unmanaged_target_names_the_endpoints_and_asks_to_confirm(world):
    make_account(KNOWN, "Acme (not managed)", managed=False)
    batch = batch_of(
        world, target_account_id=KNOWN, device_endpoints={"data": TOLD, "typed": TOLD[0]}
    )
    for cert in world.certs[:2]:
        make_transfer(
            cert,
            world.requester,
            Transfer.Status.PENDING_ACCEPTANCE,
            target_account_id=KNOWN,
            batch=batch,
            pending_since=timezone.now(),
        )
    digest = Notice.objects.create(
        batch=batch, channel=Channel.EMAIL, recipient="ops@x.example", kind=Kind.NEW
    )
    for t in batch.transfers.all():
        Notice.objects.create(
            transfer=t,
            batch=batch,
            channel=Channel.EMAIL,
            recipient="ops@x.example",
            kind=Kind.NEW,
            status=Notice.Status.BATCHED,
            digest=digest,
        )
    text = " ".join(messages.render(digest)["text"].split())
    assert f"1. {TOLD[0]} (your account) 2. {TOLD[1]}" in text
    assert "cannot tell whether the devices came back" in text
