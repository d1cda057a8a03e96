"""Search, filters and counts of the lists, for the pages and the API alike.

Certificates: a search is an id or ARN prefix, or a policy or thing name prefix, each
answered from its own index (``search``); the list's paginators read the last pages from the
other end (``TailPaginator``) and, for a search that matches many, count up to a limit only
and walk the sort's index instead of sorting every match (``CertificatePaginator``). Figures
and query plans: docs/benchmarks.md.

Batches: the batch list's filters (``filter_batches``) and each row's counts by state
(``batch_counts``). The audit log: its events for its filters (``audit_events``).
"""

from __future__ import annotations

from datetime import datetime, time

from django.core.cache import cache
from django.core.exceptions import EmptyResultSet
from django.core.paginator import Page, Paginator
from django.db import connections
from django.db.models import Count, Exists, OuterRef, Q, QuerySet
from django.utils import timezone
from django.utils.functional import cached_property

from transfers import access
from transfers.forms import CertificateFilterForm
from transfers.models import (
    AwsAccount,
    Certificate,
    CertificatePolicy,
    CertificateThing,
    Transfer,
    TransferEvent,
)

# Below this many matches a search sorts them all (CertificatePaginator).
SORT_ALL_BELOW = 1_000
# Counts stop here and the page says "more than N" (exact on request, ?count=exact):
# counting a million certificates costs more than the page. Every count reads indexes only
# (links carry their certificate's account, region and status), so one limit serves all.
COUNT_UP_TO = 10_000
UNIVERSE_SECONDS = 300


class TailPaginator(Paginator):
    """Pages past the middle are read from the other end of the ordering.

    An OFFSET makes the database step over every row before it (about 0.3 s for the last of
    2,000 pages on SQLite); reading the last pages in reverse makes them as cheap as the
    first. The ordering must be total (every sort ends with the primary key)."""

    def page(self, number):
        number = self.validate_number(number)
        bottom = (number - 1) * self.per_page
        top = bottom + self.per_page
        if top + self.orphans >= self.count:
            top = self.count
        return self._get_page(self.rows(self.object_list, bottom, top), number, self)

    def rows(self, ordered, bottom: int, top: int) -> list:
        if bottom <= self.count // 2:
            return list(ordered[bottom:top])
        return list(ordered.reverse()[self.count - top : self.count - bottom])[::-1]


class CertificatePaginator(TailPaginator):
    """A list page of certificates, with two shortcuts for a search that matches many.

    ``object_list`` finds the matches through the name and id indexes and sorts all of
    them: cheap for a few, but each match costs an index probe, twice (count, page), which
    at 8,000 matches is most of a request. So, given the same search in other forms:

    - ``keys``: the matches' primary keys from the indexes alone (links carry the
      account, region and status),
      whose count is the page count without reading a certificate per match;
    - ``walk``: the same rows written as a test on each certificate, which the database
      answers by walking the sort's index until the page is full: a function of what
      the count saw of each name branch (``walked``), so a walked row is tested only
      for names that exist, and against a set when they are few (docs/benchmarks.md).
      It walks about
      ``depth x universe / count`` rows, so it is used only when that is fewer than the
      matches a sort would probe. ``account_pks`` give the number walked over, an upper
      bound of what the search narrows: the certificates of those accounts, counted from
      the account index alone (counting one status of 100,000 certificates reads every
      row) and kept for UNIVERSE_SECONDS, since a stale figure only picks the slower of
      two plans that list the same rows.
    """

    def __init__(
        self,
        ordered,
        per_page,
        *,
        keys=None,
        walk=None,
        account_pks=(),
        branches=None,
        up_to=None,
    ):
        super().__init__(ordered, per_page)
        self.keys, self.walk, self.account_pks = keys, walk, sorted(account_pks)
        # Without ``branches`` the count is exact; with them it stops above ``up_to``.
        self.branches = branches
        self.up_to = COUNT_UP_TO if up_to is None else up_to

    @cached_property
    def count(self) -> int:
        if self.branches is not None:
            return self._capped[0]
        return (self.object_list if self.keys is None else self.keys).count()

    @cached_property
    def _capped(self) -> tuple[int, list[int], list[bool]]:
        return capped_counts(self.branches, self.up_to)

    @cached_property
    def walked(self):
        """The walk, told for each name branch (policies, things) what the count saw:
        nothing (not tested), all of a few (tested against that set), or many (each
        walked row's links probed)."""
        if self.branches is None:
            return self.walk(None)
        _, found, whole = self._capped
        names = zip(self.branches[1:], found[1:], whole[1:], strict=True)
        return self.walk(
            [(branch if all_read else True) if n else False for branch, n, all_read in names]
        )

    @property
    def exact(self) -> bool:
        return self.branches is None or self.count <= self.up_to

    def get_page(self, number):
        """As Paginator.get_page; past an inexact count, any page forward, and ``last`` or
        ``-k`` (the k-th page from the end, read from the other end of the ordering)."""
        if self.exact:
            return super().get_page(number)
        text = str(number or "1").strip()
        try:
            number = -1 if text == "last" else int(text)
        except ValueError:
            number = 1
        number = number or 1
        if number > 0:
            bottom = (number - 1) * self.per_page
            rows = self.rows(self.object_list, bottom, bottom + self.per_page)
        else:
            top = -number * self.per_page
            rows = self.rows(self.object_list.reverse(), top - self.per_page, top)[::-1]
        return OpenPage(rows, number, self)

    def universe(self) -> int:
        return cache.get_or_set(
            "inventory-universe:" + ",".join(map(str, self.account_pks)),
            lambda: Certificate.objects.filter(account__in=self.account_pks).count(),
            UNIVERSE_SECONDS,
        )

    def rows(self, ordered, bottom: int, top: int) -> list:
        if not self.exact:
            # More than ``up_to`` match: walking the sort's index finds a page within
            # about depth x universe / up_to rows; sorting every match could read them
            # all. The count is a lower bound, so offsets run forward from either end.
            if self.walk is not None:
                ordered = self.walked if ordered is self.object_list else self.walked.reverse()
            return list(ordered[bottom:top])
        if self.walk is not None and self.count > SORT_ALL_BELOW:
            depth = min(top, self.count - bottom)  # rows to find, from the nearer end
            if depth * self.universe() < self.count * self.count:
                ordered = self.walked
        return super().rows(ordered, bottom, top)


class OpenPage(Page):
    """A page of a list whose length is only known to exceed the paginator's ``up_to``:
    numbered from the start (1, 2, ...) or from the end (-1 is the last page)."""

    def has_next(self) -> bool:
        return self.number < -1 or (self.number > 0 and len(self.object_list) == self.per_page)

    def has_previous(self) -> bool:
        return self.number > 1 or (self.number < 0 and len(self.object_list) == self.per_page)

    def next_page_number(self) -> int:
        return self.number + 1

    def previous_page_number(self) -> int:
        return self.number - 1

    @property
    def per_page(self) -> int:
        return self.paginator.per_page

    @property
    def from_end(self) -> int:
        return -self.number if self.number < 0 else 0


def capped_counts(branches: list, up_to: int) -> tuple[int, list[int], list[bool]]:
    """How many distinct keys the union of ``branches`` (querysets of one key column)
    holds, exact up to ``up_to``; past it, ``up_to + 1``. And for each branch its own
    count, capped the same way (0: it finds nothing, so a walk need not test it), and
    whether all its rows were read (few enough for a walk to test against the set of them,
    hashed once, instead of probing the links of every row it walks).

    One query, most of the time: the distinct keys among the first ``up_to`` + 1 rows of
    each branch (one more of a branch of links, to know whether it holds more) are
    counted (a LIMIT, so the database stops reading there; a DISTINCT before the LIMIT
    would make PostgreSQL hash every match first), and only when none passes ``up_to``
    are the branches unioned and counted exactly. A certificate with two matching names
    is one match either way: when a branch of links read that many rows but found fewer
    keys (a prefix matching two names of the same certificates), it is counted again
    reading twice as many (:func:`_capped_query`)."""
    parts, params, present = [], [], []
    for branch in branches:
        try:
            sql, branch_params = branch.query.sql_with_params()
        except EmptyResultSet:  # e.g. no visible account: this branch finds nothing
            present.append(False)
            continue
        # A branch of certificates holds each key once: its first up_to + 1 rows, without
        # DISTINCT (which hashes them: 7 of a list page's 25 ms at 1,000,000).
        parts.append((sql, branch.model is Certificate))
        params.extend(branch_params)
        present.append(True)
    if not parts:
        return 0, [0] * len(branches), [True] * len(branches)
    using = connections[branches[0].db]
    # Reading up_to + 1 links, not twice that, halves the count of a broad name (a
    # broad search's largest query at 1,000,000 certificates: docs/benchmarks.md).
    for links, last in ((up_to + 1, False), (2 * (up_to + 1), True)):
        with using.cursor() as cursor:
            cursor.execute(_capped_query(parts, up_to, links, last), params + params)
            total, *read = cursor.fetchone()
        if total >= 0:
            break
    pairs = iter(zip(read[::2], read[1::2], strict=True))
    found, whole = [], []
    for here in present:
        distinct, rows = next(pairs) if here else (0, 0)
        found.append(min(distinct, up_to + 1))
        whole.append(rows <= links)
    return total, found, whole


def _capped_query(parts: list, up_to: int, links: int, last: bool) -> str:
    """capped_counts' query: each branch's first rows (``links`` + 1 of a branch of links)
    counted, then the union counted unless a branch passes ``up_to``. Unless ``last``, -1
    when a branch of links read more than ``links`` rows but found no more than ``up_to``
    keys: it must be read further, and the union (every match) is not counted meanwhile."""
    limit = up_to + 1
    # Built from the ORM's own SQL and integers; every value is a parameter.
    counts = " CROSS JOIN ".join(
        f"(SELECT COUNT(*) AS c{i}, COUNT(*) AS r{i} FROM ({sql} LIMIT {limit}) AS b{i}) AS s{i}"  # noqa: S608, E501
        if unique
        else f"(SELECT COUNT(*) AS c{i}, COALESCE(SUM(n), 0) AS r{i} FROM "  # noqa: S608
        f'(SELECT "certificate_id", COUNT(*) AS n FROM ({sql} LIMIT {links + 1}) AS b{i} '
        f'GROUP BY "certificate_id") AS g{i}) AS s{i}'
        for i, (sql, unique) in enumerate(parts)
    )
    over = " OR ".join(f"c{i} > {up_to}" for i in range(len(parts)))
    further = " OR ".join(
        f"(r{i} > {links} AND c{i} <= {up_to})"
        for i, (_, unique) in enumerate(parts)
        if not unique and not last
    )
    union = " UNION ".join(
        f"SELECT * FROM ({sql}) AS u{i}"  # noqa: S608
        for i, (sql, _) in enumerate(parts)
    )
    columns = ", ".join(f"c{i}, r{i}" for i in range(len(parts)))
    again = f"WHEN {further} THEN -1 " if further else ""
    # MATERIALIZED: each branch counted once (inlined, the CASE and the columns would each
    # count it); the union only when no branch passes up_to.
    return (
        f"WITH c AS MATERIALIZED (SELECT * FROM {counts}) "  # noqa: S608
        f"SELECT CASE WHEN {over} THEN {limit} {again}"
        f"ELSE (SELECT COUNT(*) FROM ({union}) AS m) END, {columns} FROM c"
    )


def _prefix(field: str, value: str, using: str) -> Q:
    """``field`` starts with ``value``, in a form a B-tree index can serve.

    SQLite's LIKE is case-insensitive, so it never uses a plain index and scans the table;
    a range on the column does use it (the LIKE stays, so the match is exact, and
    case-sensitive as on PostgreSQL). PostgreSQL's LIKE needs a *_pattern_ops index
    (docs/benchmarks.md)."""
    condition = Q(**{f"{field}__startswith": value})
    if connections[using].vendor == "sqlite" and ord(value[-1]) < 0xD7FF:
        upper = value[:-1] + chr(ord(value[-1]) + 1)
        condition &= Q(**{f"{field}__gte": value, f"{field}__lt": upper})
    return condition


def search(queryset, q: str, region: str = "", status: str = ""):
    """Id or ARN prefix, or a policy or thing name (prefix). ``queryset`` is already
    narrowed to ``region`` and ``status`` when given: they narrow each branch too, so a
    rare status with a broad name unions its few matches, not every link of the name."""
    if not q:
        return queryset
    using = queryset.db
    if q.startswith("arn:"):
        return queryset.filter(_prefix("arn", q, using))
    # Each branch is found through its own index and the certificates then by primary key.
    # An OR of EXISTS (or of IN) makes the database test every certificate row instead
    # (0.1-0.5 s at 100,000 certificates, docs/benchmarks.md); search_walk is that form,
    # for when most rows pass.
    first, *rest = _branches(q, using, region=region, status=status)
    return queryset.filter(pk__in=first.union(*rest, all=True))


def _branches(q: str, using: str, account_pks=None, **narrowing) -> list:
    """The primary keys of the certificates an id prefix, a policy name and a thing name
    find, each from its own index (in ``account_pks`` when given, and with the
    certificate's ``region`` and ``status`` when given: links carry copies of both)."""
    branches = [
        Certificate.objects.filter(_prefix("certificate_id", q.lower(), using)).values("pk"),
        CertificatePolicy.objects.filter(_prefix("name", q, using)).values("certificate_id"),
        CertificateThing.objects.filter(_prefix("name", q, using)).values("certificate_id"),
    ]
    if account_pks is not None:
        branches = [b.filter(account__in=account_pks) for b in branches]
    wanted = {k: v for k, v in narrowing.items() if v}
    return [b.filter(**wanted).order_by() for b in branches]


def count_branches(narrowed, q: str, account_pks, data: dict) -> list:
    """What the capped count (up to COUNT_UP_TO) unions for this list or search."""
    if not q or q.startswith("arn:"):
        return [search(narrowed, q).values("pk").order_by()]
    return _branches(q, narrowed.db, account_pks, **narrowing(data))


def narrowing(data: dict) -> dict:
    """The region and status filters of valid form data, for ``search`` and the branches."""
    return {"region": data.get("region") or "", "status": data.get("status") or ""}


def search_walk(queryset, q: str, names=None):
    """What ``search`` finds (not for an ARN), as a test on each certificate: ordered and
    sliced, the database walks the sort's index and stops when the page is full.
    ``names``, for the policy and the thing branch (``_branches``): False, nobody has the
    name (not tested); True, each walked row probes its links; or the branch itself, a
    few keys, which the walk tests a row against as a set, hashed once (a probe each cost
    two thirds of the walk just over the count limit). None: both probed. The id's test stays, as
    cheap as it is: an EXISTS alone would become a join, which PostgreSQL runs in
    parallel over the whole index instead of stopping at the page (100 ms, not 20). It is
    a plain LIKE, not ``_prefix``'s range: alone, the range made SQLite read every id with
    that first character from the id index and sort them (155 ms at 1,000,000) instead
    of walking the sort's index, which is what a walk is for."""
    using = queryset.db
    test = Q(certificate_id__startswith=q.lower())
    for related, wanted in zip(
        (CertificatePolicy, CertificateThing), names or (True, True), strict=True
    ):
        if wanted is False:
            continue
        if wanted is not True:
            test |= Q(pk__in=wanted)
            continue
        # The redundant ``<=`` keeps PostgreSQL from turning the EXISTS into a hashed IN
        # list: it plans for every certificate, not the few hundred the LIMIT walks, and
        # so hashes every link with that name first (83,000 at 1,000,000 certificates,
        # 24 ms; docs/benchmarks.md). A test mixing outer and inner columns other than by
        # equality cannot be hashed, so each walked row probes the link's own index.
        linked = related.objects.filter(
            _prefix("name", q, using),
            certificate=OuterRef("pk"),
            certificate__lte=OuterRef("pk"),
        )
        test |= Exists(linked)
    return queryset.filter(test)


def search_keys(q: str, account_pks: list[int], using: str, region: str = "", status: str = ""):
    """The primary keys ``search`` finds for ``q`` (not an ARN) in those accounts (and
    ``region`` and ``status`` when given), each once, read from the indexes alone (no
    certificate row per match)."""
    first, *rest = _branches(q, using, account_pks, region=region, status=status)
    return first.union(*rest)


def narrowed_certificates(user, form: CertificateFilterForm, accounts=None):
    """The certificates a user may see, narrowed by the list's filters but not its search,
    and the primary keys of the accounts they are in. Invalid fields are dropped from
    cleaned_data (the page shows them as errors)."""
    form.is_valid()
    if accounts is None:
        accounts = AwsAccount.objects.visible_to(user).filter(managed=True)
    return narrow(accounts, form.cleaned_data)


def narrow(accounts, data: dict):
    """The certificates of ``accounts`` narrowed by valid filter values (account id,
    region, status), and the primary keys of the accounts they are in: a list, or a
    subquery when ``accounts`` is a queryset (which this does not evaluate)."""
    wanted = data.get("account")
    if isinstance(accounts, QuerySet):
        account_pks = (accounts.filter(account_id=wanted) if wanted else accounts).values("pk")
    else:
        account_pks = [a.pk for a in accounts if not wanted or a.account_id == wanted]
    certs = Certificate.objects.filter(account__in=account_pks)
    if data.get("region"):
        certs = certs.filter(region=data["region"])
    if data.get("status"):
        certs = certs.filter(status=data["status"])
    return certs, account_pks


def filtered_certificates(user, form: CertificateFilterForm, accounts=None):
    """The certificates a user may see, narrowed by the list's filters and search."""
    certs, _ = narrowed_certificates(user, form, accounts)
    data = form.cleaned_data
    return search(certs, data.get("q", ""), **narrowing(data))


def filter_batches(rows: QuerySet, data: dict) -> QuerySet:
    """The transfer list's filters, for batches (``rows`` annotated by
    access.with_source_side): a state matches a batch with a transfer in that state; an
    account matches the source or the target; the requester filter skips a batch seen only
    through its target (it shows no requester)."""
    if data.get("status"):
        rows = rows.filter(
            Exists(Transfer.objects.filter(batch=OuterRef("pk"), status=data["status"]))
        )
    if data.get("account"):
        rows = rows.filter(
            Q(source__account_id=data["account"]) | Q(target_account_id=data["account"])
        )
    if data.get("requester"):
        rows = rows.filter(requester__username=data["requester"], source_side=True)
    if data.get("since"):
        rows = rows.filter(created__date__gte=data["since"])
    if data.get("until"):
        rows = rows.filter(created__date__lte=data["until"])
    return rows


def batch_counts(batch_pks: list[int]) -> dict[int, dict[str, int]]:
    """How many transfers of each batch are in each state: one query, however many rows."""
    counts: dict[int, dict[str, int]] = {pk: {} for pk in batch_pks}
    for batch_pk, status, n in (
        Transfer.objects.filter(batch__in=batch_pks)
        .order_by()
        .values_list("batch", "status")
        .annotate(n=Count("pk"))
    ):
        counts[batch_pk][status] = n
    return counts


def audit_events(user, data: dict) -> QuerySet[TransferEvent]:
    """The audit log's events for its filter values (the page's form, the API's query),
    unordered: every event of the transfers the user can see, as access.events_seen_by
    shows each (the filters match what is shown, so they find nothing else either)."""
    qs = access.events_seen_by(
        user,
        TransferEvent.objects.filter(
            transfer__in=Transfer.objects.visible_to(user).order_by().values("pk")
        ),
    )
    if data.get("account"):
        account = data["account"]
        qs = qs.filter(
            Q(transfer__source__account_id=account) | Q(transfer__target_account_id=account)
        )
    if data.get("certificate"):
        # Prefix of the id, as the certificate list searches: served by the id's index.
        qs = qs.filter(transfer__certificate_id__startswith=data["certificate"].lower())
    if data.get("transfer"):
        qs = qs.filter(transfer_id=data["transfer"])
    if data.get("batch"):
        qs = qs.filter(transfer__batch_id=data["batch"])
    if data.get("user"):
        qs = qs.filter(shown_actor__iexact=data["user"].strip())
    if data.get("action"):
        qs = qs.filter(shown_action__iexact=data["action"].strip())
    if data.get("kind"):
        qs = qs.filter(kind=data["kind"])
    if data.get("since"):
        qs = qs.filter(created__gte=timezone.make_aware(datetime.combine(data["since"], time.min)))
    if data.get("until"):
        qs = qs.filter(created__lte=timezone.make_aware(datetime.combine(data["until"], time.max)))
    return qs
