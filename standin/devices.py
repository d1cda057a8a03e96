"""Simulated devices: things that connect to an account's endpoint, get dropped, reconnect
and answer jobs, so the portal can be tested on "are the devices back?", not only on where
the certificate is.

A device is a thing's client (client id = the thing name) holding one certificate and an
ordered list of endpoint host names, initially its own account's ``iot:Data-ATS`` endpoint.
The host names are names only: nothing resolves or connects to them; the stand-in maps each
back to its account and region (:func:`endpoint_account`).

* Connected while its certificate is ACTIVE in the account that owns the endpoint it uses
  and a policy attached to the certificate there allows ``iot:Connect`` on its client ARN.
* Dropped ``drop_after_seconds`` after its certificate leaves ACTIVE (AWS: "within a few
  minutes"); reactivated before that, it stays connected.
* Reconnects with exponential backoff (``backoff_base_seconds`` doubling up to
  ``backoff_cap_seconds``) and jitter (``jitter``: full, equal or none), trying its
  endpoints in order at each attempt.
* Handles a job of the account it is connected to ``job_answer_seconds`` after the job
  reaches it: stores the ``endpoints`` list of the job document and reports SUCCEEDED
  (FAILED when the document has no such list). Switches: a fraction of devices (or named
  things) that reject jobs, never answer them (the execution stays IN_PROGRESS until its
  timeout), or never reconnect once dropped.

Time is simulated lazily: nothing runs per device. A device's state is advanced to "now"
when it is asked about (GetThingConnectivityData, the Jobs calls, the control endpoint) and
just before any call that changes what it depends on (its certificate's status or policies,
a policy's document, a job's cancellation), so between two advances its conditions are
constant and its history can be computed from timestamps: 10,000 idle devices cost nothing.

Unknowns (AWS does not document them; the stand-in's choices): the disconnect reason of a
device dropped after deactivation (SERVER_INITIATED_DISCONNECT); a refused connection of an
ACTIVE certificate whose policies do not allow iot:Connect is recorded as a disconnection
with AUTH_ERROR, while an unknown or inactive certificate leaves no record (the TLS
handshake fails before AWS knows the client); policy conditions and ``NotAction`` /
``NotResource`` are not evaluated; a device answers a job only while connected to the
job's account.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from moto.iot.models import IoTBackend, iot_backends

JITTERS = ("full", "equal", "none")
TRAITS = ("reject", "silent", "never_reconnect")
DATA_ENDPOINT_TYPES = ("iot:Data-ATS", "iot:Data")
ENDPOINT_TYPES = ("iot:Data-ATS", "iot:Data", "iot:CredentialProvider", "iot:Jobs")
DROP_REASON = "SERVER_INITIATED_DISCONNECT"
REFUSED_REASON = "AUTH_ERROR"
TERMINAL_EXECUTION = frozenset(
    {"SUCCEEDED", "FAILED", "REJECTED", "TIMED_OUT", "REMOVED", "CANCELED"}
)
# A device idle for days with a short backoff cap would make many attempts in one advance;
# past this many it stops counting them one by one (they all failed alike).
MAX_STEPS = 100_000


# --------------------------------------------------------------------------- endpoints

_ENDPOINT_SALT = {
    "iot:Data-ATS": "data",
    "iot:Data": "data",
    "iot:CredentialProvider": "credentials",
    "iot:Jobs": "jobs",
}
_KNOWN_HOSTS: dict[str, tuple[str, str]] = {}
_ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789"


def _prefix(account_id: str, region: str, salt: str) -> str:
    digest = hashlib.sha256(f"{account_id}:{region}:{salt}".encode()).digest()
    return "".join(_ALPHABET[b % len(_ALPHABET)] for b in digest[:14])


def endpoint_address(account_id: str, region: str, endpoint_type: str = "iot:Data-ATS") -> str:
    """The account's endpoint host for ``endpoint_type``: the same on every call (AWS gives
    each account its own prefix per region)."""
    prefix = _prefix(account_id, region, _ENDPOINT_SALT[endpoint_type])
    host = {
        "iot:Data-ATS": f"{prefix}-ats.iot.{region}.amazonaws.com",
        "iot:Data": f"{prefix}.iot.{region}.amazonaws.com",
        "iot:CredentialProvider": f"{prefix}.credentials.iot.{region}.amazonaws.com",
        "iot:Jobs": f"{prefix}.jobs.iot.{region}.amazonaws.com",
    }[endpoint_type]
    if endpoint_type in DATA_ENDPOINT_TYPES:
        _KNOWN_HOSTS[host] = (account_id, region)
    return host


def endpoint_account(host: str) -> tuple[str, str] | None:
    """The (account, region) whose data endpoint ``host`` is, or None (unknown host)."""
    host = host.strip().lower()
    if host not in _KNOWN_HOSTS:
        for account_id, region, _backend in list(iot_backends.iter_backends()):
            for endpoint_type in DATA_ENDPOINT_TYPES:
                endpoint_address(account_id, region, endpoint_type)
    return _KNOWN_HOSTS.get(host)


# --------------------------------------------------------------------------- settings


def _number(data: dict[str, Any], name: str, default: float, low: float = 0.0) -> float:
    value = data.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or value < low:
        raise ValueError(f"{name} must be a number >= {low:g}")
    return float(value)


def _fraction(data: dict[str, Any], name: str) -> float:
    value = data.get(name, 0.0)
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
        raise ValueError(f"{name} must be a number between 0 and 1")
    return float(value)


@dataclass(frozen=True)
class DeviceSettings:
    """How the simulated devices behave. ``enabled`` gives every thing with a certificate
    attached a device (those attached before, and every later attachment)."""

    enabled: bool = False
    drop_after_seconds: float = 60.0
    backoff_base_seconds: float = 1.0
    backoff_cap_seconds: float = 60.0
    jitter: str = "full"
    job_answer_seconds: float = 1.0
    # A job's timeoutConfig is in minutes (1 to 10080); benchmarks shorten the minute.
    seconds_per_timeout_minute: float = 60.0
    reject_fraction: float = 0.0
    silent_fraction: float = 0.0
    never_reconnect_fraction: float = 0.0
    # Named things with a trait, on top of the fractions: {"sensor-7": ["never_reconnect"]}.
    traits: dict[str, tuple[str, ...]] = field(default_factory=dict)
    seed: int = 0

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> DeviceSettings:
        data = dict(data or {})
        unknown = set(data) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown device settings: {sorted(unknown)}")
        enabled = data.get("enabled", False)
        if not isinstance(enabled, bool):
            raise ValueError("enabled must be true or false")
        jitter = data.get("jitter", "full")
        if jitter not in JITTERS:
            raise ValueError(f"jitter must be one of {', '.join(JITTERS)}")
        seed = data.get("seed", 0)
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ValueError("seed must be an integer")
        traits = data.get("traits") or {}
        if not isinstance(traits, dict):
            raise ValueError("traits must map thing names to lists of traits")
        for name, values in traits.items():
            if isinstance(values, str) or not all(v in TRAITS for v in values):
                raise ValueError(f"traits of {name!r} must be a list of {', '.join(TRAITS)}")
        settings = cls(
            enabled=enabled,
            drop_after_seconds=_number(data, "drop_after_seconds", 60.0),
            backoff_base_seconds=_number(data, "backoff_base_seconds", 1.0, 0.001),
            backoff_cap_seconds=_number(data, "backoff_cap_seconds", 60.0, 0.001),
            jitter=jitter,
            job_answer_seconds=_number(data, "job_answer_seconds", 1.0),
            seconds_per_timeout_minute=_number(data, "seconds_per_timeout_minute", 60.0, 0.001),
            reject_fraction=_fraction(data, "reject_fraction"),
            silent_fraction=_fraction(data, "silent_fraction"),
            never_reconnect_fraction=_fraction(data, "never_reconnect_fraction"),
            traits={str(k): tuple(v) for k, v in traits.items()},
            seed=seed,
        )
        if settings.backoff_cap_seconds < settings.backoff_base_seconds:
            raise ValueError("backoff_cap_seconds must be >= backoff_base_seconds")
        return settings

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["traits"] = {k: list(v) for k, v in self.traits.items()}
        return out


# --------------------------------------------------------------------------- one device


def _unit(*parts: Any) -> float:
    """A number in [0, 1) fixed by ``parts``: the same draw however often state is computed."""
    digest = hashlib.sha256(repr(parts).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def _at(seconds: float | None) -> datetime | None:
    """Device-clock seconds as the naive UTC datetime moto answers with."""
    if seconds is None:
        return None
    return datetime.fromtimestamp(seconds, UTC).replace(tzinfo=None)


@dataclass
class Device:
    region: str
    client_id: str
    certificate_id: str
    home: str
    endpoints: list[str]
    created: float
    evaluated_at: float
    account: str | None = None  # connected to this account, through ``endpoint``
    endpoint: str | None = None
    since: float | None = None  # when it connected, or was dropped
    drop_at: float | None = None
    disconnect_reason: str | None = None
    next_attempt: float | None = None
    attempt: int = 0
    outages: int = 0
    # Per account: the connectivity data AWS keeps there for this client id.
    records: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.region, self.client_id, self.certificate_id)

    def to_dict(self, fleet: DeviceFleet) -> dict[str, Any]:
        return {
            "thing": self.client_id,
            "region": self.region,
            "certificate_id": self.certificate_id,
            "home": self.home,
            "endpoints": list(self.endpoints),
            "connected": self.account is not None,
            "account": self.account,
            "endpoint": self.endpoint,
            "since": _iso(self.since),
            "disconnect_reason": self.disconnect_reason,
            "next_attempt": _iso(self.next_attempt),
            "attempts": self.attempt,
            "traits": sorted(fleet.traits(self)),
            "records": {
                account: {**record, "timestamp": _iso(record["timestamp"])}
                for account, record in self.records.items()
            },
        }


def _iso(seconds: float | None) -> str | None:
    at = _at(seconds)
    return at.isoformat() + "Z" if at is not None else None


# --------------------------------------------------------------------------- policies


def _as_list(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    return [v for v in value if isinstance(v, str)]


_VARIABLES = re.compile(r"\$\{iot:(ClientId|Connection\.Thing\.ThingName)\}")


def _resource_matches(pattern: str, resource: str, client_id: str) -> bool:
    pattern = _VARIABLES.sub(lambda _m: client_id, pattern)
    return fnmatch.fnmatchcase(resource, pattern)


def allows_connect(documents: Iterable[Any], client_arn: str, client_id: str) -> bool:
    """Whether these policy documents allow ``iot:Connect`` on ``client_arn`` (an explicit
    Deny wins). Conditions, NotAction and NotResource are not evaluated."""
    allowed = False
    for document in documents:
        try:
            parsed = json.loads(document) if isinstance(document, str) else document
        except ValueError:
            continue
        statements = parsed.get("Statement", []) if isinstance(parsed, dict) else []
        if isinstance(statements, dict):
            statements = [statements]
        for statement in statements:
            if not isinstance(statement, dict):
                continue
            actions = _as_list(statement.get("Action"))
            if not any(fnmatch.fnmatchcase("iot:connect", a.lower()) for a in actions):
                continue
            resources = _as_list(statement.get("Resource"))
            if not any(_resource_matches(r, client_arn, client_id) for r in resources):
                continue
            if statement.get("Effect") == "Deny":
                return False
            if statement.get("Effect") == "Allow":
                allowed = True
    return allowed


# --------------------------------------------------------------------------- the fleet


def _backend(account_id: str, region: str) -> IoTBackend | None:
    account_backends = dict.get(iot_backends, account_id)
    if account_backends is None:
        return None
    return dict.get(account_backends, region)


def _thing_name(thing_arn: str) -> str:
    return thing_arn.rsplit("/", 1)[-1]


class DeviceFleet:
    """Every simulated device, indexed by certificate and by client id. Callers hold the
    stand-in's state lock (standin.iot.STATE_LOCK): devices read and write the registries."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self._lock = threading.RLock()
        self.settings = DeviceSettings()
        self._devices: dict[tuple[str, str, str], Device] = {}
        self._by_cert: dict[tuple[str, str], list[Device]] = {}
        self._by_client: dict[tuple[str, str], list[Device]] = {}

    # ------------------------------------------------------------ configuration

    def configure(self, data: dict[str, Any] | DeviceSettings | None = None) -> DeviceSettings:
        settings = data if isinstance(data, DeviceSettings) else DeviceSettings.from_dict(data)
        with self._lock:
            was = self.settings.enabled
            self.settings = settings
            if not settings.enabled:
                self._forget_all()
            elif not was:
                self._adopt_existing()
        return settings

    def clear(self) -> None:
        with self._lock:
            self.settings = DeviceSettings()
            self._forget_all()
            self.clock = time.time

    def _forget_all(self) -> None:
        self._devices, self._by_cert, self._by_client = {}, {}, {}

    def now(self) -> float:
        return self.clock()

    def traits(self, device: Device) -> set[str]:
        s = self.settings
        out = set(s.traits.get(device.client_id, ()))
        for trait, fraction in (
            ("reject", s.reject_fraction),
            ("silent", s.silent_fraction),
            ("never_reconnect", s.never_reconnect_fraction),
        ):
            if fraction and _unit(s.seed, trait, device.client_id) < fraction:
                out.add(trait)
        return out

    # ------------------------------------------------------------ devices

    def _adopt_existing(self) -> None:
        for _account, _region, backend in list(iot_backends.iter_backends()):
            for principal_arn, thing_name in list(backend.principal_things):
                self.attached(backend, thing_name, principal_arn)

    def attached(self, backend: IoTBackend, thing_name: str, principal_arn: str) -> None:
        """A certificate was attached to a thing: if its device does not exist yet, it is
        switched on now, with the account's endpoint."""
        if not self.settings.enabled or ":cert/" not in principal_arn:
            return
        certificate_id = principal_arn.rsplit("/", 1)[-1]
        key = (backend.region_name, thing_name, certificate_id)
        with self._lock:
            if key in self._devices:
                return
            now = self.now()
            device = Device(
                region=backend.region_name,
                client_id=thing_name,
                certificate_id=certificate_id,
                home=backend.account_id,
                endpoints=[endpoint_address(backend.account_id, backend.region_name)],
                created=now,
                evaluated_at=now,
                next_attempt=now,  # switched on: it tries to connect right away
            )
            self._devices[key] = device
            self._by_cert.setdefault((device.region, certificate_id), []).append(device)
            self._by_client.setdefault((device.region, thing_name), []).append(device)
            self._advance(device, now)

    def devices(self, thing: str | None = None) -> list[Device]:
        with self._lock:
            now = self.now()
            chosen = [d for d in self._devices.values() if thing is None or d.client_id == thing]
            for device in chosen:
                self._advance(device, now)
            return sorted(chosen, key=lambda d: d.key)

    def snapshot(self, thing: str | None = None) -> dict[str, Any]:
        return {
            "settings": self.settings.to_dict(),
            "devices": [d.to_dict(self) for d in self.devices(thing)],
        }

    def touch_certificate(self, region: str, certificate_id: str | None) -> None:
        """Bring the certificate's devices up to now before its state changes."""
        if not certificate_id:
            return
        with self._lock:
            now = self.now()
            for device in self._by_cert.get((region, certificate_id), []):
                self._advance(device, now)

    def touch_clients(self, region: str, client_ids: Iterable[str]) -> None:
        with self._lock:
            now = self.now()
            for client_id in client_ids:
                for device in self._by_client.get((region, client_id), []):
                    self._advance(device, now)

    def connectivity(self, account_id: str, region: str, thing_name: str) -> dict[str, Any]:
        """What GetThingConnectivityData answers in ``account_id`` for ``thing_name``."""
        with self._lock:
            now = self.now()
            latest: dict[str, Any] | None = None
            for device in self._by_client.get((region, thing_name), []):
                self._advance(device, now)
                record = device.records.get(account_id)
                if record and (latest is None or record["timestamp"] >= latest["timestamp"]):
                    latest = record
        answer: dict[str, Any] = {"thingName": thing_name, "connected": False}
        if latest is not None:
            answer["connected"] = latest["connected"]
            answer["timestamp"] = _at(latest["timestamp"])
            if not latest["connected"] and latest["reason"]:
                answer["disconnectReason"] = latest["reason"]
        return answer

    # ------------------------------------------------------------ simulation

    def _refusal(self, device: Device, host: str) -> tuple[str | None, str | None]:
        """(account, None) when the device can connect to ``host`` now; (account or None,
        reason or None) when not: the reason when AWS records the refusal."""
        owner = endpoint_account(host)
        if owner is None or owner[1] != device.region:
            return None, "unknown host"
        account_id, region = owner
        backend = _backend(account_id, region)
        cert = backend.certificates.get(device.certificate_id) if backend else None
        if backend is None or cert is None or cert.status != "ACTIVE":
            return None, "certificate"
        client_arn = f"arn:{backend.partition}:iot:{region}:{account_id}:client/{device.client_id}"
        # By policy name (a fleet has few policies and many attachments): no scan of every
        # attachment in the account on each connection attempt.
        attached = backend.principal_policies
        documents = [
            policy.document
            for name, policy in list(backend.policies.items())
            if (cert.arn, name) in attached
        ]
        if allows_connect(documents, client_arn, device.client_id):
            return account_id, None
        return account_id, REFUSED_REASON

    def _certificate_active(self, device: Device, account_id: str) -> bool:
        backend = _backend(account_id, device.region)
        cert = backend.certificates.get(device.certificate_id) if backend else None
        return cert is not None and cert.status == "ACTIVE"

    def _delay(self, device: Device, attempt: int) -> float:
        s = self.settings
        ceiling = min(s.backoff_cap_seconds, s.backoff_base_seconds * 2 ** min(attempt - 1, 60))
        draw = _unit(s.seed, "delay", device.key, device.outages, attempt)
        if s.jitter == "full":
            return ceiling * draw
        if s.jitter == "equal":
            return ceiling / 2 + ceiling / 2 * draw
        return ceiling

    def _record(self, device: Device, account_id: str, at: float, connected: bool, reason=None):
        device.records[account_id] = {"connected": connected, "timestamp": at, "reason": reason}

    def _advance(self, device: Device, now: float) -> None:
        """Play the device's history from ``evaluated_at`` to ``now``: what it depends on in
        AWS has not changed in between (see the module docstring)."""
        start = device.evaluated_at
        if now < start:
            return
        for _ in range(MAX_STEPS):
            event = self._next_event(device, start, now)
            if event is None:
                break
            at, apply = event
            apply(at)
        device.evaluated_at = now

    def _next_event(
        self, device: Device, start: float, now: float
    ) -> tuple[float, Callable[[float], None]] | None:
        events: list[tuple[float, Callable[[float], None]]] = []
        if device.account is not None:
            if self._certificate_active(device, device.account):
                device.drop_at = None
            elif device.drop_at is None:
                dropped_from = max(start, device.since or start)
                device.drop_at = dropped_from + self.settings.drop_after_seconds
            if device.drop_at is not None and device.drop_at <= now:
                events.append((device.drop_at, lambda at: self._drop(device, at)))
            events.extend(self._job_events(device, start, now))
        elif device.next_attempt is not None and device.next_attempt <= now:
            events.append((device.next_attempt, lambda at: self._attempt(device, at)))
        events.extend(self._timeouts(device, now))
        if not events:
            return None
        return min(events, key=lambda e: e[0])

    def _drop(self, device: Device, at: float) -> None:
        assert device.account is not None
        self._record(device, device.account, at, False, DROP_REASON)
        for _job, execution in self._executions(device, device.account):
            if execution.status == "IN_PROGRESS":
                execution.standin_answer_at = None  # lost with the connection
        device.account = device.endpoint = None
        device.since, device.drop_at = at, None
        device.disconnect_reason = DROP_REASON
        device.outages += 1
        device.attempt = 0
        if "never_reconnect" in self.traits(device):
            device.next_attempt = None
        else:
            device.attempt = 1
            device.next_attempt = at + self._delay(device, 1)

    def _attempt(self, device: Device, at: float) -> None:
        for host in device.endpoints:
            account_id, reason = self._refusal(device, host)
            if account_id is not None and reason is None:
                device.account, device.endpoint = account_id, host
                device.since, device.next_attempt = at, None
                device.disconnect_reason, device.attempt = None, 0
                self._record(device, account_id, at, True)
                return
            if account_id is not None and reason:
                self._record(device, account_id, at, False, reason)
                device.disconnect_reason = reason
        device.attempt += 1
        device.next_attempt = at + self._delay(device, device.attempt)

    # ------------------------------------------------------------ jobs

    def _executions(self, device: Device, account_id: str) -> Iterator[tuple[Any, Any]]:
        backend = _backend(account_id, device.region)
        if backend is None:
            return
        for job_id in getattr(backend, "standin_thing_jobs", {}).get(device.client_id, []):
            job = backend.jobs.get(job_id)
            execution = backend.job_executions.get((job_id, device.client_id))
            if job is not None and execution is not None:
                yield job, execution

    def _job_events(
        self, device: Device, start: float, now: float
    ) -> list[tuple[float, Callable[[float], None]]]:
        assert device.account is not None
        events: list[tuple[float, Callable[[float], None]]] = []
        for job, execution in self._executions(device, device.account):
            if execution.status == "QUEUED" and job.status == "IN_PROGRESS":
                dispatch = getattr(execution, "standin_dispatch_at", start)
                at = max(dispatch, device.since or start, start)
                if at <= now:
                    events.append((at, lambda t, e=execution: self._deliver(device, e, t)))
            elif execution.status == "IN_PROGRESS":
                answer_at = getattr(execution, "standin_answer_at", None)
                if answer_at is None and "silent" not in self.traits(device):
                    # It came back to the job's account with the job still to answer.
                    answer_at = execution.standin_answer_at = (
                        max(device.since or start, start) + self.settings.job_answer_seconds
                    )
                if answer_at is not None and answer_at <= now:
                    events.append(
                        (answer_at, lambda t, e=execution, j=job: self._answer(device, j, e, t))
                    )
        return events

    def _deliver(self, device: Device, execution: Any, at: float) -> None:
        execution.status = "IN_PROGRESS"
        execution.started_at = execution.last_updated_at = _at(at)
        execution.standin_started = at
        execution.version_number += 1
        silent = "silent" in self.traits(device)
        execution.standin_answer_at = None if silent else at + self.settings.job_answer_seconds

    def _answer(self, device: Device, job: Any, execution: Any, at: float) -> None:
        if execution.status != "IN_PROGRESS":
            return
        if device.account is None or device.account != job.account_id:
            execution.standin_answer_at = None  # lost with the connection; answered later
            return
        if "reject" in self.traits(device):
            status, details = "REJECTED", {"reason": "the device rejected the job"}
        else:
            endpoints = job_endpoints(job.document)
            if endpoints is None:
                status = "FAILED"
                details = {"reason": "the job document has no endpoints list"}
            else:
                status, details = "SUCCEEDED", {"endpoints": ",".join(endpoints)}
                device.endpoints = endpoints
        execution.status = status
        execution.status_details_map = details
        execution.last_updated_at = _at(at)
        execution.version_number += 1
        execution.standin_answer_at = None

    def _timeouts(self, device: Device, now: float) -> list[tuple[float, Callable[[float], None]]]:
        events: list[tuple[float, Callable[[float], None]]] = []
        for account_id in {device.home, device.account, *device.records} - {None}:
            for job, execution in self._executions(device, account_id):
                deadline = execution_deadline(job, execution, self.settings)
                if execution.status == "IN_PROGRESS" and deadline is not None and deadline <= now:
                    events.append((deadline, lambda t, e=execution: time_out(e, t)))
        return events


def execution_deadline(job: Any, execution: Any, settings: DeviceSettings) -> float | None:
    minutes = (job.timeout_config or {}).get("inProgressTimeoutInMinutes")
    started = getattr(execution, "standin_started", None)
    if not minutes or started is None:
        return None
    return started + float(minutes) * settings.seconds_per_timeout_minute


def time_out(execution: Any, at: float) -> None:
    execution.status = "TIMED_OUT"
    execution.last_updated_at = _at(at)
    execution.version_number += 1
    execution.standin_answer_at = None


def job_endpoints(document: Any) -> list[str] | None:
    """The ordered endpoint host names a job document gives the device:
    ``{"endpoints": ["<target>-ats.iot.<region>.amazonaws.com", "<source>-ats..."]}``."""
    try:
        parsed = json.loads(document) if isinstance(document, str) else None
    except ValueError:
        return None
    endpoints = parsed.get("endpoints") if isinstance(parsed, dict) else None
    if (
        not isinstance(endpoints, list)
        or not endpoints
        or not all(isinstance(e, str) and e.strip() for e in endpoints)
    ):
        return None
    return [e.strip().lower() for e in endpoints]


DEVICES = DeviceFleet()

__all__ = [
    "DEVICES",
    "DeviceFleet",
    "DeviceSettings",
    "allows_connect",
    "endpoint_account",
    "endpoint_address",
    "job_endpoints",
]
