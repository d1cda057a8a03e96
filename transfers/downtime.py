"""Device downtime figures for a set of transfers: p50, p95, max and a histogram.

A certificate's downtime runs from the moment it stopped being usable in the source
(``Transfer.unusable_since``: the deactivation, or the request if it was already inactive)
to the moment it was ACTIVE with its planned policies in the target (``Transfer.usable_at``).
Computed in the database in three queries whatever the number of transfers (a count with
the histogram and the maximum, then the two rows each percentile lies between), so a page
showing it keeps a constant number of queries.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import timedelta

from django.db.models import Count, DurationField, ExpressionWrapper, F, Max, Q, QuerySet

from transfers import charts

# (label, lower bound inclusive, upper bound exclusive), in seconds.
BUCKETS: list[tuple[str, float | None, float | None]] = [
    ("< 1 s", None, 1),
    ("1–5 s", 1, 5),
    ("5–30 s", 5, 30),
    ("30 s–5 min", 30, 300),
    ("> 5 min", 300, None),
]


@dataclass
class Downtime:
    count: int = 0
    p50: timedelta | None = None
    p95: timedelta | None = None
    longest: timedelta | None = None
    buckets: list[tuple[str, int]] = field(default_factory=list)

    @property
    def shown(self) -> dict[str, str]:
        return {"p50": seconds(self.p50), "p95": seconds(self.p95), "max": seconds(self.longest)}

    @property
    def chart(self) -> charts.Chart:
        return charts.hbars(
            [(label, n, "day") for label, n in self.buckets], width=420, label_width=90
        )


def _bucket_filter(low: float | None, high: float | None) -> Q:
    q = Q()
    if low is not None:
        q &= Q(downtime__gte=timedelta(seconds=low))
    if high is not None:
        q &= Q(downtime__lt=timedelta(seconds=high))
    return q


# Which ends a downtime runs between: the certificate's (deactivated in the source, ACTIVE
# with its policies in the target) or the device's (disconnected from the source, connected
# to the target: Transfer.device_offline_at, device_online_at; workflow.devices).
CERTIFICATE = ("unusable_since", "usable_at")
DEVICE = ("device_offline_at", "device_online_at")


def _with_downtime(transfers: QuerySet, ends: tuple[str, str] = CERTIFICATE) -> QuerySet:
    start, end = ends
    return (
        transfers.filter(**{f"{start}__isnull": False, f"{end}__isnull": False})
        .order_by()
        .annotate(downtime=ExpressionWrapper(F(end) - F(start), output_field=DurationField()))
    )


def _percentile(rows: QuerySet, n: int, p: float) -> timedelta:
    """Linear interpolation between the closest ranks (as bench/_support.percentile)."""
    rank = (n - 1) * p / 100
    low = math.floor(rank)
    pair = list(rows.order_by("downtime", "pk").values_list("downtime", flat=True)[low : low + 2])
    if len(pair) == 1 or rank == low:
        return pair[0]
    return pair[0] + (pair[1] - pair[0]) * (rank - low)


def summarize(transfers: QuerySet, ends: tuple[str, str] = CERTIFICATE) -> Downtime:
    """Downtime of the transfers in ``transfers`` that have both ends recorded: the
    certificate's by default, the devices' with ``ends=DEVICE``."""
    rows = _with_downtime(transfers, ends)
    figures = rows.aggregate(
        n=Count("pk"),
        longest=Max("downtime"),
        **{
            f"b{i}": Count("pk", filter=_bucket_filter(low, high))
            for i, (_, low, high) in enumerate(BUCKETS)
        },
    )
    n = figures["n"]
    buckets = [(label, figures[f"b{i}"]) for i, (label, _, _) in enumerate(BUCKETS)]
    if not n:
        return Downtime(buckets=buckets)
    return Downtime(
        count=n,
        p50=_percentile(rows, n, 50),
        p95=_percentile(rows, n, 95),
        longest=figures["longest"],
        buckets=buckets,
    )


def seconds(delta: timedelta | None) -> str:
    """Downtime as people read it: 0.8 s, 12 s, 4 min 10 s, 2 h 5 min."""
    if delta is None:
        return "—"
    total = delta.total_seconds()
    if total < 10:
        return f"{total:.1f} s"
    if total < 60:
        return f"{total:.0f} s"
    if total < 3600:
        minutes, rest = divmod(round(total), 60)
        return f"{minutes} min {rest} s" if rest else f"{minutes} min"
    return charts.duration(delta)


@dataclass
class Devices:
    """Whether the devices of a set of transfers are back: counts by check state, the
    device downtime as the devices saw it, and the transfers whose devices are not back."""

    back: int = 0
    not_back: int = 0
    waiting: int = 0
    unverifiable: int = 0
    downtime: Downtime = field(default_factory=Downtime)

    @property
    def checked(self) -> int:
        """Transfers whose devices are, were or will be looked for (M in "back N of M")."""
        return self.back + self.not_back + self.waiting + self.unverifiable


def devices(transfers: QuerySet) -> Devices:
    """Device figures of ``transfers`` (two queries plus the percentiles'; one when no
    device is back: only those have a device downtime)."""
    counts = dict(
        transfers.exclude(device_check="")
        .order_by()
        .values_list("device_check")
        .annotate(n=Count("pk"))
        .values_list("device_check", "n")
    )
    back = counts.get("back", 0)
    return Devices(
        back=back,
        not_back=counts.get("not_back", 0),
        waiting=counts.get("waiting", 0),
        unverifiable=counts.get("unverifiable", 0),
        downtime=summarize(transfers, DEVICE)
        if back
        else Downtime(buckets=[(label, 0) for label, _, _ in BUCKETS]),
    )
