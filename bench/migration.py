"""Migration with a pre-accepted landing (issue 14): N certificates, each with policies and a
thing, moved between two managed accounts with each API at AWS's default allowance on both
sides (or every API at R with ``--rate``); device downtime per certificate, certificates
landed per second against what the slowest API allows, lost and duplicated, and the same
batch moved the old way for comparison.

    .venv/bin/python bench/migration.py                 # 1,000 certificates, AWS's allowances
    .venv/bin/python bench/migration.py --quick         # 100 certificates
    .venv/bin/python bench/migration.py --certificates 1000 --rate 10 --policies 2

What runs, as in production:
* the stand-in server in a subprocess (real HTTP) with ``set_faults(rps_per_operation="aws")``:
  every IoT API of every account has its own ceiling, AWS's default allowance (10 calls a
  second for most, 15 for AttachPolicy, DetachPolicy and ListAttachedPolicies, 100 for
  Attach/DetachThingPrincipal; with ``--rate R``, R for every API), as AWS's per-API quotas
  (above it: ThrottlingException). The subprocess also counts the calls that reached
  each API per calling account (this script's ``--serve-standin`` mode wraps the stand-in's
  fault decision), so calls per certificate are read per account and API;
* two pairs of accounts, each source with N ACTIVE certificates, each certificate with
  ``--policies`` policies and its own thing; the targets already hold the policies (the
  migration prepared them once) but not the things;
* the portal on a throwaway database (SQLite in a temporary directory; PostgreSQL when
  DATABASE_URL is set), the broker from REDIS_URL when set, else the default file broker in
  the temporary directory; ``--workers`` Celery worker processes and celery beat;
* all four accounts managed with no rate of their own (each API at its AWS allowance, the
  adjustable ones read from the stand-in's Service Quotas), or ``api_rate = R``.

Pre-accepted (the portal's way): one batch with a landing plan (activate, the same policies,
things created in the target), the target's approver approves each landing in advance, the
source's approver approves the batch; the workers deactivate, detach, transfer, accept and
attach back to back.

The old way: the same kind of batch without a landing; when all of it is pending acceptance,
a script as a person would write it (boto3, botocore's adaptive retry mode) accepts each
certificate with --set-as-active, attaches its policies, creates its thing and attaches it.

Downtime of a certificate = from its deactivation in the source (Transfer.unusable_since) to
ACTIVE with its policies and thing in the target (Transfer.usable_at; for the old way, when the
script finished that certificate). Throughput = certificates landed / (last usable - first
deactivation). Each API allows its allowance / (its calls per certificate) certificates a
second, the calls counted per account and API by the stand-in over the whole run (the
reconciler's and the target's inventory sync's calls included); the slowest bounds the move.
Lost = not accepted and landed at the end; duplicated = more than one successful
TransferCertificate or AcceptCertificateTransfer for a certificate (the stand-in's
per-certificate counters).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import os
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
    ec_certificate_pem,
    load,
    machine,
    percentile,
    setup_django,
    standin_process,
    table,
    terminate,
)

REGION = "us-east-1"
PAIRS = {
    "pre-accepted": ("220000000001", "220000000002"),
    "old way": ("220000000003", "220000000004"),
}
SYNC_RATE = 1000.0  # the accounts' rate during the (unmeasured) set-up
GOAL_P95, GOAL_RATIO = 5.0, 0.95
POLICY_DOCUMENT = (
    '{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"iot:Connect",'
    '"Resource":"*"}]}'
)
GOAL_DEVICE_P95 = 10.0


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--certificates", type=int, default=1000)
    parser.add_argument(
        "--rate",
        type=float,
        default=None,
        help="R for every API of every account (default: each API at its AWS allowance)",
    )
    parser.add_argument("--policies", type=int, default=2, help="policies per certificate")
    parser.add_argument("--workers", type=int, default=2, help="Celery worker processes")
    parser.add_argument(
        "--concurrency", type=int, default=8, help="threads per worker (docs/deploy.md: 8)"
    )
    parser.add_argument("--quick", action="store_true", help="100 certificates")
    parser.add_argument(
        "--skip-old-way", action="store_true", help="only the pre-accepted migration"
    )
    parser.add_argument(
        "--timeout", type=float, default=None, help="seconds per phase (default 4 N P/R + 180)"
    )
    parser.add_argument(
        "--devices",
        action="store_true",
        help="simulated devices: told the target's endpoint by a job first, verified back "
        "(the old way is skipped)",
    )
    parser.add_argument("--waves", action="store_true", help="move in waves (with --devices)")
    parser.add_argument(
        "--never-reconnect",
        type=float,
        default=0.0,
        help="fraction of devices that never come back (with --devices)",
    )
    parser.add_argument(
        "--drop-after", type=float, default=60.0, help="seconds from deactivation to drop"
    )
    parser.add_argument("--backoff-base", type=float, default=1.0, help="reconnection backoff")
    parser.add_argument(
        "--no-connectivity",
        action="store_true",
        help="connectivity indexing off in the target: devices told, their return not looked for",
    )
    parser.add_argument(
        "--back-wait-minutes",
        type=int,
        default=2,
        help="DEVICE_BACK_WAIT_MINUTES: how long a device may take to come back",
    )
    args = parser.parse_args()
    if args.devices:
        args.skip_old_way = True
    if args.quick:
        args.certificates = 100
    if min(args.certificates, args.policies, args.workers, args.concurrency) < 1 or (
        args.rate is not None and args.rate <= 0
    ):
        parser.error("--certificates, --policies, --workers, --concurrency, --rate: positive")
    if args.timeout is None:
        args.timeout = 4 * args.certificates * args.policies / (args.rate or 10.0) + 180
    return args


# --------------------------------------------------------------------------- the stand-in


def serve_standin(argv: list[str]) -> None:
    """The stand-in server, counting the calls that reached each API per calling account
    (``calls()["per_account"]``); the stand-in's own counters are per API only."""
    from collections import defaultdict

    from standin import faults, server

    lock = threading.Lock()
    reached: dict = defaultdict(lambda: defaultdict(lambda: [0, 0]))
    decide, snapshot, reset = faults.FAULTS.decide, faults.COUNTERS.snapshot, faults.COUNTERS.reset

    def counting_decide(operation: str, account_id: str, region: str = ""):
        code = decide(operation, account_id, region)
        with lock:
            reached[account_id][operation][0 if code is None else 1] += 1
        return code

    def counting_snapshot() -> dict:
        out = snapshot()
        with lock:
            out["per_account"] = {
                account: {op: {"calls": n[0], "throttled": n[1]} for op, n in ops.items()}
                for account, ops in reached.items()
            }
        return out

    def counting_reset() -> None:
        reset()
        with lock:
            reached.clear()

    faults.FAULTS.decide = counting_decide
    faults.COUNTERS.snapshot = counting_snapshot
    faults.COUNTERS.reset = counting_reset
    server.main(argv)


# --------------------------------------------------------------------------- set-up


def policy_names(count: int) -> list[str]:
    return [f"Fleet-Policy-{i + 1}" for i in range(count)]


def seed(url: str, source: str, target: str, count: int, policies: list[str], tag: str) -> None:
    """N ACTIVE certificates in ``source``, each with the policies and its own thing; the
    policies (not the things) exist in ``target`` too. Plain boto3, several threads."""
    from standin.control import client_for_account

    now = datetime.now(UTC)
    local = threading.local()

    def iot():
        if not hasattr(local, "client"):
            local.client = client_for_account(source, REGION, url)
        return local.client

    tiot = client_for_account(target, REGION, url)
    for name in policies:
        iot().create_policy(policyName=name, policyDocument=POLICY_DOCUMENT)
        tiot.create_policy(policyName=name, policyDocument=POLICY_DOCUMENT)

    def one(i: int) -> None:
        client = iot()
        pem = ec_certificate_pem(f"{tag}-{i}", now - timedelta(days=1), now + timedelta(days=365))
        arn = client.register_certificate_without_ca(certificatePem=pem, status="ACTIVE")[
            "certificateArn"
        ]
        for name in policies:
            client.attach_policy(policyName=name, target=arn)
        thing = f"{tag}-device-{i:05d}"
        client.create_thing(thingName=thing)
        client.attach_thing_principal(thingName=thing, principal=arn)

    pool = concurrent.futures.ThreadPoolExecutor(8)
    try:
        list(pool.map(one, range(count)))
    finally:
        pool.shutdown(cancel_futures=True)


def make_batch(label: str, rate: float | None, landing: bool, args=None):
    """Accounts, people, the synced inventory and one requested batch of every certificate
    of the pair's source. With ``landing``: the target's approver approves every landing."""
    from django.contrib.auth.models import User

    from transfers import batches, inventory, waves, workflow
    from transfers.models import AccountGrant, AwsAccount, Role, SyncRun
    from transfers.workflow import LandingChoice, Options

    source_id, target_id = PAIRS[label]
    slug = label.replace(" ", "-")
    accounts = []
    for account_id, name in ((source_id, "fleet"), (target_id, "buyer")):
        accounts.append(
            AwsAccount.objects.create(
                account_id=account_id,
                name=f"Bench {name} ({label})",
                regions=[REGION],
                role_arn=f"arn:aws:iam::{account_id}:role/TransferPortal",
                contact_emails=f"iot@{name}.example",
                api_rate=SYNC_RATE,
            )
        )
    source, target = accounts
    requester = User.objects.create_user(f"{slug}-requester", "req@fleet.example")
    approver = User.objects.create_user(f"{slug}-approver", "app@fleet.example")
    carol = User.objects.create_user(f"{slug}-target-approver", "app@buyer.example")
    AccountGrant.objects.create(account=source, user=requester, role=Role.REQUESTER)
    AccountGrant.objects.create(account=source, user=approver, role=Role.APPROVER)
    AccountGrant.objects.create(account=target, user=carol, role=Role.APPROVER)

    run = inventory.sync_region(SyncRun.objects.create(account=source, region=REGION).pk)
    if run.status != SyncRun.Status.DONE:
        raise SystemExit(f"the inventory sync failed: {run.error}")
    ids = list(source.certificates.values_list("certificate_id", flat=True))
    certs, missing = batches.select(requester, ids)
    batch = batches.request_batch(
        requester,
        certs,
        missing,
        target_account_id=target_id,
        message="Fleet moves to the buyer",
        reason=f"bench/migration.py ({label})",
        options=Options(tell_devices=bool(args and args.devices)),
        landing=LandingChoice(activate=True) if landing else None,
        wave_choice=waves.WaveChoice(waves=bool(args and args.waves)),
    )
    if landing:
        for pk in batch.transfers.values_list("pk", flat=True):
            workflow.approve_landing(carol, pk, "bench: landing approved in advance")
    AwsAccount.objects.filter(pk__in=[source.pk, target.pk]).update(api_rate=rate)
    return batch, approver


# --------------------------------------------------------------------------- waiting


def wait(batch, workers, timeout: float, started: float, landing: bool) -> bool:
    """Until every transfer has ended (and, with a landing, landed or stopped trying)."""
    from django.db.models import Count

    from transfers.models import Transfer

    deadline = time.monotonic() + timeout
    last_print = 0.0
    target = Transfer.Status.ACCEPTED if landing else Transfer.Status.PENDING_ACCEPTANCE
    while True:
        rows = batch.transfers.all()
        counts = dict(rows.values_list("status").annotate(n=Count("pk")).values_list("status", "n"))
        if landing:
            open_ = (
                rows.exclude(status__in=Transfer.Status.TERMINAL).count()
                + rows.filter(
                    status=Transfer.Status.ACCEPTED, landing_state__in=Transfer.Landing.OPEN
                ).count()
                + rows.filter(device_check=Transfer.DeviceCheck.WAITING).count()
            )
            done = rows.filter(landing_state=Transfer.Landing.LANDED).count()
            batch.refresh_from_db()
            if batch.paused_at is not None:
                waiting = rows.filter(device_check=Transfer.DeviceCheck.WAITING).count()
                if not waiting:
                    print(f"  {now_s(started)}  paused: {batch.pause_reason}", flush=True)
                    return True
        else:
            open_ = sum(counts.get(s, 0) for s in Transfer.Status.IN_FLIGHT + ["requested"])
            done = counts.get(target, 0)
        now = time.monotonic()
        if now - last_print >= 10 or not open_:
            elapsed = now - started
            print(
                f"  {elapsed:6.0f} s  {'landed' if landing else 'pending'} {done:5d}  "
                f"open {open_:5d}  failed {counts.get('failed', 0):4d}",
                flush=True,
            )
            last_print = now
        if not open_:
            return True
        if not workers.alive():
            print("A worker died:\n" + workers.tails(), file=sys.stderr)
            return False
        if now > deadline:
            print(f"Timed out after {timeout:.0f} s", file=sys.stderr)
            return False
        time.sleep(1)


def now_s(started: float) -> str:
    return f"{time.monotonic() - started:6.0f} s"


# --------------------------------------------------------------------------- the old way


def old_way_script(url: str, batch, policies: list[str]) -> tuple[dict[int, datetime], float]:
    """What a person does after the batch: accept each certificate, attach its policies,
    create and attach its thing. One loop, botocore's adaptive retries against throttling.
    Returns when each transfer's certificate was usable, and the seconds the script ran."""
    from botocore.config import Config

    from standin.control import client_for_account

    _, target_id = PAIRS["old way"]
    tiot = client_for_account(
        target_id, REGION, url, config=Config(retries={"mode": "adaptive", "max_attempts": 10})
    )
    usable: dict[int, datetime] = {}
    began = time.perf_counter()
    for transfer in batch.transfers.exclude(pending_since=None).order_by("pending_since"):
        arn = transfer.transferred_arn
        tiot.accept_certificate_transfer(certificateId=transfer.certificate_id, setAsActive=True)
        for name in policies:
            tiot.attach_policy(policyName=name, target=arn)
        thing = transfer.detached_things[0] if transfer.detached_things else None
        if thing:
            tiot.create_thing(thingName=thing)
            tiot.attach_thing_principal(thingName=thing, principal=arn)
        usable[transfer.pk] = datetime.now(UTC)
    return usable, time.perf_counter() - began


# --------------------------------------------------------------------------- measure


# The APIs a move calls for each certificate, per side: the slowest of them bounds the rate.
# Other APIs in the counts are background work on their own budgets (the reconciler, the
# target's inventory sync after each acceptance).
PATH = {
    "source": {
        "CreateJob",
        "DescribeEndpoint",
        "ListJobExecutionsForJob",
        "DescribeJobExecution",
        "DescribeCertificate",
        "UpdateCertificate",
        "ListAttachedPolicies",
        "DetachPolicy",
        "ListPrincipalThingsV2",
        "DetachThingPrincipal",
        "ListThingPrincipals",
        "TransferCertificate",
    },
    # GetThingConnectivityData (the devices' return) is looked at after the landing, on the
    # target's connectivity allowance, and never waits for it: background, not the move's path.
    "target": {"AcceptCertificateTransfer", "AttachPolicy", "CreateThing", "AttachThingPrincipal"},
}


def per_certificate_calls(snapshot: dict, accounts: tuple[str, str], n: int) -> list[tuple]:
    """(side, API, calls per certificate, throttled, on the path, the API's allowance there,
    certificates a second it allows) for a pair's accounts. The allowance is the portal's
    ceiling for the account and API (transfers.ratelimit), what the portal keeps to."""
    from transfers import ratelimit
    from transfers.models import AwsAccount

    rows = []
    for side, account in zip(("source", "target"), accounts, strict=True):
        allowances = ratelimit.allowances(AwsAccount.objects.get(account_id=account), REGION)
        for op, entry in sorted(snapshot.get("per_account", {}).get(account, {}).items()):
            calls, allowance = entry["calls"] / n, allowances.of(op)
            allows = allowance / calls if calls else float("inf")
            rows.append((side, op, calls, entry["throttled"], op in PATH[side], allowance, allows))
    return rows


def measure(batch, snapshot: dict, label: str, usable: dict | None, threads: int) -> dict:
    from transfers.models import Transfer, TransferEvent

    transfers = list(batch.transfers.all())
    n = len(transfers)
    ends = {}
    for t in transfers:
        end = usable.get(t.pk) if usable is not None else t.usable_at
        if t.unusable_since and end:
            ends[t.pk] = (t.unusable_since, end)
    downtime = [(end - start).total_seconds() for start, end in ends.values()]
    first = min((s for s, _ in ends.values()), default=None)
    last = max((e for _, e in ends.values()), default=None)
    span = (last - first).total_seconds() if first and last else float("nan")
    if usable is None:
        landed = sum(
            t.status == Transfer.Status.ACCEPTED and t.landing_state == Transfer.Landing.LANDED
            for t in transfers
        )
    else:
        landed = len(usable)
    calls = per_certificate_calls(snapshot, PAIRS[label], max(n, 1))
    on_path = [row for row in calls if row[4]]
    nothing = ("", "", float("nan"), 0, True, float("nan"), float("nan"))
    slowest = min(on_path, key=lambda row: row[6]) if on_path else nothing
    allowed = slowest[6]
    per_cert = snapshot["certificates"]
    ids = {t.certificate_id for t in transfers}
    duplicated = sum(
        any(per_cert.get(op, {}).get(cid, {}).get("ok", 0) > 1 for op in DUPLICATE_OPS)
        for cid in ids
    )
    achieved = landed / span if span else float("nan")
    # Where the time goes: one transfer's work in a worker (its start to usable, or to
    # pending for the old way, whose rest is the script's), and how busy that keeps the
    # threads. Busy threads with a rate below the allowance: the workers are the bottleneck
    # (CPU, database), not the APIs' ceilings.
    starts = dict(
        TransferEvent.objects.filter(transfer__batch=batch, action="start").values_list(
            "transfer_id", "created"
        )
    )
    service = [
        ((t.usable_at if usable is None else t.pending_since) - starts[t.pk]).total_seconds()
        for t in transfers
        if t.pk in starts and (t.usable_at if usable is None else t.pending_since)
    ]
    worker_span = (
        max(
            (t.usable_at if usable is None else t.pending_since)
            for t in transfers
            if (t.usable_at if usable is None else t.pending_since)
        )
        - min(starts.values())
    ).total_seconds()
    aws_events = TransferEvent.objects.filter(
        transfer__batch=batch, kind=TransferEvent.Kind.AWS
    ).count()
    devices = device_figures(batch, transfers, snapshot)
    return {
        **devices,
        "service_p50": percentile(service, 50),
        "service_p95": percentile(service, 95),
        "busy": sum(service) / (threads * worker_span) if worker_span else float("nan"),
        "per_call": sum(service) / aws_events if aws_events else float("nan"),
        "label": label,
        "n": n,
        "landed": landed,
        "p50": percentile(downtime, 50),
        "p95": percentile(downtime, 95),
        "max": max(downtime, default=float("nan")),
        "span": span,
        "achieved": achieved,
        "allowed": allowed,
        "slowest": slowest,
        "ratio": achieved / allowed if allowed else float("nan"),
        "lost": n - landed,
        "duplicated": duplicated,
        "calls": calls,
        "throttled": sum(row[3] for row in calls),
        "states": sorted({f"{t.status}/{t.landing_state or '-'}" for t in transfers}),
    }


DUPLICATE_OPS = ("TransferCertificate", "AcceptCertificateTransfer")


def device_figures(batch, transfers, snapshot: dict) -> dict:
    """Devices back of those moved, device downtime as the devices saw it (disconnected in
    the source to connected in the target, AWS's connectivity timestamps), the waves, and
    the certificates AWS saw touched (UpdateCertificate) outside the started waves."""
    batch.refresh_from_db()
    downtime = [t.device_downtime.total_seconds() for t in transfers if t.device_downtime]
    states: dict[str, int] = {}
    for t in transfers:
        states[t.device_check or "-"] = states.get(t.device_check or "-", 0) + 1
    outside = [t.certificate_id for t in transfers if t.wave is None]
    updated = snapshot["certificates"].get("UpdateCertificate", {})
    touched = sum(1 for cid in outside if updated.get(cid, {}).get("ok", 0))
    return {
        "device_p50": percentile(downtime, 50),
        "device_p95": percentile(downtime, 95),
        "device_max": max(downtime, default=float("nan")),
        "device_states": states,
        "back": states.get("back", 0),
        "moved": sum(1 for t in transfers if t.usable_at),
        "held": sum(1 for t in transfers if t.device_hold),
        "waves": batch.wave,
        "paused": batch.pause_reason if batch.paused_at else "",
        "outside_waves": len(outside),
        "touched_outside": touched,
    }


def report(args, results: list[dict], db: Database, broker: str, load_before: str, wall: float):
    print()
    rates = (
        f"R = {args.rate:g} calls/s per account and API"
        if args.rate
        else "each API at its AWS default allowance"
    )
    print(
        f"Migration: {args.certificates:,} certificates, {args.policies} policies and a thing "
        f"each, {rates} (both sides), "
        f"{args.workers} worker(s) x {args.concurrency} threads, beat on"
    )
    print(f"Machine: {machine()}; load {load_before} before, {load()} after (shared machine)")
    print(f"Database: {db.describe()}; broker: {broker}; wall time {wall:.0f} s")
    print()
    headers = ["measure", *(r["label"] for r in results), "goal or note"]
    rows = [
        ("downtime p50", *(f"{r['p50']:.1f} s" for r in results), ""),
        ("downtime p95", *(f"{r['p95']:.1f} s" for r in results), f"<= {GOAL_P95:g} s"),
        ("downtime max", *(f"{r['max']:.1f} s" for r in results), ""),
        (
            "first deactivation to last usable",
            *(f"{r['span']:.1f} s" for r in results),
            "",
        ),
        ("certificates landed per second", *(f"{r['achieved']:.2f}" for r in results), ""),
        (
            "slowest API (calls per certificate)",
            *(
                f"{r['slowest'][0]} {r['slowest'][1]} ({r['slowest'][2]:.2f} at "
                f"{r['slowest'][5]:g}/s)"
                for r in results
            ),
            "its allowance / its calls per certificate",
        ),
        ("  so the APIs allow (per second)", *(f"{r['allowed']:.2f}" for r in results), ""),
        ("landed / allowed", *(f"{r['ratio']:.3f}" for r in results), f">= {GOAL_RATIO:g}"),
        ("throttling answers", *(f"{r['throttled']:,}" for r in results), ""),
        (
            "worker: start to done, p50",
            *(f"{r['service_p50']:.2f} s" for r in results),
            "one transfer's work",
        ),
        ("worker: start to done, p95", *(f"{r['service_p95']:.2f} s" for r in results), ""),
        (
            "  per recorded AWS call",
            *(f"{1000 * r['per_call']:.0f} ms" for r in results),
            "limiter wait included",
        ),
        ("worker threads busy", *(f"{100 * r['busy']:.0f}%" for r in results), ""),
        ("lost (not landed)", *(str(r["lost"]) for r in results), "0"),
        ("duplicated", *(str(r["duplicated"]) for r in results), "0"),
    ]
    if args.devices:
        rows += [
            (
                "devices back online",
                *(f"{r['back']:,} of {r['moved']:,} moved" for r in results),
                "GetThingConnectivityData in the target",
            ),
            (
                "device downtime p50",
                *(f"{r['device_p50']:.1f} s" for r in results),
                "as the device saw it",
            ),
            (
                "device downtime p95",
                *(f"{r['device_p95']:.1f} s" for r in results),
                f"<= {GOAL_DEVICE_P95:g} s",
            ),
            ("device downtime max", *(f"{r['device_max']:.1f} s" for r in results), ""),
            (
                "device checks",
                *(
                    ", ".join(f"{k} {v}" for k, v in sorted(r["device_states"].items()))
                    for r in results
                ),
                "",
            ),
            ("held for their devices", *(str(r["held"]) for r in results), ""),
            ("waves started", *(str(r["waves"]) for r in results), ""),
            (
                "not in a started wave / touched in AWS",
                *(f"{r['outside_waves']} / {r['touched_outside']}" for r in results),
                "touched: UpdateCertificate calls that went through; goal 0",
            ),
        ]
    print(table(headers, rows))
    for r in results:
        if r.get("paused"):
            print(f"\nPaused ({r['label']}): {r['paused']}")
    for r in results:
        print()
        print(
            f"Calls per certificate per account and API ({r['label']}; throttled answers), "
            "each API's allowance and the certificates a second it allows:"
        )
        print(
            table(
                ["side", "API", "per certificate", "throttled", "allowance", "certificates/s", ""],
                [
                    (
                        s,
                        op,
                        f"{c:.2f}",
                        str(t),
                        f"{a:g}/s",
                        f"{allows:.2f}",
                        "" if p else "background",
                    )
                    for s, op, c, t, p, a, allows in r["calls"]
                ],
            )
        )
        if r["lost"]:
            print(f"states at the end: {', '.join(r['states'])}")
    main = results[0]
    if args.devices and args.never_reconnect:
        # The pause run: it must stop at a wave below the threshold, touching nothing else.
        met = bool(main["paused"]) and main["touched_outside"] == 0 and main["duplicated"] == 0
        print()
        print(
            "Goal (devices that never come back: the batch pauses at the first wave below the "
            "threshold; no certificate outside the started waves touched; 0 duplicated): "
            + ("met" if met else "NOT met")
        )
        return met
    met = (
        main["p95"] <= GOAL_P95
        and main["ratio"] >= GOAL_RATIO
        and main["lost"] == 0
        and main["duplicated"] == 0
    )
    if args.devices:
        met = met and main["device_p95"] <= GOAL_DEVICE_P95 and main["back"] == main["n"]
    print()
    print(
        f"Goal (pre-accepted: p95 downtime <= {GOAL_P95:g} s, >= {GOAL_RATIO:g} of the slowest "
        "API's allowance, 0 lost, 0 duplicated): " + ("met" if met else "NOT met")
    )
    if not met:
        if main["p95"] > GOAL_P95:
            print(f"  p95 downtime over by {main['p95'] - GOAL_P95:.1f} s")
        if main["ratio"] < GOAL_RATIO:
            print(f"  throughput short by {GOAL_RATIO - main['ratio']:.3f} of the allowance")
    return met


# --------------------------------------------------------------------------- main


def start_devices(url: str, control, args) -> None:
    """Every thing gets a simulated device (connected now to its account's endpoint);
    connectivity indexing on in both accounts of the pair, so the portal can ask."""
    from standin.control import client_for_account

    pair = PAIRS["pre-accepted"]
    for account in pair[:1] if args.no_connectivity else pair:
        client_for_account(account, REGION, url).update_indexing_configuration(
            thingIndexingConfiguration={
                "thingIndexingMode": "REGISTRY",
                "thingConnectivityIndexingMode": "STATUS",
            }
        )
    control.configure_devices(
        enabled=True,
        drop_after_seconds=args.drop_after,
        backoff_base_seconds=args.backoff_base,
        backoff_cap_seconds=max(30.0, args.backoff_base),
        jitter="full",
        job_answer_seconds=1.0,
        never_reconnect_fraction=args.never_reconnect,
        seed=7,
    )


def run_phase(args, url, control, label: str, batch, approver, workers) -> dict:
    from transfers import batches
    from transfers.models import RateBucket

    landing = label == "pre-accepted"
    RateBucket.objects.all().delete()  # full buckets at R, nothing left from the set-up
    control.reset_counters()
    started = time.monotonic()
    batches.approve(approver, batch, "bench")
    finished = wait(batch, workers, args.timeout, started, landing)
    usable = None
    if not landing and finished:
        print(f"[{label}] all pending; the person's script accepts and re-attaches", flush=True)
        usable, seconds = old_way_script(url, batch, policy_names(args.policies))
        print(f"[{label}] script ran {seconds:.0f} s", flush=True)
    threads = args.workers * args.concurrency
    result = measure(batch, control.calls(), label, usable, threads)
    result["finished"] = finished
    return result


def main() -> int:
    if sys.argv[1:2] == ["--serve-standin"]:
        serve_standin(sys.argv[2:])
        return 0
    args = parse_args()
    signal.signal(signal.SIGTERM, terminate)
    signal.signal(signal.SIGINT, terminate)

    # How long the portal waits for a moved device (the workers read it from here).
    os.environ["DEVICE_BACK_WAIT_MINUTES"] = str(args.back_wait_minutes)
    redis_url = os.environ.get("REDIS_URL", "")
    db = Database("migration")
    workers = None
    load_before = load()
    begun = time.perf_counter()
    try:
        with standin_process(
            [sys.executable, str(Path(__file__).resolve()), "--serve-standin"]
        ) as url:
            from standin.control import RemoteControl

            control = RemoteControl(url, timeout=60)
            setup_django(db, url)
            labels = ["pre-accepted"] + ([] if args.skip_old_way else ["old way"])
            started = time.perf_counter()
            for label in labels:
                source, target = PAIRS[label]
                seed(url, source, target, args.certificates, policy_names(args.policies), label[:3])
            print(
                f"Stand-in at {url}: {args.certificates:,} certificates per source seeded in "
                f"{time.perf_counter() - started:.0f} s",
                flush=True,
            )
            broker = "Redis " + redis_url if redis_url else "file broker (temporary)"
            # Set-up, not measured: sync, request, approve the landings at the set-up rate.
            made = {}
            for label in labels:
                made[label] = make_batch(label, args.rate, label == "pre-accepted", args)
                print(f"[{label}] batch #{made[label][0].pk} requested", flush=True)
            workers = Workers({**os.environ, "PYTHONUNBUFFERED": "1"}, db.tmp)
            workers.start(args.workers, args.concurrency)
            workers.wait_ready()
            workers.start_beat()
            if args.devices:
                start_devices(url, control, args)
            control.set_faults(rps_per_operation=args.rate or "aws")
            results, finished = [], True
            for label in labels:
                result = run_phase(args, url, control, label, *made[label], workers)
                results.append(result)
                finished = finished and result["finished"]
            workers.stop()
            met = report(args, results, db, broker, load_before, time.perf_counter() - begun)
            if not finished:
                print("A phase did not finish.", file=sys.stderr)
                return 1
            return 0 if met else 2
    except KeyboardInterrupt:
        print("\nInterrupted; cleaning up.", file=sys.stderr)
        return 130
    finally:
        if workers is not None:
            workers.stop()
        db.cleanup()


if __name__ == "__main__":
    sys.exit(main())
