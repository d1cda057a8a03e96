from __future__ import annotations

from django import forms

from transfers.models import REGION_RE, AwsAccount, Certificate


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


class AccountForm(forms.ModelForm):
    regions = RegionsField(
        required=False, help_text="Comma-separated, for example us-east-1, eu-west-1."
    )
    webhook_url = forms.URLField(required=False, assume_scheme="https", max_length=200)

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
            "contact_emails",
            "webhook_url",
            "expiry_days",
        ]
        widgets = {"contact_emails": forms.Textarea(attrs={"rows": 3})}


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

    def clean_api_rate(self) -> float:
        rate = self.cleaned_data["api_rate"]
        if not 0.1 <= rate <= 1000:
            raise forms.ValidationError("Between 0.1 and 1000 requests per second.")
        return rate


SORTS = {
    "newest": ("-creation_date", "certificate_id"),
    "oldest": ("creation_date", "certificate_id"),
    "id": ("certificate_id",),
    "status": ("status", "certificate_id"),
    "expiry": ("not_after", "certificate_id"),
}


class CertificateFilterForm(forms.Form):
    q = forms.CharField(required=False, max_length=2048, strip=True)
    account = forms.CharField(required=False, max_length=12)
    region = forms.CharField(required=False, max_length=32)
    status = forms.ChoiceField(required=False, choices=[("", "Any status")] + Certificate.Status.choices)
    sort = forms.ChoiceField(required=False, choices=[(k, k) for k in SORTS])
