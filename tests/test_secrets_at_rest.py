"""Webhook signing secrets, Slack webhook URLs, authenticator app seeds and backup codes are
encrypted in the database, with key rotation."""

from __future__ import annotations

import importlib
import time
from base64 import b32decode
from io import StringIO
from types import SimpleNamespace

import pytest
from cryptography.fernet import Fernet
from django.apps import apps
from django.core.exceptions import ImproperlyConfigured
from django.core.management import call_command
from django.db import connection
from django.test import Client
from django.urls import reverse
from django_otp.oath import TOTP
from django_otp.plugins.otp_static.models import StaticDevice
from django_otp.plugins.otp_totp.models import TOTPDevice

from tests.conftest import make_account
from transfers import notices
from transfers.models import AuthenticatorApp, AwsAccount, BackupCodes

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
    assert "Re-encrypted 1 webhook secret(s), 0 Slack webhook URL(s)" in out.getvalue()
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
    assert "Re-encrypted 1 webhook secret(s), 1 Slack webhook URL(s)" in out.getvalue()
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


# ----------------------------------------------------------------- the second factor's


def everything_stored() -> str:
    """Every value of every table, as text: what a copy of the database would give away."""
    parts = []
    with connection.cursor() as cursor:
        for table in connection.introspection.table_names():
            cursor.execute(f"SELECT * FROM {connection.ops.quote_name(table)}")  # noqa: S608
            parts += [str(value) for row in cursor.fetchall() for value in row]
    return "\n".join(parts)


def code_now(seed: bytes) -> str:
    totp = TOTP(seed)
    totp.time = time.time()
    return f"{totp.token():06d}"


def enrol(username: str) -> tuple[bytes, list[str]]:
    """Enrol through the pages, as a person does: the seed and the backup codes shown once."""
    client = Client()
    client.post(reverse("login"), {"username": username, "password": "pw"})
    page = client.get(reverse("second_factor_enrol"))
    seed = b32decode(page.context["secret"])
    done = client.post(reverse("second_factor_enrol"), {"code": code_now(seed)})
    assert "Authenticator set up" in done.content.decode()
    return seed, done.context["codes"]


def test_an_enrolled_seed_and_backup_codes_are_nowhere_in_clear(keys, approver):
    seed, codes = enrol("approver")
    stored = everything_stored()
    assert seed.hex() not in stored and seed.hex().upper() not in stored
    for code in codes:
        assert code not in stored
    device = AuthenticatorApp.objects.get(user=approver)
    assert device.bin_key == seed and device.confirmed
    assert sorted(BackupCodes.objects.get(user=approver).codes.split()) == sorted(codes)


def test_rotation_covers_seeds_and_backup_codes(keys, approver):
    seed, codes = enrol("approver")
    keys.FIELD_ENCRYPTION_KEYS = [KEY_2, KEY_1]
    out = StringIO()
    call_command("rotate_encryption_keys", stdout=out)
    assert "1 authenticator app seed(s) and 1 set(s) of backup codes" in out.getvalue()
    keys.FIELD_ENCRYPTION_KEYS = [KEY_2]  # the old key dropped: both still read
    assert AuthenticatorApp.objects.get(user=approver).bin_key == seed
    assert sorted(BackupCodes.objects.get(user=approver).codes.split()) == sorted(codes)


def test_a_backup_code_works_once_and_the_others_stay(keys, approver):
    BackupCodes.objects.create(user=approver, name="Backup codes", codes="aaaaaaaa bbbbbbbb")
    device = BackupCodes.objects.get()
    assert device.verify_token("aaaaaaaa")
    device = BackupCodes.objects.get()
    assert device.codes == "bbbbbbbb"
    assert not device.verify_token("aaaaaaaa")


def test_the_migration_moves_devices_in_clear_into_encrypted_ones(keys, approver):
    migration = importlib.import_module("transfers.migrations.0018_second_factor_encrypted")
    seed = bytes(range(20))
    TOTPDevice.objects.create(user=approver, name="phone", key=seed.hex(), last_t=5)
    backup = StaticDevice.objects.create(user=approver, name="backup")
    backup.token_set.create(token="abcdefgh")
    backup.token_set.create(token="ijklmnop")

    migration.move_devices(apps, SimpleNamespace(connection=connection))

    assert not TOTPDevice.objects.exists() and not StaticDevice.objects.exists()
    stored = everything_stored()
    assert seed.hex() not in stored and "abcdefgh" not in stored
    device = AuthenticatorApp.objects.get(user=approver)
    assert (device.name, device.bin_key, device.last_t, device.confirmed) == (
        "phone",
        seed,
        5,
        True,
    )
    assert device.verify_token(code_now(seed))
    assert BackupCodes.objects.get(user=approver).codes == "abcdefgh ijklmnop"


def test_the_admin_lists_and_removes_devices_without_showing_a_secret(keys, approver, client):
    from base64 import b32encode

    from django.contrib.auth.models import User

    seed, codes = enrol("approver")
    client.force_login(User.objects.create_superuser("root", "root@example.com", "pw"))
    device = AuthenticatorApp.objects.get(user=approver)
    backup = BackupCodes.objects.get(user=approver)
    pages = [
        client.get(reverse("admin:transfers_authenticatorapp_changelist")),
        client.get(reverse("admin:transfers_authenticatorapp_change", args=[device.pk])),
        client.get(reverse("admin:transfers_backupcodes_change", args=[backup.pk])),
    ]
    for page in pages:
        text = page.content.decode()
        assert page.status_code == 200 and "approver" in text
        assert seed.hex() not in text and b32encode(seed).decode() not in text
        assert not any(code in text for code in codes)
    assert client.get("/admin/otp_totp/totpdevice/").status_code == 404  # django-otp's, gone
    client.post(
        reverse("admin:transfers_authenticatorapp_delete", args=[device.pk]), {"post": "yes"}
    )
    assert not AuthenticatorApp.objects.filter(user=approver).exists()
