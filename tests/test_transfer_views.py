"""Transfer pages: request with a plan, decisions, inbox, cancel; every persona and refusal."""

import pytest
from django.test import Client
from django.urls import reverse

from tests.conftest import TARGET, add_certificate, committed, iot_for, make_user
from transfers import inventory, workflow
from transfers.models import Certificate, Role, Transfer
from transfers.workflow import Options


@pytest.fixture
def cert(standin, source, target):
    iot = iot_for(source)
    made = add_certificate(iot, "ACTIVE", ["DevicePublish"], thing="sensor-1")
    run, _ = inventory.queue_sync(source, "us-east-1")
    inventory.sync_region(run.pk)
    return Certificate.objects.get(certificate_id=made["certificateId"])


@pytest.fixture
def carol(target):
    return make_user("carol", (target, Role.ADMIN))


def form(**overrides):
    data = {
        "target": TARGET,
        "message": "For Acme",
        "reason": "Sale of the fleet",
        "deactivate": "on",
        "detach_policies": "on",
        "detach_things": "on",
        "restore": "on",
    }
    data.update(overrides)
    return data


def requested(cert, requester) -> Transfer:
    return workflow.request_transfer(
        requester, cert, target_account_id=TARGET, message="m", reason="r", options=Options()
    )


def pending(cert, requester, approver) -> Transfer:
    transfer = requested(cert, requester)
    committed(workflow.approve, approver, transfer.pk)
    transfer.refresh_from_db()
    assert transfer.status == Transfer.Status.PENDING_ACCEPTANCE
    return transfer


class TestRequest:
    def url(self, cert):
        return reverse("transfer_new", args=[cert.pk])

    def test_preview_shows_the_plan_then_submit_creates_it(self, client, requester, cert):
        client.force_login(requester)
        page = client.post(self.url(cert), form(action="preview"))
        body = page.content.decode()
        assert "Deactivate the certificate" in body and "DevicePublish" in body
        assert not Transfer.objects.exists()
        fingerprint = page.context["plan"].fingerprint
        response = client.post(self.url(cert), form(action="submit", fingerprint=fingerprint))
        transfer = Transfer.objects.get()
        assert response.status_code == 302 and response["Location"] == transfer.get_absolute_url()
        assert transfer.requester == requester and transfer.reason == "Sale of the fleet"

    def test_submit_without_a_seen_plan_only_previews(self, client, requester, cert):
        client.force_login(requester)
        response = client.post(self.url(cert), form(action="submit"))
        assert (
            response.status_code == 200 and "Plan, from AWS just now" in response.content.decode()
        )
        assert not Transfer.objects.exists()

    def test_a_changed_certificate_needs_a_new_look(self, client, requester, cert):
        client.force_login(requester)
        fingerprint = (
            client.post(self.url(cert), form(action="preview")).context["plan"].fingerprint
        )
        iot_for(cert.account).detach_policy(policyName="DevicePublish", target=cert.arn)
        response = client.post(self.url(cert), form(action="submit", fingerprint=fingerprint))
        assert "changed in AWS" in response.content.decode()
        assert not Transfer.objects.exists()

    @pytest.mark.parametrize(
        ("overrides", "message"),
        [
            ({"target": ""}, "Choose the account"),
            ({"target": "111111111111"}, "Select a valid choice"),
            ({"message": "x" * 129}, "at most 128 characters"),
            ({"message": "bad\u0007bell"}, "Control characters"),
            ({"reason": ""}, "This field is required"),
            ({"target": "new", "new_target_id": "123"}, "Select a valid choice"),
        ],
    )
    def test_bad_input_gets_a_clear_message_and_changes_nothing(
        self, client, requester, cert, overrides, message
    ):
        client.force_login(requester)
        response = client.post(self.url(cert), form(action="submit", fingerprint="x", **overrides))
        assert response.status_code == 200
        assert message in response.content.decode()
        assert not Transfer.objects.exists()

    def test_an_account_admin_may_name_a_new_account(self, client, source, cert):
        admin = make_user("acct-admin", (source, Role.ADMIN))
        client.force_login(admin)
        bad = client.post(
            self.url(cert), form(target="new", new_target_id="12ab", action="preview")
        )
        assert "exactly 12 digits" in bad.content.decode()
        page = client.post(
            self.url(cert), form(target="new", new_target_id="999999999999", action="preview")
        )
        assert "not known to the portal" in page.content.decode()

    def test_a_viewer_gets_403_and_an_outsider_404(self, client, viewer, outsider, cert):
        client.force_login(viewer)
        assert client.get(self.url(cert)).status_code == 403
        client.force_login(outsider)
        assert client.post(self.url(cert), form(action="preview")).status_code == 404
        assert not Transfer.objects.exists()

    def test_anonymous_is_sent_to_login(self, client, cert):
        assert client.post(self.url(cert), form()).status_code == 302
        assert not Transfer.objects.exists()

    def test_missing_csrf_token_is_refused(self, requester, cert):
        strict = Client(enforce_csrf_checks=True)
        strict.force_login(requester)
        response = strict.post(self.url(cert), form(action="submit", fingerprint="x"))
        assert response.status_code == 403
        assert not Transfer.objects.exists()


class TestDecisions:
    def test_an_approver_approves_and_the_page_goes_live(
        self, client, requester, approver, cert, django_capture_on_commit_callbacks
    ):
        transfer = requested(cert, requester)
        client.force_login(approver)
        page = client.get(transfer.get_absolute_url()).content.decode()
        assert "Approve" in page
        with django_capture_on_commit_callbacks(execute=False) as queued:
            response = client.post(
                reverse("transfer_approve", args=[transfer.pk]), {"comment": "fine"}
            )
        assert response.status_code == 302 and len(queued) == 1
        transfer.refresh_from_db()
        assert transfer.status == Transfer.Status.APPROVED
        live = client.get(transfer.get_absolute_url()).content.decode()
        assert 'hx-trigger="every 2s"' in live
        fragment = client.get(
            transfer.get_absolute_url(), headers={"HX-Request": "true", "HX-Target": "live"}
        ).content.decode()
        assert fragment.lstrip().startswith('<div id="live"') and "<html" not in fragment
        queued[0]()  # the worker
        done = client.get(
            transfer.get_absolute_url(), headers={"HX-Request": "true", "HX-Target": "live"}
        ).content.decode()
        assert "Pending acceptance" in done and "every 2s" not in done

    def test_self_approval_is_refused_and_changes_nothing(self, client, source, cert):
        both = make_user("both", (source, Role.REQUESTER), (source, Role.APPROVER))
        transfer = requested(cert, both)
        client.force_login(both)
        assert (
            "nobody approves their own" in client.get(transfer.get_absolute_url()).content.decode()
        )
        response = client.post(reverse("transfer_approve", args=[transfer.pk]), follow=True)
        assert response.status_code == 403
        assert Transfer.objects.get(pk=transfer.pk).status == Transfer.Status.REQUESTED

    def test_approve_needs_post(self, client, requester, approver, cert):
        transfer = requested(cert, requester)
        client.force_login(approver)
        assert client.get(reverse("transfer_approve", args=[transfer.pk])).status_code == 405
        assert Transfer.objects.get(pk=transfer.pk).status == Transfer.Status.REQUESTED

    def test_an_outsider_gets_404_for_every_action(self, client, requester, outsider, cert):
        transfer = requested(cert, requester)
        client.force_login(outsider)
        assert client.get(transfer.get_absolute_url()).status_code == 404
        for action in (
            "approve",
            "decline",
            "withdraw",
            "cancel",
            "retry",
            "accept",
            "reject",
            "reconcile",
        ):
            assert client.post(reverse(f"transfer_{action}", args=[transfer.pk])).status_code == 404
        assert Transfer.objects.get(pk=transfer.pk).status == Transfer.Status.REQUESTED

    def test_a_viewer_may_not_approve(self, client, requester, viewer, cert):
        transfer = requested(cert, requester)
        client.force_login(viewer)
        assert client.post(reverse("transfer_approve", args=[transfer.pk])).status_code == 403
        assert Transfer.objects.get(pk=transfer.pk).status == Transfer.Status.REQUESTED

    def test_decline_without_a_comment_is_explained(self, client, requester, approver, cert):
        transfer = requested(cert, requester)
        client.force_login(approver)
        response = client.post(
            reverse("transfer_decline", args=[transfer.pk]), {"comment": ""}, follow=True
        )
        assert "Say why you decline" in response.content.decode()
        assert Transfer.objects.get(pk=transfer.pk).status == Transfer.Status.REQUESTED

    def test_a_replayed_approval_is_refused(self, client, requester, approver, cert, source):
        transfer = pending(cert, requester, approver)
        second = make_user("approver2", (source, Role.APPROVER))
        client.force_login(second)
        response = client.post(reverse("transfer_approve", args=[transfer.pk]), follow=True)
        assert "Only a requested transfer can be approved" in response.content.decode()
        assert transfer.events.filter(action="approve").count() == 1

    def test_the_approvals_queue_lists_requests_for_my_accounts(
        self, client, requester, approver, cert
    ):
        transfer = requested(cert, requester)
        client.force_login(approver)
        body = client.get(reverse("approvals")).content.decode()
        assert f"#{transfer.pk}" in body
        client.force_login(requester)
        assert f"#{transfer.pk}<" not in client.get(reverse("approvals")).content.decode()

    def test_the_requester_withdraws(self, client, requester, cert):
        transfer = requested(cert, requester)
        client.force_login(requester)
        client.post(reverse("transfer_withdraw", args=[transfer.pk]))
        assert Transfer.objects.get(pk=transfer.pk).status == Transfer.Status.CANCELLED


class TestInbox:
    def test_the_target_admin_sees_and_accepts(self, client, requester, approver, carol, cert):
        transfer = pending(cert, requester, approver)
        client.force_login(carol)
        assert f"#{transfer.pk}" in client.get(reverse("incoming")).content.decode()
        response = client.post(
            reverse("transfer_accept", args=[transfer.pk]), {"set_as_active": "on"}
        )
        assert response.status_code == 302
        transfer.refresh_from_db()
        assert transfer.status == Transfer.Status.ACCEPTED and transfer.set_as_active

    def test_reject_needs_a_valid_reason(self, client, requester, approver, carol, cert):
        transfer = pending(cert, requester, approver)
        client.force_login(carol)
        for bad in ("", "x" * 129, "<script>\u0007</script>"):
            page = client.post(
                reverse("transfer_reject", args=[transfer.pk]), {"reason": bad}, follow=True
            )
            assert "<script>alert" not in page.content.decode()
            assert Transfer.objects.get(pk=transfer.pk).status == Transfer.Status.PENDING_ACCEPTANCE
        with django_capture():
            client.post(
                reverse("transfer_reject", args=[transfer.pk]),
                {"reason": "<script>alert(1)</script>"},
            )
        transfer.refresh_from_db()
        assert transfer.status == Transfer.Status.REJECTED
        page = client.get(transfer.get_absolute_url()).content.decode()
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page and "<script>alert" not in page
        assert transfer.restore_state == Transfer.Restore.DONE

    def test_the_source_side_may_not_accept(self, client, requester, approver, cert):
        transfer = pending(cert, requester, approver)
        client.force_login(requester)
        assert client.post(reverse("transfer_accept", args=[transfer.pk])).status_code == 403
        assert f"#{transfer.pk}" not in client.get(reverse("incoming")).content.decode()
        assert Transfer.objects.get(pk=transfer.pk).status == Transfer.Status.PENDING_ACCEPTANCE

    def test_cancel_from_the_source_restores(self, client, requester, approver, cert):
        transfer = pending(cert, requester, approver)
        client.force_login(requester)
        with django_capture():
            client.post(reverse("transfer_cancel", args=[transfer.pk]))
        transfer.refresh_from_db()
        assert transfer.status == Transfer.Status.CANCELLED
        assert transfer.restore_state == Transfer.Restore.DONE
        detail = client.get(transfer.get_absolute_url()).content.decode()
        assert "CancelCertificateTransfer" in detail and "Restored" in detail


def django_capture():
    from django.test import TestCase

    return TestCase.captureOnCommitCallbacks(execute=True)


class TestLists:
    def test_filters_and_visibility(self, client, requester, approver, outsider, cert):
        transfer = requested(cert, requester)
        client.force_login(requester)
        assert f"#{transfer.pk}" in client.get(reverse("transfer_list")).content.decode()
        assert (
            f"#{transfer.pk}"
            not in client.get(reverse("transfer_list"), {"status": "accepted"}).content.decode()
        )
        assert (
            f"#{transfer.pk}"
            in client.get(
                reverse("transfer_list"), {"requester": "requester", "since": "2000-01-01"}
            ).content.decode()
        )
        bad = client.get(reverse("transfer_list"), {"since": "yesterday"}).content.decode()
        assert "not understood" in bad
        client.force_login(outsider)
        assert f"#{transfer.pk}" not in client.get(reverse("transfer_list")).content.decode()

    def test_the_certificate_page_shows_its_history(self, client, requester, cert):
        transfer = requested(cert, requester)
        client.force_login(requester)
        body = client.get(cert.get_absolute_url()).content.decode()
        assert f"#{transfer.pk}" in body and "Request a transfer" in body

    def test_the_list_query_count_is_constant(
        self, client, requester, approver, cert, source, django_assert_max_num_queries
    ):
        requested(cert, requester)
        client.force_login(requester)
        with django_assert_max_num_queries(12) as one:
            client.get(reverse("transfer_list"))
        for n in range(20):
            Transfer.objects.create(
                source=source,
                region="us-east-1",
                certificate_id=f"{n:064x}",
                certificate_arn="arn",
                target_account_id=TARGET,
                requester=requester,
                reason="r",
                status="declined",
            )
        with django_assert_max_num_queries(12) as many:
            client.get(reverse("transfer_list"))
        assert len(one.captured_queries) == len(many.captured_queries)
