"""The check after each transition of a batch (notices.flush_batch): its cost as the batch's
held notices grow, the whole check (the beat's) against the one after a transition that
added a kind while transfers may still add to it.

    .venv/bin/python bench/batch_flush.py [--transfers 1000,9000,30000] [--recipients 3] [--quick]
    DATABASE_URL=postgres://postgres@127.0.0.1:5432/x .venv/bin/python bench/batch_flush.py

A throwaway database (bench/_support.py). Each size: a batch of N transfers, one of them
still in flight, N - 1 held "new" notices per recipient and one held failure; both checks
run --repeat times (none is due: nothing is sent), the median and p95 printed with the
statements each makes.
"""

from __future__ import annotations

import argparse
import time

from _support import Database, load, machine, ms, percentile, table


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--transfers", default="1000,9000,30000")
    parser.add_argument("--recipients", type=int, default=3)
    parser.add_argument("--repeat", type=int, default=50)
    parser.add_argument("--quick", action="store_true", help="1,000 and 3,000 transfers, 5 runs")
    args = parser.parse_args()
    if args.quick:
        args.transfers, args.repeat = "1000,3000", 5
    return args


def held_batch(n: int, recipients: int) -> int:
    from django.contrib.auth.models import User
    from django.db import connection

    from transfers.models import AwsAccount, Notice, Transfer, TransferBatch

    Notice.objects.all().delete()
    Transfer.objects.all().delete()
    TransferBatch.objects.all().delete()
    source, _ = AwsAccount.objects.get_or_create(
        account_id="111111111111", defaults={"name": "Fleet", "managed": True}
    )
    user, _ = User.objects.get_or_create(username="bench-requester")
    batch = TransferBatch.objects.create(
        source=source, target_account_id="222222222222", requester=user, reason="bench"
    )
    Status = Transfer.Status
    transfers = Transfer.objects.bulk_create(
        [
            Transfer(
                batch=batch,
                source=source,
                region="us-east-1",
                certificate_id=f"{i:064x}",
                certificate_arn=f"arn:aws:iot:us-east-1:111111111111:cert/{i:064x}",
                target_account_id="222222222222",
                requester=user,
                reason="bench",
                status=Status.APPROVED if i == 0 else Status.PENDING_ACCEPTANCE,
            )
            for i in range(n)
        ],
        batch_size=2000,
    )
    rows = [
        Notice(
            transfer=t,
            batch=batch,
            channel=Notice.Channel.EMAIL,
            recipient=f"r{r}@acme.example",
            kind=Notice.Kind.NEW,
            status=Notice.Status.HELD,
        )
        for t in transfers[1:]
        for r in range(recipients)
    ]
    rows.append(
        Notice(
            transfer=transfers[1],
            batch=batch,
            channel=Notice.Channel.EMAIL,
            recipient="requester@fleet.example",
            kind=Notice.Kind.FAILED,
            status=Notice.Status.HELD,
        )
    )
    Notice.objects.bulk_create(rows, batch_size=5000)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")
    return batch.pk


def measure(batch_pk: int, repeat: int, **kwargs) -> tuple[list[float], int]:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from transfers import notices

    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        made = notices.flush_batch(batch_pk, **kwargs)
        times.append(time.perf_counter() - started)
        assert not made, "a held notice was due: the measurement would send it"
    with CaptureQueriesContext(connection) as queries:
        notices.flush_batch(batch_pk, **kwargs)
    return times, len(queries)


def main() -> None:
    args = parse_args()
    db = Database("flush")
    rows = []
    try:
        db.setup_django()
        print(f"{machine()}; database: {db.describe()} ({db.server_version()})")
        print(f"load average before: {load()}", flush=True)
        from transfers.models import Notice

        for n in (int(x) for x in args.transfers.split(",")):
            batch = held_batch(n, args.recipients)
            held = Notice.objects.filter(batch_id=batch, status=Notice.Status.HELD).count()
            for label, kwargs in (
                ("whole (beat)", {}),
                ("after a transition", {"added": Notice.Kind.NEW}),
            ):
                times, statements = measure(batch, args.repeat, **kwargs)
                p50, p95 = percentile(times, 50), percentile(times, 95)
                rows.append([f"{n:,} transfers", f"{held:,}", label, ms(p50), ms(p95), statements])
    finally:
        db.cleanup()
    print(table(["batch", "held", "check", "p50 ms", "p95 ms", "statements"], rows))
    print(f"load average after: {load()}")


if __name__ == "__main__":
    main()
