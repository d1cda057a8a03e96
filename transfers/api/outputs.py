"""What the API answers: the representations of certificates, plans, transfers and batches,
a batch's check, notices, accounts, the audit log's events, and your preferences.

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
from transfers import batches, downtime, inventory, permissions, ratelimit, waves, workflow
from transfers.access import redact, redact_batch, sees_source_side, source_account_pks
from transfers.models import (
    AwsAccount,
    Certificate,
    Notice,
    SyncRun,
    Transfer,
    TransferBatch,
)
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
    tell_devices = serializers.BooleanField(
        help_text="Its devices are told the target's endpoint first (it has a thing)."
    )


class TransferDevicesSerializer(serializers.Serializer):
    """The certificate's devices (transfers.workflow.devices): told the target's endpoint
    before the move, verified back in the target after it."""

    told = serializers.ListField(
        child=serializers.CharField(),
        help_text="The data endpoints the devices were told, in the order they try them: "
        "the target's first, the source's as fallback (empty until the job is made).",
    )
    job_id = serializers.CharField(help_text="The job in the source that tells them.")
    job_status = serializers.CharField(
        help_text="The worst of its things' executions (SUCCEEDED: all took it)."
    )
    held = serializers.CharField(
        help_text="Why the transfer is held in the source, untouched, for its devices (the "
        "job failed, was rejected or timed out): an approver releases it (release-devices). "
        "Empty when not held, or seen from the target."
    )
    released_by = serializers.CharField(
        allow_null=True, help_text="Who released it to move without the devices' confirmation."
    )
    check = serializers.ChoiceField(
        choices=Transfer.DeviceCheck.choices,
        help_text="After the landing: waiting, back, not_back, unverifiable (the target cannot "
        "be asked: not managed, or without thing connectivity indexing); empty before.",
    )
    back_at = serializers.DateTimeField(
        allow_null=True, help_text="When the devices were connected in the target."
    )
    offline_at = serializers.DateTimeField(
        allow_null=True, help_text="When they left the source (its disconnection record)."
    )
    device_downtime_seconds = serializers.FloatField(
        allow_null=True, help_text="As the devices saw it: from offline_at to back_at."
    )
    reason = serializers.CharField(
        help_text="Why not back, or why it cannot be verified (what AWS says)."
    )
    wave = serializers.IntegerField(
        allow_null=True, help_text="The batch wave it moves in (1: the canary)."
    )


def transfer_devices(transfer: Transfer) -> dict:
    downtime = transfer.device_downtime
    return {
        "told": list(transfer.device_endpoints.get("data") or []),
        "job_id": transfer.device_job_id,
        "job_status": transfer.device_job_status,
        "held": transfer.device_hold,
        "released_by": (
            transfer.device_released_by.get_username() if transfer.device_released_by else None
        ),
        "check": transfer.device_check,
        "back_at": transfer.device_online_at,
        "offline_at": transfer.device_offline_at,
        "device_downtime_seconds": downtime.total_seconds() if downtime is not None else None,
        "reason": transfer.device_reason,
        "wave": transfer.wave,
    }


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
    devices = serializers.SerializerMethodField(
        help_text="Its devices: the endpoints they were told, their job, a hold, and whether "
        "they are back in the target."
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
            "devices",
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

    @extend_schema_field(TransferDevicesSerializer)
    def get_devices(self, transfer: Transfer) -> dict:
        return TransferDevicesSerializer(transfer_devices(transfer)).data

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


class WaveSerializer(serializers.Serializer):
    """One started wave (transfers.waves.outcome)."""

    wave = serializers.IntegerField(help_text="1 is the canary.")
    size = serializers.IntegerField()
    good = serializers.IntegerField(help_text="Done well: landed, and back where verified.")
    bad = serializers.IntegerField(help_text="Failed, held for their devices, or not back.")
    open = serializers.IntegerField(help_text="Not done yet.")
    back = serializers.IntegerField(help_text="Devices verified back online.")
    verified = serializers.BooleanField(
        help_text="Whether the devices' return could be verified (else: landing success)."
    )
    share = serializers.FloatField(help_text="Percent good: compared with the threshold.")


class BatchWavesSerializer(serializers.Serializer):
    enabled = serializers.BooleanField(help_text="false: the batch is one wave.")
    canary = serializers.IntegerField()
    canary_percent = serializers.FloatField()
    factor = serializers.FloatField()
    threshold = serializers.FloatField()
    current = serializers.IntegerField(help_text="The wave started last (0: none yet).")
    paused_at = serializers.DateTimeField(
        allow_null=True, help_text="Paused below the threshold: an approver resumes or stops."
    )
    pause_reason = serializers.CharField()
    stopped_at = serializers.DateTimeField(allow_null=True)
    stopped_by = serializers.CharField(
        allow_null=True, help_text="Who stopped it (null: seen from the target)."
    )
    summary = WaveSerializer(many=True, help_text="Each started wave, in order.")


class BatchWindowSerializer(serializers.Serializer):
    days = serializers.ListField(
        child=serializers.IntegerField(), help_text="0 (Monday) to 6; empty: any time."
    )
    start = serializers.CharField(allow_null=True, help_text="HH:MM, in time_zone.")
    minutes = serializers.IntegerField()
    time_zone = serializers.CharField()
    open_now = serializers.BooleanField()
    next_window = serializers.DateTimeField(
        allow_null=True, help_text="When the next window opens (null: one is open, or none)."
    )


class BatchDevicesSerializer(serializers.Serializer):
    """Whether the batch's devices are back (transfers.downtime.devices)."""

    told = serializers.ListField(
        child=serializers.CharField(),
        help_text="The data endpoints its devices were told, in order (empty until a wave's "
        "job is made).",
    )
    back = serializers.IntegerField(help_text='N in "back online N of M".')
    checked = serializers.IntegerField(
        help_text="M: transfers whose devices are, were or will be looked for."
    )
    not_back = serializers.IntegerField()
    waiting = serializers.IntegerField()
    unverifiable = serializers.IntegerField()
    held = serializers.IntegerField(help_text="Held in the source for their devices' job.")
    downtime = BatchDowntimeSerializer(
        help_text="Device downtime as the devices saw it (disconnected in the source to "
        "connected in the target); here first_unusable_since is the first device's "
        "disconnection and last_usable_at the last one's return."
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
            "waves",
            "window",
            "devices",
            "skipped",
        ]
        read_only_fields = fields

    waves = serializers.SerializerMethodField(
        help_text="Its waves: the settings, the wave started last, a pause or stop, and each "
        "started wave's outcome."
    )
    window = serializers.SerializerMethodField(
        help_text="Its maintenance windows (waves start only inside one)."
    )
    devices = serializers.SerializerMethodField(
        help_text="Its devices: back online N of M, not back, waiting, cannot be verified, "
        "and their downtime."
    )

    @extend_schema_field(BatchWavesSerializer)
    def get_waves(self, batch: TransferBatch) -> dict:
        return BatchWavesSerializer(
            {
                "enabled": batch.waves,
                "canary": batch.wave_canary,
                "canary_percent": batch.wave_canary_percent,
                "factor": batch.wave_factor,
                "threshold": batch.wave_threshold,
                "current": batch.wave,
                "paused_at": batch.paused_at,
                "pause_reason": batch.pause_reason,
                "stopped_at": batch.stopped_at,
                "stopped_by": batch.stopped_by.get_username() if batch.stopped_by else None,
                "summary": waves.summary(batch),
            }
        ).data

    @extend_schema_field(BatchWindowSerializer)
    def get_window(self, batch: TransferBatch) -> dict:
        return BatchWindowSerializer(
            {
                "days": batch.window_days,
                "start": batch.window_start.strftime("%H:%M") if batch.window_start else None,
                "minutes": batch.window_minutes,
                "time_zone": batch.window_tz or "UTC",
                "open_now": waves.in_window(batch),
                "next_window": waves.next_window(batch),
            }
        ).data

    @extend_schema_field(BatchDevicesSerializer)
    def get_devices(self, batch: TransferBatch) -> dict:
        figures = downtime.devices(batch.transfers.all())
        held = batch.transfers.filter(
            status=Transfer.Status.APPROVED, device_released_by__isnull=True
        ).exclude(device_hold="")
        return BatchDevicesSerializer(
            {
                "told": list(batch.device_endpoints.get("data") or []),
                "back": figures.back,
                "checked": figures.checked,
                "not_back": figures.not_back,
                "waiting": figures.waiting,
                "unverifiable": figures.unverifiable,
                "held": held.count(),
                "downtime": _downtime(batch, figures.downtime, downtime.DEVICE),
            }
        ).data

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
        return _downtime(batch, downtime.summarize(batch.transfers.all()))


def _downtime(batch: TransferBatch, figures: downtime.Downtime, ends=downtime.CERTIFICATE):
    """A batch's downtime figures (the certificates' or, ``ends=DEVICE``, the devices')."""
    start, end = ends
    edges = batch.transfers.aggregate(first_unusable_since=Min(start), last_usable_at=Max(end))
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
            **edges,
        }
    ).data


# ----------------------------------------------------------------------------- batch check


class ReadySerializer(serializers.Serializer):
    id = serializers.IntegerField(help_text="The portal's certificate id.")
    certificate_id = serializers.CharField()


class BatchCheckSerializer(serializers.Serializer):
    """The batch page's check before submitting (transfers.batches.preflight)."""

    ready = ReadySerializer(many=True, help_text="What a request would include.")
    deactivate = serializers.IntegerField(help_text="Of those, ACTIVE: deactivated first.")
    detach_policies = serializers.IntegerField(help_text="Of those, with policies to detach.")
    detach_things = serializers.IntegerField(help_text="Of those, with things to detach.")
    skipped = SkippedSerializer(many=True, help_text="What it would leave out, and why.")


def batch_check(check: batches.Preflight) -> dict:
    return BatchCheckSerializer(
        {
            "ready": [{"id": c.pk, "certificate_id": c.certificate_id} for c in check.ready],
            "deactivate": check.deactivate,
            "detach_policies": check.detach_policies,
            "detach_things": check.detach_things,
            "skipped": [{"certificate_id": cid, "reason": why} for cid, why in check.blocked],
        }
    ).data


# ----------------------------------------------------------------------------- notices


class NoticeSerializer(serializers.ModelSerializer):
    transfer = serializers.IntegerField(source="transfer_id", allow_null=True)
    batch = serializers.IntegerField(source="batch_id", allow_null=True)
    digest = serializers.IntegerField(
        source="digest_id",
        allow_null=True,
        help_text="The batch notice that carried this transfer's notice (status batched).",
    )

    class Meta:
        model = Notice
        fields = [
            "id",
            "transfer",
            "batch",
            "digest",
            "channel",
            "recipient",
            "kind",
            "status",
            "attempts",
            "last_error",
            "created",
            "sent_at",
        ]
        read_only_fields = fields


# ----------------------------------------------------------------------------- accounts


class AccountSerializer(serializers.ModelSerializer):
    roles = serializers.SerializerMethodField(help_text="Your roles on it.")

    class Meta:
        model = AwsAccount
        fields = ["id", "account_id", "name", "managed", "regions", "roles"]
        read_only_fields = fields

    @extend_schema_field(serializers.ListField(child=serializers.CharField()))
    def get_roles(self, account: AwsAccount) -> list[str]:
        return sorted(permissions.roles(self.context["request"].user, account))


class SyncRunSerializer(serializers.ModelSerializer):
    class Meta:
        model = SyncRun
        fields = [
            "id",
            "region",
            "status",
            "stage",
            "certificates",
            "described",
            "removed",
            "api_calls",
            "error",
            "created",
            "started",
            "finished",
        ]
        read_only_fields = fields


class DataEndpointSerializer(serializers.Serializer):
    region = serializers.CharField()
    address = serializers.CharField(
        help_text="Where devices moved into the account connect (iot:Data-ATS); 'unknown' "
        "when AWS did not answer (asked again a few minutes later)."
    )


class AllowanceSerializer(serializers.Serializer):
    region = serializers.CharField()
    rate = serializers.FloatField(help_text="Requests per second.")
    source = serializers.CharField(help_text="Where the allowance comes from.")


class ApiAllowanceSerializer(serializers.Serializer):
    api = serializers.CharField()
    regions = AllowanceSerializer(many=True)


class AccountDetailSerializer(AccountSerializer):
    """What the account page shows (no secret: whether a webhook secret or a Slack channel is
    set, not what it is)."""

    webhook_signed = serializers.SerializerMethodField(
        help_text="A webhook signing secret is set (without one, the webhook gets nothing)."
    )
    slack = serializers.SerializerMethodField(help_text="Notices also go to a Slack channel.")
    uses_external_id = serializers.SerializerMethodField()
    contact_emails = serializers.ListField(source="emails", child=serializers.CharField())
    certificate_count = serializers.SerializerMethodField(help_text="In the inventory.")
    approval_policy = serializers.SerializerMethodField(
        help_text="Approvals per transfer out of this account."
    )
    syncing = serializers.SerializerMethodField(help_text="A sync is queued or running.")
    sync_runs = serializers.SerializerMethodField(help_text="The last ten, newest first.")
    data_endpoints = serializers.SerializerMethodField(
        help_text="A managed account's device data endpoint in each region."
    )
    allowances = serializers.SerializerMethodField(
        help_text="A managed account's AWS API allowances: each API's rate in each region."
    )

    class Meta(AccountSerializer.Meta):
        fields = [
            *AccountSerializer.Meta.fields,
            "role_arn",
            "uses_external_id",
            "api_rate",
            "api_rates",
            "contact_emails",
            "webhook_url",
            "webhook_signed",
            "webhook_per_transfer",
            "slack",
            "expiry_days",
            "last_error",
            "certificate_count",
            "approval_policy",
            "syncing",
            "sync_runs",
            "data_endpoints",
            "allowances",
        ]
        read_only_fields = fields

    def get_webhook_signed(self, account: AwsAccount) -> bool:
        return bool(account.webhook_secret)

    def get_slack(self, account: AwsAccount) -> bool:
        return bool(account.slack_webhook_url)

    def get_uses_external_id(self, account: AwsAccount) -> bool:
        return bool(account.external_id)

    def get_certificate_count(self, account: AwsAccount) -> int:
        return account.certificates.count()

    def get_approval_policy(self, account: AwsAccount) -> str:
        policy = getattr(account, "approval_policy", None)
        return policy.describe() if policy is not None else "1 approval"

    def _runs(self, account: AwsAccount) -> list[SyncRun]:
        if "runs" not in self.context:
            self.context["runs"] = list(account.sync_runs.order_by("-created")[:10])
        return self.context["runs"]

    def get_syncing(self, account: AwsAccount) -> bool:
        return any(run.is_open for run in self._runs(account))

    @extend_schema_field(SyncRunSerializer(many=True))
    def get_sync_runs(self, account: AwsAccount) -> list[dict]:
        return SyncRunSerializer(self._runs(account), many=True).data

    @extend_schema_field(DataEndpointSerializer(many=True))
    def get_data_endpoints(self, account: AwsAccount) -> list[dict]:
        pairs = inventory.data_endpoints(account)
        return [{"region": region, "address": address} for region, address in pairs]

    @extend_schema_field(ApiAllowanceSerializer(many=True))
    def get_allowances(self, account: AwsAccount) -> list[dict]:
        if not account.managed:
            return []
        return [
            {
                "api": api,
                "regions": [
                    {"region": region, "rate": rate, "source": source}
                    for region, (rate, source) in zip(account.regions, cells, strict=True)
                ],
            }
            for api, cells in ratelimit.table(account)
        ]


class SyncQueuedSerializer(serializers.Serializer):
    queued = serializers.IntegerField(
        help_text="Regions a sync was queued in now (0: one was queued or running already)."
    )
    account = AccountDetailSerializer()


# ----------------------------------------------------------------------------- audit log


class AuditEventSerializer(serializers.Serializer):
    """An event as the audit log shows it (and its CSV has it): seen only through the
    target, another side's event is a state change without who, what or why."""

    id = serializers.IntegerField(source="pk")
    time = serializers.DateTimeField(source="created")
    transfer = serializers.IntegerField(source="transfer_id")
    batch = serializers.IntegerField(source="transfer.batch_id", allow_null=True)
    source_account = serializers.CharField(source="transfer.source.account_id")
    region = serializers.CharField(source="transfer.region")
    target_account = serializers.CharField(source="transfer.target_account_id")
    certificate_id = serializers.CharField(source="transfer.certificate_id")
    kind = serializers.CharField()
    action = serializers.CharField(source="shown_action")
    actor = serializers.CharField(source="shown_actor")
    from_status = serializers.CharField()
    to_status = serializers.CharField()
    ok = serializers.BooleanField()
    details = serializers.JSONField(source="shown_details", allow_null=True)


# ----------------------------------------------------------------------------- you


class MeSerializer(serializers.Serializer):
    username = serializers.CharField()
    time_zone = serializers.CharField(help_text="Pages and emails show times in it.")
