"""Issue an API token and print it: the only time it is shown (the database keeps a digest).

    python manage.py create_api_token ci-bot --days 90

Prints the token alone on standard output (for a script to capture); what it is for, on
standard error. Revoke it in /admin/ (API tokens)."""

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser

from transfers.api import tokens as api_tokens


class Command(BaseCommand):
    help = "Issue an API token for USERNAME and print it (shown this once, stored as a digest)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("username")
        parser.add_argument(
            "--days",
            type=int,
            help=f"expire after this many days (1 to {api_tokens.MAX_DAYS}); "
            "without it, the token lives until revoked",
        )

    def handle(self, *args, username: str, days: int | None, **options) -> None:
        if days is not None and not 1 <= days <= api_tokens.MAX_DAYS:
            raise CommandError(f"--days must be between 1 and {api_tokens.MAX_DAYS}.")
        User = get_user_model()
        try:
            user = User.objects.get(**{User.USERNAME_FIELD: username})
        except User.DoesNotExist:
            raise CommandError(f"No user {username!r}.") from None
        if not user.is_active:
            raise CommandError(f"{username} is inactive: a token of theirs would not work.")
        token, secret = api_tokens.issue(user, days=days)
        until = f"until {token.expiry:%Y-%m-%d %H:%M} UTC" if token.expiry else "until revoked"
        self.stderr.write(
            f"API token {token.prefix}… for {username}, valid {until}. It is shown only now: "
            "the portal keeps a digest of it. Send it as 'Authorization: Token <token>'."
        )
        self.stdout.write(secret)
