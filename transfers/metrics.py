"""Prometheus gauges read from the database at scrape time.

Counting rows when Prometheus asks (six grouped queries) keeps the numbers right with any
number of web and worker processes, where in-process counters would each see a part. So is
the one counter: the failures the periodic sweeps recorded (SweepFailure), which only grow.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

from django.db.models import Count, DurationField, ExpressionWrapper, F, Q, Sum
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

from transfers.models import Certificate, Notice, SweepFailure, Transfer

GAUGES = [
    # name, help, label, model, every known value of the model's status field
    ("portal_transfers", "Transfers in each state.", "state", Transfer, Transfer.Status.values),
    ("portal_notices", "Notices in each state.", "state", Notice, Notice.Status.values),
    (
        "portal_certificates",
        "Certificates in the inventory, by AWS status.",
        "status",
        Certificate,
        Certificate.Status.values,
    ),
]


SWEEP_FAILURES = (
    "portal_sweep_failures",
    "Failures of a periodic sweep (reconcile, requeue, restores, landings) on one transfer, "
    "batch or account; the sweep went on with the others.",
)


DEVICES = (
    "portal_devices_total",
    "Transfers by whether their devices are back online in the target (workflow.devices): "
    "back, not_back, waiting, unverifiable.",
)
DEVICE_DOWNTIME = (
    "portal_device_downtime_seconds",
    "Device downtime as the devices saw it, from their disconnection in the source to their "
    "connection in the target, of the transfers whose devices are back.",
)
# The upper bounds of the pages' histogram (transfers.downtime.BUCKETS), in seconds.
DOWNTIME_BOUNDS = [1.0, 5.0, 30.0, 300.0]


def _devices() -> Iterator[GaugeMetricFamily | HistogramMetricFamily]:
    """Two queries: the transfers per device check state, and the device downtime's
    cumulative buckets and sum."""
    counts = dict(
        Transfer.objects.exclude(device_check="")
        .order_by()
        .values_list("device_check")
        .annotate(n=Count("pk"))
    )
    family = GaugeMetricFamily(*DEVICES, labels=["state"])
    states = [v for v in Transfer.DeviceCheck.values if v]
    for state in sorted(set(states) | set(counts)):
        family.add_metric([state], counts.get(state, 0))
    yield family
    rows = (
        Transfer.objects.filter(device_offline_at__isnull=False, device_online_at__isnull=False)
        .order_by()
        .annotate(
            downtime=ExpressionWrapper(
                F("device_online_at") - F("device_offline_at"), output_field=DurationField()
            )
        )
    )
    figures = rows.aggregate(
        n=Count("pk"),
        total=Sum("downtime"),
        **{
            f"le{i}": Count("pk", filter=Q(downtime__lte=timedelta(seconds=bound)))
            for i, bound in enumerate(DOWNTIME_BOUNDS)
        },
    )
    buckets = [(str(float(bound)), figures[f"le{i}"]) for i, bound in enumerate(DOWNTIME_BOUNDS)]
    buckets.append(("+Inf", figures["n"]))
    total = figures["total"] or timedelta(0)
    histogram = HistogramMetricFamily(*DEVICE_DOWNTIME)
    histogram.add_metric([], buckets, sum_value=max(total.total_seconds(), 0.0))
    yield histogram


class PortalCollector(Collector):
    def describe(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        # Registering calls this, not collect(): no database query at import time.
        for name, text, label, _, _ in GAUGES:
            yield GaugeMetricFamily(name, text, labels=[label])
        yield CounterMetricFamily(*SWEEP_FAILURES, labels=["sweep"])
        yield GaugeMetricFamily(*DEVICES, labels=["state"])
        yield HistogramMetricFamily(*DEVICE_DOWNTIME)

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        for name, text, label, model, values in GAUGES:
            counts = dict(model.objects.order_by().values_list("status").annotate(n=Count("pk")))
            family = GaugeMetricFamily(name, text, labels=[label])
            # Every known state, zero included, so a series never vanishes from a graph.
            for value in sorted(set(values) | set(counts)):
                family.add_metric([value], counts.get(value, 0))
            yield family
        sums = dict(SweepFailure.objects.order_by().values_list("sweep").annotate(n=Sum("count")))
        failures = CounterMetricFamily(*SWEEP_FAILURES, labels=["sweep"])
        for sweep in sorted(set(SweepFailure.Sweep.values) | set(sums)):
            failures.add_metric([sweep], sums.get(sweep) or 0)
        yield failures
        yield from _devices()


COLLECTOR = PortalCollector()
