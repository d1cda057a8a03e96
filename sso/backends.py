"""Authentication backends: the OpenID Connect provider, and local passwords (which may be
turned off for everyone but the break-glass admins)."""

from __future__ import annotations

import logging

import jwt
from django.conf import settings
from django.contrib.auth.backends import ModelBackend
from mozilla_django_oidc.auth import OIDCAuthenticationBackend

from sso import discovery
from sso.signin import Refusal, sign_in

log = logging.getLogger(__name__)


def password_login_allowed(username: str | None) -> bool:
    """PASSWORD_LOGIN=false keeps passwords for the PASSWORD_LOGIN_USERS (break-glass) only."""
    return settings.PASSWORD_LOGIN or (username or "") in settings.PASSWORD_LOGIN_USERS


class PasswordBackend(ModelBackend):
    """Django's own password check, refused before the password is looked at when local
    passwords are turned off for this username."""

    def authenticate(self, request, username=None, password=None, **kwargs):
        if username is None:
            from django.contrib.auth import get_user_model

            username = kwargs.get(get_user_model().USERNAME_FIELD)
        if not password_login_allowed(username):
            return None
        return super().authenticate(request, username=username, password=password, **kwargs)


class ProviderBackend(OIDCAuthenticationBackend):
    """mozilla-django-oidc's code flow, with the endpoints from discovery, the ID token's
    issuer, audience, expiry and signature all checked (the library checks only the
    signature and the nonce), and users found by issuer and subject, never by email."""

    def __init__(self, *args, **kwargs) -> None:
        # The parent reads fixed endpoints from settings here; they come from discovery.
        from django.contrib.auth import get_user_model

        self.UserModel = get_user_model()

    # What the parent's methods read, resolved when a sign-in needs them.
    @property
    def OIDC_OP_TOKEN_ENDPOINT(self) -> str:  # noqa: N802
        return discovery.document()["token_endpoint"]

    @property
    def OIDC_OP_USER_ENDPOINT(self) -> str | None:  # noqa: N802
        return discovery.document().get("userinfo_endpoint")

    @property
    def OIDC_OP_JWKS_ENDPOINT(self) -> str:  # noqa: N802
        return discovery.document()["jwks_uri"]

    @property
    def OIDC_RP_CLIENT_ID(self) -> str:  # noqa: N802
        return settings.OIDC_RP_CLIENT_ID

    @property
    def OIDC_RP_CLIENT_SECRET(self) -> str:  # noqa: N802
        return settings.OIDC_RP_CLIENT_SECRET

    @property
    def OIDC_RP_SIGN_ALGO(self) -> str:  # noqa: N802
        return settings.OIDC_RP_SIGN_ALGO

    OIDC_RP_IDP_SIGN_KEY = None

    def authenticate(self, request, **kwargs):
        if not discovery.enabled() or request is None or "code" not in request.GET:
            return None
        try:
            return super().authenticate(request, **kwargs)
        except discovery.DiscoveryError as exc:
            log.warning("single sign-on: discovery failed: %s", exc)
            raise Refusal("The identity provider could not be reached. Try again later.") from exc

    def _verify_jws(self, payload, key):
        header = jwt.get_unverified_header(payload)
        if header.get("alg") != self.OIDC_RP_SIGN_ALGO:
            raise Refusal(
                "The identity provider's token is signed with an unexpected algorithm.",
                detail=f"alg {header.get('alg')!r}, expected {self.OIDC_RP_SIGN_ALGO!r}",
            )
        try:
            claims = jwt.decode(
                payload,
                key,
                algorithms=[self.OIDC_RP_SIGN_ALGO],
                audience=self.OIDC_RP_CLIENT_ID,
                issuer=discovery.document()["issuer"],
                leeway=settings.OIDC_LEEWAY_SECONDS,
                options={"require": ["exp", "iat", "iss", "aud", "sub"]},
            )
        except jwt.ExpiredSignatureError as exc:
            raise Refusal(
                "The identity provider's token has expired. Sign in again.", detail=str(exc)
            ) from exc
        except jwt.InvalidAudienceError as exc:
            raise Refusal(
                "The identity provider's token was issued for another application, not this "
                "portal (wrong audience).",
                detail=str(exc),
            ) from exc
        except jwt.InvalidIssuerError as exc:
            raise Refusal(
                "The token comes from another identity provider than the one this portal "
                "trusts (wrong issuer).",
                detail=str(exc),
            ) from exc
        except jwt.InvalidSignatureError as exc:
            raise Refusal(
                "The identity provider's token failed its signature check: it was altered.",
                detail=str(exc),
            ) from exc
        except jwt.InvalidTokenError as exc:
            raise Refusal("The identity provider's token is not valid.", detail=str(exc)) from exc
        # OpenID Connect Core 3.1.3.7: with several audiences, azp must be this client.
        audiences = claims["aud"] if isinstance(claims["aud"], list) else [claims["aud"]]
        if len(audiences) > 1 and claims.get("azp") != self.OIDC_RP_CLIENT_ID:
            raise Refusal(
                "The identity provider's token was issued for another application, not this "
                "portal (wrong audience).",
                detail=f"azp {claims.get('azp')!r}",
            )
        return claims

    def verify_token(self, token, **kwargs):
        try:
            return super().verify_token(token, **kwargs)
        except Refusal:
            raise
        except Exception as exc:  # the library's SuspiciousOperation and key look-up errors
            raise Refusal(
                "The identity provider's token could not be checked.", detail=str(exc)
            ) from exc

    def get_or_create_user(self, access_token, id_token, payload):
        claims = dict(payload)
        if self.OIDC_OP_USER_ENDPOINT:
            info = self.get_userinfo(access_token, id_token, payload)
            # OpenID Connect Core 5.3.2: userinfo about another subject must not be used.
            if info.get("sub") != payload["sub"]:
                raise Refusal(
                    "The identity provider answered about another person.",
                    detail=f"userinfo sub {info.get('sub')!r} != {payload['sub']!r}",
                )
            claims.update({k: v for k, v in info.items() if k not in {"iss", "aud", "exp"}})
        # Whether a second factor was used is read from the signed ID token only.
        self.request.sso_mfa = second_factor_used(payload)
        return sign_in(payload["iss"], claims, mfa=self.request.sso_mfa)


def second_factor_used(id_token_claims: dict) -> bool:
    amr = id_token_claims.get("amr") or []
    if isinstance(amr, str):
        amr = [amr]
    if set(map(str, amr)) & set(settings.OIDC_MFA_AMR):
        return True
    acr = id_token_claims.get("acr")
    return acr is not None and str(acr) in settings.OIDC_MFA_ACR
