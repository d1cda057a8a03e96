"""Device downtime shown: the batch page and the overview (issue 14)."""

from __future__ import annotations

import itertools
from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from tests.conftest import TARGET
from transfers import downtime
from transfers.models import Transfer, TransferBatch

_ids = itertools.count(1)


def moved(source, target, requester, seconds: float | None, *, batch=None, ago=timedelta(0)):
    """An accepted transfer whose certificate was unusable for ``seconds`` (None: never
    usable in the target yet), landed ``ago``."""
    n = next(_ids)
    cid = f"{n:064x}"
    end = timezone.now() - ago
    return Transfer.objects.create(
        source=source,
        region="us-east-1",
        certificate_id=cid,
        certificate_arn=f"arn:aws:iot:us-east-1:{source.account_id}:cert/{cid}",
        target=target,
        target_account_id=TARGET,
        requester=requester,
        reason="Sale",
        status=Transfer.Status.ACCEPTED,
        batch=batch,
        unusable_since=end - timedelta(seconds=seconds or 0),
        usable_at=end if seconds is not None else None,
    )


@pytest.fixture
def batch(source, requester):
    return TransferBatch.objects.create(
        source=source, target_account_id=TARGET, requester=requester, reason="Sale"
    )


SECONDS = [0.5, 2, 3, 10, 40, 400]


def test_it_computes_percentiles_the_longest_and_the_histogram(source, target, requester):
    for s in SECONDS:
        moved(source, target, requester, s)
    moved(source, target, requester, None)  # not usable yet: no downtime figure
    summary = downtime.summarize(Transfer.objects.all())
    assert summary.count == 6
    # Linear interpolation between the closest ranks: ranks 2.5 and 4.75 of 0..5.
    assert summary.p50 == timedelta(seconds=6.5)
    assert summary.p95 == timedelta(seconds=40 + 0.75 * 360)
    assert summary.longest == timedelta(seconds=400)
    assert summary.buckets == [
        ("< 1 s", 1),
        ("1–5 s", 2),
        ("5–30 s", 1),
        ("30 s–5 min", 1),
        ("> 5 min", 1),
    ]
    assert summary.shown == {"p50": "6.5 s", "p95": "5 min 10 s", "max": "6 min 40 s"}


def test_a_bucket_bound_belongs_to_the_range_above(source, target, requester):
    for s in (1, 5, 30, 300):
        moved(source, target, requester, s)
    counts = [n for _, n in downtime.summarize(Transfer.objects.all()).buckets]
    assert counts == [0, 1, 1, 1, 1]


def test_the_figures_take_three_queries_and_one_when_there_are_none(
    source, target, requester, django_assert_num_queries
):
    with django_assert_num_queries(1):
        downtime.summarize(Transfer.objects.all())
    for s in SECONDS * 5:
        moved(source, target, requester, s)
    with django_assert_num_queries(3):  # count, histogram and max; two percentile rows each
        assert downtime.summarize(Transfer.objects.all()).count == 30


def test_nothing_landed_gives_no_figures(source, target, requester):
    moved(source, target, requester, None)
    summary = downtime.summarize(Transfer.objects.all())
    assert (summary.count, summary.p50, summary.p95, summary.longest) == (0, None, None, None)
    assert summary.shown == {"p50": "—", "p95": "—", "max": "—"}


def page_queries(client, url) -> tuple[int, str]:
    with CaptureQueriesContext(connection) as queries:
        response = client.get(url)
    assert response.status_code == 200
    return len(queries), response.content.decode()


def test_the_batch_page_shows_its_downtime_in_a_constant_number_of_queries(
    client, source, target, requester, batch
):
    other = TransferBatch.objects.create(
        source=source, target_account_id=TARGET, requester=requester, reason="Other"
    )
    moved(source, target, requester, 900, batch=other)  # another batch's: not counted
    client.force_login(requester)
    url = reverse("batch_detail", args=[batch.pk])
    empty_queries, page = page_queries(client, url)
    assert "No certificate of this batch has landed usable in a target yet." in page

    for s in SECONDS[:3]:
        moved(source, target, requester, s, batch=batch)
    few, page = page_queries(client, url)
    assert "3 certificates." in page and "15 min" not in page
    for s in SECONDS[3:] * 10:
        moved(source, target, requester, s, batch=batch)
    many, page = page_queries(client, url)
    assert "33 certificates." in page
    assert '<div class="figure">6 min 40 s</div>longest' in page
    assert "<title>&gt; 5 min: 10</title>" in page  # the histogram's bar
    assert few == many  # constant, whatever the number of transfers


def test_the_overview_shows_the_last_30_days(client, source, target, requester):
    client.force_login(requester)
    url = reverse("home")
    moved(source, target, requester, 1000, ago=timedelta(days=40))  # too old
    before, page = page_queries(client, url)
    assert "Certificate downtime, last 30 days" in page
    assert "No certificate in the last 30 days has landed usable in a target yet." in page
    moved(source, target, requester, 2)
    moved(source, target, requester, 4)
    after, page = page_queries(client, url)
    assert "2 certificates." in page
    assert '<div class="figure">3.0 s</div>median (p50)' in page
    assert '<div class="figure">4.0 s</div>longest' in page
    for _ in range(20):
        moved(source, target, requester, 20)
    assert page_queries(client, url)[0] == after  # constant in the number of transfers
    assert after - before == 2


def test_the_overview_counts_only_transfers_the_user_may_see(
    client, source, target, requester, outsider
):
    moved(source, target, requester, 2)
    client.force_login(outsider)
    page = client.get(reverse("home")).content.decode()
    assert "No certificate in the last 30 days has landed usable in a target yet." in page


def test_an_outsider_gets_a_404_for_the_batch_page(client, outsider, batch, source, target):
    moved(source, target, batch.requester, 2, batch=batch)
    client.force_login(outsider)
    assert client.get(reverse("batch_detail", args=[batch.pk])).status_code == 404
