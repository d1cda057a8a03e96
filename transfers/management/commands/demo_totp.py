"""manage.py demo_totp: a demo user's current second-factor code."""

from django.core.management.base import BaseCommand, CommandError

import demo


class Command(BaseCommand):
    help = (
        "Print the current 6-digit second-factor code of a demo user (bob, carol or admin). "
        "Only devices on the demo's public secret; a real user's secret is never read."
    )

    def add_arguments(self, parser):
        parser.add_argument("username", choices=demo.TOTP_USERS)

    def handle(self, *args, username: str, **options):
        try:
            self.stdout.write(demo.totp_code(username))
        except LookupError as exc:
            raise CommandError(f"{exc} Run `make run` (or manage.py seed_demo) first.") from None
