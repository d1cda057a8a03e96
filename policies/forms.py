"""The approval policy form of an account."""

from __future__ import annotations

from django import forms

from policies.models import ApprovalPolicy


class PolicyForm(forms.ModelForm):
    class Meta:
        model = ApprovalPolicy
        fields = [
            "approvals",
            "large_batch_size",
            "large_batch_approvals",
            "unknown_target_approvals",
        ]

    def clean(self):
        data = super().clean()
        base = data.get("approvals") or 1
        size, large = data.get("large_batch_size"), data.get("large_batch_approvals")
        if (size is None) != (large is None):
            raise forms.ValidationError(
                "A large-batch rule needs both the size and the number of approvals."
            )
        for name in ("large_batch_approvals", "unknown_target_approvals"):
            value = data.get(name)
            if value is not None and value < base:
                self.add_error(name, f"A stricter rule: at least the {base} every request needs.")
        return data
