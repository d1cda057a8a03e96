"""An account admin's page: the account's approval policy."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils import timezone

from policies.forms import PolicyForm
from policies.models import ApprovalPolicy, PolicyChange
from transfers import permissions
from transfers.access import get_account_for_user


@login_required
def edit(request: HttpRequest, pk: int) -> HttpResponse:
    account, _ = get_account_for_user(request.user, pk)  # 404 for accounts not visible
    if not permissions.is_admin(request.user, account):
        raise PermissionDenied("Only an admin of this account sets its approval policy.")
    policy = ApprovalPolicy.objects.filter(account=account).first() or ApprovalPolicy(
        account=account
    )
    before = policy.describe()
    form = PolicyForm(request.POST or None, instance=policy)
    if request.method == "POST" and form.is_valid():
        with transaction.atomic():
            saved = form.save(commit=False)
            saved.updated_by, saved.updated = request.user, timezone.now()
            saved.save()
            PolicyChange.objects.create(
                account=account, user=request.user, before=before, after=saved.describe()
            )
        messages.success(
            request,
            f"Approval policy of {account.name}: {saved.describe()}. It applies to "
            "requests waiting now and to new ones.",
        )
        return redirect(account)
    return render(
        request,
        "policies/edit.html",
        {
            "account": account,
            "form": form,
            "changes": PolicyChange.objects.filter(account=account).select_related("user")[:10],
            "nav": "accounts",
        },
    )
