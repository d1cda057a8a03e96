"""Fault injection, a per-account request-rate ceiling and call counters.

Everything here is process-global (one stand-in per process) and guarded by locks, because
moto's server answers requests on several threads at once.

* :data:`FAULTS` decides, before an operation runs, whether a call is answered with an
  injected ``ThrottlingException`` / ``ServiceUnavailableException`` instead: at random, or
  above a requests-per-second ceiling per account and region (all its calls together) or
  per account, region and operation (AWS's own quotas: each API of each account-region pair
  has its budget). Off by default.
* :data:`COUNTERS` counts the calls that reached an operation (per operation and per
  ``(operation, certificateId)``, with their outcome) and, separately, the calls that were
  answered by an injected fault, which never reach the operation and never change state.
"""

from __future__ import annotations

import random
import re
import threading
import time
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from .quotas import QUOTAS

THROTTLING = "ThrottlingException"
AWS_ALLOWANCES = "aws"  # rps_per_operation: each API at its AWS allowance (standin.quotas)
UNAVAILABLE = "ServiceUnavailableException"

_SNAKE_PART = re.compile(r"(?:^|_)([a-z0-9])")


def operation_name(name: str) -> str:
    """``transfer_certificate`` or ``TransferCertificate`` -> ``TransferCertificate``."""
    if "_" in name or name[:1].islower():
        return _SNAKE_PART.sub(lambda m: m.group(1).upper(), name)
    return name


@dataclass(frozen=True)
class FaultConfig:
    """What :class:`FaultInjector` injects.

    ``throttle_rate`` and ``unavailable_rate`` are fractions (0..1, together at most 1) of
    calls answered with ``ThrottlingException`` / ``ServiceUnavailableException``.
    ``operations`` limits the faults *and* the rate ceiling to these operation names
    (``None``: every IoT operation). ``rps_per_account`` is a requests-per-second ceiling per
    calling account and region (token bucket, burst = max(1, rps)); calls above it get
    ``ThrottlingException``. ``rps_per_operation`` is the same ceiling per calling account,
    region *and operation*, as AWS applies its per-API quotas (ListThingPrincipals does not
    use up DescribeCertificate's budget, nor us-east-1 eu-west-1's), or ``"aws"``: each API at
    its own AWS allowance (standin.quotas: AWS's default, or the value set in the stand-in's
    Service Quotas; an API without one has no ceiling); both may be set. ``seed`` seeds the
    random generator (``None``: unseeded).
    """

    throttle_rate: float = 0.0
    unavailable_rate: float = 0.0
    operations: frozenset[str] | None = None
    rps_per_account: float | None = None
    seed: int | None = None
    rps_per_operation: float | str | None = None

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> FaultConfig:
        data = dict(data or {})
        unknown = set(data) - {
            "throttle_rate",
            "unavailable_rate",
            "operations",
            "rps_per_account",
            "rps_per_operation",
            "seed",
        }
        if unknown:
            raise ValueError(f"unknown fault settings: {sorted(unknown)}")
        throttle = _rate(data.get("throttle_rate"), "throttle_rate")
        unavailable = _rate(data.get("unavailable_rate"), "unavailable_rate")
        if throttle + unavailable > 1.0:
            raise ValueError("throttle_rate + unavailable_rate must not exceed 1")
        operations = data.get("operations")
        if operations is not None:
            if isinstance(operations, str) or not all(isinstance(o, str) for o in operations):
                raise ValueError("operations must be a list of operation names or null")
            operations = frozenset(operation_name(o) for o in operations)
        rps = _ceiling(data.get("rps_per_account"), "rps_per_account")
        per_operation = data.get("rps_per_operation")
        if per_operation != AWS_ALLOWANCES:
            try:
                per_operation = _ceiling(per_operation, "rps_per_operation")
            except ValueError:
                raise ValueError(
                    f'rps_per_operation must be a positive number, "{AWS_ALLOWANCES}" or null'
                ) from None
        seed = data.get("seed")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise ValueError("seed must be an integer or null")
        return cls(throttle, unavailable, operations, rps, seed, per_operation)

    def to_dict(self) -> dict[str, Any]:
        return {
            "throttle_rate": self.throttle_rate,
            "unavailable_rate": self.unavailable_rate,
            "operations": sorted(self.operations) if self.operations is not None else None,
            "rps_per_account": self.rps_per_account,
            "rps_per_operation": self.rps_per_operation,
            "seed": self.seed,
        }

    @property
    def active(self) -> bool:
        return bool(
            self.throttle_rate
            or self.unavailable_rate
            or self.rps_per_account
            or self.rps_per_operation
        )


def _ceiling(value: Any, name: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise ValueError(f"{name} must be a positive number or null")
    return float(value)


def _rate(value: Any, name: str) -> float:
    if value is None:
        return 0.0
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
        raise ValueError(f"{name} must be a number between 0 and 1")
    return float(value)


class _TokenBucket:
    def __init__(self, rate: float, now: float) -> None:
        self.rate = rate
        self.capacity = max(1.0, rate)
        self.tokens = self.capacity
        self.updated = now

    def has(self, now: float) -> bool:
        self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        return self.tokens >= 1.0

    def take(self, now: float) -> bool:
        if self.has(now):
            self.tokens -= 1.0
            return True
        return False


class FaultInjector:
    """Decides whether a call is answered by an injected fault. Thread-safe."""

    def __init__(self, clock: Any = time.monotonic) -> None:
        self._lock = threading.Lock()
        self._clock = clock
        self._config = FaultConfig()
        self._rng = random.Random()
        self._buckets: dict[tuple[str, str, str], _TokenBucket] = {}

    @property
    def config(self) -> FaultConfig:
        with self._lock:
            return self._config

    def configure(self, config: FaultConfig | dict[str, Any] | None = None, **kwargs: Any) -> None:
        """Replace the whole configuration (unset settings fall back to "off")."""
        if config is None:
            config = FaultConfig.from_dict(kwargs)
        elif isinstance(config, dict):
            config = FaultConfig.from_dict({**config, **kwargs})
        elif kwargs:
            config = FaultConfig.from_dict({**config.to_dict(), **kwargs})
        with self._lock:
            self._config = config
            self._rng = random.Random(config.seed)
            self._buckets = {}

    def clear(self) -> None:
        self.configure(FaultConfig())

    def decide(self, operation: str, account_id: str, region: str = "") -> str | None:
        """The error code to answer instead of running ``operation``, or ``None``.

        The ceilings are kept per account *and region*, as AWS keeps its quotas: each
        account-region pair has its own allowance."""
        with self._lock:
            config = self._config
            if not config.active:
                return None
            if config.operations is not None and operation not in config.operations:
                return None
            # Both ceilings are checked before either bucket is drawn from: a call one of
            # them refuses uses up no token of the other (AWS does not count it either).
            buckets = []
            per_operation = config.rps_per_operation
            if per_operation == AWS_ALLOWANCES:
                per_operation = QUOTAS.allowance(operation)
            for rps, key in (
                (config.rps_per_account, (account_id, region, "")),
                (per_operation, (account_id, region, operation)),
            ):
                if rps is not None:
                    now = self._clock()
                    bucket = self._buckets.get(key)
                    if bucket is None:
                        bucket = self._buckets[key] = _TokenBucket(rps, now)
                    buckets.append((bucket, now))
            if buckets:
                if not all(bucket.has(now) for bucket, now in buckets):
                    return THROTTLING
                for bucket, now in buckets:
                    bucket.take(now)
            if config.throttle_rate or config.unavailable_rate:
                draw = self._rng.random()
                if draw < config.throttle_rate:
                    return THROTTLING
                if draw < config.throttle_rate + config.unavailable_rate:
                    return UNAVAILABLE
            return None


def _outcome() -> dict[str, Any]:
    return {"calls": 0, "ok": 0, "error": 0, "errors": {}}


class CallCounter:
    """Counts calls per operation and per (operation, certificateId). Thread-safe.

    Only calls that reached the operation are counted in ``operations``/``certificates``;
    calls answered by an injected fault are counted in ``faulted`` (by error code) and in
    ``throttled`` (every injected fault, whatever its code, per operation).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._clear()

    def _clear(self) -> None:
        self._operations: dict[str, dict[str, Any]] = defaultdict(_outcome)
        self._certificates: dict[str, dict[str, dict[str, Any]]] = defaultdict(
            lambda: defaultdict(_outcome)
        )
        self._faulted: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))

    def reset(self) -> None:
        with self._lock:
            self._clear()

    def record(self, operation: str, certificate_id: str | None, error_code: str | None) -> None:
        with self._lock:
            targets = [self._operations[operation]]
            if certificate_id:
                targets.append(self._certificates[operation][certificate_id])
            for entry in targets:
                entry["calls"] += 1
                if error_code is None:
                    entry["ok"] += 1
                else:
                    entry["error"] += 1
                    entry["errors"][error_code] = entry["errors"].get(error_code, 0) + 1

    def record_fault(self, operation: str, error_code: str) -> None:
        with self._lock:
            self._faulted[operation][error_code] += 1

    def snapshot(self) -> dict[str, Any]:
        """A JSON-serialisable copy of all counters."""
        with self._lock:
            return {
                "operations": {
                    op: {**entry, "errors": dict(entry["errors"])}
                    for op, entry in self._operations.items()
                },
                "certificates": {
                    op: {
                        cert: {**entry, "errors": dict(entry["errors"])}
                        for cert, entry in per_cert.items()
                    }
                    for op, per_cert in self._certificates.items()
                },
                "faulted": {op: dict(codes) for op, codes in self._faulted.items()},
                "throttled": {op: sum(codes.values()) for op, codes in self._faulted.items()},
            }


def count_from_snapshot(
    snapshot: dict[str, Any],
    operation: str,
    certificate_id: str | None = None,
    outcome: str = "calls",
) -> int:
    """Read one number from :meth:`CallCounter.snapshot` output.

    ``outcome`` is ``"calls"``, ``"ok"``, ``"error"``, an error code (e.g.
    ``"CertificateStateException"``) or ``"throttled"`` (injected faults; per operation only).
    """
    operation = operation_name(operation)
    if outcome == "throttled":
        return snapshot["throttled"].get(operation, 0)
    if certificate_id is None:
        entry = snapshot["operations"].get(operation)
    else:
        entry = snapshot["certificates"].get(operation, {}).get(certificate_id)
    if entry is None:
        return 0
    if outcome in ("calls", "ok", "error"):
        return entry[outcome]
    return entry["errors"].get(outcome, 0)


FAULTS = FaultInjector()
COUNTERS = CallCounter()
