"""Approval policies: how many distinct approvers a source account's requests need.

An account admin sets, per source account, the approvals every request needs (1 by default)
and stricter counts for batches above a size and for targets the portal does not know. Every
approval is an ``Approval`` row (one per person and transfer) besides the transfer's audit
event; a batch's approvals are ``BatchApproval`` rows, one per person.
"""

from __future__ import annotations

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.utils import timezone

from transfers.models import AwsAccount, Transfer, TransferBatch

MAX_APPROVALS = 5
_COUNT = [MinValueValidator(1), MaxValueValidator(MAX_APPROVALS)]


class ApprovalPolicy(models.Model):
    account = models.OneToOneField(AwsAccount, models.CASCADE, related_name="approval_policy")
    approvals = models.PositiveSmallIntegerField(
        "approvals needed", default=1, validators=_COUNT, help_text="Distinct approvers, 1 to 5."
    )
    large_batch_size = models.PositiveIntegerField(
        "large batch: more than",
        null=True,
        blank=True,
        validators=[MinValueValidator(1)],
        help_text="Batches above this many certificates need the count below.",
    )
    large_batch_approvals = models.PositiveSmallIntegerField(
        "approvals for a large batch", null=True, blank=True, validators=_COUNT
    )
    unknown_target_approvals = models.PositiveSmallIntegerField(
        "approvals for an unknown target",
        null=True,
        blank=True,
        validators=_COUNT,
        help_text="Transfers to an account the portal does not know.",
    )
    updated_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, models.SET_NULL, null=True, blank=True, related_name="+"
    )
    updated = models.DateTimeField(default=timezone.now)

    class Meta:
        verbose_name_plural = "approval policies"

    def __str__(self) -> str:
        return f"{self.account}: {self.describe()}"

    def describe(self) -> str:
        parts = [f"{self.approvals} approval{'s' if self.approvals > 1 else ''}"]
        if self.large_batch_size and self.large_batch_approvals:
            parts.append(
                f"{self.large_batch_approvals} for batches of more than {self.large_batch_size}"
            )
        if self.unknown_target_approvals:
            parts.append(f"{self.unknown_target_approvals} for an unknown target")
        return "; ".join(parts)

    def required(self, *, batch_size: int = 0, unknown_target: bool = False) -> int:
        needed = self.approvals
        if (
            self.large_batch_size
            and self.large_batch_approvals
            and batch_size > self.large_batch_size
        ):
            needed = max(needed, self.large_batch_approvals)
        if unknown_target and self.unknown_target_approvals:
            needed = max(needed, self.unknown_target_approvals)
        return needed


class Approval(models.Model):
    """One person's approval of one transfer."""

    transfer = models.ForeignKey(Transfer, models.CASCADE, related_name="approvals")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, models.PROTECT, related_name="+")
    comment = models.TextField(max_length=2000, blank=True)
    created = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["created", "pk"]
        constraints = [
            models.UniqueConstraint(fields=["transfer", "user"], name="approval_once_per_person")
        ]

    def __str__(self) -> str:
        return f"{self.user} approved transfer #{self.transfer_id}"


class BatchApproval(models.Model):
    """One person's approval of a whole batch (each transfer gets its Approval too)."""

    batch = models.ForeignKey(TransferBatch, models.CASCADE, related_name="approvals")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, models.PROTECT, related_name="+")
    comment = models.TextField(max_length=2000, blank=True)
    created = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["created", "pk"]
        constraints = [
            models.UniqueConstraint(fields=["batch", "user"], name="batch_approval_once_per_person")
        ]

    def __str__(self) -> str:
        return f"{self.user} approved batch #{self.batch_id}"


class PolicyChange(models.Model):
    """Audit row: who changed an account's approval policy, from what to what."""

    account = models.ForeignKey(AwsAccount, models.CASCADE, related_name="+")
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, models.SET_NULL, null=True, blank=True, related_name="+"
    )
    before = models.CharField(max_length=300)
    after = models.CharField(max_length=300)
    created = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-created", "-pk"]

    def __str__(self) -> str:
        return f"{self.account}: {self.before} → {self.after}"
