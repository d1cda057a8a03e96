"""The Django admin for portal admins: accounts and grants, users and groups with their
grants, API tokens; transfers, events and notices read-only (the audit trail is changed
only by the workflow)."""

from django import forms
from django.contrib import admin
from django.contrib.auth.admin import GroupAdmin, UserAdmin
from django.contrib.auth.models import Group, User
from django.template.response import TemplateResponse
from django.utils import timezone
from django_otp.plugins.otp_static.models import StaticDevice
from django_otp.plugins.otp_totp.models import TOTPDevice
from knox.models import AuthToken

from transfers.api import tokens as api_tokens
from transfers.forms import AccountForm
from transfers.models import (
    AccountGrant,
    ApiToken,
    AuthenticatorApp,
    AwsAccount,
    BackupCodes,
    Certificate,
    Notice,
    SyncRun,
    Transfer,
    TransferEvent,
)


class GrantInline(admin.TabularInline):
    model = AccountGrant
    extra = 1


@admin.register(AwsAccount)
class AwsAccountAdmin(admin.ModelAdmin):
    # The portal's own form: the same checks (a webhook URL must be a public address,
    # regions, contacts, the API rate) whichever page saves the account.
    form = AccountForm
    list_display = ["name", "account_id", "managed", "contacts", "api_rate"]
    list_filter = ["managed"]
    search_fields = ["name", "account_id", "contact_emails"]
    inlines = [GrantInline]
    fieldsets = [
        (None, {"fields": ["account_id", "name", "managed", "regions"]}),
        ("Access", {"fields": ["role_arn", "external_id", "api_rate", "api_rates"]}),
        # The webhook secret is generated on the account page and shown there once.
        ("Notice contacts", {"fields": ["contact_emails", "webhook_url", "expiry_days"]}),
        ("Status", {"fields": ["last_error", "created"]}),
    ]
    readonly_fields = ["last_error", "created"]

    @admin.display(description="Notice contacts")
    def contacts(self, account: AwsAccount) -> str:
        parts = list(account.emails)
        if account.webhook_url:
            parts.append(f"webhook {account.webhook_url}")
        return ", ".join(parts) or "—"


@admin.register(Certificate)
class CertificateAdmin(admin.ModelAdmin):
    list_display = ["certificate_id", "account", "region", "status", "not_after"]
    list_filter = ["status", "region"]
    search_fields = ["certificate_id"]
    readonly_fields = [f.name for f in Certificate._meta.fields]


@admin.register(SyncRun)
class SyncRunAdmin(admin.ModelAdmin):
    list_display = ["account", "region", "status", "api_calls", "certificates", "created"]


class ReadOnly:
    """The audit trail and the workflow's rows change only through the portal's workflow."""

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


class EventInline(ReadOnly, admin.TabularInline):
    model = TransferEvent
    fields = ["created", "kind", "action", "actor_name", "from_status", "to_status", "ok"]
    readonly_fields = fields
    ordering = ["created", "pk"]
    show_change_link = True


@admin.register(Transfer)
class TransferAdmin(ReadOnly, admin.ModelAdmin):
    list_display = ["id", "certificate_id", "source", "target_account_id", "status", "created"]
    list_filter = ["status", "source"]
    list_select_related = ["source"]
    search_fields = ["certificate_id", "certificate_arn", "target_account_id"]
    inlines = [EventInline]


@admin.register(TransferEvent)
class TransferEventAdmin(ReadOnly, admin.ModelAdmin):
    list_display = ["created", "transfer", "kind", "action", "actor_name", "to_status", "ok"]
    list_filter = ["kind", "ok", "created"]
    list_select_related = ["transfer"]
    search_fields = ["action", "actor_name", "transfer__certificate_id"]
    show_full_result_count = False  # a large audit log: no second COUNT(*) per page
    raw_id_fields = ["transfer", "actor"]


@admin.register(Notice)
class NoticeAdmin(ReadOnly, admin.ModelAdmin):
    list_display = ["created", "transfer", "kind", "channel", "recipient", "status", "attempts"]
    list_filter = ["status", "kind", "channel"]
    list_select_related = ["transfer"]
    search_fields = ["recipient"]


# Users and groups: Django's own pages, plus the account roles they hold.
class UserGrantInline(admin.TabularInline):
    model = AccountGrant
    fk_name = "user"
    fields = ["account", "role"]
    extra = 0


class GroupGrantInline(admin.TabularInline):
    model = AccountGrant
    fk_name = "group"
    fields = ["account", "role"]
    extra = 0


admin.site.unregister(User)
admin.site.unregister(Group)


@admin.register(User)
class PortalUserAdmin(UserAdmin):
    inlines = [*UserAdmin.inlines, UserGrantInline]


@admin.register(Group)
class PortalGroupAdmin(GroupAdmin):
    inlines = [*GroupAdmin.inlines, GroupGrantInline]


# API tokens: knox registers its own admin, which lists digests and puts a new token in a
# message (a cookie); this one shows a new token once, on the page after "Save", and never
# shows a stored digest.
admin.site.unregister(AuthToken)


class ApiTokenIssueForm(forms.ModelForm):
    days = forms.IntegerField(
        required=False,
        min_value=1,
        max_value=api_tokens.MAX_DAYS,
        help_text="It expires after this many days. Empty: it lives until revoked.",
    )

    class Meta:
        model = ApiToken
        fields = ["user"]


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    """Issue (shown once), list and revoke (delete): a token is never changed."""

    form = ApiTokenIssueForm
    list_display = ["user", "prefix", "created", "expiry", "state"]
    list_select_related = ["user"]
    search_fields = ["user__username", "token_key"]
    ordering = ["-created"]

    def get_fields(self, request, obj=None):
        return ["user", "days"] if obj is None else ["user", "prefix", "created", "expiry"]

    def formfield_for_foreignkey(self, db_field, request, **kwargs):
        if db_field.name == "user":
            # Offered, and accepted: only those this staff member may issue a token for.
            kwargs["queryset"] = api_tokens.holders_for(request.user).order_by("username")
        return super().formfield_for_foreignkey(db_field, request, **kwargs)

    def get_readonly_fields(self, request, obj=None):
        return [] if obj is None else ["user", "prefix", "created", "expiry"]

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    @admin.display(description="starts with")
    def prefix(self, token: ApiToken) -> str:
        return f"{token.prefix}…"

    @admin.display(description="state")
    def state(self, token: ApiToken) -> str:
        if token.expiry is not None and token.expiry <= timezone.now():
            return "expired"
        return "valid"

    def save_form(self, request, form, change):
        # Only adding gets here. knox makes the token and stores its digest.
        token, secret = api_tokens.issue(form.cleaned_data["user"], days=form.cleaned_data["days"])
        token.secret = secret  # for response_add, this request only
        return token

    def save_model(self, request, obj, form, change) -> None:
        pass  # api_tokens.issue saved it

    def save_related(self, request, form, formsets, change) -> None:
        pass

    def response_add(self, request, obj, post_url_continue=None):
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": "API token issued",
            "token": obj,
            "secret": obj.secret,
        }
        # The admin's views are never cached (admin_view): the page is not kept anywhere.
        return TemplateResponse(request, "admin/transfers/apitoken/issued.html", context)


# django-otp's own devices keep their secrets in clear: the portal's below replace them
# (migration 0018 moved every one), so their pages go.
admin.site.unregister(TOTPDevice)
admin.site.unregister(StaticDevice)


# The second factor's devices: listed and removed (a person who lost their phone enrols
# again at their next login), never shown or changed: the seed and codes stay encrypted.
@admin.register(AuthenticatorApp, BackupCodes)
class SecondFactorAdmin(admin.ModelAdmin):
    list_display = ["user", "name", "confirmed", "created_at", "last_used_at"]
    list_select_related = ["user"]
    search_fields = ["user__username"]
    fields = ["user", "name", "confirmed", "created_at", "last_used_at"]
    readonly_fields = fields

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False
