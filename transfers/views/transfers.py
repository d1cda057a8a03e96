"""Transfer pages: request one, the list and the incoming inbox, one transfer with its
timeline, and every action on it (approve, decline, withdraw, cancel, retry, accept, reject,
reconcile, restore and landing actions, re-sending a notice)."""

from __future__ import annotations

from datetime import datetime, time

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.db.models import Q
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils import timezone
from django.views.decorators.http import require_POST
from django_htmx.http import HttpResponseClientRedirect

from policies import rules
from transfers import access, aws, downtime, notices, permissions, workflow
from transfers.access import get_certificate_for_user, get_transfer_for_user
from transfers.forms import (
    DEVICE_ENDPOINT_ERRORS,
    DecisionForm,
    RejectForm,
    TransferFilterForm,
    TransferRequestForm,
)
from transfers.models import (
    AwsAccount,
    Transfer,
)
from transfers.workflow.landing_plan import cli_commands
from transfers.workflow.landing_plan import steps_left as landing_steps_left
from transfers.workflow.outcome import NOT_APPROVED as NOT_LANDED

PAGE_SIZE = 50


@login_required
def transfer_new(request: HttpRequest, cert_pk: int) -> HttpResponse:
    cert, _ = get_certificate_for_user(request.user, cert_pk)
    if not permissions.can_request(request.user, cert.account):
        raise PermissionDenied("Your role does not allow requesting transfers from this account.")
    form = TransferRequestForm(
        request.POST or None,
        source=cert.account,
        allow_new=permissions.can_request_to_unknown(request.user, cert.account),
        # Telling the devices is on by default when there are devices to tell.
        has_thing=cert.things.exists(),
    )
    plan = None
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        target = AwsAccount.objects.filter(account_id=data["target_account_id"]).first()
        # The devices' endpoint, checked as the workflow will: its error on its field.
        options = form.check_devices(target, cert.region)
        # Submitting needs a plan the person has seen: its fingerprint comes with the form.
        if options and request.POST.get("action") == "submit" and data["fingerprint"]:
            try:
                transfer = workflow.request_transfer(
                    request.user,
                    cert,
                    target_account_id=data["target_account_id"],
                    message=data["message"],
                    reason=data["reason"],
                    options=options,
                    fingerprint=data["fingerprint"],
                    landing=form.landing_choice(),
                )
            except workflow.TransferError as exc:
                form.add_error(
                    "device_endpoint" if exc.code in DEVICE_ENDPOINT_ERRORS else None, exc.message
                )
            else:
                messages.success(
                    request,
                    f"Transfer #{transfer.pk} requested; an approver "
                    "must approve it before anything happens in AWS.",
                )
                return redirect(transfer)
        plan = workflow.make_plan(
            cert, data["target_account_id"], options or form.options(), form.landing_choice()
        )
        form.data = form.data.copy()
        form.data["fingerprint"] = plan.fingerprint
    return render(
        request, "transfers/transfer_new.html", {"cert": cert, "form": form, "plan": plan}
    )


def _filtered(request: HttpRequest, qs):
    form = TransferFilterForm(request.GET)
    form.is_valid()
    data = form.cleaned_data
    if data.get("status"):
        qs = qs.filter(status=data["status"])
    if data.get("account"):
        qs = qs.filter(Q(source__account_id=data["account"]) | Q(target_account_id=data["account"]))
    if data.get("requester"):
        qs = qs.filter(requester__username=data["requester"])
    if data.get("since"):
        qs = qs.filter(created__gte=timezone.make_aware(datetime.combine(data["since"], time.min)))
    if data.get("until"):
        qs = qs.filter(created__lte=timezone.make_aware(datetime.combine(data["until"], time.max)))
    return form, qs


def _list(request: HttpRequest, qs, template: str, **extra) -> HttpResponse:
    # A row seen only through the target account shows what concerns the target
    # (access): no requester, approver or restore, and the requester filter skips it.
    qs = access.with_source_side(qs, request.user)
    form, qs = _filtered(request, qs)
    if form.cleaned_data.get("requester"):
        qs = qs.filter(source_side=True)
    qs = qs.select_related("source", "target", "requester", "approver")
    page = Paginator(qs, PAGE_SIZE).get_page(request.GET.get("page"))
    query = request.GET.copy()
    query.pop("page", None)
    context = {
        "form": form,
        "page": page,
        "query": query.urlencode(),
        "statuses": Transfer.Status.choices,
        **extra,
    }
    if request.htmx and not request.htmx.boosted:
        return render(request, f"{template}#rows", context)
    return render(request, template, context)


@login_required
def transfer_list(request: HttpRequest) -> HttpResponse:
    accounts = AwsAccount.objects.visible_to(request.user)
    return _list(
        request,
        Transfer.objects.visible_to(request.user),
        "transfers/transfer_list.html",
        title="Transfers",
        accounts=accounts,
    )


@login_required
def incoming(request: HttpRequest) -> HttpResponse:
    qs = permissions.incoming(request.user).order_by("pending_since")
    return _list(
        request,
        qs,
        "transfers/transfer_list.html",
        title="Incoming",
        intro="Certificates other accounts are transferring to accounts you manage. "
        "Accept or reject each one.",
    )


@login_required
def transfer_detail(request: HttpRequest, pk: int) -> HttpResponse:
    transfer = get_transfer_for_user(request.user, pk)
    source_roles = permissions.roles(request.user, transfer.source)
    # Seen only through the target account: what concerns the target (access).
    source_side = request.user.is_superuser or bool(source_roles)
    approvals = list(transfer.approvals.select_related("user")) if source_side else []
    held = bool(transfer.device_hold) and transfer.status == Transfer.Status.APPROVED
    context = {
        "t": transfer,
        "source_side": source_side,
        "events": transfer.events.select_related("actor")
        if source_side
        else access.events_for_target(transfer),
        "notices": transfer.notices.select_related("digest") if source_side else [],
        "can_approve": permissions.can_approve(request.user, transfer.source)
        and transfer.requester_id != request.user.pk
        and not any(a.user_id == request.user.pk for a in approvals),
        # "1 of 2 approvals" under the source's approval policy (policies/).
        "approvals": approvals,
        "approved_by_me": any(a.user_id == request.user.pk for a in approvals),
        "approvals_needed": rules.required(transfer)
        if transfer.status == Transfer.Status.REQUESTED
        else 0,
        "can_withdraw": permissions.can_withdraw(request.user, transfer),
        "can_retry": permissions.can_retry(request.user, transfer),
        # A failed transfer a newer one of the certificate followed: never retried again.
        "newer": workflow.newer_transfer(transfer)
        if transfer.status == Transfer.Status.FAILED
        else None,
        "can_operate_source": permissions.can_operate(request.user, transfer.source),
        "can_operate_target": permissions.can_act_as_target(request.user, transfer),
        "can_approve_landing": transfer.landing_state == Transfer.Landing.PLANNED
        and transfer.target_approver_id is None
        and transfer.is_open
        and permissions.can_approve_landing(request.user, transfer),
        "landing_left": landing_steps_left(transfer)
        if transfer.landing_state
        in (Transfer.Landing.PARTIAL, Transfer.Landing.ATTENTION, Transfer.Landing.LANDING)
        else [],
        "landing_commands": cli_commands(transfer)
        if transfer.landing and not (transfer.target and transfer.target.managed)
        else [],
        "restore_left": workflow.steps_left(transfer)
        if transfer.restore_state in (Transfer.Restore.PARTIAL, Transfer.Restore.ATTENTION)
        else [],
        # Held for its devices, nothing moves until an approver acts: no need to poll.
        "live": (transfer.status in Transfer.Status.IN_FLIGHT and not held)
        or transfer.restore_state == Transfer.Restore.PENDING
        or transfer.device_check == Transfer.DeviceCheck.WAITING,
        "held": held,
        "can_release_devices": held and permissions.can_approve(request.user, transfer.source),
        # Still waiting for (or held by) its devices: its requester or an approver may give up.
        "can_stop_waiting": transfer.status == Transfer.Status.APPROVED
        and transfer.tell_devices
        and bool(transfer.device_things)
        and transfer.device_released_by_id is None
        and (held or transfer.device_job_status != "SUCCEEDED")
        and (
            transfer.requester_id == request.user.pk
            or permissions.can_approve(request.user, transfer.source)
        ),
        "device_downtime": downtime.seconds(transfer.device_downtime),
        "decision_form": DecisionForm(),
        "reject_form": RejectForm(),
    }
    if request.htmx and request.htmx.target == "live":
        return render(request, "transfers/transfer_detail.html#live", context)
    return render(request, "transfers/transfer_detail.html", context)


def _act(request: HttpRequest, pk: int, done, action) -> HttpResponse:
    """``done``: the message on success, or a function of the action's result that says it."""
    transfer = get_transfer_for_user(request.user, pk)  # 404 before anything else
    try:
        result = action(transfer)
    except workflow.TransferError as exc:
        if exc.status == 403:
            raise PermissionDenied(exc.message) from None
        messages.error(request, exc.message)
    else:
        messages.success(request, done(result) if callable(done) else done)
    if request.htmx:
        return HttpResponseClientRedirect(transfer.get_absolute_url())
    return redirect(transfer)


def _form_or_error(request: HttpRequest, form_class):
    form = form_class(request.POST)
    if form.is_valid():
        return form.cleaned_data
    raise workflow.TransferError(
        "invalid",
        " ".join(
            f"{'' if name == '__all__' else name.capitalize() + ': '}{' '.join(errs)}"
            for name, errs in form.errors.items()
        ),
    )


@login_required
@require_POST
def transfer_approve(request: HttpRequest, pk: int) -> HttpResponse:
    def act(t):
        workflow.approve(request.user, t.pk, _form_or_error(request, DecisionForm)["comment"])

    return _act(request, pk, "Approved: a worker is preparing the certificate.", act)


@login_required
@require_POST
def transfer_decline(request: HttpRequest, pk: int) -> HttpResponse:
    def act(t):
        workflow.decline(request.user, t.pk, _form_or_error(request, DecisionForm)["comment"])

    return _act(request, pk, "Declined.", act)


@login_required
@require_POST
def transfer_withdraw(request: HttpRequest, pk: int) -> HttpResponse:
    return _act(request, pk, "Withdrawn.", lambda t: workflow.withdraw(request.user, t.pk))


@login_required
@require_POST
def transfer_cancel(request: HttpRequest, pk: int) -> HttpResponse:
    return _act(
        request,
        pk,
        "Cancelled in AWS; what was removed is being put back.",
        lambda t: workflow.cancel(request.user, t.pk),
    )


@login_required
@require_POST
def transfer_retry(request: HttpRequest, pk: int) -> HttpResponse:
    return _act(request, pk, "Queued again.", lambda t: workflow.retry(request.user, t.pk))


@login_required
@require_POST
def transfer_accept(request: HttpRequest, pk: int) -> HttpResponse:
    active = request.POST.get("set_as_active") == "on"

    def done(t: Transfer) -> str:
        if t.landing_state == Transfer.Landing.ATTENTION and not t.landed:
            return NOT_LANDED
        if t.landing:
            return "Accepted: the certificate now belongs to your account and lands as planned."
        return "Accepted: the certificate now belongs to your account" + (
            " and is ACTIVE." if active else " (INACTIVE)."
        )

    return _act(
        request,
        pk,
        done,
        lambda t: workflow.accept(request.user, t.pk, set_as_active=active),
    )


@login_required
@require_POST
def transfer_reject(request: HttpRequest, pk: int) -> HttpResponse:
    def act(t):
        workflow.reject(request.user, t.pk, _form_or_error(request, RejectForm)["reason"])

    return _act(request, pk, "Rejected: the certificate went back to the source account.", act)


@login_required
@require_POST
def transfer_reconcile(request: HttpRequest, pk: int) -> HttpResponse:
    def act(t):
        if not permissions.can_operate(request.user, t.source):
            raise workflow.TransferError("forbidden", "Not allowed.", status=403)
        try:
            outcome = workflow.reconcile_one(t.pk)
        except aws.AwsError as exc:
            raise workflow.TransferError.from_aws(exc) from None
        messages.info(request, f"Checked with AWS: {outcome}.")

    return _act(request, pk, "Up to date with AWS.", act)


@login_required
@require_POST
def transfer_approve_landing(request: HttpRequest, pk: int) -> HttpResponse:
    return _act(
        request,
        pk,
        "Landing approved: the move completes without waiting for anyone in the target.",
        lambda t: workflow.approve_landing(request.user, t.pk, request.POST.get("comment", "")),
    )


@login_required
@require_POST
def transfer_retry_landing(request: HttpRequest, pk: int) -> HttpResponse:
    return _act(
        request,
        pk,
        "Landing in the target again.",
        lambda t: workflow.retry_landing(request.user, t.pk),
    )


@login_required
@require_POST
def transfer_landed_by_hand(request: HttpRequest, pk: int) -> HttpResponse:
    return _act(
        request,
        pk,
        "Recorded: the landing was finished by hand.",
        lambda t: workflow.finished_by_hand(request.user, t.pk),
    )


@login_required
@require_POST
def transfer_release_devices(request: HttpRequest, pk: int) -> HttpResponse:
    """An approver moves a transfer held for its devices without their confirmation."""
    return _act(
        request,
        pk,
        "Released: the certificate moves without the devices' confirmation.",
        lambda t: workflow.release_devices(
            request.user, t.pk, _form_or_error(request, DecisionForm)["comment"]
        ),
    )


@login_required
@require_POST
def transfer_stop_waiting(request: HttpRequest, pk: int) -> HttpResponse:
    """Give up on a transfer still waiting for its devices: cancelled, nothing touched."""
    return _act(
        request,
        pk,
        "Stopped: the certificate stays in the source, untouched.",
        lambda t: workflow.stop_waiting_for_devices(
            request.user, t.pk, request.POST.get("comment", "")[:2000]
        ),
    )


@login_required
@require_POST
def transfer_restore_retry(request: HttpRequest, pk: int) -> HttpResponse:
    return _act(
        request,
        pk,
        "Putting back what preparation removed, again.",
        lambda t: workflow.retry_restore(request.user, t.pk),
    )


@login_required
@require_POST
def transfer_restored_by_hand(request: HttpRequest, pk: int) -> HttpResponse:
    return _act(
        request,
        pk,
        "Recorded: what was left of the restore was finished by hand.",
        lambda t: workflow.restored_by_hand(request.user, t.pk),
    )


@login_required
@require_POST
def notice_resend(request: HttpRequest, pk: int, notice_pk: int) -> HttpResponse:
    def act(t):
        if not permissions.can_resend_notice(request.user, t):
            raise workflow.TransferError("forbidden", "Not allowed.", status=403)
        notice = t.notices.filter(pk=notice_pk).first()
        if notice is None:
            raise Http404("No such notice")
        notices.resend(notice)

    return _act(request, pk, "The notice is being sent again.", act)
