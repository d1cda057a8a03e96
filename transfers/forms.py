"""The pages' forms: an account's settings, the certificate and transfer filters, a transfer
request (with its landing), decisions and rejections. They clean input only; the workflow
checks the rules and permissions again."""

from __future__ import annotations

from django import forms

from transfers import outbound, ratelimit
from transfers.models import (
    ACCOUNT_ID_RE,
    MESSAGE_MAX,
    REGION_RE,
    AwsAccount,
    Certificate,
    Transfer,
    validate_transfer_text,
)


class RegionsField(forms.CharField):
    """Regions typed as 'us-east-1, eu-west-1'; stored as a list."""

    def prepare_value(self, value):
        if isinstance(value, list):
            return ", ".join(value)
        return value

    def to_python(self, value):
        text = super().to_python(value) or ""
        regions = [r.strip() for r in text.replace("\n", ",").split(",") if r.strip()]
        bad = [r for r in regions if not REGION_RE.match(r)]
        if bad:
            raise forms.ValidationError(f"Not an AWS region name: {', '.join(bad)}.")
        return list(dict.fromkeys(regions))


class ApiRatesField(forms.CharField):
    """Rates for single APIs, one a line: ``AttachPolicy = 20`` in every region, or
    ``eu-west-1 AttachPolicy = 20`` in one. Stored as ``{"API": rate, "region:API": rate}``."""

    widget = forms.Textarea(attrs={"rows": 3})

    def prepare_value(self, value):
        if isinstance(value, dict):
            return "\n".join(
                f"{key.replace(':', ' ')} = {rate:g}" for key, rate in sorted(value.items())
            )
        return value

    def to_python(self, value):
        text = super().to_python(value) or ""
        rates: dict[str, float] = {}
        for number, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            name, equals, rate_text = line.partition("=")
            words = name.split()
            if not equals or len(words) not in (1, 2):
                raise forms.ValidationError(
                    f"Line {number}: write API = rate, or region API = rate "
                    "(for example AttachPolicy = 20)."
                )
            api = words[-1]
            if api not in ratelimit.iot_apis():
                raise forms.ValidationError(
                    f"Line {number}: {api} is not an AWS IoT API (write it like AttachPolicy)."
                )
            if len(words) == 2 and not REGION_RE.match(words[0]):
                raise forms.ValidationError(f"Line {number}: not an AWS region name: {words[0]}.")
            try:
                rate = float(rate_text)
            except ValueError:
                rate = float("nan")
            if not ratelimit.MIN_RATE <= rate <= ratelimit.MAX_RATE:
                raise forms.ValidationError(
                    f"Line {number}: a rate between {ratelimit.MIN_RATE:g} and "
                    f"{ratelimit.MAX_RATE:g} requests per second."
                )
            rates[":".join(words)] = rate
        return rates


def _public_url(url: str) -> str:
    """A webhook URL the portal may call: public addresses only (transfers.outbound)."""
    if url:
        try:
            outbound.check(url)
        except outbound.UnsafeDestination as exc:
            raise forms.ValidationError(str(exc)) from None
    return url


class AccountForm(forms.ModelForm):
    regions = RegionsField(
        required=False, help_text="Comma-separated, for example us-east-1, eu-west-1."
    )
    webhook_url = forms.URLField(required=False, assume_scheme="https", max_length=200)
    api_rates = ApiRatesField(
        label="Rates per API",
        required=False,
        help_text="Over the above, one a line: API = rate (every region) or region API = rate, "
        "for example AttachPolicy = 20 or eu-west-1 TransferCertificate = 5.",
    )
    slack_webhook_url = forms.URLField(
        label="Slack incoming webhook URL",
        required=False,
        assume_scheme="https",
        max_length=200,
        help_text="Notices are also posted to this Slack channel (Slack: Incoming Webhooks).",
    )

    class Meta:
        model = AwsAccount
        fields = [
            "account_id",
            "name",
            "managed",
            "regions",
            "role_arn",
            "external_id",
            "api_rate",
            "api_rates",
            "contact_emails",
            "webhook_url",
            "webhook_per_transfer",
            "slack_webhook_url",
            "expiry_days",
        ]
        widgets = {"contact_emails": forms.Textarea(attrs={"rows": 3})}

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if self.instance.pk:
            # Fixed once saved (AwsAccount.clean): a posted value is ignored, not applied.
            self.fields["account_id"].disabled = True
            self.fields["account_id"].help_text = "Fixed once saved."

    def clean_webhook_url(self) -> str:
        return _public_url(self.cleaned_data["webhook_url"])

    def clean_slack_webhook_url(self) -> str:
        url = self.cleaned_data["slack_webhook_url"]
        # The URL is the secret (Slack's incoming webhooks are all https): never sent in clear.
        if url and not url.lower().startswith("https://"):
            raise forms.ValidationError("A Slack incoming webhook URL starts with https://.")
        return _public_url(url)

    def clean_account_id(self) -> str:
        # ACCOUNT_ID_RE's \d also matches other scripts' digits (e.g. "١٢٣"); AWS's are 0-9.
        value = self.cleaned_data["account_id"]
        if not value.isascii():
            raise forms.ValidationError("An AWS account id is exactly 12 digits 0-9.")
        return value

    def clean_contact_emails(self) -> str:
        text = self.cleaned_data["contact_emails"]
        emails = [e.strip() for e in text.splitlines() if e.strip()]
        validator = forms.EmailField()
        for email in emails:
            try:
                validator.clean(email)
            except forms.ValidationError:
                raise forms.ValidationError(f"Not an email address: {email}") from None
        return "\n".join(emails)

    def clean_api_rate(self) -> float | None:
        rate = self.cleaned_data["api_rate"]
        if rate is not None and not ratelimit.MIN_RATE <= rate <= ratelimit.MAX_RATE:
            raise forms.ValidationError("Between 0.1 and 1000 requests per second.")
        return rate


# Each ordering is total (ends with the primary key), so pages never overlap or skip and
# can be read from either end; each has an index that serves it (models.Certificate).
SORTS = {
    "newest": ("-creation_date", "certificate_id", "pk"),
    "oldest": ("creation_date", "certificate_id", "pk"),
    "id": ("certificate_id", "pk"),
    "status": ("status", "certificate_id", "pk"),
    "expiry": ("not_after", "certificate_id", "pk"),
}


class CertificateFilterForm(forms.Form):
    q = forms.CharField(required=False, max_length=2048, strip=True)
    account = forms.CharField(required=False, max_length=12)
    region = forms.CharField(required=False, max_length=32)
    status = forms.ChoiceField(
        required=False, choices=[("", "Any status")] + Certificate.Status.choices
    )
    sort = forms.ChoiceField(required=False, choices=[(k, k) for k in SORTS])


class TargetSelect(forms.Select):
    """A select whose options for targets the portal does not manage say so
    (``data-unmanaged``): the form shows the fields only such a target needs."""

    unmanaged: set[str] = set()

    def create_option(self, name, value, *args, **kwargs):
        option = super().create_option(name, value, *args, **kwargs)
        if str(value) in self.unmanaged:
            option["attrs"]["data-unmanaged"] = ""
        return option


class TransferRequestForm(forms.Form):
    target = forms.ChoiceField(label="Target account", widget=TargetSelect)
    new_target_id = forms.CharField(
        label="Or a new 12-digit account id",
        required=False,
        max_length=12,
        help_text="Only account admins may transfer to an account the portal does not know.",
    )
    message = forms.CharField(
        label="Transfer message (AWS transferMessage, seen by the target)",
        required=False,
        max_length=MESSAGE_MAX,
        validators=[validate_transfer_text],
        widget=forms.TextInput(attrs={"maxlength": MESSAGE_MAX}),
    )
    reason = forms.CharField(
        label="Reason (internal, for the approver)",
        max_length=2000,
        widget=forms.Textarea(attrs={"rows": 3}),
    )
    deactivate = forms.BooleanField(
        label="Deactivate it if it is ACTIVE", required=False, initial=True
    )
    detach_policies = forms.BooleanField(label="Detach its policies", required=False, initial=True)
    detach_things = forms.BooleanField(label="Detach its things", required=False, initial=True)
    restore = forms.BooleanField(
        label="Put them back if the transfer is cancelled, rejected or expires",
        required=False,
        initial=True,
    )
    # Landing in the target (workflow.landing): what happens there after acceptance.
    land = forms.BooleanField(
        label="Land it in the target: accept and attach what the plan says (for a target the "
        "portal does not manage, the notice carries the AWS CLI commands)",
        required=False,
    )
    activate = forms.BooleanField(label="Activate it on acceptance", required=False, initial=True)
    create_policies = forms.BooleanField(
        label="Create policies the target lacks from the source's documents (shown as a diff)",
        required=False,
    )
    policy_map = forms.CharField(
        label="Map policies to other target policies (Source=Target, one per line)",
        required=False,
        max_length=4000,
        widget=forms.Textarea(attrs={"rows": 2}),
    )
    skip_things = forms.BooleanField(label="Do not attach things in the target", required=False)
    create_things = forms.BooleanField(
        label="Create things the target lacks", required=False, initial=True
    )
    copy_thing_details = forms.BooleanField(
        label="…with the source thing's type and attributes", required=False, initial=True
    )
    enable_connectivity_indexing = forms.BooleanField(
        label="Turn on thing connectivity indexing in the target if it is off, so that the "
        "portal can verify the devices came back (its other indexing settings kept; shown as a "
        "diff)",
        required=False,
    )
    # The devices (workflow.devices): a job in the source tells the certificate's things the
    # target's endpoint before the certificate is touched.
    tell_devices = forms.BooleanField(
        label="Tell the devices the target's endpoint first",
        required=False,
        initial=True,
        help_text="A job in the source hands each thing the target's endpoint, the source's as "
        "fallback; the certificate moves only once its device confirmed.",
    )
    device_endpoint = forms.CharField(
        label="Target's data endpoint",
        required=False,
        max_length=253,
        help_text="The portal does not manage the target, so it cannot read it: the target's "
        "`aws iot describe-endpoint --endpoint-type iot:Data-ATS`, for example "
        "abc123example-ats.iot.us-east-1.amazonaws.com.",
        widget=forms.TextInput(attrs={"autocomplete": "off", "spellcheck": "false"}),
    )
    fingerprint = forms.CharField(required=False, widget=forms.HiddenInput, max_length=32)

    # Shown only for a target the portal does not manage (the CSS hides it otherwise).
    UNMANAGED_ONLY = ("device_endpoint",)

    def __init__(
        self, *args, source: AwsAccount, allow_new: bool, has_thing: bool = True, **kwargs
    ):
        super().__init__(*args, **kwargs)
        self.fields["tell_devices"].initial = has_thing
        self.set_targets(
            list(AwsAccount.objects.exclude(pk=source.pk).order_by("-managed", "name")),
            allow_new,
        )
        self.fields["target"].required = False
        if not allow_new:
            del self.fields["new_target_id"]

    def set_targets(self, targets: list[AwsAccount], allow_new: bool = False) -> None:
        """The target choices; those the portal does not manage (and "Another account…")
        are marked, so that the endpoint field shows only for them."""
        self.fields["target"].choices = (
            [("", "Choose…")]
            + [(a.account_id, f"{a.name} ({a.account_id})") for a in targets]
            + ([("new", "Another account…")] if allow_new else [])
        )
        self.fields["target"].widget.unmanaged = {a.account_id for a in targets if not a.managed}
        self.fields["target"].widget.unmanaged.add("new")

    def clean(self):
        data = super().clean()
        target = data.get("target")
        if target == "new":
            new_id = (data.get("new_target_id") or "").strip()
            if not (new_id.isascii() and ACCOUNT_ID_RE.match(new_id)):
                self.add_error("new_target_id", "An AWS account id is exactly 12 digits.")
            data["target_account_id"] = new_id
        elif not target:
            self.add_error("target", "Choose the account that receives the certificate.")
        else:
            data["target_account_id"] = target
        return data

    def options(self):
        from transfers.workflow import Options

        d = self.cleaned_data
        return Options(
            d["deactivate"],
            d["detach_policies"],
            d["detach_things"],
            d["restore"],
            tell_devices=d.get("tell_devices", False),
            device_endpoint=d.get("device_endpoint", "") if d.get("tell_devices") else "",
        )

    def check_devices(self, target: AwsAccount | None, region: str):
        """The Options, the devices' part checked as the workflow will (an endpoint typed for
        a target the portal does not manage): its error on the endpoint field, None then."""
        from transfers.workflow import TransferError, check_device_options

        options = self.options()
        try:
            check_device_options(options, target, region)
        except TransferError as exc:
            field = "device_endpoint" if exc.code in DEVICE_ENDPOINT_ERRORS else None
            self.add_error(field, exc.message)
            return None
        return options

    def clean_policy_map(self):
        from transfers.workflow import LandingChoice, TransferError

        try:
            return LandingChoice.parse_map(self.cleaned_data.get("policy_map", ""))
        except TransferError as exc:
            raise forms.ValidationError(exc.message) from None

    def landing_choice(self):
        """The landing asked for, or None when the certificate is only to be transferred."""
        from transfers.workflow import LandingChoice

        d = self.cleaned_data
        if not d.get("land"):
            return None
        return LandingChoice(
            activate=d["activate"],
            create_policies=d["create_policies"],
            policy_map=d["policy_map"],
            skip_things=d["skip_things"],
            create_things=d["create_things"],
            copy_thing_details=d["copy_thing_details"],
            enable_connectivity_indexing=d.get("enable_connectivity_indexing", False),
        )


DEVICE_ENDPOINT_ERRORS = {"endpoint_required", "invalid_endpoint"}


class DecisionForm(forms.Form):
    comment = forms.CharField(
        required=False, max_length=2000, widget=forms.Textarea(attrs={"rows": 2})
    )


class RejectForm(forms.Form):
    reason = forms.CharField(
        max_length=MESSAGE_MAX,
        validators=[validate_transfer_text],
        help_text="Sent to AWS and seen by the source account (128 characters at most).",
    )


class TransferFilterForm(forms.Form):
    status = forms.ChoiceField(
        required=False, choices=[("", "Any state")] + Transfer.Status.choices
    )
    account = forms.CharField(required=False, max_length=12)
    requester = forms.CharField(required=False, max_length=150)
    since = forms.DateField(required=False, widget=forms.DateInput(attrs={"type": "date"}))
    until = forms.DateField(required=False, widget=forms.DateInput(attrs={"type": "date"}))


WEEKDAYS = [
    (0, "Monday"),
    (1, "Tuesday"),
    (2, "Wednesday"),
    (3, "Thursday"),
    (4, "Friday"),
    (5, "Saturday"),
    (6, "Sunday"),
]


class BatchRequestForm(TransferRequestForm):
    """A batch's request: a transfer's choices, plus its waves and maintenance window
    (transfers.waves.WaveChoice checks the values; its error shows on the form)."""

    waves = forms.BooleanField(
        label="Move in waves: a canary first, then growing waves, each started only when "
        "enough of the one before is back",
        required=False,
        initial=True,
    )
    wave_canary = forms.IntegerField(label="Canary size (certificates)", required=False, initial=10)
    wave_canary_percent = forms.FloatField(
        label="…or this share of the batch, if larger (%)", required=False, initial=1.0
    )
    wave_factor = forms.FloatField(
        label="Each wave is this many times the one before", required=False, initial=2.0
    )
    wave_threshold = forms.FloatField(
        label="Start the next wave when this share is back (%); below it the batch pauses",
        required=False,
        initial=95.0,
    )
    window_days = forms.TypedMultipleChoiceField(
        label="Maintenance window: waves start only on these days",
        choices=WEEKDAYS,
        coerce=int,
        required=False,
        widget=forms.CheckboxSelectMultiple,
        help_text="None: any time.",
    )
    window_start = forms.TimeField(
        label="Window starts at",
        required=False,
        widget=forms.TimeInput(attrs={"type": "time"}, format="%H:%M"),
    )
    window_minutes = forms.IntegerField(label="Window length (minutes)", required=False)
    window_tz = forms.CharField(
        label="Window time zone",
        required=False,
        max_length=64,
        help_text="An IANA name such as Europe/Paris.",
    )

    WAVE_FIELDS = ("waves", "wave_canary", "wave_canary_percent", "wave_factor", "wave_threshold")
    WINDOW_FIELDS = ("window_days", "window_start", "window_minutes", "window_tz")

    def __init__(self, *args, zone: str = "UTC", **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["window_tz"].initial = zone

    def wave_choice(self):
        """The WaveChoice asked for, checked (TransferError if it makes no sense); a blank
        number is its default."""
        from transfers.waves import WaveChoice

        d, default = self.cleaned_data, WaveChoice()

        def given(name, fallback):
            value = d.get(name)
            return fallback if value is None else value

        return WaveChoice(
            waves=bool(d.get("waves")),
            canary=given("wave_canary", default.canary),
            canary_percent=given("wave_canary_percent", default.canary_percent),
            factor=given("wave_factor", default.factor),
            threshold=given("wave_threshold", default.threshold),
            window_days=sorted(d.get("window_days") or []),
            window_start=d.get("window_start"),
            window_minutes=given("window_minutes", 0),
            window_tz=(d.get("window_tz") or "").strip(),
        ).check()
