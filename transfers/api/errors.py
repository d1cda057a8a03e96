"""The API's one error shape, ``{"error": {"code", "message", "fields"}}``, and the error
responses each operation documents in the schema."""

from __future__ import annotations

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.http import Http404, HttpResponse, JsonResponse
from django.views.defaults import page_not_found
from django_fsm import ConcurrentTransition
from drf_spectacular.utils import OpenApiResponse
from rest_framework import exceptions, serializers, status
from rest_framework.response import Response
from rest_framework.views import set_rollback

from transfers import aws
from transfers.workflow import TransferError

# Seconds to wait, for a 503 whose cause gave no time of its own (as aws.retry_after).
DEFAULT_RETRY_AFTER = 5


def _error(code: str, message: str, http_status: int, fields=None, headers=None) -> Response:
    body: dict = {"code": code, "message": message}
    if fields is not None:
        body["fields"] = fields
    set_rollback()
    return Response({"error": body}, status=http_status, headers=headers)


def _flatten(detail, prefix: str = "") -> list[str]:
    if isinstance(detail, dict):
        return [m for key, value in detail.items() for m in _flatten(value, f"{prefix}{key}: ")]
    if isinstance(detail, list):
        return [m for item in detail for m in _flatten(item, prefix)]
    return [f"{prefix}{detail}"]


# A rule's refusal that concerns one field of the request: its code stays, and ``fields``
# names the field (as for ``invalid``).
FIELD_OF_CODE = {
    "endpoint_required": "device_endpoint",
    "invalid_endpoint": "device_endpoint",
    "invalid_waves": "waves",
    "invalid_window": "window",
}


def exception_handler(exc, context) -> Response | None:
    """Every refusal as ``{"error": {"code", "message"}}`` with a stable code."""
    if isinstance(exc, aws.AwsError):  # AWS or the rate limiter, wherever it surfaced
        exc = TransferError.from_aws(exc)
    if isinstance(exc, TransferError):
        retry = exc.retry_after
        if exc.status == status.HTTP_503_SERVICE_UNAVAILABLE and not retry:
            retry = DEFAULT_RETRY_AFTER  # the schema promises Retry-After on every 503
        headers = {"Retry-After": str(retry)} if retry else None
        field = FIELD_OF_CODE.get(exc.code)
        fields = {field: [exc.message]} if field else None
        return _error(exc.code, exc.message, exc.status, fields=fields, headers=headers)
    if isinstance(exc, Http404):
        return _error("not_found", str(exc) or "Not found.", status.HTTP_404_NOT_FOUND)
    if isinstance(exc, DjangoPermissionDenied):
        message = str(exc) or "You may not do this."
        return _error("forbidden", message, status.HTTP_403_FORBIDDEN)
    if isinstance(exc, ConcurrentTransition):
        message = "Someone else changed this transfer at the same time; reload and retry."
        return _error("conflict", message, status.HTTP_409_CONFLICT)
    if isinstance(exc, exceptions.ValidationError):
        fields = exc.detail if isinstance(exc.detail, dict) else {"non_field_errors": exc.detail}
        message = "Invalid input. " + " ".join(_flatten(fields))
        return _error("invalid", message.strip(), status.HTTP_400_BAD_REQUEST, fields=fields)
    if isinstance(exc, exceptions.APIException):
        headers = {}
        if getattr(exc, "auth_header", None):
            headers["WWW-Authenticate"] = exc.auth_header
        if getattr(exc, "wait", None):
            headers["Retry-After"] = str(int(exc.wait))
        codes = exc.get_codes()
        code = codes if isinstance(codes, str) else exc.default_code
        if code == "permission_denied":
            code = "forbidden"  # one code for every "visible but not allowed"
        return _error(code, str(exc.detail), exc.status_code, headers=headers)
    return None  # an unexpected error: Django's 500


def not_found(request, exception=None) -> HttpResponse:
    """handler404: an unknown URL under /api/ answers in the API's error shape."""
    if request.path_info.startswith("/api/"):
        body = {"error": {"code": "not_found", "message": "No such URL in this API."}}
        return JsonResponse(body, status=status.HTTP_404_NOT_FOUND)
    return page_not_found(request, exception)


class ErrorBodySerializer(serializers.Serializer):
    code = serializers.CharField(help_text="Stable, machine-readable, e.g. self_approval.")
    message = serializers.CharField(help_text="For the person who asked.")
    fields = serializers.DictField(
        required=False,
        help_text="The errors of each field: for code 'invalid', and for a rule's refusal "
        "of one field (endpoint_required, invalid_endpoint: device_endpoint; invalid_waves: "
        "waves; invalid_window: window).",
    )


class ErrorSerializer(serializers.Serializer):
    error = ErrorBodySerializer()


ERRORS = {
    400: OpenApiResponse(ErrorSerializer, "Invalid input or refused by a rule."),
    401: OpenApiResponse(ErrorSerializer, "Not authenticated."),
    403: OpenApiResponse(
        ErrorSerializer,
        "Visible, but your role does not allow it; or a browser session that has not passed "
        "the second factor (second_factor_required: API tokens are not asked for one).",
    ),
    404: OpenApiResponse(
        ErrorSerializer, "No such object, or one you may not see (lists: no such page)."
    ),
    409: OpenApiResponse(ErrorSerializer, "The state does not allow it (or a race was lost)."),
    429: OpenApiResponse(
        ErrorSerializer,
        "Past this token's rate (API_THROTTLE_RATE): try again after Retry-After seconds.",
    ),
    502: OpenApiResponse(ErrorSerializer, "AWS refused or failed; the code is AWS's."),
    503: OpenApiResponse(
        ErrorSerializer,
        "AWS, or the portal's shared AWS rate for the account, is busy: try again after "
        "Retry-After seconds. Nothing was changed.",
    ),
}
# What any operation may answer: no or a bad token, a role or a session that does not allow
# it, the token's rate.
ALWAYS = (401, 403, 429)


def errors(*codes: int) -> dict:
    """The documented error responses of an operation, by status code: ``codes`` and those
    every operation may answer (ALWAYS)."""
    return {code: ERRORS[code] for code in sorted({*ALWAYS, *codes})}
