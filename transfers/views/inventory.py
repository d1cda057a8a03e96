from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.db.models import Exists, OuterRef, Q
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from transfers.access import get_certificate_for_user
from transfers.forms import SORTS, CertificateFilterForm
from transfers.models import (
    CAN_REQUEST,
    AwsAccount,
    Certificate,
    CertificatePolicy,
    CertificateThing,
    Transfer,
)

PAGE_SIZE = 50


def search(queryset, q: str):
    """Id or ARN prefix, or a policy or thing name (prefix)."""
    if not q:
        return queryset
    if q.startswith("arn:"):
        return queryset.filter(arn__startswith=q)
    by_policy = CertificatePolicy.objects.filter(certificate=OuterRef("pk"), name__startswith=q)
    by_thing = CertificateThing.objects.filter(certificate=OuterRef("pk"), name__startswith=q)
    return queryset.filter(
        Q(certificate_id__startswith=q.lower()) | Exists(by_policy) | Exists(by_thing)
    )


@login_required
def certificate_list(request: HttpRequest) -> HttpResponse:
    form = CertificateFilterForm(request.GET)
    form.is_valid()  # invalid fields are dropped from cleaned_data and shown as errors
    data = form.cleaned_data
    accounts = list(AwsAccount.objects.visible_to(request.user).filter(managed=True))
    certs = Certificate.objects.filter(account__in=[a.pk for a in accounts])
    certs = search(certs, data.get("q", ""))
    if data.get("account"):
        certs = certs.filter(account__account_id=data["account"])
    if data.get("region"):
        certs = certs.filter(region=data["region"])
    if data.get("status"):
        certs = certs.filter(status=data["status"])
    sort = data.get("sort") or "newest"
    certs = certs.order_by(*SORTS[sort]).select_related("account")
    certs = certs.prefetch_related("policies", "things")
    page = Paginator(certs, PAGE_SIZE).get_page(request.GET.get("page"))
    regions = sorted({r for a in accounts for r in a.regions})
    query = request.GET.copy()
    query.pop("page", None)
    context = {
        "form": form,
        "page": page,
        "accounts": accounts,
        "regions": regions,
        "statuses": Certificate.Status.choices,
        "sorts": list(SORTS),
        "sort": sort,
        "query": query.urlencode(),
    }
    if request.htmx and not request.htmx.boosted:
        return render(request, "transfers/certificate_list.html#results", context)
    return render(request, "transfers/certificate_list.html", context)


@login_required
def certificate_detail(request: HttpRequest, pk: int) -> HttpResponse:
    cert, roles = get_certificate_for_user(request.user, pk)
    history = Transfer.objects.filter(
        source=cert.account, region=cert.region, certificate_id=cert.certificate_id
    ).select_related("requester")[:50]
    return render(
        request,
        "transfers/certificate_detail.html",
        {"cert": cert, "can_request": bool(roles & CAN_REQUEST), "transfers": history},
    )
