"""The stand-in server (``standin.server``'s app) with a fleet created before it serves.

    python bench/_seeded_standin.py --fleet '{"account": ..., "certificates": 10000, ...}' --port N

Creating 10,000 certificates with their policies and things through the HTTP API takes
about 46,000 calls (~5 minutes here); this creates them in the server process through the
same moto backend methods those calls end in (register_certificate_without_ca,
create_policy, attach_policy, create_thing, attach_thing_principal), so a benchmark spends
its time on what it measures. The server then answers on ``--port`` exactly as
``python -m standin.server`` does, with the call counters at zero.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _support import ec_certificate_pem  # noqa: E402 - after the path

POLICY_DOCUMENT = {"Version": "2012-10-17", "Statement": []}


def fleet_plan(spec: dict) -> dict:
    """Which policies and thing each certificate gets: deterministic from the spec, so the
    benchmark can compute the lower bound without asking the stand-in."""
    rng = random.Random(spec["seed"])
    n, extra = spec["certificates"], spec["policies"] - 1
    certs = []
    for i in range(n):
        policies = ["Fleet-Connect"]  # every device may connect: one policy with n targets
        if extra:
            policies.append(f"Fleet-Role-{i % extra:02d}")
        thing = f"device-{i:06d}" if rng.random() < spec["thing_share"] else None
        status = "ACTIVE" if rng.random() < 0.9 else "INACTIVE"
        certs.append({"policies": policies, "thing": thing, "status": status})
    orphans = [f"spare-{j:05d}" for j in range(spec["things_without_certificate"])]
    return {"certificates": certs, "orphan_things": orphans}


def seed(spec: dict) -> None:
    from moto.iot.models import iot_backends

    backend = iot_backends[spec["account"]][spec["region"]]
    plan = fleet_plan(spec)
    now = datetime.now(UTC)
    names = sorted({p for c in plan["certificates"] for p in c["policies"]})
    for name in names:
        backend.create_policy(name, json.dumps(POLICY_DOCUMENT))
    for i, item in enumerate(plan["certificates"]):
        pem = ec_certificate_pem(
            f"device-{i}", now - timedelta(days=30), now + timedelta(days=365 + i % 700)
        )
        cert = backend.register_certificate_without_ca(pem, item["status"])
        for name in item["policies"]:
            backend.attach_policy(name, cert.arn)
        if item["thing"]:
            backend.create_thing(item["thing"], None, None)
            backend.attach_thing_principal(item["thing"], cert.arn)
    for name in plan["orphan_things"]:
        backend.create_thing(name, None, None)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--fleet", required=True, help="JSON: see fleet_plan")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    os.environ.setdefault("MOTO_PORT", str(args.port))

    from moto.moto_server.werkzeug_app import MotoRequestHandler
    from werkzeug.serving import run_simple

    from standin.faults import COUNTERS
    from standin.server import make_app

    app = make_app()  # installs the stand-in first: certificate ids depend on it
    seed(json.loads(args.fleet))
    COUNTERS.reset()
    run_simple("127.0.0.1", args.port, app, threaded=True, request_handler=MotoRequestHandler)


if __name__ == "__main__":
    main()
