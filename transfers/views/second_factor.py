"""The second factor: enter a TOTP code after the password, or enrol an authenticator app.

transfers.security.SecurityMiddleware sends approvers and admins here until they pass.
"""

from __future__ import annotations

import re
from base64 import b32encode
from urllib.parse import urlencode

import django_otp
import segno
from django import forms
from django.contrib.auth.decorators import login_required
from django.db import transaction
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.utils.safestring import mark_safe
from django.views.decorators.cache import never_cache
from django_otp.models import Device
from django_otp.plugins.otp_static.models import StaticToken

from transfers.models import AuthenticatorApp, BackupCodes

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
