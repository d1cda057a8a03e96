"""What the API reads: request bodies and query parameters, with the rules the schema states
(the checks themselves, and their error codes, stay in the workflow)."""

from __future__ import annotations

import re
from datetime import time

from django.core.exceptions import ValidationError as DjangoValidationError
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers
from rest_framework.fields import empty

from profiles.models import validate_zone, zone_of
from transfers import waves, workflow
from transfers.batches import MAX_BATCH
from transfers.forms import SORTS
from transfers.models import Certificate, Notice, Transfer, TransferEvent
from transfers.workflow import Options, TransferError


def documented_string(**schema):
    """A CharField whose OpenAPI entry states the rules the services apply to it (so clients
    know them); the checks, and their error codes, stay in the workflow. A blank value is
    passed on as it is: where the pattern requires text, the service refuses it with its own
    code (comment_required, invalid_reason)."""

    @extend_schema_field({"type": "string", **schema})
    class Field(serializers.CharField):
        def run_validation(self, data=empty):
            if isinstance(data, str) and not data.strip():
                return "" if self.trim_whitespace else data
            return super().run_validation(data)

    return Field


# DRF refuses NUL characters (and lone surrogates) in every text field.
NO_NUL = r"^[^\x00]*$"
SOME_TEXT = r"^[^\x00]*[^\s\x00][^\x00]*$"
PRINTABLE = r"^[^\x00-\x1f\x7f]*$"  # AWS's transferMessage and rejectReason
SOME_PRINTABLE = r"^[^\x00-\x1f\x7f]*[^\s\x00-\x1f\x7f][^\x00-\x1f\x7f]*$"
AccountIdField = documented_string(pattern=r"^[0-9]{12}$")
# "+": with allow_blank the schema says "either empty or this", and empty must not be both.
QueryText = documented_string(pattern=r"^[^\x00]+$")


class CertificateFilterSerializer(serializers.Serializer):
    q = QueryText(
        required=False,
        allow_blank=True,
        max_length=2048,
        help_text="Id or ARN prefix, or a policy or thing name prefix.",
    )
    account = QueryText(
        required=False, allow_blank=True, max_length=12, help_text="AWS account id."
    )
    region = QueryText(required=False, allow_blank=True, max_length=32)
    status = serializers.ChoiceField(
        choices=Certificate.Status.choices, required=False, allow_blank=True
    )
    sort = serializers.ChoiceField(choices=list(SORTS), required=False, allow_blank=True)


class TransferFilterSerializer(serializers.Serializer):
    status = serializers.ChoiceField(
        choices=Transfer.Status.choices, required=False, allow_blank=True
    )
    account = QueryText(
        required=False, allow_blank=True, max_length=12, help_text="Source AWS account id."
    )
    requester = QueryText(required=False, allow_blank=True, max_length=150, help_text="User name.")
    since = serializers.DateField(required=False, help_text="Created on or after (YYYY-MM-DD).")
    until = serializers.DateField(required=False, help_text="Created on or before (YYYY-MM-DD).")

    def validate(self, data):
        if data.get("since") and data.get("until") and data["since"] > data["until"]:
            raise serializers.ValidationError({"until": ["Must not be before since."]})
        return data


class TransferListFilterSerializer(TransferFilterSerializer):
    """The transfer list's filters: the batch list's, a batch's (its page's list), and the
    landing's."""

    batch = serializers.IntegerField(
        required=False, min_value=1, max_value=2**63 - 1, help_text="The transfers of a batch."
    )

    landing_state = serializers.ChoiceField(
        choices=[(value, label) for value, label in Transfer.Landing.choices if value],
        required=False,
        allow_blank=True,
        help_text="Transfers whose landing is in this state (planned, landing, landed, "
        "partial, attention).",
    )
    target_approved = serializers.BooleanField(
        required=False,
        help_text="Whether the target side approved its landing (target_approver set).",
    )
    landing_to_approve = serializers.BooleanField(
        required=False,
        help_text="true: the approvals page's landings to approve, those you may approve for "
        "the target (open, planned, not yet approved, neither requested nor approved by you).",
    )


POLICY_NAME = r"^[A-Za-z0-9_+=,.@-]{1,128}$"  # AWS IoT's policy name rule


@extend_schema_field({"type": "string", "pattern": POLICY_NAME, "minLength": 1, "maxLength": 128})
class PolicyNameField(serializers.RegexField):
    def __init__(self, **kwargs):
        super().__init__(POLICY_NAME, max_length=128, **kwargs)


class PolicyPairSerializer(serializers.Serializer):
    source = PolicyNameField(help_text="The policy's name in the source account.")
    target = PolicyNameField(help_text="The target policy to attach instead.")


class LandingSerializer(serializers.Serializer):
    """What happens in the target after acceptance (omit it: the certificate is only
    transferred)."""

    activate = serializers.BooleanField(default=True)
    create_policies = serializers.BooleanField(
        default=False, help_text="Create policies the target lacks from the source's documents."
    )
    policy_map = serializers.ListField(
        child=PolicyPairSerializer(),
        max_length=100,
        required=False,
        default=list,
        help_text="Source policies to attach as other target policies.",
    )
    skip_things = serializers.BooleanField(default=False)
    create_things = serializers.BooleanField(default=True)
    copy_thing_details = serializers.BooleanField(default=True)
    enable_connectivity_indexing = serializers.BooleanField(
        default=False,
        help_text="Turn on thing connectivity indexing in the target when it is off (its other "
        "indexing settings kept), so the portal can verify that the devices reconnected there.",
    )


class PlanRequestSerializer(serializers.Serializer):
    target_account_id = AccountIdField(
        max_length=64,
        trim_whitespace=False,
        help_text="The 12-digit AWS account id that receives it (not the source's).",
    )
    deactivate = serializers.BooleanField(default=True)
    detach_policies = serializers.BooleanField(default=True)
    detach_things = serializers.BooleanField(default=True)
    restore = serializers.BooleanField(default=True)
    landing = LandingSerializer(required=False)

    def validate_target_account_id(self, value: str) -> str:
        # ACCOUNT_ID_RE's \d also matches other scripts' digits (e.g. "١٢٣") and its $ a
        # final line break; AWS's ids are 12 digits 0-9, nothing else.
        if not re.fullmatch(r"[0-9]{12}", value):
            raise TransferError("invalid_target", "The target must be a 12-digit AWS account id.")
        return value

    def options(self) -> Options:
        d = self.validated_data
        return Options(d["deactivate"], d["detach_policies"], d["detach_things"], d["restore"])

    def landing_choice(self) -> workflow.LandingChoice | None:
        landing = self.validated_data.get("landing")
        if landing is None:
            return None
        pairs = {p["source"]: p["target"] for p in landing.get("policy_map", [])}
        return workflow.LandingChoice(**{**landing, "policy_map": pairs})


class RequestSerializer(PlanRequestSerializer):
    """What every request says, single or batch."""

    # The services check the texts (AWS's limits, control characters): keep them verbatim.
    message = documented_string(pattern=PRINTABLE, maxLength=128)(
        required=False,
        default="",
        trim_whitespace=False,
        help_text="AWS transferMessage, seen by the target: 128 printable characters at most.",
    )
    reason = documented_string(pattern=SOME_TEXT, maxLength=2000)(
        help_text="Why, for the approver."
    )

    tell_devices = serializers.BooleanField(
        default=True,
        help_text="Tell the certificate's devices (its things) the target's endpoint first, "
        "through a job in the source (AWS IoT Jobs): the certificate moves only once each "
        "device took it. Applies only to certificates with a thing.",
    )
    device_endpoint = documented_string(
        pattern=r"^[^\x00]*$",
        maxLength=253,
        example="abc123example-ats.iot.us-east-1.amazonaws.com",
    )(
        required=False,
        default="",
        max_length=253,
        help_text="For a target the portal does not manage (it cannot read its endpoint): the "
        "target's iot:Data-ATS endpoint in the region (`aws iot describe-endpoint "
        "--endpoint-type iot:Data-ATS`); required then when the devices are told. Ignored for "
        "a managed target.",
    )

    def options(self) -> Options:
        options = super().options()
        options.tell_devices = self.validated_data["tell_devices"]
        options.device_endpoint = self.validated_data["device_endpoint"]
        return options


class TransferCreateSerializer(RequestSerializer):
    certificate = serializers.IntegerField(help_text="The portal's certificate id.")
    plan_fingerprint = documented_string(pattern=NO_NUL, maxLength=64)(
        required=False,
        default="",
        max_length=64,
        help_text="The fingerprint of the plan you reviewed.",
    )


def documented_number(field_class, **schema):
    """A number field whose OpenAPI entry states its range, checked by the service with its
    own code (waves.WaveChoice.check: invalid_waves, invalid_window)."""

    @extend_schema_field(
        {"type": "integer" if field_class is serializers.IntegerField else "number", **schema}
    )
    class Field(field_class):
        pass

    return Field


class WavesSerializer(serializers.Serializer):
    """A batch's waves (transfers.waves; defaults as shown)."""

    enabled = serializers.BooleanField(default=True, help_text="false: the batch is one wave.")
    canary = documented_number(serializers.IntegerField, minimum=1, maximum=10_000)(
        required=False,
        help_text="The first wave holds at least this many certificates (default 10).",
    )
    canary_percent = documented_number(serializers.FloatField, minimum=0, maximum=100)(
        required=False,
        help_text="… or this share of the batch, whichever is larger (default 1).",
    )
    factor = documented_number(serializers.FloatField, minimum=1, maximum=10)(
        required=False, help_text="Each wave is this many times the one before (default 2)."
    )
    threshold = documented_number(serializers.FloatField, minimum=0, maximum=100)(
        required=False,
        help_text="Percent of a wave's devices back online (or landed, where that cannot be "
        "verified) for the next wave to start; below it the batch pauses (default 95).",
    )


class WindowSerializer(serializers.Serializer):
    """Maintenance windows (transfers.waves): on these days, from start, for minutes."""

    days = serializers.ListField(
        child=documented_number(serializers.IntegerField, minimum=0, maximum=6)(),
        max_length=7,
        help_text="Days of the week, 0 (Monday) to 6 (Sunday), each once.",
    )
    start = documented_string(pattern=r"^([01][0-9]|2[0-3]):[0-5][0-9]$")(
        max_length=5, help_text="When each window opens, HH:MM, in time_zone."
    )
    minutes = documented_number(serializers.IntegerField, minimum=1, maximum=1440)(
        help_text="How long each window stays open."
    )
    time_zone = serializers.CharField(
        required=False,
        default="",
        allow_blank=True,
        max_length=64,
        help_text="An IANA time zone name; empty or omitted: the requester's.",
    )


class BatchCreateSerializer(RequestSerializer):
    """A batch: the certificates by the portal's ids, or every certificate a filter of the
    certificate list finds (at most MAX_BATCH), all of one account and region."""

    certificates = serializers.ListField(
        child=serializers.IntegerField(min_value=1, max_value=2**63 - 1),
        min_length=1,
        max_length=MAX_BATCH,
        required=False,
        help_text="The portal's certificate ids (GET /api/certificates/). Give exactly one of "
        "certificates and filter.",
    )
    filter = CertificateFilterSerializer(
        required=False,
        help_text="Every certificate GET /api/certificates/ lists with these parameters.",
    )

    waves = WavesSerializer(
        required=False,
        help_text="Move in waves: a canary first, then waves that grow, each started when the "
        "one before had enough of its devices back (or landed, where that cannot be "
        "verified); below the threshold the batch pauses for an approver. Omitted: waves "
        "with these defaults.",
    )
    window = WindowSerializer(
        required=False,
        help_text="Maintenance windows: waves start only inside one. Omitted: any time.",
    )

    def wave_choice(self, user) -> waves.WaveChoice:
        """The waves and windows asked for (checked by batches.check_request, with the codes
        invalid_waves and invalid_window)."""
        chosen = self.validated_data.get("waves") or {}
        window = self.validated_data.get("window") or {}
        start = window.get("start") or ""
        if start and not re.fullmatch(r"([01][0-9]|2[0-3]):[0-5][0-9]", start):
            raise TransferError("invalid_window", "The window starts at HH:MM (00:00 to 23:59).")
        days = window.get("days") or []
        return waves.WaveChoice(
            waves=chosen.get("enabled", True),
            canary=chosen.get("canary", 10),
            canary_percent=chosen.get("canary_percent", 1.0),
            factor=chosen.get("factor", 2.0),
            threshold=chosen.get("threshold", 95.0),
            window_days=list(days),
            window_start=time.fromisoformat(start) if start else None,
            window_minutes=window.get("minutes", 0),
            # In the requester's time zone unless another is named.
            window_tz=window.get("time_zone") or (zone_of(user) if days else ""),
        )

    def validate(self, data):
        if ("certificates" in data) == ("filter" in data):
            raise serializers.ValidationError(
                {"certificates": ["Give either certificates or filter."]}
            )
        return data


class CommentSerializer(serializers.Serializer):
    comment = documented_string(pattern=NO_NUL, maxLength=2000)(
        required=False, default="", max_length=2000
    )


class DeclineSerializer(serializers.Serializer):
    comment = documented_string(pattern=SOME_TEXT, maxLength=2000)(
        max_length=2000, help_text="Why: the requester sees it."
    )


class AcceptSerializer(serializers.Serializer):
    set_as_active = serializers.BooleanField(default=False)


class RejectSerializer(serializers.Serializer):
    reason = documented_string(pattern=SOME_PRINTABLE, maxLength=128)(
        trim_whitespace=False,
        help_text="Sent to AWS, seen by the source account: 128 printable characters at most.",
    )


class AuditFilterSerializer(serializers.Serializer):
    """The audit log page's filters."""

    account = documented_string(pattern=r"^[0-9]{12}$")(
        required=False,
        allow_blank=True,
        max_length=12,
        help_text="Source or target AWS account id.",
    )
    certificate = documented_string(pattern=r"^[0-9a-fA-F]{1,64}$")(
        required=False,
        allow_blank=True,
        max_length=64,
        help_text="A certificate id or its start (hexadecimal).",
    )
    transfer = serializers.IntegerField(required=False, min_value=1, max_value=2**63 - 1)
    batch = serializers.IntegerField(required=False, min_value=1, max_value=2**63 - 1)
    user = QueryText(
        required=False, allow_blank=True, max_length=150, help_text="Who acted (user name)."
    )
    action = QueryText(required=False, allow_blank=True, max_length=64)
    kind = serializers.ChoiceField(
        choices=TransferEvent.Kind.choices, required=False, allow_blank=True
    )
    since = serializers.DateField(required=False, help_text="On or after (YYYY-MM-DD).")
    until = serializers.DateField(required=False, help_text="On or before (YYYY-MM-DD).")

    def validate_account(self, value: str) -> str:
        if value and not re.fullmatch(r"[0-9]{12}", value):
            raise serializers.ValidationError("A 12-digit AWS account id.")
        return value

    def validate_certificate(self, value: str) -> str:
        if value and not re.fullmatch(r"[0-9a-fA-F]{1,64}", value):
            raise serializers.ValidationError(
                "A certificate id (or its start) is hexadecimal: 0-9, a-f."
            )
        return value

    def validate(self, data):
        if data.get("since") and data.get("until") and data["since"] > data["until"]:
            raise serializers.ValidationError({"until": ["Must not be before since."]})
        return data


class NoticeFilterSerializer(serializers.Serializer):
    """The notices page's filters, and the notices of one transfer (its page's list)."""

    channel = serializers.ChoiceField(
        choices=Notice.Channel.choices, required=False, allow_blank=True
    )
    kind = serializers.ChoiceField(choices=Notice.Kind.choices, required=False, allow_blank=True)
    status = serializers.ChoiceField(
        choices=Notice.Status.choices, required=False, allow_blank=True
    )
    recipient = QueryText(
        required=False, allow_blank=True, max_length=200, help_text="Part of the recipient."
    )
    transfer = serializers.IntegerField(
        required=False,
        min_value=1,
        max_value=2**63 - 1,
        help_text="The notices of this transfer, as its page lists them (its source's "
        "people). Without it: every notice, for staff only (as the notices page).",
    )


class ProfileSerializer(serializers.Serializer):
    """A person's preferences (the profile page)."""

    # Not an enum of every zone: generated clients would get a type of some 600 members.
    time_zone = serializers.CharField(
        max_length=64,
        help_text="An IANA time zone name (e.g. Europe/Paris): the pages and emails show "
        "times in it.",
    )

    def validate_time_zone(self, value: str) -> str:
        try:
            validate_zone(value)
        except DjangoValidationError as exc:
            raise serializers.ValidationError(exc.messages) from None
        return value
