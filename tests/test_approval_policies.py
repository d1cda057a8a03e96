"""Approval policies: distinct approvers per source account, stricter for large batches and
unknown targets; the approvals page, the audit trail, the API and the emails follow."""

from __future__ import annotations

import pytest
from django.core import mail
from rest_framework.test import APIClient

from policies import mail as approval_mail
from policies.models import Approval, ApprovalPolicy, BatchApproval, PolicyChange
from tests.conftest import TARGET, add_certificate, api_token, committed, iot_for, make_user
from transfers import batches, inventory, workflow
from transfers.models import Certificate, Role, Transfer, TransferBatch, TransferEvent
from transfers.workflow import Options, TransferError

_serial = iter(range(1, 10_000))


def make_transfer(source, requester, target=None, batch=None, target_id="222222222222"):
    n = next(_serial)
    return Transfer.objects.create(
        source=source,
        region="us-east-1",
        certificate_id=f"{n:064x}",
        certificate_arn=f"arn:aws:iot:us-east-1:{source.account_id}:cert/{n:064x}",
        target_account_id=target.account_id if target else target_id,
        target=target,
        batch=batch,
        requester=requester,
        reason="Contract 42",
    )


@pytest.fixture
def second(source):
    return make_user("approver2", (source, Role.APPROVER))


@pytest.fixture
def two_approvers(source):
    return ApprovalPolicy.objects.create(account=source, approvals=2)


class TestTwoApprovers:
    def test_the_first_approval_waits_for_a_second_person(
        self, two_approvers, source, target, requester, approver, second
    ):
        transfer = make_transfer(source, requester, target)
        after_one = workflow.approve(approver, transfer.pk, "fine by me")
        assert after_one.status == Transfer.Status.REQUESTED
        event = TransferEvent.objects.get(transfer=transfer, action="approval")
        assert (event.actor, event.details["approvals"], event.details["required"]) == (
            approver,
            1,
            2,
        )
        done = workflow.approve(second, transfer.pk, "me too")
        assert done.status == Transfer.Status.APPROVED and done.approver == second
        assert list(Approval.objects.filter(transfer=transfer).values_list("user", flat=True)) == [
            approver.pk,
            second.pk,
        ]
        assert TransferEvent.objects.filter(transfer=transfer, action="approve").count() == 1

    def test_the_same_person_twice_counts_once(
        self, two_approvers, source, target, requester, approver
    ):
        transfer = make_transfer(source, requester, target)
        workflow.approve(approver, transfer.pk)
        with pytest.raises(TransferError) as refused:
            workflow.approve(approver, transfer.pk)
        assert refused.value.code == "already_approved" and refused.value.status == 409
        transfer.refresh_from_db()
        assert transfer.status == "requested" and transfer.approvals.count() == 1

    def test_the_requester_never_counts(self, two_approvers, source, target, approver):
        both = make_user("both", (source, Role.REQUESTER), (source, Role.APPROVER))
        transfer = make_transfer(source, both, target)
        with pytest.raises(TransferError) as refused:
            workflow.approve(both, transfer.pk)
        assert refused.value.code == "self_approval"
        assert not Approval.objects.exists()

    def test_one_decline_is_enough(
        self, two_approvers, source, target, requester, approver, second
    ):
        transfer = make_transfer(source, requester, target)
        workflow.approve(approver, transfer.pk)
        declined = workflow.decline(second, transfer.pk, "not this one")
        assert declined.status == Transfer.Status.DECLINED

    def test_the_pages_show_1_of_2_approvals(
        self, client, two_approvers, source, target, requester, approver, second
    ):
        transfer = make_transfer(source, requester, target)
        workflow.approve(approver, transfer.pk)
        client.force_login(second)
        assert "1 of 2 approvals" in client.get("/approvals/").content.decode()
        detail = client.get(transfer.get_absolute_url()).content.decode()
        assert "1 of 2 approvals" in detail and "approver" in detail
        assert "Approve</button>" in detail
        client.force_login(approver)
        detail = client.get(transfer.get_absolute_url()).content.decode()
        assert "You approved it: waiting for another approver." in detail
        assert "Approve</button>" not in detail
        assert "yours given" in client.get("/approvals/").content.decode()

    def test_the_web_form_adds_an_approval(
        self, client, two_approvers, source, target, requester, approver
    ):
        transfer = make_transfer(source, requester, target)
        client.force_login(approver)
        client.post(f"/transfers/{transfer.pk}/approve/", {"comment": "ok"})
        transfer.refresh_from_db()
        assert transfer.status == "requested" and transfer.approvals.count() == 1


class TestStricterRules:
    def test_an_unknown_target_needs_more(self, source, target, requester, approver, second):
        ApprovalPolicy.objects.create(account=source, approvals=1, unknown_target_approvals=2)
        known = make_transfer(source, requester, target)
        assert workflow.approve(approver, known.pk).status == "approved"
        unknown = make_transfer(source, requester, None, target_id="999999999999")
        assert workflow.approve(approver, unknown.pk).status == "requested"
        assert workflow.approve(second, unknown.pk).status == "approved"

    def test_a_large_batch_needs_more_and_is_decided_by_the_last(
        self, client, source, target, requester, approver, second
    ):
        ApprovalPolicy.objects.create(
            account=source, approvals=1, large_batch_size=2, large_batch_approvals=2
        )
        batch = TransferBatch.objects.create(
            source=source,
            region="us-east-1",
            target_account_id=target.account_id,
            requester=requester,
            reason="Move",
        )
        transfers = [make_transfer(source, requester, target, batch) for _ in range(3)]
        batches.approve(approver, batch, "ok")
        batches.approve_transfers(batch.pk, approver.pk, "ok")  # the background part
        batch.refresh_from_db()
        assert batch.decided_at is None  # still waiting: 1 of 2
        assert set(Transfer.objects.values_list("status", flat=True)) == {"requested"}
        client.force_login(second)
        page = client.get("/approvals/").content.decode()
        assert f"Batch #{batch.pk}" in page and "1 of 2 approvals" in page
        with pytest.raises(TransferError):
            batches.approve(approver, batch, "again")
        batches.approve(second, batch, "ok")
        batches.approve_transfers(batch.pk, second.pk, "ok")
        batch.refresh_from_db()
        assert batch.approver == second and batch.decided_at is not None
        assert all(t.approvals.count() == 2 for t in transfers)
        assert set(Transfer.objects.values_list("status", flat=True)) == {"approved"}
        assert BatchApproval.objects.filter(batch=batch).count() == 2

    def test_a_small_batch_needs_one(self, source, target, requester, approver):
        ApprovalPolicy.objects.create(
            account=source, approvals=1, large_batch_size=5, large_batch_approvals=2
        )
        batch = TransferBatch.objects.create(
            source=source,
            region="us-east-1",
            target_account_id=target.account_id,
            requester=requester,
            reason="Move",
        )
        make_transfer(source, requester, target, batch)
        batches.approve(approver, batch, "ok")
        batches.approve_transfers(batch.pk, approver.pk, "ok")
        assert Transfer.objects.get().status == "approved"


def api_for(user) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {api_token(user)}")
    return client


def test_the_api_follows_the_same_rules(two_approvers, source, target, requester, approver, second):
    transfer = make_transfer(source, requester, target)
    url = f"/api/transfers/{transfer.pk}/approve/"
    first = api_for(approver)
    assert first.post(url, {"comment": "ok"}, format="json").json()["status"] == "requested"
    again = first.post(url, {"comment": "ok"}, format="json")
    assert again.status_code == 409 and again.json()["error"]["code"] == "already_approved"
    assert api_for(second).post(url, {}, format="json").json()["status"] == "approved"


class TestMail:
    def test_approvers_are_told_a_request_waits_for_them(
        self, source, target, requester, approver, second, django_capture_on_commit_callbacks
    ):
        with django_capture_on_commit_callbacks(execute=True):
            transfer = make_transfer(source, requester, target)
            approval_mail.requested(transfer)
        # One message each: no approver sees who else approves for the account.
        assert sorted(m.to for m in mail.outbox) == [
            ["approver2@example.com"],
            ["approver@example.com"],
        ]
        for message in mail.outbox:
            assert f"Transfer #{transfer.pk}" in message.subject and "(0 of 1)" in message.subject
            assert message.cc == message.bcc == []

    def test_after_one_of_two_the_others_are_told(
        self,
        two_approvers,
        source,
        target,
        requester,
        approver,
        second,
        django_capture_on_commit_callbacks,
    ):
        transfer = make_transfer(source, requester, target)
        with django_capture_on_commit_callbacks(execute=True):
            workflow.approve(approver, transfer.pk)
        (message,) = mail.outbox
        assert "(1 of 2)" in message.subject and message.to == ["approver2@example.com"]

    def test_the_requester_is_told_of_a_decline(
        self, source, target, requester, approver, django_capture_on_commit_callbacks
    ):
        transfer = make_transfer(source, requester, target)
        with django_capture_on_commit_callbacks(execute=True):
            workflow.decline(approver, transfer.pk, "Wrong account")
        (message,) = mail.outbox
        assert message.to == ["requester@example.com"]
        assert "declined" in message.subject and "Wrong account" in message.body

    def certificates(self, source, n: int) -> list[Certificate]:
        iot = iot_for(source)
        made = [add_certificate(iot)["certificateId"] for _ in range(n)]
        inventory.sync_region(inventory.queue_sync(source, "us-east-1")[0].pk)
        return list(Certificate.objects.filter(certificate_id__in=made))

    def test_a_request_tells_its_approvers_where_it_is_made(
        self, standin, source, target, requester, approver, second
    ):
        (cert,) = self.certificates(source, 1)
        transfer = committed(
            workflow.request_transfer,
            requester,
            cert,
            target_account_id=TARGET,
            message="",
            reason="Contract 42",
            options=Options(),
        )
        assert all(f"Transfer #{transfer.pk}" in m.subject for m in mail.outbox)
        assert sorted(to for m in mail.outbox for to in m.to) == [
            "approver2@example.com",
            "approver@example.com",
        ]

    def test_a_batch_tells_its_approvers_once_where_it_is_made(
        self, standin, source, target, requester, approver
    ):
        certs = self.certificates(source, 3)
        batch = committed(
            batches.request_batch,
            requester,
            certs,
            [],
            target_account_id=TARGET,
            message="",
            reason="Contract 42",
            options=Options(),
        )
        (message,) = mail.outbox
        assert f"Batch #{batch.pk} of 3 transfers" in message.subject
        assert message.to == ["approver@example.com"]

    def test_a_row_saved_anywhere_else_sends_nothing(
        self, source, target, requester, approver, django_capture_on_commit_callbacks
    ):
        with django_capture_on_commit_callbacks(execute=True):
            make_transfer(source, requester, target)
            TransferBatch.objects.create(
                source=source, target_account_id=target.account_id, requester=requester
            )
        assert mail.outbox == []


class TestPolicyPage:
    def url(self, account) -> str:
        return f"/accounts/{account.pk}/approval-policy/"

    def test_an_account_admin_sets_it(self, client, source):
        admin = make_user("acct-admin", (source, Role.ADMIN))
        client.force_login(admin)
        assert client.get(self.url(source)).status_code == 200
        answer = client.post(
            self.url(source),
            {
                "approvals": "2",
                "large_batch_size": "100",
                "large_batch_approvals": "3",
                "unknown_target_approvals": "3",
            },
        )
        assert answer.status_code == 302
        policy = ApprovalPolicy.objects.get(account=source)
        assert (policy.approvals, policy.large_batch_size, policy.large_batch_approvals) == (
            2,
            100,
            3,
        )
        change = PolicyChange.objects.get()
        assert (change.user, change.before, change.after) == (
            admin,
            "1 approval",
            "2 approvals; 3 for batches of more than 100; 3 for an unknown target",
        )

    @pytest.mark.parametrize(
        ("data", "words"),
        [
            ({"approvals": "2", "large_batch_size": "10"}, "needs both the size"),
            ({"approvals": "3", "unknown_target_approvals": "2"}, "at least the 3"),
            ({"approvals": "9"}, "less than or equal to 5"),
            ({"approvals": "0"}, "greater than or equal to 1"),
        ],
    )
    def test_bad_input_changes_nothing(self, client, source, data, words):
        client.force_login(make_user("acct-admin", (source, Role.ADMIN)))
        page = client.post(self.url(source), data)
        assert page.status_code == 200 and words in page.content.decode()
        assert not ApprovalPolicy.objects.exists() and not PolicyChange.objects.exists()

    def test_an_approver_may_not(self, client, source, approver):
        client.force_login(approver)
        assert client.get(self.url(source)).status_code == 403
        assert client.post(self.url(source), {"approvals": "1"}).status_code == 403
        assert not ApprovalPolicy.objects.exists()

    def test_an_outsider_gets_404_and_anonymous_the_login(self, client, source, outsider):
        client.force_login(outsider)
        assert client.get(self.url(source)).status_code == 404
        client.logout()
        assert client.get(self.url(source)).url.startswith("/login/")

    def test_the_account_page_links_it(self, client, source):
        client.force_login(make_user("acct-admin", (source, Role.ADMIN)))
        assert self.url(source) in client.get(source.get_absolute_url()).content.decode()


def test_the_approvals_page_counts_in_a_fixed_number_of_queries(
    client, two_approvers, source, target, requester, approver, second
):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    def queries() -> int:
        with CaptureQueriesContext(connection) as captured:
            assert client.get("/approvals/").status_code == 200
        return len(captured)

    workflow.approve(approver, make_transfer(source, requester, target).pk)
    client.force_login(second)
    few = queries()
    for _ in range(4):
        workflow.approve(approver, make_transfer(source, requester, target).pk)
    assert queries() == few
