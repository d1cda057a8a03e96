"""PostgreSQL's plans for the certificate list's broad searches (transfers.search)."""

import pytest
from django.db import connection

from tests.conftest import SOURCE, make_account
from transfers.models import Certificate, CertificatePolicy
from transfers.search import search_walk

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
    CertificatePolicy.objects.bulk_create(
        CertificatePolicy(account=account, certificate_id=pk, name="Fleet-Publish")
        for pk in pks[::2]
    )
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
