# Webhook signing secrets are stored encrypted (transfers/fields.py, FIELD_ENCRYPTION_KEYS).

from django.db import migrations

import transfers.fields


def _raw_rows(schema_editor, model):
    quote = schema_editor.connection.ops.quote_name
    with schema_editor.connection.cursor() as cursor:
        cursor.execute(
            f"SELECT id, webhook_secret FROM {quote(model._meta.db_table)} "  # noqa: S608
            "WHERE webhook_secret <> ''"
        )
        return cursor.fetchall()


def encrypt_existing(apps, schema_editor):
    AwsAccount = apps.get_model("transfers", "AwsAccount")
    for pk, plain in _raw_rows(schema_editor, AwsAccount):
        # update() passes the value through the field, which encrypts it.
        AwsAccount.objects.filter(pk=pk).update(webhook_secret=plain)


def decrypt_existing(apps, schema_editor):
    AwsAccount = apps.get_model("transfers", "AwsAccount")
    quote = schema_editor.connection.ops.quote_name
    table = quote(AwsAccount._meta.db_table)
    for pk, token in _raw_rows(schema_editor, AwsAccount):
        with schema_editor.connection.cursor() as cursor:
            cursor.execute(
                f"UPDATE {table} SET webhook_secret = %s WHERE id = %s",  # noqa: S608
                [transfers.fields.decrypt(token), pk],
            )


class Migration(migrations.Migration):
    dependencies = [
        ("transfers", "0009_durable_restore_and_feeder"),
    ]

    operations = [
        migrations.AlterField(
            model_name="awsaccount",
            name="webhook_secret",
            field=transfers.fields.EncryptedTextField(
                blank=True, help_text="Encrypted in the database."
            ),
        ),
        migrations.RunPython(encrypt_existing, decrypt_existing),
    ]
