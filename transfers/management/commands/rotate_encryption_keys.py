"""Re-encrypt every encrypted value with the first of FIELD_ENCRYPTION_KEYS.

Rotation: put the new key first in FIELD_ENCRYPTION_KEYS (keep the old ones after it), restart,
run this, then drop the old keys (docs/deploy.md)."""

from django.core.management.base import BaseCommand
from django.db import transaction
from django.db.models import Q

from transfers.models import AuthenticatorApp, AwsAccount, BackupCodes

# Every EncryptedTextField (transfers/fields.py): model, field, what the count says.
ENCRYPTED = [
    (AwsAccount, "webhook_secret", "webhook secret(s)"),
    (AwsAccount, "slack_webhook_url", "Slack webhook URL(s)"),
    (AuthenticatorApp, "key", "authenticator app seed(s)"),
    (BackupCodes, "codes", "set(s) of backup codes"),
]


class Command(BaseCommand):
    help = (
        "Re-encrypt the webhook secrets, Slack webhook URLs, authenticator app seeds and backup "
        "codes with the first of FIELD_ENCRYPTION_KEYS."
    )

    def handle(self, *args, **options) -> None:
        counts = {(model, name): 0 for model, name, _ in ENCRYPTED}
        with transaction.atomic():
            for model in dict.fromkeys(model for model, _, _ in ENCRYPTED):
                names = [name for m, name, _ in ENCRYPTED if m is model]
                holding_any = Q()
                for name in names:
                    holding_any |= ~Q(**{name: ""})
                for row in model.objects.select_for_update().filter(holding_any):
                    # Read decrypts with any key; update encrypts with the first.
                    values = {name: getattr(row, name) for name in names}
                    model.objects.filter(pk=row.pk).update(**values)
                    for name, value in values.items():
                        counts[(model, name)] += bool(value)
        done = [f"{counts[(model, name)]} {what}" for model, name, what in ENCRYPTED]
        self.stdout.write(f"Re-encrypted {', '.join(done[:-1])} and {done[-1]} with the first key.")
