"""Certificate transfers between accounts, on top of moto's IoT backend.

:func:`install` patches ``moto.iot.models.IoTBackend``, ``FakeCertificate`` and
``moto.iot.responses.IoTResponse`` in place (moto's URL map and its server both point at
``IoTResponse.dispatch``, and dispatch looks operations up by name on the class, so new
methods are found in decorator and server mode alike). It is idempotent.

State model (all of it on the ``FakeCertificate`` objects, so moto's reset clears it):

* ``owner``: the account whose registry (backend) holds the certificate.
* ``standin_transfer_to``: the target account while a transfer is pending.
* ``standin_last_transfer_to``: the target of the last transfer that was rejected or cancelled.
* ``standin_previous_owner``: the account the certificate was accepted from.
* ``transfer_data``: transferMessage, transferDate, acceptDate, rejectDate, rejectReason.

A pending certificate stays in the source's registry (status PENDING_TRANSFER); the target sees
it by looking at the other accounts' registries of the same region. On accept it moves to the
target's registry with a new ARN.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from typing import Any, TypeVar

from cryptography import x509
from moto.core import responses as moto_responses
from moto.core.base_backend import BackendDict
from moto.core.responses import ActionResult, BaseResponse, EmptyResult
from moto.core.utils import utcnow
from moto.iot.exceptions import (
    CertificateStateException,
    DeleteConflictException,
    InvalidRequestException,
    IoTClientError,
    ResourceNotFoundException,
)
from moto.iot.models import FakeCaCertificate, FakeCertificate, IoTBackend, iot_backends
from moto.iot.responses import IoTResponse

from .devices import DEVICES
from .faults import COUNTERS, FAULTS, THROTTLING, UNAVAILABLE
from .quotas import QUOTAS, list_service_quotas
from .timing import TIMING

#: Serialises every IoT operation: transfers touch two accounts' registries at once, and
#: moto's server answers on several threads.
STATE_LOCK = threading.RLock()
_INSTALL_LOCK = threading.Lock()
# install() of each module that extends this one, in order (filled by standin/__init__.py).
EXTENSIONS: list[Callable[[], None]] = []

PENDING_TRANSFER = "PENDING_TRANSFER"
CERTIFICATE_STATUSES = frozenset(
    {
        "ACTIVE",
        "INACTIVE",
        "REVOKED",
        "PENDING_TRANSFER",
        "REGISTER_INACTIVE",
        "PENDING_ACTIVATION",
    }
)
#: Statuses AWS uses internally; UpdateCertificate refuses them as a new status.
INTERNAL_STATUSES = frozenset({"PENDING_TRANSFER", "PENDING_ACTIVATION"})
MAX_MESSAGE = 128
DEFAULT_PAGE_SIZE = 25
MAX_PAGE_SIZE = 250
_TRANSFER_DATA_KEYS = (
    "transferMessage",
    "rejectReason",
    "transferDate",
    "acceptDate",
    "rejectDate",
)
_ACCOUNT_ID = re.compile(r"[0-9]{12}")
T = TypeVar("T")


class TransferAlreadyCompletedException(IoTClientError):
    code = 410

    def __init__(self, msg: str | None = None) -> None:
        super().__init__(
            "TransferAlreadyCompletedException",
            msg or "The certificate transfer has already completed.",
        )


class TransferConflictException(IoTClientError):
    code = 409

    def __init__(self, msg: str) -> None:
        super().__init__("TransferConflictException", msg)


class ThrottlingException(IoTClientError):
    code = 400

    def __init__(self, msg: str | None = None) -> None:
        super().__init__("ThrottlingException", msg or "Rate exceeded")


class ServiceUnavailableException(IoTClientError):
    code = 503

    def __init__(self, msg: str | None = None) -> None:
        super().__init__(
            "ServiceUnavailableException", msg or "The service is temporarily unavailable."
        )


# --------------------------------------------------------------------------- helpers


def _transfer_to(cert: FakeCertificate) -> str | None:
    return getattr(cert, "standin_transfer_to", None)


def _is_pending(cert: FakeCertificate) -> bool:
    return cert.status == PENDING_TRANSFER and _transfer_to(cert) is not None


def _cert_arn(partition: str, region: str, account_id: str, certificate_id: str) -> str:
    return f"arn:{partition}:iot:{region}:{account_id}:cert/{certificate_id}"


def _existing_backend(account_id: str, region: str) -> IoTBackend | None:
    """The backend of ``account_id``/``region`` if it exists (never creates one)."""
    account_backends = dict.get(iot_backends, account_id)
    if account_backends is None:
        return None
    return dict.get(account_backends, region)


def _other_backends(backend: IoTBackend) -> list[IoTBackend]:
    """The existing backends of the other accounts in the same region."""
    return [
        other
        for account_id, region, other in list(iot_backends.iter_backends())
        if region == backend.region_name and account_id != backend.account_id
    ]


def _validity(cert: FakeCertificate) -> tuple[datetime, datetime]:
    """notBefore/notAfter read from the PEM (moto answers now +- 1 day); naive UTC."""
    cached = getattr(cert, "standin_validity", None)
    if cached is None:
        try:
            parsed = x509.load_pem_x509_certificate(cert.certificate_pem.encode("utf-8"))
        except (ValueError, TypeError, AttributeError):
            cached = (cert.validity_not_before, cert.validity_not_after)
        else:
            cached = (
                parsed.not_valid_before_utc.replace(tzinfo=None),
                parsed.not_valid_after_utc.replace(tzinfo=None),
            )
            cert.validity_not_before, cert.validity_not_after = cached
        cert.standin_validity = cached
    return cached


def _transfer_data(cert: FakeCertificate) -> dict[str, Any]:
    data = cert.transfer_data or {}
    return {key: data[key] for key in _TRANSFER_DATA_KEYS if data.get(key) is not None}


def _check_message(value: Any, name: str) -> None:
    if value is None:
        return
    if not isinstance(value, str) or len(value) > MAX_MESSAGE:
        raise InvalidRequestException(
            f"{name} must be a string of at most {MAX_MESSAGE} characters"
        )


def _date_key(value: datetime) -> str:
    return value.strftime("%Y-%m-%dT%H:%M:%S.%f")


def _encode_marker(key: Sequence[str]) -> str:
    # Hex satisfies the Marker pattern ([A-Za-z0-9+/]+={0,2}) and needs no URL quoting.
    return json.dumps(list(key), separators=(",", ":")).encode("utf-8").hex()


def _decode_marker(marker: str) -> tuple[str, ...]:
    try:
        key = json.loads(bytes.fromhex(marker).decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidRequestException("The marker/nextToken is not valid.") from exc
    if not isinstance(key, list) or not all(isinstance(part, str) for part in key):
        raise InvalidRequestException("The marker/nextToken is not valid.")
    return tuple(key)


def paginate_by_key(
    items: Iterable[T],
    key: Callable[[T], tuple[str, ...]],
    marker: str | None,
    page_size: int,
    descending: bool = False,
) -> tuple[list[T], str | None]:
    """Keyset pagination: a marker names the last item returned, so items created or
    deleted between pages never make paging skip or repeat the others."""
    ordered = sorted(items, key=key, reverse=descending)
    if marker:
        after = _decode_marker(marker)
        if descending:
            ordered = [item for item in ordered if key(item) < after]
        else:
            ordered = [item for item in ordered if key(item) > after]
    page = ordered[:page_size]
    next_marker = _encode_marker(key(page[-1])) if len(ordered) > page_size else None
    return page, next_marker


def _certificate_key(cert: FakeCertificate) -> tuple[str, str]:
    return (_date_key(cert.creation_date), cert.certificate_id)


# --------------------------------------------------------------------------- FakeCertificate


def _to_description_dict(self: FakeCertificate) -> dict[str, Any]:
    if isinstance(self, FakeCaCertificate):
        return _ORIGINALS["FakeCertificate.to_description_dict"](self)
    not_before, not_after = _validity(self)
    description: dict[str, Any] = {
        "certificateArn": self.arn,
        "certificateId": self.certificate_id,
        "status": self.status,
        "certificatePem": self.certificate_pem,
        "ownedBy": self.owner,
        "creationDate": self.creation_date,
        "lastModifiedDate": self.last_modified_date,
        "validity": {"notBefore": not_before, "notAfter": not_after},
    }
    if self.ca_certificate_id:
        description["caCertificateId"] = self.ca_certificate_id
    previous_owner = getattr(self, "standin_previous_owner", None)
    if previous_owner:
        description["previousOwnedBy"] = previous_owner
    transfer_data = _transfer_data(self)
    if transfer_data:
        description["transferData"] = transfer_data
    return description


def _certificate_summary(cert: FakeCertificate) -> dict[str, Any]:
    summary = {
        "certificateArn": cert.arn,
        "certificateId": cert.certificate_id,
        "status": cert.status,
        "creationDate": cert.creation_date,
    }
    if cert.ca_certificate_id:
        summary["caCertificateId"] = cert.ca_certificate_id
    return summary


# --------------------------------------------------------------------------- IoTBackend


def _incoming_certificates(self: IoTBackend) -> list[FakeCertificate]:
    """Certificates other accounts of this region are transferring to this account."""
    return [
        cert
        for other in _other_backends(self)
        for cert in list(other.certificates.values())
        if _is_pending(cert) and _transfer_to(cert) == self.account_id
    ]


def _visible_certificate(self: IoTBackend, certificate_id: str) -> FakeCertificate:
    """A certificate of this account, or one pending transfer to it."""
    cert = self.certificates.get(certificate_id)
    if cert is not None:
        return cert
    for cert in _incoming_certificates(self):
        if cert.certificate_id == certificate_id:
            return cert
    raise ResourceNotFoundException()


def _visible_certificates(self: IoTBackend) -> list[FakeCertificate]:
    return list(self.certificates.values()) + _incoming_certificates(self)


def _outgoing_certificates(self: IoTBackend) -> list[FakeCertificate]:
    return [cert for cert in self.certificates.values() if _is_pending(cert)]


def _attachments(self: IoTBackend, arn: str) -> tuple[list[str], list[str]]:
    policies = [policy for (target, policy) in self.principal_policies if target == arn]
    things = _principal_things(self, arn)
    return policies, things


def _principal_things(self: IoTBackend, principal_arn: str) -> list[str]:
    """Attached things, with detachments that have not propagated yet (standin.timing)."""
    things = [thing for (principal, thing) in self.principal_things if principal == principal_arn]
    ghosts = TIMING.still_attached(self.account_id, self.region_name, principal_arn)
    return things + [t for t in ghosts if t not in things]


def detach_thing_principal(self: IoTBackend, thing_name: str, principal_arn: str) -> None:
    _ORIGINALS["IoTBackend.detach_thing_principal"](self, thing_name, principal_arn)
    TIMING.detached(self.account_id, self.region_name, principal_arn, thing_name)


def _detach_everything(self: IoTBackend, arn: str) -> None:
    for key in [k for k in self.principal_policies if k[0] == arn]:
        del self.principal_policies[key]
    for key in [k for k in self.principal_things if k[0] == arn]:
        del self.principal_things[key]


def transfer_certificate(
    self: IoTBackend,
    certificate_id: str,
    target_aws_account: str | None,
    transfer_message: str | None = None,
) -> str:
    """Start a transfer; returns the ARN the certificate will have in the target account."""
    if not isinstance(target_aws_account, str) or not _ACCOUNT_ID.fullmatch(target_aws_account):
        raise InvalidRequestException("targetAwsAccount must be a 12-digit AWS account id.")
    if target_aws_account == self.account_id:
        raise InvalidRequestException("A certificate cannot be transferred to its own account.")
    _check_message(transfer_message, "transferMessage")
    cert = _visible_certificate(self, certificate_id)
    if cert.status == PENDING_TRANSFER:
        raise CertificateStateException(
            "The certificate is already pending transfer.", certificate_id
        )
    if cert.status == "ACTIVE":
        raise CertificateStateException(
            "The certificate must be deactivated (not ACTIVE) before transfer.", certificate_id
        )
    policies, things = _attachments(self, cert.arn)
    if policies:
        raise TransferConflictException(
            f"Policies must be detached before transfer (policies: {', '.join(sorted(policies))})."
        )
    if things:
        # AWS's developer guide requires detaching things before a transfer but does not
        # document the error code; the stand-in answers TransferConflictException.
        raise TransferConflictException(
            f"Things must be detached before transfer (things: {', '.join(sorted(things))})."
        )
    target = _existing_backend(target_aws_account, self.region_name)
    if target is not None and certificate_id in target.certificates:
        raise InvalidRequestException("The target account already has this certificate.")
    now = utcnow()
    cert.status = PENDING_TRANSFER
    cert.standin_transfer_to = target_aws_account
    cert.transfer_data = {"transferDate": now}
    if transfer_message is not None:
        cert.transfer_data["transferMessage"] = transfer_message
    cert.last_modified_date = now
    return _cert_arn(self.partition, self.region_name, target_aws_account, certificate_id)


def _pending_to_me(self: IoTBackend, certificate_id: str) -> FakeCertificate:
    """The certificate pending transfer to this account, or the right error for accept/reject."""
    for cert in _incoming_certificates(self):
        if cert.certificate_id == certificate_id:
            return cert
    own = self.certificates.get(certificate_id)
    if own is not None:
        if _is_pending(own):
            # This account is the source: only the target may accept or reject.
            raise ResourceNotFoundException()
        raise TransferAlreadyCompletedException(
            "The certificate is not pending transfer (the transfer has already completed)."
        )
    for other in _other_backends(self):
        cert = other.certificates.get(certificate_id)
        if cert is not None and getattr(cert, "standin_last_transfer_to", None) == self.account_id:
            raise TransferAlreadyCompletedException(
                "The certificate transfer was already rejected or cancelled."
            )
    raise ResourceNotFoundException()


def accept_certificate_transfer(
    self: IoTBackend, certificate_id: str, set_as_active: bool = False
) -> FakeCertificate:
    cert = _pending_to_me(self, certificate_id)
    if certificate_id in self.certificates:
        raise InvalidRequestException("This account already has this certificate.")
    source = _existing_backend(cert.owner, self.region_name)
    if source is not None:
        source.certificates.pop(certificate_id, None)
        _detach_everything(source, cert.arn)
    now = utcnow()
    cert.standin_previous_owner = cert.owner
    cert.owner = self.account_id
    cert.arn = _cert_arn(self.partition, self.region_name, self.account_id, certificate_id)
    cert.status = "ACTIVE" if set_as_active else "INACTIVE"
    cert.standin_transfer_to = None
    cert.standin_last_transfer_to = None
    cert.transfer_data = {**(cert.transfer_data or {}), "acceptDate": now}
    cert.last_modified_date = now
    self.certificates[certificate_id] = cert
    return cert


def reject_certificate_transfer(
    self: IoTBackend, certificate_id: str, reject_reason: str | None = None
) -> FakeCertificate:
    _check_message(reject_reason, "rejectReason")
    cert = _pending_to_me(self, certificate_id)
    now = utcnow()
    cert.status = "INACTIVE"
    cert.standin_last_transfer_to = _transfer_to(cert)
    cert.standin_transfer_to = None
    cert.transfer_data = {**(cert.transfer_data or {}), "rejectDate": now}
    if reject_reason is not None:
        cert.transfer_data["rejectReason"] = reject_reason
    cert.last_modified_date = now
    return cert


def cancel_certificate_transfer(self: IoTBackend, certificate_id: str) -> FakeCertificate:
    cert = self.certificates.get(certificate_id)
    if cert is None:
        for other in _other_backends(self):
            found = other.certificates.get(certificate_id)
            if found is None or _transfer_to(found) == self.account_id:
                continue  # the target may not cancel: ResourceNotFound below
            if getattr(found, "standin_previous_owner", None) == self.account_id:
                raise TransferAlreadyCompletedException(
                    "The certificate transfer was already accepted."
                )
        raise ResourceNotFoundException()
    if not _is_pending(cert):
        raise TransferAlreadyCompletedException(
            "The certificate is not pending transfer (the transfer has already completed)."
        )
    now = utcnow()
    cert.status = "INACTIVE"
    cert.standin_last_transfer_to = _transfer_to(cert)
    cert.standin_transfer_to = None
    cert.last_modified_date = now
    return cert


def update_certificate(self: IoTBackend, certificate_id: str, new_status: str) -> None:
    if new_status not in CERTIFICATE_STATUSES:
        raise InvalidRequestException(f"{new_status!r} is not a valid certificate status.")
    if new_status in INTERNAL_STATUSES:
        raise InvalidRequestException(f"The status cannot be set to {new_status}.")
    cert = _visible_certificate(self, certificate_id)
    if cert.status == PENDING_TRANSFER:
        raise CertificateStateException(
            "A certificate pending transfer cannot be updated.", certificate_id
        )
    cert.status = new_status
    cert.last_modified_date = utcnow()


def delete_certificate(self: IoTBackend, certificate_id: str, force_delete: bool) -> None:
    # Rewritten rather than wrapped: moto's _validation_delete resolves *every* attached
    # principal (AttributeError for thing groups, ResourceNotFound for deleted certificates).
    cert = _visible_certificate(self, certificate_id)
    if cert.status == PENDING_TRANSFER:
        raise CertificateStateException(
            "A certificate pending transfer cannot be deleted.", certificate_id
        )
    if cert.status == "ACTIVE":
        raise CertificateStateException(
            "Certificate must be deactivated (not ACTIVE) before deletion.", certificate_id
        )
    policies, things = _attachments(self, cert.arn)
    if things:
        raise DeleteConflictException(f"Things must be detached before deletion (arn: {cert.arn})")
    if policies and not force_delete:
        raise DeleteConflictException(
            f"Certificate policies must be detached before deletion (arn: {cert.arn})"
        )
    _detach_everything(self, cert.arn)
    del self.certificates[certificate_id]


# --------------------------------------------------------------------------- IoTResponse


def _page_size(self: IoTResponse, name: str = "pageSize") -> int:
    raw = self._get_param(name)
    if raw is None or raw == "":
        return DEFAULT_PAGE_SIZE
    try:
        size = int(raw)
    except (TypeError, ValueError) as exc:
        raise InvalidRequestException(f"{name} must be an integer.") from exc
    if not 1 <= size <= MAX_PAGE_SIZE:
        raise InvalidRequestException(f"{name} must be between 1 and {MAX_PAGE_SIZE}.")
    return size


def _result(items_key: str, items: list[Any], marker_key: str, marker: str | None) -> ActionResult:
    body: dict[str, Any] = {items_key: items}
    if marker is not None:
        body[marker_key] = marker
    return ActionResult(body)


def r_transfer_certificate(self: IoTResponse) -> ActionResult:
    arn = self.iot_backend.transfer_certificate(
        certificate_id=self._get_param("certificateId"),
        target_aws_account=self._get_param("targetAwsAccount"),
        transfer_message=self._get_param("transferMessage"),
    )
    return ActionResult({"transferredCertificateArn": arn})


def r_accept_certificate_transfer(self: IoTResponse) -> ActionResult:
    self.iot_backend.accept_certificate_transfer(
        certificate_id=self._get_param("certificateId"),
        set_as_active=bool(self._get_bool_param("setAsActive", False)),
    )
    return EmptyResult()


def r_reject_certificate_transfer(self: IoTResponse) -> ActionResult:
    self.iot_backend.reject_certificate_transfer(
        certificate_id=self._get_param("certificateId"),
        reject_reason=self._get_param("rejectReason"),
    )
    return EmptyResult()


def r_cancel_certificate_transfer(self: IoTResponse) -> ActionResult:
    self.iot_backend.cancel_certificate_transfer(certificate_id=self._get_param("certificateId"))
    return EmptyResult()


def r_list_outgoing_certificates(self: IoTResponse) -> ActionResult:
    page, marker = paginate_by_key(
        self.iot_backend.standin_outgoing_certificates(),
        _certificate_key,
        self._get_param("marker"),
        _page_size(self),
        descending=not self._get_bool_param("isAscendingOrder", False),
    )
    items = []
    for cert in page:
        if not TIMING.listed_as_outgoing(cert.transfer_data.get("transferDate")):
            continue  # a lagging listing (standin.timing); the page keeps its marker
        item = {
            "certificateArn": cert.arn,
            "certificateId": cert.certificate_id,
            "transferredTo": _transfer_to(cert),
            "transferDate": cert.transfer_data.get("transferDate"),
            "creationDate": cert.creation_date,
        }
        if cert.transfer_data.get("transferMessage") is not None:
            item["transferMessage"] = cert.transfer_data["transferMessage"]
        items.append(item)
    return _result("outgoingCertificates", items, "nextMarker", marker)


def r_list_certificates(self: IoTResponse) -> ActionResult:
    page, marker = paginate_by_key(
        self.iot_backend.standin_visible_certificates(),
        _certificate_key,
        self._get_param("marker"),
        _page_size(self),
        descending=not self._get_bool_param("isAscendingOrder", False),
    )
    return _result("certificates", [_certificate_summary(c) for c in page], "nextMarker", marker)


def r_describe_certificate(self: IoTResponse) -> ActionResult:
    cert = self.iot_backend.standin_visible_certificate(self._get_param("certificateId"))
    return ActionResult({"certificateDescription": cert.to_description_dict()})


def r_list_policies(self: IoTResponse) -> ActionResult:
    page, marker = paginate_by_key(
        list(self.iot_backend.list_policies()),
        lambda policy: (policy.name,),
        self._get_param("marker"),
        _page_size(self),
        descending=not self._get_bool_param("isAscendingOrder", True),
    )
    return _result("policies", [p.to_dict() for p in page], "nextMarker", marker)


def r_list_targets_for_policy(self: IoTResponse) -> ActionResult:
    page, marker = paginate_by_key(
        self.iot_backend.list_targets_for_policy(policy_name=self._get_param("policyName")),
        lambda target: (target,),
        self._get_param("marker"),
        _page_size(self),
    )
    return _result("targets", page, "nextMarker", marker)


def r_list_attached_policies(self: IoTResponse) -> ActionResult:
    page, marker = paginate_by_key(
        self.iot_backend.list_attached_policies(target=self._get_param("target")),
        lambda policy: (policy.name,),
        self._get_param("marker"),
        _page_size(self),
    )
    return _result("policies", [p.to_dict() for p in page], "nextMarker", marker)


def r_list_principal_things(self: IoTResponse) -> ActionResult:
    principal = self.headers.get("x-amzn-principal")
    page, token = paginate_by_key(
        _principal_things(self.iot_backend, principal),
        lambda name: (name,),
        self._get_param("nextToken"),
        _page_size(self, "maxResults"),
    )
    return _result("things", page, "nextToken", token)


def r_list_thing_principals(self: IoTResponse) -> ActionResult:
    """moto's, paged, with detachments that have not propagated yet (standin.timing)."""
    backend = self.iot_backend
    thing = self._get_param("thingName")
    principals = backend.list_thing_principals(thing_name=thing)
    ghosts = TIMING.still_attached_to(backend.account_id, backend.region_name, thing)
    page, token = paginate_by_key(
        sorted(set(principals) | set(ghosts)),
        lambda principal: (principal,),
        self._get_param("nextToken"),
        _page_size(self, "maxResults"),
    )
    return _result("principals", page, "nextToken", token)


def r_list_things(self: IoTResponse) -> ActionResult:
    things, _ = self.iot_backend.list_things(
        attribute_name=self._get_param("attributeName"),
        attribute_value=self._get_param("attributeValue"),
        thing_type_name=self._get_param("thingTypeName"),
        max_results=len(self.iot_backend.things) + 1,
    )
    page, token = paginate_by_key(
        things,
        lambda thing: (thing["thingName"],),
        self._get_param("nextToken"),
        _page_size(self, "maxResults"),
    )
    return _result("things", page, "nextToken", token)


def _header(headers: Any, name: str) -> str | None:
    for key, value in dict(headers).items():
        if key.lower() == name.lower():
            return str(value)
    return None


def _error_code(status: int, headers: Any, body: Any) -> str | None:
    if status < 400:
        return None
    code = _header(headers, "x-amzn-errortype")
    if not code and body:
        try:
            code = json.loads(body).get("__type")
        except (ValueError, AttributeError, TypeError):
            code = None
    return (code or f"HTTP{status}").split(":")[0].split("#")[-1]


def _certificate_id_of(self: IoTResponse) -> str | None:
    try:
        certificate_id = (self.uri_match or {}).get("certificateId")
        if certificate_id:
            return str(certificate_id)
        for candidate in (
            (self.uri_match or {}).get("target"),
            self.headers.get("x-amzn-principal"),
            self.headers.get("x-amzn-iot-principal"),
        ):
            if candidate and ":cert/" in str(candidate):
                return str(candidate).rsplit(":cert/", 1)[1]
    except Exception:  # noqa: BLE001 - counting must never break a call
        return None
    return None


def _fault_response(self: IoTResponse, code: str) -> tuple[int, dict[str, Any], str]:
    error: IoTClientError
    if code == THROTTLING:
        error = ThrottlingException()
    elif code == UNAVAILABLE:
        error = ServiceUnavailableException()
    else:  # pragma: no cover - FaultInjector only answers the two codes above
        raise ValueError(code)
    headers: dict[str, Any] = dict(self.response_headers)
    headers.update(dict(error.get_headers()))
    headers["status"] = str(error.code)
    return int(error.code), headers, error.get_body()


def _call_action(self: IoTResponse) -> Any:
    original = _ORIGINALS["IoTResponse.call_action"]
    operation = self._get_action()
    if not operation:
        return original(self)
    code = FAULTS.decide(operation, self.current_account, self.region)
    if code is not None:
        COUNTERS.record_fault(operation, code)
        return _fault_response(self, code)
    try:
        with STATE_LOCK:
            status, headers, body = original(self)
    except Exception as exc:
        COUNTERS.record(operation, _certificate_id_of(self), type(exc).__name__)
        raise
    COUNTERS.record(operation, _certificate_id_of(self), _error_code(int(status), headers, body))
    if int(status) < 400 and TIMING.lose_answer(operation):
        return _fault_response(self, UNAVAILABLE)  # done, but the caller never hears so
    return status, headers, body


# --------------------------------------------------------------------------- speed
# moto answers each request with a new response object that works out its operation up to
# five times (routing the URL each time for IoT's REST API) and lists the class's methods
# with inspect.getmembers to check the operation is one: a third of the stand-in's time per
# call. The operation is kept on the request's object, and each class's methods are listed
# once (install() patches every method before the first request).

_METHOD_NAMES: dict[type, frozenset[str]] = {}


def _get_action_once(self: BaseResponse) -> str:
    action = self.__dict__.get("_standin_action")
    if action is None:
        action = _ORIGINALS["BaseResponse._get_action"](self)
        if action:
            self._standin_action = action
    return action


def _method_names_from_class(cls: type) -> frozenset[str]:
    names = _METHOD_NAMES.get(cls)
    if names is None:
        names = _METHOD_NAMES[cls] = frozenset(_ORIGINALS["method_names_from_class"](cls))
    return names


# --------------------------------------------------------------------------- install

_ORIGINALS: dict[str, Any] = {}

_BACKEND_METHODS: dict[str, Callable[..., Any]] = {
    "transfer_certificate": transfer_certificate,
    "accept_certificate_transfer": accept_certificate_transfer,
    "reject_certificate_transfer": reject_certificate_transfer,
    "cancel_certificate_transfer": cancel_certificate_transfer,
    "update_certificate": update_certificate,
    "delete_certificate": delete_certificate,
    "detach_thing_principal": detach_thing_principal,
    "standin_visible_certificate": _visible_certificate,
    "standin_visible_certificates": _visible_certificates,
    "standin_incoming_certificates": _incoming_certificates,
    "standin_outgoing_certificates": _outgoing_certificates,
}

_RESPONSE_METHODS: dict[str, Callable[..., Any]] = {
    "transfer_certificate": r_transfer_certificate,
    "accept_certificate_transfer": r_accept_certificate_transfer,
    "reject_certificate_transfer": r_reject_certificate_transfer,
    "cancel_certificate_transfer": r_cancel_certificate_transfer,
    "list_outgoing_certificates": r_list_outgoing_certificates,
    "list_certificates": r_list_certificates,
    "describe_certificate": r_describe_certificate,
    "list_policies": r_list_policies,
    "list_targets_for_policy": r_list_targets_for_policy,
    "list_attached_policies": r_list_attached_policies,
    "list_principal_things": r_list_principal_things,
    "list_thing_principals": r_list_thing_principals,
    "list_things": r_list_things,
    "call_action": _call_action,
}


def _reset_backends(cls: type[BackendDict]) -> None:
    _ORIGINALS["BackendDict.reset"]()
    COUNTERS.reset()
    FAULTS.clear()
    TIMING.clear()
    DEVICES.clear()
    QUOTAS.clear()


def install() -> None:
    """Patch moto's IoT backend and responses. Safe to call any number of times.

    Also makes moto's reset (``mock_aws()`` entering and leaving, ``POST /moto-api/reset``)
    clear the call counters, the fault configuration, the simulated devices, the timing and
    the Service Quotas values.
    """
    with _INSTALL_LOCK:
        if getattr(IoTResponse, "_standin_installed", False):
            return
        _ORIGINALS["BackendDict.reset"] = BackendDict.reset
        BackendDict.reset = classmethod(_reset_backends)  # type: ignore[method-assign]
        # AWS's certificate id is the SHA-256 of the DER certificate; moto's default hashes
        # the PEM text, which would give ids real AWS never does.
        from moto.settings import default_user_config

        default_user_config.setdefault("iot", {})["use_valid_cert"] = True
        _ORIGINALS["IoTResponse.call_action"] = IoTResponse.call_action
        _ORIGINALS["IoTBackend.detach_thing_principal"] = IoTBackend.detach_thing_principal
        _ORIGINALS["FakeCertificate.to_description_dict"] = FakeCertificate.to_description_dict
        for name, function in _BACKEND_METHODS.items():
            setattr(IoTBackend, name, function)
        for name, function in _RESPONSE_METHODS.items():
            setattr(IoTResponse, name, function)
        FakeCertificate.to_description_dict = _to_description_dict
        # Devices, jobs, endpoints and thing types, in their own modules: they import this
        # one, so the package lists them here (standin/__init__.py) instead of an import
        # back from this module.
        for extend in EXTENSIONS:
            extend()
        # AWS IoT's adjustable allowances (standin.quotas); moto answers no ListServiceQuotas.
        from moto.servicequotas.responses import ServiceQuotasResponse

        ServiceQuotasResponse.list_service_quotas = list_service_quotas
        _ORIGINALS["BaseResponse._get_action"] = BaseResponse._get_action
        BaseResponse._get_action = _get_action_once  # type: ignore[method-assign]
        _ORIGINALS["method_names_from_class"] = moto_responses.method_names_from_class
        moto_responses.method_names_from_class = _method_names_from_class
        _METHOD_NAMES.clear()
        IoTResponse._standin_installed = True


def installed() -> bool:
    return bool(getattr(IoTResponse, "_standin_installed", False))
