"""Object access for views and the API: one helper per model.

A user who may not see an object gets 404 (existence never leaks); one who may see it
but not change it gets 403.
"""

from __future__ import annotations

from django.core.exceptions import PermissionDenied
from django.http import Http404

from transfers.models import AwsAccount, Certificate


def get_account_for_user(user, pk: int, need: set[str] | None = None) -> tuple[AwsAccount, set]:
    account = AwsAccount.objects.visible_to(user).filter(pk=pk).first()
    if account is None:
        raise Http404("No such account")
    roles = account.role_for(user)
    if need is not None and not roles & need:
        raise PermissionDenied("Your role on this account does not allow this.")
    return account, roles


def get_certificate_for_user(user, pk: int) -> tuple[Certificate, set]:
    cert = (
        Certificate.objects.visible_to(user)
        .select_related("account")
        .prefetch_related("policies", "things")
        .filter(pk=pk)
        .first()
    )
    if cert is None:
        raise Http404("No such certificate")
    return cert, cert.account.role_for(user)


def can_manage_accounts(user) -> bool:
    return user.is_superuser or user.groups.filter(name="admin").exists()


def get_transfer_for_user(user, pk: int):
    """A transfer out of or into an account the user can see; 404 otherwise."""
    from transfers.models import Transfer

    transfer = (
        Transfer.objects.visible_to(user)
        .select_related("source", "target", "requester", "approver", "cert")
        .filter(pk=pk)
        .first()
    )
    if transfer is None:
        raise Http404("No such transfer")
    return transfer
