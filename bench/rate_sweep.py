"""Any configured rate is reached (issue 25 §2): batches at R = 1, 3, 10, 25 and 50 calls a
second, one after another, on ``make run``'s own stack; achieved / R for each, from one run.

    .venv/bin/python bench/rate_sweep.py                       # R in 1, 3, 10, 25, 50
    .venv/bin/python bench/rate_sweep.py --rates 3,50 --seconds 60
    .venv/bin/python bench/rate_sweep.py --quick               # R in 3, 25; 30 s each

What runs:
* the stand-in server in a subprocess (real HTTP). For each step it answers
  ThrottlingException above R calls a second per account and API
  (``set_faults(rps_per_operation=R)``), as AWS applies its per-API quotas;
* per step, a source account of its own with ``api_rate = R`` and ``R × --seconds``
  ACTIVE certificates (at least 60), each with a policy and no thing (so each is
  deactivated, its policy detached, its things listed, and transferred: each API at most
  once per certificate, so R certificates a second is the ceiling);
* the portal on a throwaway SQLite database and the file broker, as ``make run`` runs it,
  and **the worker exactly as ``make run`` starts it**: its arguments are read from
  deploy/supervisord-dev.conf (the ``[program:worker]`` command), so this measures the
  default stack and follows any change to it; celery beat running;
* each step: one batch of the account's certificates, requested, approved by another user,
  and waited for (nothing approved or preparing).

Printed per step: the achieved TransferCertificate rate (successful calls / seconds between
the first and the last, from the audit trail), achieved / R, the same without the first
second's burst, p50/p95 of a transfer's own work (worker start to pending acceptance), the
feeder's ticks a minute (its ``feed_batch`` tasks received, from the workers' logs), the
throttling answers, and transfers lost and duplicated. The load average is printed at the
start and the end. The inventory sync is set-up, not measured (run at a high rate).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import os
import re
import shlex
import signal
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _support import (  # noqa: E402 - after the path
    ROOT,
    STANDIN_PIDS,
    Database,
    Workers,
    cpu_seconds,
    load,
    machine,
    percentile,
    setup_django,
    standin_process,
    table,
    terminate,
)

TARGET, REGION = "230000000099", "us-east-1"
POLICY = "SweepDevicePublish"
SYNC_RATE = 1000.0
GOAL = 0.95


def demo_workers() -> list[list[str]]:
    """Each worker process's arguments after ``celery``, as ``make run`` starts them."""
    conf = (ROOT / "deploy" / "supervisord-dev.conf").read_text()
    section = conf.split("[program:worker]", 1)[1].split("\n[", 1)[0]
    lines = dict(line.split("=", 1) for line in section.splitlines() if "=" in line)
    words = shlex.split(lines["command"])
    args = words[words.index("-A") :]
    return [
        [w.replace("%(process_num)d", str(n)).replace("%%", "%") for w in args]
        for n in range(int(lines.get("numprocs", 1)))
    ]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rates", default="1,3,10,25,50", help="R for each step, in order")
    parser.add_argument("--seconds", type=float, default=90, help="each step's length at R")
    parser.add_argument("--quick", action="store_true", help="R in 3, 25; 30 s each")
    args = parser.parse_args()
    if args.quick:
        args.rates, args.seconds = "3,25", 30
    try:
        args.rates = [float(r) for r in args.rates.split(",")]
    except ValueError:
        parser.error("--rates: numbers separated by commas, e.g. 1,3,10")
    if not args.rates or min(args.rates) <= 0 or args.seconds <= 0:
        parser.error("--rates and --seconds must be positive")
    return args


def seed(url: str, account_id: str, count: int) -> list[str]:
    """``count`` ACTIVE certificates with the policy, no thing (plain boto3, 8 threads)."""
    from demo import certificate_pem
    from standin.control import client_for_account

    now = datetime.now(UTC)
    local = threading.local()

    def iot():
        if not hasattr(local, "client"):
            local.client = client_for_account(account_id, REGION, url)
        return local.client

    iot().create_policy(policyName=POLICY, policyDocument='{"Version":"2012-10-17","Statement":[]}')

    def one(i: int) -> str:
        pem = certificate_pem(
            f"sweep-{account_id}-{i}", now - timedelta(days=1), now + timedelta(days=365)
        )
        made = iot().register_certificate_without_ca(certificatePem=pem, status="ACTIVE")
        iot().attach_policy(policyName=POLICY, target=made["certificateArn"])
        return made["certificateId"]

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        return list(pool.map(one, range(count)))


def make_batch(account_id: str, rate: float, ids: list[str], requester, approver):
    from transfers import batches, inventory
    from transfers.models import AccountGrant, AwsAccount, RateBucket, Role, SyncRun
    from transfers.workflow import Options

    source = AwsAccount.objects.create(
        account_id=account_id,
        name=f"Sweep R={rate:g}",
        regions=[REGION],
        role_arn=f"arn:aws:iam::{account_id}:role/TransferPortal",
        contact_emails="iot@fleet.example",
        api_rate=SYNC_RATE,
    )
    AccountGrant.objects.create(account=source, user=requester, role=Role.REQUESTER)
    AccountGrant.objects.create(account=source, user=approver, role=Role.APPROVER)
    run = inventory.sync_region(SyncRun.objects.create(account=source, region=REGION).pk)
    if run.status != SyncRun.Status.DONE:
        raise SystemExit(f"the inventory sync failed: {run.error}")
    AwsAccount.objects.filter(pk=source.pk).update(api_rate=rate)
    RateBucket.objects.filter(key__startswith=f"{account_id}:").delete()
    certs, missing = batches.select(requester, ids)
    return batches.request_batch(
        requester,
        certs,
        missing,
        target_account_id=TARGET,
        message="Fleet sold",
        reason="bench/rate_sweep.py",
        options=Options(),
    )


def wait(batch, workers: Workers, timeout: float) -> bool:
    from transfers.models import Transfer

    deadline = time.monotonic() + timeout
    busy = (Transfer.Status.REQUESTED, Transfer.Status.APPROVED, Transfer.Status.PREPARING)
    while batch.transfers.filter(status__in=busy).exists():
        if not workers.alive():
            print("A worker died:\n" + workers.tails(), file=sys.stderr)
            return False
        if time.monotonic() > deadline:
            print(f"  timed out after {timeout:.0f} s", file=sys.stderr)
            return False
        time.sleep(1)
    return True


RECEIVED = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),\d+ .*Task transfers\.tasks\.feed_batch")


def feeder_ticks(logs: list[Path], start: datetime, end: datetime) -> int:
    ticks = 0
    for log in logs:
        for line in log.read_text(errors="replace").splitlines():
            found = RECEIVED.match(line)
            if found and "received" in line:
                when = datetime.strptime(found.group(1), "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC)
                ticks += start <= when <= end
    return ticks


def measure(batch, control, rate: float, ticks_per_minute: float) -> dict:
    from transfers.models import Transfer, TransferEvent

    transfers = list(batch.transfers.all())
    ok_times = sorted(
        TransferEvent.objects.filter(
            transfer__batch=batch, action="TransferCertificate", ok=True
        ).values_list("created", flat=True)
    )
    span = (ok_times[-1] - ok_times[0]).total_seconds() if len(ok_times) > 1 else 0.0
    starts = dict(
        TransferEvent.objects.filter(transfer__batch=batch, action="start").values_list(
            "transfer_id", "created"
        )
    )
    service = [
        (t.pending_since - starts[t.pk]).total_seconds()
        for t in transfers
        if t.pending_since and t.pk in starts
    ]
    snapshot = control.calls()
    per_cert = snapshot["certificates"].get("TransferCertificate", {})
    ok_per_cert = [per_cert.get(t.certificate_id, {}).get("ok", 0) for t in transfers]
    achieved = (len(ok_times) - 1) / span if span else float("nan")
    steady = (len(ok_times) - 1 - rate) / span if span else float("nan")
    return {
        "n": len(transfers),
        "span": span,
        "achieved": achieved,
        "ratio": achieved / rate,
        "steady": steady / rate,
        "service_p50": percentile(service, 50),
        "service_p95": percentile(service, 95),
        "ticks": ticks_per_minute,
        "throttled": sum(snapshot["throttled"].values()),
        "lost": sum(t.status != Transfer.Status.PENDING_ACCEPTANCE for t in transfers),
        "duplicated": sum(n > 1 for n in ok_per_cert),
    }


def main() -> int:
    args = parse_args()
    signal.signal(signal.SIGTERM, terminate)
    signal.signal(signal.SIGINT, terminate)
    os.environ.pop("REDIS_URL", None)  # the default stack: the file broker
    os.environ.pop("DATABASE_URL", None)  # and SQLite
    db = Database("sweep")
    workers: Workers | None = None
    load_before = load()
    begun = time.perf_counter()
    worker_args = demo_workers()
    results = []
    try:
        with standin_process() as url:
            from standin.control import RemoteControl

            control = RemoteControl(url, timeout=60)
            setup_django(db, url)
            from django.contrib.auth.models import User

            requester = User.objects.create_user("sweep-requester", "req@fleet.example")
            approver = User.objects.create_user("sweep-approver", "app@fleet.example")
            from transfers.models import AwsAccount

            AwsAccount.objects.create(
                account_id=TARGET,
                name="Sweep buyer",
                regions=[REGION],
                role_arn=f"arn:aws:iam::{TARGET}:role/TransferPortal",
                contact_emails="iot@buyer.example",
            )
            plans = []
            started = time.perf_counter()
            for i, rate in enumerate(args.rates):
                account_id = f"2300000000{i + 1:02d}"
                count = max(60, round(rate * args.seconds))
                plans.append((account_id, rate, seed(url, account_id, count)))
            print(
                f"Stand-in at {url}: {sum(len(p[2]) for p in plans):,} certificates seeded in "
                f"{time.perf_counter() - started:.0f} s",
                flush=True,
            )
            batches_ = [
                (rate, make_batch(account_id, rate, ids, requester, approver))
                for account_id, rate, ids in plans
            ]
            env = {**os.environ, "PYTHONUNBUFFERED": "1"}
            workers = Workers(env, db.tmp)
            for args_ in worker_args:
                workers.start_args(args_)
            workers.wait_ready()
            workers.start_beat()
            print(f"Workers: {len(worker_args)} x celery {' '.join(worker_args[0])}", flush=True)
            from transfers import batches

            for rate, batch in batches_:
                control.reset_counters()
                control.set_faults(rps_per_operation=rate)
                worker_pids = [p.pid for p, log in workers.procs if log.name.startswith("w")]
                cpu = [sum(map(cpu_seconds, worker_pids)), cpu_seconds(STANDIN_PIDS[url])]
                start = datetime.now(UTC)
                batches.approve(approver, batch, "bench")
                finished = wait(batch, workers, timeout=3 * batch.transfers.count() / rate + 120)
                end = datetime.now(UTC)
                minutes = max((end - start).total_seconds() / 60, 1 / 60)
                ticks = feeder_ticks(workers.worker_logs(), start, end) / minutes
                m = measure(batch, control, rate, ticks)
                m["rate"], m["finished"] = rate, finished
                m["worker_cpu"] = (sum(map(cpu_seconds, worker_pids)) - cpu[0]) / m["n"]
                m["standin_cpu"] = (cpu_seconds(STANDIN_PIDS[url]) - cpu[1]) / m["n"]
                results.append(m)
                print(
                    f"  R = {rate:g}: {m['n']} transfers, {m['achieved']:.2f}/s = "
                    f"{m['ratio']:.3f} R (load {load()})",
                    flush=True,
                )
                if not finished:
                    break
            workers.stop()
    except KeyboardInterrupt:
        print("\nInterrupted; cleaning up.", file=sys.stderr)
        return 130
    finally:
        if workers is not None:
            workers.stop()
        db.cleanup()

    print()
    print(
        "Rate sweep: make run's stack (SQLite, file broker, beat), one batch per R, "
        "certificates with a policy and no thing"
    )
    print(f"Workers: {len(worker_args)} x celery {' '.join(worker_args[0])}")
    print(f"Machine: {machine()}; load {load_before} before, {load()} after")
    print(f"Wall time {time.perf_counter() - begun:.0f} s")
    print()
    rows = [
        (
            f"{m['rate']:g}",
            f"{m['n']:,}",
            f"{m['span']:.0f} s",
            f"{m['achieved']:.2f}/s",
            f"{m['ratio']:.3f}",
            f"{m['steady']:.3f}",
            f"{m['service_p50']:.2f} / {m['service_p95']:.2f} s",
            f"{m['ticks']:.0f}",
            f"{1000 * m['worker_cpu']:.0f} / {1000 * m['standin_cpu']:.0f} ms",
            str(m["throttled"]),
            str(m["lost"]),
            str(m["duplicated"]),
        )
        for m in results
    ]
    print(
        table(
            [
                "R/s",
                "transfers",
                "span",
                "achieved",
                "achieved/R",
                "without burst",
                "work p50/p95",
                "feeder ticks/min",
                "CPU per transfer: worker / stand-in",
                "throttled",
                "lost",
                "duplicated",
            ],
            rows,
        )
    )
    met = all(
        m["finished"] and m["ratio"] >= GOAL and not m["lost"] and not m["duplicated"]
        for m in results
    ) and len(results) == len(args.rates)
    print()
    verdict = "met" if met else "NOT met"
    print(f"Goal (every R >= {GOAL:g} R, none lost or duplicated): {verdict}")
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
