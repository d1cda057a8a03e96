"""The broker stress test's task (bench/broker_stress.py): record that message N ran.

Each worker process appends "N sent done" to a file of its own (one write per line, opened in
append mode), so the harness can count every message, and every message run twice, without
a database in the way.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from celery import shared_task

if os.environ.get("BROKER_STRESS_KOMBU_FILESYSTEM") == "1":
    # For the comparison run only: kombu's own filesystem transport, as before portal/broker.py.
    from kombu import transport as kombu_transport

    kombu_transport.TRANSPORT_ALIASES["filesystem"] = "kombu.transport.filesystem:Transport"
    kombu_transport._transport_cache.pop("filesystem", None)  # noqa: SLF001


@shared_task(name="broker_stress.record", acks_late=True, ignore_result=True)
def record(n: int, sent: float) -> None:
    time.sleep(float(os.environ.get("BROKER_STRESS_TASK_SECONDS", "0")))  # --task-ms
    path = Path(os.environ["BROKER_STRESS_RESULTS"]) / f"{os.getpid()}.log"
    with path.open("a") as f:
        f.write(f"{n} {sent:.6f} {time.time():.6f}\n")
