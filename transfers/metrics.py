"""Prometheus gauges read from the database at scrape time.

Counting rows when Prometheus asks (three grouped queries) keeps the numbers right with any
number of web and worker processes, where in-process counters would each see a part.
"""

from __future__ import annotations

from collections.abc import Iterator

from django.db.models import Count
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from transfers.models import Certificate, Notice, Transfer

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


class PortalCollector(Collector):
    def describe(self) -> Iterator[GaugeMetricFamily]:
        # Registering calls this, not collect(): no database query at import time.
        for name, text, label, _, _ in GAUGES:
            yield GaugeMetricFamily(name, text, labels=[label])

    def collect(self) -> Iterator[GaugeMetricFamily]:
        for name, text, label, model, values in GAUGES:
            counts = dict(model.objects.order_by().values_list("status").annotate(n=Count("pk")))
            family = GaugeMetricFamily(name, text, labels=[label])
            # Every known state, zero included, so a series never vanishes from a graph.
            for value in sorted(set(values) | set(counts)):
                family.add_metric([value], counts.get(value, 0))
            yield family


COLLECTOR = PortalCollector()
