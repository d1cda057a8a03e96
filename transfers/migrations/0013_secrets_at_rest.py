# Secrets at rest (docs/deploy.md, "Secrets in the database"):
# - API tokens: DRF authtoken's keys, stored in clear, become django-rest-knox rows that keep
#   only a SHA-512 digest (the same keys keep working); DRF's table is then dropped and the
#   app is no longer installed.
# - Slack incoming-webhook URLs are encrypted like the webhook secrets (0010), and a Slack
#   notice's recipient names the account instead of holding a copy of the URL.

from datetime import UTC

import django.core.validators
from django.db import migrations, models
from django.db.migrations.recorder import MigrationRecorder
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from knox.crypto import hash_token
from knox.settings import CONSTANTS

import transfers.fields

DRF_TABLE = "authtoken_token"


def move_drf_tokens(apps, schema_editor):
    """Each DRF token becomes a knox token with the digest of the same key (no expiry, its
    creation time kept); then DRF's table, its last copy in clear, is dropped. Read with SQL:
    rest_framework.authtoken is no longer installed, so it has no model here."""
    connection = schema_editor.connection
    if DRF_TABLE not in connection.introspection.table_names():
        return  # a database that never had DRF tokens
    AuthToken = apps.get_model("knox", "AuthToken")
    quote = connection.ops.quote_name
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT {quote('key')}, {quote('user_id')}, {quote('created')} "  # noqa: S608
            f"FROM {quote(DRF_TABLE)}"
        )
        rows = cursor.fetchall()
    for key, user_id, created in rows:
        digest = hash_token(key)
        # knox's manager's create() makes a new token: the rows are built here.
        token = AuthToken(
            digest=digest, token_key=key[: CONSTANTS.TOKEN_KEY_LENGTH], user_id=user_id
        )
        token.save(force_insert=True)
        if isinstance(created, str):  # SQLite answers text
            created = parse_datetime(created)
        if created is not None:
            if timezone.is_naive(created):
                created = timezone.make_aware(created, UTC)
            # created is auto_now_add: set after the insert.
            AuthToken.objects.filter(digest=digest).update(created=created)
    schema_editor.execute(f"DROP TABLE {quote(DRF_TABLE)}")
    # Should the app ever be installed again, migrate creates its table afresh.
    MigrationRecorder(connection).migration_qs.filter(app="authtoken").delete()


def _raw_slack_urls(schema_editor, model):
    quote = schema_editor.connection.ops.quote_name
    with schema_editor.connection.cursor() as cursor:
        cursor.execute(
            f"SELECT id, slack_webhook_url FROM {quote(model._meta.db_table)} "  # noqa: S608
            "WHERE slack_webhook_url <> ''"
        )
        return cursor.fetchall()


def encrypt_slack_urls(apps, schema_editor):
    AwsAccount = apps.get_model("transfers", "AwsAccount")
    for pk, plain in _raw_slack_urls(schema_editor, AwsAccount):
        # update() passes the value through the field, which encrypts it.
        AwsAccount.objects.filter(pk=pk).update(slack_webhook_url=plain)


def decrypt_slack_urls(apps, schema_editor):
    AwsAccount = apps.get_model("transfers", "AwsAccount")
    quote = schema_editor.connection.ops.quote_name
    table = quote(AwsAccount._meta.db_table)
    for pk, token in _raw_slack_urls(schema_editor, AwsAccount):
        with schema_editor.connection.cursor() as cursor:
            cursor.execute(
                f"UPDATE {table} SET slack_webhook_url = %s WHERE id = %s",  # noqa: S608
                [transfers.fields.decrypt(token), pk],
            )


def relabel_slack_notices(apps, schema_editor):
    """A Slack notice's recipient was a copy of the URL: now whose channel it is (as
    notices.slack_recipient writes it); it is posted to the account's URL when it goes."""
    Notice = apps.get_model("transfers", "Notice")
    seen = set()
    slack = Notice.objects.filter(channel="slack").select_related("transfer", "batch")
    for notice in slack.order_by("pk"):
        holder = notice.transfer or notice.batch
        label = f"Slack channel of {holder.target_account_id}"
        if notice.transfer_id is not None:
            # Two URLs once told of one transfer: the second keeps notice_once satisfied.
            if (notice.transfer_id, notice.kind, label) in seen:
                label += f" (notice {notice.pk})"
            seen.add((notice.transfer_id, notice.kind, label))
        Notice.objects.filter(pk=notice.pk).update(recipient=label)


class Migration(migrations.Migration):
    dependencies = [
        ("knox", "0009_extend_authtoken_field"),
        ("transfers", "0012_landing_and_downtime"),
    ]

    operations = [
        migrations.CreateModel(
            name="ApiToken",
            fields=[],
            options={
                "verbose_name": "API token",
                "proxy": True,
                "indexes": [],
                "constraints": [],
            },
            bases=("knox.authtoken",),
        ),
        # Not reversible into DRF's table: its keys were not kept, and the tokens work on.
        migrations.RunPython(move_drf_tokens, migrations.RunPython.noop),
        migrations.AlterField(
            model_name="awsaccount",
            name="slack_webhook_url",
            field=transfers.fields.EncryptedTextField(
                blank=True,
                help_text="Notices are also posted to this Slack channel (an incoming webhook). "
                "Encrypted in the database.",
                validators=[django.core.validators.URLValidator(schemes=["https"])],
                verbose_name="Slack incoming webhook URL",
            ),
        ),
        migrations.RunPython(encrypt_slack_urls, decrypt_slack_urls),
        migrations.AlterField(
            model_name="notice",
            name="recipient",
            field=models.CharField(
                help_text="Email address, webhook URL, or whose Slack channel (its URL stays on "
                "the account, encrypted).",
                max_length=2048,
            ),
        ),
        # Reversed, the labels stay: notices already sent are only a record.
        migrations.RunPython(relabel_slack_notices, migrations.RunPython.noop),
    ]
