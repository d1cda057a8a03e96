import django.db.models.deletion
from django.db import migrations, models

# Policy and thing links carry their certificate's account (which never changes), so a
# search by name counts the certificates it matches from the name index alone; the page
# index holds every column a list row shows (transfers.views.inventory.page_rows).

BACKFILL = """
UPDATE {table} SET account_id = (
    SELECT account_id FROM transfers_certificate
    WHERE transfers_certificate.id = {table}.certificate_id
)
"""

# PostgreSQL's LIKE 'prefix%' indexes (migration 0006), now with the account: (before, after).
PATTERN_INDEXES = {
    "certificate_id_pattern_idx": (
        "transfers_certificate",
        "certificate_id varchar_pattern_ops",
        "certificate_id varchar_pattern_ops, account_id, id",
    ),
    "policy_name_pattern_idx": (
        "transfers_certificatepolicy",
        "name varchar_pattern_ops, certificate_id",
        "name varchar_pattern_ops, account_id, certificate_id",
    ),
    "thing_name_pattern_idx": (
        "transfers_certificatething",
        "name varchar_pattern_ops, certificate_id",
        "name varchar_pattern_ops, account_id, certificate_id",
    ),
}


def _pattern_indexes(version: int):
    def run(apps, schema_editor):
        if schema_editor.connection.vendor != "postgresql":
            return
        for name, (table, *columns) in PATTERN_INDEXES.items():
            schema_editor.execute(f'DROP INDEX IF EXISTS "{name}"')
            schema_editor.execute(f'CREATE INDEX "{name}" ON "{table}" ({columns[version]})')

    return run


def _account(null: bool) -> models.ForeignKey:
    return models.ForeignKey(
        db_index=False,
        null=null,
        on_delete=django.db.models.deletion.CASCADE,
        related_name="+",
        to="transfers.awsaccount",
    )


class Migration(migrations.Migration):
    dependencies = [
        ("transfers", "0006_search_indexes"),
    ]

    operations = [
        migrations.RemoveIndex(model_name="certificate", name="certificate_id_idx"),
        migrations.RemoveIndex(model_name="certificate", name="certificate_page_idx"),
        migrations.AddIndex(
            model_name="certificate",
            index=models.Index(
                fields=[
                    *("id", "account", "creation_date", "certificate_id", "not_after", "status"),
                    "region",
                ],
                name="certificate_page_idx",
            ),
        ),
        migrations.AddIndex(
            model_name="certificate",
            index=models.Index(fields=["certificate_id", "account"], name="certificate_id_idx"),
        ),
        migrations.RemoveIndex(model_name="certificatepolicy", name="policy_name_idx"),
        migrations.RemoveIndex(model_name="certificatething", name="thing_name_idx"),
        migrations.AddField("certificatepolicy", "account", _account(null=True)),
        migrations.AddField("certificatething", "account", _account(null=True)),
        migrations.RunSQL(
            BACKFILL.format(table="transfers_certificatepolicy"), migrations.RunSQL.noop
        ),
        migrations.RunSQL(
            BACKFILL.format(table="transfers_certificatething"), migrations.RunSQL.noop
        ),
        migrations.AlterField("certificatepolicy", "account", _account(null=False)),
        migrations.AlterField("certificatething", "account", _account(null=False)),
        migrations.AddIndex(
            model_name="certificatepolicy",
            index=models.Index(fields=["name", "account", "certificate"], name="policy_name_idx"),
        ),
        migrations.AddIndex(
            model_name="certificatething",
            index=models.Index(fields=["name", "account", "certificate"], name="thing_name_idx"),
        ),
        migrations.RunPython(_pattern_indexes(version=1), _pattern_indexes(version=0)),
    ]
