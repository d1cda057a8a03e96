"""Webhook signing secrets and Slack webhook URLs are encrypted in the database, with key
rotation."""

from __future__ import annotations

import importlib
from io import StringIO
from types import SimpleNamespace

import pytest
from cryptography.fernet import Fernet
from django.apps import apps
from django.core.exceptions import ImproperlyConfigured
from django.core.management import call_command
from django.db import connection

from tests.conftest import make_account
from transfers import notices
from transfers.models import AwsAccount

KEY_1, KEY_2 = Fernet.generate_key().decode(), Fernet.generate_key().decode()


SLACK_URL = "https://hooks.slack.com/services/T0AAAAAAA/B0BBBBBBB/abcdefghijklmnopqrstuvwx"


def raw_secret(account: AwsAccount, column: str = "webhook_secret") -> str:
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT {column} FROM transfers_awsaccount WHERE id = %s",  # noqa: S608
            [account.pk],
        )
        return cursor.fetchone()[0]


@pytest.fixture
def keys(settings):
    settings.FIELD_ENCRYPTION_KEYS = [KEY_1]
    return settings


def test_a_secret_is_stored_encrypted_and_read_plain(keys, target):
    secret = notices.new_webhook_secret()
    target.webhook_secret = secret
    target.save()
    stored = raw_secret(target)
    assert secret not in stored and stored.startswith("gAAAAA")  # a Fernet token
    assert AwsAccount.objects.get(pk=target.pk).webhook_secret == secret


def test_no_secret_stays_empty(keys, target):
    assert raw_secret(target) == "" and AwsAccount.objects.get(pk=target.pk).webhook_secret == ""


def test_rotation_by_a_list_of_keys(keys, target):
    secret = notices.new_webhook_secret()
    target.webhook_secret = secret
    target.save()
    before = raw_secret(target)
    keys.FIELD_ENCRYPTION_KEYS = [KEY_2, KEY_1]  # the new key first, the old one still there
    assert AwsAccount.objects.get(pk=target.pk).webhook_secret == secret
    out = StringIO()
    call_command("rotate_encryption_keys", stdout=out)
    assert "Re-encrypted 1 webhook secret(s) and 0 Slack webhook URL(s)" in out.getvalue()
    assert raw_secret(target) != before
    keys.FIELD_ENCRYPTION_KEYS = [KEY_2]  # the old key dropped
    assert AwsAccount.objects.get(pk=target.pk).webhook_secret == secret


def test_rotation_covers_the_slack_urls(keys, target, other):
    target.slack_webhook_url = SLACK_URL
    target.save()
    other.webhook_secret = "whsec_x"
    other.save()
    before = raw_secret(target, "slack_webhook_url")
    keys.FIELD_ENCRYPTION_KEYS = [KEY_2, KEY_1]
    out = StringIO()
    call_command("rotate_encryption_keys", stdout=out)
    assert "Re-encrypted 1 webhook secret(s) and 1 Slack webhook URL(s)" in out.getvalue()
    assert raw_secret(target, "slack_webhook_url") != before
    keys.FIELD_ENCRYPTION_KEYS = [KEY_2]
    target.refresh_from_db()
    other.refresh_from_db()
    assert target.slack_webhook_url == SLACK_URL and target.webhook_secret == ""
    assert other.webhook_secret == "whsec_x" and other.slack_webhook_url == ""


def test_a_slack_url_is_stored_encrypted_and_read_plain(keys, target):
    target.slack_webhook_url = SLACK_URL
    target.save()
    stored = raw_secret(target, "slack_webhook_url")
    assert "hooks.slack.com" not in stored and stored.startswith("gAAAAA")
    assert AwsAccount.objects.get(pk=target.pk).slack_webhook_url == SLACK_URL


def test_a_missing_key_says_so(keys, target):
    target.webhook_secret = notices.new_webhook_secret()
    target.save()
    keys.FIELD_ENCRYPTION_KEYS = [KEY_2]
    with pytest.raises(ImproperlyConfigured, match="cannot be decrypted"):
        AwsAccount.objects.get(pk=target.pk)


def test_a_malformed_key_says_so(keys, target):
    keys.FIELD_ENCRYPTION_KEYS = ["not-a-key"]
    target.webhook_secret = "whsec_x"
    with pytest.raises(ImproperlyConfigured, match="32 url-safe base64-encoded bytes"):
        target.save()


def test_the_migration_encrypts_existing_plain_secrets(keys, target):
    migration = importlib.import_module("transfers.migrations.0010_encrypt_webhook_secret")
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE transfers_awsaccount SET webhook_secret = %s WHERE id = %s",
            ["whsec_plain", target.pk],
        )
    editor = SimpleNamespace(connection=connection)  # all the functions use of it
    migration.encrypt_existing(apps, editor)
    assert raw_secret(target).startswith("gAAAAA")
    assert AwsAccount.objects.get(pk=target.pk).webhook_secret == "whsec_plain"
    migration.decrypt_existing(apps, editor)
    assert raw_secret(target) == "whsec_plain"


def test_the_migration_encrypts_existing_slack_urls_and_takes_them_out_of_notices(
    keys, target, requester
):
    from transfers.models import Notice, TransferBatch

    migration = importlib.import_module("transfers.migrations.0013_secrets_at_rest")
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE transfers_awsaccount SET slack_webhook_url = %s WHERE id = %s",
            [SLACK_URL, target.pk],
        )
    # Notices made before it held a copy of the URL as their recipient.
    batch = TransferBatch.objects.create(
        source=make_account("555555555555"),
        target_account_id=target.account_id,
        requester=requester,
        region="us-east-1",
    )
    made = [
        Notice.objects.create(batch=batch, channel="slack", recipient=SLACK_URL, kind=kind)
        for kind in ("new", "reminder")
    ]
    mail_notice = Notice.objects.create(
        batch=batch, channel="email", recipient="ops@example.com", kind="new"
    )
    editor = SimpleNamespace(connection=connection)
    migration.encrypt_slack_urls(apps, editor)
    migration.relabel_slack_notices(apps, editor)

    assert raw_secret(target, "slack_webhook_url").startswith("gAAAAA")
    assert AwsAccount.objects.get(pk=target.pk).slack_webhook_url == SLACK_URL
    for notice in made:
        notice.refresh_from_db()
        assert notice.recipient == notices.slack_recipient(target.account_id)
    mail_notice.refresh_from_db()
    assert mail_notice.recipient == "ops@example.com"
    migration.decrypt_slack_urls(apps, editor)
    assert raw_secret(target, "slack_webhook_url") == SLACK_URL
