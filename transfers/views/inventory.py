from __future__ import annotations

from collections import defaultdict

from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.db import connections
from django.db.models import Q
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils import timezone
from django.utils.html import format_html, format_html_join

from transfers.access import get_certificate_for_user
from transfers.forms import SORTS, CertificateFilterForm
from transfers.models import (
    CAN_REQUEST,
    AccountGrant,
    AwsAccount,
    Certificate,
    CertificatePolicy,
    CertificateThing,
    Transfer,
)

PAGE_SIZE = 50
# What a row of the list shows (templates/transfers/certificate_list.html).
LISTED_FIELDS = ("account", "region", "certificate_id", "status", "not_after")


class TailPaginator(Paginator):
    """Pages past the middle are read from the other end of the ordering.

    An OFFSET makes the database step over every row before it (about 0.3 s for the last of
    2,000 pages on SQLite); reading the last pages in reverse makes them as cheap as the
    first. The ordering must be total (every sort ends with the primary key)."""

    def page(self, number):
        number = self.validate_number(number)
        bottom = (number - 1) * self.per_page
        top = bottom + self.per_page
        if top + self.orphans >= self.count:
            top = self.count
        if bottom <= self.count // 2:
            return super().page(number)
        rows = list(self.object_list.reverse()[self.count - top : self.count - bottom])
        return self._get_page(rows[::-1], number, self)


def _prefix(field: str, value: str, using: str) -> Q:
    """``field`` starts with ``value``, in a form a B-tree index can serve.

    SQLite's LIKE is case-insensitive, so it never uses a plain index and scans the table;
    a range on the column does use it (the LIKE stays, so the match is exact, and
    case-sensitive as on PostgreSQL). PostgreSQL's LIKE needs a *_pattern_ops index
    (docs/benchmarks.md)."""
    condition = Q(**{f"{field}__startswith": value})
    if connections[using].vendor == "sqlite" and ord(value[-1]) < 0xD7FF:
        upper = value[:-1] + chr(ord(value[-1]) + 1)
        condition &= Q(**{f"{field}__gte": value, f"{field}__lt": upper})
    return condition


def search(queryset, q: str):
    """Id or ARN prefix, or a policy or thing name (prefix)."""
    if not q:
        return queryset
    using = queryset.db
    if q.startswith("arn:"):
        return queryset.filter(_prefix("arn", q, using))
    # Each branch is found through its own index and the certificates then by primary key.
    # An OR of EXISTS (or of IN) makes the database test every certificate row instead
    # (0.1-0.5 s at 100,000 certificates, docs/benchmarks.md).
    ids = (
        Certificate.objects.filter(_prefix("certificate_id", q.lower(), using))
        .order_by()
        .values("pk")
        .union(
            CertificatePolicy.objects.filter(_prefix("name", q, using))
            .order_by()
            .values("certificate_id"),
            CertificateThing.objects.filter(_prefix("name", q, using))
            .order_by()
            .values("certificate_id"),
            all=True,
        )
    )
    return queryset.filter(pk__in=ids)


def can_request_anywhere(user) -> bool:
    return (
        user.is_superuser
        or AccountGrant.objects.filter(
            Q(user=user) | Q(group__in=user.groups.all()), role__in=CAN_REQUEST
        ).exists()
    )


def filtered_certificates(user, form: CertificateFilterForm, accounts=None):
    """The certificates a user may see, narrowed by the list's filters. Invalid fields are
    dropped from cleaned_data (the page shows them as errors)."""
    form.is_valid()
    data = form.cleaned_data
    if accounts is None:
        accounts = AwsAccount.objects.visible_to(user).filter(managed=True)
    certs = Certificate.objects.filter(account__in=[a.pk for a in accounts])
    certs = search(certs, data.get("q", ""))
    if data.get("account"):
        certs = certs.filter(account__account_id=data["account"])
    if data.get("region"):
        certs = certs.filter(region=data["region"])
    if data.get("status"):
        certs = certs.filter(status=data["status"])
    return certs


def _tags(names: list[str]) -> str:
    # Built here, escaped by format_html: a template loop per certificate and column cost
    # a fifth of the page's rendering.
    if not names:
        return format_html('<span class="muted">{}</span>', "none")
    return format_html_join(" ", '<span class="tag">{}</span>', ((name,) for name in names))


def page_rows(pks: list[int], accounts) -> list[Certificate]:
    """The certificates ``pks`` in that order, with their accounts (already loaded: no join,
    no JSON decoded per row) and their policy and thing names from one query each (Django's
    prefetch builds a queryset per certificate, which costs more than the queries)."""
    rows = Certificate.objects.only(*LISTED_FIELDS).in_bulk(pks)
    by_account = {a.pk: a for a in accounts}
    now = timezone.now()
    policies, things = defaultdict(list), defaultdict(list)
    for related, names in ((CertificatePolicy, policies), (CertificateThing, things)):
        found = related.objects.filter(certificate_id__in=pks).order_by("certificate_id", "name")
        for certificate_id, name in found.values_list("certificate_id", "name"):
            names[certificate_id].append(name)
    listed = []
    for pk in pks:
        cert = rows[pk]
        cert.account = by_account[cert.account_id]
        cert.policy_tags, cert.thing_tags = _tags(policies[pk]), _tags(things[pk])
        cert.expiry_class = {"expired": "bad", "expiring": "warn"}.get(cert.validity(now), "")
        listed.append(cert)
    return listed


@login_required
def certificate_list(request: HttpRequest) -> HttpResponse:
    form = CertificateFilterForm(request.GET)
    accounts = list(AwsAccount.objects.visible_to(request.user).filter(managed=True))
    certs = filtered_certificates(request.user, form, accounts)
    data = form.cleaned_data
    sort = data.get("sort") or "newest"
    # The page's primary keys first, sorted from a narrow index (a search may match
    # thousands of certificates), then only those rows.
    pks = certs.order_by(*SORTS[sort]).values_list("pk", flat=True)
    page = TailPaginator(pks, PAGE_SIZE).get_page(request.GET.get("page"))
    page.object_list = page_rows(list(page.object_list), accounts)
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
        "filters": [(k, v) for k, v in query.items() if k in {"q", "account", "region", "status"}],
        "can_bulk": can_request_anywhere(request.user),
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
