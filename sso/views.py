"""Sign-in pages: the login page (passwords and the provider), the provider's start and
callback (mozilla-django-oidc's views, with every refusal shown as a clear page), the second
factor (enter a TOTP code after the password, or enrol an authenticator app: the session
policy in sso/middleware.py sends approvers and admins there until they pass), and the
portal admin's page of group mappings."""

from __future__ import annotations

import logging
import re
from base64 import b32encode
from urllib.parse import urlencode

import django_otp
import requests
import segno
from django import forms
from django.conf import settings
from django.contrib import auth, messages
from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied, SuspiciousOperation
from django.db import transaction
from django.db.models import Q, QuerySet
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.utils.safestring import mark_safe
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_POST
from django_otp.models import Device
from django_otp.plugins.otp_static.models import StaticToken
from mozilla_django_oidc import views as oidc_views

from sso import discovery
from sso.models import AccessEvent, GroupMapping, ProviderDevice
from sso.signin import Refusal
from transfers import permissions
from transfers.models import AuthenticatorApp, AwsAccount, BackupCodes

log = logging.getLogger(__name__)


class LoginView(auth_views.LoginView):
    """Django's login page, plus the provider's button; passwords only where allowed."""

    def get_context_data(self, **kwargs):
        context = super().get_context_data(**kwargs)
        context.update(
            sso_enabled=discovery.enabled(),
            sso_name=settings.OIDC_PROVIDER_NAME,
            password_login=settings.PASSWORD_LOGIN,
        )
        return context

    def form_invalid(self, form):
        if not settings.PASSWORD_LOGIN and form.errors.get("__all__"):
            # The same words whatever the username: which names are break-glass stays unsaid.
            form.errors.pop("__all__")
            form.add_error(
                None,
                "Wrong username or password. Passwords work here only for break-glass "
                f"admins; everyone else signs in with {settings.OIDC_PROVIDER_NAME}.",
            )
        return super().form_invalid(form)


def refused(request: HttpRequest, message: str, status: int = 403) -> HttpResponse:
    return render(
        request,
        "sso/refused.html",
        {"message": message, "sso_name": settings.OIDC_PROVIDER_NAME},
        status=status,
    )


class StartView(oidc_views.OIDCAuthenticationRequestView):
    """Sends the browser to the provider (state, nonce and PKCE kept in the session)."""

    def __init__(self, *args, **kwargs) -> None:
        super(oidc_views.OIDCAuthenticationRequestView, self).__init__(*args, **kwargs)

    @property
    def OIDC_OP_AUTH_ENDPOINT(self) -> str:  # noqa: N802
        return discovery.document()["authorization_endpoint"]

    @property
    def OIDC_RP_CLIENT_ID(self) -> str:  # noqa: N802
        return settings.OIDC_RP_CLIENT_ID

    def get(self, request):
        if not discovery.enabled():
            raise Http404("Single sign-on is not configured.")
        try:
            return super().get(request)
        except discovery.DiscoveryError as exc:
            log.warning("single sign-on: discovery failed: %s", exc)
            return refused(
                request, "The identity provider could not be reached. Try again later.", 503
            )


class CallbackView(oidc_views.OIDCAuthenticationCallbackView):
    """The provider sends the browser back here with a code, or an error."""

    def get(self, request):
        if not discovery.enabled():
            raise Http404("Single sign-on is not configured.")
        if request.GET.get("error"):
            # As mozilla-django-oidc does: the state is spent, nobody stays signed in.
            states = request.session.get("oidc_states", {})
            if states.pop(request.GET.get("state"), None) is not None:
                request.session.save()
            if request.user.is_authenticated:
                auth.logout(request)
            return self._refuse(
                "The identity provider did not sign you in: "
                f"{request.GET.get('error_description') or request.GET['error']}.",
                f"provider error {request.GET['error']!r}",
            )
        try:
            return super().get(request)
        except Refusal as exc:
            return self._refuse(exc.message, exc.detail)
        except SuspiciousOperation as exc:
            # mozilla-django-oidc: the state is not one this browser's session started.
            return self._refuse(
                "This sign-in does not match one started in this browser (its state is "
                "unknown or was used already). Start again from the login page.",
                str(exc),
                status=400,
            )
        except requests.RequestException as exc:
            return self._refuse(
                "The identity provider did not accept the sign-in code, or could not be "
                "reached. Start again from the login page.",
                str(exc),
            )

    def _refuse(self, message: str, detail: str, status: int = 403) -> HttpResponse:
        log.warning("single sign-on refused: %s", detail or message)
        AccessEvent.objects.create(
            kind=AccessEvent.Kind.REFUSED, details={"reason": message, "detail": detail[:500]}
        )
        return refused(self.request, message, status)

    def login_failure(self):
        return self._refuse(
            "This sign-in was not started in this browser, or it took too long. Start again "
            "from the login page.",
            "no single sign-on state in the session",
            status=400,
        )

    def login_success(self):
        response = super().login_success()
        if getattr(self.request, "sso_mfa", False):
            # The provider checked a second factor: the portal's own TOTP is not asked again.
            device, _ = ProviderDevice.objects.get_or_create(
                user=self.user, defaults={"name": "Identity provider", "confirmed": True}
            )
            django_otp.login(self.request, device)
        return response


class MappingForm(forms.ModelForm):
    account = forms.ModelChoiceField(
        queryset=AwsAccount.objects.none(),
        required=False,
        empty_label="Every account",
    )

    class Meta:
        model = GroupMapping
        fields = ["provider_group", "account", "role", "portal_admin", "staff"]

    def __init__(self, *args, user, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        # Only accounts the editor administers are offered, and accepted: a mapping grants
        # roles there to everyone in the group (permissions.can_map_groups_on).
        field = self.fields["account"]
        field.queryset = permissions.mappable_accounts(user).order_by("name")
        if not permissions.can_map_groups_on(user, None):
            field.required = True
            field.empty_label = "Choose an account you administer"
            field.error_messages["required"] = (
                "Choose an account you administer: only a superuser maps a group on every account."
            )

    def clean_provider_group(self) -> str:
        value = self.cleaned_data["provider_group"].strip()
        if not value:
            raise forms.ValidationError("Name the provider's group.")
        return value

    def clean(self):
        data = super().clean()
        group, role = data.get("provider_group"), data.get("role")
        if group and role:
            same = GroupMapping.objects.filter(
                provider_group=group, role=role, account=data.get("account")
            )
            if same.exists():
                raise forms.ValidationError("This group already has this role there.")
        return data


def _admin_only(request: HttpRequest) -> None:
    if not permissions.can_manage_accounts(request.user):
        raise PermissionDenied("Only portal admins map the provider's groups.")


def _visible_mappings(user) -> QuerySet[GroupMapping]:
    """Mappings on accounts the user can see, and those on every account."""
    if user.is_superuser:
        return GroupMapping.objects.all()
    return GroupMapping.objects.filter(
        Q(account__isnull=True) | Q(account__in=AwsAccount.objects.visible_to(user).values("pk"))
    )


_CHANGE_ON_ACCOUNT = re.compile(r" on (\d{12})$")


def _visible_events(user) -> list[AccessEvent]:
    """The latest sign-ins and mapping changes, naming only accounts the user can see."""
    events = list(AccessEvent.objects.select_related("user")[:20])
    if user.is_superuser:
        return events
    seen = set(AwsAccount.objects.visible_to(user).values_list("account_id", flat=True))
    shown = []
    for event in events:
        details = event.details
        # A mapping's change names its account (None: every account); older rows did not.
        if "mapping" in details and details.get("account", "?") not in seen | {None}:
            continue
        if "changes" in details:
            details["changes"] = [
                change
                for change in details["changes"]
                if (found := _CHANGE_ON_ACCOUNT.search(change)) is None or found[1] in seen
            ]
        shown.append(event)
    return shown


@login_required
def mappings(request: HttpRequest) -> HttpResponse:
    _admin_only(request)
    form = MappingForm(request.POST or None, user=request.user)
    if request.method == "POST" and form.is_valid():
        with transaction.atomic():
            mapping = form.save(commit=False)
            mapping.created_by = request.user
            mapping.save()
            AccessEvent.objects.create(
                kind=AccessEvent.Kind.MAPPING_ADDED,
                user=request.user,
                actor_name=request.user.get_username(),
                details={"mapping": str(mapping), "account": _account_id(mapping)},
            )
        messages.success(request, f"Added: {mapping}. It applies at each person's next sign-in.")
        return redirect("sso:mappings")
    return render(
        request,
        "sso/mappings.html",
        {
            "form": form,
            "mappings": [
                (m, permissions.can_map_groups_on(request.user, m.account))
                for m in _visible_mappings(request.user).select_related("account")
            ],
            "events": _visible_events(request.user),
            "sso_enabled": discovery.enabled(),
            "groups_claim": settings.OIDC_GROUPS_CLAIM,
            "nav": "accounts",
        },
    )


@login_required
@require_POST
def mapping_delete(request: HttpRequest, pk: int) -> HttpResponse:
    _admin_only(request)
    with transaction.atomic():
        mapping = get_object_or_404(_visible_mappings(request.user).select_for_update(), pk=pk)
        if not permissions.can_map_groups_on(request.user, mapping.account):
            raise PermissionDenied(
                "Only an admin of its account removes this mapping (a superuser, on every account)."
            )
        described, account_id = str(mapping), _account_id(mapping)
        mapping.delete()
        AccessEvent.objects.create(
            kind=AccessEvent.Kind.MAPPING_REMOVED,
            user=request.user,
            actor_name=request.user.get_username(),
            details={"mapping": described, "account": account_id},
        )
    messages.success(request, f"Removed: {described}. People lose the role at their next sign-in.")
    return redirect("sso:mappings")


def _account_id(mapping: GroupMapping) -> str | None:
    return mapping.account.account_id if mapping.account else None


# ----------------------------------------------------------------------------- second factor

BACKUP_CODES = 10
TOTP_RE = re.compile(r"^\d{6}$")
BACKUP_RE = re.compile(r"^[a-z2-7]{8}$")  # otp_static's codes: 8 base32 characters


class CodeForm(forms.Form):
    code = forms.CharField(
        label="Code",
        max_length=32,
        widget=forms.TextInput(
            attrs={"autocomplete": "one-time-code", "inputmode": "numeric", "autofocus": True}
        ),
    )

    def clean_code(self) -> str:
        code = "".join(self.cleaned_data["code"].split()).lower()
        if not (TOTP_RE.match(code) or BACKUP_RE.match(code)):
            raise forms.ValidationError(
                "Enter the 6-digit code from your authenticator app, or one of your 8-character "
                "backup codes."
            )
        return code


def _next(request: HttpRequest) -> str:
    url = request.POST.get("next") or request.GET.get("next") or ""
    safe = url_has_allowed_host_and_scheme(
        url, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    )
    return url if safe and url.startswith("/") else reverse("home")


def _check(device: Device, code: str) -> str:
    """Verify ``code`` on ``device`` (locked, throttled); an error message, or "" if right."""
    allowed, extra = device.verify_is_allowed()
    if not allowed:
        until = extra.get("locked_until") if extra else None
        when = f" after {until:%H:%M:%S} UTC" if until else " in a moment"
        return f"Too many wrong codes: try again{when}."
    if device.verify_token(code):
        return ""
    return "Wrong code, or one already used. Wait for the next code and try again."


def _pass(request: HttpRequest, device: Device) -> None:
    django_otp.login(request, device)
    request.session.cycle_key()  # more rights from here on: a new session id


@never_cache
@login_required
def second_factor(request: HttpRequest) -> HttpResponse:
    next_url = _next(request)
    if request.user.is_verified():
        return redirect(next_url)
    if not AuthenticatorApp.objects.filter(user=request.user, confirmed=True).exists():
        return redirect(f"{reverse('second_factor_enrol')}?{urlencode({'next': next_url})}")
    form = CodeForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        code = form.cleaned_data["code"]
        model = AuthenticatorApp if TOTP_RE.match(code) else BackupCodes
        with transaction.atomic():
            device = (
                model.objects.select_for_update()
                .filter(user=request.user, confirmed=True)
                .order_by("pk")
                .first()
            )
            error = _check(device, code) if device else "You have no backup codes left."
        if not error:
            _pass(request, device)
            return redirect(next_url)
        form.add_error("code", error)
    return render(request, "registration/second_factor.html", {"form": form, "next": next_url})


def _qr_svg(url: str) -> str:
    # segno writes plain SVG markup (paths, no style attributes, no script): CSP-safe, and
    # safe to mark so, the data being geometry only, no text from users.
    qr = segno.make(url, error="m").svg_inline(scale=4, title="QR code")
    return mark_safe(qr)  # noqa: S308  # nosec B308,B703


@never_cache
@login_required
def second_factor_enrol(request: HttpRequest) -> HttpResponse:
    next_url = _next(request)
    user = request.user
    if AuthenticatorApp.objects.filter(user=user, confirmed=True).exists():
        # Enrolled already: a second device only through an admin (or a stolen password
        # could add one).
        return redirect(f"{reverse('second_factor')}?{urlencode({'next': next_url})}")
    device = AuthenticatorApp.objects.filter(user=user, confirmed=False).order_by("pk").first()
    if device is None:
        device = AuthenticatorApp.objects.create(
            user=user, name="Authenticator app", confirmed=False
        )
    form = CodeForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        with transaction.atomic():
            device = AuthenticatorApp.objects.select_for_update().get(pk=device.pk)
            error = _check(device, form.cleaned_data["code"])
            if not error:
                device.confirmed = True
                device.save(update_fields=["confirmed"])
                codes = _new_backup_codes(user)
        if not error:
            _pass(request, device)
            return render(
                request,
                "registration/second_factor_enrol.html",
                {"codes": codes, "next": next_url},
            )
        form.add_error("code", error)
    return render(
        request,
        "registration/second_factor_enrol.html",
        {
            "form": form,
            "next": next_url,
            "otpauth_url": device.config_url,
            "secret": b32encode(device.bin_key).decode(),
            "qr": _qr_svg(device.config_url),
        },
    )


def _new_backup_codes(user) -> list[str]:
    codes = [StaticToken.random_token() for _ in range(BACKUP_CODES)]
    BackupCodes.objects.filter(user=user).delete()
    BackupCodes.objects.create(user=user, name="Backup codes", codes=" ".join(codes))
    return codes
