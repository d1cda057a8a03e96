"""The API's operations: each fetches through ``transfers.access`` (404 for what one may not
see) and changes things only through ``transfers.workflow``, as the pages do."""

from __future__ import annotations

import re

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.urls import reverse
from drf_spectacular.utils import extend_schema
from rest_framework import exceptions, generics, status
from rest_framework.decorators import api_view
from rest_framework.pagination import PageNumberPagination
from rest_framework.response import Response

from transfers import permissions, workflow
from transfers.access import get_certificate_for_user, get_transfer_for_user, with_source_side
from transfers.api.errors import errors
from transfers.api.inputs import (
    AcceptSerializer,
    CertificateFilterSerializer,
    CommentSerializer,
    DeclineSerializer,
    PlanRequestSerializer,
    RejectSerializer,
    TransferCreateSerializer,
    TransferFilterSerializer,
)
from transfers.api.outputs import (
    CertificateSerializer,
    PlanSerializer,
    TransferDetailSerializer,
    TransferSerializer,
)
from transfers.forms import SORTS
from transfers.models import AwsAccount, Transfer
from transfers.search import narrow, search


def _query(request) -> dict:
    """The query string as plain values: "since=" is an empty (so invalid) date, not an absent
    one as HTML-form parsing would have it."""
    return request.query_params.dict()


def _valid(serializer_class, data) -> dict:
    serializer = serializer_class(data=data)
    serializer.is_valid(raise_exception=True)
    return serializer.validated_data


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


TRANSFER_RELATED = ("source", "target", "requester", "approver")


def _detail(pk: int, request) -> dict:
    transfer = (
        Transfer.objects.select_related(*TRANSFER_RELATED).prefetch_related("events").get(pk=pk)
    )
    return TransferDetailSerializer(transfer, context={"request": request}).data


# ----------------------------------------------------------------------------- certificates


@extend_schema(
    parameters=[CertificateFilterSerializer],
    responses={200: CertificateSerializer(many=True), **errors(400, 401, 404)},
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


@extend_schema(responses={200: CertificateSerializer, **errors(401, 404)})
@api_view(["GET"])
def certificate_detail(request, pk: int) -> Response:
    cert, _ = get_certificate_for_user(request.user, pk)
    return Response(CertificateSerializer(cert).data)


@extend_schema(
    request=PlanRequestSerializer,
    responses={200: PlanSerializer, **errors(400, 401, 403, 404)},
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
        responses={200: TransferSerializer(many=True), **errors(400, 401, 404)},
    )
    def get(self, request, *args, **kwargs):
        return super().get(request, *args, **kwargs)

    @extend_schema(
        request=TransferCreateSerializer,
        responses={201: TransferDetailSerializer, **errors(400, 401, 403, 404, 409)},
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


@extend_schema(responses={200: TransferDetailSerializer, **errors(401, 404)})
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

    @extend_schema(responses={200: TransferSerializer(many=True), **errors(400, 401, 404)})
    def get(self, request, *args, **kwargs):
        return super().get(request, *args, **kwargs)


def _act(request, pk: int, action, body=None, field: str = "") -> Response:
    """Run a service on a transfer the user can see (404 otherwise); answer the new state.

    ``body``: the serializer of the request body; the value of its ``field`` is passed on."""
    transfer = get_transfer_for_user(request.user, pk)
    args = (_valid(body, request.data)[field],) if body is not None else ()
    action(request.user, transfer.pk, *args)
    return Response(_detail(transfer.pk, request))


ACTION_RESPONSES = {200: TransferDetailSerializer, **errors(400, 401, 403, 404, 409)}
AWS_ACTION_RESPONSES = {**ACTION_RESPONSES, **errors(502)}


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
