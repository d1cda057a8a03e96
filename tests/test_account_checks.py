"""An account's role must be in that account (on save, and with STS's answer), and its id is
fixed once saved."""

from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError
from django.db import IntegrityError

from tests.conftest import add_certificate, make_account
from transfers import aws, inventory
from transfers.models import AccountGrant, AwsAccount, Certificate, Role, SyncRun

# The account moto says the tests' own credentials are in: the portal's "home" account.
HOME = "123456789012"


def form(**changes) -> dict:
    data = {
        "account_id": "555555555555",
        "name": "Partner",
        "managed": "on",
        "regions": "us-east-1",
        "role_arn": "arn:aws:iam::555555555555:role/TransferPortal",
        "external_id": "",
        "api_rate": "10",
        "contact_emails": "",
        "webhook_url": "",
        "expiry_days": "",
    }
    data.update(changes)
    return data


class TestRoleBelongsToTheAccount:
    def test_a_role_in_another_account_is_refused_and_nothing_is_saved(
        self, client, portal_admin, standin
    ):
        client.force_login(portal_admin)
        page = client.post(
            "/accounts/new/", form(role_arn="arn:aws:iam::111111111111:role/TransferPortal")
        )
        assert page.status_code == 200
        assert "This role is in account 111111111111, not 555555555555" in page.content.decode()
        assert not AwsAccount.objects.filter(account_id="555555555555").exists()

    def test_a_role_in_the_account_is_saved(self, client, portal_admin, standin):
        client.force_login(portal_admin)
        assert client.post("/accounts/new/", form()).status_code == 302
        assert AwsAccount.objects.get(account_id="555555555555").role_arn.endswith("Portal")

    def test_the_model_refuses_it_too(self, source):
        source.role_arn = "arn:aws:iam::222222222222:role/TransferPortal"
        with pytest.raises(ValidationError, match="This role is in account 222222222222"):
            source.full_clean()

    def test_sts_naming_another_account_stops_every_call(self, source, standin):
        # A row saved before this check (or changed behind the form's back).
        AwsAccount.objects.filter(pk=source.pk).update(
            role_arn="arn:aws:iam::222222222222:role/TransferPortal"
        )
        source.refresh_from_db()
        with pytest.raises(aws.AwsError) as refused:
            aws.client(source, "us-east-1")
        assert refused.value.code == "WrongAccount"
        assert "is in account 222222222222, not 111111111111" in str(refused.value)
        assert "belongs to another AWS account" in refused.value.user_message

    def test_the_role_in_its_own_account_works(self, source, standin):
        assert aws.client(source, "us-east-1").list_certificates()["certificates"] == []


class TestAccountWithoutRole:
    """Without a role ARN the portal uses its own credentials: only for the account STS says
    they are in, and for at most one managed account."""

    def test_another_id_without_a_role_is_refused_and_nothing_is_saved(
        self, client, portal_admin, standin
    ):
        client.force_login(portal_admin)
        page = client.post("/accounts/new/", form(role_arn=""))
        assert page.status_code == 200
        text = page.content.decode()
        assert "Cannot reach account 555555555555" in text
        assert "own credentials are in account 123456789012, not 555555555555" in text
        assert not AwsAccount.objects.filter(account_id="555555555555").exists()

    def test_the_portals_own_account_without_a_role_is_saved(self, client, portal_admin, standin):
        client.force_login(portal_admin)
        assert client.post("/accounts/new/", form(account_id=HOME, role_arn="")).status_code == 302
        assert AwsAccount.objects.get(account_id=HOME).role_arn == ""

    def test_a_row_without_a_role_never_gets_the_home_accounts_certificates(
        self, db, standin, django_capture_on_commit_callbacks
    ):
        add_certificate(aws.client(make_account(HOME, "Home", managed=False), "us-east-1"))
        # Saved behind the form's back: another id, no role.
        squatter = make_account("555555555555", "Squatter", role_arn="")
        with pytest.raises(aws.AwsError) as refused:
            aws.client(squatter, "us-east-1")
        assert refused.value.code == "NotOwnAccount"
        assert "belong to another AWS account" in refused.value.user_message

        with django_capture_on_commit_callbacks(execute=True):
            run, _ = inventory.queue_sync(squatter, "us-east-1")
        run.refresh_from_db()
        assert run.status == SyncRun.Status.FAILED
        assert not Certificate.objects.filter(account=squatter).exists()

    def test_a_second_managed_account_without_a_role_is_refused(
        self, client, portal_admin, standin
    ):
        make_account(HOME, "Home", role_arn="")
        client.force_login(portal_admin)
        page = client.post("/accounts/new/", form(role_arn=""))
        assert page.status_code == 200
        assert "Only one managed account can go without a role ARN" in page.content.decode()
        assert not AwsAccount.objects.filter(account_id="555555555555").exists()
        with pytest.raises(IntegrityError):
            make_account("555555555555", role_arn="")

    def test_known_only_accounts_need_no_role_however_many(self, db):
        make_account(HOME, "Home", role_arn="")
        make_account("555555555555", managed=False)
        make_account("666666666666", managed=False)
        assert AwsAccount.objects.filter(role_arn="").count() == 3


class TestAccountIdIsFixed:
    def test_the_edit_form_ignores_a_new_account_id(self, client, portal_admin, source, standin):
        AccountGrant.objects.create(account=source, user=portal_admin, role=Role.ADMIN)
        client.force_login(portal_admin)
        page = client.get(f"/accounts/{source.pk}/edit/")
        assert 'name="account_id"' in page.content.decode() and "disabled" in page.content.decode()
        changed = form(
            account_id="999999999999",
            name="Renamed",
            regions="us-east-1",
            role_arn=source.role_arn,
        )
        assert client.post(f"/accounts/{source.pk}/edit/", changed).status_code == 302
        source.refresh_from_db()
        assert (source.account_id, source.name) == ("111111111111", "Renamed")

    def test_the_model_refuses_a_changed_id(self, source):
        source.account_id = "999999999999"
        source.role_arn = ""
        with pytest.raises(ValidationError, match="cannot change once saved"):
            source.full_clean()
