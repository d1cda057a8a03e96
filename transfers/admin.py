from django.contrib import admin

from transfers.models import AccountGrant, AwsAccount, Certificate, SyncRun


class GrantInline(admin.TabularInline):
    model = AccountGrant
    extra = 1


@admin.register(AwsAccount)
class AwsAccountAdmin(admin.ModelAdmin):
    list_display = ["name", "account_id", "managed", "api_rate"]
    search_fields = ["name", "account_id"]
    inlines = [GrantInline]


@admin.register(Certificate)
class CertificateAdmin(admin.ModelAdmin):
    list_display = ["certificate_id", "account", "region", "status", "not_after"]
    list_filter = ["status", "region"]
    search_fields = ["certificate_id"]
    readonly_fields = [f.name for f in Certificate._meta.fields]


@admin.register(SyncRun)
class SyncRunAdmin(admin.ModelAdmin):
    list_display = ["account", "region", "status", "api_calls", "certificates", "created"]
