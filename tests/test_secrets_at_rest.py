"""Webhook signing secrets are encrypted in the database, with key rotation."""

from __future__ import annotations

from io import StringIO
from types import SimpleNamespace

import pytest
from cryptography.fernet import Fernet
from django.apps import apps
from django.core.exceptions import ImproperlyConfigured
from django.core.management import call_command
from django.db import connection

from transfers import notices
from transfers.models import AwsAccount

KEY_1, KEY_2 = Fernet.generate_key().decode(), Fernet.generate_key().decode()


def raw_secret(account: AwsAccount) -> str:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT webhook_secret FROM transfers_awsaccount WHERE id = %s", [account.pk]
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
    assert "Re-encrypted 1 webhook secret(s)" in out.getvalue()
    assert raw_secret(target) != before
    keys.FIELD_ENCRYPTION_KEYS = [KEY_2]  # the old key dropped
    assert AwsAccount.objects.get(pk=target.pk).webhook_secret == secret


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
    import importlib

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
