"""The one boundary to AWS: every call goes through here, so errors are mapped once.

Clients are built per managed account and region: assume the account's role (with its
external id) or use the default credential chain (only for the account STS says those
credentials are in), botocore's retry mode and timeouts, and AWS_ENDPOINT_URL when the
stand-in plays AWS.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import math
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import boto3
import botocore.exceptions
from botocore.config import Config
from django.conf import settings
from django.db import IntegrityError
from django.utils import timezone

from transfers import ratelimit
from transfers.models import QuotaRead

log = logging.getLogger(__name__)

# Throttling and outages are worth another try; everything else needs a person.
RETRYABLE = {
    "ThrottlingException",
    "Throttling",
    "TooManyRequestsException",
    "ServiceUnavailableException",
    "ServiceUnavailable",
    "InternalFailureException",
    "InternalFailure",
    "InternalServerException",
    "RequestTimeout",
    "EndpointConnectionError",
    "ConnectTimeout",
    "ReadTimeout",
    "RateLimited",
}

THROTTLED = {"ThrottlingException", "Throttling", "TooManyRequestsException"}

MESSAGES = {
    "InvalidRequestException": "AWS refused the request as invalid",
    "ResourceNotFoundException": "The certificate no longer exists in that account and region",
    "CertificateStateException": "The certificate is not in a state that allows this",
    "TransferConflictException": "The certificate still has policies or things attached",
    "TransferAlreadyCompletedException": "The transfer was already accepted, rejected or cancelled",
    "UnauthorizedException": "The portal's role is not allowed to do this in that account",
    "AccessDenied": "The portal may not assume the account's role (check the role's trust "
    "policy and the external id)",
    "AccessDeniedException": "The portal's role is not allowed to do this in that account",
    "ThrottlingException": "AWS is throttling requests; the portal will retry",
    "ServiceUnavailableException": "AWS IoT is unavailable; the portal will retry",
    "InternalFailureException": "AWS IoT failed internally; the portal will retry",
    "EndpointConnectionError": "AWS could not be reached",
    "RateLimited": "AWS is busy for this account (the portal keeps to its API rate)",
    "WrongAccount": "The account's role belongs to another AWS account: fix the role ARN",
    "NotOwnAccount": "Without a role ARN the portal uses its own credentials, which belong to "
    "another AWS account: enter the role the portal assumes in this account",
    "NoCredentials": "No AWS credentials are configured for the portal",
    "ExpiredToken": "The portal's AWS credentials have expired",
    "InvalidClientTokenId": "The portal's AWS credentials are not valid",
}


class AwsError(Exception):
    """An AWS answer other than success, with a message a person understands."""

    def __init__(
        self, code: str, message: str = "", operation: str = "", retry_after: int | None = None
    ) -> None:
        self.code = code
        self.aws_message = message
        self.operation = operation
        self.retry_after = retry_after
        super().__init__(f"{operation}: {code}: {message}" if operation else f"{code}: {message}")

    @property
    def retryable(self) -> bool:
        return self.code in RETRYABLE

    @property
    def user_message(self) -> str:
        if self.code == "RateLimited":
            return f"{MESSAGES[self.code]}: try again in {retry_after(self)} s."
        base = MESSAGES.get(self.code, f"AWS answered {self.code}")
        return f"{base}. (AWS said: {self.aws_message})" if self.aws_message else f"{base}."


def _error_from(exc: Exception, operation: str) -> AwsError:
    if isinstance(exc, botocore.exceptions.ClientError):
        err = exc.response.get("Error", {})
        return AwsError(err.get("Code", "Unknown"), err.get("Message", ""), operation)
    if isinstance(exc, botocore.exceptions.NoCredentialsError):
        return AwsError("NoCredentials", str(exc), operation)
    if isinstance(exc, botocore.exceptions.ConnectTimeoutError):
        return AwsError("ConnectTimeout", str(exc), operation)
    if isinstance(exc, botocore.exceptions.ReadTimeoutError):
        return AwsError("ReadTimeout", str(exc), operation)
    if isinstance(exc, botocore.exceptions.EndpointConnectionError | ConnectionError):
        return AwsError("EndpointConnectionError", str(exc), operation)
    return AwsError(type(exc).__name__, str(exc), operation)


_CAUGHT = (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError, ConnectionError)


def _config() -> Config:
    return Config(
        retries={"mode": settings.AWS_RETRY_MODE, "total_max_attempts": settings.AWS_MAX_ATTEMPTS},
        connect_timeout=settings.AWS_CONNECT_TIMEOUT,
        read_timeout=settings.AWS_READ_TIMEOUT,
    )


@dataclass
class _Cached:
    credentials: dict[str, str]  # an assumed role's; empty: the portal's own (default chain)
    expires: float
    clients: dict[tuple[str, str], Any] = field(default_factory=dict)


_cache: dict[tuple[str, str, str], _Cached] = {}
_lock = threading.Lock()
# Assumed-role credentials last an hour; renew well before that.
CREDENTIALS_TTL = 30 * 60
# One boto3 session for the process: every client is made from it, an assumed role's with
# that role's credentials passed in. A session per role parsed the service models again and
# built its own STS client: about 40 ms of CPU each time credentials were renewed.
_base: boto3.Session | None = None
_sts_client: Any = None


def clear_cache() -> None:
    global _base, _sts_client
    with _lock:
        _cache.clear()
        _base = _sts_client = None


def _session() -> boto3.Session:
    """The process's boto3 session (call with _lock held: making one is not thread-safe)."""
    global _base
    if _base is None:
        _base = boto3.Session()
    return _base


def _sts():
    """The portal's own STS client (call with _lock held)."""
    global _sts_client
    if _sts_client is None:
        _sts_client = _session().client(
            "sts", endpoint_url=settings.AWS_ENDPOINT_URL, config=_config(), region_name="us-east-1"
        )
    return _sts_client


def _check_own_account(account_id: str) -> dict[str, str]:
    """The portal's own credentials, for the one account they are in: STS names it, so a
    row with another id and no role cannot file the portal's home account under itself."""
    try:
        actual = _sts().get_caller_identity()["Account"]
    except _CAUGHT as exc:
        raise _error_from(exc, "GetCallerIdentity") from exc
    if account_id and actual != account_id:
        raise AwsError(
            "NotOwnAccount",
            f"the portal's own credentials are in account {actual}, not {account_id}",
            "GetCallerIdentity",
        )
    return {}


def _credentials(role_arn: str, external_id: str, account_id: str = "") -> dict[str, str]:
    """The credentials to act in ``account_id`` with (call with _lock held)."""
    if not role_arn:
        return _check_own_account(account_id)
    kwargs: dict[str, Any] = {"RoleArn": role_arn, "RoleSessionName": "transfer-portal"}
    if external_id:
        kwargs["ExternalId"] = external_id
    try:
        assumed = _sts().assume_role(**kwargs)
    except _CAUGHT as exc:
        raise _error_from(exc, "AssumeRole") from exc
    # The role must be in the account it is filed under, or another account's certificates
    # would come under this account's grants: STS names the account it really is.
    arn = assumed.get("AssumedRoleUser", {}).get("Arn", "")
    actual = arn.split(":")[4] if arn.count(":") >= 5 else "?"
    if account_id and actual != account_id:
        raise AwsError(
            "WrongAccount",
            f"the role {role_arn} is in account {actual}, not {account_id}",
            "AssumeRole",
        )
    creds = assumed["Credentials"]
    return {
        "aws_access_key_id": creds["AccessKeyId"],
        "aws_secret_access_key": creds["SecretAccessKey"],
        "aws_session_token": creds["SessionToken"],
    }


def client(account, region: str, service: str = "iot"):
    """A boto3 client acting in ``account`` (an AwsAccount) and ``region``."""
    key = (account.account_id, account.role_arn, account.external_id)
    now = time.monotonic()
    with _lock:
        cached = _cache.get(key)
        if cached is None or cached.expires <= now:
            credentials = _credentials(account.role_arn, account.external_id, account.account_id)
            cached = _cache[key] = _Cached(credentials=credentials, expires=now + CREDENTIALS_TTL)
        made = cached.clients.get((service, region))
        if made is None:
            made = _session().client(
                service,
                region_name=region,
                endpoint_url=settings.AWS_ENDPOINT_URL,
                config=_config(),
                **cached.credentials,
            )
            _share_rate(made)
            cached.clients[(service, region)] = made
    # Every call through this client shares the API's allowance with all workers.
    made.portal_limit = (f"{account.account_id}:{region}", _allowances(account, region, service))
    return made


def _allowances(account, region: str, service: str) -> ratelimit.Allowances:
    reads_quotas = (
        service == "iot"
        and settings.AWS_SERVICE_QUOTAS
        and account.api_rate is None  # else one rate for every API: quotas do not matter
        and account.pk is not None
    )
    return ratelimit.allowances(
        account, region, service_quotas(account, region) if reads_quotas else {}
    )


# Service Quotas' values change only when someone asks AWS for more: read hourly.
QUOTAS_MAX_AGE = timedelta(hours=1)


def service_quotas(account, region: str) -> dict[str, float]:
    """The adjustable AWS IoT allowances Service Quotas gives ``account`` in ``region`` (API ->
    requests per second), read at most once an hour for every process (QuotaRead). When they
    cannot be read (the role may not: servicequotas:ListServiceQuotas), the last values read,
    else none, so AWS's defaults apply; the account page shows why."""
    read = QuotaRead.objects.filter(account=account, region=region).first()
    if read is not None and read.read_at > timezone.now() - QUOTAS_MAX_AGE:
        return read.rates
    try:
        rates, error = _read_quotas(account, region), ""
    except AwsError as exc:
        rates, error = (read.rates if read is not None else {}), exc.user_message
        log.warning("Service Quotas not read for %s in %s: %s", account, region, exc)
    with contextlib.suppress(IntegrityError):  # another process stored its read just now
        QuotaRead.objects.update_or_create(
            account=account,
            region=region,
            defaults={"rates": rates, "error": error, "read_at": timezone.now()},
        )
    return rates


def _read_quotas(account, region: str) -> dict[str, float]:
    quotas = client(account, region, "service-quotas")
    rates: dict[str, float] = {}
    kwargs: dict[str, Any] = {"ServiceCode": ratelimit.SERVICE_QUOTAS_CODE, "MaxResults": 100}
    while True:
        page = call(quotas, "list_service_quotas", **kwargs)
        for quota in page.get("Quotas", []):
            api = ratelimit.QUOTA_CODES.get(quota.get("QuotaCode", ""))
            value = quota.get("Value")
            if api and isinstance(value, int | float) and value > 0:
                rates[api] = float(value)
        if not page.get("NextToken"):
            return rates
        kwargs["NextToken"] = page["NextToken"]


def _share_rate(made) -> None:
    """Make every HTTP attempt of ``made`` take a token from the shared bucket, botocore's
    own retries included, and every throttling answer slow the bucket down.

    Hooked on botocore's events rather than wrapped around :func:`call`, because botocore
    retries inside one method call: a wrapper would see one call and one final error where
    AWS saw up to AWS_MAX_ATTEMPTS requests and as many throttling answers."""

    def limit_of(event_name: str) -> tuple[str, float] | None:
        limit = getattr(made, "portal_limit", None)
        if limit is None:
            return None
        api = event_name.rsplit(".", 1)[-1]
        return f"{limit[0]}:{api}", limit[1].of(api)

    def before_send(event_name: str, **_: Any) -> None:
        limit = limit_of(event_name)
        if limit is not None:
            ratelimit.acquire(*limit, max_wait=_max_wait.get())
        return None  # anything else would stand in for AWS's answer

    def needs_retry(event_name: str, response=None, **_: Any) -> None:
        code = response[1].get("Error", {}).get("Code") if response else None
        limit = limit_of(event_name)
        if code in THROTTLED and limit is not None:
            ratelimit.throttled(*limit)
        return None  # botocore's retry handler decides

    made.meta.events.register_first("before-send", before_send)
    made.meta.events.register_first("needs-retry", needs_retry)


def call(aws_client, operation: str, **kwargs: Any) -> dict:
    """Call ``operation`` (the boto3 method name) and map every failure to AwsError.

    Clients made by :func:`client` take every attempt from the account's shared rate; when
    no token comes within the caller's wait (:func:`waiting_at_most`), AwsError RateLimited."""
    api = _operation_name(aws_client, operation)
    try:
        return getattr(aws_client, operation)(**kwargs)
    except _CAUGHT as exc:
        raise _error_from(exc, api) from exc
    except ratelimit.RateLimitTimeout as exc:
        raise AwsError("RateLimited", str(exc), api, retry_after=exc.retry_after) from exc


# How long a call may wait for the shared rate: workers wait long, web requests briefly
# (a page must answer well inside gunicorn's timeout).
_max_wait: contextvars.ContextVar[float] = contextvars.ContextVar("aws_max_wait", default=120.0)


@contextlib.contextmanager
def waiting_at_most(seconds: float) -> Iterator[None]:
    token = _max_wait.set(seconds)
    try:
        yield
    finally:
        _max_wait.reset(token)


def retry_after(error: AwsError) -> int:
    """Seconds a person should wait before trying again after ``error``."""
    return max(1, math.ceil(error.retry_after or 5))


def _operation_name(aws_client, method: str) -> str:
    return aws_client.meta.method_to_api_mapping.get(method, method)


def pages(
    aws_client, operation: str, result_key: str, counter: list[int] | None = None, **kwargs: Any
) -> Iterator[dict]:
    """Yield every item of a paged IoT listing, counting one call per page in ``counter``."""
    marker_in, marker_out = _MARKERS.get(operation, ("marker", "nextMarker"))
    while True:
        page = call(aws_client, operation, **kwargs)
        if counter is not None:
            counter[0] += 1
        yield from page.get(result_key, [])
        token = page.get(marker_out)
        if not token:
            return
        kwargs[marker_in] = token


_MARKERS = {
    "list_principal_things": ("nextToken", "nextToken"),
    "list_principal_things_v2": ("nextToken", "nextToken"),
    "list_things": ("nextToken", "nextToken"),
    "list_thing_principals": ("nextToken", "nextToken"),
    "list_job_executions_for_job": ("nextToken", "nextToken"),
}


EXCLUSIVE_THING = "EXCLUSIVE_THING"
NON_EXCLUSIVE_THING = "NON_EXCLUSIVE_THING"


def principal_things(aws_client, principal: str) -> dict[str, str]:
    """The things attached to ``principal``, each with how (EXCLUSIVE_THING or
    NON_EXCLUSIVE_THING): ListPrincipalThingsV2, so a move puts them back the same way."""
    listed = pages(
        aws_client,
        "list_principal_things_v2",
        "principalThingObjects",
        principal=principal,
        maxResults=250,
    )
    return {t["thingName"]: t.get("thingPrincipalType", NON_EXCLUSIVE_THING) for t in listed}


def check_access(account, region: str) -> None:
    """Raise AwsError unless the portal can assume the role and list certificates."""
    call(client(account, region), "list_certificates", pageSize=1)
