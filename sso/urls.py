"""The provider's two views under /oidc/ (names as mozilla-django-oidc expects them), and
the portal admins' group mappings under /sso/ (namespace "sso": not tied to one account)."""

from django.urls import path

from sso import views

app_name = "sso"
urlpatterns = [
    path("groups/", views.mappings, name="mappings"),
    path("groups/<int:pk>/delete/", views.mapping_delete, name="mapping_delete"),
]

oidc_urlpatterns = [
    path("authenticate/", views.StartView.as_view(), name="oidc_authentication_init"),
    path("callback/", views.CallbackView.as_view(), name="oidc_authentication_callback"),
]
