"""The certificate list and a certificate's page. The search, paging and counts behind the
list live in transfers.search (the API's certificate list asks it too)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from django.contrib.auth.decorators import login_required
from django.db.models import Value
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils import timezone
from django.utils.html import format_html, format_html_join

from transfers import permissions
from transfers.access import get_certificate_for_user
from transfers.forms import SORTS, CertificateFilterForm
from transfers.models import (
    AwsAccount,
    Certificate,
    CertificatePolicy,
    CertificateThing,
    Transfer,
    validity,
)
from transfers.search import (
    CertificatePaginator,
    count_branches,
    narrowed_certificates,
    narrowing,
    search,
    search_keys,
    search_walk,
)

PAGE_SIZE = 50
# What a row of the list shows (templates/transfers/certificate_list.html), all held by
# certificate_page_idx: the page query returns the rows themselves.
ROW_FIELDS = ("pk", "account", "region", "certificate_id", "status", "not_after")


def can_request_anywhere(user) -> bool:
    return permissions.requestable_accounts(user).exists()


def _tags(names: tuple[str, ...]) -> str:
    # Built here, escaped by format_html: a template loop per certificate and column cost
    # a fifth of the page's rendering.
    if not names:
        return format_html('<span class="muted">{}</span>', "none")
    return format_html_join(" ", '<span class="tag">{}</span>', ((name,) for name in names))


@dataclass(slots=True)
class ListedCertificate:
    """A row of the certificate list: what it shows, without a model instance per row."""

    pk: int
    account: AwsAccount
    region: str
    certificate_id: str
    status: str
    not_after: datetime | None
    policy_tags: str = ""
    thing_tags: str = ""
    expiry_class: str = ""

    @property
    def short_id(self) -> str:
        return self.certificate_id[:12]


def page_rows(rows: list[tuple], accounts) -> list[ListedCertificate]:
    """List rows from the page query's ``ROW_FIELDS`` tuples, with their accounts (already
    loaded) and their policy and thing names, both from one query (Django's prefetch
    builds a queryset per certificate, which costs more than the queries)."""
    pks = [row[0] for row in rows]
    names = {pk: ([], []) for pk in pks}
    linked = (
        CertificatePolicy.objects.filter(certificate_id__in=pks)
        .order_by()
        .values_list("certificate_id", "name", Value(0))
        .union(
            CertificateThing.objects.filter(certificate_id__in=pks)
            .order_by()
            .values_list("certificate_id", "name", Value(1)),
            all=True,
        )
    )
    for certificate_id, name, kind in linked:
        names[certificate_id][kind].append(name)
    by_account = {a.pk: a for a in accounts}
    tags: dict[tuple, str] = {}  # certificates share their policies
    now = timezone.now()
    listed = []
    for pk, account_id, region, certificate_id, status, not_after in rows:
        policies, things = (tuple(sorted(n)) for n in names[pk])
        for key in (policies, things):
            if key not in tags:
                tags[key] = _tags(key)
        listed.append(
            ListedCertificate(
                pk,
                by_account[account_id],
                region,
                certificate_id,
                status,
                not_after,
                tags[policies],
                tags[things],
                {"expired": "bad", "expiring": "warn"}.get(validity(not_after, now), ""),
            )
        )
    return listed


@login_required
def certificate_list(request: HttpRequest) -> HttpResponse:
    form = CertificateFilterForm(request.GET)
    accounts = list(AwsAccount.objects.visible_to(request.user).filter(managed=True))
    narrowed, account_pks = narrowed_certificates(request.user, form, accounts)
    data = form.cleaned_data
    q, sort = data.get("q", ""), data.get("sort") or "newest"
    # The page's rows straight from a narrow index that holds what a row shows (a search
    # may match and sort thousands of certificates), then their names.
    order = SORTS[sort]
    rows = search(narrowed, q, **narrowing(data)).order_by(*order).values_list(*ROW_FIELDS)
    shortcuts = {}
    if q and not q.startswith("arn:"):

        def walk(found):
            return search_walk(narrowed, q, found).order_by(*order).values_list(*ROW_FIELDS)

        shortcuts = {
            "walk": walk,
            "account_pks": account_pks,
            "keys": search_keys(q, account_pks, narrowed.db, **narrowing(data)),
        }
    if request.GET.get("count") != "exact":
        shortcuts["branches"] = count_branches(narrowed, q, account_pks, data)
    paginator = CertificatePaginator(rows, PAGE_SIZE, **shortcuts)
    page = paginator.get_page(request.GET.get("page"))
    page.object_list = page_rows(page.object_list, accounts)
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
        {
            "cert": cert,
            "can_request": permissions.can_request(request.user, cert.account),
            "transfers": history,
        },
    )
