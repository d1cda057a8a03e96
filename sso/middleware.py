"""The session policy: who must pass a second factor, and the one middleware that enforces
it with the session's lifetime.

Approvers and admins can send a fleet's device identities to another AWS account, so a
password alone is not enough for them: after it, they type a TOTP code (django-otp) before
any page or API call works. The same middleware ends sessions older than
``SESSION_MAX_SECONDS`` whatever their activity, and pushes a session's expiry (the idle
timeout, ``SESSION_COOKIE_AGE``) back at most once a minute: one write a minute, not one per
request (live pages poll every 2 s).

API calls authenticated by a token never carry a session, so they pass here untouched:
tokens are made by a portal admin for automation and are not subject to the second factor
(README, "Security").
"""

from __future__ import annotations

import time
from urllib.parse import urlencode

from django.conf import settings
from django.contrib import messages
from django.contrib.auth import get_user_model, logout
from django.contrib.auth.models import Group
from django.contrib.auth.views import redirect_to_login
from django.db.models import Exists, OuterRef, Q
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect
from django.urls import reverse
from django_htmx.http import HttpResponseClientRedirect

from transfers.models import AccountGrant, AuthenticatorApp, Role

# Roles whose holders must pass the second factor: they approve or administer transfers.
SECOND_FACTOR_ROLES = [Role.APPROVER, Role.ADMIN]
SESSION_STARTED = "portal_session_started"
SESSION_SEEN = "portal_session_seen"
TOUCH_SECONDS = 60


def needs_second_factor(user) -> bool:
    """Approver or admin on any account (directly or through a group), a member of the
    "approver" or "admin" group, staff, superuser, or anyone who enrolled a device."""
    if not user.is_authenticated:
        return False
    if user.is_superuser or user.is_staff:
        return True
    grants = AccountGrant.objects.filter(
        Q(user=OuterRef("pk")) | Q(group__user=OuterRef("pk")), role__in=SECOND_FACTOR_ROLES
    )
    groups = Group.objects.filter(user=OuterRef("pk"), name__in=SECOND_FACTOR_ROLES)
    devices = AuthenticatorApp.objects.filter(user=OuterRef("pk"), confirmed=True)
    return (
        get_user_model()
        .objects.filter(pk=user.pk)
        .filter(Exists(grants) | Exists(groups) | Exists(devices))
        .exists()
    )


def client_ip(request: HttpRequest) -> str | None:
    """The client's address for login throttling (django-axes, AXES_CLIENT_IP_CALLABLE) and
    the API's throttling.

    Behind ``TRUSTED_PROXY_COUNT`` reverse proxies, the address the outermost one saw is
    the n-th from the right in X-Forwarded-For (what a client writes there itself is to the
    left, and ignored); without proxies, the socket's address."""
    count = settings.TRUSTED_PROXY_COUNT
    if count:
        hops = [h.strip() for h in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",")]
        hops = [h for h in hops if h]
        if len(hops) >= count:
            return hops[-count]
    return request.META.get("REMOTE_ADDR")


class SessionPolicyMiddleware:
    """After AuthenticationMiddleware, OTPMiddleware and MessageMiddleware."""

    def __init__(self, get_response) -> None:
        self.get_response = get_response
        self._open_paths: set[str] | None = None

    def open_paths(self) -> set[str]:
        # Reachable before the second factor: logging in and out, and the factor itself.
        if self._open_paths is None:
            names = ("login", "logout", "second_factor", "second_factor_enrol")
            self._open_paths = {reverse(name) for name in names}
        return self._open_paths

    def __call__(self, request: HttpRequest) -> HttpResponse:
        user = request.user
        if user.is_authenticated:
            refused = self._session_too_old(request) or self._second_factor(request, user)
            if refused is not None:
                return refused
        return self.get_response(request)

    def _session_too_old(self, request: HttpRequest) -> HttpResponse | None:
        now = int(time.time())
        started = request.session.setdefault(SESSION_STARTED, now)
        if now - started <= settings.SESSION_MAX_SECONDS:
            if now - request.session.get(SESSION_SEEN, 0) >= TOUCH_SECONDS:
                request.session[SESSION_SEEN] = now  # saved: the expiry moves on
            return None
        logout(request)
        messages.info(request, "Your session has ended: please log in again.")
        if request.path_info.startswith("/api/"):
            return _api_refusal("session_expired", "The session has ended: log in again.", 401)
        return redirect_to_login(request.get_full_path() if request.method == "GET" else "/")

    def _second_factor(self, request: HttpRequest, user) -> HttpResponse | None:
        if user.is_verified() or request.path_info in self.open_paths():
            return None
        if not needs_second_factor(user):
            return None
        if request.path_info.startswith("/api/"):
            return _api_refusal(
                "second_factor_required",
                "This session has not passed the second factor: open the portal and enter "
                "your authenticator code, or use an API token.",
                403,
            )
        url = reverse("second_factor")
        if request.method == "GET":
            url += "?" + urlencode({"next": request.get_full_path()})
        if request.htmx:
            return HttpResponseClientRedirect(url)
        return redirect(url)


def _api_refusal(code: str, message: str, status: int) -> JsonResponse:
    return JsonResponse({"error": {"code": code, "message": message}}, status=status)
