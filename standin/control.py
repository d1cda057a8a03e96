"""Control the stand-in: read call counters, inject faults, and get clients for an account.

In-process (moto decorator mode, or code running inside the server process) use the module
functions; against a running ``python -m standin.server`` use :class:`RemoteControl`, which
has the same methods over HTTP (``/_standin/...`` control endpoints).
"""

from __future__ import annotations

import json
import sys
import threading
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from .devices import DEVICES
from .faults import COUNTERS, FAULTS, count_from_snapshot
from .quotas import QUOTAS

__all__ = [
    "RemoteControl",
    "call_count",
    "calls",
    "clear_faults",
    "client_for_account",
    "configure_devices",
    "devices",
    "faults",
    "reset_counters",
    "set_faults",
    "set_service_quotas",
]


def calls() -> dict[str, Any]:
    """All counters: ``{"operations": {op: {"calls", "ok", "error", "errors": {code: n}}},
    "certificates": {op: {certificateId: {...same...}}}, "faulted": {op: {code: n}},
    "throttled": {op: n}}``. Only calls that reached the operation are in ``operations`` /
    ``certificates``; injected faults are in ``faulted`` / ``throttled``."""
    return COUNTERS.snapshot()


def call_count(operation: str, certificate_id: str | None = None, outcome: str = "calls") -> int:
    """One counter, e.g. ``call_count("TransferCertificate", cert_id, "ok")``. ``outcome``:
    ``calls``, ``ok``, ``error``, an error code, or ``throttled`` (injected faults)."""
    return count_from_snapshot(calls(), operation, certificate_id, outcome)


def reset_counters() -> None:
    COUNTERS.reset()


def set_faults(
    throttle_rate: float = 0.0,
    unavailable_rate: float = 0.0,
    operations: list[str] | None = None,
    rps_per_account: float | None = None,
    seed: int | None = None,
    rps_per_operation: float | str | None = None,
) -> dict[str, Any]:
    """Replace the fault configuration; returns it. ``operations`` (names like
    ``"TransferCertificate"``) limits the faults and the rate ceilings; ``None`` = all.
    ``rps_per_operation``: a ceiling per account, region and API, like AWS's per-API quotas;
    ``"aws"``: each API at its own AWS allowance (standin.quotas)."""
    FAULTS.configure(
        {
            "throttle_rate": throttle_rate,
            "unavailable_rate": unavailable_rate,
            "operations": operations,
            "rps_per_account": rps_per_account,
            "rps_per_operation": rps_per_operation,
            "seed": seed,
        }
    )
    return faults()


def clear_faults() -> None:
    FAULTS.clear()


def set_service_quotas(applied: dict[str, float] | None = None, readable: bool = True) -> None:
    """What ListServiceQuotas answers for AWS IoT: ``applied`` values (API name -> requests per
    second, adjustable APIs only; the others keep AWS's defaults), or AccessDeniedException
    when not ``readable``. Set them before ``set_faults(rps_per_operation="aws")``."""
    QUOTAS.configure(applied, readable)


def faults() -> dict[str, Any]:
    return FAULTS.config.to_dict()


def configure_devices(**settings: Any) -> dict[str, Any]:
    """Replace the simulated devices' settings (standin.devices.DeviceSettings; omitted
    settings take their defaults); returns them. ``enabled=True`` gives every thing with a
    certificate a device; ``enabled=False`` forgets every device."""
    from .iot import STATE_LOCK

    with STATE_LOCK:
        return DEVICES.configure(settings).to_dict()


def devices(thing: str | None = None) -> dict[str, Any]:
    """``{"settings": {...}, "devices": [{"thing", "connected", "account", "endpoint",
    "endpoints", "since", "disconnect_reason", "records", ...}]}``, brought up to now; only
    the devices of ``thing`` when given."""
    from .iot import STATE_LOCK

    with STATE_LOCK:
        return DEVICES.snapshot(thing)


class RemoteControl:
    """The same controls against a running stand-in server, e.g.
    ``RemoteControl("http://127.0.0.1:5000")``."""

    def __init__(self, base_url: str, timeout: float = 10.0) -> None:
        parsed = urllib.parse.urlsplit(base_url)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise ValueError(f"not an http(s) URL: {base_url!r}")
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout

    def _request(self, method: str, path: str, payload: Any = None) -> Any:
        data = None if payload is None else json.dumps(payload).encode("utf-8")
        request = urllib.request.Request(  # noqa: S310 - scheme checked in __init__
            self.base_url + path,
            data=data,
            method=method,
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:  # noqa: S310
                body = response.read()
        except urllib.error.HTTPError as error:
            detail = error.read().decode("utf-8", "replace")
            raise RuntimeError(f"{method} {path} answered {error.code}: {detail}") from error
        return json.loads(body) if body else None

    def health(self) -> dict[str, Any]:
        return self._request("GET", "/_standin/health")

    def calls(self) -> dict[str, Any]:
        return self._request("GET", "/_standin/calls")

    def call_count(
        self, operation: str, certificate_id: str | None = None, outcome: str = "calls"
    ) -> int:
        return count_from_snapshot(self.calls(), operation, certificate_id, outcome)

    def reset_counters(self) -> None:
        self._request("POST", "/_standin/reset-counters", {})

    def set_faults(
        self,
        throttle_rate: float = 0.0,
        unavailable_rate: float = 0.0,
        operations: list[str] | None = None,
        rps_per_account: float | None = None,
        seed: int | None = None,
        rps_per_operation: float | str | None = None,
    ) -> dict[str, Any]:
        return self._request(
            "POST",
            "/_standin/faults",
            {
                "throttle_rate": throttle_rate,
                "unavailable_rate": unavailable_rate,
                "operations": operations,
                "rps_per_account": rps_per_account,
                "rps_per_operation": rps_per_operation,
                "seed": seed,
            },
        )

    def clear_faults(self) -> None:
        self._request("POST", "/_standin/faults", {})

    def faults(self) -> dict[str, Any]:
        return self._request("GET", "/_standin/faults")

    def configure_devices(self, **settings: Any) -> dict[str, Any]:
        return self._request("POST", "/_standin/devices", settings)

    def devices(self, thing: str | None = None) -> dict[str, Any]:
        query = "?" + urllib.parse.urlencode({"thing": thing}) if thing else ""
        return self._request("GET", "/_standin/devices" + query)

    def reset(self) -> None:
        """moto's own reset (all AWS state), which also clears counters and faults."""
        self._request("POST", "/moto-api/reset", {})


_SESSION_LOCK = threading.Lock()
_SESSIONS: dict[bool, Any] = {}


def _shared_session() -> Any:
    """One boto3 session per process (creating a session reloads the service models, ~0.1 s).
    A new one once moto is imported, so moto's decorator can see its clients."""
    import boto3

    key = "moto.core.models" in sys.modules
    if key not in _SESSIONS:
        _SESSIONS[key] = boto3.session.Session()
    return _SESSIONS[key]


def client_for_account(
    account_id: str,
    region: str,
    endpoint_url: str | None = None,
    service: str = "iot",
    *,
    config: Any = None,
) -> Any:
    """A boto3 client acting as ``account_id`` in the stand-in.

    Assumes ``arn:aws:iam::<account_id>:role/standin`` through (stand-in) STS; moto maps the
    returned keys to that account, and the role does not need to exist. The STS call uses
    fake credentials on purpose: pointed at real AWS by mistake, it fails instead of assuming
    a real role. ``config`` is passed on to the client (e.g.
    ``botocore.config.Config(retries={"total_max_attempts": 1})``).
    """
    with _SESSION_LOCK:  # boto3 sessions are not thread-safe
        session = _shared_session()
        sts = session.client(
            "sts",
            region_name=region,
            endpoint_url=endpoint_url,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )
    assumed = sts.assume_role(
        RoleArn=f"arn:aws:iam::{account_id}:role/standin",
        RoleSessionName=f"standin-{account_id}",
    )["Credentials"]
    with _SESSION_LOCK:
        return session.client(
            service,
            region_name=region,
            endpoint_url=endpoint_url,
            aws_access_key_id=assumed["AccessKeyId"],
            aws_secret_access_key=assumed["SecretAccessKey"],
            aws_session_token=assumed["SessionToken"],
            config=config,
        )
