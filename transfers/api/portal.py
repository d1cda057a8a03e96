"""The API's operations around the transfers, as their pages have them: notices (the staff's
list, a transfer's notices and its "Send again"), accounts (the list, one account, "Sync
now"), the audit log, and your own preferences. Each fetches through ``transfers.access`` and
asks ``transfers.permissions`` as its page does, and calls the same domain functions."""

from __future__ import annotations

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.http import Http404
from drf_spectacular.utils import extend_schema
from rest_framework import generics, status
from rest_framework.decorators import api_view
from rest_framework.response import Response

from profiles.middleware import SESSION_KEY
from profiles.models import Profile, zone_of
from transfers import inventory, notices, permissions
from transfers.access import get_account_for_user, get_transfer_for_user, sees_source_side
from transfers.api.errors import errors
from transfers.api.inputs import AuditFilterSerializer, NoticeFilterSerializer, ProfileSerializer
from transfers.api.outputs import (
    AccountDetailSerializer,
    AccountSerializer,
    AuditEventSerializer,
    MeSerializer,
    NoticeSerializer,
    SyncQueuedSerializer,
)
from transfers.api.views import Pages, _query, _valid
from transfers.models import AwsAccount, Notice, Transfer
from transfers.search import audit_events
from transfers.workflow import TransferError

# ----------------------------------------------------------------------------- notices


class NoticeList(generics.ListAPIView):
    """Notices, newest first. With ``transfer``: that transfer's, for its source's people (its
    page lists them). Without: every notice, for staff only; to anyone else this list does
    not exist (404), as the notices page."""

    serializer_class = NoticeSerializer
    pagination_class = Pages

    def get_queryset(self):
        data = _valid(NoticeFilterSerializer, _query(self.request))
        user = self.request.user
        if data.get("transfer"):
            transfer = get_transfer_for_user(user, data["transfer"])  # 404 as its page
            if not sees_source_side(user, transfer):
                raise DjangoPermissionDenied(
                    "A transfer's notices are its source's: seen only through the target "
                    "account, its page shows none."
                )
            rows = Notice.objects.filter(transfer=transfer)
        elif user.is_staff:
            rows = Notice.objects.all()
        else:
            raise Http404("No such page")
        for name in ("channel", "kind", "status"):
            if data.get(name):
                rows = rows.filter(**{name: data[name]})
        if data.get("recipient"):
            rows = rows.filter(recipient__icontains=data["recipient"].strip())
        return rows.order_by("-pk")

    @extend_schema(
        parameters=[NoticeFilterSerializer],
        responses={200: NoticeSerializer(many=True), **errors(400, 404)},
    )
    def get(self, request, *args, **kwargs):
        return super().get(request, *args, **kwargs)


# What a notice is doing that "Send again" must not disturb (the transfer page offers no
# button then): being sent, or going out with (or gone out with) its batch's notice.
NOT_RESENDABLE = (Notice.Status.SENDING, Notice.Status.HELD, Notice.Status.BATCHED)


@extend_schema(
    request=None,
    responses={200: NoticeSerializer, **errors(404, 409)},
    summary="Send a transfer's notice again (an operator or approver of its source account)",
)
@api_view(["POST"])
def notice_send_again(request, pk: int) -> Response:
    # As the transfer page's button: a notice of a transfer one can see (404 as a missing
    # one otherwise), then the role (403).
    visible = Transfer.objects.visible_to(request.user).order_by().values("pk")
    notice = Notice.objects.filter(pk=pk, transfer__in=visible).first()
    if notice is None:
        raise Http404("No such notice")
    transfer = get_transfer_for_user(request.user, notice.transfer_id)
    if not permissions.can_resend_notice(request.user, transfer):
        raise DjangoPermissionDenied("Your role does not allow this on this account.")
    if notice.status in NOT_RESENDABLE:
        raise TransferError(
            "invalid_state",
            f"This notice is {notice.status}: it cannot be sent again now.",
            status.HTTP_409_CONFLICT,
        )
    notices.resend(notice)
    notice.refresh_from_db()
    return Response(NoticeSerializer(notice).data)


# ----------------------------------------------------------------------------- accounts


class AccountList(generics.ListAPIView):
    """The accounts you can see (those you hold a role on), managed first, by name."""

    serializer_class = AccountSerializer
    pagination_class = Pages

    def get_queryset(self):
        return AwsAccount.objects.visible_to(self.request.user).order_by("-managed", "name", "pk")

    @extend_schema(responses={200: AccountSerializer(many=True), **errors(400, 404)})
    def get(self, request, *args, **kwargs):
        return super().get(request, *args, **kwargs)


def _account(request, account: AwsAccount) -> dict:
    return AccountDetailSerializer(account, context={"request": request}).data


@extend_schema(responses={200: AccountDetailSerializer, **errors(404)})
@api_view(["GET"])
def account_detail(request, pk: int) -> Response:
    account, _ = get_account_for_user(request.user, pk)
    return Response(_account(request, account))


@extend_schema(
    request=None,
    responses={202: SyncQueuedSerializer, **errors(404, 409)},
    summary="Sync the account's inventory from AWS now, in every region (in the background; "
    "poll the account's sync_runs)",
)
@api_view(["POST"])
def account_sync(request, pk: int) -> Response:
    account, _ = get_account_for_user(request.user, pk)
    if not permissions.can_operate(request.user, account):
        raise DjangoPermissionDenied("Your role on this account does not allow this.")
    if not account.managed:
        raise TransferError(
            "invalid_state",
            "This account is only known, not managed: nothing to sync.",
            status.HTTP_409_CONFLICT,
        )
    queued = inventory.sync_now(account, request.user)
    body = {"queued": queued, "account": _account(request, account)}
    return Response(body, status=status.HTTP_202_ACCEPTED)


# ----------------------------------------------------------------------------- audit log


class AuditList(generics.ListAPIView):
    """The audit log: every event of every transfer you can see, newest first, with the
    page's filters; seen only through a transfer's target, another side's event is a state
    change without who, what or why (and the filters find only what is shown). JSON pages:
    the page's CSV export stays a page."""

    serializer_class = AuditEventSerializer
    pagination_class = Pages

    def get_queryset(self):
        data = _valid(AuditFilterSerializer, _query(self.request))
        # Append-only rows: id order is time order, and the primary key index serves it.
        return (
            audit_events(self.request.user, data).select_related("transfer__source").order_by("-pk")
        )

    @extend_schema(
        parameters=[AuditFilterSerializer],
        responses={200: AuditEventSerializer(many=True), **errors(400, 404)},
    )
    def get(self, request, *args, **kwargs):
        return super().get(request, *args, **kwargs)


# ----------------------------------------------------------------------------- you


def _me(user) -> dict:
    return MeSerializer({"username": user.get_username(), "time_zone": zone_of(user)}).data


@extend_schema(methods=["GET"], responses={200: MeSerializer, **errors()})
@extend_schema(
    methods=["PATCH"],
    request=ProfileSerializer,
    responses={200: MeSerializer, **errors(400)},
    summary="Change your preferences (the profile page): your time zone",
)
@api_view(["GET", "PATCH"])
def me(request) -> Response:
    if request.method == "PATCH":
        data = _valid(ProfileSerializer, request.data)
        profile, _ = Profile.objects.get_or_create(user=request.user)
        profile.time_zone = data["time_zone"]
        profile.save(update_fields=["time_zone"])
        session = getattr(request._request, "session", None)
        if session is not None and session.session_key:  # a browser's: as the profile page
            session[SESSION_KEY] = profile.time_zone
    return Response(_me(request.user))
