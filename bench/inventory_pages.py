"""Inventory pages: server time of the certificate list and its search, against paging
ListCertificates through the stand-in as the AWS console and CLI do.

    .venv/bin/python bench/inventory_pages.py            # 100,000 rows, SQLite
    DATABASE_URL=postgres://postgres@127.0.0.1:5432/x .venv/bin/python bench/inventory_pages.py
    .venv/bin/python bench/inventory_pages.py --quick    # smaller, for a smoke run
    .venv/bin/python bench/inventory_pages.py --certificates 1000000 --standin-certificates 0

Portal side: a throwaway database (SQLite in a temporary directory, or a dedicated
PostgreSQL database created next to DATABASE_URL's and dropped afterwards) gets
``--certificates`` rows across 3 accounts x 2 regions with their policies and things; each
page is requested ``--requests`` times in process through Django's test client (whole
middleware stack, logged in as a viewer of the three accounts), timed with perf_counter;
SQL queries are counted on separate requests.

Stand-in side: ``python -m standin.server`` in a subprocess, ``--standin-certificates``
registered in one account and region (register_certificate_without_ca over HTTP); each find
picks a certificate at a random position and pages ListCertificates (pageSize 250, newest
first, as the CLI) from the start until it is on the page.
"""

from __future__ import annotations

import argparse
import hashlib
import random
import re
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _support import (
    Database,
    ec_certificate_pem,
    load,
    machine,
    ms,
    percentile,
    standin_process,
    table,
)

ACCOUNTS = [
    ("210000000001", "Fleet production", "sensor"),
    ("210000000002", "Fleet staging", "gateway"),
    ("210000000003", "Acme devices", "meter"),
]
REGIONS = ["us-east-1", "eu-west-1"]
POLICY_KINDS = ["Connect", "Publish", "Subscribe", "Shadow", "Jobs", "Telemetry", "Ota", "Debug"]
STATUSES = ["ACTIVE"] * 75 + ["INACTIVE"] * 17 + ["REVOKED"] * 5 + ["PENDING_TRANSFER"] * 3
# A policy on just over the count limit's certificates (transfers.search.COUNT_UP_TO + 1,
# spread evenly over the table; all of them when there are fewer): the count reads the most
# it ever reads and still says "more than", and the page walks the sort's index farthest.
JUST_OVER = "Edge-Cap"
PAGE = 250


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--certificates", type=int, default=100_000, help="rows in the database")
    parser.add_argument("--requests", type=int, default=200, help="requests per portal page")
    parser.add_argument(
        "--standin-certificates",
        type=int,
        default=10_000,
        help="certificates registered in the stand-in (one account and region)",
    )
    parser.add_argument(
        "--finds", type=int, default=50, help="certificates looked up by paging the stand-in"
    )
    parser.add_argument("--seed", type=int, default=6)
    parser.add_argument(
        "--keep", action="store_true", help="leave the loaded database in place (URL printed)"
    )
    parser.add_argument(
        "--reuse",
        metavar="URL",
        help="measure a database an earlier --keep run loaded, without loading it again",
    )
    parser.add_argument(
        "--no-statistics",
        action="store_true",
        help="skip the planner statistics the sync (SQLite) or autovacuum (PostgreSQL) "
        "would gather after the bulk load",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="10,000 rows, 50 requests, 2,000 stand-in certificates, 20 finds",
    )
    args = parser.parse_args()
    if args.quick:
        args.certificates, args.requests = 10_000, 50
        args.standin_certificates, args.finds = 2_000, 20
    return args


# --------------------------------------------------------------------------- portal side


def populate(n: int, rng: random.Random):
    """n certificates with 1-3 policies each and, for 85 %, a thing. Returns the viewer.

    Rows go in by COPY (PostgreSQL) or executemany (SQLite) with their primary keys set,
    50,000 certificates and their links at a time: a million through the ORM's bulk_create
    took most of an hour here, this takes minutes."""
    from django.contrib.auth.models import User
    from django.db import connection, transaction

    from transfers.models import (
        AccountGrant,
        AwsAccount,
        Certificate,
        CertificatePolicy,
        CertificateThing,
        Role,
    )
    from transfers.search import COUNT_UP_TO

    now = datetime.now(UTC)
    with transaction.atomic():
        accounts = [
            AwsAccount.objects.create(
                account_id=account_id,
                name=name,
                regions=REGIONS,
                role_arn=f"arn:aws:iam::{account_id}:role/TransferPortal",
            )
            for account_id, name, _ in ACCOUNTS
        ]
        viewer = User.objects.create_user("bench-viewer", "viewer@example.com", "unused")
        for account in accounts:
            AccountGrant.objects.create(account=account, user=viewer, role=Role.VIEWER)

    def when(value: datetime):
        return connection.ops.adapt_datetimefield_value(value)

    cert_columns = [
        "id",
        "account_id",
        "region",
        "certificate_id",
        "arn",
        "status",
        "ca_certificate_id",
        "owned_by",
        "creation_date",
        "last_modified_date",
        "not_before",
        "not_after",
        "synced_at",
        "described",
    ]
    # Links carry their certificate's account, region and status (transfers.models).
    link_columns = ["id", "account_id", "certificate_id", "name", "region", "status"]
    just_over = COUNT_UP_TO + 1
    step = max(1, n // just_over)
    synced = when(now)
    if connection.vendor == "sqlite":
        with connection.cursor() as cursor:
            # A million rows into nine indexes: with SQLite's default 2 MB page cache
            # every insert reads index pages from disk again (40 minutes instead of a few).
            cursor.execute("PRAGMA cache_size = -2000000")
    batch, policy_id, thing_id = 50_000, 0, 0
    for start in range(0, n, batch):
        certs, policy_links, thing_links = [], [], []
        for i in range(start, min(n, start + batch)):
            a = i % len(accounts)
            account, prefix = accounts[a], ACCOUNTS[a][2]
            region = REGIONS[(i // len(accounts)) % len(REGIONS)]
            cid = hashlib.sha256(f"bench-{i}".encode()).hexdigest()
            created = now - timedelta(seconds=rng.randrange(3 * 365 * 86400))
            not_before = created - timedelta(days=1)
            not_after = not_before + timedelta(days=rng.choice([365, 730, 1825]))
            status = rng.choice(STATUSES)
            certs.append(
                (
                    i + 1,
                    account.pk,
                    region,
                    cid,
                    f"arn:aws:iot:{region}:{account.account_id}:cert/{cid}",
                    status,
                    "",
                    account.account_id,
                    when(created),
                    when(created),
                    when(not_before),
                    when(not_after),
                    synced,
                    True,
                )
            )
            short = account.name.split()[-1].capitalize()
            copies = (region, status)
            for k in rng.sample(POLICY_KINDS, rng.randint(1, 3)):
                policy_id += 1
                policy_links.append((policy_id, account.pk, i + 1, f"{short}-{k}", *copies))
            if i % step == 0 and i // step < just_over:  # no draw from rng: the rest as before
                policy_id += 1
                policy_links.append((policy_id, account.pk, i + 1, JUST_OVER, *copies))
            if rng.random() < 0.85:
                thing_id += 1
                thing_links.append((thing_id, account.pk, i + 1, f"{prefix}-{i:06d}", *copies))
        with transaction.atomic():
            _insert(Certificate._meta.db_table, cert_columns, certs)
            _insert(CertificatePolicy._meta.db_table, link_columns, policy_links)
            _insert(CertificateThing._meta.db_table, link_columns, thing_links)
        print(f"    {start + len(certs):,} certificates", flush=True)
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            for model in (Certificate, CertificatePolicy, CertificateThing):
                table = model._meta.db_table
                cursor.execute(
                    f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                    f"(SELECT MAX(id) FROM {table}))"
                )
    return viewer


def _insert(table: str, columns: list[str], rows: list[tuple]) -> None:
    from django.db import connection

    names = ", ".join(columns)
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            raw = cursor.cursor  # psycopg's own cursor: COPY
            with raw.copy(f"COPY {table} ({names}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)
        return
    marks = ", ".join(["%s"] * len(columns))
    with connection.cursor() as cursor:
        cursor.executemany(f"INSERT INTO {table} ({names}) VALUES ({marks})", rows)


def scenarios(rng: random.Random, n: int, requests: int):
    """(label, kind, list of query dicts, the certificate each search must find or None)."""
    from transfers.models import Certificate, CertificatePolicy

    pks = list(Certificate.objects.values_list("pk", flat=True))
    picks = list(
        Certificate.objects.filter(pk__in=rng.sample(pks, min(len(pks), requests))).values(
            "pk", "certificate_id", "arn"
        )
    )
    things = dict(
        Certificate.objects.filter(pk__in=[p["pk"] for p in picks], things__isnull=False)
        .values_list("pk", "things__name")
        .order_by()
    )
    policy_names = sorted(
        set(CertificatePolicy.objects.exclude(name=JUST_OVER).values_list("name", flat=True))
    )
    just_over = CertificatePolicy.objects.filter(name=JUST_OVER).count()

    def cycle(items):
        return [items[i % len(items)] for i in range(requests)]

    with_thing = [p for p in picks if p["pk"] in things]
    return [
        ("list: page 1, newest first", "list", [{}] * requests, None),
        # The pager's "Last page" link (page=last) once the count is "more than N";
        # numbered from the start when the count is exact.
        ("list: last page", "list", [{"page": "last"}] * requests, None),
        ("list: sorted by expiry", "list", [{"sort": "expiry"}] * requests, None),
        (
            "search: id prefix (10 chars)",
            "search",
            [{"q": p["certificate_id"][:10]} for p in cycle(picks)],
            [p["certificate_id"] for p in cycle(picks)],
        ),
        (
            "search: id's first character (as typed)",
            "search",
            [{"q": c} for c in cycle(list("0123456789abcdef"))],
            None,
        ),
        (
            "search: policy name",
            "search",
            [{"q": name} for name in cycle(policy_names)],
            None,
        ),
        (
            "search: policy name + status ACTIVE",
            "search",
            [{"q": name, "status": "ACTIVE"} for name in cycle(policy_names)],
            None,
        ),
        # A status on few certificates (3 %) with a broad name: the links carry the
        # status, so the count and the page read the matches from the links' status index
        # (before they did, the count read a certificate row per link of the name).
        (
            "search: policy name + rarest status",
            "search",
            [{"q": name, "status": "PENDING_TRANSFER"} for name in cycle(policy_names)],
            None,
        ),
        (
            f"search: just over the count limit ({just_over:,})",
            "search",
            [{"q": JUST_OVER}] * requests,
            None,
        ),
        (
            "search: thing name",
            "search",
            [{"q": things[p["pk"]]} for p in cycle(with_thing)],
            [p["certificate_id"] for p in cycle(with_thing)],
        ),
        (
            "search: ARN prefix (cert/ + 16)",
            "search",
            [{"q": p["arn"][: p["arn"].index("cert/") + 21]} for p in cycle(picks)],
            [p["certificate_id"] for p in cycle(picks)],
        ),
    ]


def password_backend() -> str:
    """The backend a password login goes through (the first that stores users in Django)."""
    from django.conf import settings

    return next(b for b in settings.AUTHENTICATION_BACKENDS if "Axes" not in b)


def measure_portal(viewer, plan, warmup: int = 5):
    """Time every scenario's requests, interleaved: request i of each scenario runs before
    request i + 1 of any, so a slow moment of the machine hits every row alike instead of
    whichever scenario happened to run then."""
    import gc

    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext
    from django.urls import reverse

    client = Client(HTTP_HOST="127.0.0.1")
    client.force_login(viewer, backend=password_backend())
    url = reverse("certificate_list")
    for _, _, queries, _ in plan:
        for params in queries[:warmup]:
            client.get(url, params)
    gc.collect()  # the bulk load's garbage, which a web server process would not hold
    # Then what the web process does once loaded (portal/wsgi.py, as gunicorn imports
    # it): all that is loaded frozen out of the collector's way.
    import portal.wsgi  # noqa: F401

    times: list[list[float]] = [[] for _ in plan]
    for i in range(max(len(queries) for _, _, queries, _ in plan)):
        for row, (label, _, queries, must_find) in enumerate(plan):
            if i >= len(queries):
                continue
            params = queries[i]
            started = time.perf_counter()
            response = client.get(url, params)
            times[row].append(time.perf_counter() - started)
            if response.status_code != 200:
                raise SystemExit(f"{label}: HTTP {response.status_code} for {params}")
            if must_find and must_find[i] not in response.content.decode():
                raise SystemExit(f"{label}: {params} did not find {must_find[i]}")
    results = []
    for row, (label, kind, queries, _) in enumerate(plan):
        counts, shown = set(), set()
        for params in queries[:: max(1, len(queries) // 10)]:
            with CaptureQueriesContext(connection) as captured:
                response = client.get(url, params)
            counts.add(len(captured.captured_queries))
            more = re.search(r"More than ([\d,]+) certificates", response.content.decode())
            shown.add(f"> {more.group(1)}" if more else "exact")
        results.append((label, kind, times[row], counts, " / ".join(sorted(shown))))
        print(f"  {label}: p50 {ms(percentile(times[row], 50))} ms", flush=True)
    return results


def explain(viewer, plan) -> list[str]:
    """The database's plan for the certificate queries (counts, the page's keys) that the
    first request of each row runs, recorded as the view sends them."""
    from django.db import connection
    from django.test import Client
    from django.urls import reverse

    client = Client(HTTP_HOST="127.0.0.1")
    client.force_login(viewer, backend=password_backend())
    prefix = "EXPLAIN QUERY PLAN " if connection.vendor == "sqlite" else "EXPLAIN "
    lines = []
    for label, _, queries, _ in plan:
        sent = []

        def record(execute, sql, params, many, context, sent=sent):
            if '"transfers_certificate"' in sql and ("COUNT(" in sql or " LIMIT " in sql):
                sent.append((sql, params))
            return execute(sql, params, many, context)

        with connection.execute_wrapper(record):
            client.get(reverse("certificate_list"), queries[0])
        for sql, params in sent:
            with connection.cursor() as cursor:
                cursor.execute(prefix + sql, params)
                rows = cursor.fetchall()
            text = [r[-1] if connection.vendor == "sqlite" else r[0] for r in rows]
            what = "count" if "COUNT(" in sql else "page"
            jit = " | JIT" if any(str(t).startswith("JIT:") for t in text) else ""
            lines.append(
                f"{label} [{what}]: " + " | ".join(str(t).strip() for t in text[:10]) + jit
            )
    return lines


# --------------------------------------------------------------------------- stand-in side


def measure_standin(n: int, finds: int, rng: random.Random):
    from standin.control import RemoteControl, client_for_account

    account_id, region = "210000000001", "us-east-1"
    with standin_process() as url:
        now = datetime.now(UTC)
        started = time.perf_counter()
        pems = [
            ec_certificate_pem(f"standin-{i}", now - timedelta(days=1), now + timedelta(days=365))
            for i in range(n)
        ]
        local = threading.local()

        def register(pem: str) -> str:
            if not hasattr(local, "iot"):
                local.iot = client_for_account(account_id, region, url)
            made = local.iot.register_certificate_without_ca(certificatePem=pem, status="ACTIVE")
            return made["certificateId"]

        with ThreadPoolExecutor(4) as pool:  # the server serialises; threads hide latency
            list(pool.map(register, pems))
        setup = time.perf_counter() - started
        print(f"  registered {n:,} certificates in the stand-in in {setup:.0f} s", flush=True)

        iot = client_for_account(account_id, region, url)
        order = [
            c["certificateId"]
            for page in iot.get_paginator("list_certificates").paginate(pageSize=PAGE)
            for c in page["certificates"]
        ]
        assert len(order) == n, (len(order), n)
        control = RemoteControl(url)
        control.reset_counters()
        times, pages = [], []
        for _ in range(finds):
            wanted = order[rng.randrange(n)]
            started = time.perf_counter()
            kwargs: dict = {"pageSize": PAGE}
            calls = 0
            while True:
                answer = iot.list_certificates(**kwargs)
                calls += 1
                if any(c["certificateId"] == wanted for c in answer["certificates"]):
                    break
                kwargs["marker"] = answer["nextMarker"]
            times.append(time.perf_counter() - started)
            pages.append(calls)
        counted = control.call_count("ListCertificates")
        assert counted == sum(pages), (counted, sum(pages))
        return times, pages


# --------------------------------------------------------------------------- main


def main() -> None:
    args = parse_args()
    rng = random.Random(args.seed)
    db = Database("pages", keep=args.keep, reuse=args.reuse)
    try:
        db.setup_django()
        print(f"Database: {db.describe()} ({db.server_version()})", flush=True)
        load_before = load()
        started = time.perf_counter()
        if args.reuse:
            from django.contrib.auth.models import User

            from transfers.models import Certificate

            viewer = User.objects.get(username="bench-viewer")
            args.certificates = Certificate.objects.count()
        else:
            viewer = populate(args.certificates, rng)
        if args.no_statistics or args.reuse:
            pass
        elif db.vendor == "postgresql":
            from django.db import connection

            with connection.cursor() as cursor:
                cursor.execute("VACUUM ANALYZE")  # what autovacuum does after a bulk load
        else:
            from transfers.inventory import refresh_statistics

            refresh_statistics()  # what the inventory sync does after it adds many rows
        from transfers.models import CertificatePolicy, CertificateThing

        print(
            f"  inserted {args.certificates:,} certificates, "
            f"{CertificatePolicy.objects.count():,} policy links, "
            f"{CertificateThing.objects.count():,} things "
            + (
                f"loaded by an earlier --keep run ({args.reuse})"
                if args.reuse
                else f"in {time.perf_counter() - started:.0f} s"
            ),
            flush=True,
        )
        plan = scenarios(rng, args.certificates, args.requests)
        portal = measure_portal(viewer, plan)
        plans = explain(viewer, plan)
        standin_times, standin_pages = [], []
        if args.standin_certificates:
            print("Stand-in:", flush=True)
            standin_times, standin_pages = measure_standin(
                args.standin_certificates, args.finds, rng
            )
    finally:
        db.cleanup()

    search_times = [times for _, kind, times, _, _ in portal if kind == "search"]
    id_search = next(times for label, _, times, _, _ in portal if label.startswith("search: id"))
    s50, s95 = percentile(standin_times, 50), percentile(standin_times, 95)
    rows = []
    for label, _, times, counts, shown in portal:
        p50, p95 = percentile(times, 50), percentile(times, 95)
        queries = "-".join(str(c) for c in sorted(counts)) if len(counts) > 1 else counts.pop()
        rows.append(
            [
                label,
                len(times),
                ms(p50),
                ms(p95),
                "yes" if p95 <= 0.050 else "NO",
                queries,
                shown,
                f"{s50 / p50:,.0f}x" if standin_times else "",
                f"{s95 / p95:,.0f}x" if standin_times else "",
            ]
        )
    if standin_times:
        rows.append(
            [
                f"stand-in: page ListCertificates ({args.standin_certificates:,} certs)",
                len(standin_times),
                ms(s50),
                ms(s95),
                "",
                f"{percentile(standin_pages, 50):.0f}/{max(standin_pages)} pages",
                "",
                "1x",
                "1x",
            ]
        )

    print()
    print(
        f"Inventory pages: {args.certificates:,} certificates in {db.describe().split(',')[0]}; "
        f"{machine()}; load average {load_before} at start, {load()} at end"
    )
    print(
        table(
            [
                "page",
                "n",
                "p50 ms",
                "p95 ms",
                "p95<=50",
                "queries",
                "count shown",
                "stand-in/portal p50",
                "p95",
            ],
            rows,
        )
    )
    all_search = [t for times in search_times for t in times]
    print(
        f"\nAll searches together: p50 {ms(percentile(all_search, 50))} ms, "
        f"p95 {ms(percentile(all_search, 95))} ms."
    )
    if standin_times:
        print(
            f"Finding a certificate by id: stand-in paging p50 {ms(s50)} ms vs portal "
            f"id-prefix search p50 {ms(percentile(id_search, 50))} ms = "
            f"{s50 / percentile(id_search, 50):,.0f}x. Stand-in: "
            f"{args.standin_certificates:,} certificates, pageSize {PAGE}, median "
            f"{percentile(standin_pages, 50):.0f} pages per find; the stand-in is moto on "
            "this machine, not AWS (no network, no AWS-side latency)."
        )
    print("\nQuery plans (first query of each row):")
    for line in plans:
        print("  " + line)


if __name__ == "__main__":
    main()
