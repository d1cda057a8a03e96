"""JSON API for automation: the same objects, permissions and rules as the pages.

Every change goes through ``transfers.workflow``; objects are fetched through
``transfers.access`` so a user who may not see one gets the same 404 as for a missing id.
Errors always have one shape: ``{"error": {"code": ..., "message": ..., "fields": ...}}``.
"""

from __future__ import annotations

import re

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.http import Http404, HttpResponse, JsonResponse
from django.urls import path, reverse
from django.views.defaults import page_not_found
from django_fsm import ConcurrentTransition
from drf_spectacular.extensions import OpenApiSerializerExtension
from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_field
from drf_spectacular.views import SpectacularAPIView
from rest_framework import exceptions, generics, serializers, status
from rest_framework.decorators import api_view
from rest_framework.fields import empty
from rest_framework.pagination import PageNumberPagination
from rest_framework.permissions import IsAuthenticated
from rest_framework.response import Response
from rest_framework.views import set_rollback

from transfers import aws, permissions, workflow
from transfers.access import get_certificate_for_user, get_transfer_for_user
from transfers.forms import SORTS
from transfers.models import AwsAccount, Certificate, Transfer
from transfers.target_view import (
    redact,
    sees_source_side,
    source_account_pks,
    with_source_side,
)
from transfers.views.inventory import narrow, search
from transfers.workflow import Options, TransferError

# ----------------------------------------------------------------------------- errors


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


def exception_handler(exc, context) -> Response | None:
    """Every refusal as ``{"error": {"code", "message"}}`` with a stable code."""
    if isinstance(exc, TransferError):
        retry = {"Retry-After": str(exc.retry_after)} if exc.retry_after else None
        return _error(exc.code, exc.message, exc.status, headers=retry)
    if isinstance(exc, aws.AwsError):  # AWS or the rate limiter, wherever it surfaced
        refusal = TransferError.from_aws(exc)
        retry = {"Retry-After": str(refusal.retry_after)} if refusal.retry_after else None
        return _error(refusal.code, refusal.message, refusal.status, headers=retry)
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
        required=False, help_text="Only for code 'invalid': the errors of each field."
    )


class ErrorSerializer(serializers.Serializer):
    error = ErrorBodySerializer()


ERRORS = {
    400: OpenApiResponse(ErrorSerializer, "Invalid input or refused by a rule."),
    401: OpenApiResponse(ErrorSerializer, "Not authenticated."),
    403: OpenApiResponse(ErrorSerializer, "Visible, but your role does not allow it."),
    404: OpenApiResponse(
        ErrorSerializer, "No such object, or one you may not see (lists: no such page)."
    ),
    409: OpenApiResponse(ErrorSerializer, "The state does not allow it (or a race was lost)."),
    502: OpenApiResponse(ErrorSerializer, "AWS refused or failed; the code is AWS's."),
}


def _errors(*codes: int) -> dict:
    return {code: ERRORS[code] for code in codes}


def _query(request) -> dict:
    """The query string as plain values: "since=" is an empty (so invalid) date, not an absent
    one as HTML-form parsing would have it."""
    return request.query_params.dict()


def _valid(serializer_class, data) -> dict:
    serializer = serializer_class(data=data)
    serializer.is_valid(raise_exception=True)
    return serializer.validated_data


# ----------------------------------------------------------------------------- output


class CertificateSerializer(serializers.ModelSerializer):
    account_id = serializers.CharField(source="account.account_id", read_only=True)
    account_name = serializers.CharField(source="account.name", read_only=True)
    policies = serializers.SlugRelatedField(many=True, read_only=True, slug_field="name")
    things = serializers.SlugRelatedField(many=True, read_only=True, slug_field="name")

    class Meta:
        model = Certificate
        fields = [
            "id",
            "certificate_id",
            "arn",
            "account_id",
            "account_name",
            "region",
            "status",
            "not_before",
            "not_after",
            "policies",
            "things",
            "synced_at",
        ]
        read_only_fields = fields


class PlanSerializer(serializers.Serializer):
    status = serializers.CharField(help_text="The certificate's status in AWS now.")
    policies = serializers.ListField(child=serializers.CharField())
    things = serializers.ListField(child=serializers.CharField())
    not_after = serializers.CharField(allow_null=True)
    steps = serializers.ListField(child=serializers.CharField())
    warnings = serializers.ListField(child=serializers.CharField())
    blockers = serializers.ListField(
        child=serializers.CharField(), help_text="Any blocker: a request would be refused."
    )
    fingerprint = serializers.CharField(
        help_text="Send it back as plan_fingerprint: the request is refused (stale_plan) "
        "if the certificate changed in AWS meanwhile."
    )


@extend_schema_field(PlanSerializer)
class StoredPlanField(serializers.JSONField):
    """The plan saved with the transfer, as the plan endpoint shows it; null if none."""

    def to_representation(self, value):
        return super().to_representation(value) if value else None


class OptionsSerializer(serializers.Serializer):
    deactivate = serializers.BooleanField()
    detach_policies = serializers.BooleanField()
    detach_things = serializers.BooleanField()
    restore = serializers.BooleanField()


class EventSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    created = serializers.DateTimeField()
    kind = serializers.CharField()
    action = serializers.CharField()
    actor = serializers.CharField(source="actor_name", help_text="User name, worker or reconciler.")
    from_status = serializers.CharField()
    to_status = serializers.CharField()
    ok = serializers.BooleanField()
    details = serializers.JSONField()


class TransferSerializer(serializers.ModelSerializer):
    certificate = serializers.IntegerField(
        source="cert_id", allow_null=True, help_text="The portal's certificate id, while it exists."
    )
    source_account_id = serializers.CharField(source="source.account_id")
    source_account_name = serializers.CharField(source="source.name")
    target_account_name = serializers.CharField(
        source="target.name", allow_null=True, help_text="If the portal knows it."
    )
    requester = serializers.CharField(source="requester.get_username")
    approver = serializers.CharField(source="approver.get_username", allow_null=True)
    options = OptionsSerializer(source="*")
    plan = StoredPlanField(
        allow_null=True, help_text="The preflight plan shown when it was requested."
    )
    expires_at = serializers.DateTimeField(
        allow_null=True, help_text="While pending acceptance: when it expires."
    )

    class Meta:
        model = Transfer
        fields = [
            "id",
            "status",
            "certificate",
            "certificate_id",
            "certificate_arn",
            "region",
            "source_account_id",
            "source_account_name",
            "target_account_id",
            "target_account_name",
            "requester",
            "reason",
            "message",
            "options",
            "plan",
            "approver",
            "decision_comment",
            "decided_at",
            "deactivated",
            "detached_policies",
            "detached_things",
            "transferred_arn",
            "attempts",
            "error_code",
            "error_message",
            "transfer_date",
            "accept_date",
            "reject_date",
            "reject_reason",
            "set_as_active",
            "restore_state",
            "created",
            "updated",
            "pending_since",
            "expires_at",
            "finished_at",
        ]
        read_only_fields = fields

    def to_representation(self, instance):
        data = super().to_representation(instance)
        request = self.context.get("request")
        if request is None:
            return data
        # Seen only through the target account: what concerns the target (target_view).
        # Lists annotate it (with_source_side); otherwise the accounts the user holds a role
        # on are read once per response, not per row.
        if getattr(instance, "source_side", None) is None and "source_pks" not in self.context:
            self.context["source_pks"] = source_account_pks(request.user)
        if not sees_source_side(request.user, instance, self.context.get("source_pks")):
            redact(data, instance, with_events="events" in data)
        return data

    def build_standard_field(self, field_name, model_field):
        # The JSON lists of detached names: typed for the schema.
        if field_name in {"detached_policies", "detached_things"}:
            return serializers.ListField, {"child": serializers.CharField(), "read_only": True}
        return super().build_standard_field(field_name, model_field)


class TransferDetailSerializer(TransferSerializer):
    events = EventSerializer(many=True, help_text="The audit timeline, oldest first.")

    class Meta(TransferSerializer.Meta):
        fields = [*TransferSerializer.Meta.fields, "events"]
        read_only_fields = fields


class TransferDetailSchema(OpenApiSerializerExtension):
    """In the schema a detail is a Transfer plus its events (one Transfer component)."""

    target_class = TransferDetailSerializer

    def map_serializer(self, auto_schema, direction):
        base = auto_schema.resolve_serializer(TransferSerializer, direction)
        events = auto_schema._map_serializer_field(self.target.fields["events"], direction)
        extra = {"type": "object", "properties": {"events": events}, "required": ["events"]}
        return {"allOf": [base.ref, extra]}


TRANSFER_RELATED = ("source", "target", "requester", "approver")


def _detail(pk: int, request) -> dict:
    transfer = (
        Transfer.objects.select_related(*TRANSFER_RELATED).prefetch_related("events").get(pk=pk)
    )
    return TransferDetailSerializer(transfer, context={"request": request}).data


# ----------------------------------------------------------------------------- input


def documented_string(**schema):
    """A CharField whose OpenAPI entry states the rules the services apply to it (so clients
    know them); the checks, and their error codes, stay in the workflow. A blank value is
    passed on as it is: where the pattern requires text, the service refuses it with its own
    code (comment_required, invalid_reason)."""

    @extend_schema_field({"type": "string", **schema})
    class Field(serializers.CharField):
        def run_validation(self, data=empty):
            if isinstance(data, str) and not data.strip():
                return "" if self.trim_whitespace else data
            return super().run_validation(data)

    return Field


# DRF refuses NUL characters (and lone surrogates) in every text field.
NO_NUL = r"^[^\x00]*$"
SOME_TEXT = r"^[^\x00]*[^\s\x00][^\x00]*$"
PRINTABLE = r"^[^\x00-\x1f\x7f]*$"  # AWS's transferMessage and rejectReason
SOME_PRINTABLE = r"^[^\x00-\x1f\x7f]*[^\s\x00-\x1f\x7f][^\x00-\x1f\x7f]*$"
AccountIdField = documented_string(pattern=r"^[0-9]{12}$")
# "+": with allow_blank the schema says "either empty or this", and empty must not be both.
QueryText = documented_string(pattern=r"^[^\x00]+$")


class CertificateFilterSerializer(serializers.Serializer):
    q = QueryText(
        required=False,
        allow_blank=True,
        max_length=2048,
        help_text="Id or ARN prefix, or a policy or thing name prefix.",
    )
    account = QueryText(
        required=False, allow_blank=True, max_length=12, help_text="AWS account id."
    )
    region = QueryText(required=False, allow_blank=True, max_length=32)
    status = serializers.ChoiceField(
        choices=Certificate.Status.choices, required=False, allow_blank=True
    )
    sort = serializers.ChoiceField(choices=list(SORTS), required=False, allow_blank=True)


class TransferFilterSerializer(serializers.Serializer):
    status = serializers.ChoiceField(
        choices=Transfer.Status.choices, required=False, allow_blank=True
    )
    account = QueryText(
        required=False, allow_blank=True, max_length=12, help_text="Source AWS account id."
    )
    requester = QueryText(required=False, allow_blank=True, max_length=150, help_text="User name.")
    since = serializers.DateField(required=False, help_text="Created on or after (YYYY-MM-DD).")
    until = serializers.DateField(required=False, help_text="Created on or before (YYYY-MM-DD).")

    def validate(self, data):
        if data.get("since") and data.get("until") and data["since"] > data["until"]:
            raise serializers.ValidationError({"until": ["Must not be before since."]})
        return data


POLICY_NAME = r"^[A-Za-z0-9_+=,.@-]{1,128}$"  # AWS IoT's policy name rule


@extend_schema_field({"type": "string", "pattern": POLICY_NAME, "minLength": 1, "maxLength": 128})
class PolicyNameField(serializers.RegexField):
    def __init__(self, **kwargs):
        super().__init__(POLICY_NAME, max_length=128, **kwargs)


class PolicyPairSerializer(serializers.Serializer):
    source = PolicyNameField(help_text="The policy's name in the source account.")
    target = PolicyNameField(help_text="The target policy to attach instead.")


class LandingSerializer(serializers.Serializer):
    """What happens in the target after acceptance (omit it: the certificate is only
    transferred)."""

    activate = serializers.BooleanField(default=True)
    create_policies = serializers.BooleanField(
        default=False, help_text="Create policies the target lacks from the source's documents."
    )
    policy_map = serializers.ListField(
        child=PolicyPairSerializer(),
        max_length=100,
        required=False,
        default=list,
        help_text="Source policies to attach as other target policies.",
    )
    skip_things = serializers.BooleanField(default=False)
    create_things = serializers.BooleanField(default=True)
    copy_thing_details = serializers.BooleanField(default=True)


class PlanRequestSerializer(serializers.Serializer):
    target_account_id = AccountIdField(
        max_length=64,
        trim_whitespace=False,
        help_text="The 12-digit AWS account id that receives it (not the source's).",
    )
    deactivate = serializers.BooleanField(default=True)
    detach_policies = serializers.BooleanField(default=True)
    detach_things = serializers.BooleanField(default=True)
    restore = serializers.BooleanField(default=True)
    landing = LandingSerializer(required=False)

    def validate_target_account_id(self, value: str) -> str:
        # ACCOUNT_ID_RE's \d also matches other scripts' digits (e.g. "١٢٣") and its $ a
        # final line break; AWS's ids are 12 digits 0-9, nothing else.
        if not re.fullmatch(r"[0-9]{12}", value):
            raise TransferError("invalid_target", "The target must be a 12-digit AWS account id.")
        return value

    def options(self) -> Options:
        d = self.validated_data
        return Options(d["deactivate"], d["detach_policies"], d["detach_things"], d["restore"])

    def landing_choice(self) -> workflow.LandingChoice | None:
        landing = self.validated_data.get("landing")
        if landing is None:
            return None
        pairs = {p["source"]: p["target"] for p in landing.get("policy_map", [])}
        return workflow.LandingChoice(**{**landing, "policy_map": pairs})


class TransferCreateSerializer(PlanRequestSerializer):
    certificate = serializers.IntegerField(help_text="The portal's certificate id.")
    # The services check the texts (AWS's limits, control characters): keep them verbatim.
    message = documented_string(pattern=PRINTABLE, maxLength=128)(
        required=False,
        default="",
        trim_whitespace=False,
        help_text="AWS transferMessage, seen by the target: 128 printable characters at most.",
    )
    reason = documented_string(pattern=SOME_TEXT, maxLength=2000)(
        help_text="Why, for the approver."
    )
    plan_fingerprint = documented_string(pattern=NO_NUL, maxLength=64)(
        required=False,
        default="",
        max_length=64,
        help_text="The fingerprint of the plan you reviewed.",
    )


class CommentSerializer(serializers.Serializer):
    comment = documented_string(pattern=NO_NUL, maxLength=2000)(
        required=False, default="", max_length=2000
    )


class DeclineSerializer(serializers.Serializer):
    comment = documented_string(pattern=SOME_TEXT, maxLength=2000)(
        max_length=2000, help_text="Why: the requester sees it."
    )


class AcceptSerializer(serializers.Serializer):
    set_as_active = serializers.BooleanField(default=False)


class RejectSerializer(serializers.Serializer):
    reason = documented_string(pattern=SOME_PRINTABLE, maxLength=128)(
        trim_whitespace=False,
        help_text="Sent to AWS, seen by the source account: 128 printable characters at most.",
    )


class Pages(PageNumberPagination):
    """Pages 1, 2, 3…: anything else is a 400 (not silently page 1); past the end, a 404."""

    MAX = 10**18 - 1

    def get_page_number(self, request, paginator):
        raw = request.query_params.get(self.page_query_param)
        if raw is None:
            return 1
        if raw in self.last_page_strings:
            return paginator.num_pages
        if not re.fullmatch(r"[1-9][0-9]{0,17}", raw):
            raise exceptions.ValidationError({"page": ["A page number: 1, 2, 3…"]})
        return int(raw)

    def get_schema_operation_parameters(self, view):
        parameters = super().get_schema_operation_parameters(view)
        for parameter in parameters:
            if parameter["name"] == self.page_query_param:
                parameter["schema"].update(minimum=1, maximum=self.MAX)
        return parameters


# ----------------------------------------------------------------------------- certificates


@extend_schema(
    parameters=[CertificateFilterSerializer],
    responses={200: CertificateSerializer(many=True), **_errors(400, 401, 404)},
)
class CertificateList(generics.ListAPIView):
    """Certificates of the managed accounts you can see."""

    serializer_class = CertificateSerializer
    pagination_class = Pages

    def get_queryset(self):
        data = _valid(CertificateFilterSerializer, _query(self.request))
        accounts = AwsAccount.objects.visible_to(self.request.user).filter(managed=True)
        certs, _ = narrow(accounts, data)
        order = SORTS[data.get("sort") or "newest"]
        return (
            search(certs, data.get("q", ""))
            .order_by(*order)
            .select_related("account")
            .prefetch_related("policies", "things")
        )


@extend_schema(responses={200: CertificateSerializer, **_errors(401, 404)})
@api_view(["GET"])
def certificate_detail(request, pk: int) -> Response:
    cert, _ = get_certificate_for_user(request.user, pk)
    return Response(CertificateSerializer(cert).data)


@extend_schema(
    request=PlanRequestSerializer,
    responses={200: PlanSerializer, **_errors(400, 401, 403, 404)},
    summary="Preflight plan of a transfer (reads the certificate from AWS; changes nothing)",
)
@api_view(["POST"])
def certificate_plan(request, pk: int) -> Response:
    cert, _ = get_certificate_for_user(request.user, pk)
    if not permissions.can_request(request.user, cert.account):
        raise DjangoPermissionDenied(
            "Your role does not allow requesting transfers from this account."
        )
    serializer = PlanRequestSerializer(data=request.data)
    serializer.is_valid(raise_exception=True)
    target = serializer.validated_data["target_account_id"].strip()
    plan = workflow.make_plan(cert, target, serializer.options(), serializer.landing_choice())
    return Response(plan.as_dict())


# ----------------------------------------------------------------------------- transfers


class TransferList(generics.ListAPIView):
    """Transfers out of or into an account you can see, newest first."""

    serializer_class = TransferSerializer
    pagination_class = Pages

    def get_queryset(self):
        data = _valid(TransferFilterSerializer, _query(self.request))
        transfers = Transfer.objects.visible_to(self.request.user)
        if data.get("status"):
            transfers = transfers.filter(status=data["status"])
        if data.get("account"):
            transfers = transfers.filter(source__account_id=data["account"])
        if data.get("requester"):
            transfers = transfers.filter(requester__username=data["requester"])
        if data.get("since"):
            transfers = transfers.filter(created__date__gte=data["since"])
        if data.get("until"):
            transfers = transfers.filter(created__date__lte=data["until"])
        transfers = with_source_side(transfers, self.request.user)
        return transfers.select_related(*TRANSFER_RELATED).order_by("-created", "-pk")

    @extend_schema(
        parameters=[TransferFilterSerializer],
        responses={200: TransferSerializer(many=True), **_errors(400, 401, 404)},
    )
    def get(self, request, *args, **kwargs):
        return super().get(request, *args, **kwargs)

    @extend_schema(
        request=TransferCreateSerializer,
        responses={201: TransferDetailSerializer, **_errors(400, 401, 403, 404, 409)},
        summary="Request a transfer (an approver must approve it)",
    )
    def post(self, request, *args, **kwargs) -> Response:
        serializer = TransferCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        cert, _ = get_certificate_for_user(request.user, data["certificate"])
        transfer = workflow.request_transfer(
            request.user,
            cert,
            target_account_id=data["target_account_id"],
            message=data["message"],
            reason=data["reason"],
            options=serializer.options(),
            fingerprint=data["plan_fingerprint"],
            landing=serializer.landing_choice(),
        )
        location = reverse("api:transfer-detail", args=[transfer.pk])
        return Response(
            _detail(transfer.pk, request),
            status=status.HTTP_201_CREATED,
            headers={"Location": location},
        )


@extend_schema(responses={200: TransferDetailSerializer, **_errors(401, 404)})
@api_view(["GET"])
def transfer_detail(request, pk: int) -> Response:
    transfer = get_transfer_for_user(request.user, pk)
    return Response(_detail(transfer.pk, request))


class IncomingList(generics.ListAPIView):
    """Transfers waiting for acceptance into a managed account you may operate."""

    serializer_class = TransferSerializer
    pagination_class = Pages

    def get_queryset(self):
        user = self.request.user
        return (
            with_source_side(permissions.incoming(user), user)
            .select_related(*TRANSFER_RELATED)
            .order_by("pending_since", "pk")
        )

    @extend_schema(responses={200: TransferSerializer(many=True), **_errors(400, 401, 404)})
    def get(self, request, *args, **kwargs):
        return super().get(request, *args, **kwargs)


def _act(request, pk: int, action, body=None, field: str = "") -> Response:
    """Run a service on a transfer the user can see (404 otherwise); answer the new state.

    ``body``: the serializer of the request body; the value of its ``field`` is passed on."""
    transfer = get_transfer_for_user(request.user, pk)
    args = (_valid(body, request.data)[field],) if body is not None else ()
    action(request.user, transfer.pk, *args)
    return Response(_detail(transfer.pk, request))


ACTION_RESPONSES = {200: TransferDetailSerializer, **_errors(400, 401, 403, 404, 409)}
AWS_ACTION_RESPONSES = {**ACTION_RESPONSES, **_errors(502)}


@extend_schema(
    request=CommentSerializer,
    responses=ACTION_RESPONSES,
    summary="Approve a requested transfer (not your own); the worker then runs it",
)
@api_view(["POST"])
def approve(request, pk: int) -> Response:
    return _act(request, pk, workflow.approve, CommentSerializer, "comment")


@extend_schema(
    request=DeclineSerializer,
    responses=ACTION_RESPONSES,
    summary="Decline a requested transfer (a comment is required)",
)
@api_view(["POST"])
def decline(request, pk: int) -> Response:
    return _act(request, pk, workflow.decline, DeclineSerializer, "comment")


@extend_schema(
    request=None,
    responses=ACTION_RESPONSES,
    summary="Withdraw a request not yet approved (the requester or an account admin)",
)
@api_view(["POST"])
def withdraw(request, pk: int) -> Response:
    return _act(request, pk, workflow.withdraw)


@extend_schema(
    request=None,
    responses=AWS_ACTION_RESPONSES,
    summary="Cancel a pending or failed transfer; what was removed is put back",
)
@api_view(["POST"])
def cancel(request, pk: int) -> Response:
    return _act(request, pk, workflow.cancel)


@extend_schema(request=None, responses=ACTION_RESPONSES, summary="Retry a failed transfer")
@api_view(["POST"])
def retry(request, pk: int) -> Response:
    return _act(request, pk, workflow.retry)


@extend_schema(
    request=AcceptSerializer,
    responses=AWS_ACTION_RESPONSES,
    summary="Accept a pending transfer into the target account",
)
@api_view(["POST"])
def accept(request, pk: int) -> Response:
    return _act(request, pk, workflow.accept, AcceptSerializer, "set_as_active")


@extend_schema(
    request=RejectSerializer,
    responses=AWS_ACTION_RESPONSES,
    summary="Reject a pending transfer (a reason is required; the source account sees it)",
)
@api_view(["POST"])
def reject(request, pk: int) -> Response:
    return _act(request, pk, workflow.reject, RejectSerializer, "reason")


# ----------------------------------------------------------------------------- urls

app_name = "api"

urlpatterns = [
    path("certificates/", CertificateList.as_view(), name="certificate-list"),
    path("certificates/<int:pk>/", certificate_detail, name="certificate-detail"),
    path("certificates/<int:pk>/plan/", certificate_plan, name="certificate-plan"),
    path("transfers/", TransferList.as_view(), name="transfer-list"),
    path("transfers/<int:pk>/", transfer_detail, name="transfer-detail"),
    path("transfers/<int:pk>/approve/", approve, name="transfer-approve"),
    path("transfers/<int:pk>/decline/", decline, name="transfer-decline"),
    path("transfers/<int:pk>/withdraw/", withdraw, name="transfer-withdraw"),
    path("transfers/<int:pk>/cancel/", cancel, name="transfer-cancel"),
    path("transfers/<int:pk>/retry/", retry, name="transfer-retry"),
    path("transfers/<int:pk>/accept/", accept, name="transfer-accept"),
    path("transfers/<int:pk>/reject/", reject, name="transfer-reject"),
    path("incoming/", IncomingList.as_view(), name="incoming"),
    # Behind a login like everything else (drf-spectacular serves it to anyone by default).
    path(
        "schema/",
        SpectacularAPIView.as_view(permission_classes=[IsAuthenticated]),
        name="schema",
    ),
]
