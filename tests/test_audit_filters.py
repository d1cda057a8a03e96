"""The audit log filters by certificate id (its start), transfer and batch number; the CSV
export follows the same filters."""

import csv
import io

import pytest
from django.urls import reverse

from tests.test_grouped_queues import a_batch, a_single, stock  # noqa: F401 (fixture)
from transfers.models import TransferEvent


def csv_rows(client, params) -> list[dict]:
    response = client.get(reverse("audit_export"), params)
    content = b"".join(response.streaming_content).decode()
    return list(csv.DictReader(io.StringIO(content)))


@pytest.fixture
def trail(stock, requester):  # noqa: F811
    batch = a_batch(requester, stock, 2)
    single = a_single(requester, stock)
    return {"batch": batch, "single": single, "in_batch": list(batch.transfers.order_by("pk"))}


def listed(client, params) -> set[int]:
    page = client.get(reverse("audit_log"), params).context["page"]
    return {e.transfer_id for e in page.object_list}


@pytest.mark.parametrize("length", [64, 12, 3])
def test_by_certificate_id_or_its_start(client, requester, trail, length):
    single = trail["single"]
    client.force_login(requester)
    prefix = single.certificate_id[:length]
    expected = {t.pk for t in [single, *trail["in_batch"]] if t.certificate_id.startswith(prefix)}
    assert single.pk in expected
    assert listed(client, {"certificate": prefix.upper()}) == expected
    assert {int(r["transfer"]) for r in csv_rows(client, {"certificate": prefix})} == expected


def test_by_transfer_and_by_batch_and_the_csv_follows(client, requester, trail):
    client.force_login(requester)
    single, batch = trail["single"], trail["batch"]
    assert listed(client, {"transfer": single.pk}) == {single.pk}
    in_batch = {t.pk for t in trail["in_batch"]}
    assert listed(client, {"batch": batch.pk}) == in_batch
    rows = csv_rows(client, {"batch": batch.pk})
    assert {int(r["transfer"]) for r in rows} == in_batch
    assert {r["batch"] for r in rows} == {str(batch.pk)}
    expected = TransferEvent.objects.filter(transfer__batch=batch).count()
    assert len(rows) == expected
    assert csv_rows(client, {"batch": batch.pk, "transfer": single.pk}) == []
    page = client.get(reverse("audit_log"), {"batch": batch.pk}).content.decode()
    assert f'href="/batches/{batch.pk}/"' in page


@pytest.mark.parametrize(
    "params",
    [{"certificate": "xyz<script>"}, {"transfer": "abc"}, {"batch": "-1"}, {"transfer": "9" * 30}],
)
def test_bad_filters_are_reported_and_ignored(client, requester, trail, params):
    client.force_login(requester)
    response = client.get(reverse("audit_log"), params)
    assert response.status_code == 200
    assert "were not understood" in response.content.decode()
    assert "<script>" not in response.content.decode()
    assert listed(client, params) == listed(client, {})
    assert len(csv_rows(client, params)) == len(csv_rows(client, {}))


def test_an_outsider_finds_nothing_by_number(client, outsider, trail):
    client.force_login(outsider)
    assert listed(client, {"transfer": trail["single"].pk}) == set()
    assert csv_rows(client, {"batch": trail["batch"].pk}) == []
