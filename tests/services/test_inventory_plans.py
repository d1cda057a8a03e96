"""PostgreSQL's plans for the certificate list's broad searches (transfers.search)."""

import pytest
from django.db import connection

from tests.conftest import SOURCE, make_account
from transfers.models import Certificate, CertificatePolicy
from transfers.search import _branches, search_walk

pytestmark = pytest.mark.django_db


def test_a_broad_search_walk_probes_each_row_instead_of_hashing_every_match():
    """A walk reads a few hundred certificates along the sort's index; PostgreSQL, planning
    for the whole table, would otherwise hash every link with the name first (24 ms for
    83,000 at 1,000,000 certificates)."""
    account = make_account(SOURCE, "Fleet production")
    n = 20_000
    Certificate.objects.bulk_create(
        Certificate(
            account=account,
            region="us-east-1",
            certificate_id=f"{i:064x}",
            arn=f"arn:aws:iot:us-east-1:{SOURCE}:cert/{i:064x}",
            status="ACTIVE",
        )
        for i in range(n)
    )
    pks = list(Certificate.objects.values_list("pk", flat=True))
    CertificatePolicy.objects.create_for((pk, "Fleet-Publish") for pk in pks[::2])
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")
    walk = search_walk(Certificate.objects.filter(account=account), "Fleet-Publish")
    page = walk.order_by("-creation_date", "certificate_id", "pk")[:50]
    sql, params = page.query.sql_with_params()
    with connection.cursor() as cursor:
        cursor.execute("EXPLAIN " + sql, params)
        plan = "\n".join(row[0] for row in cursor.fetchall())
    assert "SubPlan" in plan, plan  # the EXISTS tests are there
    assert "hashed SubPlan" not in plan, plan
    assert len(list(page)) == 50
    # No thing has the name: only the policies are probed, still row by row (an EXISTS
    # alone would be planned as a join over the whole index).
    walk = search_walk(Certificate.objects.filter(account=account), "Fleet-Publish", [True, False])
    page = walk.order_by("-creation_date", "certificate_id", "pk")[:50]
    plan = explain(page)
    assert "SubPlan" in plan and "Join" not in plan, plan
    assert "certificatething" not in str(page.query)
    assert len(list(page)) == 50
    # The count read every link of the name (few): the walk tests rows against their set,
    # hashed once, not a probe per row.
    _, policies, _ = _branches("Fleet-Publish", "default", [account.pk])
    walk = search_walk(
        Certificate.objects.filter(account=account), "Fleet-Publish", [policies, False]
    )
    page = walk.order_by("-creation_date", "certificate_id", "pk")[:50]
    plan = explain(page)
    assert "hashed SubPlan" in plan and "Join" not in plan, plan
    assert len(list(page)) == 50


def explain(queryset) -> str:
    sql, params = queryset.query.sql_with_params()
    with connection.cursor() as cursor:
        cursor.execute("EXPLAIN " + sql, params)
        return "\n".join(row[0] for row in cursor.fetchall())


def test_a_name_with_a_rare_status_or_a_region_reads_its_matches_from_one_link_index():
    """Links carry their certificate's status and region: a broad name with the rarest
    status reads only the links of that status from the status index (not every link of
    the name, each checked against its certificate), and a region is tested in the name
    index, never on a certificate row (docs/benchmarks.md)."""
    account = make_account(SOURCE, "Fleet production", regions=["us-east-1", "eu-west-1"])
    n = 20_000
    Certificate.objects.bulk_create(
        Certificate(
            account=account,
            region=["us-east-1", "eu-west-1"][i % 2],
            certificate_id=f"{i:064x}",
            arn=f"arn:aws:iot:us-east-1:{SOURCE}:cert/{i:064x}",
            status="PENDING_TRANSFER" if i % 33 == 0 else "ACTIVE",
        )
        for i in range(n)
    )
    pks = list(Certificate.objects.order_by("pk").values_list("pk", flat=True))
    kinds = ["Connect", "Publish", "Subscribe", "Shadow", "Jobs", "Telemetry", "Ota", "Debug"]
    CertificatePolicy.objects.create_for(
        (pk, f"Fleet-{kinds[i % len(kinds)]}") for i, pk in enumerate(pks)
    )
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")

    rare = _branches("Fleet-Pub", "default", [account.pk], status="PENDING_TRANSFER")[1]
    plan = explain(rare)
    assert "policy_status_pattern_idx" in plan, plan
    assert "transfers_certificate " not in plan and "Join" not in plan, plan
    assert rare.count() == len([i for i in range(n) if i % 33 == 0 and i % len(kinds) == 1])

    both = _branches("Fleet-Pub", "default", [account.pk], region="eu-west-1", status="ACTIVE")
    plan = explain(both[1])
    assert "Join" not in plan, plan
    by_region = _branches("Fleet-Pub", "default", [account.pk], region="eu-west-1")[1]
    plan = explain(by_region)
    assert "Join" not in plan and "pattern_idx" in plan, plan
