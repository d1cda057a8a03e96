"""Activates the signed-in user's time zone for the request (Django's documented recipe), and
only for it: the thread goes back to the default zone when the response is made, so nothing
that runs on it afterwards (the next request, a task run eagerly) inherits the last user's."""

from __future__ import annotations

import zoneinfo

from django.utils import timezone

SESSION_KEY = "time_zone"


class TimezoneMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        name = request.session.get(SESSION_KEY) if hasattr(request, "session") else None
        if name:
            try:
                timezone.activate(zoneinfo.ZoneInfo(name))
            except (zoneinfo.ZoneInfoNotFoundError, ValueError):
                timezone.deactivate()
        else:
            timezone.deactivate()
        try:
            return self.get_response(request)
        finally:
            timezone.deactivate()
