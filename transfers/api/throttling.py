"""API throttling per token (DRF): a 429 with Retry-After past API_THROTTLE_RATE.

Each API token has its own budget; a browser session's API calls count against the user.
(Anonymous calls are refused with 401 before any throttle; were an endpoint open to them,
they would count against the client's address.) Counts live in the "throttle" cache: Redis
when REDIS_URL is set, so every web process shares them (with the local memory cache, each
process counts on its own).
"""

from __future__ import annotations

from django.conf import settings
from django.core.cache import caches
from knox.models import AuthToken
from rest_framework.throttling import SimpleRateThrottle

from sso.middleware import client_ip


class TokenRateThrottle(SimpleRateThrottle):
    scope = "token"

    def __init__(self) -> None:
        self.cache = caches["throttle"]
        super().__init__()

    def get_rate(self) -> str:
        return settings.API_THROTTLE_RATE

    def get_cache_key(self, request, view) -> str:
        if isinstance(request.auth, AuthToken):
            # The token's stored digest (transfers.api.tokens), never the token itself.
            ident = "token:" + request.auth.digest[:32]
        elif request.user.is_authenticated:
            ident = f"user:{request.user.pk}"
        else:
            ident = f"address:{client_ip(request)}"
        return self.cache_format % {"scope": self.scope, "ident": ident}
