"""The API's operations: each fetches through ``transfers.access`` (404 for what one may not
see) and changes things only through ``transfers.workflow``, as the pages do."""

from __future__ import annotations

import re

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.db.models import Q
from django.http import Http404
from django.urls import reverse
from drf_spectacular.utils import extend_schema
from rest_framework import exceptions, generics, status
from rest_framework.decorators import api_view
from rest_framework.pagination import PageNumberPagination
from rest_framework.response import Response

from transfers import batches, permissions, waves, workflow
from transfers.access import (
    get_batch_for_user,
    get_certificate_for_user,
    get_transfer_for_user,
    with_source_side,
)
from transfers.api.errors import errors
from transfers.api.inputs import (
    AcceptSerializer,
    BatchCreateSerializer,
    CertificateFilterSerializer,
    CommentSerializer,
    DeclineSerializer,
    PlanRequestSerializer,
    RejectSerializer,
    TransferCreateSerializer,
    TransferFilterSerializer,
    TransferListFilterSerializer,
)
from transfers.api.outputs import (
    BatchCheckSerializer,
    BatchDetailSerializer,
    BatchSerializer,
    CertificateSerializer,
    PlanSerializer,
    TransferDetailSerializer,
    TransferSerializer,
    approval_figures,
    batch_check,
)
from transfers.forms import SORTS
from transfers.models import AwsAccount, Certificate, Transfer, TransferBatch
from transfers.search import batch_counts, filter_batches, narrow, narrowing, search
from transfers.workflow import TransferError


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


TRANSFER_RELATED = (
    "source",
    "target",
    "requester",
    "approver",
    "target_approver",
    "device_released_by",
)
BATCH_RELATED = ("source", "requester", "approver", "stopped_by")


def _detail(pk: int, request) -> dict:
    transfer = (
        Transfer.objects.select_related(*TRANSFER_RELATED).prefetch_related("events").get(pk=pk)
    )
    return TransferDetailSerializer(transfer, context={"request": request}).data


def _batch_detail(pk: int, request) -> dict:
    batch = TransferBatch.objects.select_related(*BATCH_RELATED).get(pk=pk)
    return BatchDetailSerializer(batch, context={"request": request}).data


# ----------------------------------------------------------------------------- certificates


def _certificates(user, data: dict):
    """The certificates GET /api/certificates/ lists for these filter values: those of the
    managed accounts the user can see, narrowed, searched and sorted as the list page does."""
    accounts = AwsAccount.objects.visible_to(user).filter(managed=True)
    certs, _ = narrow(accounts, data)
    found = search(certs, data.get("q", ""), **narrowing(data))
    return found.order_by(*SORTS[data.get("sort") or "newest"])


@extend_schema(
    parameters=[CertificateFilterSerializer],
    responses={200: CertificateSerializer(many=True), **errors(400, 404)},
)
class CertificateList(generics.ListAPIView):
    """Certificates of the managed accounts you can see."""

    serializer_class = CertificateSerializer
    pagination_class = Pages

    def get_queryset(self):
        data = _valid(CertificateFilterSerializer, _query(self.request))
        return (
            _certificates(self.request.user, data)
            .select_related("account")
            .prefetch_related("policies", "things")
        )


@extend_schema(responses={200: CertificateSerializer, **errors(404)})
@api_view(["GET"])
def certificate_detail(request, pk: int) -> Response:
    cert, _ = get_certificate_for_user(request.user, pk)
    return Response(CertificateSerializer(cert).data)


@extend_schema(
    request=PlanRequestSerializer,
    responses={200: PlanSerializer, **errors(400, 404, 502, 503)},
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


class TransferRows(generics.ListAPIView):
    """A page of transfers, the approvals of its rows counted for the page at once."""

    serializer_class = TransferSerializer
    pagination_class = Pages

    def list(self, request, *args, **kwargs) -> Response:
        page = self.paginate_queryset(self.get_queryset())
        context = {**self.get_serializer_context(), "approvals": approval_figures(page)}
        rows = TransferSerializer(page, many=True, context=context).data
        return self.get_paginated_response(rows)


class TransferList(TransferRows):
    """Transfers out of or into an account you can see, newest first."""

    def get_queryset(self):
        data = _valid(TransferListFilterSerializer, _query(self.request))
        user = self.request.user
        transfers = Transfer.objects.visible_to(user)
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
        if data.get("batch"):
            transfers = transfers.filter(batch_id=data["batch"])
        if data.get("landing_state"):
            transfers = transfers.filter(landing_state=data["landing_state"])
        if "target_approved" in data:
            transfers = transfers.filter(target_approver__isnull=not data["target_approved"])
        if "landing_to_approve" in data:
            waiting = Q(pk__in=permissions.landings_to_approve(user).values("pk"))
            transfers = transfers.filter(waiting if data["landing_to_approve"] else ~waiting)
        transfers = with_source_side(transfers, user)
        return transfers.select_related(*TRANSFER_RELATED).order_by("-created", "-pk")

    @extend_schema(
        parameters=[TransferListFilterSerializer],
        responses={200: TransferSerializer(many=True), **errors(400, 404)},
    )
    def get(self, request, *args, **kwargs):
        return super().get(request, *args, **kwargs)

    @extend_schema(
        request=TransferCreateSerializer,
        responses={201: TransferDetailSerializer, **errors(400, 404, 409, 502, 503)},
        summary="Request a transfer (an approver must approve it)",
    )
    def post(self, request, *args, **kwargs) -> Response:
        serializer = TransferCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        cert, _ = get_certificate_for_user(request.user, data["certificate"])
        options = serializer.options()
        if options.tell_devices and not cert.things.all():
            options.tell_devices = False  # no thing, no device to tell (as a batch's)
        transfer = workflow.request_transfer(
            request.user,
            cert,
            target_account_id=data["target_account_id"],
            message=data["message"],
            reason=data["reason"],
            options=options,
            fingerprint=data["plan_fingerprint"],
            landing=serializer.landing_choice(),
        )
        location = reverse("api:transfer-detail", args=[transfer.pk])
        return Response(
            _detail(transfer.pk, request),
            status=status.HTTP_201_CREATED,
            headers={"Location": location},
        )


@extend_schema(responses={200: TransferDetailSerializer, **errors(404)})
@api_view(["GET"])
def transfer_detail(request, pk: int) -> Response:
    transfer = get_transfer_for_user(request.user, pk)
    return Response(_detail(transfer.pk, request))


class IncomingList(TransferRows):
    """Transfers waiting for acceptance into a managed account you may operate."""

    def get_queryset(self):
        user = self.request.user
        return (
            with_source_side(permissions.incoming(user), user)
            .select_related(*TRANSFER_RELATED)
            .order_by("pending_since", "pk")
        )

    @extend_schema(responses={200: TransferSerializer(many=True), **errors(400, 404)})
    def get(self, request, *args, **kwargs):
        return super().get(request, *args, **kwargs)


def _act(request, pk: int, action, body=None, field: str = "") -> Response:
    """Run a service on a transfer the user can see (404 otherwise); answer the new state.

    ``body``: the serializer of the request body; the value of its ``field`` is passed on."""
    transfer = get_transfer_for_user(request.user, pk)
    args = (_valid(body, request.data)[field],) if body is not None else ()
    action(request.user, transfer.pk, *args)
    return Response(_detail(transfer.pk, request))


ACTION_RESPONSES = {200: TransferDetailSerializer, **errors(400, 404, 409)}
AWS_ACTION_RESPONSES = {**ACTION_RESPONSES, **errors(502, 503)}


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


@extend_schema(
    request=CommentSerializer,
    responses=ACTION_RESPONSES,
    summary="Approve the landing for the target account (a pre-accepted move): an approver "
    "of the managed target, never the requester nor who approved the move",
)
@api_view(["POST"])
def approve_landing(request, pk: int) -> Response:
    return _act(request, pk, workflow.approve_landing, CommentSerializer, "comment")


@extend_schema(
    request=None,
    responses=ACTION_RESPONSES,
    summary="Try a stopped landing again (one nobody approved: by who may approve it)",
)
@api_view(["POST"])
def retry_landing(request, pk: int) -> Response:
    return _act(request, pk, workflow.retry_landing)


@extend_schema(
    request=None,
    responses=ACTION_RESPONSES,
    summary="Record that a stopped landing was finished by hand in AWS",
)
@api_view(["POST"])
def landed_by_hand(request, pk: int) -> Response:
    return _act(request, pk, workflow.finished_by_hand)


@extend_schema(
    request=None,
    responses=ACTION_RESPONSES,
    summary="Try an incomplete restore again (putting back what preparation removed)",
)
@api_view(["POST"])
def retry_restore(request, pk: int) -> Response:
    return _act(request, pk, workflow.retry_restore)


@extend_schema(
    request=None,
    responses=ACTION_RESPONSES,
    summary="Record that what was left of an incomplete restore was finished by hand in AWS",
)
@api_view(["POST"])
def restored_by_hand(request, pk: int) -> Response:
    return _act(request, pk, workflow.restored_by_hand)


@extend_schema(
    request=CommentSerializer,
    responses=ACTION_RESPONSES,
    summary="Release a transfer held for its devices (their job failed, was rejected or timed "
    "out): it moves without their confirmation (an approver of the source)",
)
@api_view(["POST"])
def release_devices(request, pk: int) -> Response:
    return _act(request, pk, workflow.release_devices, CommentSerializer, "comment")


@extend_schema(
    request=CommentSerializer,
    responses=ACTION_RESPONSES,
    summary="Stop a transfer still waiting for (or held by) its devices: it ends cancelled, "
    "the certificate untouched in the source, its own job cancelled (its requester or an "
    "approver of the source)",
)
@api_view(["POST"])
def stop_waiting(request, pk: int) -> Response:
    return _act(request, pk, workflow.stop_waiting_for_devices, CommentSerializer, "comment")


def _check_with_aws(user, pk: int) -> str:
    transfer = Transfer.objects.select_related("source").get(pk=pk)
    if not permissions.can_operate(user, transfer.source):
        raise TransferError("forbidden", "Your role does not allow this on this account.", 403)
    return workflow.reconcile_one(pk)  # AWS's refusals: errors.exception_handler


@extend_schema(
    request=None,
    responses=AWS_ACTION_RESPONSES,
    summary="Check a pending or failed transfer with AWS now (as the reconciler does)",
)
@api_view(["POST"])
def reconcile(request, pk: int) -> Response:
    return _act(request, pk, _check_with_aws)


# ----------------------------------------------------------------------------- batches


def _batch_selection(user, data: dict) -> tuple[list[Certificate], list[str]]:
    """The certificates a batch request names (``certificates`` or ``filter``) that the user
    may request from, and the AWS ids of those left out for it (as the batch page: a
    certificate of an account the user may not request from is left out, with the reason,
    like one not in the inventory). 403 for a user who may request from nowhere, 404 for an
    id one cannot see (as a single request's certificate)."""
    requestable = set(permissions.requestable_accounts(user).values_list("pk", flat=True))
    if not requestable:
        raise DjangoPermissionDenied("Your role does not allow requesting transfers.")
    if "filter" in data:
        # One more than a batch holds: too many is refused, never cut silently.
        certs = list(
            _certificates(user, data["filter"])
            .select_related("account")
            .prefetch_related("policies", "things")[: batches.MAX_BATCH + 1]
        )
    else:
        wanted = list(dict.fromkeys(data["certificates"]))
        found = (
            Certificate.objects.visible_to(user)
            .select_related("account")
            .prefetch_related("policies", "things")
            .in_bulk(wanted)
        )
        unknown = [pk for pk in wanted if pk not in found]
        if unknown:  # as a single request's certificate: 404, existence never leaks
            shown = ", ".join(map(str, unknown[:10])) + ("…" if len(unknown) > 10 else "")
            raise Http404(f"No such certificate: {shown}.")
        certs = [found[pk] for pk in wanted]
    missing = [c.certificate_id for c in certs if c.account_id not in requestable]
    return [c for c in certs if c.account_id in requestable], missing


class BatchList(generics.ListAPIView):
    """Batches out of or into an account you can see, newest first (the batch page's
    filters: a state matches a batch with a transfer in it, an account its source or
    target)."""

    serializer_class = BatchSerializer
    pagination_class = Pages

    def get_queryset(self):
        data = _valid(TransferFilterSerializer, _query(self.request))
        user = self.request.user
        rows = filter_batches(with_source_side(TransferBatch.objects.visible_to(user), user), data)
        return rows.select_related(*BATCH_RELATED).order_by("-created", "-pk")

    def list(self, request, *args, **kwargs) -> Response:
        page = self.paginate_queryset(self.get_queryset())
        counts = batch_counts([batch.pk for batch in page])
        context = {**self.get_serializer_context(), "counts": counts}
        return self.get_paginated_response(BatchSerializer(page, many=True, context=context).data)

    @extend_schema(
        parameters=[TransferFilterSerializer],
        responses={200: BatchSerializer(many=True), **errors(400, 404)},
    )
    def get(self, request, *args, **kwargs):
        return super().get(request, *args, **kwargs)

    @extend_schema(
        request=BatchCreateSerializer,
        responses={201: BatchDetailSerializer, **errors(400, 404, 502, 503)},
        summary="Request a batch: many certificates of one account and region to one target, "
        "one approval, each its own transfer",
    )
    def post(self, request, *args, **kwargs) -> Response:
        serializer = BatchCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        certs, missing = _batch_selection(request.user, data)
        batch = batches.request_batch(
            request.user,
            certs,
            missing,
            target_account_id=data["target_account_id"],
            message=data["message"],
            reason=data["reason"],
            options=serializer.options(),
            landing=serializer.landing_choice(),
            wave_choice=serializer.wave_choice(request.user),
        )
        location = reverse("api:batch-detail", args=[batch.pk])
        return Response(
            _batch_detail(batch.pk, request),
            status=status.HTTP_201_CREATED,
            headers={"Location": location},
        )


@extend_schema(
    request=BatchCreateSerializer,
    responses={200: BatchCheckSerializer, **errors(400, 404)},
    summary="Check a batch before requesting it (the batch page's check): what a request "
    "with this body would include, and what it would leave out and why; changes nothing",
    description="The same body as POST /api/batches/ and the same refusals (empty, too_many, "
    "mixed_sources, invalid_target, unknown_target, endpoint_required, invalid_endpoint, "
    "invalid_waves, invalid_window, …: batches.check_request, which the request applies "
    "too), from the inventory. A planned landing's blockers need a read of the target "
    "account: the request itself finds them (in the batch's skipped).",
)
@api_view(["POST"])
def batch_preflight(request) -> Response:
    serializer = BatchCreateSerializer(data=request.data)
    serializer.is_valid(raise_exception=True)
    data = serializer.validated_data
    certs, missing = _batch_selection(request.user, data)
    options = serializer.options()
    _, _, _, target_account_id, _, _ = batches.check_request(
        request.user,
        certs,
        target_account_id=data["target_account_id"],
        message=data["message"],
        reason=data["reason"],
        options=options,
        wave_choice=serializer.wave_choice(request.user),
    )
    check = batches.preflight(certs, missing, target_account_id, options)
    return Response(batch_check(check))


@extend_schema(responses={200: BatchDetailSerializer, **errors(404)})
@api_view(["GET"])
def batch_detail(request, pk: int) -> Response:
    batch, _ = get_batch_for_user(request.user, pk)
    return Response(_batch_detail(batch.pk, request))


def _batch_act(request, pk: int, allowed, waiting: Q, nothing: str, action, body=None) -> Response:
    """Run ``action(user, batch, *body values)`` on a batch the user can see (404 otherwise)
    when ``allowed(user, batch)`` (transfers.permissions; 403 otherwise), as the batch page
    does, and answer the batch. When none of its transfers is ``waiting`` for the action, a
    409 with ``nothing`` and nothing changed."""
    batch, _ = get_batch_for_user(request.user, pk)
    if not allowed(request.user, batch):
        raise DjangoPermissionDenied("Your role does not allow this on this account.")
    args = tuple(_valid(body, request.data).values()) if body is not None else ()
    if not batch.transfers.filter(waiting).exists():
        raise TransferError("invalid_state", nothing, status.HTTP_409_CONFLICT)
    action(request.user, batch, *args)
    return Response(_batch_detail(batch.pk, request))


REQUESTED = Q(status=Transfer.Status.REQUESTED)
BATCH_RESPONSES = {200: BatchDetailSerializer, **errors(400, 404, 409)}


@extend_schema(
    request=CommentSerializer,
    responses=BATCH_RESPONSES,
    summary="Approve a requested batch (not your own): its transfers are approved in the "
    "background and fed to the workers at the account's API rate",
)
@api_view(["POST"])
def batch_approve(request, pk: int) -> Response:
    return _batch_act(
        request,
        pk,
        permissions.can_decide_batch,
        REQUESTED,
        "Nothing in this batch waits for approval.",
        batches.approve,
        CommentSerializer,
    )


@extend_schema(
    request=DeclineSerializer,
    responses=BATCH_RESPONSES,
    summary="Decline a requested batch (a comment is required)",
)
@api_view(["POST"])
def batch_decline(request, pk: int) -> Response:
    return _batch_act(
        request,
        pk,
        permissions.can_decide_batch,
        REQUESTED,
        "Nothing in this batch waits for a decision.",
        batches.decline,
        DeclineSerializer,
    )


@extend_schema(
    request=None,
    responses=BATCH_RESPONSES,
    summary="Withdraw a batch's requests not yet approved (the requester or an account admin)",
)
@api_view(["POST"])
def batch_withdraw(request, pk: int) -> Response:
    return _batch_act(
        request,
        pk,
        permissions.can_withdraw_batch,
        REQUESTED,
        "Nothing in this batch waits for approval.",
        batches.withdraw,
    )


@extend_schema(
    request=None,
    responses=BATCH_RESPONSES,
    summary="Cancel, in AWS, every transfer of the batch still pending acceptance (in the "
    "background, at the account's API rate); what was removed is put back",
)
@api_view(["POST"])
def batch_cancel(request, pk: int) -> Response:
    return _batch_act(
        request,
        pk,
        permissions.can_operate_batch,
        Q(status=Transfer.Status.PENDING_ACCEPTANCE),
        "Nothing in this batch is pending acceptance.",
        batches.cancel_pending,
    )


@extend_schema(
    request=None,
    responses=BATCH_RESPONSES,
    summary="Retry the batch's failed transfers (an approver other than the requester)",
)
@api_view(["POST"])
def batch_retry(request, pk: int) -> Response:
    return _batch_act(
        request,
        pk,
        permissions.can_decide_batch,
        Q(status=Transfer.Status.FAILED),
        "No transfer of this batch failed.",
        batches.retry_failed,
    )


@extend_schema(
    request=CommentSerializer,
    responses=BATCH_RESPONSES,
    summary="Approve, for the target account, the landing of every open transfer of the "
    "batch that plans one (each checked as a single one)",
)
@api_view(["POST"])
def batch_approve_landing(request, pk: int) -> Response:
    return _batch_act(
        request,
        pk,
        permissions.can_approve_batch_landing,
        Q(landing_state=Transfer.Landing.PLANNED, target_approver__isnull=True)
        & ~Q(status__in=Transfer.Status.TERMINAL),
        "No landing of this batch waits for the target's approval.",
        batches.approve_landing,
        CommentSerializer,
    )


def _wave_act(request, pk: int, action, body=None) -> Response:
    """Run ``action(user, batch, *body values)`` (transfers.waves: it asks
    permissions.can_decide_batch, 403, and refuses a state that does not allow it, 409) on
    a batch the user can see (404 otherwise); answer the batch."""
    batch, _ = get_batch_for_user(request.user, pk)
    args = tuple(_valid(body, request.data).values()) if body is not None else ()
    action(request.user, batch, *args)
    return Response(_batch_detail(batch.pk, request))


@extend_schema(
    request=None,
    responses=BATCH_RESPONSES,
    summary="Resume a batch paused below its wave threshold: the next wave starts (an "
    "approver of the source)",
)
@api_view(["POST"])
def batch_resume(request, pk: int) -> Response:
    return _wave_act(request, pk, waves.resume)


@extend_schema(
    request=CommentSerializer,
    responses=BATCH_RESPONSES,
    summary="Stop a batch: what has not started stays in the source, untouched (those "
    "transfers end cancelled), and the waves' jobs are cancelled for the devices not moved "
    "(an approver of the source)",
)
@api_view(["POST"])
def batch_stop(request, pk: int) -> Response:
    return _wave_act(request, pk, waves.stop, CommentSerializer)
