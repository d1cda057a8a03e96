"""What every login does for the profile: the time zone goes into the session."""

from django.contrib.auth.signals import user_logged_in
from django.dispatch import receiver

from profiles.middleware import SESSION_KEY
from profiles.models import zone_of


@receiver(user_logged_in)
def remember_zone(sender, request, user, **kwargs) -> None:
    """Read the zone once at login: pages then take it from the session, no query."""
    if request is not None and hasattr(request, "session"):
        request.session[SESSION_KEY] = zone_of(user)
