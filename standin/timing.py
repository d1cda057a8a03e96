"""Real AWS timing the stand-in can reproduce on request.

- ``outgoing_lag_seconds``: ListOutgoingCertificates omits certificates transferred in the
  last N seconds (a listing that lags behind the transfer).
- ``detach_propagation_seconds``: a detached thing still shows as attached for N seconds
  (AWS documents DetachThingPrincipal as asynchronous): ListPrincipalThings lists it,
  ListThingPrincipals lists the certificate on the thing, and TransferCertificate refuses with
  TransferConflictException meanwhile.
- ``lose_answers``: ``{operation: n}``: the next n calls of the operation are carried out,
  then answered with ServiceUnavailableException, as when a response is lost on the way back.

moto's reset clears it, like the counters and faults.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from moto.core.utils import utcnow


@dataclass
class Timing:
    outgoing_lag_seconds: float = 0.0
    detach_propagation_seconds: float = 0.0
    lose_answers: dict[str, int] = field(default_factory=dict)
    # (account, region, principal, thing) -> monotonic time the detachment becomes visible
    detaching: dict[tuple[str, str, str, str], float] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def configure(
        self,
        outgoing_lag_seconds: float = 0.0,
        detach_propagation_seconds: float = 0.0,
        lose_answers: dict[str, int] | None = None,
    ) -> dict[str, Any]:
        for name, value in (
            ("outgoing_lag_seconds", outgoing_lag_seconds),
            ("detach_propagation_seconds", detach_propagation_seconds),
        ):
            if not isinstance(value, int | float) or value < 0:
                raise ValueError(f"{name} must be a number >= 0")
        with self.lock:
            self.outgoing_lag_seconds = float(outgoing_lag_seconds)
            self.detach_propagation_seconds = float(detach_propagation_seconds)
            self.lose_answers = {str(k): int(v) for k, v in (lose_answers or {}).items()}
        return self.to_dict()

    def clear(self) -> None:
        with self.lock:
            self.outgoing_lag_seconds = 0.0
            self.detach_propagation_seconds = 0.0
            self.lose_answers = {}
            self.detaching = {}

    def to_dict(self) -> dict[str, Any]:
        return {
            "outgoing_lag_seconds": self.outgoing_lag_seconds,
            "detach_propagation_seconds": self.detach_propagation_seconds,
            "lose_answers": dict(self.lose_answers),
        }

    # ------------------------------------------------------------------ hooks for iot.py

    def lose_answer(self, operation: str) -> bool:
        """True (once per configured loss) when this call's answer is to be lost."""
        with self.lock:
            left = self.lose_answers.get(operation, 0)
            if left <= 0:
                return False
            self.lose_answers[operation] = left - 1
            return True

    def listed_as_outgoing(self, transfer_date) -> bool:
        if not self.outgoing_lag_seconds or transfer_date is None:
            return True
        return transfer_date <= utcnow() - timedelta(seconds=self.outgoing_lag_seconds)

    def detached(self, account: str, region: str, principal: str, thing: str) -> None:
        if self.detach_propagation_seconds:
            with self.lock:
                self.detaching[(account, region, principal, thing)] = (
                    time.monotonic() + self.detach_propagation_seconds
                )

    def still_attached(self, account: str, region: str, principal: str) -> list[str]:
        """Things detached from ``principal`` whose detachment has not propagated yet."""
        return sorted(t for (p, t) in self._propagating(account, region) if p == principal)

    def still_attached_to(self, account: str, region: str, thing: str) -> list[str]:
        """Principals detached from ``thing`` whose detachment has not propagated yet: the
        same detachments, seen from the thing's side."""
        return sorted(p for (p, t) in self._propagating(account, region) if t == thing)

    def _propagating(self, account: str, region: str) -> list[tuple[str, str]]:
        now = time.monotonic()
        with self.lock:
            for key in [k for k, until in self.detaching.items() if until <= now]:
                del self.detaching[key]
            return [(p, t) for (a, r, p, t) in self.detaching if (a, r) == (account, region)]


TIMING = Timing()
