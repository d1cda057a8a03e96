"""Sign-in pages: the login page (passwords and the provider), the provider's start and
callback (mozilla-django-oidc's views, with every refusal shown as a clear page), and the
portal admin's page of group mappings."""

from __future__ import annotations

import logging
import re

import django_otp
import requests
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
from django.views.decorators.http import require_POST
from mozilla_django_oidc import views as oidc_views

from sso import discovery
from sso.models import AccessEvent, GroupMapping, ProviderDevice
from sso.signin import Refusal
from transfers import permissions
from transfers.models import AwsAccount

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
