"""What the API answers: the representations of certificates, plans, transfers and batches.

Seen only through the target account, a transfer or a batch shows what concerns the target
(transfers.access), as on the pages.
"""

from __future__ import annotations

from django.db.models import Count, Max, Min
from drf_spectacular.extensions import OpenApiSerializerExtension
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from policies import rules
from policies.models import Approval
from transfers import batches, downtime, workflow
from transfers.access import redact, redact_batch, sees_source_side, source_account_pks
from transfers.models import Certificate, Transfer, TransferBatch
from transfers.search import batch_counts
from transfers.workflow.landing_plan import cli_commands
from transfers.workflow.landing_plan import steps_left as landing_steps_left


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


class StoredPlanSerializer(serializers.Serializer):
    """The plan saved with a transfer: the preflight plan of a single request, or the
    inventory's view of the certificate for a transfer of a batch (source "inventory")."""

    source = serializers.CharField(
        required=False, help_text="'inventory' for a transfer of a batch (no fresh read)."
    )
    status = serializers.CharField(help_text="The certificate's status when it was requested.")
    policies = serializers.ListField(child=serializers.CharField())
    things = serializers.ListField(child=serializers.CharField())
    not_after = serializers.CharField(required=False, allow_null=True)
    steps = serializers.ListField(child=serializers.CharField())
    warnings = serializers.ListField(child=serializers.CharField())
    blockers = serializers.ListField(child=serializers.CharField(), required=False)
    fingerprint = serializers.CharField(required=False)


@extend_schema_field(StoredPlanSerializer)
class StoredPlanField(serializers.JSONField):
    """The plan saved with the transfer, as the plan endpoint showed it; null if none."""

    def to_representation(self, value):
        return super().to_representation(value) if value else None


class LandingPolicySerializer(serializers.Serializer):
    source = serializers.CharField(help_text="The policy's name in the source account.")
    name = serializers.CharField(help_text="The target policy attached.")
    create = serializers.BooleanField(help_text="Created from the source's document.")
    document = serializers.CharField(required=False, help_text="The document it is created with.")
    diff = serializers.CharField(required=False, help_text="The source's document rewritten.")


class LandingThingSerializer(serializers.Serializer):
    name = serializers.CharField()
    create = serializers.BooleanField(help_text="Created in the target if missing.")
    type = serializers.CharField(required=False, allow_null=True)
    attributes = serializers.DictField(child=serializers.CharField(), required=False)


class LandingPlanSerializer(serializers.Serializer):
    """What happens in the target after acceptance, as planned at request time."""

    activate = serializers.BooleanField()
    managed = serializers.BooleanField(
        required=False, help_text="The portal manages the target (else: AWS CLI commands)."
    )
    policies = LandingPolicySerializer(many=True)
    things = LandingThingSerializer(many=True)
    warnings = serializers.ListField(child=serializers.CharField(), required=False)
    blockers = serializers.ListField(child=serializers.CharField(), required=False)
    choice = serializers.JSONField(required=False, help_text="The landing choice requested.")


@extend_schema_field(LandingPlanSerializer)
class LandingPlanField(serializers.JSONField):
    """The transfer's landing plan; null when it plans none (only transferred)."""

    def to_representation(self, value):
        return super().to_representation(value) if value else None


class ApprovalsSerializer(serializers.Serializer):
    received = serializers.IntegerField()
    required = serializers.IntegerField(help_text="What the source's approval policy asks.")
    by = serializers.ListField(child=serializers.CharField(), help_text="User names, in order.")


def approval_figures(transfers: list[Transfer]) -> dict[int, dict]:
    """Approvals received, required and by whom, for each of ``transfers`` (with their
    approver loaded): three queries at most, however many (the rules of policies/rules.py).
    With one approval required no Approval row is kept: the approver is the one."""
    if not transfers:
        return {}
    by: dict[int, list[str]] = {t.pk: [] for t in transfers}
    for pk, name in (
        Approval.objects.filter(transfer__in=list(by))
        .order_by("created", "pk")
        .values_list("transfer", "user__username")
    ):
        by[pk].append(name)
    policies = rules.policies_for({t.source_id for t in transfers})
    batch_pks = {t.batch_id for t in transfers if t.batch_id and t.source_id in policies}
    sizes = batch_counts(sorted(batch_pks)) if batch_pks else {}
    figures = {}
    for t in transfers:
        names = by[t.pk]
        if not names and t.approver_id and t.status != Transfer.Status.DECLINED:
            names = [t.approver.get_username()]
        size = sum(sizes.get(t.batch_id, {}).values())
        needed = rules.required(t, policies.get(t.source_id, rules.DEFAULT), size=size)
        figures[t.pk] = {"received": len(names), "required": needed, "by": names}
    return figures


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
    batch = serializers.IntegerField(
        source="batch_id", allow_null=True, help_text="The batch it belongs to, if any."
    )
    approvals = serializers.SerializerMethodField(
        help_text="Approvals received and required, and by whom (null: seen from the target)."
    )
    restore_steps_left = serializers.SerializerMethodField(
        help_text="While a restore is incomplete: what is still to put back."
    )
    landing = LandingPlanField(
        allow_null=True,
        help_text="What happens in the target after acceptance; null when only transferred.",
    )
    landing_steps_left = serializers.SerializerMethodField(
        help_text="While the landing runs or stopped: what is still to do in the target."
    )
    landing_commands = serializers.SerializerMethodField(
        help_text="For a target the portal does not manage: the landing as AWS CLI commands."
    )
    target_approver = serializers.CharField(
        source="target_approver.get_username",
        allow_null=True,
        help_text="Who approved the landing for the target account.",
    )
    downtime_seconds = serializers.SerializerMethodField(
        help_text="Device downtime: from unusable_since to usable_at; null until both."
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
            "restore_attempts",
            "restore_next_at",
            "restore_error",
            "restore_steps_left",
            "batch",
            "approvals",
            "landing",
            "landing_state",
            "landing_attempts",
            "landing_next_at",
            "landing_error",
            "landing_steps_left",
            "landing_commands",
            "target_approver",
            "target_approved_at",
            "unusable_since",
            "usable_at",
            "downtime_seconds",
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
        # Seen only through the target account: what concerns the target (access).
        # Lists annotate it (with_source_side); otherwise the accounts the user holds a role
        # on are read once per response, not per row.
        if getattr(instance, "source_side", None) is None and "source_pks" not in self.context:
            self.context["source_pks"] = source_account_pks(request.user)
        if not sees_source_side(request.user, instance, self.context.get("source_pks")):
            redact(data, instance, with_events="events" in data)
        return data

    @extend_schema_field(ApprovalsSerializer(allow_null=True))
    def get_approvals(self, transfer: Transfer) -> dict:
        figures = self.context.get("approvals") or {}  # a list's, computed at once
        if transfer.pk not in figures:
            figures = approval_figures([transfer])
        return figures[transfer.pk]

    @extend_schema_field(serializers.ListField(child=serializers.CharField()))
    def get_restore_steps_left(self, transfer: Transfer) -> list[str]:
        if transfer.restore_state in (Transfer.Restore.PARTIAL, Transfer.Restore.ATTENTION):
            return workflow.steps_left(transfer)
        return []

    @extend_schema_field(serializers.ListField(child=serializers.CharField()))
    def get_landing_steps_left(self, transfer: Transfer) -> list[str]:
        if transfer.landing_state in (
            Transfer.Landing.LANDING,
            Transfer.Landing.PARTIAL,
            Transfer.Landing.ATTENTION,
        ):
            return landing_steps_left(transfer)
        return []

    @extend_schema_field(serializers.ListField(child=serializers.CharField()))
    def get_landing_commands(self, transfer: Transfer) -> list[str]:
        if transfer.landing and not (transfer.target and transfer.target.managed):
            return cli_commands(transfer)
        return []

    @extend_schema_field(serializers.FloatField(allow_null=True))
    def get_downtime_seconds(self, transfer: Transfer) -> float | None:
        return transfer.downtime.total_seconds() if transfer.downtime is not None else None

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


COUNTS_SCHEMA = {
    "type": "object",
    "additionalProperties": {"type": "integer"},
    "description": "How many of its transfers are in each state (states with none left out).",
}


class BatchSerializer(serializers.ModelSerializer):
    source_account_id = serializers.CharField(source="source.account_id")
    source_account_name = serializers.CharField(source="source.name")
    requester = serializers.CharField(source="requester.get_username")
    approver = serializers.CharField(
        source="approver.get_username",
        allow_null=True,
        help_text="Who decided it (the last approval, or the decline).",
    )
    counts = serializers.SerializerMethodField()

    class Meta:
        model = TransferBatch
        fields = [
            "id",
            "source_account_id",
            "source_account_name",
            "region",
            "target_account_id",
            "requester",
            "reason",
            "message",
            "approver",
            "decision_comment",
            "decided_at",
            "cancel_requested_at",
            "created",
            "counts",
        ]
        read_only_fields = fields

    @extend_schema_field(COUNTS_SCHEMA)
    def get_counts(self, batch: TransferBatch) -> dict[str, int]:
        counts = self.context.get("counts") or {}  # a list's, computed at once
        return counts[batch.pk] if batch.pk in counts else batch_counts([batch.pk])[batch.pk]

    def to_representation(self, instance):
        data = super().to_representation(instance)
        request = self.context.get("request")
        if request is None:
            return data
        if getattr(instance, "source_side", None) is None and "source_pks" not in self.context:
            self.context["source_pks"] = source_account_pks(request.user)
        if not sees_source_side(request.user, instance, self.context.get("source_pks")):
            redact_batch(data)
        return data


class ProgressSerializer(serializers.Serializer):
    """The batch page's live figures (transfers.batches.progress)."""

    total = serializers.IntegerField()
    requested = serializers.IntegerField(help_text="Waiting for approval.")
    waiting = serializers.IntegerField(help_text="Approved, waiting for or with a worker.")
    pending = serializers.IntegerField(help_text="Pending acceptance.")
    accepted = serializers.IntegerField()
    failed = serializers.IntegerField()
    ended = serializers.IntegerField(help_text="In a final state, whichever.")
    rate = serializers.FloatField(help_text="Transfers made per second over the last minute.")
    overall_rate = serializers.FloatField(allow_null=True, help_text="Per second since the first.")
    eta_seconds = serializers.FloatField(allow_null=True, help_text="Estimated time left.")
    done_percent = serializers.IntegerField(help_text="Share prepared and handed to AWS.")
    approving = serializers.BooleanField(help_text="Approved; its transfers being approved.")
    cancelling = serializers.BooleanField(help_text="Its pending transfers being cancelled.")
    live = serializers.BooleanField(help_text="Still moving: worth polling.")


class BatchLandingSerializer(serializers.Serializer):
    transfers = serializers.IntegerField(help_text="Transfers of the batch that plan a landing.")
    by_state = serializers.DictField(
        child=serializers.IntegerField(), help_text="How many are in each landing state."
    )
    waiting_for_target_approval = serializers.IntegerField(
        help_text="Still open, their landing not yet approved by the target side."
    )
    target_approvers = serializers.ListField(
        child=serializers.CharField(), help_text="Who approved landings for the target."
    )


class BucketSerializer(serializers.Serializer):
    label = serializers.CharField()
    count = serializers.IntegerField()


class BatchDowntimeSerializer(serializers.Serializer):
    count = serializers.IntegerField(help_text="Transfers with both ends recorded.")
    p50_seconds = serializers.FloatField(allow_null=True)
    p95_seconds = serializers.FloatField(allow_null=True)
    max_seconds = serializers.FloatField(allow_null=True)
    buckets = BucketSerializer(many=True)
    first_unusable_since = serializers.DateTimeField(
        allow_null=True, help_text="When the first certificate stopped being usable."
    )
    last_usable_at = serializers.DateTimeField(
        allow_null=True, help_text="When the last one was usable in the target."
    )


class SkippedSerializer(serializers.Serializer):
    certificate_id = serializers.CharField()
    reason = serializers.CharField()


class BatchDetailSerializer(BatchSerializer):
    progress = serializers.SerializerMethodField()
    approvals = serializers.SerializerMethodField(
        help_text="Approvals of the batch received and required, and by whom (null: seen "
        "from the target)."
    )
    landing = serializers.SerializerMethodField()
    downtime = serializers.SerializerMethodField()
    skipped = SkippedSerializer(
        many=True, help_text="Certificates left out when it was requested, and why."
    )

    class Meta(BatchSerializer.Meta):
        fields = [
            *BatchSerializer.Meta.fields,
            "progress",
            "approvals",
            "landing",
            "downtime",
            "skipped",
        ]
        read_only_fields = fields

    @extend_schema_field(ProgressSerializer)
    def get_progress(self, batch: TransferBatch) -> dict:
        return ProgressSerializer(batches.progress(batch)).data

    @extend_schema_field(ApprovalsSerializer(allow_null=True))
    def get_approvals(self, batch: TransferBatch) -> dict:
        names = rules.batch_approvers(batch)
        return {
            "received": len(names),
            "required": rules.required_for_batch(batch),
            "by": names,
        }

    @extend_schema_field(BatchLandingSerializer)
    def get_landing(self, batch: TransferBatch) -> dict:
        planned = batch.transfers.exclude(landing_state=Transfer.Landing.NONE)
        by_state = dict(
            planned.order_by()
            .values_list("landing_state")
            .annotate(n=Count("pk"))
            .values_list("landing_state", "n")
        )
        waiting = planned.filter(
            landing_state=Transfer.Landing.PLANNED,
            target_approver__isnull=True,
            status__in=Transfer.Status.OPEN,
        ).count()
        approvers = (
            planned.filter(target_approver__isnull=False)
            .order_by("target_approver__username")
            .values_list("target_approver__username", flat=True)
            .distinct()
        )
        return {
            "transfers": sum(by_state.values()),
            "by_state": by_state,
            "waiting_for_target_approval": waiting,
            "target_approvers": list(approvers),
        }

    @extend_schema_field(BatchDowntimeSerializer)
    def get_downtime(self, batch: TransferBatch) -> dict:
        figures = downtime.summarize(batch.transfers.all())
        ends = batch.transfers.aggregate(
            first_unusable_since=Min("unusable_since"), last_usable_at=Max("usable_at")
        )
        seconds = {
            name: value.total_seconds() if value is not None else None
            for name, value in (
                ("p50_seconds", figures.p50),
                ("p95_seconds", figures.p95),
                ("max_seconds", figures.longest),
            )
        }
        return BatchDowntimeSerializer(
            {
                "count": figures.count,
                **seconds,
                "buckets": [{"label": label, "count": n} for label, n in figures.buckets],
                **ends,
            }
        ).data
