"""Batch pages: request many certificates at once (ids pasted, uploaded as CSV or picked from
the inventory), the list, one batch with its progress, and the actions on all of its
transfers (approve, decline, withdraw, retry, cancel)."""

from __future__ import annotations

from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_POST
from django_htmx.http import HttpResponseClientRedirect

from profiles.models import zone_of
from transfers import access, batches, downtime, permissions, waves
from transfers.access import get_batch_for_user
from transfers.forms import (
    DEVICE_ENDPOINT_ERRORS,
    WEEKDAYS,
    BatchRequestForm,
    CertificateFilterForm,
    DecisionForm,
    TransferFilterForm,
)
from transfers.models import AwsAccount, Transfer, TransferBatch
from transfers.search import batch_counts, filter_batches, filtered_certificates
from transfers.workflow import TransferError

MAX_UPLOAD = 1_000_000  # bytes of CSV
TRANSFERS_PER_PAGE = 100
BATCHES_PER_PAGE = 50


class BatchForm(BatchRequestForm):
    ids = forms.CharField(
        label="Certificate ids or ARNs",
        required=False,
        widget=forms.Textarea(attrs={"rows": 6}),
        help_text="One per line or comma-separated; a CSV with a certificate id column works.",
    )
    csv_file = forms.FileField(label="Or upload a CSV", required=False)


def _ids_from(request: HttpRequest, form: BatchForm) -> tuple[list[str], list[str]]:
    text = form.cleaned_data.get("ids") or ""
    upload = form.cleaned_data.get("csv_file")
    if upload is not None:
        if upload.size > MAX_UPLOAD:
            raise TransferError("too_big", "The CSV is larger than 1 MB.")
        try:
            text += "\n" + upload.read().decode("utf-8-sig")
        except UnicodeDecodeError:
            raise TransferError("bad_csv", "The CSV is not UTF-8 text.") from None
    return batches.parse_ids(text)


@login_required
def batch_new(request: HttpRequest) -> HttpResponse:
    """Many certificates to one target: from a selection in the list, a filter, or a CSV."""
    initial_ids = "\n".join(request.GET.getlist("cert"))
    if request.GET.get("all") == "1":
        certs = filtered_certificates(request.user, CertificateFilterForm(request.GET))
        initial_ids = "\n".join(certs.values_list("certificate_id", flat=True)[: batches.MAX_BATCH])
    requestable = [
        a
        for a in AwsAccount.objects.visible_to(request.user).filter(managed=True)
        if permissions.can_request(request.user, a)
    ]
    if not requestable:
        raise PermissionDenied("Your role does not allow requesting transfers.")
    source = requestable[0]
    form = BatchForm(
        request.POST or None,
        request.FILES or None,
        initial={"ids": initial_ids},
        source=source,
        allow_new=False,
        zone=zone_of(request.user),  # the maintenance window's, by default
    )
    # Targets: any account except the one the selection comes from (checked again on submit).
    form.set_targets(list(AwsAccount.objects.order_by("-managed", "name")))
    check = bad = None
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        try:
            ids, bad = _ids_from(request, form)
            certs, missing = batches.select(request.user, ids)
            certs = [c for c in certs if c.account in requestable]
            target = AwsAccount.objects.filter(account_id=data["target_account_id"]).first()
            region = certs[0].region if certs else source.regions[0] if source.regions else ""
            options = form.check_devices(target, region)
            wave_choice = form.wave_choice()
            check = batches.preflight(
                certs, missing, data["target_account_id"], options or form.options()
            )
            if options and request.POST.get("action") == "submit":
                batch = batches.request_batch(
                    request.user,
                    certs,
                    missing,
                    target_account_id=data["target_account_id"],
                    message=data["message"],
                    reason=data["reason"],
                    options=options,
                    landing=form.landing_choice(),
                    wave_choice=wave_choice,
                )
                messages.success(
                    request,
                    f"Batch #{batch.pk} requested: "
                    f"{batch.transfers.count()} transfers wait for an approver.",
                )
                return redirect(batch)
        except TransferError as exc:
            form.add_error(
                "device_endpoint" if exc.code in DEVICE_ENDPOINT_ERRORS else None, exc.message
            )
    return render(request, "transfers/batch_new.html", {"form": form, "check": check, "bad": bad})


def _filtered_batches(request: HttpRequest, qs):
    form = TransferFilterForm(request.GET)
    form.is_valid()
    return form, filter_batches(qs, form.cleaned_data)


@login_required
def batch_list(request: HttpRequest) -> HttpResponse:
    # A batch seen only through its target shows no requester, and the requester filter
    # skips it (access).
    qs = access.with_source_side(TransferBatch.objects.visible_to(request.user), request.user)
    form, qs = _filtered_batches(request, qs)
    qs = qs.select_related("source", "requester").order_by("-created", "-pk")
    page = Paginator(qs, BATCHES_PER_PAGE).get_page(request.GET.get("page"))
    shown = list(page.object_list)
    counts = batch_counts([b.pk for b in shown])
    rows = []
    for b in shown:
        c = counts[b.pk]
        rows.append(
            (
                b,
                {
                    "total": sum(c.values()),
                    "requested": c.get("requested", 0),
                    "waiting": c.get("approved", 0) + c.get("preparing", 0),
                    "pending": c.get("pending_acceptance", 0),
                    "accepted": c.get("accepted", 0),
                    "failed": c.get("failed", 0),
                },
            )
        )
    query = request.GET.copy()
    query.pop("page", None)
    context = {
        "form": form,
        "page": page,
        "rows": rows,
        "query": query.urlencode(),
        "statuses": Transfer.Status.choices,
        "nav": "batches",
    }
    if request.htmx and not request.htmx.boosted:
        return render(request, "transfers/batch_list.html#rows", context)
    return render(request, "transfers/batch_list.html", context)


@login_required
def batch_detail(request: HttpRequest, pk: int) -> HttpResponse:
    batch, _ = get_batch_for_user(request.user, pk)
    progress = batches.progress(batch)
    devices = downtime.devices(batch.transfers.all())
    # Its devices still being waited for, the page keeps refreshing (not the paused banner).
    progress["live"] = progress["live"] or devices.waiting > 0
    context = {
        "batch": batch,
        # Seen only through the target: no reason, people, decision, errors or skipped ids.
        "source_side": access.sees_source_side(request.user, batch),
        "p": progress,
        "can_approve": permissions.can_decide_batch(request.user, batch)
        and batch.requester_id != request.user.pk,
        "can_operate": permissions.can_operate_batch(request.user, batch),
        "is_requester": batch.requester_id == request.user.pk,
        "devices": devices,
        "waves": waves.summary(batch) if batch.wave else [],
        "can_steer": permissions.can_decide_batch(request.user, batch),
        "next_window": waves.next_window(batch)
        if batch.window_days and not batch.stopped_at
        else None,
        "window_days": [name for n, name in WEEKDAYS if n in batch.window_days],
    }
    if request.htmx and request.htmx.target == "progress":
        return render(request, "transfers/batch_detail.html#progress", context)
    # The batch's transfers, a page at a time, narrowed to one state if asked (the failed).
    state = request.GET.get("state", "")
    rows = batch.transfers.order_by("pk")
    if state in Transfer.Status.values:
        rows = rows.filter(status=state)
    else:
        state = ""
    page = Paginator(rows, TRANSFERS_PER_PAGE).get_page(request.GET.get("page"))
    context |= {
        "transfers": page,
        "state": state,
        "states": Transfer.Status.choices,
        "query": f"state={state}" if state else "",
        "downtime": downtime.summarize(batch.transfers.all()),
    }
    return render(request, "transfers/batch_detail.html", context)


def _batch_action(request: HttpRequest, pk: int, allowed, act) -> HttpResponse:
    """``allowed(user, batch)`` from transfers.permissions; 403 when it says no."""
    batch, _ = get_batch_for_user(request.user, pk)
    if not allowed(request.user, batch):
        raise PermissionDenied("Your role does not allow this on this account.")
    try:
        messages.success(request, act(batch))
    except TransferError as exc:
        if exc.status == 403:
            raise PermissionDenied(exc.message) from None
        messages.error(request, exc.message)
    # Back where the decision was taken (the approvals queue), if that is on this site.
    back = request.POST.get("next", "")
    if not url_has_allowed_host_and_scheme(back, {request.get_host()}, request.is_secure()):
        back = batch.get_absolute_url()
    if request.htmx:
        return HttpResponseClientRedirect(back)
    return redirect(back)


@login_required
@require_POST
def batch_approve(request: HttpRequest, pk: int) -> HttpResponse:
    comment = request.POST.get("comment", "")
    return _batch_action(
        request,
        pk,
        permissions.can_decide_batch,
        lambda b: (
            f"Approved {batches.approve(request.user, b, comment)} transfers; workers take them "
            "at the account's API rate."
        ),
    )


@login_required
@require_POST
def batch_decline(request: HttpRequest, pk: int) -> HttpResponse:
    comment = request.POST.get("comment", "")

    def act(batch):
        if not comment.strip():
            raise TransferError("comment_required", "Say why you decline the batch.")
        return f"Declined {batches.decline(request.user, batch, comment)} transfers."

    return _batch_action(request, pk, permissions.can_decide_batch, act)


@login_required
@require_POST
def batch_withdraw(request: HttpRequest, pk: int) -> HttpResponse:
    return _batch_action(
        request,
        pk,
        permissions.can_withdraw_batch,
        lambda b: f"Withdrew {batches.withdraw(request.user, b)} requests.",
    )


@login_required
@require_POST
def batch_retry(request: HttpRequest, pk: int) -> HttpResponse:
    return _batch_action(
        request,
        pk,
        permissions.can_decide_batch,
        lambda b: f"Retrying {batches.retry_failed(request.user, b)} failed transfers.",
    )


@login_required
@require_POST
def batch_cancel(request: HttpRequest, pk: int) -> HttpResponse:
    def act(b):
        count, _ = batches.cancel_pending(request.user, b)
        return (
            f"Cancelling {count} pending transfers in AWS, in the background at the account's "
            "API rate; the progress is below."
        )

    return _batch_action(request, pk, permissions.can_operate_batch, act)


@login_required
@require_POST
def batch_resume(request: HttpRequest, pk: int) -> HttpResponse:
    return _batch_action(
        request,
        pk,
        permissions.can_decide_batch,
        lambda b: f"Resumed: wave {waves.resume(request.user, b).wave} moves on.",
    )


@login_required
@require_POST
def batch_stop(request: HttpRequest, pk: int) -> HttpResponse:
    """Stop a batch: what has not started stays in the source. It asks for a comment and a
    confirmation (checked here, so that a stray click stops nothing)."""
    form = DecisionForm(request.POST)
    comment = form.cleaned_data["comment"].strip() if form.is_valid() else ""

    def act(batch):
        if not comment:
            raise TransferError("comment_required", "Say why you stop the batch.")
        if request.POST.get("confirm") != "on":
            raise TransferError(
                "confirm_required", "Tick the box to confirm: stopping cannot be undone."
            )
        stopped = waves.stop(request.user, batch, comment)
        return (
            f"Stopped: {stopped} transfer{'s' if stopped != 1 else ''} that had not started "
            "stay in the source, untouched."
        )

    return _batch_action(request, pk, permissions.can_decide_batch, act)
