"""The Django admin for approval policies and their change log."""

from django.contrib import admin

from policies.models import ApprovalPolicy, PolicyChange


@admin.register(ApprovalPolicy)
class ApprovalPolicyAdmin(admin.ModelAdmin):
    list_display = ["account", "approvals", "large_batch_size", "large_batch_approvals"]


@admin.register(PolicyChange)
class PolicyChangeAdmin(admin.ModelAdmin):
    list_display = ["created", "account", "user", "before", "after"]
    readonly_fields = ["created", "account", "user", "before", "after"]
