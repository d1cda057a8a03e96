"""Account pages: the list, one account (its data endpoints, grants, syncs), adding and
editing, a sync now, and a new webhook signing secret."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST
from django_htmx.http import HttpResponseClientRedirect

from transfers import aws, inventory, notices, permissions, ratelimit
from transfers.access import get_account_for_user
from transfers.forms import AccountForm
from transfers.models import AccountGrant, AwsAccount, Role


@login_required
def account_list(request: HttpRequest) -> HttpResponse:
    accounts = AwsAccount.objects.visible_to(request.user).order_by("-managed", "name")
    return render(
        request,
        "transfers/account_list.html",
        {"accounts": accounts, "can_manage": permissions.can_manage_accounts(request.user)},
    )


@login_required
def account_detail(request: HttpRequest, pk: int) -> HttpResponse:
    account, roles = get_account_for_user(request.user, pk)
    if request.htmx and request.htmx.target == "sync-runs":
        endpoints = []  # the polled fragment does not show them
    else:
        endpoints = inventory.data_endpoints(account)
    runs = list(account.sync_runs.order_by("-created")[:10])
    context = {
        "endpoints": endpoints,
        "account": account,
        "roles": roles,
        "runs": runs,
        "syncing": any(r.is_open for r in runs),
        "can_sync": account.managed and permissions.can_operate(request.user, account),
        "can_manage": permissions.can_manage_accounts(request.user),
        "certificate_count": account.certificates.count(),
        "allowances": ratelimit.table(account) if account.managed else [],
        "quota_reads": account.quota_reads.order_by("region"),
    }
    if request.htmx and request.htmx.target == "sync-runs":
        return render(request, "transfers/account_detail.html#sync-runs", context)
    return render(request, "transfers/account_detail.html", context)


@login_required
@require_POST
def account_sync(request: HttpRequest, pk: int) -> HttpResponse:
    account, _ = get_account_for_user(request.user, pk)
    if not permissions.can_operate(request.user, account):
        raise PermissionDenied("Your role on this account does not allow this.")
    if not account.managed:
        messages.error(request, "This account is only known, not managed: nothing to sync.")
    else:
        fresh = inventory.sync_now(account, request.user)
        if fresh:
            messages.success(request, f"Sync queued for {fresh} region(s).")
        else:
            messages.info(request, "A sync is already queued or running.")
    if request.htmx:
        return HttpResponseClientRedirect(account.get_absolute_url())
    return redirect(account)


def _check_connection(form: AccountForm) -> bool:
    """Try the account's credentials in each region; put a clear error on the form."""
    account = form.instance
    if not account.managed:
        return True
    for region in account.regions:
        try:
            aws.check_access(account, region)
        except aws.AwsError as exc:
            form.add_error(
                None,
                f"Cannot reach account {account.account_id} in {region}: "
                f"{exc.user_message} Nothing was saved.",
            )
            return False
    return True


@login_required
def account_edit(request: HttpRequest, pk: int | None = None) -> HttpResponse:
    if not permissions.can_manage_accounts(request.user):
        if pk is not None:
            get_account_for_user(request.user, pk)  # 404 before 403 for unseen accounts
        raise PermissionDenied("Only portal admins manage accounts.")
    account = None
    if pk is not None:
        account, _ = get_account_for_user(request.user, pk)
    form = AccountForm(request.POST or None, instance=account)
    if request.method == "POST" and form.is_valid() and _check_connection(form):
        with transaction.atomic():
            saved = form.save()
            if account is None and not request.user.is_superuser:
                AccountGrant.objects.create(account=saved, user=request.user, role=Role.ADMIN)
        messages.success(request, f"Saved {saved}.")
        return redirect(saved)
    return render(request, "transfers/account_form.html", {"form": form, "account": account})


@login_required
@require_POST
def account_webhook_secret(request: HttpRequest, pk: int) -> HttpResponse:
    """Generate a new webhook signing secret and show it this once."""
    account, _ = get_account_for_user(request.user, pk)
    if not (
        permissions.can_manage_accounts(request.user) or permissions.is_admin(request.user, account)
    ):
        raise PermissionDenied("Only an admin of the account sets its webhook secret.")
    account.webhook_secret = notices.new_webhook_secret()
    account.save(update_fields=["webhook_secret"])
    return render(request, "transfers/webhook_secret.html", {"account": account})
