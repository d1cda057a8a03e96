"""What a sign-in through the provider does in the portal: find or make the user, and apply
the group mappings (sso.models.GroupMapping) again."""

from __future__ import annotations

import logging
import re

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.db import transaction
from django.utils import timezone

from sso.models import AccessEvent, GroupMapping, Identity, ManagedGrant
from transfers.models import AccountGrant, AwsAccount

log = logging.getLogger(__name__)
USERNAME_UNSAFE = re.compile(r"[^\w.@+-]")
PORTAL_ADMIN_GROUP = "admin"  # transfers.permissions.can_manage_accounts


class Refusal(Exception):
    """A sign-in the portal refuses: ``message`` is for the person, ``detail`` for the log."""

    def __init__(self, message: str, detail: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.detail = detail


def groups_of(claims: dict) -> list[str]:
    value = claims.get(settings.OIDC_GROUPS_CLAIM)
    if value is None:
        return []
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list):
        return []
    return sorted({str(v) for v in value if isinstance(v, str | int)})


def sign_in(issuer: str, claims: dict, mfa: bool = False):
    """The user for these (verified) claims, with grants as the mappings say; Refusal if the
    person may not sign in."""
    subject = str(claims["sub"])
    groups = groups_of(claims)
    mappings = list(GroupMapping.objects.filter(provider_group__in=groups))
    with transaction.atomic():
        identity = (
            Identity.objects.select_for_update()
            .select_related("user")
            .filter(issuer=issuer, subject=subject)
            .first()
        )
        if not mappings:
            # Known before: whatever single sign-on gave is taken back now.
            removed = _apply(identity.user, []) if identity else []
            AccessEvent.objects.create(
                kind=AccessEvent.Kind.REFUSED,
                user=identity.user if identity else None,
                actor_name=_display(claims),
                details={"reason": "no mapped group", "groups": groups, "removed": removed},
            )
            refusal = Refusal(
                "You signed in at your organisation's identity provider, but none of your groups "
                "gives a role in this portal. Ask a portal admin to map one of your groups.",
                detail=f"{subject} at {issuer}, groups {groups}",
            )
        else:
            refusal = None
            if identity is None:
                identity = Identity(issuer=issuer, subject=subject, user=_new_user(claims))
            user = identity.user
            if not user.is_active:
                raise Refusal("This portal account is disabled.", detail=str(user))
            _update_profile(user, claims, mappings)
            identity.groups = groups
            identity.last_sign_in = timezone.now()
            identity.save()
            changes = _apply(user, mappings)
            AccessEvent.objects.create(
                kind=AccessEvent.Kind.SIGNED_IN,
                user=user,
                actor_name=user.get_username(),
                details={"groups": groups, "second_factor": mfa, "changes": changes},
            )
    if refusal is not None:
        raise refusal
    log.info("single sign-on: %s signed in, groups %s, changes %s", user, groups, changes)
    return user


def _display(claims: dict) -> str:
    return str(claims.get(settings.OIDC_USERNAME_CLAIM) or claims.get("email") or claims["sub"])


def _new_user(claims: dict):
    users = get_user_model()
    username = USERNAME_UNSAFE.sub("_", _display(claims))[:150]
    if users.objects.filter(username=username).exists():
        # Never take over a local account (the break-glass admin's, say) by its name.
        raise Refusal(
            f"A local portal account named {username!r} already exists, so this sign-in cannot "
            "use that name. A portal admin must rename or remove the local account first.",
            detail=f"username {username!r} taken",
        )
    user = users.objects.create_user(username, email=claims.get("email") or "")
    user.set_unusable_password()  # it signs in through the provider only
    user.save(update_fields=["password"])
    return user


def _update_profile(user, claims: dict, mappings: list[GroupMapping]) -> None:
    user.email = str(claims.get("email") or user.email)[:254]
    user.first_name = str(claims.get("given_name") or user.first_name)[:150]
    user.last_name = str(claims.get("family_name") or user.last_name)[:150]
    # Not staff unless a mapping says so; never superuser through the provider.
    user.is_staff = any(m.staff for m in mappings)
    user.save(update_fields=["email", "first_name", "last_name", "is_staff"])


def _apply(user, mappings: list[GroupMapping]) -> list[str]:
    """Make the user's single sign-on grants exactly what ``mappings`` give; what changed."""
    every_account = None
    wanted: set[tuple[int, str]] = set()
    for mapping in mappings:
        if mapping.account_id is not None:
            wanted.add((mapping.account_id, mapping.role))
        else:
            if every_account is None:
                every_account = list(AwsAccount.objects.values_list("pk", flat=True))
            wanted |= {(pk, mapping.role) for pk in every_account}
    changes = []
    made = {
        (m.grant.account_id, m.grant.role): m.grant
        for m in ManagedGrant.objects.select_related("grant", "grant__account").filter(
            grant__user=user
        )
    }
    for key, grant in made.items():
        if key not in wanted:
            changes.append(f"removed {grant.role} on {grant.account.account_id}")
            grant.delete()
    held = set(AccountGrant.objects.filter(user=user).values_list("account_id", "role"))
    accounts = dict(AwsAccount.objects.values_list("pk", "account_id"))
    for account_pk, role in sorted(wanted - held):
        grant = AccountGrant.objects.create(account_id=account_pk, user=user, role=role)
        ManagedGrant.objects.create(grant=grant)
        changes.append(f"granted {role} on {accounts[account_pk]}")
    admin_group, _ = Group.objects.get_or_create(name=PORTAL_ADMIN_GROUP)
    is_admin = user.groups.filter(pk=admin_group.pk).exists()
    if any(m.portal_admin for m in mappings) and not is_admin:
        user.groups.add(admin_group)
        changes.append("made portal admin")
    elif is_admin and not any(m.portal_admin for m in mappings):
        user.groups.remove(admin_group)
        changes.append("no longer portal admin")
    return changes
