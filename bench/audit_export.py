"""Memory of the streaming audit CSV export at 10k, 100k and 1M events, side by side.

    .venv/bin/python bench/audit_export.py                  # up to 1,000,000 events
    .venv/bin/python bench/audit_export.py --events 200000  # up to 200,000
    .venv/bin/python bench/audit_export.py --compare        # also buffer the whole CSV

The events go into a separate SQLite file (var/bench-audit.sqlite3, recreated each run)
unless DATABASE_URL is set, which is then used as it is (an empty database, please). The
log grows to each size in turn; at each one a fresh child process exports the whole log
through the view (as a superuser) and reads the streamed response to the end, measuring:

  rss MiB     resident memory before the export and its high-water mark during it
              (VmRSS, then VmHWM reset just before; the difference is what it added)
  tracemalloc the peak of Python allocations during the export (a second, slower run)

Flat memory means the last columns do not grow with the number of rows. With --compare,
the same child also joins the streamed pieces into one string, as a non-streaming
HttpResponse would hold it: that one grows with the log.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BATCH = 20_000
SIZES = (10_000, 100_000, 1_000_000)


def _setup(database_url: str) -> None:
    sys.path.insert(0, str(REPO))
    os.environ["DATABASE_URL"] = database_url
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    import django

    django.setup()


def _status(field: str) -> float:
    """VmRSS / VmHWM of this process in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(field)


# ----------------------------------------------------------------------------- filling


def fill(sizes: list[int], database_url: str, compare: bool) -> None:
    _setup(database_url)
    from django.contrib.auth.models import User
    from django.core.management import call_command
    from django.db import transaction
    from django.utils import timezone

    from transfers.models import AwsAccount, Transfer, TransferEvent

    call_command("migrate", verbosity=0)
    user = User.objects.create_superuser("bench", "bench@example.com", "bench")
    source = AwsAccount.objects.create(account_id="111111111111", name="Bench source")
    transfers = Transfer.objects.bulk_create(
        Transfer(
            source=source,
            region="us-east-1",
            certificate_id=f"{n:064x}",
            certificate_arn=f"arn:aws:iot:us-east-1:111111111111:cert/{n:064x}",
            target_account_id="222222222222",
            requester=user,
            reason="bench",
            status="accepted",
        )
        for n in range(1000)
    )
    now = timezone.now()
    made = 0
    rows = []
    started = time.perf_counter()
    for size in sizes:
        while made < size:
            count = min(BATCH, size - made)
            with transaction.atomic():
                TransferEvent.objects.bulk_create(
                    TransferEvent(
                        transfer=transfers[(made + i) % len(transfers)],
                        kind="aws" if i % 3 else "transition",
                        action="TransferCertificate" if i % 3 else "approve",
                        actor_name="worker" if i % 3 else "approver",
                        from_status="" if i % 3 else "requested",
                        to_status="" if i % 3 else "approved",
                        details={"params": {"certificateId": f"{made + i:064x}"}},
                        created=now,
                    )
                    for i in range(count)
                )
            made += count
        print(f"  {made:>9,} events in the log ({time.perf_counter() - started:.0f} s)", flush=True)
        plain = _child(database_url, "stream", user.pk)
        traced = _child(database_url, "trace", user.pk)
        row = {"rows": size, **plain, "tracemalloc_peak_mib": traced["tracemalloc_peak_mib"]}
        if compare:
            row["buffered_hwm_mib"] = _child(database_url, "buffer", user.pk)["hwm_mib"]
        rows.append(row)
    _print(rows, compare)


def _child(database_url: str, mode: str, user_pk: int) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--child", mode, "--user", str(user_pk), "--db", database_url],
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def _print(rows: list[dict], compare: bool) -> None:
    head = (
        f"{'rows':>10} {'CSV MiB':>8} {'seconds':>8} {'rss before':>10} {'rss peak':>9} "
        f"{'added':>7} {'tracemalloc peak':>17}"
    )
    if compare:
        head += f" {'buffered peak':>14}"
    print(head)
    for r in rows:
        line = (
            f"{r['rows']:>10,} {r['csv_mib']:>8.1f} {r['seconds']:>8.1f} "
            f"{r['rss_before_mib']:>8.1f} M {r['hwm_mib']:>7.1f} M "
            f"{r['hwm_mib'] - r['rss_before_mib']:>5.1f} M {r['tracemalloc_peak_mib']:>15.2f} M"
        )
        if compare:
            line += f" {r['buffered_hwm_mib']:>12.1f} M"
        print(line, flush=True)


# ----------------------------------------------------------------------------- child


def export(mode: str, user_pk: int, database_url: str) -> dict:
    _setup(database_url)
    from django.contrib.auth.models import User
    from django.test import RequestFactory

    from transfers.views.audit import audit_export

    user = User.objects.get(pk=user_pk)
    # Warm up (imports, the first query) on an export of nothing: the baseline is then
    # the steady process, and what the real export adds is the export's own.
    warm = RequestFactory().get("/audit/export.csv", {"action": "nothing-is-called-this"})
    warm.user = user
    b"".join(audit_export(warm).streaming_content)
    request = RequestFactory().get("/audit/export.csv")
    request.user = user
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to VmRSS (Linux)
    rss_before = _status("VmRSS")
    if mode == "trace":
        tracemalloc.start()
    started = time.perf_counter()
    response = audit_export(request)
    size = lines = 0
    if mode == "buffer":
        whole = b"".join(response.streaming_content)
        size, lines = len(whole), whole.count(b"\n")
    else:
        for piece in response.streaming_content:
            size += len(piece)
            lines += piece.count(b"\n")
    response.close()
    seconds = time.perf_counter() - started
    result = {
        "csv_mib": size / 2**20,
        "lines": lines,
        "seconds": seconds,
        "rss_before_mib": rss_before,
        "hwm_mib": _status("VmHWM"),
    }
    if mode == "trace":
        result["tracemalloc_peak_mib"] = tracemalloc.get_traced_memory()[1] / 2**20
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000, help="largest log size")
    parser.add_argument("--compare", action="store_true", help="also buffer the whole CSV")
    parser.add_argument("--child", choices=["stream", "trace", "buffer"], help=argparse.SUPPRESS)
    parser.add_argument("--user", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--db", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(export(args.child, args.user, args.db)))
        return
    database_url = os.environ.get("DATABASE_URL", "")
    if not database_url:
        path = REPO / "var" / "bench-audit.sqlite3"
        path.parent.mkdir(exist_ok=True)
        for leftover in path.parent.glob(path.name + "*"):
            leftover.unlink()
        database_url = f"sqlite:///{path}"
    sizes = sorted({s for s in SIZES if s < args.events} | {args.events})
    print(f"Audit CSV export, streamed, on {database_url.split(':', 1)[0]}", flush=True)
    fill(sizes, database_url, args.compare)


if __name__ == "__main__":
    main()
