"""Who may see what: one place for views, the API, exports and emails.

Seeing is answered here, doing in permissions.py. A user who may not see an object gets
404 from its accessor (existence never leaks); one who may see it but not change it gets
403. Every view starts with the accessor of its model:
- ``get_account_for_user``, ``get_certificate_for_user``, ``get_transfer_for_user``,
  ``get_batch_for_user``; lists start from the models' ``objects.visible_to(user)``.

The source's people see everything of a transfer. Someone who sees a transfer only through
the target account sees what concerns them: the certificate, the transfer message, dates,
states and their own side's actions; not the source's internal reason, requester and
approver, its options and plan, its errors, its notices, nor the rest of its timeline.
Every page, partial, export and email that shows a transfer or a batch asks here:
- one transfer or batch: ``sees_source_side`` (the transfer and batch pages, the API);
- a list: ``with_source_side`` annotates the same answer per row (the transfer, incoming and
  batch lists, the API's lists);
- events: ``events_seen_by`` narrows and blanks them per row in the query (the audit log
  and its CSV, the overview's recent activity), ``events_for_target`` for one transfer;
- a notice: ``notice_to_source_side`` (the emails).
"""

from __future__ import annotations

from django.core.exceptions import PermissionDenied
from django.db.models import (
    BooleanField,
    Case,
    Exists,
    ExpressionWrapper,
    F,
    JSONField,
    OuterRef,
    Q,
    QuerySet,
    Value,
    When,
)
from django.http import Http404

from transfers.models import (
    AccountGrant,
    AwsAccount,
    Certificate,
    Notice,
    Transfer,
    TransferBatch,
    TransferEvent,
)

# ----------------------------------------------------------------------------- accessors


def get_account_for_user(user, pk: int, need: set[str] | None = None) -> tuple[AwsAccount, set]:
    account = AwsAccount.objects.visible_to(user).filter(pk=pk).first()
    if account is None:
        raise Http404("No such account")
    roles = account.role_for(user)
    if need is not None and not roles & need:
        raise PermissionDenied("Your role on this account does not allow this.")
    return account, roles


def get_certificate_for_user(user, pk: int) -> tuple[Certificate, set]:
    cert = (
        Certificate.objects.visible_to(user)
        .select_related("account")
        .prefetch_related("policies", "things")
        .filter(pk=pk)
        .first()
    )
    if cert is None:
        raise Http404("No such certificate")
    return cert, cert.account.role_for(user)


def get_transfer_for_user(user, pk: int) -> Transfer:
    """A transfer out of or into an account the user can see; 404 otherwise."""
    transfer = (
        Transfer.objects.visible_to(user)
        .select_related("source", "target", "requester", "approver", "cert")
        .filter(pk=pk)
        .first()
    )
    if transfer is None:
        raise Http404("No such transfer")
    return transfer


def get_batch_for_user(user, pk: int) -> tuple[TransferBatch, set]:
    """A batch out of or into an account the user can see (a target's admins open the batch
    their notice links to), with the user's roles on its source; 404 otherwise."""
    batch = (
        TransferBatch.objects.visible_to(user)
        .filter(pk=pk)
        .select_related("source", "requester", "approver")
        .first()
    )
    if batch is None:
        raise Http404("No such batch")
    return batch, batch.source.role_for(user)


# ----------------------------------------------------------------------------- target side


# What the target side reads in place of the action of an event that is not its own.
STATE_CHANGE = "state_change"


def source_account_pks(user) -> set[int]:
    """Accounts on which the user holds a role: one query, for a page or a list."""
    return set(AwsAccount.objects.visible_to(user).values_list("pk", flat=True))


def sees_source_side(
    user, transfer: Transfer | TransferBatch, source_pks: set[int] | None = None
) -> bool:
    """Whether ``user`` sees the whole of a transfer or a batch (it leaves one of their
    accounts), rather than only what concerns its target."""
    if user.is_superuser:
        return True
    annotated = getattr(transfer, "source_side", None)  # with_source_side
    if annotated is not None:
        return annotated
    if source_pks is None:
        source_pks = source_account_pks(user)
    return transfer.source_id in source_pks


def _on_source_side(user, source: str):
    """True for a row whose source account (the field ``source`` names) is one of the
    user's: the same rule as sees_source_side, as an expression."""
    if user.is_superuser:
        return Value(True)
    return Exists(AwsAccount.objects.visible_to(user).filter(pk=OuterRef(source)))


def _by_target_people():
    """True for an event whose actor holds a role on its transfer's target account,
    directly or through a group."""
    grants = AccountGrant.objects.filter(
        account__account_id=OuterRef("transfer__target_account_id")
    )
    return Exists(
        grants.filter(Q(user_id=OuterRef("actor_id")) | Q(group__user=OuterRef("actor_id")))
    )


def _shown(events: QuerySet[TransferEvent], whole) -> QuerySet[TransferEvent]:
    """``events`` annotated ``whole`` (shown as they are) and what is shown of them:
    ``shown_actor``, ``shown_action``, ``shown_details``. An event not shown whole is shown
    only when it is a state change, and then without who, what or why."""
    events = events.annotate(whole=ExpressionWrapper(whole, output_field=BooleanField()))
    return events.filter(Q(whole=True) | Q(kind=TransferEvent.Kind.TRANSITION)).annotate(
        shown_actor=Case(When(whole=True, then=F("actor_name")), default=Value("")),
        shown_action=Case(When(whole=True, then=F("action")), default=Value(STATE_CHANGE)),
        shown_details=Case(
            When(whole=True, then=F("details")), default=Value(None), output_field=JSONField()
        ),
    )


def events_seen_by(user, events: QuerySet[TransferEvent]) -> QuerySet[TransferEvent]:
    """``events`` as ``user`` may see them, decided per row in the query: whole on the
    source side, and the target side's own; other state changes without who, what or why;
    nothing else. Filter and show the ``shown_*`` fields (see _shown)."""
    if user.is_superuser:
        return _shown(events, Value(True))
    return _shown(events, Q(_on_source_side(user, "transfer__source_id")) | Q(_by_target_people()))


def events_for_target(transfer: Transfer) -> list[TransferEvent]:
    """State changes (without who or why, unless the target's people did them) and every
    event of the target's people; ``own`` marks theirs."""
    rows = list(_shown(transfer.events.select_related("actor"), _by_target_people()))
    for row in rows:
        row.own = row.whole
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
    "restore_attempts": 0,
    "restore_next_at": None,
    "restore_error": "",
    "restore_steps_left": [],
    "approvals": None,
}
# Of the API's transfer's devices: why it is held for them and who released it. The
# endpoints told and whether the devices are back concern the target and stay.
DEVICES_SOURCE_ONLY = {"held": "", "released_by": None}
# And of the API's batch.
BATCH_SOURCE_ONLY = {
    "requester": "",
    "reason": "",
    "approver": None,
    "decision_comment": "",
    "decided_at": None,
    "approvals": None,
    "skipped": [],
}


def redact(data: dict, transfer: Transfer, with_events: bool) -> dict:
    """The API's representation of ``transfer`` as the target side may see it."""
    data.update(SOURCE_ONLY)
    if data.get("devices"):
        data["devices"] = {**data["devices"], **DEVICES_SOURCE_ONLY}
    if "options" in data:
        data["options"] = {key: False for key in data["options"]}
    if with_events:
        data["events"] = [
            {
                "id": e.pk,
                "created": e.created.isoformat().replace("+00:00", "Z"),
                "kind": e.kind,
                "action": e.shown_action,
                "actor": e.shown_actor,
                "from_status": e.from_status,
                "to_status": e.to_status,
                "ok": e.ok,
                "details": e.details if e.own else {},
            }
            for e in events_for_target(transfer)
        ]
    return data


def redact_batch(data: dict) -> dict:
    """The API's representation of a batch as the target side may see it (the batch page's
    rule: no reason, people, decision or skipped ids)."""
    data.update({key: value for key, value in BATCH_SOURCE_ONLY.items() if key in data})
    if data.get("waves"):
        data["waves"] = {**data["waves"], "stopped_by": None}  # a person of the source
    return data


def with_source_side(rows: QuerySet, user) -> QuerySet:
    """Annotate ``source_side`` on a queryset of transfers or batches, so a list needs no
    query per row (sees_source_side reads it)."""
    return rows.annotate(source_side=_on_source_side(user, "source_id"))


def notice_to_source_side(notice: Notice) -> bool:
    """Whether a notice may carry the source's side: only an email to the transfer's (or
    batch's) requester or approver. The target's contacts, webhook and Slack channel get
    what concerns the target."""
    subject = notice.transfer or notice.batch
    if notice.channel != Notice.Channel.EMAIL or subject is None:
        return False
    people = (subject.requester, subject.approver)
    return notice.recipient in {u.email for u in people if u is not None and u.email}
