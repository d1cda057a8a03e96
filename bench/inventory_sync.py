"""Inventory sync: API calls and time to sync a fleet through the stand-in, for the portal's
sync (first run, and a second run where nothing changed), the naive approach, and the
fewest calls the API allows.

    .venv/bin/python bench/inventory_sync.py            # 10,000 certificates
    .venv/bin/python bench/inventory_sync.py --quick    # 2,000
    .venv/bin/python bench/inventory_sync.py --aws-rates 10   # at AWS's default quotas

With ``--aws-rates R`` every API is held to R requests a second twice over, as in AWS: the
portal's limiter runs at R per account, region and API, and the stand-in answers
ThrottlingException above R per account and API (its ``rps_per_operation`` ceiling). The
seconds are then measured at AWS's rates, and each phase's floor is its calls divided by R:
a sync whose phases run side by side takes about as long as its longest phase.

The stand-in runs in a subprocess (real HTTP) with the fleet created before it serves
(bench/_seeded_standin.py). The portal's sync is ``transfers.inventory.sync_region`` against
a throwaway database (SQLite in a temporary directory; PostgreSQL when DATABASE_URL is set,
in a dedicated database that is dropped afterwards). Calls are counted by the stand-in's
counters (``RemoteControl.calls()``) and cross-checked with ``SyncRun.api_calls``.

Naive: page ListCertificates, then DescribeCertificate, ListAttachedPolicies and
ListPrincipalThings for every certificate (API calls only: it writes nothing).

Fewest calls (pages hold 250; N certificates, P policies, T things, t_p targets of policy p,
c_t principals of thing t):
    ListCertificates       ceil(N/250)
    DescribeCertificate    N on a first sync (validity and CA id are only in the
                           description), 0 afterwards (they never change for an id)
    policies               min(ceil(P/250) + sum_p ceil(t_p/250),  N ListAttachedPolicies)
    things                 min(ceil(T/250) + sum_t ceil(c_t/250),  N ListPrincipalThings)
Each min is taken knowing P and T in advance, which no client does: a real client has to
list to find out. Every listing costs at least one call, even when empty.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _seeded_standin import fleet_plan
from _support import STANDIN_ENV, Database, load, machine, standin_process, table

ACCOUNT, REGION, PAGE = "220000000001", "us-east-1", 250


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--certificates", type=int, default=10_000)
    parser.add_argument(
        "--policies",
        type=int,
        default=10,
        help="policies: one attached to every certificate, each other one to 1/(P-1) of them",
    )
    parser.add_argument(
        "--thing-share", type=float, default=0.8, help="share of certificates with a thing"
    )
    parser.add_argument(
        "--things-without-certificate",
        type=int,
        default=None,
        help="things no certificate is attached to (default 2%% of the certificates)",
    )
    parser.add_argument(
        "--api-rate",
        type=float,
        default=1000.0,
        help="the account's API rate (requests per second, per API) for the measured runs; "
        "the default is the highest the account form accepts, so the portal's shared rate "
        "limiter (transfers/ratelimit.py) runs but never waits",
    )
    parser.add_argument(
        "--naive-sample",
        type=int,
        default=2_000,
        help="run the naive per-certificate loop on this many certificates (random ones, "
        "after paging them all) and scale its calls and time to the fleet; 0: all of them",
    )
    parser.add_argument(
        "--aws-rates",
        type=float,
        default=None,
        metavar="R",
        help="the account's API rate and the stand-in's ceiling per account and API, both R "
        "requests per second (AWS's default quotas: 10); overrides --api-rate",
    )
    parser.add_argument("--seed", type=int, default=6)
    parser.add_argument("--quick", action="store_true", help="2,000 certificates")
    args = parser.parse_args()
    if args.quick:
        args.certificates = 2_000
    if args.aws_rates is not None:
        args.api_rate = args.aws_rates
    if args.things_without_certificate is None:
        args.things_without_certificate = args.certificates // 50
    return args


def pages(items: int) -> int:
    """Calls to list ``items`` things 250 at a time; an empty listing is still one call."""
    return max(1, math.ceil(items / PAGE))


def fewest_calls(plan: dict, first: bool) -> dict[str, int]:
    certs = plan["certificates"]
    n = len(certs)
    targets = Counter(p for c in certs for p in c["policies"])
    principals = Counter(c["thing"] for c in certs if c["thing"])
    for name in plan["orphan_things"]:
        principals[name] += 0
    by_policy = pages(len(targets)) + sum(pages(t) for t in targets.values())
    by_thing = pages(len(principals)) + sum(pages(c) for c in principals.values())
    return {
        "ListCertificates": pages(n),
        "DescribeCertificate": n if first else 0,
        "policies": min(by_policy, n),
        "things": min(by_thing, n),
    }


def at_rate(per_op: dict[str, int], rate: float, interleaved: set[str] = frozenset()) -> float:
    """Seconds the calls take when each API is held to ``rate`` per second (the portal's
    limiter: one bucket per account, region and API). Calls to different APIs made one
    after another in separate phases add up; APIs called in turn within one loop
    (``interleaved``) refill in parallel, so the busiest of them sets the pace."""
    phased = sum(n for op, n in per_op.items() if op not in interleaved)
    together = max((n for op, n in per_op.items() if op in interleaved), default=0)
    return (phased + together) / rate


# The portal's phases and the APIs each calls one after another.
PHASES = {
    "listing": ("ListCertificates",),
    "describe": ("DescribeCertificate",),
    "policies": ("ListPolicies", "ListTargetsForPolicy", "ListAttachedPolicies"),
    "things": ("ListThings", "ListThingPrincipals", "ListPrincipalThings"),
}


def side_by_side(per_op: dict[str, int], rate: float) -> float:
    """Seconds the portal's calls take at ``rate`` per API: the listing, then the other
    phases side by side (transfers.inventory), each calling its APIs one after another."""
    calls = {phase: sum(per_op.get(op, 0) for op in ops) for phase, ops in PHASES.items()}
    return (calls["listing"] + max(n for phase, n in calls.items() if phase != "listing")) / rate


def phase_floors(per_op: dict[str, int], rate: float) -> dict[str, float]:
    """Seconds each phase needs at ``rate`` per API at least: its calls over the rate, less
    the one-second burst each API's bucket starts with."""
    return {
        phase: sum(max(0.0, per_op.get(op, 0) - rate) / rate for op in ops)
        for phase, ops in PHASES.items()
    }


def counted(control) -> tuple[int, dict[str, int]]:
    snapshot = control.calls()
    per_op = {op: entry["calls"] for op, entry in snapshot["operations"].items()}
    faulted = sum(snapshot["throttled"].values())
    return sum(per_op.values()) + faulted, per_op


def portal_sync(account) -> tuple[float, object]:
    from transfers import inventory
    from transfers.models import SyncRun

    run = SyncRun.objects.create(account=account, region=REGION)
    started = time.perf_counter()
    run = inventory.sync_region(run.pk)
    elapsed = time.perf_counter() - started
    if run.status != SyncRun.Status.DONE:
        raise SystemExit(f"the portal's sync failed: {run.error}")
    return elapsed, run


def naive_sync(account, sample: int, seed: int) -> tuple[float, float, dict, int, int]:
    """One DescribeCertificate + ListAttachedPolicies + ListPrincipalThings per certificate
    (of ``sample`` random ones when ``sample`` is set). Returns the seconds spent listing,
    the seconds of the per-certificate loop, what it found, its own call count and the
    number of certificates listed."""
    from transfers import aws

    client = aws.client(account, REGION)
    calls = [0]
    started = time.perf_counter()
    listed = list(aws.pages(client, "list_certificates", "certificates", calls, pageSize=PAGE))
    listing = time.perf_counter() - started
    chosen = listed
    if 0 < sample < len(listed):
        chosen = random.Random(seed).sample(listed, sample)
    started = time.perf_counter()
    found = {}
    for cert in chosen:
        cid, arn = cert["certificateId"], cert["certificateArn"]
        aws.call(client, "describe_certificate", certificateId=cid)
        calls[0] += 1
        policies = {
            p["policyName"]
            for p in aws.pages(
                client, "list_attached_policies", "policies", calls, target=arn, pageSize=PAGE
            )
        }
        things = set(
            aws.pages(
                client, "list_principal_things", "things", calls, principal=arn, maxResults=PAGE
            )
        )
        found[cid] = (policies, things)
    return listing, time.perf_counter() - started, found, calls[0], len(listed)


def stored(account) -> dict:
    from transfers.models import Certificate

    found = {}
    for cert in Certificate.objects.filter(account=account).prefetch_related("policies", "things"):
        found[cert.certificate_id] = (
            {p.name for p in cert.policies.all()},
            {t.name for t in cert.things.all()},
        )
    return found


def main() -> None:
    args = parse_args()
    spec = {
        "account": ACCOUNT,
        "region": REGION,
        "certificates": args.certificates,
        "policies": args.policies,
        "thing_share": args.thing_share,
        "things_without_certificate": args.things_without_certificate,
        "seed": args.seed,
    }
    plan = fleet_plan(spec)
    n = len(plan["certificates"])
    n_policies = len({p for c in plan["certificates"] for p in c["policies"]})
    attachments = sum(len(c["policies"]) for c in plan["certificates"])
    with_thing = sum(1 for c in plan["certificates"] if c["thing"])
    n_things = with_thing + len(plan["orphan_things"])
    print(
        f"Fleet: {n:,} certificates, {n_policies} policies ({attachments:,} attachments), "
        f"{n_things:,} things ({with_thing:,} with a certificate)",
        flush=True,
    )
    db = Database("sync")
    load_before = load()
    started = time.perf_counter()
    command = [sys.executable, str(Path(__file__).resolve().parent / "_seeded_standin.py")]
    command += ["--fleet", json.dumps(spec)]
    try:
        with standin_process(command, timeout=1800) as url:
            print(f"Stand-in ready in {time.perf_counter() - started:.0f} s at {url}", flush=True)
            os.environ.update(STANDIN_ENV)
            os.environ["AWS_ENDPOINT_URL"] = url
            os.environ.pop("AWS_PROFILE", None)
            db.setup_django()
            from standin.control import RemoteControl
            from transfers.models import AwsAccount

            control = RemoteControl(url, timeout=60)
            account = AwsAccount.objects.create(
                account_id=ACCOUNT,
                name="Bench fleet",
                regions=[REGION],
                role_arn=f"arn:aws:iam::{ACCOUNT}:role/TransferPortal",
                api_rate=args.api_rate,
            )
            if args.aws_rates is not None:
                control.set_faults(rps_per_operation=args.aws_rates)
            results = {}
            for label in ("first", "second"):
                control.reset_counters()
                elapsed, run = portal_sync(account)
                calls, per_op = counted(control)
                results[label] = (elapsed, calls, run.api_calls, per_op)
                print(
                    f"  portal {label} sync: {calls:,} calls in {elapsed:.1f} s "
                    f"(SyncRun.api_calls {run.api_calls:,})",
                    flush=True,
                )
            portal_found = stored(account)
            control.reset_counters()
            listing, loop, naive_found, naive_own, listed = naive_sync(
                account, args.naive_sample, args.seed
            )
            measured_calls, naive_ops = counted(control)
            done = len(naive_found)
            print(
                f"  naive: {measured_calls:,} calls in {listing + loop:.1f} s "
                f"(per-certificate loop on {done:,} of {listed:,} certificates)",
                flush=True,
            )
    finally:
        db.cleanup()

    differ = [c for c in naive_found if portal_found.get(c) != naive_found[c]]
    if differ:
        raise SystemExit(f"portal and naive disagree on {len(differ)} certificates")
    # Scale the naive loop to the whole fleet (exact for calls: 3 per certificate here).
    scale = listed / done
    list_calls = naive_ops.get("ListCertificates", 0)
    naive_calls = round(list_calls + (measured_calls - list_calls) * scale)
    naive_elapsed = listing + loop * scale
    naive_ops = {
        op: (v if op == "ListCertificates" else round(v * scale)) for op, v in naive_ops.items()
    }
    naive_label = "naive (describe + 2 lists per certificate)"
    if scale != 1:
        naive_label += f", scaled from {done:,}"
    links = sum(len(p) for p, _ in portal_found.values())
    assert len(portal_found) == n and links == attachments, (len(portal_found), links)

    first_lb, second_lb = fewest_calls(plan, True), fewest_calls(plan, False)
    lb1, lb2 = sum(first_lb.values()), sum(second_lb.values())
    (t1, c1, r1, ops1), (t2, c2, r2, ops2) = results["first"], results["second"]
    rate = settings_rate()
    naive_loop = {"DescribeCertificate", "ListAttachedPolicies", "ListPrincipalThings"}
    projected = {
        "portal1": side_by_side(ops1, rate),
        "portal2": side_by_side(ops2, rate),
        "naive": at_rate(naive_ops, rate, naive_loop),
    }

    def row(label, calls, own, seconds, fewest, at_default):
        return [
            label,
            f"{calls:,}",
            f"{own:,}" if own is not None else "",
            f"{seconds:.1f}" if seconds is not None else "",
            f"{calls / fewest:.3f}",
            f"{naive_calls / calls:.2f}x",
            f"{at_default / 60:.0f} min" if at_default is not None else "",
        ]

    rows = [
        row("fewest calls the API allows, first sync", lb1, None, None, lb1, None),
        row("portal, first sync", c1, r1, t1, lb1, projected["portal1"]),
        row(
            naive_label,
            naive_calls,
            naive_own if scale == 1 else None,
            naive_elapsed,
            lb1,
            projected["naive"],
        ),
        row("fewest calls the API allows, resync", lb2, None, None, lb2, None),
        row("portal, second sync (nothing changed)", c2, r2, t2, lb2, projected["portal2"]),
        row(
            "naive, any sync (same calls every time)",
            naive_calls,
            None,
            None,
            lb2,
            projected["naive"],
        ),
    ]
    print()
    print(
        f"Inventory sync: {n:,} certificates, {n_policies} policies, {n_things:,} things; "
        f"stand-in over HTTP on this machine; {db.describe().split(',')[0]}; {machine()}; "
        f"load average {load_before} at start, {load()} at end"
    )
    print(
        table(
            [
                "approach",
                "API calls (stand-in)",
                "client's count",
                f"seconds @{args.api_rate:g}/s",
                "calls / fewest",
                "naive / this",
                f"@{rate:g}/s per API",
            ],
            rows,
        )
    )
    print("\nFewest calls, first sync: " + ", ".join(f"{k} {v:,}" for k, v in first_lb.items()))
    print("Portal, first sync:  " + ", ".join(f"{k} {v:,}" for k, v in sorted(ops1.items())))
    print("Portal, second sync: " + ", ".join(f"{k} {v:,}" for k, v in sorted(ops2.items())))
    print("Naive:               " + ", ".join(f"{k} {v:,}" for k, v in sorted(naive_ops.items())))
    if args.aws_rates is not None:
        r = args.aws_rates
        phase_rows, ratios = [], {}
        for label, (elapsed, calls, _, per_op) in results.items():
            floors = phase_floors(per_op, r)
            longest = max(floors, key=floors.get)
            ratios[label] = elapsed / floors[longest]
            throttled = calls - sum(per_op.values())
            phase_rows.append(
                [
                    f"portal, {label} sync",
                    *(f"{floors[p]:.0f}" for p in PHASES),
                    f"{elapsed:.0f}",
                    f"{ratios[label]:.3f}",
                    f"{throttled:,}",
                ]
            )
        naive_floor = max(naive_ops.get(op, 0) for op in naive_loop) / r
        print(f"\nPhases at {r:g} requests per second per API (stand-in ceiling and limiter):")
        print(
            table(
                [
                    "sync",
                    *(f"{p} floor s" for p in PHASES),
                    "measured s",
                    "measured / longest",
                    "throttled",
                ],
                phase_rows,
            )
        )
        print(
            f"Naive loop: {naive_elapsed:.0f} s measured (scaled) against a floor of "
            f"{naive_floor:.0f} s (its busiest API's calls / {r:g})."
        )
        met = max(ratios.values()) <= 1.15 and max(c1 / lb1, c2 / lb2) <= 1.02
        print(
            f"Goal (each sync at most 1.15x its longest phase, calls at most 1.02x the "
            f"fewest): first {ratios['first']:.3f}x / {c1 / lb1:.3f}x, second "
            f"{ratios['second']:.3f}x / {c2 / lb2:.3f}x -> {'met' if met else 'NOT met'}."
        )
    print(
        f"Goal (at most 1.2x the fewest calls): first sync {c1 / lb1:.3f}x, "
        f"second {c2 / lb2:.3f}x -> {'met' if max(c1 / lb1, c2 / lb2) <= 1.2 else 'NOT met'}."
    )
    waits = (
        "the stand-in refusing more than that per API too"
        if args.aws_rates is not None
        else "the limiter never waits"
    )
    print(
        f"Seconds are measured with the account's API rate at {args.api_rate:g}/s ({waits}), "
        f"against moto on this machine, not AWS. The last column is computed, "
        f"not measured: the same calls held to the default {rate:g} requests per second per "
        "API (AWS_DEFAULT_API_RATE), the portal's phases side by side after the listing, the "
        "naive loop's "
        "three APIs in turn."
    )


def settings_rate() -> float:
    from django.conf import settings

    return float(settings.AWS_DEFAULT_API_RATE)


if __name__ == "__main__":
    main()
