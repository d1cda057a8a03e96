"""manage.py seed_demo: the demo (demo/) into the AWS stand-in and the portal."""

import time
import urllib.error
import urllib.request

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

import demo
from transfers import inventory
from transfers.models import AwsAccount, SyncRun


class Command(BaseCommand):
    help = "Fill the AWS stand-in and the portal with the demo (safe to run twice)."

    def add_arguments(self, parser):
        parser.add_argument(
            "--wait", type=float, default=60, help="Seconds to wait for the stand-in."
        )

    def handle(self, *args, wait: float, **options):
        endpoint = settings.AWS_ENDPOINT_URL
        if not endpoint:
            raise CommandError(
                "AWS_ENDPOINT_URL is not set: the demo only seeds the AWS stand-in, never real AWS."
            )
        self._wait_for(endpoint, wait)
        demo.seed_portal()
        created = demo.seed_aws()
        self.stdout.write(f"Stand-in seeded: {created} new certificate(s).")
        for account in AwsAccount.objects.filter(managed=True):
            for region in account.regions:
                run, _ = inventory.queue_sync(account, region)
                if region == demo.BULK_REGION:
                    # A thousand describes at the account's 10 a second: the worker does it
                    # while the portal starts; the account page shows its progress.
                    self.stdout.write(f"Inventory sync of {account} {region} runs in the worker.")
                    continue
                # Run it here so the first page is full; the worker does the later ones. The
                # worker may already have taken this one: then wait for it.
                run = inventory.sync_region(run.pk)
                deadline = time.monotonic() + 300
                while run.is_open and time.monotonic() < deadline:
                    time.sleep(0.5)
                    run.refresh_from_db()
                if run.status != SyncRun.Status.DONE:
                    raise CommandError(f"Sync of {account} {region} failed: {run.error}")
        self._banner()

    def _wait_for(self, endpoint: str, wait: float) -> None:
        deadline = time.monotonic() + wait
        while True:
            try:
                urllib.request.urlopen(f"{endpoint}/moto-api/data.json", timeout=2)  # noqa: S310
                return
            except (urllib.error.URLError, OSError):
                if time.monotonic() > deadline:
                    raise CommandError(f"The AWS stand-in at {endpoint} did not answer.") from None
                time.sleep(0.5)

    def _banner(self) -> None:
        lines = [
            "",
            "=" * 72,
            f"  Certificate transfer portal: {settings.SITE_URL}/",
            f"  Demo logins (password for all: {demo.PASSWORD}):",
        ]
        lines += [f"    {u.username:<8} {u.what}" for u in demo.USERS]
        lines += [
            f"  {', '.join(demo.TOTP_USERS)} also enter a second-factor code after the password:",
            "    .venv/bin/python manage.py demo_totp bob   (prints the current 6-digit code)",
        ]
        lines += [
            f"  AWS stand-in: {settings.AWS_ENDPOINT_URL} (see README for the AWS CLI)",
            "  Ctrl-C stops everything.",
            "=" * 72,
            "",
        ]
        self.stdout.write("\n".join(lines))
