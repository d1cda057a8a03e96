"""The notices the portal sent, for staff: who was told what, and the email as rendered.

The demo writes mail to files a newcomer never opens; this page shows it instead."""

from __future__ import annotations

from django import forms
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, render
from django.views.decorators.http import require_GET

from transfers import messages
from transfers.models import Notice

PAGE_SIZE = 50


class NoticeFilterForm(forms.Form):
    channel = forms.ChoiceField(
        required=False, choices=[("", "Any channel"), *Notice.Channel.choices]
    )
    kind = forms.ChoiceField(required=False, choices=[("", "Any kind"), *Notice.Kind.choices])
    status = forms.ChoiceField(required=False, choices=[("", "Any state"), *Notice.Status.choices])
    recipient = forms.CharField(required=False, max_length=200)


def _staff(request: HttpRequest) -> None:
    # Notices of every account: staff only. Others get what a missing page gets (404).
    if not request.user.is_staff:
        raise Http404("No such page")


@login_required
@require_GET
def notice_list(request: HttpRequest) -> HttpResponse:
    _staff(request)
    form = NoticeFilterForm(request.GET)
    form.is_valid()
    data = form.cleaned_data
    qs = Notice.objects.select_related("transfer", "batch").order_by("-pk")
    for name in ("channel", "kind", "status"):
        if data.get(name):
            qs = qs.filter(**{name: data[name]})
    if data.get("recipient"):
        qs = qs.filter(recipient__icontains=data["recipient"].strip())
    page = Paginator(qs, PAGE_SIZE).get_page(request.GET.get("page"))
    query = request.GET.copy()
    query.pop("page", None)
    context = {"form": form, "page": page, "query": query.urlencode(), "nav": "notices"}
    if request.htmx and not request.htmx.boosted:
        return render(request, "transfers/notice_list.html#rows", context)
    return render(request, "transfers/notice_list.html", context)


@login_required
@require_GET
def notice_detail(request: HttpRequest, pk: int) -> HttpResponse:
    _staff(request)
    notice = get_object_or_404(Notice.objects.select_related("transfer", "batch", "digest"), pk=pk)
    rendered = messages.render(notice) if notice.channel == Notice.Channel.EMAIL else None
    body = None if rendered else messages.body_json(notice)
    return render(
        request,
        "transfers/notice_detail.html",
        {"n": notice, "email": rendered, "body": body, "nav": "notices"},
    )
