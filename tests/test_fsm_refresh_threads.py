"""Found by bench/migration.py (issue 14): in a worker with the threads pool, 8 of 1,000
pre-accepted moves died in workflow.landing.land with AttributeError('Direct status
modification is not allowed') at ``transfer.refresh_from_db()``, leaving the landing
'landing' until the sweep took it over after the lease (about 5 minutes of extra downtime).

django-fsm's FSMModelMixin.refresh_from_db switches the shared FSMField's ``protected`` flag
off and back on around the fetch: not thread-safe. Transfer.refresh_from_db now refreshes
without touching the flag (it drops the instance's own status first)."""

from __future__ import annotations

import sys
import threading

import pytest
from django.db import connection

from tests.conftest import TARGET
from transfers.models import Transfer


@pytest.mark.django_db(transaction=True)
def test_transfers_refresh_from_db_in_threads(source, requester):
    pk = Transfer.objects.create(
        source=source,
        region="us-east-1",
        certificate_id="a" * 64,
        certificate_arn="arn",
        target_account_id=TARGET,
        requester=requester,
        reason="r",
    ).pk
    errors: list[Exception] = []

    def work() -> None:
        try:
            row = Transfer.objects.get(pk=pk)
            for _ in range(100):
                try:
                    row.refresh_from_db()
                except AttributeError as exc:
                    errors.append(exc)
        finally:
            connection.close()

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads often: the race shows in a second
    try:
        threads = [threading.Thread(target=work) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        sys.setswitchinterval(interval)
    assert errors == []
