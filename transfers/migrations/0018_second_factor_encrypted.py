# The second factor's secrets encrypted at rest (docs/deploy.md, "Secrets in the database"):
# every django-otp TOTP device and set of backup codes moves into the portal's own devices,
# whose seed and codes are EncryptedTextFields, and the rows in clear are deleted. Sessions
# that passed the second factor with a moved device ask for a code again.

import django.db.models.deletion
import django_otp.plugins.otp_totp.models
import transfers.fields
from django.conf import settings
from django.db import migrations, models


DEVICE_FIELDS = [
    "user_id",
    "name",
    "confirmed",
    "throttling_failure_timestamp",
    "throttling_failure_count",
    "last_used_at",
]
TOTP_FIELDS = ["key", "step", "t0", "digits", "tolerance", "drift", "last_t"]


def move_devices(apps, schema_editor):
    TOTPDevice = apps.get_model("otp_totp", "TOTPDevice")
    StaticDevice = apps.get_model("otp_static", "StaticDevice")
    AuthenticatorApp = apps.get_model("transfers", "AuthenticatorApp")
    BackupCodes = apps.get_model("transfers", "BackupCodes")
    for old in TOTPDevice.objects.order_by("pk"):
        new = AuthenticatorApp.objects.create(
            **{f: getattr(old, f) for f in DEVICE_FIELDS + TOTP_FIELDS}
        )
        AuthenticatorApp.objects.filter(pk=new.pk).update(created_at=old.created_at)
    for old in StaticDevice.objects.order_by("pk"):
        codes = " ".join(old.token_set.order_by("pk").values_list("token", flat=True))
        new = BackupCodes.objects.create(codes=codes, **{f: getattr(old, f) for f in DEVICE_FIELDS})
        BackupCodes.objects.filter(pk=new.pk).update(created_at=old.created_at)
    TOTPDevice.objects.all().delete()
    StaticDevice.objects.all().delete()  # and their tokens


class Migration(migrations.Migration):
    dependencies = [
        ("transfers", "0017_notice_picked_up"),
        ("otp_totp", "0003_add_timestamps"),
        ("otp_static", "0003_add_timestamps"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.CreateModel(
            name="AuthenticatorApp",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                (
                    "name",
                    models.CharField(
                        help_text="The human-readable name of this device.", max_length=64
                    ),
                ),
                (
                    "confirmed",
                    models.BooleanField(default=True, help_text="Is this device ready for use?"),
                ),
                (
                    "throttling_failure_timestamp",
                    models.DateTimeField(
                        blank=True,
                        default=None,
                        help_text="A timestamp of the last failed verification attempt. Null if last attempt succeeded.",
                        null=True,
                    ),
                ),
                (
                    "throttling_failure_count",
                    models.PositiveIntegerField(
                        default=0, help_text="Number of successive failed attempts."
                    ),
                ),
                (
                    "created_at",
                    models.DateTimeField(
                        auto_now_add=True,
                        help_text="The date and time when this device was initially created in the system.",
                        null=True,
                    ),
                ),
                (
                    "last_used_at",
                    models.DateTimeField(
                        blank=True,
                        help_text="The most recent date and time this device was used.",
                        null=True,
                    ),
                ),
                (
                    "key",
                    transfers.fields.EncryptedTextField(
                        default=django_otp.plugins.otp_totp.models.default_key,
                        help_text="The TOTP seed in hex, encrypted in the database.",
                    ),
                ),
                ("step", models.PositiveSmallIntegerField(default=30)),
                ("t0", models.BigIntegerField(default=0)),
                ("digits", models.PositiveSmallIntegerField(choices=[(6, 6), (8, 8)], default=6)),
                ("tolerance", models.PositiveSmallIntegerField(default=1)),
                ("drift", models.SmallIntegerField(default=0)),
                (
                    "last_t",
                    models.BigIntegerField(
                        default=-1,
                        help_text="The time step of the last code taken: no code is taken twice.",
                    ),
                ),
                (
                    "user",
                    models.ForeignKey(
                        help_text="The user that this device belongs to.",
                        on_delete=django.db.models.deletion.CASCADE,
                        to=settings.AUTH_USER_MODEL,
                    ),
                ),
            ],
            options={
                "verbose_name": "authenticator app",
                "abstract": False,
            },
        ),
        migrations.CreateModel(
            name="BackupCodes",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                (
                    "name",
                    models.CharField(
                        help_text="The human-readable name of this device.", max_length=64
                    ),
                ),
                (
                    "confirmed",
                    models.BooleanField(default=True, help_text="Is this device ready for use?"),
                ),
                (
                    "throttling_failure_timestamp",
                    models.DateTimeField(
                        blank=True,
                        default=None,
                        help_text="A timestamp of the last failed verification attempt. Null if last attempt succeeded.",
                        null=True,
                    ),
                ),
                (
                    "throttling_failure_count",
                    models.PositiveIntegerField(
                        default=0, help_text="Number of successive failed attempts."
                    ),
                ),
                (
                    "created_at",
                    models.DateTimeField(
                        auto_now_add=True,
                        help_text="The date and time when this device was initially created in the system.",
                        null=True,
                    ),
                ),
                (
                    "last_used_at",
                    models.DateTimeField(
                        blank=True,
                        help_text="The most recent date and time this device was used.",
                        null=True,
                    ),
                ),
                (
                    "codes",
                    transfers.fields.EncryptedTextField(
                        blank=True,
                        help_text="The unused codes, space-separated, encrypted in the database.",
                    ),
                ),
                (
                    "user",
                    models.ForeignKey(
                        help_text="The user that this device belongs to.",
                        on_delete=django.db.models.deletion.CASCADE,
                        to=settings.AUTH_USER_MODEL,
                    ),
                ),
            ],
            options={
                "verbose_name": "backup codes",
                "verbose_name_plural": "backup codes",
                "abstract": False,
            },
        ),
        migrations.RunPython(move_devices, migrations.RunPython.noop),
    ]
