"""Queues and lists that group a batch: approvals show a batch as one row with its own
approve and decline; the batch list pages and filters; both run a fixed number of queries."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from tests.conftest import TARGET, add_certificate, committed, iot_for, make_user
from transfers import batches, inventory, workflow
from transfers.models import Certificate, Role, Transfer, TransferBatch
from transfers.workflow import Options


@pytest.fixture
def stock(standin, source, target):
    iot = iot_for(source)
    made = [add_certificate(iot, "INACTIVE") for _ in range(12)]
    inventory.sync_region(inventory.queue_sync(source, "us-east-1")[0].pk)
    return iter(sorted(m["certificateId"] for m in made))


def a_batch(user, stock, n) -> TransferBatch:
    ids = [next(stock) for _ in range(n)]
    certs, missing = batches.select(user, ids)
    return batches.request_batch(
        user,
        certs,
        missing,
        target_account_id=TARGET,
        message="m",
        reason="Fleet sale",
        options=Options(),
    )


def a_single(user, stock) -> Transfer:
    cert = Certificate.objects.get(certificate_id=next(stock))
    return workflow.request_transfer(
        user, cert, target_account_id=TARGET, message="m", reason="r", options=Options()
    )


def queries(client, url, params=None) -> int:
    with CaptureQueriesContext(connection) as ctx:
        assert client.get(url, params or {}).status_code == 200
    return len(ctx.captured_queries)


class TestApprovals:
    def test_a_batch_is_one_row_and_singles_are_listed(self, client, stock, requester, approver):
        batch = a_batch(requester, stock, 4)
        single = a_single(requester, stock)
        client.force_login(approver)
        response = client.get(reverse("approvals"))
        page = response.content.decode()
        assert response.context["batch_rows"] == [
            (batch, 4, batch.transfers.order_by("created").first().created)
        ]
        assert f"Batch #{batch.pk}</a>: <strong>4</strong> certificates" in page
        assert "Approve all 4" in page and "Decline all 4" in page
        assert reverse("batch_approve", args=[batch.pk]) in page
        assert [t.pk for t in response.context["page"]] == [single.pk]  # singles only
        for t in batch.transfers.all():  # no row per transfer of the batch
            assert f'href="/transfers/{t.pk}/"' not in page

    def test_approve_from_the_row_approves_the_batch_and_comes_back(
        self, client, stock, requester, approver
    ):
        batch = a_batch(requester, stock, 3)
        client.force_login(approver)
        response = committed(
            client.post,
            reverse("batch_approve", args=[batch.pk]),
            {"comment": "fine", "next": reverse("approvals")},
        )
        assert response.status_code == 302 and response["Location"] == reverse("approvals")
        assert set(batch.transfers.values_list("status", flat=True)) == {"pending_acceptance"}
        assert client.get(reverse("approvals")).context["batch_rows"] == []

    def test_decline_from_the_row_needs_a_reason(self, client, stock, requester, approver):
        batch = a_batch(requester, stock, 3)
        client.force_login(approver)
        url = reverse("batch_decline", args=[batch.pk])
        client.post(url, {"comment": " ", "next": reverse("approvals")})
        assert set(batch.transfers.values_list("status", flat=True)) == {"requested"}
        response = client.post(url, {"comment": "not now", "next": reverse("approvals")})
        assert response["Location"] == reverse("approvals")
        assert set(batch.transfers.values_list("status", flat=True)) == {"declined"}

    def test_next_never_leaves_the_site(self, client, stock, requester, approver):
        batch = a_batch(requester, stock, 2)
        client.force_login(approver)
        response = client.post(
            reverse("batch_decline", args=[batch.pk]),
            {"comment": "no", "next": "https://evil.example/"},
        )
        assert response["Location"] == batch.get_absolute_url()

    def test_the_requester_sees_their_batch_without_buttons(self, client, stock, source, requester):
        both = make_user("both", (source, Role.REQUESTER), (source, Role.APPROVER))
        a_batch(both, stock, 2)
        client.force_login(both)
        page = client.get(reverse("approvals")).content.decode()
        assert "Your request: another approver decides." in page and "Approve all" not in page

    def test_outsiders_and_viewers_see_no_request(self, client, stock, requester, viewer, outsider):
        a_batch(requester, stock, 2)
        a_single(requester, stock)
        for user in (viewer, outsider):
            client.force_login(user)
            response = client.get(reverse("approvals"))
            assert response.context["batch_rows"] == [] and len(response.context["page"]) == 0
        client.logout()
        assert client.get(reverse("approvals")).status_code == 302

    def test_a_fixed_number_of_queries_however_many_rows(
        self, client, stock, requester, approver, django_assert_max_num_queries
    ):
        a_batch(requester, stock, 2)
        a_single(requester, stock)
        client.force_login(approver)
        few = queries(client, reverse("approvals"))
        for _ in range(3):
            a_batch(requester, stock, 2)
        a_single(requester, stock)
        a_single(requester, stock)
        assert queries(client, reverse("approvals")) == few
        with django_assert_max_num_queries(12):
            client.get(reverse("approvals"))


class TestBatchList:
    def test_it_pages_filters_and_counts(self, client, stock, requester, approver, monkeypatch):
        from transfers.views import batches as batch_views

        monkeypatch.setattr(batch_views, "BATCHES_PER_PAGE", 2)
        first = a_batch(requester, stock, 2)
        second = a_batch(requester, stock, 3)
        third = a_batch(requester, stock, 1)
        committed(batches.approve, approver, second)
        client.force_login(requester)
        listed = client.get(reverse("batch_list")).context
        assert [b.pk for b, _ in listed["rows"]] == [third.pk, second.pk]
        assert listed["rows"][1][1]["pending"] == 3 and listed["rows"][1][1]["total"] == 3
        more = client.get(reverse("batch_list"), {"page": 2}).context
        assert [b.pk for b, _ in more["rows"]] == [first.pk]
        narrowed = client.get(reverse("batch_list"), {"status": "pending_acceptance"}).context
        assert [b.pk for b, _ in narrowed["rows"]] == [second.pk]
        by_account = client.get(reverse("batch_list"), {"account": TARGET}).context
        assert len(by_account["page"].paginator.object_list) == 3
        nobody = client.get(reverse("batch_list"), {"requester": "nobody"}).context
        assert nobody["rows"] == []
        bad = client.get(reverse("batch_list"), {"since": "yesterday"})
        assert bad.status_code == 200 and "were not understood" in bad.content.decode()

    def test_the_pager_keeps_the_filters(self, client, stock, requester, monkeypatch):
        from transfers.views import batches as batch_views

        monkeypatch.setattr(batch_views, "BATCHES_PER_PAGE", 1)
        a_batch(requester, stock, 1)
        a_batch(requester, stock, 1)
        client.force_login(requester)
        page = client.get(reverse("batch_list"), {"requester": "requester"}).content.decode()
        assert 'href="?requester=requester&amp;page=2"' in page
        assert 'hx-get="?requester=requester&amp;page=2" hx-target="#rows"' in page

    def test_a_fixed_number_of_queries_however_many_rows(
        self, client, stock, requester, django_assert_max_num_queries
    ):
        a_batch(requester, stock, 2)
        client.force_login(requester)
        few = queries(client, reverse("batch_list"))
        for _ in range(4):
            a_batch(requester, stock, 2)
        assert queries(client, reverse("batch_list")) == few
        with django_assert_max_num_queries(8):
            client.get(reverse("batch_list"))

    def test_outsiders_see_none_and_the_target_sees_its_batch(
        self, client, stock, requester, outsider, target
    ):
        batch = a_batch(requester, stock, 2)
        client.force_login(outsider)
        assert client.get(reverse("batch_list")).context["rows"] == []
        assert client.get(batch.get_absolute_url()).status_code == 404
        carol = make_user("carol", (target, Role.ADMIN))
        client.force_login(carol)
        assert [b.pk for b, _ in client.get(reverse("batch_list")).context["rows"]] == [batch.pk]
        page = client.get(batch.get_absolute_url())
        assert page.status_code == 200 and "Approve all" not in page.content.decode()
        assert client.post(reverse("batch_approve", args=[batch.pk])).status_code == 403


class TestOverview:
    def test_a_batch_waiting_is_one_row_and_its_steps_are_one_row_each(
        self, client, stock, requester, approver
    ):
        batch = a_batch(requester, stock, 3)
        single = a_single(requester, stock)
        committed(batches.approve, approver, batch)
        committed(workflow.approve, approver, single.pk)
        client.force_login(requester)
        response = client.get(reverse("home"))
        pending = response.context["pending"]
        assert len(pending) == 2
        grouped = next(r for r in pending if getattr(r, "is_batch", False))
        assert grouped.batch == batch and grouped.n == 3
        first = batch.transfers.order_by("pending_since").first()
        assert grouped.pending_since == first.pending_since
        assert grouped.expires_at == first.expires_at
        assert single in pending
        events = response.context["events"]
        approvals = [e for e in events if e.action == "approve" and e.batch == batch.pk]
        assert len(approvals) == 1 and approvals[0].n == 3
        body = response.content.decode()
        assert f"Batch #{batch.pk}</a><br><small>3 transfers</small>" in body
        assert "3 certificates" in body
        # Rows per transfer of the batch never appear; the single transfer's do.
        for t in batch.transfers.all():
            assert f'href="/transfers/{t.pk}/"' not in body
        assert f'href="/transfers/{single.pk}/"' in body

    def test_the_overview_runs_a_fixed_number_of_queries(self, client, stock, requester):
        a_batch(requester, stock, 2)
        client.force_login(requester)
        few = queries(client, reverse("home"))
        for _ in range(3):
            a_batch(requester, stock, 2)
        a_single(requester, stock)
        assert queries(client, reverse("home")) == few
