from django.contrib import admin
from django.contrib.auth.admin import GroupAdmin, UserAdmin
from django.contrib.auth.models import Group, User

from transfers.models import (
    AccountGrant,
    AwsAccount,
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
    list_display = ["name", "account_id", "managed", "contacts", "api_rate"]
    list_filter = ["managed"]
    search_fields = ["name", "account_id", "contact_emails"]
    inlines = [GrantInline]
    fieldsets = [
        (None, {"fields": ["account_id", "name", "managed", "regions"]}),
        ("Access", {"fields": ["role_arn", "external_id", "api_rate"]}),
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
