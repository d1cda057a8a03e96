"""Prometheus gauges read from the database at scrape time.

Counting rows when Prometheus asks (four grouped queries) keeps the numbers right with any
number of web and worker processes, where in-process counters would each see a part. So is
the one counter: the failures the periodic sweeps recorded (SweepFailure), which only grow.
"""

from __future__ import annotations

from collections.abc import Iterator

from django.db.models import Count, Sum
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
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


class PortalCollector(Collector):
    def describe(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        # Registering calls this, not collect(): no database query at import time.
        for name, text, label, _, _ in GAUGES:
            yield GaugeMetricFamily(name, text, labels=[label])
        yield CounterMetricFamily(*SWEEP_FAILURES, labels=["sweep"])

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


COLLECTOR = PortalCollector()
