"""The Django admin for single sign-on: group mappings, identities, and the access log."""

from django.contrib import admin

from sso.models import AccessEvent, GroupMapping, Identity


@admin.register(GroupMapping)
class GroupMappingAdmin(admin.ModelAdmin):
    list_display = ["provider_group", "account", "role", "portal_admin", "staff", "created"]


@admin.register(Identity)
class IdentityAdmin(admin.ModelAdmin):
    list_display = ["user", "issuer", "subject", "last_sign_in"]
    readonly_fields = ["user", "issuer", "subject", "groups", "last_sign_in", "created"]


@admin.register(AccessEvent)
class AccessEventAdmin(admin.ModelAdmin):
    list_display = ["created", "kind", "actor_name"]
    readonly_fields = ["created", "kind", "user", "actor_name", "details"]
