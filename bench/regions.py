"""Many accounts and regions at once: four batches in four account-region pairs against a
stand-in that throttles above R calls per second per account, region and API; the aggregate
rate / (4 x R), and what each transfer costs in CPU (workers, stand-in, database, Redis),
from one run (issue 25 §4).

    .venv/bin/python bench/regions.py                       # 4 x 500 certificates, R = 10/s
    .venv/bin/python bench/regions.py --quick               # 4 x 50
    .venv/bin/python bench/regions.py --workers 2           # two worker processes
    .venv/bin/python bench/regions.py --compare-workers 1,2 # one run each, and the ratio
    DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres REDIS_URL=redis://127.0.0.1:6379/13 \\
      .venv/bin/python bench/regions.py                     # the stack this is meant for

What runs, as bench/bulk_transfer.py, four times side by side:
* the stand-in server in a subprocess with ``set_faults(rps_per_operation=R)``: above R calls
  per second of one API in one account and region it answers ThrottlingException (each
  account-region pair has its own allowance, as in AWS);
* four pairs: two source accounts, each in us-east-1 and eu-west-1; each pair has N ACTIVE
  certificates with a policy (``--things``: and a thing each) and a target account of its
  own in the same region;
* the portal on a throwaway database; PostgreSQL and Redis from DATABASE_URL / REDIS_URL (the
  run this is for; without them SQLite and the file broker, with a warning);
* the inventory of each pair synced (set-up, unmeasured, at a high rate), the rate set back
  to R, the limiter's buckets emptied; four batches requested, then approved one after the
  other in well under a second, with celery beat running;
* ``--workers K`` worker processes, each run exactly as docs/deploy.md documents the worker
  (``_support.documented_worker_args()``: the one place that says how).

It waits until no transfer of the four batches is requested, approved or preparing (or
``--timeout``), then prints: each pair's TransferCertificate rate (successful calls / seconds
from its first to its last, from the audit trail) and / R, the aggregate (all four batches'
calls / seconds from the first to the last) and / (4 x R); the CPU seconds used while the
batches ran, per transfer and as a share of the machine, by the worker processes (each with
its children, when its pool has any), the stand-in, the database's backends (PostgreSQL:
the processes serving this database, sampled from pg_stat_activity and /proc; SQLite runs
inside the workers) and Redis (``INFO cpu``: the whole server); how many database backends
waited on a lock (the limiter's buckets are rows locked for each call), sampled twice a
second; the throttling answers; transfers lost and duplicated; the load average at the start
and the end.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import resource
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _support import (  # noqa: E402 - after the path
    STANDIN_PIDS,
    Database,
    Workers,
    cpu_seconds,
    describe_worker_args,
    documented_worker_args,
    load,
    machine,
    percentile,
    pid_cpu,
    setup_django,
    standin_process,
    table,
    terminate,
)

SOURCES = ("220000000001", "220000000002")
REGIONS = ("us-east-1", "eu-west-1")
POLICY = "RegionsDevicePublish"
SYNC_RATE = 1000.0  # the accounts' rate during the (unmeasured) inventory sync
GOAL = 0.9  # issue 25 §4: aggregate >= 0.9 x (4 x R) on PostgreSQL + Redis
SAMPLE_SECONDS = 0.5
# What the documented worker runs without on the file broker (deploy/supervisord-dev.conf,
# `make run`): the broadcast messages serve several machines and fill a file queue.
FILE_BROKER_FLAGS = ["--without-gossip", "--without-mingle", "--without-heartbeat"]


@dataclass(frozen=True)
class Pair:
    source: str
    region: str
    target: str

    @property
    def label(self) -> str:
        return f"{self.source} {self.region}"


PAIRS = [
    Pair(source, region, f"2200000001{i}{j}")
    for i, source in enumerate(SOURCES)
    for j, region in enumerate(REGIONS)
]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--certificates", type=int, default=500, help="N per pair")
    parser.add_argument("--rate", type=float, default=10.0, help="R: per account, region and API")
    parser.add_argument("--workers", type=int, default=1, help="Celery worker processes")
    parser.add_argument(
        "--compare-workers",
        default=None,
        metavar="K1,K2",
        help="one run for each worker count (fresh stand-in and database each), then the ratio",
    )
    parser.add_argument("--things", action="store_true", help="give each certificate a thing")
    parser.add_argument(
        "--timeout", type=float, default=None, help="seconds to wait (default 3 N/R + 180)"
    )
    parser.add_argument("--quick", action="store_true", help="50 certificates per pair")
    parser.add_argument("--summary", default=None, help=argparse.SUPPRESS)  # --compare-workers
    args = parser.parse_args()
    if args.quick:
        args.certificates = 50
    if args.compare_workers:
        try:
            args.worker_counts = [int(k) for k in args.compare_workers.split(",")]
        except ValueError:
            parser.error("--compare-workers: worker counts separated by commas, e.g. 1,2")
    else:
        args.worker_counts = [args.workers]
    if args.certificates < 1 or args.rate <= 0 or min(args.worker_counts) < 1:
        parser.error("--certificates, --rate and --workers must be positive")
    if args.timeout is None:
        args.timeout = 3 * args.certificates / args.rate + 180
    return args


# --------------------------------------------------------------------------- set-up


def seed(url: str, pair: Pair, count: int, things: bool) -> list[str]:
    """N ACTIVE certificates with the policy (and a thing each) in the pair's account and
    region: what an administrator's tooling would have made (plain boto3, several threads)."""
    from demo import certificate_pem
    from standin.control import client_for_account

    stamp = f"{time.time():.0f}"
    now = datetime.now(UTC)
    local = threading.local()

    def iot():
        if not hasattr(local, "client"):
            local.client = client_for_account(pair.source, pair.region, url)
        return local.client

    iot().create_policy(policyName=POLICY, policyDocument='{"Version":"2012-10-17","Statement":[]}')

    def one(i: int) -> str:
        client = iot()
        name = f"regions-{pair.source}-{pair.region}-{stamp}-{i}"
        pem = certificate_pem(name, now - timedelta(days=1), now + timedelta(days=365))
        made = client.register_certificate_without_ca(certificatePem=pem, status="ACTIVE")
        client.attach_policy(policyName=POLICY, target=made["certificateArn"])
        if things:
            thing = f"regions-device-{i:05d}"
            client.create_thing(thingName=thing)
            client.attach_thing_principal(thingName=thing, principal=made["certificateArn"])
        return made["certificateId"]

    pool = concurrent.futures.ThreadPoolExecutor(8)
    try:
        return list(pool.map(one, range(count)))
    finally:
        pool.shutdown(cancel_futures=True)  # Ctrl-C: drop what has not started


def make_batches(rate: float, seeded: dict[Pair, list[str]]):
    """The accounts, a requester and an approver of both sources, every pair's inventory
    synced (fast), then one batch per pair requested. Returns ({pair: batch}, approver)."""
    from django.contrib.auth.models import User

    from transfers import batches, inventory
    from transfers.models import AccountGrant, AwsAccount, RateBucket, Role, SyncRun
    from transfers.workflow import Options

    requester = User.objects.create_user("bench-requester", "req@fleet.example")
    approver = User.objects.create_user("bench-approver", "app@fleet.example")
    sources = {}
    for i, account_id in enumerate(SOURCES):
        sources[account_id] = AwsAccount.objects.create(
            account_id=account_id,
            name=f"Bench fleet {i + 1}",
            regions=list(REGIONS),
            role_arn=f"arn:aws:iam::{account_id}:role/TransferPortal",
            contact_emails="iot@fleet.example",
            api_rate=SYNC_RATE,  # the sync is set-up: fast; R is set before the batches
        )
        AccountGrant.objects.create(
            account=sources[account_id], user=requester, role=Role.REQUESTER
        )
        AccountGrant.objects.create(account=sources[account_id], user=approver, role=Role.APPROVER)
    for pair in PAIRS:
        AwsAccount.objects.create(
            account_id=pair.target,
            name=f"Bench buyer {pair.target[-2:]}",
            regions=[pair.region],
            role_arn=f"arn:aws:iam::{pair.target}:role/TransferPortal",
            contact_emails="iot@buyer.example",
        )

    started = time.perf_counter()
    for pair in PAIRS:
        run = SyncRun.objects.create(account=sources[pair.source], region=pair.region)
        run = inventory.sync_region(run.pk)
        if run.status != SyncRun.Status.DONE:
            raise SystemExit(f"the inventory sync of {pair.label} failed: {run.error}")
    AwsAccount.objects.filter(account_id__in=SOURCES).update(api_rate=rate)
    RateBucket.objects.all().delete()
    print(f"Inventory of 4 pairs synced in {time.perf_counter() - started:.1f} s (set-up)")

    made = {}
    for pair in PAIRS:
        certs, missing = batches.select(requester, seeded[pair])
        made[pair] = batches.request_batch(
            requester,
            certs,
            missing,
            target_account_id=pair.target,
            message=f"Fleet of {pair.region} sold",
            reason="bench/regions.py",
            options=Options(),
        )
    return made, approver


# --------------------------------------------------------------------------- sampling


class Sampler:
    """Twice a second while the batches run: the CPU of each PostgreSQL backend serving the
    bench database (a backend that exits between two looks loses at most half a second of
    its CPU here), and how many of them wait on a lock."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.first: dict[int, float] = {}
        self.last: dict[int, float] = {}
        self.samples = 0
        self.lock_waiting = 0  # summed over samples
        self.samples_with_wait = 0
        self.active = 0  # backends running a query, summed over samples
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self.db.vendor != "postgresql":
            return
        self._sample()  # the baseline: backends open before the approval
        self.first = dict(self.last)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._sample()

    def _run(self) -> None:
        while not self._stop.wait(SAMPLE_SECONDS):
            self._sample()

    def _sample(self) -> None:
        import psycopg

        with psycopg.connect(self.db.url, autocommit=True) as conn:
            rows = conn.execute(
                "SELECT pid, state, wait_event_type FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            ).fetchall()
        waiting = sum(wait == "Lock" for _, _, wait in rows)
        self.samples += 1
        self.lock_waiting += waiting
        self.samples_with_wait += bool(waiting)
        self.active += sum(state == "active" for _, state, _ in rows)
        for pid, _, _ in rows:
            cpu = pid_cpu(pid)
            if cpu is not None:
                self.last[pid] = cpu

    def cpu(self) -> float:
        return sum(cpu - self.first.get(pid, 0.0) for pid, cpu in self.last.items())


def redis_cpu(client) -> float:
    info = client.info("cpu")
    return float(info["used_cpu_sys"]) + float(info["used_cpu_user"])


def machine_cpu() -> tuple[float, float]:
    """CPU seconds the whole machine spent busy, and of them in the kernel, since boot
    (/proc/stat): what the parts above miss (beat, backends that came and went, forks)."""
    fields = [float(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields[:8]
    tick = os.sysconf("SC_CLK_TCK")
    return (user + nice + system + irq + softirq + steal) / tick, (system + irq + softirq) / tick


class Cpu:
    """CPU seconds of each part, read before the approval and after the last transfer."""

    def __init__(self, workers: Workers, standin: int, sampler: Sampler, redis) -> None:
        self.workers, self.standin, self.sampler, self.redis = workers, standin, sampler, redis
        self.before: dict[str, float] = {}
        self.machine = (0.0, 0.0)  # busy and kernel seconds of the whole machine, used()

    def worker_pids(self) -> list[int]:
        return [proc.pid for proc, log in self.workers.procs if log.name.startswith("worker")]

    def read(self) -> dict[str, float]:
        values = {
            "workers": sum(map(cpu_seconds, self.worker_pids())),
            "stand-in": cpu_seconds(self.standin),
            "this script": sum(resource.getrusage(resource.RUSAGE_SELF)[:2]),
        }
        if self.redis is not None:
            values["Redis (whole server)"] = redis_cpu(self.redis)
        return values

    def start(self) -> None:
        self.before = self.read()
        self._machine = machine_cpu()
        self.sampler.start()

    def used(self) -> dict[str, float]:
        after = self.read()
        busy, kernel = machine_cpu()
        self.machine = (busy - self._machine[0], kernel - self._machine[1])
        self.sampler.stop()
        used = {name: after[name] - self.before[name] for name in after}
        if self.sampler.samples:
            used["PostgreSQL backends"] = self.sampler.cpu()
        return used


# --------------------------------------------------------------------------- measure


def wait(batches: dict, workers: Workers, timeout: float, approved_at: float) -> bool:
    from django.db.models import Count

    from transfers.models import Transfer

    deadline = time.monotonic() + timeout
    last_print = 0.0
    pks = [batch.pk for batch in batches.values()]
    while True:
        counts = dict(
            Transfer.objects.filter(batch_id__in=pks)
            .values_list("status")
            .annotate(n=Count("pk"))
            .values_list("status", "n")
        )
        waiting = sum(counts.get(s, 0) for s in ("requested", "approved", "preparing"))
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


def rate_of(times: list) -> tuple[float, float]:
    """(calls / seconds from the first to the last, that span)."""
    times = sorted(times)
    span = (times[-1] - times[0]).total_seconds() if len(times) > 1 else 0.0
    return (len(times) / span if span else float("nan")), span


def measure(batches: dict, control, rate: float) -> dict:
    from transfers.models import Transfer, TransferEvent

    snapshot = control.calls()
    per_cert = snapshot["certificates"].get("TransferCertificate", {})
    pairs, everything = [], []
    lost = duplicated = never = 0
    for pair, batch in batches.items():
        transfers = list(batch.transfers.all())
        ok_times = list(
            TransferEvent.objects.filter(
                transfer__batch=batch, action="TransferCertificate", ok=True
            ).values_list("created", flat=True)
        )
        everything += ok_times
        achieved, span = rate_of(ok_times)
        to_pending = [
            (t.pending_since - t.decided_at).total_seconds()
            for t in transfers
            if t.pending_since and t.decided_at
        ]
        ok = [per_cert.get(t.certificate_id, {}).get("ok", 0) for t in transfers]
        pair_lost = sum(t.status != Transfer.Status.PENDING_ACCEPTANCE for t in transfers)
        lost += pair_lost
        duplicated += sum(n > 1 for n in ok)
        never += sum(n == 0 for n in ok)
        pairs.append(
            {
                "pair": pair,
                "n": len(transfers),
                "ok": len(ok_times),
                "span": span,
                "achieved": achieved,
                "ratio": achieved / rate,
                "p95": percentile(to_pending, 95),
                "lost": pair_lost,
            }
        )
    achieved, span = rate_of(everything)
    return {
        "pairs": pairs,
        "n": sum(p["n"] for p in pairs),
        "ok": len(everything),
        "span": span,
        "achieved": achieved,
        "ratio": achieved / (len(batches) * rate),
        "throttled": snapshot["throttled"].get("TransferCertificate", 0),
        "throttled_other": sum(
            n for op, n in snapshot["throttled"].items() if op != "TransferCertificate"
        ),
        "portal_throttled": TransferEvent.objects.filter(
            transfer__batch__in=list(batches.values()),
            ok=False,
            details__error_code="ThrottlingException",
        ).count(),
        "lost": lost,
        "duplicated": duplicated,
        "never": never,
    }


def report(args, k: int, worker_args, m: dict, cpu: dict, sampler: Sampler, context) -> None:
    db, broker, load_before, load_after, wall, batch_wall, machine_used = context
    r = args.rate
    done = max(m["ok"], 1)
    cores = os.cpu_count() or 1
    print()
    print(
        f"Regions: 4 account-region pairs x {args.certificates:,} certificates "
        f"({'a policy and a thing' if args.things else 'a policy'} each), R = {r:g}/s per "
        f"account, region and API; {k} worker process(es), {describe_worker_args(worker_args)}"
    )
    print(f"Machine: {machine()}; load {load_before} before, {load_after} after")
    print(f"Database: {db.describe()}; broker: {broker}; wall time {wall:.0f} s")
    print()
    print(
        table(
            [
                "pair (source, region)",
                "transfers",
                "first to last",
                "rate",
                "/ R",
                "p95 to pending",
                "lost",
            ],
            [
                (
                    p["pair"].label,
                    f"{p['ok']:,}",
                    f"{p['span']:.1f} s",
                    f"{p['achieved']:.2f}/s",
                    f"{p['ratio']:.3f}",
                    f"{p['p95']:.1f} s",
                    str(p["lost"]),
                )
                for p in m["pairs"]
            ],
        )
    )
    print()
    rows = [
        ("successful TransferCertificate calls", f"{m['ok']:,}", f"of {m['n']:,} transfers"),
        ("first to last, all pairs", f"{m['span']:.1f} s", ""),
        ("aggregate rate", f"{m['achieved']:.2f}/s", ""),
        ("aggregate / (4 x R)", f"{m['ratio']:.3f}", f"goal >= {GOAL}"),
    ]
    for name, seconds in cpu.items():
        rows.append(
            (
                f"CPU: {name}",
                f"{seconds:.1f} s",
                f"{1000 * seconds / done:.1f} ms per transfer; "
                f"{100 * seconds / (batch_wall * cores):.0f}% of {cores} cores",
            )
        )
    rows.append(
        (
            "CPU: all measured",
            f"{sum(v for v in cpu.values() if v == v):.1f} s",
            f"{100 * sum(v for v in cpu.values() if v == v) / (batch_wall * cores):.0f}% of "
            f"{cores} cores over {batch_wall:.0f} s (approval to the last transfer)",
        )
    )
    busy, kernel = machine_used
    rows.append(
        (
            "CPU: whole machine",
            f"{busy:.1f} s",
            f"{100 * busy / (batch_wall * cores):.0f}% of {cores} cores busy "
            f"({100 * kernel / (batch_wall * cores):.0f}% in the kernel), /proc/stat",
        )
    )
    if sampler.samples:
        rows += [
            (
                "backends waiting on a lock",
                f"{sampler.lock_waiting / sampler.samples:.2f}",
                f"mean of {sampler.samples} samples; "
                f"{100 * sampler.samples_with_wait / sampler.samples:.0f}% of samples had one",
            ),
            ("backends running a query", f"{sampler.active / sampler.samples:.2f}", "mean"),
        ]
    else:
        rows.append(("database CPU, lock waits", "-", "SQLite: inside the workers, not measured"))
    rows += [
        (
            "throttling answers (stand-in)",
            f"{m['throttled']:,}",
            f"TransferCertificate; {m['throttled_other']} on other APIs",
        ),
        ("  seen by the portal", f"{m['portal_throttled']:,}", "after botocore retries"),
        ("transfers lost", f"{m['lost']:,}", "goal 0"),
        ("transfers duplicated", f"{m['duplicated']:,}", "goal 0"),
    ]
    print(table(["measure", "value", "note"], rows))
    verdict = m["ratio"] >= GOAL and not m["lost"] and not m["duplicated"] and not m["never"]
    print()
    print(
        f"Goal (aggregate >= {GOAL:g} x 4 R, none lost, none duplicated): "
        + ("met" if verdict else "NOT met")
    )


# --------------------------------------------------------------------------- main


def run(args, k: int, redis_url: str) -> dict | None:
    """One run with k worker processes; its summary, or None when the batches did not finish."""
    db = Database("regions")
    workers: Workers | None = None
    load_before = load()
    begun = time.perf_counter()
    try:
        with standin_process() as url:
            from standin.control import RemoteControl

            control = RemoteControl(url, timeout=60)
            setup_django(db, url)
            started = time.perf_counter()
            seeded = {pair: seed(url, pair, args.certificates, args.things) for pair in PAIRS}
            print(
                f"Stand-in at {url}: 4 pairs x {args.certificates:,} certificates seeded in "
                f"{time.perf_counter() - started:.0f} s",
                flush=True,
            )
            redis_client, redis_was_empty = None, False
            if redis_url:
                import redis

                redis_client = redis.Redis.from_url(redis_url)
                redis_was_empty = not redis_client.dbsize()
                if not redis_was_empty:
                    print(
                        "warning: the Redis database at REDIS_URL is not empty; old tasks "
                        "in it would skew the run",
                        file=sys.stderr,
                    )
            broker = "Redis " + redis_url if redis_url else "file broker (temporary)"
            batches_by_pair, approver = make_batches(args.rate, seeded)

            worker_args = documented_worker_args() + ([] if redis_url else FILE_BROKER_FLAGS)
            workers = Workers({**os.environ, "PYTHONUNBUFFERED": "1"}, db.tmp)
            for i in range(k):
                workers.start_args(
                    ["-A", "portal", "worker", *worker_args]
                    + ["--loglevel", "INFO", "--hostname", f"bench{i + 1}@%h"]
                )
            workers.wait_ready()
            workers.start_beat()
            control.reset_counters()
            control.set_faults(rps_per_operation=args.rate)
            time.sleep(2)  # let the pools and beat settle before the CPU baseline
            sampler = Sampler(db)
            cpu = Cpu(workers, STANDIN_PIDS[url], sampler, redis_client)
            cpu.start()

            from transfers import batches

            approved_at = time.monotonic()
            for batch in batches_by_pair.values():
                batches.approve(approver, batch, "bench")
            print(f"Approved 4 batches in {time.monotonic() - approved_at:.2f} s", flush=True)
            finished = wait(batches_by_pair, workers, args.timeout, approved_at)
            batch_wall = time.monotonic() - approved_at
            used = cpu.used()
            m = measure(batches_by_pair, control, args.rate)
            load_after = load()
            workers.stop()
            wall = time.perf_counter() - begun
            context = (db, broker, load_before, load_after, wall, batch_wall, cpu.machine)
            report(args, k, worker_args, m, used, sampler, context)
            if redis_client is not None and redis_was_empty:
                redis_client.flushdb()  # all ours: what beat left does not skew the next run
            if not finished:
                print("The batches did not finish.", file=sys.stderr)
                return None
            done = max(m["ok"], 1)
            return {
                "k": k,
                "achieved": m["achieved"],
                "ratio": m["ratio"],
                "workers_ms": 1000 * used["workers"] / done,
                "all_ms": 1000 * sum(v for v in used.values() if v == v) / done,
                "machine": 100 * cpu.machine[0] / (batch_wall * (os.cpu_count() or 1)),
                "lost": m["lost"],
                "duplicated": m["duplicated"],
                "load": f"{load_before} -> {load_after}",
            }
    finally:
        if workers is not None:
            workers.stop()
        db.cleanup()


def compare(args) -> int:
    """One run per worker count, each in a process of its own (Django is set up once per
    process), then the rates side by side."""
    results = []
    for k in args.worker_counts:
        with tempfile.NamedTemporaryFile(suffix=".json") as summary:
            argv = [sys.executable, __file__, "--workers", str(k), "--summary", summary.name]
            argv += ["--certificates", str(args.certificates), "--rate", str(args.rate)]
            argv += ["--timeout", str(args.timeout)] + (["--things"] if args.things else [])
            print(f"\n=== {k} worker process(es)", flush=True)
            code = subprocess.call(argv)  # noqa: S603 - this script, our interpreter
            text = Path(summary.name).read_text()
            if code or not text:
                print(f"The run with {k} worker process(es) failed ({code}).", file=sys.stderr)
                return code or 1
            results.append(json.loads(text))
    base = results[0]
    print()
    print(f"Worker processes compared ({describe_worker_args(documented_worker_args())} each):")
    print(
        table(
            [
                "workers",
                "aggregate",
                "/ (4 x R)",
                f"vs {base['k']}",
                "worker CPU",
                "all CPU",
                "machine busy",
                "load",
            ],
            [
                (
                    str(r["k"]),
                    f"{r['achieved']:.2f}/s",
                    f"{r['ratio']:.3f}",
                    f"{r['achieved'] / base['achieved']:.2f}x",
                    f"{r['workers_ms']:.1f} ms",
                    f"{r['all_ms']:.1f} ms",
                    f"{r['machine']:.0f}%",
                    r["load"],
                )
                for r in results
            ],
        )
    )
    print(
        "(CPU per transfer; 'all' adds the stand-in, PostgreSQL, Redis and this script; "
        "machine busy: /proc/stat over the batches)"
    )
    return 0


def main() -> int:
    args = parse_args()
    signal.signal(signal.SIGTERM, terminate)
    signal.signal(signal.SIGINT, terminate)  # even when started with SIGINT ignored
    try:
        if len(args.worker_counts) > 1:
            return compare(args)
        redis_url = os.environ.get("REDIS_URL", "")
        database_url = os.environ.get("DATABASE_URL", "")
        if not redis_url or not database_url.startswith("postgres"):
            print(
                "warning: this benchmark is meant for PostgreSQL and Redis (DATABASE_URL, "
                "REDIS_URL); running on "
                + ("PostgreSQL" if database_url.startswith("postgres") else "SQLite")
                + " and "
                + ("Redis" if redis_url else "the file broker")
                + ", whose figures say little about the production stack",
                file=sys.stderr,
            )
        summary = run(args, args.worker_counts[0], redis_url)
        if args.summary:
            Path(args.summary).write_text(json.dumps(summary) if summary else "")
        return 0 if summary else 1
    except KeyboardInterrupt:
        print("\nInterrupted; cleaning up.", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
