"""Re-encrypt every encrypted value with the first of FIELD_ENCRYPTION_KEYS.

Rotation: put the new key first in FIELD_ENCRYPTION_KEYS (keep the old ones after it), restart,
run this, then drop the old keys (docs/deploy.md)."""

from django.core.management.base import BaseCommand
from django.db import transaction
from django.db.models import Q

from transfers.models import AwsAccount

# Every EncryptedTextField (transfers/fields.py).
ENCRYPTED = {"webhook_secret": "webhook secret(s)", "slack_webhook_url": "Slack webhook URL(s)"}


class Command(BaseCommand):
    help = (
        "Re-encrypt the webhook secrets and Slack webhook URLs with the first of "
        "FIELD_ENCRYPTION_KEYS."
    )

    def handle(self, *args, **options) -> None:
        counts = dict.fromkeys(ENCRYPTED, 0)
        holding_any = Q()
        for name in ENCRYPTED:
            holding_any |= ~Q(**{name: ""})
        with transaction.atomic():
            for account in AwsAccount.objects.select_for_update().filter(holding_any):
                # Read decrypts with any key; update encrypts with the first.
                values = {name: getattr(account, name) for name in ENCRYPTED}
                AwsAccount.objects.filter(pk=account.pk).update(**values)
                for name, value in values.items():
                    counts[name] += bool(value)
        done = " and ".join(f"{counts[name]} {what}" for name, what in ENCRYPTED.items())
        self.stdout.write(f"Re-encrypted {done} with the first key.")
