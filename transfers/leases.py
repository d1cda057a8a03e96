"""A worker's leases on the transfers it works on, kept alive while it works.

A worker takes a row's lease (``Transfer.lease_until``) before it executes, lands or
restores it; another worker that finds the lease in the future leaves the row alone, and
the reconciler and the sweeps send the row's work again once the lease has run out. While
the holder works, a thread of its process renews every lease it holds each
TRANSFER_LEASE_SECONDS / 3 seconds. So a long step (a detachment that takes minutes to
propagate, a wait for the rate limiter) never loses its row to a second worker, and a
killed worker's rows are free one short lease later (the broker hands its messages back at
once) instead of after a lease long enough for the slowest step.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta

from django.conf import settings
from django.db import connection
from django.utils import timezone

from transfers.models import Transfer

log = logging.getLogger(__name__)

_held: Counter[int] = Counter()
_lock = threading.Lock()
_renewer: threading.Thread | None = None


def until():
    """When a lease taken or renewed now runs out."""
    return timezone.now() + timedelta(seconds=settings.TRANSFER_LEASE_SECONDS)


@contextmanager
def kept(pk: int) -> Iterator[None]:
    """While inside, this process renews the lease it took on transfer ``pk``."""
    with _lock:
        _held[pk] += 1
    _start_renewer()
    try:
        yield
    finally:
        with _lock:
            _held[pk] -= 1
            if _held[pk] <= 0:
                del _held[pk]


def held() -> list[int]:
    with _lock:
        return sorted(_held)


def renew() -> int:
    """Push out the lease of every transfer this process is working on (those still
    leased: a released lease stays released). Returns how many rows were renewed."""
    pks = held()
    if not pks:
        return 0
    return Transfer.objects.filter(pk__in=pks, lease_until__isnull=False).update(
        lease_until=until()
    )


def _start_renewer() -> None:
    global _renewer
    with _lock:
        if _renewer is not None and _renewer.is_alive():
            return
        _renewer = threading.Thread(target=_renew_forever, name="lease-renewer", daemon=True)
        _renewer.start()


def _renew_forever() -> None:
    while True:
        time.sleep(max(1.0, settings.TRANSFER_LEASE_SECONDS / 3))
        if not held():
            continue
        try:
            renew()
        except Exception:  # noqa: BLE001 - a database hiccup: the next round tries again
            log.exception("Could not renew the leases of transfers %s", held())
        finally:
            connection.close()  # this thread's own connection; opened again next round
