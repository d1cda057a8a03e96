"""A worker's leases on the transfers it works on, kept alive while it works.

A worker takes a row's lease (``Transfer.lease_until``) before it executes, lands or
restores it; another worker that finds the lease in the future leaves the row alone, and
the reconciler and the sweeps send the row's work again once the lease has run out. While
the holder works, a thread of its process renews every lease it holds each
TRANSFER_LEASE_SECONDS / 3 seconds. So a long step (a detachment that takes minutes to
propagate, a wait for the rate limiter) never loses its row to a second worker, and a
killed worker's rows are free one short lease later (the broker hands its messages back at
once) instead of after a lease long enough for the slowest step.

A lease has an owner: taking it writes a new token (``Transfer.lease_token``), and renewing,
releasing and every progress write match that token. A worker that stalled past its lease
(a paused process, a blocked write) while another took the row finds its token gone at its
next write, before its next AWS change, and stops (``LeaseLost``): one transfer is never
worked by two workers, and no stale write erases what the new holder recorded.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Q
from django.utils import timezone

from transfers.models import Transfer

log = logging.getLogger(__name__)

_held: Counter[tuple[int, str]] = Counter()
_lock = threading.Lock()
_renewer: threading.Thread | None = None


class LeaseLost(Exception):
    """The row no longer carries this worker's lease: another worker took it (or it was
    released). The worker stops: no more writes to the row, no more AWS calls for it."""

    def __init__(self, pk: int) -> None:
        self.pk = pk
        super().__init__(f"transfer {pk}: the lease was taken by another worker")


def until():
    """When a lease taken or renewed now runs out."""
    return timezone.now() + timedelta(seconds=settings.TRANSFER_LEASE_SECONDS)


def new_token() -> str:
    """The owner of a lease being taken: write it with ``until()``."""
    return uuid.uuid4().hex


def _mine(pk: int, token: str):
    # A lease is held while its token is on the row and it was not released.
    return Transfer.objects.filter(pk=pk, lease_token=token, lease_until__isnull=False)


def write(pk: int, token: str, **fields) -> None:
    """Save progress on the row while this lease is held; LeaseLost when it is not."""
    if not _mine(pk, token).update(**fields):
        raise LeaseLost(pk)


def confirm(pk: int, token: str) -> None:
    """Before an AWS call that changes something: renew the lease if it is still ours, so
    no other worker can take the row for a whole lease; LeaseLost when it is not."""
    write(pk, token, lease_until=until())


def append(pk: int, token: str, field: str, value: str) -> list[str]:
    """Add ``value`` to the row's list ``field`` (a name detached, a step done), read afresh
    under the row lock: a name another worker recorded is never written over. Returns the
    list. LeaseLost when the lease is no longer held."""
    with transaction.atomic():
        current = _mine(pk, token).select_for_update().values_list(field, flat=True).first()
        if current is None:
            raise LeaseLost(pk)
        if value not in current:
            current = [*current, value]
            Transfer.objects.filter(pk=pk).update(**{field: current, "updated": timezone.now()})
    return current


def release(pk: int, token: str, **fields) -> bool:
    """Give the lease up (with ``fields``, the work's last write), only if still ours: a
    stale worker never frees or overwrites the row another holds. False if it was not."""
    return bool(_mine(pk, token).update(lease_until=None, lease_token="", **fields))


def check(row: Transfer, token: str) -> None:
    """For a transition on a locked row: LeaseLost unless this lease is on it."""
    if row.lease_until is None or row.lease_token != token:
        raise LeaseLost(row.pk)


@contextmanager
def kept(pk: int, token: str) -> Iterator[None]:
    """While inside, this process renews the lease it took on transfer ``pk``."""
    with _lock:
        _held[pk, token] += 1
    _start_renewer()
    try:
        yield
    finally:
        with _lock:
            _held[pk, token] -= 1
            if _held[pk, token] <= 0:
                del _held[pk, token]


def held() -> list[int]:
    with _lock:
        return sorted({pk for pk, _token in _held})


def renew() -> int:
    """Push out the leases this process holds, each only while its token is still on the
    row (one taken over by another worker is that worker's; a released lease stays
    released). Returns how many rows were renewed."""
    with _lock:
        leases = list(_held)
    if not leases:
        return 0
    ours = Q()
    for pk, token in leases:
        ours |= Q(pk=pk, lease_token=token)
    return Transfer.objects.filter(ours, lease_until__isnull=False).update(lease_until=until())


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
