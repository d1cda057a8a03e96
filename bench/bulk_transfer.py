"""Bulk transfer: one batch of N certificates against a stand-in that throttles above R
calls per second per account and API; achieved rate / R, each API's calls per certificate
and what the slowest allows, throttling answers, transfers lost and duplicated, all from
one run.

    .venv/bin/python bench/bulk_transfer.py                 # 1,000 certificates, R = 10/s
    .venv/bin/python bench/bulk_transfer.py --quick         # 200 certificates
    .venv/bin/python bench/bulk_transfer.py --certificates 1000 --rate 10 --workers 2

What runs, as in production:
* the stand-in server in a subprocess (real HTTP) with ``set_faults(rps_per_operation=R)``:
  above R calls per second of one API of one account it answers ThrottlingException, as AWS
  applies its per-API quotas;
* N ACTIVE certificates in the source account, each with a policy and a thing (so
  preparation deactivates and detaches: 8 AWS calls per certificate, each API once, the
  thing's detachment confirmed from the thing's side), made through boto3;
* the portal on a throwaway database (SQLite in a temporary directory; PostgreSQL when
  DATABASE_URL is set, in a dedicated database dropped afterwards), with the broker from
  REDIS_URL when set (a Redis database of its own, please), else the default file broker
  (portal/broker.py, as ``make run``) in the temporary directory;
* the source account configured with ``api_rate = R``, its inventory synced, one batch of N
  requested through ``transfers.batches`` and approved by another user;
* ``--workers`` Celery worker processes (``celery -A portal worker --pool threads
  --concurrency 4``); the batch's feeder hands them work at the account's rate.

It waits until no transfer of the batch is approved or preparing (or ``--timeout``), then
prints: the achieved TransferCertificate rate (successful calls / seconds between the first
and the last, from the audit trail), that rate / R, each API's calls per certificate with its
allowance (the portal's ceiling for the account: R here) and the certificates a second that
allows, the achieved rate against the slowest, p50 and p95 of the time from approval
to pending acceptance (and from a worker's start to pending), the throttling answers the
stand-in gave (its ``throttled`` counter for TransferCertificate), the transfers lost (not
pending acceptance at the end) and duplicated (certificates with more than one successful
TransferCertificate, from the stand-in's per-certificate counter).

The inventory sync before the batch is set-up, not measured: it runs with the account's rate
raised before the stand-in's ceilings are set; the rate is set back to R and the limiter's
buckets are emptied before the batch is requested.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import os
import re
import signal
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _support import (  # noqa: E402 - after the path
    Database,
    Workers,
    load,
    machine,
    percentile,
    setup_django,
    standin_process,
    table,
    terminate,
)

SOURCE, TARGET, REGION = "210000000001", "210000000002", "us-east-1"
POLICY = "BulkDevicePublish"
SYNC_RATE = 1000.0  # the account's rate during the (unmeasured) inventory sync
GOAL = 0.95  # issue 25: certificates with a thing at >= 0.95 R


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--certificates", type=int, default=1000)
    parser.add_argument(
        "--rate", type=float, default=10.0, help="R: per account and API (portal and stand-in)"
    )
    parser.add_argument("--workers", type=int, default=2, help="Celery worker processes")
    parser.add_argument("--concurrency", type=int, default=4, help="threads per worker")
    parser.add_argument(
        "--timeout", type=float, default=None, help="seconds to wait (default 3 N/R + 120)"
    )
    parser.add_argument("--quick", action="store_true", help="200 certificates")
    parser.add_argument(
        "--no-beat",
        dest="beat",
        action="store_false",
        help="do not run celery beat (production runs it: the reconciler ticks every minute)",
    )
    args = parser.parse_args()
    if args.quick:
        args.certificates = 200
    if args.certificates < 1 or args.rate <= 0 or args.workers < 1 or args.concurrency < 1:
        parser.error("--certificates, --rate, --workers and --concurrency must be positive")
    if args.timeout is None:
        args.timeout = 3 * args.certificates / args.rate + 120
    return args


# --------------------------------------------------------------------------- set-up


def seed(url: str, count: int) -> list[str]:
    """N ACTIVE certificates in the source account, each with the policy and its own thing:
    what an administrator's tooling would have made (plain boto3, several threads)."""
    from demo import certificate_pem
    from standin.control import client_for_account

    stamp = f"{time.time():.0f}"
    now = datetime.now(UTC)
    local = threading.local()

    def iot():
        if not hasattr(local, "client"):
            local.client = client_for_account(SOURCE, REGION, url)
        return local.client

    iot().create_policy(policyName=POLICY, policyDocument='{"Version":"2012-10-17","Statement":[]}')

    def one(i: int) -> str:
        client = iot()
        pem = certificate_pem(
            f"bulk-{stamp}-{i}", now - timedelta(days=1), now + timedelta(days=365)
        )
        made = client.register_certificate_without_ca(certificatePem=pem, status="ACTIVE")
        client.attach_policy(policyName=POLICY, target=made["certificateArn"])
        thing = f"bulk-device-{i:05d}"
        client.create_thing(thingName=thing)
        client.attach_thing_principal(thingName=thing, principal=made["certificateArn"])
        return made["certificateId"]

    pool = concurrent.futures.ThreadPoolExecutor(8)
    try:
        return list(pool.map(one, range(count)))
    finally:
        pool.shutdown(cancel_futures=True)  # Ctrl-C: drop what has not started


def make_batch(rate: float, ids: list[str]):
    from django.contrib.auth.models import User

    from transfers import batches, inventory
    from transfers.models import AccountGrant, AwsAccount, RateBucket, Role, SyncRun
    from transfers.workflow import Options

    source = AwsAccount.objects.create(
        account_id=SOURCE,
        name="Bench fleet",
        regions=[REGION],
        role_arn=f"arn:aws:iam::{SOURCE}:role/TransferPortal",
        contact_emails="iot@fleet.example",
        api_rate=rate,
    )
    AwsAccount.objects.create(
        account_id=TARGET,
        name="Bench buyer",
        regions=[REGION],
        role_arn=f"arn:aws:iam::{TARGET}:role/TransferPortal",
        contact_emails="iot@buyer.example",
        api_rate=rate,
    )
    requester = User.objects.create_user("bench-requester", "req@fleet.example")
    approver = User.objects.create_user("bench-approver", "app@fleet.example")
    AccountGrant.objects.create(account=source, user=requester, role=Role.REQUESTER)
    AccountGrant.objects.create(account=source, user=approver, role=Role.APPROVER)

    # The sync is set-up: run it fast, then give the account its rate R back.
    AwsAccount.objects.filter(pk=source.pk).update(api_rate=SYNC_RATE)
    source.refresh_from_db()
    started = time.perf_counter()
    run = inventory.sync_region(SyncRun.objects.create(account=source, region=REGION).pk)
    if run.status != SyncRun.Status.DONE:
        raise SystemExit(f"the inventory sync failed: {run.error}")
    AwsAccount.objects.filter(pk=source.pk).update(api_rate=rate)
    RateBucket.objects.all().delete()
    print(f"Inventory synced in {time.perf_counter() - started:.1f} s (set-up)", flush=True)

    certs, missing = batches.select(requester, ids)
    batch = batches.request_batch(
        requester,
        certs,
        missing,
        target_account_id=TARGET,
        message="Fleet sold to Bench buyer",
        reason="bench/bulk_transfer.py",
        options=Options(),
    )
    return batch, approver


# --------------------------------------------------------------------------- measure


def wait(batch, workers: Workers, timeout: float, approved_at: float) -> bool:
    from django.db.models import Count

    from transfers.models import Transfer

    deadline = time.monotonic() + timeout
    last_print = 0.0
    while True:
        counts = dict(
            batch.transfers.values_list("status").annotate(n=Count("pk")).values_list("status", "n")
        )
        # Requested too: the approval itself runs in the background, a chunk at a time.
        waiting = (
            counts.get("requested", 0) + counts.get("approved", 0) + counts.get("preparing", 0)
        )
        now = time.monotonic()
        if now - last_print >= 10 or not waiting:
            elapsed = now - approved_at
            pending = counts.get(Transfer.Status.PENDING_ACCEPTANCE, 0)
            print(
                f"  {elapsed:6.0f} s  pending {pending:5d}  waiting {waiting:5d}  "
                f"failed {counts.get('failed', 0):4d}  ({pending / max(elapsed, 1e-9):.2f}/s)",
                flush=True,
            )
            last_print = now
        if not waiting:
            return True
        if not workers.alive():
            print("A worker died:\n" + workers.tails(), file=sys.stderr)
            return False
        if now > deadline:
            print(f"Timed out after {timeout:.0f} s", file=sys.stderr)
            return False
        time.sleep(1)


def measure(batch, control, rate: float, workers: int, concurrency: int) -> dict:
    from transfers.models import RateBucket, Transfer, TransferEvent

    transfers = list(batch.transfers.all())
    ids = {t.certificate_id for t in transfers}
    ok_times = sorted(
        TransferEvent.objects.filter(
            transfer__batch=batch, action="TransferCertificate", ok=True
        ).values_list("created", flat=True)
    )
    span = (ok_times[-1] - ok_times[0]).total_seconds() if len(ok_times) > 1 else 0.0
    achieved = len(ok_times) / span if span else float("nan")
    starts = dict(
        TransferEvent.objects.filter(transfer__batch=batch, action="start").values_list(
            "transfer_id", "created"
        )
    )
    to_pending = [
        (t.pending_since - t.decided_at).total_seconds()
        for t in transfers
        if t.pending_since and t.decided_at
    ]
    service = [
        (t.pending_since - starts[t.pk]).total_seconds()
        for t in transfers
        if t.pending_since and t.pk in starts
    ]
    threads = workers * concurrency
    busy = sum(service) / (threads * span) if span else float("nan")
    snapshot = control.calls()
    per_cert = snapshot["certificates"].get("TransferCertificate", {})
    ok_per_cert = {cid: per_cert.get(cid, {}).get("ok", 0) for cid in ids}
    portal_throttled = TransferEvent.objects.filter(
        transfer__batch=batch, ok=False, details__error_code="ThrottlingException"
    ).count()
    bucket = RateBucket.objects.filter(key__endswith=":TransferCertificate").first()
    aws_calls = sum(e["calls"] for e in snapshot["operations"].values()) + sum(
        snapshot["throttled"].values()
    )
    return {
        "n": len(transfers),
        "ok_calls": snapshot["operations"].get("TransferCertificate", {}).get("ok", 0),
        "ok_events": len(ok_times),
        "span": span,
        "achieved": achieved,
        "ratio": achieved / rate,
        "steady": (len(ok_times) - 1 - rate) / span if span else float("nan"),
        "p50": percentile(to_pending, 50),
        "p95": percentile(to_pending, 95),
        "service_p50": percentile(service, 50),
        "service_p95": percentile(service, 95),
        "busy": busy,
        "throttled": snapshot["throttled"].get("TransferCertificate", 0),
        "throttled_other": sum(
            n for op, n in snapshot["throttled"].items() if op != "TransferCertificate"
        ),
        "portal_throttled": portal_throttled,
        "aimd_decreases": bucket.throttled if bucket else 0,
        "lost": sum(t.status != Transfer.Status.PENDING_ACCEPTANCE for t in transfers),
        "lost_detail": sorted({t.status for t in transfers} - {"pending_acceptance"}),
        "duplicated": sum(n > 1 for n in ok_per_cert.values()),
        "never": sum(n == 0 for n in ok_per_cert.values()),
        "aws_calls": aws_calls,
        "apis": per_api(snapshot, batch.source, len(transfers)),
    }


# The APIs preparing and transferring a certificate calls: the slowest of them (its allowance
# over its calls per certificate) bounds the batch. Others in the counts run in the
# background on budgets of their own (the reconciler's listing, the feeder's sync).
PATH = {
    "DescribeCertificate",
    "UpdateCertificate",
    "ListAttachedPolicies",
    "DetachPolicy",
    "ListPrincipalThings",
    "DetachThingPrincipal",
    "ListThingPrincipals",
    "TransferCertificate",
}


def per_api(snapshot: dict, source, n: int) -> list[tuple[str, float, float, float, bool]]:
    """(API, calls per certificate, the API's allowance, certificates a second it allows, on
    the path) for every API the stand-in saw, slowest first. The allowance is the portal's
    ceiling for the account and API (transfers.ratelimit), what the portal keeps to."""
    from transfers import ratelimit

    allowances = ratelimit.allowances(source, REGION)
    rows = []
    for op, entry in snapshot["operations"].items():
        calls = (entry["calls"] + snapshot["throttled"].get(op, 0)) / max(n, 1)
        allowance = allowances.of(op)
        allows = allowance / calls if calls else float("inf")
        rows.append((op, calls, allowance, allows, op in PATH))
    return sorted(rows, key=lambda row: (not row[4], row[3]))


RECEIVED = re.compile(
    r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),\d+ .*Task (transfers\.tasks\.\w+)\[[^\]]+\] received"
)


def tasks_received(logs: list[Path], since: datetime) -> dict:
    """Tasks the workers received, per minute since the approval and per task name (from
    the workers' own log lines, "Task <name>[<id>] received")."""
    per_minute: dict[int, dict[str, int]] = {}
    for log in logs:
        for line in log.read_text(errors="replace").splitlines():
            found = RECEIVED.match(line)
            if not found:
                continue
            when = datetime.strptime(found.group(1), "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC)
            minute = int((when - since).total_seconds() // 60)
            if minute < 0:
                continue
            name = found.group(2).rsplit(".", 1)[-1]
            per_minute.setdefault(minute, {})
            per_minute[minute][name] = per_minute[minute].get(name, 0) + 1
    return per_minute


def task_table(per_minute: dict, last_minute: int) -> tuple[str, float | None]:
    """The per-minute table, and the last full minute's tasks / the second minute's."""
    names = sorted({n for counts in per_minute.values() for n in counts})
    rows = []
    for minute in range(0, last_minute + 1):
        counts = per_minute.get(minute, {})
        rows.append(
            (f"{minute + 1}", str(sum(counts.values())), *(str(counts.get(n, 0)) for n in names))
        )
    second = sum(per_minute.get(1, {}).values())
    last = sum(per_minute.get(last_minute - 1, {}).values()) if last_minute >= 2 else None
    ratio = (last / second) if second and last is not None else None
    return table(["minute", "all tasks", *names], rows), ratio


def report(args, m: dict, db: Database, broker: str, load_before: str, total: float) -> None:
    r = args.rate
    slowest = next((row for row in m["apis"] if row[4]), None)
    print()
    print(
        f"Bulk transfer: {m['n']:,} certificates, R = {r:g} TransferCertificate/s per account, "
        f"{args.workers} worker(s) x {args.concurrency} threads"
    )
    print(f"Machine: {machine()}; load {load_before} before, {load()} after")
    print(f"Database: {db.describe()}; broker: {broker}; wall time {total:.0f} s")
    print()
    rows = [
        ("successful TransferCertificate calls", f"{m['ok_calls']:,}", ""),
        (
            "first to last successful call",
            f"{m['span']:.1f} s",
            "",
        ),
        ("achieved rate (calls / span)", f"{m['achieved']:.2f}/s", ""),
        ("achieved / R", f"{m['ratio']:.3f}", f"goal >= {GOAL}"),
        (
            "achieved / what the slowest API allows",
            f"{m['achieved'] / slowest[3]:.3f}" if slowest else "-",
            f"{slowest[0]}: {slowest[1]:.2f} calls per certificate at {slowest[2]:g}/s, "
            f"so {slowest[3]:.2f} certificates a second"
            if slowest
            else "",
        ),
        (
            "  excluding the first second's burst",
            f"{m['steady'] / r:.3f}",
            "(calls - 1 - R) / span / R",
        ),
        ("approval to pending, p50", f"{m['p50']:.1f} s", ""),
        ("approval to pending, p95", f"{m['p95']:.1f} s", ""),
        ("worker start to pending, p50", f"{m['service_p50']:.2f} s", "one transfer's work"),
        ("worker start to pending, p95", f"{m['service_p95']:.2f} s", ""),
        (
            "worker threads busy",
            f"{100 * m['busy']:.0f}%",
            "sum of start-to-pending / (threads x span)",
        ),
        (
            "throttling answers (stand-in)",
            f"{m['throttled']:,}",
            f"TransferCertificate; {m['throttled_other']} on other APIs",
        ),
        (
            "  seen by the portal",
            f"{m['portal_throttled']:,}",
            f"after botocore retries; {m['aimd_decreases']} rate decreases",
        ),
        (
            "transfers lost",
            f"{m['lost']:,}",
            "goal 0" + (f"; states {', '.join(m['lost_detail'])}" if m["lost"] else ""),
        ),
        ("transfers duplicated", f"{m['duplicated']:,}", "goal 0"),
        (
            "AWS calls in all",
            f"{m['aws_calls']:,}",
            f"{m['aws_calls'] / max(m['n'], 1):.1f} per certificate",
        ),
    ]
    executions = m.get("executions")
    if executions is not None:
        rows += [
            (
                "execute_transfer tasks per transfer",
                f"{executions['received'] / max(m['n'], 1):.3f}",
                f"{executions['received']:,} received; goal <= 1.02",
            ),
            (
                "  executions that did work, per transfer",
                f"{executions['worked'] / max(m['n'], 1):.3f}",
                "attempts on the rows (a duplicate message finds the work leased or done)",
            ),
            (
                "processes that died",
                str(m.get("died", 0)),
                "workers and beat, during the run",
            ),
        ]
    print(table(["measure", "value", "note"], rows))
    print()
    print("Calls per certificate per API (throttled answers included), and what each allows:")
    print(
        table(
            ["API", "per certificate", "allowance", "certificates/s", ""],
            [
                (op, f"{c:.2f}", f"{a:g}/s", f"{allows:.2f}", "" if on else "background")
                for op, c, a, allows, on in m["apis"]
            ],
        )
    )
    if m.get("tasks_table"):
        print()
        print(f"Tasks the workers received per minute since the approval (beat {m['beat']}):")
        print(m["tasks_table"])
        if m.get("flatness") is not None:
            print(
                f"last full minute / second minute: {m['flatness']:.2f} "
                "(goal <= 1.2: the queue does not grow while the batch runs)"
            )
    verdict = m["ratio"] >= GOAL and m["lost"] == 0 and m["duplicated"] == 0 and m["never"] == 0
    print()
    print(f"Goal (>= {GOAL:g} R, none lost, none duplicated): " + ("met" if verdict else "NOT met"))
    if executions is not None and m.get("flatness") is not None:
        long_goal = (
            m["ratio"] >= 0.95
            and m["flatness"] <= 1.2
            and executions["received"] / max(m["n"], 1) <= 1.02
            and m["lost"] == 0
            and m["duplicated"] == 0
            and not m.get("died")
        )
        print(
            "Long-batch goal (>= 0.95 R, tasks per minute flat within 1.2x, <= 1.02 executions "
            "per transfer, none lost or duplicated, no process died): "
            + ("met" if long_goal else "NOT met")
        )


# --------------------------------------------------------------------------- main


def main() -> int:
    args = parse_args()
    signal.signal(signal.SIGTERM, terminate)
    signal.signal(signal.SIGINT, terminate)  # even when started with SIGINT ignored
    redis_url = os.environ.get("REDIS_URL", "")
    db = Database("bulk")
    workers: Workers | None = None
    load_before = load()
    begun = time.perf_counter()
    try:
        with standin_process() as url:
            from standin.control import RemoteControl

            control = RemoteControl(url, timeout=60)
            setup_django(db, url)
            started = time.perf_counter()
            ids = seed(url, args.certificates)
            print(
                f"Stand-in at {url}: {len(ids):,} certificates with a policy and a thing "
                f"seeded in {time.perf_counter() - started:.0f} s",
                flush=True,
            )
            broker = "Redis " + redis_url if redis_url else "file broker (temporary)"
            if redis_url:
                import redis

                if redis.Redis.from_url(redis_url).dbsize():
                    print(
                        "warning: the Redis database at REDIS_URL is not empty; old tasks "
                        "in it would skew the run",
                        file=sys.stderr,
                    )
            batch, approver = make_batch(args.rate, ids)
            print(f"Batch #{batch.pk}: {batch.transfers.count():,} transfers requested", flush=True)

            env = {**os.environ, "PYTHONUNBUFFERED": "1"}
            workers = Workers(env, db.tmp)
            workers.start(args.workers, args.concurrency)
            workers.wait_ready()
            if args.beat:
                workers.start_beat()
            control.reset_counters()
            control.set_faults(rps_per_operation=args.rate)

            from transfers import batches

            approved_at = time.monotonic()
            approved_wall = datetime.now(UTC)
            approved = batches.approve(approver, batch, "bench")
            print(f"Approved {approved:,} at once; workers running", flush=True)
            finished = wait(batch, workers, args.timeout, approved_at)
            m = measure(batch, control, args.rate, args.workers, args.concurrency)
            m["died"] = sum(proc.poll() is not None for proc, _ in workers.procs)
            per_minute = tasks_received(workers.worker_logs(), approved_wall)
            last_minute = int((datetime.now(UTC) - approved_wall).total_seconds() // 60)
            m["tasks_table"], m["flatness"] = task_table(per_minute, last_minute)
            m["beat"] = "on" if args.beat else "off"
            from django.db.models import Sum

            m["executions"] = {
                "received": sum(c.get("execute_transfer", 0) for c in per_minute.values()),
                "worked": batch.transfers.aggregate(n=Sum("attempts"))["n"] or 0,
            }
            workers.stop()
            report(args, m, db, broker, load_before, time.perf_counter() - begun)
            if not finished:
                print("The batch did not finish.", file=sys.stderr)
                return 1
            return 0
    except KeyboardInterrupt:
        print("\nInterrupted; cleaning up.", file=sys.stderr)
        return 130
    finally:
        if workers is not None:
            workers.stop()
        db.cleanup()


if __name__ == "__main__":
    sys.exit(main())
