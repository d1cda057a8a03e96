"""API tokens for automation: django-rest-knox, the secret never stored.

A token is 64 hex characters sent as ``Authorization: Token <token>`` (the header DRF's tokens
used, so automation keeps working). The database keeps knox's SHA-512 digest of it and its
first 15 characters to find the row; the token itself is shown once, to whoever issues it
(``manage.py create_api_token`` or the admin's *Add API token*), and never again. A token
lives until it is revoked (deleted in the admin) or until its expiry, if it was given one.

No endpoint trades a password for a token (README, Security): knox's login views are not
routed.
"""

from __future__ import annotations

from datetime import timedelta

from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser
from django.db.models import QuerySet
from django.utils import timezone
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.plumbing import build_bearer_security_scheme_object
from knox import auth
from rest_framework import exceptions

from transfers.models import ApiToken

# ``manage.py create_api_token --days`` and the admin's form: at most ten years.
MAX_DAYS = 3650


def issue(user: AbstractBaseUser, *, days: int | None = None) -> tuple[ApiToken, str]:
    """A new token for ``user``: its row (the digest) and the token itself, to show once.
    ``days``: it expires after that many days; None, when revoked."""
    expiry = timedelta(days=days) if days else None
    return ApiToken.objects.create(user, expiry=expiry)


def holders_for(issuer) -> QuerySet:
    """Who ``issuer`` (staff in the admin) may issue a token for: active users (an inactive
    user's token would not work), and staff or superusers only when the issuer is a
    superuser. A token skips the second factor, so no one mints one for a higher role."""
    users = get_user_model().objects.filter(is_active=True)
    if not issuer.is_superuser:
        users = users.filter(is_staff=False, is_superuser=False)
    return users


class TokenAuthentication(auth.TokenAuthentication):
    """knox's, refusing a token that is not UTF-8 with a 401 (knox decodes it unguarded, so
    ``Authorization: Token é`` was a 500)."""

    def authenticate_credentials(self, token: bytes):
        try:
            token.decode()
        except UnicodeError:
            raise exceptions.AuthenticationFailed("Invalid token.") from None
        return super().authenticate_credentials(token)

    def _cleanup_token(self, auth_token) -> bool:
        """True for an expired token, which then fails. knox's also reads every other token of
        the user and deletes the expired ones, on every call: a query per API request and
        writes on reads. An expired token stays listed (as expired) until staff delete it."""
        return auth_token.expiry is not None and auth_token.expiry <= timezone.now()


class TokenScheme(OpenApiAuthenticationExtension):
    """The OpenAPI schema names the scheme as it did with DRF's tokens (``tokenAuth``)."""

    target_class = "transfers.api.tokens.TokenAuthentication"
    name = "tokenAuth"

    def get_security_definition(self, auto_schema):
        return build_bearer_security_scheme_object(
            header_name="Authorization", token_prefix=self.target.authenticate_header(None)
        )
