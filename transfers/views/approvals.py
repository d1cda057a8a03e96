"""Approvals: requests waiting for a decision on accounts the user approves for.

A batch is one row (count, source, target, requester, age) with its own approve and decline;
single requests are listed as before. Both run a fixed number of queries however many rows.
"""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.db.models import Count, Min
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from policies import rules
from transfers import access, permissions
from transfers.models import Transfer, TransferBatch
from transfers.views.transfers import PAGE_SIZE, _filtered

BATCHES_SHOWN = 50


@login_required
def approvals(request: HttpRequest) -> HttpResponse:
    waiting = Transfer.objects.filter(
        source__in=permissions.approvable_accounts(request.user).values("pk"),
        status=Transfer.Status.REQUESTED,
    )
    form, waiting = _filtered(request, waiting)
    # Batches: one row each, oldest request first.
    groups = list(
        waiting.filter(batch__isnull=False, batch__decided_at__isnull=True)
        .order_by()
        .values("batch")
        .annotate(n=Count("pk"), oldest=Min("created"))
        .order_by("oldest")[:BATCHES_SHOWN]
    )
    found = TransferBatch.objects.select_related("source", "requester").in_bulk(
        [g["batch"] for g in groups]
    )
    batch_rows = [(found[g["batch"]], g["n"], g["oldest"]) for g in groups if g["batch"] in found]
    # Single requests, a page at a time.
    singles = (
        waiting.filter(batch__isnull=True)
        .select_related("source", "target", "requester", "approver")
        .order_by("created", "pk")
    )
    page = Paginator(singles, PAGE_SIZE).get_page(request.GET.get("page"))
    # "1 of 2 approvals" under the source's approval policy (policies/).
    page.object_list = list(page.object_list)
    rules.annotate_progress(request.user, page.object_list, batch_rows)
    # Landings the target side may approve in advance (pre-accepted moves): the target is
    # an account the user approves for; the checks that it is another person come on click.
    # Seen only through the target: no requester (access).
    landings = list(
        access.with_source_side(permissions.landings_to_approve(request.user), request.user)
        .select_related("source", "requester")
        .order_by("created", "pk")[:BATCHES_SHOWN]
    )
    query = request.GET.copy()
    query.pop("page", None)
    context = {
        "landings": landings,
        "form": form,
        "page": page,
        "query": query.urlencode(),
        "statuses": Transfer.Status.choices,
        "batch_rows": batch_rows,
        "more_batches": len(groups) == BATCHES_SHOWN,
        "nav": "approvals",
    }
    if request.htmx and not request.htmx.boosted:
        return render(request, "transfers/approvals.html#rows", context)
    return render(request, "transfers/approvals.html", context)
