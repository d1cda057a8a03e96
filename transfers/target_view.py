"""What the target account's people see of a transfer into their account.

The source's people see everything. Someone who sees a transfer only through the target
account sees what concerns them: the certificate, the transfer message, dates, states and
their own side's actions; not the source's internal reason, requester and approver, its
options and plan, its errors, its notices, nor the rest of its timeline. The page
(views.transfers.transfer_detail) and the API (api.TransferSerializer) both ask here.
"""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.db.models import Exists, OuterRef, Q, Value

from transfers.models import AwsAccount, Transfer, TransferEvent


def source_account_pks(user) -> set[int]:
    """Accounts on which the user holds a role: one query, for a page or a list."""
    return set(AwsAccount.objects.visible_to(user).values_list("pk", flat=True))


def sees_source_side(user, transfer: Transfer, source_pks: set[int] | None = None) -> bool:
    if user.is_superuser:
        return True
    annotated = getattr(transfer, "source_side", None)  # with_source_side
    if annotated is not None:
        return annotated
    if source_pks is None:
        source_pks = source_account_pks(user)
    return transfer.source_id in source_pks


def target_people(transfer: Transfer) -> set[int]:
    """Users holding a role on the target account, directly or through a group."""
    if transfer.target_id is None:
        return set()
    grants = Q(grants__account_id=transfer.target_id) | Q(
        groups__grants__account_id=transfer.target_id
    )
    return set(get_user_model().objects.filter(grants).values_list("pk", flat=True))


def events_for_target(transfer: Transfer) -> list[TransferEvent]:
    """State changes (without who or why, unless the target's people did them) and every
    event of the target's people; ``own`` marks theirs."""
    people = target_people(transfer)
    rows = list(
        transfer.events.select_related("actor").filter(
            Q(kind=TransferEvent.Kind.TRANSITION) | Q(actor_id__in=people)
        )
    )
    for row in rows:
        row.own = row.actor_id in people
    return rows


# Fields of the API's transfer that stay with the source.
SOURCE_ONLY = {
    "requester": "",
    "reason": "",
    "approver": None,
    "decision_comment": "",
    "decided_at": None,
    "plan": None,
    "deactivated": False,
    "detached_policies": [],
    "detached_things": [],
    "attempts": 0,
    "error_code": "",
    "error_message": "",
    "restore_state": "",
}


def redact(data: dict, transfer: Transfer, with_events: bool) -> dict:
    """The API's representation of ``transfer`` as the target side may see it."""
    data.update(SOURCE_ONLY)
    if "options" in data:
        data["options"] = {key: False for key in data["options"]}
    if with_events:
        data["events"] = [
            {
                "id": e.pk,
                "created": e.created.isoformat().replace("+00:00", "Z"),
                "kind": e.kind,
                "action": e.action if e.own else "state_change",
                "actor": e.actor_name if e.own else "",
                "from_status": e.from_status,
                "to_status": e.to_status,
                "ok": e.ok,
                "details": e.details if e.own else {},
            }
            for e in events_for_target(transfer)
        ]
    return data


def with_source_side(transfers, user):
    """Annotate ``source_side`` on a queryset, so a list needs no query per row."""
    if user.is_superuser:
        return transfers.annotate(source_side=Value(True))
    visible = AwsAccount.objects.visible_to(user).filter(pk=OuterRef("source_id"))
    return transfers.annotate(source_side=Exists(visible))
