"""Exclusive thing attachments: AttachThingPrincipal's ``thingPrincipalType``
(EXCLUSIVE_THING or NON_EXCLUSIVE_THING, the default), read back with ListPrincipalThingsV2
and ListThingPrincipalsV2. moto 5.2.5 ignores the type and answers V2 without it.

AWS: with EXCLUSIVE_THING "the thing will be the only thing that's attached to the
principal". The stand-in refuses, with InvalidRequestException (AWS does not document the
error), an exclusive attachment to a principal that has another thing, and any attachment
to a principal attached exclusively to another thing. Attaching the same pair again sets
the type it is given.

Attaching a certificate to a thing also switches the thing's simulated device on
(standin.devices), when devices are enabled.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from moto.core.responses import ActionResult, EmptyResult
from moto.iot.exceptions import InvalidRequestException
from moto.iot.models import IoTBackend
from moto.iot.responses import IoTResponse

from .devices import DEVICES
from .iot import _page_size, _principal_things, _result, paginate_by_key

EXCLUSIVE = "EXCLUSIVE_THING"
NON_EXCLUSIVE = "NON_EXCLUSIVE_THING"
TYPES = (EXCLUSIVE, NON_EXCLUSIVE)


def _types(backend: IoTBackend) -> dict[tuple[str, str], str]:
    # On the backend, so that moto's reset clears it with everything else.
    return backend.__dict__.setdefault("standin_thing_types", {})


def thing_type(backend: IoTBackend, principal_arn: str, thing_name: str) -> str:
    return _types(backend).get((principal_arn, thing_name), NON_EXCLUSIVE)


def attach_thing_principal(
    self: IoTBackend,
    thing_name: str,
    principal_arn: str,
    thing_principal_type: str | None = None,
) -> None:
    kind = thing_principal_type or NON_EXCLUSIVE
    if kind not in TYPES:
        raise InvalidRequestException(f"thingPrincipalType must be one of {', '.join(TYPES)}.")
    types = _types(self)
    others = []
    if kind == EXCLUSIVE or EXCLUSIVE in types.values():  # no scan in a fleet without any
        others = [
            thing
            for (principal, thing) in list(self.principal_things)
            if principal == principal_arn and thing != thing_name
        ]
    if kind == EXCLUSIVE and others:
        raise InvalidRequestException(
            f"The principal is attached to other things ({', '.join(sorted(others))}): it "
            "cannot be attached exclusively."
        )
    exclusive = [t for t in others if thing_type(self, principal_arn, t) == EXCLUSIVE]
    if exclusive:
        raise InvalidRequestException(
            f"The principal is attached exclusively to {exclusive[0]}: detach it first."
        )
    _ORIGINALS["attach_thing_principal"](self, thing_name, principal_arn)
    types[(principal_arn, thing_name)] = kind
    DEVICES.attached(self, thing_name, principal_arn)


def _type_filter(self: IoTResponse) -> str | None:
    kind = self._get_param("thingPrincipalType")
    if kind is not None and kind not in TYPES:
        raise InvalidRequestException(f"thingPrincipalType must be one of {', '.join(TYPES)}.")
    return kind


def r_attach_thing_principal(self: IoTResponse) -> ActionResult:
    self.iot_backend.attach_thing_principal(
        thing_name=self._get_param("thingName"),
        principal_arn=self.headers.get("x-amzn-principal"),
        thing_principal_type=_type_filter(self),
    )
    return EmptyResult()


def r_list_principal_things_v2(self: IoTResponse) -> ActionResult:
    backend = self.iot_backend
    principal = self.headers.get("x-amzn-principal")
    wanted = _type_filter(self)
    items = [
        {"thingName": name, "thingPrincipalType": thing_type(backend, principal, name)}
        for name in _principal_things(backend, principal)
    ]
    items = [i for i in items if wanted is None or i["thingPrincipalType"] == wanted]
    page, token = paginate_by_key(
        items,
        lambda item: (item["thingName"],),
        self._get_param("nextToken"),
        _page_size(self, "maxResults"),
    )
    return _result("principalThingObjects", page, "nextToken", token)


def r_list_thing_principals_v2(self: IoTResponse) -> ActionResult:
    backend = self.iot_backend
    thing_name = self._get_param("thingName")
    wanted = _type_filter(self)
    items = [
        {"principal": principal, "thingPrincipalType": thing_type(backend, principal, thing_name)}
        for principal in backend.list_thing_principals(thing_name=thing_name)
    ]
    items = [i for i in items if wanted is None or i["thingPrincipalType"] == wanted]
    page, token = paginate_by_key(
        items,
        lambda item: (item["principal"],),
        self._get_param("nextToken"),
        _page_size(self, "maxResults"),
    )
    return _result("thingPrincipalObjects", page, "nextToken", token)


_ORIGINALS: dict[str, Callable[..., Any]] = {}


def install() -> None:
    _ORIGINALS["attach_thing_principal"] = IoTBackend.attach_thing_principal
    IoTBackend.attach_thing_principal = attach_thing_principal  # type: ignore[method-assign]
    IoTResponse.attach_thing_principal = r_attach_thing_principal  # type: ignore[method-assign]
    IoTResponse.list_principal_things_v2 = r_list_principal_things_v2  # type: ignore[method-assign]
    IoTResponse.list_thing_principals_v2 = r_list_thing_principals_v2  # type: ignore[method-assign]
