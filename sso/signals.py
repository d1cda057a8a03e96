"""What every login does to the session (connected in SsoConfig.ready)."""

from __future__ import annotations

import time

from sso.middleware import SESSION_SEEN, SESSION_STARTED


def mark_session_start(sender, request, user, **kwargs) -> None:
    """On every login: the absolute session lifetime counts from here."""
    request.session[SESSION_STARTED] = request.session[SESSION_SEEN] = int(time.time())
