"""Home: the state of things at a glance, scoped to the accounts the user may see."""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from datetime import datetime, time, timedelta

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.db.models import Count, Min
from django.db.models.functions import Coalesce, TruncDate
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils import timezone
from django.utils.text import Truncator

from transfers import access, charts, downtime
from transfers.models import AwsAccount, Certificate, Transfer, TransferBatch, TransferEvent

DAYS = 30
PENDING_SHOWN = 8
EVENTS_SHOWN = 12
EVENT_WINDOW = 2000  # the newest events grouped into the recent-activity rows


@dataclass
class WaitingBatch:
    """A batch's transfers pending acceptance, as one row of the oldest waiting."""

    batch: TransferBatch
    n: int
    pending_since: datetime
    expires_at: datetime
    is_batch: bool = True


@dataclass
class Activity:
    """One row of recent activity: an event, or the same step of ``n`` transfers of a batch."""

    pk: int
    created: datetime
    transfer_id: int
    batch: int | None
    actor_name: str
    action: str
    kind: str
    ok: bool
    from_status: str
    to_status: str
    n: int = 1
    first: datetime | None = None


def oldest_waiting(transfers) -> list:
    """The PENDING_SHOWN oldest transfers waiting for the target (Transfer rows), a batch as
    one row (WaitingBatch)."""
    pending = transfers.filter(status=Transfer.Status.PENDING_ACCEPTANCE)
    rows: list = list(
        pending.filter(batch__isnull=True)
        .select_related("source", "target")
        .order_by("pending_since", "pk")[:PENDING_SHOWN]
    )
    groups = list(
        pending.filter(batch__isnull=False)
        .values("batch")
        .annotate(n=Count("pk"), since=Min("pending_since"))
        .order_by("since")[:PENDING_SHOWN]
    )
    found = TransferBatch.objects.select_related("source").in_bulk([g["batch"] for g in groups])
    days = dict(
        AwsAccount.objects.filter(
            account_id__in={b.target_account_id for b in found.values()}
        ).values_list("account_id", "expiry_days")
    )
    for g in groups:
        batch = found.get(g["batch"])
        if batch is None or g["since"] is None:
            continue
        expiry = days.get(batch.target_account_id) or settings.TRANSFER_EXPIRY_DAYS
        rows.append(WaitingBatch(batch, g["n"], g["since"], g["since"] + timedelta(days=expiry)))
    rows.sort(key=lambda r: r.pending_since)
    return rows[:PENDING_SHOWN]


def recent_activity(transfers, user) -> list[Activity]:
    """The newest events as ``user`` may see them (access), the same step of a batch's
    transfers as one row."""
    fields = (
        "pk",
        "created",
        "transfer_id",
        "transfer__batch_id",
        "shown_actor",
        "shown_action",
        "kind",
        "ok",
        "from_status",
        "to_status",
    )
    rows: dict[tuple, Activity] = {}
    seen = access.events_seen_by(
        user, TransferEvent.objects.filter(transfer__in=transfers.values("pk"))
    )
    for values in seen.order_by("-pk").values_list(*fields)[:EVENT_WINDOW]:
        e = dict(zip(fields, values, strict=True))
        e["actor_name"], e["action"] = e.pop("shown_actor"), e.pop("shown_action")
        batch = e["transfer__batch_id"]
        key = (
            (batch, e["action"], e["actor_name"], e["kind"], e["ok"], e["to_status"])
            if batch
            else ("event", e["pk"])
        )
        row = rows.get(key)
        if row is None:
            if len(rows) == EVENTS_SHOWN:
                continue  # only adds to the rows already shown
            e["batch"] = e.pop("transfer__batch_id")
            rows[key] = Activity(**e, first=e["created"])
        else:
            row.n += 1
            row.first = e["created"]
    return list(rows.values())


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

    # 4. The oldest transfers still waiting for the target, a batch as one row.
    pending = oldest_waiting(transfers)

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

    # 6. Device downtime of the certificates that landed usable in the last DAYS days.
    landed = downtime.summarize(transfers.filter(usable_at__gte=since))
    # ... and whether their devices are back, with the downtime the devices saw.
    device_figures = downtime.devices(transfers.filter(usable_at__gte=since))

    # 7. Recent activity (events are append-only: the newest have the highest ids), the same
    # step of many transfers of a batch as one row.
    events = recent_activity(transfers, user)

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
        "downtime": landed,
        "downtime_title": f"Certificate downtime, last {DAYS} days",
        "devices": device_figures,
        "downtime_empty": f"in the last {DAYS} days",
        "now": now,
    }
    return render(request, "transfers/overview.html", context)
