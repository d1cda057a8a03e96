"""Issue 22's smaller items: a notice sent again goes out once and to the account's URL now,
the admin's account form checks webhook URLs, API tokens for staff come from superusers."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib.auth.models import Permission, User
from django.core import mail
from django.urls import reverse
from django.utils import timezone

from tests.test_notices import Receiver
from transfers import notices
from transfers.models import ApiToken, AwsAccount, Notice, Transfer


@pytest.fixture
def transfer(source, target, requester) -> Transfer:
    return Transfer.objects.create(
        source=source,
        region="us-east-1",
        certificate_id="c" * 64,
        certificate_arn="arn:aws:iot:us-east-1:111111111111:cert/" + "c" * 64,
        target_account_id=target.account_id,
        target=target,
        requester=requester,
        reason="test",
    )


class TestNoticeSentAgain:
    def test_the_beat_does_not_send_it_twice_while_a_worker_sends_it(
        self, transfer, monkeypatch, django_capture_on_commit_callbacks
    ):
        # Made an hour ago, sent then; a person sends it again now.
        notice = Notice.objects.create(
            transfer=transfer,
            channel=Notice.Channel.EMAIL,
            recipient="iot@acme.example",
            kind=Notice.Kind.NEW,
            status=Notice.Status.SENT,
            created=timezone.now() - timedelta(hours=1),
        )
        notices.resend(notice)
        real = notices._send_email
        beat_ran = []

        def slow(being_sent):
            # The beat's sweep runs while the worker is still delivering it.
            if not beat_ran:
                with django_capture_on_commit_callbacks(execute=True):
                    beat_ran.append(notices.resend_stale())
            real(being_sent)

        monkeypatch.setattr(notices, "_send_email", slow)
        assert notices.send(notice.pk) == "sent"
        assert beat_ran == [0]
        assert [m.to for m in mail.outbox] == [["iot@acme.example"]]

    def test_a_worker_that_took_it_long_ago_and_died_is_swept(self, transfer):
        notice = Notice.objects.create(
            transfer=transfer,
            channel=Notice.Channel.EMAIL,
            recipient="iot@acme.example",
            kind=Notice.Kind.NEW,
            status=Notice.Status.SENDING,
            picked_up=timezone.now() - notices.STALE_SENDING - timedelta(minutes=1),
            created=timezone.now() - timedelta(hours=1),
        )
        assert notices.resend_stale() == 1
        notice.refresh_from_db()
        assert notice.status == Notice.Status.PENDING

    def test_a_webhook_goes_to_the_accounts_url_now(self, transfer, target, settings):
        settings.WEBHOOK_ALLOW_PRIVATE = True  # the receivers are on loopback
        secret = notices.new_webhook_secret()
        old, new = Receiver(secret), Receiver(secret)
        try:
            notice = Notice.objects.create(
                transfer=transfer,
                channel=Notice.Channel.WEBHOOK,
                recipient=old.url,
                kind=Notice.Kind.NEW,
                status=Notice.Status.FAILED,
            )
            # The receiver moved; the account has the new URL (and the same secret).
            AwsAccount.objects.filter(pk=target.pk).update(
                webhook_url=new.url, webhook_secret=secret
            )
            notices.resend(notice)
            assert notices.send(notice.pk) == "sent"
        finally:
            old.close()
            new.close()
        assert old.seen_ids == []
        assert [p["notice_id"] for p in new.accepted] == [notice.pk]

    def test_a_webhook_whose_account_dropped_its_url_is_not_sent(self, transfer, target):
        AwsAccount.objects.filter(pk=target.pk).update(
            webhook_url="", webhook_secret=notices.new_webhook_secret()
        )
        notice = Notice.objects.create(
            transfer=transfer,
            channel=Notice.Channel.WEBHOOK,
            # Loopback, refused without connecting (WEBHOOK_ALLOW_PRIVATE is off).
            recipient="http://127.0.0.1:9/in",
            kind=Notice.Kind.NEW,
        )
        with pytest.raises(notices.DeliveryError, match="no webhook URL any more"):
            notices.send(notice.pk)


class TestAdminAccountForm:
    """The Django admin saves accounts with the portal's own form and its checks."""

    def form(self, **changes) -> dict:
        data = {
            "account_id": "555555555555",
            "name": "Partner",
            "regions": "",
            "role_arn": "",
            "external_id": "",
            "api_rate": "10",
            "contact_emails": "",
            "webhook_url": "",
            "expiry_days": "",
            "grants-TOTAL_FORMS": "0",
            "grants-INITIAL_FORMS": "0",
        }
        data.update(changes)
        return data

    @pytest.fixture
    def root(self, client, db):
        client.force_login(User.objects.create_superuser("root", "root@example.com", "pw"))
        return client

    @pytest.mark.parametrize(
        "url", ["http://10.0.0.8/hook", "https://169.254.169.254/latest", "http://127.0.0.1:9/"]
    )
    def test_a_private_webhook_url_is_refused_and_nothing_is_saved(self, root, url):
        page = root.post(ADMIN_ADD, self.form(webhook_url=url))
        assert page.status_code == 200
        assert "only calls public internet addresses" in page.content.decode()
        assert not AwsAccount.objects.exists()

    def test_a_private_url_is_refused_when_editing_too(self, root, target):
        page = root.post(
            reverse("admin:transfers_awsaccount_change", args=[target.pk]),
            self.form(account_id=target.account_id, webhook_url="http://10.0.0.8/hook"),
        )
        assert "only calls public internet addresses" in page.content.decode()
        target.refresh_from_db()
        assert target.webhook_url == ""

    def test_a_known_account_without_a_webhook_is_saved(self, root):
        assert root.get(ADMIN_ADD).status_code == 200
        assert root.post(ADMIN_ADD, self.form()).status_code == 302
        saved = AwsAccount.objects.get()
        assert saved.account_id == "555555555555"
        change = root.get(reverse("admin:transfers_awsaccount_change", args=[saved.pk]))
        assert change.status_code == 200


ADMIN_ADD = "/admin/transfers/awsaccount/add/"


class TestApiTokensForHigherRoles:
    """A token skips the second factor: only a superuser issues one for staff or a superuser."""

    add = "/admin/transfers/apitoken/add/"

    @pytest.fixture
    def token_clerk(self, client, db) -> User:
        """Staff with the "add API token" permission, and nothing more."""
        clerk = User.objects.create_user("clerk", "clerk@example.com", "pw", is_staff=True)
        clerk.user_permissions.add(
            Permission.objects.get(codename="add_apitoken"),
            Permission.objects.get(codename="view_apitoken"),
        )
        client.force_login(clerk)
        return clerk

    @pytest.mark.parametrize("whom", ["superuser", "staff"])
    def test_staff_cannot_issue_one_for_a_superuser_or_staff(
        self, client, token_clerk, requester, whom
    ):
        if whom == "superuser":
            higher = User.objects.create_superuser("root", "root@example.com", "pw")
        else:
            higher = User.objects.create_user("ops", "ops@example.com", "pw", is_staff=True)
        offered = client.get(self.add).context["adminform"].form.fields["user"].queryset
        assert list(offered) == [requester]
        page = client.post(self.add, {"user": higher.pk, "days": "7"})
        assert page.status_code == 200 and "Select a valid choice" in page.content.decode()
        assert not ApiToken.objects.exists()

    def test_staff_issue_one_for_a_plain_user(self, client, token_clerk, requester):
        page = client.post(self.add, {"user": requester.pk, "days": "7"})
        assert page.status_code == 200 and page.context["secret"]
        assert ApiToken.objects.get().user == requester

    def test_a_superuser_issues_one_for_staff(self, client, db):
        client.force_login(User.objects.create_superuser("root", "root@example.com", "pw"))
        ops = User.objects.create_user("ops", "ops@example.com", "pw", is_staff=True)
        page = client.post(self.add, {"user": ops.pk, "days": "7"})
        assert page.status_code == 200 and page.context["secret"]
        assert ApiToken.objects.get().user == ops
