"""How many approvals a transfer or a batch needs, and how many it has."""

from __future__ import annotations

from policies.models import Approval, ApprovalPolicy, BatchApproval
from transfers.models import AwsAccount, Transfer, TransferBatch

DEFAULT = ApprovalPolicy(approvals=1)


def policy_for(account_pk: int) -> ApprovalPolicy:
    return ApprovalPolicy.objects.filter(account_id=account_pk).first() or DEFAULT


def policies_for(account_pks) -> dict[int, ApprovalPolicy]:
    """One query for a page of requests from several accounts."""
    return {p.account_id: p for p in ApprovalPolicy.objects.filter(account_id__in=account_pks)}


def batch_size(batch_pk: int | None) -> int:
    return Transfer.objects.filter(batch_id=batch_pk).count() if batch_pk else 0


def required(
    transfer: Transfer, policy: ApprovalPolicy | None = None, size: int | None = None
) -> int:
    policy = policy or policy_for(transfer.source_id)
    if policy.approvals == 1 and not (
        policy.large_batch_approvals or policy.unknown_target_approvals
    ):
        return 1  # the default: no need to count the batch
    return policy.required(
        batch_size=batch_size(transfer.batch_id) if size is None else size,
        unknown_target=transfer.target_id is None,
    )


def required_for_batch(batch: TransferBatch, size: int | None = None) -> int:
    policy = policy_for(batch.source_id)
    return policy.required(
        batch_size=batch_size(batch.pk) if size is None else size,
        unknown_target=not AwsAccount.objects.filter(account_id=batch.target_account_id).exists(),
    )


def approvers_of(transfer: Transfer) -> list[str]:
    return list(transfer.approvals.values_list("user__username", flat=True))


def batch_approvers(batch: TransferBatch) -> list[str]:
    return list(BatchApproval.objects.filter(batch=batch).values_list("user__username", flat=True))


__all__ = ["Approval", "BatchApproval", "approvers_of", "policy_for", "required"]


def add_batch_approval(user, batch: TransferBatch, comment: str) -> tuple[int, int]:
    """Record ``user``'s approval of the whole batch: (approvals now, approvals needed)."""
    from transfers.workflow.errors import TransferError

    TransferBatch.objects.select_for_update().filter(pk=batch.pk).first()  # one at a time
    if BatchApproval.objects.filter(batch=batch, user=user).exists():
        raise TransferError(
            "already_approved",
            "You approved this batch already: another approver must add theirs.",
            status=409,
        )
    BatchApproval.objects.create(batch=batch, user=user, comment=comment.strip()[:2000])
    return BatchApproval.objects.filter(batch=batch).count(), required_for_batch(batch)


def annotate_progress(user, transfers: list[Transfer], batch_rows: list) -> None:
    """For the approvals page: ``approvals_have``, ``approvals_needed`` and
    ``approved_by_me`` on each single transfer and each batch of ``batch_rows`` ((batch,
    size, oldest) tuples), in a fixed number of queries however many rows: one when no
    source account has a policy (then one approval approves), four at most otherwise."""
    from django.db.models import Count, Q

    batches = [b for b, _, _ in batch_rows]
    sources = {t.source_id for t in transfers} | {b.source_id for b in batches}
    policies = policies_for(sources) if sources else {}
    for row in [*transfers, *batches]:
        row.approvals_needed, row.approvals_have, row.approved_by_me = 1, 0, False
    if not policies:
        return
    counted = Count("pk"), Count("pk", filter=Q(user=user))
    if transfers:
        found = {
            t: (n, mine)
            for t, n, mine in Approval.objects.filter(transfer__in=transfers)
            .values("transfer")
            .annotate(n=counted[0], mine=counted[1])
            .values_list("transfer", "n", "mine")
        }
        for t in transfers:
            policy = policies.get(t.source_id, DEFAULT)
            t.approvals_needed = policy.required(unknown_target=t.target_id is None)
            t.approvals_have, mine = found.get(t.pk, (0, 0))
            t.approved_by_me = bool(mine)
    if batches:
        known = set(
            AwsAccount.objects.filter(
                account_id__in={b.target_account_id for b in batches}
            ).values_list("account_id", flat=True)
        )
        found = {
            b: (n, mine)
            for b, n, mine in BatchApproval.objects.filter(batch__in=batches)
            .values("batch")
            .annotate(n=counted[0], mine=counted[1])
            .values_list("batch", "n", "mine")
        }
        for b, size, _ in batch_rows:
            policy = policies.get(b.source_id, DEFAULT)
            b.approvals_needed = policy.required(
                batch_size=size, unknown_target=b.target_account_id not in known
            )
            b.approvals_have, mine = found.get(b.pk, (0, 0))
            b.approved_by_me = bool(mine)
