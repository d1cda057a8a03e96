"""What the API answers: the representations of certificates, plans and transfers."""

from __future__ import annotations

from drf_spectacular.extensions import OpenApiSerializerExtension
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from transfers.access import redact, sees_source_side, source_account_pks
from transfers.models import Certificate, Transfer


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


@extend_schema_field(PlanSerializer)
class StoredPlanField(serializers.JSONField):
    """The plan saved with the transfer, as the plan endpoint shows it; null if none."""

    def to_representation(self, value):
        return super().to_representation(value) if value else None


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
