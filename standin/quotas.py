"""AWS IoT's per-API allowances, as the stand-in plays them.

* :data:`AWS_DEFAULTS`: each API's default allowance per account and region, in requests per
  second (the AWS IoT Core limits table). The portal keeps its own copy
  (``transfers.ratelimit.AWS_DEFAULTS``; a test keeps the two equal): the stand-in imports
  nothing of the portal.
* :data:`QUOTAS`: the adjustable ones as Service Quotas answers ``ListServiceQuotas`` for the
  service code ``iotcore`` (AWS's defaults unless a test or benchmark sets other values), or
  ``AccessDeniedException`` when set unreadable, as for a role without
  ``servicequotas:ListServiceQuotas``.
* ``set_faults(rps_per_operation="aws")`` (standin.faults) holds each API to its allowance
  here: the default, or the Service Quotas value.

moto's reset clears :data:`QUOTAS`, like the counters and faults.
"""

from __future__ import annotations

import json
import threading
from typing import Any

from moto.core.exceptions import JsonRESTError
from moto.servicequotas.exceptions import NoSuchResource

AWS_DEFAULTS: dict[str, float] = {
    **dict.fromkeys(
        [
            "TransferCertificate",
            "AcceptCertificateTransfer",
            "RejectCertificateTransfer",
            "CancelCertificateTransfer",
            "ListCertificates",
            "ListOutgoingCertificates",
            "DescribeCertificate",
            "UpdateCertificate",
            "ListTargetsForPolicy",
            "ListThingPrincipals",
            "ListPrincipalThings",
        ],
        10.0,
    ),
    **dict.fromkeys(["AttachPolicy", "DetachPolicy", "ListAttachedPolicies"], 15.0),
    **dict.fromkeys(["AttachThingPrincipal", "DetachThingPrincipal"], 100.0),
    # Devices (DESIGN.md "Devices"): connectivity at about 350 a second; the Jobs calls the
    # portal makes and DescribeEndpoint at AWS IoT's usual 10.
    "GetThingConnectivityData": 350.0,
    **dict.fromkeys(
        [
            "CreateJob",
            "CancelJob",
            "DescribeJobExecution",
            "ListJobExecutionsForJob",
            "DescribeEndpoint",
            "GetIndexingConfiguration",
            "UpdateIndexingConfiguration",
        ],
        10.0,
    ),
}

SERVICE_CODE = "iotcore"
#: Service Quotas code -> the API whose allowance it is.
QUOTA_CODES = {
    "L-9A4156D0": "TransferCertificate",
    "L-136C6B71": "AcceptCertificateTransfer",
    "L-14E3C32E": "CancelCertificateTransfer",
}


class ServiceQuotas:
    """The applied values of the adjustable allowances, and whether callers may read them."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.applied: dict[str, float] = {}
        self.readable = True

    def clear(self) -> None:
        self.configure()

    def configure(self, applied: dict[str, float] | None = None, readable: bool = True) -> None:
        """``applied``: API name -> requests per second, for the adjustable APIs only."""
        applied = dict(applied or {})
        unknown = set(applied) - set(QUOTA_CODES.values())
        if unknown:
            raise ValueError(f"not adjustable through Service Quotas: {sorted(unknown)}")
        for api, value in applied.items():
            if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
                raise ValueError(f"{api}: a positive number of requests per second")
        with self._lock:
            self.applied = {api: float(value) for api, value in applied.items()}
            self.readable = bool(readable)

    def allowance(self, api: str) -> float | None:
        """``api``'s requests per second (None: no allowance known, so no ceiling)."""
        with self._lock:
            return self.applied.get(api, AWS_DEFAULTS.get(api))

    def listing(self, region: str, account_id: str) -> list[dict[str, Any]]:
        with self._lock:
            if not self.readable:
                raise JsonRESTError(
                    "AccessDeniedException",
                    f"User: arn:aws:sts::{account_id}:assumed-role/standin is not authorized "
                    "to perform: servicequotas:ListServiceQuotas",
                )
            applied = dict(self.applied)
        return [
            {
                "ServiceCode": SERVICE_CODE,
                "ServiceName": "AWS IoT",
                "QuotaArn": f"arn:aws:servicequotas:{region}:{account_id}:{SERVICE_CODE}/{code}",
                "QuotaCode": code,
                "QuotaName": f"{api} throttle limit",
                "Value": applied.get(api, AWS_DEFAULTS[api]),
                "Unit": "None",
                "Adjustable": True,
                "GlobalQuota": False,
            }
            for code, api in sorted(QUOTA_CODES.items())
        ]


QUOTAS = ServiceQuotas()


def list_service_quotas(self: Any) -> str:
    """``ServiceQuotasResponse.list_service_quotas`` (moto has none): AWS IoT's adjustable
    allowances, in one page."""
    params = json.loads(self.body or "{}")
    if params.get("ServiceCode") != SERVICE_CODE:
        raise NoSuchResource()
    return json.dumps({"Quotas": QUOTAS.listing(self.region, self.current_account)})
