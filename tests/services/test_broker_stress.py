"""The default broker (portal/broker.py, no REDIS_URL) under load, with real processes.

Runs bench/broker_stress.py's harness: producer processes publish while `make run`-shaped
Celery workers (prefork, 2 processes, prefetch 1) consume, bad files are dropped into the
queue, and in the second test a worker is killed with SIGKILL and replaced. Each run prints
its report (messages per second, latency percentiles). In the service tier because it takes
about a minute; it needs no service: the broker is files in a temporary folder.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

import broker_stress  # noqa: E402 - after the path


def _run(capsys, **options) -> broker_stress.Result:
    with capsys.disabled():
        print()
        result = broker_stress.run(broker_stress.Options(**options), progress=print)
        print(broker_stress.report(result))
    return result


def test_twenty_thousand_messages_from_four_producers_reach_two_workers_once_each(capsys):
    result = _run(capsys, messages=20_000, producers=4, workers=2, bad=3)

    assert result.crashed == [] and result.producer_failures == []
    assert not result.timed_out
    assert result.processed == 20_000 and result.missing == 0
    assert result.duplicated == 0 and result.runs == 20_000
    # An empty file and two that are not JSON: logged, moved aside, and no worker died.
    assert result.bad_injected == 3 and result.bad_set_aside == 3 and result.bad_logged == 3
    assert result.rate > 0


def test_a_killed_workers_messages_come_back_to_the_worker_that_replaces_it(capsys):
    # Tasks of 50 ms: the workers fall behind, so the killed one holds messages.
    result = _run(capsys, messages=1_000, producers=2, workers=2, bad=0, kill=True, task_ms=50)

    assert result.killed == 1
    assert result.crashed == [] and not result.timed_out
    assert result.missing == 0
    # The replacement found the dead worker's claimed messages and put them back.
    assert result.restored_logged >= 1
    # At least once: only what the dead worker held (2 prefork processes x prefetch 1) or
    # had just finished without acknowledging may run twice.
    assert result.duplicated <= 2
