"""Home: the state of things at a glance, scoped to the accounts the user may see."""

from __future__ import annotations

import statistics
from datetime import datetime, time, timedelta

from django.contrib.auth.decorators import login_required
from django.db.models import Count
from django.db.models.functions import Coalesce, TruncDate
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils import timezone
from django.utils.text import Truncator

from transfers import charts
from transfers.models import Certificate, Transfer, TransferEvent

DAYS = 30
PENDING_SHOWN = 8
EVENTS_SHOWN = 12


@login_required
def home(request: HttpRequest) -> HttpResponse:
    user = request.user
    now = timezone.now()
    first_day = (now - timedelta(days=DAYS - 1)).date()
    since = timezone.make_aware(datetime.combine(first_day, time.min))
    transfers = Transfer.objects.visible_to(user).order_by()

    # 1. Transfers per state.
    by_state = dict(transfers.values_list("status").annotate(n=Count("pk")))
    states = [(label, by_state.get(value, 0), value) for value, label in Transfer.Status.choices]

    # 2. Transfers requested per day.
    per_day = dict(
        transfers.filter(created__gte=since)
        .annotate(day=TruncDate("created"))
        .values_list("day")
        .annotate(n=Count("pk"))
    )

    # 3. Request to acceptance (AWS's accept date when known), for those accepted lately.
    accepted = transfers.filter(status=Transfer.Status.ACCEPTED, finished_at__gte=since)
    waits = [
        done - created
        for created, done in accepted.annotate(
            done=Coalesce("accept_date", "finished_at")
        ).values_list("created", "done")
    ]

    # 4. The oldest transfers still waiting for the target.
    pending = list(
        transfers.filter(status=Transfer.Status.PENDING_ACCEPTANCE)
        .select_related("source", "target")
        .order_by("pending_since", "pk")[:PENDING_SHOWN]
    )

    # 5. Certificates per status per account.
    per_account: dict[tuple[str, str], dict[str, int]] = {}
    for account_id, name, status, n in (
        Certificate.objects.visible_to(user)
        .order_by()
        .values_list("account__account_id", "account__name", "status")
        .annotate(n=Count("pk"))
    ):
        per_account.setdefault((name, account_id), {})[status] = n
    cert_statuses = [
        s for s in Certificate.Status.values if any(s in c for c in per_account.values())
    ]
    cert_rows = [
        (name, account_id, [(s, counts.get(s, 0)) for s in cert_statuses])
        for (name, account_id), counts in sorted(per_account.items())
    ]

    # 6. Recent activity. Events are append-only, so the newest have the highest ids.
    events = list(
        TransferEvent.objects.filter(transfer__in=transfers.values("pk"))
        .select_related("transfer")
        .order_by("-pk")[:EVENTS_SHOWN]
    )

    context = {
        "states": states,
        "state_chart": charts.hbars(states),
        "total": sum(by_state.values()),
        "open": sum(by_state.get(s, 0) for s in Transfer.Status.OPEN),
        "day_chart": charts.columns(per_day, first_day, DAYS),
        "days": DAYS,
        "requested_lately": sum(per_day.values()),
        "accepted_count": len(waits),
        "median_wait": charts.duration(statistics.median(waits)) if waits else "—",
        "slowest_wait": charts.duration(max(waits)) if waits else "—",
        "pending": pending,
        "pending_count": by_state.get(Transfer.Status.PENDING_ACCEPTANCE, 0),
        "cert_statuses": cert_statuses,
        "cert_chart": charts.stacked(
            [(Truncator(name).chars(30), segments) for name, _, segments in cert_rows]
        ),
        "cert_rows": cert_rows,
        "events": events,
        "now": now,
    }
    return render(request, "transfers/overview.html", context)
