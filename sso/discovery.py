"""The provider's endpoints, read from its discovery document (cached for an hour)."""

from __future__ import annotations

import requests
from django.conf import settings
from django.core.cache import cache

CACHE_SECONDS = 3600
NEEDED = ("issuer", "authorization_endpoint", "token_endpoint", "jwks_uri")


class DiscoveryError(Exception):
    pass


def enabled() -> bool:
    return bool(settings.OIDC_ISSUER)


def document() -> dict:
    """The discovery document of settings.OIDC_DISCOVERY_URL, checked against OIDC_ISSUER."""
    url = settings.OIDC_DISCOVERY_URL
    key = f"sso:discovery:{url}"
    found = cache.get(key)
    if found is not None:
        return found
    try:
        response = requests.get(url, timeout=settings.OIDC_TIMEOUT)
        response.raise_for_status()
        found = response.json()
    except (requests.RequestException, ValueError) as exc:
        raise DiscoveryError(f"{url}: {exc}") from exc
    missing = [name for name in NEEDED if not found.get(name)]
    if missing:
        raise DiscoveryError(f"{url} has no {', '.join(missing)}")
    # OpenID Connect Discovery 1.0, section 4.3: the issuer must be the one asked for.
    if found["issuer"].rstrip("/") != settings.OIDC_ISSUER.rstrip("/"):
        raise DiscoveryError(
            f"{url} names issuer {found['issuer']!r}, not OIDC_ISSUER={settings.OIDC_ISSUER!r}"
        )
    cache.set(key, found, CACHE_SECONDS)
    return found
