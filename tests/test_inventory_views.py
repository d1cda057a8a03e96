"""Certificate list and detail, account pages and Sync now, for every persona."""

import hashlib
import re

import pytest
from django.conf import settings
from django.db.models import Q
from django.urls import reverse

from tests.conftest import make_user
from transfers.models import Certificate, CertificatePolicy, CertificateThing, Role, SyncRun


def cid(n: int) -> str:
    return hashlib.sha256(str(n).encode()).hexdigest()


def cert(account, n: int, status="ACTIVE", policies=(), things=(), region="us-east-1"):
    cid_ = cid(n)
    row = Certificate.objects.create(
        account=account,
        region=region,
        certificate_id=cid_,
        arn=f"arn:aws:iot:{region}:{account.account_id}:cert/{cid_}",
        status=status,
    )
    for p in policies:
        CertificatePolicy.objects.create(certificate=row, name=p)
    for t in things:
        CertificateThing.objects.create(certificate=row, name=t)
    return row


@pytest.fixture
def inventory(source, other):
    mine = [
        cert(source, 0xA1, policies=["DevicePublish"], things=["sensor-1"]),
        cert(source, 0xA2, status="INACTIVE", policies=["Telemetry"]),
        cert(source, 0xB3, things=["gateway-9"], region="eu-west-1"),
    ]
    theirs = cert(other, 0xC4, policies=["DevicePublish"])
    return mine, theirs


def ids(response) -> set[str]:
    return {c.certificate_id for c in response.context["page"].object_list}


def test_the_list_needs_a_login(client, db):
    response = client.get(reverse("certificate_list"))
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("login"))


def test_a_viewer_sees_only_the_accounts_granted(client, viewer, inventory):
    mine, theirs = inventory
    client.force_login(viewer)
    response = client.get(reverse("certificate_list"))
    assert response.status_code == 200
    assert ids(response) == {c.certificate_id for c in mine}
    assert theirs.certificate_id not in response.content.decode()


def test_access_through_a_group_counts(client, source, inventory):
    from django.contrib.auth.models import Group

    from transfers.models import AccountGrant

    group = Group.objects.create(name="ops")
    AccountGrant.objects.create(account=source, group=group, role=Role.VIEWER)
    user = make_user("grouped")
    user.groups.add(group)
    client.force_login(user)
    assert len(ids(client.get(reverse("certificate_list")))) == 3


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ({"q": cid(0xA1)[:20]}, {0xA1}),
        ({"q": "arn:aws:iot:eu-west-1:"}, {0xB3}),
        ({"q": "DevicePub"}, {0xA1}),
        ({"q": "gateway-9"}, {0xB3}),
        ({"status": "INACTIVE"}, {0xA2}),
        ({"region": "eu-west-1"}, {0xB3}),
        ({"account": "111111111111"}, {0xA1, 0xA2, 0xB3}),
        ({"q": "nothing-like-this"}, set()),
    ],
)
def test_search_and_filters(client, viewer, inventory, query, expected):
    client.force_login(viewer)
    response = client.get(reverse("certificate_list"), query)
    assert ids(response) == {cid(n) for n in expected}


def test_a_bad_filter_is_reported_not_fatal(client, viewer, inventory):
    client.force_login(viewer)
    response = client.get(reverse("certificate_list"), {"status": "<script>", "sort": "x"})
    assert response.status_code == 200
    assert "not understood" in response.content.decode()
    assert "<script>" not in response.content.decode()
    assert len(ids(response)) == 3


def test_sorting_by_id(client, viewer, inventory):
    client.force_login(viewer)
    response = client.get(reverse("certificate_list"), {"sort": "id"})
    listed = [c.certificate_id for c in response.context["page"].object_list]
    assert listed == sorted(listed)


def test_htmx_gets_only_the_results_fragment(client, viewer, inventory):
    client.force_login(viewer)
    response = client.get(
        reverse("certificate_list"), {"q": "sensor"}, headers={"HX-Request": "true"}
    )
    body = response.content.decode()
    assert 'id="results"' in body
    assert "<html" not in body
    assert cid(0xA1) in body
    assert cid(0xA2) not in body and cid(0xB3) not in body


def test_the_list_runs_a_constant_number_of_queries(
    client, viewer, source, django_assert_max_num_queries
):
    client.force_login(viewer)
    for n in range(3):
        cert(source, n, policies=["P"], things=[f"t{n}"])
    # session, user, second-factor check, accounts, count, page rows, their policy and
    # thing names, grants
    with django_assert_max_num_queries(9) as few:
        client.get(reverse("certificate_list"))
    for n in range(3, 60):
        cert(source, n, policies=["P", "Q"], things=[f"t{n}"])
    with django_assert_max_num_queries(9) as many:
        response = client.get(reverse("certificate_list"))
    assert len(response.context["page"].object_list) == 50
    assert len(many.captured_queries) == len(few.captured_queries)


def test_pages_link_to_each_other(client, viewer, source):
    for n in range(55):
        cert(source, n)
    client.force_login(viewer)
    response = client.get(reverse("certificate_list"), {"q": "", "page": 2})
    assert len(response.context["page"].object_list) == 5
    assert "Previous" in response.content.decode()


@pytest.mark.parametrize("sort", ["newest", "oldest", "id", "status", "expiry"])
def test_pages_read_from_the_end_match_pages_read_from_the_start(source, sort):
    """TailPaginator reads the back half in reverse; every page must be what an OFFSET gives,
    ties included (equal dates and statuses here), orphans included."""
    from django.core.paginator import Paginator

    from transfers.forms import SORTS
    from transfers.search import TailPaginator

    for n in range(23):
        cert(source, n, status=["ACTIVE", "INACTIVE"][n % 2])
    Certificate.objects.filter(pk__in=Certificate.objects.values("pk")[:10]).update(
        creation_date="2026-01-01T00:00:00Z", not_after=None
    )
    rows = Certificate.objects.order_by(*SORTS[sort])
    for per_page, orphans in [(5, 0), (4, 2), (23, 0), (50, 0)]:
        plain = Paginator(rows, per_page, orphans=orphans)
        tail = TailPaginator(rows, per_page, orphans=orphans)
        assert tail.num_pages == plain.num_pages
        for number in plain.page_range:
            expected = [c.pk for c in plain.page(number)]
            assert [c.pk for c in tail.page(number)] == expected, (per_page, number)
    assert len({c.pk for n in plain.page_range for c in plain.page(n)}) == 23


@pytest.fixture
def fleet(source, other):
    """50 of 60 visible certificates match "Fleet-Con" (some by two policies and a thing:
    each counted once); the other account's matches are not visible."""
    for n in range(60):
        names = ["Fleet-Connect"] if n % 4 else ["Fleet-Other"]
        if n % 5 == 0:
            names.append("Fleet-Config")
        cert(
            source,
            n,
            status=["ACTIVE", "INACTIVE"][n % 2],
            policies=names,
            things=["Fleet-Con-thing"] if n % 7 == 0 else [],
        )
    for n in range(100, 110):
        cert(other, n, policies=["Fleet-Connect"])
    # Ties on every sort key but the id, which the sorts end with.
    Certificate.objects.filter(pk__in=Certificate.objects.values("pk")[:20]).update(
        creation_date="2026-01-01T00:00:00Z", not_after=None
    )
    visible = Certificate.objects.filter(account=source)
    matches = visible.filter(
        Q(policies__name__startswith="Fleet-Con") | Q(things__name__startswith="Fleet-Con")
    ).distinct()
    assert matches.count() == 50
    return matches


def walks(queries) -> bool:
    """Whether a query tested certificates one by one for a policy (search_walk): its id
    test, then the policies' (a probe or a set), in one OR."""
    # SQLite: "certificate_id" LIKE 'x%' ESCAPE '\'; PostgreSQL: "certificate_id"::text LIKE 'x%'
    walk = re.compile(
        r"\"certificate_id\"(::text)? LIKE \S+( ESCAPE '\\')? OR .*\"transfers_certificatepolicy\""
    )
    return any(walk.search(q["sql"]) for q in queries.captured_queries)


@pytest.mark.parametrize("sort", ["newest", "oldest", "id", "status", "expiry"])
def test_a_broad_search_walks_the_sort_and_lists_the_same_pages(
    client, viewer, fleet, monkeypatch, sort
):
    """Past SORT_ALL_BELOW matches the page is found by walking the sort's index and the
    count read from the name indexes: every page must be what sorting all matches gives."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from transfers import search
    from transfers.forms import SORTS
    from transfers.views import inventory

    monkeypatch.setattr(search, "SORT_ALL_BELOW", 0)
    monkeypatch.setattr(inventory, "PAGE_SIZE", 7)
    expected = [c.certificate_id for c in fleet.order_by(*SORTS[sort])]
    client.force_login(viewer)
    listed, walked = [], 0
    for number in range(1, 9):  # 8 pages: 7 x 7 and 1
        with CaptureQueriesContext(connection) as queries:
            response = client.get(
                reverse("certificate_list"), {"q": "Fleet-Con", "sort": sort, "page": number}
            )
        page = response.context["page"]
        assert page.paginator.count == 50 and page.number == number
        listed += [c.certificate_id for c in page.object_list]
        walked += walks(queries)
    assert listed == expected
    assert walked == 8  # depth x universe (at most 28 x 60) < 50 x 50 on every page


def test_a_search_counts_each_visible_match_once_with_every_filter(client, viewer, fleet):
    client.force_login(viewer)
    url = reverse("certificate_list")

    def count(**params):
        return client.get(url, {"q": "Fleet-Con", **params}).context["page"].paginator.count

    assert count() == 50
    assert count(account=fleet.first().account.account_id) == 50
    assert count(account="210000000099") == 0
    assert count(status="ACTIVE") == fleet.filter(status="ACTIVE").count() == 20
    assert count(region="eu-west-1") == 0
    assert count(q="Fleet-Config") == 12


def test_a_narrow_search_sorts_its_matches_without_walking(client, viewer, fleet, monkeypatch):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from transfers import search

    client.force_login(viewer)
    with CaptureQueriesContext(connection) as queries:
        response = client.get(reverse("certificate_list"), {"q": "Fleet-Con"})
    assert response.context["page"].paginator.count == 50  # fewer than SORT_ALL_BELOW
    assert not walks(queries)
    # Past the threshold, still sorted when walking would cost more: finding 12 matches
    # spread over 60 certificates means walking about 60 rows, more than 12 probes.
    monkeypatch.setattr(search, "SORT_ALL_BELOW", 0)
    with CaptureQueriesContext(connection) as queries:
        response = client.get(reverse("certificate_list"), {"q": "Fleet-Config"})
    assert response.context["page"].paginator.count == 12
    assert not walks(queries)
    # The certificates of the accounts were counted once, and are then remembered.
    universe = [q for q in queries.captured_queries if 'COUNT(*) AS "__count"' in q["sql"]]
    assert len(universe) == 1
    with CaptureQueriesContext(connection) as again:
        client.get(reverse("certificate_list"), {"q": "Fleet-Config", "page": 2})
    assert not [q for q in again.captured_queries if 'COUNT(*) AS "__count"' in q["sql"]]


def test_the_last_page_of_the_list_reads_in_reverse(client, viewer, source):
    for n in range(120):
        cert(source, n)
    client.force_login(viewer)
    first = client.get(reverse("certificate_list"), {"sort": "id"})
    last = client.get(reverse("certificate_list"), {"sort": "id", "page": 3})
    listed = [c.certificate_id for c in last.context["page"].object_list]
    assert len(listed) == 20 and listed == sorted(listed)
    everything = sorted(cid(n) for n in range(120))
    assert listed == everything[100:]
    assert [c.certificate_id for c in first.context["page"].object_list] == everything[:50]


def test_detail_shows_policies_things_and_an_expiry_warning(client, viewer, inventory):
    from datetime import timedelta

    from django.utils import timezone

    row = inventory[0][0]
    row.not_after = timezone.now() + timedelta(days=10)
    row.save()
    client.force_login(viewer)
    body = client.get(reverse("certificate_detail", args=[row.pk])).content.decode()
    assert row.certificate_id in body
    assert "DevicePublish" in body and "sensor-1" in body
    assert "within 30 days" in body


def test_detail_of_another_accounts_certificate_is_404(client, viewer, inventory):
    client.force_login(viewer)
    theirs = inventory[1]
    assert client.get(reverse("certificate_detail", args=[theirs.pk])).status_code == 404
    assert client.get(reverse("certificate_detail", args=[999999])).status_code == 404


class TestSyncNow:
    def url(self, account):
        return reverse("account_sync", args=[account.pk])

    def test_a_requester_queues_one_sync_per_region(self, client, requester, source, standin):
        client.force_login(requester)
        response = client.post(self.url(source))
        assert response.status_code == 302
        assert SyncRun.objects.filter(account=source).count() == 2

    def test_get_is_refused(self, client, requester, source):
        client.force_login(requester)
        assert client.get(self.url(source)).status_code == 405
        assert not SyncRun.objects.exists()

    def test_anonymous_is_sent_to_login(self, client, source):
        assert client.post(self.url(source)).status_code == 302
        assert not SyncRun.objects.exists()

    def test_a_viewer_may_not(self, client, viewer, source):
        client.force_login(viewer)
        assert client.post(self.url(source)).status_code == 403
        assert not SyncRun.objects.exists()

    def test_an_outsider_gets_404(self, client, outsider, source):
        client.force_login(outsider)
        assert client.post(self.url(source)).status_code == 404
        assert not SyncRun.objects.exists()

    def test_the_account_page_polls_while_a_sync_is_open(self, client, requester, source):
        SyncRun.objects.create(account=source, region="us-east-1")
        client.force_login(requester)
        body = client.get(reverse("account_detail", args=[source.pk])).content.decode()
        assert 'hx-trigger="every 2s"' in body
        fragment = client.get(
            reverse("account_detail", args=[source.pk]),
            headers={"HX-Request": "true", "HX-Target": "sync-runs"},
        ).content.decode()
        assert fragment.lstrip().startswith('<div id="sync-runs"')


class TestAccountForm:
    def data(self, **overrides):
        data = {
            "account_id": "555555555555",
            "name": "New one",
            "managed": "on",
            "regions": "us-east-1, eu-west-1",
            "role_arn": "arn:aws:iam::555555555555:role/TransferPortal",
            "external_id": "ext-id",
            "api_rate": "10",
            "contact_emails": "a@example.com\nb@example.com",
            "webhook_url": "",
            "expiry_days": "",
        }
        data.update(overrides)
        return data

    def test_an_admin_adds_a_managed_account_after_a_connection_check(
        self, client, portal_admin, standin
    ):
        from transfers.models import AwsAccount

        client.force_login(portal_admin)
        response = client.post(reverse("account_new"), self.data())
        assert response.status_code == 302, response.context["form"].errors
        account = AwsAccount.objects.get(account_id="555555555555")
        assert account.regions == ["us-east-1", "eu-west-1"]
        assert account.emails == ["a@example.com", "b@example.com"]
        assert account.role_for(portal_admin) >= {"admin"}

    @pytest.mark.parametrize(
        ("field", "value", "message"),
        [
            ("account_id", "12345", "exactly 12 digits"),
            ("account_id", "12345678901a", "exactly 12 digits"),
            ("regions", "us-east-1, mars-1", "Not an AWS region name: mars-1"),
            ("role_arn", "arn:aws:iam::1:role/x", "Expected arn:aws:iam::"),
            ("contact_emails", "not-an-email", "Not an email address"),
            ("api_rate", "0", "Between 0.1 and 1000"),
            ("external_id", "x", "2 to 1224 letters"),
        ],
    )
    def test_bad_input_is_refused_with_a_clear_message(
        self, client, portal_admin, field, value, message
    ):
        from transfers.models import AwsAccount

        client.force_login(portal_admin)
        response = client.post(reverse("account_new"), self.data(**{field: value}))
        assert response.status_code == 200
        assert message in response.content.decode()
        assert not AwsAccount.objects.filter(account_id="555555555555").exists()

    def test_an_unreachable_account_is_not_saved(self, client, portal_admin, settings, standin):
        from transfers.models import AwsAccount

        settings.AWS_ENDPOINT_URL = "http://127.0.0.1:9"
        client.force_login(portal_admin)
        response = client.post(reverse("account_new"), self.data())
        assert response.status_code == 200
        body = response.content.decode()
        assert "Cannot reach account 555555555555" in body and "Nothing was saved" in body
        assert not AwsAccount.objects.filter(account_id="555555555555").exists()

    def test_a_non_admin_may_not_add_accounts(self, client, requester):
        client.force_login(requester)
        assert client.get(reverse("account_new")).status_code == 403
        assert client.post(reverse("account_new"), self.data()).status_code == 403

    def test_a_non_admin_gets_404_for_an_unseen_account(self, client, requester, other):
        client.force_login(requester)
        assert client.get(reverse("account_edit", args=[other.pk])).status_code == 404


def test_policy_and_thing_names_are_escaped_in_the_list(client, viewer, source):
    """Names come from AWS, which allows characters HTML does not: they are shown as text."""
    cert(source, 0xE1, policies=['<script>alert("p")</script>'], things=["<b>thing</b>"])
    cert(source, 0xE2)
    client.force_login(viewer)
    body = client.get(reverse("certificate_list")).content.decode()
    assert "<script>alert" not in body and "<b>thing</b>" not in body
    assert "&lt;script&gt;alert(&quot;p&quot;)&lt;/script&gt;" in body
    assert '<span class="tag">&lt;b&gt;thing&lt;/b&gt;</span>' in body
    assert '<span class="muted">none</span>' in body  # the certificate without any


@pytest.mark.parametrize(
    "params",
    [{}, {"q": "Fleet-Con"}, {"q": "Fleet-Con", "status": "ACTIVE"}],
)
@pytest.mark.parametrize("sort", ["newest", "expiry"])
def test_past_the_count_limit_the_list_says_more_than_and_still_pages_everything(
    client, viewer, fleet, monkeypatch, params, sort
):
    """A count that stops at its limit is labelled "more than N"; pages forward from the
    start and backward from the end are exactly those of the full sorted list, and the
    exact count comes on a separate request (count=exact)."""
    from transfers import search
    from transfers.forms import SORTS
    from transfers.views import inventory

    monkeypatch.setattr(search, "COUNT_UP_TO", 9)
    monkeypatch.setattr(inventory, "PAGE_SIZE", 7)
    visible = Certificate.objects.filter(account__in=[fleet.first().account])
    expected_rows = fleet if params else visible
    if params.get("status"):
        expected_rows = expected_rows.filter(status=params["status"])
    expected = [c.certificate_id for c in expected_rows.order_by(*SORTS[sort])]
    assert len(expected) > 9
    client.force_login(viewer)
    url = reverse("certificate_list")

    first = client.get(url, {**params, "sort": sort})
    page = first.context["page"]
    assert not page.paginator.exact
    body = first.content.decode()
    assert "More than 9 certificates" in body and "count=exact" in body
    assert "Page 1</span>" in body and "Last page" in body

    forward, number = [], 1
    while True:  # Next until there is no next page
        page = client.get(url, {**params, "sort": sort, "page": number}).context["page"]
        forward += [c.certificate_id for c in page.object_list]
        if not page.has_next():
            break
        number = page.next_page_number()
    assert forward == expected

    backward, number = [], "last"
    while True:  # from the last page, Previous until the start
        page = client.get(url, {**params, "sort": sort, "page": number}).context["page"]
        backward = [c.certificate_id for c in page.object_list] + backward
        if not page.has_previous():
            break
        number = page.previous_page_number()
    assert backward[-len(expected) :] == expected
    assert set(backward) == set(expected)

    exact = client.get(url, {**params, "sort": sort, "count": "exact"})
    assert exact.context["page"].paginator.exact
    assert exact.context["page"].paginator.count == len(expected)
    assert f"{len(expected)} certificates" in exact.content.decode()


def test_a_count_within_the_limit_is_exact_and_counts_each_match_once(
    client, viewer, fleet, monkeypatch
):
    from transfers import search

    monkeypatch.setattr(search, "COUNT_UP_TO", 50)  # 50 matches, some found twice
    client.force_login(viewer)
    response = client.get(reverse("certificate_list"), {"q": "Fleet-Con"})
    assert response.context["page"].paginator.exact
    assert response.context["page"].paginator.count == 50
    monkeypatch.setattr(search, "COUNT_UP_TO", 49)
    response = client.get(reverse("certificate_list"), {"q": "Fleet-Con"})
    assert not response.context["page"].paginator.exact
    assert "More than 49 certificates" in response.content.decode()


def test_a_walk_tests_each_name_as_the_count_saw_it(client, viewer, fleet, monkeypatch):
    """The walk is told, per name branch, what the capped count read: no link of that name
    (not tested), all of a few links (tested as a set, hashed once), or many (each walked
    row probes its links); every page is what sorting all matches gives."""
    from django.db.models import QuerySet

    from transfers import search
    from transfers.forms import SORTS
    from transfers.views import inventory

    monkeypatch.setattr(search, "SORT_ALL_BELOW", 0)
    monkeypatch.setattr(inventory, "PAGE_SIZE", 2)  # walked: 2 x 60 < 12 x 12
    told = []

    def walk(queryset, q, names=None):
        told.append(names)
        return search_walk(queryset, q, names)

    search_walk = search.search_walk
    monkeypatch.setattr(inventory, "search_walk", walk)
    client.force_login(viewer)

    def first_page(q):
        return [
            c.certificate_id
            for c in client.get(reverse("certificate_list"), {"q": q}).context["page"]
        ]

    # No thing is named Fleet-Conf…, 12 policy links are.
    matches = fleet.filter(policies__name="Fleet-Config").order_by(*SORTS["newest"])
    assert first_page("Fleet-Conf") == [c.certificate_id for c in matches[:2]]
    ((policies, things),) = told
    assert isinstance(policies, QuerySet) and things is False
    # Fleet-Con: 57 policy links (more than 2 x 21 when the count stops at 20) and 9
    # thing links (all read).
    monkeypatch.setattr(search, "COUNT_UP_TO", 20)
    told.clear()
    matches = (
        fleet.filter(
            Q(policies__name__startswith="Fleet-Con") | Q(things__name__startswith="Fleet-Con")
        )
        .distinct()
        .order_by(*SORTS["newest"])
    )
    assert first_page("Fleet-Con") == [c.certificate_id for c in matches[:2]]
    ((policies, things),) = told
    assert policies is True and isinstance(things, QuerySet)


def test_a_walk_probes_many_links_tests_a_few_as_a_set_and_skips_none(fleet):
    from transfers.search import _branches, search_walk

    visible = fleet.model.objects.filter(account=fleet.first().account)
    _, policies, things = _branches("Fleet-Con", "default", [fleet.first().account_id])
    sql = str(search_walk(visible, "Fleet-Con", [True, things]).query)
    assert 'EXISTS(SELECT 1 AS "a" FROM "transfers_certificatepolicy"' in sql
    assert 'IN (SELECT U0."certificate_id" AS "certificate_id" FROM "transfers_certificatet' in sql
    sql = str(search_walk(visible, "Fleet-Con", [policies, False]).query)
    assert '"transfers_certificatething"' not in sql and "EXISTS" not in sql
    walked = search_walk(visible, "Fleet-Con", [policies, things]).order_by("pk")
    assert list(walked) == list(search_walk(visible, "Fleet-Con").order_by("pk"))


def test_the_capped_count_says_what_each_branch_found(fleet):
    from transfers.search import _branches, capped_counts

    accounts = [fleet.first().account_id]
    total, found, whole = capped_counts(_branches("Fleet-Con", "default", accounts), 10_000)
    assert total == 50 and found == [0, 48, 9]  # ids, policies, things
    assert whole == [True, True, True]
    # Capped at 20: the 57 policy links (48 certificates) are more than 2 x 21 were read;
    # the 9 things' links were all read.
    total, found, whole = capped_counts(_branches("Fleet-Con", "default", accounts), 20)
    assert total == 21 and found == [0, 21, 9]
    assert whole == [True, False, True]


def test_one_name_is_counted_reading_its_cap_once_and_two_names_read_further(fleet):
    """A broad name's count reads up to the cap's worth of links, not twice that (half the
    count's cost at 1,000,000); a prefix of two names with the same certificates among
    its first links is read further, so it still counts certificates, not links."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from transfers.search import _branches, capped_counts

    accounts = [fleet.first().account_id]
    with CaptureQueriesContext(connection) as one_name:
        total, found, whole = capped_counts(_branches("Fleet-Connect", "default", accounts), 20)
    assert (total, found, whole) == (21, [0, 21, 0], [True, False, True])
    [query] = one_name.captured_queries
    assert "LIMIT 22" in query["sql"] and "LIMIT 43" not in query["sql"]
    # "Fleet-Con": Fleet-Config's 12 links come first, then Fleet-Connect's, two of whose
    # first ten certificates have both: 20 certificates in 22 links, so it reads on.
    with CaptureQueriesContext(connection) as two_names:
        total, found, whole = capped_counts(_branches("Fleet-Con", "default", accounts), 20)
    assert (total, found, whole) == (21, [0, 21, 9], [True, False, True])
    first, again = two_names.captured_queries
    assert "LIMIT 22" in first["sql"] and "LIMIT 43" in again["sql"]


@pytest.mark.skipif(
    "sqlite" not in settings.DATABASES["default"]["ENGINE"],
    reason="reads SQLite's query plan (EXPLAIN QUERY PLAN); the unit tier runs on SQLite",
)
def test_a_walk_for_an_id_prefix_alone_walks_the_sort_not_the_id_index(fleet):
    """With no link of that name, the walk tests the id alone, as a plain LIKE: the id
    index's range instead made SQLite read every id with that first character and sort
    them (155 ms at 1,000,000), which is what a walk is meant to avoid."""
    from django.db import connection

    from transfers.forms import SORTS
    from transfers.search import search_walk

    walk = search_walk(fleet.model.objects.all(), "0", [False, False])
    sql, params = walk.order_by(*SORTS["newest"])[:50].query.sql_with_params()
    with connection.cursor() as cursor:
        cursor.execute("EXPLAIN QUERY PLAN " + sql, params)
        plan = " | ".join(str(row[-1]) for row in cursor.fetchall())
    assert "certificate_id" in sql and "certificate_id_idx" not in plan, plan
