"""A person's settings: for now, the time zone the pages and emails show times in."""

from __future__ import annotations

import zoneinfo
from functools import cache

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models

DEFAULT_ZONE = "UTC"


@cache
def zone_names() -> list[str]:
    return sorted(zoneinfo.available_timezones())


def validate_zone(value: str) -> None:
    if value not in zone_names():
        raise ValidationError(
            f"Not a time zone name: {value[:64]!r}. Use an IANA name such as Europe/Paris."
        )


class Profile(models.Model):
    user = models.OneToOneField(settings.AUTH_USER_MODEL, models.CASCADE, related_name="profile")
    time_zone = models.CharField(
        max_length=64,
        default=DEFAULT_ZONE,
        validators=[validate_zone],
        help_text="Pages and emails show times in this zone.",
    )

    def __str__(self) -> str:
        return f"{self.user} ({self.time_zone})"


def zone_of(user) -> str:
    """The user's time zone name; UTC when they never chose one."""
    if user is None or not getattr(user, "pk", None):
        return DEFAULT_ZONE
    found = Profile.objects.filter(user=user).values_list("time_zone", flat=True).first()
    return found or DEFAULT_ZONE


def zones_by_email(emails) -> dict[str, str]:
    """Time zone per email address of the portal's users (first user of an address wins)."""
    from django.contrib.auth import get_user_model

    rows = (
        get_user_model()
        .objects.filter(email__in=list(emails))
        .exclude(email="")
        .order_by("pk")
        .values_list("email", "profile__time_zone")
    )
    found: dict[str, str] = {}
    for email, zone in rows:
        found.setdefault(email, zone or DEFAULT_ZONE)
    return found
