"""Single sign-on: who signed in through the provider, and what their groups grant.

The provider's groups are mapped to the portal's grants by ``GroupMapping`` rows that a
portal admin edits. Every sign-in applies the mappings again (sso.signin): grants made by an
earlier sign-in that no mapping gives any more are removed, so a person taken out of a group
at the provider loses the role at their next sign-in. ``ManagedGrant`` marks the grants that
single sign-on made, so grants an admin gave by hand are never touched.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone
from django_otp.models import Device

from transfers.models import AccountGrant, AwsAccount, Role


class GroupMapping(models.Model):
    """Members of ``provider_group`` get ``role`` on ``account`` (or on every account)."""

    provider_group = models.CharField(
        "provider group",
        max_length=255,
        help_text="As the provider sends it (a name, or an id for Entra ID).",
    )
    account = models.ForeignKey(
        AwsAccount,
        models.CASCADE,
        null=True,
        blank=True,
        related_name="+",
        help_text="Empty: every account the portal knows.",
    )
    role = models.CharField(max_length=16, choices=Role.choices, default=Role.VIEWER)
    portal_admin = models.BooleanField(
        "portal admin", default=False, help_text="Also manages accounts and these mappings."
    )
    staff = models.BooleanField(default=False, help_text="May use the Django admin site.")
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, models.SET_NULL, null=True, blank=True, related_name="+"
    )
    created = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["provider_group", "pk"]
        constraints = [
            models.UniqueConstraint(
                fields=["provider_group", "account", "role"],
                name="sso_mapping_unique_account",
                condition=Q(account__isnull=False),
            ),
            models.UniqueConstraint(
                fields=["provider_group", "role"],
                name="sso_mapping_unique_all_accounts",
                condition=Q(account__isnull=True),
            ),
        ]

    def __str__(self) -> str:
        where = self.account or "every account"
        return f"{self.provider_group} → {self.get_role_display()} on {where}"


class Identity(models.Model):
    """The provider's person (issuer and subject) behind a portal user."""

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, models.CASCADE, related_name="sso_identity"
    )
    issuer = models.CharField(max_length=500)
    subject = models.CharField(max_length=255)
    groups = models.JSONField(default=list, blank=True, help_text="At the last sign-in.")
    last_sign_in = models.DateTimeField(null=True, blank=True)
    created = models.DateTimeField(default=timezone.now)

    class Meta:
        verbose_name_plural = "identities"
        constraints = [
            models.UniqueConstraint(fields=["issuer", "subject"], name="sso_identity_unique")
        ]

    def __str__(self) -> str:
        return f"{self.user} ({self.subject} at {self.issuer})"


class ManagedGrant(models.Model):
    """A grant single sign-on made, and may take away again."""

    grant = models.OneToOneField(AccountGrant, models.CASCADE, related_name="sso")
    created = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return f"{self.grant} (from single sign-on)"


class AccessEvent(models.Model):
    """Audit row: a sign-in through the provider (with what it granted and removed), a
    refused one, or a change to the group mappings."""

    class Kind(models.TextChoices):
        SIGNED_IN = "signed_in", "Signed in"
        REFUSED = "refused", "Sign-in refused"
        MAPPING_ADDED = "mapping_added", "Mapping added"
        MAPPING_REMOVED = "mapping_removed", "Mapping removed"

    kind = models.CharField(max_length=20, choices=Kind.choices)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, models.SET_NULL, null=True, blank=True, related_name="+"
    )
    actor_name = models.CharField(max_length=150, blank=True)
    details = models.JSONField(default=dict, blank=True)
    created = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-created", "-pk"]

    def __str__(self) -> str:
        return f"{self.created:%Y-%m-%d %H:%M:%S} {self.get_kind_display()} {self.actor_name}"


class ProviderDevice(Device):
    """The provider's second factor, as django-otp sees it.

    A sign-in whose ID token says a second factor was used (the ``amr`` or ``acr`` claim,
    settings.OIDC_MFA_AMR / OIDC_MFA_ACR) marks the session verified with this device, so
    the portal does not ask for its own TOTP code again. No code is ever accepted by it."""

    def verify_token(self, token) -> bool:
        return False

    def verify_is_allowed(self):
        return False, {"reason": "provider"}
