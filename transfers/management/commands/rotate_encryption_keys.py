"""Re-encrypt every encrypted value with the first of FIELD_ENCRYPTION_KEYS.

Rotation: put the new key first in FIELD_ENCRYPTION_KEYS (keep the old ones after it), restart,
run this, then drop the old keys (docs/deploy.md)."""

from django.core.management.base import BaseCommand
from django.db import transaction

from transfers.models import AwsAccount


class Command(BaseCommand):
    help = "Re-encrypt the webhook secrets with the first of FIELD_ENCRYPTION_KEYS."

    def handle(self, *args, **options) -> None:
        count = 0
        with transaction.atomic():
            for account in AwsAccount.objects.select_for_update().exclude(webhook_secret=""):
                # Read decrypts with any key; update encrypts with the first.
                AwsAccount.objects.filter(pk=account.pk).update(
                    webhook_secret=account.webhook_secret
                )
                count += 1
        self.stdout.write(f"Re-encrypted {count} webhook secret(s) with the first key.")
