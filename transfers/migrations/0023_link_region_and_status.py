from django.db import migrations, models

# Policy and thing links carry their certificate's region and status too (the account since
# 0007), so a search by name with a region or status filter counts and lists its matches
# from one link index, without reading a certificate row per match (transfers.search). The
# status changes only through Certificate.objects.set_status, which writes both; manage.py
# check_link_copies finds any link that disagrees.

BACKFILL = """
UPDATE {table} SET
    region = (SELECT region FROM transfers_certificate c WHERE c.id = {table}.certificate_id),
    status = (SELECT status FROM transfers_certificate c WHERE c.id = {table}.certificate_id)
"""

# PostgreSQL's LIKE 'prefix%' indexes (migrations 0006, 0007): (table, before, after); None
# where there was none.
PATTERN_INDEXES = {
    "policy_name_pattern_idx": (
        "transfers_certificatepolicy",
        "name varchar_pattern_ops, account_id, certificate_id",
        "name varchar_pattern_ops, account_id, region, certificate_id",
    ),
    "thing_name_pattern_idx": (
        "transfers_certificatething",
        "name varchar_pattern_ops, account_id, certificate_id",
        "name varchar_pattern_ops, account_id, region, certificate_id",
    ),
    "policy_status_pattern_idx": (
        "transfers_certificatepolicy",
        None,
        "status, name varchar_pattern_ops, account_id, region, certificate_id",
    ),
    "thing_status_pattern_idx": (
        "transfers_certificatething",
        None,
        "status, name varchar_pattern_ops, account_id, region, certificate_id",
    ),
}


def _pattern_indexes(version: int):
    def run(apps, schema_editor):
        if schema_editor.connection.vendor != "postgresql":
            return
        for name, (table, *columns) in PATTERN_INDEXES.items():
            schema_editor.execute(f'DROP INDEX IF EXISTS "{name}"')
            if columns[version] is not None:
                schema_editor.execute(f'CREATE INDEX "{name}" ON "{table}" ({columns[version]})')

    return run


STATUSES = [
    ("ACTIVE", "Active"),
    ("INACTIVE", "Inactive"),
    ("REVOKED", "Revoked"),
    ("PENDING_TRANSFER", "Pending Transfer"),
    ("REGISTER_INACTIVE", "Register Inactive"),
    ("PENDING_ACTIVATION", "Pending Activation"),
]


class Migration(migrations.Migration):
    dependencies = [
        ("transfers", "0022_notice_kind_paused"),
    ]

    operations = [
        migrations.RemoveIndex(model_name="certificatepolicy", name="policy_name_idx"),
        migrations.RemoveIndex(model_name="certificatething", name="thing_name_idx"),
        *(
            migrations.AddField(
                model_name=model,
                name=name,
                field=field,
                preserve_default=False,
            )
            for model in ("certificatepolicy", "certificatething")
            for name, field in (
                ("region", models.CharField(default="", max_length=32)),
                ("status", models.CharField(choices=STATUSES, default="", max_length=24)),
            )
        ),
        migrations.RunSQL(
            BACKFILL.format(table="transfers_certificatepolicy"), migrations.RunSQL.noop
        ),
        migrations.RunSQL(
            BACKFILL.format(table="transfers_certificatething"), migrations.RunSQL.noop
        ),
        migrations.AddIndex(
            model_name="certificatepolicy",
            index=models.Index(
                fields=["name", "account", "region", "certificate"], name="policy_name_idx"
            ),
        ),
        migrations.AddIndex(
            model_name="certificatepolicy",
            index=models.Index(
                fields=["status", "name", "account", "region", "certificate"],
                name="policy_status_idx",
            ),
        ),
        migrations.AddIndex(
            model_name="certificatething",
            index=models.Index(
                fields=["name", "account", "region", "certificate"], name="thing_name_idx"
            ),
        ),
        migrations.AddIndex(
            model_name="certificatething",
            index=models.Index(
                fields=["status", "name", "account", "region", "certificate"],
                name="thing_status_idx",
            ),
        ),
        migrations.RunPython(_pattern_indexes(version=1), _pattern_indexes(version=0)),
    ]
