"""Every permission question, answered in one place.

Views, the API and the workflow all ask here; no role sets are spelled out elsewhere.
Roles come from grants (to a user or one of their groups) on an account; a superuser holds
every role everywhere (AwsAccount.role_for).
"""

from __future__ import annotations

from django.db.models import Q, QuerySet

from transfers.models import (
    CAN_APPROVE,
    CAN_OPERATE,
    CAN_REQUEST,
    AwsAccount,
    Role,
    Transfer,
    TransferBatch,
)


def roles(user, account: AwsAccount | None) -> set[str]:
    return account.role_for(user) if account is not None else set()


def can_request(user, account: AwsAccount | None) -> bool:
    return bool(roles(user, account) & CAN_REQUEST)


def can_approve(user, account: AwsAccount | None) -> bool:
    return bool(roles(user, account) & CAN_APPROVE)


def can_operate(user, account: AwsAccount | None) -> bool:
    """Sync the inventory, cancel a pending transfer, act on a batch's transfers."""
    return bool(roles(user, account) & CAN_OPERATE)


def is_admin(user, account: AwsAccount | None) -> bool:
    return Role.ADMIN in roles(user, account)


def can_request_to_unknown(user, source: AwsAccount) -> bool:
    """Only a source admin may send a certificate to an account the portal does not know."""
    return is_admin(user, source)


def can_withdraw(user, transfer: Transfer) -> bool:
    return transfer.requester_id == user.pk or is_admin(user, transfer.source)


def can_retry(user, transfer: Transfer) -> bool:
    """Retrying a failed transfer re-runs destructive preparation: an approver's decision
    (with their second factor), never the requester's alone."""
    return can_approve(user, transfer.source) and transfer.requester_id != user.pk


def can_decide_batch(user, batch) -> bool:
    """Approve, decline or retry a batch (each transfer is checked again on its own)."""
    return can_approve(user, batch.source)


def can_withdraw_batch(user, batch) -> bool:
    return batch.requester_id == user.pk or is_admin(user, batch.source)


def can_operate_batch(user, batch) -> bool:
    return can_operate(user, batch.source)


def can_resend_notice(user, transfer: Transfer) -> bool:
    return bool(roles(user, transfer.source) & (CAN_OPERATE | CAN_APPROVE))


def target_roles(user, transfer: Transfer) -> set[str]:
    """The user's roles in the target account, when the portal manages it."""
    target = transfer.target
    if target is None or not target.managed:
        return set()
    return roles(user, target)


def can_act_as_target(user, transfer: Transfer) -> bool:
    """Accept or reject an incoming transfer: an operator of the managed target account."""
    return bool(target_roles(user, transfer) & CAN_OPERATE)


def _accounts_where(user, allowed: set[str]) -> QuerySet[AwsAccount]:
    """Accounts where the user holds one of ``allowed`` roles, in one query."""
    accounts = AwsAccount.objects.all()
    if not user.is_superuser:
        accounts = accounts.filter(
            Q(grants__user=user, grants__role__in=allowed)
            | Q(grants__group__in=user.groups.all(), grants__role__in=allowed)
        )
    return accounts.distinct()


def approvable_accounts(user) -> QuerySet[AwsAccount]:
    return _accounts_where(user, CAN_APPROVE)


def requestable_accounts(user) -> QuerySet[AwsAccount]:
    return _accounts_where(user, CAN_REQUEST)


def approved_the_move(user, transfer: Transfer) -> bool:
    """Whether ``user`` approved the source side: the transfer itself, one of its approvals,
    or its batch (a batch's approvals are recorded at once, its transfers' own ones later in
    the background)."""
    if transfer.approver_id == user.pk or transfer.approvals.filter(user=user).exists():
        return True
    return (
        transfer.batch_id is not None
        and TransferBatch.objects.filter(pk=transfer.batch_id)
        .filter(Q(approver=user) | Q(approvals__user=user))
        .exists()
    )


def approved_the_landing(user, transfer: Transfer) -> bool:
    return transfer.target_approver_id == user.pk


def approved_a_landing_of(user, batch) -> bool:
    return batch.transfers.filter(target_approver=user).exists()


def can_approve_landing(user, transfer: Transfer) -> bool:
    """The target side approves a landing (in advance, or by accepting a transfer that plans
    one): an approver or admin of the managed target, never the requester nor anyone who
    approved the source side. The same rule whatever the order of the clicks: approving the
    move checks the other way round (approved_the_landing)."""
    target = transfer.target
    if target is None or not target.managed or not can_approve(user, target):
        return False
    return transfer.requester_id != user.pk and not approved_the_move(user, transfer)


def can_approve_batch_landing(user, batch) -> bool:
    """Approve the landings of a batch for its target: an approver or admin of the managed
    target account other than the requester (each transfer is checked again on its own,
    can_approve_landing)."""
    target = AwsAccount.objects.filter(account_id=batch.target_account_id, managed=True).first()
    return can_approve(user, target) and batch.requester_id != user.pk


def operable_targets(user) -> QuerySet[AwsAccount]:
    """Managed accounts the user may accept transfers into."""
    return _accounts_where(user, CAN_OPERATE).filter(managed=True)


def incoming(user) -> QuerySet[Transfer]:
    """The inbox: pending transfers into an account the user may act for. The same rule as
    can_act_as_target (the target relation), for the web inbox and the API alike."""
    return Transfer.objects.filter(
        status=Transfer.Status.PENDING_ACCEPTANCE,
        target__in=operable_targets(user).values("pk"),
    )


def landings_to_approve(user) -> QuerySet[Transfer]:
    """Landings the target side may approve in advance (pre-accepted moves), for the
    approvals page and the API alike: still open, planned, nobody approved it for the target
    yet, into an account the user approves for, neither requested nor approved by them (the
    rest of can_approve_landing is checked on the click)."""
    return (
        Transfer.objects.filter(
            target__in=approvable_accounts(user).values("pk"),
            landing_state=Transfer.Landing.PLANNED,
            target_approver__isnull=True,
            status__in=Transfer.Status.OPEN,
        )
        .exclude(requester=user)
        .exclude(approver=user)
    )


def can_manage_accounts(user) -> bool:
    return user.is_superuser or user.groups.filter(name="admin").exists()


def mappable_accounts(user) -> QuerySet[AwsAccount]:
    """Accounts on which this user may map a single sign-on group to a role: their own."""
    return _accounts_where(user, {Role.ADMIN})


def can_map_groups_on(user, account: AwsAccount | None) -> bool:
    """Add or remove a group mapping on ``account``: its admins. On every account
    (``None``, which reaches accounts nobody else administers): superusers only."""
    return user.is_superuser if account is None else is_admin(user, account)
