"""Where devices connect and whether they are connected: DescribeEndpoint (one stable
endpoint per account, region and type; moto makes a new one up on every call),
Get/UpdateIndexingConfiguration (thingConnectivityIndexingMode, validated) and
GetThingConnectivityData (from the simulated devices, standin.devices).

It also brings the devices up to date just before any call that changes what their
connection depends on (a certificate's status, owner or policies, a policy's document), so
that lazily computed device state is exact.

Stand-in's choices where AWS does not say: GetThingConnectivityData without thing
connectivity indexing (STATUS) answers InvalidRequestException; a thing that never connected
answers ``connected: false`` with no timestamp; UpdateIndexingConfiguration replaces the
section it is given (a mode left out is OFF), as its request names the whole configuration.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any

from moto.core.responses import ActionResult, EmptyResult
from moto.iot.exceptions import InvalidRequestException, ResourceNotFoundException
from moto.iot.models import FakeEndpoint, IoTBackend
from moto.iot.responses import IoTResponse

from .devices import DEVICES, ENDPOINT_TYPES, endpoint_address

THING_INDEXING_MODES = ("OFF", "REGISTRY", "REGISTRY_AND_SHADOW")
CONNECTIVITY_MODES = ("OFF", "STATUS")
GROUP_INDEXING_MODES = ("OFF", "ON")


def describe_endpoint(self: IoTBackend, endpoint_type: str) -> FakeEndpoint:
    if endpoint_type not in ENDPOINT_TYPES:
        raise InvalidRequestException(f"Endpoint type {endpoint_type} not recognized.")
    endpoint = FakeEndpoint(endpoint_type, self.region_name)
    endpoint.endpoint = endpoint_address(self.account_id, self.region_name, endpoint_type)
    self.endpoint = endpoint
    return endpoint


def _mode(section: dict[str, Any], name: str, allowed: tuple[str, ...], required: bool) -> None:
    value = section.get(name)
    if value is None and not required:
        return
    if value not in allowed:
        raise InvalidRequestException(f"{name} must be one of {', '.join(allowed)}.")


def update_indexing_configuration(
    self: IoTBackend,
    thingIndexingConfiguration: dict[str, Any],  # noqa: N803 - moto's parameter names
    thingGroupIndexingConfiguration: dict[str, Any],  # noqa: N803
) -> None:
    things = thingIndexingConfiguration or {}
    groups = thingGroupIndexingConfiguration or {}
    if things:
        _mode(things, "thingIndexingMode", THING_INDEXING_MODES, required=True)
        _mode(things, "thingConnectivityIndexingMode", CONNECTIVITY_MODES, required=False)
        if things.get("thingConnectivityIndexingMode") == "STATUS" and (
            things["thingIndexingMode"] == "OFF"
        ):
            raise InvalidRequestException(
                "Thing connectivity indexing (STATUS) needs thingIndexingMode REGISTRY or "
                "REGISTRY_AND_SHADOW."
            )
        things = {
            "thingConnectivityIndexingMode": "OFF",
            "deviceDefenderIndexingMode": "OFF",
            "namedShadowIndexingMode": "OFF",
            **things,
        }
    if groups:
        _mode(groups, "thingGroupIndexingMode", GROUP_INDEXING_MODES, required=True)
    _ORIGINALS["update_indexing_configuration"](self, things, groups)


def connectivity_indexed(backend: IoTBackend) -> bool:
    config = backend.get_indexing_configuration()["thingIndexingConfiguration"]
    return config.get("thingConnectivityIndexingMode") == "STATUS"


def r_get_thing_connectivity_data(self: IoTResponse) -> ActionResult:
    backend = self.iot_backend
    thing_name = self._get_param("thingName")
    arn = (
        f"arn:{backend.partition}:iot:{backend.region_name}:{backend.account_id}:thing/{thing_name}"
    )
    if arn not in backend.things:
        raise ResourceNotFoundException(f"Thing {thing_name} does not exist.")
    if not connectivity_indexed(backend):
        raise InvalidRequestException(
            "Thing connectivity indexing is not enabled (thingConnectivityIndexingMode STATUS)."
        )
    answer = DEVICES.connectivity(backend.account_id, backend.region_name, thing_name)
    return ActionResult(answer)


def r_update_indexing_configuration(self: IoTResponse) -> ActionResult:
    self.iot_backend.update_indexing_configuration(
        self._get_param("thingIndexingConfiguration") or {},
        self._get_param("thingGroupIndexingConfiguration") or {},
    )
    return EmptyResult()


# --------------------------------------------------------------------------- device hooks


def _certificate_ids(self: IoTBackend, arguments: dict[str, Any]) -> set[str]:
    """The certificates whose devices a call may affect."""
    ids = set()
    if arguments.get("certificate_id"):
        ids.add(str(arguments["certificate_id"]))
    target = str(arguments.get("target") or "")
    if ":cert/" in target:
        ids.add(target.rsplit("/", 1)[-1])
    policy = arguments.get("policy_name")
    if policy and "target" not in arguments:
        # A policy's document or existence changes for every certificate it is attached to.
        ids |= {
            arn.rsplit("/", 1)[-1]
            for (arn, name) in list(self.principal_policies)
            if name == policy and ":cert/" in arn
        }
    return ids


def _touching(original: Callable[..., Any]) -> Callable[..., Any]:
    signature = inspect.signature(original)

    @functools.wraps(original)
    def method(self: IoTBackend, *args: Any, **kwargs: Any) -> Any:
        try:
            arguments = signature.bind(self, *args, **kwargs).arguments
        except TypeError:
            arguments = {}
        for certificate_id in _certificate_ids(self, arguments):
            DEVICES.touch_certificate(self.region_name, certificate_id)
        return original(self, *args, **kwargs)

    method._standin_touching = True  # type: ignore[attr-defined]
    return method


TOUCHING = (
    "update_certificate",
    "transfer_certificate",
    "accept_certificate_transfer",
    "reject_certificate_transfer",
    "cancel_certificate_transfer",
    "delete_certificate",
    "attach_policy",
    "detach_policy",
    "create_policy_version",
    "set_default_policy_version",
    "delete_policy",
)

_ORIGINALS: dict[str, Callable[..., Any]] = {}


def install() -> None:
    _ORIGINALS["update_indexing_configuration"] = IoTBackend.update_indexing_configuration
    IoTBackend.describe_endpoint = describe_endpoint  # type: ignore[method-assign]
    IoTBackend.update_indexing_configuration = update_indexing_configuration  # type: ignore[method-assign]
    IoTResponse.get_thing_connectivity_data = r_get_thing_connectivity_data  # type: ignore[attr-defined]
    IoTResponse.update_indexing_configuration = r_update_indexing_configuration  # type: ignore[method-assign]
    for name in TOUCHING:
        current = getattr(IoTBackend, name)
        if not getattr(current, "_standin_touching", False):
            setattr(IoTBackend, name, _touching(current))
